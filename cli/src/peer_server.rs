//! `jam peer --server URL --session NAME`: the same headless participant
//! on the same engine, joined through `jamd` instead of by address: log in,
//! register this device's public key, join the session by name, and play
//! with every packet end-to-end encrypted (`jam_join`,
//! `jam_transport::relay_client`), directly to members the network lets us
//! reach and through the relay to the others. Output, `--play`, `--print`
//! and `--capture` are those of plain `jam peer`: the joined
//! [`RelayPeer`](jam_transport::relay_client::RelayPeer) runs behind the
//! engine's network adapter ([`jam_engine::network::start_carrier`]).
//!
//! This module makes the join and reports what only a relayed session has
//! (relay connection, path changes, key rotations) on stderr; the rest is
//! `crate::peer`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use jam_core::MonotonicClock;
use jam_join::{JoinError, JoinRequest, PeerOptions, join_session, split_events};
use jam_transport::direct::PathEvent;
use jam_transport::driver::Driver;
use jam_transport::participant::ParticipantEvent;
use jam_transport::relay_client::{RelayClientEvent, RelayPeer, RelayPeerEvent};
use tokio::sync::mpsc;

use crate::util;

/// The options that make `jam peer` join through `jamd`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServerArgs {
    /// Join through this jamd (http://host:port) instead of inviting by
    /// address; everything then goes through its relay, end-to-end
    /// encrypted.
    #[arg(
        long,
        value_name = "URL",
        requires = "session",
        conflicts_with = "invite"
    )]
    server: Option<String>,
    /// The session to join, by name.
    #[arg(long, value_name = "NAME", requires = "server")]
    session: Option<String>,
    /// The account to log in with [default: --name]. The password comes
    /// from $JAM_PASSWORD or --password-file.
    #[arg(long, value_name = "USER", requires = "server")]
    user: Option<String>,
    /// A file whose first line is the password.
    #[arg(long, value_name = "FILE", requires = "server")]
    password_file: Option<PathBuf>,
    /// Create the account first (servers with open registration).
    #[arg(long, requires = "server")]
    register: bool,
    /// Create the session if it does not exist.
    #[arg(long, requires = "server")]
    create: bool,
    /// Send everything through the relay: no direct path to other members,
    /// and our own addresses are not reported to jamd.
    #[arg(long, requires = "server")]
    relay_only: bool,
}

impl ServerArgs {
    /// The server URL if `jam peer` is to join through jamd.
    pub(crate) fn server(&self) -> Option<&str> {
        self.server.as_deref()
    }
}

/// What plain `jam peer` hands over.
pub(crate) struct Common {
    pub(crate) name: String,
    pub(crate) bind: std::net::IpAddr,
    pub(crate) seed: u64,
    /// The identity key file whose public key is registered as this device.
    pub(crate) key: Option<PathBuf>,
    /// The clock the engine's blocks read.
    pub(crate) clock: MonotonicClock,
}

/// A session joined through jamd, with its relay peer running.
pub(crate) struct Joined {
    /// The driver running the relay peer.
    pub(crate) driver: Driver<RelayPeer>,
    /// The participant's events (the relay peer's own are printed).
    pub(crate) events: mpsc::UnboundedReceiver<ParticipantEvent>,
    /// How many members were online when we joined: the song waits for a
    /// session with each of them (or the first to arrive if none was).
    pub(crate) band: usize,
    /// Says goodbye to jamd once the session is over.
    pub(crate) leave: Leave,
    /// The session document every member founds alike.
    pub(crate) shared: jam_engine::session_sync::SharedSession,
}

/// Leaving the session through the HTTP API.
pub(crate) struct Leave {
    leave: jam_join::Leave,
    name: String,
}

impl Leave {
    /// Leaving makes the others rotate their keys; a failure here (jamd
    /// down) only means the membership stays until an owner removes it.
    pub(crate) async fn run(self) {
        if let Err(e) = self.leave.run().await {
            eprintln!("jam peer {}: could not leave the session: {e}", self.name);
        }
    }
}

fn password() -> Result<String> {
    match std::env::var("JAM_PASSWORD") {
        Ok(p) if !p.is_empty() => Ok(p),
        _ => bail!("no password: set JAM_PASSWORD or pass --password-file"),
    }
}

/// Logs in, registers the device, joins the session and starts its relay
/// peer on the current runtime ([`jam_join::join_session`]).
pub(crate) async fn join(args: &ServerArgs, common: &Common) -> Result<Joined> {
    let url = args.server.clone().expect("checked by the caller");
    let session = args
        .session
        .clone()
        .context("--server needs --session NAME")?;
    let user = args.user.clone().unwrap_or_else(|| common.name.clone());
    let pass = match &args.password_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read {}", f.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        None => password()?,
    };
    let identity = util::load_identity(common.key.as_deref())?;
    let mut key_seed = [0u8; 32];
    rand_core::Rng::fill_bytes(&mut util::os_rng(), &mut key_seed);
    let secret = identity.to_secret_bytes();
    let mut opts = PeerOptions::new(common.name.clone(), *secret, common.seed, key_seed);
    opts.bind = common.bind;
    opts.clock = common.clock;
    if args.relay_only {
        opts.direct = None;
        opts.report_addrs = false;
    }
    let mut request = JoinRequest::new(url.clone(), session.clone(), user.clone(), pass, opts);
    request.device_name = format!("jam peer {}", common.name);
    request.register = args.register;
    request.create = args.create;
    let joined = match join_session(request).await {
        Ok(j) => j,
        Err(e @ JoinError::NoSession { .. }) => bail!("{e} (--create makes it)"),
        Err(e) => {
            return Err(e).with_context(|| format!("joining {session:?} on {url} as {user}"));
        }
    };
    if joined.created_account {
        eprintln!("jam peer {}: created account {user}", common.name);
    }
    eprintln!(
        "jam peer {}: joined {session:?} as member {} through relay {}",
        common.name, joined.peer.joined.member_id, joined.peer.joined.relay
    );
    let band = joined.others_online().max(1);
    let shared = joined.shared_session();
    let leave = Leave {
        leave: joined.leave,
        name: common.name.clone(),
    };
    let (driver, events, _) = joined.peer.into_parts();
    let name = common.name.clone();
    let events = split_events(events, move |e| report(&name, e));
    Ok(Joined {
        driver,
        events,
        band,
        leave,
        shared,
    })
}

/// Reports the relay peer's own events on stderr.
fn report(name: &str, event: RelayPeerEvent) {
    match event {
        RelayPeerEvent::Relay(RelayClientEvent::Connected { observed, count }) => {
            let again = if count > 1 { " again" } else { "" };
            eprintln!("jam peer {name}: relay accepted us{again} (seen as {observed})");
        }
        RelayPeerEvent::Relay(RelayClientEvent::Lost) => {
            eprintln!("jam peer {name}: relay silent, saying hello again");
        }
        RelayPeerEvent::Rotated { epoch } => {
            eprintln!("jam peer {name}: a member left; new sender key (epoch {epoch})");
        }
        RelayPeerEvent::Path(PathEvent::Direct { member, addr, rtt }) => {
            eprintln!(
                "jam peer {name}: direct path to member {member} at {addr} ({} µs)",
                rtt.as_micros()
            );
        }
        RelayPeerEvent::Path(PathEvent::Relay { member }) => {
            eprintln!(
                "jam peer {name}: direct path to member {member} went silent; relay carries it"
            );
        }
        _ => {}
    }
}
