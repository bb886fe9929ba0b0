//! `jam agent train` and `jam agent eval`: note lines from `.mid` files and
//! `.scp` captures, models from `jam-predict`, sealed `.agent` files from
//! `jam-capture`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use jam_capture::agent::{AgentMeta, TrainingSummary, open_agent, write_agent};
use jam_capture::reader::CaptureReader;
use jam_capture::record::Record;
use jam_capture::{Identity, Recipient};
use jam_core::{Beats, PeerId, ShortMessage};
use jam_predict::agent::neural::{self, NeuralConfig};
use jam_predict::agent::{AgentKind, Predictor, decode_model, markov, trigram};
use jam_predict::eval::{EvalConfig, evaluate};
use jam_predict::midi::{lines_from_events, lines_from_smf};
use jam_predict::{NoteSeq, Role};

use crate::util::{self, shown};

/// The model kinds `jam agent train --kind` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum KindArg {
    /// The statistical multiple-viewpoint model (PPM / IDyOM style).
    Markov,
    /// The neural network (ONNX, run through ort).
    Neural,
    /// The fixed-order pitch trigram (a baseline).
    Trigram,
}

/// The role given to lines not on the drum channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RoleArg {
    /// A lead line.
    Melody,
    /// Chords and pads.
    Harmony,
    /// Drums and rhythmic comping.
    Rhythm,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Melody => Role::Melody,
            RoleArg::Harmony => Role::Harmony,
            RoleArg::Rhythm => Role::Rhythm,
        }
    }
}

/// Note lines read from input files, and what they came from.
#[derive(Debug, Default)]
pub(crate) struct Inputs {
    /// The lines.
    pub(crate) lines: Vec<NoteSeq>,
    /// `.scp` files read.
    pub(crate) captures: u32,
    /// Note-on and note-off messages seen.
    pub(crate) events: u64,
    /// Playing time, in microseconds.
    pub(crate) duration_micros: u64,
    /// Players heard in the captures.
    pub(crate) participants: BTreeSet<PeerId>,
}

impl Inputs {
    fn notes(&self) -> usize {
        self.lines.iter().map(|l| l.notes.len()).sum()
    }
}

fn is_ext(p: &Path, exts: &[&str]) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| exts.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Reads every file: `.mid`/`.midi` directly, `.scp` opened with the
/// identity `identity` gives (asked for only if a capture is among them).
pub(crate) fn read_inputs(
    files: &[PathBuf],
    role: Role,
    identity: &mut dyn FnMut() -> Result<Identity>,
) -> Result<Inputs> {
    let mut inputs = Inputs::default();
    let mut id: Option<Identity> = None;
    for file in files {
        if is_ext(file, &["mid", "midi", "smf"]) {
            let bytes =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            let lines = lines_from_smf(&bytes, role).with_context(|| shown(file))?;
            let mut longest = 0u64;
            for l in &lines {
                inputs.events += 2 * l.notes.len() as u64;
                let end = l
                    .notes
                    .iter()
                    .map(|n| n.onset + n.duration)
                    .max()
                    .unwrap_or(Beats::ZERO);
                let us = end.as_f64().max(0.0) * f64::from(l.micros_per_beat);
                longest = longest.max(us as u64);
            }
            inputs.duration_micros = inputs.duration_micros.saturating_add(longest);
            inputs.lines.extend(lines);
        } else if is_ext(file, &["scp"]) {
            if id.is_none() {
                id = Some(identity()?);
            }
            let id = id.clone().expect("loaded above");
            read_capture(file, id, role, &mut inputs)?;
        } else {
            bail!(
                "{}: unknown input type (expected a .mid or .midi file or a .scp capture)",
                file.display()
            );
        }
    }
    if inputs.lines.is_empty() {
        bail!("no notes in {}", list(files));
    }
    Ok(inputs)
}

