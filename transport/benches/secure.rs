//! The cost of end-to-end encryption per packet: sealing and opening one
//! data frame (`jam_transport::secure`) for a typical RTP-MIDI packet
//! (a 12-byte RTP header, a few MIDI commands and a small journal: 40 bytes)
//! and for a full relay payload (1,400 bytes), plus the per-member setup
//! (X25519 and HKDF when a member appears).

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use jam_core::Micros;
use jam_transport::secure::{Channel, Member, SecureSession, public_key};
use std::hint::black_box;

const T0: u64 = 1_700_000_000;

fn pair() -> (SecureSession, SecureSession) {
    let members = [
        Member {
            id: 1,
            public_key: public_key(&[1; 32]),
        },
        Member {
            id: 2,
            public_key: public_key(&[2; 32]),
        },
    ];
    let mut a = SecureSession::new(9, 1, [1; 32], [11; 32], T0);
    let mut b = SecureSession::new(9, 2, [2; 32], [12; 32], T0);
    a.set_members(T0, &members);
    b.set_members(T0, &members);
    while let Some((_, f)) = a.poll_transmit() {
        b.open(Micros::ZERO, 1, &f).unwrap();
    }
    (a, b)
}

fn seal_open(c: &mut Criterion) {
    for size in [40usize, 1400] {
        let body = vec![0x5a; size];
        let mut g = c.benchmark_group(format!("secure/{size}B"));
        g.throughput(Throughput::Elements(1));
        let (mut a, b) = pair();
        g.bench_function("seal", |bench| {
            bench.iter(|| black_box(a.seal(2, Channel::Data, black_box(&body)).unwrap()))
        });
        // Each frame opens once (the replay window), so every iteration
        // gets a fresh frame; sealing it is outside the measurement.
        let (mut a, b) = (pair().0, b);
        let mut rx = b.clone();
        g.bench_function("open", |bench| {
            bench.iter_batched(
                || a.seal(2, Channel::Data, &body).unwrap(),
                |f| {
                    rx.open(Micros::ZERO, 1, &f).unwrap();
                },
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }
    c.bench_function("secure/add_member", |bench| {
        let members = [
            Member {
                id: 1,
                public_key: public_key(&[1; 32]),
            },
            Member {
                id: 2,
                public_key: public_key(&[2; 32]),
            },
        ];
        bench.iter_batched(
            || SecureSession::new(9, 1, [1; 32], [11; 32], T0),
            |mut s| {
                s.set_members(T0, &members);
                s
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, seal_open);
criterion_main!(benches);
