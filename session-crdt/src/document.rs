//! [`SessionDoc`]: one replica of the session document, its typed view and
//! its sync state with every peer.

use crate::error::{EditError, LoadError, SyncError};
use crate::model::{
    ChatMessage, ClockInfo, ConnectionStats, Marker, Profile, Role, RoleAssignment, SessionConfig,
    SessionSettings, SessionState, TempoEntry,
};
use crate::schema::{self, SchemaError};
use crate::snapshot::EnsembleSnapshot;
use automerge::sync::{self, SyncDoc};
use automerge::{ActorId, Automerge, ChangeHash, PatchLog, ReadDoc};
use jam_core::{Beats, Meter, Micros, PeerId, SessionTime, Tempo, TempoChange, Timeline};
use std::collections::BTreeMap;

/// Largest sync message accepted (a full sync of a big session is a few
/// MiB; this bounds what a hostile peer can make us decode).
pub const MAX_SYNC_MESSAGE_LEN: usize = 64 << 20;
/// Longest chat message, marker label, name or instrument, in bytes.
pub const MAX_TEXT_LEN: usize = 4096;

/// Timers of the sync layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncConfig {
    /// How long to wait for any reply from a peer we are not in sync with
    /// before assuming a message was lost and resending from scratch.
    pub resend_after_us: u64,
    /// Longest wait between resends while a peer stays silent (the wait
    /// doubles after each resend up to this).
    pub max_resend_after_us: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            resend_after_us: 2_000_000,
            max_resend_after_us: 60_000_000,
        }
    }
}

/// Sync bookkeeping for one remote peer.
#[derive(Debug, Clone)]
struct PeerSync {
    state: sync::State,
    /// When we last generated a message for this peer.
    last_sent: Option<Micros>,
    /// Resends since we last heard from the peer (the wait doubles each time).
    resends: u32,
    /// Something changed that may give this peer a message to send (a local
    /// change, a message from it, a reset); `poll_transmit` only asks
    /// Automerge about dirty peers, because generating is not free.
    dirty: bool,
}

impl PeerSync {
    fn new() -> PeerSync {
        let mut state = sync::State::new();
        // A fresh state (first contact, or after a restart on either side)
        // asks the other side to forget what it believes it already sent
        // us; otherwise a peer that lost data would wait forever for
        // changes the other side thinks are delivered.
        state.needs_reset = true;
        PeerSync {
            state,
            last_sent: None,
            resends: 0,
            dirty: true,
        }
    }
}

/// A change exported for a capture, in causal order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedChange {
    /// The change's hash (SHA-256 of its bytes, as Automerge defines it).
    pub hash: [u8; 32],
    /// The encoded change; [`SessionDoc::apply_changes`] takes it back.
    pub bytes: Vec<u8>,
}

/// One replica of the session document.
///
/// Method groups (quinn's vocabulary):
/// - **constructors**: [`SessionDoc::create`] (the founder),
///   [`SessionDoc::create_shared`] (one of several founders of the same
///   session), [`SessionDoc::new_replica`] (a joining peer, empty until
///   synced),
///   [`SessionDoc::load`];
/// - **getters** on `&self`: [`state`](SessionDoc::state),
///   [`timeline`](SessionDoc::timeline), [`snapshot`](SessionDoc::snapshot),
///   [`save`](SessionDoc::save), [`heads`](SessionDoc::heads);
/// - **commands** (local edits): [`join`](SessionDoc::join),
///   [`leave`](SessionDoc::leave), [`set_role`](SessionDoc::set_role),
///   [`change_tempo`](SessionDoc::change_tempo), … each one Automerge
///   change, after which the typed state is rebuilt;
/// - **sync input**: [`receive_sync_message`](SessionDoc::receive_sync_message),
///   [`handle_timeout`](SessionDoc::handle_timeout),
///   [`reset_peer`](SessionDoc::reset_peer);
/// - **sync output**: [`poll_transmit`](SessionDoc::poll_transmit) (or
///   [`generate_sync_message`](SessionDoc::generate_sync_message) for one
///   peer) and [`poll_timeout`](SessionDoc::poll_timeout).
///
/// A driver feeds every received message in, then drains `poll_transmit`
/// until it returns `None`, and calls `handle_timeout` at `poll_timeout`.
/// After a local edit it drains `poll_transmit` again. Sync messages must
/// travel over a reliable, ordered channel (`jam_transport::reliable`); the
/// resend timer only recovers from a lost channel or a restarted peer.
pub struct SessionDoc {
    doc: Automerge,
    actor: ActorId,
    me: PeerId,
    /// The typed view; `None` until the document holds a session.
    cache: Option<schema::StateCache>,
    peers: BTreeMap<PeerId, PeerSync>,
    /// Heads up to which changes were exported by `take_new_changes`.
    exported: Vec<ChangeHash>,
    config: SyncConfig,
}

