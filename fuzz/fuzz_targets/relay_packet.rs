//! Relay packets: decoding never panics; a decoded data packet re-encodes
//! to the same bytes; a control message's tag check never panics. Inputs
//! whose first byte is odd are wrapped in a valid header prefix so the
//! fuzzer spends its time past the magic and version checks.
#![no_main]

use jam_transport::relay::{self, HelloKey, MAX_PACKET_LEN, Packet, ServerSecret};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut wrapped = Vec::new();
    let bytes = match data.split_first() {
        Some((first, rest)) if first & 1 == 1 => {
            wrapped.extend_from_slice(&relay::MAGIC);
            wrapped.push(relay::VERSION);
            wrapped.extend_from_slice(rest);
            &wrapped[..]
        }
        _ => data,
    };
    let Ok(packet) = Packet::decode(bytes) else { return };
    let key = HelloKey([7; 32]);
    let _ = key.verify(bytes);
    match packet {
        Packet::Data { header, dest, payload } => {
            let mut buf = [0u8; MAX_PACKET_LEN];
            let n = relay::encode_data(header.session, header.member, dest, payload, &mut buf)
                .expect("a decoded data packet fits");
            assert_eq!(&buf[..n], bytes, "data re-encodes to the same bytes");
        }
        Packet::Hello(_, hello) => {
            let _ = hello.ticket.verify(&ServerSecret([9; 32]), 0);
            assert!(hello.reported.as_slice().len() <= relay::MAX_REPORTED_ADDRS);
        }
        _ => {}
    }
});
