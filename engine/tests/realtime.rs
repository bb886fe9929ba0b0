//! Real-time safety of `EngineRt::process_block`, proven under load.
//!
//! Ten simulated minutes at 48 kHz in 256-sample blocks with 8 remote peers
//! streaming 50 events/s each through the real worker and rings, plus host
//! notes going out, switches through all four latency modes (live,
//! coherent, interval, predictive with a trained agent predicting every
//! peer), transport loops, timeline swaps, bursts that fill both rings, and
//! the record switch on for most of the run (the worker writing a sealed
//! capture of everything, started and finished as it flips). Every block runs under
//! `assert_no_alloc` with its allocator installed for the whole test
//! binary: any allocation or free inside `process_block` is counted and
//! fails the test.
//!
//! Locks: `EngineRt` holds no lock type (only rtrb ends, plain data and an
//! `Arc` whose atomics it touches), so none can be taken by construction.
//! The test also shows the audio thread never *waits* inside
//! `process_block`: on Linux it reads the thread's voluntary context
//! switches (counted by the kernel each time a thread blocks: a contended
//! lock, a sleep, blocking I/O, a page fault that has to wait for memory)
//! with `getrusage(RUSAGE_THREAD)` right before and after every call, and
//! requires their sum to be zero. Only the calls are counted, not the test's
//! own loop around them. A second test proves the counting method sees a
//! contended lock and a sleep.
//!
//! Paging is the host's business, not the engine's: the test locks the
//! process's memory first (`mlockall`, current and future mappings, as
//! real-time audio hosts do), so that the first run of a code path cannot
//! fault on a page of the binary while another thread holds the process's
//! memory map (a wait the kernel counts as voluntary, seen once in a run on
//! a loaded machine; unlocked, a run counts a few minor faults inside
//! `process_block`, locked none, and the test prints them). Where locking is not allowed (an unprivileged user
//! with a small `RLIMIT_MEMLOCK`) the test says so and runs unlocked.

#![allow(
    unsafe_code,
    reason = "getrusage(RUSAGE_THREAD) and mlockall are libc calls"
)]

use assert_no_alloc::{AllocDisabler, assert_no_alloc, reset_violation_count, violation_count};
use jam_core::{Beats, Micros, PeerId, ShortMessage};
use jam_engine::net::{NetCommand, NetEvent, net_link};
use jam_engine::{
    Block, Engine, EngineConfig, EventBuffer, HostEvent, HostTransport, INCOMING_RING_CAPACITY,
    LatencyMode, MAX_EVENTS_PER_BLOCK, OUTGOING_RING_CAPACITY, Role, Settings, Timeline,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[global_allocator]
static A: AllocDisabler = AllocDisabler;

const SR: u32 = 48_000;
const BLOCK: usize = 256;
const SIM_SECONDS: u64 = 600;
const PEERS: u8 = 8;
const EVENTS_PER_PEER_PER_S: u64 = 50;
/// When the feeder bursts and the audio thread pauses (simulated µs).
const BURST_AT_US: u64 = 300_000_000;
/// Host events in the one block that overflows the outgoing ring.
const HOST_BURST: usize = 5 * OUTGOING_RING_CAPACITY;

/// What the kernel counted for the calling thread so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ThreadUsage {
    /// Voluntary context switches: times the thread blocked.
    voluntary: u64,
    /// Page faults that needed I/O.
    major_faults: u64,
    /// Page faults served without I/O.
    minor_faults: u64,
}

