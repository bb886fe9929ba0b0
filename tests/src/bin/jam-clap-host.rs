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
//! [--play KEY,KEY,...] [--play-at S] [--state-in FILE] [--state-out FILE]
//! [--field KEY=VALUE]... [--record FROM,TO]`. `--field` sets any
//! persisted field by its key (`server`, `server-session`, `key-file`,
//! `capture-folder`, ...).
//! `--play` plays one note every 500 ms from `--play-at` seconds (default
//! 2), each 250 ms long, velocity 100, channel 1. `--gui` (Linux, X11)
//! opens the plugin's editor embedded in a window of the host's own for the
//! whole run, so it can be looked at or captured (`$DISPLAY` must be set).
//! `--field` sets any persisted field (`capture-folder`, `key-file`, ...);
//! `--record` turns the `record` parameter on at FROM seconds and off at TO
//! (a host automating it).
#![allow(unsafe_code, reason = "loading a CLAP entry is unsafe by nature")]

use anyhow::{Context, Result, bail};
use clack_extensions::state::PluginState;
use clack_host::prelude::*;
use jam_tests::clap_host::{
    Host, Instance, PLAY_EVERY_S, PLAY_LENGTH_S, PLAY_VELOCITY, push_note, push_param, transport,
};
use serde_json::{Value, json};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const RATE: f64 = 48_000.0;
const BLOCK: usize = 256;

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
    fields: Vec<(String, String)>,
    gui: bool,
    record: Option<(f64, f64)>,
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
            "--field" => {
                let v = value()?;
                let (key, value) = v
                    .split_once('=')
                    .with_context(|| format!("--field needs KEY=VALUE, got {v:?}"))?;
                a.fields.push((key.to_string(), value.to_string()));
            }
            "--gui" => a.gui = true,
            "--record" => {
                let v = value()?;
                let (from, to) = v.split_once(',').context("--record needs FROM,TO")?;
                a.record = Some((from.trim().parse()?, to.trim().parse()?));
            }
            s if s.starts_with("--") => bail!("unknown option {s}"),
            s => a.bundle = s.to_string(),
        }
    }
    if a.bundle.is_empty() {
        bail!("usage: jam-clap-host BUNDLE.clap [options]");
    }
    Ok(a)
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
    use x11rb::wrapper::ConnectionExt as _;
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
    // Wait until the server has made the window: the editor reparents into
    // it over its own connection, and requests on two connections are not
    // ordered (a flush alone let the editor's ReparentWindow arrive first
    // and fail with BadWindow).
    conn.sync()?;
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
    let mut plugin = Instance::new(&entry, "jam-clap-host")?;
    let instance = plugin.plugin();

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
        let named = [
            ("session", &args.session),
            ("display-name", &args.name),
            ("listen", &args.listen),
        ];
        let named = named.into_iter().filter_map(|(k, v)| Some((k, v.clone()?)));
        let extra = args.fields.iter().map(|(k, v)| (k.as_str(), v.clone()));
        for (key, value) in named.chain(extra) {
            // Persisted fields are JSON documents of their own.
            fields.insert(key.into(), Value::String(Value::String(value).to_string()));
        }
    }
    let bytes = encode_state(&state)?;
    state_ext
        .load(&instance.plugin_handle(), &mut bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("loading the state: {e:?}"))?;

    plugin.activate(RATE, BLOCK as u32)?;

    // The editor, embedded in a window of ours.
    let gui = if args.gui {
        Some(open_editor(plugin.plugin())?)
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
        let on = ((args.play_at + PLAY_EVERY_S * i as f64) * RATE) as u64;
        to_play.push((on, key, true));
        to_play.push((on + (PLAY_LENGTH_S * RATE) as u64, key, false));
    }
    to_play.sort();

    let blocks = (args.seconds * RATE / BLOCK as f64).ceil() as u64;
    let period = Duration::from_secs_f64(BLOCK as f64 / RATE);
    let mut input = EventBuffer::with_capacity(256);
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
                push_param(&mut input, id, value);
            }
        }
        if let Some((from, to)) = args.record {
            let at = |s: f64| (s * RATE) as u64 / BLOCK as u64;
            if b == at(from) {
                push_param(&mut input, "record", 1.0);
            }
            if b == at(to) {
                push_param(&mut input, "record", 0.0);
            }
        }
        while let Some(&(at, key, on)) = to_play.get(next) {
            if at >= first + BLOCK as u64 {
                break;
            }
            let time = at.saturating_sub(first) as u32;
            let velocity = if on {
                f64::from(PLAY_VELOCITY) / 127.0
            } else {
                0.0
            };
            push_note(&mut input, time, key, on, velocity);
            next += 1;
        }
        let t = transport(true, 120.0, first as f64 / (RATE / 2.0));
        let block = plugin.process(BLOCK, &input, Some(first), &t)?;
        peak = (block.left.iter())
            .chain(block.right)
            .fold(peak, |m, x| m.max(x.abs()));
        for n in block.notes {
            notes.push(json!({
                "sample": first + n.time as u64,
                "channel": n.channel,
                "key": n.key,
                "velocity": (n.velocity * 127.0).round() as i32,
                "on": n.on,
            }));
        }
    }
    plugin.deactivate();
    let instance = plugin.plugin();
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
    drop(plugin);
    drop(entry);
    Ok(())
}
