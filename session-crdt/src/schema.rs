//! The document schema: where every value lives in the Automerge document,
//! how it is encoded, and how versions migrate. Every key string of the
//! schema is in this module and nowhere else.
//!
//! # Layout (schema 1.1)
//!
//! ```text
//! ROOT
//! ├─ schema_major: uint          1
//! ├─ schema_minor: uint          0
//! ├─ session: map
//! │  ├─ id: str                  32 hex digits
//! │  ├─ name: str
//! │  ├─ created_unix_ms: int
//! │  ├─ mode: str                live | coherent | interval | predictive
//! │  ├─ interval_beats: uint
//! │  ├─ grid: int                grid step in micro-beats
//! │  ├─ swing: uint              per-mille, 500..=800
//! │  ├─ schedule_ahead: str | uint   "auto" or microseconds
//! │  ├─ key_tonic: uint          0..=11 (absent: no key)
//! │  └─ key_scale: str
//! ├─ origin: map                 beat 0 of the timeline
//! │  ├─ time_us: int             session time
//! │  ├─ tempo: uint              micro-BPM
//! │  ├─ meter_num: uint, meter_den: uint
//! ├─ tempo: map  <id> → map      one entry per tempo/meter change
//! │  ├─ beat: int                micro-beats
//! │  ├─ tempo: uint, meter_num: uint, meter_den: uint
//! │  ├─ made_at: int             session time
//! │  └─ by: str                  peer id
//! ├─ participants: map  <peer id> → map
//! │  ├─ name: str, instrument: str, public_key: bytes(32)
//! │  ├─ joined: int, left: int (absent while present)
//! │  ├─ rtt_median_us: uint, rtt_p99_us: uint, loss_ppm: uint
//! │  ├─ clock_offset_us: int, clock_stratum: uint (absent until aligned)
//! │  ├─ roles: map  rhythm|melody|harmony → map { confidence: uint (‰), source: auto|manual }
//! │  └─ ahead: map  <bar boundary, micro-beats, decimal> → uint   (minor 1)
//! │                 coherent-mode schedule-ahead (micro-beats) they proposed from there on
//! ├─ chat: list of map { author: str, at: int, text: str }
//! └─ markers: list of map { beat: int, label: str, author: str, at: int }
//! ```
//!
//! Only the founder creates the top-level containers (in the genesis
//! change); every other replica starts from the founder's document, so no
//! two replicas ever create the same container concurrently (in Automerge
//! that would make one of them vanish). A participant's entry is created
//! only by that participant. A role is one small map written in a single
//! change, so concurrent assignments of the same role resolve as a whole
//! (Automerge's last-writer-wins by operation id), never as a mix.
//!
//! # Reading
//!
//! [`read_state`] turns the document into a [`SessionState`]. An entry with
//! a wrong type or an unknown name (a buggy or hostile peer, or a newer
//! minor version) is skipped and counted in
//! [`SessionState::invalid_entries`]; since every replica runs the same
//! code on the same document, every replica skips the same entries.
//!
//! # Versions and migration
//!
//! `schema_major` changes when old code would misread the document;
//! `schema_minor` when fields are only added (old code ignores them).
//! - A document with a newer **major** is refused with
//!   [`SchemaError::NewerMajor`] (on load, and when a sync message would
//!   bring one in).
//! - A newer **minor** is read; unknown fields are ignored.
//! - An older major is migrated by [`migrate`] in one change, step by step
//!   (`1 → 2 → …`), each step a function here that rewrites only what
//!   changed, written by the replica that loads the old document. There is
//!   no older major than 1 yet, so [`migrate`] currently only validates.

use crate::model::{
    ChatMessage, ClockInfo, Confidence, ConnectionStats, LatencyMode, Marker, MusicalKey,
    Participant, PitchClass, Profile, Role, RoleAssignment, RoleSource, ScheduleAhead,
    SessionConfig, SessionInfo, SessionSettings, SessionState, Swing, TempoEntry,
};
use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ROOT, ReadDoc, ScalarValue, Value};
use jam_core::{Beats, Meter, PeerId, SessionTime, Tempo, TempoChange, Timeline};
use std::collections::BTreeMap;

/// The schema major version this code writes and reads.
pub const SCHEMA_MAJOR: u64 = 1;
/// The schema minor version this code writes.
pub const SCHEMA_MINOR: u64 = 1;

pub(crate) const K_SCHEMA_MAJOR: &str = "schema_major";
const K_SCHEMA_MINOR: &str = "schema_minor";
const K_SESSION: &str = "session";
const K_ORIGIN: &str = "origin";
pub(crate) const K_TEMPO: &str = "tempo";
pub(crate) const K_PARTICIPANTS: &str = "participants";
const K_CHAT: &str = "chat";
const K_MARKERS: &str = "markers";

const K_ID: &str = "id";
const K_NAME: &str = "name";
const K_CREATED: &str = "created_unix_ms";
const K_MODE: &str = "mode";
const K_INTERVAL: &str = "interval_beats";
const K_GRID: &str = "grid";
const K_SWING: &str = "swing";
const K_SCHEDULE_AHEAD: &str = "schedule_ahead";
const V_AUTO: &str = "auto";
const K_KEY_TONIC: &str = "key_tonic";
const K_KEY_SCALE: &str = "key_scale";

const K_TIME_US: &str = "time_us";
const K_BEAT: &str = "beat";
const K_METER_NUM: &str = "meter_num";
const K_METER_DEN: &str = "meter_den";
const K_MADE_AT: &str = "made_at";
const K_BY: &str = "by";

