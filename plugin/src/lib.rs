//! The jam.togthr plugin: a CLAP and VST3 instrument on the jam engine.
//!
//! The plugin is a thin adapter. Everything musical or network-related
//! happens in [`jam_engine`]; this crate converts the host's notes and
//! transport into an engine [`Block`], calls the engine once per host block,
//! and sends the events it places back to the host's note output (each
//! remote participant on its own MIDI channel). The engine's monitor synth
//! writes the stereo output.
//!
//! Lifecycle (allocation happens in one place):
//!
//! 1. `Default` is cheap: parameters and empty buffers, no thread, no engine
//!    (hosts create instances just to scan them).
//! 2. `activate` (CLAP `activate`, VST3 `setActive`) allocates: on the first
//!    call it makes this instance's participant id (persisted), builds the
//!    engine with [`Engine::new`], starts its worker thread with the network
//!    side from [`set_net_factory`], sizes the event buffers from
//!    [`MAX_EVENTS_PER_BLOCK`], turns the session document on
//!    ([`EngineControl::enable_session`], as `jam peer` does: the timeline
//!    follows the session's tempo map and captures carry its changes), and
//!    joins the saved session if there is one. Later calls (sample-rate or
//!    block-size changes, reactivation) only reset the engine: the worker
//!    and the session stay up. Every activation hands the worker the
//!    restored latency mode and interval
//!    ([`jam_engine::EngineRt::publish_settings`]), so remote events that
//!    arrive before the first block are decided in that mode, and the
//!    capture folder and key file ([`capture_target`]).
//! 3. `reset` clears playing state without allocating (it may run on the
//!    audio thread).
//! 4. `process` reads the clock once, fills the preallocated input buffer,
//!    calls [`jam_engine::EngineRt::process_block`], and forwards the output
//!    events. With the `assert_process_allocs` feature (on in debug builds)
//!    any allocation there aborts.
//! 5. `deactivate` turns the record switch off and waits for the worker to
//!    finish the capture; dropping the plugin stops the worker (off the
//!    audio thread), which finishes a capture still running.
//!
//! **Recording.** The `record` parameter is read in `process` as a value
//! and stored in an atomic ([`jam_engine::EngineRt::set_record`]); the
//! engine worker starts a sealed `.scp` in the `capture-folder` when it goes
//! on and finishes it when it goes off (see [`jam_engine::capture`]). The
//! editor shows its state, file, event count and any error.
//!
//! **Network.** By default each instance runs the transport's RTP-MIDI
//! participant on its engine worker's runtime
//! ([`jam_engine::EngineWorker::spawn_networked`]): it listens on the
//! persisted `listen` address, or on a free port pair on every interface,
//! and shows the bound address in the editor so a peer can invite it. A
//! function given to [`set_net_factory`] replaces that network side (tests
//! drive the seam directly with it).
//!
//! **Joining by name.** With the `server` fields set, the instance joins a
//! session through `jamd` instead ([`server`]): the join runs on the
//! worker's runtime and the relay peer replaces the address participant in
//! the running worker.
//!
//! Not here: any musical decision (engine), the network (transport), the
//! editor's widgets beyond the session panel ([`editor`]).

pub mod editor;
pub mod params;
pub mod server;

use crate::params::{JamParams, read_field, write_field};
use jam_core::{Clock, MonotonicClock, PeerId, ShortMessage};
use jam_engine::net::{NetLink, SessionAddress};
use jam_engine::session_sync::SessionSetup;
use jam_engine::{
    Block, BlockTimer, CaptureTarget, Engine, EngineConfig, EngineControl, EngineRt, EngineWorker,
    EventBuffer, HostEvent, HostTransport, MAX_EVENTS_PER_BLOCK, NetworkConfig, OutEvent,
    WorkerHandle,
};
use nice_plug::midi::MidiResult;
use nice_plug::prelude::*;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// What the network side needs to start for one plugin instance.
#[derive(Debug, Clone, Copy)]
pub struct NetContext {
    /// The clock every instance in this process stamps with; the transport
    /// must stamp arrival times on the same clock.
    pub clock: MonotonicClock,
    /// The instance's participant id.
    pub local_peer: PeerId,
}

/// Starts the network side for one instance and returns the worker's end.
pub type NetFactory = Box<dyn Fn(&NetContext) -> NetLink + Send + Sync>;

