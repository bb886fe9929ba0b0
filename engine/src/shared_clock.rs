//! The session clock of a shared session (one joined through `jamd`):
//! which member's clock is the session time axis, and how every other
//! member aligns to it through whichever members it measures against.
//!
//! In a session made by invitations the founder is the axis and a replica
//! measures against the founder it invited. Through `jamd` every member
//! meets every other one, all found the document alike
//! ([`crate::session_sync::SharedSession`]), and clock sync runs between
//! each pair, so a member must know, for each peer it measures, where that
//! peer stands: its published [`ClockInfo`] (`session - local` and
//! stratum) in the session document. [`SharedClock`] keeps that mesh, NTP
//! style, on top of [`SessionClock`] (which keeps the best measurement
//! against a lower stratum):
//!
//! - **Who is who.** The transport knows a peer by its transport id and
//!   its device public key (from `jamd`'s member list); the document knows
//!   a participant by its profile, whose public key is the member's device
//!   key in a shared session. Entries of an earlier run of our own device
//!   that never left are retired ([`SessionDoc::retire`]), so one key names
//!   one present participant. Two members who joined with the same device
//!   key (one key registered by two accounts) cannot be told apart: neither
//!   retires anything, and they do not align through each other.
//! - **Stratum 0.** A member who found nobody else online when it joined
//!   (`SharedSession::first`) takes its own clock as the axis at once;
//!   anyone else starts unaligned. Members who joined at the same moment
//!   may both claim it: a claimant that sees another connected claimant
//!   with a smaller key yields (it publishes stratum
//!   [`SessionClock::MAX_STRATUM`], "not a reference", and aligns like a
//!   newcomer). A member still unaligned [`CLAIM_AFTER`] after it met its
//!   first peer, with no connected peer published as aligned, claims
//!   stratum 0 itself (everyone it could align to has gone).
//! - **Alignment.** The latest measurement against each peer is kept and
//!   fed to the [`SessionClock`] with that peer's published offset and
//!   stratum once the document holds them (often after the measurement).
//!   When a peer that was fed as stratum 0 yields, its axis was not the
//!   session's: the clock starts over from the latest measurements.
//! - **Publishing.** Our own alignment goes into the document when the
//!   stratum changes or the offset moves by [`PUBLISH_STEP_US`] or more.
//!
//! A reference that leaves takes nothing with it: the others keep their
//! offsets (their measurements age out of the window, the last offset
//! stays), and newcomers align through them at a higher stratum.

use jam_core::session_time::{ClockMeasurement, SessionClock};
use jam_core::{Micros, PeerId, SessionTime};
use jam_session_crdt::{ClockInfo, SessionDoc};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long an unaligned member waits, after meeting its first peer, for
/// a connected peer to publish an alignment before it claims stratum 0.
pub const CLAIM_AFTER: Duration = Duration::from_secs(3);

/// How far our offset may move before it is published again (µs).
pub const PUBLISH_STEP_US: i64 = 250;

/// How often the mesh looks at the document when nothing else happened
/// (a peer's new alignment arrives with the document's sync).
pub const CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// The latest clock measurement against one peer.
#[derive(Debug, Clone, Copy)]
struct Measured {
    at: Micros,
    local_minus_remote_us: i64,
    rtt_us: u64,
    /// The stratum the peer had when this measurement was fed, if it was.
    fed_at_stratum: Option<u8>,
}

/// The clock mesh of one shared session (sans-IO; see the module docs).
#[derive(Debug)]
pub struct SharedClock {
    key: [u8; 32],
    /// Device keys of the connected peers, by transport id.
    keys: BTreeMap<PeerId, [u8; 32]>,
    measured: BTreeMap<PeerId, Measured>,
    /// What we last wrote into the document: (stratum, offset).
    published: Option<(u8, i64)>,
    /// When an unaligned member claims stratum 0.
    claim_at: Option<Micros>,
    /// When the next [`SharedClock::tick`] looks at the document anyway.
    next_check: Micros,
}

