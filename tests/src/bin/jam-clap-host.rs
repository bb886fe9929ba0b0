//! `jam-clap-host`: a small real-time CLAP host for the plugin's network
//! tests. It loads a `.clap` bundle with clack-host, sets the plugin's
//! persisted fields through the state extension (as a DAW restoring a
//! project does), activates it at 48 kHz with 256-sample blocks, and calls
//! `process` once per block period in real time with the host transport
//! playing at 120 BPM from beat 0. It plays the notes it is told to into the
//! plugin and records the notes the plugin sends out, then prints one JSON
//! object on stdout:
//!
//! ```text
//! {"sample_rate": 48000, "block": 256, "t0_unix_us": ..., "blocks": N,
//!  "notes": [{"sample": S, "channel": C, "key": K, "velocity": V, "on": true}, ...],
//!  "stalls": [[first_block, lateness_us], ...], "peak": P, "state": "<json>"}
//! ```
//!
//! `sample` is the absolute sample index (block × 256 + offset); block `b`
//! was processed at `t0_unix_us + b·256/48000 s` (plus the listed stalls:
//! blocks whose wake-up was later than 15 ms).
//!
//! Usage: `jam-clap-host BUNDLE.clap [--seconds S] [--name N] [--session
//! ADDR] [--listen ADDR] [--latency live|interval] [--interval BEATS]
//! [--play KEY,KEY,...] [--play-at S] [--state-in FILE] [--state-out FILE]`.
//! `--play` plays one note every 500 ms from `--play-at` seconds (default
//! 2), each 250 ms long, velocity 100, channel 1. `--gui` (Linux, X11)
//! opens the plugin's editor embedded in a window of the host's own for the
//! whole run, so it can be looked at or captured (`$DISPLAY` must be set).
#![allow(unsafe_code, reason = "loading a CLAP entry is unsafe by nature")]

use anyhow::{Context, Result, bail};
use clack_extensions::state::PluginState;
use clack_host::events::event_types::{
    NoteOffEvent, NoteOnEvent, ParamValueEvent, TransportEvent, TransportFlags,
};
use clack_host::events::{EventFlags, Match};
use clack_host::prelude::*;
use clack_host::utils::{BeatTime, SecondsTime};
use serde_json::{Value, json};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const RATE: f64 = 48_000.0;
const BLOCK: usize = 256;

struct Host;
struct Shared;

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
        builder.register::<clack_extensions::gui::HostGui>();
    }
}

/// Our window has a fixed size and is always shown: requests are refused
/// or have nothing to do.
impl clack_extensions::gui::HostGuiImpl for Shared {
    fn resize_hints_changed(&self) {}
    fn request_resize(
        &self,
        _new_size: clack_extensions::gui::GuiSize,
    ) -> Result<(), clack_host::prelude::HostError> {
        Err(clack_host::prelude::HostError::Message("fixed-size window"))
    }
    fn request_show(&self) -> Result<(), clack_host::prelude::HostError> {
        Ok(())
    }
    fn request_hide(&self) -> Result<(), clack_host::prelude::HostError> {
        Ok(())
    }
    fn closed(&self, _was_destroyed: bool) {}
}

#[derive(Debug, Default)]
struct Args {
    bundle: String,
    seconds: f64,
    name: Option<String>,
    session: Option<String>,
    listen: Option<String>,
    latency: Option<String>,
    interval: Option<f64>,
    play: Vec<i16>,
    play_at: f64,
    state_in: Option<String>,
    state_out: Option<String>,
    gui: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        seconds: 5.0,
        play_at: 2.0,
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--seconds" => a.seconds = value()?.parse()?,
            "--name" => a.name = Some(value()?),
            "--session" => a.session = Some(value()?),
            "--listen" => a.listen = Some(value()?),
            "--latency" => a.latency = Some(value()?),
            "--interval" => a.interval = Some(value()?.parse()?),
            "--play" => {
                a.play = value()?
                    .split(',')
                    .map(|k| k.trim().parse())
                    .collect::<Result<_, _>>()?
            }
            "--play-at" => a.play_at = value()?.parse()?,
            "--state-in" => a.state_in = Some(value()?),
            "--state-out" => a.state_out = Some(value()?),
            "--gui" => a.gui = true,
            s if s.starts_with("--") => bail!("unknown option {s}"),
            s => a.bundle = s.to_string(),
        }
    }
    if a.bundle.is_empty() {
        bail!("usage: jam-clap-host BUNDLE.clap [options]");
    }
    Ok(a)
}

