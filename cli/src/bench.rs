//! `jam bench modes`: the four latency modes side by side, with players
//! replaying real MIDI over the emulated network.
//!
//! Every player replays a line of a MIDI file (player `i` plays file
//! `i mod n`) on the shared timeline at 120 BPM, after four bars in which
//! only the session's clock pings flow. Each note-on goes to every other
//! player as one datagram over `netem` (the preset's one-way delay,
//! exponential jitter, 1 % independent loss), followed 50 ms later by a
//! guard datagram; like RTP-MIDI's recovery journal, every datagram also
//! carries the sender's last four notes, so a lost note is recovered, late,
//! from the next datagram that arrives. Each listener hears each remote
//! note as its mode says:
//!
//! - **live**: through a per-sender adaptive jitter buffer
//!   (`jam_predict::jitter_buffer`): at sender time plus playout delay, or
//!   on arrival when later;
//! - **coherent**: at its beat plus the shared schedule-ahead, tuned by
//!   player 0 from the measured delays (`jam_predict::coherent`) and sent
//!   to everyone at a bar line; a note arriving after that is dropped;
//! - **interval**: exactly `--interval` beats after its beat; later is
//!   dropped;
//! - **predictive**: like live, but after each note the listener's copy of
//!   the player's agent predicts the next one; a confident prediction
//!   (p >= 0.5) whose beat comes before the real note arrives is played on
//!   that beat, and the real note then confirms it or corrects it.
//!
//! Reported per preset and mode: onset error against the intended beat
//! (p50, p95, in ms; for interval mode against the beat plus the interval),
//! coherence (the share of listeners whose ordered sequence of heard notes,
//! their own included, equals the most common one), and counts of notes
//! late, dropped, lost, predicted and wrongly predicted.
//!
//! This drives `jam-predict`'s schedulers directly over the emulator; the
//! engine (audio thread, rings, RTP-MIDI with its recovery journal) is not
//! in the loop.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use jam_core::timeline::{Meter, Tempo, Timeline};
use jam_core::{Beats, Micros, SessionTime};
use jam_predict::agent::{Predictor, markov};
use jam_predict::coherent::{CoherentConfig, CoherentScheduler};
use jam_predict::jitter_buffer::{JitterBuffer, JitterConfig};
use jam_predict::midi::lines_from_smf;
use jam_predict::{LatencyMode, NoteSeq, Role};
use jam_transport::netem::{LinkConfig, Network};

/// Benchmarks.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// The latency modes over the emulated network (see the module docs in
    /// cli/src/bench.rs).
    Modes(ModesArgs),
}

/// Network presets: one-way delay, jitter, loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Preset {
    /// 20 ms one-way, 2 ms mean jitter, 1 % loss.
    Metro,
    /// 80 ms one-way, 5 ms mean jitter, 1 % loss.
    Continental,
    /// 150 ms one-way, 10 ms mean jitter, 1 % loss.
    Intercontinental,
}

impl Preset {
    fn link(self) -> LinkConfig {
        let (delay, jitter) = match self {
            Preset::Metro => (20, 2),
            Preset::Continental => (80, 5),
            Preset::Intercontinental => (150, 10),
        };
        LinkConfig::default()
            .delay(Duration::from_millis(delay))
            .jitter(Duration::from_millis(jitter))
            .loss(0.01)
    }

