//! `jam peer --server URL --session NAME`: the same headless participant,
//! joined through `jamd` instead of by address: log in, register this
//! device's public key, join the session by name, and play through the
//! relay with every packet end-to-end encrypted (`jam_join`,
//! `jam_transport::relay_client`). Output is the same as plain `jam peer`.
//!
//! Unlike plain `jam peer`, this mode does not run the engine yet: it
//! drives a `RelayPeer` (a transport participant) directly, plays the MIDI
//! file straight into it and prints what the transport delivers (so SysEx
//! is played and printed, and `t_us` is the packet's arrival). Running it
//! through the engine needs the engine's network adapter
//! (`jam_engine::network`) to drive a `RelayPeer` instead of a
//! `Participant`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use jam_core::Clock;
use jam_core::MonotonicClock;
use jam_join::{Jamd, JoinError, PeerOptions, spawn_peer};
use jam_transport::applemidi::PeerHandle;
use jam_transport::driver::DriverHandle;
use jam_transport::participant::ParticipantEvent;
use jam_transport::relay_client::{RelayClientEvent, RelayPeer, RelayPeerEvent};
use jam_transport::rtp::recv::RecvMessage;
use reqwest::StatusCode;
use serde_json::json;
use std::io::Write;

use crate::midifile::Timed;
use crate::peer::{WallClock, shutdown_signal};
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
    pub(crate) print: bool,
    pub(crate) duration: Option<f64>,
    pub(crate) seed: u64,
    pub(crate) song: Option<Vec<Timed>>,
    /// The identity key file whose public key is registered as this device.
    pub(crate) key: Option<PathBuf>,
}

fn password() -> Result<String> {
    match std::env::var("JAM_PASSWORD") {
        Ok(p) if !p.is_empty() => Ok(p),
        _ => bail!("no password: set JAM_PASSWORD or pass --password-file"),
    }
}

pub(crate) fn run(args: ServerArgs, common: Common) -> Result<()> {
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the network runtime")?;
    runtime.block_on(async move {
        let mut jamd = Jamd::new(&url);
        if args.register {
            match jamd.register(&user, &pass).await {
                Ok(()) => eprintln!("jam peer {}: created account {user}", common.name),
                Err(JoinError::Refused {
                    status: StatusCode::CONFLICT,
                    ..
                }) => {}
                Err(e) => return Err(e).context("creating the account"),
            }
        }
        jamd.login(&user, &pass)
            .await
            .with_context(|| format!("logging in to {url} as {user}"))?;
        let secret = identity.to_secret_bytes();
        let public = identity.to_public().to_bytes();
        let device = jamd
            .ensure_device(&format!("jam peer {}", common.name), &public)
            .await
            .context("registering this device's key")?;
        let id = match jamd.find_session(&session).await? {
            Some(id) => id,
            None if args.create => jamd
                .create_session(&session)
                .await
                .with_context(|| format!("creating session {session:?}"))?,
            None => bail!("no session called {session:?} on {url} (--create makes it)"),
        };
        let joined = jamd
            .join(&id, Some(&device), None)
            .await
            .with_context(|| format!("joining session {session:?}"))?;
        eprintln!(
            "jam peer {}: joined {session:?} as member {} through relay {}",
            common.name, joined.member_id, joined.relay
        );
        let clock = MonotonicClock::new();
        let wall = WallClock::now();
        let mut key_seed = [0u8; 32];
        rand_core::Rng::fill_bytes(&mut util::os_rng(), &mut key_seed);
        let mut opts = PeerOptions::new(common.name.clone(), *secret, common.seed, key_seed);
        opts.bind = common.bind;
        opts.clock = clock;
        // The band: whoever is online now. The song starts once a session
        // with each of them is up (or with the first to arrive if nobody
        // is), so that nobody misses its beginning.
        let band = joined
            .members
            .iter()
            .filter(|m| m.online && m.id != joined.member_id)
            .count()
            .max(1);
        let leave_api = jamd.clone();
        let mut peer = spawn_peer(jamd, joined, opts).await?;
        let result = session_loop(&mut peer, &common, clock, wall, band).await;
        peer.close().await.context("stopping the network task")?;
        // Leaving makes the others rotate their keys; a failure here (jamd
        // down) only means the membership stays until an owner removes it.
        if let Err(e) = leave_api.leave(&id).await {
            eprintln!("jam peer {}: could not leave the session: {e}", common.name);
        }
        eprintln!("jam peer {}: session ended", common.name);
        result
    })
}

