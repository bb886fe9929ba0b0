//! A seeded, in-memory network emulator on a virtual clock.
//!
//! [`Network`] carries datagrams between addresses of any type `A` with the
//! impairments of a real path, each drawn from one seeded random number
//! generator so that a failing test is reproduced exactly by its seed:
//!
//! - fixed one-way **delay**, plus **jitter**: an extra delay drawn from an
//!   exponential distribution whose mean is `jitter` (capped at ten times the
//!   mean). Jitter alone keeps packets in order when [`LinkConfig::fifo`] is
//!   set (a queue does not overtake itself); otherwise each packet is delayed
//!   independently and may overtake its predecessors;
//! - independent random **loss** with probability `loss`;
//! - **burst loss** as a Gilbert-Elliott chain ([`BurstLoss`]): a "bad" state
//!   in which every packet is lost, entered and left with fixed probabilities
//!   per packet;
//! - explicit **reordering**: with probability `reorder` a packet is held back
//!   by `reorder_delay` so that later packets overtake it;
//! - **duplication**: with probability `duplicate` a second copy is delivered
//!   (with its own jitter);
//! - **partitions** between groups of addresses, which drop every packet sent
//!   across the cut until [`Network::heal`] (packets already in flight still
//!   arrive).
//!
//! [`Sim`] drives a set of sans-IO nodes ([`SimNode`]) over a `Network`,
//! jumping the virtual clock from event to event, in the manner of quinn's
//! test `Pair`. Nothing here sleeps or reads the system clock.
//!
//! ```
//! use jam_transport::netem::{LinkConfig, Network};
//! use jam_core::Micros;
//! use std::time::Duration;
//!
//! let mut net = Network::new(7, LinkConfig::default().delay(Duration::from_millis(20)));
//! net.send(Micros::ZERO, "a", "b", b"hello".to_vec());
//! assert!(net.poll_deliver(Micros::from_millis(19)).is_none());
//! let d = net.poll_deliver(Micros::from_millis(20)).unwrap();
//! assert_eq!((d.from, d.to, &d.payload[..]), ("a", "b", &b"hello"[..]));
//! ```

use jam_core::Micros;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::fmt::Debug;
use std::hash::Hash;
use std::time::Duration;

/// Gilbert-Elliott burst loss: a two-state chain evaluated once per packet.
/// In the "bad" state every packet is lost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurstLoss {
    /// Probability, per packet sent in the good state, of entering the bad one.
    pub enter: f64,
    /// Probability, per packet sent in the bad state, of leaving it.
    pub exit: f64,
}

impl BurstLoss {
    /// A chain whose long-run loss rate is `mean_loss` and whose bursts last
    /// `mean_burst` packets on average (`mean_burst >= 1`).
    ///
    /// With every bad-state packet lost, the stationary loss rate is
    /// `enter / (enter + exit)` and the mean burst length is `1 / exit`.
    pub fn new(mean_loss: f64, mean_burst: f64) -> Self {
        let mean_loss = mean_loss.clamp(0.0, 0.99);
        let exit = 1.0 / mean_burst.max(1.0);
        let enter = (mean_loss * exit / (1.0 - mean_loss)).clamp(0.0, 1.0);
        BurstLoss { enter, exit }
    }
}

/// Impairments of one direction of one link. Built with the chained setters
/// from [`LinkConfig::default`], which is a perfect, instant, in-order link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkConfig {
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Mean of the exponentially distributed extra delay.
    pub jitter: Duration,
    /// Probability of losing each packet independently.
    pub loss: f64,
    /// Optional burst loss, applied in addition to `loss`.
    pub burst: Option<BurstLoss>,
    /// Probability of holding a packet back by `reorder_delay`.
    pub reorder: f64,
    /// How long a reordered packet is held back.
    pub reorder_delay: Duration,
    /// Probability of delivering a second copy.
    pub duplicate: f64,
    /// When true, jitter never lets a packet overtake the previous one on the
    /// same link (only `reorder` does).
    pub fifo: bool,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            burst: None,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(5),
            duplicate: 0.0,
            fifo: true,
        }
    }
}

