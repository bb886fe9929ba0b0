//! The worker's capture: events played on the audio thread and events the
//! network side delivers end up in a real sealed file, with participant,
//! direction, sender time and beat; the file opens only with the
//! recipient's key. The network side is this test, at the `NetPort` seam
//! (the real transport behind it is tested by `jam peer --capture` in
//! `tests/tests/peer_capture.rs`).

mod common;
use common::wait_for;

use jam_capture::Identity;
use jam_capture::reader::CaptureReader;
use jam_capture::record::{Direction, MidiEvent, Record};
use jam_core::{Beats, Micros, MonotonicClock, PeerId, ShortMessage};
use jam_engine::net::{NetCommand, NetEvent, NetPort, Role, SessionAddress, net_link};
use jam_engine::{
    Block, Engine, EngineConfig, EngineControl, EngineRt, EventBuffer, HostEvent,
    MAX_EVENTS_PER_BLOCK, Recording, RecordingError, RecordingStart, WorkerHandle,
};
use rand::SeedableRng;

/// An engine for `local` with its worker running, whose network side is
/// this test (the `NetPort`).
fn engine_at_port(local: PeerId) -> (EngineRt, WorkerHandle, EngineControl, NetPort) {
    let (rt, worker) = Engine::new(EngineConfig::new(local));
    let (link, port) = net_link();
    let handle = worker.spawn(link).unwrap();
    let control = handle.control();
    (rt, handle, control, port)
}

#[test]
fn the_worker_records_sent_and_received_events_with_their_beats() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.scp");
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let me = Identity::generate(&mut rng);
    let stranger = Identity::generate(&mut rng);
    let local = PeerId([1; 16]);
    let carol = PeerId([7; 16]);
    let clock = MonotonicClock::new();

    let (mut rt, handle, control, mut port) = engine_at_port(local);
    let start = RecordingStart {
        recorder: local,
        recorder_name: "me".into(),
        session_schema: 1,
        tempo_bpm: 120.0,
    };
    let rec = Recording::create(&path, &[me.to_public()], start.clone(), clock, &mut rng).unwrap();
    // A second recording on the same file is refused; the first is intact.
    let again = Recording::create(&path, &[me.to_public()], start, clock, &mut rng);
    assert!(
        matches!(again, Err(RecordingError::Create { .. })),
        "{again:?}"
    );
    control.start_capture(rec);
    // Control messages are handled in order, but apart from the network
    // side's events: once the invite after it comes out, the capture runs.
    let invite = SessionAddress::Direct("127.0.0.1:5004".parse().unwrap());
    control.invite(invite.clone());
    loop {
        match port.commands.blocking_recv().unwrap() {
            NetCommand::Invite(a) if a == invite => break,
            _ => continue,
        }
    }

    // Carol joins and plays two notes; the second was rebuilt by the
    // journal and its beat comes with it.
    let send = |ev: NetEvent| port.events.blocking_send(ev).unwrap();
    send(NetEvent::PeerJoined {
        peer: carol,
        name: "carol".into(),
        role: Role::Auto,
        address: None,
        key: None,
    });
    send(NetEvent::Midi {
        peer: carol,
        msg: ShortMessage::note_on(2, 64, 80),
        sent_at: Micros::from_secs(1),
        beat: None,
        arrival: Micros::from_millis(1010),
        recovered: false,
    });
    send(NetEvent::Midi {
        peer: carol,
        msg: ShortMessage::note_off(2, 64, 0),
        sent_at: Micros::from_millis(1500),
        beat: Some(Beats::from_f64(7.25)),
        arrival: Micros::from_millis(1600),
        recovered: true,
    });
    wait_for("carol's events", || {
        control
            .peers()
            .iter()
            .any(|p| p.peer == carol && p.events == 2)
    });

    // We play a note at sample 24 000 of a block at t = 2 s (48 kHz).
    let mut out = EventBuffer::with_capacity(MAX_EVENTS_PER_BLOCK);
    let (mut l, mut r) = (vec![0.0f32; 256], vec![0.0f32; 256]);
    let input = [HostEvent {
        offset: 48,
        msg: ShortMessage::note_on(0, 60, 100),
    }];
    rt.process_block(&mut Block {
        now: Micros::from_secs(2),
        sample_rate: 48_000.0,
        transport: Default::default(),
        settings: Default::default(),
        input: &input,
        output: &mut out,
        left: &mut l,
        right: &mut r,
    });
    let sent = loop {
        match port.commands.blocking_recv().unwrap() {
            NetCommand::SendMidi(events) => break events,
            _ => continue,
        }
    };
    assert_eq!(sent.len(), 1);

    let done = control.finish_capture().blocking_recv().unwrap();
    let summary = done.expect("a capture was running").unwrap();
    assert_eq!(summary.path, path);
    assert_eq!(summary.stats.midi_events, 3);
    // Nothing runs any more.
    assert!(control.finish_capture().blocking_recv().unwrap().is_none());
    handle.stop();

    let file = std::fs::File::open(&path).unwrap();
    let mut reader = CaptureReader::open(std::io::BufReader::new(file), &[me]).unwrap();
    assert_eq!(reader.session_start().recorder, local);
    assert_eq!(reader.session_start().recorder_name, "me");
    let mut midi = Vec::new();
    let mut names = Vec::new();
    while let Some((_, rec)) = reader.next_record().unwrap() {
        match rec {
            Record::Midi(m) => midi.push(m),
            Record::Metadata(m) => names.push((m.key, m.value)),
            _ => {}
        }
    }
    assert_eq!(names, vec![(format!("name:{carol}"), "carol".to_string())]);
    let ms = |t| Micros::from_millis(t);
    assert_eq!(
        midi,
        vec![
            MidiEvent {
                at: ms(1010),
                participant: carol,
                direction: Direction::In,
                sender_time: ms(1000),
                // 120 BPM, beat 0 at time 0: the session timeline.
                beat: Beats::from_f64(2.0),
                bytes: vec![0x92, 64, 80],
                recovered: false,
            },
            MidiEvent {
                at: ms(1600),
                participant: carol,
                direction: Direction::In,
                sender_time: ms(1500),
                beat: Beats::from_f64(7.25),
                bytes: vec![0x82, 64, 0],
                recovered: true,
            },
            MidiEvent {
                at: sent[0].sent_at,
                participant: local,
                direction: Direction::Out,
                sender_time: sent[0].sent_at,
                beat: sent[0].beat,
                bytes: vec![0x90, 60, 100],
                recovered: false,
            },
        ]
    );
    // The note's time is its sample's: 48 samples after the block start.
    assert_eq!(sent[0].sent_at, ms(2001));

    // Someone else's key cannot open it.
    let file = std::fs::File::open(&path).unwrap();
    assert!(CaptureReader::open(std::io::BufReader::new(file), &[stranger]).is_err());
}

