//! `jam demo`: several headless players in one session over an emulated
//! network, and a report of what arrived, what was lost and what the
//! recovery journal repaired.
//!
//! Every player is a real [`Participant`] (AppleMIDI sessions, RTP-MIDI
//! with the recovery journal, clock sync); only the network is emulated
//! ([`HostSim`] over `netem`), on a virtual clock, so a 16-second session
//! runs in a fraction of a second and a seed reproduces it exactly. Each
//! player's clock is offset from the others' by seconds, so the latency
//! figures come through clock synchronisation as they would on real
//! machines.
//!
//! `--mode` also runs what every player received through the engine's
//! timing decisions for that latency mode (see [`modes`]) and reports late
//! events, predictions played, right and wrong, and stuck notes ended.

mod modes;
mod phrases;

use anyhow::{Context, Result, bail};
use clap::Parser;
use jam_core::LatencyMode;
use jam_engine::net::Role;
use jam_transport::applemidi::PeerHandle;
use jam_transport::netem::LinkConfig;
use jam_transport::participant::{Participant, ParticipantConfig, ParticipantEvent};
use jam_transport::rtp::state::MidiState;
use jam_transport::sim::HostSim;
use modes::{Delivered, ModeFigures};
use phrases::Part;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Several players over an emulated network.
#[derive(Debug, Parser)]
pub(crate) struct Args {
    /// Number of players (2 to 16); parts cycle drums, bass, keys, lead.
    #[arg(long, default_value_t = 4)]
    players: usize,
    /// Probability of losing each packet (0 to 0.9).
    #[arg(long, default_value_t = 0.02)]
    loss: f64,
    /// Mean extra delay per packet, in milliseconds (exponentially
    /// distributed; a packet never overtakes the one before it, as in a
    /// router queue).
    #[arg(long, default_value_t = 2.0)]
    jitter_ms: f64,
    /// Probability that a packet is held back 5 ms so later ones overtake it
    /// (0 to 0.5).
    #[arg(long, default_value_t = 0.0)]
    reorder: f64,
    /// Fixed one-way delay, in milliseconds.
    #[arg(long, default_value_t = 20.0)]
    delay_ms: f64,
    /// Length of the performance, in seconds of (virtual) time.
    #[arg(long, default_value_t = 16.0)]
    seconds: f64,
    /// Seed of the network's randomness and of the phrases.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Latency mode each player hears the others in: live, coherent,
    /// interval (4 beats) or predictive.
    #[arg(long, default_value = "live", value_parser = parse_mode)]
    mode: LatencyMode,
    /// Predictive mode: the agent (`.agent`) that predicts every player;
    /// without it, a statistical agent trained on seeded melodies.
    #[arg(long, value_name = "FILE.agent", requires = "key")]
    agent: Option<PathBuf>,
    /// Secret key file (unencrypted) that opens `--agent`.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

fn parse_mode(s: &str) -> Result<LatencyMode, String> {
    LatencyMode::parse(s).ok_or_else(|| {
        format!("unknown latency mode {s:?} (live, coherent, interval or predictive)")
    })
}

fn role_of(part: Part) -> Role {
    match part {
        Part::Drums | Part::Bass => Role::Rhythm,
        Part::Keys => Role::Harmony,
        Part::Lead => Role::Melody,
    }
}

/// The agent model for predictive mode.
fn agent_model(args: &Args) -> Result<Option<Vec<u8>>> {
    if args.mode != LatencyMode::Predictive {
        return Ok(None);
    }
    if let (Some(path), Some(key)) = (&args.agent, &args.key) {
        let source = jam_engine::AgentSource {
            path: path.clone(),
            key_file: key.clone(),
        };
        return jam_engine::agent::load_agent(&source)
            .map(Some)
            .context("cannot load the agent");
    }
    let lines = jam_predict::synth::motif_tunes(args.seed, 16, 8);
    let model = jam_predict::agent::markov::train(&lines, &Default::default());
    Ok(Some(model.to_model_bytes()))
}

/// What one player saw.
#[derive(Debug, Default)]
struct Report {
    name: String,
    part: &'static str,
    events_sent: u64,
    events_received: u64,
    recovered_events: u64,
    lost_packets: u64,
    late_packets: u64,
    stuck_notes: usize,
    wrong_values: usize,
    latencies_us: Vec<i64>,
    mode: ModeFigures,
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn run(args: Args) -> Result<()> {
    if !(2..=16).contains(&args.players) {
        bail!("--players must be between 2 and 16, got {}", args.players);
    }
    if !(0.0..=0.9).contains(&args.loss) {
        bail!("--loss must be between 0 and 0.9, got {}", args.loss);
    }
    if !(0.0..=0.5).contains(&args.reorder) {
        bail!("--reorder must be between 0 and 0.5, got {}", args.reorder);
    }
    for (name, v) in [
        ("--jitter-ms", args.jitter_ms),
        ("--delay-ms", args.delay_ms),
    ] {
        if !(0.0..=10_000.0).contains(&v) {
            bail!("{name} must be between 0 and 10000, got {v}");
        }
    }
    if !(1.0..=3600.0).contains(&args.seconds) {
        bail!("--seconds must be between 1 and 3600, got {}", args.seconds);
    }
    let model = agent_model(&args)?;
    let n = args.players;
    let link = LinkConfig::default()
        .delay(Duration::from_secs_f64(args.delay_ms / 1000.0))
        .jitter(Duration::from_secs_f64(args.jitter_ms / 1000.0))
        .loss(args.loss)
        .reorder(args.reorder, Duration::from_millis(5));

    let mut sim: HostSim<Participant> = HostSim::new(args.seed, link);
    let names: Vec<String> = (0..n)
        .map(|i| format!("{}-{}", Part::for_player(i).name(), i + 1))
        .collect();
    for (i, name) in names.iter().enumerate() {
        // Each machine's clock started at a different moment.
        let skew = 1_000_000 * (7 * i as u64 + 3);
        let config = ParticipantConfig::new(name.clone(), args.seed.wrapping_mul(1000) + i as u64);
        sim.add_host([127, 0, 0, i as u8 + 1], 5004, skew, |now| {
            Participant::new(config, now)
        });
    }
    // Full mesh: every player invites the ones after it.
    for i in 0..n {
        for j in i + 1..n {
            let to = sim.control_addr(j);
            sim.with(i, |p, now| p.invite(now, to))?;
        }
    }
    // Wait for every session, and for the clock-sync burst to settle.
    let deadline = sim.now() + Duration::from_secs(30);
    while (0..n).any(|i| sim.protocol(i).peers().count() < n - 1) && sim.now() < deadline {
        sim.run_for(Duration::from_millis(100));
    }
    if let Some(i) = (0..n).find(|&i| sim.protocol(i).peers().count() < n - 1) {
        bail!(
            "{} joined only {} of {} sessions in 30 s: the network is too lossy to start",
            names[i],
            sim.protocol(i).peers().count(),
            n - 1
        );
    }
    sim.run_for(Duration::from_secs(6));
    for i in 0..n {
        sim.take_events(i);
    }

    // The performance: every player's phrase, in virtual time.
    let length = Duration::from_secs_f64(args.seconds);
    let start = sim.now();
    let mut schedule = Vec::new();
    let mut reports: Vec<Report> = (0..n)
        .map(|i| Report {
            name: names[i].clone(),
            part: Part::for_player(i).name(),
            ..Report::default()
        })
        .collect();
    let mut sent_state: Vec<MidiState> = vec![MidiState::new(); n];
    for i in 0..n {
        let phrase = phrases::phrase(Part::for_player(i), i as u8, length, args.seed + i as u64);
        reports[i].events_sent = phrase.len() as u64;
        for (at, m) in phrase {
            sent_state[i].apply(&m);
            schedule.push((start + at, i, m));
        }
    }
    schedule.sort_by_key(|&(t, i, _)| (t, i));
    for (t, i, m) in schedule {
        sim.run_until(t);
        sim.with(i, |p, now| p.send(now, now, m))?;
    }
    // Let guard packets and feedback finish the repairs (guards back off to
    // one a second, so a tail lost in a burst takes a few seconds).
    sim.run_for(Duration::from_secs(15));

    let by_ssrc: BTreeMap<u32, usize> = (0..n).map(|j| (sim.protocol(j).ssrc(), j)).collect();
    let roles: Vec<Role> = (0..n).map(|j| role_of(Part::for_player(j))).collect();
    for (i, report) in reports.iter_mut().enumerate() {
        let mut delivered = Vec::new();
        for (_, e) in sim.take_events(i) {
            if let ParticipantEvent::Midi {
                peer,
                event,
                local_time,
                arrived,
            } = e
            {
                let sender = sim
                    .protocol(i)
                    .peer_stats(peer)
                    .and_then(|s| by_ssrc.get(&s.ssrc).copied());
                if let (Some(sender), jam_transport::rtp::recv::RecvMessage::Short(msg)) =
                    (sender, &event.message)
                {
                    delivered.push(Delivered {
                        sender,
                        msg: *msg,
                        sent: local_time,
                        arrived,
                        recovered: event.recovered,
                    });
                }
                report.events_received += 1;
                if event.recovered {
                    report.recovered_events += 1;
                } else {
                    report.latencies_us.push(arrived.signed_diff(local_time));
                }
            }
        }
        report.mode = modes::hear(args.mode, &roles, delivered, model.as_deref());
        let p = sim.protocol(i);
        let handles: Vec<PeerHandle> = p.peers().collect();
        for h in handles {
            let stats = p.peer_stats(h).expect("joined peers have stats");
            // A packet that overtook its predecessor opens a gap (repaired
            // from the journal at once); when the late one arrives it is
            // dropped and counted late, so it never arrived "lost".
            report.lost_packets += stats.recv.lost.saturating_sub(stats.recv.late_dropped);
            report.late_packets += stats.recv.late_dropped;
            let received = p.received_state(h).expect("joined peers have state");
            let sender = by_ssrc[&stats.ssrc];
            report.stuck_notes += received.sounding_count();
            report.wrong_values += received.differences(&sent_state[sender]).len();
        }
        report.latencies_us.sort_unstable();
    }
    print_report(&args, &reports, sim.net.stats().lost());
    Ok(())
}

fn print_report(args: &Args, reports: &[Report], network_lost: u64) {
    if args.json {
        let players: Vec<_> = reports
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "part": r.part,
                    "events_sent": r.events_sent,
                    "events_received": r.events_received,
                    "lost_packets": r.lost_packets,
                    "late_packets": r.late_packets,
                    "recovered_events": r.recovered_events,
                    "stuck_notes": r.stuck_notes,
                    "wrong_values": r.wrong_values,
                    "latency_us": {
                        "p50": percentile(&r.latencies_us, 50.0),
                        "p99": percentile(&r.latencies_us, 99.0),
                        "max": r.latencies_us.last().copied().unwrap_or(0),
                    },
                    "heard": {
                        "late": r.mode.late,
                        "predicted": r.mode.predicted,
                        "predictions_right": r.mode.right,
                        "predictions_wrong": r.mode.wrong,
                        "stuck_ended": r.mode.stuck_ended,
                        "schedule_ahead_ms": r.mode.ahead_ms,
                    },
                })
            })
            .collect();
        let out = json!({
            "mode": args.mode.as_str(),
            "players": players,
            "network": {
                "loss": args.loss,
                "jitter_ms": args.jitter_ms,
                "reorder": args.reorder,
                "delay_ms": args.delay_ms,
                "seconds": args.seconds,
                "seed": args.seed,
                "packets_lost": network_lost,
            },
        });
        println!("{out}");
        return;
    }
    println!(
        "jam demo: {} players, {} mode, {} s, delay {} ms, jitter {} ms, loss {:.1} %, reorder {:.1} %, seed {} (emulated network, virtual time)",
        reports.len(),
        args.mode,
        args.seconds,
        args.delay_ms,
        args.jitter_ms,
        args.loss * 100.0,
        args.reorder * 100.0,
        args.seed
    );
    println!(
        "{:<10} {:>6} {:>9} {:>6} {:>6} {:>10} {:>6} {:>6} {:>9} {:>9} {:>7} {:>9} {:>6} {:>6} {:>6}",
        "player",
        "sent",
        "received",
        "lost",
        "late",
        "recovered",
        "stuck",
        "wrong",
        "p50 ms",
        "p99 ms",
        "heard",
        "predicted",
        "right",
        "wrong",
        "ended"
    );
    for r in reports {
        println!(
            "{:<10} {:>6} {:>9} {:>6} {:>6} {:>10} {:>6} {:>6} {:>9.2} {:>9.2} {:>7} {:>9} {:>6} {:>6} {:>6}",
            r.name,
            r.events_sent,
            r.events_received,
            r.lost_packets,
            r.late_packets,
            r.recovered_events,
            r.stuck_notes,
            r.wrong_values,
            percentile(&r.latencies_us, 50.0) as f64 / 1000.0,
            percentile(&r.latencies_us, 99.0) as f64 / 1000.0,
            r.mode.late,
            r.mode.predicted,
            r.mode.right,
            r.mode.wrong,
            r.mode.stuck_ended,
        );
    }
    println!(
        "lost = packets that never arrived; late = packets overtaken by a later one (its journal had already repaired the gap);"
    );
    println!(
        "recovered = events rebuilt from the recovery journal; stuck = notes still sounding after everyone stopped;"
    );
    println!(
        "wrong = controller/program/bend/pressure values that differ from the sender's at the end."
    );
    println!(
        "In {} mode (the engine's timing decisions over what each player received): heard = events played late or dropped as too late;",
        args.mode
    );
    println!(
        "predicted = notes played from the agent before the real one arrived; right/wrong = how the real note judged them; ended = stuck notes the guard ended."
    );
    if args.mode == LatencyMode::Coherent
        && let Some(r) = reports.first()
    {
        println!(
            "coherent schedule-ahead at the end: {:.1} ms",
            r.mode.ahead_ms
        );
    }
}
