//! `jam agent`: train an agent, measure it, inspect it, share it, revoke
//! access.

mod train;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;
use jam_capture::Recipient;
use jam_capture::agent::open_agent;

use crate::util::{self, KEY_HELP, shown};

/// What revocation can and cannot do; shown in `jam agent revoke --help`.
const REVOKE_HELP: &str = "Take access away from a recipient.

Writes a new generation of the file: a fresh file key, the payload sealed again for the remaining recipients, the generation number raised by one. The removed key cannot open the new generation.

What revocation cannot do: it cannot recall copies. Whoever was removed still opens any copy of an earlier generation they kept or can still reach, and anything they already decrypted stays with them. Replace the old file everywhere it is stored (for example on a blob store) with the new generation.";

/// Agents.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Cmd,
    #[arg(long, global = true, help = KEY_HELP)]
    key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Train an agent from MIDI files and captures and seal it.
    Train {
        /// Input files: Standard MIDI Files (.mid) and captures (.scp,
        /// opened with --key).
        #[arg(long = "from", required = true, num_args = 1..)]
        from: Vec<PathBuf>,
        /// The model kind.
        #[arg(long, value_enum, default_value = "markov")]
        kind: train::KindArg,
        /// Where to write the sealed agent.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Public keys (jam1…) that can open the agent; the owner (the
        /// key holder, else the first of these) always can.
        #[arg(long = "to")]
        to: Vec<String>,
        /// Role of the lines not on the drum channel (channel 10 is rhythm).
        #[arg(long, value_enum, default_value = "melody")]
        role: train::RoleArg,
        /// Seed of the neural agent's initial weights and shuffling; the
        /// same seed and inputs give the same model bytes.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The owner's display name, stored in the agent.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Measure an agent on MIDI files and captures it has not seen: bits
    /// per note, top-1 next-pitch accuracy, onset error, false predictions.
    Eval {
        /// The agent file.
        file: PathBuf,
        /// Files to measure on (.mid, or .scp opened with --key).
        #[arg(long = "on", required = true, num_args = 1..)]
        on: Vec<PathBuf>,
        /// Role of the lines not on the drum channel.
        #[arg(long, value_enum, default_value = "melody")]
        role: train::RoleArg,
        /// Print one JSON object: bits_per_note, top1, onset_error_ms,
        /// false_prediction_rate, notes.
        #[arg(long)]
        json: bool,
    },
    /// Show an agent's owner, kind, version, training data and recipients.
    Info {
        /// The agent file.
        file: PathBuf,
    },
    /// Give another key access: the file key is wrapped for them, the payload
    /// is not touched. Needs a key that can open the file.
    Share {
        /// The agent file (replaced unless -o is given).
        file: PathBuf,
        /// The recipient's public key (jam1…).
        #[arg(long = "to", required = true)]
        to: Vec<String>,
        /// Write the result here instead of replacing the file.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
    },
    #[command(about = "Take access away from a recipient (see --help for what this cannot do)", long_about = REVOKE_HELP)]
    Revoke {
        /// The agent file (replaced unless -o is given).
        file: PathBuf,
        /// The public key (jam1…) to remove.
        #[arg(long = "remove", required = true)]
        remove: Vec<String>,
        /// Write the new generation here instead of replacing the file.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
    },
}

fn keys(list: &[String]) -> Result<Vec<Recipient>> {
    list.iter().map(|s| Ok(s.parse::<Recipient>()?)).collect()
}

pub(crate) fn run(args: Args) -> Result<()> {
    let key = args.key.as_deref();
    match args.command {
        Cmd::Train {
            from,
            kind,
            output,
            to,
            role,
            seed,
            name,
        } => train::train(
            train::TrainArgs {
                from,
                kind,
                output,
                to: keys(&to)?,
                role: role.into(),
                seed,
                name,
            },
            key,
        ),
        Cmd::Eval {
            file,
            on,
            role,
            json,
        } => train::eval(&file, &on, role.into(), key, json),
        Cmd::Info { file } => info(&file, key),
        Cmd::Share { file, to, output } => {
            let to = keys(&to)?;
            let id = util::load_identity(key)?;
            let dest = output.unwrap_or_else(|| file.clone());
            let out = util::replace_file(&dest, |f| {
                jam_capture::share(
                    util::open(&file)?,
                    std::io::BufWriter::new(f),
                    &[id],
                    &to,
                    &mut util::os_rng(),
                )
                .with_context(|| shown(&file))
            })?;
            for r in &out.added {
                println!("shared {} with {r}", dest.display());
            }
            for r in &out.already {
                println!("{r} could already open {}", dest.display());
            }
            Ok(())
        }
        Cmd::Revoke {
            file,
            remove,
            output,
        } => {
            let remove = keys(&remove)?;
            let id = util::load_identity(key)?;
            let dest = output.unwrap_or_else(|| file.clone());
            let out = util::replace_file(&dest, |f| {
                jam_capture::revoke(
                    util::open(&file)?,
                    std::io::BufWriter::new(f),
                    &[id],
                    &remove,
                    &mut util::os_rng(),
                )
                .with_context(|| shown(&file))
            })?;
            println!(
                "wrote generation {} of {} for {} remaining recipients; copies of earlier generations still open with the removed keys",
                out.generation,
                dest.display(),
                out.recipients.len()
            );
            Ok(())
        }
    }
}

fn info(file: &Path, key: Option<&Path>) -> Result<()> {
    let id = util::load_identity(key)?;
    let agent = open_agent(util::open(file)?, &[id]).with_context(|| shown(file))?;
    let generation = agent.model.opener().header().generation;
    let recipients: Vec<String> = agent
        .model
        .opener()
        .recipients()
        .iter()
        .map(ToString::to_string)
        .collect();
    let m = agent.meta.clone();
    let size = agent.verify().with_context(|| shown(file))?;
    println!("file:        {}", file.display());
    println!("owner:       {} ({})", m.owner_name, m.owner);
    println!("kind:        {}", m.kind);
    println!("version:     {}", m.version);
    println!("generation:  {generation}");
    println!("model:       {size} bytes");
    println!(
        "trained on:  {} captures, {} events, {:.1} h, {} participants",
        m.training.captures,
        m.training.events,
        m.training.duration_micros as f64 / 3.6e9,
        m.training.participants.len()
    );
    if !m.training.description.is_empty() {
        println!("             {}", m.training.description);
    }
    println!("recipients:  {}", recipients.len());
    for r in recipients {
        println!("             {r}");
    }
    Ok(())
}
