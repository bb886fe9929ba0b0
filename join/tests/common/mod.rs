//! Shared parts of the end-to-end tests: a `jamd` on loopback, peers that
//! join it through the HTTP API, and a recording UDP tap between a peer and
//! the relay (what an observer on the path, or the relay itself, sees).

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jam_core::ShortMessage;
use jam_join::{Jamd, PeerOptions, RunningPeer, spawn_peer};
use jam_transport::participant::ParticipantEvent;
use jam_transport::relay_client::{RelayClientEvent, RelayPeerEvent};
use jam_transport::rtp::recv::RecvMessage;
use rand::RngExt;
use tokio::net::UdpSocket;

/// The password every test user gets.
pub fn password(user: &str) -> String {
    format!("password of {user}")
}

/// Registers `user`, logs in, registers a fresh device key, finds or
/// creates `session`, joins it and starts a peer that always goes through
/// the relay (these tests look at what the relay sees). `relay_override`
/// sends the peer's relay traffic elsewhere (a tap).
pub async fn join_peer(
    base: &str,
    session: &str,
    user: &str,
    relay_override: Option<SocketAddr>,
) -> RunningPeer {
    join_peer_with(base, session, user, relay_override, |o| o.direct = None).await
}

/// [`join_peer`] with the peer's options adjusted by `adjust` (direct
/// paths are on by default).
pub async fn join_peer_with(
    base: &str,
    session: &str,
    user: &str,
    relay_override: Option<SocketAddr>,
    adjust: impl FnOnce(&mut PeerOptions),
) -> RunningPeer {
    let mut jamd = Jamd::new(base);
    // The account may exist already (a restart test joins twice).
    let _ = jamd.register(user, &password(user)).await;
    jamd.login(user, &password(user)).await.expect("login");
    let mut rng = rand::rng();
    let secret: [u8; 32] = rng.random();
    let public = jam_join::public_key(&secret);
    let device = jamd
        .ensure_device(&format!("{user}-device"), &public)
        .await
        .expect("register device");
    let id = match jamd.find_session(session).await.expect("find session") {
        Some(id) => id,
        None => match jamd.create_session(session).await {
            Ok(id) => id,
            // Another peer created it in the meantime.
            Err(_) => jamd
                .find_session(session)
                .await
                .expect("find session")
                .expect("the session exists"),
        },
    };
    let mut joined = jamd.join(&id, Some(&device), None).await.expect("join");
    if let Some(r) = relay_override {
        joined.relay = r.to_string();
    }
    let mut opts = PeerOptions::new(user, secret, rng.random(), rng.random());
    opts.bind = "127.0.0.1".parse().unwrap();
    opts.poll_interval = Duration::from_millis(200);
    adjust(&mut opts);
    spawn_peer(jamd, joined, opts).await.expect("peer starts")
}

/// What one peer heard: (sender name, note) for every note-on, in order.
#[derive(Debug, Default)]
pub struct Heard {
    pub notes: Vec<(String, u8)>,
    pub rotations: u32,
    pub connects: u64,
    pub connected_at: Vec<Instant>,
}

/// Drains a peer's events into `heard` for `window` (or until `done`).
pub async fn listen(
    peer: &mut RunningPeer,
    heard: &mut Heard,
    names: &mut BTreeMap<jam_transport::applemidi::PeerHandle, String>,
    window: Duration,
    done: impl Fn(&Heard) -> bool,
) {
    let deadline = tokio::time::Instant::now() + window;
    while !done(heard) {
        let e = match tokio::time::timeout_at(deadline, peer.events.recv()).await {
            Ok(Some(e)) => e,
            _ => return,
        };
        match e {
            RelayPeerEvent::Participant(ParticipantEvent::Joined { peer, name, .. }) => {
                names.insert(peer, name.unwrap_or_default());
            }
            RelayPeerEvent::Participant(ParticipantEvent::Midi { peer, event, .. }) => {
                if let RecvMessage::Short(m) = event.message
                    && m.status() & 0xF0 == 0x90
                    && m.data2() > 0
                {
                    let from = names.get(&peer).cloned().unwrap_or_default();
                    heard.notes.push((from, m.data1()));
                }
            }
            RelayPeerEvent::Rotated { .. } => heard.rotations += 1,
            RelayPeerEvent::Relay(RelayClientEvent::Connected { count, .. }) => {
                heard.connects = count;
                heard.connected_at.push(Instant::now());
            }
            _ => {}
        }
    }
}

/// Waits up to 30 s until `jamd` at `base` answers `/healthz`.
pub async fn wait_healthy(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let http = reqwest::Client::new();
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("jamd at {base} did not come up");
}

/// Waits until `peer` has an AppleMIDI session with `n` others.
pub async fn wait_joined(peer: &RunningPeer, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let k = peer
            .driver
            .call(|p, _| p.joined_members().count())
            .await
            .unwrap();
        if k >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {k} of {n} sessions after {timeout:?}",
            peer.joined.member_id
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Plays `notes` (one note-on each, on `channel`) into the session, 20 ms
/// apart.
pub async fn play(peer: &RunningPeer, channel: u8, notes: &[u8]) {
    for &n in notes {
        let msg = ShortMessage::note_on(channel, n, 100);
        peer.driver
            .call(move |p, now| p.participant().send(now, now, msg))
            .await
            .unwrap()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A datagram the tap saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// True for peer → relay.
    pub upstream: bool,
    pub bytes: Vec<u8>,
}

/// A UDP forwarder between one peer and the relay that records every
/// datagram and can inject datagrams towards the relay as if the peer sent
/// them.
pub struct Tap {
    /// Where the peer sends (give this to the peer as its relay).
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    up: Arc<UdpSocket>,
    relay: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Tap {
    pub async fn start(relay: SocketAddr) -> Tap {
        Tap::start_filtered(relay, false).await
    }

    /// A tap whose relay-side socket takes datagrams from the relay only
    /// (like a NAT that filters by remote address): the address the relay
    /// sees for the peer reaches nobody else.
    pub async fn start_filtered(relay: SocketAddr, relay_only: bool) -> Tap {
        let down = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let up = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = down.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (d, u, s) = (down.clone(), up.clone(), seen.clone());
        let task = tokio::spawn(async move {
            let mut peer: Option<SocketAddr> = None;
            let mut b1 = vec![0u8; 2048];
            let mut b2 = vec![0u8; 2048];
            loop {
                tokio::select! {
                    r = d.recv_from(&mut b1) => {
                        let Ok((n, from)) = r else { return };
                        peer = Some(from);
                        s.lock().unwrap().push(Seen { upstream: true, bytes: b1[..n].to_vec() });
                        let _ = u.send_to(&b1[..n], relay).await;
                    }
                    r = u.recv_from(&mut b2) => {
                        let Ok((n, from)) = r else { return };
                        if relay_only && from != relay {
                            continue;
                        }
                        s.lock().unwrap().push(Seen { upstream: false, bytes: b2[..n].to_vec() });
                        if let Some(p) = peer {
                            let _ = d.send_to(&b2[..n], p).await;
                        }
                    }
                }
            }
        });
        Tap {
            addr,
            seen,
            up,
            relay,
            task,
        }
    }

    /// Sends `bytes` to the relay from the peer's registered address.
    pub async fn inject(&self, bytes: &[u8]) {
        self.up.send_to(bytes, self.relay).await.unwrap();
    }

    pub fn snapshot(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}
