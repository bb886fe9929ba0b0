//! The latency modes end to end: real engines (audio-thread half, worker
//! thread, rings), remote players at the `NetPort` seam, their packets
//! carried by the seeded network emulator (`jam_transport::netem`) with
//! delay, jitter and loss, and time simulated block by block.
//!
//! - Coherent: four engines hear each other and share one session document
//!   (its real frames moved between them); the schedule-ahead changes each
//!   proposes travel in the document, all apply the same ones, the
//!   schedule-ahead follows the measured p99 delay (down, then up when the
//!   delay rises), changed only at bar boundaries, and every engine renders
//!   the same events at the same samples in the same order.
//! - Predictive: an agent trained in the test from a Standard MIDI File
//!   (the trainer API), sealed into a real `.agent` file and loaded with
//!   the key file, predicts a remote player's notes; predicted notes are
//!   played, counted right or wrong, and `process_block` never allocates.

use assert_no_alloc::{AllocDisabler, assert_no_alloc, reset_violation_count, violation_count};
use jam_capture::Identity;
use jam_capture::agent::{AgentMeta, TrainingSummary, write_agent};
use jam_core::{Beats, LatencyMode, Micros, MonotonicClock, PeerId, ShortMessage};
use jam_engine::net::{
    ConnectionState, NetCommand, NetEvent, NetPort, Role, SessionAddress, net_link,
};
use jam_engine::session_sync::{SessionSetup, SessionView};
use jam_engine::{
    AgentSource, Block, Engine, EngineConfig, EngineControl, EngineRt, EventBuffer,
    MAX_EVENTS_PER_BLOCK, OutEvent, Settings, Timeline, WorkerHandle,
};
use jam_predict::agent::markov;
use jam_transport::netem::{LinkConfig, Network};
use rand::SeedableRng;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[global_allocator]
static A: AllocDisabler = AllocDisabler;

const SR: f64 = 48_000.0;
const BLOCK: usize = 256;

fn block_time(b: u64) -> Micros {
    Micros(b * BLOCK as u64 * 1_000_000 / SR as u64)
}

/// Spins (yielding) until `f` holds; fails after 20 s naming `what`.
fn spin_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// One engine with its worker and its end of the seam.
struct Rig {
    rt: EngineRt,
    handle: Option<WorkerHandle>,
    control: EngineControl,
    port: NetPort,
    out: EventBuffer<OutEvent>,
    left: Vec<f32>,
    right: Vec<f32>,
}

impl Rig {
    fn new(me: PeerId, agent: Option<AgentSource>) -> Rig {
        let mut config = EngineConfig::new(me);
        config.agent = agent;
        let (rt, worker) = Engine::new(config);
        let (link, port) = net_link();
        let handle = worker.spawn(link).unwrap();
        let control = handle.control();
        Rig {
            rt,
            handle: Some(handle),
            control,
            port,
            out: EventBuffer::with_capacity(MAX_EVENTS_PER_BLOCK),
            left: vec![0.0; BLOCK],
            right: vec![0.0; BLOCK],
        }
    }

    fn feed(&mut self, ev: NetEvent) {
        self.port.events.blocking_send(ev).unwrap();
    }

    /// Waits until the worker has handled every remote event fed so far.
    fn settle(&self, midi_fed: u64) {
        spin_until("the worker to handle the events", || {
            self.control.counters().handled >= midi_fed
        });
    }

    /// Processes one block under `assert_no_alloc`; returns its events.
    fn block(&mut self, now: Micros, mode: LatencyMode) -> Vec<OutEvent> {
        let settings = Settings {
            latency: mode,
            ..Settings::default()
        };
        let (rt, out, left, right) = (&mut self.rt, &mut self.out, &mut self.left, &mut self.right);
        assert_no_alloc(|| {
            rt.process_block(&mut Block {
                now,
                sample_rate: SR as f32,
                transport: Default::default(),
                settings,
                input: &[],
                output: out,
                left,
                right,
            })
        });
        self.out.as_slice().to_vec()
    }

    fn slot_owners(&self) -> BTreeMap<u8, PeerId> {
        self.control
            .peers()
            .into_iter()
            .map(|p| (p.slot, p.peer))
            .collect()
    }

    fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            h.stop();
        }
    }
}

fn joined(peer: PeerId, role: Role) -> NetEvent {
    NetEvent::PeerJoined {
        peer,
        name: format!("p{}", peer.0[0]),
        role,
        address: None,
        key: None,
    }
}

fn midi(peer: PeerId, msg: ShortMessage, sent: Micros, arrival: Micros) -> NetEvent {
    midi_on(&Timeline::default(), peer, msg, sent, arrival)
}

/// A remote event whose intended beat is where `tl` puts its send time.
fn midi_on(
    tl: &Timeline,
    peer: PeerId,
    msg: ShortMessage,
    sent: Micros,
    arrival: Micros,
) -> NetEvent {
    NetEvent::Midi {
        peer,
        msg,
        sent_at: sent,
        beat: Some(tl.beat_at(sent)),
        arrival,
        recovered: false,
    }
}

/// Encodes an event number as a datagram payload.
fn payload(i: usize) -> Vec<u8> {
    (i as u64).to_be_bytes().to_vec()
}

fn index(p: &[u8]) -> usize {
    u64::from_be_bytes(p.try_into().unwrap()) as usize
}

/// Moves every session-document frame the engines sent
/// ([`NetCommand::SendReliable`]) to its addressee as
/// [`NetEvent::Reliable`], as the transport's side channel does. Other
/// commands are dropped (these engines play nothing themselves).
fn pump_session(rigs: &mut [Rig], peers: &[PeerId]) -> usize {
    let mut frames = Vec::new();
    for (i, r) in rigs.iter_mut().enumerate() {
        while let Ok(cmd) = r.port.commands.try_recv() {
            if let NetCommand::SendReliable { peer, frame } = cmd {
                frames.push((peers[i], peer, frame));
            }
        }
    }
    let n = frames.len();
    for (from, to, bytes) in frames {
        let j = peers.iter().position(|&p| p == to).unwrap();
        rigs[j].feed(NetEvent::Reliable { peer: from, bytes });
    }
    n
}

