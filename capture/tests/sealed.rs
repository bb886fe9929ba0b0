//! The sealed container: round trips, tampering, truncation and repair,
//! share and revoke, error texts and known-answer vectors.

mod support;

use jam_capture::format::CHUNK_SIZE;
use jam_capture::{
    Header, HeaderError, Kind, OpenError, Opener, SealError, Sealer, repair, revoke, share,
};
use proptest::prelude::*;
use std::io::{Cursor, Read, Write};
use support::*;

#[test]
fn round_trips_at_and_around_chunk_boundaries() {
    let alice = identity(1);
    for len in [
        0,
        1,
        2,
        CHUNK_SIZE - 1,
        CHUNK_SIZE,
        CHUNK_SIZE + 1,
        2 * CHUNK_SIZE,
        2 * CHUNK_SIZE + 3,
    ] {
        let d = data(len, 3);
        let file = seal(&d, &[alice.to_public()], len as u64);
        assert_eq!(
            open(&file, std::slice::from_ref(&alice)).unwrap(),
            d,
            "length {len}"
        );
        let (h, hl) = Header::decode(&file).unwrap();
        let chunks = frames(&file, hl).len();
        // Full chunks, and the final chunk holds the rest (empty only for an
        // empty payload), as in age.
        assert_eq!(chunks, len.div_ceil(CHUNK_SIZE).max(1), "length {len}");
        assert_eq!(h.kind, Kind::Agent);
        assert_eq!(h.generation, 1);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Any data, flushed at any points (short chunks), opens to itself.
    #[test]
    fn any_data_with_any_flush_points_round_trips(
        len in 0usize..200_000,
        flushes in proptest::collection::vec(0usize..200_000, 0..6),
        seed in any::<u64>(),
    ) {
        let alice = identity(1);
        let d = data(len, seed as u8);
        let mut cuts: Vec<usize> = flushes.into_iter().filter(|&c| c <= len).collect();
        cuts.sort_unstable();
        let mut w = jam_capture::SealWriter::new(Vec::new(), Kind::Capture, &[alice.to_public()], &mut KatRng::new(seed)).unwrap();
        let mut at = 0;
        for c in cuts {
            w.write_all(&d[at..c]).unwrap();
            w.flush().unwrap();
            at = c;
        }
        w.write_all(&d[at..]).unwrap();
        let file = w.finish().unwrap();
        prop_assert_eq!(open(&file, &[alice]).unwrap(), d);
    }

    /// Opening arbitrary bytes never panics.
    #[test]
    fn opening_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = open(&bytes, &[identity(1)]);
        let mut b = b"jamseal\0\x01\x01".to_vec();
        b.extend_from_slice(&bytes);
        let _ = open(&b, &[identity(1)]);
    }
}

/// A small file with three chunks (two short, non-final) and the chunk
/// count recorded.
fn small_file() -> (Vec<u8>, Vec<u8>) {
    let alice = identity(1);
    let mut s = Sealer::new(
        Cursor::new(Vec::new()),
        Kind::Capture,
        &[alice.to_public()],
        &mut KatRng::new(9),
    )
    .unwrap();
    s.seal_chunk(b"first chunk, flushed early").unwrap();
    s.seal_chunk(b"second").unwrap();
    let file = s
        .finish_and_record_count(b"the last one")
        .unwrap()
        .into_inner();
    (
        file,
        b"first chunk, flushed earlysecondthe last one".to_vec(),
    )
}

/// A file of `chunks` short chunks with its chunk count recorded.
fn file_of_chunks(chunks: usize) -> (Vec<u8>, Vec<u8>) {
    let mut s = Sealer::new(
        Cursor::new(Vec::new()),
        Kind::Agent,
        &[identity(1).to_public()],
        &mut KatRng::new(10),
    )
    .unwrap();
    let mut plain = Vec::new();
    for i in 1..chunks {
        s.seal_chunk(&[i as u8; 3]).unwrap();
        plain.extend_from_slice(&[i as u8; 3]);
    }
    let file = s.finish_and_record_count(b"end").unwrap().into_inner();
    plain.extend_from_slice(b"end");
    (file, plain)
}

