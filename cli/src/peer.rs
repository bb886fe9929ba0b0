//! `jam peer`: a headless participant on real UDP sockets, running the same
//! engine as the plugin.
//!
//! It listens on a control/data port pair, invites the participants it is
//! told to, plays a MIDI file once a session is up, prints every MIDI
//! message it receives as one JSON object per line, and on `--duration`
//! (or Ctrl-C / SIGTERM) ends every session cleanly with `BY` and exits 0.
//!
//! Inside, it is a host without audio: [`jam_engine::Engine`] with the
//! transport adapter on the worker's runtime, and a dedicated thread that
//! calls [`EngineRt::process_block`] every [`BLOCK`] samples in real time
//! with synthetic host time (block `n` starts at `t0 + n·BLOCK/RATE` on the
//! shared clock; the thread sleeps until then). The MIDI file is the host's
//! input: each message goes into the block and sample where it falls, and
//! the engine stamps it with that sample's time. `--print` writes the
//! engine's output events (live mode): what the network delivered, with its
//! recovered flag and local receive time, when the engine places it.
//!
//! The session document (`jam-session-crdt`) travels with the session: the
//! engine founds it when another participant invites this one, or receives
//! it from the participant this one invites, and keeps it in sync over the
//! reliable side channel on the AppleMIDI control port. `--tempo BPM`
//! proposes a tempo change at the next bar once a session is up; with
//! `--print`, every tempo change the document holds is printed once as
//! `{"session": {"tempo", "at_beat", "by"}}`, and every later tempo the
//! engine's timeline takes on (when the change's beat is reached) as
//! `{"session": {"timeline_tempo"}}`. The document's participants and the
//! session clock's stratum (0: this clock is the session's time axis) are
//! reported on stderr whenever they change.
//!
//! `--server URL --session NAME` joins a session through `jamd` instead
//! (`crate::peer_server`): the same engine runs the relay peer, which
//! reaches members directly where it can and through the relay otherwise,
//! every packet end-to-end encrypted; the song then waits until a session
//! with every member online at the join is up. The session document rides
//! the relay peer's participant like the MIDI, so `--tempo` and the printed
//! session lines work the same way. There every member founds the document
//! when it meets the first other member (nobody invites anybody), all with
//! the same genesis (`SharedSession`), so the documents merge into one, and
//! the members align their session clocks as a mesh
//! (`jam_engine::shared_clock`).
//!
//! `--capture FILE.scp` hands the engine worker a [`Recording`]: every
//! event sent and received goes into a sealed capture for the `--to`
//! recipients (default: the public key of `--key`), finished when the
//! session ends; the session document's changes go into it too. A write
//! error (a full disk) stops the capture, not the session: it is printed on
//! stderr when it happens, the chunks written before it stay readable, and
//! the exit status is 1 with the error once the session has ended.
//!
//! Through the engine, two things differ from a bare transport participant,
//! and the printed fields keep their meaning as follows:
//!
//! - `midi` is the message as the participant played it (its own channel),
//!   not the engine's re-channeled copy (participant slot as channel), so
//!   that it still says what was received;
//! - `t_us` is the local receive time (the packet's arrival), not the time
//!   the engine placed the event one block later;
//! - System Exclusive messages are neither played from `--play` nor
//!   printed: engine events are fixed-size short messages, and the monitor
//!   and the plugin's note output have no use for SysEx;
//! - the engine never passes on a note-off for a key it did not turn on, so
//!   a stray note-off (for a note begun before we joined) is not printed.
//!   Note-offs the engine makes itself (hanging notes on a departure) are
//!   not printed either: nothing was received.