const K_INSTRUMENT: &str = "instrument";
const K_PUBLIC_KEY: &str = "public_key";
const K_JOINED: &str = "joined";
const K_LEFT: &str = "left";
const K_RTT_MEDIAN: &str = "rtt_median_us";
const K_RTT_P99: &str = "rtt_p99_us";
const K_LOSS: &str = "loss_ppm";
const K_CLOCK_OFFSET: &str = "clock_offset_us";
const K_CLOCK_STRATUM: &str = "clock_stratum";
const K_ROLES: &str = "roles";
const K_CONFIDENCE: &str = "confidence";
const K_SOURCE: &str = "source";
const K_AHEAD: &str = "ahead";

const K_AUTHOR: &str = "author";
const K_AT: &str = "at";
const K_TEXT: &str = "text";
const K_LABEL: &str = "label";

/// Why a document cannot be read as a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The document has no schema version: not a session document (or an
    /// empty replica that has not received the session yet).
    #[error("document has no schema version: not a session document")]
    NotASession,
    /// Written by newer code with an incompatible layout.
    #[error("document schema major version {found} is newer than supported {supported}")]
    NewerMajor {
        /// The document's major version.
        found: u64,
        /// The major version this code reads.
        supported: u64,
    },
    /// A required value is missing or has the wrong type.
    #[error("session document field `{0}` is missing or invalid")]
    Field(&'static str),
}

/// Low-level Automerge failure while writing, with what was being written.
#[derive(Debug, thiserror::Error)]
#[error("writing `{what}` to the session document failed")]
pub struct WriteError {
    what: &'static str,
    #[source]
    source: Box<automerge::AutomergeError>,
}

type WResult<T> = Result<T, WriteError>;

fn w<T>(what: &'static str, r: Result<T, automerge::AutomergeError>) -> WResult<T> {
    r.map_err(|source| WriteError {
        what,
        source: Box::new(source),
    })
}

// ---------------------------------------------------------------- reading

fn scalar<R: ReadDoc>(doc: &R, obj: &ObjId, key: &str) -> Option<ScalarValue> {
    match doc.get(obj, key).ok()?? {
        (Value::Scalar(s), _) => Some(s.into_owned()),
        _ => None,
    }
}

fn get_i64<R: ReadDoc>(doc: &R, obj: &ObjId, key: &str) -> Option<i64> {
    match scalar(doc, obj, key)? {
        ScalarValue::Int(i) => Some(i),
        ScalarValue::Uint(u) => i64::try_from(u).ok(),
        _ => None,
    }
}

fn get_u64<R: ReadDoc>(doc: &R, obj: &ObjId, key: &str) -> Option<u64> {
    match scalar(doc, obj, key)? {
        ScalarValue::Uint(u) => Some(u),
        ScalarValue::Int(i) => u64::try_from(i).ok(),
        _ => None,
    }
}

fn get_str<R: ReadDoc>(doc: &R, obj: &ObjId, key: &str) -> Option<String> {
    match scalar(doc, obj, key)? {
        ScalarValue::Str(s) => Some(s.to_string()),
        _ => None,
    }
}

fn get_obj<R: ReadDoc>(doc: &R, obj: &ObjId, key: &str, ty: ObjType) -> Option<ObjId> {
    match doc.get(obj, key).ok()?? {
        (Value::Object(t), id) if t == ty => Some(id),
        _ => None,
    }
}

fn get_list_map<R: ReadDoc>(doc: &R, list: &ObjId, index: usize) -> Option<ObjId> {
    match doc.get(list, index).ok()?? {
        (Value::Object(ObjType::Map), id) => Some(id),
        _ => None,
    }
}

fn meter_from<R: ReadDoc>(doc: &R, obj: &ObjId) -> Option<Meter> {
    let num = u8::try_from(get_u64(doc, obj, K_METER_NUM)?).ok()?;
    let den = u8::try_from(get_u64(doc, obj, K_METER_DEN)?).ok()?;
    Meter::new(num, den).ok()
}

fn tempo_from<R: ReadDoc>(doc: &R, obj: &ObjId) -> Option<Tempo> {
    Tempo::from_micro_bpm(get_u64(doc, obj, K_TEMPO)?).ok()
}

fn peer_from_str(s: &str) -> Option<PeerId> {
    s.parse().ok()
}

/// The document's schema version, or why it has none usable.
pub fn version<R: ReadDoc>(doc: &R) -> Result<(u64, u64), SchemaError> {
    let major = get_u64(doc, &ROOT, K_SCHEMA_MAJOR).ok_or(SchemaError::NotASession)?;
    let minor = get_u64(doc, &ROOT, K_SCHEMA_MINOR).unwrap_or(0);
    if major > SCHEMA_MAJOR {
        return Err(SchemaError::NewerMajor {
            found: major,
            supported: SCHEMA_MAJOR,
        });
    }
    Ok((major, minor))
}

/// Checks that a loaded document can be used by this code, migrating an
/// older major version in place (see the [module docs](self)). Returns the
/// version it now has.
pub fn migrate<R: ReadDoc>(doc: &R) -> Result<(u64, u64), SchemaError> {
    let v = version(doc)?;
    // Schema 1 is the first: nothing older exists to migrate from. A future
    // major 2 adds `if v.0 == 1 { migrate_1_to_2(tx)?; }` here, in one
    // change committed by the loading replica.
    if v.0 < 1 {
        return Err(SchemaError::Field(K_SCHEMA_MAJOR));
    }
    Ok(v)
}

