//! [`EngineRt`]: the audio-thread half of the engine.
//!
//! One call per host block, [`EngineRt::process_block`], does all of it:
//!
//! 1. place the block in time and on the timeline ([`MidiManager`]);
//! 2. stamp the host's notes and push them into the outgoing ring (when
//!    sending is on; a full ring drops the newest and counts);
//! 3. drain the incoming ring (remote events, timeline updates, departures),
//!    at most as many items as it held when the block started;
//! 4. place remote events at sample offsets per latency mode
//!    ([`OutputManager`]) on each participant's channel;
//! 5. render the monitor synth into the audio buffers.
//!
//! Every method is Realtime-safe: yes. No allocation, no lock, no syscall, no
//! logging; work is bounded by the block length and the ring capacities.

use crate::midi_manager::{HostTransport, MidiManager};
use crate::net::Role;
use crate::output::{LatencyMode, OutputManager, Placement};
use crate::synth::MonitorSynth;
use crate::timeline::Timeline;
use crate::timing::Placed;
use crate::{EventBuffer, HostEvent, OutEvent, RemoteEvent, Shared, StampedEvent};
use jam_core::Micros;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Largest interval (in beats) the interval mode accepts.
pub const MAX_INTERVAL_BEATS: u32 = 64;

/// What the worker sends to the audio thread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Inbound {
    /// A remote event.
    Midi(RemoteEvent),
    /// A new session timeline.
    Timeline(Timeline),
    /// The participant in this slot left: release its notes.
    PeerGone(u8),
    /// A remote event (or a predicted or guard-made one) whose time the
    /// worker decided ([`crate::timing`]).
    Placed(Placed),
}

/// User settings that apply to a block (the plugin's parameters, `jam peer`'s
/// flags).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// How remote events are placed in time.
    pub latency: LatencyMode,
    /// Interval length in beats for [`LatencyMode::Interval`]
    /// (1..=[`MAX_INTERVAL_BEATS`]).
    pub interval_beats: u32,
    /// Play remote events through the monitor synth.
    pub monitor: bool,
    /// Monitor output level, 0..=1 (linear gain).
    pub level: f32,
    /// Send the host's notes to the session.
    pub send: bool,
    /// The local role announced to the session.
    pub role: Role,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            latency: LatencyMode::Live,
            interval_beats: 16,
            monitor: true,
            level: 0.7,
            send: true,
            role: Role::Auto,
        }
    }
}

/// One host block: its time, transport and settings, the host's events in,
/// the events out and the audio buffers.
#[derive(Debug)]
pub struct Block<'a> {
    /// Local time at the first sample (one clock read per block, by the
    /// caller; synthetic in tests and offline rendering).
    pub now: Micros,
    /// Sample rate of this block.
    pub sample_rate: f32,
    /// Host transport at the first sample.
    pub transport: HostTransport,
    /// Settings for this block.
    pub settings: Settings,
    /// Host events, sorted by offset (offsets past the block end are treated
    /// as its last sample).
    pub input: &'a [HostEvent],
    /// Receives the remote events placed in this block, sorted by offset.
    /// Cleared first; its capacity bounds the block's output.
    pub output: &'a mut EventBuffer<OutEvent>,
    /// Left output channel; its length is the block length.
    pub left: &'a mut [f32],
    /// Right output channel (same length as `left`).
    pub right: &'a mut [f32],
}

/// The audio-thread half. Create with [`crate::Engine::new`].
#[derive(Debug)]
pub struct EngineRt {
    /// Stamped host events to the worker. Producer: this half.
    to_worker: rtrb::Producer<StampedEvent>,
    /// Remote events and updates from the worker. Consumer: this half.
    from_worker: rtrb::Consumer<Inbound>,
    /// Counters and the peer table; this half only does atomic adds and
    /// stores on it. Never dropped here last: the worker holds a clone.
    shared: Arc<Shared>,
    midi: MidiManager,
    output: OutputManager,
    synth: MonitorSynth,
    /// Role last published, to store the atomic only on change.
    role: Role,
}

impl EngineRt {
    pub(crate) fn new(
        to_worker: rtrb::Producer<StampedEvent>,
        from_worker: rtrb::Consumer<Inbound>,
        shared: Arc<Shared>,
        midi: MidiManager,
        sample_rate: f32,
    ) -> Self {
        EngineRt {
            to_worker,
            from_worker,
            shared,
            midi,
            output: OutputManager::new(),
            synth: MonitorSynth::new(sample_rate, Settings::default().level),
            role: Role::Auto,
        }
    }

