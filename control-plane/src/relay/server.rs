//! The relay's I/O edge: one UDP socket driven by one OS thread.
//!
//! A dedicated thread with a blocking socket is the cheapest way to keep the
//! relay on one core with no scheduler between a packet and its copies: it
//! receives into one reused buffer, asks [`RelayCore`] what to do, and sends
//! the same bytes to every destination. Once per tick it expires silent
//! members, applies commands from the HTTP side (revocations), publishes a
//! statistics snapshot and hands relay events to the async side. A member
//! coming online is published at once, before its hello is acknowledged.
//!
//! Large fan-outs do not hold up reading ([`FanOuts`]): a packet with more
//! than [`FANOUT_SLICE`] copies is queued and sent a slice at a time, with a
//! non-blocking read between slices, so one member's packet to a
//! thousand-player session (a few milliseconds of sends on a small machine)
//! does not make every other packet wait behind it. Packets with few copies
//! go out at once unless their sender already has copies queued (its packets
//! stay in order).

use std::collections::VecDeque;
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

/// Copies of one queued fan-out sent between two reads of the socket: on
/// the reference machine a copy costs about 4 µs, so a packet that arrives
/// during a fan-out waits at most about 64 µs for its turn.
pub const FANOUT_SLICE: usize = 16;

/// Fan-outs queued at most; past this a fan-out is sent whole before the
/// next read (the old behaviour), so a relay that cannot keep up lets the
/// kernel's socket buffer drop packets instead of growing without bound.
pub const MAX_QUEUED_FANOUTS: usize = 256;

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

/// A queued fan-out: one datagram and the destinations it still has to
/// reach.
#[derive(Debug, Default)]
struct FanOut {
    from: Option<SocketAddr>,
    bytes: Vec<u8>,
    to: Vec<SocketAddr>,
    next: usize,
}

/// The fan-outs waiting to be sent, oldest first, and the buffers of
/// finished ones for reuse (the relay thread reaches a steady state with no
/// allocation per packet).
#[derive(Debug, Default)]
pub struct FanOuts {
    queue: VecDeque<FanOut>,
    spare: Vec<FanOut>,
}

impl FanOuts {
    /// No copies are waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Copies still to send, over every queued fan-out.
    pub fn pending_copies(&self) -> usize {
        self.queue.iter().map(|f| f.to.len() - f.next).sum()
    }

    /// Sends `bytes` from `from` to every address of `to` but the one at
    /// `except`: at once through `send` when there are at most
    /// [`FANOUT_SLICE`] copies and `from` has nothing queued (or when the
    /// queue is full), else queued behind what is already waiting.
    pub fn forward(
        &mut self,
        from: SocketAddr,
        bytes: &[u8],
        to: &[SocketAddr],
        except: usize,
        mut send: impl FnMut(&[u8], SocketAddr),
    ) {
        let copies = to.len() - usize::from(except < to.len());
        let sender_waiting = self.queue.iter().any(|f| f.from == Some(from));
        if (copies <= FANOUT_SLICE && !sender_waiting) || self.queue.len() >= MAX_QUEUED_FANOUTS {
            for (i, dest) in to.iter().enumerate() {
                if i != except {
                    send(bytes, *dest);
                }
            }
            return;
        }
        let mut f = self.spare.pop().unwrap_or_default();
        f.from = Some(from);
        f.bytes.clear();
        f.bytes.extend_from_slice(bytes);
        f.to.clear();
        f.to.extend(
            to.iter()
                .enumerate()
                .filter(|&(i, _)| i != except)
                .map(|(_, d)| *d),
        );
        f.next = 0;
        self.queue.push_back(f);
    }