/// Reads every MIDI record of the capture at `path` with `id`.
fn midi_in(path: &std::path::Path, id: &Identity) -> Vec<MidiEvent> {
    let file = std::fs::File::open(path).unwrap();
    let mut reader =
        CaptureReader::open(std::io::BufReader::new(file), std::slice::from_ref(id)).unwrap();
    let mut midi = Vec::new();
    while let Some((_, rec)) = reader.next_record().unwrap() {
        if let Record::Midi(m) = rec {
            midi.push(m);
        }
    }
    midi
}

/// The record switch (the plugin's `record` parameter): the audio thread
/// only stores it; the worker starts a capture in the target folder, named
/// by date, time and session, sealed to the key file's owner, and finishes
/// it when the switch goes off. Problems are shown, never panicked on, and
/// leave nothing recording until the switch goes off and on again.
#[test]
fn the_record_switch_starts_and_finishes_captures_in_the_folder() {
    use jam_engine::CaptureTarget;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let (me, key) = key_file(dir.path(), &mut rng);
    let stranger = Identity::generate(&mut rng);
    let folder = dir.path().join("captures"); // made by the first capture
    let local = PeerId([1; 16]);
    let clock = MonotonicClock::new();

    let (mut rt, handle, control, mut port) = engine_at_port(local);
    // The worker has ticked `n` more times (so it has seen the switch).
    let ticks = |n: u64| {
        let t0 = control.counters().ticks;
        wait_for("worker ticks", || control.counters().ticks >= t0 + n);
    };
    let mut block = OneBlock::new();
    let mut play = |rt: &mut jam_engine::EngineRt, key: u8| {
        block.play(rt, &clock, ShortMessage::note_on(0, key, 100));
    };

    // No target yet, then no key file: an error, nothing recording.
    rt.set_record(true);
    wait_for("the error", || control.capture_status().error.is_some());
    assert!(!control.capture_status().recording);
    rt.set_record(false);
    ticks(3);
    let mut target = CaptureTarget {
        folder: Some(folder.clone()),
        key_file: None,
        recorder_name: "me".into(),
        session: "127.0.0.1:5004".into(),
        session_name: None,
    };
    control.set_capture_target(target.clone(), clock);
    ticks(3); // handled before the switch is read
    rt.set_record(true);
    wait_for("no key file", || {
        control
            .capture_status()
            .error
            .is_some_and(|e| e.contains("no key file"))
    });
    // Still on: it does not retry until the switch goes off and on.
    ticks(3);
    assert!(!control.capture_status().recording);
    assert!(!folder.exists(), "nothing was made");
    rt.set_record(false);
    ticks(3);

    // A folder that is a file cannot be used.
    let not_a_folder = dir.path().join("plain-file");
    std::fs::write(&not_a_folder, b"x").unwrap();
    target.key_file = Some(key.clone());
    target.folder = Some(not_a_folder.clone());
    control.set_capture_target(target.clone(), clock);
    ticks(3); // handled before the switch is read
    rt.set_record(true);
    wait_for("the folder error", || {
        control
            .capture_status()
            .error
            .is_some_and(|e| e.contains("capture folder") && e.contains("plain-file"))
    });
    rt.set_record(false);
    ticks(3);

    // Now it records: two notes played while on.
    target.folder = Some(folder.clone());
    control.set_capture_target(target, clock);
    ticks(3); // handled before the switch is read
    rt.set_record(true);
    wait_for("recording", || control.capture_status().recording);
    let status = control.capture_status();
    assert_eq!(status.error, None);
    let first = status.path.clone().unwrap();
    assert_eq!(first.parent(), Some(folder.as_path()));
    let name = first.file_name().unwrap().to_str().unwrap().to_string();
    assert!(name.ends_with("_127.0.0.1-5004.scp"), "{name}");
    play(&mut rt, 60);
    play(&mut rt, 62);
    wait_for("two events", || control.capture_status().events == 2);
    rt.set_record(false);
    wait_for("finished", || !control.capture_status().recording);
    let status = control.capture_status();
    assert_eq!((status.path.as_ref(), status.events), (Some(&first), 2));
    // Events sent while off are not recorded.
    play(&mut rt, 64);
    ticks(3);

    // On again: a new file, never the old one.
    rt.set_record(true);
    wait_for("recording again", || control.capture_status().recording);
    let second = control.capture_status().path.unwrap();
    assert_ne!(second, first);
    play(&mut rt, 65);
    wait_for("one event", || control.capture_status().events == 1);
    // Stopping the worker (the plugin dropped) finishes it.
    handle.stop();
    while port.commands.try_recv().is_ok() {}

    let keys = |m: &[MidiEvent]| -> Vec<u8> { m.iter().map(|e| e.bytes[1]).collect() };
    assert_eq!(keys(&midi_in(&first, &me)), vec![60, 62]);
    assert_eq!(keys(&midi_in(&second, &me)), vec![65]);
    for path in [&first, &second] {
        let file = std::fs::File::open(path).unwrap();
        assert!(
            CaptureReader::open(
                std::io::BufReader::new(file),
                std::slice::from_ref(&stranger)
            )
            .is_err(),
            "{}",
            path.display()
        );
    }
}

