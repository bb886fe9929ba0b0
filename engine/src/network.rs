//! The transport behind the seam: a [`Participant`] run by the transport's
//! tokio [`Driver`] on the engine worker's runtime, translated to and from
//! [`NetCommand`] / [`NetEvent`].
//!
//! [`EngineWorker::spawn_networked`] binds the control/data port pair, starts
//! the driver and this adapter as tasks on the worker's current-thread
//! runtime, and runs the worker beside them on one thread. The adapter:
//!
//! - `Join` → resolves the address (`ip:port`, `host:port`, or a LAN peer
//!   found by mDNS) and invites it; a session already up is closed first,
//!   and a new display name takes effect (the [`Participant`] is rebuilt on
//!   the same sockets, since AppleMIDI names travel in `IN`/`OK`);
//! - `Invite` → invites one more participant into the current session;
//! - `Leave` → `close` (`BY` to every peer);
//! - `SendMidi` → [`Participant::send`] with each event's local time (the
//!   sample it was played at), so the receiver sees the musician's timing,
//!   not the worker's polling;
//! - `BrowseLan(true)` → advertises this participant and browses by mDNS
//!   ([`jam_transport::discovery`]); `BrowseLan(false)` stops both;
//! - `SendReliable` → [`Participant::send_reliable`] to that peer (frames of
//!   the session document's channel; [`ParticipantEvent::Reliable`] comes
//!   back as [`NetEvent::Reliable`], and clock sync as [`NetEvent::PeerClock`]);
//! - `SetRole` → kept locally: AppleMIDI has no field for it, so roles stay
//!   local until the session document carries them.
//!
//! and reports `Joined`/`Left` as [`NetEvent::PeerJoined`] /
//! [`NetEvent::PeerLeft`] with the peer's AppleMIDI name, remote MIDI as
//! [`NetEvent::Midi`] (sender time mapped onto the local clock by clock sync,
//! local arrival time, recovered flag; RTP-MIDI carries no beat, so `beat` is
//! `None` and the audio thread takes the beat of the mapped sender time on
//! its own timeline), and every [`STATS_INTERVAL`] a [`NetEvent::PeerStats`]
//! per peer from [`Participant::peer_stats`] (RTT median from clock sync,
//! packets expected and lost; recovered and late events are counted by the
//! engine itself).
//!
//! **Two carriers.** The adapter drives any [`Carrier`]: a plain
//! [`Participant`] (sessions by address, above), or a
//! [`jam_transport::relay_client::RelayPeer`] joined through `jamd`
//! ([`start_carrier`]; the CLI's `jam peer --server` makes the join with
//! `jam-join`), whose sessions come from the session's member list, so
//! `Join` and `Invite` are refused there with a reason and `Leave` ends the
//! relayed session. Everything else (MIDI, names, statistics) is the same.
//!
//! **One clock.** The driver stamps arrivals with the [`MonotonicClock`] in
//! [`NetworkConfig::clock`]; the engine's blocks must read the same clock
//! (same origin), or live-mode placement and lateness are meaningless.

use crate::net::{
    ConnectionState, LanPeer, NetCommand, NetEvent, NetPort, PeerNetStats, Role, SessionAddress,
    net_link,
};
use crate::worker::{EngineWorker, WorkerHandle};
use jam_core::{Micros, MonotonicClock, PeerId};
use jam_transport::applemidi::PeerHandle;
use jam_transport::discovery::{Discovery, DiscoveryConfig, DiscoveryEvent, Interfaces};
use jam_transport::driver::{Driver, DriverConfig, DriverError, DriverHandle, Protocol};
use jam_transport::participant::{Participant, ParticipantConfig, ParticipantEvent};
use jam_transport::relay_client::RelayPeer;
use jam_transport::rtp::recv::RecvMessage;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::sync::mpsc;

