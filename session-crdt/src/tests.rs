//! Example-based tests of the document, sync and malformed input. The
//! multi-replica convergence properties over the emulated network live in
//! the workspace's `tests/` crate (they need `jam-transport`).

use crate::*;
use automerge::transaction::Transactable;
use jam_core::{Beats, Meter, Micros, PeerId, SessionTime, Tempo};
use proptest::prelude::*;

fn peer(n: u8) -> PeerId {
    PeerId([n; 16])
}

fn profile(name: &str) -> Profile {
    Profile {
        name: name.into(),
        public_key: [name.len() as u8; 32],
        instrument: "synth".into(),
    }
}

fn config() -> SessionConfig {
    SessionConfig {
        id: [0xAB; 16],
        name: "test".into(),
        created_unix_ms: 1_700_000_000_000,
        origin: SessionTime(1_000_000),
        tempo: Tempo::from_bpm(120.0).unwrap(),
        meter: Meter::FOUR_FOUR,
        settings: SessionSettings::default(),
    }
}

fn bpm(x: f64) -> Tempo {
    Tempo::from_bpm(x).unwrap()
}

/// Exchanges messages directly until both sides are quiet; returns the
/// number of messages.
fn sync_pair(a: &mut SessionDoc, b: &mut SessionDoc) -> usize {
    let (ia, ib) = (a.me(), b.me());
    a.add_peer(ib);
    b.add_peer(ia);
    let mut n = 0;
    for _ in 0..100 {
        let mut quiet = true;
        while let Some(m) = a.generate_sync_message(Micros(0), ib) {
            b.receive_sync_message(Micros(0), ia, &m).unwrap();
            quiet = false;
            n += 1;
        }
        while let Some(m) = b.generate_sync_message(Micros(0), ia) {
            a.receive_sync_message(Micros(0), ib, &m).unwrap();
            quiet = false;
            n += 1;
        }
        if quiet {
            // The incrementally maintained view equals a full re-read.
            for d in [&*a, &*b] {
                if let Some(st) = d.state() {
                    assert_eq!(Ok(st), schema::read_state(d.automerge()).as_ref());
                }
            }
            return n;
        }
    }
    panic!("sync did not go quiet");
}

fn founder() -> SessionDoc {
    SessionDoc::create(&config(), peer(1), &profile("ann"), 1).unwrap()
}

fn joined(n: u8, from: &mut SessionDoc) -> SessionDoc {
    let mut d = SessionDoc::new_replica(peer(n), u64::from(n));
    sync_pair(from, &mut d);
    d.join(&profile(&format!("p{n}")), SessionTime(2_000_000))
        .unwrap();
    sync_pair(from, &mut d);
    d
}

#[test]
fn a_new_session_holds_its_settings_and_founder() {
    let d = founder();
    let s = d.state().unwrap();
    assert_eq!(s.info.name, "test");
    assert_eq!(s.info.schema, (SCHEMA_MAJOR, SCHEMA_MINOR));
    assert_eq!(s.info.settings, SessionSettings::default());
    let p = &s.participants[&peer(1)];
    assert_eq!(p.profile, profile("ann"));
    assert!(p.is_present());
    assert_eq!(s.invalid_entries, 0);
    assert_eq!(
        d.timeline().unwrap().time_at(Beats::ZERO),
        SessionTime(1_000_000)
    );
}

#[test]
fn an_empty_replica_refuses_edits_until_synced() {
    let mut d = SessionDoc::new_replica(peer(2), 2);
    assert!(matches!(
        d.join(&profile("bob"), SessionTime(0)),
        Err(EditError::NoSession)
    ));
    assert!(d.state().is_none() && d.snapshot().is_none());
}