impl ThreadUsage {
    /// `getrusage(RUSAGE_THREAD)` for the calling thread; `None` where
    /// the kernel has no per-thread figures.
    #[cfg(target_os = "linux")]
    fn now() -> Option<ThreadUsage> {
        let mut u = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: `u` is a valid, writable `rusage`; RUSAGE_THREAD names the
        // calling thread; the call writes only into `u`.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, u.as_mut_ptr()) };
        if rc != 0 {
            return None;
        }
        // SAFETY: `rusage` is plain integers, zeroed above and filled by
        // the successful call.
        let u = unsafe { u.assume_init() };
        Some(ThreadUsage {
            voluntary: u.ru_nvcsw as u64,
            major_faults: u.ru_majflt as u64,
            minor_faults: u.ru_minflt as u64,
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn now() -> Option<ThreadUsage> {
        None
    }
}

/// Locks every page the process maps, now and later, in memory; `false`
/// (with the reason printed) where the system refuses.
#[cfg(target_os = "linux")]
fn lock_memory() -> bool {
    // SAFETY: mlockall takes flags only and changes no Rust-visible state.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if rc != 0 {
        eprintln!(
            "NOTE: mlockall failed ({}): running with memory unlocked, so a page \
             fault on a loaded machine may show up as a wait",
            std::io::Error::last_os_error()
        );
    }
    rc == 0
}

#[cfg(not(target_os = "linux"))]
fn lock_memory() -> bool {
    false
}

/// Runs `f` on this thread and adds to `total` what the kernel counted for
/// the thread during the call, and only during it (`total` becomes `None`
/// where the counts are not available).
fn counted<R>(total: &mut Option<ThreadUsage>, f: impl FnOnce() -> R) -> R {
    let before = ThreadUsage::now();
    let r = f();
    let after = ThreadUsage::now();
    *total = match (*total, before, after) {
        (Some(t), Some(b), Some(a)) => Some(ThreadUsage {
            voluntary: t.voluntary + (a.voluntary - b.voluntary),
            major_faults: t.major_faults + (a.major_faults - b.major_faults),
            minor_faults: t.minor_faults + (a.minor_faults - b.minor_faults),
        }),
        _ => None,
    };
    r
}

#[test]
fn the_count_of_blocking_sees_a_contended_lock_and_a_sleep() {
    if ThreadUsage::now().is_none() {
        eprintln!("SKIP: no per-thread usage figures on this system");
        return;
    }
    // A lock another thread holds for a while: taking it must wait.
    let lock = Arc::new(std::sync::Mutex::new(()));
    let held = Arc::new(std::sync::Barrier::new(2));
    let holder = {
        let (lock, held) = (lock.clone(), held.clone());
        std::thread::spawn(move || {
            let _g = lock.lock().unwrap();
            held.wait();
            std::thread::sleep(std::time::Duration::from_millis(50));
        })
    };
    held.wait();
    let mut waited = Some(ThreadUsage::default());
    counted(&mut waited, || drop(lock.lock().unwrap()));
    holder.join().unwrap();
    let waited = waited.unwrap();
    assert!(
        waited.voluntary >= 1,
        "a contended lock went unseen: {waited:?}"
    );

    let mut slept = Some(ThreadUsage::default());
    counted(&mut slept, || {
        std::thread::sleep(std::time::Duration::from_millis(2))
    });
    let slept = slept.unwrap();
    assert!(slept.voluntary >= 1, "a sleep went unseen: {slept:?}");
}

#[test]
fn ten_simulated_minutes_with_eight_peers_never_allocate_or_block() {
    let locked = lock_memory();
    let (mut rt, worker) = Engine::new(EngineConfig::new(PeerId([0xAA; 16])));
    let (link, mut port) = net_link();
    let handle = worker.spawn(link).unwrap();
    let control = handle.control();
    // An agent for predictive mode, trained on seeded melodies.
    let lines = jam_predict::synth::motif_tunes(5, 8, 4);
    let model = jam_predict::agent::markov::train(&lines, &Default::default());
    control.set_agent_model(model.to_model_bytes());
    // The record switch writes sealed captures into a temporary folder.
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.key");
    let id = jam_capture::Identity::generate(&mut rand::rng());
    let text = jam_capture::keys::encode_key_file(
        &id,
        None,
        jam_capture::keys::KdfParams::DEFAULT,
        &mut rand::rng(),
    )
    .unwrap();
    std::fs::write(&key, text.as_str()).unwrap();
    let folder = dir.path().join("captures");
    control.set_capture_target(
        jam_engine::CaptureTarget {
            folder: Some(folder.clone()),
            key_file: Some(key),
            recorder_name: "rt".into(),
            session: "realtime".into(),
            session_name: None,
        },
        jam_core::MonotonicClock::new(),
    );

    // Simulated time of the block being processed, published by the audio
    // thread (one relaxed store per block) for the feeder to pace itself.
    let sim_now = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));

