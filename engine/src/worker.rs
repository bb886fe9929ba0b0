//! [`EngineWorker`]: the network half of the engine, on its own thread with
//! a small tokio runtime.
//!
//! The worker moves events between the audio thread's rings and the transport
//! seam ([`crate::net`]):
//!
//! - every [`WORKER_TICK`] it drains the outgoing ring (stamped host events)
//!   into one [`NetCommand::SendMidi`], and announces a changed local role;
//! - each [`NetEvent`] updates the peer table (slots, names, roles, figures)
//!   and remote MIDI goes into the incoming ring with the sender's slot;
//! - user commands ([`EngineControl`]) become [`NetCommand`]s;
//! - while a capture runs ([`EngineControl::start_capture`]), every event
//!   sent and received goes into it, and it is ticked every [`WORKER_TICK`]
//!   (see [`crate::capture`]); it is finished when the worker stops;
//! - every tick it follows the audio thread's record switch: on, it starts
//!   a capture in the [`CaptureTarget`]'s folder; off, it finishes it.
//!
//! - remote events and the time-driven work (predictions, stuck notes, the
//!   coherent schedule-ahead) go through [`Timing`] per latency mode, and
//!   leave as decided events ([`crate::timing::Placed`]); the worker's clock
//!   is the time of the audio thread's latest block. Coherent
//!   schedule-ahead changes travel in the session document when it is
//!   enabled: this engine's proposals are written into it, and the
//!   changes it resolves (everyone's) are applied to [`Timing`].
//!
//! - [`EngineControl::switch_network`] hands the worker another network
//!   side (a new [`NetLink`]) while it runs: the old link is dropped (its
//!   adapter says goodbye to every peer and stops), the peer table empties,
//!   and the rings to the audio thread stay as they are. The plugin joins a
//!   session through `jamd` this way, on the worker's own runtime
//!   ([`EngineControl::runtime`]).
//!
//! Everything that may allocate, block or log happens here, never on the
//! audio thread. The worker never waits on the network side either: a full
//! command queue drops the command and counts it.

use crate::capture::{
    self, CaptureStatus, CaptureTarget, Recording, RecordingError, RecordingSummary,
};
use crate::net::{ConnectionState, NetCommand, NetEvent, NetLink, Role, SessionAddress};
use crate::rt::Inbound;
use crate::session_sync::{SessionRuntime, SessionSetup, SessionView, SharedSession};
use crate::stats::{CounterView, PeerTable, PeerView};
use crate::timeline::Timeline;
use crate::timing::{Placed, Timing};
use crate::{AgentSource, MAX_PEERS, RemoteEvent, Shared, StampedEvent};
use jam_core::{Beats, Micros, MonotonicClock, PeerId};
use jam_session_crdt::{Role as SessionRole, RoleAssignment};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How often the worker drains the outgoing ring. The audio thread cannot
/// wake the worker without a syscall, so the worker polls; this bounds the
/// added send delay.
pub const WORKER_TICK: Duration = Duration::from_millis(1);

/// How long a stopping worker waits for the network side to end its
/// sessions (`BY` to every peer) before its runtime goes away.
pub const NET_CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

/// What the user interface (or the CLI) asks of the worker.
#[derive(Debug)]
enum Control {
    Join {
        address: SessionAddress,
        display_name: String,
        key_file: Option<PathBuf>,
    },
    Invite(SessionAddress),
    Leave,
    BrowseLan(bool),
    Timeline(Timeline),
    StartCapture(Box<Recording>),
    CaptureTarget(CaptureTarget, MonotonicClock),
    Session(SessionControl),
    FinishCapture(oneshot::Sender<Option<Result<RecordingSummary, RecordingError>>>),
    LoadAgent(AgentSource),
    AgentModel(Vec<u8>),
    SwitchNet {
        link: NetLink,
        task: Option<tokio::task::JoinHandle<()>>,
    },
    Shutdown,
}

/// Commands for the session document (see [`crate::session_sync`]).
#[derive(Debug)]
enum SessionControl {
    Enable(Box<SessionRuntime>),
    ChangeTempo {
        bpm: f64,
        at: Option<Beats>,
        reply: oneshot::Sender<Result<Beats, String>>,
    },
    SetRole(SessionRole, Option<RoleAssignment>),
    Share(SharedSession),
}

