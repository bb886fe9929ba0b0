//! The AppleMIDI session layer against real peers and tools on loopback:
//! pymidi (Python), the `rtpmidi` crate, tshark's dissectors, and mDNS
//! discovery inside a private network namespace.

mod discovery;
mod pymidi;
mod rtpmidi_crate;
mod tshark;

use jam_core::{Micros, MonotonicClock};
use jam_transport::applemidi::{Endpoint, EndpointConfig, EndpointEvent};
use jam_transport::driver::{Driver, DriverConfig};
use std::fmt::Debug;
use std::time::Duration;
use tokio::sync::mpsc;

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

/// Waits up to `limit` for the first item `pick` accepts, printing what it
/// skipped if it times out.
async fn wait_for<E: Debug, T>(
    what: &str,
    events: &mut mpsc::UnboundedReceiver<E>,
    limit: Duration,
    mut pick: impl FnMut(&E) -> Option<T>,
) -> T {
    let mut seen = Vec::new();
    let r = tokio::time::timeout(limit, async {
        loop {
            let e = events.recv().await?;
            if let Some(t) = pick(&e) {
                return Some(t);
            }
            seen.push(format!("{e:?}"));
        }
    })
    .await;
    match r {
        Ok(Some(t)) => t,
        Ok(None) => panic!("channel closed while waiting for {what}; saw {seen:#?}"),
        Err(_) => panic!("no {what} within {limit:?}; saw {seen:#?}"),
    }
}

/// An RTP-MIDI packet with one Note On and no journal (J=0), built by hand
/// in the layout of `rtp-midi.md` §5.1: the RTP codec is not this layer's.
fn note_on_packet(ssrc: u32, seq: u16, timestamp: u32, key: u8, velocity: u8) -> Vec<u8> {
    let mut p = vec![0x80, 0x61];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&timestamp.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x03, 0x90, key, velocity]);
    p
}