    // Network side: 8 peers join, then stream; a burst at 5 minutes fills the
    // incoming ring. Commands from the worker are drained and counted.
    let feeder = {
        let sim_now = sim_now.clone();
        let done = done.clone();
        let events = port.events.clone();
        std::thread::spawn(move || {
            for p in 0..PEERS {
                events
                    .blocking_send(NetEvent::PeerJoined {
                        peer: PeerId([p + 1; 16]),
                        name: format!("peer {p}"),
                        role: Role::Melody,
                        address: None,
                        key: None,
                    })
                    .unwrap();
            }
            let period_us = 1_000_000 / EVENTS_PER_PEER_PER_S;
            let mut next_us = 0u64;
            let mut n = 0u64;
            let mut burst_done = false;
            while !done.load(Ordering::Relaxed) {
                let now = sim_now.load(Ordering::Relaxed);
                if !burst_done && now >= BURST_AT_US {
                    // The audio thread is paused here: this burst must
                    // overflow the incoming ring.
                    burst_done = true;
                    for i in 0..(2 * INCOMING_RING_CAPACITY as u64) {
                        if events
                            .blocking_send(midi(PeerId([1; 16]), i, now, i % 2 == 0))
                            .is_err()
                        {
                            return;
                        }
                    }
                }
                while next_us <= now {
                    for p in 0..PEERS {
                        let on = n.is_multiple_of(2);
                        let msg = midi(PeerId([p + 1; 16]), n + p as u64, next_us, on);
                        if events.blocking_send(msg).is_err() {
                            return;
                        }
                    }
                    n += 1;
                    next_us += period_us;
                }
                std::thread::yield_now();
            }
        })
    };
    let commands = std::thread::spawn(move || {
        let mut sent = 0u64;
        while let Some(c) = port.commands.blocking_recv() {
            if let NetCommand::SendMidi(v) = c {
                sent += v.len() as u64;
            }
        }
        sent
    });

    // The audio thread.
    let audio = {
        let sim_now = sim_now.clone();
        let control = control.clone();
        std::thread::spawn(move || {
            let mut out = EventBuffer::with_capacity(MAX_EVENTS_PER_BLOCK);
            let mut input = EventBuffer::with_capacity(MAX_EVENTS_PER_BLOCK);
            let burst: Vec<HostEvent> = (0..HOST_BURST)
                .map(|i| HostEvent {
                    offset: (i * BLOCK / HOST_BURST) as u32,
                    msg: ShortMessage::note_on(1, (i % 128) as u8, 1),
                })
                .collect();
            let mut paused = false;
            // What the kernel counted for this thread inside the calls.
            let mut usage = ThreadUsage::now().map(|_| ThreadUsage::default());
            let mut left = vec![0.0f32; BLOCK];
            let mut right = vec![0.0f32; BLOCK];
            let blocks = SIM_SECONDS * SR as u64 / BLOCK as u64;
            let mut peak = 0.0f32;
            let mut placed = 0u64;
            reset_violation_count();
            for b in 0..blocks {
                let now = Micros(b * BLOCK as u64 * 1_000_000 / SR as u64);
                sim_now.store(now.0, Ordering::Relaxed);
                // Every 30 s the mode changes, through all four; the host
                // plays 4-bar loops in the first half, then stops (session
                // timeline).
                let period = (now.0 / 30_000_000) as usize;
                let settings = Settings {
                    latency: LatencyMode::ALL[period % LatencyMode::ALL.len()],
                    interval_beats: 4,
                    role: if b % 5000 < 2500 {
                        Role::Rhythm
                    } else {
                        Role::Harmony
                    },
                    ..Settings::default()
                };
                let beat = (b as f64 * BLOCK as f64 / 24_000.0) % 16.0;
                let transport = HostTransport {
                    playing: now.0 < 300_000_000,
                    tempo: Some(120.0),
                    beat: Some(beat),
                };
                if !paused && now.0 >= BURST_AT_US {
                    // Stop consuming until the feeder's burst has overflowed
                    // the incoming ring. The wait spins (no blocking call)
                    // and is not part of the measured process calls.
                    paused = true;
                    let t0 = std::time::Instant::now();
                    while control.counters().dropped_incoming == 0
                        && t0.elapsed() < std::time::Duration::from_secs(60)
                    {
                        std::hint::spin_loop();
                    }
                }
                // Host notes: a chord every 50 blocks; once, a burst far
                // larger than the outgoing ring.
                input.clear();
                let count = if b % 50 == 0 { 3 } else { 0 };
                for i in 0..count {
                    let msg = ShortMessage::note_on(0, 48 + (i % 24) as u8, 100);
                    let _ = input.push(HostEvent {
                        offset: (i % BLOCK) as u32,
                        msg,
                    });
                }
                // An input already sorted by offset, as hosts deliver it.
                input.as_mut_slice().sort_unstable_by_key(|e| e.offset);
                if b == 70_000 {
                    // A session timeline snapshot arrives (same mapping,
                    // re-anchored), through the worker and the ring.
                    let t = Timeline::default();
                    control.set_timeline(Timeline::new(120.0, t.beat_at(now), now));
                }
                let host_input = if b == 20_000 {
                    &burst[..]
                } else {
                    input.as_slice()
                };
                // Recording for 90 000 blocks of every 100 000.
                let record = b % 100_000 < 90_000;
                counted(&mut usage, || {
                    assert_no_alloc(|| {
                        rt.set_record(record);
                        rt.process_block(&mut Block {
                            now,
                            sample_rate: SR as f32,
                            transport,
                            settings,
                            input: host_input,
                            output: &mut out,
                            left: &mut left,
                            right: &mut right,
                        })
                    })
                });
                placed += out.len() as u64;
                for x in left.iter().chain(&right) {
                    peak = peak.max(x.abs());
                }
            }
            let violations = violation_count();
            (violations, usage, placed, peak, rt)
        })
    };
    let (violations, usage, placed, peak, rt) = audio.join().unwrap();
    done.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    let counters = control.counters();
    let peers = control.peers();
    let capture = control.capture_status();
    drop(rt);
    handle.stop();
    let sent = commands.join().unwrap();

