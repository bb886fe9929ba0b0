//! The typed view of a session: what the document means, without Automerge.
//!
//! [`SessionState`] is rebuilt from the document after every change (see
//! [`crate::SessionDoc::state`]); the engine reads the smaller
//! [`crate::EnsembleSnapshot`] instead. Every value type here has a fixed,
//! exact representation (integers, no floats), so two replicas holding the
//! same document hold `==` states.

pub use jam_core::LatencyMode;
use jam_core::{Beats, Meter, PeerId, SessionTime, Tempo, TempoChange, Timeline};
use std::collections::BTreeMap;
use std::fmt;

/// A musical role a participant plays; several at once are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Drums, percussion, rhythmic comping: quantized tightly.
    Rhythm,
    /// A lead line: expression kept.
    Melody,
    /// Chords and pads: chord notes grouped.
    Harmony,
}

impl Role {
    /// Every role, in the order of [`Role::index`].
    pub const ALL: [Role; 3] = [Role::Rhythm, Role::Melody, Role::Harmony];

    /// Position in fixed-size per-role arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The stored (and displayed) name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Rhythm => "rhythm",
            Role::Melody => "melody",
            Role::Harmony => "harmony",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Role> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who decided a role: role detection or a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoleSource {
    /// Detected from the notes played.
    Auto,
    /// Set by hand.
    Manual,
}

impl RoleSource {
    /// The stored (and displayed) name.
    pub const fn as_str(self) -> &'static str {
        match self {
            RoleSource::Auto => "auto",
            RoleSource::Manual => "manual",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<RoleSource> {
        match s {
            "auto" => Some(RoleSource::Auto),
            "manual" => Some(RoleSource::Manual),
            _ => None,
        }
    }
}

/// A confidence in whole per-mille (0 = none, 1000 = certain), exact so that
/// replicas compare equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Confidence(u16);

impl Confidence {
    /// Certainty.
    pub const FULL: Confidence = Confidence(1000);

    /// From per-mille, clamped to 1000.
    pub const fn from_per_mille(p: u16) -> Confidence {
        Confidence(if p > 1000 { 1000 } else { p })
    }

    /// From a fraction in `0..=1` (clamped; NaN is zero).
    pub fn from_fraction(x: f32) -> Confidence {
        Confidence((x.clamp(0.0, 1.0) * 1000.0).round() as u16)
    }

    /// Per-mille.
    pub const fn per_mille(self) -> u16 {
        self.0
    }

    /// As a fraction in `0..=1`.
    pub fn fraction(self) -> f32 {
        f32::from(self.0) / 1000.0
    }
}

/// One role held by a participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoleAssignment {
    /// How sure the source is.
    pub confidence: Confidence,
    /// Who decided.
    pub source: RoleSource,
}

/// The swing of the grid: the share of each pair of grid steps taken by the
/// first one, in per-mille. 500 is straight, 667 a triplet feel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Swing(u16);

impl Swing {
    /// No swing.
    pub const STRAIGHT: Swing = Swing(500);

    /// A swing in per-mille; `None` outside `500..=800`.
    pub const fn from_per_mille(p: u16) -> Option<Swing> {
        if p >= 500 && p <= 800 {
            Some(Swing(p))
        } else {
            None
        }
    }

    /// Per-mille.
    pub const fn per_mille(self) -> u16 {
        self.0
    }
}

/// How far ahead of its beat a note is scheduled in coherent mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ScheduleAhead {
    /// Tuned by the engine from the ensemble's measured p99 one-way delay.
    #[default]
    Auto,
    /// A fixed offset in microseconds.
    Fixed(u32),
}

/// A pitch class, 0 = C … 11 = B.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PitchClass(u8);

impl PitchClass {
    const NAMES: [&'static str; 12] = [
        "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B",
    ];

    /// A pitch class; `None` above 11.
    pub const fn new(pc: u8) -> Option<PitchClass> {
        if pc < 12 { Some(PitchClass(pc)) } else { None }
    }

    /// 0 = C … 11 = B.
    pub const fn value(self) -> u8 {
        self.0
    }

    /// Parses `C`, `C#`, `Db`, … (case-insensitive letter).
    pub fn parse(s: &str) -> Option<PitchClass> {
        let mut chars = s.chars();
        let base: i8 = match chars.next()?.to_ascii_uppercase() {
            'C' => 0,
            'D' => 2,
            'E' => 4,
            'F' => 5,
            'G' => 7,
            'A' => 9,
            'B' => 11,
            _ => return None,
        };
        let shift: i8 = match chars.as_str() {
            "" => 0,
            "#" => 1,
            "b" => -1,
            _ => return None,
        };
        Some(PitchClass((base + shift).rem_euclid(12) as u8))
    }
}

