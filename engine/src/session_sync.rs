//! The session document on the wire: [`SessionSync`] binds one
//! [`SessionDoc`] to one [`Reliable`] channel end per peer, and
//! [`WorkerSession`] is what the engine worker keeps of the session (which
//! replica it is, the session clock, the tempo timeline it last published).
//!
//! Both are sans-IO: they take `now` and bytes and return frames, deadlines
//! and timelines. The worker moves the frames through the transport seam
//! ([`crate::net::NetCommand::SendReliable`] /
//! [`crate::net::NetEvent::Reliable`]), which carries them on the AppleMIDI
//! control port ([`jam_transport::participant::Participant::send_reliable`])
//! or through the relay. The network emulator's session mesh
//! (`jam_tests::session_mesh`) runs the same [`SessionSync`].
//!
//! Life of a peer in a [`SessionSync`]: [`SessionSync::add_peer`] when the
//! transport reports it joined (with the [`PeerId`] the transport knows it
//! by), frames in through [`SessionSync::handle_frame`], and
//! [`SessionSync::remove_peer`] when it leaves. A peer that restarts (new
//! channel epoch) resets the document's sync state for it, so the two
//! replicas start their sync over instead of waiting for messages the
//! restarted side forgot.
//!
//! Not every AppleMIDI peer speaks the side channel (macOS, rtpMIDI and
//! pymidi do not). With [`SessionSync::with_give_up`], a peer that has not
//! sent one valid frame that long after it was added is dropped from the
//! binding, so its session does not carry resent frames for ever; a frame
//! from it later brings it back.
//!
//! ```
//! use jam_core::{Meter, Micros, PeerId, SessionTime, Tempo};
//! use jam_engine::session_sync::SessionSync;
//! use jam_session_crdt::{Profile, SessionConfig, SessionDoc, SessionSettings};
//! use jam_transport::reliable::ReliableConfig;
//!
//! let (a, b) = (PeerId([1; 16]), PeerId([2; 16]));
//! let config = SessionConfig {
//!     id: [9; 16], name: "tuesday".into(), created_unix_ms: 0,
//!     origin: SessionTime(0), tempo: Tempo::from_bpm(120.0).unwrap(),
//!     meter: Meter::FOUR_FOUR, settings: SessionSettings::default(),
//! };
//! let ann = Profile { name: "ann".into(), public_key: [7; 32], instrument: "keys".into() };
//! let founder_doc = SessionDoc::create(&config, a, &ann, 1).unwrap();
//! let mut founder = SessionSync::new(founder_doc, ReliableConfig::default(), 1);
//! let mut joiner = SessionSync::new(SessionDoc::new_replica(b, 9), ReliableConfig::default(), 2);
//! founder.add_peer(b);
//! joiner.add_peer(a);
//! let now = Micros::ZERO;
//! for _ in 0..10 {
//!     while let Some((_, f)) = founder.poll_transmit(now) {
//!         joiner.handle_frame(now, a, &f).unwrap();
//!     }
//!     while let Some((_, f)) = joiner.poll_transmit(now) {
//!         founder.handle_frame(now, b, &f).unwrap();
//!     }
//! }
//! assert_eq!(joiner.doc().heads(), founder.doc().heads());
//! ```

use crate::capture::Recording;
use crate::net::{NetCommand, NetEvent};
use crate::shared_clock::SharedClock;
use crate::timeline::Timeline;
use jam_core::session_time::{ClockMeasurement, SessionClock};
use jam_core::{Beats, Clock, Meter, Micros, MonotonicClock, PeerId, SessionTime, Tempo};
use jam_predict::coherent::AheadChange;
use jam_session_crdt::{
    Profile, Role, RoleAssignment, SessionConfig, SessionDoc, SessionSettings, SyncError,
};
use jam_transport::reliable::{FrameError, Reliable, ReliableConfig, ReliableEvent};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

/// How long the engine keeps sending the session document to a peer that
/// never answers on the side channel (an AppleMIDI peer that is not a
/// jam.togthr engine). A jam.togthr peer acknowledges within a round trip.
pub const SILENT_PEER_GIVE_UP: Duration = Duration::from_secs(10);

/// Counters of a [`SessionSync`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionSyncStats {
    /// Sync messages handed to the channels.
    pub sync_messages: u64,
    /// Bytes of those sync messages.
    pub sync_bytes: u64,
    /// Sync messages the document rejected (zero between honest peers).
    pub sync_errors: u64,
    /// Sync messages the channel refused (too long, queue full).
    pub send_refused: u64,
    /// Frames that were not frames of the reliable channel.
    pub bad_frames: u64,
    /// Frames from a peer that is not in the binding.
    pub unknown_peer_frames: u64,
    /// Peers that restarted (their sync state was reset).
    pub restarts: u64,
    /// Peers dropped because they never answered (see
    /// [`SessionSync::with_give_up`]).
    pub given_up: u64,
}

/// One session replica and its channel ends; see the [module docs](self).
#[derive(Debug)]
pub struct SessionSync {
    doc: SessionDoc,
    ends: BTreeMap<PeerId, Reliable>,
    config: ReliableConfig,
    epoch: u32,
    stats: SessionSyncStats,
    last_error: Option<SyncError>,
    /// The document changed (received changes or a local edit) since
    /// [`SessionSync::take_changed`].
    changed: bool,
    /// How long a peer may stay silent after it was added.
    give_up: Option<Duration>,
    /// Peers not heard from yet, with the first `now` seen after adding.
    unheard: BTreeMap<PeerId, Option<Micros>>,
    /// Peers dropped for silence; a frame from one adds it back.
    given_up: BTreeSet<PeerId>,
}

impl SessionSync {
    /// Binds `doc` (founded or a fresh replica) with no peers yet. `epoch`
    /// names this incarnation on every channel (random and non-zero, from
    /// the caller: a restarted process must use another one).
    pub fn new(doc: SessionDoc, config: ReliableConfig, epoch: u32) -> SessionSync {
        SessionSync {
            doc,
            ends: BTreeMap::new(),
            config,
            epoch: epoch.max(1),
            stats: SessionSyncStats::default(),
            last_error: None,
            changed: true,
            give_up: None,
            unheard: BTreeMap::new(),
            given_up: BTreeSet::new(),
        }
    }

