//! The whole stack against real peers: our `Participant` (endpoint plus
//! RTP-MIDI streams with the recovery journal) through the tokio driver,
//! and the `jam peer` binary, exchanging notes and controllers both ways
//! with pymidi and the `rtpmidi` crate; and a tshark capture of two `jam
//! peer` processes.
//!
//! Our packets are never changed to suit a peer. Where a peer misreads
//! RFC 6295 (multi-octet delta times, cumulative timestamps, journals), a
//! test shows the misreading once, and the other assertions send one
//! command per packet so the peer's reading is the RFC's.

mod jam_peer;
mod pymidi;
mod rtpmidi_crate;

use super::*;
use jam_core::{Micros, MonotonicClock, ShortMessage};
use jam_transport::applemidi::PeerHandle;
use jam_transport::driver::{Driver, DriverConfig};
use jam_transport::participant::{Participant, ParticipantConfig, ParticipantEvent};
use jam_transport::rtp::recv::{RecvEvent, RecvMessage};

const LIMIT: Duration = Duration::from_secs(10);

/// A `Participant` driven on 127.0.0.1 and its events.
struct Stack {
    driver: Driver<Participant>,
    events: mpsc::UnboundedReceiver<ParticipantEvent>,
}

async fn stack(name: &'static str, seed: u64) -> Stack {
    let (driver, events) = Driver::spawn(
        DriverConfig::loopback(),
        MonotonicClock::new(),
        move |now: Micros| Participant::new(ParticipantConfig::new(name, seed), now),
    )
    .await
    .expect("bind a loopback port pair");
    Stack { driver, events }
}

impl Stack {
    /// Invites `control` and waits until the session is up.
    async fn invite(&mut self, control: SocketAddr) -> PeerHandle {
        let peer = self
            .driver
            .call(move |p, now| p.invite(now, control))
            .await
            .unwrap()
            .expect("invite");
        wait_for("Joined", &mut self.events, LIMIT, |e| match e {
            ParticipantEvent::Joined { peer: p, .. } if *p == peer => Some(()),
            _ => None,
        })
        .await;
        peer
    }

    /// Waits for a session someone else started.
    async fn joined(&mut self) -> PeerHandle {
        wait_for("Joined", &mut self.events, LIMIT, |e| match e {
            ParticipantEvent::Joined {
                peer,
                initiated_by_us: false,
                ..
            } => Some(*peer),
            _ => None,
        })
        .await
    }

    /// Sends each message with its own `Participant::send` call, stamped
    /// now, `gap` apart: one command per packet.
    async fn send_each(&self, msgs: &[ShortMessage], gap: Duration) {
        for &m in msgs {
            self.driver
                .call(move |p, now| p.send(now, now, m))
                .await
                .unwrap()
                .expect("send");
            tokio::time::sleep(gap).await;
        }
    }

    /// Sends the messages in one call, each stamped `ago` before now (in
    /// play order, oldest first): one packet whose delta times are the
    /// differences.
    async fn send_together(&self, msgs: &[(Duration, ShortMessage)]) -> Micros {
        // The driver's clock starts at 0 when it is spawned: make sure the
        // oldest stamp is not before that.
        let oldest = msgs.iter().map(|m| m.0).max().unwrap_or_default();
        tokio::time::sleep(oldest).await;
        let msgs = msgs.to_vec();
        self.driver
            .call(move |p, now| {
                for (ago, m) in msgs {
                    let at = Micros(now.as_micros() - ago.as_micros() as u64);
                    p.send(now, at, m).expect("send");
                }
                now
            })
            .await
            .unwrap()
    }

    /// Waits for `n` MIDI events from `peer` that came from MIDI lists (not
    /// recovered by the journal) and returns them.
    async fn played(&mut self, peer: PeerHandle, n: usize) -> Vec<RecvEvent> {
        let mut got = Vec::new();
        while got.len() < n {
            let e = wait_for("MIDI", &mut self.events, LIMIT, |e| match e {
                ParticipantEvent::Midi { peer: p, event, .. } if *p == peer && !event.recovered => {
                    Some(event.clone())
                }
                _ => None,
            })
            .await;
            got.push(e);
        }
        got
    }
}

/// The short message of an event (these tests send no SysEx).
fn short(e: &RecvEvent) -> ShortMessage {
    match &e.message {
        RecvMessage::Short(m) => *m,
        other => panic!("unexpected {other:?}"),
    }
}

/// Note on/off, control change and poly aftertouch on three channels: the
/// message kinds every peer here decodes.
fn notes_and_controllers() -> Vec<ShortMessage> {
    vec![
        ShortMessage::control_change(0, 7, 100),
        ShortMessage::control_change(0, 10, 32),
        ShortMessage::note_on(0, 60, 100),
        ShortMessage::note_on(0, 64, 90),
        ShortMessage::control_change(0, 64, 127),
        ShortMessage::poly_pressure(0, 60, 40),
        ShortMessage::note_off(0, 60, 0),
        ShortMessage::note_off(0, 64, 64),
        ShortMessage::control_change(0, 64, 0),
        ShortMessage::note_on(1, 48, 70),
        ShortMessage::control_change(1, 1, 20),
        ShortMessage::control_change(1, 1, 90),
        ShortMessage::note_off(1, 48, 0),
        ShortMessage::note_on(9, 36, 127),
        ShortMessage::note_on(9, 42, 80),
        ShortMessage::note_off(9, 36, 0),
        ShortMessage::note_off(9, 42, 0),
    ]
}
