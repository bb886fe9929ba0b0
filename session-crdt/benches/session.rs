//! Session document benchmarks: full sync of a big session, the wire cost of
//! one role change, snapshot publishing, memory.
//!
//! `cargo bench -p jam-session-crdt --bench session`. Figures that are
//! counts (bytes, heap) are printed once before the timed runs.
//! `JAM_BENCH_PARTICIPANTS` / `JAM_BENCH_CHANGES` shrink the big fixture.

#![allow(unsafe_code, reason = "a counting global allocator measures heap use")]

use automerge::{ActorId, Automerge};
use criterion::{Criterion, criterion_group, criterion_main};
use jam_core::{Beats, Meter, Micros, PeerId, SessionTime, Tempo};
use jam_session_crdt::schema;
use jam_session_crdt::{
    ChatMessage, Confidence, ConnectionStats, Profile, Role, RoleAssignment, RoleSource,
    SessionConfig, SessionDoc, SessionSettings, TempoEntry, snapshot_channel,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged and only
// adjusts an atomic counter.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peer(i: usize) -> PeerId {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
    PeerId(b)
}

fn profile(i: usize) -> Profile {
    Profile {
        name: format!("player {i}"),
        public_key: [i as u8; 32],
        instrument: "keys".into(),
    }
}

fn config() -> SessionConfig {
    SessionConfig {
        id: [1; 16],
        name: "bench".into(),
        created_unix_ms: 0,
        origin: SessionTime(0),
        tempo: Tempo::from_bpm(120.0).unwrap(),
        meter: Meter::FOUR_FOUR,
        settings: SessionSettings::default(),
    }
}

/// A session with `participants` members (each joined with its own actor)
/// and `changes` changes in total: joins, then role changes, connection
/// figures, chat and tempo changes round-robin.
fn big_session(participants: usize, changes: usize) -> Vec<u8> {
    let founder = SessionDoc::create(&config(), peer(0), &profile(0), 0).unwrap();
    let mut doc = Automerge::load(&founder.save()).unwrap();
    let actor = |i: usize| {
        let mut b = peer(i).0.to_vec();
        b.extend_from_slice(&[9; 8]);
        ActorId::from(&b[..])
    };
    for i in 1..participants {
        doc.set_actor(actor(i));
        doc.transact(|tx| schema::write_join(tx, peer(i), &profile(i), SessionTime(i as i64)))
            .unwrap();
    }
    let mut made = participants;
    let mut k = 0usize;
    while made < changes {
        let i = k % participants;
        doc.set_actor(actor(i));
        let at = SessionTime(1_000_000 + k as i64);
        match k % 4 {
            0 => doc.transact(|tx| {
                schema::write_role(
                    tx,
                    peer(i),
                    Role::ALL[k % 3],
                    Some(RoleAssignment {
                        confidence: Confidence::from_per_mille((k % 1001) as u16),
                        source: RoleSource::Auto,
                    }),
                )
            }),
            1 => doc.transact(|tx| {
                schema::write_connection(
                    tx,
                    peer(i),
                    ConnectionStats {
                        rtt_median_us: (k % 90_000) as u32,
                        rtt_p99_us: (k % 200_000) as u32,
                        loss_ppm: (k % 5_000) as u32,
                    },
                )
            }),
            2 => doc.transact(|tx| {
                schema::write_chat(
                    tx,
                    &ChatMessage {
                        author: peer(i),
                        at,
                        text: "ok".into(),
                    },
                )
            }),
            _ => doc.transact(|tx| {
                schema::write_tempo_change(
                    tx,
                    &TempoEntry {
                        id: format!("{}.{k}", peer(i)),
                        change: jam_core::TempoChange {
                            at: Beats::from_beats(4 * (k as i64 / 4 + 1)),
                            tempo: Tempo::from_bpm(80.0 + (k % 80) as f64).unwrap(),
                            meter: Meter::FOUR_FOUR,
                        },
                        made_at: at,
                        by: peer(i),
                    },
                )
            }),
        }
        .unwrap();
        made += 1;
        k += 1;
    }
    doc.save()
}

/// Syncs `b` from `a` until quiet; returns (messages, bytes).
fn sync(a: &mut SessionDoc, b: &mut SessionDoc) -> (usize, usize) {
    let (pa, pb) = (a.me(), b.me());
    let (mut msgs, mut bytes) = (0, 0);
    loop {
        let mut quiet = true;
        while let Some(m) = a.generate_sync_message(Micros(0), pb) {
            msgs += 1;
            bytes += m.len();
            b.receive_sync_message(Micros(0), pa, &m).unwrap();
            quiet = false;
        }
        while let Some(m) = b.generate_sync_message(Micros(0), pa) {
            msgs += 1;
            bytes += m.len();
            a.receive_sync_message(Micros(0), pb, &m).unwrap();
            quiet = false;
        }
        if quiet {
            return (msgs, bytes);
        }
    }
}