fn actor_for(me: PeerId, nonce: u64) -> ActorId {
    let mut b = [0u8; 24];
    b[..16].copy_from_slice(&me.0);
    b[16..].copy_from_slice(&nonce.to_be_bytes());
    ActorId::from(&b[..])
}

/// The writer of a shared genesis ([`SessionDoc::create_shared`]): a
/// fixed prefix and the session id, so it never equals a participant's
/// writer (those are 24 bytes, this is 28).
fn genesis_actor(session: &[u8; 16]) -> ActorId {
    let mut b = [0u8; 28];
    b[..12].copy_from_slice(b"jam-genesis:");
    b[12..].copy_from_slice(session);
    ActorId::from(&b[..])
}

fn check_len(what: &'static str, s: &str) -> Result<(), EditError> {
    if s.len() > MAX_TEXT_LEN {
        return Err(EditError::TooLong {
            what,
            len: s.len(),
            max: MAX_TEXT_LEN,
        });
    }
    Ok(())
}

impl SessionDoc {
    /// Creates a new session with `founder` as its first participant.
    ///
    /// `nonce` must differ between every instance that writes as this peer
    /// (draw it at random when the process starts): together with the peer
    /// id it names this writer in the document's history.
    pub fn create(
        config: &SessionConfig,
        founder: PeerId,
        profile: &Profile,
        nonce: u64,
    ) -> Result<SessionDoc, EditError> {
        SessionDoc::found(config, founder, profile, nonce, None)
    }

    /// Founds a session that other peers may found at the same time from
    /// the same `config` (a session joined through `jamd`, where no member
    /// invites another and so none is known to be first), with `me` as its
    /// first participant.
    ///
    /// The genesis (the session's settings and its empty participant,
    /// tempo, chat and marker containers) is written as one change by a
    /// writer derived from `config.id` alone, with no timestamp, so every
    /// founder writes the identical change: Automerge keeps one copy when
    /// the documents meet, and every founder's later entries land in the
    /// same containers. With [`SessionDoc::create`] instead, each founder
    /// would make its own containers, and after the merge Automerge would
    /// show one founder's and hide the others' entries. Everything after
    /// the genesis (the join, tempo changes, chat) is written as
    /// `(me, nonce)`, as for any participant.
    pub fn create_shared(
        config: &SessionConfig,
        me: PeerId,
        profile: &Profile,
        nonce: u64,
    ) -> Result<SessionDoc, EditError> {
        SessionDoc::found(config, me, profile, nonce, Some(genesis_actor(&config.id)))
    }

    /// The genesis written by `genesis_writer` (by `(me, nonce)` when
    /// `None`), then `me` joins.
    fn found(
        config: &SessionConfig,
        me: PeerId,
        profile: &Profile,
        nonce: u64,
        genesis_writer: Option<ActorId>,
    ) -> Result<SessionDoc, EditError> {
        check_len("session name", &config.name)?;
        let mut d = SessionDoc::new_replica(me, nonce);
        if let Some(writer) = genesis_writer {
            d.doc.set_actor(writer);
        }
        let written = d.transact(|tx| schema::write_genesis(tx, config));
        d.doc.set_actor(d.actor.clone());
        written?;
        d.full_refresh();
        d.join(profile, config.origin)?;
        Ok(d)
    }

    /// An empty replica for `me`, waiting to receive the session by sync.
    pub fn new_replica(me: PeerId, nonce: u64) -> SessionDoc {
        let actor = actor_for(me, nonce);
        SessionDoc {
            doc: Automerge::new().with_actor(actor.clone()),
            actor,
            me,
            cache: None,
            peers: BTreeMap::new(),
            exported: Vec::new(),
            config: SyncConfig::default(),
        }
    }

