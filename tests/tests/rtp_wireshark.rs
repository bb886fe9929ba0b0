//! Packets from `SendStream`, with journals holding every chapter the
//! sender emits, written to a classic pcap (IPv4/UDP on 127.0.0.1:5005) and
//! dissected by tshark's RTP-MIDI dissector: every packet must dissect as
//! RTP-MIDI with a journal, with no malformed packet and no expert warning.

use jam_core::{Micros, ShortMessage};
use jam_transport::clock::Ticks;
use jam_transport::rtp::{Packet, SendConfig, SendStream};
use std::process::Command;

const PORT: u16 = 5005;

fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// A classic pcap file (LINKTYPE_RAW: each record is an IPv4 packet).
fn pcap(payloads: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&0xA1B2_C3D4u32.to_le_bytes()); // magic, microsecond stamps
    f.extend_from_slice(&2u16.to_le_bytes()); // version 2.4
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&0i32.to_le_bytes()); // thiszone
    f.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
    f.extend_from_slice(&65_535u32.to_le_bytes()); // snaplen
    f.extend_from_slice(&101u32.to_le_bytes()); // LINKTYPE_RAW
    for (i, (micros, udp_payload)) in payloads.iter().enumerate() {
        let total = 20 + 8 + udp_payload.len();
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&(total as u16).to_be_bytes());
        ip.extend_from_slice(&(i as u16).to_be_bytes());
        ip.extend_from_slice(&[0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
        let sum = ipv4_checksum(&ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        ip.extend_from_slice(&PORT.to_be_bytes());
        ip.extend_from_slice(&PORT.to_be_bytes());
        ip.extend_from_slice(&((8 + udp_payload.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 0]); // no UDP checksum (allowed on IPv4)
        ip.extend_from_slice(udp_payload);
        f.extend_from_slice(&((micros / 1_000_000) as u32).to_le_bytes());
        f.extend_from_slice(&((micros % 1_000_000) as u32).to_le_bytes());
        f.extend_from_slice(&(ip.len() as u32).to_le_bytes());
        f.extend_from_slice(&(ip.len() as u32).to_le_bytes());
        f.extend_from_slice(&ip);
    }
    f
}

fn m(b: &[u8]) -> ShortMessage {
    ShortMessage::try_from_slice(b).unwrap()
}

/// Packets whose journals (no feedback, so they grow) hold chapters P, C
/// (value, toggle, count), M, W, N, E, T, A and D, V, Q, X.
///
/// Not here: a Chapter M with a pending parameter MSB (P=1). tshark 4.0's
/// dissector does not count the PENDING octet against Chapter M's LENGTH,
/// overreads, and silently stops dissecting the channel journals that
/// follow; RFC 6295 Appendix A.4 counts it, and so do we.
fn packets() -> Vec<(u64, Vec<u8>)> {
    let steps: Vec<Vec<ShortMessage>> = vec![
        vec![m(&[0x90, 60, 100]), m(&[0x90, 64, 90])],
        vec![m(&[0xB0, 7, 100]), m(&[0xB0, 64, 127])],
        vec![m(&[0x80, 60, 20]), m(&[0x93, 50, 1])],
        vec![m(&[0xB3, 123, 0])],
        vec![m(&[0xB1, 0, 2]), m(&[0xB1, 32, 1]), m(&[0xC1, 40])],
        vec![m(&[0xE1, 0, 72]), m(&[0xD1, 50])],
        vec![m(&[0x91, 62, 80]), m(&[0xA1, 62, 30])],
        vec![
            m(&[0xB2, 101, 0]),
            m(&[0xB2, 100, 0]),
            m(&[0xB2, 6, 12]),
            m(&[0xB2, 38, 5]),
        ],
        vec![
            m(&[0xB2, 99, 1]),
            m(&[0xB2, 98, 7]),
            m(&[0xB2, 6, 64]),
            m(&[0xB2, 96, 0]),
        ],
        vec![m(&[0xF6]), m(&[0xF3, 3]), m(&[0xFE])],
        vec![m(&[0xFA]), m(&[0xF8]), m(&[0xF8])],
        vec![m(&[0x90, 67, 70]), m(&[0xB0, 1, 20])],
        vec![m(&[0x90, 67, 0]), m(&[0xB0, 121, 0]), m(&[0xB0, 64, 100])],
    ];
    let mut s = SendStream::new(SendConfig::new(0x1234_5678, 0xFFF0), Micros::ZERO);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let now = Micros::from_millis(1_000 + 20 * i as u64);
        let t = Ticks::from_local(now);
        for msg in step {
            s.push(t, *msg).unwrap();
        }
        if i == 9 {
            s.push_sysex(t, &[0xF0, 0x7D, 1, 2, 3, 0xF7]).unwrap();
            s.push_sysex(t, &[0xF0, 0x7E, 0x7F, 0x06, 0x01, 0xF7])
                .unwrap();
        }
        while s.poll_transmit(now, &mut buf).is_some() {
            out.push((now.as_micros(), buf.clone()));
        }
    }
    // Guard packets after the MIDI stops.
    for _ in 0..3 {
        let at = s.poll_timeout().unwrap();
        s.handle_timeout(at);
        s.poll_transmit(at, &mut buf).unwrap();
        out.push((at.as_micros(), buf.clone()));
    }
    out
}

#[test]
fn tshark_dissects_every_packet_as_rtp_midi_with_journal() {
    let pkts = packets();
    // The last journal holds every chapter we emit.
    let (_, last) = pkts.last().unwrap();
    let p = Packet::validate(last).unwrap();
    let j = p.journal().unwrap().unwrap();
    let sj = j.system.expect("system journal");
    assert!(sj.d.is_some() && sj.v.is_some() && sj.q.is_some() && sj.x.is_some());
    let mut toc = 0u8;
    for cj in j.channels() {
        toc |= u8::from(cj.p().is_some()) << 7
            | u8::from(cj.c().is_some()) << 6
            | u8::from(cj.m().is_some()) << 5
            | u8::from(cj.w().is_some()) << 4
            | u8::from(cj.n().is_some()) << 3
            | u8::from(cj.e().is_some()) << 2
            | u8::from(cj.t().is_some()) << 1
            | u8::from(cj.a().is_some());
    }
    assert_eq!(toc, 0xFF, "every channel chapter appears");

    let Some(tshark) = jam_tests::require_tool("tshark", "apt-get install tshark") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("jam-rtp-wireshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rtp-midi.pcap");
    std::fs::write(&file, pcap(&pkts)).unwrap();
    let decode = [
        "-o",
        "udp.try_heuristic_first:TRUE",
        "-d",
        "udp.port==5005,rtp",
        "-d",
        "rtp.pt==97,rtpmidi",
    ];
    let run = |extra: &[&str]| {
        let out = Command::new(&tshark)
            .arg("-r")
            .arg(&file)
            .args(decode)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tshark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };

    // One row per packet: sequence number, checkpoint, channel journal lengths.
    let rows = jam_tests::tshark::fields(
        &tshark,
        &file,
        &decode,
        "frame",
        &[
            "rtp.seq",
            "rtpmidi.check_Seq_num",
            "rtpmidi.cmd_chanjour_len",
        ],
    );
    assert_eq!(rows.len(), pkts.len(), "{rows:?}");
    for (cols, (_, bytes)) in rows.iter().zip(&pkts) {
        let p = Packet::decode(bytes).unwrap();
        assert_eq!(cols[0], p.header.sequence.to_string(), "{cols:?}");
        let j = p.journal().unwrap().unwrap();
        assert_eq!(
            cols[1],
            j.header.checkpoint.to_string(),
            "journal not dissected: {cols:?}"
        );
        let lens: Vec<String> = j.channels().map(|c| c.len.to_string()).collect();
        assert_eq!(
            cols.get(2).map(String::as_str).unwrap_or(""),
            lens.join(","),
            "channel journals: {cols:?}"
        );
    }

    let verbose = run(&["-V"]);
    assert_eq!(
        verbose.matches("RFC 4695/6295 RTP-MIDI").count(),
        pkts.len()
    );
    assert!(
        !verbose.contains("Malformed"),
        "malformed packet:\n{verbose}"
    );
    for chapter in [
        "Chapter P",
        "Chapter C",
        "Chapter M",
        "Chapter W",
        "Chapter N",
        "Chapter E",
        "Chapter T",
        "Chapter A",
    ] {
        assert!(verbose.contains(chapter), "{chapter} not dissected");
    }

    let expert = run(&["-q", "-z", "expert"]);
    for level in ["Errors", "Warnings", "Warns"] {
        assert!(!expert.contains(level), "expert info:\n{expert}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