fn clock_now(clock: &MonotonicClock) -> Micros {
    jam_core::Clock::now(clock)
}

/// The buffers of a host playing one block at a time into the engine.
struct OneBlock {
    out: EventBuffer<jam_engine::OutEvent>,
    left: Vec<f32>,
    right: Vec<f32>,
}

impl OneBlock {
    fn new() -> Self {
        OneBlock {
            out: EventBuffer::with_capacity(MAX_EVENTS_PER_BLOCK),
            left: vec![0.0; 256],
            right: vec![0.0; 256],
        }
    }

    /// One 256-sample block starting now on `clock`, with `msg` at its
    /// first sample.
    fn play(&mut self, rt: &mut jam_engine::EngineRt, clock: &MonotonicClock, msg: ShortMessage) {
        let input = [HostEvent { offset: 0, msg }];
        rt.process_block(&mut Block {
            now: clock_now(clock),
            sample_rate: 48_000.0,
            transport: Default::default(),
            settings: Default::default(),
            input: &input,
            output: &mut self.out,
            left: &mut self.left,
            right: &mut self.right,
        });
    }
}

/// A new identity and its unencrypted key file `dir/me.key`.
fn key_file(dir: &std::path::Path, rng: &mut rand::rngs::StdRng) -> (Identity, std::path::PathBuf) {
    use jam_capture::keys::{KdfParams, encode_key_file};
    let me = Identity::generate(rng);
    let key = dir.join("me.key");
    let text = encode_key_file(&me, None, KdfParams::DEFAULT, rng).unwrap();
    std::fs::write(&key, text.as_str()).unwrap();
    (me, key)
}