#[test]
fn edits_show_up_in_the_state_and_on_the_other_replica() {
    let mut a = founder();
    let mut b = joined(2, &mut a);
    let melody = RoleAssignment {
        confidence: Confidence::from_per_mille(850),
        source: RoleSource::Auto,
    };
    b.set_role(peer(2), Role::Melody, Some(melody)).unwrap();
    b.set_connection(ConnectionStats {
        rtt_median_us: 40_000,
        rtt_p99_us: 90_000,
        loss_ppm: 1_200,
    })
    .unwrap();
    b.set_clock(ClockInfo {
        offset_us: -5,
        stratum: 1,
    })
    .unwrap();
    b.post_chat(SessionTime(3), "hi").unwrap();
    b.add_marker(Beats::from_beats(32), "chorus", SessionTime(4))
        .unwrap();
    let settings = SessionSettings {
        mode: LatencyMode::Interval,
        swing: Swing::from_per_mille(667).unwrap(),
        key: Some(MusicalKey {
            tonic: PitchClass::parse("D").unwrap(),
            scale: "dorian".into(),
        }),
        ..SessionSettings::default()
    };
    a.set_settings(&settings).unwrap();
    a.change_tempo(
        Beats::from_beats(16),
        bpm(90.0),
        Meter::FOUR_FOUR,
        SessionTime(5),
    )
    .unwrap();
    sync_pair(&mut a, &mut b);
    assert_eq!(a.state(), b.state());
    assert_eq!(a.snapshot(), b.snapshot());
    let s = b.state().unwrap();
    assert_eq!(
        s.participants[&peer(2)].roles[Role::Melody.index()],
        Some(melody)
    );
    assert_eq!(s.participants[&peer(2)].connection.rtt_p99_us, 90_000);
    assert_eq!(s.chat[0].text, "hi");
    assert_eq!(s.markers[0].label, "chorus");
    assert_eq!(s.info.settings, settings);
    assert_eq!(s.timeline.tempo_at(Beats::from_beats(17)), bpm(90.0));
    // Removing a role, leaving.
    b.set_role(peer(2), Role::Melody, None).unwrap();
    b.leave(SessionTime(9)).unwrap();
    sync_pair(&mut a, &mut b);
    let p = &a.state().unwrap().participants[&peer(2)];
    assert_eq!(p.roles, [None; 3]);
    assert_eq!(p.left, Some(SessionTime(9)));
    assert_eq!(a.snapshot().unwrap().present().count(), 1);
    assert!(matches!(
        a.set_role(peer(9), Role::Rhythm, None),
        Err(EditError::NotAParticipant(p)) if p == peer(9)
    ));
}

#[test]
fn concurrent_changes_for_the_same_bar_resolve_to_the_most_recent_everywhere() {
    let mut a = founder();
    let mut b = joined(2, &mut a);
    let mut c = joined(3, &mut a);
    sync_pair(&mut a, &mut b);
    let bar = Beats::from_beats(64);
    // b decided later (session time 20) than c (10): b wins on every replica,
    // whichever order the changes arrive in.
    b.change_tempo(bar, bpm(100.0), Meter::FOUR_FOUR, SessionTime(20))
        .unwrap();
    c.change_tempo(bar, bpm(140.0), Meter::FOUR_FOUR, SessionTime(10))
        .unwrap();
    sync_pair(&mut c, &mut a);
    sync_pair(&mut b, &mut a);
    sync_pair(&mut c, &mut a);
    for d in [&a, &b, &c] {
        let tl = d.timeline().unwrap();
        assert_eq!(tl.tempo_at(bar), bpm(100.0));
        assert_eq!(d.state().unwrap().tempo_changes.len(), 2);
    }
    assert_eq!(a.timeline(), b.timeline());
    assert_eq!(b.timeline(), c.timeline());
}

/// Two documents founded by two peers before they met, each with a tempo
/// change or a chat line of its founder, merged.
fn two_founders(
    create: fn(&SessionConfig, PeerId, &Profile, u64) -> Result<SessionDoc, EditError>,
) -> (SessionDoc, SessionDoc) {
    let mut a = create(&config(), peer(1), &profile("ann"), 1).unwrap();
    let mut b = create(&config(), peer(2), &profile("bob"), 2).unwrap();
    a.change_tempo(
        Beats::from_beats(64),
        bpm(100.0),
        Meter::FOUR_FOUR,
        SessionTime(20),
    )
    .unwrap();
    b.post_chat(SessionTime(30), "ready").unwrap();
    sync_pair(&mut a, &mut b);
    (a, b)
}

