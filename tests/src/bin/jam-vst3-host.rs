//! `jam-vst3-host`: a small real-time VST3 host for the plugin's tests,
//! written on the `vst3` crate's bindings. JUCE hosts (pedalboard) do not
//! expose a plugin's note output; this one reads the plugin's event output
//! bus.
//!
//! It loads the bundle's shared library (`ModuleEntry`, `GetPluginFactory`),
//! creates the audio module, restores the plugin's state with the session
//! address and display name set (`IComponent::setState`, as a DAW restoring
//! a project does), activates the audio and event buses, and calls
//! `process` every 256 samples at 48 kHz in real time with the transport
//! playing at 120 BPM. It prints one JSON object:
//! `{"notes": [{"sample", "channel", "key", "velocity", "on"}], "peak"}`.
//!
//! Usage: `jam-vst3-host BUNDLE.vst3 --session ADDR [--name NAME]
//! [--seconds S]`.
#![allow(unsafe_code, reason = "a VST3 host calls C++ interfaces by nature")]

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::cell::{Cell, RefCell};
use std::ffi::{CStr, c_void};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vst3::Steinberg::Vst::{
    AudioBusBuffers, BusDirections_, Event, Event_, IAudioProcessor, IAudioProcessorTrait,
    IComponent, IComponentTrait, IEventList, IEventListTrait, IHostApplication,
    IHostApplicationTrait, MediaTypes_, ProcessContext, ProcessContext_, ProcessData,
    ProcessModes_, ProcessSetup, String128, SymbolicSampleSizes_,
};
use vst3::Steinberg::{
    FUnknown, IBStream, IBStream_, IBStreamTrait, IPluginBaseTrait, IPluginFactory,
    IPluginFactoryTrait, PClassInfo, TUID, int32, int64, kInvalidArgument, kNotImplemented,
    kResultFalse, kResultOk, tresult,
};
use vst3::{Class, ComPtr, ComWrapper, Interface};

const RATE: f64 = 48_000.0;
const BLOCK: usize = 256;

/// An in-memory `IBStream`.
struct MemStream {
    data: RefCell<Vec<u8>>,
    pos: Cell<usize>,
}

impl Class for MemStream {
    type Interfaces = (IBStream,);
}

impl IBStreamTrait for MemStream {
    unsafe fn read(&self, buffer: *mut c_void, n: int32, read: *mut int32) -> tresult {
        let data = self.data.borrow();
        let pos = self.pos.get().min(data.len());
        let n = (n.max(0) as usize).min(data.len() - pos);
        // SAFETY: the caller gives a buffer of at least `n` bytes.
        unsafe { std::ptr::copy_nonoverlapping(data[pos..].as_ptr(), buffer.cast(), n) };
        self.pos.set(pos + n);
        if !read.is_null() {
            // SAFETY: checked non-null; the caller's out parameter.
            unsafe { *read = n as int32 };
        }
        kResultOk
    }

    unsafe fn write(&self, buffer: *mut c_void, n: int32, written: *mut int32) -> tresult {
        let n = n.max(0) as usize;
        let mut data = self.data.borrow_mut();
        let pos = self.pos.get();
        if data.len() < pos + n {
            data.resize(pos + n, 0);
        }
        // SAFETY: the caller gives a buffer of `n` bytes.
        unsafe { std::ptr::copy_nonoverlapping(buffer.cast(), data[pos..].as_mut_ptr(), n) };
        self.pos.set(pos + n);
        if !written.is_null() {
            // SAFETY: checked non-null; the caller's out parameter.
            unsafe { *written = n as int32 };
        }
        kResultOk
    }