    /// Loads a saved document (from [`SessionDoc::save`]).
    ///
    /// Errors: corrupt bytes, not a session, a newer schema major version.
    pub fn load(bytes: &[u8], me: PeerId, nonce: u64) -> Result<SessionDoc, LoadError> {
        if bytes.is_empty() {
            return Err(LoadError::Empty);
        }
        let doc = Automerge::load(bytes).map_err(|source| LoadError::Corrupt {
            len: bytes.len(),
            source: Box::new(source),
        })?;
        schema::migrate(&doc)?;
        let cache = schema::StateCache::read(&doc)?;
        let actor = actor_for(me, nonce);
        let exported = doc.get_heads();
        Ok(SessionDoc {
            doc: doc.with_actor(actor.clone()),
            actor,
            me,
            cache: Some(cache),
            peers: BTreeMap::new(),
            exported,
            config: SyncConfig::default(),
        })
    }

    /// The same replica with other sync timers.
    pub fn with_sync_config(mut self, config: SyncConfig) -> SessionDoc {
        self.config = config;
        self
    }

    /// This replica's peer id.
    pub fn me(&self) -> PeerId {
        self.me
    }

    /// The whole document, compactly encoded (Automerge's compressed
    /// format). [`SessionDoc::load`] reads it back.
    pub fn save(&self) -> Vec<u8> {
        self.doc.save()
    }

    /// The current heads (hashes of the latest changes).
    pub fn heads(&self) -> Vec<[u8; 32]> {
        self.doc.get_heads().iter().map(|h| h.0).collect()
    }

    /// The typed view, or `None` before the session has arrived.
    pub fn state(&self) -> Option<&SessionState> {
        self.cache.as_ref().map(|c| c.state())
    }

    /// The resolved tempo map, or `None` before the session has arrived.
    pub fn timeline(&self) -> Option<&Timeline> {
        self.state().map(|s| &s.timeline)
    }

    /// A fresh snapshot for the engine, or `None` before the session has
    /// arrived. Publish it with [`crate::SnapshotPublisher::publish`].
    pub fn snapshot(&self) -> Option<EnsembleSnapshot> {
        self.state().map(EnsembleSnapshot::from_state)
    }

    /// The Automerge document, read-only (for tools and tests).
    pub fn automerge(&self) -> &Automerge {
        &self.doc
    }

    /// A patch log for an operation that changes the document: active when
    /// there is a typed view to update incrementally (recording patches
    /// while applying is much cheaper than diffing afterwards).
    fn patch_log(&self) -> PatchLog {
        if self.cache.is_some() {
            PatchLog::active()
        } else {
            PatchLog::inactive()
        }
    }

    /// Brings the typed view up to date after the document moved from
    /// `before` to its current heads, from the patches recorded in `log`:
    /// only the entries the change touched are re-read.
    fn refresh(&mut self, before: &[ChangeHash], log: Option<&mut PatchLog>) {
        if self.doc.get_heads() == before && self.cache.is_some() {
            return;
        }
        let updated = match (&mut self.cache, log) {
            (Some(cache), Some(log)) => {
                let patches = self.doc.make_patches(log);
                cache.update(&self.doc, &patches).is_ok()
            }
            _ => false,
        };
        if !updated {
            // Every replica runs the same reader on the same document, so a
            // document that stops being readable does so everywhere; the
            // last readable view is kept meanwhile.
            if let Ok(c) = schema::StateCache::read(&self.doc) {
                self.cache = Some(c);
            }
        }
    }

    fn full_refresh(&mut self) {
        if let Ok(c) = schema::StateCache::read(&self.doc) {
            self.cache = Some(c);
        }
    }

