//! The adapter on real sockets: two engines, each with the transport's
//! driver and participant on its worker's runtime, on loopback. Notes played
//! into one come out of the other on the participant's channel, with the
//! sender's time mapped onto the shared clock, and the figures show up.

mod common;
use common::wait_for;

use jam_core::{Clock, Micros, MonotonicClock, PeerId, ShortMessage};
use jam_engine::net::{ConnectionState, SessionAddress};
use jam_engine::{
    Block, Engine, EngineConfig, EngineRt, EventBuffer, HostEvent, MAX_EVENTS_PER_BLOCK,
    NetworkConfig, NetworkInfo, OutEvent, Settings, WorkerHandle,
};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

struct Node {
    rt: EngineRt,
    worker: WorkerHandle,
    info: NetworkInfo,
    out: EventBuffer<OutEvent>,
}

fn node(clock: MonotonicClock, name: &str, id: u8) -> Node {
    let (rt, worker) = Engine::new(EngineConfig::new(PeerId([id; 16])));
    let mut config = NetworkConfig::new(clock, name, id as u64);
    config.listen = "127.0.0.1:0".parse().unwrap();
    let (worker, info) = worker.spawn_networked(config).expect("binds on loopback");
    Node {
        rt,
        worker,
        info,
        out: EventBuffer::with_capacity(MAX_EVENTS_PER_BLOCK),
    }
}

impl Node {
    fn block(&mut self, now: Micros, input: &[HostEvent]) -> Vec<OutEvent> {
        let (mut l, mut r) = ([0f32; 256], [0f32; 256]);
        self.rt.process_block(&mut Block {
            now,
            sample_rate: 48_000.0,
            transport: Default::default(),
            settings: Settings::default(),
            input,
            output: &mut self.out,
            left: &mut l,
            right: &mut r,
        });
        self.out.as_slice().to_vec()
    }
}

#[test]
fn two_engines_play_to_each_other_over_loopback() {
    let clock = MonotonicClock::new();
    let mut a = node(clock, "alice", 1);
    let mut b = node(clock, "bob", 2);
    assert_eq!(a.info.data.port(), a.info.control.port() + 1);
    let ctl_a = a.worker.control();
    let ctl_b = b.worker.control();
    ctl_a.join(SessionAddress::Direct(b.info.control), "alice", None);
    wait_for("both sides to see each other", || {
        ctl_a.peers().len() == 1 && ctl_b.peers().len() == 1
    });
    assert_eq!(ctl_a.peers()[0].name, "bob");
    assert_eq!(ctl_b.peers()[0].name, "alice");
    assert!(
        matches!(ctl_a.connection(), ConnectionState::Connected(s) if s == b.info.control.to_string())
    );
    assert!(matches!(ctl_b.connection(), ConnectionState::Connected(s) if s.contains("alice")));

    // Alice plays a note at sample 100 of a block; blocks run in real time.
    let mut got = Vec::new();
    let start = Instant::now();
    for n in 0..400u32 {
        let now = clock.now();
        let input: &[HostEvent] = if n == 5 {
            &[HostEvent {
                offset: 100,
                msg: ShortMessage::note_on(3, 67, 99),
            }]
        } else {
            &[]
        };
        a.block(now, input);
        got.extend(b.block(now, &[]));
        if !got.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_micros(5_333));
    }
    assert!(start.elapsed() < Duration::from_secs(20));
    assert_eq!(got.len(), 1, "{got:?}");
    // Bob hears it on alice's channel (slot 0 → channel 1), key and velocity kept.
    assert_eq!(got[0].msg, ShortMessage::note_on(0, 67, 99));
    assert_eq!(got[0].slot, 0);

    // Figures: the round trip from clock sync shows up within a few seconds.
    wait_for("an RTT figure", || ctl_b.peers()[0].rtt.is_some());
    wait_for("an RTT figure on the inviting side", || {
        ctl_a.peers()[0].rtt.is_some()
    });
    let rtt = ctl_b.peers()[0].rtt.unwrap();
    assert!(rtt < Duration::from_millis(500), "{rtt:?} on loopback");
    assert_eq!(ctl_b.peers()[0].events, 1);

    // Alice leaves: bob sees her go.
    ctl_a.leave();
    wait_for("bob to see alice leave", || ctl_b.peers().is_empty());
    wait_for("bob to be idle", || {
        ctl_b.connection() == ConnectionState::Idle
    });
    a.worker.stop();
    b.worker.stop();
}