/// Points the record switch at `folder` (sealed to `key`'s owner, the
/// session labelled `session`), turns it on and waits until it records.
fn record_into(
    rt: &jam_engine::EngineRt,
    control: &jam_engine::EngineControl,
    folder: &std::path::Path,
    key: &std::path::Path,
    session: &str,
    clock: MonotonicClock,
) {
    control.set_capture_target(
        jam_engine::CaptureTarget {
            folder: Some(folder.to_path_buf()),
            key_file: Some(key.to_path_buf()),
            recorder_name: "me".into(),
            session: session.into(),
            session_name: None,
        },
        clock,
    );
    // Handled before the switch is read.
    let t0 = control.counters().ticks;
    wait_for("worker ticks", || control.counters().ticks >= t0 + 3);
    rt.set_record(true);
    wait_for("recording", || control.capture_status().recording);
}

/// The session document names the switch's captures: a session founded
/// here is "<display name>'s session".
#[test]
fn the_record_switch_names_captures_after_the_session_document() {
    use jam_engine::session_sync::SessionSetup;
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(6);
    let (_, key) = key_file(dir.path(), &mut rng);
    let local = PeerId([1; 16]);
    let clock = MonotonicClock::new();
    let (rt, handle, control, mut port) = engine_at_port(local);
    control.enable_session(SessionSetup::new("Ana", 120.0, 0, &mut rng), local, clock);
    // Commands are carried out in order, apart from the network's events:
    // once the command after it comes out, the session is on.
    control.browse_lan(false);
    while !matches!(
        port.commands.blocking_recv().unwrap(),
        NetCommand::BrowseLan(false)
    ) {}
    // Someone joins without having been invited: this engine founds it.
    port.events
        .blocking_send(NetEvent::PeerJoined {
            peer: PeerId([7; 16]),
            name: "carol".into(),
            role: Role::Auto,
            address: None,
            key: None,
        })
        .unwrap();
    wait_for("the document", || control.session().present);
    record_into(&rt, &control, dir.path(), &key, "127.0.0.1:5004", clock);
    let path = control.capture_status().path.unwrap();
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    assert!(name.ends_with("_Ana-s-session.scp"), "{name}");
    handle.stop();
}

// --- A full disk ------------------------------------------------------------

/// Set (to the small disk's mount) in the re-executed test process.
const SMALL_DISK: &str = "JAM_TEST_SMALL_DISK";
/// The key file, for the re-executed test process.
const SMALL_DISK_KEY: &str = "JAM_TEST_SMALL_DISK_KEY";
const FULL_DISK_TEST: &str =
    "the_record_switch_on_a_full_disk_stops_with_an_error_and_keeps_what_was_written";

/// The `i`-th event played into the engine on the full disk: notes on and
/// off, keys 36 to 83 round and round, the velocity counting the rounds.
fn nth_note(i: usize) -> ShortMessage {
    let n = i / 2;
    let key = 36 + (n % 48) as u8;
    if i.is_multiple_of(2) {
        ShortMessage::note_on(0, key, 1 + (n / 48 % 126) as u8)
    } else {
        ShortMessage::note_off(0, key, 0)
    }
}