    /// Sends the next [`FANOUT_SLICE`] copies of the oldest queued fan-out.
    pub fn send_slice(&mut self, mut send: impl FnMut(&[u8], SocketAddr)) {
        let Some(f) = self.queue.front_mut() else {
            return;
        };
        let end = (f.next + FANOUT_SLICE).min(f.to.len());
        for dest in &f.to[f.next..end] {
            send(&f.bytes, *dest);
        }
        f.next = end;
        if f.next == f.to.len()
            && let Some(done) = self.queue.pop_front()
        {
            self.spare.push(done);
        }
    }
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
    let mut fan_outs = FanOuts::default();
    // Events of one step, held until the snapshot shows their effect.
    let mut pending: Vec<RelayEvent> = Vec::new();
    // A full send buffer or an unreachable peer must not stop the fan-out
    // to the others: send errors are ignored.
    let send = |bytes: &[u8], dest: SocketAddr| {
        let _ = socket.send_to(bytes, dest);
    };
    let mut nonblocking = false;
    tracing::info!(addr = %socket.local_addr().map(|a| a.to_string()).unwrap_or_default(), "relay listening");
    loop {
        // While copies are queued, reading must not wait: between two
        // slices only what has already arrived is read.
        let want_nonblocking = !fan_outs.is_empty();
        if nonblocking != want_nonblocking {
            nonblocking = want_nonblocking;
            if let Err(e) = socket.set_nonblocking(nonblocking) {
                tracing::error!(error = %e, "relay socket mode");
            }
        }
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
                        fan_outs.forward(from, &buf[..n], to, except, send);
                    }
                }
                pending.extend(std::iter::from_fn(|| core.poll_event()));
                if !pending.is_empty() {
                    // A member came online (or moved): publish before its
                    // ack and its event leave, so that once a client is
                    // accepted every join answer lists it as online, and a
                    // member stream woken by the event reads it online.
                    publish(&core, shared, &mut last_published);
                    for e in pending.drain(..) {
                        let _ = events.send(e);
                    }
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
        fan_outs.send_slice(send);
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
        // Published before the events leave: whoever an event wakes reads
        // the state after it (a timed-out member offline).
        pending.extend(std::iter::from_fn(|| core.poll_event()));
        publish(&core, shared, &mut last_published);
        for e in pending.drain(..) {
            let _ = events.send(e);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16))
    }

    fn addrs(n: usize) -> Vec<SocketAddr> {
        (0..n).map(addr).collect()
    }

    /// Records what would have been sent.
    #[derive(Default)]
    struct Sent(Vec<(Vec<u8>, SocketAddr)>);

    impl Sent {
        fn sink(&mut self) -> impl FnMut(&[u8], SocketAddr) + '_ {
            |b, d| self.0.push((b.to_vec(), d))
        }
    }

    #[test]
    fn a_small_fan_out_goes_at_once_without_its_sender() {
        let mut f = FanOuts::default();
        let mut sent = Sent::default();
        let to = addrs(FANOUT_SLICE + 1);
        f.forward(addr(0), b"x", &to, 0, sent.sink());
        assert!(f.is_empty());
        let dests: Vec<_> = sent.0.iter().map(|(_, d)| *d).collect();
        assert_eq!(dests, to[1..]);
    }

    #[test]
    fn a_large_fan_out_is_sent_in_slices_to_everyone_once() {
        let mut f = FanOuts::default();
        let mut sent = Sent::default();
        let to = addrs(100);
        f.forward(addr(7), b"big", &to, 7, sent.sink());
        assert!(sent.0.is_empty(), "queued, not sent");
        assert_eq!(f.pending_copies(), 99);
        let mut slices = 0;
        while !f.is_empty() {
            let before = sent.0.len();
            f.send_slice(sent.sink());
            assert!(sent.0.len() - before <= FANOUT_SLICE);
            slices += 1;
        }
        assert_eq!(slices, 99usize.div_ceil(FANOUT_SLICE));
        let mut dests: Vec<_> = sent.0.iter().map(|(_, d)| *d).collect();
        dests.sort();
        let mut want = to.clone();
        want.remove(7);
        assert_eq!(dests, want);
        assert!(sent.0.iter().all(|(b, _)| b == b"big"));
    }

    #[test]
    fn others_pass_a_queued_fan_out_and_its_sender_waits_behind_it() {
        let mut f = FanOuts::default();
        let mut sent = Sent::default();
        let to = addrs(50);
        f.forward(addr(0), b"first", &to, 0, sent.sink());
        f.send_slice(sent.sink());
        // Another member's unicast leaves before the rest of the fan-out.
        f.forward(addr(1), b"unicast", &to[2..3], usize::MAX, sent.sink());
        assert_eq!(sent.0.last().unwrap(), &(b"unicast".to_vec(), addr(2)));
        // The fan-out's sender's next packet, even a unicast, queues.
        let before = sent.0.len();
        f.forward(addr(0), b"second", &to[3..4], usize::MAX, sent.sink());
        assert_eq!(sent.0.len(), before);
        while !f.is_empty() {
            f.send_slice(sent.sink());
        }
        let to3: Vec<_> = sent
            .0
            .iter()
            .filter(|(_, d)| *d == addr(3))
            .map(|(b, _)| b.as_slice())
            .collect();
        assert_eq!(to3, [b"first".as_slice(), b"second"]);
        assert_eq!(sent.0.len(), 49 + 1 + 1);
    }

    #[test]
    fn a_full_queue_sends_the_next_fan_out_whole() {
        let mut f = FanOuts::default();
        let mut sent = Sent::default();
        let to = addrs(40);
        for i in 0..MAX_QUEUED_FANOUTS {
            f.forward(addr(i), b"q", &to, usize::MAX, sent.sink());
        }
        assert!(sent.0.is_empty());
        f.forward(addr(1000), b"now", &to, usize::MAX, sent.sink());
        assert_eq!(sent.0.len(), 40);
        assert_eq!(f.pending_copies(), 40 * MAX_QUEUED_FANOUTS);
    }

    #[test]
    fn finished_fan_outs_lend_their_buffers_to_the_next() {
        let mut f = FanOuts::default();
        let to = addrs(64);
        for round in 0..3 {
            f.forward(addr(0), &[round; 40], &to, 0, |_, _| {});
            while !f.is_empty() {
                f.send_slice(|_, _| {});
            }
            assert_eq!(f.spare.len(), 1, "round {round}");
        }
    }
}
