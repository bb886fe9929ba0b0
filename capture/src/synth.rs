//! Synthetic sessions: a seeded stream of what a capture writer sees in a
//! real session, for tests, benchmarks and `jam capture demo`.
//!
//! What a session holds, at musical and social rates:
//! - MIDI from every player on a sixteenth-note grid at the current tempo:
//!   notes (a note on with probability [`SynthConfig::density`] per
//!   sixteenth, its note off on the next one; received events jitter by up
//!   to 3 ms), a sustain pedal pressed every bar by the third player, and
//!   now and then an event rebuilt from the recovery journal;
//! - session-document changes as real Automerge changes, each made by the
//!   player it comes from (one actor per player): the recorder creates the
//!   session, every player joins at the start, then on average every
//!   [`SynthConfig::change_every`] one of chat (most), a role change, a
//!   tempo change (with a matching `tempo_bpm` metadata record) or a player
//!   leaving or coming back;
//! - metadata (`name:<peer>` for every player at the start) and a marker
//!   every 16 bars.
//!
//! The document: `tempo_bpm`, `participants` (peer id → `name`, `role`,
//! `present`, `joined_at_ms`), `chat` (a list of `from`, `text`, `at_ms`)
//! and `edits` (the number of changes so far, set by every change after
//! the first).
//!
//! Deterministic: the same [`SynthConfig`] gives the same events, with the
//! same times, every run.

use std::collections::VecDeque;
use std::time::Duration;

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ObjId, ObjType, ROOT, ReadDoc};
use jam_core::{Beats, Micros, PeerId};

use crate::record::{Direction, MidiEvent, SCHEMA_VERSION, SessionStart};

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Number of players (the first one is the recorder).
    pub players: usize,
    /// Session length.
    pub duration: Duration,
    /// Tempo at the start, in beats per minute.
    pub bpm: f64,
    /// Chance (0..=1) that a player plays on a given sixteenth note.
    pub density: f64,
    /// Mean time between session-document changes after the joins (each
    /// gap is drawn between half and one and a half of this; zero for
    /// none).
    pub change_every: Duration,
    /// Seed of everything random.
    pub seed: u64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            players: 4,
            duration: Duration::from_secs(60),
            bpm: 120.0,
            density: 0.5,
            change_every: Duration::from_secs(5),
            seed: 1,
        }
    }
}

/// One thing that happens in the synthetic session, in time order.
#[derive(Debug, Clone, PartialEq)]
pub enum SynthEvent {
    /// A MIDI message from a player.
    Midi(MidiEvent),
    /// A change of the session document, as raw Automerge change bytes.
    Change(Micros, Vec<u8>),
    /// A metadata change (`name:<peer>` at the start, `tempo_bpm` with
    /// every tempo change).
    Metadata(Micros, Beats, String, String),
    /// A marker every 16 bars.
    Marker(Micros, Beats, String),
}

impl SynthEvent {
    /// When it happens.
    pub fn at(&self) -> Micros {
        match self {
            SynthEvent::Midi(m) => m.at,
            SynthEvent::Change(t, _) | SynthEvent::Metadata(t, ..) | SynthEvent::Marker(t, ..) => {
                *t
            }
        }
    }
}

const ROLES: [&str; 4] = ["rhythm", "melody", "harmony", "bass"];
const CHAT: [&str; 10] = [
    "again from the top?",
    "nice fill",
    "can we take it a bit slower",
    "bar 17 once more",
    "brb",
    "that groove though",
    "I lost the one, sorry",
    "switching patches",
    "let's record this take",
    "sounds great on my side",
];

/// The generator; an iterator of [`SynthEvent`]s in time order.
pub struct Synth {
    config: SynthConfig,
    rng: u64,
    peers: Vec<PeerId>,
    doc: AutoCommit,
    participants: ObjId,
    chat: ObjId,
    /// Index of the next sixteenth note.
    step: u64,
    /// Time of the next sixteenth note, in µs.
    t_us: f64,
    /// Current tempo.
    bpm: f64,
    next_change: Micros,
    changes: u64,
    present: Vec<bool>,
    queue: VecDeque<SynthEvent>,
    sounding: Vec<Option<u8>>,
}