#[test]
fn founders_of_a_shared_session_keep_every_founders_entries() {
    let (a, b) = two_founders(SessionDoc::create_shared);
    // One genesis change, the same bytes on both sides.
    let first = |d: &SessionDoc| d.automerge().get_changes(&[])[0].hash();
    assert_eq!(first(&a), first(&b));
    assert_eq!(a.heads(), b.heads());
    for d in [&a, &b] {
        let s = d.state().unwrap();
        assert_eq!(s.info.name, "test");
        let names: Vec<&str> = s.present().map(|p| p.profile.name.as_str()).collect();
        assert_eq!(names, ["ann", "bob"]);
        assert_eq!(s.tempo_changes.len(), 1);
        assert_eq!(
            d.timeline().unwrap().tempo_at(Beats::from_beats(64)),
            bpm(100.0)
        );
        assert_eq!(s.chat.len(), 1);
        assert_eq!(s.invalid_entries, 0);
    }
    // A third founder who comes later merges the same way.
    let mut a = a;
    let mut c = SessionDoc::create_shared(&config(), peer(3), &profile("cat"), 3).unwrap();
    sync_pair(&mut a, &mut c);
    assert_eq!(c.state().unwrap().present().count(), 3);
    assert_eq!(c.state().unwrap().tempo_changes.len(), 1);
}

#[test]
fn founders_who_each_create_their_own_genesis_hide_each_others_entries() {
    // Why `create_shared` exists: two `create`d documents merge into one
    // in which each container is one founder's, and the other's entries
    // made before the merge are not shown.
    let (a, b) = two_founders(SessionDoc::create);
    assert_eq!(a.heads(), b.heads());
    let s = a.state().unwrap();
    let shown = s.present().count() + s.tempo_changes.len() + s.chat.len();
    assert!(shown < 4, "all four entries shown: {s:?}");
}

#[test]
fn only_an_earlier_entry_of_the_same_device_can_be_retired() {
    let mut a = founder();
    // peer 2 joins with ann's key (her earlier run); peer 3 with another.
    let mut again = SessionDoc::new_replica(peer(2), 2);
    sync_pair(&mut a, &mut again);
    again.join(&profile("ann"), SessionTime(5)).unwrap();
    let mut other = joined(3, &mut a);
    sync_pair(&mut a, &mut again);
    sync_pair(&mut other, &mut again);
    assert!(matches!(
        again.retire(peer(2), SessionTime(6)),
        Err(EditError::NotThisDevice(_))
    ));
    assert!(matches!(
        again.retire(peer(3), SessionTime(6)),
        Err(EditError::NotThisDevice(_))
    ));
    assert!(matches!(
        again.retire(peer(9), SessionTime(6)),
        Err(EditError::NotAParticipant(_))
    ));
    again.retire(peer(1), SessionTime(6)).unwrap();
    sync_pair(&mut a, &mut again);
    let s = a.state().unwrap();
    assert_eq!(s.participants[&peer(1)].left, Some(SessionTime(6)));
    assert!(s.participants[&peer(2)].is_present() && s.participants[&peer(3)].is_present());
}

#[test]
fn next_change_beat_lands_on_a_bar_after_the_lead() {
    let a = founder();
    // Origin at 1 s, 120 BPM: bar 1 starts at 3 s.
    let b = a.next_change_beat(SessionTime(1_500_000), 100_000).unwrap();
    assert_eq!(b, Beats::from_beats(4));
    let b = a.next_change_beat(SessionTime(2_950_000), 100_000).unwrap();
    assert_eq!(b, Beats::from_beats(8));
}

#[test]
fn save_and_load_round_trip() {
    let mut a = founder();
    a.post_chat(SessionTime(1), "saved").unwrap();
    let bytes = a.save();
    let b = SessionDoc::load(&bytes, peer(1), 99).unwrap();
    assert_eq!(a.state(), b.state());
}

