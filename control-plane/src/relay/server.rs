//! The relay's I/O edge: one UDP socket driven by one OS thread.
//!
//! A dedicated thread with a blocking socket is the cheapest way to keep the
//! relay on one core with no scheduler between a packet and its copies: it
//! receives into one reused buffer, asks [`RelayCore`] what to do, and sends
//! the same bytes to every destination. Once per tick it expires silent
//! members, applies commands from the HTTP side (revocations), publishes a
//! statistics snapshot and hands relay events to the async side. A member
//! coming online is published at once, before its hello is acknowledged.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jam_core::Micros;
use jam_transport::relay::{MAX_PACKET_LEN, ServerSecret};
use tokio::sync::mpsc::UnboundedSender;

use super::core::{
    DropReason, MemberStats, Output, RelayConfig, RelayCore, RelayEvent, RelayStats,
};

/// How often the loop wakes up when no packet arrives, and publishes stats.
const TICK_MS: u64 = 100;

/// A command from the rest of the server to the relay thread.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RelayCommand {
    /// Forget a membership and refuse its ticket until the given unix time.
    Revoke {
        /// Session id.
        session: u64,
        /// Member id.
        member: u32,
        /// Unix seconds.
        until_unix: u64,
    },
    /// Stop the thread.
    Shutdown,
}

/// What the relay thread publishes for metrics and the dashboard.
#[derive(Debug, Clone, Default)]
pub struct RelaySnapshot {
    /// Relay-wide counters.
    pub stats: RelayStats,
    /// Live members with their statistics.
    pub members: Vec<MemberStats>,
    /// CPU time the relay thread has used, µs (from `/proc/thread-self`).
    pub cpu_us: u64,
}

/// Shared between the relay thread (writer) and the HTTP side (readers).
#[derive(Debug, Default)]
pub struct RelayShared {
    /// Replaced every tick by the relay thread; readers clone it.
    pub snapshot: Mutex<RelaySnapshot>,
    /// Bumped by the relay thread whenever the snapshot changed in a way the
    /// dashboard shows (Relaxed: only a hint to re-render).
    pub generation: AtomicU64,
}

/// A running relay thread.
#[derive(Debug)]
pub struct RelayHandle {
    /// The bound UDP address.
    pub local_addr: SocketAddr,
    /// Commands to the thread.
    pub commands: mpsc::Sender<RelayCommand>,
    /// Published state.
    pub shared: Arc<RelayShared>,
    thread: Option<JoinHandle<()>>,
}

impl RelayHandle {
    /// Asks the thread to stop and waits for it.
    pub fn shutdown(&mut self) {
        let _ = self.commands.send(RelayCommand::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds `addr` and starts the relay thread. Events (members online and
/// offline) go to `events`.
pub fn spawn(
    addr: SocketAddr,
    secret: ServerSecret,
    config: RelayConfig,
    events: UnboundedSender<RelayEvent>,
) -> io::Result<RelayHandle> {
    let socket = UdpSocket::bind(addr)?;
    socket.set_read_timeout(Some(Duration::from_millis(TICK_MS)))?;
    let local_addr = socket.local_addr()?;
    let (tx, rx) = mpsc::channel();
    let shared = Arc::new(RelayShared::default());
    let core = RelayCore::new(secret, config);
    let thread_shared = shared.clone();
    let thread = std::thread::Builder::new()
        .name("jamd-relay".into())
        .spawn(move || run(socket, core, rx, events, &thread_shared))?;
    Ok(RelayHandle {
        local_addr,
        commands: tx,
        shared,
        thread: Some(thread),
    })
}

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn run(
    socket: UdpSocket,
    mut core: RelayCore,
    commands: mpsc::Receiver<RelayCommand>,
    events: UnboundedSender<RelayEvent>,
    shared: &RelayShared,
) {
    let origin = Instant::now();
    let now = || Micros(origin.elapsed().as_micros() as u64);
    let mut buf = vec![0u8; MAX_PACKET_LEN + 1];
    let mut reply_buf = vec![0u8; MAX_PACKET_LEN + 1];
    let mut next_tick = now();
    let mut last_published = RelayStats::default();
    tracing::info!(addr = %socket.local_addr().map(|a| a.to_string()).unwrap_or_default(), "relay listening");
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let t = now();
                let mut reply = None;
                match core.handle_datagram(t, wall_us(), from, &buf[..n]) {
                    Output::Nothing => {}
                    Output::Reply { to, bytes } => {
                        // Copied out so that the snapshot below can read the
                        // core before the ack leaves.
                        if let Some(dst) = reply_buf.get_mut(..bytes.len()) {
                            dst.copy_from_slice(bytes);
                            reply = Some((to, bytes.len()));
                        }
                    }
                    Output::Forward { to, except } => {
                        for (i, dest) in to.iter().enumerate() {
                            if i != except {
                                // A full send buffer or an unreachable peer
                                // must not stop the fan-out to the others.
                                let _ = socket.send_to(&buf[..n], dest);
                            }
                        }
                    }
                }
                let mut changed = false;
                while let Some(e) = core.poll_event() {
                    changed = true;
                    let _ = events.send(e);
                }
                if changed {
                    // A member came online (or moved): publish before its
                    // ack leaves, so that once a client is accepted every
                    // join answer lists it as online.
                    publish(&core, shared, &mut last_published);
                }
                if let Some((to, len)) = reply {
                    let _ = socket.send_to(&reply_buf[..len], to);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                // An ICMP port unreachable from an earlier send; not ours to act on.
            }
            Err(e) => {
                tracing::error!(error = %e, "relay socket failed");
                std::thread::sleep(Duration::from_millis(TICK_MS));
            }
        }
        let t = now();
        if t < next_tick {
            continue;
        }
        next_tick = t + Duration::from_millis(TICK_MS);
        loop {
            match commands.try_recv() {
                Ok(RelayCommand::Revoke {
                    session,
                    member,
                    until_unix,
                }) => core.revoke(session, member, until_unix),
                Ok(RelayCommand::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => {
                    tracing::info!("relay stopped");
                    return;
                }
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
        core.handle_timeout(t, wall_us());
        while let Some(e) = core.poll_event() {
            let _ = events.send(e);
        }
        publish(&core, shared, &mut last_published);
    }
}

/// Replaces the shared snapshot with the core's current state.
fn publish(core: &RelayCore, shared: &RelayShared, last_published: &mut RelayStats) {
    let stats = core.stats().clone();
    let snapshot = RelaySnapshot {
        members: core.members().collect(),
        cpu_us: thread_cpu_us().unwrap_or(0),
        stats: stats.clone(),
    };
    if stats != *last_published {
        shared.generation.fetch_add(1, Ordering::Relaxed);
        *last_published = stats;
    }
    *shared.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
}

/// CPU time (user + system) of the calling thread in µs, from
/// `/proc/thread-self/stat` (Linux); `None` elsewhere.
pub fn thread_cpu_us() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) * 10_000)
}

/// The label and count of every drop reason, for metrics.
pub fn drops(stats: &RelayStats) -> impl Iterator<Item = (&'static str, u64)> + '_ {
    DropReason::ALL
        .iter()
        .map(move |r| (r.label(), stats.dropped(*r)))
}