fn transport(beat: f64) -> TransportEvent {
    let tempo = 120.0;
    TransportEvent {
        header: EventHeader::new_core(0, EventFlags::empty()),
        flags: TransportFlags::HAS_TEMPO
            | TransportFlags::HAS_BEATS_TIMELINE
            | TransportFlags::IS_PLAYING,
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
fn param_hash(id: &str) -> u32 {
    let mut h: u32 = 0;
    for b in id.bytes() {
        h = h.wrapping_mul(31).wrapping_add(b as u32);
    }
    h & !(1 << 31)
}

/// nice-plug's CLAP state: the JSON document's length (u64, little
/// endian), then the document.
fn decode_state(raw: &[u8]) -> Result<Value> {
    let json = raw
        .get(8..)
        .context("the state is shorter than its length prefix")?;
    serde_json::from_slice(json).context("the plugin's state is not JSON")
}

fn encode_state(state: &Value) -> Result<Vec<u8>> {
    let json = serde_json::to_vec(state)?;
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    Ok(out)
}

/// A top-level X11 window of the editor's size, and the editor in it.
#[cfg(target_os = "linux")]
fn open_editor(
    instance: &mut PluginInstance<Host>,
) -> Result<(
    clack_extensions::gui::PluginGui,
    x11rb::rust_connection::RustConnection,
)> {
    use clack_extensions::gui::{GuiApiType, GuiConfiguration, PluginGui, Window};
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{ConnectionExt, CreateWindowAux, WindowClass};
    let gui: PluginGui = instance
        .plugin_handle()
        .get_extension()
        .context("the plugin has no gui extension")?;
    let config = GuiConfiguration {
        api_type: GuiApiType::X11,
        is_floating: false,
    };
    if !gui.is_api_supported(&instance.plugin_handle(), config) {
        bail!("the plugin cannot embed its editor in an X11 window");
    }
    gui.create(&instance.plugin_handle(), config)
        .map_err(|e| anyhow::anyhow!("creating the editor: {e:?}"))?;
    let size = gui
        .get_size(&instance.plugin_handle())
        .context("the editor has no size")?;
    let (conn, screen) = x11rb::connect(None).context("connecting to the X server")?;
    let root = conn.setup().roots[screen].root;
    let win = conn.generate_id()?;
    conn.create_window(
        x11rb::COPY_DEPTH_FROM_PARENT,
        win,
        root,
        0,
        0,
        size.width as u16,
        size.height as u16,
        0,
        WindowClass::INPUT_OUTPUT,
        0,
        &CreateWindowAux::new(),
    )?;
    conn.map_window(win)?;
    conn.flush()?;
    // SAFETY: the window lives as long as the connection, which the caller
    // keeps until after the editor is destroyed.
    unsafe { gui.set_parent(&instance.plugin_handle(), Window::from_x11_handle(win as _)) }
        .map_err(|e| anyhow::anyhow!("embedding the editor: {e:?}"))?;
    gui.show(&instance.plugin_handle())
        .map_err(|e| anyhow::anyhow!("showing the editor: {e:?}"))?;
    eprintln!(
        "jam-clap-host: editor open ({}x{})",
        size.width, size.height
    );
    Ok((gui, conn))
}

#[cfg(not(target_os = "linux"))]
fn open_editor(_: &mut PluginInstance<Host>) -> Result<((), ())> {
    bail!("--gui is only supported on Linux (X11)")
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jam-clap-host: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    // SAFETY: the bundle is this workspace's own plugin.
    let entry = unsafe { PluginEntry::load(&args.bundle) }
        .with_context(|| format!("loading {}", args.bundle))?;
    let factory = entry
        .get_plugin_factory()
        .context("the bundle has no plugin factory")?;
    let desc = factory
        .plugin_descriptors()
        .next()
        .context("the bundle has no plugin")?;
    let id = desc.id().context("the plugin has no id")?;
    let info = HostInfo::new(
        "jam-clap-host",
        "jam.togthr",
        "https://example.invalid",
        "0.1",
    )?;
    let mut instance = PluginInstance::<Host>::new(|_| Shared, |_| (), &entry, id, &info)
        .context("instantiating the plugin")?;

    // State: from a file, or the plugin's own, with the fields we were given.
    let state_ext: PluginState = instance
        .plugin_handle()
        .get_extension()
        .context("the plugin has no state extension")?;
    let raw = match &args.state_in {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {path}"))?,
        None => {
            let mut bytes = Vec::new();
            state_ext
                .save(&instance.plugin_handle(), &mut bytes)
                .map_err(|e| anyhow::anyhow!("saving the state: {e:?}"))?;
            bytes
        }
    };
    let mut state = decode_state(&raw)?;
    {
        let fields = state["fields"]
            .as_object_mut()
            .context("the state has no fields")?;
        for (key, value) in [
            ("session", &args.session),
            ("display-name", &args.name),
            ("listen", &args.listen),
        ] {
            if let Some(v) = value {
                // Persisted fields are JSON documents of their own.
                fields.insert(
                    key.into(),
                    Value::String(Value::String(v.clone()).to_string()),
                );
            }
        }
    }
    let bytes = encode_state(&state)?;
    state_ext
        .load(&instance.plugin_handle(), &mut bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("loading the state: {e:?}"))?;

    let stopped = instance
        .activate(
            |_, _| (),
            PluginAudioConfiguration {
                sample_rate: RATE,
                min_frames_count: 1,
                max_frames_count: BLOCK as u32,
            },
        )
        .context("activating the plugin")?;
    let mut processor = stopped
        .start_processing()
        .map_err(|e| anyhow::anyhow!("starting processing: {e:?}"))?;

    // The editor, embedded in a window of ours.
    let gui = if args.gui {
        Some(open_editor(&mut instance)?)
    } else {
        None
    };

    // Parameters for the first block.
    let mut params: Vec<(&str, f64)> = Vec::new();
    match args.latency.as_deref() {
        Some("live") => params.push(("latency", 0.0)),
        Some("interval") => params.push(("latency", 1.0)),
        Some(other) => bail!("--latency must be live or interval, got {other}"),
        None => {}
    }
    if let Some(i) = args.interval {
        // nice-plug shows stepped parameters to CLAP hosts as steps above
        // their minimum (the interval's is 1 beat).
        params.push(("interval", i - 1.0));
    }

    // Notes to play, as absolute (sample, key, on).
    let mut to_play: Vec<(u64, i16, bool)> = Vec::new();
    for (i, &key) in args.play.iter().enumerate() {
        let on = ((args.play_at + 0.5 * i as f64) * RATE) as u64;
        to_play.push((on, key, true));
        to_play.push((on + (0.25 * RATE) as u64, key, false));
    }
    to_play.sort();

    let blocks = (args.seconds * RATE / BLOCK as f64).ceil() as u64;
    let period = Duration::from_secs_f64(BLOCK as f64 / RATE);
    let mut output = EventBuffer::with_capacity(4096);
    let mut input = EventBuffer::with_capacity(256);
    let mut left = vec![0.0f32; BLOCK];
    let mut right = vec![0.0f32; BLOCK];
    let mut in_ports = AudioPorts::with_capacity(0, 0);
    let mut out_ports = AudioPorts::with_capacity(2, 1);
    let mut notes = Vec::new();
    let mut stalls = Vec::new();
    let mut peak = 0.0f32;
    let mut next = 0usize;
    let t0_unix_us = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as u64;
    let start = Instant::now();
    for b in 0..blocks {
        let due = start + period.mul_f64(b as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > Duration::from_millis(15) {
            stalls.push(json!([b, (now - due).as_micros() as u64]));
        }
        let first = b * BLOCK as u64;
        input.clear();
        if b == 0 {
            for &(id, value) in &params {
                input.push(&ParamValueEvent::new(
                    0,
                    ClapId::new(param_hash(id)),
                    Pckn::match_all(),
                    value,
                ));
            }
        }
        while let Some(&(at, key, on)) = to_play.get(next) {
            if at >= first + BLOCK as u64 {
                break;
            }
            let time = at.saturating_sub(first) as u32;
            let pckn = Pckn::new(0u16, 0u16, key as u16, Match::All);
            if on {
                input.push(&NoteOnEvent::new(time, pckn, 100.0 / 127.0));
            } else {
                input.push(&NoteOffEvent::new(time, pckn, 0.0));
            }
            next += 1;
        }
        output.clear();
        let t = transport(first as f64 / (RATE / 2.0));
        {
            let in_audio = in_ports.with_input_buffers(std::iter::empty::<
                AudioPortBuffer<
                    std::iter::Empty<InputChannel<f32>>,
                    std::iter::Empty<InputChannel<f64>>,
                >,
            >());
            let mut out_audio = out_ports.with_output_buffers([AudioPortBuffer {
                latency: 0,
                channels: AudioPortBufferType::f32_output_only(
                    [left.as_mut_slice(), right.as_mut_slice()].into_iter(),
                ),
            }]);
            processor
                .process(
                    &in_audio,
                    &mut out_audio,
                    &InputEvents::from_buffer(&input),
                    &mut OutputEvents::from_buffer(&mut output),
                    Some(first),
                    Some(&t),
                )
                .map_err(|e| anyhow::anyhow!("process: {e:?}"))?;
        }
        peak = left.iter().chain(&right).fold(peak, |m, x| m.max(x.abs()));
        for e in output.iter() {
            let (time, p, on, vel) = if let Some(n) = e.as_event::<NoteOnEvent>() {
                (n.header().time(), n.pckn(), true, n.velocity())
            } else if let Some(n) = e.as_event::<NoteOffEvent>() {
                (n.header().time(), n.pckn(), false, n.velocity())
            } else {
                continue;
            };
            let get = |m: Match<u16>| m.into_specific().map_or(-1, |v| v as i32);
            notes.push(json!({
                "sample": first + time as u64,
                "channel": get(p.channel),
                "key": get(p.key),
                "velocity": (vel * 127.0).round() as i32,
                "on": on,
            }));
        }
    }
    let stopped = processor.stop_processing();
    instance.deactivate(stopped);
    if let Some((gui, _window)) = gui {
        gui.destroy(&instance.plugin_handle());
    }

    let mut saved = Vec::new();
    state_ext
        .save(&instance.plugin_handle(), &mut saved)
        .map_err(|e| anyhow::anyhow!("saving the state: {e:?}"))?;
    if let Some(path) = &args.state_out {
        std::fs::write(path, &saved).with_context(|| format!("writing {path}"))?;
    }
    let report = json!({
        "sample_rate": RATE,
        "block": BLOCK,
        "t0_unix_us": t0_unix_us,
        "blocks": blocks,
        "notes": notes,
        "stalls": stalls,
        "peak": peak,
        "state": decode_state(&saved)?,
    });
    println!("{report}");
    drop(instance);
    drop(entry);
    Ok(())
}
