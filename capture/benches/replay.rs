//! Rebuilding the session document at a random time of a 1-hour, 4-player
//! capture.
//!
//! The setup records a synthetic session ([`jam_capture::synth`]: four
//! players' notes and pedal at musical rates, joins, leaves, role and tempo
//! changes and chat as Automerge changes from each player, markers) through
//! the real [`CaptureWriter`] with its default flush and checkpoint policy.
//! Each measured step opens the capture (key unwrap, header MAC, first
//! chunk) and calls [`CaptureReader::state_at`] at a random time: the index
//! is found through the locator, the last checkpoint before the time loaded,
//! and the changes after it applied.
//!
//! `cargo bench -p jam-capture --bench replay`. After criterion's mean, the
//! bench prints p50, p99 and the maximum over `JAM_BENCH_STATE_SAMPLES`
//! (default 1000) random times. Listing (`--list`) records nothing; test
//! mode (`cargo test --benches`) records 20 s instead of an hour.

use std::hint::black_box;
use std::io::Cursor;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group};
use jam_capture::Identity;
use jam_capture::reader::CaptureReader;
use jam_capture::synth::{Synth, SynthConfig};
use jam_capture::writer::{CaptureConfig, CaptureWriter};
use jam_core::Micros;
use rand::{RngExt, SeedableRng};

/// Length of the recorded session.
fn session() -> Duration {
    if jam_tests::bench::measuring() {
        Duration::from_secs(3600)
    } else {
        Duration::from_secs(20)
    }
}

/// The key and the capture, recorded once, on first use.
static SETUP: LazyLock<(Identity, Vec<u8>)> = LazyLock::new(|| {
    let id = Identity::from_secret_bytes([3; 32]);
    let file = capture(&id);
    (id, file)
});

fn capture(id: &Identity) -> Vec<u8> {
    let synth = Synth::new(SynthConfig {
        players: 4,
        duration: session(),
        ..SynthConfig::default()
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut w = CaptureWriter::create(
        Cursor::new(Vec::new()),
        &[id.to_public()],
        synth.session_start(),
        CaptureConfig::default(),
        &mut rng,
    )
    .unwrap();
    jam_capture::synth::record(synth, &mut w).unwrap();
    let stats = w.stats().clone();
    let file = w.finish_and_record_count().unwrap().into_inner();
    println!(
        "capture: {:.1} MiB, {} records ({} MIDI events, {} document changes, {} checkpoints), {} chunks",
        file.len() as f64 / (1 << 20) as f64,
        stats.records,
        stats.midi_events,
        stats.doc_changes,
        stats.checkpoints,
        stats.chunks + 1,
    );
    file
}

fn state_at(file: &[u8], id: &Identity, t: Micros) -> automerge::Automerge {
    let mut r = CaptureReader::open(Cursor::new(file), std::slice::from_ref(id)).unwrap();
    r.state_at(t).unwrap()
}

fn random_time(rng: &mut rand::rngs::StdRng) -> Micros {
    Micros(rng.random_range(0..session().as_micros() as u64))
}

fn bench(c: &mut Criterion) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    c.bench_function("state_at_random_time_1h_4_players", |b| {
        let (id, file) = &*SETUP;
        b.iter_batched(
            || random_time(&mut rng),
            |t| state_at(file, id, t),
            BatchSize::SmallInput,
        )
    });
}

/// Checks the fast path against a full replay, then times `state_at` at
/// many random times and prints the distribution.
fn distribution() {
    let (id, file) = &*SETUP;
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    for _ in 0..5 {
        let t = random_time(&mut rng);
        let fast = state_at(file, id, t);
        let mut lin = CaptureReader::open(&file[..], std::slice::from_ref(id)).unwrap();
        let slow = lin.state_at_linear(t).unwrap();
        let (mut a, mut b) = (fast.get_heads(), slow.get_heads());
        a.sort();
        b.sort();
        assert_eq!(a, b, "state at {t}");
    }
    let samples: usize = std::env::var("JAM_BENCH_STATE_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut times: Vec<(Duration, Micros)> = (0..samples)
        .map(|_| {
            let t = random_time(&mut rng);
            let s = Instant::now();
            black_box(state_at(file, id, t));
            (s.elapsed(), t)
        })
        .collect();
    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize].0;
    let (max, worst_t) = times[times.len() - 1];
    let doc = state_at(file, id, Micros(session().as_micros() as u64));
    println!(
        "state_at over {samples} random times: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (at {worst_t}); final document {} changes, {} KiB saved",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        doc.get_changes(&[]).len(),
        doc.save().len() / 1024,
    );
    // The slowest times again: deterministic cost or a scheduling stall?
    for &(d, t) in times.iter().rev().take(5) {
        let again = (0..5)
            .map(|_| {
                let s = Instant::now();
                black_box(state_at(file, id, t));
                s.elapsed()
            })
            .min()
            .expect("five runs");
        println!(
            "  at {t}: {:.2} ms, best of 5 reruns {:.2} ms",
            d.as_secs_f64() * 1e3,
            again.as_secs_f64() * 1e3
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    if jam_tests::bench::measuring() {
        distribution();
    }
    Criterion::default().configure_from_args().final_summary();
}