fn read_settings<R: ReadDoc>(doc: &R, s: &ObjId, invalid: &mut u32) -> SessionSettings {
    let d = SessionSettings::default();
    let mut bad = |ok: bool| {
        if !ok {
            *invalid += 1;
        }
    };
    let mode = get_str(doc, s, K_MODE).and_then(|m| LatencyMode::parse(&m));
    bad(mode.is_some());
    let interval = get_u64(doc, s, K_INTERVAL).and_then(|v| u32::try_from(v).ok());
    bad(interval.is_some());
    let grid = get_i64(doc, s, K_GRID).filter(|g| *g > 0).map(Beats);
    bad(grid.is_some());
    let swing = get_u64(doc, s, K_SWING)
        .and_then(|v| u16::try_from(v).ok())
        .and_then(Swing::from_per_mille);
    bad(swing.is_some());
    let schedule_ahead = match scalar(doc, s, K_SCHEDULE_AHEAD) {
        Some(ScalarValue::Str(a)) if a == V_AUTO => Some(ScheduleAhead::Auto),
        Some(ScalarValue::Uint(u)) => u32::try_from(u).ok().map(ScheduleAhead::Fixed),
        _ => None,
    };
    bad(schedule_ahead.is_some());
    let key = match (get_u64(doc, s, K_KEY_TONIC), get_str(doc, s, K_KEY_SCALE)) {
        (None, _) => None,
        (Some(t), Some(scale)) if scale.len() <= MusicalKey::MAX_SCALE_LEN => u8::try_from(t)
            .ok()
            .and_then(PitchClass::new)
            .map(|tonic| MusicalKey { tonic, scale }),
        _ => None,
    };
    SessionSettings {
        mode: mode.unwrap_or(d.mode),
        interval_beats: interval.unwrap_or(d.interval_beats),
        grid: grid.unwrap_or(d.grid),
        swing: swing.unwrap_or(d.swing),
        schedule_ahead: schedule_ahead.unwrap_or(d.schedule_ahead),
        key,
    }
}

fn read_info<R: ReadDoc>(doc: &R, invalid: &mut u32) -> Result<SessionInfo, SchemaError> {
    let schema = version(doc)?;
    let s = get_obj(doc, &ROOT, K_SESSION, ObjType::Map).ok_or(SchemaError::Field(K_SESSION))?;
    let o = get_obj(doc, &ROOT, K_ORIGIN, ObjType::Map).ok_or(SchemaError::Field(K_ORIGIN))?;
    let id = get_str(doc, &s, K_ID)
        .and_then(|h| peer_from_str(&h))
        .ok_or(SchemaError::Field(K_ID))?;
    Ok(SessionInfo {
        id: id.0,
        name: get_str(doc, &s, K_NAME).unwrap_or_default(),
        schema,
        created_unix_ms: get_i64(doc, &s, K_CREATED).unwrap_or(0),
        origin: SessionTime(get_i64(doc, &o, K_TIME_US).ok_or(SchemaError::Field(K_TIME_US))?),
        tempo: tempo_from(doc, &o).ok_or(SchemaError::Field(K_TEMPO))?,
        meter: meter_from(doc, &o).ok_or(SchemaError::Field(K_METER_NUM))?,
        settings: read_settings(doc, &s, invalid),
    })
}

fn read_roles<R: ReadDoc>(
    doc: &R,
    roles: &ObjId,
    invalid: &mut u32,
) -> [Option<RoleAssignment>; 3] {
    let mut out = [None; 3];
    for item in doc.map_range(roles, ..) {
        let assignment = Role::parse(&item.key).and_then(|role| {
            let id = item.id();
            let confidence = get_u64(doc, &id, K_CONFIDENCE)
                .and_then(|c| u16::try_from(c).ok())
                .filter(|c| *c <= 1000)
                .map(Confidence::from_per_mille)?;
            let source = get_str(doc, &id, K_SOURCE).and_then(|s| RoleSource::parse(&s))?;
            Some((role, RoleAssignment { confidence, source }))
        });
        match assignment {
            Some((role, a)) => out[role.index()] = Some(a),
            None => *invalid += 1,
        }
    }
    out
}

fn read_participant<R: ReadDoc>(
    doc: &R,
    peer: PeerId,
    p: &ObjId,
    invalid: &mut u32,
) -> Option<Participant> {
    let public_key = match scalar(doc, p, K_PUBLIC_KEY)? {
        ScalarValue::Bytes(b) => <[u8; 32]>::try_from(b.as_slice()).ok()?,
        _ => return None,
    };
    let u32_of = |k| {
        get_u64(doc, p, k)
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0)
    };
    let clock = match (
        get_i64(doc, p, K_CLOCK_OFFSET),
        get_u64(doc, p, K_CLOCK_STRATUM).and_then(|s| u8::try_from(s).ok()),
    ) {
        (Some(offset_us), Some(stratum)) => Some(ClockInfo { offset_us, stratum }),
        _ => None,
    };
    let roles = match get_obj(doc, p, K_ROLES, ObjType::Map) {
        Some(r) => read_roles(doc, &r, invalid),
        None => [None; 3],
    };
    let mut ahead = BTreeMap::new();
    if let Some(a) = get_obj(doc, p, K_AHEAD, ObjType::Map) {
        for item in doc.map_range(&a, ..) {
            let from = item.key.parse::<i64>().ok().map(Beats);
            let value = get_u64(doc, &a, &item.key)
                .and_then(|v| i64::try_from(v).ok())
                .map(Beats);
            match (from, value) {
                (Some(from), Some(value)) => {
                    ahead.insert(from, value);
                }
                _ => *invalid += 1,
            }
        }
    }
    Some(Participant {
        peer,
        ahead,
        profile: Profile {
            name: get_str(doc, p, K_NAME)?,
            public_key,
            instrument: get_str(doc, p, K_INSTRUMENT).unwrap_or_default(),
        },
        roles,
        joined: SessionTime(get_i64(doc, p, K_JOINED)?),
        left: get_i64(doc, p, K_LEFT).map(SessionTime),
        connection: ConnectionStats {
            rtt_median_us: u32_of(K_RTT_MEDIAN),
            rtt_p99_us: u32_of(K_RTT_P99),
            loss_ppm: u32_of(K_LOSS),
        },
        clock,
    })
}

