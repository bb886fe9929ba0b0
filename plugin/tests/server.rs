//! The plugin's join through `jamd` ([`jam_plugin::server`]) in this
//! process, against a real `jamd` process: an engine worker with its
//! network side as the plugin starts it, the persisted fields as a project
//! holds them, and the state the editor shows. A wrong password, an unknown
//! session, a missing key file and a server that is down each end in a
//! failed state that says why; a join that works reaches "joined", and
//! leaving removes the membership from `jamd`.

use jam_core::PeerId;
use jam_engine::{Engine, EngineConfig, EngineRt, NetworkConfig, WorkerHandle};
use jam_join::Jamd;
use jam_plugin::params::{JamParams, write_field};
use jam_plugin::server::{self, ServerState};
use jam_plugin::{EditorLink, process_clock};
use jam_tests::jamd::JamdProcess;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Plugin {
    _rt: EngineRt,
    worker: WorkerHandle,
    params: JamParams,
    link: Arc<EditorLink>,
}

/// An engine with the address participant on loopback, as `activate`
/// starts it, and fields naming `server`, session `session`, user `ana`.
fn plugin(server: &str, session: &str, key: &Path) -> Plugin {
    let (rt, worker) = Engine::new(EngineConfig::new(PeerId([7; 16])));
    let mut config = NetworkConfig::new(process_clock(), "ana", 7);
    config.listen = "127.0.0.1:0".parse().unwrap();
    let (worker, _) = worker.spawn_networked(config).unwrap();
    let params = JamParams::default();
    write_field(&params.server, server);
    write_field(&params.server_session, session);
    write_field(&params.server_user, "ana");
    write_field(&params.display_name, "ana");
    write_field(&params.key_file, key.to_str().unwrap());
    Plugin {
        _rt: rt,
        worker,
        params,
        link: Arc::new(EditorLink::default()),
    }
}

impl Plugin {
    fn join(&self, password: &str) -> ServerState {
        server::join(
            &self.params,
            &self.worker.control(),
            &self.link,
            password.into(),
        );
        self.settled()
    }

    /// Waits (up to 30 s) for the join to end logging in.
    fn settled(&self) -> ServerState {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.link.server.state();
            if !matches!(s, ServerState::LoggingIn { .. }) {
                return s;
            }
            assert!(Instant::now() < end, "still logging in");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn failed(s: &ServerState) -> &str {
    match s {
        ServerState::Failed(why) => why,
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Writes an unencrypted key file (a raw X25519 secret, as `jam keys new`
/// writes it).
fn new_key(path: &Path) {
    let jam = jam_tests::workspace_bin("jam-cli", "jam");
    let o = std::process::Command::new(jam)
        .args(["keys", "new", "-o"])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn joining_through_jamd_fails_with_a_reason_or_joins_and_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let mut jamd = JamdProcess::start(&dir.path().join("jamd"));
    let base = jamd.base();
    let key = dir.path().join("ana.key");
    new_key(&key);
    // Bob owns the session "friday"; ana has an account.
    let (bob, session_id) = block_on(async {
        let mut bob = Jamd::new(&base);
        bob.register("bob", "bob's password").await.unwrap();
        bob.login("bob", "bob's password").await.unwrap();
        let id = bob.create_session("friday").await.unwrap();
        Jamd::new(&base)
            .register("ana", "ana's password")
            .await
            .unwrap();
        (bob, id)
    });

    let p = plugin(&base, "friday", &key);
    let why = failed(&p.join("not ana's password")).to_string();
    assert!(why.contains("login") && why.contains("401"), "{why}");

    let p = plugin(&base, "nowhere", &key);
    let why = failed(&p.join("ana's password")).to_string();
    assert!(why.contains("no session called \"nowhere\""), "{why}");

    let p = plugin(&base, "friday", &dir.path().join("missing.key"));
    let why = failed(&p.join("ana's password")).to_string();
    assert!(why.contains("missing.key"), "{why}");

    // A join that works: member, relay, and the membership in jamd.
    let p = plugin(&base, "friday", &key);
    let state = p.join("ana's password");
    let ServerState::Joined { member, relay, .. } = &state else {
        panic!("not joined: {state:?}");
    };
    assert_eq!(relay, &jamd.relay().to_string());
    let members = block_on(bob.members(&session_id)).unwrap();
    assert!(members.iter().any(|m| m.id == *member), "{members:?}");
    // Leaving goes back to an address participant and leaves in jamd.
    server::leave(&p.params, &p.worker.control(), &p.link);
    assert_eq!(p.link.server.state(), ServerState::Off);
    let end = Instant::now() + Duration::from_secs(20);
    while block_on(bob.members(&session_id))
        .unwrap()
        .iter()
        .any(|m| m.id == *member)
    {
        assert!(Instant::now() < end, "ana is still a member");
        std::thread::sleep(Duration::from_millis(50));
    }
    let listen = p.link.listen().expect("an address participant again");
    assert!(listen.port() != 0);
    p.worker.stop();

    // jamd down: the request fails, saying which server.
    jamd.kill();
    let p = plugin(&base, "friday", &key);
    let why = failed(&p.join("ana's password")).to_string();
    assert!(why.contains("cannot reach") && why.contains(&base), "{why}");
}

#[test]
fn a_saved_state_without_a_password_asks_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("ana.key");
    let p = plugin("http://127.0.0.1:9", "friday", &key);
    // The suite runs without JAM_PASSWORD in its environment.
    if std::env::var_os("JAM_PASSWORD").is_some() {
        panic!("unset JAM_PASSWORD to run this test");
    }
    assert!(server::join_saved(&p.params, &p.worker.control(), &p.link));
    let why = failed(&p.link.server.state()).to_string();
    assert!(why.contains("no password for ana"), "{why}");
    // Joined once per saved target: a re-activation does not ask again.
    assert!(server::join_saved(&p.params, &p.worker.control(), &p.link));
}
