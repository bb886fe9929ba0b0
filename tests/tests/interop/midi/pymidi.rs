//! Notes and controllers between our `Participant` and pymidi 0.5.0, both
//! ways. pymidi only accepts invitations, so we always invite it.
//!
//! pymidi's quirks met here (`rtp-midi.md` §7.2, §8), all worked around on
//! the test side:
//! - its whole-packet parser (`MIDIPacket.parse`, the one its
//!   `DataProtocol` uses) reads a system journal when the journal header's
//!   S bit is set instead of Y. Our journals carry S=1 whenever nothing in
//!   them comes from the previous packet: the first packet of a stream and
//!   the first packet after every pause long enough for a guard packet
//!   (100 ms). pymidi then runs off the end of the packet and drops it,
//!   note included (with two or more channel journals it reads the first
//!   as a system journal and "succeeds"). The peer script reports that,
//!   and reads the MIDI list
//!   with pymidi's own command-section parser, which is what we compare;
//! - it reads delta times as LEB128, and its builder writes them so: a
//!   two-octet delta means something else to it than to RFC 6295 (and to
//!   tshark and us);
//! - its builder sets M=1 (we ignore M, as the sheet says);
//! - it does not know `RS`, so it never trims our journal.

use super::*;
use jam_tests::pymidi::{self, Command, PymidiPeer};
use jam_tests::tshark::{self, LiveCapture};
use jam_transport::rtp::journal::JournalHeader;
use jam_transport::rtp::list::Command as ListCommand;
use jam_transport::rtp::packet::Packet;
use serde_json::Value;
use tokio::task::block_in_place;

fn hex(line: &Value) -> Vec<u8> {
    let s = line["hex"].as_str().expect("hex");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digits"))
        .collect()
}

/// The journal header of a packet, read by our decoder.
fn journal_header(bytes: &[u8]) -> JournalHeader {
    let p = Packet::validate(bytes).expect("our decoder reads the packet");
    p.journal().expect("J=1").expect("a valid journal").header
}

/// Waits for pymidi's `midi` lines until they hold `n` commands; lines
/// without commands (guard packets) are kept too.
fn midi_lines_until(py: &mut PymidiPeer, n: usize) -> Vec<Value> {
    let mut lines = Vec::new();
    let mut count = 0;
    while count < n {
        let line = py.expect("midi", |v| v["event"] == "midi");
        count += pymidi::commands(&line).len();
        lines.push(line);
    }
    lines
}

async fn start(python: &std::path::Path, seed: u64) -> (PymidiPeer, Stack, PeerHandle) {
    let mut py = block_in_place(|| PymidiPeer::start(python, &[]));
    let mut us = stack("jam", seed).await;
    let peer = us.invite(py.control()).await;
    block_in_place(|| py.expect_joined());
    (py, us, peer)
}