/// The protocol object behind the adapter: a participant, reached directly
/// or inside something that carries it (the relay peer).
pub trait Carrier: Protocol {
    /// Whether sessions are made by inviting addresses (`Join`, `Invite`).
    const INVITES: bool;
    /// The participant inside.
    fn participant(&mut self) -> &mut Participant;
    /// Ends every session (and for a relay peer, says goodbye to the
    /// relay).
    fn close_all(&mut self, now: Micros);
    /// The device public key of the participant at control address
    /// `control`, where the carrier knows one (a relay member's); a plain
    /// AppleMIDI participant has none.
    fn peer_key(&self, control: SocketAddr) -> Option<[u8; 32]> {
        let _ = control;
        None
    }
}

impl Carrier for Participant {
    const INVITES: bool = true;
    fn participant(&mut self) -> &mut Participant {
        self
    }
    fn close_all(&mut self, now: Micros) {
        self.close(now);
    }
}

impl Carrier for RelayPeer {
    const INVITES: bool = false;
    fn participant(&mut self) -> &mut Participant {
        RelayPeer::participant(self)
    }
    fn close_all(&mut self, now: Micros) {
        self.close(now);
    }
    fn peer_key(&self, control: SocketAddr) -> Option<[u8; 32]> {
        self.member_key(control)
    }
}

/// How often the adapter reports each peer's network figures.
pub const STATS_INTERVAL: Duration = Duration::from_millis(500);

/// How the network side starts.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NetworkConfig {
    /// Control port address to listen on (the data port is the next one
    /// up). Port 0 picks a free consecutive pair.
    pub listen: SocketAddr,
    /// The clock the engine's blocks read (same origin): arrivals and
    /// mapped sender times are stamped on it.
    pub clock: MonotonicClock,
    /// The AppleMIDI session name until a `Join` names another.
    pub name: String,
    /// Seed of the SSRC, tokens and first sequence numbers.
    pub seed: u64,
    /// Interfaces mDNS uses when browsing the LAN.
    pub lan_interfaces: Interfaces,
    /// The mDNS port (5353; another one only for isolated tests).
    pub mdns_port: u16,
}

impl NetworkConfig {
    /// Every IPv4 interface on a free port pair, named `name`.
    pub fn new(clock: MonotonicClock, name: impl Into<String>, seed: u64) -> Self {
        NetworkConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
            clock,
            name: name.into(),
            seed,
            lan_interfaces: Interfaces::All,
            mdns_port: jam_transport::discovery::MDNS_PORT,
        }
    }
}

/// Where the network side listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkInfo {
    /// The bound control port (what another participant invites).
    pub control: SocketAddr,
    /// The bound data port (control + 1).
    pub data: SocketAddr,
}

/// Why the network side could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// The tokio runtime or the worker thread could not be started.
    #[error("cannot start the network runtime")]
    Runtime(#[source] std::io::Error),
    /// Binding the port pair failed.
    #[error("cannot listen on {listen}")]
    Listen {
        /// The address asked for.
        listen: SocketAddr,
        /// The driver's error.
        #[source]
        source: DriverError,
    },
}

impl EngineWorker {
    /// Runs the worker on a new thread (`jam-engine-worker`) with a
    /// current-thread tokio runtime that also runs the transport: the
    /// driver with a [`Participant`] on the port pair `config.listen`, and
    /// the adapter between it and the worker. Binds before returning, so a
    /// port already taken is an error here, and the bound addresses are
    /// known.
    pub fn spawn_networked(
        self,
        config: NetworkConfig,
    ) -> Result<(WorkerHandle, NetworkInfo), NetworkError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(NetworkError::Runtime)?;
        let (link, port) = net_link();
        let (info, task) = rt.block_on(start_task(config, port))?;
        let handle = self
            .spawn_on_then(rt, link, Some(task))
            .map_err(NetworkError::Runtime)?;
        Ok((handle, info))
    }
}

