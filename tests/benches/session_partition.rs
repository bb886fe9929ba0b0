//! A 50-peer session partitioned in two for 60 s of edits: how many sync
//! messages, bytes and how much time it takes after the partition heals
//! until every replica holds the identical document.
//!
//! Counts, not timings (everything runs on netem's virtual clock), so this
//! is a plain benchmark binary: `cargo bench -p jam-tests --bench
//! session_partition`. Environment: `JAM_PEERS` (default 50),
//! `JAM_PARTITION_SECS` (60), `JAM_SEED` (1).

use jam_core::{Meter, Micros, SessionTime, Tempo};
use jam_session_crdt::{
    Confidence, Profile, Role, RoleAssignment, RoleSource, SessionConfig, SessionDoc,
    SessionSettings,
};
use jam_tests::bench::Mode;
use jam_tests::session_mesh::{MeshNode, peer_of};
use jam_transport::netem::{LinkConfig, Network, Sim};
use std::time::{Duration, Instant};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn profile(a: u8) -> Profile {
    Profile {
        name: format!("p{a}"),
        public_key: [a; 32],
        instrument: "keys".into(),
    }
}

#[derive(Default, Clone, Copy)]
struct Totals {
    sync_messages: u64,
    sync_bytes: u64,
    wire_bytes: u64,
    retransmits: u64,
}

fn totals(sim: &Sim<u8, MeshNode>) -> Totals {
    let mut t = Totals::default();
    for n in sim.nodes.values() {
        t.sync_messages += n.sync.stats().sync_messages;
        t.sync_bytes += n.sync.stats().sync_bytes;
        for (_, e) in n.sync.ends() {
            t.wire_bytes += e.stats().bytes_sent;
            t.retransmits += e.stats().retransmits;
        }
    }
    t
}

fn converged(sim: &Sim<u8, MeshNode>) -> bool {
    let mut heads = None;
    sim.nodes.values().all(|n| {
        let h = n.doc().heads();
        match &heads {
            None => {
                heads = Some(h);
                true
            }
            Some(x) => *x == h,
        }
    })
}

fn main() {
    // Test runners list targets first: this binary holds no tests.
    // `cargo bench` measures; anything else (`cargo test --all-targets`)
    // gets a quick smoke run of the same scenario.
    let full = match jam_tests::bench::mode() {
        Mode::List => return,
        Mode::Test => false,
        Mode::Measure => true,
    };
    let peers = env("JAM_PEERS", if full { 50 } else { 4 }) as u8;
    let secs = env("JAM_PARTITION_SECS", if full { 60 } else { 2 });
    let seed = env("JAM_SEED", 1);
    let wall = Instant::now();
    let link = LinkConfig::default()
        .delay(Duration::from_millis(30))
        .jitter(Duration::from_millis(5))
        .loss(0.01);
    let mut sim = Sim::new(Network::new(seed, link));
    let addrs: Vec<u8> = (0..peers).collect();
    let config = SessionConfig {
        id: [3; 16],
        name: "bench".into(),
        created_unix_ms: 0,
        origin: SessionTime(0),
        tempo: Tempo::from_bpm(120.0).unwrap(),
        meter: Meter::FOUR_FOUR,
        settings: SessionSettings::default(),
    };
    let founder = SessionDoc::create(&config, peer_of(0), &profile(0), 1).unwrap();
    sim.add_node(0, MeshNode::new(0, founder, &addrs, 1));
    for &a in &addrs[1..] {
        let doc = SessionDoc::new_replica(peer_of(a), u64::from(a) + 1);
        sim.add_node(a, MeshNode::new(a, doc, &addrs, u32::from(a) + 1));
    }
    // Everyone gets the session and joins.
    let mut waited = 0;
    while sim.nodes.values().any(|n| n.doc().state().is_none()) {
        sim.run_for(Duration::from_millis(100));
        waited += 1;
        assert!(waited < 6_000, "every replica receives the session");
    }
    println!(
        "setup: all {peers} replicas have the session after {:.1} s (virtual)",
        sim.now().as_secs_f64()
    );
    for &a in &addrs[1..] {
        let now = sim.now();
        let n = sim.nodes.get_mut(&a).unwrap();
        n.doc_mut()
            .join(&profile(a), SessionTime(now.0 as i64))
            .unwrap();
        n.pump(now);
    }
    sim.run_until_idle(50_000_000).expect("setup goes idle");
    assert!(converged(&sim), "setup converged");

    // Partition in two halves; one edit per second in each half.
    let (left, right) = addrs.split_at(addrs.len() / 2);
    sim.net.partition(&[left, right]);
    let mut edits = 0;
    for s in 0..secs {
        for (i, half) in [left, right].into_iter().enumerate() {
            let a = half[(s as usize * 7 + i * 3) % half.len()];
            let now = sim.now();
            let at = SessionTime(now.0 as i64);
            let n = sim.nodes.get_mut(&a).unwrap();
            let target = peer_of(half[(s as usize * 5 + 1) % half.len()]);
            let _ = match s % 3 {
                0 => n.doc_mut().set_role(
                    target,
                    Role::ALL[(s % 3) as usize],
                    Some(RoleAssignment {
                        confidence: Confidence::from_per_mille((s * 13 % 1000) as u16),
                        source: RoleSource::Auto,
                    }),
                ),
                1 => n.doc_mut().post_chat(at, "partitioned"),
                _ => {
                    let tl = n.doc().timeline().unwrap().clone();
                    let bar = tl.next_bar(tl.beat_at(at));
                    n.doc_mut()
                        .change_tempo(
                            bar,
                            Tempo::from_bpm(100.0 + s as f64).unwrap(),
                            Meter::FOUR_FOUR,
                            at,
                        )
                        .map(|_| ())
                }
            };
            edits += 1;
            n.pump(now);
        }
        sim.run_for(Duration::from_secs(1));
    }
    assert!(!converged(&sim), "the halves diverged");
    let before = totals(&sim);
    let healed_at = sim.now();
    sim.net.heal();
    let mut steps = 0u64;
    while !converged(&sim) {
        sim.run_for(Duration::from_millis(10));
        steps += 1;
        assert!(steps < 100_000, "no convergence within 1000 s");
    }
    let converged_at = sim.now();
    let after = totals(&sim);
    // Let the channels finish their acknowledgements, then count again.
    sim.run_until_idle(50_000_000).expect("goes idle");
    let idle = totals(&sim);
    let pairs = u64::from(peers) * u64::from(peers - 1);
    println!(
        "session partition heal: {peers} peers, {secs} s partition, {edits} edits, seed {seed}"
    );
    println!(
        "  time to identical documents after heal: {:.3} s (virtual)",
        (converged_at.0 - healed_at.0) as f64 / 1e6
    );
    println!(
        "  sync messages until identical: {} ({:.2} per directed peer pair)",
        after.sync_messages - before.sync_messages,
        (after.sync_messages - before.sync_messages) as f64 / pairs as f64
    );
    println!(
        "  sync bytes until identical: {} ({:.0} per directed pair)",
        after.sync_bytes - before.sync_bytes,
        (after.sync_bytes - before.sync_bytes) as f64 / pairs as f64
    );
    println!(
        "  wire bytes (frames, acks, retransmits) until idle: {}  retransmits: {}",
        idle.wire_bytes - before.wire_bytes,
        idle.retransmits - before.retransmits
    );
    println!(
        "  wall time of the whole run: {:.1} s",
        wall.elapsed().as_secs_f64()
    );
    let _ = Micros::ZERO;
}