impl fmt::Display for PitchClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::NAMES[usize::from(self.0 % 12)])
    }
}

/// The session's key: a tonic and a scale name (`major`, `minor`, `dorian`,
/// … free-form, at most [`MusicalKey::MAX_SCALE_LEN`] bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MusicalKey {
    /// The tonic.
    pub tonic: PitchClass,
    /// The scale name.
    pub scale: String,
}

impl MusicalKey {
    /// Longest scale name accepted.
    pub const MAX_SCALE_LEN: usize = 32;
}

impl fmt::Display for MusicalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.tonic, self.scale)
    }
}

/// Session-wide musical settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionSettings {
    /// The latency mode.
    pub mode: LatencyMode,
    /// Interval length in beats (interval mode).
    pub interval_beats: u32,
    /// Quantization grid step (e.g. a sixteenth note = a quarter beat).
    pub grid: Beats,
    /// Swing of the grid.
    pub swing: Swing,
    /// Schedule-ahead in coherent mode.
    pub schedule_ahead: ScheduleAhead,
    /// Key and scale, if the session has set one.
    pub key: Option<MusicalKey>,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            mode: LatencyMode::Live,
            interval_beats: 16,
            grid: Beats(Beats::PER_BEAT / 4),
            swing: Swing::STRAIGHT,
            schedule_ahead: ScheduleAhead::Auto,
            key: None,
        }
    }
}

/// What a new session is created with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionConfig {
    /// Session id (random, from the caller).
    pub id: [u8; 16],
    /// Display name.
    pub name: String,
    /// Wall-clock creation time, Unix milliseconds (from the caller).
    pub created_unix_ms: i64,
    /// Session time of beat 0.
    pub origin: SessionTime,
    /// Starting tempo.
    pub tempo: Tempo,
    /// Starting meter.
    pub meter: Meter,
    /// Musical settings.
    pub settings: SessionSettings,
}

/// Identity and settings of the session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionInfo {
    /// Session id.
    pub id: [u8; 16],
    /// Display name.
    pub name: String,
    /// Schema version the document was written with: (major, minor).
    pub schema: (u64, u64),
    /// Wall-clock creation time, Unix milliseconds.
    pub created_unix_ms: i64,
    /// Session time of beat 0.
    pub origin: SessionTime,
    /// Starting tempo.
    pub tempo: Tempo,
    /// Starting meter.
    pub meter: Meter,
    /// Musical settings.
    pub settings: SessionSettings,
}

/// What a participant says about themselves when joining.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Profile {
    /// Display name.
    pub name: String,
    /// X25519 public key for the secure channel and sealed files.
    pub public_key: [u8; 32],
    /// The instrument played (free-form).
    pub instrument: String,
}

/// Connection figures each peer measures and publishes for itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ConnectionStats {
    /// Median round trip to the other members, µs.
    pub rtt_median_us: u32,
    /// 99th percentile round trip, µs.
    pub rtt_p99_us: u32,
    /// Packet loss, parts per million.
    pub loss_ppm: u32,
}

/// A peer's published session clock alignment (see
/// [`jam_core::SessionClock`]): what a joining peer needs to align to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClockInfo {
    /// `session - local` in µs.
    pub offset_us: i64,
    /// Stratum (0 = founder).
    pub stratum: u8,
}

/// One member of the session (present or departed).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Participant {
    /// Stable identity.
    pub peer: PeerId,
    /// Name, key, instrument.
    pub profile: Profile,
    /// Roles held, indexed by [`Role::index`].
    pub roles: [Option<RoleAssignment>; 3],
    /// When they last joined.
    pub joined: SessionTime,
    /// When they left, if they are not present.
    pub left: Option<SessionTime>,
    /// Their connection figures.
    pub connection: ConnectionStats,
    /// Their clock alignment, once aligned.
    pub clock: Option<ClockInfo>,
    /// The coherent-mode schedule-ahead changes they proposed: bar
    /// boundary → schedule-ahead from it on. Written only by them; the
    /// session's outcome is [`SessionState::ahead_changes`].
    pub ahead: BTreeMap<Beats, Beats>,
}

impl Participant {
    /// True while they are in the session.
    pub fn is_present(&self) -> bool {
        self.left.is_none()
    }

    /// The roles they hold, in [`Role::ALL`] order.
    pub fn roles(&self) -> impl Iterator<Item = (Role, RoleAssignment)> + '_ {
        Role::ALL
            .into_iter()
            .filter_map(|r| self.roles[r.index()].map(|a| (r, a)))
    }
}

/// A tempo change as stored, with its tie-breaking metadata.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TempoEntry {
    /// Unique id (`<peer hex>.<n>`).
    pub id: String,
    /// What changes, from which beat.
    pub change: TempoChange,
    /// Session time at which the change was made.
    pub made_at: SessionTime,
    /// Who made it.
    pub by: PeerId,
}

