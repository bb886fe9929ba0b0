//! Synthetic sessions: a seeded stream of what a capture writer sees in a
//! real session (several players' notes, session-document changes,
//! metadata and markers), for tests, benchmarks and `jam capture demo`.
//!
//! Deterministic: the same [`SynthConfig`] gives the same events, with the
//! same times, every run.

use std::time::Duration;

use automerge::transaction::Transactable;
use jam_core::{Beats, Micros, PeerId};

use crate::record::{Direction, MidiEvent, SCHEMA_VERSION, SessionStart};

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    /// Number of players (the first one is the recorder).
    pub players: usize,
    /// Session length.
    pub duration: Duration,
    /// Tempo.
    pub bpm: f64,
    /// Chance (0..=1) that a player plays on a given sixteenth note.
    pub density: f64,
    /// How often the session document changes (a role or tempo edit).
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
    /// A note on or off.
    Midi(MidiEvent),
    /// A change of the session document, as raw Automerge change bytes.
    Change(Micros, Vec<u8>),
    /// A metadata change (`name:<peer>` at the start, `tempo_bpm` later).
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

/// The generator; an iterator of [`SynthEvent`]s in time order.
pub struct Synth {
    config: SynthConfig,
    rng: u64,
    peers: Vec<PeerId>,
    doc: automerge::AutoCommit,
    step: u64,
    steps: u64,
    step_us: f64,
    next_change: Micros,
    changes: u64,
    queue: std::collections::VecDeque<SynthEvent>,
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
        let step_us = 60e6 / config.bpm.max(1.0) / 4.0;
        let steps = (config.duration.as_micros() as f64 / step_us) as u64;
        let mut doc =
            automerge::AutoCommit::new().with_actor(automerge::ActorId::from(peers[0].0.to_vec()));
        let mut queue = std::collections::VecDeque::new();
        doc.put(automerge::ROOT, "tempo_bpm", config.bpm)
            .expect("putting into the root map works");
        for (i, p) in peers.iter().enumerate() {
            doc.put(
                automerge::ROOT,
                format!("role:{p}"),
                ["rhythm", "melody", "harmony", "bass"][i % 4],
            )
            .expect("putting into the root map works");
            queue.push_back(SynthEvent::Metadata(
                Micros::ZERO,
                Beats::ZERO,
                format!("name:{p}"),
                format!("player {}", i + 1),
            ));
        }
        doc.commit();
        let first = doc
            .get_last_local_change()
            .expect("a change was just committed")
            .raw_bytes()
            .to_vec();
        queue.push_front(SynthEvent::Change(Micros::ZERO, first));
        Synth {
            sounding: vec![None; peers.len()],
            next_change: Micros::ZERO + config.change_every,
            config,
            rng,
            peers,
            doc,
            step: 0,
            steps,
            step_us,
            changes: 1,
            queue,
        }
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

    fn step_events(&mut self) {
        let at = Micros((self.step as f64 * self.step_us) as u64);
        let beat = Beats(self.step as i64 * Beats::PER_BEAT / 4);
        while self.next_change <= at {
            let t = self.next_change;
            self.changes += 1;
            let who = self.peers[(self.changes as usize) % self.peers.len()];
            let role =
                ["rhythm", "melody", "harmony", "bass"][(xorshift(&mut self.rng) % 4) as usize];
            self.doc
                .put(automerge::ROOT, format!("role:{who}"), role)
                .expect("root map put");
            self.doc
                .put(automerge::ROOT, "edits", self.changes as i64)
                .expect("root map put");
            self.doc.commit();
            let bytes = self
                .doc
                .get_last_local_change()
                .expect("just committed")
                .raw_bytes()
                .to_vec();
            self.queue.push_back(SynthEvent::Change(t, bytes));
            self.next_change += self.config.change_every;
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
            if let Some(note) = self.sounding[i].take() {
                self.queue
                    .push_back(ev(vec![0x80 | i as u8, note, 0], false));
            }
            let r = xorshift(&mut self.rng);
            if (r % 1000) as f64 / 1000.0 < self.config.density {
                let note = 36 + (r >> 16) as u8 % 48;
                let recovered = (r >> 32).is_multiple_of(100);
                self.queue.push_back(ev(
                    vec![0x90 | i as u8, note, 64 + (r >> 40) as u8 % 63],
                    recovered,
                ));
                self.sounding[i] = Some(note);
            }
        }
        // Keep time order inside the step (jitter).
        let v: &mut Vec<SynthEvent> = &mut self.queue.drain(..).collect();
        v.sort_by_key(SynthEvent::at);
        self.queue.extend(v.drain(..));
    }
}

impl Iterator for Synth {
    type Item = SynthEvent;

    fn next(&mut self) -> Option<SynthEvent> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            if self.step >= self.steps {
                return None;
            }
            self.step_events();
            self.step += 1;
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