#[test]
fn corrupt_saved_documents_get_clear_errors() {
    let a = founder();
    let bytes = a.save();
    for cut in [0, 1, 8, bytes.len() / 2, bytes.len() - 1] {
        let e = SessionDoc::load(&bytes[..cut], peer(1), 1).unwrap_err();
        assert!(
            matches!(e, LoadError::Corrupt { .. } | LoadError::Empty),
            "cut {cut}: {e}"
        );
    }
    let mut flipped = bytes.clone();
    let i = flipped.len() / 2;
    flipped[i] ^= 0x40;
    let e = SessionDoc::load(&flipped, peer(1), 1).unwrap_err();
    assert!(
        e.to_string().contains(&format!("{} bytes", flipped.len())),
        "{e}"
    );
    // A valid Automerge document that is not a session.
    let mut other = automerge::AutoCommit::new();
    other.put(automerge::ROOT, "hello", "world").unwrap();
    let e = SessionDoc::load(&other.save(), peer(1), 1).unwrap_err();
    assert!(
        matches!(e, LoadError::Schema(SchemaError::NotASession)),
        "{e}"
    );
}

#[test]
fn applying_corrupt_changes_leaves_the_document_as_it_was() {
    let mut a = founder();
    let mut b = joined(2, &mut a);
    b.post_chat(SessionTime(5), "x").unwrap();
    let changes = b.take_new_changes();
    let before = a.save();
    let mut bad = changes.last().unwrap().bytes.clone();
    let i = bad.len() - 3;
    bad[i] ^= 0xFF;
    let good: Vec<&[u8]> = changes.iter().map(|c| c.bytes.as_slice()).collect();
    let mut mixed = good.clone();
    mixed.push(&bad);
    assert!(a.apply_changes(&mixed).is_err());
    assert_eq!(a.save(), before);
    // The good ones alone apply.
    a.apply_changes(&good).unwrap();
    assert_eq!(a.state(), b.state());
}

#[test]
fn exported_changes_replay_into_an_identical_document() {
    let mut a = founder();
    let mut b = joined(2, &mut a);
    b.change_tempo(
        Beats::from_beats(8),
        bpm(77.5),
        Meter::new(7, 8).unwrap(),
        SessionTime(1),
    )
    .unwrap();
    sync_pair(&mut a, &mut b);
    let mut all = a.take_new_changes();
    assert!(a.take_new_changes().is_empty());
    a.post_chat(SessionTime(2), "later").unwrap();
    let later = a.take_new_changes();
    assert_eq!(later.len(), 1);
    all.extend(later);
    let mut replay = SessionDoc::new_replica(peer(7), 7);
    for c in &all {
        replay.apply_changes(&[&c.bytes]).unwrap();
    }
    assert_eq!(replay.state(), a.state());
}

#[test]
fn malformed_sync_messages_are_rejected_and_change_nothing() {
    let mut a = founder();
    let mut b = joined(2, &mut a);
    b.post_chat(SessionTime(5), "pending").unwrap();
    b.add_peer(peer(1));
    let good = b.generate_sync_message(Micros(0), peer(1)).unwrap();
    let before = a.save();
    let cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x42],
        vec![0x00, 1, 2, 3],
        good[..good.len() / 2].to_vec(),
        {
            let mut g = good.clone();
            let i = g.len() - 5;
            g[i] ^= 0x5A;
            g
        },
    ];
    for bytes in &cases {
        // A flipped byte can land in a part that still decodes (a bloom
        // filter bit, a need list); then it must still be harmless.
        if let Err(e) = a.receive_sync_message(Micros(0), peer(2), bytes) {
            assert!(!e.to_string().is_empty());
            assert_eq!(a.save(), before, "document changed by {bytes:?}");
        }
    }
    assert_eq!(a.save(), before);
    // The session still syncs afterwards: b's good message never arrived
    // intact, so b resends when its timer fires.
    let deadline = b.poll_timeout().expect("b waits for an answer");
    b.handle_timeout(deadline);
    sync_pair(&mut a, &mut b);
    assert_eq!(a.state(), b.state());
}