    /// Drops a peer that has not sent one valid frame `after` it was added
    /// (a participant without the side channel); `None` (the default) keeps
    /// every peer until [`SessionSync::remove_peer`].
    pub fn with_give_up(mut self, after: Option<Duration>) -> SessionSync {
        self.give_up = after;
        self
    }

    /// The replica.
    pub fn doc(&self) -> &SessionDoc {
        &self.doc
    }

    /// The replica, for local edits. What they produce goes out on the next
    /// [`SessionSync::poll_transmit`].
    pub fn doc_mut(&mut self) -> &mut SessionDoc {
        self.changed = true;
        &mut self.doc
    }

    /// True once if the document may have changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The channel ends, by peer (for their figures).
    pub fn ends(&self) -> impl Iterator<Item = (PeerId, &Reliable)> + '_ {
        self.ends.iter().map(|(p, e)| (*p, e))
    }

    /// Counters.
    pub fn stats(&self) -> SessionSyncStats {
        self.stats
    }

    /// The last sync message the document rejected, if any.
    pub fn last_error(&self) -> Option<&SyncError> {
        self.last_error.as_ref()
    }

    /// Starts syncing with `peer` (a no-op if it is already here).
    pub fn add_peer(&mut self, peer: PeerId) {
        if self.ends.contains_key(&peer) {
            return;
        }
        self.doc.add_peer(peer);
        self.ends
            .insert(peer, Reliable::new(self.config, self.epoch));
        self.given_up.remove(&peer);
        self.unheard.insert(peer, None);
    }

    /// Stops syncing with `peer` and forgets its channel.
    pub fn remove_peer(&mut self, peer: PeerId) {
        self.doc.remove_peer(peer);
        self.ends.remove(&peer);
        self.unheard.remove(&peer);
        self.given_up.remove(&peer);
    }

    /// Peers being synced with.
    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.ends.keys().copied()
    }

    /// A frame of the reliable channel from `peer`. Frames from a peer not
    /// in the binding are counted and ignored; a malformed frame is counted,
    /// returned as an error and changes nothing.
    pub fn handle_frame(
        &mut self,
        now: Micros,
        peer: PeerId,
        bytes: &[u8],
    ) -> Result<(), FrameError> {
        if !self.ends.contains_key(&peer) && self.given_up.contains(&peer) {
            // It does speak the channel after all.
            self.add_peer(peer);
        }
        let Some(end) = self.ends.get_mut(&peer) else {
            self.stats.unknown_peer_frames += 1;
            return Ok(());
        };
        if let Err(e) = end.handle_datagram(now, bytes) {
            self.stats.bad_frames += 1;
            return Err(e);
        }
        self.unheard.remove(&peer);
        while let Some(e) = self.ends.get_mut(&peer).and_then(Reliable::poll_event) {
            match e {
                ReliableEvent::Message(m) => match self.doc.receive_sync_message(now, peer, &m) {
                    Ok(changed) => self.changed |= changed,
                    Err(err) => {
                        self.stats.sync_errors += 1;
                        self.last_error = Some(err);
                    }
                },
                ReliableEvent::PeerRestarted => {
                    self.stats.restarts += 1;
                    self.doc.reset_peer(peer);
                }
            }
        }
        self.pump(now);
        Ok(())
    }

    /// Runs the channels' and the document's timers due at `now`.
    pub fn handle_timeout(&mut self, now: Micros) {
        if let Some(limit) = self.give_up {
            let mut silent = Vec::new();
            for (peer, since) in self.unheard.iter_mut() {
                let t = *since.get_or_insert(now);
                if now.saturating_duration_since(t) >= limit {
                    silent.push(*peer);
                }
            }
            for peer in silent {
                self.remove_peer(peer);
                self.given_up.insert(peer);
                self.stats.given_up += 1;
            }
        }
        for end in self.ends.values_mut() {
            if end.poll_timeout().is_some_and(|t| t <= now) {
                end.handle_timeout(now);
            }
        }
        if self.doc.poll_timeout().is_some_and(|t| t <= now) {
            self.doc.handle_timeout(now);
        }
        self.pump(now);
    }

    /// Hands every pending sync message of the document to its channel.
    /// [`SessionSync::poll_transmit`] calls it; call it yourself to count
    /// messages without draining frames.
    pub fn pump(&mut self, now: Micros) {
        while let Some((peer, msg)) = self.doc.poll_transmit(now) {
            let Some(end) = self.ends.get_mut(&peer) else {
                continue;
            };
            match end.send(&msg) {
                Ok(()) => {
                    self.stats.sync_messages += 1;
                    self.stats.sync_bytes += msg.len() as u64;
                }
                // The document's resend timer offers it again later.
                Err(_) => self.stats.send_refused += 1,
            }
        }
    }

    /// The next frame to send, and to whom.
    pub fn poll_transmit(&mut self, now: Micros) -> Option<(PeerId, Vec<u8>)> {
        self.pump(now);
        self.ends
            .iter_mut()
            .find_map(|(p, e)| e.poll_transmit(now).map(|f| (*p, f)))
    }

    /// When [`SessionSync::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Micros> {
        let give_up = self
            .give_up
            .and_then(|limit| self.unheard.values().flatten().map(|t| *t + limit).min());
        self.ends
            .values()
            .filter_map(Reliable::poll_timeout)
            .chain(self.doc.poll_timeout())
            .chain(give_up)
            .min()
    }
}

/// What the engine needs to found or join a session document; given by
/// [`crate::EngineControl::enable_session`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SessionSetup {
    /// How this participant appears in the document.
    pub profile: Profile,
    /// The session's name, if this peer founds it.
    pub session_name: String,
    /// The starting tempo, if this peer founds it.
    pub tempo_bpm: f64,
    /// Random: the session id if this peer founds it.
    pub session_id: [u8; 16],
    /// Random: names this process as a writer of the document.
    pub nonce: u64,
    /// Random, non-zero: this process's epoch on every reliable channel.
    pub epoch: u32,
    /// Wall-clock time now (Unix ms), recorded if this peer founds it.
    pub created_unix_ms: i64,
    /// Set for a session joined through `jamd`: founded with its shared
    /// genesis instead of the fields above.
    pub shared: Option<SharedSession>,
}