    /// Clears all playing state: held events, sounding voices, continuity.
    /// Sounding notes get note-offs at the start of the next block.
    /// Realtime-safe: yes.
    pub fn reset(&mut self) {
        self.output.reset();
        self.synth.reset();
        self.midi.reset();
    }

    /// Counts host events the caller could not fit into a block's input.
    /// Realtime-safe: yes.
    pub fn count_dropped_host_input(&self, n: u64) {
        self.shared
            .counters
            .dropped_host_input
            .fetch_add(n, Ordering::Relaxed);
    }

    /// Events held by the interval scheduler.
    pub fn held_events(&self) -> usize {
        self.output.held()
    }

    /// Monitor voices sounding.
    pub fn active_voices(&self) -> usize {
        self.synth.active_voices()
    }

    /// The session timeline in use while the host does not play.
    pub fn timeline(&self) -> Timeline {
        *self.midi.timeline()
    }

    /// Tells the worker the settings it decides with (latency mode and
    /// interval, local role) before any block runs: a host restoring a
    /// project calls it at activation, so remote events that arrive before
    /// the first block are decided in the restored mode, not the default.
    /// [`EngineRt::process_block`] does the same for every block.
    /// Realtime-safe: yes (atomic stores).
    pub fn publish_settings(&mut self, s: &Settings) {
        let interval = s.interval_beats.clamp(1, MAX_INTERVAL_BEATS);
        if s.role != self.role {
            self.role = s.role;
            self.shared
                .local_role
                .store(s.role.index(), Ordering::Relaxed);
        }
        self.shared.placement.store(
            crate::encode_placement(s.latency, interval),
            Ordering::Relaxed,
        );
    }

    /// Sets the record switch: the worker starts a capture in the folder of
    /// its [`crate::CaptureTarget`] when it goes on and finishes it when it
    /// goes off (see [`crate::capture`]). Call it once per block with the
    /// host's parameter. Realtime-safe: yes (one atomic store).
    pub fn set_record(&self, on: bool) {
        self.shared.record.store(on, Ordering::Relaxed);
    }

    /// Processes one block (see the module doc). Realtime-safe: yes.
    pub fn process_block(&mut self, block: &mut Block<'_>) {
        let len = block.left.len().min(block.right.len());
        let s = block.settings;
        let interval = s.interval_beats.clamp(1, MAX_INTERVAL_BEATS);
        self.publish_settings(&s);
        let shared = &*self.shared;
        // The worker's clock for its timing decisions.
        shared.audio_now.store(block.now.0, Ordering::Relaxed);
        self.synth.set_sample_rate(block.sample_rate);
        let clock =
            self.midi
                .begin_block(block.now, block.sample_rate, len as u32, block.transport);

        // Outgoing: stamp and hand to the worker.
        if s.send {
            for ev in block.input {
                let stamped = self.midi.stamp(&clock, ev);
                if self.to_worker.push(stamped).is_err() {
                    shared
                        .counters
                        .dropped_outgoing
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }

        // Incoming: place or hold.
        block.output.clear();
        let placement = Placement {
            mode: s.latency,
            interval_beats: interval,
        };
        self.output.begin_block(&clock, placement);
        let available = self.from_worker.slots();
        for _ in 0..available {
            if s.latency != LatencyMode::Interval && block.output.is_full() {
                break; // the rest waits in the ring for the next block
            }
            let Ok(item) = self.from_worker.pop() else {
                break;
            };
            match item {
                Inbound::Midi(ev) => self.output.accept(
                    ev,
                    &clock,
                    placement,
                    block.output,
                    &shared.peers,
                    &shared.counters,
                ),
                Inbound::Timeline(t) => self.midi.set_timeline(t),
                Inbound::PeerGone(slot) => self.output.release_slot(slot),
                Inbound::Placed(p) => {
                    self.output
                        .accept_placed(p, &clock, block.output, &shared.counters)
                }
            }
        }
        self.output
            .emit_due(&clock, block.output, &shared.peers, &shared.counters);
        self.output.finish(block.output, &shared.counters);

        // Monitor synth.
        let level = if s.monitor { s.level } else { 0.0 };
        self.synth.render(
            block.output.as_slice(),
            level,
            &mut block.left[..len],
            &mut block.right[..len],
        );
        shared.counters.blocks.fetch_add(1, Ordering::Relaxed);
    }
}