    fn transact<F>(&mut self, f: F) -> Result<(), EditError>
    where
        F: FnOnce(&mut automerge::transaction::Transaction<'_>) -> Result<(), schema::WriteError>,
    {
        self.transact_logged(f).map(|_| ())
    }

    fn transact_logged<F>(&mut self, f: F) -> Result<PatchLog, EditError>
    where
        F: FnOnce(&mut automerge::transaction::Transaction<'_>) -> Result<(), schema::WriteError>,
    {
        self.doc
            .transact_and_log_patches(|tx| f(tx))
            .map(|success| success.patch_log)
            .map_err(|failure| EditError::Write(failure.error))
    }

    fn edit<F>(&mut self, f: F) -> Result<(), EditError>
    where
        F: FnOnce(&mut automerge::transaction::Transaction<'_>) -> Result<(), schema::WriteError>,
    {
        if self.cache.is_none() {
            return Err(EditError::NoSession);
        }
        let before = self.doc.get_heads();
        let mut log = self.transact_logged(f)?;
        self.refresh(&before, Some(&mut log));
        self.mark_all_dirty();
        Ok(())
    }

    fn mark_all_dirty(&mut self) {
        for p in self.peers.values_mut() {
            p.dirty = true;
        }
    }

    fn require_participant(&self, peer: PeerId) -> Result<(), EditError> {
        match self.state() {
            None => Err(EditError::NoSession),
            Some(s) if s.participants.contains_key(&peer) => Ok(()),
            Some(_) => Err(EditError::NotAParticipant(peer)),
        }
    }

    // ------------------------------------------------------------ edits

    /// Joins (or rejoins) the session as this peer at session time `at`.
    pub fn join(&mut self, profile: &Profile, at: SessionTime) -> Result<(), EditError> {
        check_len("name", &profile.name)?;
        check_len("instrument", &profile.instrument)?;
        let me = self.me;
        self.edit(|tx| schema::write_join(tx, me, profile, at))
    }

    /// Leaves the session at session time `at` (the entry stays, marked
    /// as left, so captures can still name the player).
    pub fn leave(&mut self, at: SessionTime) -> Result<(), EditError> {
        self.require_participant(self.me)?;
        let me = self.me;
        self.edit(|tx| schema::write_leave(tx, me, at))
    }

    /// Marks `peer`, another entry of this same device (same profile
    /// public key: an earlier run that ended without leaving), as left at
    /// `at`, so that one device has one present entry and others find its
    /// live one by its key.
    ///
    /// Errors: `peer` is us, is not a participant, or has another key.
    pub fn retire(&mut self, peer: PeerId, at: SessionTime) -> Result<(), EditError> {
        self.require_participant(self.me)?;
        self.require_participant(peer)?;
        let state = self.state().ok_or(EditError::NoSession)?;
        let key = |p: PeerId| state.participants.get(&p).map(|e| e.profile.public_key);
        if peer == self.me || key(peer) != key(self.me) {
            return Err(EditError::NotThisDevice(peer));
        }
        self.edit(|tx| schema::write_leave(tx, peer, at))
    }

    /// Sets (`Some`) or removes (`None`) one role of any participant.
    pub fn set_role(
        &mut self,
        peer: PeerId,
        role: Role,
        assignment: Option<RoleAssignment>,
    ) -> Result<(), EditError> {
        self.require_participant(peer)?;
        self.edit(|tx| schema::write_role(tx, peer, role, assignment))
    }

    /// Publishes this peer's own connection figures.
    pub fn set_connection(&mut self, stats: ConnectionStats) -> Result<(), EditError> {
        self.require_participant(self.me)?;
        let me = self.me;
        self.edit(|tx| schema::write_connection(tx, me, stats))
    }

    /// Publishes this peer's session clock alignment (from
    /// [`jam_core::SessionClock`]) so others can align to it.
    pub fn set_clock(&mut self, clock: ClockInfo) -> Result<(), EditError> {
        self.require_participant(self.me)?;
        let me = self.me;
        self.edit(|tx| schema::write_clock(tx, me, clock))
    }

    /// Changes tempo and meter from beat `at` on; `made_at` is the session
    /// time now (it breaks ties between changes at the same beat: the most
    /// recent wins). Returns the entry's id.
    ///
    /// Pick `at` far enough ahead that the change reaches every peer
    /// before the beat is played (see [`SessionDoc::next_change_beat`]); a
    /// change that arrives after its beat moves the beats after it.
    pub fn change_tempo(
        &mut self,
        at: Beats,
        tempo: Tempo,
        meter: Meter,
        made_at: SessionTime,
    ) -> Result<String, EditError> {
        if self.cache.is_none() {
            return Err(EditError::NoSession);
        }
        let n = schema::tempo_entries_by(&self.doc, self.me);
        let entry = TempoEntry {
            id: format!("{}.{n}", self.me),
            change: TempoChange { at, tempo, meter },
            made_at,
            by: self.me,
        };
        self.edit(|tx| schema::write_tempo_change(tx, &entry))?;
        Ok(entry.id)
    }

    /// Proposes, as this peer, that the coherent-mode schedule-ahead be
    /// `ahead` from bar boundary `from` on (the engine's
    /// `jam_predict::coherent::CoherentScheduler` picks both). Every replica
    /// resolves all proposals alike ([`SessionState::ahead_changes`]: the
    /// largest at a boundary wins). Pick `from` far enough ahead that the
    /// proposal reaches every peer first. A negative `ahead` counts as zero.
    pub fn propose_ahead(&mut self, from: Beats, ahead: Beats) -> Result<(), EditError> {
        self.require_participant(self.me)?;
        let me = self.me;
        self.edit(|tx| schema::write_ahead(tx, me, from, ahead))
    }

    /// Withdraws a tempo change by id; false if it did not exist.
    pub fn remove_tempo_change(&mut self, id: &str) -> Result<bool, EditError> {
        let mut removed = false;
        self.edit(|tx| {
            removed = schema::delete_tempo_change(tx, id)?;
            Ok(())
        })?;
        Ok(removed)
    }

    /// The first bar boundary at least `lead_us` of session time after
    /// `now`: where a tempo change made now should land so that it reaches
    /// everyone first (use at least the schedule-ahead plus one round
    /// trip).
    pub fn next_change_beat(&self, now: SessionTime, lead_us: i64) -> Option<Beats> {
        let tl = self.timeline()?;
        let earliest = tl.beat_at(now.offset_by(lead_us));
        let b = tl.bar_at(earliest);
        Some(if b.offset == Beats::ZERO {
            earliest
        } else {
            tl.next_bar(earliest)
        })
    }

    /// Replaces the session settings (only the values that differ are
    /// written).
    pub fn set_settings(&mut self, settings: &SessionSettings) -> Result<(), EditError> {
        if let Some(k) = &settings.key
            && k.scale.len() > crate::model::MusicalKey::MAX_SCALE_LEN
        {
            return Err(EditError::TooLong {
                what: "scale name",
                len: k.scale.len(),
                max: crate::model::MusicalKey::MAX_SCALE_LEN,
            });
        }
        self.edit(|tx| schema::update_settings(tx, settings))
    }

    /// Renames the session.
    pub fn set_name(&mut self, name: &str) -> Result<(), EditError> {
        check_len("session name", name)?;
        self.edit(|tx| schema::set_name(tx, name))
    }

    /// Posts a chat message as this peer.
    pub fn post_chat(&mut self, at: SessionTime, text: &str) -> Result<(), EditError> {
        check_len("chat message", text)?;
        let m = ChatMessage {
            author: self.me,
            at,
            text: text.to_string(),
        };
        self.edit(|tx| schema::write_chat(tx, &m))
    }

    /// Sets a marker at `beat`.
    pub fn add_marker(
        &mut self,
        beat: Beats,
        label: &str,
        at: SessionTime,
    ) -> Result<(), EditError> {
        check_len("marker label", label)?;
        let m = Marker {
            beat,
            label: label.to_string(),
            author: self.me,
            at,
        };
        self.edit(|tx| schema::write_marker(tx, &m))
    }

    // ------------------------------------------------------------ changes

    /// Changes made or received since the last call (all changes on the
    /// first call), in causal order: what a capture records. Replaying them
    /// with [`SessionDoc::apply_changes`] into an empty replica rebuilds
    /// the document.
    pub fn take_new_changes(&mut self) -> Vec<ExportedChange> {
        let changes = self.doc.get_changes(&self.exported);
        self.exported = self.doc.get_heads();
        changes
            .into_iter()
            .map(|c| ExportedChange {
                hash: c.hash().0,
                bytes: c.raw_bytes().to_vec(),
            })
            .collect()
    }

    /// Applies changes from [`SessionDoc::take_new_changes`] (each one
    /// checked against its checksum first). On any error the document is
    /// left as it was.
    pub fn apply_changes(&mut self, changes: &[&[u8]]) -> Result<(), LoadError> {
        let before = self.doc.get_heads();
        let mut parsed = Vec::with_capacity(changes.len());
        for (index, c) in changes.iter().enumerate() {
            let change = parse_change(c).ok_or(LoadError::BadChange { index })?;
            parsed.push(change);
        }
        let active = self.cache.is_some();
        let mut log = self.patch_log();
        if let Err(source) = self.doc.apply_changes_log_patches(parsed, &mut log) {
            self.rollback(&before);
            return Err(LoadError::Corrupt {
                len: changes.iter().map(|c| c.len()).sum(),
                source: Box::new(source),
            });
        }
        if let Err(SchemaError::NewerMajor { found, supported }) = schema::version(&self.doc) {
            self.rollback(&before);
            return Err(SchemaError::NewerMajor { found, supported }.into());
        }
        self.refresh(&before, active.then_some(&mut log));
        self.mark_all_dirty();
        Ok(())
    }

    fn rollback(&mut self, heads: &[ChangeHash]) {
        // Automerge cannot undo applied changes; rebuild the document from
        // its own history up to the old heads. Only taken on the error path.
        if self.doc.get_heads() == heads {
            return;
        }
        match self.doc.fork_at(heads) {
            Ok(doc) => self.doc = doc.with_actor(self.actor.clone()),
            Err(_) => {
                // `heads` came from this document, so fork_at cannot fail;
                // if it ever did, keeping the newer document is safer than
                // losing it.
            }
        }
        self.full_refresh();
    }

    // ------------------------------------------------------------ sync

    /// Starts syncing with `peer` (no effect if already known).
    pub fn add_peer(&mut self, peer: PeerId) {
        self.peers.entry(peer).or_insert_with(PeerSync::new);
    }

    /// Forgets everything about the sync with `peer` and starts over, as on
    /// first contact. Call it when the channel to the peer was re-established
    /// (either side may have restarted).
    pub fn reset_peer(&mut self, peer: PeerId) {
        self.peers.insert(peer, PeerSync::new());
    }

    /// Stops syncing with `peer`.
    pub fn remove_peer(&mut self, peer: PeerId) {
        self.peers.remove(&peer);
    }

    /// The peers we sync with.
    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.keys().copied()
    }

    /// True when `peer` has told us heads equal to ours.
    pub fn is_in_sync_with(&self, peer: PeerId) -> bool {
        let heads = self.doc.get_heads();
        self.peers
            .get(&peer)
            .is_some_and(|p| p.state.their_heads.as_ref() == Some(&heads))
    }

    /// The next sync message for `peer`, if there is anything to say.
    pub fn generate_sync_message(&mut self, now: Micros, peer: PeerId) -> Option<Vec<u8>> {
        let p = self.peers.entry(peer).or_insert_with(PeerSync::new);
        if let Some(direct) = direct_changes(&self.doc, &mut p.state) {
            p.last_sent = Some(now);
            return Some(direct);
        }
        let msg = self.doc.generate_sync_message(&mut p.state)?;
        p.last_sent = Some(now);
        Some(msg.encode())
    }

    /// The next sync message for any peer, in peer order; `None` when no
    /// peer needs one. Drain it after every input.
    pub fn poll_transmit(&mut self, now: Micros) -> Option<(PeerId, Vec<u8>)> {
        let dirty: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.dirty)
            .map(|(id, _)| *id)
            .collect();
        for peer in dirty {
            match self.generate_sync_message(now, peer) {
                // Stay dirty: the next poll asks again (and usually gets
                // `None`, which clears the flag).
                Some(m) => return Some((peer, m)),
                None => {
                    if let Some(p) = self.peers.get_mut(&peer) {
                        p.dirty = false;
                    }
                }
            }
        }
        None
    }

    /// Applies a sync message from `peer`. Returns true if the document
    /// changed (the caller then republishes the snapshot).
    ///
    /// On error (malformed bytes, changes that cannot be applied, a result
    /// with a newer schema) the document and the sync state for `peer` are
    /// left exactly as they were.
    pub fn receive_sync_message(
        &mut self,
        now: Micros,
        peer: PeerId,
        bytes: &[u8],
    ) -> Result<bool, SyncError> {
        let _ = now;
        if bytes.len() > MAX_SYNC_MESSAGE_LEN {
            return Err(SyncError::TooLarge {
                peer,
                len: bytes.len(),
                max: MAX_SYNC_MESSAGE_LEN,
            });
        }
        if bytes.first() == Some(&DIRECT_CHANGES) {
            return self.receive_direct(peer, bytes);
        }
        let msg = sync::Message::decode(bytes).map_err(|source| SyncError::Decode {
            peer,
            len: bytes.len(),
            source: Box::new(source),
        })?;
        // Automerge skips a corrupt chunk inside a message silently (partial
        // load); check every chunk first so that corruption is an error.
        for (index, chunk) in msg.changes.iter().enumerate() {
            if automerge::Change::from_bytes(chunk.to_vec()).is_ok() {
                if parse_change(chunk).is_none() {
                    return Err(SyncError::BadChunk {
                        peer,
                        index,
                        source: None,
                    });
                }
            } else {
                // Not a change: a whole-document chunk (Automerge sends one
                // when more than a third of the document is missing). Check
                // it as Automerge will load it: checksum and structure.
                let options = automerge::LoadOptions::new()
                    .on_partial_load(automerge::OnPartialLoad::Ignore)
                    .verification_mode(automerge::VerificationMode::Check);
                if let Err(source) = Automerge::load_with_options(chunk, options) {
                    return Err(SyncError::BadChunk {
                        peer,
                        index,
                        source: Some(Box::new(source)),
                    });
                }
            }
        }
        // What the sender believes we both have; compared below.
        let their_last_sync = msg.have.first().map(|h| h.last_sync.clone());
        let before = self.doc.get_heads();
        let p = self.peers.entry(peer).or_insert_with(PeerSync::new);
        let saved_state = p.state.clone();
        let active = self.cache.is_some();
        let mut log = if active {
            PatchLog::active()
        } else {
            PatchLog::inactive()
        };
        if let Err(source) = self
            .doc
            .receive_sync_message_log_patches(&mut p.state, msg, &mut log)
        {
            p.state = saved_state;
            self.rollback(&before);
            return Err(SyncError::Apply {
                peer,
                source: Box::new(source),
            });
        }
        if let Err(e @ SchemaError::NewerMajor { .. }) = schema::version(&self.doc) {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.state = saved_state;
            }
            self.rollback(&before);
            return Err(SyncError::Schema { peer, source: e });
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.resends = 0;
            p.last_sent = None;
            // Send what the peer explicitly asks for even if we believe we
            // sent it: the message carrying it may have been lost. Without
            // this, Automerge's sent-hash filter makes both sides ping-pong
            // forever.
            if let Some(need) = &p.state.their_need {
                for h in need {
                    p.state.sent_hashes.remove(h);
                }
            }
            // The sender has what we have but does not know it (its last
            // sync point is older): answer, so it learns our heads and stops
            // waiting. Automerge alone stays silent here, which leaves the
            // sender's view stale and its resend timer running forever.
            let heads = self.doc.get_heads();
            if p.state.their_heads.as_ref() == Some(&heads)
                && their_last_sync.is_some_and(|l| l != heads)
            {
                p.state.last_sent_heads.clear();
            }
        }
        let changed = self.doc.get_heads() != before;
        if changed {
            self.refresh(&before, active.then_some(&mut log));
            self.mark_all_dirty();
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.dirty = true;
        }
        Ok(changed)
    }

