//! The driver on real loopback sockets: binding, a full session between
//! two driven endpoints, and timers under tokio's paused time.

use super::*;
use crate::applemidi::packet::{Command, DatagramKind, classify};
use crate::applemidi::{EndpointConfig, FailReason, LeaveReason, PeerHandle};
use jam_core::MonotonicClock;
use std::time::Duration;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

fn endpoint(name: &'static str, seed: u64) -> impl FnOnce(Micros) -> Endpoint {
    move |now| Endpoint::new(EndpointConfig::new(name, seed), now)
}

/// Waits for the first event `pick` accepts, failing after [`LIMIT`].
async fn wait_for<E: std::fmt::Debug, T>(
    events: &mut mpsc::UnboundedReceiver<E>,
    mut pick: impl FnMut(&E) -> Option<T>,
) -> T {
    timeout(LIMIT, async {
        loop {
            let e = events.recv().await.expect("driver events channel open");
            if let Some(t) = pick(&e) {
                return t;
            }
        }
    })
    .await
    .expect("event within the time limit")
}

fn rtp(ssrc: u32, seq: u16, note: u8) -> Vec<u8> {
    let mut p = vec![0x80, 0x61];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x03, 0x90, note, 0x64]);
    p
}

#[test]
fn port_zero_binds_a_consecutive_pair() {
    let (c, d) = bind_pair(IpAddr::V4(Ipv4Addr::LOCALHOST), 0, 64).unwrap();
    let (c, d) = (c.local_addr().unwrap(), d.local_addr().unwrap());
    assert_eq!(d.port(), c.port() + 1);
    assert_eq!(c.ip(), d.ip());
}

#[test]
fn explicit_ports_fail_clearly_when_taken_or_impossible() {
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (c, _d) = bind_pair(ip, 0, 64).unwrap();
    let taken = c.local_addr().unwrap().port();
    let e = bind_pair(ip, taken, 1).unwrap_err();
    assert!(matches!(e, DriverError::Bind { control_port, .. } if control_port == taken));
    assert!(
        e.to_string()
            .starts_with("cannot bind the port pair 127.0.0.1:")
    );
    // The data port taken by someone else fails too.
    let e = bind_pair(ip, taken - 1, 1).unwrap_err();
    assert!(matches!(e, DriverError::Bind { .. }), "{e}");
    assert!(matches!(
        bind_pair(ip, 65535, 1),
        Err(DriverError::NoDataPort(65535))
    ));
}

