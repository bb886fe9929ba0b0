//! Hosting the plugin's CLAP entry with clack-host, as a DAW does: the
//! host handlers, creating and activating an instance, one `process` call
//! per block with notes, parameter changes and the host transport in, and
//! the stereo output and the notes the plugin sent out back.
//!
//! Used by the plugin's own tests (`plugin/tests/clap_host.rs`: host edge
//! cases, and the plugin in this process with the network side of its
//! transport seam in the test's hands) and by the `jam-clap-host` binary
//! (the `.clap` bundle in real time, one process per host). Loading the
//! entry (`PluginEntry::load` of a bundle, or `load_from_raw` of an entry
//! linked in) is left to them: it is unsafe, and only they know what they
//! load.

use anyhow::{Context, Result};
use clack_extensions::gui::{GuiSize, HostGui, HostGuiImpl};
use clack_host::events::event_types::{
    NoteOffEvent, NoteOnEvent, ParamValueEvent, TransportEvent, TransportFlags,
};
use clack_host::events::{EventFlags, Match};
use clack_host::prelude::*;
use clack_host::utils::{BeatTime, SecondsTime};

/// The host's handlers: nothing to do on the plugin's requests.
pub struct Host;

/// The host's shared handler.
pub struct Shared;

impl SharedHandler<'_> for Shared {
    fn request_restart(&self) {}
    fn request_process(&self) {}
    fn request_callback(&self) {}
}

impl HostHandlers for Host {
    type Shared<'a> = Shared;
    type MainThread<'a> = ();
    type AudioProcessor<'a> = ();

    fn declare_extensions(builder: &mut HostExtensions<Self>, _shared: &Self::Shared<'_>) {
        // nice-plug's editor needs the host's side of the GUI extension.
        builder.register::<HostGui>();
    }
}

/// The editor's window (`jam-clap-host --gui`) has a fixed size and is
/// always shown: requests are refused or have nothing to do.
impl HostGuiImpl for Shared {
    fn resize_hints_changed(&self) {}
    fn request_resize(&self, _new_size: GuiSize) -> Result<(), HostError> {
        Err(HostError::Message("fixed-size window"))
    }
    fn request_show(&self) -> Result<(), HostError> {
        Ok(())
    }
    fn request_hide(&self) -> Result<(), HostError> {
        Ok(())
    }
    fn closed(&self, _was_destroyed: bool) {}
}

/// The host transport at `beat` (4/4, no loop), playing or stopped.
pub fn transport(playing: bool, tempo: f64, beat: f64) -> TransportEvent {
    let mut flags = TransportFlags::HAS_TEMPO | TransportFlags::HAS_BEATS_TIMELINE;
    if playing {
        flags |= TransportFlags::IS_PLAYING;
    }
    TransportEvent {
        header: EventHeader::new_core(0, EventFlags::empty()),
        flags,
        song_pos_beats: BeatTime::from_float(beat),
        song_pos_seconds: SecondsTime::from_float(beat * 60.0 / tempo),
        tempo,
        tempo_inc: 0.0,
        loop_start_beats: BeatTime::from_int(0),
        loop_end_beats: BeatTime::from_int(0),
        loop_start_seconds: SecondsTime::from_int(0),
        loop_end_seconds: SecondsTime::from_int(0),
        bar_start: BeatTime::from_int(0),
        bar_number: 0,
        time_signature_numerator: 4,
        time_signature_denominator: 4,
    }
}

/// nice-plug's CLAP parameter id for a string id.
pub fn param_hash(id: &str) -> u32 {
    let mut h: u32 = 0;
    for b in id.bytes() {
        h = h.wrapping_mul(31).wrapping_add(b as u32);
    }
    h & !(1 << 31)
}

/// Adds a change of parameter `id` to the plain `value`, at the block's
/// first sample.
pub fn push_param(input: &mut EventBuffer, id: &str, value: f64) {
    let ev = ParamValueEvent::new(0, ClapId::new(param_hash(id)), Pckn::match_all(), value);
    input.push(&ev);
}

