//! jam.togthr against real peers and tools on loopback: pymidi (Python),
//! the `rtpmidi` crate, tshark's dissectors, and mDNS discovery inside a
//! private network namespace.
//!
//! - [`session`]: the AppleMIDI session layer (`Endpoint` through the
//!   driver) with hand-built RTP bytes: handshakes, clock sync, `RS`, `BY`,
//!   discovery;
//! - [`midi`]: the whole stack (`Participant` through the driver, and the
//!   `jam peer` binary) exchanging notes and controllers both ways with
//!   each peer, and a tshark capture of two `jam peer` processes.
//!
//! One binary for all of them: it links once.

mod midi;
mod session;

use jam_transport::driver::bind_pair;
use rtpmidi::sessions::invite_responder::InviteResponder;
use rtpmidi::sessions::rtp_midi_session::RtpMidiSession;
use std::fmt::Debug;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

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

/// Starts an `rtpmidi` session (the crate binds 0.0.0.0) on a free
/// consecutive port pair (found on 127.0.0.1, then released for it to bind;
/// retried if someone takes it in between). Returns its control address on
/// 127.0.0.1.
async fn start_rtpmidi(name: &str, ssrc: u32) -> (Arc<RtpMidiSession>, SocketAddr) {
    for _ in 0..16 {
        let port = {
            let (control, _data) = bind_pair(LOCALHOST, 0, 64).expect("a free port pair");
            control.local_addr().unwrap().port()
        };
        if let Ok(session) = RtpMidiSession::start(port, name, ssrc, InviteResponder::Accept).await
        {
            return (session, SocketAddr::new(LOCALHOST, port));
        }
    }
    panic!("could not start an rtpmidi session");
}

/// Polls an `rtpmidi` session's participant list until `pred` holds.
async fn participants_until(session: &RtpMidiSession, what: &str, pred: impl Fn(usize) -> bool) {
    for _ in 0..200 {
        if pred(session.participants().await.len()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("rtpmidi participants never reached: {what}");
}