fn read_tempo_entry<R: ReadDoc>(doc: &R, id: String, e: &ObjId) -> Option<TempoEntry> {
    Some(TempoEntry {
        change: TempoChange {
            at: Beats(get_i64(doc, e, K_BEAT)?),
            tempo: tempo_from(doc, e)?,
            meter: meter_from(doc, e)?,
        },
        made_at: SessionTime(get_i64(doc, e, K_MADE_AT)?),
        by: peer_from_str(&get_str(doc, e, K_BY)?)?,
        id,
    })
}

fn read_chat<R: ReadDoc>(doc: &R) -> (Vec<ChatMessage>, u32) {
    let (mut chat, mut invalid) = (Vec::new(), 0);
    if let Some(list) = get_obj(doc, &ROOT, K_CHAT, ObjType::List) {
        for i in 0..doc.length(&list) {
            let msg = get_list_map(doc, &list, i).and_then(|m| {
                Some(ChatMessage {
                    author: peer_from_str(&get_str(doc, &m, K_AUTHOR)?)?,
                    at: SessionTime(get_i64(doc, &m, K_AT)?),
                    text: get_str(doc, &m, K_TEXT)?,
                })
            });
            match msg {
                Some(m) => chat.push(m),
                None => invalid += 1,
            }
        }
    }
    (chat, invalid)
}

fn read_markers<R: ReadDoc>(doc: &R) -> (Vec<Marker>, u32) {
    let (mut markers, mut invalid) = (Vec::new(), 0);
    if let Some(list) = get_obj(doc, &ROOT, K_MARKERS, ObjType::List) {
        for i in 0..doc.length(&list) {
            let marker = get_list_map(doc, &list, i).and_then(|m| {
                Some(Marker {
                    beat: Beats(get_i64(doc, &m, K_BEAT)?),
                    label: get_str(doc, &m, K_LABEL)?,
                    author: peer_from_str(&get_str(doc, &m, K_AUTHOR)?)?,
                    at: SessionTime(get_i64(doc, &m, K_AT)?),
                })
            });
            match marker {
                Some(m) => markers.push(m),
                None => invalid += 1,
            }
        }
    }
    (markers, invalid)
}

/// How one keyed entry reads.
enum Entry<T> {
    Absent,
    /// Unreadable (counted as one invalid entry).
    Invalid,
    /// Readable, with this many invalid sub-entries (unknown roles).
    Valid(T, u32),
}

fn participant_entry<R: ReadDoc>(doc: &R, ps: &ObjId, key: &str) -> Entry<Participant> {
    let Some(obj) = get_obj(doc, ps, key, ObjType::Map) else {
        return match doc.get(ps, key) {
            Ok(Some(_)) => Entry::Invalid,
            _ => Entry::Absent,
        };
    };
    let mut sub = 0;
    match peer_from_str(key).and_then(|peer| read_participant(doc, peer, &obj, &mut sub)) {
        Some(p) => Entry::Valid(p, sub),
        None => Entry::Invalid,
    }
}

fn tempo_entry<R: ReadDoc>(doc: &R, ts: &ObjId, key: &str) -> Entry<TempoEntry> {
    let Some(obj) = get_obj(doc, ts, key, ObjType::Map) else {
        return match doc.get(ts, key) {
            Ok(Some(_)) => Entry::Invalid,
            _ => Entry::Absent,
        };
    };
    match read_tempo_entry(doc, key.to_string(), &obj) {
        Some(e) => Entry::Valid(e, 0),
        None => Entry::Invalid,
    }
}

/// Invalid entries by where they are, so an incremental update can replace
/// exactly the counts it re-reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Tally {
    info: u32,
    participants: BTreeMap<String, u32>,
    tempo: BTreeMap<String, u32>,
    chat: u32,
    markers: u32,
}

impl Tally {
    fn total(&self) -> u32 {
        let sum = |m: &BTreeMap<String, u32>| m.values().fold(0u32, |a, b| a.saturating_add(*b));
        self.info
            .saturating_add(sum(&self.participants))
            .saturating_add(sum(&self.tempo))
            .saturating_add(self.chat)
            .saturating_add(self.markers)
    }
}

/// The typed state of a document, kept up to date incrementally from
/// Automerge patches (re-reading only the entries a change touched), with a
/// full re-read when a change touches too much.
#[derive(Debug, Clone)]
pub(crate) struct StateCache {
    state: SessionState,
    tally: Tally,
}

/// More patches than this and a full re-read is cheaper than following them.
const FULL_READ_PATCHES: usize = 2_000;

/// Which parts of the state a set of patches touched.
#[derive(Debug, Default)]
struct Touched {
    all: bool,
    info: bool,
    participants: std::collections::BTreeSet<String>,
    tempo: std::collections::BTreeSet<String>,
    chat: bool,
    markers: bool,
}