/// Pumps session frames until `done` holds for every engine's view.
fn pump_until(
    what: &str,
    rigs: &mut [Rig],
    peers: &[PeerId],
    mut done: impl FnMut(&[SessionView]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        pump_session(rigs, peers);
        let views: Vec<SessionView> = rigs.iter().map(|r| r.control.session()).collect();
        if done(&views) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn coherent_engines_agree_on_the_schedule_ahead_through_the_session_document() {
    const N: usize = 4;
    // The one-way delay rises from 15 ms to 70 ms here.
    const RISE: u64 = 5_000_000;
    const PLAY_UNTIL: u64 = 22_000_000;
    const SECONDS: u64 = 24;
    let peers: Vec<PeerId> = (0..N as u8).map(|i| PeerId([i + 1; 16])).collect();
    let mut rigs: Vec<Rig> = peers.iter().map(|&p| Rig::new(p, None)).collect();

    // The session document: engine 0 founds it, the others join it. One
    // clock for all, so the founder's clock is every replica's session
    // clock (offset 0).
    let clock = MonotonicClock::new();
    for (i, rig) in rigs.iter().enumerate() {
        let setup = SessionSetup::new(
            &format!("p{i}"),
            120.0,
            0,
            &mut rand::rngs::StdRng::seed_from_u64(i as u64 + 1),
        );
        rig.control.enable_session(setup, peers[i], clock);
        if i > 0 {
            rig.control.join(
                SessionAddress::Direct("127.0.0.1:5004".parse().unwrap()),
                &format!("p{i}"),
                None,
            );
        }
    }
    // A replica takes the founder's document only if it asked to join
    // before it meets anyone (else it would found its own): its join
    // shows in its connection state once the worker handled it.
    for rig in &rigs[1..] {
        spin_until("the join", || {
            matches!(rig.control.connection(), ConnectionState::Connecting(_))
        });
    }
    // Until every engine holds the document with all four in it and the
    // same timeline. Joins and clock measurements are repeated: they are
    // idempotent, and the first may reach a worker before its session.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut announced: Option<Instant> = None;
    loop {
        if announced.is_none_or(|t| t.elapsed() > Duration::from_millis(200)) {
            announced = Some(Instant::now());
            for (e, rig) in rigs.iter_mut().enumerate() {
                for (j, &p) in peers.iter().enumerate() {
                    if j != e {
                        rig.feed(joined(p, Role::Rhythm));
                    }
                }
                if e > 0 {
                    rig.feed(NetEvent::PeerClock {
                        peer: peers[0],
                        local_minus_remote_us: 0,
                        rtt_us: 200,
                    });
                }
            }
        }
        pump_session(&mut rigs, &peers);
        let views: Vec<SessionView> = rigs.iter().map(|r| r.control.session()).collect();
        let formed = views[0].timeline.is_some()
            && views
                .iter()
                .all(|v| v.present && v.participants.len() == N && v.timeline == views[0].timeline);
        if formed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the session did not form: {views:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let tl = rigs[0].control.session().timeline.unwrap();

    // Every player plays eighth notes at 120 BPM (note-off 100 ms later),
    // offset from each other, some on the same beat as another's.
    let mut played: Vec<(Micros, usize, ShortMessage)> = Vec::new();
    for (j, _) in peers.iter().enumerate() {
        let mut t = 500_000 + (j as u64 % 2) * 62_500;
        let mut k = 0u8;
        while t < PLAY_UNTIL {
            let key = 36 + (k + j as u8 * 7) % 24;
            played.push((Micros(t), j, ShortMessage::note_on(0, key, 100)));
            played.push((Micros(t + 100_000), j, ShortMessage::note_off(0, key, 0)));
            t += 250_000;
            k += 1;
        }
    }
    played.sort_by_key(|&(t, j, _)| (t, j));
    // 15 ms one way plus exponential jitter (mean 3 ms), then 70 ms (mean
    // jitter 1 ms), seeded.
    let mut net: Network<u8> = Network::new(
        7,
        LinkConfig::default()
            .delay(Duration::from_millis(15))
            .jitter(Duration::from_millis(3)),
    );
    let mut risen = false;
    let mut next = 0;
    let mut midi_fed = [0u64; N];
    let mut rendered: Vec<Vec<(u64, PeerId, ShortMessage)>> = vec![Vec::new(); N];
    reset_violation_count();
    let blocks = SECONDS * SR as u64 / BLOCK as u64;
    for b in 0..blocks {
        let now = block_time(b);
        if !risen && now.0 >= RISE {
            risen = true;
            net.set_default(
                LinkConfig::default()
                    .delay(Duration::from_millis(70))
                    .jitter(Duration::from_millis(1)),
            );
        }
        while next < played.len() && played[next].0 <= now {
            let (t, j, _) = played[next];
            for to in 0..N {
                if to != j {
                    net.send(t, j as u8, to as u8, payload(next));
                }
            }
            next += 1;
        }
        while let Some(d) = net.poll_deliver(now) {
            let (sent, j, msg) = played[index(&d.payload)];
            rigs[d.to as usize].feed(midi_on(&tl, peers[j], msg, sent, d.deliver_at));
            midi_fed[d.to as usize] += 1;
        }
        // The session document's frames between the engines. A change
        // starts at least a bar after it is proposed, which in real time
        // is ample for the frames; this test runs faster than real time,
        // so when the engines' documents disagree it lets the frames
        // catch up before the simulated time moves on.
        pump_session(&mut rigs, &peers);
        let views: Vec<SessionView> = rigs.iter().map(|r| r.control.session()).collect();
        if views
            .iter()
            .any(|v| v.ahead_changes != views[0].ahead_changes)
        {
            pump_until("the engines to agree", &mut rigs, &peers, |views| {
                views
                    .iter()
                    .all(|v| v.ahead_changes == views[0].ahead_changes)
            });
            // Every worker applies what its document holds on its next tick.
            std::thread::sleep(Duration::from_millis(5));
        }
        for (e, rig) in rigs.iter_mut().enumerate() {
            rig.settle(midi_fed[e]);
            let owners = rig.slot_owners();
            for o in rig.block(now, LatencyMode::Coherent) {
                let at = b * BLOCK as u64 + u64::from(o.offset);
                rendered[e].push((at, owners[&o.slot], o.msg.with_channel(0)));
            }
        }
    }
    let violations = violation_count();
    let views: Vec<SessionView> = rigs.iter().map(|r| r.control.session()).collect();
    let late: Vec<u64> = rigs
        .iter()
        .map(|r| r.control.peers().iter().map(|p| p.late).sum())
        .collect();
    for r in rigs {
        r.stop();
    }
    assert_eq!(violations, 0);

    // One schedule-ahead timeline in every document, every change on a bar
    // line; it shrank from the initial quarter beat towards the low delay,
    // then rose above 70 ms after the delay did.
    let changes = views[0].ahead_changes.clone();
    eprintln!("schedule-ahead changes: {changes:?}; late: {late:?}");
    assert!(views.iter().all(|v| v.ahead_changes == changes));
    let bar = Beats::from_beats(4);
    assert!(changes.iter().all(|c| c.from.0 % bar.0 == 0), "{changes:?}");
    let beats_of = |us: u64| tl.beat_at(Micros(us)) - tl.beat_at(Micros(0));
    let rise_beat = tl.beat_at(Micros(RISE));
    let first = changes[0];
    assert!(first.ahead < Beats(Beats::PER_BEAT / 4), "{first:?}");
    let raise = *changes
        .iter()
        .find(|c| c.from > rise_beat && c.ahead > beats_of(80_000))
        .unwrap_or_else(|| panic!("no raise after the delay rose: {changes:?}"));
    // The raise is the last change: nothing lowers it again, and it is in
    // force well before the players stop.
    assert_eq!(changes.last(), Some(&raise));
    assert!(
        raise.from + bar + bar + bar <= tl.beat_at(Micros(PLAY_UNTIL)),
        "{raise:?}"
    );
    // Between the rise and the end of the raise's bar, notes are late and
    // dropped (counted); outside it every engine renders every note of the
    // three others, identical in sample and order.
    assert!(late.iter().all(|&l| l > 0), "late: {late:?}");
    let window = (rise_beat, raise.from + bar);
    let intended = |at: u64, p: PeerId, m: ShortMessage| -> Beats {
        let j = peers.iter().position(|&q| q == p).unwrap();
        let render = tl.beat_at(Micros(at * 1_000_000 / SR as u64));
        // The latest time this player played this message before it
        // rendered (a key repeats only every six seconds).
        let sent = played
            .iter()
            .filter(|&&(t, pj, pm)| pj == j && pm == m && tl.beat_at(t) <= render)
            .map(|&(t, _, _)| t)
            .next_back()
            .unwrap();
        tl.beat_at(sent)
    };
    let outside = |b: Beats| b < window.0 || b >= window.1;
    let kept: Vec<Vec<(u64, PeerId, ShortMessage)>> = rendered
        .iter()
        .map(|r| {
            r.iter()
                .filter(|&&(at, p, m)| outside(intended(at, p, m)))
                .copied()
                .collect()
        })
        .collect();
    for (e, r) in kept.iter().enumerate() {
        let expected = played
            .iter()
            .filter(|&&(t, j, _)| j != e && outside(tl.beat_at(t)))
            .count();
        assert_eq!(r.len(), expected, "engine {e}");
    }
    for a in 0..N {
        for b in a + 1..N {
            let common = |r: &[(u64, PeerId, ShortMessage)]| -> Vec<(u64, PeerId, ShortMessage)> {
                r.iter()
                    .filter(|(_, p, _)| *p != peers[a] && *p != peers[b])
                    .copied()
                    .collect()
            };
            assert_eq!(
                common(&kept[a]),
                common(&kept[b]),
                "engines {a} and {b} disagree"
            );
        }
    }
    // After the raise's bar, every note renders its full schedule-ahead
    // after its beat.
    let one_sample = Beats((Beats::PER_BEAT as f64 * 2.0 / SR).ceil() as i64);
    for &(at, p, m) in kept[0].iter().filter(|(_, _, m)| m.is_note_on()) {
        let i = intended(at, p, m);
        if i >= window.1 {
            let render = tl.beat_at(Micros(at * 1_000_000 / SR as u64));
            assert!(
                (render - i - raise.ahead).0.abs() <= one_sample.0,
                "{render:?} for {i:?}"
            );
        }
    }
}

/// A Standard MIDI File of a melody that repeats a two-bar motif.
fn motif_smf() -> Vec<u8> {
    use midly::{
        Format, Header, MetaMessage, MidiMessage, Smf, Timing, TrackEvent, TrackEventKind,
    };
    let motif = [
        60u8, 62, 64, 65, 67, 65, 64, 62, 60, 64, 67, 72, 67, 64, 62, 60,
    ];
    let mut track = vec![TrackEvent {
        delta: 0.into(),
        kind: TrackEventKind::Meta(MetaMessage::Tempo(500_000.into())),
    }];
    for n in 0..24 {
        for (i, &k) in motif.iter().enumerate() {
            // Eighth notes at 480 ticks per beat: 240 ticks apart.
            let gap = if n == 0 && i == 0 { 0 } else { 40 };
            track.push(TrackEvent {
                delta: gap.into(),
                kind: TrackEventKind::Midi {
                    channel: 0.into(),
                    message: MidiMessage::NoteOn {
                        key: k.into(),
                        vel: 90.into(),
                    },
                },
            });
            track.push(TrackEvent {
                delta: 200.into(),
                kind: TrackEventKind::Midi {
                    channel: 0.into(),
                    message: MidiMessage::NoteOff {
                        key: k.into(),
                        vel: 0.into(),
                    },
                },
            });
        }
    }
    track.push(TrackEvent {
        delta: 0.into(),
        kind: TrackEventKind::Meta(MetaMessage::EndOfTrack),
    });
    let smf = Smf {
        header: Header::new(Format::SingleTrack, Timing::Metrical(480.into())),
        tracks: vec![track],
    };
    let mut bytes = Vec::new();
    smf.write_std(&mut bytes).unwrap();
    bytes
}

#[test]
fn predictive_mode_plays_counts_and_reconciles_predictions_from_a_sealed_agent() {
    // Train from a MIDI file, seal the model into an agent file.
    let dir = tempfile::tempdir().unwrap();
    let mid = dir.path().join("motif.mid");
    std::fs::write(&mid, motif_smf()).unwrap();
    let lines =
        jam_predict::midi::lines_from_smf(&std::fs::read(&mid).unwrap(), jam_predict::Role::Melody)
            .unwrap();
    let model = markov::train(&lines, &markov::MarkovConfig::default()).to_model_bytes();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let me = Identity::generate(&mut rng);
    let key_file = dir.path().join("me.key");
    std::fs::write(&key_file, me.to_secret_string().as_bytes()).unwrap();
    let agent_path = dir.path().join("me.agent");
    let meta = AgentMeta {
        owner: me.to_public(),
        owner_name: "me".into(),
        kind: "markov-v1".into(),
        version: 1,
        created_unix_micros: 0,
        training: TrainingSummary::default(),
    };
    let file = std::fs::File::create(&agent_path).unwrap();
    write_agent(file, &meta, &mut &model[..], &[me.to_public()], &mut rng).unwrap();

    let player = PeerId([9; 16]);
    let mut rig = Rig::new(
        PeerId([1; 16]),
        Some(AgentSource {
            path: agent_path,
            key_file,
        }),
    );
    rig.feed(joined(player, Role::Melody));
    // The player plays the motif it was trained on; 8 % of packets are
    // lost, the rest are 20 ms late plus exponential jitter.
    let motif = [
        60u8, 62, 64, 65, 67, 65, 64, 62, 60, 64, 67, 72, 67, 64, 62, 60,
    ];
    let mut played = Vec::new();
    let mut t = 500_000u64;
    for i in 0..96 {
        let k = motif[i % motif.len()];
        played.push((Micros(t), ShortMessage::note_on(0, k, 90)));
        played.push((Micros(t + 200_000), ShortMessage::note_off(0, k, 0)));
        t += 250_000;
    }
    played.sort_by_key(|&(t, _)| t);
    let link = LinkConfig::default()
        .delay(Duration::from_millis(20))
        .jitter(Duration::from_millis(6))
        .loss(0.08);
    let mut net: Network<u8> = Network::new(3, link);
    let (mut next, mut midi_fed) = (0, 0u64);
    let mut predicted_out = 0u64;
    let mut delivered = vec![false; played.len()];
    let blocks = (t / 1_000_000 + 3) * SR as u64 / BLOCK as u64;
    for b in 0..blocks {
        let now = block_time(b);
        while next < played.len() && played[next].0 <= now {
            net.send(played[next].0, 1, 0, payload(next));
            next += 1;
        }
        while let Some(d) = net.poll_deliver(now) {
            let (sent, msg) = played[index(&d.payload)];
            delivered[index(&d.payload)] = true;
            rig.feed(midi(player, msg, sent, d.deliver_at));
            midi_fed += 1;
        }
        rig.settle(midi_fed);
        // Lock step with the worker's clock: a tick after this block's time
        // was published.
        let ticks = rig.control.counters().ticks;
        let out = rig.block(now, LatencyMode::Predictive);
        predicted_out += out
            .iter()
            .filter(|o| o.source.is_none() && o.msg.is_note_on())
            .count() as u64;
        spin_until("a worker tick", || {
            rig.control.counters().ticks >= ticks + 2
        });
    }
    let violations = violation_count();
    let peer = rig.control.peers().remove(0);
    rig.stop();
    eprintln!("{peer:?}, predicted notes out {predicted_out}");
    assert_eq!(violations, 0, "process_block allocated");
    assert!(peer.predicted > 0, "{peer:?}");
    assert_eq!(peer.predicted, predicted_out);
    assert!(peer.predictions_right > 0, "{peer:?}");
    assert!(
        peer.predictions_right + peer.predictions_wrong + peer.predictions_unconfirmed
            <= peer.predicted,
        "{peer:?}"
    );
    // The player plays every note, evenly spaced: a prediction goes
    // unconfirmed only when the note it stood for was lost, and is then
    // not counted wrong.
    let lost_note_ons = played
        .iter()
        .zip(&delivered)
        .filter(|((_, m), d)| m.is_note_on() && !**d)
        .count() as u64;
    eprintln!("lost note-ons {lost_note_ons}");
    assert!(lost_note_ons > 0);
    assert!(peer.predictions_unconfirmed > 0, "{peer:?}");
    assert!(
        peer.predictions_unconfirmed <= lost_note_ons,
        "{peer:?}, {lost_note_ons} lost"
    );
}

/// Regression (issue 5): a host restoring a project in interval mode hands
/// the worker that mode at activation (`EngineRt::publish_settings`), so an
/// event that arrives before the first block is decided in it (held N beats
/// by the audio thread), not in the default live mode (placed at once).
#[test]
fn the_restored_mode_decides_events_that_arrive_before_the_first_block() {
    let remote = PeerId([9; 16]);
    let mut rig = Rig::new(PeerId([1; 16]), None);
    let restored = Settings {
        latency: LatencyMode::Interval,
        ..Settings::default()
    };
    rig.rt.publish_settings(&restored);
    rig.feed(joined(remote, Role::Melody));
    // Played at 0.5 s and 0.75 s (beats 1 and 1.5 at 120 BPM), each
    // arriving 10 ms later, all before any block.
    let on = ShortMessage::note_on(0, 64, 100);
    let off = ShortMessage::note_off(0, 64, 0);
    rig.feed(midi(remote, on, Micros(500_000), Micros(510_000)));
    rig.feed(midi(remote, off, Micros(750_000), Micros(760_000)));
    rig.settle(2);
    let mut got = Vec::new();
    for b in 0..1700u64 {
        for e in rig.block(block_time(b), LatencyMode::Interval) {
            got.push((b, e.offset, e.msg));
        }
    }
    // 16 beats later: beat 17 = 8.5 s = sample 408 000 (block 1593, offset
    // 192); beat 17.5 = 8.75 s = sample 420 000 (block 1640, offset 160).
    assert_eq!(got, vec![(1593, 192, on), (1640, 160, off)]);
    rig.stop();
}