use crate::midifile::{self, Timed};
use anyhow::{Context, Result, bail};
use clap::Parser;
use jam_capture::Recipient;
use jam_core::{Clock, Micros, MonotonicClock, PeerId};
use jam_engine::EngineRt;
use jam_engine::net::{NetEvent, NetLink, NetPort, SessionAddress, net_link};
use jam_engine::session_sync::SessionSetup;
use jam_engine::{
    Block, Engine, EngineConfig, EngineControl, EventBuffer, HostEvent, MAX_EVENTS_PER_BLOCK,
    NetworkConfig, OutEvent, Received, Recording, RecordingStart, Settings, network,
};
use rand::SeedableRng;
use serde_json::json;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Samples per engine block.
pub(crate) const BLOCK: u32 = 256;
/// The engine's sample rate.
pub(crate) const RATE: f32 = 48_000.0;
/// How long the engine keeps running after `BY`, so that the releases the
/// session's end produces are placed and printed.
const TAIL: Duration = Duration::from_millis(250);

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
    /// Record every MIDI event this peer sends and receives into a new
    /// sealed capture (refuses to replace a file); finished on exit.
    #[arg(long, value_name = "FILE.scp")]
    capture: Option<PathBuf>,
    /// Who can open the capture (a jam1… public key); repeatable. Default:
    /// the public key of --key.
    #[arg(long, value_name = "PUBKEY", requires = "capture")]
    to: Vec<String>,
    #[arg(long, help = crate::util::KEY_HELP)]
    key: Option<PathBuf>,
    /// Propose this tempo (BPM) to the session, from the next bar on, once
    /// a session is up (direct or through jamd).
    #[arg(long, value_name = "BPM")]
    tempo: Option<f64>,
    #[command(flatten)]
    server: crate::peer_server::ServerArgs,
}

/// Maps the driver's monotonic clock to wall-clock microseconds, for
/// `t_us` values other processes on the same machine can compare.
#[derive(Clone, Copy)]
pub(crate) struct WallClock {
    origin_unix_us: u64,
}

