//! `EngineRt::process_block` cost per 256-sample block at 48 kHz with 8
//! remote peers sending 50 events/s each (live mode, monitor synth on).
//!
//! Two views: criterion's mean per block, and the distribution of single
//! blocks (p50, p99, p99.9, max) over ten simulated minutes recorded in an
//! HDR histogram, printed as `per-block ...`. The target is p99.9 at most 1 %
//! of the block period (5.33 ms → 53 µs).
//!
//! Run: `cargo bench -p jam-engine --bench process`.

use criterion::{Criterion, criterion_group, criterion_main};
use jam_core::{Beats, Micros, PeerId, ShortMessage};
use jam_engine::net::{NetEvent, net_link};
use jam_engine::{
    Block, Engine, EngineConfig, EngineRt, EventBuffer, MAX_EVENTS_PER_BLOCK, Role, Settings,
    WorkerHandle,
};
use std::hint::black_box;
use std::time::{Duration, Instant};

const SR: u64 = 48_000;
const BLOCK: usize = 256;
const PEERS: u8 = 8;
const EVENTS_PER_PEER_PER_S: u64 = 50;

struct Rig {
    rt: EngineRt,
    _handle: WorkerHandle,
    events: tokio::sync::mpsc::Sender<NetEvent>,
    out: EventBuffer<jam_engine::OutEvent>,
    left: Vec<f32>,
    right: Vec<f32>,
    block: u64,
    n: u64,
    monitor: bool,
    /// True when the last measured block was preempted.
    preempted: bool,
}

impl Rig {
    fn new(monitor: bool) -> Rig {
        let (rt, worker) = Engine::new(EngineConfig::new(PeerId([1; 16])));
        let (link, port) = net_link();
        let handle = worker.spawn(link).unwrap();
        // Keep the command side open so the worker never counts drops.
        std::thread::spawn(move || {
            let mut commands = port.commands;
            while commands.blocking_recv().is_some() {}
        });
        let events = port.events;
        for p in 0..PEERS {
            events
                .blocking_send(NetEvent::PeerJoined {
                    peer: PeerId([p + 2; 16]),
                    name: format!("peer {p}"),
                    role: Role::Melody,
                    address: None,
                })
                .unwrap();
        }
        Rig {
            rt,
            _handle: handle,
            events,
            out: EventBuffer::with_capacity(MAX_EVENTS_PER_BLOCK),
            left: vec![0.0; BLOCK],
            right: vec![0.0; BLOCK],
            block: 0,
            n: 0,
            monitor,
            preempted: false,
        }
    }

    /// Feeds the events due in the next block (8 peers × 50/s), waits until
    /// the worker has moved them into the ring, then times one block.
    fn step(&mut self) -> Duration {
        let now_us = self.block * BLOCK as u64 * 1_000_000 / SR;
        let end_us = (self.block + 1) * BLOCK as u64 * 1_000_000 / SR;
        let period = 1_000_000 / EVENTS_PER_PEER_PER_S;
        while self.n * period < end_us {
            for p in 0..PEERS {
                let key = 40 + ((self.n + p as u64) % 40) as u8;
                let msg = if self.n.is_multiple_of(2) {
                    ShortMessage::note_on(0, key, 90)
                } else {
                    ShortMessage::note_off(0, key, 0)
                };
                let peer = PeerId([p + 2; 16]);
                let at = Micros(self.n * period);
                self.events
                    .blocking_send(NetEvent::Midi {
                        peer,
                        msg,
                        sent_at: at,
                        beat: Some(Beats(at.0 as i64 * 2)),
                        arrival: at,
                        recovered: false,
                    })
                    .unwrap();
            }
            self.n += 1;
        }
        // The worker polls every millisecond; give it the time it would
        // have in real time (outside the measurement).
        std::thread::sleep(Duration::from_micros(1500));
        let switches = involuntary_switches();
        let t0 = Instant::now();
        self.rt.process_block(&mut Block {
            now: Micros(now_us),
            sample_rate: SR as f32,
            transport: Default::default(),
            settings: Settings {
                monitor: self.monitor,
                ..Settings::default()
            },
            input: &[],
            output: &mut self.out,
            left: &mut self.left,
            right: &mut self.right,
        });
        let dt = t0.elapsed();
        self.preempted = involuntary_switches() != switches;
        black_box(&self.left);
        self.block += 1;
        dt
    }
}

/// The kernel's count of times this thread was preempted (another task
/// took its core). Read outside the measured span.
fn involuntary_switches() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
}

fn bench(c: &mut Criterion) {
    let mut rig = Rig::new(true);
    c.bench_function("process_block 256 @48k, 8 peers x 50 ev/s", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rig.step()).sum())
    });
    let mut rig = Rig::new(false);
    c.bench_function(
        "process_block 256 @48k, 8 peers x 50 ev/s, monitor off",
        |b| b.iter_custom(|iters| (0..iters).map(|_| rig.step()).sum()),
    );

    // Per-block distribution over simulated minutes (bounded by wall
    // time). Only in a real benchmark run (`cargo bench` passes `--bench`):
    // not when a test runner lists the benchmarks (`--list`) or runs them
    // once as tests.
    if !jam_tests::bench::measuring() {
        return;
    }
    let minutes: u64 = std::env::var("JAM_BENCH_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(1);
    for monitor in [true, false] {
        let mut rig = Rig::new(monitor);
        let new_hist =
            || hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
        let (mut all, mut alone) = (new_hist(), new_hist());
        let blocks = minutes * 60 * SR / BLOCK as u64;
        for _ in 0..blocks {
            let ns = (rig.step().as_nanos() as u64).max(1);
            all.record(ns).unwrap();
            if !rig.preempted {
                alone.record(ns).unwrap();
            }
        }
        let us = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        for (what, h) in [("all blocks", &all), ("blocks not preempted", &alone)] {
            println!(
                "monitor {}, {what} ({} of {blocks}, {minutes} simulated min): p50 {:.2} µs, \
                 p99 {:.2} µs, p99.9 {:.2} µs, max {:.2} µs (budget 53.3 µs = 1 % of 5.33 ms)",
                if monitor { "on" } else { "off" },
                h.len(),
                us(h, 0.5),
                us(h, 0.99),
                us(h, 0.999),
                h.max() as f64 / 1000.0,
            );
        }
        println!("voices sounding at the end: {}", rig.rt.active_voices());
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(10));
    targets = bench
}
criterion_main!(benches);