fn touched(patches: &[automerge::Patch]) -> Touched {
    use automerge::{PatchAction, Prop};
    let mut t = Touched::default();
    for p in patches {
        let own_key = match &p.action {
            PatchAction::PutMap { key, .. } | PatchAction::DeleteMap { key } => Some(key.as_str()),
            _ => None,
        };
        let mut keys = p.path.iter().filter_map(|(_, prop)| match prop {
            Prop::Map(k) => Some(k.as_str()),
            Prop::Seq(_) => None,
        });
        let top = match p.path.first() {
            Some((_, Prop::Map(k))) => k.as_str(),
            Some((_, Prop::Seq(_))) => continue,
            None => match own_key {
                Some(k) if k == K_SCHEMA_MAJOR || k == K_SCHEMA_MINOR => {
                    t.info = true;
                    continue;
                }
                // A top-level container itself was (re)placed.
                Some(_) => {
                    t.all = true;
                    continue;
                }
                None => continue,
            },
        };
        keys.next();
        let second = keys
            .next()
            .or(if p.path.len() == 1 { own_key } else { None });
        match top {
            K_SESSION | K_ORIGIN => t.info = true,
            K_PARTICIPANTS => match second {
                Some(k) => {
                    t.participants.insert(k.to_string());
                }
                None => t.all = true,
            },
            K_TEMPO => match second {
                Some(k) => {
                    t.tempo.insert(k.to_string());
                }
                None => t.all = true,
            },
            K_CHAT => t.chat = true,
            K_MARKERS => t.markers = true,
            _ => {}
        }
    }
    t
}

impl StateCache {
    /// Reads the whole document. Errors only when the session itself is
    /// missing or unreadable; bad entries are skipped and counted.
    pub(crate) fn read<R: ReadDoc>(doc: &R) -> Result<StateCache, SchemaError> {
        let mut tally = Tally::default();
        let info = read_info(doc, &mut tally.info)?;
        let mut participants = BTreeMap::new();
        if let Some(ps) = get_obj(doc, &ROOT, K_PARTICIPANTS, ObjType::Map) {
            for key in doc.keys(&ps) {
                match participant_entry(doc, &ps, &key) {
                    Entry::Valid(p, sub) => {
                        if sub > 0 {
                            tally.participants.insert(key, sub);
                        }
                        participants.insert(p.peer, p);
                    }
                    Entry::Invalid => {
                        tally.participants.insert(key, 1);
                    }
                    Entry::Absent => {}
                }
            }
        }
        let mut tempo_changes = Vec::new();
        if let Some(ts) = get_obj(doc, &ROOT, K_TEMPO, ObjType::Map) {
            for key in doc.keys(&ts) {
                match tempo_entry(doc, &ts, &key) {
                    Entry::Valid(e, _) => tempo_changes.push(e),
                    Entry::Invalid => {
                        tally.tempo.insert(key, 1);
                    }
                    Entry::Absent => {}
                }
            }
        }
        let (chat, c) = read_chat(doc);
        tally.chat = c;
        let (markers, m) = read_markers(doc);
        tally.markers = m;
        let timeline = Timeline::new(info.origin, info.tempo, info.meter);
        let mut cache = StateCache {
            state: SessionState {
                info,
                participants,
                tempo_changes,
                timeline,
                chat,
                markers,
                invalid_entries: 0,
            },
            tally,
        };
        cache.finish(true);
        Ok(cache)
    }

    fn finish(&mut self, tempo_changed: bool) {
        let s = &mut self.state;
        if tempo_changed {
            s.tempo_changes
                .sort_by(|a, b| a.order_key().cmp(&b.order_key()));
            let changes: Vec<TempoChange> = s.tempo_changes.iter().map(|e| e.change).collect();
            s.timeline = Timeline::build(s.info.origin, s.info.tempo, s.info.meter, &changes);
        }
        s.invalid_entries = self.tally.total();
    }

    /// Brings the cache up to date with `doc` after a change described by
    /// `patches` (from `Automerge::diff` between the old and new heads).
    pub(crate) fn update<R: ReadDoc>(
        &mut self,
        doc: &R,
        patches: &[automerge::Patch],
    ) -> Result<(), SchemaError> {
        if patches.len() > FULL_READ_PATCHES {
            *self = StateCache::read(doc)?;
            return Ok(());
        }
        let t = touched(patches);
        if t.all {
            *self = StateCache::read(doc)?;
            return Ok(());
        }
        let mut tempo_changed = false;
        if t.info {
            let mut info_invalid = 0;
            self.state.info = read_info(doc, &mut info_invalid)?;
            self.tally.info = info_invalid;
            tempo_changed = true;
        }
        if !t.participants.is_empty() {
            let ps = get_obj(doc, &ROOT, K_PARTICIPANTS, ObjType::Map)
                .ok_or(SchemaError::Field(K_PARTICIPANTS))?;
            for key in &t.participants {
                let peer = peer_from_str(key);
                if let Some(peer) = peer {
                    self.state.participants.remove(&peer);
                }
                self.tally.participants.remove(key);
                match participant_entry(doc, &ps, key) {
                    Entry::Valid(p, sub) => {
                        if sub > 0 {
                            self.tally.participants.insert(key.clone(), sub);
                        }
                        self.state.participants.insert(p.peer, p);
                    }
                    Entry::Invalid => {
                        self.tally.participants.insert(key.clone(), 1);
                    }
                    Entry::Absent => {}
                }
            }
        }
        if !t.tempo.is_empty() {
            let ts =
                get_obj(doc, &ROOT, K_TEMPO, ObjType::Map).ok_or(SchemaError::Field(K_TEMPO))?;
            self.state
                .tempo_changes
                .retain(|e| !t.tempo.contains(&e.id));
            for key in &t.tempo {
                self.tally.tempo.remove(key);
                match tempo_entry(doc, &ts, key) {
                    Entry::Valid(e, _) => self.state.tempo_changes.push(e),
                    Entry::Invalid => {
                        self.tally.tempo.insert(key.clone(), 1);
                    }
                    Entry::Absent => {}
                }
            }
            tempo_changed = true;
        }
        if t.chat {
            let (chat, c) = read_chat(doc);
            self.state.chat = chat;
            self.tally.chat = c;
        }
        if t.markers {
            let (markers, m) = read_markers(doc);
            self.state.markers = markers;
            self.tally.markers = m;
        }
        self.finish(tempo_changed);
        Ok(())
    }

