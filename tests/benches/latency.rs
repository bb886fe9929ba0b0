//! One-way delivery latency on loopback, note in to note out, p50 and p99:
//! our stack, pymidi's, and a bare UDP round trip halved, in one run.
//!
//! ```text
//! cargo bench -p jam-tests --bench latency
//! JAM_LATENCY_NOTES=5000 JAM_LATENCY_ROUNDS=10 JAM_LATENCY_INTERVAL_US=2000 cargo bench -p jam-tests --bench latency
//! JAM_LATENCY_ONLY="tokio,ours -> ours" cargo bench -p jam-tests --bench latency
//! ```
//!
//! A `harness = false` bench in jam-tests rather than a criterion one or a
//! `jam` subcommand: it measures a distribution across processes and
//! threads (criterion times a closure in a loop), it needs the pymidi
//! peer and helpers that live here, and a comparison peer has no place in
//! the shipped CLI.
//!
//! Every path sends the same traffic: notes (note on, note off in turn)
//! one every `JAM_LATENCY_INTERVAL_US` (default 5 ms, a busy player),
//! `JAM_LATENCY_NOTES` in all (default 3000), on 127.0.0.1. The paths take
//! turns in `JAM_LATENCY_ROUNDS` rounds (default 5), each run starting with
//! 100 unrecorded warm-up notes, so a change in the machine's load weighs
//! on every path alike. Times are `CLOCK_MONOTONIC` readings, which every
//! process on the machine shares (Python's `time.monotonic_ns()` is the
//! same clock), so a send in one process and an arrival in another compare
//! directly. What each row measures:
//!
//! - **bare UDP, round trip / 2**: two blocking `std` sockets in two
//!   threads; one sends a 30-octet datagram (a one-note RTP-MIDI packet
//!   with a small journal), the other echoes it at once; the round trip,
//!   halved. The baseline the ratios use.
//! - **bare UDP, one way, blocking threads**: the same sockets, no echo:
//!   from just before `send` to just after `recv` returns in the other
//!   thread. Unlike the round trip, every datagram wakes a thread that has
//!   slept for a whole interval, as a note does.
//! - **bare UDP, one way, tokio runtimes**: the same with tokio sockets,
//!   each side a task on a current-thread runtime in its own thread: the
//!   floor for anything driven by tokio.
//! - **ours → ours**: two `Participant`s in a session, each run by the
//!   tokio driver on its own current-thread runtime in its own thread (as
//!   `jam peer` runs). From just before a task on the sender's runtime
//!   hands `Participant::send` to the driver (`DriverHandle::call`, as `jam
//!   peer --play` does) to the receiving application task holding the
//!   `ParticipantEvent::Midi`: command channel, packetizing with the
//!   journal, `sendto`, the receiving driver's wakeup, `recvfrom`, decode,
//!   the event channel and the application task's turn.
//! - **ours → ours, send() from another thread**: the same, but a plain
//!   thread (an engine worker) calls `DriverHandle::submit`, so the
//!   sender's runtime thread has to be woken too.
//! - **ours → pymidi**: our sender as above; pymidi 0.5.0 receives in its
//!   select loop (`tests/python/pymidi_peer.py`): `recvfrom`, its packet
//!   parser, up to where its callback would hand the note on.
//! - **pymidi → ours**: pymidi builds each packet with its own builder
//!   (`MIDIPacket.build`) and sends it from its data socket, timed from
//!   just before the build; our receiver as in "ours → ours".
//! - **protocol work only**: the CPU time of our sans-IO part per note,
//!   two `Participant`s joined in memory on a virtual clock at the same
//!   pace (so `RS` trims the journal as on the wire): `send` +
//!   `poll_transmit` on one side, `handle_datagram` + `poll_event` on the
//!   other. Whatever the paths above spend beyond this is sockets,
//!   wakeups and task hand-offs.
//!
//! Outside CI a missing venv skips the pymidi rows with a notice. Under
//! `cargo test` / `cargo nextest` (no `--bench`) this binary does nothing.

