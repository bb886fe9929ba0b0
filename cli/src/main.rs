//! `jam`: the jam.togthr command-line tool.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent;
mod capture;
mod keys;
mod util;

/// jam.togthr: play together over the internet.
#[derive(Debug, Parser)]
#[command(name = "jam", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Identity keys: create one, show its public key.
    Keys(keys::Args),
    /// Session captures (.scp): inspect, verify, replay, export, repair.
    Capture(capture::Args),
    /// Agents (.agent): inspect, share with a collaborator, revoke.
    Agent(agent::Args),
}

fn main() -> ExitCode {
    // Automerge panics on some malformed changes; jam-capture turns those
    // into errors, and the error says what happened without a panic trace.
    jam_capture::hide_caught_panics();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keys(a) => keys::run(a),
        Command::Capture(a) => capture::run(a),
        Command::Agent(a) => agent::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jam: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