impl std::fmt::Debug for Synth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Synth")
            .field("config", &self.config)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

fn actor(p: PeerId) -> ActorId {
    ActorId::from(p.0.to_vec())
}

impl Synth {
    /// A generator for `config`.
    pub fn new(config: SynthConfig) -> Self {
        let mut rng = config.seed ^ 0x9E37_79B9_7F4A_7C15;
        let peers: Vec<PeerId> = (0..config.players.max(1))
            .map(|_| {
                let mut b = [0u8; 16];
                for x in b.chunks_mut(8) {
                    x.copy_from_slice(&xorshift(&mut rng).to_le_bytes());
                }
                PeerId(b)
            })
            .collect();
        let bpm = config.bpm.max(1.0);
        let mut doc = AutoCommit::new().with_actor(actor(peers[0]));
        doc.put(ROOT, "tempo_bpm", bpm).expect("root map put");
        let participants = doc
            .put_object(ROOT, "participants", ObjType::Map)
            .expect("root map put");
        let chat = doc
            .put_object(ROOT, "chat", ObjType::List)
            .expect("root map put");
        let mut s = Synth {
            sounding: vec![None; peers.len()],
            present: vec![true; peers.len()],
            next_change: Micros::ZERO,
            config,
            rng,
            peers,
            doc,
            participants,
            chat,
            step: 0,
            t_us: 0.0,
            bpm,
            changes: 0,
            queue: VecDeque::new(),
        };
        // Every player joins at the start; the recorder's join is part of
        // the change that creates the session.
        for i in 0..s.peers.len() {
            let p = s.peers[i];
            if i > 0 {
                // Setting the actor closes the open transaction, so the
                // recorder's edits above stay in its one change.
                s.doc.set_actor(actor(p));
            }
            let me = s
                .doc
                .put_object(&s.participants, p.to_string(), ObjType::Map)
                .expect("map put");
            s.doc
                .put(&me, "name", format!("player {}", i + 1))
                .expect("map put");
            s.doc.put(&me, "role", ROLES[i % 4]).expect("map put");
            s.doc.put(&me, "present", true).expect("map put");
            s.doc.put(&me, "joined_at_ms", 0i64).expect("map put");
            s.commit(Micros::ZERO);
            s.queue.push_back(SynthEvent::Metadata(
                Micros::ZERO,
                Beats::ZERO,
                format!("name:{p}"),
                format!("player {}", i + 1),
            ));
        }
        s.next_change = s.gap(Micros::ZERO);
        s
    }

    /// The participants' ids; the first is the recorder.
    pub fn peers(&self) -> &[PeerId] {
        &self.peers
    }

    /// The session-start record for this session.
    pub fn session_start(&self) -> SessionStart {
        SessionStart {
            schema_version: SCHEMA_VERSION,
            session_schema: 1,
            recorder: self.peers[0],
            recorder_name: "player 1".into(),
            wall_clock_unix_micros: 1_700_000_000_000_000,
            at: Micros::ZERO,
            tempo_bpm: self.config.bpm,
        }
    }

    /// The time of the change after one at `t` (never, if
    /// `change_every` is zero).
    fn gap(&mut self, t: Micros) -> Micros {
        let mean = self.config.change_every.as_micros() as u64;
        if mean == 0 {
            return Micros(u64::MAX);
        }
        Micros(t.0 + mean / 2 + xorshift(&mut self.rng) % mean)
    }

    /// Commits the pending edits as one change by the current actor and
    /// queues its bytes.
    fn commit(&mut self, at: Micros) {
        self.changes += 1;
        if self.changes > 1 {
            self.doc
                .put(ROOT, "edits", self.changes as i64)
                .expect("root map put");
        }
        self.doc.commit();
        let bytes = self
            .doc
            .get_last_local_change()
            .expect("a change was just committed")
            .raw_bytes()
            .to_vec();
        self.queue.push_back(SynthEvent::Change(at, bytes));
    }