    fn receive_direct(&mut self, peer: PeerId, bytes: &[u8]) -> Result<bool, SyncError> {
        let changes = decode_direct(bytes).ok_or(SyncError::Direct {
            peer,
            len: bytes.len(),
        })?;
        let mut parsed = Vec::with_capacity(changes.len());
        for (index, c) in changes.into_iter().enumerate() {
            let change = parse_change(c).ok_or(SyncError::BadChunk {
                peer,
                index,
                source: None,
            })?;
            parsed.push(change);
        }
        let before = self.doc.get_heads();
        let active = self.cache.is_some();
        let mut log = self.patch_log();
        if let Err(source) = self.doc.apply_changes_log_patches(parsed, &mut log) {
            self.rollback(&before);
            return Err(SyncError::Apply {
                peer,
                source: Box::new(source),
            });
        }
        if let Err(e @ SchemaError::NewerMajor { .. }) = schema::version(&self.doc) {
            self.rollback(&before);
            return Err(SyncError::Schema { peer, source: e });
        }
        let p = self.peers.entry(peer).or_insert_with(PeerSync::new);
        p.resends = 0;
        p.dirty = true;
        let changed = self.doc.get_heads() != before;
        if changed {
            self.refresh(&before, active.then_some(&mut log));
            self.mark_all_dirty();
        }
        Ok(changed)
    }