/// A session whose members may each found the document (one joined
/// through `jamd`: nobody invites anybody there, so no member knows it is
/// first). Every founder writes the same genesis from these fields
/// ([`SessionDoc::create_shared`]), so the documents merge into one session
/// whatever the order the members meet in.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedSession {
    /// The document's session id, the same for every member.
    pub id: [u8; 16],
    /// The session's name.
    pub name: String,
    /// When the session was created (Unix ms), as the server says.
    pub created_unix_ms: i64,
    /// The starting tempo; a member's own tempo travels as a proposal.
    pub tempo_bpm: f64,
    /// This member's device public key: its profile in the document, by
    /// which the others find it there ([`crate::shared_clock`]).
    pub public_key: [u8; 32],
    /// Nobody else was online when this member joined: its clock is the
    /// session's time axis from the start.
    pub first: bool,
}

impl SharedSession {
    /// The session `session_id` on a `jamd` (its 16 hex digits), named
    /// `name`, created at `created_unix_ms`; starting at the engine's
    /// default tempo, which every member has. `public_key` and `first`
    /// are this member's (see the fields).
    pub fn jamd(
        session_id: &str,
        name: &str,
        created_unix_ms: i64,
        public_key: [u8; 32],
        first: bool,
    ) -> SharedSession {
        // Any string maps to 16 bytes (folded when longer); jamd's ids are
        // 16 characters, so they are taken as they are.
        let mut id = [0u8; 16];
        for (i, b) in session_id.bytes().enumerate() {
            id[i % 16] ^= b.rotate_left((i / 16) as u32);
        }
        SharedSession {
            id,
            name: name.to_string(),
            created_unix_ms,
            tempo_bpm: Timeline::default().bpm(),
            public_key,
            first,
        }
    }
}

/// Added to a session's writer nonce (and epoch) when the engine leaves
/// its document for another session's, so the process writes the new one
/// under a new name (an odd constant: the values never repeat within 2^64
/// steps).
const NEXT_DOCUMENT_STEP: u64 = 0x9E37_79B9_7F4A_7C15;

impl SessionSetup {
    /// A setup for `name` at `tempo_bpm`; the random values come from `rng`.
    pub fn new(
        name: &str,
        tempo_bpm: f64,
        created_unix_ms: i64,
        rng: &mut impl rand_core::Rng,
    ) -> SessionSetup {
        let mut session_id = [0u8; 16];
        rng.fill_bytes(&mut session_id);
        SessionSetup {
            profile: Profile {
                name: name.to_string(),
                public_key: [0; 32],
                instrument: String::new(),
            },
            session_name: format!("{name}'s session"),
            tempo_bpm,
            session_id,
            nonce: rng.next_u64(),
            epoch: rng.next_u32().max(1),
            created_unix_ms,
            shared: None,
        }
    }

    /// The same setup for a session joined through `jamd` (the profile
    /// takes the member's device key).
    pub fn with_shared(mut self, shared: SharedSession) -> SessionSetup {
        self.profile.public_key = shared.public_key;
        self.shared = Some(shared);
        self
    }
}

/// One tempo change in the document, for the user interface.
#[derive(Debug, Clone, PartialEq)]
pub struct TempoChangeView {
    /// The entry's id in the document.
    pub id: String,
    /// Tempo from `at_beat` on.
    pub bpm: f64,
    /// The beat it applies from.
    pub at_beat: Beats,
    /// Who made it.
    pub by: PeerId,
}

/// The session as the worker last saw it, for the editor and the CLI
/// ([`crate::EngineControl::session`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SessionView {
    /// True once this engine holds the session (founded or received).
    pub present: bool,
    /// True if this engine founded it.
    pub founder: bool,
    /// Every tempo change in the document, in timeline order.
    pub tempo_changes: Vec<TempoChangeView>,
    /// Names of the participants present.
    pub participants: Vec<String>,
    /// The tempo of the timeline last handed to the audio thread.
    pub engine_bpm: Option<f64>,
    /// The timeline last handed to the audio thread (from the document).
    pub timeline: Option<Timeline>,
    /// The coherent schedule-ahead changes the session agreed on, in beat
    /// order (see `SessionState::ahead_changes`).
    pub ahead_changes: Vec<AheadChange>,
    /// Session time minus local time, once the session clock is aligned.
    pub clock_offset_us: Option<i64>,
    /// The session clock's stratum once aligned: 0 for the member whose
    /// clock is the session's axis, one more per hop away from it.
    pub clock_stratum: Option<u8>,
    /// The binding's counters.
    pub sync: SessionSyncStats,
}

/// How far ahead of now a tempo change proposed "at the next bar" lands at
/// least, so that it reaches every peer before its beat is played.
pub const TEMPO_CHANGE_LEAD_US: i64 = 500_000;

/// What the worker keeps of the session document (sans-IO).
#[derive(Debug)]
pub struct WorkerSession {
    setup: SessionSetup,
    me: PeerId,
    sync: Option<SessionSync>,
    founder: bool,
    /// Session time axis: the founder's local clock.
    clock: SessionClock,
    /// The clock mesh of a shared session, once founded.
    mesh: Option<SharedClock>,
    /// Peers joined before the document existed.
    waiting: Vec<PeerId>,
    joined_doc: bool,
    /// The segment last handed to the audio thread: (anchor beat, tempo,
    /// offset).
    published: Option<(Beats, Tempo, i64)>,
    /// The document may hold schedule-ahead changes not yet handed out by
    /// [`WorkerSession::take_new_ahead`].
    ahead_dirty: bool,
    /// Schedule-ahead changes already handed out.
    ahead_seen: BTreeSet<AheadChange>,
}

impl WorkerSession {
    /// Nothing yet: the document is founded or received once peers come.
    pub fn new(setup: SessionSetup, me: PeerId) -> WorkerSession {
        WorkerSession {
            setup,
            me,
            sync: None,
            founder: false,
            clock: SessionClock::joining(),
            mesh: None,
            waiting: Vec::new(),
            joined_doc: false,
            published: None,
            ahead_dirty: true,
            ahead_seen: BTreeSet::new(),
        }
    }

    /// The binding, once there is a document.
    pub fn sync(&self) -> Option<&SessionSync> {
        self.sync.as_ref()
    }

    /// The binding, once there is a document.
    pub fn sync_mut(&mut self) -> Option<&mut SessionSync> {
        self.sync.as_mut()
    }

    /// This engine joins someone else's session: start as an empty replica
    /// (unless a document is already here).
    pub fn start_replica(&mut self) {
        if self.sync.is_some() {
            return;
        }
        let doc = SessionDoc::new_replica(self.me, self.setup.nonce);
        self.install(doc, false);
    }

