//! `jam peer --server URL --session NAME` as a user runs it: a real `jamd`
//! process, three real `jam peer` processes joining one session by name on
//! loopback, everything through the relay, end-to-end encrypted.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn jam() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jam"))
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_ports() -> (SocketAddr, SocketAddr) {
    let t = TcpListener::bind("127.0.0.1:0").unwrap();
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    (t.local_addr().unwrap(), u.local_addr().unwrap())
}

fn start_jamd(dir: &Path) -> (Killed, String) {
    let bin = jam_tests::workspace_bin("jam-control-plane", "jamd");
    let (http, relay) = free_ports();
    let child = Command::new(bin)
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--http-listen", &http.to_string()])
        .args(["--relay-listen", &relay.to_string()])
        .args(["--registration", "open"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("jamd starts");
    let base = format!("http://{http}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(http).is_err() {
        assert!(Instant::now() < deadline, "jamd did not listen on {http}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (Killed(child), base)
}

/// A format-0 MIDI file: five note-on/note-off pairs, 125 ms apart.
fn write_scale(path: &Path) -> Vec<Vec<u8>> {
    use midly::num::{u4, u7, u15, u28};
    use midly::{
        Format, Header, MetaMessage, MidiMessage, Smf, Timing, TrackEvent, TrackEventKind,
    };
    let midi = |delta: u32, message| TrackEvent {
        delta: u28::new(delta),
        kind: TrackEventKind::Midi {
            channel: u4::new(0),
            message,
        },
    };
    let mut track = Vec::new();
    let mut expected = Vec::new();
    for (i, key) in [60u8, 62, 64, 65, 67].into_iter().enumerate() {
        let on = MidiMessage::NoteOn {
            key: u7::new(key),
            vel: u7::new(100),
        };
        let off = MidiMessage::NoteOff {
            key: u7::new(key),
            vel: u7::new(64),
        };
        track.push(midi(if i == 0 { 0 } else { 120 }, on));
        track.push(midi(120, off));
        expected.push(vec![0x90, key, 100]);
        expected.push(vec![0x80, key, 64]);
    }
    track.push(TrackEvent {
        delta: u28::new(0),
        kind: TrackEventKind::Meta(MetaMessage::EndOfTrack),
    });
    Smf {
        header: Header::new(Format::SingleTrack, Timing::Metrical(u15::new(480))),
        tracks: vec![track],
    }
    .save(path)
    .unwrap();
    expected
}

/// Starts `jam peer --server` for `name`; its stderr lines go to the
/// returned channel.
fn peer(base: &str, dir: &Path, name: &str, extra: &[&str]) -> (Killed, mpsc::Receiver<String>) {
    let key = dir.join(format!("{name}.key"));
    if !key.exists() {
        let o = jam()
            .args(["keys", "new", "-o"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let mut child = jam()
        .args(["peer", "--name", name, "--listen", "127.0.0.1:0", "--print"])
        .args([
            "--server",
            base,
            "--session",
            "tuesday",
            "--register",
            "--create",
        ])
        .arg("--key")
        .arg(&key)
        .args(extra)
        .env("JAM_PASSWORD", format!("password of {name}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in err.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (Killed(child), rx)
}

fn wait_for(rx: &mpsc::Receiver<String>, what: &str, log: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                let hit = l.contains(what);
                log.push(l);
                if hit {
                    return;
                }
            }
            Err(_) => panic!("no line containing {what:?}; saw {log:#?}"),
        }
    }
}

#[test]
fn three_jam_peers_join_one_session_through_jamd_and_hear_every_note() {
    let dir = tempfile::tempdir().unwrap();
    let (_jamd, base) = start_jamd(&dir.path().join("jamd"));
    let song = dir.path().join("scale.mid");
    let expected = write_scale(&song);

    let (bob, bob_err) = peer(&base, dir.path(), "bob", &["--duration", "14"]);
    let mut bob_log = Vec::new();
    wait_for(&bob_err, "relay accepted us", &mut bob_log);
    let (carol, carol_err) = peer(&base, dir.path(), "carol", &["--duration", "13"]);
    let mut carol_log = Vec::new();
    wait_for(&carol_err, "relay accepted us", &mut carol_log);
    let song_arg = song.to_str().unwrap();
    let (alice, alice_err) = peer(
        &base,
        dir.path(),
        "alice",
        &["--duration", "8", "--play", song_arg],
    );

    let mut outputs = Vec::new();
    for (name, mut guard) in [("alice", alice), ("carol", carol), ("bob", bob)] {
        let mut out = String::new();
        std::io::Read::read_to_string(guard.0.stdout.as_mut().unwrap(), &mut out).unwrap();
        let status = guard.0.wait().unwrap();
        assert!(status.success(), "{name} failed");
        outputs.push((name, out));
    }
    let alice_log: Vec<String> = alice_err.iter().collect();
    bob_log.extend(bob_err.iter());
    assert!(
        alice_log.iter().any(|l| l.contains("joined bob"))
            && alice_log.iter().any(|l| l.contains("joined carol")),
        "{alice_log:#?}"
    );
    for (name, out) in &outputs[1..] {
        let got: Vec<Vec<u8>> = out
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["from"] == "alice")
            .map(|v| {
                assert!(v["t_us"].as_u64().unwrap() > 1_600_000_000_000_000);
                serde_json::from_value(v["midi"].clone()).unwrap()
            })
            .collect();
        assert_eq!(got, expected, "{name} heard alice's scale");
    }
    // Alice left at the end: the others noticed and rotated their keys.
    assert!(
        bob_log.iter().any(|l| l.contains("new sender key")),
        "{bob_log:#?}"
    );
}

#[test]
fn jam_peer_server_errors_name_the_problem() {
    let o = jam()
        .args(["peer", "--name", "x", "--server", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--session"));
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    assert!(
        jam()
            .args(["keys", "new", "-o"])
            .arg(&key)
            .output()
            .unwrap()
            .status
            .success()
    );
    let o = jam()
        .args([
            "peer",
            "--name",
            "x",
            "--server",
            "http://127.0.0.1:9",
            "--session",
            "s",
        ])
        .arg("--key")
        .arg(&key)
        .env_remove("JAM_PASSWORD")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("JAM_PASSWORD"));
    let o = jam()
        .args([
            "peer",
            "--name",
            "x",
            "--server",
            "http://127.0.0.1:9",
            "--session",
            "s",
        ])
        .arg("--key")
        .arg(&key)
        .env("JAM_PASSWORD", "pw")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("cannot reach http://127.0.0.1:9"), "{e}");
}