/// Starts the driver and the adapter as tasks on the current tokio runtime,
/// serving `port`. The tasks end when the worker's end of the seam closes
/// (after saying `BY` to every peer).
pub async fn start(config: NetworkConfig, port: NetPort) -> Result<NetworkInfo, NetworkError> {
    Ok(start_task(config, port).await?.0)
}

/// [`start`], also returning the adapter task (it ends after `BY`).
pub async fn start_task(
    config: NetworkConfig,
    port: NetPort,
) -> Result<(NetworkInfo, tokio::task::JoinHandle<()>), NetworkError> {
    let driver_config = DriverConfig {
        ip: config.listen.ip(),
        control_port: config.listen.port(),
        ..DriverConfig::loopback()
    };
    let pconfig = ParticipantConfig::new(config.name.clone(), config.seed);
    let (driver, events) = Driver::spawn(driver_config, config.clock, move |now| {
        Participant::new(pconfig, now)
    })
    .await
    .map_err(|source| NetworkError::Listen {
        listen: config.listen,
        source,
    })?;
    Ok(start_carrier(config, driver, events, port))
}

/// Runs the adapter for a driver already running a [`Carrier`] (a relay
/// peer joined through `jamd`), on the current tokio runtime. `events` are
/// the participant's events (the caller takes the carrier's own, such as
/// relay connection changes, and passes these on). Returns where the
/// driver listens and the adapter task (it ends after closing the
/// carrier's sessions, once the worker's end of the seam closes).
pub fn start_carrier<P: Carrier>(
    config: NetworkConfig,
    driver: Driver<P>,
    events: mpsc::UnboundedReceiver<ParticipantEvent>,
    port: NetPort,
) -> (NetworkInfo, tokio::task::JoinHandle<()>) {
    let info = NetworkInfo {
        control: driver.control_addr(),
        data: driver.data_addr(),
    };
    let adapter = Adapter {
        name: config.name.clone(),
        seed: config.seed,
        generation: 0,
        config,
        handle: driver.handle(),
        info,
        peers: BTreeMap::new(),
        joining: None,
        lan: None,
        lan_peers: BTreeMap::new(),
    };
    let task = tokio::spawn(adapter.run(driver, events, port));
    (info, task)
}

/// A remote participant as the adapter knows it.
struct Remote {
    id: PeerId,
    label: String,
}

/// The adapter task's state.
struct Adapter<P: Carrier> {
    config: NetworkConfig,
    name: String,
    seed: u64,
    /// How many times the participant was rebuilt (new name), to vary the
    /// seed so a restarted participant gets a new SSRC.
    generation: u64,
    handle: DriverHandle<P>,
    info: NetworkInfo,
    peers: BTreeMap<PeerHandle, Remote>,
    /// The address we are inviting, for the connection state.
    joining: Option<String>,
    lan: Option<Discovery>,
    lan_peers: BTreeMap<String, LanPeer>,
}

/// A stable engine id for a remote session: its SSRC and control address
/// (an AppleMIDI participant has no other identity).
fn peer_id(ssrc: u32, control: SocketAddr) -> PeerId {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&ssrc.to_be_bytes());
    b[4..6].copy_from_slice(&control.port().to_be_bytes());
    match control.ip() {
        IpAddr::V4(ip) => b[6..10].copy_from_slice(&ip.octets()),
        IpAddr::V6(ip) => b[6..16].copy_from_slice(&ip.octets()[6..]),
    }
    PeerId(b)
}