impl TempoEntry {
    /// The resolution order: by beat, then (for changes at the same beat)
    /// by the time they were made, then by peer id, then by id. The timeline
    /// takes the last entry at each beat, so the most recent change wins.
    pub fn order_key(&self) -> (Beats, SessionTime, PeerId, &str) {
        (self.change.at, self.made_at, self.by, self.id.as_str())
    }
}

/// One coherent-mode schedule-ahead change as the session resolves it:
/// from bar boundary `from` on, events intended for a beat render
/// `ahead` later (see `jam_predict::coherent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AheadEntry {
    /// The bar boundary it takes effect at.
    pub from: Beats,
    /// The schedule-ahead from there on.
    pub ahead: Beats,
    /// The participant whose proposal won (see
    /// [`SessionState::ahead_changes`]).
    pub by: PeerId,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChatMessage {
    /// Who wrote it.
    pub author: PeerId,
    /// Session time it was posted.
    pub at: SessionTime,
    /// The text.
    pub text: String,
}

/// A named position on the timeline ("chorus", "take 3").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Marker {
    /// Where.
    pub beat: Beats,
    /// What.
    pub label: String,
    /// Who set it.
    pub author: PeerId,
    /// Session time it was set.
    pub at: SessionTime,
}

/// Everything the document says, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    /// Identity and settings.
    pub info: SessionInfo,
    /// Every participant ever joined, by peer id.
    pub participants: BTreeMap<PeerId, Participant>,
    /// Tempo changes in resolution order ([`TempoEntry::order_key`]).
    pub tempo_changes: Vec<TempoEntry>,
    /// The resolved tempo map.
    pub timeline: Timeline,
    /// Chat, in document order.
    pub chat: Vec<ChatMessage>,
    /// Markers, in document order.
    pub markers: Vec<Marker>,
    /// Entries that could not be read (wrong types, unknown names) and were
    /// left out of this view. Every replica skips the same ones.
    pub invalid_entries: u32,
}

impl SessionState {
    /// Participants currently present.
    pub fn present(&self) -> impl Iterator<Item = &Participant> {
        self.participants.values().filter(|p| p.is_present())
    }

    /// The session's schedule-ahead changes, by boundary: every proposal
    /// of every participant (present or departed, since every engine
    /// applied it while it was there), and at a boundary several proposed
    /// for, the largest schedule-ahead (the one that covers every
    /// proposer's measured delay), ties to the smallest peer id. The
    /// outcome depends only on the set of proposals, so every replica that
    /// holds the same changes computes the same list, in whatever order
    /// they arrived.
    pub fn ahead_changes(&self) -> Vec<AheadEntry> {
        let mut best: BTreeMap<Beats, AheadEntry> = BTreeMap::new();
        for p in self.participants.values() {
            for (&from, &ahead) in &p.ahead {
                let e = AheadEntry {
                    from,
                    ahead,
                    by: p.peer,
                };
                best.entry(from)
                    .and_modify(|b| {
                        if (e.ahead, std::cmp::Reverse(e.by)) > (b.ahead, std::cmp::Reverse(b.by)) {
                            *b = e;
                        }
                    })
                    .or_insert(e);
            }
        }
        best.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in LatencyMode::ALL {
            assert_eq!(LatencyMode::parse(m.as_str()), Some(m));
        }
        for r in Role::ALL {
            assert_eq!(Role::parse(r.as_str()), Some(r));
            assert_eq!(Role::ALL[r.index()], r);
        }
        assert_eq!(RoleSource::parse("manual"), Some(RoleSource::Manual));
        assert_eq!(LatencyMode::parse("loud"), None);
    }

    #[test]
    fn pitch_classes_parse_sharps_and_flats() {
        assert_eq!(PitchClass::parse("Db"), PitchClass::new(1));
        assert_eq!(PitchClass::parse("c#"), PitchClass::new(1));
        assert_eq!(PitchClass::parse("Cb"), PitchClass::new(11));
        assert_eq!(PitchClass::parse("H"), None);
        assert_eq!(PitchClass::new(9).unwrap().to_string(), "A");
    }

    #[test]
    fn confidence_and_swing_clamp_or_refuse() {
        assert_eq!(Confidence::from_fraction(1.7), Confidence::FULL);
        assert_eq!(Confidence::from_fraction(f32::NAN).per_mille(), 0);
        assert_eq!(Confidence::from_per_mille(5000), Confidence::FULL);
        assert_eq!(Swing::from_per_mille(499), None);
        assert_eq!(Swing::from_per_mille(667).unwrap().per_mille(), 667);
    }
}