static NET_FACTORY: OnceLock<NetFactory> = OnceLock::new();

/// Sets, once per process, how plugin instances start their network side,
/// in place of the transport participant they run by default. Returns the
/// factory back if one was already set.
pub fn set_net_factory(factory: NetFactory) -> Result<(), NetFactory> {
    NET_FACTORY.set(factory)
}

/// The listen address from the persisted text: empty means a free port
/// pair on every interface.
fn listen_address(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    if t.is_empty() {
        return Ok(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0));
    }
    t.parse::<SocketAddr>()
        .map_err(|_| format!("listen address {t:?} is not ip:port"))
}

/// Starts the worker with its network side: the factory's if one was set,
/// else the transport participant on the persisted listen address, falling
/// back to a free pair on the same interface when that one cannot be bound
/// (the editor says so). `make` builds a fresh engine pair per attempt.
fn start_worker(
    mut make: impl FnMut() -> (EngineRt, EngineWorker),
    ctx: &NetContext,
    params: &JamParams,
    link: &EditorLink,
) -> Option<(EngineRt, WorkerHandle)> {
    if let Some(f) = NET_FACTORY.get() {
        let (rt, worker) = make();
        return match worker.spawn(f(ctx)) {
            Ok(h) => Some((rt, h)),
            Err(e) => {
                nice_error!("could not start the engine worker: {e}");
                None
            }
        };
    }
    let (attempts, mut problem) = listen_attempts(params);
    for listen in attempts {
        let mut config = NetworkConfig::new(ctx.clock, display_name(params), rand::random());
        config.listen = listen;
        let (rt, worker) = make();
        match worker.spawn_networked(config) {
            Ok((handle, info)) => {
                *lock(&link.listen) = Some(info.control);
                *lock(&link.listen_problem) = problem;
                return Some((rt, handle));
            }
            Err(e) => {
                nice_error!("could not start the network side: {e}");
                problem = Some(format!("{e}"));
            }
        }
    }
    *lock(&link.listen_problem) = problem;
    None
}

/// The listen addresses to try, in order: the persisted one, then a free
/// pair on the same interface when that names a port; and why the
/// persisted text was not used, if it was not.
fn listen_attempts(params: &JamParams) -> (Vec<SocketAddr>, Option<String>) {
    let mut problem = None;
    let wanted = match listen_address(&read_field(&params.listen)) {
        Ok(a) => a,
        Err(e) => {
            problem = Some(e);
            SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), 0)
        }
    };
    let mut attempts = vec![wanted];
    if wanted.port() != 0 {
        attempts.push(SocketAddr::new(wanted.ip(), 0));
    }
    (attempts, problem)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The clock shared by every instance in this process.
pub fn process_clock() -> MonotonicClock {
    static CLOCK: OnceLock<MonotonicClock> = OnceLock::new();
    *CLOCK.get_or_init(MonotonicClock::new)
}

/// State the editor shares with the plugin. Only the editor and the main
/// thread lock it; `process` never does.
#[derive(Debug, Default)]
pub struct EditorLink {
    /// The engine's control handle, once the plugin has been activated.
    pub control: Mutex<Option<EngineControl>>,
    /// The bound control port address (what a peer invites), once the
    /// network side runs.
    pub listen: Mutex<Option<SocketAddr>>,
    /// Why the network side does not listen where it was asked to.
    pub listen_problem: Mutex<Option<String>>,
    /// The session address last joined (from the saved state or the
    /// editor), so that a re-activation does not join it again.
    pub joined: Mutex<String>,
    /// The join through `jamd` ([`server`]).
    pub server: server::ServerLink,
}

impl EditorLink {
    /// The control handle, if the engine runs.
    pub fn control(&self) -> Option<EngineControl> {
        lock(&self.control).clone()
    }

    /// The bound control port address, if the network side runs.
    pub fn listen(&self) -> Option<SocketAddr> {
        *lock(&self.listen)
    }

    /// Why the network side does not listen where it was asked to.
    pub fn listen_problem(&self) -> Option<String> {
        lock(&self.listen_problem).clone()
    }
}