/// The record switch (the plugin's path) on a real, small tmpfs: the
/// capture stops with an error in [`jam_engine::CaptureStatus`] (what the
/// plugin's editor shows), the engine keeps sending what is played, and
/// the file holds the events played before the disk filled. The test runs
/// itself again under `unshare` with the tmpfs mounted
/// (`jam_tests::small_disk`); the file is read from its copy afterwards.
#[test]
fn the_record_switch_on_a_full_disk_stops_with_an_error_and_keeps_what_was_written() {
    if let Some(mount) = std::env::var_os(SMALL_DISK) {
        let key = std::env::var_os(SMALL_DISK_KEY).expect("the key file");
        return fill_the_disk(std::path::Path::new(&mount), key.as_ref());
    }
    let dir = tempfile::tempdir().unwrap();
    // 16 KiB: a few seconds of events.
    let Some(disk) = jam_tests::small_disk::SmallDisk::new(dir.path(), 16) else {
        return;
    };
    let (me, key) = key_file(dir.path(), &mut rand::rngs::StdRng::seed_from_u64(8));
    let out = disk
        .command(&std::env::current_exe().unwrap())
        .args([
            "--exact",
            FULL_DISK_TEST,
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(SMALL_DISK, disk.mount())
        .env(SMALL_DISK_KEY, &key)
        .output()
        .unwrap();
    let said = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("1 passed"), "the test ran: {said}");
    let played: usize = said
        .lines()
        .find_map(|l| l.split("played before the error: ").nth(1))
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));

    // The copy of the disk: one capture, cut where the disk filled; the
    // reader gives back every complete chunk, then the truncation.
    let captures: Vec<_> = std::fs::read_dir(disk.kept().join("captures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(captures.len(), 1, "{captures:?}");
    let file = std::fs::File::open(&captures[0]).unwrap();
    let mut reader = CaptureReader::open(std::io::BufReader::new(file), &[me]).unwrap();
    let mut midi = Vec::new();
    let end = loop {
        match reader.next_record() {
            Ok(Some((_, Record::Midi(m)))) => midi.push(m),
            Ok(Some(_)) => {}
            Ok(None) => break None,
            Err(e) => break Some(e.to_string()),
        }
    };
    let end = end.expect("a cut file ends in an error, not as a whole one");
    assert!(end.contains("truncated after"), "{end}");
    assert!(!midi.is_empty(), "nothing was kept");
    assert!(midi.len() <= played, "{} > {played}", midi.len());
    for (i, m) in midi.iter().enumerate() {
        assert_eq!(m.direction, Direction::Out);
        assert_eq!(m.bytes, nth_note(i).as_slice(), "event {i}");
    }
}

/// Inside the small disk: records with the switch while playing one note
/// every 10 ms until the capture reports the full disk, then plays on.
fn fill_the_disk(mount: &std::path::Path, key: &std::path::Path) {
    use std::time::{Duration, Instant};
    let local = PeerId([1; 16]);
    let clock = MonotonicClock::new();
    let (mut rt, handle, control, mut port) = engine_at_port(local);
    record_into(
        &rt,
        &control,
        &mount.join("captures"),
        key,
        "small disk",
        clock,
    );

    let mut block = OneBlock::new();
    let mut played = 0;
    let mut sent = 0;
    let mut play = |rt: &mut jam_engine::EngineRt, played: &mut usize| {
        block.play(rt, &clock, nth_note(*played));
        *played += 1;
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut count_sent = |port: &mut jam_engine::net::NetPort| {
        while let Ok(c) = port.commands.try_recv() {
            if let NetCommand::SendMidi(events) = c {
                sent += events.len();
            }
        }
        sent
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let error = loop {
        let status = control.capture_status();
        if let Some(e) = status.error {
            assert!(!status.recording, "{e}");
            break e;
        }
        assert!(Instant::now() < deadline, "the disk never filled");
        play(&mut rt, &mut played);
        count_sent(&mut port);
    };
    println!("played before the error: {played}");
    assert!(
        error.contains("stopped") && error.contains("No space left on device"),
        "{error}"
    );
    // The engine plays on: what is played still goes out, nothing is
    // recorded, and the switch, still on, does not start another capture.
    for _ in 0..50 {
        play(&mut rt, &mut played);
    }
    wait_for("every note sent", || count_sent(&mut port) == played);
    let status = control.capture_status();
    assert!(!status.recording);
    assert_eq!(status.error.as_deref(), Some(error.as_str()));
    assert_eq!(
        std::fs::read_dir(mount.join("captures")).unwrap().count(),
        1
    );
    handle.stop();
}