fn list(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line per participant and channel of a capture, on the shared
/// timeline at the capture's starting tempo.
fn read_capture(file: &Path, id: Identity, role: Role, inputs: &mut Inputs) -> Result<()> {
    let mut r = CaptureReader::open(util::open(file)?, &[id]).with_context(|| shown(file))?;
    let bpm = r.session_start().tempo_bpm;
    let micros_per_beat = if bpm.is_finite() && bpm > 0.0 {
        (60e6 / bpm).clamp(1.0, f64::from(u32::MAX)) as u32
    } else {
        500_000
    };
    let mut per_player: BTreeMap<PeerId, Vec<(Beats, ShortMessage)>> = BTreeMap::new();
    let (mut first, mut last) = (None, None);
    while let Some((_, rec)) = r.next_record().with_context(|| shown(file))? {
        let Record::Midi(m) = rec else { continue };
        let Ok(msg) = ShortMessage::try_from_slice(&m.bytes) else {
            continue;
        };
        if !(msg.is_note_on() || msg.is_note_off()) {
            continue;
        }
        first.get_or_insert(m.at);
        last = Some(m.at);
        inputs.events += 1;
        per_player
            .entry(m.participant)
            .or_default()
            .push((m.beat, msg));
    }
    if let (Some(a), Some(b)) = (first, last) {
        inputs.duration_micros = inputs
            .duration_micros
            .saturating_add(b.0.saturating_sub(a.0));
    }
    inputs.captures += 1;
    for (player, mut events) in per_player {
        // Arrival order is not beat order for a late note; pairing wants
        // beat order (stable: an on and an off on one beat keep theirs).
        events.sort_by_key(|e| e.0);
        inputs.participants.insert(player);
        inputs
            .lines
            .extend(lines_from_events(&events, role, micros_per_beat));
    }
    Ok(())
}

/// What `jam agent train` was asked.
#[derive(Debug)]
pub(crate) struct TrainArgs {
    pub(crate) from: Vec<PathBuf>,
    pub(crate) kind: KindArg,
    pub(crate) output: PathBuf,
    pub(crate) to: Vec<Recipient>,
    pub(crate) role: Role,
    pub(crate) seed: u64,
    pub(crate) name: String,
}

/// Trains, seals, writes; prints one line about it.
pub(crate) fn train(a: TrainArgs, key: Option<&Path>) -> Result<()> {
    // The owner is the key holder when a key is given or needed (captures,
    // or no --to); otherwise the first recipient.
    let mut loaded: Option<Identity> = None;
    let mut load = || -> Result<Identity> {
        if loaded.is_none() {
            loaded = Some(util::load_identity(key)?);
        }
        Ok(loaded.clone().expect("loaded above"))
    };
    let inputs = read_inputs(&a.from, a.role, &mut load)?;
    let owner = if key.is_some() || a.to.is_empty() {
        load()?.to_public()
    } else {
        match &loaded {
            Some(id) => id.to_public(),
            None => a.to[0],
        }
    };
    let mut recipients = vec![owner];
    for r in &a.to {
        if !recipients.contains(r) {
            recipients.push(*r);
        }
    }
    let (kind, model) = match a.kind {
        KindArg::Markov => (
            AgentKind::Markov,
            markov::train(&inputs.lines, &markov::MarkovConfig::default()).to_model_bytes(),
        ),
        KindArg::Trigram => (
            AgentKind::Trigram,
            trigram::train(&inputs.lines).to_model_bytes(),
        ),
        KindArg::Neural => (
            AgentKind::Neural,
            neural::train(
                &inputs.lines,
                &NeuralConfig {
                    seed: a.seed,
                    ..NeuralConfig::default()
                },
            )
            .to_model_bytes(),
        ),
    };
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let notes = inputs.notes();
    let meta = AgentMeta {
        owner,
        owner_name: a.name,
        kind: kind.name().to_string(),
        version: 1,
        created_unix_micros: created,
        training: TrainingSummary {
            captures: inputs.captures,
            events: inputs.events,
            duration_micros: inputs.duration_micros,
            participants: inputs.participants.iter().copied().collect(),
            description: format!(
                "{notes} notes in {} lines from {} files{}",
                inputs.lines.len(),
                a.from.len(),
                if kind == AgentKind::Neural {
                    format!(", seed {}", a.seed)
                } else {
                    String::new()
                }
            ),
        },
    };
    util::replace_file(&a.output, |f| {
        write_agent(
            std::io::BufWriter::new(f),
            &meta,
            &mut &model[..],
            &recipients,
            &mut util::os_rng(),
        )
        .and_then(|w| w.into_inner().map_err(|e| e.into_error().into()))
        .with_context(|| format!("writing {}", a.output.display()))?;
        Ok(())
    })?;
    println!(
        "wrote {}: {} trained on {notes} notes in {} lines, model {} bytes, sealed for {} recipients",
        a.output.display(),
        kind.name(),
        inputs.lines.len(),
        model.len(),
        recipients.len()
    );
    Ok(())
}

/// Opens an agent and loads its model into a predictor.
pub(crate) fn load_predictor(file: &Path, id: Identity) -> Result<Predictor> {
    let opened = open_agent(util::open(file)?, &[id]).with_context(|| shown(file))?;
    let kind = opened.meta.kind.clone();
    let bytes = opened.read_model().with_context(|| shown(file))?;
    let model = decode_model(&bytes)
        .with_context(|| format!("{}: the model inside cannot be used", file.display()))?;
    if model.kind().name() != kind {
        bail!(
            "{}: the metadata says {kind} but the model inside is {}",
            file.display(),
            model.kind().name()
        );
    }
    let agent = model
        .into_agent()
        .with_context(|| format!("{}: the model inside cannot be loaded", file.display()))?;
    Ok(Predictor::new(agent))
}

/// `jam agent eval`.
pub(crate) fn eval(
    file: &Path,
    on: &[PathBuf],
    role: Role,
    key: Option<&Path>,
    as_json: bool,
) -> Result<()> {
    let id = util::load_identity(key)?;
    let mut predictor = load_predictor(file, id.clone())?;
    let inputs = read_inputs(on, role, &mut || Ok(id.clone()))?;
    let r = evaluate(&mut predictor, &inputs.lines, EvalConfig::default())
        .with_context(|| format!("{}: prediction failed", file.display()))?;
    if as_json {
        println!(
            "{}",
            serde_json::json!({
                "bits_per_note": r.bits_per_note,
                "top1": r.top1,
                "onset_error_ms": r.onset_error_ms,
                "false_prediction_rate": r.false_prediction_rate,
                "notes": r.notes,
            })
        );
    } else {
        println!(
            "agent:                 {} ({})",
            file.display(),
            predictor.agent().kind().name()
        );
        println!("notes:                 {}", r.notes);
        println!("bits per note (pitch): {:.3}", r.bits_per_note);
        println!("top-1 next pitch:      {:.1} %", 100.0 * r.top1);
        println!(
            "onset error:           {:.1} ms (mean, predicted notes)",
            r.onset_error_ms
        );
        println!(
            "false predictions:     {:.1} % of {} confident predictions (p >= {})",
            100.0 * r.false_prediction_rate,
            r.confident,
            EvalConfig::default().confidence
        );
    }
    Ok(())
}