    fn name(self) -> &'static str {
        match self {
            Preset::Metro => "metro",
            Preset::Continental => "continental",
            Preset::Intercontinental => "intercontinental",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ModeArg {
    Live,
    Coherent,
    Interval,
    Predictive,
}

impl From<ModeArg> for LatencyMode {
    fn from(m: ModeArg) -> LatencyMode {
        match m {
            ModeArg::Live => LatencyMode::Live,
            ModeArg::Coherent => LatencyMode::Coherent,
            ModeArg::Interval => LatencyMode::Interval,
            ModeArg::Predictive => LatencyMode::Predictive,
        }
    }
}

#[derive(Debug, clap::Args)]
struct ModesArgs {
    /// MIDI files the players replay (player i plays the first line of
    /// file i mod n).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Players.
    #[arg(long, default_value_t = 4)]
    players: usize,
    /// Network presets (default: all three).
    #[arg(long, value_enum)]
    preset: Vec<Preset>,
    /// Modes (default: all four).
    #[arg(long, value_enum)]
    mode: Vec<ModeArg>,
    /// Seed of the network emulator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Coherent mode: margin added to the measured p99 one-way delay, ms.
    #[arg(long, default_value_t = 5)]
    coherent_margin: u64,
    /// Interval mode: beats later.
    #[arg(long, default_value_t = 4)]
    interval: i64,
    /// MIDI files the predictive mode's agents train on (default: the
    /// replayed files themselves, which flatters the predictions).
    #[arg(long, num_args = 1..)]
    train: Vec<PathBuf>,
    /// Notes per player at most.
    #[arg(long, default_value_t = 200)]
    notes: usize,
    /// One JSON object per preset and mode instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args) -> Result<()> {
    match args.command {
        Cmd::Modes(a) => modes(a),
    }
}

fn read_lines(files: &[PathBuf]) -> Result<Vec<NoteSeq>> {
    let mut out = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        let lines =
            lines_from_smf(&bytes, Role::Melody).with_context(|| format!("{}", f.display()))?;
        match lines.into_iter().next() {
            Some(l) => out.push(l),
            None => bail!("{}: no notes", f.display()),
        }
    }
    Ok(out)
}

/// What one run measured.
#[derive(Debug, Default)]
struct Report {
    /// Remote notes each listener should hear, summed.
    notes: u64,
    /// Onset errors of heard remote notes, µs.
    errors: Vec<i64>,
    late: u64,
    dropped: u64,
    lost: u64,
    predicted: u64,
    wrong: u64,
    coherence: f64,
}

const LEAD_IN_BEATS: i64 = 16;
/// When player 0 proposes the schedule-ahead (µs): after 1.5 s of pings,
/// so that the change (at the first bar line at least 4 beats later, beat
/// 8) is complete before the first note (beat 16).
const TUNE_AT: i64 = 1_500_000;
/// Notes each datagram's journal covers (the newest included).
const JOURNAL: usize = 4;
/// A guard datagram follows each note after this long, µs.
const GUARD_AFTER: i64 = 50_000;
const NOTE: u8 = 1;
const GUARD: u8 = 2;

fn packet(kind: u8, seq: usize) -> Vec<u8> {
    let mut p = vec![kind];
    p.extend_from_slice(&(seq as u64).to_be_bytes());
    p
}

/// A played prediction whose note never arrived in time: it was what the
/// listener heard for that note (right or wrong).
fn stood_in(
    r: &mut Report,
    heard: &mut Vec<(i64, usize, usize)>,
    players: &[NoteSeq],
    tl: &Timeline,
    from: usize,
    p: Pending,
) {
    let real = players[from].notes[p.seq];
    r.predicted += 1;
    if real.pitch == p.pitch {
        r.errors.push(p.at - time_of(tl, real.onset));
        heard.push((p.at, from, p.seq));
    } else {
        r.wrong += 1;
    }
}
const PING_EVERY: Micros = Micros(100_000);

fn modes(a: ModesArgs) -> Result<()> {
    if a.players < 2 || a.players > 64 {
        bail!("--players must be 2 to 64, not {}", a.players);
    }
    let lines = read_lines(&a.files)?;
    let train = if a.train.is_empty() {
        lines.clone()
    } else {
        read_lines(&a.train)?
    };
    let presets = if a.preset.is_empty() {
        vec![Preset::Metro, Preset::Continental, Preset::Intercontinental]
    } else {
        a.preset.clone()
    };
    let modes: Vec<LatencyMode> = if a.mode.is_empty() {
        LatencyMode::ALL.to_vec()
    } else {
        a.mode.iter().map(|&m| m.into()).collect()
    };
    let model = if modes.contains(&LatencyMode::Predictive) {
        markov::train(&train, &markov::MarkovConfig::default()).to_model_bytes()
    } else {
        Vec::new()
    };
    // Each player's notes on the shared timeline, after the lead-in.
    let players: Vec<NoteSeq> = (0..a.players)
        .map(|p| {
            let mut l = lines[p % lines.len()].clone();
            l.notes.truncate(a.notes);
            let first = l.notes.first().map_or(Beats::ZERO, |n| n.onset);
            for n in &mut l.notes {
                n.onset = n.onset - first + Beats::from_beats(LEAD_IN_BEATS);
            }
            l
        })
        .collect();
    if !a.json {
        println!(
            "{} players, {} notes each at most, seed {}; agent trained on {}",
            a.players,
            a.notes,
            a.seed,
            if a.train.is_empty() {
                "the replayed files (in-sample)"
            } else {
                "--train files"
            }
        );
        println!(
            "{:<17} {:<10} {:>6} {:>8} {:>8} {:>9} {:>5} {:>7} {:>5} {:>9} {:>5}",
            "preset",
            "mode",
            "notes",
            "p50 ms",
            "p95 ms",
            "coherent",
            "late",
            "dropped",
            "lost",
            "predicted",
            "wrong"
        );
    }
    for &preset in &presets {
        for &mode in &modes {
            let r = simulate(
                &players,
                preset.link(),
                mode,
                a.seed,
                (a.interval, a.coherent_margin * 1000),
                &model,
            )?;
            let (p50, p95) = (percentile(&r.errors, 50.0), percentile(&r.errors, 95.0));
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "preset": preset.name(),
                        "mode": mode.as_str(),
                        "notes": r.notes,
                        "onset_error_p50_ms": p50,
                        "onset_error_p95_ms": p95,
                        "coherence": r.coherence,
                        "late": r.late,
                        "dropped": r.dropped,
                        "lost": r.lost,
                        "predicted": r.predicted,
                        "wrongly_predicted": r.wrong,
                    })
                );
            } else {
                println!(
                    "{:<17} {:<10} {:>6} {:>8.1} {:>8.1} {:>8.0}% {:>5} {:>7} {:>5} {:>9} {:>5}",
                    preset.name(),
                    mode.as_str(),
                    r.notes,
                    p50,
                    p95,
                    100.0 * r.coherence,
                    r.late,
                    r.dropped,
                    r.lost,
                    r.predicted,
                    r.wrong
                );
            }
        }
    }
    Ok(())
}