#[test]
fn every_single_bit_flip_is_detected() {
    let alice = identity(1);
    // Three chunks; and one and four, whose recorded counts are a single
    // bit each (a flip must not turn them into "not recorded").
    for (file, plain) in [small_file(), file_of_chunks(1), file_of_chunks(4)] {
        assert!(
            file.len() < 400,
            "keep the exhaustive test small: {} bytes",
            file.len()
        );
        assert_eq!(open(&file, std::slice::from_ref(&alice)).unwrap(), plain);
        for byte in 0..file.len() {
            for bit in 0..8 {
                let mut f = file.clone();
                f[byte] ^= 1 << bit;
                assert!(
                    open(&f, std::slice::from_ref(&alice)).is_err(),
                    "flipping bit {bit} of byte {byte} of a {}-byte file went unnoticed",
                    file.len()
                );
            }
        }
    }
}

#[test]
fn reordered_removed_and_duplicated_chunks_are_detected() {
    let alice = identity(1);
    let mut s = Sealer::new(
        Vec::new(),
        Kind::Capture,
        &[alice.to_public()],
        &mut KatRng::new(2),
    )
    .unwrap();
    for i in 0..3u8 {
        s.seal_chunk(&[i; 10]).unwrap();
    }
    let file = s.finish(b"end").unwrap();
    let (_, hl) = Header::decode(&file).unwrap();
    let fr = frames(&file, hl);
    assert_eq!(fr.len(), 4);
    let build = |order: &[usize]| {
        let mut f = file[..hl].to_vec();
        for &i in order {
            f.extend_from_slice(&file[fr[i].clone()]);
        }
        f
    };
    let ids = std::slice::from_ref(&alice);
    let err = |order: &[usize]| open(&build(order), ids).unwrap_err().to_string();
    assert_eq!(open(&build(&[0, 1, 2, 3]), ids).unwrap().len(), 33);
    assert_eq!(
        err(&[1, 0, 2, 3]),
        "authentication failed in chunk 1: the file was modified"
    );
    assert_eq!(
        err(&[0, 2, 1, 3]),
        "authentication failed in chunk 2: the file was modified"
    );
    assert_eq!(
        err(&[0, 2, 3]),
        "authentication failed in chunk 2: the file was modified"
    );
    assert_eq!(
        err(&[0, 1, 1, 2, 3]),
        "authentication failed in chunk 3: the file was modified"
    );
    assert_eq!(
        err(&[0, 1, 2, 2, 3]),
        "authentication failed in chunk 4: the file was modified"
    );
    // The final chunk moved earlier: its locator no longer matches.
    assert!(err(&[0, 3]).contains("chunk 2"));
    // Data after the last chunk.
    let mut f = build(&[0, 1, 2, 3]);
    f.push(0);
    assert!(
        open(&f, ids)
            .unwrap_err()
            .to_string()
            .contains("data after the final chunk")
    );
}

#[test]
fn truncation_at_every_chunk_boundary_is_detected_and_repaired() {
    let alice = identity(1);
    let ids = std::slice::from_ref(&alice);
    let mut s = Sealer::new(
        Cursor::new(Vec::new()),
        Kind::Capture,
        &[alice.to_public()],
        &mut KatRng::new(4),
    )
    .unwrap();
    let parts: Vec<Vec<u8>> = (0..4u8).map(|i| data(100 + 1000 * i as usize, i)).collect();
    for p in &parts {
        s.seal_chunk(p).unwrap();
    }
    let file = s.finish_and_record_count(b"").unwrap().into_inner();
    let (_, hl) = Header::decode(&file).unwrap();
    let fr = frames(&file, hl);
    assert_eq!(fr.len(), 5);
    for k in 0..5 {
        let cut = if k == 0 { hl } else { fr[k - 1].end };
        let t = &file[..cut];
        let e = open(t, ids).unwrap_err();
        assert!(
            matches!(e, OpenError::Truncated { complete, expected: Some(5), offset } if complete == k as u64 && offset == cut as u64),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with(&format!("file truncated after {k} of 5 chunks")),
            "{e}"
        );
        // Every complete chunk reads back before the error.
        let mut o = Opener::new(t, ids).unwrap();
        for p in parts.iter().take(k) {
            assert_eq!(o.next_chunk().unwrap().unwrap().data, &p[..]);
        }
        assert!(o.next_chunk().is_err());

        let mut seen = Vec::new();
        let mut fixed = Cursor::new(Vec::new());
        let out = repair(
            t,
            &mut fixed,
            ids,
            false,
            |_, d| seen.push(d.to_vec()),
            || b"closed".to_vec(),
        )
        .unwrap();
        let fixed = fixed.into_inner();
        assert_eq!(out.kept_chunks, k as u64);
        assert_eq!(seen, parts[..k].to_vec());
        // Complete chunks are kept byte for byte.
        let (fh, fhl) = Header::decode(&fixed).unwrap();
        assert_eq!(fhl, hl);
        assert_eq!(fh.chunk_count, k as u64 + 1);
        assert_eq!(&fixed[hl..cut], &file[hl..cut]);
        let mut expect: Vec<u8> = parts[..k].concat();
        expect.extend_from_slice(b"closed");
        assert_eq!(open(&fixed, ids).unwrap(), expect);
        // A finished file needs no repair.
        assert!(matches!(
            repair(
                &fixed[..],
                Cursor::new(Vec::new()),
                ids,
                false,
                |_, _| {},
                Vec::new
            ),
            Err(SealError::NothingToRepair)
        ));
    }
    // A cut inside a chunk reports the chunks before it.
    let mid = fr[2].start + 7;
    let e = open(&file[..mid], ids).unwrap_err();
    assert!(
        matches!(e, OpenError::Truncated { complete: 2, .. }),
        "{e:?}"
    );
}