/// Adds a note on or off for `key` on channel 1 (0) at sample `time` of
/// the block, `velocity` from 0 to 1.
pub fn push_note(input: &mut EventBuffer, time: u32, key: i16, on: bool, velocity: f64) {
    let pckn = Pckn::new(0u16, 0u16, key as u16, Match::All);
    if on {
        input.push(&NoteOnEvent::new(time, pckn, velocity));
    } else {
        input.push(&NoteOffEvent::new(time, pckn, velocity));
    }
}

/// Velocity (MIDI) of the notes `jam-clap-host --play` plays.
pub const PLAY_VELOCITY: u8 = 100;
/// Seconds from one note `jam-clap-host --play` plays to the next.
pub const PLAY_EVERY_S: f64 = 0.5;
/// Seconds each note `jam-clap-host --play` plays lasts.
pub const PLAY_LENGTH_S: f64 = 0.25;

/// The MIDI messages `jam-clap-host --play KEYS` plays into the plugin, as
/// a peer receives them: each key on (channel 1, [`PLAY_VELOCITY`]), then
/// off (velocity 0).
pub fn play_messages(keys: &[u8]) -> Vec<Vec<u8>> {
    keys.iter()
        .flat_map(|&k| [vec![0x90, k, PLAY_VELOCITY], vec![0x80, k, 0]])
        .collect()
}

/// Checks the receive times (microseconds) of [`play_messages`], on and
/// off in turn: the note-ons are [`PLAY_EVERY_S`] apart, within 25 ms of
/// polling and scheduling jitter.
pub fn assert_play_spacing(t_us: &[i64]) {
    let every = (PLAY_EVERY_S * 1e6) as i64;
    let ons: Vec<i64> = t_us.iter().copied().step_by(2).collect();
    for pair in ons.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            (gap - every).abs() <= 25_000,
            "note-ons {gap} µs apart, played {every} µs apart: {t_us:?}"
        );
    }
}

/// A note the plugin sent out in a block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoteOut {
    /// Its sample in the block.
    pub time: u32,
    /// Its channel (0 to 15), -1 when the plugin left it open.
    pub channel: i16,
    /// Its key, -1 when the plugin left it open.
    pub key: i16,
    /// Its velocity, 0 to 1.
    pub velocity: f64,
    /// Note on (else off).
    pub on: bool,
}

/// What one `process` call gave back.
#[derive(Debug)]
pub struct Block<'a> {
    /// The left output channel, one value per frame.
    pub left: &'a [f32],
    /// The right output channel.
    pub right: &'a [f32],
    /// The notes the plugin sent out, in order.
    pub notes: Vec<NoteOut>,
}

/// One plugin instance, with the buffers its blocks use preallocated, as
/// a real-time host does: the plugin pushes into the output event buffer
/// from `process`, where allocation is forbidden. Deactivated on drop.
pub struct Instance {
    instance: PluginInstance<Host>,
    processor: Option<StartedPluginAudioProcessor<Host>>,
    id: String,
    name: String,
    output: EventBuffer,
    left: Vec<f32>,
    right: Vec<f32>,
    in_ports: AudioPorts,
    out_ports: AudioPorts,
}

impl Instance {
    /// Instantiates the first plugin of `entry`, with `host_name` in the
    /// host's info.
    pub fn new(entry: &PluginEntry, host_name: &str) -> Result<Instance> {
        let factory = entry
            .get_plugin_factory()
            .context("the bundle has no plugin factory")?;
        let desc = factory
            .plugin_descriptors()
            .next()
            .context("the bundle has no plugin")?;
        let id = desc.id().context("the plugin has no id")?;
        let name = desc.name().context("the plugin has no name")?;
        let info = HostInfo::new(host_name, "jam.togthr", "https://example.invalid", "0.1")?;
        let instance = PluginInstance::<Host>::new(|_| Shared, |_| (), entry, id, &info)
            .context("instantiating the plugin")?;
        Ok(Instance {
            instance,
            processor: None,
            id: id.to_string_lossy().into_owned(),
            name: name.to_string_lossy().into_owned(),
            output: EventBuffer::with_capacity(4096),
            left: Vec::new(),
            right: Vec::new(),
            in_ports: AudioPorts::with_capacity(0, 0),
            out_ports: AudioPorts::with_capacity(2, 1),
        })
    }