/// Ends the session from our side and checks that pymidi saw the `BY`.
async fn end(py: PymidiPeer, us: Stack) -> Vec<Value> {
    us.driver.call(|p, now| p.close(now)).await.unwrap();
    let (code, lines) = block_in_place(|| py.wait(LIMIT));
    assert_eq!(code, Some(0), "pymidi exits 0 after our BY");
    us.driver.shutdown().await.unwrap();
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_and_controllers_we_send_reach_pymidi_intact() {
    let Some(python) = jam_tests::require_python(&["pymidi"]) else {
        return;
    };
    let (mut py, us, _peer) = start(&python, 41).await;
    let msgs = notes_and_controllers();
    // The first half stays on channel 0, so after the pause the journal
    // holds one channel journal with S=1: pymidi's parser cannot skip it.
    let (first, second) = msgs.split_at(9);
    us.send_each(first, Duration::from_millis(3)).await;
    // Guard packets go out; the next packet's journal has nothing from
    // packet I-1, so its header has S=1.
    tokio::time::sleep(Duration::from_millis(400)).await;
    us.send_each(second, Duration::from_millis(3)).await;
    let lines = block_in_place(|| midi_lines_until(&mut py, msgs.len()));

    // Intact, one command per packet, in order.
    let with_midi: Vec<&Value> = lines
        .iter()
        .filter(|l| !pymidi::commands(l).is_empty())
        .collect();
    let got: Vec<Option<pymidi::Parsed>> =
        with_midi.iter().flat_map(|l| pymidi::commands(l)).collect();
    let want: Vec<Option<pymidi::Parsed>> = msgs
        .iter()
        .map(|m| Some((m.status(), m.data1(), m.data2(), None)))
        .collect();
    assert_eq!(got, want);
    assert_eq!(with_midi.len(), msgs.len(), "one command per packet");

    // pymidi's whole-packet parser fails exactly where its S-for-Y mix-up
    // bites, on packets our decoder (and tshark, see the next test) reads.
    let mut rejected = Vec::new();
    for line in &lines {
        let h = journal_header(&hex(line));
        if line["full_parse"] == false {
            assert!(h.s && !h.y, "pymidi rejected {line} with {h:?}");
            rejected.push(line["seq"].as_u64().unwrap());
        } else if !h.s {
            assert_eq!(line["full_parse"], true, "{line}");
        }
    }
    let seq_of = |i: usize| with_midi[i]["seq"].as_u64().unwrap();
    assert!(
        rejected.contains(&seq_of(0)),
        "the first packet (empty journal, S=1) is one pymidi drops: {rejected:?}"
    );
    assert!(
        rejected.contains(&seq_of(first.len())),
        "so is the first packet after the pause: {rejected:?}"
    );
    eprintln!(
        "pymidi's own parser dropped {} of {} packets (seq {rejected:?})",
        rejected.len(),
        lines.len()
    );
    end(py, us).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymidi_reads_our_two_octet_deltas_as_leb128_where_tshark_reads_rfc_6295() {
    let Some(python) = jam_tests::require_python(&["pymidi"]) else {
        return;
    };
    let Some(tshark) = jam_tests::require_tool("tshark", "apt-get install tshark") else {
        return;
    };
    let mut py = block_in_place(|| PymidiPeer::start(&python, &[]));
    let port = py.control().port();
    // The capture holds the handshake, so tshark decodes the session.
    let capture = block_in_place(|| {
        LiveCapture::start(
            &tshark,
            &format!("portrange {port}-{}", port + 1),
            Duration::from_secs(60),
        )
    });
    let mut us = stack("jam", 42).await;
    us.invite(py.control()).await;
    block_in_place(|| py.expect_joined());

    // One packet, four commands: deltas of 5 ticks (one octet) and 200
    // ticks (two octets, `81 48` in RFC 6295's MIDI-file order).
    let ms = Duration::from_micros;
    us.send_together(&[
        (ms(40_500), ShortMessage::note_on(0, 60, 100)),
        (ms(40_000), ShortMessage::note_on(0, 64, 90)),
        (ms(20_000), ShortMessage::control_change(0, 7, 99)),
        (ms(0), ShortMessage::note_off(0, 60, 0)),
    ])
    .await;
    let line = block_in_place(|| {
        py.expect("the four-command packet", |v| {
            v["event"] == "midi" && pymidi::commands(v).len() == 4
        })
    });
    let bytes = hex(&line);

    // Our decoder: cumulative offsets 0, 5, 205, 405 (RFC 6295 §3).
    let p = Packet::validate(&bytes).unwrap();
    let offsets: Vec<u64> = p.commands().map(|c| c.unwrap().offset).collect();
    assert_eq!(offsets, [0, 5, 205, 405]);
    assert_eq!(
        p.list.windows(2).filter(|w| w == &[0x81, 0x48]).count(),
        2,
        "two two-octet deltas in MIDI-file order: {:02x?}",
        p.list
    );
    assert!(
        p.commands()
            .all(|c| matches!(c, Ok(t) if matches!(t.command, ListCommand::Short(_))))
    );

    // pymidi: the commands right, the two-octet deltas read as LEB128.
    let cmds = pymidi::commands(&line);
    let deltas: Vec<Option<u64>> = cmds.iter().map(|c| c.unwrap().3).collect();
    let misread = pymidi::leb128(&[0x81, 0x48]);
    assert_eq!(misread, 9217);
    assert_eq!(deltas, [None, Some(5), Some(misread), Some(misread)]);
    let statuses: Vec<u8> = cmds.iter().map(|c| c.unwrap().0).collect();
    assert_eq!(statuses, [0x90, 0x90, 0xB0, 0x80]);

    let lines = end(py, us).await;
    assert!(lines.iter().any(|l| l["event"] == "disconnected"));
    let capture = block_in_place(|| capture.stop());

    // tshark: the packet dissects as RTP-MIDI with one one-octet and two
    // two-octet delta times and the four commands' values, and nothing in
    // the whole session is malformed or flagged.
    let seq = line["seq"].as_u64().unwrap();
    let rows = tshark::fields(
        &tshark,
        &capture.path,
        &[],
        &format!("rtpmidi && rtp.seq == {seq}"),
        &[
            "rtpmidi.deltatime_1",
            "rtpmidi.deltatime_2",
            "rtpmidi.note",
            "rtpmidi.velocity",
            "rtpmidi.controller",
            "rtpmidi.controller_value",
        ],
    );
    assert_eq!(rows.len(), 1, "the packet decodes as RTP-MIDI: {rows:?}");
    let row = &rows[0];
    let count = |s: &str| s.split(',').filter(|x| !x.is_empty()).count();
    assert_eq!(count(&row[0]), 1, "{row:?}");
    assert_eq!(count(&row[1]), 2, "{row:?}");
    assert_eq!(row[2], "60,64,60", "{row:?}");
    assert_eq!(row[3], "100,90,0", "{row:?}");
    assert_eq!((row[4].as_str(), row[5].as_str()), ("7", "99"), "{row:?}");
    let commands = tshark::applemidi_commands(&tshark, &capture.path);
    for code in ["IN", "OK", "CK", "BY"] {
        assert!(commands.contains(code), "{code} missing: {commands:?}");
    }
    let bad = tshark::flagged_frames(&tshark, &capture.path, &[], "frame");
    assert!(
        bad.is_empty(),
        "malformed or expert-flagged frames: {bad:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_pymidi_builds_reach_us_intact() {
    let Some(python) = jam_tests::require_python(&["pymidi"]) else {
        return;
    };
    let (mut py, mut us, peer) = start(&python, 43).await;

    // One command per packet, every kind pymidi can build, three channels.
    let msgs = notes_and_controllers();
    let mut sent = Vec::new();
    for m in &msgs {
        let line = block_in_place(|| py.send(&[Command::new(m.as_slice())], false));
        sent.push(line);
    }
    let got = us.played(peer, msgs.len()).await;
    assert_eq!(got.iter().map(short).collect::<Vec<_>>(), msgs);
    // Each at its packet's timestamp (pymidi's clock, 100 µs since the epoch).
    for (e, line) in got.iter().zip(&sent) {
        assert_eq!(
            u64::from(e.time.rtp()),
            line["timestamp"].as_u64().unwrap(),
            "{line}"
        );
    }

    // Several commands in one packet, one-octet deltas and running status:
    // pymidi's LEB128 and RFC 6295 agree below 128.
    let line = block_in_place(|| {
        py.send(
            &[
                Command::new(&[0x92, 67, 80]),
                Command::after(3, &[0x92, 71, 81]),
                Command::after(7, &[0x92, 67, 0]),
            ],
            true,
        )
    });
    let bytes = hex(&line);
    assert_eq!(&bytes[12..], [0x09, 0x92, 67, 80, 3, 71, 81, 7, 67, 0]);
    let ts = line["timestamp"].as_u64().unwrap();
    let got = us.played(peer, 3).await;
    let times: Vec<u64> = got.iter().map(|e| u64::from(e.time.rtp())).collect();
    assert_eq!(times, [ts, ts + 3, ts + 10]);
    assert_eq!(
        got.iter().map(short).collect::<Vec<_>>(),
        [
            ShortMessage::note_on(2, 67, 80),
            ShortMessage::note_on(2, 71, 81),
            ShortMessage::note_on(2, 67, 0)
        ]
    );

    // A 200-tick delta: pymidi's builder writes LEB128 `C8 01`, which RFC
    // 6295 reads as 9217 ticks. We play the command at the RFC's time.
    let line = block_in_place(|| {
        py.send(
            &[
                Command::new(&[0xB3, 74, 10]),
                Command::after(200, &[0xB3, 74, 11]),
            ],
            false,
        )
    });
    let bytes = hex(&line);
    assert_eq!(&bytes[12..], [0x08, 0xB3, 74, 10, 0xC8, 0x01, 0xB3, 74, 11]);
    let ts = line["timestamp"].as_u64().unwrap();
    let got = us.played(peer, 2).await;
    let times: Vec<u64> = got.iter().map(|e| u64::from(e.time.rtp())).collect();
    assert_eq!(times, [ts, ts + 9217]);

    let stats = us
        .driver
        .call(move |p, _| p.peer_stats(peer))
        .await
        .unwrap()
        .expect("joined");
    assert_eq!(stats.recv.malformed, 0);
    assert_eq!(stats.recv.lost, 0);
    end(py, us).await;
}