#[test]
fn unfinished_files_say_so() {
    let alice = identity(1);
    let mut s = Sealer::new(
        Vec::new(),
        Kind::Capture,
        &[alice.to_public()],
        &mut KatRng::new(5),
    )
    .unwrap();
    s.seal_chunk(b"a").unwrap();
    s.seal_chunk(b"b").unwrap();
    let crashed = s.get_ref().clone();
    let e = open(&crashed, &[alice]).unwrap_err().to_string();
    assert!(e.starts_with("file truncated after 2 chunks"), "{e}");
    assert!(e.contains("repair"), "{e}");
}

#[test]
fn salvage_repairs_a_damaged_tail() {
    let alice = identity(1);
    let ids = std::slice::from_ref(&alice);
    let mut s = Sealer::new(
        Vec::new(),
        Kind::Capture,
        &[alice.to_public()],
        &mut KatRng::new(6),
    )
    .unwrap();
    s.seal_chunk(b"good").unwrap();
    s.seal_chunk(b"also good").unwrap();
    let mut f = s.get_ref().clone();
    f.extend_from_slice(&[0u8; 40]); // a zero-filled tail
    assert!(matches!(
        repair(
            &f[..],
            Cursor::new(Vec::new()),
            ids,
            false,
            |_, _| {},
            Vec::new
        ),
        Err(SealError::Open(OpenError::ChunkModified { chunk: 3, .. }))
    ));
    let mut fixed = Cursor::new(Vec::new());
    repair(&f[..], &mut fixed, ids, true, |_, _| {}, Vec::new).unwrap();
    assert_eq!(open(&fixed.into_inner(), ids).unwrap(), b"goodalso good");
}

#[test]
fn clear_errors_for_wrong_key_bad_header_and_unknown_version() {
    let (alice, mallory) = (identity(1), identity(2));
    let (file, _) = small_file();
    let msg = |f: &[u8], id: &jam_capture::Identity| {
        open(f, std::slice::from_ref(id)).unwrap_err().to_string()
    };
    assert_eq!(msg(&file, &mallory), "you are not a recipient of this file");

    let mut v2 = file.clone();
    v2[8] = 2;
    assert_eq!(
        msg(&v2, &alice),
        "unsupported format version 2 (this build reads version 1)"
    );
    let mut nm = file.clone();
    nm[0] = b'J';
    assert!(msg(&nm, &alice).starts_with("not a jam sealed file"));
    assert!(
        msg(b"hello", &alice).starts_with("not a jam sealed file")
            || msg(b"hello", &alice).contains("truncated")
    );
    assert_eq!(
        msg(&file[..20], &alice),
        "file truncated in the header (after 20 bytes)"
    );
    let mut genr = file.clone();
    genr[13] ^= 1; // generation
    assert_eq!(
        msg(&genr, &alice),
        "header authentication failed: the file was modified"
    );
    let mut zero = file.clone();
    zero[14] = 0;
    zero[15] = 0;
    assert!(matches!(
        open(&zero, std::slice::from_ref(&alice)),
        Err(OpenError::Header(HeaderError::Corrupt(_)))
    ));
    let mut kind = file.clone();
    kind[9] = 9;
    assert_eq!(msg(&kind, &alice), "unknown file kind 0x09");
    assert!(matches!(
        Opener::new_of_kind(&file[..], &[alice], Kind::Agent),
        Err(OpenError::WrongKind {
            expected: Kind::Agent,
            found: Kind::Capture
        })
    ));
}