impl LinkConfig {
    /// Sets the fixed one-way delay.
    pub fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
    /// Sets the mean jitter.
    pub fn jitter(mut self, j: Duration) -> Self {
        self.jitter = j;
        self
    }
    /// Sets the independent loss probability (clamped to `0..=1`).
    pub fn loss(mut self, p: f64) -> Self {
        self.loss = p.clamp(0.0, 1.0);
        self
    }
    /// Sets burst loss.
    pub fn burst(mut self, b: BurstLoss) -> Self {
        self.burst = Some(b);
        self
    }
    /// Sets the reordering probability and hold-back time.
    pub fn reorder(mut self, p: f64, hold_back: Duration) -> Self {
        self.reorder = p.clamp(0.0, 1.0);
        self.reorder_delay = hold_back;
        self
    }
    /// Sets the duplication probability.
    pub fn duplicate(mut self, p: f64) -> Self {
        self.duplicate = p.clamp(0.0, 1.0);
        self
    }
    /// Lets jitter reorder packets (each packet delayed independently).
    pub fn unordered(mut self) -> Self {
        self.fifo = false;
        self
    }
}

/// A datagram in flight or delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram<A> {
    /// Sender address.
    pub from: A,
    /// Receiver address.
    pub to: A,
    /// The bytes sent.
    pub payload: Vec<u8>,
    /// When it was sent.
    pub sent: Micros,
    /// When it is (or was) delivered.
    pub deliver_at: Micros,
}

/// Counters over everything a [`Network`] has carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetemStats {
    /// Datagrams handed to [`Network::send`].
    pub sent: u64,
    /// Datagrams (including duplicates) delivered so far.
    pub delivered: u64,
    /// Lost to independent random loss.
    pub lost_random: u64,
    /// Lost in a burst.
    pub lost_burst: u64,
    /// Dropped because they crossed a partition.
    pub dropped_partition: u64,
    /// Extra copies created.
    pub duplicated: u64,
    /// Held back to be reordered.
    pub reordered: u64,
}

impl NetemStats {
    /// All losses together.
    pub fn lost(&self) -> u64 {
        self.lost_random + self.lost_burst + self.dropped_partition
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct LinkState {
    in_burst: bool,
    last_delivery: Micros,
}

struct InFlight<A> {
    key: (Micros, u64),
    datagram: Datagram<A>,
}

impl<A> PartialEq for InFlight<A> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl<A> Eq for InFlight<A> {}
impl<A> PartialOrd for InFlight<A> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<A> Ord for InFlight<A> {
    // Reversed so that `BinaryHeap` (a max-heap) pops the earliest delivery,
    // and among equal times the one sent first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.key.cmp(&self.key)
    }
}

/// The emulated network: per-link impairments, partitions and the queue of
/// datagrams in flight. See the [module docs](self).
pub struct Network<A> {
    rng: StdRng,
    seed: u64,
    default: LinkConfig,
    configs: HashMap<(A, A), LinkConfig>,
    links: HashMap<(A, A), LinkState>,
    groups: Option<HashMap<A, usize>>,
    queue: BinaryHeap<InFlight<A>>,
    next_id: u64,
    stats: NetemStats,
}

impl<A: Copy + Eq + Hash + Debug> Network<A> {
    /// A network where every link uses `default` until [`Network::set_link`]
    /// says otherwise. All randomness comes from `seed`.
    pub fn new(seed: u64, default: LinkConfig) -> Self {
        Network {
            rng: StdRng::seed_from_u64(seed),
            seed,
            default,
            configs: HashMap::new(),
            links: HashMap::new(),
            groups: None,
            queue: BinaryHeap::new(),
            next_id: 0,
            stats: NetemStats::default(),
        }
    }

    /// The seed this network was built with (print it when a test fails).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Replaces the configuration of every link without its own.
    pub fn set_default(&mut self, config: LinkConfig) {
        self.default = config;
    }

