//! `jamd`'s member stream as `jam-join` reads it: the server-sent-events
//! decoder never panics, splitting the bytes in two chunks never changes
//! the events, and member lists in `members` events parse or are refused.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| jam_join::sse::fuzz_member_stream(data));