#[test]
fn share_adds_a_recipient_without_touching_the_payload() {
    let (alice, bob, carol) = (identity(1), identity(2), identity(3));
    let d = data(3 * CHUNK_SIZE + 5, 1);
    let file = seal(&d, &[alice.to_public()], 11);
    let mut shared = Vec::new();
    let out = share(
        &file[..],
        &mut shared,
        std::slice::from_ref(&alice),
        &[bob.to_public(), alice.to_public()],
        &mut KatRng::new(12),
    )
    .unwrap();
    assert_eq!(out.added, vec![bob.to_public()]);
    assert_eq!(out.already, vec![alice.to_public()]);
    let (h0, l0) = Header::decode(&file).unwrap();
    let (h1, l1) = Header::decode(&shared).unwrap();
    assert_eq!(&file[l0..], &shared[l1..], "payload bytes changed");
    assert_eq!(h1.generation, h0.generation);
    assert_eq!(h1.recipient_count(), 2);
    assert_eq!(open(&shared, std::slice::from_ref(&bob)).unwrap(), d);
    assert_eq!(open(&shared, std::slice::from_ref(&alice)).unwrap(), d);
    assert!(matches!(
        open(&file, std::slice::from_ref(&bob)),
        Err(OpenError::NotARecipient)
    ));
    let o = Opener::new(&shared[..], std::slice::from_ref(&bob)).unwrap();
    assert_eq!(o.recipients(), &[alice.to_public(), bob.to_public()]);
    // Only someone who can open the file can share it.
    assert!(matches!(
        share(
            &file[..],
            Vec::new(),
            std::slice::from_ref(&carol),
            &[carol.to_public()],
            &mut KatRng::new(1)
        ),
        Err(SealError::Open(OpenError::NotARecipient))
    ));
}

#[test]
fn revoke_locks_out_the_removed_key_from_the_new_generation() {
    let (alice, bob, carol) = (identity(1), identity(2), identity(3));
    let d = data(2 * CHUNK_SIZE + 77, 2);
    let pubs = [alice.to_public(), bob.to_public(), carol.to_public()];
    let file = seal(&d, &pubs, 21);
    let mut newer = Vec::new();
    let out = revoke(
        &file[..],
        &mut newer,
        std::slice::from_ref(&alice),
        &[bob.to_public()],
        &mut KatRng::new(22),
    )
    .unwrap();
    assert_eq!(out.generation, 2);
    assert_eq!(out.recipients, vec![alice.to_public(), carol.to_public()]);
    assert!(matches!(
        open(&newer, std::slice::from_ref(&bob)),
        Err(OpenError::NotARecipient)
    ));
    assert_eq!(open(&newer, std::slice::from_ref(&alice)).unwrap(), d);
    assert_eq!(open(&newer, std::slice::from_ref(&carol)).unwrap(), d);
    let (h, hl) = Header::decode(&newer).unwrap();
    assert_eq!(h.generation, 2);
    // Same chunk layout, new ciphertext.
    let (_, ol) = Header::decode(&file).unwrap();
    let old_frames: Vec<usize> = frames(&file, ol).iter().map(|r| r.len()).collect();
    let new_frames: Vec<usize> = frames(&newer, hl).iter().map(|r| r.len()).collect();
    assert_eq!(old_frames, new_frames);
    assert_ne!(&file[ol..ol + 100], &newer[hl..hl + 100]);
    // What revoke cannot do: the old generation still opens with bob's key.
    assert_eq!(open(&file, std::slice::from_ref(&bob)).unwrap(), d);
    // Errors.
    assert!(matches!(
        revoke(
            &newer[..],
            Vec::new(),
            std::slice::from_ref(&alice),
            &[bob.to_public()],
            &mut KatRng::new(1)
        ),
        Err(SealError::NotInList(_))
    ));
    assert!(matches!(
        revoke(
            &newer[..],
            Vec::new(),
            std::slice::from_ref(&alice),
            &[alice.to_public(), carol.to_public()],
            &mut KatRng::new(1)
        ),
        Err(SealError::LastRecipient)
    ));
}

#[test]
fn last_chunk_is_found_through_the_locator() {
    let alice = identity(1);
    let ids = std::slice::from_ref(&alice);
    let d = data(5 * CHUNK_SIZE + 123, 4);
    let file = seal(&d, &[alice.to_public()], 31);
    let mut o = Opener::new(Cursor::new(&file[..]), ids).unwrap();
    let last = o.last_chunk().unwrap();
    assert_eq!(last.pos.index, 5);
    assert_eq!(last.data, &d[5 * CHUNK_SIZE..]);
    // Seek back to chunk 2 and read from there.
    let pos = jam_capture::ChunkPos {
        index: 2,
        offset: 2 * (4 + CHUNK_SIZE as u64 + 16),
    };
    o.seek_to(pos).unwrap();
    assert_eq!(
        o.next_chunk().unwrap().unwrap().data,
        &d[2 * CHUNK_SIZE..3 * CHUNK_SIZE]
    );
    // A wrong position is caught by authentication.
    o.seek_to(jam_capture::ChunkPos {
        index: 3,
        offset: pos.offset,
    })
    .unwrap();
    assert!(matches!(
        o.next_chunk(),
        Err(OpenError::ChunkModified { chunk: 4, .. })
    ));
    // A truncated file has no locator.
    let mut t = Opener::new(Cursor::new(&file[..file.len() - 5]), ids).unwrap();
    assert!(t.last_chunk().is_err());
}

