//! The relay's per-packet decision cost without sockets: a data packet from
//! a member of a session of N members (decode, source lookup, rate limit,
//! forward list), and a keepalive (decode, tag check, ack).

use std::net::SocketAddr;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use jam_control_plane::relay::{Output, RelayConfig, RelayCore};
use jam_core::Micros;
use jam_transport::relay::{self, Hello, Keepalive, ReportedAddrs, ServerSecret, Ticket};

const WALL: u64 = 1_700_000_000_000_000;

fn core_with(n: u32) -> RelayCore {
    let secret = ServerSecret([5; 32]);
    let mut core = RelayCore::new(
        secret.clone(),
        RelayConfig {
            rate_packets_per_sec: u32::MAX / 2,
            burst_packets: u32::MAX / 2,
            rate_bytes_per_sec: u32::MAX / 2,
            burst_bytes: u32::MAX / 2,
            ..RelayConfig::default()
        },
    );
    let mut buf = [0u8; 256];
    for m in 1..=n {
        let (ticket, key) = Ticket::issue(&secret, 1, m, WALL / 1_000_000 + 3600);
        let hello = Hello {
            ticket,
            client_time_us: WALL,
            nonce: 0,
            reported: ReportedAddrs::default(),
        };
        let len = relay::encode_hello(&hello, &key, &mut buf).unwrap();
        let from = SocketAddr::from(([127, 0, (m >> 8) as u8, m as u8], 10_000));
        assert!(matches!(
            core.handle_datagram(Micros::ZERO, WALL, from, &buf[..len]),
            Output::Reply { .. }
        ));
    }
    core
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("relay_core");
    g.throughput(Throughput::Elements(1));
    for n in [10u32, 100, 1000] {
        let mut core = core_with(n);
        let mut pkt = [0u8; 64];
        let len = relay::encode_data(1, 1, 0, &[0x42; 40], &mut pkt).unwrap();
        let from = SocketAddr::from(([127, 0, 0, 1], 10_000));
        let mut t = 0u64;
        g.bench_with_input(BenchmarkId::new("data_fanout_decision", n), &n, |b, _| {
            b.iter(|| {
                t += 1;
                match core.handle_datagram(Micros(t), WALL, from, &pkt[..len]) {
                    Output::Forward { to, .. } => to.len(),
                    other => panic!("{other:?}"),
                }
            })
        });
    }
    let secret = ServerSecret([5; 32]);
    let mut core = core_with(10);
    let (_, key) = Ticket::issue(&secret, 1, 1, WALL / 1_000_000 + 3600);
    let from = SocketAddr::from(([127, 0, 0, 1], 10_000));
    let mut seq = 0u32;
    let mut buf = [0u8; 128];
    g.bench_function("keepalive", |b| {
        b.iter(|| {
            seq += 1;
            let ka = Keepalive {
                seq,
                client_time_us: 1,
                rtt_us: 1000,
                loss_permille: 0,
                jitter_us: 0,
            };
            let len = relay::encode_keepalive(1, 1, &ka, &key, &mut buf).unwrap();
            matches!(
                core.handle_datagram(Micros(1), WALL, from, &buf[..len]),
                Output::Reply { .. }
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