    /// The typed state.
    pub(crate) fn state(&self) -> &SessionState {
        &self.state
    }
}

/// Reads the whole document into a [`SessionState`]. Errors only when the
/// session itself is missing or unreadable; bad entries are skipped.
pub fn read_state<R: ReadDoc>(doc: &R) -> Result<SessionState, SchemaError> {
    StateCache::read(doc).map(|c| c.state)
}

/// True if `peer` has an entry in the document.
pub fn has_participant<R: ReadDoc>(doc: &R, peer: PeerId) -> bool {
    participant_obj(doc, peer).is_some()
}

fn participant_obj<R: ReadDoc>(doc: &R, peer: PeerId) -> Option<ObjId> {
    let ps = get_obj(doc, &ROOT, K_PARTICIPANTS, ObjType::Map)?;
    get_obj(doc, &ps, &peer.to_string(), ObjType::Map)
}

/// Number of tempo entries `peer` has written (for fresh ids).
pub fn tempo_entries_by<R: ReadDoc>(doc: &R, peer: PeerId) -> usize {
    let Some(ts) = get_obj(doc, &ROOT, K_TEMPO, ObjType::Map) else {
        return 0;
    };
    let prefix = format!("{peer}.");
    doc.map_range(&ts, ..)
        .filter(|i| i.key.starts_with(&prefix))
        .count()
}

// ---------------------------------------------------------------- writing

/// Writes the genesis of a new session: version, settings, origin and the
/// empty top-level containers.
pub fn write_genesis<T: Transactable>(tx: &mut T, c: &SessionConfig) -> WResult<()> {
    w("schema", tx.put(ROOT, K_SCHEMA_MAJOR, SCHEMA_MAJOR))?;
    w("schema", tx.put(ROOT, K_SCHEMA_MINOR, SCHEMA_MINOR))?;
    let s = w(K_SESSION, tx.put_object(ROOT, K_SESSION, ObjType::Map))?;
    w(K_ID, tx.put(&s, K_ID, PeerId(c.id).to_string()))?;
    w(K_NAME, tx.put(&s, K_NAME, c.name.as_str()))?;
    w(K_CREATED, tx.put(&s, K_CREATED, c.created_unix_ms))?;
    let o = w(K_ORIGIN, tx.put_object(ROOT, K_ORIGIN, ObjType::Map))?;
    w(K_TIME_US, tx.put(&o, K_TIME_US, c.origin.0))?;
    write_tempo_meter(tx, &o, c.tempo, c.meter)?;
    w(K_TEMPO, tx.put_object(ROOT, K_TEMPO, ObjType::Map))?;
    w(
        K_PARTICIPANTS,
        tx.put_object(ROOT, K_PARTICIPANTS, ObjType::Map),
    )?;
    w(K_CHAT, tx.put_object(ROOT, K_CHAT, ObjType::List))?;
    w(K_MARKERS, tx.put_object(ROOT, K_MARKERS, ObjType::List))?;
    let settings = &c.settings;
    write_settings(tx, &s, settings)
}

fn write_tempo_meter<T: Transactable>(
    tx: &mut T,
    obj: &ObjId,
    tempo: Tempo,
    meter: Meter,
) -> WResult<()> {
    w(K_TEMPO, tx.put(obj, K_TEMPO, tempo.micro_bpm()))?;
    w(
        K_METER_NUM,
        tx.put(obj, K_METER_NUM, u64::from(meter.numerator())),
    )?;
    w(
        K_METER_DEN,
        tx.put(obj, K_METER_DEN, u64::from(meter.denominator())),
    )?;
    Ok(())
}

fn session_obj<T: Transactable>(tx: &T) -> WResult<ObjId> {
    get_obj(tx, &ROOT, K_SESSION, ObjType::Map).ok_or(WriteError {
        what: K_SESSION,
        source: Box::new(automerge::AutomergeError::InvalidObjId(K_SESSION.into())),
    })
}

fn container<T: Transactable>(tx: &T, key: &'static str, ty: ObjType) -> WResult<ObjId> {
    get_obj(tx, &ROOT, key, ty).ok_or(WriteError {
        what: key,
        source: Box::new(automerge::AutomergeError::InvalidObjId(key.into())),
    })
}

