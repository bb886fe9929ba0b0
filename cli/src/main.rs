//! `jam`: the jam.togthr command-line tool.
//!
//! A thin layer over the library crates: each command group lives in its own
//! module and turns arguments into library calls. Errors are reported once,
//! with their full chain of causes, and the exit status is non-zero on any
//! failure.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;
mod midifile;
mod peer;
mod session;

/// jam.togthr: play together over the internet.
#[derive(Debug, Parser)]
#[command(name = "jam", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A headless participant: join sessions, play a MIDI file, print what
    /// arrives.
    Peer(peer::Args),
    /// Several players over an emulated network, with a report of what the
    /// recovery journal repaired.
    Demo(demo::Args),
    /// Inspect and create session documents.
    Session(session::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Peer(a) => peer::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Session(args) => session::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jam: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