    fn resend_deadline(&self, p: &PeerSync, heads: &[ChangeHash]) -> Option<Micros> {
        let sent = p.last_sent?;
        if !p.state.in_flight || p.state.their_heads.as_deref() == Some(heads) {
            return None;
        }
        let wait = self
            .config
            .resend_after_us
            .saturating_mul(1u64 << p.resends.min(20))
            .min(self.config.max_resend_after_us);
        Some(Micros(sent.0.saturating_add(wait)))
    }

    /// The earliest time [`SessionDoc::handle_timeout`] must run: a message
    /// to a peer that is not in sync has gone unanswered.
    pub fn poll_timeout(&self) -> Option<Micros> {
        let heads = self.doc.get_heads();
        self.peers
            .values()
            .filter_map(|p| self.resend_deadline(p, &heads))
            .min()
    }

    /// Resends to every peer whose reply is overdue: the in-flight state is
    /// dropped and the peer is asked to forget what it sent us, so the next
    /// [`SessionDoc::poll_transmit`] starts that sync over. This never
    /// stalls on a lost message or a peer that restarted.
    pub fn handle_timeout(&mut self, now: Micros) {
        let heads = self.doc.get_heads();
        let overdue: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| self.resend_deadline(p, &heads).is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            if let Some(p) = self.peers.get_mut(&id) {
                p.state.in_flight = false;
                p.state.sent_hashes.clear();
                p.state.last_sent_heads.clear();
                p.state.needs_reset = true;
                p.resends = p.resends.saturating_add(1);
                p.dirty = true;
            }
        }
    }
}