    /// Configures the direction `from -> to` of one link.
    pub fn set_link(&mut self, from: A, to: A, config: LinkConfig) {
        self.configs.insert((from, to), config);
    }

    /// The configuration in force for `from -> to`.
    pub fn link(&self, from: A, to: A) -> LinkConfig {
        self.configs
            .get(&(from, to))
            .copied()
            .unwrap_or(self.default)
    }

    /// Cuts the network into groups: a datagram between addresses in two
    /// different groups is dropped. Addresses in no group are unaffected.
    pub fn partition(&mut self, groups: &[&[A]]) {
        let mut map = HashMap::new();
        for (i, g) in groups.iter().enumerate() {
            for &a in g.iter() {
                map.insert(a, i);
            }
        }
        self.groups = Some(map);
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.groups = None;
    }

    /// True if a partition currently separates `a` from `b`.
    pub fn is_cut(&self, a: A, b: A) -> bool {
        match &self.groups {
            Some(g) => matches!((g.get(&a), g.get(&b)), (Some(x), Some(y)) if x != y),
            None => false,
        }
    }

    /// Sends a datagram at time `now`. It is delivered later by
    /// [`Network::poll_deliver`], or lost, per the link's impairments.
    pub fn send(&mut self, now: Micros, from: A, to: A, payload: Vec<u8>) {
        self.stats.sent += 1;
        if self.is_cut(from, to) {
            self.stats.dropped_partition += 1;
            return;
        }
        let config = self.link(from, to);
        let mut state = self.links.get(&(from, to)).copied().unwrap_or_default();

        // Burst loss: advance the chain once per packet.
        if let Some(b) = config.burst {
            let p = if state.in_burst { b.exit } else { b.enter };
            if self.rng.random::<f64>() < p {
                state.in_burst = !state.in_burst;
            }
        }
        let lost_burst = state.in_burst;
        let lost_random = !lost_burst && self.rng.random::<f64>() < config.loss;
        // Draw the remaining decisions unconditionally so that one packet's
        // fate does not shift the random stream for the next one.
        let dup = self.rng.random::<f64>() < config.duplicate;
        let reorder = self.rng.random::<f64>() < config.reorder;
        let first = self.transit(now, &config, &mut state, reorder);
        let second = self.transit(now, &config, &mut state, false);
        self.links.insert((from, to), state);

        if lost_burst {
            self.stats.lost_burst += 1;
            return;
        }
        if lost_random {
            self.stats.lost_random += 1;
            return;
        }
        if reorder {
            self.stats.reordered += 1;
        }
        if dup {
            self.stats.duplicated += 1;
            self.enqueue(from, to, payload.clone(), now, second);
        }
        self.enqueue(from, to, payload, now, first);
    }

    fn transit(
        &mut self,
        now: Micros,
        config: &LinkConfig,
        state: &mut LinkState,
        reorder: bool,
    ) -> Micros {
        let mut t = now + config.delay;
        if !config.jitter.is_zero() {
            // Exponential with the configured mean, capped at ten means.
            let u: f64 = self.rng.random::<f64>();
            let extra = (-(1.0 - u).ln()).min(10.0) * config.jitter.as_secs_f64();
            t += Duration::from_secs_f64(extra);
        }
        if config.fifo {
            t = t.max(state.last_delivery);
            state.last_delivery = t;
        }
        if reorder {
            t += config.reorder_delay;
        }
        t
    }

    fn enqueue(&mut self, from: A, to: A, payload: Vec<u8>, sent: Micros, deliver_at: Micros) {
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push(InFlight {
            key: (deliver_at, id),
            datagram: Datagram {
                from,
                to,
                payload,
                sent,
                deliver_at,
            },
        });
    }

    /// The earliest delivery time of anything in flight.
    pub fn next_delivery(&self) -> Option<Micros> {
        self.queue.peek().map(|f| f.key.0)
    }

    /// Pops the next datagram due at or before `now`, earliest first.
    pub fn poll_deliver(&mut self, now: Micros) -> Option<Datagram<A>> {
        if self.next_delivery()? > now {
            return None;
        }
        let f = self.queue.pop()?;
        self.stats.delivered += 1;
        Some(f.datagram)
    }