impl SharedClock {
    /// The mesh for the member with device key `key`, and the clock it
    /// starts with: the session axis itself if `first`, else unaligned.
    pub fn new(key: [u8; 32], first: bool) -> (SharedClock, SessionClock) {
        let clock = if first {
            SessionClock::founder()
        } else {
            SessionClock::joining()
        };
        let mesh = SharedClock {
            key,
            keys: BTreeMap::new(),
            measured: BTreeMap::new(),
            published: None,
            claim_at: None,
            next_check: Micros::ZERO,
        };
        (mesh, clock)
    }

    /// A peer joined, with its device key if the transport knows it.
    pub fn peer_joined(&mut self, now: Micros, peer: PeerId, key: Option<[u8; 32]>) {
        if let Some(k) = key {
            self.keys.insert(peer, k);
        }
        self.claim_at.get_or_insert(now + CLAIM_AFTER);
        self.next_check = Micros::ZERO;
    }

    /// A peer left.
    pub fn peer_left(&mut self, peer: PeerId) {
        self.keys.remove(&peer);
        self.measured.remove(&peer);
        self.next_check = Micros::ZERO;
    }

    /// A clock-sync measurement against `peer`; it is used at the next
    /// [`SharedClock::tick`] that finds the peer's alignment.
    pub fn measured(&mut self, now: Micros, peer: PeerId, local_minus_remote_us: i64, rtt_us: u64) {
        self.measured.insert(
            peer,
            Measured {
                at: now,
                local_minus_remote_us,
                rtt_us,
                fed_at_stratum: None,
            },
        );
        self.next_check = Micros::ZERO;
    }

    /// Retires our device's stale entries, settles stratum 0, feeds the
    /// measurements whose peers' alignments are known, and publishes ours.
    /// Returns true when `clock` changed. Cheap between events: it looks
    /// at the document every [`CHECK_INTERVAL`] unless a peer or a
    /// measurement came.
    pub fn tick(&mut self, now: Micros, clock: &mut SessionClock, doc: &mut SessionDoc) -> bool {
        if now < self.next_check {
            return false;
        }
        self.next_check = now + CHECK_INTERVAL;
        let me = doc.me();
        let Some(state) = doc.state() else {
            return false;
        };
        if !state.participants.contains_key(&me) {
            return false;
        }
        // Earlier entries of this device, still present: unless a member
        // with our key is connected (one device key registered by two
        // accounts), whose entry cannot be told from ours.
        let twin = self.keys.values().any(|k| *k == self.key);
        let stale: Vec<PeerId> = state
            .present()
            .filter(|p| !twin && p.peer != me && p.profile.public_key == self.key)
            .map(|p| p.peer)
            .collect();
        // Where each connected peer stands, by transport id (not a twin's).
        let infos: BTreeMap<PeerId, ClockInfo> = self
            .keys
            .iter()
            .filter(|(_, key)| **key != self.key)
            .filter_map(|(peer, key)| {
                let entry = state
                    .present()
                    .find(|p| p.peer != me && p.profile.public_key == *key)?;
                Some((*peer, entry.clock?))
            })
            .collect();
        let session_now = clock
            .to_session(now)
            .unwrap_or(SessionTime(now.as_micros() as i64));
        for peer in stale {
            if let Err(e) = doc.retire(peer, session_now) {
                tracing::warn!(%peer, "cannot retire an earlier entry of this device: {e}");
            }
        }
        let before = (clock.stratum(), clock.offset_us());
        let claimant = |i: &ClockInfo| i.stratum == 0;
        let yields = clock.stratum() == Some(0)
            && self
                .keys
                .iter()
                .any(|(peer, key)| *key < self.key && infos.get(peer).is_some_and(claimant));
        // A peer fed as stratum 0 that no longer is: its axis was its own.
        let axis_gone = self
            .measured
            .iter()
            .any(|(peer, m)| m.fed_at_stratum == Some(0) && !infos.get(peer).is_some_and(claimant));
        if yields || axis_gone {
            *clock = SessionClock::joining();
            for m in self.measured.values_mut() {
                m.fed_at_stratum = None;
            }
            if yields {
                self.publish(
                    doc,
                    ClockInfo {
                        offset_us: 0,
                        stratum: SessionClock::MAX_STRATUM,
                    },
                );
            }
        }
        if clock.stratum() != Some(0) {
            for (peer, m) in &mut self.measured {
                let Some(info) = infos.get(peer) else {
                    continue;
                };
                if m.fed_at_stratum.is_some() {
                    continue;
                }
                m.fed_at_stratum = Some(info.stratum);
                clock.handle_measurement(
                    m.at,
                    ClockMeasurement {
                        peer: *peer,
                        local_minus_remote_us: m.local_minus_remote_us,
                        remote_offset_us: info.offset_us,
                        remote_stratum: info.stratum,
                        rtt_us: m.rtt_us,
                    },
                );
            }
        }
        let aligned_peer = infos
            .values()
            .any(|i| i.stratum < SessionClock::MAX_STRATUM);
        if !clock.is_aligned() && !aligned_peer && self.claim_at.is_some_and(|t| now >= t) {
            tracing::info!("no aligned member around: this clock is the session's now");
            *clock = SessionClock::founder();
        }
        if let (Some(stratum), Some(offset_us)) = (clock.stratum(), clock.offset_us()) {
            let moved = self
                .published
                .is_none_or(|(s, o)| s != stratum || (o - offset_us).abs() >= PUBLISH_STEP_US);
            if moved {
                self.publish(doc, ClockInfo { offset_us, stratum });
            }
        }
        before != (clock.stratum(), clock.offset_us())
    }

