//! `jam session`: show and create session documents.

use anyhow::{Context, Result};
use jam_core::{Beats, Meter, PeerId, SessionTime, Tempo};
use jam_session_crdt::{
    LatencyMode, MusicalKey, PitchClass, Profile, Role, ScheduleAhead, SessionConfig, SessionDoc,
    SessionSettings, SessionState, Swing,
};
use std::fmt::Write as _;
use std::path::PathBuf;

/// `jam session` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print a saved session document: participants and roles, the tempo
    /// map, the mode.
    Show {
        /// The saved session document.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Create a new session document with yourself as founder.
    New(Box<NewArgs>),
}

#[derive(Debug, clap::Args)]
struct NewArgs {
    /// Where to write it (refuses to overwrite).
    file: PathBuf,
    /// Session name.
    #[arg(long, default_value = "jam")]
    name: String,
    /// Your display name.
    #[arg(long, default_value = "me")]
    player: String,
    /// Your instrument.
    #[arg(long, default_value = "")]
    instrument: String,
    /// Starting tempo in BPM.
    #[arg(long, default_value_t = 120.0)]
    bpm: f64,
    /// Meter, e.g. 4/4 or 7/8.
    #[arg(long, default_value = "4/4")]
    meter: String,
    /// Latency mode: live, coherent, interval, predictive.
    #[arg(long, default_value = "live")]
    mode: String,
    /// Key, e.g. "D dorian".
    #[arg(long)]
    key: Option<String>,
    /// Session id, 32 hex digits (random if absent).
    #[arg(long)]
    id: Option<PeerId>,
    /// Your peer id, 32 hex digits (random if absent).
    #[arg(long)]
    peer: Option<PeerId>,
    /// Your X25519 public key: the `jam1…` string `jam keys show` prints, or
    /// 64 hex digits. Without it the entry carries an all-zero key, which no
    /// peer can encrypt to.
    #[arg(long, value_parser = parse_key32)]
    public_key: Option<[u8; 32]>,
    /// Creation time, Unix milliseconds (now if absent).
    #[arg(long)]
    created_unix_ms: Option<i64>,
}

pub(crate) fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Show { file, json } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let doc = SessionDoc::load(&bytes, PeerId::default(), 0)
                .with_context(|| format!("loading {}", file.display()))?;
            let state = doc.state().context("the document holds no session")?;
            let out = if json { to_json(state) } else { render(state) };
            print!("{out}");
            Ok(())
        }
        Command::New(new) => {
            let NewArgs {
                file,
                name,
                player,
                instrument,
                bpm,
                meter,
                mode,
                key,
                id,
                peer,
                public_key,
                created_unix_ms,
            } = *new;
            let mut rng = rand::rng();
            let tempo = Tempo::from_bpm(bpm).with_context(|| format!("tempo {bpm}"))?;
            let meter = parse_meter(&meter)?;
            let mode = LatencyMode::parse(&mode).with_context(|| {
                format!("unknown mode `{mode}` (live, coherent, interval, predictive)")
            })?;
            let key = key.map(|k| parse_key(&k)).transpose()?;
            let created_unix_ms = match created_unix_ms {
                Some(t) => t,
                None => std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .context("system clock before 1970")?
                    .as_millis() as i64,
            };
            let config = SessionConfig {
                id: id.unwrap_or_else(|| PeerId::random(&mut rng)).0,
                name,
                created_unix_ms,
                origin: SessionTime::ZERO,
                tempo,
                meter,
                settings: SessionSettings {
                    mode,
                    key,
                    ..SessionSettings::default()
                },
            };
            let me = peer.unwrap_or_else(|| PeerId::random(&mut rng));
            let profile = Profile {
                name: player,
                public_key: public_key.unwrap_or([0; 32]),
                instrument,
            };
            let doc = SessionDoc::create(&config, me, &profile, rand::RngExt::random(&mut rng))
                .context("creating the session")?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&file)
                .with_context(|| format!("creating {}", file.display()))?;
            std::io::Write::write_all(&mut f, &doc.save())
                .with_context(|| format!("writing {}", file.display()))?;
            Ok(())
        }
    }
}