#[test]
fn a_port_already_taken_is_an_error_and_a_bad_join_says_why() {
    let clock = MonotonicClock::new();
    let a = node(clock, "alice", 1);
    let (_, worker) = Engine::new(EngineConfig::new(PeerId([3; 16])));
    let mut config = NetworkConfig::new(clock, "carol", 3);
    config.listen = a.info.control;
    let err = worker.spawn_networked(config).unwrap_err();
    assert!(
        err.to_string().contains(&a.info.control.to_string()),
        "{err}"
    );

    // Inviting a port nobody answers on fails after the invitation retries.
    let ctl = a.worker.control();
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = silent.local_addr().unwrap();
    ctl.join(SessionAddress::Direct(addr), "alice", None);
    wait_for("the invitation to fail", || {
        matches!(ctl.connection(), ConnectionState::Failed(_))
    });
    ctl.join(SessionAddress::Lan("nobody here".into()), "alice", None);
    wait_for(
        "a LAN name nobody announced to fail",
        || matches!(ctl.connection(), ConnectionState::Failed(s) if s.contains("nobody here")),
    );
}

/// Plays blocks on `a` and `b` in real time (5.3 ms apart) until `b`
/// outputs something; `a` plays `msg` in its sixth block.
fn play_until_heard(
    clock: MonotonicClock,
    a: &mut Node,
    b: &mut Node,
    msg: ShortMessage,
) -> Vec<OutEvent> {
    let mut got = Vec::new();
    for n in 0..2_000u32 {
        let now = clock.now();
        let input = [HostEvent { offset: 10, msg }];
        a.block(now, if n == 5 { &input } else { &[] });
        got.extend(b.block(now, &[]));
        if !got.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_micros(5_333));
    }
    got
}

#[test]
fn a_running_worker_switches_its_network_side_and_keeps_its_audio_half() {
    let clock = MonotonicClock::new();
    let mut a = node(clock, "alice", 1);
    let mut b = node(clock, "bob", 2);
    let mut c = node(clock, "carol", 3);
    let (ctl_a, ctl_b, ctl_c) = (a.worker.control(), b.worker.control(), c.worker.control());
    ctl_a.join(SessionAddress::Direct(b.info.control), "alice", None);
    wait_for("alice and bob to see each other", || {
        ctl_a.peers().len() == 1 && ctl_b.peers().len() == 1
    });
    let got = play_until_heard(clock, &mut b, &mut a, ShortMessage::note_on(0, 60, 90));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].msg, ShortMessage::note_on(0, 60, 90));

    // A new network side, started on alice's worker runtime, handed over
    // while her audio half keeps running.
    let runtime = ctl_a.runtime().expect("a spawned worker has a runtime");
    let (link, port) = jam_engine::net::net_link();
    let mut config = NetworkConfig::new(clock, "alice", 11);
    config.listen = "127.0.0.1:0".parse().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let switch = ctl_a.clone();
    runtime.spawn(async move {
        let (info, task) = jam_engine::network::start_task(config, port)
            .await
            .expect("binds on loopback");
        switch.switch_network(link, Some(task));
        tx.send(info).unwrap();
    });
    let new_info = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_ne!(new_info.control, a.info.control);
    // The old side said goodbye: bob sees alice leave, alice's table empties.
    wait_for("bob to see alice leave", || ctl_b.peers().is_empty());
    wait_for("alice's peer table to empty", || ctl_a.peers().is_empty());
    assert_eq!(ctl_a.connection(), ConnectionState::Idle);
    // Bob's note was still held: the audio half releases it as for any
    // departure.
    let mut released = Vec::new();
    for _ in 0..400 {
        released.extend(a.block(clock.now(), &[]));
        if !released.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_micros(5_333));
    }
    assert_eq!(released.len(), 1, "{released:?}");
    assert_eq!(released[0].msg, ShortMessage::note_off(0, 60, 0));

    // The new side works both ways with the same audio half.
    ctl_a.join(SessionAddress::Direct(c.info.control), "alice", None);
    wait_for("alice and carol to see each other", || {
        ctl_a.peers().len() == 1 && ctl_c.peers().len() == 1
    });
    assert_eq!(ctl_a.peers()[0].name, "carol");
    let got = play_until_heard(clock, &mut c, &mut a, ShortMessage::note_on(0, 64, 80));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].msg, ShortMessage::note_on(0, 64, 80));
    let got = play_until_heard(clock, &mut a, &mut c, ShortMessage::note_on(0, 67, 70));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].msg, ShortMessage::note_on(0, 67, 70));
    assert!(ctl_b.peers().is_empty(), "bob stays out of it");

    // Stopping the worker ends the new side too: carol sees alice leave.
    a.worker.stop();
    wait_for("carol to see alice leave", || ctl_c.peers().is_empty());
}