#[test]
fn a_newer_major_schema_is_refused_on_load_and_by_sync() {
    let mut a = founder();
    let mut b = joined(2, &mut a);
    // b's document is bumped by hand to a future major version.
    let mut future = automerge::AutoCommit::load(&b.save()).unwrap();
    future.set_actor(automerge::ActorId::from(&[9u8; 16][..]));
    future
        .put(automerge::ROOT, schema::raw::K_SCHEMA_MAJOR, 2u64)
        .unwrap();
    let e = SessionDoc::load(&future.save(), peer(2), 3).unwrap_err();
    assert!(
        matches!(
            e,
            LoadError::Schema(SchemaError::NewerMajor {
                found: 2,
                supported: 1
            })
        ),
        "{e}"
    );
    let mut b2 = SessionDoc::new_replica(peer(2), 4);
    let all: Vec<Vec<u8>> = future
        .get_changes(&[])
        .iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect();
    let all: Vec<&[u8]> = all.iter().map(|c| c.as_slice()).collect();
    b2.apply_changes(&all).unwrap_err();
    assert!(b2.state().is_none());
    assert!(b2.heads().is_empty());
    // Over sync: the change is refused and a's document stays as it was.
    let change = future.get_last_local_change().unwrap().raw_bytes().to_vec();
    b.apply_changes(&[&change]).unwrap_err();
    let before = a.save();
    let mut sender = automerge::Automerge::load(&future.save()).unwrap();
    let mut st = automerge::sync::State::new();
    use automerge::sync::SyncDoc;
    let mut last_err = None;
    for _ in 0..10 {
        if let Some(m) = sender.generate_sync_message(&mut st)
            && let Err(e) = a.receive_sync_message(Micros(0), peer(2), &m.encode())
        {
            last_err = Some(e);
        }
        if let Some(m) = a.generate_sync_message(Micros(0), peer(2)) {
            let m = automerge::sync::Message::decode(&m).unwrap();
            sender.receive_sync_message(&mut st, m).unwrap();
        }
    }
    let e = last_err.expect("the newer schema reached a");
    assert!(matches!(e, SyncError::Schema { .. }), "{e}");
    assert_eq!(a.save(), before);
    assert_eq!(a.state().unwrap().info.schema.0, 1);
}

#[test]
fn entries_that_break_the_schema_are_skipped_identically() {
    let mut a = founder();
    let mut raw = automerge::AutoCommit::load(&a.save()).unwrap();
    raw.set_actor(automerge::ActorId::from(&[5u8; 16][..]));
    let (_, ps) = automerge::ReadDoc::get(&raw, automerge::ROOT, schema::raw::K_PARTICIPANTS)
        .unwrap()
        .unwrap();
    raw.put(&ps, "not-a-peer-id", 5).unwrap();
    let (_, ts) = automerge::ReadDoc::get(&raw, automerge::ROOT, schema::raw::K_TEMPO)
        .unwrap()
        .unwrap();
    let e = raw.put_object(&ts, "x.0", automerge::ObjType::Map).unwrap();
    raw.put(&e, "beat", "not a number").unwrap();
    let change: Vec<Vec<u8>> = raw
        .get_changes(&a.automerge().get_heads())
        .iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect();
    let refs: Vec<&[u8]> = change.iter().map(|c| c.as_slice()).collect();
    a.apply_changes(&refs).unwrap();
    let s = a.state().unwrap();
    assert_eq!(s.invalid_entries, 2);
    assert_eq!(s.participants.len(), 1);
    assert!(s.tempo_changes.is_empty());
}

#[test]
fn a_restarted_peer_gets_everything_again() {
    let mut a = founder();
    let mut b = joined(2, &mut a);
    for i in 0..5 {
        a.post_chat(SessionTime(i), "before restart").unwrap();
    }
    sync_pair(&mut a, &mut b);
    // b restarts with an empty document (new nonce) and a fresh sync state;
    // a still believes b has everything.
    let mut b = SessionDoc::new_replica(peer(2), 77);
    b.add_peer(peer(1));
    // The restarted peer speaks first, as its driver does on reconnect.
    let m = b.generate_sync_message(Micros(0), peer(1)).unwrap();
    a.receive_sync_message(Micros(0), peer(2), &m).unwrap();
    sync_pair(&mut a, &mut b);
    assert_eq!(a.state(), b.state());
    assert_eq!(b.state().unwrap().chat.len(), 5);
}