    /// Number of datagrams in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// Counters so far.
    pub fn stats(&self) -> NetemStats {
        self.stats
    }
}

/// A sans-IO participant that [`Sim`] can drive: it takes datagrams and
/// timeouts, and returns datagrams and its next deadline.
pub trait SimNode<A> {
    /// A datagram from `from` arrived at `now`.
    fn handle_datagram(&mut self, now: Micros, from: A, payload: &[u8]);
    /// The deadline returned by [`SimNode::poll_timeout`] has passed.
    fn handle_timeout(&mut self, now: Micros);
    /// The next datagram to send, if any.
    fn poll_transmit(&mut self, now: Micros) -> Option<(A, Vec<u8>)>;
    /// The earliest time at which `handle_timeout` must be called.
    fn poll_timeout(&self) -> Option<Micros>;
}

/// Why a [`Sim`] run stopped without reaching its goal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// More than the allowed number of steps ran without the network and
    /// every node going idle: a livelock, or a goal that needs more steps.
    #[error("simulation did not go idle within {0} steps")]
    NotIdle(usize),
}

/// Drives [`SimNode`]s over a [`Network`] on a virtual clock.
///
/// Each step jumps the clock to the earliest event (a delivery or a node
/// deadline), handles every delivery due, then every timer due in address
/// order, then sends every datagram the nodes want to send. Given the same
/// seed and the same nodes, a run is identical every time.
pub struct Sim<A, N> {
    /// The network; reconfigure or partition it between steps.
    pub net: Network<A>,
    /// The nodes, by address.
    pub nodes: BTreeMap<A, N>,
    now: Micros,
}