    unsafe fn seek(&self, pos: int64, mode: int32, result: *mut int64) -> tresult {
        let len = self.data.borrow().len() as i64;
        let base = match mode as u32 {
            m if m == IBStream_::IStreamSeekMode_::kIBSeekSet => 0,
            m if m == IBStream_::IStreamSeekMode_::kIBSeekCur => self.pos.get() as i64,
            m if m == IBStream_::IStreamSeekMode_::kIBSeekEnd => len,
            _ => return kInvalidArgument,
        };
        let new = (base + pos).clamp(0, len);
        self.pos.set(new as usize);
        if !result.is_null() {
            // SAFETY: checked non-null; the caller's out parameter.
            unsafe { *result = new };
        }
        kResultOk
    }

    unsafe fn tell(&self, pos: *mut int64) -> tresult {
        if !pos.is_null() {
            // SAFETY: checked non-null; the caller's out parameter.
            unsafe { *pos = self.pos.get() as i64 };
        }
        kResultOk
    }
}

/// The event list the plugin writes its note output into.
struct Events {
    list: RefCell<Vec<Event>>,
}

impl Class for Events {
    type Interfaces = (IEventList,);
}

impl IEventListTrait for Events {
    unsafe fn getEventCount(&self) -> int32 {
        self.list.borrow().len() as int32
    }

    unsafe fn getEvent(&self, index: int32, e: *mut Event) -> tresult {
        match self.list.borrow().get(index as usize) {
            Some(ev) if !e.is_null() => {
                // SAFETY: checked non-null; the caller's out parameter.
                unsafe { *e = *ev };
                kResultOk
            }
            _ => kInvalidArgument,
        }
    }

    unsafe fn addEvent(&self, e: *mut Event) -> tresult {
        if e.is_null() {
            return kInvalidArgument;
        }
        // SAFETY: checked non-null; the plugin's event.
        self.list.borrow_mut().push(unsafe { *e });
        kResultOk
    }
}

/// The host context handed to `initialize`.
struct HostApp;

impl Class for HostApp {
    type Interfaces = (IHostApplication,);
}

impl IHostApplicationTrait for HostApp {
    unsafe fn getName(&self, name: *mut String128) -> tresult {
        if name.is_null() {
            return kInvalidArgument;
        }
        // SAFETY: checked non-null; a String128 out parameter.
        let out = unsafe { &mut *name };
        out.fill(0);
        for (o, c) in out.iter_mut().zip("jam-vst3-host".encode_utf16()) {
            *o = c;
        }
        kResultOk
    }

    unsafe fn createInstance(
        &self,
        _cid: *mut TUID,
        _iid: *mut TUID,
        obj: *mut *mut c_void,
    ) -> tresult {
        if !obj.is_null() {
            // SAFETY: checked non-null; the caller's out parameter.
            unsafe { *obj = std::ptr::null_mut() };
        }
        kNotImplemented
    }
}

