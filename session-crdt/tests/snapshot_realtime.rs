//! Proves that reading the ensemble snapshot on the audio thread neither
//! allocates nor frees, including reads that race publishes.
//!
//! The global allocator of this test binary counts allocations and frees
//! made by a thread while that thread has "forbidden" set; the reader thread
//! sets it around every read.

#![allow(unsafe_code, reason = "a counting global allocator needs GlobalAlloc")]

use jam_core::{Beats, Meter, PeerId, SessionTime, Tempo};
use jam_session_crdt::{
    Confidence, Profile, Role, RoleAssignment, RoleSource, SessionConfig, SessionDoc,
    SessionSettings, snapshot_channel,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

struct Counting;

static FORBIDDEN_ALLOCS: AtomicU64 = AtomicU64::new(0);
static FORBIDDEN_FREES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // `const` initialisation and no destructor: touching it never allocates.
    static FORBID: Cell<bool> = const { Cell::new(false) };
}

fn forbidden() -> bool {
    FORBID.try_with(|f| f.get()).unwrap_or(false)
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// wrapper only counts, using atomics and a const thread-local, neither of
// which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if forbidden() {
            FORBIDDEN_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if forbidden() {
            FORBIDDEN_FREES.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if forbidden() {
            FORBIDDEN_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn realtime<R>(f: impl FnOnce() -> R) -> R {
    FORBID.with(|c| c.set(true));
    let r = f();
    FORBID.with(|c| c.set(false));
    r
}

fn session(participants: u8) -> SessionDoc {
    let profile = |n: u8| Profile {
        name: format!("p{n}"),
        public_key: [n; 32],
        instrument: "drums".into(),
    };
    let config = SessionConfig {
        id: [1; 16],
        name: "rt".into(),
        created_unix_ms: 0,
        origin: SessionTime(0),
        tempo: Tempo::from_bpm(120.0).unwrap(),
        meter: Meter::FOUR_FOUR,
        settings: SessionSettings::default(),
    };
    let mut doc = SessionDoc::create(&config, PeerId([0; 16]), &profile(0), 1).unwrap();
    // Everyone else joins through changes merged into the founder.
    for n in 1..participants {
        let mut other = SessionDoc::load(&doc.save(), PeerId([n; 16]), u64::from(n)).unwrap();
        other.join(&profile(n), SessionTime(i64::from(n))).unwrap();
        other
            .set_role(
                PeerId([n; 16]),
                Role::ALL[usize::from(n) % 3],
                Some(RoleAssignment {
                    confidence: Confidence::from_per_mille(700),
                    source: RoleSource::Auto,
                }),
            )
            .unwrap();
        let changes: Vec<Vec<u8>> = other
            .take_new_changes()
            .into_iter()
            .map(|c| c.bytes)
            .collect();
        let refs: Vec<&[u8]> = changes.iter().map(|c| c.as_slice()).collect();
        doc.apply_changes(&refs).unwrap();
    }
    doc
}

/// What the engine does with a snapshot in one block: walk members and
/// roles, and ask the timeline.
fn use_snapshot(s: &jam_session_crdt::EnsembleSnapshot, t: i64) -> i64 {
    let mut acc = s.max_rtt_p99_us() as i64;
    for m in s.present() {
        for r in Role::ALL {
            if let Some(a) = m.role(r) {
                acc += i64::from(a.confidence.per_mille());
            }
        }
    }
    acc += s.timeline.beat_at(SessionTime(t)).0;
    acc += s.timeline.time_at(Beats::from_beats(t % 1000)).0;
    acc += s.member(PeerId([3; 16])).map_or(0, |m| m.joined.0);
    acc
}

#[test]
fn reading_snapshots_never_allocates_or_frees_even_racing_publishes() {
    // First make sure the harness can fail: an allocation made while
    // forbidden is counted (then the counter is reset).
    let v = realtime(|| vec![1u8; 10]);
    assert_eq!(FORBIDDEN_ALLOCS.swap(0, Ordering::Relaxed), 1);
    drop(v);

    let mut doc = session(16);
    let (mut publisher, mut reader) = snapshot_channel(doc.snapshot().unwrap());
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let (d, r) = (done.clone(), reads.clone());
    let audio = std::thread::spawn(move || {
        let mut checksum = 0i64;
        let mut versions_seen = 0;
        let mut last_version = 0;
        let mut t = 0i64;
        while !d.load(Ordering::Acquire) {
            realtime(|| {
                let s = reader.read();
                checksum = checksum.wrapping_add(use_snapshot(s, t));
            });
            if reader.version() != last_version {
                last_version = reader.version();
                versions_seen += 1;
            }
            t += 1_000;
            r.fetch_add(1, Ordering::Relaxed);
        }
        // Final reads pick up the last snapshot.
        for _ in 0..3 {
            realtime(|| {
                reader.read();
            });
        }
        (reader, checksum, versions_seen)
    });
    // The worker publishes changed snapshots as fast as it can while the
    // audio thread reads.
    for i in 0..300u32 {
        doc.change_tempo(
            Beats::from_beats(i64::from(i) * 4 + 4),
            Tempo::from_bpm(100.0 + f64::from(i % 50)).unwrap(),
            Meter::FOUR_FOUR,
            SessionTime(i64::from(i)),
        )
        .unwrap();
        publisher.publish(doc.snapshot().unwrap());
        if i % 64 == 0 {
            // Let the reader interleave with publishes.
            std::thread::yield_now();
        }
    }
    while reads.load(Ordering::Relaxed) < 10_000 {
        std::thread::yield_now();
        publisher.collect();
    }
    done.store(true, Ordering::Release);
    let (mut reader, checksum, versions_seen) = audio.join().unwrap();
    publisher.collect();
    assert_eq!(
        FORBIDDEN_ALLOCS.load(Ordering::Relaxed),
        0,
        "allocations on the audio thread"
    );
    assert_eq!(
        FORBIDDEN_FREES.load(Ordering::Relaxed),
        0,
        "frees on the audio thread"
    );
    assert!(versions_seen > 0, "the reader saw new snapshots");
    assert_ne!(checksum, 0);
    // After the race the reader ends on the newest snapshot.
    publisher.collect();
    reader.read();
    assert_eq!(*reader.read(), **publisher.latest());
}
