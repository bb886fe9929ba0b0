//! `jam`: the jam.togthr command line.
//!
//! Each command group lives in its own module with an `Args` struct and a
//! `run` function; `main` prints an error chain once and exits 1.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod session;

/// Play music together over the internet.
#[derive(Debug, Parser)]
#[command(name = "jam", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect and create session documents.
    Session(session::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
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