/// Nearest-rank percentile of µs values, in ms (0 for none).
fn percentile(v: &[i64], pct: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let rank = ((pct / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1] as f64 / 1000.0
}

fn timeline() -> Timeline {
    Timeline::new(
        SessionTime(0),
        Tempo::from_bpm(120.0).expect("a valid tempo"),
        Meter::FOUR_FOUR,
    )
}

fn time_of(tl: &Timeline, b: Beats) -> i64 {
    tl.time_at(b).0
}

/// A prediction a listener holds for a sender's next note.
#[derive(Debug, Clone, Copy)]
struct Pending {
    seq: usize,
    pitch: u8,
    at: i64,
}

fn simulate(
    players: &[NoteSeq],
    link: LinkConfig,
    mode: LatencyMode,
    seed: u64,
    (interval, margin_us): (i64, u64),
    model: &[u8],
) -> Result<Report> {
    let n = players.len();
    let tl = timeline();
    let mut net: Network<usize> = Network::new(seed, link);
    let mut r = Report::default();
    // Sends: (time, sender, seq).
    let mut sends: Vec<(i64, usize, usize)> = Vec::new();
    for (p, l) in players.iter().enumerate() {
        for (k, note) in l.notes.iter().enumerate() {
            sends.push((time_of(&tl, note.onset), p, k));
        }
    }
    sends.sort_unstable();
    let end = sends.last().map_or(0, |s| s.0) + 2_000_000;
    let mut jitter: Vec<JitterBuffer<()>> = (0..n * n)
        .map(|_| JitterBuffer::new(JitterConfig::default()))
        .collect();
    let mut coherent = CoherentScheduler::new(
        CoherentConfig {
            margin_us,
            ..CoherentConfig::default()
        },
        Beats::ZERO,
    );
    let mut predictors: Vec<Option<Predictor>> = Vec::with_capacity(n * n);
    for i in 0..n * n {
        predictors.push(if mode == LatencyMode::Predictive && i / n != i % n {
            let mut p = Predictor::from_model_bytes(model)
                .context("loading the agent for the predictive mode")?;
            p.begin(players[i % n].context());
            Some(p)
        } else {
            None
        });
    }
    let mut pending: Vec<Option<Pending>> = vec![None; n * n];
    // Per (listener, sender): which of the sender's notes have arrived.
    let mut arrived: Vec<Vec<bool>> = (0..n * n)
        .map(|slot| vec![false; players[slot % n].notes.len()])
        .collect();
    // Per listener: (time heard, sender, seq).
    let mut heard: Vec<Vec<(i64, usize, usize)>> = vec![Vec::new(); n];
    let mut next_send = 0;
    // Guard datagrams due: (time, sender, newest seq), in time order.
    let mut guards: Vec<(i64, usize, usize)> = Vec::new();
    let mut next_ping = 0i64;
    let mut tuned = mode != LatencyMode::Coherent;
    let mut now = 0i64;
    loop {
        while let Some(d) = net.poll_deliver(Micros(now as u64)) {
            let (to, from) = (d.to, d.from);
            let (sent, at) = (d.sent.0 as i64, d.deliver_at.0 as i64);
            jitter[to * n + from].handle_delay_sample(d.deliver_at, d.sent);
            coherent.handle_delay_sample((at - sent).max(0) as u64);
            if d.payload.len() != 9 {
                continue; // a ping
            }
            let newest = u64::from_be_bytes(d.payload[1..9].try_into().expect("8 bytes")) as usize;
            // The datagram's own note (if a note packet) and its journal.
            let first = newest.saturating_sub(JOURNAL - 1);
            #[allow(
                clippy::needless_range_loop,
                reason = "seq names the note in several tables, not one slice"
            )]
            for seq in first..=newest {
                if arrived[to * n + from][seq] {
                    continue;
                }
                let note = players[from].notes[seq];
                arrived[to * n + from][seq] = true;
                let intended = time_of(&tl, note.onset);
                let playout = sent + jitter[to * n + from].playout_delay_us() as i64;
                match mode {
                    LatencyMode::Live => {
                        if at > playout {
                            r.late += 1;
                        }
                        let t = at.max(playout);
                        r.errors.push(t - intended);
                        heard[to].push((t, from, seq));
                    }
                    LatencyMode::Coherent | LatencyMode::Interval => {
                        let target = if mode == LatencyMode::Coherent {
                            time_of(&tl, coherent.render_beat(note.onset))
                        } else {
                            time_of(&tl, note.onset + Beats::from_beats(interval))
                        };
                        if at > target {
                            r.late += 1;
                            r.dropped += 1;
                        } else {
                            let base = if mode == LatencyMode::Interval {
                                time_of(&tl, note.onset + Beats::from_beats(interval))
                            } else {
                                intended
                            };
                            r.errors.push(target - base);
                            heard[to].push((target, from, seq));
                        }
                    }
                    LatencyMode::Predictive => {
                        let slot = to * n + from;
                        if let Some(p) = pending[slot].filter(|p| p.seq < seq && p.at <= at) {
                            // It stood in for a note that has not come (lost).
                            stood_in(&mut r, &mut heard[to], players, &tl, from, p);
                            pending[slot] = None;
                        }
                        let played = pending[slot].filter(|p| p.seq == seq && p.at <= at);
                        match played {
                            Some(p) if p.pitch == note.pitch => {
                                r.predicted += 1;
                                r.errors.push(p.at - intended);
                                heard[to].push((p.at, from, seq));
                            }
                            Some(_) => {
                                r.predicted += 1;
                                r.wrong += 1;
                                r.late += 1;
                                r.errors.push(at - intended);
                                heard[to].push((at, from, seq));
                            }
                            None => {
                                if at > playout {
                                    r.late += 1;
                                }
                                let t = at.max(playout);
                                r.errors.push(t - intended);
                                heard[to].push((t, from, seq));
                            }
                        }
                        pending[slot] = None;
                        if let Some(pr) = predictors[slot].as_mut() {
                            pr.observe(note);
                            let next = pr.predict().map_err(|e| anyhow::anyhow!("{e}"))?;
                            let when = time_of(&tl, next.onset);
                            if seq + 1 < players[from].notes.len()
                                && next.best().probability >= 0.5
                                && when > at
                            {
                                pending[slot] = Some(Pending {
                                    seq: seq + 1,
                                    pitch: next.best().pitch,
                                    at: when,
                                });
                            }
                        }
                    }
                }
            }
        }
        if now >= next_ping && now < end {
            for x in 0..n {
                for y in 0..n {
                    if x != y {
                        net.send(Micros(now as u64), x, y, vec![0]);
                    }
                }
            }
            next_ping = now + PING_EVERY.0 as i64;
        }
        if !tuned && now >= TUNE_AT {
            let beat = tl.beat_at(SessionTime(now));
            if let Some(c) = coherent.poll_change(&tl, beat) {
                // Every player applies the same change (the session
                // document carries it; the lead covers its delay).
                coherent.apply(&tl, c).map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            tuned = true;
        }
        while next_send < sends.len() && sends[next_send].0 <= now {
            let (t, p, seq) = sends[next_send];
            next_send += 1;
            // The player hears their own note at its mode's time.
            let own = match mode {
                LatencyMode::Coherent => {
                    time_of(&tl, coherent.render_beat(players[p].notes[seq].onset))
                }
                LatencyMode::Interval => time_of(
                    &tl,
                    players[p].notes[seq].onset + Beats::from_beats(interval),
                ),
                _ => t,
            };
            heard[p].push((own, p, seq));
            for q in 0..n {
                if q != p {
                    r.notes += 1;
                    net.send(Micros(now as u64), p, q, packet(NOTE, seq));
                }
            }
            guards.push((t + GUARD_AFTER, p, seq));
        }
        while guards.first().is_some_and(|g| g.0 <= now) {
            let (_, p, seq) = guards.remove(0);
            for q in 0..n {
                if q != p {
                    net.send(Micros(now as u64), p, q, packet(GUARD, seq));
                }
            }
        }
        let next = [
            net.next_delivery().map(|m| m.0 as i64),
            sends.get(next_send).map(|s| s.0),
            guards.first().map(|g| g.0),
            (now < end).then_some(next_ping),
            (!tuned).then_some(TUNE_AT),
        ]
        .into_iter()
        .flatten()
        .filter(|&t| t > now)
        .min();
        match next {
            Some(t) => now = t,
            None => break,
        }
    }
    // Predictions still waiting for a note that never came stood in for it.
    for (slot, p) in pending.iter().enumerate() {
        if let Some(p) = *p
            && !arrived[slot][p.seq]
        {
            stood_in(&mut r, &mut heard[slot / n], players, &tl, slot % n, p);
        }
    }
    let received: u64 = arrived
        .iter()
        .enumerate()
        .filter(|(slot, _)| slot / n != slot % n)
        .map(|(_, v)| v.iter().filter(|&&x| x).count() as u64)
        .sum();
    r.lost = r.notes - received;
    // Coherence: listeners whose ordered sequence matches the most common.
    let mut counts: BTreeMap<Vec<(usize, usize)>, usize> = BTreeMap::new();
    for h in &mut heard {
        h.sort_unstable();
        *counts
            .entry(h.iter().map(|&(_, s, q)| (s, q)).collect())
            .or_default() += 1;
    }
    r.coherence = counts.values().copied().max().unwrap_or(0) as f64 / n as f64;
    Ok(r)
}