#[test]
fn a_lost_message_is_resent_after_the_timeout() {
    let mut a = founder();
    let mut b = joined(2, &mut a);
    a.post_chat(SessionTime(1), "lost").unwrap();
    // The message carrying the change is lost.
    let lost = a.generate_sync_message(Micros(1_000), peer(2));
    assert!(lost.is_some());
    assert!(a.generate_sync_message(Micros(2_000), peer(2)).is_none());
    let deadline = a.poll_timeout().expect("a waits for b");
    assert_eq!(
        deadline,
        Micros(1_000 + SyncConfig::default().resend_after_us)
    );
    a.handle_timeout(deadline);
    let again = a.generate_sync_message(deadline, peer(2)).unwrap();
    b.receive_sync_message(deadline, peer(1), &again).unwrap();
    sync_pair(&mut a, &mut b);
    assert_eq!(b.state().unwrap().chat.len(), 1);
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn resends_back_off_while_the_peer_stays_silent() {
    let mut a = founder();
    a.add_peer(peer(2));
    let mut now = Micros(0);
    let mut waits = Vec::new();
    for _ in 0..8 {
        assert!(a.generate_sync_message(now, peer(2)).is_some());
        let d = a.poll_timeout().unwrap();
        waits.push(d.0 - now.0);
        now = d;
        a.handle_timeout(now);
    }
    let c = SyncConfig::default();
    assert_eq!(waits[0], c.resend_after_us);
    assert_eq!(waits[1], 2 * c.resend_after_us);
    assert_eq!(*waits.last().unwrap(), c.max_resend_after_us);
}

#[test]
fn snapshot_channel_hands_over_new_snapshots_and_returns_old_ones() {
    let mut a = founder();
    let (mut publisher, mut reader) = snapshot_channel(a.snapshot().unwrap());
    assert_eq!(reader.read().members.len(), 1);
    let mut b = joined(2, &mut a);
    b.set_role(
        peer(2),
        Role::Rhythm,
        Some(RoleAssignment {
            confidence: Confidence::FULL,
            source: RoleSource::Manual,
        }),
    )
    .unwrap();
    sync_pair(&mut a, &mut b);
    publisher.publish(a.snapshot().unwrap());
    let snap = reader.read();
    assert_eq!(snap.members.len(), 2);
    assert_eq!(
        snap.member(peer(2))
            .unwrap()
            .role(Role::Rhythm)
            .unwrap()
            .source,
        RoleSource::Manual
    );
    assert_eq!(reader.version(), 1);
    // Many publishes without reads: the reader still ends on the newest.
    for i in 0..20 {
        a.post_chat(SessionTime(i), "x").unwrap();
        let mut s = a.snapshot().unwrap();
        s.interval_beats = i as u32;
        publisher.publish(s);
        if i % 7 == 0 {
            reader.read();
        }
    }
    publisher.collect();
    reader.read();
    publisher.collect();
    assert_eq!(reader.read().interval_beats, 19);
    assert_eq!(**publisher.latest(), *reader.read());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("JAM_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24)
    ))]

    /// Arbitrary bytes never panic the decoder and never change the document.
    #[test]
    fn arbitrary_bytes_as_sync_message_leave_the_document_unchanged(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        prefix in prop_oneof![Just(None), Just(Some(0x42u8)), Just(Some(0x43u8))],
    ) {
        let mut a = founder();
        let before = a.save();
        let mut input = bytes.clone();
        if let Some(p) = prefix { input.insert(0, p); }
        let _ = a.receive_sync_message(Micros(0), peer(2), &input);
        prop_assert_eq!(a.save(), before);
    }

    #[test]
    fn arbitrary_bytes_never_load_as_a_session(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        prop_assert!(SessionDoc::load(&bytes, peer(1), 1).is_err());
    }
}

#[test]
fn a_change_to_an_up_to_date_peer_travels_as_a_direct_message() {
    let mut a = founder();
    let mut b = joined(2, &mut a);
    sync_pair(&mut a, &mut b);
    b.set_role(
        peer(2),
        Role::Harmony,
        Some(RoleAssignment {
            confidence: Confidence::from_per_mille(500),
            source: RoleSource::Auto,
        }),
    )
    .unwrap();
    let m = b.generate_sync_message(Micros(0), peer(1)).unwrap();
    assert_eq!(m[0], 0x01, "direct-changes envelope");
    assert!(m.len() < 200, "{} bytes", m.len());
    a.receive_sync_message(Micros(0), peer(2), &m).unwrap();
    assert_eq!(a.state(), b.state());
    // The acknowledgement settles both sides: no timers, nothing to say.
    sync_pair(&mut a, &mut b);
    assert_eq!(a.poll_timeout(), None);
    assert_eq!(b.poll_timeout(), None);
    assert!(a.poll_transmit(Micros(0)).is_none() && b.poll_transmit(Micros(0)).is_none());
    // A broken envelope is an error that changes nothing.
    let before = a.save();
    for bad in [&m[..3], &[0x01, 0, 1, 0, 0, 0, 9, 1][..], &[0x01][..]] {
        assert!(matches!(
            a.receive_sync_message(Micros(0), peer(2), bad),
            Err(SyncError::Direct { .. } | SyncError::BadChunk { .. })
        ));
    }
    assert_eq!(a.save(), before);
}