/// Writes every setting that differs from what the document holds (so a
/// change to one setting writes one value).
pub fn write_settings<T: Transactable>(
    tx: &mut T,
    s: &ObjId,
    new: &SessionSettings,
) -> WResult<()> {
    let mut ignored = 0;
    let old = if get_str(tx, s, K_MODE).is_some() {
        Some(read_settings(tx, s, &mut ignored))
    } else {
        None
    };
    let changed = |f: &dyn Fn(&SessionSettings) -> bool| old.as_ref().is_none_or(|o| !f(o));
    if changed(&|o| o.mode == new.mode) {
        w(K_MODE, tx.put(s, K_MODE, new.mode.as_str()))?;
    }
    if changed(&|o| o.interval_beats == new.interval_beats) {
        w(
            K_INTERVAL,
            tx.put(s, K_INTERVAL, u64::from(new.interval_beats)),
        )?;
    }
    if changed(&|o| o.grid == new.grid) {
        w(K_GRID, tx.put(s, K_GRID, new.grid.0))?;
    }
    if changed(&|o| o.swing == new.swing) {
        w(
            K_SWING,
            tx.put(s, K_SWING, u64::from(new.swing.per_mille())),
        )?;
    }
    if changed(&|o| o.schedule_ahead == new.schedule_ahead) {
        match new.schedule_ahead {
            ScheduleAhead::Auto => w(K_SCHEDULE_AHEAD, tx.put(s, K_SCHEDULE_AHEAD, V_AUTO))?,
            ScheduleAhead::Fixed(us) => {
                w(K_SCHEDULE_AHEAD, tx.put(s, K_SCHEDULE_AHEAD, u64::from(us)))?
            }
        }
    }
    if changed(&|o| o.key == new.key) {
        match &new.key {
            Some(k) => {
                w(
                    K_KEY_TONIC,
                    tx.put(s, K_KEY_TONIC, u64::from(k.tonic.value())),
                )?;
                w(K_KEY_SCALE, tx.put(s, K_KEY_SCALE, k.scale.as_str()))?;
            }
            None => {
                if get_u64(tx, s, K_KEY_TONIC).is_some() {
                    w(K_KEY_TONIC, tx.delete(s, K_KEY_TONIC))?;
                }
                if get_str(tx, s, K_KEY_SCALE).is_some() {
                    w(K_KEY_SCALE, tx.delete(s, K_KEY_SCALE))?;
                }
            }
        }
    }
    Ok(())
}

/// Writes the session's settings (only the values that changed).
pub fn update_settings<T: Transactable>(tx: &mut T, new: &SessionSettings) -> WResult<()> {
    let s = session_obj(tx)?;
    write_settings(tx, &s, new)
}

/// Renames the session.
pub fn set_name<T: Transactable>(tx: &mut T, name: &str) -> WResult<()> {
    let s = session_obj(tx)?;
    w(K_NAME, tx.put(&s, K_NAME, name))?;
    Ok(())
}

/// Creates or refreshes `peer`'s own entry: profile, `joined = at`, no
/// `left`. Existing roles, figures and clock stay.
pub fn write_join<T: Transactable>(
    tx: &mut T,
    peer: PeerId,
    profile: &Profile,
    at: SessionTime,
) -> WResult<()> {
    let ps = container(tx, K_PARTICIPANTS, ObjType::Map)?;
    let key = peer.to_string();
    let p = match get_obj(tx, &ps, &key, ObjType::Map) {
        Some(p) => p,
        None => {
            let p = w(
                K_PARTICIPANTS,
                tx.put_object(&ps, key.as_str(), ObjType::Map),
            )?;
            w(K_ROLES, tx.put_object(&p, K_ROLES, ObjType::Map))?;
            p
        }
    };
    if get_str(tx, &p, K_NAME).as_deref() != Some(profile.name.as_str()) {
        w(K_NAME, tx.put(&p, K_NAME, profile.name.as_str()))?;
    }
    if get_str(tx, &p, K_INSTRUMENT).as_deref() != Some(profile.instrument.as_str()) {
        w(
            K_INSTRUMENT,
            tx.put(&p, K_INSTRUMENT, profile.instrument.as_str()),
        )?;
    }
    let key_differs = !matches!(scalar(tx, &p, K_PUBLIC_KEY),
        Some(ScalarValue::Bytes(b)) if b == profile.public_key);
    if key_differs {
        w(
            K_PUBLIC_KEY,
            tx.put(&p, K_PUBLIC_KEY, profile.public_key.to_vec()),
        )?;
    }
    w(K_JOINED, tx.put(&p, K_JOINED, at.0))?;
    if get_i64(tx, &p, K_LEFT).is_some() {
        w(K_LEFT, tx.delete(&p, K_LEFT))?;
    }
    Ok(())
}

fn participant_or_err<T: Transactable>(tx: &T, peer: PeerId) -> WResult<ObjId> {
    participant_obj(tx, peer).ok_or(WriteError {
        what: K_PARTICIPANTS,
        source: Box::new(automerge::AutomergeError::InvalidObjId(peer.to_string())),
    })
}

/// Marks `peer` as gone since `at`.
pub fn write_leave<T: Transactable>(tx: &mut T, peer: PeerId, at: SessionTime) -> WResult<()> {
    let p = participant_or_err(tx, peer)?;
    w(K_LEFT, tx.put(&p, K_LEFT, at.0))?;
    Ok(())
}