    /// The next network is the session `shared` (joined through `jamd`):
    /// the document is founded with its shared genesis. A document of any
    /// other session (an earlier LAN session, another `jamd` session) is
    /// left for a new one, written under a new nonce; the document of this
    /// same session (joined again) is kept.
    pub fn share(&mut self, shared: SharedSession) {
        if self.setup.shared.as_ref().map(|s| s.id) == Some(shared.id) {
            return;
        }
        let mut setup = self.setup.clone().with_shared(shared);
        if self.sync.is_some() {
            setup.nonce = setup.nonce.wrapping_add(NEXT_DOCUMENT_STEP);
            setup.epoch = setup.epoch.wrapping_add(1).max(1);
            *self = WorkerSession::new(setup, self.me);
        } else {
            self.setup = setup;
        }
    }

    /// Founds the session (unless a document is already here).
    pub fn found(&mut self, now: Micros) {
        if self.sync.is_some() {
            return;
        }
        let (id, name, created_unix_ms, origin, bpm) = match &self.setup.shared {
            // Every founder of a shared session writes the same genesis:
            // the origin is 0 on each one's own clock.
            Some(sh) => (sh.id, sh.name.clone(), sh.created_unix_ms, 0, sh.tempo_bpm),
            None => (
                self.setup.session_id,
                self.setup.session_name.clone(),
                self.setup.created_unix_ms,
                now.as_micros() as i64,
                self.setup.tempo_bpm,
            ),
        };
        let tempo = Tempo::from_bpm(bpm)
            .unwrap_or_else(|_| Tempo::from_bpm(120.0).expect("120 BPM is a tempo"));
        let config = SessionConfig {
            id,
            name,
            created_unix_ms,
            origin: SessionTime(origin),
            tempo,
            meter: Meter::FOUR_FOUR,
            settings: SessionSettings::default(),
        };
        let create = if self.setup.shared.is_some() {
            SessionDoc::create_shared
        } else {
            SessionDoc::create
        };
        match create(&config, self.me, &self.setup.profile, self.setup.nonce) {
            Ok(doc) => {
                self.clock = match &self.setup.shared {
                    Some(sh) => {
                        let (mesh, clock) = SharedClock::new(sh.public_key, sh.first);
                        self.mesh = Some(mesh);
                        clock
                    }
                    None => SessionClock::founder(),
                };
                self.joined_doc = true;
                self.install(doc, true);
            }
            Err(e) => tracing::error!("cannot found the session document: {e}"),
        }
    }

    fn install(&mut self, doc: SessionDoc, founder: bool) {
        let mut sync = SessionSync::new(doc, ReliableConfig::default(), self.setup.epoch)
            .with_give_up(Some(SILENT_PEER_GIVE_UP));
        for p in self.waiting.drain(..) {
            sync.add_peer(p);
        }
        self.founder = founder;
        self.sync = Some(sync);
    }

    /// A participant joined: sync the document with it. The first peer to
    /// meet another without having asked to join anyone founds the session
    /// (in a shared session every member does, with the same genesis).
    /// `key` is its device public key, where the transport knows it.
    pub fn peer_joined(&mut self, now: Micros, peer: PeerId, key: Option<[u8; 32]>) {
        if self.sync.is_none() {
            self.found(now);
        }
        match &mut self.sync {
            Some(s) => s.add_peer(peer),
            None => self.waiting.push(peer),
        }
        if let Some(m) = &mut self.mesh {
            m.peer_joined(now, peer, key);
        }
    }

    /// A participant left.
    pub fn peer_left(&mut self, peer: PeerId) {
        self.waiting.retain(|p| *p != peer);
        if let Some(s) = &mut self.sync {
            s.remove_peer(peer);
        }
        if let Some(m) = &mut self.mesh {
            m.peer_left(peer);
        }
    }

    /// A clock-sync measurement against `peer` from the transport.
    ///
    /// In a shared session it goes to the clock mesh, which weighs it with
    /// the peer's published alignment ([`crate::shared_clock`]). Otherwise
    /// the peers a replica measures against are taken to be on the session
    /// time axis already (stratum 0: the founder, whom `jam peer` and the
    /// plugin invite).
    pub fn clock_measured(
        &mut self,
        now: Micros,
        peer: PeerId,
        local_minus_remote_us: i64,
        rtt_us: u64,
    ) {
        if let Some(m) = &mut self.mesh {
            m.measured(now, peer, local_minus_remote_us, rtt_us);
            return;
        }
        // A shared session measures only through its mesh (founded at the
        // first peer): a peer's clock says nothing without its alignment.
        if self.founder || self.setup.shared.is_some() {
            return;
        }
        self.clock.handle_measurement(
            now,
            ClockMeasurement {
                peer,
                local_minus_remote_us,
                remote_offset_us: 0,
                remote_stratum: 0,
                rtt_us,
            },
        );
    }

    /// The session time at local time `now`, once aligned.
    pub fn session_time(&self, now: Micros) -> Option<SessionTime> {
        self.clock.to_session(now)
    }

    /// Proposes a tempo change at `at` (or, for `None`, at the first bar at
    /// least [`TEMPO_CHANGE_LEAD_US`] from now). Founds the session first if
    /// there is none. Returns the beat it applies from.
    pub fn change_tempo(
        &mut self,
        now: Micros,
        bpm: f64,
        at: Option<Beats>,
    ) -> Result<Beats, String> {
        let tempo = Tempo::from_bpm(bpm).map_err(|e| format!("tempo {bpm}: {e}"))?;
        if self.sync.is_none() {
            self.found(now);
        }
        let session_now = self
            .session_time(now)
            .ok_or_else(|| "the session clock is not aligned yet".to_string())?;
        let sync = self.sync.as_mut().ok_or("no session document")?;
        let doc = sync.doc_mut();
        let at = match at {
            Some(b) => b,
            None => doc
                .next_change_beat(session_now, TEMPO_CHANGE_LEAD_US)
                .ok_or("the session has not arrived yet")?,
        };
        let meter = doc
            .timeline()
            .map(|t| t.meter_at(at))
            .ok_or("the session has not arrived yet")?;
        doc.change_tempo(at, tempo, meter, session_now)
            .map_err(|e| e.to_string())?;
        Ok(at)
    }