/// What [`EngineControl::finish_capture`] answers: `None` when no capture
/// was running, else how it ended.
pub type CaptureDone = oneshot::Receiver<Option<Result<RecordingSummary, RecordingError>>>;

/// Where the record switch stands on the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Switch {
    /// Off, or on but not yet seen.
    Off,
    /// On, and the running capture is the switch's.
    Recording,
    /// On, but nothing records (the capture could not start, a write error
    /// ended it, or it was finished by a command): waits for the switch to
    /// go off.
    Held,
}

/// A cheap, cloneable handle for the user interface and the CLI: commands
/// to the worker and read access to the shared figures.
///
/// Thread-safe: yes. Realtime-safe: no (commands allocate).
#[derive(Debug, Clone)]
pub struct EngineControl {
    tx: mpsc::UnboundedSender<Control>,
    shared: Arc<Shared>,
}

impl EngineControl {
    fn send(&self, c: Control) {
        // A closed channel means the worker has stopped: nothing to do.
        let _ = self.tx.send(c);
    }

    /// Joins the session at `address` as `display_name`.
    pub fn join(&self, address: SessionAddress, display_name: &str, key_file: Option<PathBuf>) {
        self.send(Control::Join {
            address,
            display_name: display_name.to_string(),
            key_file,
        });
    }

    /// Invites one more participant into the current session.
    pub fn invite(&self, address: SessionAddress) {
        self.send(Control::Invite(address));
    }

    /// Leaves the session. Its participants leave the peer table as the
    /// network side reports them gone.
    pub fn leave(&self) {
        self.send(Control::Leave);
    }

    /// Starts or stops browsing the LAN for peers.
    pub fn browse_lan(&self, on: bool) {
        self.send(Control::BrowseLan(on));
    }

    /// Replaces the session timeline used while the host does not play.
    ///
    /// Seam: the session document's snapshots call this when the tempo
    /// timeline changes.
    pub fn set_timeline(&self, timeline: Timeline) {
        self.send(Control::Timeline(timeline));
    }

    /// Starts recording every event sent and received into `recording`
    /// (finishing a capture already running first). The worker finishes it
    /// when it stops, or on [`EngineControl::finish_capture`]. Commands
    /// from this handle are carried out in order, so a capture started
    /// before a join or an invite records the whole session; events the
    /// network side delivered before it are not recorded.
    pub fn start_capture(&self, recording: Recording) {
        self.send(Control::StartCapture(Box::new(recording)));
    }

    /// Sets where the record switch ([`crate::EngineRt::set_record`])
    /// writes its captures and for whom; takes effect at the next capture.
    /// `clock` must be the clock the engine's blocks read (every record's
    /// time is on it).
    pub fn set_capture_target(&self, target: CaptureTarget, clock: MonotonicClock) {
        self.send(Control::CaptureTarget(target, clock));
    }