    fn publish(&mut self, doc: &mut SessionDoc, info: ClockInfo) {
        match doc.set_clock(info) {
            Ok(()) => self.published = Some((info.stratum, info.offset_us)),
            Err(e) => tracing::warn!("cannot publish the session clock: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::session_sync::{SessionSetup, SharedSession, WorkerSession};
    use crate::timeline::Timeline;
    use jam_core::{Beats, Micros, PeerId};
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::time::Duration;

    /// One engine of the simulated session: its local clock runs `skew`
    /// µs ahead of the wall clock.
    struct Member {
        id: PeerId,
        key: [u8; 32],
        skew: u64,
        session: WorkerSession,
        timeline: Option<Timeline>,
        online: bool,
    }

    impl Member {
        fn new(n: u8, key: u8, skew: u64, first: bool) -> Member {
            let shared = SharedSession::jamd("5e55105e55105e55", "mesh", 0, [key; 32], first);
            let setup = SessionSetup::new(
                &format!("m{n}"),
                120.0,
                0,
                &mut StdRng::seed_from_u64(n.into()),
            )
            .with_shared(shared);
            let id = PeerId([n; 16]);
            Member {
                id,
                key: [key; 32],
                skew,
                session: WorkerSession::new(setup, id),
                timeline: None,
                online: true,
            }
        }

        fn local(&self, wall: Micros) -> Micros {
            Micros(wall.0 + self.skew)
        }

        /// The beat this member plays at wall time `wall`.
        fn beat(&self, wall: Micros) -> Beats {
            self.timeline
                .expect("a published timeline")
                .beat_at(self.local(wall))
        }

        fn stratum(&self) -> Option<u8> {
            self.session.view(None).clock_stratum
        }
    }

    /// The mesh: members meet each other as they come online.
    struct Mesh {
        members: Vec<Member>,
        wall: Micros,
    }

    impl Mesh {
        fn new(members: Vec<Member>) -> Mesh {
            Mesh {
                members,
                wall: Micros::from_secs(100),
            }
        }

        fn strata(&self) -> Vec<Option<u8>> {
            self.members.iter().map(Member::stratum).collect()
        }

        /// Everyone online meets everyone online it has not met.
        fn meet(&mut self, i: usize, j: usize) {
            let (a, b) = (self.members[i].id, self.members[j].id);
            let (ka, kb) = (self.members[i].key, self.members[j].key);
            let (ta, tb) = (
                self.members[i].local(self.wall),
                self.members[j].local(self.wall),
            );
            self.members[i].session.peer_joined(ta, b, Some(kb));
            self.members[j].session.peer_joined(tb, a, Some(ka));
        }

        fn leave(&mut self, i: usize) {
            self.members[i].online = false;
            let gone = self.members[i].id;
            for m in self.members.iter_mut().filter(|m| m.online) {
                m.session.peer_left(gone);
            }
        }

        /// Runs `ms` milliseconds in 5 ms steps: ticks, frames, and a
        /// clock-sync round between every pair each second.
        fn run(&mut self, ms: u64) {
            for _ in 0..ms / 5 {
                let wall = self.wall;
                for m in self.members.iter_mut().filter(|m| m.online) {
                    let local = m.local(wall);
                    if let Some(t) = m.session.tick(local) {
                        m.timeline = Some(t);
                    }
                }
                let mut frames = Vec::new();
                for (i, m) in self
                    .members
                    .iter_mut()
                    .enumerate()
                    .filter(|(_, m)| m.online)
                {
                    let local = m.local(wall);
                    if let Some(s) = m.session.sync_mut() {
                        while let Some((to, f)) = s.poll_transmit(local) {
                            frames.push((i, to, f));
                        }
                    }
                }
                for (from, to, f) in frames {
                    let src = self.members[from].id;
                    if let Some(m) = self.members.iter_mut().find(|m| m.id == to && m.online) {
                        let local = m.local(wall);
                        if let Some(s) = m.session.sync_mut() {
                            s.handle_frame(local, src, &f).unwrap();
                        }
                    }
                }
                if wall.0.is_multiple_of(1_000_000) {
                    let n = self.members.len();
                    for i in 0..n {
                        for j in 0..n {
                            let (a, b) = (&self.members[i], &self.members[j]);
                            if i == j || !a.online || !b.online {
                                continue;
                            }
                            let lmr = a.skew as i64 - b.skew as i64;
                            // Members with close keys are close on the
                            // network too: the round trips differ.
                            let rtt = 1_000 + 100 * u64::from(a.key[0].abs_diff(b.key[0]));
                            let (local, peer) = (a.local(wall), b.id);
                            self.members[i]
                                .session
                                .clock_measured(local, peer, lmr, rtt);
                        }
                    }
                }
                self.wall += Duration::from_millis(5);
            }
        }

        /// Every online member plays the same beat at the same wall time.
        fn assert_one_grid(&self) {
            let online: Vec<&Member> = self.members.iter().filter(|m| m.online).collect();
            let wall = self.wall + Duration::from_millis(1_234);
            let first = online[0].beat(wall);
            for m in &online {
                assert_eq!(
                    m.beat(wall),
                    first,
                    "member {:?} beside {:?}",
                    m.id,
                    online[0].id
                );
            }
        }
    }

    #[test]
    fn members_who_start_together_settle_on_one_axis_and_one_grid() {
        // Three members join at once, each thinking it is first; their
        // clocks are seconds apart. The smallest key keeps stratum 0.
        let mut mesh = Mesh::new(vec![
            Member::new(1, 30, 7_000_000, true),
            Member::new(2, 10, 2_000_000, true),
            Member::new(3, 20, 11_000_000, true),
        ]);
        mesh.meet(0, 1);
        mesh.meet(0, 2);
        mesh.meet(1, 2);
        mesh.run(5_000);
        assert_eq!(mesh.strata(), [Some(1), Some(0), Some(1)]);
        mesh.assert_one_grid();
        // A tempo change proposed by a stratum-1 member lands on one bar
        // at the same instant everywhere.
        let local = mesh.members[2].local(mesh.wall);
        let at = mesh.members[2]
            .session
            .change_tempo(local, 90.0, None)
            .unwrap();
        mesh.run(2_000);
        let when: Vec<u64> = mesh
            .members
            .iter()
            .map(|m| {
                let tl = m.timeline.unwrap();
                assert_eq!(tl.bpm(), 90.0);
                tl.time_at(at).0 - m.skew
            })
            .collect();
        assert_eq!(when, [when[0]; 3]);
        mesh.assert_one_grid();
    }

    #[test]
    fn a_newcomer_aligns_through_whoever_is_left_when_the_axis_has_gone() {
        let mut mesh = Mesh::new(vec![
            Member::new(1, 10, 1_000_000, true),
            Member::new(2, 20, 4_000_000, false),
        ]);
        mesh.meet(0, 1);
        mesh.run(3_000);
        assert_eq!(mesh.members[1].stratum(), Some(1));
        let before = mesh.members[1].beat(mesh.wall + Duration::from_secs(1));
        // The axis leaves; the stratum-1 member keeps its offset.
        mesh.leave(0);
        mesh.run(5_000);
        assert_eq!(mesh.members[1].stratum(), Some(1));
        assert_eq!(
            mesh.members[1].beat(mesh.wall - Duration::from_secs(4)),
            before,
            "the grid did not move"
        );
        // A newcomer with a smaller key than anyone left: it does not
        // claim the axis (someone aligned is there) but aligns through
        // the stratum-1 member.
        mesh.members.push(Member::new(3, 1, 9_000_000, false));
        mesh.meet(1, 2);
        mesh.run(3_000);
        assert_eq!(mesh.members[2].stratum(), Some(2));
        mesh.assert_one_grid();
    }

    #[test]
    fn a_restarted_member_retires_its_earlier_entry_and_aligns_again() {
        let mut mesh = Mesh::new(vec![
            Member::new(1, 10, 1_000_000, true),
            Member::new(2, 20, 4_000_000, false),
        ]);
        mesh.meet(0, 1);
        mesh.run(3_000);
        assert_eq!(mesh.strata(), [Some(0), Some(1)]);
        // The first run of key 10 ends without leaving the document.
        mesh.leave(0);
        mesh.members.push(Member::new(3, 10, 8_000_000, false));
        mesh.meet(1, 2);
        mesh.run(4_000);
        for m in &mesh.members[1..] {
            let doc = m.session.sync().unwrap().doc();
            let present: Vec<&str> = doc
                .state()
                .unwrap()
                .present()
                .map(|p| p.profile.name.as_str())
                .collect();
            assert_eq!(present.len(), 2, "{present:?}");
            assert!(
                present.contains(&"m3") && !present.contains(&"m1"),
                "{present:?}"
            );
        }
        assert_eq!(mesh.members[2].stratum(), Some(2));
        mesh.assert_one_grid();
    }

    #[test]
    fn a_member_alone_without_anyone_aligned_claims_the_axis_after_a_while() {
        // Both joined while the other looked online (neither is first);
        // nobody aligned is around, so after `CLAIM_AFTER` both claim,
        // and the smaller key keeps it.
        let mut mesh = Mesh::new(vec![
            Member::new(1, 40, 1_000_000, false),
            Member::new(2, 30, 6_000_000, false),
        ]);
        mesh.meet(0, 1);
        mesh.run(1_000);
        assert_eq!(mesh.members[0].stratum(), None);
        mesh.run(super::CLAIM_AFTER.as_millis() as u64 + 3_000);
        assert_eq!(mesh.strata(), [Some(1), Some(0)]);
        mesh.assert_one_grid();
    }
}