    /// True once this engine can propose schedule-ahead changes: the
    /// document is here and this participant is in it.
    pub fn can_propose_ahead(&self) -> bool {
        self.joined_doc
            && self
                .sync
                .as_ref()
                .and_then(|s| s.doc().state())
                .is_some_and(|st| st.participants.contains_key(&self.me))
    }

    /// Writes this engine's schedule-ahead proposal into the document (it
    /// reaches the others with the next frames). It takes effect here, as
    /// everywhere, through [`WorkerSession::take_new_ahead`].
    pub fn propose_ahead(&mut self, change: AheadChange) -> Result<(), String> {
        let sync = self.sync.as_mut().ok_or("no session document")?;
        sync.doc_mut()
            .propose_ahead(change.from, change.ahead)
            .map_err(|e| e.to_string())?;
        self.ahead_dirty = true;
        Ok(())
    }

    /// The session's schedule-ahead changes not handed out before (new
    /// boundaries, or a larger value at a known one), in beat order. Every
    /// engine applies every change it gets here, so all hold the same set.
    pub fn take_new_ahead(&mut self) -> Vec<AheadChange> {
        if !std::mem::take(&mut self.ahead_dirty) {
            return Vec::new();
        }
        let Some(state) = self.sync.as_ref().and_then(|s| s.doc().state()) else {
            return Vec::new();
        };
        state
            .ahead_changes()
            .into_iter()
            .map(|e| AheadChange {
                from: e.from,
                ahead: e.ahead,
            })
            .filter(|c| self.ahead_seen.insert(*c))
            .collect()
    }

    /// Sets (or with `None` removes) one of this participant's roles.
    pub fn set_role(
        &mut self,
        role: Role,
        assignment: Option<RoleAssignment>,
    ) -> Result<(), String> {
        let me = self.me;
        let sync = self.sync.as_mut().ok_or("no session document")?;
        sync.doc_mut()
            .set_role(me, role, assignment)
            .map_err(|e| e.to_string())
    }

    /// Runs timers, joins a document that just arrived, and returns the
    /// engine timeline to publish when the segment in force at `now` (or
    /// the clock offset) differs from the one last published.
    pub fn tick(&mut self, now: Micros) -> Option<Timeline> {
        self.clock.handle_timeout(now);
        let session_now = self.clock.to_session(now);
        let sync = self.sync.as_mut()?;
        sync.handle_timeout(now);
        if !self.joined_doc && sync.doc().state().is_some() {
            let at = session_now.unwrap_or(SessionTime(now.as_micros() as i64));
            match sync.doc_mut().join(&self.setup.profile, at) {
                Ok(()) => self.joined_doc = true,
                Err(e) => tracing::warn!("cannot join the session document: {e}"),
            }
        }
        let moved = match &mut self.mesh {
            Some(mesh) => mesh.tick(now, &mut self.clock, sync.doc_mut()),
            None => false,
        };
        let session_now = if moved {
            self.clock.to_session(now)
        } else {
            session_now
        };
        let offset = self.clock.offset_us()?;
        let session_now = session_now?;
        let tl = sync.doc().timeline()?;
        let anchors = tl.anchors();
        let i = anchors
            .partition_point(|a| a.time <= session_now)
            .saturating_sub(1);
        let a = anchors[i];
        let key = (a.beat, a.tempo, offset);
        if self.published == Some(key) {
            return None;
        }
        self.published = Some(key);
        let local = a.time.as_micros() - offset;
        Some(if local >= 0 {
            Timeline::new(a.tempo.bpm(), a.beat, Micros(local as u64))
        } else {
            // The anchor lies before this clock's origin: anchor on now.
            Timeline::new(a.tempo.bpm(), tl.beat_at(session_now), now)
        })
    }

    /// The session's name in the document, once it holds one (not blank).
    pub fn name(&self) -> Option<String> {
        let state = self.sync.as_ref()?.doc().state()?;
        let name = state.info.name.trim();
        (!name.is_empty()).then(|| name.to_string())
    }

    /// The view for the user interface.
    pub fn view(&self, engine_bpm: Option<f64>) -> SessionView {
        let mut v = SessionView {
            founder: self.founder,
            engine_bpm,
            clock_offset_us: self.clock.offset_us(),
            clock_stratum: self.clock.stratum(),
            ..SessionView::default()
        };
        let Some(sync) = &self.sync else { return v };
        v.sync = sync.stats();
        let Some(state) = sync.doc().state() else {
            return v;
        };
        v.present = true;
        v.tempo_changes = state
            .tempo_changes
            .iter()
            .map(|e| TempoChangeView {
                id: e.id.clone(),
                bpm: e.change.tempo.bpm(),
                at_beat: e.change.at,
                by: e.by,
            })
            .collect();
        v.participants = state.present().map(|p| p.profile.name.clone()).collect();
        v.ahead_changes = state
            .ahead_changes()
            .into_iter()
            .map(|e| AheadChange {
                from: e.from,
                ahead: e.ahead,
            })
            .collect();
        v
    }
}

/// The worker's session state with its clock: what
/// [`crate::EngineWorker`] owns once [`crate::EngineControl::enable_session`]
/// was called.
#[derive(Debug)]
pub(crate) struct SessionRuntime {
    pub(crate) session: WorkerSession,
    pub(crate) clock: MonotonicClock,
    /// The timeline last handed to the audio thread.
    timeline: Option<Timeline>,
}

impl SessionRuntime {
    pub(crate) fn new(setup: SessionSetup, me: PeerId, clock: MonotonicClock) -> SessionRuntime {
        SessionRuntime {
            session: WorkerSession::new(setup, me),
            clock,
            timeline: None,
        }
    }

    pub(crate) fn now(&self) -> Micros {
        self.clock.now()
    }

    /// Writes every change of the document so far into a capture that
    /// starts now (later ones follow from [`SessionRuntime::tick`]), so a
    /// capture started mid-session holds the whole session state.
    pub(crate) fn record_document(&mut self, recording: &mut Recording) {
        let Some(sync) = self.session.sync_mut() else {
            return;
        };
        let doc = sync.doc_mut();
        // Mark them exported: `tick` writes only what comes after.
        doc.take_new_changes();
        for c in doc.automerge().get_changes(&[]) {
            recording.session_change(c.raw_bytes());
        }
    }