/// The plugin.
pub struct JamPlugin {
    params: Arc<JamParams>,
    /// The engine's audio-thread half; `None` until the first activation.
    rt: Option<EngineRt>,
    /// The worker thread; stopped when the plugin is dropped.
    worker: Option<WorkerHandle>,
    /// Host events of the current block; capacity fixed at activation.
    input: EventBuffer<HostEvent>,
    /// Remote events placed in the current block; capacity fixed at
    /// activation.
    output: EventBuffer<OutEvent>,
    /// Shared with the editor.
    link: Arc<EditorLink>,
    clock: MonotonicClock,
    /// Block start times from the sample count, re-anchored on the clock.
    timer: BlockTimer,
}

impl Default for JamPlugin {
    fn default() -> Self {
        JamPlugin {
            params: Arc::new(JamParams::default()),
            rt: None,
            worker: None,
            input: EventBuffer::with_capacity(0),
            output: EventBuffer::with_capacity(0),
            link: Arc::new(EditorLink::default()),
            clock: process_clock(),
            timer: BlockTimer::new(),
        }
    }
}

impl JamPlugin {
    /// The instance's participant id, made and persisted on first use.
    fn peer_id(&self) -> PeerId {
        if let Ok(id) = read_field(&self.params.peer_id).parse::<PeerId>() {
            return id;
        }
        let id = PeerId::random(&mut rand::rng());
        write_field(&self.params.peer_id, &id.to_string());
        id
    }

    fn start_engine(&mut self, sample_rate: f32) {
        let local_peer = self.peer_id();
        let mut config = EngineConfig::new(local_peer);
        config.sample_rate = sample_rate;
        config.agent = agent_source(&self.params);
        let ctx = NetContext {
            clock: self.clock,
            local_peer,
        };
        let make = || Engine::new(config.clone());
        if let Some((rt, handle)) = start_worker(make, &ctx, &self.params, &self.link) {
            let control = handle.control();
            // The session document, as `jam peer` has it; before any join,
            // so that joining makes this engine a replica.
            let created_unix_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or(0);
            let setup = SessionSetup::new(
                &display_name(&self.params),
                jam_engine::Timeline::default().bpm(),
                created_unix_ms,
                &mut rand::rng(),
            );
            control.enable_session(setup, local_peer, self.clock);
            if !server::join_saved(&self.params, &control, &self.link) {
                join_saved_session(&self.params, &control, &self.link);
            }
            *lock(&self.link.control) = Some(control);
            self.worker = Some(handle);
            self.rt = Some(rt);
        }
    }
}

/// Joins the session saved in the project, if there is one and it is not
/// the one last joined from the saved state (`joined`, updated). Hosts
/// restore a project's state before or after the first activation, and
/// nice-plug activates again after restoring state, so this runs at every
/// activation and acts only when the saved address changed (`link.joined`,
/// which the editor's Join updates too).
fn join_saved_session(params: &JamParams, control: &EngineControl, link: &EditorLink) {
    let address = read_field(&params.session);
    let address = address.trim();
    let mut joined = lock(&link.joined);
    if address.is_empty() || address == joined.as_str() {
        return;
    }
    *joined = address.to_string();
    match address.parse::<SessionAddress>() {
        Ok(a) => control.join(a, &display_name(params), key_file(params)),
        Err(e) => nice_warn!("saved session address: {e}"),
    }
}

/// The display name, or a default when none was typed.
pub fn display_name(params: &JamParams) -> String {
    let n = read_field(&params.display_name);
    if n.trim().is_empty() {
        "jam.togthr".to_string()
    } else {
        n.trim().to_string()
    }
}

/// The key file, when one was given.
pub fn key_file(params: &JamParams) -> Option<PathBuf> {
    let k = read_field(&params.key_file);
    (!k.trim().is_empty()).then(|| PathBuf::from(k.trim()))
}

/// The player's agent for predictive mode, when both the agent file and
/// the key file are set.
pub fn agent_source(params: &JamParams) -> Option<jam_engine::AgentSource> {
    let a = read_field(&params.agent);
    let path = PathBuf::from(a.trim());
    (!a.trim().is_empty()).then_some(())?;
    Some(jam_engine::AgentSource {
        path,
        key_file: key_file(params)?,
    })
}

// --- Capture (recording) ---------------------------------------------------

/// Where the record switch writes: the `capture-folder` field, sealed to the
/// owner of the key file, named after the session: the `jamd` session's
/// name when a server is set, else the session document's name, else the
/// session address (or `local`).
pub fn capture_target(params: &JamParams) -> CaptureTarget {
    let folder = read_field(&params.capture_folder);
    let session = read_field(&params.session);
    CaptureTarget {
        session_name: server::saved_target(params).map(|(_, name, _)| name),
        folder: (!folder.trim().is_empty()).then(|| PathBuf::from(folder.trim())),
        key_file: key_file(params),
        recorder_name: display_name(params),
        session: if session.trim().is_empty() {
            "local".to_string()
        } else {
            session.trim().to_string()
        },
    }
}