/// Sets or removes one role of `peer`.
pub fn write_role<T: Transactable>(
    tx: &mut T,
    peer: PeerId,
    role: Role,
    assignment: Option<RoleAssignment>,
) -> WResult<()> {
    let p = participant_or_err(tx, peer)?;
    let roles = match get_obj(tx, &p, K_ROLES, ObjType::Map) {
        Some(r) => r,
        None => w(K_ROLES, tx.put_object(&p, K_ROLES, ObjType::Map))?,
    };
    match assignment {
        Some(a) => {
            let r = w(K_ROLES, tx.put_object(&roles, role.as_str(), ObjType::Map))?;
            w(
                K_CONFIDENCE,
                tx.put(&r, K_CONFIDENCE, u64::from(a.confidence.per_mille())),
            )?;
            w(K_SOURCE, tx.put(&r, K_SOURCE, a.source.as_str()))?;
        }
        None => {
            if tx.get(&roles, role.as_str()).ok().flatten().is_some() {
                w(K_ROLES, tx.delete(&roles, role.as_str()))?;
            }
        }
    }
    Ok(())
}

/// Writes the connection figures that changed.
pub fn write_connection<T: Transactable>(
    tx: &mut T,
    peer: PeerId,
    c: ConnectionStats,
) -> WResult<()> {
    let p = participant_or_err(tx, peer)?;
    for (k, v) in [
        (K_RTT_MEDIAN, c.rtt_median_us),
        (K_RTT_P99, c.rtt_p99_us),
        (K_LOSS, c.loss_ppm),
    ] {
        if get_u64(tx, &p, k) != Some(u64::from(v)) {
            w(k, tx.put(&p, k, u64::from(v)))?;
        }
    }
    Ok(())
}

/// Writes the peer's clock alignment.
pub fn write_clock<T: Transactable>(tx: &mut T, peer: PeerId, c: ClockInfo) -> WResult<()> {
    let p = participant_or_err(tx, peer)?;
    w(K_CLOCK_OFFSET, tx.put(&p, K_CLOCK_OFFSET, c.offset_us))?;
    w(
        K_CLOCK_STRATUM,
        tx.put(&p, K_CLOCK_STRATUM, u64::from(c.stratum)),
    )?;
    Ok(())
}

/// Records `peer`'s proposal that the coherent schedule-ahead be `ahead`
/// from bar boundary `from` on. A second proposal of the same peer for the
/// same boundary keeps the larger value, as the session's resolution does
/// across peers. A negative `ahead` is written as zero.
pub fn write_ahead<T: Transactable>(
    tx: &mut T,
    peer: PeerId,
    from: Beats,
    ahead: Beats,
) -> WResult<()> {
    let p = participant_or_err(tx, peer)?;
    let a = match get_obj(tx, &p, K_AHEAD, ObjType::Map) {
        Some(a) => a,
        None => w(K_AHEAD, tx.put_object(&p, K_AHEAD, ObjType::Map))?,
    };
    let key = from.0.to_string();
    let new = ahead.0.max(0).unsigned_abs();
    match get_u64(tx, &a, &key) {
        Some(old) if old >= new => {}
        _ => {
            w(K_AHEAD, tx.put(&a, key.as_str(), new))?;
        }
    }
    Ok(())
}

/// Adds a tempo entry under `id`.
pub fn write_tempo_change<T: Transactable>(tx: &mut T, e: &TempoEntry) -> WResult<()> {
    let ts = container(tx, K_TEMPO, ObjType::Map)?;
    let o = w(K_TEMPO, tx.put_object(&ts, e.id.as_str(), ObjType::Map))?;
    w(K_BEAT, tx.put(&o, K_BEAT, e.change.at.0))?;
    write_tempo_meter(tx, &o, e.change.tempo, e.change.meter)?;
    w(K_MADE_AT, tx.put(&o, K_MADE_AT, e.made_at.0))?;
    w(K_BY, tx.put(&o, K_BY, e.by.to_string()))?;
    Ok(())
}

/// Removes a tempo entry; false if there was none with that id.
pub fn delete_tempo_change<T: Transactable>(tx: &mut T, id: &str) -> WResult<bool> {
    let ts = container(tx, K_TEMPO, ObjType::Map)?;
    if tx.get(&ts, id).ok().flatten().is_none() {
        return Ok(false);
    }
    w(K_TEMPO, tx.delete(&ts, id))?;
    Ok(true)
}

/// Appends a chat message.
pub fn write_chat<T: Transactable>(tx: &mut T, m: &ChatMessage) -> WResult<()> {
    let list = container(tx, K_CHAT, ObjType::List)?;
    let len = tx.length(&list);
    let o = w(K_CHAT, tx.insert_object(&list, len, ObjType::Map))?;
    w(K_AUTHOR, tx.put(&o, K_AUTHOR, m.author.to_string()))?;
    w(K_AT, tx.put(&o, K_AT, m.at.0))?;
    w(K_TEXT, tx.put(&o, K_TEXT, m.text.as_str()))?;
    Ok(())
}

/// Appends a marker.
pub fn write_marker<T: Transactable>(tx: &mut T, m: &Marker) -> WResult<()> {
    let list = container(tx, K_MARKERS, ObjType::List)?;
    let len = tx.length(&list);
    let o = w(K_MARKERS, tx.insert_object(&list, len, ObjType::Map))?;
    w(K_BEAT, tx.put(&o, K_BEAT, m.beat.0))?;
    w(K_LABEL, tx.put(&o, K_LABEL, m.label.as_str()))?;
    w(K_AUTHOR, tx.put(&o, K_AUTHOR, m.author.to_string()))?;
    w(K_AT, tx.put(&o, K_AT, m.at.0))?;
    Ok(())
}

/// Test-only access to raw writes, for documents that break the schema on
/// purpose.
#[cfg(test)]
pub(crate) mod raw {
    pub(crate) use super::{K_PARTICIPANTS, K_SCHEMA_MAJOR, K_TEMPO};
}