fn bench(c: &mut Criterion) {
    // `cargo bench` passes --bench; a test run (`cargo test --all-targets`)
    // runs every benchmark once on a small fixture.
    let full = std::env::args().any(|a| a == "--bench");
    let participants = env("JAM_BENCH_PARTICIPANTS", if full { 1000 } else { 50 });
    let changes = env("JAM_BENCH_CHANGES", if full { 100_000 } else { 500 });
    let t = Instant::now();
    let saved = big_session(participants, changes);
    eprintln!(
        "fixture: {participants} participants, {changes} changes, built in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Memory: saved size, and the heap held by a loaded replica.
    let before = LIVE.load(Ordering::Relaxed);
    let t = Instant::now();
    let source = SessionDoc::load(&saved, peer(5000), 1).unwrap();
    let load_time = t.elapsed();
    let heap = LIVE.load(Ordering::Relaxed) - before;
    eprintln!(
        "memory: saved document {} bytes; loaded replica (document + typed view) {} bytes of heap; load {:.0} ms",
        saved.len(),
        heap,
        load_time.as_secs_f64() * 1e3
    );

    // Full sync from empty: once for the byte count, then timed.
    let mut a = SessionDoc::load(&saved, peer(0), 2).unwrap();
    let mut empty = SessionDoc::new_replica(peer(6000), 3);
    let t = Instant::now();
    let (msgs, bytes) = sync(&mut a, &mut empty);
    eprintln!(
        "full sync from empty: {msgs} messages, {bytes} bytes, {:.0} ms (one run)",
        t.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(empty.state(), source.state());

    // One role change to an up-to-date peer: every byte both ways.
    let mut b = empty;
    let (_, _) = sync(&mut a, &mut b);
    a.set_role(
        peer(7),
        Role::Melody,
        Some(RoleAssignment {
            confidence: Confidence::from_per_mille(640),
            source: RoleSource::Manual,
        }),
    )
    .unwrap();
    let first = a.generate_sync_message(Micros(0), b.me()).unwrap();
    b.receive_sync_message(Micros(0), a.me(), &first).unwrap();
    let (rest_msgs, rest_bytes) = sync(&mut a, &mut b);
    eprintln!(
        "role change to an up-to-date peer: change-carrying message {} bytes; {} more message(s), {} bytes, until quiet",
        first.len(),
        rest_msgs,
        rest_bytes
    );
    assert_eq!(a.heads(), b.heads());

    let mut g = c.benchmark_group("session");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.bench_function(
        format!("full_sync_from_empty_{participants}p_{changes}c"),
        |bench| {
            bench.iter(|| {
                let mut empty = SessionDoc::new_replica(peer(6000), 3);
                black_box(sync(&mut a, &mut empty));
                a.remove_peer(peer(6000));
            })
        },
    );
    g.bench_function(format!("load_{participants}p_{changes}c"), |bench| {
        bench.iter(|| black_box(SessionDoc::load(&saved, peer(1), 1).unwrap()))
    });
    g.finish();

    let mut g = c.benchmark_group("session_small");
    // 64 participants: edit, incremental view update, snapshot, publish.
    let small = SessionDoc::load(&big_session(64, 64 * 4), peer(0), 4).unwrap();
    let state = small.state().unwrap().clone();
    let (mut publisher, mut reader) = snapshot_channel(small.snapshot().unwrap());
    g.bench_function("snapshot_build_and_publish_64p", |bench| {
        bench.iter(|| {
            publisher.publish(jam_session_crdt::EnsembleSnapshot::from_state(&state));
            black_box(reader.read());
        })
    });
    g.bench_function("snapshot_read_64p", |bench| {
        bench.iter(|| black_box(reader.read().max_rtt_p99_us()))
    });
    let mut editing = SessionDoc::load(&small.save(), peer(3), 5).unwrap();
    let mut k = 0u16;
    g.bench_function("role_change_edit_view_snapshot_publish_64p", |bench| {
        bench.iter(|| {
            k = (k + 1) % 1000;
            editing
                .set_role(
                    peer(3),
                    Role::Rhythm,
                    Some(RoleAssignment {
                        confidence: Confidence::from_per_mille(k),
                        source: RoleSource::Auto,
                    }),
                )
                .unwrap();
            publisher.publish(editing.snapshot().unwrap());
            black_box(reader.read());
        })
    });
    let tl = small.timeline().unwrap().clone();
    g.bench_function("timeline_beat_at", |bench| {
        let mut t = 0i64;
        bench.iter(|| {
            t = (t + 7_919) % 86_400_000_000;
            black_box(tl.beat_at(SessionTime(t)))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