#[test]
fn a_joining_peer_aligns_beat_and_phase_with_the_session() {
    use jam_core::session_time::{ClockMeasurement, SessionClock};
    use jam_core::timeline::closest_phase_match;
    // The founder's local clock is session time. The joiner's local clock
    // started 123.456789 s later; its clock sync sees a 40 ms round trip with
    // 3 ms of path asymmetry.
    let mut a = founder();
    let mut b = joined(2, &mut a);
    let founder_clock = SessionClock::founder();
    let joiner_started = 123_456_789u64;
    let mut clock = SessionClock::joining();
    clock.handle_measurement(
        Micros(5_000_000),
        ClockMeasurement {
            peer: peer(1),
            local_minus_remote_us: -(joiner_started as i64) + 3_000,
            remote_offset_us: founder_clock.offset_us().unwrap(),
            remote_stratum: founder_clock.stratum().unwrap(),
            rtt_us: 40_000,
        },
    );
    b.set_clock(ClockInfo {
        offset_us: clock.offset_us().unwrap(),
        stratum: clock.stratum().unwrap(),
    })
    .unwrap();
    sync_pair(&mut a, &mut b);
    let tl = b.timeline().unwrap();
    for founder_local in [200_000_000u64, 1_000_000_000, 86_400_000_000] {
        let joiner_local = Micros(founder_local - joiner_started);
        let truth = tl.beat_at(founder_clock.to_session(Micros(founder_local)).unwrap());
        let seen = tl.beat_at(clock.to_session(joiner_local).unwrap());
        // Off by at most the clock error bound's worth of beats.
        let bound = tl
            .tempo_at(truth)
            .beats_in(clock.error_bound_us().unwrap() as i64);
        assert!((seen - truth).0.abs() <= bound.0 + 1, "{seen} vs {truth}");
        // Phase within the bar agrees to the same bound, so the joiner can
        // line its own transport up with the bar.
        let q = Meter::FOUR_FOUR.bar_length();
        let aligned = closest_phase_match(seen, truth, q);
        assert!((aligned - seen).0.abs() <= bound.0 + 1);
    }
    let published = b.state().unwrap().participants[&peer(2)].clock.unwrap();
    assert_eq!(published.stratum, 1);
}

#[test]
fn concurrent_ahead_proposals_resolve_to_the_largest_per_bar_everywhere() {
    let mut a = founder();
    let mut b = joined(2, &mut a);
    let mut c = joined(3, &mut a);
    sync_pair(&mut a, &mut b);
    let (bar, later) = (Beats::from_beats(16), Beats::from_beats(32));
    let q = |x: i64| Beats(Beats::PER_BEAT / 32 * x);
    // Concurrent: b and c raise for the same bar, c more; a and c tie at a
    // later bar (the smaller peer id, a's, is named).
    b.propose_ahead(bar, q(8)).unwrap();
    c.propose_ahead(bar, q(11)).unwrap();
    c.propose_ahead(later, q(6)).unwrap();
    a.propose_ahead(later, q(6)).unwrap();
    // A smaller second proposal of the same peer for the same bar does not
    // lower its first.
    b.propose_ahead(bar, q(2)).unwrap();
    sync_pair(&mut c, &mut a);
    sync_pair(&mut b, &mut a);
    sync_pair(&mut c, &mut a);
    let want = vec![
        AheadEntry {
            from: bar,
            ahead: q(11),
            by: peer(3),
        },
        AheadEntry {
            from: later,
            ahead: q(6),
            by: peer(1),
        },
    ];
    for d in [&a, &b, &c] {
        let s = d.state().unwrap();
        assert_eq!(s.ahead_changes(), want);
        assert_eq!(s.participants[&peer(2)].ahead[&bar], q(8));
    }
    // Written only into the proposer's own entry: an empty replica cannot.
    let mut empty = SessionDoc::new_replica(peer(7), 7);
    assert!(matches!(
        empty.propose_ahead(bar, q(1)),
        Err(EditError::NoSession)
    ));
}