use jam_core::{MonotonicClock, ShortMessage};
use jam_tests::bench::Mode;
use jam_tests::pymidi::{self, PymidiPeer};
use jam_transport::driver::{Driver, DriverConfig, DriverHandle};
use jam_transport::participant::{Participant, ParticipantConfig, ParticipantEvent};
use jam_transport::rtp::recv::RecvMessage;
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const WARMUP: usize = 100;

fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The i-th note of every run: note on and note off in turn.
fn note(i: usize) -> ShortMessage {
    let key = (36 + (i / 2) % 60) as u8;
    if i.is_multiple_of(2) {
        ShortMessage::note_on(0, key, 100)
    } else {
        ShortMessage::note_off(0, key, 0)
    }
}

#[derive(Clone, Copy)]
struct Plan {
    notes: usize,
    interval: Duration,
}

impl Plan {
    fn total(&self) -> usize {
        WARMUP + self.notes
    }
}

/// Latencies in nanoseconds of one path, from every round, warm-up
/// dropped.
struct Samples {
    name: &'static str,
    ns: Vec<u64>,
}

impl Samples {
    fn new(name: &'static str) -> Samples {
        Samples {
            name,
            ns: Vec::new(),
        }
    }
    /// Adds one run's samples, dropping its warm-up notes.
    fn add(&mut self, run: Vec<u64>) {
        self.ns.extend(run.into_iter().skip(WARMUP));
        self.ns.sort_unstable();
    }
    fn pct(&self, p: usize) -> f64 {
        let i = (self.ns.len() * p / 100).min(self.ns.len() - 1);
        self.ns[i] as f64 / 1000.0
    }
    /// Share of notes that took 1 ms or more, in percent.
    fn over_1ms(&self) -> f64 {
        let n = self.ns.iter().filter(|&&v| v >= 1_000_000).count();
        100.0 * n as f64 / self.ns.len().max(1) as f64
    }
    fn max(&self) -> f64 {
        *self.ns.last().unwrap() as f64 / 1000.0
    }
}

/// Pairs send and arrival times in order, checking the messages match.
fn one_way(sent: &[u64], arrived: &[(u64, ShortMessage)]) -> Vec<u64> {
    assert_eq!(sent.len(), arrived.len(), "every note arrived");
    sent.iter()
        .zip(arrived)
        .enumerate()
        .map(|(i, (t0, (t1, m)))| {
            assert_eq!(*m, note(i), "note {i} arrived intact and in order");
            t1.saturating_sub(*t0)
        })
        .collect()
}

fn bare_udp(plan: Plan) -> Vec<u64> {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    a.connect(b.local_addr().unwrap()).unwrap();
    b.connect(a.local_addr().unwrap()).unwrap();
    let total = plan.total();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        for _ in 0..total {
            let n = b.recv(&mut buf).unwrap();
            b.send(&buf[..n]).unwrap();
        }
    });
    let payload = [0x80u8; 30];
    let mut buf = [0u8; 64];
    let start = Instant::now();
    let mut out = Vec::with_capacity(total);
    for i in 0..total {
        sleep_until(start + plan.interval * i as u32);
        let t0 = mono_ns();
        a.send(&payload).unwrap();
        a.recv(&mut buf).unwrap();
        out.push((mono_ns() - t0) / 2);
    }
    echo.join().unwrap();
    out
}

