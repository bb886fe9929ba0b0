//! Relay tickets, binary and hex: parsing and verifying never panic, and a
//! parsed ticket encodes back to its bytes.
#![no_main]

use jam_transport::relay::{ServerSecret, Ticket};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = Ticket::decode(data) {
        assert_eq!(&t.encode()[..], data);
        let _ = t.verify(&ServerSecret([1; 32]), u64::from(data[0]) << 24);
    }
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(t) = Ticket::from_hex(s)
    {
        assert_eq!(t.to_hex(), s.to_ascii_lowercase());
    }
});