fn parse_key32(s: &str) -> Result<[u8; 32], String> {
    if s.starts_with("jam1") {
        return s
            .parse::<jam_capture::Recipient>()
            .map(|r| r.to_bytes())
            .map_err(|e| e.to_string());
    }
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("expected 64 hex digits, got `{s}`"));
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fn parse_meter(s: &str) -> Result<Meter> {
    let (n, d) = s
        .split_once('/')
        .with_context(|| format!("meter `{s}` is not like 4/4"))?;
    let n: u8 = n.trim().parse().with_context(|| format!("meter `{s}`"))?;
    let d: u8 = d.trim().parse().with_context(|| format!("meter `{s}`"))?;
    Meter::new(n, d).with_context(|| format!("meter `{s}`"))
}

fn parse_key(s: &str) -> Result<MusicalKey> {
    let mut parts = s.split_whitespace();
    let tonic = parts.next().unwrap_or("");
    let tonic = PitchClass::parse(tonic).with_context(|| format!("key `{s}`: unknown tonic"))?;
    let scale = parts.collect::<Vec<_>>().join(" ");
    Ok(MusicalKey {
        tonic,
        scale: if scale.is_empty() {
            "major".into()
        } else {
            scale
        },
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn schedule_ahead(s: ScheduleAhead) -> String {
    match s {
        ScheduleAhead::Auto => "auto".into(),
        ScheduleAhead::Fixed(us) => format!("{:.1} ms", f64::from(us) / 1000.0),
    }
}

fn swing(s: Swing) -> String {
    if s == Swing::STRAIGHT {
        "straight".into()
    } else {
        format!("{:.1}%", f64::from(s.per_mille()) / 10.0)
    }
}

fn grid(b: Beats) -> String {
    // As a note value when it is one (a beat is a quarter note).
    let per_whole = 4 * Beats::PER_BEAT;
    if b.0 > 0 && per_whole % b.0 == 0 {
        format!("1/{}", per_whole / b.0)
    } else {
        format!("{b}")
    }
}

/// Position of a beat as bar.beat (1-based, as musicians count).
fn bar_beat(state: &SessionState, b: Beats) -> String {
    let pos = state.timeline.bar_at(b);
    let beat_in_bar = pos.offset.as_f64() + 1.0;
    if pos.offset.0 % Beats::PER_BEAT == 0 {
        format!("{}.{}", pos.bar + 1, beat_in_bar as i64)
    } else {
        format!("{}.{:.3}", pos.bar + 1, beat_in_bar)
    }
}

/// The text report.
fn render(s: &SessionState) -> String {
    let mut o = String::new();
    let i = &s.info;
    let st = &i.settings;
    let _ = writeln!(o, "session  {} ({})", i.name, hex(&i.id));
    let _ = writeln!(
        o,
        "schema   {}.{}   created {} (unix ms)",
        i.schema.0, i.schema.1, i.created_unix_ms
    );
    let mode = match st.mode {
        LatencyMode::Interval => format!("interval ({} beats)", st.interval_beats),
        LatencyMode::Coherent => {
            format!(
                "coherent (schedule-ahead {})",
                schedule_ahead(st.schedule_ahead)
            )
        }
        m => m.to_string(),
    };
    let _ = writeln!(o, "mode     {mode}");
    let _ = writeln!(o, "grid     {}, swing {}", grid(st.grid), swing(st.swing));
    let key = st.key.as_ref().map_or("-".to_string(), |k| k.to_string());
    let _ = writeln!(o, "key      {key}");

    let present = s.present().count();
    let _ = writeln!(
        o,
        "\nparticipants ({present} present, {} total)",
        s.participants.len()
    );
    for p in s.participants.values() {
        let roles: Vec<String> = p
            .roles()
            .map(|(r, a): (Role, _)| {
                format!("{r} {:.2} {}", a.confidence.fraction(), a.source.as_str())
            })
            .collect();
        let roles = if roles.is_empty() {
            "no role".to_string()
        } else {
            roles.join(", ")
        };
        let status = match p.left {
            None => format!("joined {}", p.joined),
            Some(l) => format!("left {l}"),
        };
        let instrument = if p.profile.instrument.is_empty() {
            String::new()
        } else {
            format!(" [{}]", p.profile.instrument)
        };
        let _ = writeln!(
            o,
            "  {}  {}{instrument}  {roles}  {status}",
            p.peer.short(),
            p.profile.name
        );
        let c = &p.connection;
        if c.rtt_median_us > 0 || c.rtt_p99_us > 0 || c.loss_ppm > 0 {
            let _ = writeln!(
                o,
                "            rtt {:.1} ms median, {:.1} ms p99, loss {:.2}%",
                f64::from(c.rtt_median_us) / 1000.0,
                f64::from(c.rtt_p99_us) / 1000.0,
                f64::from(c.loss_ppm) / 10_000.0
            );
        }
    }

    let _ = writeln!(o, "\ntempo map");
    for a in s.timeline.anchors() {
        let _ = writeln!(
            o,
            "  bar {:<8} beat {:<12} at {:<16} {} {}",
            bar_beat(s, a.beat),
            format!("{:.3}", a.beat.as_f64()),
            a.time.to_string(),
            a.tempo,
            a.meter
        );
    }
    let superseded = s.tempo_changes.len() + 1 - s.timeline.anchors().len();
    if superseded > 0 {
        let _ = writeln!(o, "  ({superseded} change(s) superseded or without effect)");
    }
    if !s.markers.is_empty() {
        let _ = writeln!(o, "\nmarkers");
        for m in &s.markers {
            let _ = writeln!(o, "  bar {:<8} {}", bar_beat(s, m.beat), m.label);
        }
    }
    if !s.chat.is_empty() {
        let _ = writeln!(o, "\nchat ({} messages)", s.chat.len());
        for m in &s.chat {
            let name = s
                .participants
                .get(&m.author)
                .map_or_else(|| m.author.short(), |p| p.profile.name.clone());
            let _ = writeln!(o, "  {} {name}: {}", m.at, m.text);
        }
    }
    if s.invalid_entries > 0 {
        let _ = writeln!(o, "\n{} unreadable entries skipped", s.invalid_entries);
    }
    o
}

fn to_json(s: &SessionState) -> String {
    use serde_json::json;
    let i = &s.info;
    let st = &i.settings;
    let participants: Vec<_> = s
        .participants
        .values()
        .map(|p| {
            let roles: Vec<_> = p
                .roles()
                .map(|(r, a)| {
                    json!({"role": r.as_str(), "confidence": a.confidence.fraction(),
                           "source": a.source.as_str()})
                })
                .collect();
            json!({
                "peer": p.peer.to_string(),
                "name": p.profile.name,
                "instrument": p.profile.instrument,
                "public_key": hex(&p.profile.public_key),
                "roles": roles,
                "joined_us": p.joined.0,
                "left_us": p.left.map(|l| l.0),
                "rtt_median_us": p.connection.rtt_median_us,
                "rtt_p99_us": p.connection.rtt_p99_us,
                "loss_ppm": p.connection.loss_ppm,
            })
        })
        .collect();
    let tempo_map: Vec<_> = s
        .timeline
        .anchors()
        .iter()
        .map(|a| {
            let pos = s.timeline.bar_at(a.beat);
            json!({
                "bar": pos.bar, "beat": a.beat.as_f64(), "time_us": a.time.0,
                "bpm": a.tempo.bpm(), "micro_bpm": a.tempo.micro_bpm(),
                "meter": a.meter.to_string(),
            })
        })
        .collect();
    let v = json!({
        "id": hex(&i.id),
        "name": i.name,
        "schema": [i.schema.0, i.schema.1],
        "created_unix_ms": i.created_unix_ms,
        "mode": st.mode.as_str(),
        "interval_beats": st.interval_beats,
        "grid_beats": st.grid.as_f64(),
        "swing_per_mille": st.swing.per_mille(),
        "schedule_ahead_us": match st.schedule_ahead {
            ScheduleAhead::Auto => serde_json::Value::String("auto".into()),
            ScheduleAhead::Fixed(us) => json!(us),
        },
        "key": st.key.as_ref().map(|k| k.to_string()),
        "participants": participants,
        "tempo_map": tempo_map,
        "markers": s.markers.iter().map(|m| json!({"beat": m.beat.as_f64(), "label": m.label})).collect::<Vec<_>>(),
        "chat": s.chat.iter().map(|m| json!({"author": m.author.to_string(), "at_us": m.at.0, "text": m.text})).collect::<Vec<_>>(),
        "invalid_entries": s.invalid_entries,
    });
    let mut out = serde_json::to_string_pretty(&v).expect("a json value always serializes");
    out.push('\n');
    out
}
