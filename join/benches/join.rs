//! Join time on loopback: from logging in to hearing the first note, for a
//! musician joining a session where another one is already playing (a note
//! every 20 ms). A real `jamd` (in-process, SQLite in a temporary folder)
//! and real UDP and HTTP on 127.0.0.1; everyone polls the member list at
//! the default interval (500 ms). Creating the account is not counted.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use jam_control_plane::config::Config;
use jam_control_plane::server::Server;
use jam_core::ShortMessage;
use jam_join::{Jamd, PeerOptions, spawn_peer};
use jam_transport::participant::ParticipantEvent;
use jam_transport::relay_client::RelayPeerEvent;
use rand::RngExt;

async fn peer(base: &str, user: &str, create: bool) -> jam_join::RunningPeer {
    let mut jamd = Jamd::new(base);
    jamd.login(user, "benchmark password").await.unwrap();
    let mut rng = rand::rng();
    let secret: [u8; 32] = rng.random();
    let device = jamd
        .ensure_device("bench", &jam_join::public_key(&secret))
        .await
        .unwrap();
    let id = match jamd.find_session("bench").await.unwrap() {
        Some(id) => id,
        None if create => jamd.create_session("bench").await.unwrap(),
        None => panic!("no session"),
    };
    let joined = jamd.join(&id, Some(&device), None).await.unwrap();
    let mut opts = PeerOptions::new(user, secret, rng.random(), rng.random());
    opts.bind = "127.0.0.1".parse().unwrap();
    spawn_peer(jamd, joined, opts).await.unwrap()
}

fn join_time(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (server, base, player) = rt.block_on(async {
        let server = Server::start(Config::for_tests(dir.path(), None))
            .await
            .unwrap();
        let base = format!("http://{}", server.http_addr);
        Jamd::new(&base)
            .register("player", "benchmark password")
            .await
            .unwrap();
        let player = peer(&base, "player", true).await;
        let h = player.driver.handle();
        tokio::spawn(async move {
            let mut n = 0u8;
            loop {
                let m = ShortMessage::note_on(0, 40 + n % 40, 100);
                if h.call(move |p, now| p.participant().send(now, now, m))
                    .await
                    .is_err()
                {
                    return;
                }
                n = n.wrapping_add(1);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        (server, base, player)
    });
    let mut i = 0u32;
    let mut g = c.benchmark_group("join");
    g.sample_size(10);
    g.bench_function("login_to_first_note", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    i += 1;
                    let user = format!("joiner{i}");
                    Jamd::new(&base)
                        .register(&user, "benchmark password")
                        .await
                        .unwrap();
                    let start = Instant::now();
                    let mut p = peer(&base, &user, false).await;
                    loop {
                        match tokio::time::timeout(Duration::from_secs(30), p.events.recv()).await {
                            Ok(Some(RelayPeerEvent::Participant(ParticipantEvent::Midi {
                                ..
                            }))) => break,
                            Ok(Some(_)) => {}
                            _ => panic!("no note within 30 s"),
                        }
                    }
                    total += start.elapsed();
                    let session = p.joined.session_id.clone();
                    p.close().await.unwrap();
                    let mut api = Jamd::new(&base);
                    api.login(&user, "benchmark password").await.unwrap();
                    api.leave(&session).await.unwrap();
                }
                total
            })
        })
    });
    g.finish();
    rt.block_on(async {
        player.close().await.unwrap();
        server.shutdown().await.unwrap();
    });
}

criterion_group!(benches, join_time);
criterion_main!(benches);
