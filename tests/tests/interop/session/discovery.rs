//! mDNS discovery between two participants, for real, inside a private
//! network namespace.
//!
//! mDNS multicasts to 224.0.0.251 on every multicast-capable interface. On a
//! shared machine that would leave the loopback range, so the test re-runs
//! itself under `unshare -n` (a fresh network namespace whose only interface
//! is `lo`), turns `lo` up with multicast enabled, and restricts `mdns-sd`
//! to the loopback interface as well. That needs root (or CAP_SYS_ADMIN);
//! without it the test reports itself skipped (and fails under `CI=true`).

use jam_transport::discovery::{Discovery, DiscoveryConfig, DiscoveryEvent, Interfaces};
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::Duration;

const INSIDE: &str = "JAM_TEST_IN_PRIVATE_NETNS";
const TEST: &str = "session::discovery::two_participants_find_and_lose_each_other";

fn config(name: &str, port: u16) -> DiscoveryConfig {
    let mut c = DiscoveryConfig::new(name, port);
    c.interfaces = Interfaces::LoopbackV4;
    c.addresses = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    c
}

fn find(disco: &mut Discovery, name: &str) -> Option<DiscoveryEvent> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if let Some(e) = disco.next_event_timeout(Duration::from_millis(200)) {
            let hit = match &e {
                DiscoveryEvent::PeerFound(p) => p.name == name,
                DiscoveryEvent::PeerRemoved { name: n, .. } => n == name,
                _ => false,
            };
            if hit {
                return Some(e);
            }
        }
    }
    None
}

#[test]
fn two_participants_find_and_lose_each_other() {
    if std::env::var_os(INSIDE).is_none() {
        run_in_private_namespace();
        return;
    }
    // Inside the namespace: `lo` is the only interface.
    let mut a = Discovery::start(config("jam alice", 5004)).expect("start discovery a");
    let mut b = Discovery::start(config("jam.bob \u{2019}s", 6004)).expect("start discovery b");
    let Some(DiscoveryEvent::PeerFound(bob)) = find(&mut a, "jam.bob \u{2019}s") else {
        panic!("a never found b");
    };
    assert_eq!(bob.port, 6004);
    assert_eq!(bob.addresses, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    assert!(bob.fullname.ends_with("._apple-midi._udp.local."));
    let Some(DiscoveryEvent::PeerFound(alice)) = find(&mut b, "jam alice") else {
        panic!("b never found a");
    };
    assert_eq!(alice.port, 5004);
    // Neither reports itself.
    while let Some(e) = a.try_next_event() {
        assert!(
            !matches!(&e, DiscoveryEvent::PeerFound(p) if p.name == "jam alice"),
            "{e:?}"
        );
    }
    // b leaves: a hears its goodbye.
    b.shutdown();
    assert!(
        matches!(
            find(&mut a, "jam.bob \u{2019}s"),
            Some(DiscoveryEvent::PeerRemoved { .. })
        ),
        "a never saw b leave"
    );
}

fn run_in_private_namespace() {
    let Some(unshare) = jam_tests::require_tool("unshare", "apt-get install util-linux") else {
        return;
    };
    if jam_tests::require_tool("ip", "apt-get install iproute2").is_none() {
        return;
    }
    let probe = Command::new(&unshare).args(["-n", "true"]).status();
    if !probe.is_ok_and(|s| s.success()) {
        let _: Option<()> = jam_tests::missing(
            "a private network namespace (`unshare -n` needs root or CAP_SYS_ADMIN) for the mDNS test",
            "run the tests as root, e.g. in CI's container",
        );
        return;
    }
    let exe = std::env::current_exe().expect("test executable path");
    let status = Command::new(unshare)
        .args([
            "-n",
            "--",
            "sh",
            "-c",
            "ip link set lo up && ip link set lo multicast on && exec \"$0\" \"$@\"",
        ])
        .arg(exe)
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .expect("run the test inside a network namespace");
    let stdout = String::from_utf8_lossy(&status.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&status.stderr));
    assert!(
        status.status.success(),
        "discovery test failed inside the namespace ({})",
        status.status
    );
    // Guard against a filter that matched nothing (which would also succeed).
    assert!(
        stdout.contains("1 passed"),
        "the inner run did not run the test"
    );
}