/// One-way over plain sockets: std blocking threads, or tokio tasks on two
/// current-thread runtimes in two threads.
fn bare_one_way(plan: Plan, tokio_rt: bool) -> Vec<u64> {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    a.connect(b.local_addr().unwrap()).unwrap();
    let total = plan.total();
    let rx = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let mut out = Vec::with_capacity(total);
        if tokio_rt {
            b.set_nonblocking(true).unwrap();
            runtime().block_on(async move {
                let b = tokio::net::UdpSocket::from_std(b).unwrap();
                for _ in 0..total {
                    b.recv_from(&mut buf).await.unwrap();
                    out.push(mono_ns());
                }
                out
            })
        } else {
            for _ in 0..total {
                b.recv_from(&mut buf).unwrap();
                out.push(mono_ns());
            }
            out
        }
    });
    let payload = [0x80u8; 30];
    let sent = if tokio_rt {
        a.set_nonblocking(true).unwrap();
        runtime().block_on(async move {
            let a = tokio::net::UdpSocket::from_std(a).unwrap();
            let start = tokio::time::Instant::now();
            let mut sent = Vec::with_capacity(total);
            for i in 0..total {
                tokio::time::sleep_until(start + plan.interval * i as u32).await;
                sent.push(mono_ns());
                a.send(&payload).await.unwrap();
            }
            sent
        })
    } else {
        let start = Instant::now();
        let mut sent = Vec::with_capacity(total);
        for i in 0..total {
            sleep_until(start + plan.interval * i as u32);
            sent.push(mono_ns());
            a.send(&payload).unwrap();
        }
        sent
    };
    let got = rx.join().unwrap();
    sent.iter().zip(&got).map(|(t0, t1)| t1 - t0).collect()
}

