//! `jam keys`: create an identity, show its public key.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use jam_capture::Identity;
use jam_capture::keys::{KdfParams, encode_key_file, write_new_key_file};

use crate::util;

/// Identity keys.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create a new identity key and print its public key.
    ///
    /// Without -o the key goes to the default key file ($JAM_KEY, else
    /// $XDG_CONFIG_HOME/jam/identity.key, else ~/.config/jam/identity.key),
    /// which every other command uses when --key is not given. The file is
    /// created readable by you only (mode 0600) and never overwritten.
    New {
        /// Where to write the key.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// Protect the key with a passphrase (from $JAM_PASSPHRASE, else
        /// asked on standard input); derived with Argon2id.
        #[arg(long)]
        passphrase: bool,
    },
    /// Print the public key (jam1…) of a key file, to give to others.
    Pub {
        /// The key file [default: the default key file].
        file: Option<PathBuf>,
    },
}

pub(crate) fn run(args: Args) -> Result<()> {
    match args.command {
        Cmd::New { output, passphrase } => {
            let path = match output {
                Some(p) => p,
                None => util::default_key_path()?,
            };
            let mut rng = util::os_rng();
            let id = Identity::generate(&mut rng);
            let pass = if passphrase {
                Some(util::passphrase("new passphrase")?)
            } else {
                None
            };
            let text = encode_key_file(
                &id,
                pass.as_ref().map(|p| p.as_str()),
                KdfParams::DEFAULT,
                &mut rng,
            )?;
            write_new_key_file(&path, &text)
                .with_context(|| format!("cannot create key file {}", path.display()))?;
            eprintln!("wrote {}", path.display());
            println!("{}", id.to_public());
            Ok(())
        }
        Cmd::Pub { file } => {
            let id = util::load_identity(file.as_deref())?;
            println!("{}", id.to_public());
            Ok(())
        }
    }
}