    /// The capture as the worker last saw it: recording or not, the file,
    /// its event count, and why the last one could not start or ended.
    pub fn capture_status(&self) -> CaptureStatus {
        self.shared
            .capture
            .lock()
            .map(|v| v.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Finishes the running capture (index, chunk count, sync). A capture
    /// the record switch started is not started again until the switch
    /// goes off and on. The answer
    /// comes on the returned channel (`blocking_recv` outside a runtime);
    /// a stopped worker drops the sender, which reads as an error.
    pub fn finish_capture(&self) -> CaptureDone {
        let (tx, rx) = oneshot::channel();
        self.send(Control::FinishCapture(tx));
        rx
    }

    /// Turns the session document on: the worker founds it when a first
    /// participant joins without this engine having joined or invited
    /// anyone, and otherwise starts as a replica that receives it; it syncs
    /// it with every participant over the reliable side channel and hands
    /// its tempo timeline to the audio thread. `clock` must be the clock
    /// the engine's blocks read; `me` is this participant's identity.
    pub fn enable_session(&self, setup: SessionSetup, me: PeerId, clock: MonotonicClock) {
        let rt = SessionRuntime::new(setup, me, clock);
        self.send(Control::Session(SessionControl::Enable(Box::new(rt))));
    }

    /// The next network handed over with [`EngineControl::switch_network`]
    /// is the `jamd` session `shared`: the worker founds its document with
    /// the genesis every member writes ([`SharedSession`]). Call it before
    /// the switch (commands are handled in order, so no participant of the
    /// new network is met first). A document of another session is left
    /// for a new one; the document of this same session is kept.
    pub fn share_session(&self, shared: SharedSession) {
        self.send(Control::Session(SessionControl::Share(shared)));
    }

    /// Proposes a tempo change in the session document, at beat `at` or
    /// (`None`) at the next bar boundary far enough ahead for every peer
    /// to hear of it first. The answer (the beat, or why not) comes on the
    /// returned channel.
    pub fn change_tempo(
        &self,
        bpm: f64,
        at: Option<Beats>,
    ) -> oneshot::Receiver<Result<Beats, String>> {
        let (reply, rx) = oneshot::channel();
        self.send(Control::Session(SessionControl::ChangeTempo {
            bpm,
            at,
            reply,
        }));
        rx
    }

    /// Sets (`Some`) or removes one of this participant's roles in the
    /// session document.
    pub fn set_session_role(&self, role: SessionRole, assignment: Option<RoleAssignment>) {
        self.send(Control::Session(SessionControl::SetRole(role, assignment)));
    }

    /// The session document as the worker last saw it.
    pub fn session(&self) -> SessionView {
        self.shared
            .session
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Loads the player's agent for predictive mode from a sealed
    /// `.agent` file (see [`crate::agent`]); a failure is logged and the
    /// previous agent, if any, stays.
    pub fn load_agent(&self, source: AgentSource) {
        self.send(Control::LoadAgent(source));
    }

    /// Uses these (unsealed) agent model bytes for predictive mode; bad
    /// bytes are logged and ignored.
    pub fn set_agent_model(&self, bytes: Vec<u8>) {
        self.send(Control::AgentModel(bytes));
    }

    /// Replaces the worker's network side with `link` (the worker's end
    /// of a fresh [`crate::net::net_link`], whose other end serves another
    /// carrier) without touching the audio thread: the old link is dropped,
    /// so its adapter ends its sessions and stops; the peers it reported
    /// leave the peer table (their held notes are released on the audio
    /// thread as for any departure); the connection state becomes idle until
    /// the new side reports; the local role is announced to it. `task` is
    /// the new side's task, if any: a stopping worker waits for it up to
    /// [`NET_CLOSE_TIMEOUT`] as for the first one.
    pub fn switch_network(&self, link: NetLink, task: Option<tokio::task::JoinHandle<()>>) {
        self.send(Control::SwitchNet { link, task });
    }

    /// The tokio runtime the worker runs on, once it runs (`None` before,
    /// or for a worker run with [`EngineWorker::run`] on a runtime of the
    /// caller's). A network side to hand over with
    /// [`EngineControl::switch_network`] is started there, so that it runs
    /// on the worker's thread and stops with it. Runtimes the engine builds
    /// have timers and sockets; one handed to [`EngineWorker::spawn_on`]
    /// has what its builder enabled.
    pub fn runtime(&self) -> Option<tokio::runtime::Handle> {
        self.shared.runtime.get().cloned()
    }

    /// The participants with their figures.
    pub fn peers(&self) -> Vec<PeerView> {
        self.shared.peers.snapshot()
    }

    /// The connection state.
    pub fn connection(&self) -> ConnectionState {
        self.shared.peers.connection()
    }

    /// Peers seen on the LAN.
    pub fn lan_peers(&self) -> Vec<crate::net::LanPeer> {
        self.shared.peers.lan_peers()
    }

    /// The engine's drop and traffic counters.
    pub fn counters(&self) -> CounterView {
        self.shared.counters.view()
    }

    /// The peer table itself (for callers that poll it often).
    pub fn peer_table(&self) -> &PeerTable {
        &self.shared.peers
    }
}

/// The worker half. Create with [`crate::Engine::new`], then
/// [`EngineWorker::spawn`] it (or [`EngineWorker::run`] it on a runtime you
/// own).
#[derive(Debug)]
pub struct EngineWorker {
    from_rt: rtrb::Consumer<StampedEvent>,
    to_rt: rtrb::Producer<Inbound>,
    shared: Arc<Shared>,
    control_tx: mpsc::UnboundedSender<Control>,
    control_rx: mpsc::UnboundedReceiver<Control>,
    /// Slots of present peers (mirror of the peer table, no lock per event).
    slots: HashMap<PeerId, u8>,
    role: Role,
    /// The session timeline (the beat of received events without one).
    timeline: Timeline,
    /// The capture being written, if any.
    recording: Option<Recording>,
    /// The session document, once enabled.
    session: Option<Box<SessionRuntime>>,
    /// Timing decisions per latency mode.
    timing: Timing,
    /// Scratch for decided events (reused).
    placed: Vec<Placed>,
    /// The agent to load when the worker starts.
    agent: Option<AgentSource>,
    /// Tasks of the network sides handed over so far; a stopping worker
    /// waits for them to say goodbye.
    net_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Where the record switch writes captures, and the blocks' clock.
    capture_target: Option<(CaptureTarget, MonotonicClock)>,
    /// The record switch as the worker follows it.
    switch: Switch,
    /// The local participant (the recorder of switched captures).
    local_peer: PeerId,
}

/// A running worker thread. Dropping it stops and joins the thread.
#[derive(Debug)]
pub struct WorkerHandle {
    control: EngineControl,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// The control handle.
    pub fn control(&self) -> EngineControl {
        self.control.clone()
    }

    /// Stops the worker and waits for its thread.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        tracing::debug!("stopping the engine worker");
        self.control.send(Control::Shutdown);
        if let Some(t) = self.thread.take() {
            // A panicked worker has nothing left to clean up.
            let _ = t.join();
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

impl EngineWorker {
    pub(crate) fn new(
        from_rt: rtrb::Consumer<StampedEvent>,
        to_rt: rtrb::Producer<Inbound>,
        shared: Arc<Shared>,
        agent: Option<AgentSource>,
        local_peer: PeerId,
    ) -> Self {
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        EngineWorker {
            from_rt,
            to_rt,
            shared,
            control_tx,
            control_rx,
            slots: HashMap::new(),
            role: Role::Auto,
            timeline: Timeline::default(),
            recording: None,
            session: None,
            timing: Timing::new(),
            placed: Vec::new(),
            agent,
            net_tasks: Vec::new(),
            capture_target: None,
            switch: Switch::Off,
            local_peer,
        }
    }

    /// A control handle (also available from the [`WorkerHandle`]).
    pub fn control(&self) -> EngineControl {
        EngineControl {
            tx: self.control_tx.clone(),
            shared: self.shared.clone(),
        }
    }

    /// Runs the worker on a new thread named `jam-engine-worker` with a
    /// current-thread tokio runtime (timers and sockets, so that a network
    /// side can be started there later, see [`EngineControl::runtime`]),
    /// connected to the network side by `net`.
    pub fn spawn(self, net: NetLink) -> std::io::Result<WorkerHandle> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        self.spawn_on(rt, net)
    }

    /// Runs the worker on a new thread that drives `rt` (and whatever tasks
    /// were already spawned on it, such as the transport and anything that
    /// sits between it and `net`: `jam peer` watches the seam this way).
    pub fn spawn_on(
        self,
        rt: tokio::runtime::Runtime,
        net: NetLink,
    ) -> std::io::Result<WorkerHandle> {
        self.spawn_on_then(rt, net, None)
    }

    /// [`EngineWorker::spawn_on`]; when the worker stops (its end of the
    /// seam closes), waits up to [`NET_CLOSE_TIMEOUT`] for `network` (the
    /// transport's task) to say goodbye before the runtime goes away.
    pub fn spawn_on_then(
        mut self,
        rt: tokio::runtime::Runtime,
        net: NetLink,
        network: Option<tokio::task::JoinHandle<()>>,
    ) -> std::io::Result<WorkerHandle> {
        let control = self.control();
        self.net_tasks.extend(network);
        let _ = self.shared.runtime.set(rt.handle().clone());
        let thread = std::thread::Builder::new()
            .name("jam-engine-worker".into())
            .spawn(move || rt.block_on(self.run(net)))?;
        Ok(WorkerHandle {
            control,
            thread: Some(thread),
        })
    }

    /// The worker loop; returns after [`WorkerHandle::stop`] (a shutdown
    /// command), draining the outgoing ring one last time and waiting up to
    /// [`NET_CLOSE_TIMEOUT`] for the tasks of network sides handed over
    /// with [`EngineControl::switch_network`].
    pub async fn run(mut self, mut net: NetLink) {
        let mut tick = tokio::time::interval(WORKER_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut net_open = true;
        if let Some(source) = self.agent.take() {
            self.load_agent(&source);
        }
        loop {
            tokio::select! {
                ev = net.events.recv(), if net_open => match ev {
                    Some(ev) => self.handle_net(ev),
                    None => {
                        net_open = false;
                        self.shared.peers.set_connection(ConnectionState::Offline);
                    }
                },
                c = self.control_rx.recv() => match c {
                    None | Some(Control::Shutdown) => break,
                    Some(Control::SwitchNet { link, task }) => {
                        self.switch_net(&mut net, link, task);
                        net_open = true;
                    }
                    Some(c) => self.handle_control(c, &net),
                },
                _ = tick.tick() => {
                    self.flush(&net);
                    self.session_tick(&net);
                    self.tick_timing();
                    if let Some(r) = &mut self.recording {
                        r.tick();
                    }
                    self.follow_record_switch();
                }
            }
        }
        self.flush(&net);
        // Closing our end of the seam tells the network side to say goodbye.
        drop(net);
        let tasks = std::mem::take(&mut self.net_tasks);
        let _ = tokio::time::timeout(NET_CLOSE_TIMEOUT, async {
            for t in tasks {
                let _ = t.await;
            }
        })
        .await;
        self.end_capture();
    }

    /// Finishes the running capture, if any, logs how it ended and shows it
    /// in the status.
    fn end_capture(&mut self) {
        let Some(done) = self.finish_capture() else {
            return;
        };
        self.show_finished(&done);
    }

    fn show_finished(&self, done: &Result<RecordingSummary, RecordingError>) {
        let mut status = self.capture_status();
        status.recording = false;
        match done {
            Ok(s) => {
                tracing::info!(
                    path = %s.path.display(),
                    events = s.stats.midi_events,
                    "capture finished"
                );
                status.events = s.stats.midi_events;
            }
            Err(e) => {
                tracing::error!("{e}");
                status.error = Some(e.to_string());
            }
        }
    }

    /// Hands over to another network side: what the audio thread played
    /// goes out the old one first, then the old side is dropped and its
    /// peers leave.
    fn switch_net(
        &mut self,
        net: &mut NetLink,
        link: NetLink,
        task: Option<tokio::task::JoinHandle<()>>,
    ) {
        self.flush(net);
        self.handle_net(NetEvent::Connection(ConnectionState::Idle));
        *net = link;
        self.net_tasks.retain(|t| !t.is_finished());
        self.net_tasks.extend(task);
        self.command(net, NetCommand::SetRole(self.role));
    }

    fn capture_status(&self) -> std::sync::MutexGuard<'_, CaptureStatus> {
        // A poisoned lock only means a reader panicked; the data is plain.
        self.shared
            .capture
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Starts or finishes the switch's capture as the audio thread's record
    /// switch says, and shows the running capture's count.
    fn follow_record_switch(&mut self) {
        let on = self.shared.record.load(Ordering::Relaxed);
        match (on, self.switch) {
            (true, Switch::Off) => {
                let tempo = self.timeline.bpm();
                let mut rng = rand_core::UnwrapErr(rand::rngs::SysRng);
                let document_name = self.session.as_ref().and_then(|s| s.session.name());
                let created = match &self.capture_target {
                    Some((target, clock)) => Recording::create_in(
                        target,
                        document_name.as_deref(),
                        self.local_peer,
                        tempo,
                        *clock,
                        &mut rng,
                    ),
                    None => Err(RecordingError::NoFolder),
                };
                match created {
                    Ok(r) => {
                        tracing::info!(path = %r.path().display(), "capture started");
                        self.install_capture(r);
                        self.switch = Switch::Recording;
                    }
                    Err(e) => {
                        tracing::error!("cannot start the capture: {e}");
                        self.capture_status().error = Some(e.to_string());
                        self.switch = Switch::Held;
                    }
                }
            }
            (false, Switch::Recording) => {
                self.end_capture();
                self.switch = Switch::Off;
            }
            (false, Switch::Held) => self.switch = Switch::Off,
            (true, Switch::Recording) if self.recording.as_ref().is_some_and(Recording::failed) => {
                // A write error (a full disk) ended it: close what is written
                // and say so.
                let why = self.recording.as_ref().and_then(Recording::failure);
                self.end_capture();
                self.capture_status().error = why;
                self.switch = Switch::Held;
            }
            _ => {}
        }
        if let Some(r) = &self.recording {
            let failure = r.failure();
            let events = r.stats().midi_events;
            let mut status = self.capture_status();
            match failure {
                None => {
                    status.recording = true;
                    status.events = events;
                }
                // A capture started by a command stays until it is finished
                // (its finisher gets the error); the status says it stopped.
                Some(why) => {
                    status.recording = false;
                    if status.error.is_none() {
                        status.error = Some(why);
                    }
                }
            }
        }
    }

    /// Makes `r` the running capture (finishing one already running), with
    /// the names of the participants already here and the session document
    /// so far.
    fn install_capture(&mut self, mut r: Recording) {
        self.end_capture();
        *self.capture_status() = CaptureStatus {
            recording: true,
            path: Some(r.path().to_path_buf()),
            events: 0,
            error: None,
        };
        let beat = self.timeline.beat_at(jam_core::Clock::now(r.clock()));
        for p in self.shared.peers.snapshot() {
            r.peer_name(p.peer, &p.name, beat);
        }
        if let Some(s) = &mut self.session {
            s.record_document(&mut r);
        }
        self.recording = Some(r);
    }

    fn load_agent(&mut self, source: &AgentSource) {
        match crate::agent::load_agent(source) {
            Ok(bytes) => self.set_model(bytes),
            Err(e) => tracing::error!("{e}"),
        }
    }

    fn set_model(&mut self, bytes: Vec<u8>) {
        if let Err(e) = self.timing.set_model(bytes) {
            tracing::error!("agent model: {e}");
        }
    }

    /// The latency mode and interval of the audio thread's latest block.
    fn placement(&self) -> (jam_core::LatencyMode, Beats) {
        let (mode, interval) =
            crate::decode_placement(self.shared.placement.load(Ordering::Relaxed));
        (mode, Beats::from_beats(i64::from(interval)))
    }

    /// Time-driven timing work at the audio thread's latest block time.
    fn tick_timing(&mut self) {
        self.shared.counters.ticks.fetch_add(1, Ordering::Relaxed);
        let now = self.shared.audio_now.load(Ordering::Relaxed);
        if now == 0 {
            return; // no block processed yet
        }
        let (mode, _) = self.placement();
        let mut placed = std::mem::take(&mut self.placed);
        self.timing.handle_tick(
            mode,
            &self.timeline,
            Micros(now),
            &mut placed,
            &self.shared.peers,
        );
        for p in placed.drain(..) {
            self.push_to_rt(Inbound::Placed(p));
        }
        self.placed = placed;
        self.coherent_ahead(mode, Micros(now));
    }

    /// The coherent schedule-ahead: with a session document, this engine's
    /// proposal goes into the document and every change the document holds
    /// (anyone's) is applied, so every engine holds the same set; without
    /// one, the engine applies its own proposals.
    fn coherent_ahead(&mut self, mode: jam_core::LatencyMode, now: Micros) {
        let coherent = mode == jam_core::LatencyMode::Coherent;
        let changes = match &mut self.session {
            None => {
                if coherent {
                    self.timing.apply_own_ahead(&self.timeline, now);
                }
                return;
            }
            Some(s) => {
                if coherent
                    && s.session.can_propose_ahead()
                    && let Some(c) = self.timing.propose_ahead(&self.timeline, now)
                    && let Err(e) = s.session.propose_ahead(c)
                {
                    tracing::warn!("cannot propose a schedule-ahead change: {e}");
                }
                s.session.take_new_ahead()
            }
        };
        for c in changes {
            if let Err(e) = self.timing.apply_ahead(&self.timeline, c) {
                tracing::warn!("schedule-ahead change refused: {e}");
            }
        }
    }

    fn finish_capture(&mut self) -> Option<Result<RecordingSummary, RecordingError>> {
        self.recording.take().map(Recording::finish)
    }

    fn command(&self, net: &NetLink, cmd: NetCommand) {
        if net.commands.try_send(cmd).is_err() {
            self.shared
                .counters
                .dropped_net_commands
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Drains the outgoing ring into one send command; announces a new role.
    fn flush(&mut self, net: &NetLink) {
        let n = self.from_rt.slots();
        if n > 0 {
            let mut batch = Vec::with_capacity(n);
            while let Ok(e) = self.from_rt.pop() {
                if let Some(r) = &mut self.recording {
                    r.sent(&e);
                }
                batch.push(e);
            }
            self.shared
                .counters
                .sent
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            self.command(net, NetCommand::SendMidi(batch));
        }
        let role = Role::from_index(self.shared.local_role.load(Ordering::Relaxed));
        if role != self.role {
            self.role = role;
            self.command(net, NetCommand::SetRole(role));
        }
    }

    /// Session timers and frames; a new timeline goes to the audio thread.
    fn session_tick(&mut self, net: &NetLink) {
        let Some(s) = &mut self.session else { return };
        let (frames, timeline) = s.tick(self.recording.as_mut(), &self.shared.session);
        for cmd in frames {
            self.command(net, cmd);
        }
        if let Some(t) = timeline {
            self.timeline = t;
            self.push_to_rt(Inbound::Timeline(t));
        }
    }

    fn session_control(&mut self, c: SessionControl) {
        let now = self.session.as_ref().map(|s| s.now());
        match (c, &mut self.session, now) {
            (SessionControl::Enable(rt), _, _) => self.session = Some(rt),
            (SessionControl::ChangeTempo { bpm, at, reply }, Some(s), Some(now)) => {
                let _ = reply.send(s.session.change_tempo(now, bpm, at));
            }
            (SessionControl::ChangeTempo { reply, .. }, _, _) => {
                let _ = reply.send(Err("the session document is not enabled".into()));
            }
            (SessionControl::SetRole(role, a), Some(s), _) => {
                if let Err(e) = s.session.set_role(role, a) {
                    tracing::warn!("cannot set the role: {e}");
                }
            }
            (SessionControl::SetRole(..), None, _) => {}
            (SessionControl::Share(shared), Some(s), _) => s.session.share(shared),
            (SessionControl::Share(_), None, _) => {
                tracing::warn!("a shared session without a session document: not shared");
            }
        }
    }

    fn handle_control(&mut self, c: Control, net: &NetLink) {
        if let (Control::Join { .. } | Control::Invite(_), Some(s)) = (&c, &mut self.session) {
            // Joining someone: their document is the session.
            s.session.start_replica();
        }
        match c {
            Control::Session(c) => self.session_control(c),
            Control::Join {
                address,
                display_name,
                key_file,
            } => {
                self.shared
                    .peers
                    .set_connection(ConnectionState::Connecting(address.to_string()));
                self.command(
                    net,
                    NetCommand::Join {
                        address,
                        display_name,
                        key_file,
                    },
                );
                // Tell the session our role once we are in.
                self.command(net, NetCommand::SetRole(self.role));
            }
            Control::Invite(address) => self.command(net, NetCommand::Invite(address)),
            Control::Leave => {
                self.command(net, NetCommand::Leave);
                self.shared.peers.set_connection(ConnectionState::Idle);
            }
            Control::BrowseLan(on) => self.command(net, NetCommand::BrowseLan(on)),
            Control::Timeline(t) => {
                self.timeline = t;
                self.push_to_rt(Inbound::Timeline(t));
            }
            Control::StartCapture(r) => {
                if self.switch == Switch::Recording {
                    self.switch = Switch::Held;
                }
                self.install_capture(*r);
            }
            Control::CaptureTarget(t, clock) => self.capture_target = Some((t, clock)),
            Control::FinishCapture(reply) => {
                // What the audio thread played up to now goes in first.
                self.flush(net);
                if self.switch == Switch::Recording {
                    self.switch = Switch::Held;
                }
                let done = self.finish_capture();
                if let Some(d) = &done {
                    self.show_finished(d);
                }
                let _ = reply.send(done);
            }
            Control::LoadAgent(source) => self.load_agent(&source),
            Control::AgentModel(bytes) => self.set_model(bytes),
            // Handled by the loop (they replace or end it).
            Control::SwitchNet { .. } | Control::Shutdown => {}
        }
    }

    fn depart_all(&mut self) {
        for (_, slot) in std::mem::take(&mut self.slots) {
            self.timing.peer_gone(slot);
            self.push_to_rt(Inbound::PeerGone(slot));
        }
        self.shared.peers.clear();
    }

    fn push_to_rt(&mut self, item: Inbound) {
        if self.to_rt.push(item).is_err() {
            self.shared
                .counters
                .dropped_incoming
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn slot_for(&mut self, peer: PeerId, name: &str, role: Role) -> Option<u8> {
        if let Some(&s) = self.slots.get(&peer) {
            return Some(s);
        }
        let s = self.shared.peers.join(peer, name, role)?;
        self.slots.insert(peer, s);
        self.timing.set_peer(s, peer, role);
        Some(s)
    }

    fn handle_net(&mut self, ev: NetEvent) {
        if let Some(s) = &mut self.session {
            s.net_event(&ev);
        }
        match ev {
            NetEvent::Connection(state) => {
                if matches!(state, ConnectionState::Idle | ConnectionState::Failed(_)) {
                    self.depart_all();
                }
                self.shared.peers.set_connection(state);
            }
            NetEvent::PeerJoined {
                peer, name, role, ..
            } => {
                if let Some(r) = &mut self.recording {
                    let beat = self.timeline.beat_at(jam_core::Clock::now(r.clock()));
                    r.peer_name(peer, &name, beat);
                }
                if let Some(&slot) = self.slots.get(&peer) {
                    self.shared.peers.join(peer, &name, role);
                    self.timing.set_peer(slot, peer, role);
                } else if self.slot_for(peer, &name, role).is_none() {
                    tracing::warn!(%peer, "more than {MAX_PEERS} participants: {name} gets no channel");
                }
            }
            NetEvent::PeerRole { peer, role } => {
                self.shared.peers.set_role(peer, role);
                if let Some(&slot) = self.slots.get(&peer) {
                    self.timing.set_peer(slot, peer, role);
                }
            }
            NetEvent::PeerLeft { peer, .. } => {
                if let Some(slot) = self.slots.remove(&peer) {
                    self.timing.peer_gone(slot);
                    self.shared.peers.leave(peer);
                    self.push_to_rt(Inbound::PeerGone(slot));
                }
            }
            NetEvent::Midi {
                peer,
                msg,
                sent_at,
                beat,
                arrival,
                recovered,
            } => {
                let name = peer.short();
                let Some(slot) = self.slot_for(peer, &name, Role::Auto) else {
                    self.shared
                        .counters
                        .dropped_incoming
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                };
                self.shared.peers.add_event(slot, recovered);
                if let Some(r) = &mut self.recording {
                    r.received(capture::Incoming {
                        peer,
                        msg,
                        sent_at,
                        beat: beat.unwrap_or_else(|| self.timeline.beat_at(sent_at)),
                        arrival,
                        recovered,
                    });
                }
                let ev = RemoteEvent {
                    slot,
                    msg,
                    beat,
                    sent_at,
                    arrival,
                    recovered,
                };
                let (mode, interval) = self.placement();
                let mut placed = std::mem::take(&mut self.placed);
                let decided = self.timing.handle_event(
                    mode,
                    interval,
                    &self.timeline,
                    ev,
                    &mut placed,
                    &self.shared.peers,
                );
                for p in placed.drain(..) {
                    self.push_to_rt(Inbound::Placed(p));
                }
                self.placed = placed;
                if !decided {
                    self.push_to_rt(Inbound::Midi(ev));
                }
                self.shared.counters.handled.fetch_add(1, Ordering::Relaxed);
            }
            NetEvent::PeerStats { peer, stats } => {
                if let Some(&slot) = self.slots.get(&peer) {
                    self.shared.peers.set_net(
                        slot,
                        stats.rtt,
                        stats.packets_expected,
                        stats.packets_lost,
                    );
                }
            }
            NetEvent::LanPeers(list) => self.shared.peers.set_lan_peers(list),
            // The session document's (handled above).
            NetEvent::Reliable { .. } | NetEvent::PeerClock { .. } => {}
        }
    }
}