    /// A transport event that concerns the session.
    pub(crate) fn net_event(&mut self, ev: &NetEvent) {
        let now = self.now();
        match ev {
            NetEvent::PeerJoined { peer, key, .. } => self.session.peer_joined(now, *peer, *key),
            NetEvent::PeerLeft { peer, .. } => self.session.peer_left(*peer),
            NetEvent::Reliable { peer, bytes } => {
                if let Some(s) = self.session.sync_mut()
                    && let Err(e) = s.handle_frame(now, *peer, bytes)
                {
                    tracing::debug!(%peer, "bad session frame: {e}");
                }
            }
            NetEvent::PeerClock {
                peer,
                local_minus_remote_us,
                rtt_us,
            } => self
                .session
                .clock_measured(now, *peer, *local_minus_remote_us, *rtt_us),
            _ => {}
        }
    }

    /// Timers, outgoing frames (as commands), the timeline to publish, and
    /// the document's new changes for a running capture.
    pub(crate) fn tick(
        &mut self,
        recording: Option<&mut Recording>,
        view: &Mutex<SessionView>,
    ) -> (Vec<NetCommand>, Option<Timeline>) {
        let now = self.now();
        let timeline = self.session.tick(now);
        if let Some(t) = &timeline {
            self.timeline = Some(*t);
        }
        let mut out = Vec::new();
        let Some(sync) = self.session.sync_mut() else {
            return (out, timeline);
        };
        while let Some((peer, frame)) = sync.poll_transmit(now) {
            out.push(NetCommand::SendReliable { peer, frame });
        }
        if sync.take_changed() || timeline.is_some() {
            if let Some(r) = recording {
                for c in sync.doc_mut().take_new_changes() {
                    r.session_change(&c.bytes);
                }
            }
            self.session.ahead_dirty = true;
            let mut v = self.session.view(self.timeline.map(|t| t.bpm()));
            v.timeline = self.timeline;
            if let Ok(mut g) = view.lock() {
                *g = v;
            }
        }
        (out, timeline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn setup(name: &str, seed: u64) -> SessionSetup {
        SessionSetup::new(name, 120.0, 0, &mut StdRng::seed_from_u64(seed))
    }

    /// Moves frames between two bindings (dropping every `drop_every`-th
    /// frame when non-zero) at `now`, running timers, for `rounds` rounds
    /// of 10 ms each. Returns the time reached.
    fn exchange(
        a: (&mut SessionSync, PeerId),
        b: (&mut SessionSync, PeerId),
        mut now: Micros,
        rounds: usize,
        drop_every: usize,
    ) -> Micros {
        let (sa, ia) = a;
        let (sb, ib) = b;
        let mut n = 0usize;
        for _ in 0..rounds {
            sa.handle_timeout(now);
            sb.handle_timeout(now);
            while let Some((to, f)) = sa.poll_transmit(now) {
                assert_eq!(to, ib);
                n += 1;
                if drop_every == 0 || !n.is_multiple_of(drop_every) {
                    sb.handle_frame(now, ia, &f).unwrap();
                }
            }
            while let Some((to, f)) = sb.poll_transmit(now) {
                assert_eq!(to, ia);
                n += 1;
                if drop_every == 0 || !n.is_multiple_of(drop_every) {
                    sa.handle_frame(now, ib, &f).unwrap();
                }
            }
            now += std::time::Duration::from_millis(10);
        }
        now
    }

    fn founded(me: PeerId) -> SessionSync {
        let mut w = WorkerSession::new(setup("ann", 1), me);
        w.found(Micros::ZERO);
        w.sync.take().unwrap()
    }

    #[test]
    fn two_bindings_converge_over_a_lossy_path_and_after_a_restart() {
        let (a, b) = (PeerId([1; 16]), PeerId([2; 16]));
        let mut sa = founded(a);
        let mut sb = SessionSync::new(SessionDoc::new_replica(b, 5), ReliableConfig::default(), 7);
        sa.add_peer(b);
        sb.add_peer(a);
        let now = exchange((&mut sa, a), (&mut sb, b), Micros::ZERO, 400, 3);
        assert_eq!(sa.doc().heads(), sb.doc().heads());
        assert!(sb.doc().state().is_some());
        assert!(sb.take_changed());
        assert_eq!(sa.stats().sync_errors + sb.stats().sync_errors, 0);

        // b restarts: a new process, a new epoch, an empty replica.
        let mut sb = SessionSync::new(SessionDoc::new_replica(b, 6), ReliableConfig::default(), 8);
        sb.add_peer(a);
        sa.doc_mut()
            .post_chat(SessionTime(1), "while you were away")
            .unwrap();
        exchange((&mut sa, a), (&mut sb, b), now, 400, 0);
        assert_eq!(sa.doc().heads(), sb.doc().heads());
        assert_eq!(sa.stats().restarts, 1);
        assert_eq!(sb.doc().state().unwrap().chat.len(), 1);
    }

    #[test]
    fn bad_frames_and_strangers_are_counted_and_change_nothing() {
        let (a, b) = (PeerId([1; 16]), PeerId([2; 16]));
        let mut sa = founded(a);
        sa.add_peer(b);
        let heads = sa.doc().heads();
        assert!(sa.handle_frame(Micros(1), b, &[0x4A]).is_err());
        assert!(sa.handle_frame(Micros(1), b, &[0xFF, 0xFF, 1, 2]).is_err());
        sa.handle_frame(Micros(1), PeerId([3; 16]), &[0x4A, 1])
            .unwrap();
        let s = sa.stats();
        assert_eq!((s.bad_frames, s.unknown_peer_frames), (2, 1));
        assert_eq!(sa.doc().heads(), heads);
        sa.remove_peer(b);
        assert_eq!(sa.peers().count(), 0);
    }

    #[test]
    fn a_peer_that_never_answers_is_given_up_and_comes_back_when_it_speaks() {
        let (a, b) = (PeerId([1; 16]), PeerId([2; 16]));
        let mut sa = founded(a).with_give_up(Some(SILENT_PEER_GIVE_UP));
        sa.add_peer(b);
        // b is an AppleMIDI peer without the side channel: nothing comes back.
        let mut now = Micros::ZERO;
        let mut sent = 0;
        while now < Micros::from_secs(30) {
            sa.handle_timeout(now);
            while sa.poll_transmit(now).is_some() {
                sent += 1;
            }
            now = sa.poll_timeout().map_or(now, |t| t.max(now)) + Duration::from_millis(1);
        }
        assert!(sent > 0);
        assert_eq!(sa.stats().given_up, 1);
        assert_eq!(sa.peers().count(), 0);
        assert!(sa.poll_transmit(now).is_none());
        // A jam.togthr peer after all (it just started late): its first
        // frame brings it back and the two converge.
        let mut sb = SessionSync::new(SessionDoc::new_replica(b, 5), ReliableConfig::default(), 7);
        sb.add_peer(a);
        exchange((&mut sb, b), (&mut sa, a), now, 200, 0);
        assert_eq!(sa.peers().collect::<Vec<_>>(), vec![b]);
        assert_eq!(sa.doc().heads(), sb.doc().heads());
    }

    /// Two worker sessions, the replica's clock 3 s ahead of the founder's.
    #[test]
    fn a_tempo_change_reaches_the_replica_and_its_timeline_follows() {
        let (a, b) = (PeerId([1; 16]), PeerId([2; 16]));
        let skew = 3_000_000u64;
        let mut fa = WorkerSession::new(setup("ann", 1), a);
        let mut fb = WorkerSession::new(setup("bob", 2), b);
        fb.start_replica();
        let t0 = Micros::from_secs(10);
        fa.peer_joined(t0, b, None);
        fb.peer_joined(t0 + std::time::Duration::from_micros(skew), a, None);
        fb.clock_measured(Micros(t0.0 + skew), a, skew as i64, 1_000);
        assert!(fa.sync().unwrap().doc().state().is_some());
        assert!(fb.sync().unwrap().doc().state().is_none());

        let mut t = t0;
        let step = |fa: &mut WorkerSession, fb: &mut WorkerSession, t: &mut Micros| {
            let tb = Micros(t.0 + skew);
            let la = fa.tick(*t);
            let lb = fb.tick(tb);
            let (sa, sb) = (fa.sync.as_mut().unwrap(), fb.sync.as_mut().unwrap());
            while let Some((_, f)) = sa.poll_transmit(*t) {
                sb.handle_frame(tb, a, &f).unwrap();
            }
            while let Some((_, f)) = sb.poll_transmit(tb) {
                sa.handle_frame(*t, b, &f).unwrap();
            }
            *t += std::time::Duration::from_millis(5);
            (la, lb)
        };
        let mut first_b = None;
        for _ in 0..100 {
            if let (_, Some(l)) = step(&mut fa, &mut fb, &mut t) {
                first_b = Some(l);
            }
        }
        let lb = first_b.expect("the replica publishes a timeline");
        assert_eq!(lb.bpm(), 120.0);
        // The same instant is the same beat on both engines.
        let fa_tl = fa.tick(t).unwrap_or_else(|| {
            let s = fa.sync().unwrap().doc().timeline().unwrap().clone();
            let a0 = s.anchors()[0];
            Timeline::new(a0.tempo.bpm(), a0.beat, Micros(a0.time.0 as u64))
        });
        assert_eq!(fa_tl.beat_at(t), lb.beat_at(Micros(t.0 + skew)));
        assert_eq!(fb.view(None).participants.len(), 2);

        let at = fa.change_tempo(t, 90.0, None).unwrap();
        assert_eq!(at.0 % Beats::from_beats(4).0, 0, "on a bar line");
        let mut latest_b = None;
        for _ in 0..400 {
            if let (_, Some(l)) = step(&mut fa, &mut fb, &mut t) {
                latest_b = Some(l);
            }
        }
        let view = fb.view(None);
        assert_eq!(view.tempo_changes.len(), 1);
        assert_eq!(view.tempo_changes[0].bpm, 90.0);
        assert_eq!(view.tempo_changes[0].at_beat, at);
        let lb = latest_b.expect("the change was published");
        assert_eq!(lb.bpm(), 90.0);
        // Beats go on from the change's beat at the new tempo.
        let change_local_b = lb.time_at(at);
        assert_eq!(
            lb.beat_at(change_local_b + std::time::Duration::from_secs(2)),
            at + Beats::from_beats(3)
        );
    }

    /// Moves frames both ways between two worker sessions for `rounds`
    /// ticks of 5 ms from `t`.
    fn run_pair(
        (fa, a): (&mut WorkerSession, PeerId),
        (fb, b): (&mut WorkerSession, PeerId),
        t: &mut Micros,
        rounds: usize,
    ) {
        for _ in 0..rounds {
            fa.tick(*t);
            fb.tick(*t);
            let (sa, sb) = (fa.sync.as_mut().unwrap(), fb.sync.as_mut().unwrap());
            while let Some((_, f)) = sa.poll_transmit(*t) {
                sb.handle_frame(*t, a, &f).unwrap();
            }
            while let Some((_, f)) = sb.poll_transmit(*t) {
                sa.handle_frame(*t, b, &f).unwrap();
            }
            *t += Duration::from_millis(5);
        }
    }

    /// Two members of a `jamd` session each found the document when they
    /// meet (nobody invited anybody); one proposes a tempo before their
    /// documents have met. Both end with both participants and the change.
    #[test]
    fn members_of_a_shared_session_found_one_document_together() {
        let (a, b) = (PeerId([1; 16]), PeerId([2; 16]));
        let shared = SharedSession::jamd(
            "00c0ffee00c0ffee",
            "tuesday",
            1_700_000_000_000,
            [1; 32],
            true,
        );
        let mut fa = WorkerSession::new(setup("ann", 1).with_shared(shared.clone()), a);
        let mut fb = WorkerSession::new(
            setup("bob", 2).with_shared(SharedSession {
                public_key: [2; 32],
                ..shared
            }),
            b,
        );
        let mut t = Micros::from_secs(10);
        fa.peer_joined(t, b, None);
        fb.peer_joined(t, a, None);
        assert!(fa.view(None).founder && fb.view(None).founder);
        let at = fb.change_tempo(t, 96.0, None).unwrap();
        run_pair((&mut fa, a), (&mut fb, b), &mut t, 100);
        for f in [&fa, &fb] {
            let v = f.view(None);
            assert_eq!(v.participants, ["ann", "bob"]);
            assert_eq!(v.tempo_changes.len(), 1);
            assert_eq!(
                (v.tempo_changes[0].bpm, v.tempo_changes[0].at_beat),
                (96.0, at)
            );
            assert_eq!(f.name().as_deref(), Some("tuesday"));
        }
        assert_eq!(
            fa.sync().unwrap().doc().heads(),
            fb.sync().unwrap().doc().heads()
        );
    }

    #[test]
    fn a_shared_session_takes_no_measurement_outside_its_mesh() {
        // A measurement before the document (and its mesh) exists, as
        // after `share` left another session's document: without the
        // peer's published alignment it is not a session-time offset.
        let shared = SharedSession::jamd("00c0ffee00c0ffee", "tuesday", 0, [2; 32], false);
        let mut w = WorkerSession::new(setup("bob", 2).with_shared(shared), PeerId([2; 16]));
        w.clock_measured(Micros::from_secs(1), PeerId([1; 16]), 5_000, 1_000);
        assert_eq!(w.view(None).clock_stratum, None);
    }

    #[test]
    fn sharing_a_new_session_leaves_the_old_document_and_keeps_the_same_one() {
        let (a, b) = (PeerId([1; 16]), PeerId([2; 16]));
        let mut fa = WorkerSession::new(setup("ann", 1), a);
        let mut t = Micros::from_secs(10);
        fa.peer_joined(t, b, None);
        let lan = fa.sync().unwrap().doc().heads();
        let nonce = fa.setup.nonce;
        let shared = SharedSession::jamd("00c0ffee00c0ffee", "tuesday", 0, [1; 32], true);
        fa.share(shared.clone());
        assert!(fa.sync().is_none(), "the LAN session's document is left");
        assert_ne!(fa.setup.nonce, nonce, "the new document has a new writer");
        fa.peer_joined(t, b, None);
        let doc = fa.sync().unwrap().doc();
        assert_ne!(doc.heads(), lan);
        assert_eq!(doc.state().unwrap().info.name, "tuesday");
        // The same session again (a rejoin): the document stays.
        let heads = doc.heads();
        fa.share(shared);
        assert_eq!(fa.sync().unwrap().doc().heads(), heads);
        // A member who joins later meets the same genesis.
        let mut fb = WorkerSession::new(
            setup("bob", 2).with_shared(SharedSession::jamd(
                "00c0ffee00c0ffee",
                "tuesday",
                0,
                [2; 32],
                false,
            )),
            b,
        );
        fb.peer_joined(t, a, None);
        run_pair((&mut fa, a), (&mut fb, b), &mut t, 100);
        assert_eq!(fb.view(None).participants, ["ann", "bob"]);
    }

    #[test]
    fn schedule_ahead_proposals_of_two_engines_resolve_alike_on_both() {
        let (a, b) = (PeerId([1; 16]), PeerId([2; 16]));
        let mut fa = WorkerSession::new(setup("ann", 1), a);
        let mut fb = WorkerSession::new(setup("bob", 2), b);
        fb.start_replica();
        let t0 = Micros::from_secs(10);
        fa.peer_joined(t0, b, None);
        fb.peer_joined(t0, a, None);
        fb.clock_measured(t0, a, 0, 1_000);
        assert!(fa.can_propose_ahead());
        assert!(!fb.can_propose_ahead());
        assert!(
            fb.propose_ahead(AheadChange {
                from: Beats::from_beats(8),
                ahead: Beats(1),
            })
            .is_err()
        );
        let mut t = t0;
        let mut step = |fa: &mut WorkerSession, fb: &mut WorkerSession| {
            fa.tick(t);
            fb.tick(t);
            let (sa, sb) = (fa.sync.as_mut().unwrap(), fb.sync.as_mut().unwrap());
            while let Some((_, f)) = sa.poll_transmit(t) {
                sb.handle_frame(t, a, &f).unwrap();
            }
            while let Some((_, f)) = sb.poll_transmit(t) {
                sa.handle_frame(t, b, &f).unwrap();
            }
            // What SessionRuntime::tick does when the document changed.
            fa.ahead_dirty = true;
            fb.ahead_dirty = true;
            t += Duration::from_millis(5);
        };
        for _ in 0..50 {
            step(&mut fa, &mut fb);
        }
        assert!(fb.can_propose_ahead());
        let q = |x: i64| Beats(Beats::PER_BEAT / 32 * x);
        let bar = Beats::from_beats(16);
        // Concurrent proposals for the same bar: each engine sees its own
        // at once, then the larger once the frames crossed.
        fa.propose_ahead(AheadChange {
            from: bar,
            ahead: q(5),
        })
        .unwrap();
        fb.propose_ahead(AheadChange {
            from: bar,
            ahead: q(9),
        })
        .unwrap();
        let mut got_a = fa.take_new_ahead();
        let mut got_b = fb.take_new_ahead();
        assert_eq!(
            got_a,
            vec![AheadChange {
                from: bar,
                ahead: q(5)
            }]
        );
        for _ in 0..50 {
            step(&mut fa, &mut fb);
            got_a.extend(fa.take_new_ahead());
            got_b.extend(fb.take_new_ahead());
        }
        let winner = AheadChange {
            from: bar,
            ahead: q(9),
        };
        assert_eq!(got_a.last(), Some(&winner));
        assert_eq!(got_b, vec![winner]);
        assert_eq!(fa.view(None).ahead_changes, vec![winner]);
        assert_eq!(fb.view(None).ahead_changes, vec![winner]);
        // Nothing new: nothing handed out twice.
        step(&mut fa, &mut fb);
        assert!(fa.take_new_ahead().is_empty());
    }

    #[test]
    fn edits_need_a_session_or_found_one() {
        let mut w = WorkerSession::new(setup("ann", 1), PeerId([1; 16]));
        assert!(w.set_role(Role::Rhythm, None).is_err());
        // A tempo change with no session founds one first.
        let at = w.change_tempo(Micros::from_secs(1), 100.0, None).unwrap();
        assert!(at > Beats::ZERO);
        assert!(
            w.change_tempo(Micros::from_secs(1), f64::NAN, None)
                .is_err()
        );
        w.set_role(
            Role::Rhythm,
            Some(RoleAssignment {
                confidence: jam_session_crdt::Confidence::from_fraction(1.0),
                source: jam_session_crdt::RoleSource::Manual,
            }),
        )
        .unwrap();
        let v = w.view(None);
        assert!(v.founder && v.present);
        assert_eq!(v.tempo_changes[0].bpm, 100.0);
    }
}
