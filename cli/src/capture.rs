//! `jam capture`: inspect, verify, replay, export and repair session
//! captures, and record a synthetic one (`demo`).

use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use jam_capture::Recipient;
use jam_capture::reader::{CaptureReader, record_kind, repair_capture, summarize};
use jam_capture::record::{Direction, Record};
use jam_capture::synth::{Synth, SynthConfig, SynthEvent};
use jam_capture::writer::{CaptureConfig, CaptureWriter};
use jam_core::Micros;
use serde_json::json;

use crate::util::{self, KEY_HELP, shown};

/// Session captures.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Cmd,
    #[arg(long, global = true, help = KEY_HELP)]
    key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Summarise a capture: recipients, chunks, records, duration,
    /// participants. Reads and checks the whole file.
    Info {
        /// The capture.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check that a capture is authentic and finished; exit status 0 only
    /// then.
    Verify {
        /// The capture.
        file: PathBuf,
    },
    /// Print the records in time order.
    Replay {
        /// The capture.
        file: PathBuf,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Write the MIDI events to a Standard MIDI File, one track per
    /// participant, with the capture's tempo.
    ExportMidi {
        /// The capture.
        file: PathBuf,
        /// The MIDI file to write (replaced if it exists).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// Close a capture that was cut short (a crash): writes a new, finished
    /// file with every complete chunk kept byte for byte and a rebuilt
    /// index. The original is never modified.
    Repair {
        /// The damaged capture.
        file: PathBuf,
        /// The repaired capture to create (must not exist).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Also cut at a chunk that fails authentication (for a tail
        /// overwritten by garbage), instead of refusing.
        #[arg(long)]
        salvage: bool,
    },
    /// Record a synthetic session (several players, document changes,
    /// markers) the way a peer does, for trying things out.
    Demo {
        /// The capture to create (must not exist).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Recipients (jam1…); default: the public key of --key.
        #[arg(long = "to")]
        to: Vec<String>,
        /// Session length in seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Players.
        #[arg(long, default_value_t = 4)]
        players: usize,
        /// Seed of the synthetic session.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Pace the session in real time (flushing every second) instead of
        /// writing it at once.
        #[arg(long)]
        realtime: bool,
    },
}

pub(crate) fn run(args: Args) -> Result<()> {
    let key = args.key.as_deref();
    match args.command {
        Cmd::Info { file, json } => info(&file, key, json),
        Cmd::Verify { file } => verify(&file, key),
        Cmd::Replay { file, json } => replay(&file, key, json),
        Cmd::ExportMidi { file, output } => {
            let id = util::load_identity(key)?;
            let s = util::replace_file(&output, |f| {
                jam_capture::export::export_midi(
                    util::open(&file)?,
                    &[id],
                    std::io::BufWriter::new(f),
                )
                .with_context(|| shown(&file))
            })?;
            let events: usize = s.tracks.iter().map(|t| t.1).sum();
            println!(
                "wrote {}: {} participant tracks, {events} events, {} tempo changes{}",
                output.display(),
                s.tracks.len(),
                s.tempo_changes,
                if s.skipped > 0 {
                    format!(", {} messages skipped", s.skipped)
                } else {
                    String::new()
                }
            );
            Ok(())
        }
        Cmd::Repair {
            file,
            output,
            salvage,
        } => {
            let id = util::load_identity(key)?;
            if output.exists() {
                bail!(
                    "{} already exists; choose another --output",
                    output.display()
                );
            }
            let result = (|| {
                let mut out = std::io::BufWriter::new(util::create_new(&output)?);
                let r = repair_capture(util::open(&file)?, &mut out, &[id], salvage)
                    .with_context(|| shown(&file))?;
                let f = out.into_inner().map_err(|e| e.into_error())?;
                f.sync_all()?;
                Ok::<_, anyhow::Error>(r)
            })();
            let r = match result {
                Ok(r) => r,
                Err(e) => {
                    let _ = std::fs::remove_file(&output);
                    return Err(e);
                }
            };
            println!(
                "repaired {} into {}: kept {} chunks and {} records{}; the file was: {}",
                file.display(),
                output.display(),
                r.sealed.kept_chunks,
                r.records,
                if r.lost_records > 0 {
                    format!(" ({} cut off by the crash)", r.lost_records)
                } else {
                    String::new()
                },
                r.sealed.reason
            );
            Ok(())
        }
        Cmd::Demo {
            output,
            to,
            seconds,
            players,
            seed,
            realtime,
        } => demo(&output, key, &to, seconds, players, seed, realtime),
    }
}

fn info(file: &Path, key: Option<&Path>, as_json: bool) -> Result<()> {
    let id = util::load_identity(key)?;
    let (s, err) = summarize(util::open(file)?, &[id]).with_context(|| shown(file))?;
    let duration = s.last_at.saturating_duration_since(s.first_at);
    if as_json {
        let v = json!({
            "file": shown(file),
            "generation": s.generation,
            "recipients": s.recipients.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "chunks": s.chunks,
            "records": s.records,
            "duration_s": duration.as_secs_f64(),
            "participants": s.participants.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "recorder": s.start.recorder.to_string(),
            "recorder_name": s.start.recorder_name,
            "tempo_bpm": s.start.tempo_bpm,
            "finished": s.finished,
            "lost_records": s.lost_records,
            "error": err.as_ref().map(ToString::to_string),
        });
        println!("{v}");
    } else {
        println!("file:         {}", file.display());
        println!(
            "recorded by:  {} ({})",
            s.start.recorder_name, s.start.recorder
        );
        println!("generation:   {}", s.generation);
        println!("recipients:   {}", s.recipients.len());
        for r in &s.recipients {
            println!("              {r}");
        }
        println!("chunks:       {}", s.chunks);
        let total: u64 = s.records.values().sum();
        let by_kind: Vec<String> = s.records.iter().map(|(k, v)| format!("{v} {k}")).collect();
        println!("records:      {total} ({})", by_kind.join(", "));
        println!("duration:     {:.1} s", duration.as_secs_f64());
        println!("tempo:        {} bpm at the start", s.start.tempo_bpm);
        println!("participants: {}", s.participants.len());
        for p in &s.participants {
            println!("              {p}");
        }
        for (at, label) in &s.markers {
            println!("marker:       {at} {label}");
        }
        println!(
            "state:        {}",
            match (&err, s.finished) {
                (None, true) => "finished".to_string(),
                (None, false) => "ends without an index".to_string(),
                (Some(e), _) => format!("damaged: {e}"),
            }
        );
    }
    match err {
        Some(e) => Err(e).with_context(|| shown(file)),
        None => Ok(()),
    }
}

fn verify(file: &Path, key: Option<&Path>) -> Result<()> {
    let id = util::load_identity(key)?;
    let (s, err) = summarize(util::open(file)?, &[id]).with_context(|| shown(file))?;
    if let Some(e) = err {
        return Err(e).with_context(|| shown(file));
    }
    if !s.finished {
        bail!(
            "{}: the capture has no index (it was not finished by a capture writer)",
            file.display()
        );
    }
    let total: u64 = s.records.values().sum();
    println!(
        "{}: authentic and finished ({} chunks, {total} records)",
        file.display(),
        s.chunks
    );
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn replay(file: &Path, key: Option<&Path>, as_json: bool) -> Result<()> {
    let id = util::load_identity(key)?;
    let mut r = CaptureReader::open(util::open(file)?, &[id]).with_context(|| shown(file))?;
    let start = r.session_start().clone();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut print = |rec: &Record| -> std::io::Result<()> {
        let at = rec.at();
        if as_json {
            let mut v = json!({ "kind": record_kind(rec), "at_us": at.0 });
            let o = v.as_object_mut().expect("an object");
            match rec {
                Record::SessionStart(s) => {
                    o.insert("recorder".into(), json!(s.recorder.to_string()));
                    o.insert("recorder_name".into(), json!(s.recorder_name));
                    o.insert("schema".into(), json!(s.schema_version));
                    o.insert("session_schema".into(), json!(s.session_schema));
                    o.insert("wall_clock_unix_us".into(), json!(s.wall_clock_unix_micros));
                    o.insert("tempo_bpm".into(), json!(s.tempo_bpm));
                }
                Record::Midi(m) => {
                    o.insert("participant".into(), json!(m.participant.to_string()));
                    o.insert(
                        "direction".into(),
                        json!(if m.direction == Direction::In {
                            "in"
                        } else {
                            "out"
                        }),
                    );
                    o.insert("sender_time_us".into(), json!(m.sender_time.0));
                    o.insert("beat".into(), json!(m.beat.as_f64()));
                    o.insert("bytes".into(), json!(hex(&m.bytes)));
                    o.insert("recovered".into(), json!(m.recovered));
                }
                Record::DocChange(c) => {
                    o.insert("bytes".into(), json!(c.bytes.len()));
                }
                Record::Metadata(m) => {
                    o.insert("beat".into(), json!(m.beat.as_f64()));
                    o.insert("key".into(), json!(m.key));
                    o.insert("value".into(), json!(m.value));
                }
                Record::Marker(m) => {
                    o.insert("beat".into(), json!(m.beat.as_f64()));
                    o.insert("label".into(), json!(m.label));
                }
                Record::Checkpoint(c) => {
                    o.insert("changes".into(), json!(c.changes));
                    o.insert("bytes".into(), json!(c.doc.len()));
                }
                _ => {}
            }
            writeln!(out, "{v}")
        } else {
            let detail = match rec {
                Record::SessionStart(s) => format!(
                    "recorder {} ({}), schema {}, {} bpm",
                    s.recorder_name, s.recorder, s.schema_version, s.tempo_bpm
                ),
                Record::Midi(m) => format!(
                    "{} {} beat {:.3} {}{}",
                    m.participant.short(),
                    if m.direction == Direction::In {
                        "in "
                    } else {
                        "out"
                    },
                    m.beat.as_f64(),
                    hex(&m.bytes),
                    if m.recovered { " (recovered)" } else { "" }
                ),
                Record::DocChange(c) => format!("{} bytes", c.bytes.len()),
                Record::Metadata(m) => format!("{} = {}", m.key, m.value),
                Record::Marker(m) => format!("beat {:.3} {}", m.beat.as_f64(), m.label),
                Record::Checkpoint(c) => format!("{} changes, {} bytes", c.changes, c.doc.len()),
                _ => String::new(),
            };
            writeln!(
                out,
                "{:>14} {:<13} {detail}",
                at.to_string(),
                record_kind(rec)
            )
        }
    };
    let result = (|| {
        print(&Record::SessionStart(start))?;
        while let Some((_, rec)) = r.next_record().with_context(|| shown(file))? {
            print(&rec)?;
        }
        Ok::<(), anyhow::Error>(())
    })();
    match result {
        // A closed pipe (`jam capture replay … | head`) is not a failure.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn demo(
    output: &Path,
    key: Option<&Path>,
    to: &[String],
    seconds: u64,
    players: usize,
    seed: u64,
    realtime: bool,
) -> Result<()> {
    let recipients: Vec<Recipient> = if to.is_empty() {
        vec![util::load_identity(key)?.to_public()]
    } else {
        to.iter()
            .map(|s| s.parse::<Recipient>())
            .collect::<Result<_, _>>()?
    };
    let synth = Synth::new(SynthConfig {
        players: players.max(1),
        duration: Duration::from_secs(seconds),
        seed,
        ..SynthConfig::default()
    });
    let file = util::create_new(output)?;
    let mut w = CaptureWriter::create(
        file,
        &recipients,
        synth.session_start(),
        CaptureConfig::default(),
        &mut util::os_rng(),
    )
    .with_context(|| shown(output))?;
    let began = Instant::now();
    let now = |b: Instant| Micros(b.elapsed().as_micros() as u64);
    for e in synth {
        let at = e.at();
        if realtime {
            // Sleep until the event is due, ticking the writer as a peer's
            // timer would.
            while now(began) < at {
                let wait = at
                    .saturating_duration_since(now(began))
                    .min(Duration::from_millis(50));
                std::thread::sleep(wait);
                if w.tick(now(began)).with_context(|| shown(output))? {
                    w.get_mut().sync_data().with_context(|| shown(output))?;
                }
            }
        }
        w.tick(at).with_context(|| shown(output))?;
        match e {
            SynthEvent::Midi(m) => w.append_midi(m),
            SynthEvent::Change(t, b) => w.append_change(t, &b),
            SynthEvent::Metadata(t, b, k, v) => w.append_metadata(t, b, &k, &v),
            SynthEvent::Marker(t, b, l) => w.append_marker(t, b, &l),
        }
        .with_context(|| shown(output))?;
    }
    let stats = w.stats().clone();
    let mut f = w.finish_and_record_count().with_context(|| shown(output))?;
    f.sync_all()?;
    let len = f.stream_position()?;
    println!(
        "wrote {}: {} records ({} MIDI events), {} chunks, {len} bytes",
        output.display(),
        stats.records,
        stats.midi_events,
        stats.chunks + 1
    );
    Ok(())
}