impl<A, N> Sim<A, N>
where
    A: Copy + Eq + Ord + Hash + Debug,
    N: SimNode<A>,
{
    /// A simulation over `net` with no nodes yet, starting at time zero.
    pub fn new(net: Network<A>) -> Self {
        Sim {
            net,
            nodes: BTreeMap::new(),
            now: Micros::ZERO,
        }
    }

    /// Adds (or replaces) the node at `addr`.
    pub fn add_node(&mut self, addr: A, node: N) {
        self.nodes.insert(addr, node);
    }

    /// The current virtual time.
    pub fn now(&self) -> Micros {
        self.now
    }

    /// Sends everything the nodes have queued at the current time.
    pub fn flush(&mut self) {
        let now = self.now;
        for (&addr, node) in self.nodes.iter_mut() {
            while let Some((to, payload)) = node.poll_transmit(now) {
                self.net.send(now, addr, to, payload);
            }
        }
    }

    fn next_event(&self) -> Option<Micros> {
        let timers = self.nodes.values().filter_map(|n| n.poll_timeout()).min();
        match (self.net.next_delivery(), timers) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the next event if it is due at or before `limit`. Returns false
    /// (and does nothing) when there is none.
    pub fn step(&mut self, limit: Micros) -> bool {
        self.flush();
        let Some(t) = self.next_event() else {
            return false;
        };
        if t > limit {
            return false;
        }
        self.now = self.now.max(t);
        let now = self.now;
        while let Some(d) = self.net.poll_deliver(now) {
            if let Some(node) = self.nodes.get_mut(&d.to) {
                node.handle_datagram(now, d.from, &d.payload);
            }
        }
        for node in self.nodes.values_mut() {
            if node.poll_timeout().is_some_and(|t| t <= now) {
                node.handle_timeout(now);
            }
        }
        self.flush();
        true
    }

    /// Runs every event up to `t`, then sets the clock to `t`.
    pub fn run_until(&mut self, t: Micros) {
        while self.step(t) {}
        self.now = self.now.max(t);
        self.flush();
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }

    /// Runs until nothing is in flight and no node has a deadline, or fails
    /// after `max_steps` steps.
    pub fn run_until_idle(&mut self, max_steps: usize) -> Result<usize, SimError> {
        for steps in 0..max_steps {
            if !self.step(Micros::MAX) {
                return Ok(steps);
            }
        }
        Err(SimError::NotIdle(max_steps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver_all(net: &mut Network<u8>) -> Vec<Datagram<u8>> {
        let mut out = Vec::new();
        while let Some(d) = net.poll_deliver(Micros::MAX) {
            out.push(d);
        }
        out
    }

    fn send_numbered(net: &mut Network<u8>, n: u32, spacing: Duration) {
        for i in 0..n {
            let t = Micros::ZERO + spacing * i;
            net.send(t, 0, 1, i.to_be_bytes().to_vec());
        }
    }

    fn numbers(ds: &[Datagram<u8>]) -> Vec<u32> {
        ds.iter()
            .map(|d| u32::from_be_bytes(d.payload[..4].try_into().unwrap()))
            .collect()
    }

    #[test]
    fn perfect_link_delivers_everything_in_order_after_the_delay() {
        let mut net = Network::new(1, LinkConfig::default().delay(Duration::from_millis(30)));
        send_numbered(&mut net, 100, Duration::from_millis(1));
        assert!(net.poll_deliver(Micros::from_millis(29)).is_none());
        let ds = deliver_all(&mut net);
        assert_eq!(numbers(&ds), (0..100).collect::<Vec<_>>());
        for d in &ds {
            assert_eq!(d.deliver_at.signed_diff(d.sent), 30_000);
        }
    }

    #[test]
    fn same_seed_same_fate_different_seed_different_fate() {
        let cfg = LinkConfig::default()
            .delay(Duration::from_millis(10))
            .jitter(Duration::from_millis(5))
            .loss(0.2)
            .duplicate(0.1)
            .reorder(0.1, Duration::from_millis(20));
        let run = |seed| {
            let mut net = Network::new(seed, cfg);
            send_numbered(&mut net, 500, Duration::from_millis(2));
            deliver_all(&mut net)
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn random_loss_rate_is_close_to_the_setting() {
        let mut net = Network::new(3, LinkConfig::default().loss(0.1));
        send_numbered(&mut net, 20_000, Duration::from_micros(100));
        let s = net.stats();
        let rate = s.lost_random as f64 / s.sent as f64;
        assert!((0.09..0.11).contains(&rate), "loss rate {rate}");
        assert_eq!(deliver_all(&mut net).len() as u64, s.sent - s.lost());
    }

    #[test]
    fn burst_loss_has_the_requested_rate_and_burst_length() {
        let mut net = Network::new(9, LinkConfig::default().burst(BurstLoss::new(0.05, 4.0)));
        send_numbered(&mut net, 50_000, Duration::from_micros(100));
        let delivered: std::collections::HashSet<u32> =
            numbers(&deliver_all(&mut net)).into_iter().collect();
        let (mut bursts, mut lost, mut run) = (0u32, 0u32, 0u32);
        for i in 0..50_000 {
            if delivered.contains(&i) {
                if run > 0 {
                    bursts += 1;
                }
                run = 0;
            } else {
                lost += 1;
                run += 1;
            }
        }
        let rate = lost as f64 / 50_000.0;
        let mean_burst = lost as f64 / bursts as f64;
        assert!((0.04..0.06).contains(&rate), "burst loss rate {rate}");
        assert!((3.5..4.5).contains(&mean_burst), "mean burst {mean_burst}");
    }

    #[test]
    fn fifo_jitter_keeps_order_and_unordered_jitter_does_not() {
        let base = LinkConfig::default()
            .delay(Duration::from_millis(20))
            .jitter(Duration::from_millis(10));
        let mut fifo = Network::new(5, base);
        send_numbered(&mut fifo, 1000, Duration::from_millis(1));
        let n = numbers(&deliver_all(&mut fifo));
        assert!(n.windows(2).all(|w| w[0] < w[1]));

        let mut loose = Network::new(5, base.unordered());
        send_numbered(&mut loose, 1000, Duration::from_millis(1));
        let n = numbers(&deliver_all(&mut loose));
        assert!(n.windows(2).any(|w| w[0] > w[1]));
    }

    #[test]
    fn reorder_and_duplicate_happen_and_are_counted() {
        let cfg = LinkConfig::default()
            .delay(Duration::from_millis(5))
            .reorder(0.05, Duration::from_millis(10))
            .duplicate(0.05);
        let mut net = Network::new(11, cfg);
        send_numbered(&mut net, 2000, Duration::from_millis(1));
        let n = numbers(&deliver_all(&mut net));
        let s = net.stats();
        assert!(s.reordered > 50 && s.duplicated > 50, "{s:?}");
        assert_eq!(n.len() as u64, 2000 + s.duplicated);
        assert!(n.windows(2).any(|w| w[0] > w[1]));
    }

    #[test]
    fn partitions_drop_across_the_cut_until_healed() {
        let mut net: Network<u8> = Network::new(0, LinkConfig::default());
        net.partition(&[&[0, 1], &[2]]);
        net.send(Micros::ZERO, 0, 1, vec![1]);
        net.send(Micros::ZERO, 0, 2, vec![2]);
        net.send(Micros::ZERO, 3, 2, vec![3]);
        assert!(net.is_cut(1, 2) && !net.is_cut(0, 1) && !net.is_cut(3, 0));
        net.heal();
        net.send(Micros::ZERO, 0, 2, vec![4]);
        let got: Vec<u8> = deliver_all(&mut net).iter().map(|d| d.payload[0]).collect();
        assert_eq!(got, vec![1, 3, 4]);
        assert_eq!(net.stats().dropped_partition, 1);
    }

    /// A node that pings its peer every 100 ms and echoes what it receives.
    struct Echo {
        peer: u8,
        next_ping: Micros,
        pings_left: u32,
        out: Vec<(u8, Vec<u8>)>,
        received: Vec<(Micros, Vec<u8>)>,
    }

    impl SimNode<u8> for Echo {
        fn handle_datagram(&mut self, now: Micros, from: u8, payload: &[u8]) {
            self.received.push((now, payload.to_vec()));
            if payload[0] == b'p' {
                self.out.push((from, b"e".to_vec()));
            }
        }
        fn handle_timeout(&mut self, now: Micros) {
            self.out.push((self.peer, b"p".to_vec()));
            self.pings_left -= 1;
            self.next_ping = now + Duration::from_millis(100);
        }
        fn poll_transmit(&mut self, _now: Micros) -> Option<(u8, Vec<u8>)> {
            self.out.pop()
        }
        fn poll_timeout(&self) -> Option<Micros> {
            (self.pings_left > 0).then_some(self.next_ping)
        }
    }

    #[test]
    fn sim_drives_nodes_on_virtual_time_until_idle() {
        let net = Network::new(0, LinkConfig::default().delay(Duration::from_millis(10)));
        let mut sim = Sim::new(net);
        let node = |peer, pings| Echo {
            peer,
            next_ping: Micros::ZERO,
            pings_left: pings,
            out: Vec::new(),
            received: Vec::new(),
        };
        sim.add_node(0, node(1, 3));
        sim.add_node(1, node(0, 0));
        let steps = sim.run_until_idle(1000).unwrap();
        assert!(steps > 0);
        let a = &sim.nodes[&0];
        let times: Vec<u64> = a.received.iter().map(|(t, _)| t.as_micros()).collect();
        assert_eq!(times, vec![20_000, 120_000, 220_000]);
        assert_eq!(sim.nodes[&1].received.len(), 3);
    }

    #[test]
    fn sim_reports_livelock() {
        let mut sim = Sim::new(Network::new(0, LinkConfig::default()));
        sim.add_node(
            0,
            Echo {
                peer: 0,
                next_ping: Micros::ZERO,
                pings_left: u32::MAX,
                out: Vec::new(),
                received: Vec::new(),
            },
        );
        assert_eq!(sim.run_until_idle(50), Err(SimError::NotIdle(50)));
    }
}