fn check(what: &str, r: tresult) -> Result<()> {
    if r != kResultOk {
        bail!("{what} returned {r}");
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jam-vst3-host: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mut bundle = None;
    let (mut session, mut name, mut seconds) = (None, "vst3-host".to_string(), 5.0f64);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--session" => session = it.next(),
            "--name" => name = it.next().context("--name needs a value")?,
            "--seconds" => seconds = it.next().context("--seconds needs a value")?.parse()?,
            s if s.starts_with("--") => bail!("unknown option {s}"),
            s => bundle = Some(std::path::PathBuf::from(s)),
        }
    }
    let bundle = bundle.context("usage: jam-vst3-host BUNDLE.vst3 --session ADDR")?;
    let stem = bundle
        .file_stem()
        .context("the bundle has no name")?
        .to_owned();
    let so = bundle
        .join("Contents")
        .join(format!("{}-linux", std::env::consts::ARCH))
        .join(stem)
        .with_extension("so");

    // SAFETY: the library is this workspace's own plugin; its entry points
    // have the signatures the VST3 module format prescribes.
    let lib = unsafe { libloading::Library::new(&so) }
        .with_context(|| format!("loading {}", so.display()))?;
    let factory = unsafe {
        let entry: libloading::Symbol<unsafe extern "C" fn(*mut c_void) -> bool> =
            lib.get(b"ModuleEntry")?;
        if !entry(std::ptr::null_mut()) {
            bail!("ModuleEntry failed");
        }
        let get: libloading::Symbol<unsafe extern "system" fn() -> *mut IPluginFactory> =
            lib.get(b"GetPluginFactory")?;
        ComPtr::from_raw(get()).context("GetPluginFactory returned null")?
    };

    // The audio module class.
    let mut cid = None;
    for i in 0..unsafe { factory.countClasses() } {
        // SAFETY: zeroed is a valid PClassInfo (plain data); filled below.
        let mut info: PClassInfo = unsafe { std::mem::zeroed() };
        check("getClassInfo", unsafe {
            factory.getClassInfo(i, &mut info)
        })?;
        // SAFETY: the category is a NUL-terminated C string.
        let category = unsafe { CStr::from_ptr(info.category.as_ptr()) };
        if category.to_bytes() == b"Audio Module Class" {
            cid = Some(info.cid);
        }
    }
    let cid = cid.context("no audio module class in the bundle")?;
    let mut obj = std::ptr::null_mut();
    check("createInstance", unsafe {
        factory.createInstance(
            cid.as_ptr(),
            IComponent::IID.as_ptr() as *const std::ffi::c_char,
            &mut obj,
        )
    })?;
    // SAFETY: createInstance succeeded and returned an IComponent.
    let component = unsafe { ComPtr::<IComponent>::from_raw(obj as *mut IComponent) }
        .context("createInstance gave null")?;
    let host = ComWrapper::new(HostApp);
    let host_ptr = host
        .to_com_ptr::<FUnknown>()
        .context("the host context as FUnknown")?;
    check("initialize", unsafe {
        component.initialize(host_ptr.as_ptr())
    })?;

    // State: the plugin's own, with the session and name set.
    let saved = ComWrapper::new(MemStream {
        data: RefCell::new(Vec::new()),
        pos: Cell::new(0),
    });
    let stream = saved.to_com_ptr::<IBStream>().context("IBStream")?;
    check("getState", unsafe { component.getState(stream.as_ptr()) })?;
    let mut state: Value = serde_json::from_slice(&saved.data.borrow())
        .context("the plugin's VST3 state is not JSON")?;
    let fields = state["fields"]
        .as_object_mut()
        .context("the state has no fields")?;
    if let Some(s) = &session {
        fields.insert("session".into(), Value::String(json!(s).to_string()));
    }
    fields.insert(
        "display-name".into(),
        Value::String(json!(name).to_string()),
    );
    let restored = ComWrapper::new(MemStream {
        data: RefCell::new(serde_json::to_vec(&state)?),
        pos: Cell::new(0),
    });
    let stream = restored.to_com_ptr::<IBStream>().context("IBStream")?;
    check("setState", unsafe { component.setState(stream.as_ptr()) })?;

    let processor = component
        .cast::<IAudioProcessor>()
        .context("the component is not an IAudioProcessor")?;
    for (media, dir) in [
        (MediaTypes_::kAudio, BusDirections_::kOutput),
        (MediaTypes_::kEvent, BusDirections_::kInput),
        (MediaTypes_::kEvent, BusDirections_::kOutput),
    ] {
        check("activateBus", unsafe {
            component.activateBus(media as i32, dir as i32, 0, 1)
        })?;
    }
    let mut setup = ProcessSetup {
        processMode: ProcessModes_::kRealtime as i32,
        symbolicSampleSize: SymbolicSampleSizes_::kSample32 as i32,
        maxSamplesPerBlock: BLOCK as i32,
        sampleRate: RATE,
    };
    check("setupProcessing", unsafe {
        processor.setupProcessing(&mut setup)
    })?;
    check("setActive", unsafe { component.setActive(1) })?;
    let r = unsafe { processor.setProcessing(1) };
    if r != kResultOk && r != kNotImplemented && r != kResultFalse {
        bail!("setProcessing returned {r}");
    }

    let events = ComWrapper::new(Events {
        list: RefCell::new(Vec::with_capacity(1024)),
    });
    let events_ptr = events.to_com_ptr::<IEventList>().context("IEventList")?;
    let mut left = vec![0.0f32; BLOCK];
    let mut right = vec![0.0f32; BLOCK];
    let mut notes = Vec::new();
    let mut peak = 0.0f32;
    let blocks = (seconds * RATE / BLOCK as f64).ceil() as u64;
    let period = Duration::from_secs_f64(BLOCK as f64 / RATE);
    let start = Instant::now();
    for b in 0..blocks {
        let due = start + period.mul_f64(b as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let first = b * BLOCK as u64;
        events.list.borrow_mut().clear();
        let mut channels = [left.as_mut_ptr(), right.as_mut_ptr()];
        // SAFETY: zeroed is valid for this plain-data struct; set below.
        let mut out: AudioBusBuffers = unsafe { std::mem::zeroed() };
        out.numChannels = 2;
        out.__field0.channelBuffers32 = channels.as_mut_ptr();
        // SAFETY: zeroed is valid for this plain-data struct; set below.
        let mut ctx: ProcessContext = unsafe { std::mem::zeroed() };
        ctx.state = ProcessContext_::StatesAndFlags_::kPlaying
            | ProcessContext_::StatesAndFlags_::kTempoValid
            | ProcessContext_::StatesAndFlags_::kProjectTimeMusicValid;
        ctx.sampleRate = RATE;
        ctx.projectTimeSamples = first as i64;
        ctx.projectTimeMusic = first as f64 / (RATE / 2.0);
        ctx.tempo = 120.0;
        ctx.timeSigNumerator = 4;
        ctx.timeSigDenominator = 4;
        let mut data = ProcessData {
            processMode: ProcessModes_::kRealtime as i32,
            symbolicSampleSize: SymbolicSampleSizes_::kSample32 as i32,
            numSamples: BLOCK as i32,
            numInputs: 0,
            numOutputs: 1,
            inputs: std::ptr::null_mut(),
            outputs: &mut out,
            inputParameterChanges: std::ptr::null_mut(),
            outputParameterChanges: std::ptr::null_mut(),
            inputEvents: std::ptr::null_mut(),
            outputEvents: events_ptr.as_ptr(),
            processContext: &mut ctx,
        };
        check("process", unsafe { processor.process(&mut data) })?;
        peak = left.iter().chain(&right).fold(peak, |m, x| m.max(x.abs()));
        for e in events.list.borrow().iter() {
            let (on, channel, key, velocity) = match e.r#type as u32 {
                t if t == Event_::EventTypes_::kNoteOnEvent => {
                    // SAFETY: the type says which union member is set.
                    let n = unsafe { e.__field0.noteOn };
                    (true, n.channel, n.pitch, n.velocity)
                }
                t if t == Event_::EventTypes_::kNoteOffEvent => {
                    // SAFETY: the type says which union member is set.
                    let n = unsafe { e.__field0.noteOff };
                    (false, n.channel, n.pitch, n.velocity)
                }
                _ => continue,
            };
            notes.push(json!({
                "sample": first + e.sampleOffset as u64,
                "channel": channel,
                "key": key,
                "velocity": (velocity * 127.0).round() as i32,
                "on": on,
            }));
        }
    }
    unsafe {
        processor.setProcessing(0);
        component.setActive(0);
        component.terminate();
    }
    drop(processor);
    drop(component);
    drop(factory);
    println!("{}", json!({ "notes": notes, "peak": peak }));
    // The library stays loaded until the process exits: a plugin's
    // background threads may still be finishing.
    std::mem::forget(lib);
    Ok(())
}