    /// One session-document change at `at` (beat `beat`).
    fn change(&mut self, at: Micros, beat: Beats) {
        let n = self.peers.len();
        let r = xorshift(&mut self.rng);
        let kind = r % 100;
        let mut who = (r >> 8) as usize % n;
        if kind >= 90 {
            // The recorder stays. A player who dropped out comes back;
            // otherwise someone else drops out.
            who = match self.present.iter().position(|p| !p) {
                Some(away) => away,
                None if n > 1 => 1 + who % (n - 1),
                None => 0,
            };
        }
        let p = self.peers[who];
        self.doc.set_actor(actor(p));
        let me = self
            .doc
            .get(&self.participants, p.to_string())
            .expect("map get")
            .map(|(_, id)| id)
            .expect("every player joined");
        match kind {
            0..60 => {
                let len = self.doc.length(&self.chat);
                let msg = self
                    .doc
                    .insert_object(&self.chat, len, ObjType::Map)
                    .expect("list insert");
                self.doc.put(&msg, "from", p.to_string()).expect("map put");
                let text = CHAT[(r >> 16) as usize % CHAT.len()];
                self.doc.put(&msg, "text", text).expect("map put");
                self.doc
                    .put(&msg, "at_ms", (at.0 / 1000) as i64)
                    .expect("map put");
            }
            60..80 => {
                let role = ROLES[(r >> 16) as usize % 4];
                self.doc.put(&me, "role", role).expect("map put");
            }
            80..90 => {
                let step = 2.0 + ((r >> 16) % 5) as f64;
                let bpm = if (r >> 24) & 1 == 0 {
                    self.bpm + step
                } else {
                    self.bpm - step
                };
                self.bpm = bpm.clamp(70.0, 180.0);
                self.doc
                    .put(ROOT, "tempo_bpm", self.bpm)
                    .expect("root map put");
                self.queue.push_back(SynthEvent::Metadata(
                    at,
                    beat,
                    "tempo_bpm".into(),
                    format!("{}", self.bpm),
                ));
            }
            _ => {
                self.present[who] = !self.present[who] || who == 0;
                self.doc
                    .put(&me, "present", self.present[who])
                    .expect("map put");
                if self.present[who] {
                    self.doc
                        .put(&me, "joined_at_ms", (at.0 / 1000) as i64)
                        .expect("map put");
                }
            }
        }
        self.commit(at);
    }

    fn step_events(&mut self) {
        let at = Micros(self.t_us as u64);
        let beat = Beats(self.step as i64 * Beats::PER_BEAT / 4);
        // Document changes fall on the grid of the step that follows them,
        // so that they stay in time order with the MIDI around them.
        while self.next_change <= at {
            self.change(at, beat);
            self.next_change = self.gap(self.next_change);
        }
        if self.step.is_multiple_of(256) && self.step > 0 {
            self.queue.push_back(SynthEvent::Marker(
                at,
                beat,
                format!("bar {}", self.step / 16 + 1),
            ));
        }
        for i in 0..self.peers.len() {
            let p = self.peers[i];
            let dir = if i == 0 {
                Direction::Out
            } else {
                Direction::In
            };
            let jitter = if i == 0 {
                0
            } else {
                xorshift(&mut self.rng) % 3000
            };
            let ev = |bytes: Vec<u8>, recovered: bool| {
                SynthEvent::Midi(MidiEvent {
                    at: Micros(at.0 + jitter),
                    participant: p,
                    direction: dir,
                    sender_time: at,
                    beat,
                    bytes,
                    recovered,
                })
            };
            let ch = (i % 16) as u8;
            if let Some(note) = self.sounding[i].take() {
                self.queue.push_back(ev(vec![0x80 | ch, note, 0], false));
            }
            if !self.present[i] {
                continue;
            }
            if i % 4 == 2 && self.step.is_multiple_of(16) {
                self.queue.push_back(ev(vec![0xB0 | ch, 64, 127], false));
            } else if i % 4 == 2 && self.step % 16 == 15 {
                self.queue.push_back(ev(vec![0xB0 | ch, 64, 0], false));
            }
            let r = xorshift(&mut self.rng);
            if (r % 1000) as f64 / 1000.0 < self.config.density {
                let note = 36 + (r >> 16) as u8 % 48;
                let recovered = (r >> 32).is_multiple_of(100);
                self.queue.push_back(ev(
                    vec![0x90 | ch, note, 64 + (r >> 40) as u8 % 63],
                    recovered,
                ));
                self.sounding[i] = Some(note);
            }
        }
        // Keep time order inside the step (jitter).
        self.queue.make_contiguous().sort_by_key(SynthEvent::at);
    }
}