#[tokio::test]
async fn two_driven_endpoints_join_exchange_rtp_sync_and_say_bye() {
    let clock = MonotonicClock::new();
    let (a, mut ea) = Driver::spawn(DriverConfig::loopback(), clock, endpoint("alice", 1))
        .await
        .unwrap();
    let (b, mut eb) = Driver::spawn(DriverConfig::loopback(), clock, endpoint("bob", 2))
        .await
        .unwrap();
    assert_eq!(a.data_addr().port(), a.control_addr().port() + 1);
    let b_control = b.control_addr();
    let ha = a
        .call(move |ep, now| ep.invite(now, b_control))
        .await
        .unwrap()
        .unwrap();

    let (peer, name, initiated) = wait_for(&mut ea, |e| match e {
        EndpointEvent::Joined {
            peer,
            name,
            initiated_by_us,
            control,
            data,
            ..
        } => {
            assert_eq!((*control, *data), (b.control_addr(), b.data_addr()));
            Some((*peer, name.clone(), *initiated_by_us))
        }
        _ => None,
    })
    .await;
    assert_eq!((peer, name.as_deref(), initiated), (ha, Some("bob"), true));
    let hb: PeerHandle = wait_for(&mut eb, |e| match e {
        EndpointEvent::Joined {
            peer,
            control,
            data,
            initiated_by_us: false,
            ..
        } => {
            assert_eq!((*control, *data), (a.control_addr(), a.data_addr()));
            Some(*peer)
        }
        _ => None,
    })
    .await;

    // Clock sync runs on both sides; both clocks are the same clock here.
    let clock_a = wait_for(&mut ea, |e| match e {
        EndpointEvent::ClockUpdated { peer, clock, rtt } if *peer == ha => Some((*clock, *rtt)),
        _ => None,
    })
    .await;
    assert!(clock_a.0.offset_ticks.abs() <= 1 + (clock_a.1.min.as_micros() / 200) as i64);
    wait_for(&mut eb, |e| {
        matches!(e, EndpointEvent::ClockUpdated { peer, .. } if *peer == hb).then_some(())
    })
    .await;

    // Opaque RTP both ways.
    let (sa, sb) = (
        a.call(|ep, _| ep.ssrc()).await.unwrap(),
        b.call(|ep, _| ep.ssrc()).await.unwrap(),
    );
    a.call(move |ep, _| ep.send_rtp(ha, rtp(sa, 1, 60)))
        .await
        .unwrap()
        .unwrap();
    b.call(move |ep, _| ep.send_rtp(hb, rtp(sb, 9, 64)))
        .await
        .unwrap()
        .unwrap();
    let got_b = wait_for(&mut eb, |e| match e {
        EndpointEvent::Rtp { peer, packet } if *peer == hb => Some(packet.clone()),
        _ => None,
    })
    .await;
    assert_eq!(got_b, rtp(sa, 1, 60));
    let got_a = wait_for(&mut ea, |e| match e {
        EndpointEvent::Rtp { peer, packet } if *peer == ha => Some(packet.clone()),
        _ => None,
    })
    .await;
    assert_eq!(got_a, rtp(sb, 9, 64));
    b.call(move |ep, _| ep.send_feedback(hb, 1))
        .await
        .unwrap()
        .unwrap();
    let seq = wait_for(&mut ea, |e| match e {
        EndpointEvent::Feedback { peer, seq } if *peer == ha => Some(*seq),
        _ => None,
    })
    .await;
    assert_eq!(seq, 1);

    // BY from the initiator, on shutdown.
    a.call(|ep, now| ep.close(now)).await.unwrap();
    let ep_a = a.shutdown().await.unwrap();
    assert_eq!(ep_a.peers().count(), 0);
    let reason = wait_for(&mut eb, |e| match e {
        EndpointEvent::Left { peer, reason } if *peer == hb => Some(*reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, LeaveReason::ByeReceived);
    let ep_b = b.shutdown().await.unwrap();
    assert_eq!(ep_b.stats().malformed_commands, 0);
    assert_eq!(ep_b.stats().rtp_unknown_source, 0);
}

#[tokio::test(start_paused = true)]
async fn invitation_timers_run_on_paused_time() {
    // A bound socket that never answers: 12 INs a second apart, then failure.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    silent.set_nonblocking(true).unwrap();
    let target = silent.local_addr().unwrap();
    let clock = TokioClock::new();
    let started = tokio::time::Instant::now();
    let (a, mut ea) = Driver::spawn(DriverConfig::loopback(), clock, endpoint("alice", 3))
        .await
        .unwrap();
    let ha = a
        .call(move |ep, now| ep.invite(now, target))
        .await
        .unwrap()
        .unwrap();
    let reason = wait_for(&mut ea, |e| match e {
        EndpointEvent::InvitationFailed { peer, reason, .. } if *peer == ha => Some(*reason),
        _ => None,
    })
    .await;
    assert_eq!(
        reason,
        FailReason::NoAnswer {
            port: Port::Control
        }
    );
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(12) && elapsed < Duration::from_secs(13),
        "{elapsed:?}"
    );
    // The silent socket holds exactly the twelve invitations.
    let mut buf = [0u8; 1500];
    let mut ins = 0;
    while let Ok((n, _)) = silent.recv_from(&mut buf) {
        assert_eq!(classify(&buf[..n]), DatagramKind::Command);
        assert!(matches!(
            Command::decode(&buf[..n]),
            Ok(Command::Invitation(_))
        ));
        ins += 1;
    }
    assert_eq!(ins, 12);
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn commands_fail_cleanly_after_shutdown() {
    let (a, _ea) = Driver::spawn(
        DriverConfig::loopback(),
        MonotonicClock::new(),
        endpoint("a", 4),
    )
    .await
    .unwrap();
    let h = a.handle();
    a.shutdown().await.unwrap();
    assert!(matches!(
        h.call(|ep, _| ep.ssrc()).await,
        Err(DriverError::Closed)
    ));
    assert!(matches!(h.submit(|_, _| {}), Err(DriverError::Closed)));
}
