//! `jam`: the jam.togthr command-line tool.
//!
//! A thin layer over the library crates: each command group lives in its own
//! module and turns arguments into library calls. Errors are reported once,
//! with their full chain of causes, and the exit status is non-zero on any
//! failure.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod agent;
mod bench;
mod capture;
mod demo;
mod keys;
mod midifile;
mod peer;
mod peer_server;
mod session;
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
    /// A headless participant: join sessions, play a MIDI file, print what
    /// arrives.
    Peer(Box<peer::Args>),
    /// Several players over an emulated network, with a report of what the
    /// recovery journal repaired.
    Demo(demo::Args),
    /// Inspect and create session documents.
    Session(session::Args),
    /// Identity keys: create one, show its public key.
    Keys(keys::Args),
    /// Session captures (.scp): inspect, verify, replay, export, repair.
    Capture(capture::Args),
    /// Agents (.agent): train, measure, inspect, share with a collaborator,
    /// revoke.
    Agent(agent::Args),
    /// Benchmarks: the latency modes over the emulated network.
    Bench(bench::Args),
}

fn main() -> ExitCode {
    // Automerge panics on some malformed changes; jam-capture turns those
    // into errors, and the error says what happened without a panic trace.
    jam_capture::hide_caught_panics();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Peer(a) => peer::run(*a),
        Command::Demo(a) => demo::run(a),
        Command::Session(args) => session::run(args),
        Command::Keys(a) => keys::run(a),
        Command::Capture(a) => capture::run(a),
        Command::Agent(a) => agent::run(a),
        Command::Bench(a) => bench::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jam: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
