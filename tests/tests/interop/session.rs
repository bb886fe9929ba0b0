//! The AppleMIDI session layer (`Endpoint` through the driver) against
//! real peers and tools, with RTP bytes built by hand: the RTP-MIDI codec is
//! not this layer's.

mod discovery;
mod pymidi;
mod rtpmidi_crate;
mod tshark;

use super::*;
use jam_core::{Micros, MonotonicClock};
use jam_transport::applemidi::{Endpoint, EndpointConfig, EndpointEvent};
use jam_transport::driver::{Driver, DriverConfig};

/// A driven endpoint on 127.0.0.1 and its events.
struct Local {
    driver: Driver<Endpoint>,
    events: mpsc::UnboundedReceiver<EndpointEvent>,
}

async fn local(name: &'static str, seed: u64) -> Local {
    let (driver, events) = Driver::spawn(
        DriverConfig::loopback(),
        MonotonicClock::new(),
        move |now: Micros| Endpoint::new(EndpointConfig::new(name, seed), now),
    )
    .await
    .expect("bind a loopback port pair");
    Local { driver, events }
}

/// An RTP-MIDI packet with one Note On and no journal (J=0), built by hand
/// in the layout of `rtp-midi.md` §5.1.
fn note_on_packet(ssrc: u32, seq: u16, timestamp: u32, key: u8, velocity: u8) -> Vec<u8> {
    let mut p = vec![0x80, 0x61];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&timestamp.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x03, 0x90, key, velocity]);
    p
}