/// Parses one change and checks its checksum (Automerge's `Change` parser
/// does not: the header's four checksum bytes must equal the start of the
/// change's hash, which covers the uncompressed chunk).
fn parse_change(bytes: &[u8]) -> Option<automerge::Change> {
    let change = automerge::Change::from_bytes(bytes.to_vec()).ok()?;
    (bytes.get(4..8)? == &change.hash().0[..4]).then_some(change)
}

/// First byte of a direct-changes message. Automerge sync messages start
/// with 0x42 or 0x43, so the two never collide.
const DIRECT_CHANGES: u8 = 0x01;
/// Largest batch of changes pushed directly (bigger ones go through the
/// sync protocol, whose bloom filters pay off there).
const MAX_DIRECT_BYTES: usize = 4096;

/// The fast path for the common case of a peer that is in sync and then
/// misses only our newest local changes (a role change, a tempo change):
/// instead of a full sync message (heads, a bloom filter of what we have,
/// then the changes), push the raw changes in a tiny envelope
///
/// ```text
/// 01 | count u16 | (len u32 | change bytes) × count
/// ```
///
/// and record them in the sync state as sent, exactly as Automerge would
/// have. The peer's next ordinary sync message (carrying its new heads)
/// acknowledges them; if this message is lost, the resend timer falls back
/// to the full protocol.
fn direct_changes(doc: &Automerge, state: &mut sync::State) -> Option<Vec<u8>> {
    let their_heads = state.their_heads.as_ref()?;
    if state.in_flight || !state.have_responded || their_heads.is_empty() {
        return None;
    }
    if state.last_sent_heads != *their_heads
        || !their_heads
            .iter()
            .all(|h| doc.get_change_by_hash(h).is_some())
    {
        return None;
    }
    let ours = doc.get_heads();
    if ours == *their_heads {
        return None;
    }
    let changes = doc.get_changes(their_heads);
    if changes.is_empty()
        || changes.len() > usize::from(u16::MAX)
        || changes
            .iter()
            .any(|c| state.sent_hashes.contains(&c.hash()))
    {
        return None;
    }
    let total: usize = changes.iter().map(|c| c.raw_bytes().len() + 4).sum();
    if total > MAX_DIRECT_BYTES {
        return None;
    }
    let mut out = Vec::with_capacity(3 + total);
    out.push(DIRECT_CHANGES);
    out.extend_from_slice(&(changes.len() as u16).to_be_bytes());
    for c in &changes {
        let b = c.raw_bytes();
        out.extend_from_slice(&(b.len() as u32).to_be_bytes());
        out.extend_from_slice(b);
        state.sent_hashes.insert(c.hash());
    }
    state.last_sent_heads = ours;
    state.in_flight = true;
    Some(out)
}

/// Splits a direct-changes message; `None` if malformed.
fn decode_direct(bytes: &[u8]) -> Option<Vec<&[u8]>> {
    let rest = bytes.strip_prefix(&[DIRECT_CHANGES])?;
    let (count, mut rest) = rest.split_first_chunk::<2>()?;
    let count = u16::from_be_bytes(*count);
    let mut out = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let (len, r) = rest.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        if r.len() < len {
            return None;
        }
        out.push(&r[..len]);
        rest = &r[len..];
    }
    rest.is_empty().then_some(out)
}

impl std::fmt::Debug for SessionDoc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionDoc")
            .field("me", &self.me)
            .field("heads", &self.doc.get_heads())
            .field("peers", &self.peers.len())
            .finish()
    }
}