/// Hands the worker the current capture folder and key file (at activation
/// and when the editor changes them).
pub fn update_capture_target(params: &JamParams, control: &EngineControl) {
    control.set_capture_target(capture_target(params), process_clock());
}

/// How long `deactivate` waits for the worker to finish a capture.
const FINISH_CAPTURE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Finishes the running capture and waits (at most
/// [`FINISH_CAPTURE_TIMEOUT`]) until it is closed. Not on the audio thread.
fn finish_capture(control: &EngineControl) {
    let mut done = control.finish_capture();
    let deadline = std::time::Instant::now() + FINISH_CAPTURE_TIMEOUT;
    loop {
        match done.try_recv() {
            Ok(Some(Ok(s))) => {
                nice_log!("capture {} finished", s.path.display());
                return;
            }
            Ok(Some(Err(e))) => {
                nice_error!("{e}");
                return;
            }
            Ok(None) | Err(tokio::sync::oneshot::error::TryRecvError::Closed) => return,
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                if std::time::Instant::now() > deadline {
                    nice_error!("the capture did not finish in time");
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
    }
}

// --- end of capture --------------------------------------------------------

/// Converts a host note event into a short MIDI message, if it is one.
/// Realtime-safe: yes.
fn to_short(ev: &NoteEvent<()>) -> Option<ShortMessage> {
    match ev.as_midi()? {
        MidiResult::Basic(bytes) => {
            let n = 1 + jam_core::midi::data_len(bytes[0])?;
            ShortMessage::try_from_slice(&bytes[..n]).ok()
        }
        MidiResult::SysEx(..) => None,
    }
}

impl Plugin for JamPlugin {
    const NAME: &'static str = "jam.togthr";
    const VENDOR: &'static str = "jam.togthr";
    const URL: &'static str = "https://github.com/jam-togthr/jam";
    const EMAIL: &'static str = "hello@jam-togthr.invalid";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");

    const AUDIO_IO_LAYOUTS: &'static [AudioIOLayout] = &[AudioIOLayout {
        main_input_channels: None,
        main_output_channels: NonZeroU32::new(2),
        aux_input_ports: &[],
        aux_output_ports: &[],
        names: PortNames::const_default(),
    }];

    const MIDI_INPUT: MidiConfig = MidiConfig::MidiCCs;
    const MIDI_OUTPUT: MidiConfig = MidiConfig::MidiCCs;
    const SAMPLE_ACCURATE_AUTOMATION: bool = false;

    type Editor = editor::JamEditor;
    type SysExMessage = ();
    type BackgroundTask = ();

    fn params(&self) -> Arc<dyn Params> {
        self.params.clone()
    }

    fn editor(&mut self, _async_executor: AsyncExecutor<Self>) -> Option<Self::Editor> {
        editor::create(self.params.clone(), self.link.clone())
    }

    fn activate(
        &mut self,
        _audio_io_layout: &AudioIOLayout,
        buffer_config: &BufferConfig,
        _context: &mut impl ActivateContext<Self>,
    ) -> bool {
        if self.input.capacity() < MAX_EVENTS_PER_BLOCK {
            self.input = EventBuffer::with_capacity(MAX_EVENTS_PER_BLOCK);
            self.output = EventBuffer::with_capacity(MAX_EVENTS_PER_BLOCK);
        }
        match &mut self.rt {
            Some(rt) => {
                rt.reset();
                // A restored state may name another session.
                if let Some(control) = self.link.control()
                    && !server::join_saved(&self.params, &control, &self.link)
                {
                    join_saved_session(&self.params, &control, &self.link);
                }
            }
            None => self.start_engine(buffer_config.sample_rate),
        }
        // The restored mode and interval, before the first block; the
        // capture folder and key file the state may have restored.
        if let Some(rt) = &mut self.rt {
            rt.publish_settings(&self.params.settings());
        }
        if let Some(control) = self.link.control() {
            update_capture_target(&self.params, &control);
        }
        self.timer.reset();
        self.rt.is_some()
    }

    fn deactivate(&mut self) {
        // Nothing is processed until the next activation: close the capture
        // now rather than when the plugin is dropped.
        if let (Some(rt), Some(control)) = (&self.rt, self.link.control()) {
            rt.set_record(false);
            finish_capture(&control);
        }
    }

    fn reset(&mut self) {
        if let Some(rt) = &mut self.rt {
            rt.reset();
        }
        self.timer.reset();
    }

    fn process(
        &mut self,
        buffer: &mut Buffer,
        _aux: &mut AuxiliaryBuffers,
        context: &mut impl ProcessContext<Self>,
    ) -> ProcessStatus {
        let Some(rt) = &mut self.rt else {
            for ch in buffer.as_slice() {
                ch.fill(0.0);
            }
            return ProcessStatus::Normal;
        };
        // The worker starts or finishes the capture; one atomic store.
        rt.set_record(self.params.record.value());
        let read = self.clock.now();
        self.input.clear();
        let mut dropped = 0u64;
        while let Some(ev) = context.next_event() {
            if let Some(msg) = to_short(&ev) {
                let e = HostEvent {
                    offset: ev.timing(),
                    msg,
                };
                if self.input.push(e).is_err() {
                    dropped += 1;
                }
            }
        }
        let t = context.transport();
        let transport = HostTransport {
            playing: t.playing,
            tempo: t.tempo,
            beat: t.pos_beats(),
        };
        let sample_rate = t.sample_rate;
        let now = self
            .timer
            .block_start(read, buffer.samples() as u32, sample_rate);
        let settings = self.params.settings();
        let channels = buffer.as_slice();
        let (left, right) = match channels {
            [l, r, ..] => (&mut **l, &mut **r),
            [l] => {
                l.fill(0.0);
                return ProcessStatus::Normal;
            }
            [] => return ProcessStatus::Normal,
        };
        rt.process_block(&mut Block {
            now,
            sample_rate,
            transport,
            settings,
            input: self.input.as_slice(),
            output: &mut self.output,
            left,
            right,
        });
        if dropped > 0 {
            rt.count_dropped_host_input(dropped);
        }
        for e in self.output.as_slice() {
            // Only channel messages go to the host's note output.
            if e.msg.channel().is_none() {
                continue;
            }
            if let Ok(ev) = NoteEvent::<()>::from_midi(e.offset, e.msg.as_slice()) {
                // A full host buffer drops the event; nothing else to do.
                let _ = context.try_send_event(ev);
            }
        }
        ProcessStatus::KeepAlive
    }
}

impl ClapPlugin for JamPlugin {
    const CLAP_ID: &'static str = "com.jam-togthr.jam";
    const CLAP_DESCRIPTION: Option<&'static str> =
        Some("Play together over the internet: notes to and from a jam.togthr session");
    const CLAP_MANUAL_URL: Option<&'static str> = Some(Self::URL);
    const CLAP_SUPPORT_URL: Option<&'static str> = None;
    const CLAP_FEATURES: &'static [ClapFeature] = &[
        ClapFeature::Instrument,
        ClapFeature::NoteEffect,
        ClapFeature::Synthesizer,
        ClapFeature::Stereo,
    ];
}

impl Vst3Plugin for JamPlugin {
    const VST3_CLASS_ID: [u8; 16] = *b"jam.togthr.jam01";
    const VST3_SUBCATEGORIES: &'static [Vst3SubCategory] =
        &[Vst3SubCategory::Instrument, Vst3SubCategory::Synth];
}

nice_export_clap!(JamPlugin);
nice_export_vst3!(JamPlugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_are_named_after_the_jamd_session_else_the_address() {
        let p = JamParams::default();
        assert_eq!(capture_target(&p).session, "local");
        assert_eq!(capture_target(&p).session_name, None);
        write_field(&p.session, " 127.0.0.1:5004 ");
        let t = capture_target(&p);
        assert_eq!(
            (t.session.as_str(), t.session_name),
            ("127.0.0.1:5004", None)
        );
        // A jamd session's name counts once a server is set too.
        write_field(&p.server_session, "friday night");
        assert_eq!(capture_target(&p).session_name, None);
        write_field(&p.server, "http://jam.example:8080");
        let t = capture_target(&p);
        assert_eq!(t.session_name.as_deref(), Some("friday night"));
        assert_eq!(t.label(Some("ana's session")), "friday night");
    }
}