async fn session_loop(
    peer: &mut jam_join::RunningPeer,
    common: &Common,
    clock: MonotonicClock,
    wall: WallClock,
    band: usize,
) -> Result<()> {
    let deadline = common
        .duration
        .map(|d| tokio::time::Instant::now() + Duration::from_secs_f64(d));
    let mut names: BTreeMap<PeerHandle, String> = BTreeMap::new();
    let mut song = common.song.clone();
    let mut player: Option<tokio::task::JoinHandle<()>> = None;
    let mut shutdown = std::pin::pin!(shutdown_signal());
    let name = &common.name;
    loop {
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = peer.events.recv() => {
                let Some(event) = event else { bail!("the network task stopped unexpectedly") };
                match event {
                    RelayPeerEvent::Participant(ParticipantEvent::Joined { peer: h, name: n, ssrc, .. }) => {
                        let label = n.unwrap_or_else(|| format!("{ssrc:08x}"));
                        eprintln!("jam peer {name}: joined {label}");
                        names.insert(h, label);
                        if names.len() >= band && let Some(events) = song.take() {
                            player = Some(tokio::spawn(play(peer.driver.handle(), clock, events)));
                        }
                    }
                    RelayPeerEvent::Participant(ParticipantEvent::Left { peer: h, reason }) => {
                        let label = names.get(&h).cloned().unwrap_or_default();
                        eprintln!("jam peer {name}: {label} left ({reason:?})");
                    }
                    RelayPeerEvent::Participant(ParticipantEvent::Midi { peer: h, event, arrived, .. }) if common.print => {
                        print_midi(&names, h, &event.message, event.recovered, wall.unix_us(arrived))?;
                    }
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
                    _ => {}
                }
            }
            _ = sleep => break,
            _ = &mut shutdown => break,
        }
    }
    if let Some(p) = player {
        p.abort();
    }
    Ok(())
}

/// Writes one received message as a JSON line (the same fields as plain
/// `jam peer --print`) and flushes, so a reader on a pipe sees it at once.
fn print_midi(
    names: &BTreeMap<PeerHandle, String>,
    peer: PeerHandle,
    message: &RecvMessage,
    recovered: bool,
    t_us: u64,
) -> Result<()> {
    let from = names
        .get(&peer)
        .cloned()
        .unwrap_or_else(|| format!("{peer:?}"));
    let bytes: &[u8] = match message {
        RecvMessage::Short(m) => m.as_slice(),
        RecvMessage::SysEx(s) => s.as_bytes(),
    };
    let line = json!({ "from": from, "midi": bytes, "recovered": recovered, "t_us": t_us });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").context("writing to stdout")?;
    out.flush().context("writing to stdout")
}

/// Plays a MIDI file in real time from now.
async fn play(driver: DriverHandle<RelayPeer>, clock: MonotonicClock, events: Vec<Timed>) {
    let start = tokio::time::Instant::now();
    for e in events {
        tokio::time::sleep_until(start + e.at()).await;
        let time = clock.now();
        let sent = match e {
            Timed::Short(_, m) => {
                driver
                    .call(move |p, now| p.participant().send(now, time, m))
                    .await
            }
            Timed::SysEx(_, bytes) => {
                driver
                    .call(move |p, now| p.participant().send_sysex(now, time, &bytes))
                    .await
            }
        };
        if sent.is_err() {
            // The network task is gone: the session is ending.
            return;
        }
    }
}
