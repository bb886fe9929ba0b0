//! AppleMIDI session packets: classify and decode any datagram without
//! panicking; whatever decodes must re-encode to something that decodes to
//! the same command; and an endpoint with a joined session (remote SSRC
//! 0x12345678, the initiator of `rtp-midi.md` §5.5, so the seed vectors reach
//! it) must take the datagram on either port without panicking.

#![no_main]

use jam_core::Micros;
use jam_transport::applemidi::packet::{Command, Invitation, classify};
use jam_transport::applemidi::{Endpoint, EndpointConfig, Port};
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;

fn joined_endpoint() -> Endpoint {
    let mut ep = Endpoint::new(EndpointConfig::new("fuzz", 1), Micros::ZERO);
    let control: SocketAddr = ([127, 0, 0, 7], 6000).into();
    let data: SocketAddr = ([127, 0, 0, 7], 6001).into();
    let invitation = Command::Invitation(Invitation {
        token: 0x0BAD_F00D,
        ssrc: 0x1234_5678,
        name: Some("jam".into()),
    })
    .to_vec();
    ep.handle_datagram(Micros::ZERO, Port::Control, control, &invitation);
    ep.handle_datagram(Micros::ZERO, Port::Data, data, &invitation);
    while ep.poll_transmit().is_some() {}
    while ep.poll_event().is_some() {}
    ep
}

fuzz_target!(|bytes: &[u8]| {
    let _ = classify(bytes);
    if let Ok(cmd) = Command::decode(bytes) {
        let again = cmd.to_vec();
        assert_eq!(Command::decode(&again).as_ref(), Ok(&cmd));
    }
    let mut ep = joined_endpoint();
    let t = Micros::from_secs(1);
    ep.handle_datagram(t, Port::Control, ([127, 0, 0, 7], 6000).into(), bytes);
    ep.handle_datagram(t, Port::Data, ([127, 0, 0, 7], 6001).into(), bytes);
    while ep.poll_transmit().is_some() {}
    while ep.poll_event().is_some() {}
    if let Some(deadline) = ep.poll_timeout() {
        ep.handle_timeout(deadline);
    }
});