impl<P: Carrier> Adapter<P> {
    async fn run(
        mut self,
        driver: Driver<P>,
        mut events: mpsc::UnboundedReceiver<ParticipantEvent>,
        mut port: NetPort,
    ) {
        let mut stats = tokio::time::interval(STATS_INTERVAL);
        stats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        tracing::info!(control = %self.info.control, "network side listening");
        loop {
            tokio::select! {
                cmd = port.commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd, &port.events).await,
                    None => break,
                },
                ev = events.recv() => match ev {
                    Some(ev) => self.event(ev, &port.events).await,
                    None => {
                        let _ = port.events.send(NetEvent::Connection(ConnectionState::Offline)).await;
                        break;
                    }
                },
                found = next_lan_event(&mut self.lan) => self.lan_event(found, &port.events).await,
                _ = stats.tick() => self.stats(&port.events).await,
            }
        }
        // The worker is gone: end every session cleanly.
        tracing::info!("network side closing");
        let _ = driver.call(|p, now| p.close_all(now)).await;
        let _ = driver.shutdown().await;
        if let Some(d) = self.lan.take() {
            d.shutdown();
        }
    }

    async fn command(&mut self, cmd: NetCommand, out: &mpsc::Sender<NetEvent>) {
        match cmd {
            NetCommand::SendMidi(batch) => {
                let r = self
                    .handle
                    .call(move |p, now| {
                        let mut refused = 0usize;
                        for e in batch {
                            if p.participant().send(now, e.sent_at, e.msg).is_err() {
                                refused += 1;
                            }
                        }
                        refused
                    })
                    .await;
                if let Ok(n) = r
                    && n > 0
                {
                    tracing::warn!(refused = n, "the send streams refused events");
                }
            }
            NetCommand::Join { .. } | NetCommand::Invite(_) if !P::INVITES => {
                let why = "this session was joined through jamd: its members come from the \
                           server, not from addresses"
                    .to_string();
                send(out, NetEvent::Connection(ConnectionState::Failed(why))).await;
            }
            NetCommand::Join {
                address,
                display_name,
                key_file,
            } => {
                if key_file.is_some() {
                    tracing::warn!("key files are not used yet: the session is not encrypted");
                }
                self.join(address, display_name, out).await;
            }
            NetCommand::Invite(address) => match self.resolve(&address).await {
                Ok(target) => {
                    if let Ok(Err(e)) = self
                        .handle
                        .call(move |p, now| p.participant().invite(now, target))
                        .await
                    {
                        let why = format!("cannot invite {target}: {e}");
                        send(out, NetEvent::Connection(ConnectionState::Failed(why))).await;
                    }
                }
                Err(why) => send(out, NetEvent::Connection(ConnectionState::Failed(why))).await,
            },
            NetCommand::Leave => {
                self.joining = None;
                let _ = self.handle.call(|p, now| p.close_all(now)).await;
            }
            NetCommand::SetRole(role) => {
                tracing::debug!(role = role.name(), "role kept locally (no AppleMIDI field)");
            }
            NetCommand::BrowseLan(on) => self.browse(on, out).await,
            NetCommand::SendReliable { peer, frame } => {
                let Some(h) = self.handle_of(peer) else {
                    return;
                };
                let _ = self
                    .handle
                    .call(move |p, _| p.participant().send_reliable(h, frame))
                    .await;
            }
        }
    }

    async fn join(
        &mut self,
        address: SessionAddress,
        display_name: String,
        out: &mpsc::Sender<NetEvent>,
    ) {
        let target = match self.resolve(&address).await {
            Ok(a) => a,
            Err(why) => {
                send(out, NetEvent::Connection(ConnectionState::Failed(why))).await;
                return;
            }
        };
        // One session at a time: leave the current one, and take the new
        // name (it travels in the invitation).
        let _ = self.handle.call(|p, now| p.close_all(now)).await;
        let name = display_name.trim().to_string();
        if !name.is_empty() && name != self.name {
            self.name = name;
            self.generation += 1;
            let config =
                ParticipantConfig::new(self.name.clone(), self.seed.wrapping_add(self.generation));
            let _ = self
                .handle
                .call(move |p, now| *p.participant() = Participant::new(config, now))
                .await;
        }
        self.joining = Some(address.to_string());
        match self
            .handle
            .call(move |p, now| p.participant().invite(now, target))
            .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                self.joining = None;
                let why = format!("cannot invite {target}: {e}");
                send(out, NetEvent::Connection(ConnectionState::Failed(why))).await;
            }
            Err(_) => {}
        }
    }

    async fn resolve(&self, address: &SessionAddress) -> Result<SocketAddr, String> {
        match address {
            SessionAddress::Direct(a) => Ok(*a),
            SessionAddress::Host { host, port } => {
                let mut addrs = tokio::net::lookup_host((host.as_str(), *port))
                    .await
                    .map_err(|e| format!("cannot resolve {host}: {e}"))?;
                addrs
                    .find(SocketAddr::is_ipv4)
                    .ok_or_else(|| format!("{host} has no IPv4 address"))
            }
            SessionAddress::Lan(name) => self
                .lan_peers
                .get(name)
                .map(|p| p.addr)
                .ok_or_else(|| format!("{name} is not on this network (browse first)")),
        }
    }

    async fn event(&mut self, ev: ParticipantEvent, out: &mpsc::Sender<NetEvent>) {
        match ev {
            ParticipantEvent::Joined {
                peer,
                name,
                ssrc,
                control,
                ..
            } => {
                let label = name.unwrap_or_else(|| format!("{ssrc:08x}"));
                let id = peer_id(ssrc, control);
                let key = self
                    .handle
                    .call(move |p, _| p.peer_key(control))
                    .await
                    .ok()
                    .flatten();
                tracing::info!(%control, name = %label, "joined");
                self.peers.insert(
                    peer,
                    Remote {
                        id,
                        label: label.clone(),
                    },
                );
                let state = match self.joining.take() {
                    Some(a) => a,
                    None => format!("invited by {label}"),
                };
                send(out, NetEvent::Connection(ConnectionState::Connected(state))).await;
                send(
                    out,
                    NetEvent::PeerJoined {
                        peer: id,
                        name: label,
                        role: Role::Auto,
                        address: Some(control),
                        key,
                    },
                )
                .await;
            }
            ParticipantEvent::Left { peer, reason } => {
                if let Some(r) = self.peers.remove(&peer) {
                    tracing::info!(name = %r.label, ?reason, "left");
                    let reason = Some(format!("{reason:?}"));
                    send(out, NetEvent::PeerLeft { peer: r.id, reason }).await;
                }
                if self.peers.is_empty() && self.joining.is_none() {
                    send(out, NetEvent::Connection(ConnectionState::Idle)).await;
                }
            }
            ParticipantEvent::InvitationRejected { control, .. } => {
                self.joining = None;
                let why = format!("{control} rejected our invitation");
                send(out, NetEvent::Connection(ConnectionState::Failed(why))).await;
            }
            ParticipantEvent::InvitationFailed {
                control, reason, ..
            } => {
                self.joining = None;
                let why = format!("inviting {control} failed ({reason:?})");
                send(out, NetEvent::Connection(ConnectionState::Failed(why))).await;
            }
            ParticipantEvent::Midi {
                peer,
                event,
                local_time,
                arrived,
            } => {
                let Some(r) = self.peers.get(&peer) else {
                    return;
                };
                // The engine plays channel messages; SysEx has no place in
                // its fixed-size events.
                let RecvMessage::Short(msg) = event.message else {
                    return;
                };
                send(
                    out,
                    NetEvent::Midi {
                        peer: r.id,
                        msg,
                        sent_at: local_time,
                        beat: None,
                        arrival: arrived,
                        recovered: event.recovered,
                    },
                )
                .await;
            }
            ParticipantEvent::Reliable { peer, bytes } => {
                if let Some(r) = self.peers.get(&peer) {
                    send(out, NetEvent::Reliable { peer: r.id, bytes }).await;
                }
            }
            ParticipantEvent::ClockUpdated { peer, clock, rtt } => {
                if let Some(r) = self.peers.get(&peer) {
                    let ev = NetEvent::PeerClock {
                        peer: r.id,
                        local_minus_remote_us: clock.offset_ticks.saturating_mul(100),
                        rtt_us: rtt.min.as_micros() as u64,
                    };
                    send(out, ev).await;
                }
            }
            _ => {}
        }
    }

    /// The session handle of the peer the engine calls `id`.
    fn handle_of(&self, id: PeerId) -> Option<PeerHandle> {
        self.peers.iter().find(|(_, r)| r.id == id).map(|(h, _)| *h)
    }

    async fn stats(&mut self, out: &mpsc::Sender<NetEvent>) {
        if self.peers.is_empty() {
            return;
        }
        let handles: Vec<PeerHandle> = self.peers.keys().copied().collect();
        let Ok(figures) = self
            .handle
            .call(move |p, _| {
                handles
                    .into_iter()
                    .filter_map(|h| Some((h, p.participant().peer_stats(h)?)))
                    .collect::<Vec<_>>()
            })
            .await
        else {
            return;
        };
        for (h, s) in figures {
            let Some(r) = self.peers.get(&h) else {
                continue;
            };
            let stats = PeerNetStats {
                rtt: s.rtt.map(|r| r.median),
                packets_expected: s.recv.packets + s.recv.lost,
                packets_lost: s.recv.lost,
            };
            send(out, NetEvent::PeerStats { peer: r.id, stats }).await;
        }
    }

    async fn browse(&mut self, on: bool, out: &mpsc::Sender<NetEvent>) {
        if !on {
            if let Some(d) = self.lan.take() {
                d.shutdown();
            }
            self.lan_peers.clear();
            send(out, NetEvent::LanPeers(Vec::new())).await;
            return;
        }
        if self.lan.is_some() {
            return;
        }
        let mut dc = DiscoveryConfig::new(self.name.clone(), self.info.control.port());
        dc.interfaces = self.config.lan_interfaces;
        dc.mdns_port = self.config.mdns_port;
        if !self.info.control.ip().is_unspecified() {
            dc.addresses = vec![self.info.control.ip()];
        }
        match Discovery::start(dc) {
            Ok(d) => self.lan = Some(d),
            Err(e) => tracing::warn!("LAN discovery unavailable: {e}"),
        }
    }

    async fn lan_event(&mut self, ev: Option<DiscoveryEvent>, out: &mpsc::Sender<NetEvent>) {
        match ev {
            Some(DiscoveryEvent::PeerFound(p)) => {
                let ip = p
                    .addresses
                    .iter()
                    .find(|a| a.is_ipv4())
                    .or(p.addresses.first());
                if let Some(ip) = ip {
                    let addr = SocketAddr::new(*ip, p.port);
                    self.lan_peers
                        .insert(p.name.clone(), LanPeer { name: p.name, addr });
                }
            }
            Some(DiscoveryEvent::PeerRemoved { name, .. }) => {
                self.lan_peers.remove(&name);
            }
            Some(_) => return,
            None => {
                // The daemon stopped: stop browsing.
                self.lan = None;
            }
        }
        let list = self.lan_peers.values().cloned().collect();
        send(out, NetEvent::LanPeers(list)).await;
    }
}

async fn next_lan_event(lan: &mut Option<Discovery>) -> Option<DiscoveryEvent> {
    match lan {
        Some(d) => d.next_event().await,
        None => std::future::pending().await,
    }
}

/// Hands an event to the worker; waits when its queue is full (the worker
/// drains it every millisecond), and gives up silently once it is gone.
async fn send(out: &mpsc::Sender<NetEvent>, ev: NetEvent) {
    let _ = out.send(ev).await;
}

/// The mapping the adapter uses from a remote session to an engine
/// [`PeerId`], for tests and tools that correlate the two.
pub fn remote_peer_id(ssrc: u32, control: SocketAddr) -> PeerId {
    peer_id(ssrc, control)
}