impl Iterator for Synth {
    type Item = SynthEvent;

    fn next(&mut self) -> Option<SynthEvent> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            if self.t_us >= self.config.duration.as_micros() as f64 {
                return None;
            }
            self.step_events();
            self.step += 1;
            self.t_us += 60e6 / self.bpm / 4.0;
        }
    }
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// Feeds every event of `synth` to `writer`, calling `tick` at each event's
/// time as a driver would.
pub fn record<W: std::io::Write>(
    synth: Synth,
    writer: &mut crate::writer::CaptureWriter<W>,
) -> Result<(), crate::CaptureError> {
    for e in synth {
        let at = e.at();
        writer.tick(at)?;
        match e {
            SynthEvent::Midi(m) => writer.append_midi(m)?,
            SynthEvent::Change(t, b) => writer.append_change(t, &b)?,
            SynthEvent::Metadata(t, beat, k, v) => writer.append_metadata(t, beat, &k, &v)?,
            SynthEvent::Marker(t, beat, l) => writer.append_marker(t, beat, &l)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_applies_and_the_document_tells_the_session() {
        let config = SynthConfig {
            duration: Duration::from_secs(600),
            seed: 4,
            ..SynthConfig::default()
        };
        let peers = Synth::new(config.clone()).peers().to_vec();
        let mut doc = automerge::Automerge::new();
        let (mut changes, mut midi, mut last) = (0usize, 0usize, Micros::ZERO);
        let mut tempo = config.bpm;
        for e in Synth::new(config.clone()) {
            assert!(e.at() >= last, "events in time order");
            last = e.at();
            match e {
                SynthEvent::Change(_, bytes) => {
                    let c = automerge::Change::from_bytes(bytes).unwrap();
                    doc.apply_changes([c]).unwrap();
                    // Each change depends only on changes already seen.
                    assert!(doc.get_missing_deps(&[]).is_empty());
                    changes += 1;
                }
                SynthEvent::Metadata(_, _, k, v) if k == "tempo_bpm" => {
                    tempo = v.parse().unwrap();
                }
                SynthEvent::Midi(_) => midi += 1,
                _ => {}
            }
        }
        assert_eq!(doc.get_changes(&[]).len(), changes);
        // 4 joins, then one change about every 5 s.
        assert!((100..=150).contains(&changes), "{changes} changes");
        // Four players at about 4 notes a second each (on and off), for
        // 10 min, less while one is away.
        assert!(midi > 4 * 2 * 3 * 600, "{midi} MIDI events");
        let actors: std::collections::BTreeSet<_> = doc
            .get_changes(&[])
            .iter()
            .map(|c| c.actor_id().clone())
            .collect();
        assert_eq!(actors.len(), 4, "every player edits the document");
        let (_, parts) = doc.get(ROOT, "participants").unwrap().unwrap();
        assert_eq!(doc.length(&parts), 4);
        for p in &peers {
            assert!(doc.get(&parts, p.to_string()).unwrap().is_some());
        }
        let (_, chat) = doc.get(ROOT, "chat").unwrap().unwrap();
        assert!(doc.length(&chat) > 30, "chat is the most common change");
        let (v, _) = doc.get(ROOT, "tempo_bpm").unwrap().unwrap();
        assert_eq!(v.as_f64(), Some(tempo), "metadata follows the tempo");
        let (v, _) = doc.get(ROOT, "edits").unwrap().unwrap();
        assert_eq!(v.as_i64(), Some(changes as i64));
    }
}
