//! Decoders never panic: arbitrary bytes into every decoder (proptest), and
//! the fuzz corpus plus every input that ever crashed a fuzzer replayed
//! through the same code the fuzz targets run (`fuzz/fuzz_targets/`).

use jam_core::Micros;
use jam_transport::clock::ClockMap;
use jam_transport::rtp::header::RtpHeader;
use jam_transport::rtp::journal::{
    ChannelJournal, ChapterA, ChapterC, ChapterD, ChapterE, ChapterF, ChapterM, ChapterN, ChapterP,
    ChapterQ, ChapterT, ChapterV, ChapterW, ChapterX, Journal, SystemJournal,
};
use jam_transport::rtp::list::{SectionHeader, validate_list};
use jam_transport::rtp::{Packet, RecvConfig, RecvStream};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

fn packet_target(data: &[u8]) {
    if let Ok(p) = Packet::decode(data) {
        for c in p.commands() {
            let _ = c;
        }
        if let Some(Ok(j)) = p.journal() {
            for cj in j.channels() {
                let _ = cj;
            }
        }
    }
    let mut r = RecvStream::new(RecvConfig::default());
    for (i, d) in data.split(|&b| b == 0xA5).enumerate() {
        let _ = r.handle_packet(Micros::from_millis(i as u64), &ClockMap::IDENTITY, d);
        while r.poll_event().is_some() {}
        let _ = r.poll_feedback(Micros::from_millis(i as u64));
    }
    r.end();
}

fn wrap(seq: u16, journal: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0x61];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x27, 0x10, 0x12, 0x34, 0x56, 0x78]);
    p.extend_from_slice(&[0x43, 0x90, 0x3C, 0x64]);
    p.extend_from_slice(journal);
    p
}

fn journal_target(data: &[u8]) {
    if let Ok(j) = Journal::parse(data) {
        if let Some(x) = j.system.and_then(|s| s.x) {
            x.logs().for_each(drop);
        }
        for cj in j.channels() {
            let _ = cj.c().map(|c| c.logs().count());
            let _ = cj.m().map(|m| m.logs().count());
            let _ = cj.n().map(|n| (n.logs().count(), n.offs()));
            let _ = cj.e().map(|e| e.logs().count());
            let _ = cj.a().map(|a| a.logs().count());
        }
    }
    let mut r = RecvStream::new(RecvConfig::default());
    for (i, seq) in [100u16, 102, 105, 106].into_iter().enumerate() {
        let _ = r.handle_packet(
            Micros::from_millis(i as u64),
            &ClockMap::IDENTITY,
            &wrap(seq, data),
        );
        while r.poll_event().is_some() {}
    }
}

fn every_decoder(b: &[u8]) {
    let _ = RtpHeader::decode(b);
    let _ = SectionHeader::decode(b);
    let _ = validate_list(b, false);
    let _ = validate_list(b, true);
    let _ = Packet::validate(b);
    let _ = Journal::parse(b);
    let _ = SystemJournal::parse(b);
    let _ = ChannelJournal::parse(b);
    let _ = ChapterP::parse(b);
    let _ = ChapterC::parse(b).map(|(c, _)| c.logs().count());
    let _ = ChapterM::parse(b).map(|(m, _)| m.logs().count());
    let _ = ChapterW::parse(b);
    let _ = ChapterN::parse(b).map(|(n, _)| (n.logs().count(), n.offs()));
    let _ = ChapterE::parse(b).map(|(e, _)| e.logs().count());
    let _ = ChapterT::parse(b);
    let _ = ChapterA::parse(b).map(|(a, _)| a.logs().count());
    let _ = ChapterD::parse(b);
    let _ = ChapterV::parse(b);
    let _ = ChapterQ::parse(b);
    let _ = ChapterF::parse(b);
    let _ = ChapterX::parse(b).map(|x| x.logs().count());
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

#[test]
fn fuzz_corpus_and_crashers_replay_without_panicking() {
    let packets = files(&root().join("../fuzz/corpus/rtp_packet"));
    let journals = files(&root().join("../fuzz/corpus/rtp_journal"));
    assert!(
        packets.len() >= 6 && journals.len() >= 3,
        "seed corpus missing"
    );
    for p in &packets {
        let b = std::fs::read(p).unwrap();
        packet_target(&b);
        every_decoder(&b);
    }
    for p in &journals {
        let b = std::fs::read(p).unwrap();
        assert!(
            Journal::parse(&b).is_ok(),
            "seed journal {} must decode",
            p.display()
        );
        journal_target(&b);
        every_decoder(&b);
    }
    for p in files(&root().join("tests/fuzz-crashers")) {
        let b = std::fs::read(&p).unwrap();
        packet_target(&b);
        journal_target(&b);
        every_decoder(&b);
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(b in prop::collection::vec(any::<u8>(), 0..200)) {
        every_decoder(&b);
        packet_target(&b);
        journal_target(&b);
    }

    #[test]
    fn mutated_valid_journals_never_panic(
        seed in prop::sample::select(vec![
            vec![0x20u8, 0x12, 0x36, 0x00, 0x08, 0x08, 0x01, 0x77, 0xBE, 0xD0, 0x08],
            vec![0x20, 0x12, 0x3D, 0x10, 0x0A, 0x50, 0x81, 0x87, 0x64, 0x81, 0x20, 0x00, 0x48],
            vec![0x21, 0x42, 0x7C, 0x00, 0x09, 0x08, 0x81, 0x67, 0x3C, 0x25, 0x0D, 0x50, 0xC8, 0x06, 0x08, 0x80, 0x44, 0x0E],
        ]),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut b = seed;
        for (i, v) in flips {
            let k = i.index(b.len());
            b[k] = v;
        }
        every_decoder(&b);
        journal_target(&b);
    }
}