impl WallClock {
    /// Wall-clock time now as the origin (call it with the clock's origin).
    pub(crate) fn now() -> Self {
        WallClock {
            origin_unix_us: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0),
        }
    }

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
    if let Some(t) = args.tempo
        && !(10.0..=999.0).contains(&t)
    {
        bail!("--tempo must be from 10 to 999 BPM, got {t}");
    }
    let recipients = match &args.capture {
        Some(_) if args.to.is_empty() => {
            vec![crate::util::load_identity(args.key.as_deref())?.to_public()]
        }
        Some(_) => args
            .to
            .iter()
            .map(|s| {
                s.parse::<Recipient>()
                    .with_context(|| format!("--to {s} is not a jam1… public key"))
            })
            .collect::<Result<Vec<_>>>()?,
        None => Vec::new(),
    };
    let clock = MonotonicClock::new();
    let wall = WallClock::now();
    let seed = args.seed.unwrap_or_else(rand::random);
    let local = PeerId::random(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let (engine, worker) = Engine::new(EngineConfig::new(local));

    // The worker, the transport and the session log share one runtime on
    // the worker's thread: adapter <-> log relay <-> worker.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the network runtime")?;
    let mut config = NetworkConfig::new(clock, args.name.clone(), seed);
    config.listen = args.listen;
    let (to_adapter, adapter_port) = net_link();
    // Joined through jamd (`--server`), or listening for invitations.
    let mut band = 1;
    let mut leave = None;
    let mut shared = None;
    let (_info, network_task) = if args.server.server().is_some() {
        let common = crate::peer_server::Common {
            name: args.name.clone(),
            bind: args.listen.ip(),
            seed,
            key: args.key.clone(),
            clock,
        };
        let started = runtime.block_on(async {
            let joined = crate::peer_server::join(&args.server, &common).await?;
            band = joined.band;
            leave = Some(joined.leave);
            shared = Some(joined.shared);
            anyhow::Ok(network::start_carrier(
                config,
                joined.driver,
                joined.events,
                adapter_port,
            ))
        })?;
        eprintln!(
            "jam peer {}: listening on control {} / data {} (the relay peer's ports)",
            args.name, started.0.control, started.0.data
        );
        started
    } else {
        let started = runtime
            .block_on(network::start_task(config, adapter_port))
            .with_context(|| format!("listening on {}", args.listen))?;
        eprintln!(
            "jam peer {}: listening on control {} / data {}",
            args.name, started.0.control, started.0.data
        );
        started
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (worker_link, worker_port) = net_link();
    runtime.spawn(relay(
        args.name.clone(),
        worker_port,
        to_adapter,
        stop.clone(),
    ));
    let handle = worker
        .spawn_on_then(runtime, worker_link, Some(network_task))
        .context("starting the engine worker")?;
    let control = handle.control();
    let created_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut setup = SessionSetup::new(
        &args.name,
        jam_engine::Timeline::default().bpm(),
        created_unix_ms,
        &mut crate::util::os_rng(),
    );
    if let Some(shared) = shared {
        setup = setup.with_shared(shared);
    }
    control.enable_session(setup, local, clock);
    if let Some(path) = &args.capture {
        let start = RecordingStart {
            recorder: local,
            recorder_name: args.name.clone(),
            session_schema: jam_session_crdt::schema::SCHEMA_MAJOR,
            tempo_bpm: jam_engine::Timeline::default().bpm(),
        };
        let recording =
            Recording::create(path, &recipients, start, clock, &mut crate::util::os_rng())?;
        control.start_capture(recording);
    }
    for addr in invites {
        control.invite(SessionAddress::Direct(addr));
    }

    let host = Host {
        engine,
        control: control.clone(),
        clock,
        wall,
        print: args.print,
        song,
        band,
        stop,
        duration: args.duration.map(Duration::from_secs_f64),
    };
    let audio = std::thread::Builder::new()
        .name("jam-peer-audio".into())
        .spawn(move || host.run())
        .context("starting the engine thread")?;
    let done = Arc::new(AtomicBool::new(false));
    let watcher = SessionWatcher {
        name: args.name.clone(),
        control: control.clone(),
        print: args.print,
        tempo: args.tempo,
        done: done.clone(),
    };
    let watcher = std::thread::Builder::new()
        .name("jam-peer-session".into())
        .spawn(move || watcher.run())
        .context("starting the session thread")?;
    let result = audio
        .join()
        .map_err(|_| anyhow::anyhow!("the engine thread panicked"));
    done.store(true, Ordering::Relaxed);
    let watched = watcher
        .join()
        .map_err(|_| anyhow::anyhow!("the session thread panicked"))?;
    let result = result?.and(watched);
    let captured = args
        .capture
        .is_some()
        .then(|| control.finish_capture().blocking_recv());
    handle.stop();
    if let Some(leave) = leave {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a runtime to leave the session")?
            .block_on(leave.run());
    }
    result?;
    match captured {
        Some(Ok(Some(Ok(s)))) => eprintln!(
            "jam peer {}: wrote capture {} ({} MIDI events, {} records)",
            args.name,
            s.path.display(),
            s.stats.midi_events,
            s.stats.records
        ),
        Some(Ok(Some(Err(e)))) => {
            return Err(anyhow::Error::new(e).context(
                "the capture ended early; the events written before it are kept \
                 (`jam capture repair` closes the file)",
            ));
        }
        Some(Ok(None)) | Some(Err(_)) => bail!("the capture was not finished"),
        None => {}
    }
    eprintln!("jam peer {}: session ended", args.name);
    Ok(())
}

/// Passes commands and events between the worker and the adapter, and
/// reports the session's progress on stderr as it goes by; sets `stop` on
/// Ctrl-C or SIGTERM.
async fn relay(name: String, mut worker: NetPort, adapter: NetLink, stop: Arc<AtomicBool>) {
    let NetLink {
        commands: to_adapter,
        events: mut from_adapter,
    } = adapter;
    let mut names = std::collections::BTreeMap::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());
    let mut signalled = false;
    loop {
        tokio::select! {
            cmd = worker.commands.recv() => match cmd {
                Some(cmd) => {
                    if to_adapter.send(cmd).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            ev = from_adapter.recv() => {
                let Some(ev) = ev else { break };
                match &ev {
                    NetEvent::PeerJoined { peer, name: label, address, .. } => {
                        names.insert(*peer, label.clone());
                        match address {
                            Some(a) => eprintln!("jam peer {name}: joined {label} at {a}"),
                            None => eprintln!("jam peer {name}: joined {label}"),
                        }
                    }
                    NetEvent::PeerLeft { peer, reason } => {
                        let label = names.get(peer).cloned().unwrap_or_default();
                        let why = reason.as_deref().unwrap_or("gone");
                        eprintln!("jam peer {name}: {label} left ({why})");
                    }
                    NetEvent::Connection(jam_engine::net::ConnectionState::Failed(why)) => {
                        eprintln!("jam peer {name}: {why}");
                    }
                    _ => {}
                }
                if worker.events.send(ev).await.is_err() {
                    break;
                }
            }
            _ = &mut shutdown, if !signalled => {
                signalled = true;
                stop.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// The headless host: one engine block every `BLOCK` samples, in real time.
struct Host {
    engine: EngineRt,
    control: EngineControl,
    clock: MonotonicClock,
    wall: WallClock,
    print: bool,
    song: Option<Vec<Timed>>,
    /// How many sessions must be up before the song starts.
    band: usize,
    stop: Arc<AtomicBool>,
    duration: Option<Duration>,
}

impl Host {
    fn run(mut self) -> Result<()> {
        let period = Duration::from_secs_f64(BLOCK as f64 / RATE as f64);
        let settings = Settings {
            // Nobody listens: the monitor synth would only cost time.
            monitor: false,
            ..Settings::default()
        };
        let mut output = EventBuffer::with_capacity(MAX_EVENTS_PER_BLOCK);
        let mut input: Vec<HostEvent> = Vec::with_capacity(MAX_EVENTS_PER_BLOCK);
        let (mut left, mut right) = (vec![0.0f32; BLOCK as usize], vec![0.0f32; BLOCK as usize]);
        let t0 = self.clock.now();
        let start = self.clock.to_instant(t0);
        let end = self.duration.map(|d| start + d);
        // The song, in samples from the block where a session came up.
        let mut song: Option<(u64, std::vec::IntoIter<(u64, jam_core::ShortMessage)>)> = None;
        let mut pending = self.song.take().map(|events| {
            events
                .into_iter()
                .filter_map(|e| {
                    let sample = (e.at().as_secs_f64() * RATE as f64).round() as u64;
                    match e {
                        Timed::Short(_, m) => Some((sample, m)),
                        Timed::SysEx(..) => None,
                    }
                })
                .collect::<Vec<_>>()
        });
        let mut next_song_event: Option<(u64, jam_core::ShortMessage)> = None;
        let mut tail_until: Option<std::time::Instant> = None;
        let mut n: u64 = 0;
        loop {
            let block_start = start + period.mul_f64(n as f64);
            let now_instant = std::time::Instant::now();
            if block_start > now_instant {
                std::thread::sleep(block_start - now_instant);
            }
            let wall_now = std::time::Instant::now();
            match tail_until {
                None => {
                    let over =
                        end.is_some_and(|e| wall_now >= e) || self.stop.load(Ordering::Relaxed);
                    if over {
                        // End every session; keep playing a little so the
                        // releases it produces come through.
                        self.control.leave();
                        tail_until = Some(wall_now + TAIL);
                    }
                }
                Some(t) if wall_now >= t => break,
                Some(_) => {}
            }
            let now = t0.offset_by((n as f64 * period.as_secs_f64() * 1e6).round() as i64);
            let first_sample = n * BLOCK as u64;

            // Start the song once the band is there (checked every 8
            // blocks): one session, or through jamd, one with every member
            // online when we joined, so that nobody misses its beginning.
            if song.is_none()
                && pending.is_some()
                && n.is_multiple_of(8)
                && self.control.peers().len() >= self.band
                && let Some(events) = pending.take()
            {
                let mut it = events.into_iter();
                next_song_event = it.next();
                song = Some((first_sample, it));
            }
            input.clear();
            if let Some((song_start, it)) = &mut song
                && tail_until.is_none()
            {
                while let Some((at, m)) = next_song_event {
                    let sample = *song_start + at;
                    if sample >= first_sample + BLOCK as u64 || input.len() == input.capacity() {
                        break;
                    }
                    input.push(HostEvent {
                        offset: sample.saturating_sub(first_sample) as u32,
                        msg: m,
                    });
                    next_song_event = it.next();
                }
            }
            self.engine.process_block(&mut Block {
                now,
                sample_rate: RATE,
                transport: Default::default(),
                settings,
                input: &input,
                output: &mut output,
                left: &mut left,
                right: &mut right,
            });
            if self.print {
                self.print_block(output.as_slice())?;
            }
            n += 1;
        }
        Ok(())
    }

    fn print_block(&self, events: &[OutEvent]) -> Result<()> {
        let received: Vec<(u8, Received)> = events
            .iter()
            .filter_map(|e| Some((e.slot, e.source?)))
            .collect();
        if received.is_empty() {
            return Ok(());
        }
        let peers = self.control.peers();
        let mut out = std::io::stdout().lock();
        for (slot, r) in received {
            let from = peers
                .iter()
                .find(|p| p.slot == slot)
                .map(|p| p.name.clone())
                .unwrap_or_else(|| format!("slot {slot}"));
            let line = json!({
                "from": from,
                "midi": r.played.as_slice(),
                "recovered": r.recovered,
                "t_us": self.wall.unix_us(r.arrival),
            });
            writeln!(out, "{line}").context("writing to stdout")?;
        }
        // Flush per block, so a reader on a pipe sees each line at once.
        out.flush().context("writing to stdout")
    }
}

/// Proposes `--tempo` once a session is up, and reports the session
/// document's tempo changes and the engine's timeline as they change.
struct SessionWatcher {
    name: String,
    control: EngineControl,
    print: bool,
    tempo: Option<f64>,
    done: Arc<AtomicBool>,
}

/// How often the session watcher looks at the session document.
const SESSION_POLL: Duration = Duration::from_millis(20);

impl SessionWatcher {
    fn run(mut self) -> Result<()> {
        let mut printed = std::collections::BTreeSet::new();
        let mut engine_bpm = None;
        let mut participants = Vec::new();
        let mut stratum = None;
        let mut capture_error = None;
        while !self.done.load(Ordering::Relaxed) {
            std::thread::sleep(SESSION_POLL);
            // A capture a write error ended (a full disk): said once, as it
            // happens; the session goes on.
            let error = self.control.capture_status().error;
            if let Some(e) = &error
                && error != capture_error
            {
                eprintln!("jam peer {}: {e}", self.name);
                capture_error = error;
            }
            let view = self.control.session();
            if let Some(bpm) = self.tempo
                && view.present
                && !self.control.peers().is_empty()
            {
                // A replica proposes once its session clock is aligned;
                // until then the engine says why not, and we try again.
                match self.control.change_tempo(bpm, None).blocking_recv() {
                    Ok(Ok(at)) => {
                        eprintln!(
                            "jam peer {}: proposed {bpm} BPM from beat {}",
                            self.name,
                            at.as_f64()
                        );
                        self.tempo = None;
                    }
                    // Not aligned or not arrived yet: try again next round.
                    Ok(Err(_)) => {}
                    Err(_) => return Ok(()),
                }
            }
            if view.participants != participants {
                participants = view.participants.clone();
                eprintln!(
                    "jam peer {}: participants: {}",
                    self.name,
                    participants.join(", ")
                );
            }
            if view.clock_stratum.is_some() && view.clock_stratum != stratum {
                stratum = view.clock_stratum;
                eprintln!(
                    "jam peer {}: session clock stratum {}",
                    self.name,
                    stratum.unwrap_or_default()
                );
            }
            let mut out = std::io::stdout().lock();
            for c in &view.tempo_changes {
                if !printed.insert(c.id.clone()) {
                    continue;
                }
                eprintln!(
                    "jam peer {}: session tempo {} BPM from beat {}",
                    self.name,
                    c.bpm,
                    c.at_beat.as_f64()
                );
                if self.print {
                    let line = json!({"session": {
                        "tempo": c.bpm,
                        "at_beat": c.at_beat.as_f64(),
                        "by": c.by.to_string(),
                    }});
                    writeln!(out, "{line}").context("writing to stdout")?;
                }
            }
            if view.engine_bpm.is_some() && view.engine_bpm != engine_bpm {
                // The first timeline is the session's starting tempo, not
                // a change.
                let first = engine_bpm.is_none();
                engine_bpm = view.engine_bpm;
                if self.print && !first {
                    let line = json!({"session": {"timeline_tempo": engine_bpm}});
                    writeln!(out, "{line}").context("writing to stdout")?;
                }
            }
            out.flush().context("writing to stdout")?;
        }
        Ok(())
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