    eprintln!(
        "violations {violations}, inside process_block: {usage:?}, placed {placed}, \
         peak {peak:.3}, sent {sent}, counters {counters:?}, memory locked: {locked}"
    );
    assert_eq!(violations, 0, "process_block allocated or freed memory");
    if let Some(u) = usage {
        assert_eq!(
            u.voluntary, 0,
            "the audio thread blocked {} times inside process_block ({u:?})",
            u.voluntary
        );
    }
    assert_eq!(peers.len(), PEERS as usize);
    // The streams really went through: most of 8 × 50 × 600 events placed.
    assert!(placed > 100_000, "placed only {placed}");
    assert!(
        peak > 0.0 && peak.is_finite(),
        "monitor synth silent or broken: {peak}"
    );
    // Full rings happened and were counted, not waited on.
    assert!(counters.dropped_outgoing > 0, "{counters:?}");
    assert!(counters.dropped_incoming > 0, "{counters:?}");
    assert_eq!(counters.blocks, SIM_SECONDS * SR as u64 / BLOCK as u64);
    assert!(sent > 0 && sent == counters.sent);
    // The record switch ran: a first capture finished at block 90 000, a
    // second ran to the end (finished when the worker stopped). A worker
    // held up for the whole 10 000-block gap may see no gap: one file.
    assert_eq!(capture.error, None, "{capture:?}");
    assert!(capture.recording && capture.events > 0, "{capture:?}");
    let files = std::fs::read_dir(&folder).unwrap().count();
    assert!((1..=2).contains(&files), "{files} captures: {capture:?}");
    // Predictive mode ran with the agent: predictions were played.
    let predicted: u64 = peers.iter().map(|p| p.predicted).sum();
    assert!(predicted > 0, "{peers:?}");
}

fn midi(peer: PeerId, n: u64, at_us: u64, on: bool) -> NetEvent {
    let key = 40 + (n % 40) as u8;
    let msg = if on {
        ShortMessage::note_on(0, key, 90)
    } else {
        ShortMessage::note_off(0, key, 0)
    };
    // The beat the sender's host had: 120 BPM from the simulated time,
    // looping over 16 beats while the receiving host loops too (first half).
    let beat = Beats((at_us as i64) * 2);
    let beat = if at_us < BURST_AT_US {
        Beats(beat.0 % 16_000_000)
    } else {
        beat
    };
    NetEvent::Midi {
        peer,
        msg,
        sent_at: Micros(at_us.saturating_sub(20_000)),
        beat: Some(beat),
        arrival: Micros(at_us),
        recovered: n.is_multiple_of(97),
    }
}