/// The multi-GiB test stream: block `n` is the fixed pattern `base` with
/// `n` in its first 8 bytes, `base.len() - (n % 7) * 1001` bytes long (so
/// block edges fall anywhere in a chunk). Cheap to make on the writing side
/// and to check on the reading side (a comparison, not a hash).
struct TestStream {
    base: Vec<u8>,
    n: u64,
    off: usize,
}

impl TestStream {
    fn new() -> Self {
        TestStream {
            base: data(1 << 20, 3),
            n: 0,
            off: 0,
        }
    }

    fn block_len(&self) -> usize {
        self.base.len() - (self.n as usize % 7) * 1001
    }

    /// Checks that `got` continues the stream.
    fn check(&mut self, mut got: &[u8]) -> bool {
        while !got.is_empty() {
            let len = self.block_len();
            let k = got.len().min(len - self.off);
            let counter = self.n.to_be_bytes();
            for (i, &b) in got[..k].iter().enumerate() {
                let at = self.off + i;
                if at >= 8 {
                    break;
                }
                if b != counter[at] {
                    return false;
                }
            }
            let skip = 8usize.saturating_sub(self.off).min(k);
            if got[skip..k] != self.base[self.off + skip..self.off + k] {
                return false;
            }
            self.off += k;
            got = &got[k..];
            if self.off == len {
                self.n += 1;
                self.off = 0;
            }
        }
        true
    }
}

/// Streams `JAM_BIG_STREAM_MIB` (default 2048) MiB through a pipe: sealed on
/// one thread, opened on another and compared with the stream as written.
/// Nothing holds more than a chunk and a 1 MiB block.
#[test]
fn multi_gib_stream_round_trips_in_constant_memory() {
    let mib: u64 = std::env::var("JAM_BIG_STREAM_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2048);
    let total = mib << 20;
    let alice = identity(1);
    let to = alice.to_public();
    let (reader, writer) = std::io::pipe().unwrap();
    let producer = std::thread::spawn(move || {
        let mut w =
            jam_capture::SealWriter::new(writer, Kind::Capture, &[to], &mut KatRng::new(77))
                .unwrap();
        let mut s = TestStream::new();
        let mut block = s.base.clone();
        let mut sent = 0u64;
        while sent < total {
            let len = (s.block_len() as u64).min(total - sent) as usize;
            block[..8].copy_from_slice(&s.n.to_be_bytes());
            w.write_all(&block[..len]).unwrap();
            sent += len as u64;
            s.n += 1;
        }
        w.finish().unwrap();
    });
    let mut r = Opener::new(std::io::BufReader::new(reader), &[alice])
        .unwrap()
        .into_reader();
    let mut expected = TestStream::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(expected.check(&buf[..n]), "wrong bytes after {got} bytes");
        got += n as u64;
    }
    producer.join().unwrap();
    assert_eq!(got, total);
}

/// Empty chunks anywhere, read through buffers that hold a whole chunk (the
/// plaintext is decrypted straight into them) and through 1-byte reads.
#[test]
fn empty_chunks_read_through_any_buffer_size() {
    let alice = identity(1);
    let mut s = Sealer::new(
        Vec::new(),
        Kind::Agent,
        &[alice.to_public()],
        &mut KatRng::new(11),
    )
    .unwrap();
    for c in [&b""[..], b"hello", b"", b"", b" world"] {
        s.seal_chunk(c).unwrap();
    }
    let file = s.finish(b"").unwrap();
    for size in [1, 3, CHUNK_SIZE, 2 * CHUNK_SIZE] {
        let mut r = Opener::new(&file[..], std::slice::from_ref(&alice))
            .unwrap()
            .into_reader();
        let mut buf = vec![0u8; size];
        let mut got = Vec::new();
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"hello world", "buffer of {size}");
        assert_eq!(r.read(&mut buf).unwrap(), 0, "stays at the end");
    }
}