#[test]
fn an_unreadable_ahead_proposal_is_skipped_and_counted() {
    let mut a = founder();
    a.propose_ahead(Beats::from_beats(4), Beats(100)).unwrap();
    let mut raw = automerge::AutoCommit::load(&a.save()).unwrap();
    raw.set_actor(automerge::ActorId::from(&[5u8; 16][..]));
    let (_, ps) = automerge::ReadDoc::get(&raw, automerge::ROOT, schema::raw::K_PARTICIPANTS)
        .unwrap()
        .unwrap();
    let (_, me) = automerge::ReadDoc::get(&raw, &ps, peer(1).to_string())
        .unwrap()
        .unwrap();
    let (_, ahead) = automerge::ReadDoc::get(&raw, &me, "ahead")
        .unwrap()
        .unwrap();
    raw.put(&ahead, "bar seven", 5u64).unwrap();
    raw.put(&ahead, "64", "wide").unwrap();
    let change: Vec<Vec<u8>> = raw
        .get_changes(&a.automerge().get_heads())
        .iter()
        .map(|c| c.raw_bytes().to_vec())
        .collect();
    let refs: Vec<&[u8]> = change.iter().map(|c| c.as_slice()).collect();
    a.apply_changes(&refs).unwrap();
    let s = a.state().unwrap();
    assert_eq!(s.invalid_entries, 2);
    assert_eq!(
        s.ahead_changes(),
        vec![AheadEntry {
            from: Beats::from_beats(4),
            ahead: Beats(100),
            by: peer(1),
        }]
    );
    assert_eq!(Ok(s), schema::read_state(a.automerge()).as_ref());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("JAM_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(16)
    ))]

    /// Whatever the proposals and whichever order the replicas sync in,
    /// every replica ends with the same schedule-ahead timeline: per bar,
    /// the largest proposal, ties to the smallest peer id.
    #[test]
    fn concurrent_ahead_proposals_converge_to_one_timeline(
        proposals in proptest::collection::vec((0usize..3, 0i64..6, 0i64..64), 1..12),
        order in proptest::collection::vec((0usize..3, 0usize..3), 0..6),
    ) {
        let mut a = founder();
        let b = joined(2, &mut a);
        let c = joined(3, &mut a);
        let mut docs = [a, b, c];
        for (i, j) in [(0, 1), (0, 2)] {
            let (x, y) = docs.split_at_mut(j);
            sync_pair(&mut x[i], &mut y[0]);
        }
        let step = Beats::PER_BEAT / 32;
        let mut model: std::collections::BTreeMap<Beats, (Beats, std::cmp::Reverse<PeerId>)> =
            std::collections::BTreeMap::new();
        for &(who, bar, ahead) in &proposals {
            let (from, ahead) = (Beats::from_beats(bar * 4), Beats(ahead * step));
            docs[who].propose_ahead(from, ahead).unwrap();
            let cand = (ahead, std::cmp::Reverse(docs[who].me()));
            let e = model.entry(from).or_insert(cand);
            *e = (*e).max(cand);
        }
        // Some partial syncs in an arbitrary order, then everyone with a.
        for (i, j) in order.into_iter().chain([(1, 0), (2, 0), (1, 0)]) {
            if i == j { continue; }
            let (lo, hi) = (i.min(j), i.max(j));
            let (x, y) = docs.split_at_mut(hi);
            sync_pair(&mut x[lo], &mut y[0]);
        }
        let want: Vec<AheadEntry> = model
            .into_iter()
            .map(|(from, (ahead, by))| AheadEntry { from, ahead, by: by.0 })
            .collect();
        for d in &docs {
            prop_assert_eq!(d.state().unwrap().ahead_changes(), want.clone());
        }
    }
}