    /// The plugin's id, from its descriptor.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The plugin's name, from its descriptor.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The clack-host instance (for the plugin's extensions).
    pub fn plugin(&mut self) -> &mut PluginInstance<Host> {
        &mut self.instance
    }

    /// Activates at `sample_rate` for blocks of 1 to `max_frames` frames
    /// and starts processing.
    pub fn activate(&mut self, sample_rate: f64, max_frames: u32) -> Result<()> {
        let stopped = self
            .instance
            .activate(
                |_, _| (),
                PluginAudioConfiguration {
                    sample_rate,
                    min_frames_count: 1,
                    max_frames_count: max_frames,
                },
            )
            .context("activating the plugin")?;
        let started = stopped
            .start_processing()
            .map_err(|e| anyhow::anyhow!("starting processing: {e:?}"))?;
        self.processor = Some(started);
        self.left = vec![0.0; max_frames as usize];
        self.right = vec![0.0; max_frames as usize];
        Ok(())
    }

    /// Stops processing and deactivates (a sample-rate change does this
    /// before activating again). Nothing happens when not active.
    pub fn deactivate(&mut self) {
        if let Some(p) = self.processor.take() {
            self.instance.deactivate(p.stop_processing());
        }
    }

    /// Processes one block of `frames` frames (at most the activation's
    /// `max_frames`) with the events in `input`, the transport `t` and the
    /// block's first sample `steady_time` if the host counts samples.
    pub fn process(
        &mut self,
        frames: usize,
        input: &EventBuffer,
        steady_time: Option<u64>,
        t: &TransportEvent,
    ) -> Result<Block<'_>> {
        let processor = self.processor.as_mut().context("process before activate")?;
        anyhow::ensure!(
            frames <= self.left.len(),
            "{frames} frames, activated for at most {}",
            self.left.len()
        );
        let (left, right) = (&mut self.left[..frames], &mut self.right[..frames]);
        left.fill(0.0);
        right.fill(0.0);
        self.output.clear();
        let in_audio = self.in_ports.with_input_buffers(std::iter::empty::<
            AudioPortBuffer<
                std::iter::Empty<InputChannel<f32>>,
                std::iter::Empty<InputChannel<f64>>,
            >,
        >());
        let mut out_audio = self.out_ports.with_output_buffers([AudioPortBuffer {
            latency: 0,
            channels: AudioPortBufferType::f32_output_only([&mut *left, &mut *right].into_iter()),
        }]);
        processor
            .process(
                &in_audio,
                &mut out_audio,
                &InputEvents::from_buffer(input),
                &mut OutputEvents::from_buffer(&mut self.output),
                steady_time,
                Some(t),
            )
            .map_err(|e| anyhow::anyhow!("process: {e:?}"))?;
        let mut notes = Vec::new();
        for e in self.output.iter() {
            let (time, p, on, velocity) = if let Some(n) = e.as_event::<NoteOnEvent>() {
                (n.header().time(), n.pckn(), true, n.velocity())
            } else if let Some(n) = e.as_event::<NoteOffEvent>() {
                (n.header().time(), n.pckn(), false, n.velocity())
            } else {
                continue;
            };
            let get = |m: Match<u16>| m.into_specific().map_or(-1, |v| v as i16);
            notes.push(NoteOut {
                time,
                channel: get(p.channel),
                key: get(p.key),
                velocity,
                on,
            });
        }
        Ok(Block {
            left: &self.left[..frames],
            right: &self.right[..frames],
            notes,
        })
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.deactivate();
    }
}

/// The notes in a `jam-clap-host` JSON report, as (sample, channel, key,
/// on) in the order the plugin sent them.
pub fn report_notes(report: &serde_json::Value) -> Vec<(u64, i64, u8, bool)> {
    report["notes"]
        .as_array()
        .expect("the report has notes")
        .iter()
        .map(|n| {
            (
                n["sample"].as_u64().expect("sample"),
                n["channel"].as_i64().expect("channel"),
                u8::try_from(n["key"].as_u64().expect("key")).expect("key < 256"),
                n["on"].as_bool().expect("on"),
            )
        })
        .collect()
}