fn sleep_until(t: Instant) {
    if let Some(d) = t.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn participant(
    name: &'static str,
    seed: u64,
) -> (
    Driver<Participant>,
    tokio::sync::mpsc::UnboundedReceiver<ParticipantEvent>,
) {
    Driver::spawn(
        DriverConfig::loopback(),
        MonotonicClock::new(),
        move |now| Participant::new(ParticipantConfig::new(name, seed), now),
    )
    .await
    .expect("bind a loopback port pair")
}

async fn until_joined(events: &mut tokio::sync::mpsc::UnboundedReceiver<ParticipantEvent>) {
    loop {
        match events.recv().await {
            Some(ParticipantEvent::Joined { .. }) => return,
            Some(_) => {}
            None => panic!("driver stopped before joining"),
        }
    }
}

/// A receiving participant in its own thread: it publishes its control
/// address, optionally invites `invite`, and records the arrival time of
/// `count` notes (or stops after `limit`).
fn receiver(
    count: usize,
    invite: Option<SocketAddr>,
) -> (
    SocketAddr,
    std::thread::JoinHandle<Vec<(u64, ShortMessage)>>,
) {
    let (addr_tx, addr_rx) = mpsc::channel();
    let join = std::thread::spawn(move || {
        runtime().block_on(async move {
            let (driver, mut events) = participant("receiver", 2).await;
            addr_tx.send(driver.control_addr()).unwrap();
            if let Some(control) = invite {
                driver
                    .call(move |p, now| p.invite(now, control))
                    .await
                    .unwrap()
                    .unwrap();
            }
            let mut got = Vec::with_capacity(count);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
            while got.len() < count {
                let e = tokio::time::timeout_at(deadline, events.recv()).await;
                match e {
                    Ok(Some(ParticipantEvent::Midi { event, .. })) if !event.recovered => {
                        let t1 = mono_ns();
                        if let RecvMessage::Short(m) = event.message {
                            got.push((t1, m));
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            driver.call(|p, now| p.close(now)).await.unwrap();
            driver.shutdown().await.unwrap();
            got
        })
    });
    (addr_rx.recv().unwrap(), join)
}

/// How the sender calls `submit`.
#[derive(Clone, Copy, PartialEq)]
enum Caller {
    /// A task on the driver's own runtime (as `jam peer --play`).
    RuntimeTask,
    /// A plain thread.
    OtherThread,
}

/// A sending participant that invites `peer`, waits for the session, then
/// sends the plan's notes and returns their send times.
fn sender(plan: Plan, peer: SocketAddr, from: Caller) -> Vec<u64> {
    let (handle_tx, handle_rx) = mpsc::channel::<DriverHandle<Participant>>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let runner = std::thread::spawn(move || {
        runtime().block_on(async move {
            let (driver, mut events) = participant("sender", 1).await;
            driver
                .call(move |p, now| p.invite(now, peer))
                .await
                .unwrap()
                .unwrap();
            until_joined(&mut events).await;
            // Let the first clock-sync exchange settle.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut sent = Vec::with_capacity(plan.total());
            if from == Caller::RuntimeTask {
                let start = tokio::time::Instant::now();
                for i in 0..plan.total() {
                    tokio::time::sleep_until(start + plan.interval * i as u32).await;
                    let m = note(i);
                    sent.push(mono_ns());
                    // As `jam peer --play` does: hand the note over and wait
                    // until the driver has taken it.
                    driver
                        .call(move |p, now| p.send(now, now, m).expect("send"))
                        .await
                        .unwrap();
                }
            } else {
                handle_tx.send(driver.handle()).unwrap();
                let _ = done_rx.await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            driver.call(|p, now| p.close(now)).await.unwrap();
            driver.shutdown().await.unwrap();
            sent
        })
    });
    if from == Caller::RuntimeTask {
        return runner.join().unwrap();
    }
    let handle = handle_rx.recv().unwrap();
    let start = Instant::now();
    let mut sent = Vec::with_capacity(plan.total());
    for i in 0..plan.total() {
        sleep_until(start + plan.interval * i as u32);
        let m = note(i);
        sent.push(mono_ns());
        handle
            .submit(move |p, now| p.send(now, now, m).expect("send"))
            .unwrap();
    }
    let _ = done_tx.send(());
    runner.join().unwrap();
    sent
}

fn ours_to_ours(plan: Plan, from: Caller) -> Vec<u64> {
    let (control, rx) = receiver(plan.total(), None);
    let sent = sender(plan, control, from);
    one_way(&sent, &rx.join().unwrap())
}

fn ours_to_pymidi(plan: Plan, python: &std::path::Path) -> Vec<u64> {
    let mut py = PymidiPeer::start(python, &["--timeout", "600"]);
    let control = py.control();
    let tx = std::thread::spawn(move || sender(plan, control, Caller::RuntimeTask));
    let mut arrived = Vec::with_capacity(plan.total());
    while arrived.len() < plan.total() {
        let line = py
            .process()
            .next(Duration::from_secs(60))
            .expect("pymidi reports every packet");
        if line["event"] != "midi" {
            continue;
        }
        let t1 = line["t_ns"].as_u64().unwrap();
        for c in pymidi::commands(&line) {
            let (s, d1, d2, _) = c.expect("pymidi names every note");
            let m = ShortMessage::try_from_slice(&[s, d1, d2]).unwrap();
            arrived.push((t1, m));
        }
    }
    let sent = tx.join().unwrap();
    let _ = py.wait(Duration::from_secs(10));
    one_way(&sent, &arrived)
}

fn pymidi_to_ours(plan: Plan, python: &std::path::Path) -> Vec<u64> {
    let mut py = PymidiPeer::start(python, &["--timeout", "600"]);
    let (_, rx) = receiver(plan.total(), Some(py.control()));
    py.expect_joined();
    std::thread::sleep(Duration::from_millis(300));
    py.send_series(plan.total(), plan.interval);
    let mut sent = Vec::with_capacity(plan.total());
    while sent.len() < plan.total() {
        let line = py
            .process()
            .next(Duration::from_secs(60))
            .expect("pymidi reports every send");
        if line["event"] == "sent" {
            sent.push(line["t_ns"].as_u64().unwrap());
        }
    }
    let arrived = rx.join().unwrap();
    let _ = py.wait(Duration::from_secs(10));
    // pymidi's series numbers its notes like `note` (keys from 0 up):
    // compare by kind and order, then map onto ours.
    assert_eq!(arrived.len(), sent.len(), "every note arrived");
    let arrived: Vec<(u64, ShortMessage)> = arrived
        .into_iter()
        .enumerate()
        .map(|(i, (t, m))| {
            let want = if i.is_multiple_of(2) { 0x90 } else { 0x80 };
            assert_eq!(m.status(), want, "note {i}: {m:?}");
            assert_eq!(m.data1(), ((i / 2) % 128) as u8, "note {i}: {m:?}");
            (t, note(i))
        })
        .collect();
    one_way(&sent, &arrived)
}

/// CPU time of the protocol work alone, per note, with no sockets: two
/// `Participant`s joined in memory on a virtual clock at the plan's pace
/// (so `RS` feedback trims the journal as on the wire). Returns the
/// sender's `send` + `poll_transmit` and the receiver's `handle_datagram` +
/// `poll_event`, in nanoseconds.
fn protocol_only(plan: Plan) -> (Vec<u64>, Vec<u64>) {
    use jam_core::Micros;
    use jam_transport::applemidi::Port;
    use jam_transport::driver::Protocol;
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let addr = |base: u16, port: Port| SocketAddr::new(ip, base + u16::from(port == Port::Data));
    let mut now = Micros::from_millis(1);
    let mut a = Participant::new(ParticipantConfig::new("a", 1), now);
    let mut b = Participant::new(ParticipantConfig::new("b", 2), now);
    // Delivers everything queued both ways until both are quiet.
    fn pump(
        a: &mut Participant,
        b: &mut Participant,
        now: Micros,
        addr: &dyn Fn(u16, Port) -> SocketAddr,
    ) {
        loop {
            let mut moved = false;
            while let Some(t) = a.poll_transmit() {
                moved = true;
                let port = if t.to.port() == 2000 {
                    Port::Control
                } else {
                    Port::Data
                };
                b.handle_datagram(now, port, addr(1000, t.from), &t.payload);
            }
            while let Some(t) = b.poll_transmit() {
                moved = true;
                let port = if t.to.port() == 1000 {
                    Port::Control
                } else {
                    Port::Data
                };
                a.handle_datagram(now, port, addr(2000, t.from), &t.payload);
            }
            while a.poll_event().is_some() || b.poll_event().is_some() {}
            if !moved {
                return;
            }
        }
    }
    a.invite(now, addr(2000, Port::Control)).unwrap();
    let tick = |a: &mut Participant, b: &mut Participant, now: Micros| {
        for p in [a, b] {
            if p.poll_timeout().is_some_and(|t| t <= now) {
                p.handle_timeout(now);
            }
        }
    };
    for _ in 0..100 {
        now = now.offset_by(10_000);
        tick(&mut a, &mut b, now);
        pump(&mut a, &mut b, now, &addr);
    }
    assert_eq!(a.peers().count(), 1, "joined in memory");
    let (mut send, mut recv) = (Vec::new(), Vec::new());
    for i in 0..plan.total() {
        now = now.offset_by(plan.interval.as_micros() as i64);
        tick(&mut a, &mut b, now);
        pump(&mut a, &mut b, now, &addr);
        let t0 = mono_ns();
        a.send(now, now, note(i)).unwrap();
        let t = a.poll_transmit().expect("a packet");
        let t1 = mono_ns();
        b.handle_datagram(now, Port::Data, addr(1000, t.from), &t.payload);
        let mut played = 0;
        while let Some(e) = b.poll_event() {
            played += usize::from(matches!(e, ParticipantEvent::Midi { .. }));
        }
        let t2 = mono_ns();
        assert_eq!(played, 1);
        send.push(t1 - t0);
        recv.push(t2 - t1);
        pump(&mut a, &mut b, now, &addr);
    }
    (send, recv)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// One way of delivering the plan's notes, returning one-way latencies.
type Run = Box<dyn Fn(Plan) -> Vec<u64>>;

fn main() {
    match jam_tests::bench::mode() {
        // Test listers (nextest) find no tests here.
        Mode::List => return,
        Mode::Test => {
            eprintln!(
                "latency: a benchmark; run it with `cargo bench -p jam-tests --bench latency`"
            );
            return;
        }
        Mode::Measure => {}
    }
    let notes = env_or("JAM_LATENCY_NOTES", 3000) as usize;
    let rounds = env_or("JAM_LATENCY_ROUNDS", 5).max(1) as usize;
    let plan = Plan {
        notes: notes.div_ceil(rounds),
        interval: Duration::from_micros(env_or("JAM_LATENCY_INTERVAL_US", 5000)),
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "delivery latency on 127.0.0.1: {rounds} rounds of {} notes every {:?} per path (+{WARMUP} warm-up each), {cpus} CPUs, load average before: {}",
        plan.notes,
        plan.interval,
        loadavg()
    );
    let mut paths: Vec<(Samples, Run)> = vec![
        (Samples::new("bare UDP, round trip / 2"), Box::new(bare_udp)),
        (
            Samples::new("bare UDP, one way, blocking threads"),
            Box::new(|p| bare_one_way(p, false)),
        ),
        (
            Samples::new("bare UDP, one way, tokio runtimes"),
            Box::new(|p| bare_one_way(p, true)),
        ),
        (
            Samples::new("ours -> ours"),
            Box::new(|p| ours_to_ours(p, Caller::RuntimeTask)),
        ),
        (
            Samples::new("ours -> ours, send() from another thread"),
            Box::new(|p| ours_to_ours(p, Caller::OtherThread)),
        ),
    ];
    match jam_tests::require_python(&["pymidi"]) {
        Some(python) => {
            let py = python.clone();
            paths.push((
                Samples::new("ours -> pymidi"),
                Box::new(move |p| ours_to_pymidi(p, &py)),
            ));
            paths.push((
                Samples::new("pymidi -> ours"),
                Box::new(move |p| pymidi_to_ours(p, &python)),
            ));
        }
        None => eprintln!("pymidi rows skipped"),
    }
    // JAM_LATENCY_ONLY=a,b keeps the baseline and the paths whose names
    // contain one of the words (for quick comparisons).
    if let Ok(only) = std::env::var("JAM_LATENCY_ONLY") {
        let words: Vec<String> = only
            .split(',')
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect();
        let mut i = 0;
        paths.retain(|(s, _)| {
            i += 1;
            i == 1 || words.iter().any(|w| s.name.contains(w.as_str()))
        });
    }
    // Rounds interleave the paths, so a change in the machine's load
    // during the run weighs on all of them alike.
    for round in 1..=rounds {
        for (samples, run) in &mut paths {
            samples.add(run(plan));
        }
        eprintln!("round {round}/{rounds} done, load average {}", loadavg());
    }
    let (send, recv) = protocol_only(Plan {
        notes: plan.notes * rounds,
        ..plan
    });
    let mut rows: Vec<Samples> = paths.into_iter().map(|(s, _)| s).collect();
    let mut send_row = Samples::new("protocol work only: send + poll_transmit");
    send_row.add(send);
    let mut recv_row = Samples::new("protocol work only: handle_datagram + poll_event");
    recv_row.add(recv);
    rows.push(send_row);
    rows.push(recv_row);
    let base = (rows[0].pct(50), rows[0].pct(99));
    println!("load average after: {}", loadavg());
    println!();
    println!(
        "| path | notes | p50 µs | p99 µs | max µs | ≥ 1 ms | p50 / UDP | p99 / UDP | p99 − UDP p99 µs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.0} | {:.2} % | {:.2}× | {:.2}× | {:+.1} |",
            r.name,
            r.ns.len(),
            r.pct(50),
            r.pct(99),
            r.max(),
            r.over_1ms(),
            r.pct(50) / base.0,
            r.pct(99) / base.1,
            r.pct(99) - base.1
        );
    }
}
