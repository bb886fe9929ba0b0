//! `jam peer`: a headless participant on real UDP sockets.
//!
//! It listens on a control/data port pair, invites the participants it is
//! told to, plays a MIDI file once a session is up, prints every MIDI
//! message it receives as one JSON object per line, and on `--duration`
//! (or Ctrl-C / SIGTERM) ends every session cleanly with `BY` and exits 0.

use crate::midifile::{self, Timed};
use crate::peer_server::HasParticipant;
use anyhow::{Context, Result, bail};
use clap::Parser;
use jam_core::{Clock, Micros, MonotonicClock};
use jam_transport::applemidi::PeerHandle;
use jam_transport::driver::{Driver, DriverConfig, DriverHandle, Protocol};
use jam_transport::participant::{Participant, ParticipantConfig, ParticipantEvent};
use jam_transport::rtp::recv::RecvMessage;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A headless participant.
#[derive(Debug, Parser)]
pub(crate) struct Args {
    /// The name other participants see.
    #[arg(long)]
    name: String,
    /// Address of the control port to listen on (the data port is the next
    /// one up); port 0 picks a free pair.
    #[arg(long, default_value = "0.0.0.0:5004")]
    listen: SocketAddr,
    /// Control port of a participant to invite (HOST:PORT); repeatable.
    #[arg(long, value_name = "HOST:PORT")]
    invite: Vec<String>,
    /// A Standard MIDI File to play into the session once a session is up.
    #[arg(long, value_name = "FILE.mid")]
    play: Option<PathBuf>,
    /// Print every received MIDI message on stdout as one JSON object per
    /// line: {"from", "midi", "recovered", "t_us"} (t_us: local receive time,
    /// microseconds since the Unix epoch).
    #[arg(long)]
    print: bool,
    /// End every session and exit after this many seconds.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Seed for the SSRC, tokens and sequence numbers (default: random).
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    server: crate::peer_server::ServerArgs,
}

/// Maps the driver's monotonic clock to wall-clock microseconds, for
/// `t_us` values other processes on the same machine can compare.
#[derive(Clone, Copy)]
pub(crate) struct WallClock {
    pub(crate) origin_unix_us: u64,
}

impl WallClock {
    pub(crate) fn unix_us(&self, t: Micros) -> u64 {
        self.origin_unix_us.saturating_add(t.as_micros())
    }
}

fn resolve(target: &str) -> Result<SocketAddr> {
    target
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {target}"))?
        .find(|a| a.is_ipv4())
        .with_context(|| format!("{target} has no IPv4 address"))
}

pub(crate) fn run(args: Args) -> Result<()> {
    if let Some(d) = args.duration
        && !(d.is_finite() && d > 0.0)
    {
        bail!("--duration must be a positive number of seconds, got {d}");
    }
    if args.listen.port() == u16::MAX {
        bail!(
            "--listen port {} leaves no room for the data port",
            args.listen.port()
        );
    }
    let invites = args
        .invite
        .iter()
        .map(|s| resolve(s))
        .collect::<Result<Vec<_>>>()?;
    let song = match &args.play {
        Some(path) => Some(midifile::load(path)?),
        None => None,
    };
    if args.server.server().is_some() {
        let common = crate::peer_server::Common {
            name: args.name.clone(),
            bind: args.listen.ip(),
            print: args.print,
            duration: args.duration,
            seed: args.seed.unwrap_or_else(rand::random),
            song,
        };
        return crate::peer_server::run(args.server, common);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the network runtime")?;
    runtime.block_on(session(args, invites, song))
}

async fn session(args: Args, invites: Vec<SocketAddr>, song: Option<Vec<Timed>>) -> Result<()> {
    let clock = MonotonicClock::new();
    let wall = WallClock {
        origin_unix_us: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0),
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    let config = ParticipantConfig::new(args.name.clone(), seed);
    let driver_config = DriverConfig {
        ip: args.listen.ip(),
        control_port: args.listen.port(),
        ..DriverConfig::loopback()
    };
    let (driver, mut events) = Driver::spawn(driver_config, clock, move |now| {
        Participant::new(config, now)
    })
    .await
    .with_context(|| format!("listening on {}", args.listen))?;
    eprintln!(
        "jam peer {}: listening on control {} / data {}",
        args.name,
        driver.control_addr(),
        driver.data_addr()
    );
    for addr in &invites {
        let addr = *addr;
        driver
            .call(move |p, now| p.invite(now, addr))
            .await?
            .with_context(|| format!("inviting {addr}"))?;
    }

    let deadline = args
        .duration
        .map(|d| tokio::time::Instant::now() + Duration::from_secs_f64(d));
    let mut names: BTreeMap<PeerHandle, String> = BTreeMap::new();
    let mut song = song;
    let mut player: Option<tokio::task::JoinHandle<()>> = None;
    let mut shutdown = std::pin::pin!(shutdown_signal());
    loop {
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = events.recv() => {
                let Some(event) = event else { bail!("the network task stopped unexpectedly") };
                match event {
                    ParticipantEvent::Joined { peer, name, ssrc, control, .. } => {
                        let label = name.unwrap_or_else(|| format!("{ssrc:08x}"));
                        eprintln!("jam peer {}: joined {label} at {control}", args.name);
                        names.insert(peer, label);
                        if let Some(events) = song.take() {
                            player = Some(tokio::spawn(play(driver.handle(), clock, events)));
                        }
                    }
                    ParticipantEvent::Left { peer, reason } => {
                        let label = names.get(&peer).cloned().unwrap_or_default();
                        eprintln!("jam peer {}: {label} left ({reason:?})", args.name);
                    }
                    ParticipantEvent::InvitationRejected { control, .. } => {
                        eprintln!("jam peer {}: {control} rejected our invitation", args.name);
                    }
                    ParticipantEvent::InvitationFailed { control, reason, .. } => {
                        eprintln!("jam peer {}: inviting {control} failed ({reason:?})", args.name);
                    }
                    ParticipantEvent::Midi { peer, event, arrived, .. } if args.print => {
                        print_midi(&names, peer, &event.message, event.recovered, wall.unix_us(arrived))?;
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
    driver.call(|p, now| p.close(now)).await?;
    driver
        .shutdown()
        .await
        .context("stopping the network task")?;
    // Ending our sessions released whatever the peers left sounding.
    while let Ok(event) = events.try_recv() {
        if let ParticipantEvent::Midi {
            peer,
            event,
            arrived,
            ..
        } = event
            && args.print
        {
            print_midi(
                &names,
                peer,
                &event.message,
                event.recovered,
                wall.unix_us(arrived),
            )?;
        }
    }
    eprintln!("jam peer {}: session ended", args.name);
    Ok(())
}

/// Writes one received message as a JSON line and flushes, so a reader on
/// a pipe sees it at once.
pub(crate) fn print_midi(
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
pub(crate) async fn play<P: Protocol + HasParticipant>(
    driver: DriverHandle<P>,
    clock: MonotonicClock,
    events: Vec<Timed>,
) {
    let start = tokio::time::Instant::now();
    for e in events {
        tokio::time::sleep_until(start + e.at()).await;
        let time = clock.now();
        let sent = match e {
            Timed::Short(_, m) => {
                driver
                    .call(move |p, now| p.participant_mut().send(now, time, m))
                    .await
            }
            Timed::SysEx(_, bytes) => {
                driver
                    .call(move |p, now| p.participant_mut().send_sysex(now, time, &bytes))
                    .await
            }
        };
        if sent.is_err() {
            // The network task is gone: the session is ending.
            return;
        }
    }
}

/// Resolves on Ctrl-C, or SIGTERM on Unix.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
