//! Relay load test: how many players can one relay process on one core
//! carry with a p99 relay-added delay of at most 2 ms and no drops?
//!
//! The bench starts the real `jamd` binary (built with the bench) pinned to core 0 with
//! `taskset`, pins itself to core 1, mints tickets with the deployment's
//! relay secret (read from the node's SQLite file, as any node of the
//! deployment could), and opens one UDP socket per player. Every player
//! sends 10 note events per second, evenly staggered; each payload carries
//! the sender, a sequence number and the send time. A few players are
//! listeners: their sockets are read and every packet's delay is recorded
//! (receive time minus send time, same clock); the other players' sockets
//! are never read, which costs the relay nothing (the kernel discards at
//! the receiving socket). The same generator measures the loopback path
//! without the relay (sender socket straight to a listener) at the same
//! per-listener packet rate; the difference of the two distributions is the
//! relay-added delay.
//!
//! Modes:
//! - `mesh`: every player's events go to every other player (fan-out N-1);
//! - `conductor`: players send to one conductor member, which sends
//!   10 events/s to everyone (the Global Net Orchestra's star). Two
//!   directions are measured, each with its own row: the players' events
//!   at the conductor (the table row), and the conductor's fan-out copies
//!   at [`FAN_LISTENERS`] players spread evenly over the session's member
//!   order, which is the order of the relay's sends (the `fan-out` line
//!   under it; its base is the same generator at 10 events/s per listener).
//!
//! Networks (`--net`):
//! - `loopback` (default): jamd and the generator share 127.0.0.1. The
//!   kernel runs the receiving side of every copy the relay sends (IP input,
//!   socket lookup, enqueue or drop, wakeups) in the sender's context, so
//!   core 0 pays its receivers' network stacks as well as its own sends;
//! - `veth`: jamd runs in its own network namespace and the generator in
//!   another, joined by a veth pair. Receive processing (RPS) of the
//!   generator's end is steered to core 1 and of jamd's end to core 0, so the
//!   relay's core pays its own receives and sends, as behind a NIC, and the
//!   receivers' stacks run on the generator's core. The namespaces are
//!   `jamrl-<pid>-r` and `jamrl-<pid>-g`; they are deleted on exit and on
//!   panic, and a later run deletes any left by a killed one (needs root).
//!
//! ```text
//! setsid cargo bench -p jam-control-plane --bench relay_load -- --mode mesh --players 50,100,150 --secs 10
//! setsid cargo bench -p jam-control-plane --bench relay_load -- --net veth --mode conductor --players 1000 --secs 10
//! ```
//!
//! Besides the table row, every run prints where the kernel did the
//! network work during the measured window: NET_RX softirqs per CPU
//! (`/proc/softirqs`), softirq and busy time per CPU (`/proc/stat`),
//! packets dropped at a CPU's input backlog (`/proc/net/softnet_stat`), and
//! the CPU the relay thread last ran on. These are machine-wide counters.
//!
//! On a machine shared with other work, the relay thread and the generator
//! are given the highest normal priority (nice -20 and a raised scheduler
//! autogroup, as root) so that the figures measure the relay rather than the
//! neighbours; `setsid` keeps that boost to the bench's own session.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jam_control_plane::db::Db;
use jam_transport::relay::{
    self, Hello, HelloKey, MAX_PACKET_LEN, Packet, ReportedAddrs, ServerSecret, Ticket,
};

const EVENTS_PER_SEC: u64 = 10;
const LISTENERS: usize = 4;
/// Players that record the conductor's fan-out copies (conductor mode).
const FAN_LISTENERS: usize = 16;
const PAYLOAD_LEN: usize = 48;

fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// Set in the generator's process when it runs inside the veth setup's
/// generator namespace: `relay_ns gen_ns relay_dev gen_dev`.
const NETNS_ENV: &str = "JAM_RELAY_LOAD_NETNS";
const NETNS_PREFIX: &str = "jamrl-";
const VETH_RELAY_IP: &str = "10.199.0.1";
const VETH_GEN_IP: &str = "10.199.0.2";

/// Where jamd and the generator talk.
struct Net {
    /// `None` on loopback.
    veth: Option<Veth>,
}

/// Two network namespaces joined by a veth pair (see the module doc).
struct Veth {
    relay_ns: String,
    gen_ns: String,
    relay_dev: String,
    gen_dev: String,
}

impl Net {
    fn relay_ip(&self) -> &'static str {
        if self.veth.is_some() {
            VETH_RELAY_IP
        } else {
            "127.0.0.1"
        }
    }

    fn player_ip(&self) -> &'static str {
        if self.veth.is_some() {
            VETH_GEN_IP
        } else {
            "127.0.0.1"
        }
    }

    /// The command that starts jamd pinned to core 0, in its namespace.
    fn jamd_command(&self) -> Command {
        let mut cmd = match &self.veth {
            Some(v) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &v.relay_ns, "setsid"]);
                c
            }
            None => Command::new("setsid"),
        };
        cmd.args(["taskset", "-c", "0"]);
        cmd
    }

    fn describe(&self) -> String {
        match &self.veth {
            None => "net=loopback (127.0.0.1; receive side of every copy runs in the sender's softirq, core 0)".into(),
            Some(v) => format!(
                "net=veth relay {VETH_RELAY_IP} on {} in netns {} (rps_cpus {}), generator {VETH_GEN_IP} on {} in netns {} (rps_cpus {})",
                v.relay_dev,
                v.relay_ns,
                read_rps(&v.relay_ns, &v.relay_dev),
                v.gen_dev,
                v.gen_ns,
                read_rps(&v.gen_ns, &v.gen_dev),
            ),
        }
    }
}

fn read_rps(ns: &str, dev: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat"])
        .arg(format!("/sys/class/net/{dev}/queues/rx-0/rps_cpus"))
        .output()
        .expect("ip netns exec cat");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("the ip tool");
    assert!(st.success(), "ip {} failed", args.join(" "));
}

impl Veth {
    /// Creates the namespaces and the pair, with RPS of each end on its
    /// side's core. Deletes namespaces left by runs that no longer live.
    fn create() -> Veth {
        delete_stale_namespaces();
        let pid = std::process::id();
        let v = Veth {
            relay_ns: format!("{NETNS_PREFIX}{pid}-r"),
            gen_ns: format!("{NETNS_PREFIX}{pid}-g"),
            relay_dev: format!("jrl{pid}r"),
            gen_dev: format!("jrl{pid}g"),
        };
        ip(&["netns", "add", &v.relay_ns]);
        // From here on, Drop deletes what exists.
        ip(&["netns", "add", &v.gen_ns]);
        let link = format!(
            "link add name {} netns {} type veth peer name {} netns {}",
            v.relay_dev, v.relay_ns, v.gen_dev, v.gen_ns
        );
        ip(&link.split(' ').collect::<Vec<_>>());
        for (ns, dev, addr, cpus) in [
            (&v.relay_ns, &v.relay_dev, VETH_RELAY_IP, "1"),
            (&v.gen_ns, &v.gen_dev, VETH_GEN_IP, "2"),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            // Receive processing of this end on this side's core (RPS):
            // the packet is queued to that CPU's backlog and its NET_RX
            // softirq does IP input and socket delivery there.
            let st = Command::new("ip")
                .args(["netns", "exec", ns, "sh", "-c"])
                .arg(format!(
                    "for q in /sys/class/net/{dev}/queues/rx-*; do echo {cpus} > $q/rps_cpus; done"
                ))
                .status()
                .expect("ip netns exec sh");
            assert!(st.success(), "setting rps_cpus of {dev}");
        }
        v
    }

    fn to_env(&self) -> String {
        format!(
            "{} {} {} {}",
            self.relay_ns, self.gen_ns, self.relay_dev, self.gen_dev
        )
    }

    fn from_env() -> Option<Veth> {
        let v = std::env::var(NETNS_ENV).ok()?;
        let f: Vec<&str> = v.split(' ').collect();
        let [relay_ns, gen_ns, relay_dev, gen_dev] = f[..] else {
            panic!("{NETNS_ENV}={v:?}");
        };
        Some(Veth {
            relay_ns: relay_ns.into(),
            gen_ns: gen_ns.into(),
            relay_dev: relay_dev.into(),
            gen_dev: gen_dev.into(),
        })
    }
}

/// Owns the namespaces in the process that created them.
struct VethGuard(Veth);

impl Drop for VethGuard {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the pair, hence the pair.
        for ns in [&self.0.relay_ns, &self.0.gen_ns] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Namespaces of earlier runs whose process is gone (killed by a signal,
/// so no destructor ran).
fn delete_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name
            .strip_prefix(NETNS_PREFIX)
            .and_then(|r| r.split('-').next())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Machine-wide network-work counters per CPU, to show where the kernel
/// ran the packets' processing.
#[derive(Clone)]
struct CpuNet {
    /// NET_RX softirqs raised per CPU.
    net_rx: Vec<u64>,
    /// (busy, softirq, total) jiffies per CPU.
    times: Vec<(u64, u64, u64)>,
    /// Packets dropped at each CPU's input backlog.
    backlog_drops: Vec<u64>,
}

impl CpuNet {
    fn read() -> CpuNet {
        let softirqs = std::fs::read_to_string("/proc/softirqs").unwrap();
        let net_rx = softirqs
            .lines()
            .find_map(|l| l.trim_start().strip_prefix("NET_RX:"))
            .map(|r| r.split_whitespace().map(|v| v.parse().unwrap()).collect())
            .unwrap_or_default();
        let stat = std::fs::read_to_string("/proc/stat").unwrap();
        let times = stat
            .lines()
            .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
            .map(|l| {
                let v: Vec<u64> = l
                    .split_whitespace()
                    .skip(1)
                    .map(|x| x.parse().unwrap())
                    .collect();
                // user nice system idle iowait irq softirq steal
                let busy = v[0] + v[1] + v[2] + v[5] + v[6];
                let total: u64 = v.iter().take(8).sum();
                (busy, v[6], total)
            })
            .collect();
        let softnet = std::fs::read_to_string("/proc/net/softnet_stat").unwrap();
        let backlog_drops = softnet
            .lines()
            .map(|l| u64::from_str_radix(l.split_whitespace().nth(1).unwrap(), 16).unwrap())
            .collect();
        CpuNet {
            net_rx,
            times,
            backlog_drops,
        }
    }

    /// One line: what happened per CPU since `before`.
    fn since(&self, before: &CpuNet) -> String {
        let per_cpu = |f: &dyn Fn(usize) -> String| {
            (0..self.times.len()).map(f).collect::<Vec<_>>().join("/")
        };
        let pct = |i: usize, softirq: bool| {
            let (b1, s1, t1) = self.times[i];
            let (b0, s0, t0) = before.times[i];
            let part = if softirq { s1 - s0 } else { b1 - b0 };
            format!("{:.0}", part as f64 * 100.0 / (t1 - t0).max(1) as f64)
        };
        format!(
            "NET_RX softirqs cpu0/cpu1 {}, softirq time % {}, busy % {}, backlog drops {}",
            per_cpu(
                &|i| (self.net_rx.get(i).unwrap_or(&0) - before.net_rx.get(i).unwrap_or(&0))
                    .to_string()
            ),
            per_cpu(&|i| pct(i, true)),
            per_cpu(&|i| pct(i, false)),
            per_cpu(&|i| (self.backlog_drops.get(i).unwrap_or(&0)
                - before.backlog_drops.get(i).unwrap_or(&0))
            .to_string()),
        )
    }
}

/// The CPU a thread last ran on (`/proc/<pid>/task/<tid>/stat`, field 39).
fn last_cpu(pid: u32, tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(36)
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

struct Args {
    mode: String,
    net: String,
    players: Vec<usize>,
    secs: u64,
}

fn args() -> Args {
    let mut a = Args {
        mode: "mesh".into(),
        net: "loopback".into(),
        players: vec![25, 50, 100],
        secs: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--mode" => a.mode = it.next().expect("--mode VALUE"),
            "--net" => a.net = it.next().expect("--net loopback|veth"),
            "--players" => {
                a.players = it
                    .next()
                    .expect("--players N,N,...")
                    .split(',')
                    .map(|s| s.parse().expect("a number"))
                    .collect()
            }
            "--secs" => a.secs = it.next().expect("--secs N").parse().expect("a number"),
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

struct Jamd {
    child: Child,
    relay: SocketAddr,
    http: SocketAddr,
    _dir: tempfile::TempDir,
    secret: ServerSecret,
    db: Db,
    relay_tid: u32,
}

impl Drop for Jamd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_jamd(net: &Net) -> Jamd {
    let dir = tempfile::tempdir().unwrap();
    // Its own session, hence its own scheduler autogroup, so that the
    // group's priority can be raised below without touching anything else.
    let listen = format!("{}:0", net.relay_ip());
    let mut cmd = net.jamd_command();
    cmd.arg(env!("CARGO_BIN_EXE_jamd"))
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--http-listen",
            &listen,
            "--relay-listen",
            &listen,
            "--relay-rate-pps",
            "1000",
            "--relay-burst-packets",
            "1000",
            "--keepalive-timeout-secs",
            "600",
        ])
        .env("JAMD_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("taskset and jamd start");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let (http, relay) = loop {
        let line = lines.next().expect("jamd output").unwrap();
        if let Some(rest) = line.strip_prefix("jamd: dashboard on http://") {
            let (h, r) = rest.split_once("/ · relay on udp ").unwrap();
            break (h.parse().unwrap(), r.trim().parse().unwrap());
        }
    };
    std::thread::spawn(move || for _ in lines {});
    // The relay thread gets the highest normal priority (we run as root):
    // on a shared machine it should wait for core 0 as little as possible,
    // also behind jamd's own HTTP and dashboard threads.
    let pid = child.id();
    boost_autogroup(pid);
    // jamd's other threads (HTTP, dashboard, database) at normal priority,
    // so that the relay thread preempts them on the shared core.
    let mut relay_tid = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| e.ok())
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let tid = task.file_name().to_string_lossy().to_string();
        let nice = if comm.trim() == "jamd-relay" {
            relay_tid = tid.parse().unwrap();
            "-20"
        } else {
            "0"
        };
        let _ = Command::new("renice")
            .args(["-n", nice, "-p", &tid])
            .stdout(Stdio::null())
            .status();
    }
    assert_ne!(relay_tid, 0, "no jamd-relay thread");
    let db = Db::connect(&format!(
        "sqlite://{}",
        dir.path().join("jamd.db").display()
    ))
    .await
    .unwrap();
    let secret = ServerSecret(db.server_secret().await.unwrap());
    Jamd {
        relay_tid,
        db,
        child,
        relay,
        http,
        _dir: dir,
        secret,
    }
}

/// With autogroup scheduling (Debian's default), `nice` only orders
/// threads within one session; between sessions (other users' builds on a
/// shared machine) the autogroup's own nice value counts. Raise it for the
/// relay's and the generator's groups (needs root; ignored otherwise).
fn boost_autogroup(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/autogroup"), "-20");
}

/// (CPU µs, RSS KiB) of a process, or of one thread with `task`.
fn proc_stat_of(path: &str, pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("{path}/stat")).unwrap();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let cpu_ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap())
        .unwrap();
    (cpu_ticks * 10_000, rss_kb)
}

fn proc_stat(pid: u32) -> (u64, u64) {
    proc_stat_of(&format!("/proc/{pid}"), pid)
}

fn thread_cpu(pid: u32, tid: u32) -> u64 {
    proc_stat_of(&format!("/proc/{pid}/task/{tid}"), pid).0
}

async fn metrics(http: SocketAddr) -> HashMap<String, f64> {
    let text = reqwest::get(format!("http://{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

struct Player {
    sock: UdpSocket,
    member: u32,
}

/// Creates the session and its members in the node's database (as HTTP
/// joins would; the relay's membership sweep checks them), then says hello
/// from one socket per player.
async fn connect_players(j: &Jamd, net: &Net, session: u64, n: usize) -> Vec<Player> {
    let sid = format!("{session:016x}");
    let owner = j.db.create_user("bench-owner", "-", false).await.unwrap();
    j.db.create_session(
        &sid,
        "bench",
        &owner.id,
        true,
        None,
        false,
        &j.relay.to_string(),
        "node1",
    )
    .await
    .unwrap();
    let mut members = Vec::with_capacity(n);
    for i in 0..n {
        let u =
            j.db.create_user(&format!("player{i}"), "-", false)
                .await
                .unwrap();
        members.push(j.db.add_member(&sid, &u.id, None).await.unwrap());
    }
    let mut out = Vec::with_capacity(n);
    let mut buf = [0u8; MAX_PACKET_LEN];
    for (i, &member) in members.iter().enumerate() {
        let (ticket, key): (Ticket, HelloKey) =
            Ticket::issue(&j.secret, session, member, wall_us() / 1_000_000 + 3600);
        let sock = UdpSocket::bind((net.player_ip(), 0)).unwrap();
        // Enough buffer for the listeners' bursts.
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let hello = Hello {
            ticket,
            client_time_us: wall_us(),
            nonce: i as u64,
            reported: ReportedAddrs::default(),
        };
        let len = relay::encode_hello(&hello, &key, &mut buf).unwrap();
        let mut acked = false;
        for _ in 0..5 {
            sock.send_to(&buf[..len], j.relay).unwrap();
            let mut rb = [0u8; MAX_PACKET_LEN];
            if let Ok((n, _)) = sock.recv_from(&mut rb)
                && matches!(Packet::decode(&rb[..n]), Ok(Packet::HelloAck(..)))
            {
                acked = true;
                break;
            }
        }
        assert!(acked, "player {i} got no hello ack");
        out.push(Player { sock, member });
    }
    out
}

#[derive(Default)]
struct Delays(Vec<u64>);

impl Delays {
    fn pct(&mut self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.sort_unstable();
        let i = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        self.0[i] as f64 / 1e6
    }
}

/// Sends from `senders` on schedule for `secs`, reads `listeners`, returns
/// per listener (delays in ns, packets received).
fn run_load(
    senders: &[(UdpSocket, u32, u32, SocketAddr, u64)],
    listeners: Vec<UdpSocket>,
    secs: u64,
) -> Vec<(Delays, u64)> {
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for sock in listeners {
        let stop = stop.clone();
        handles.push(std::thread::spawn(move || {
            sock.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let mut buf = [0u8; MAX_PACKET_LEN];
            let mut delays = Vec::new();
            let mut count = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    let now = origin.elapsed().as_nanos() as u64;
                    let off = if buf[..2] == relay::MAGIC {
                        relay::DATA_HEADER_LEN
                    } else {
                        0
                    };
                    if n >= off + 16 {
                        let sent = u64::from_be_bytes(buf[off + 8..off + 16].try_into().unwrap());
                        delays.push(now.saturating_sub(sent));
                        count += 1;
                    }
                }
            }
            (delays, count)
        }));
    }
    std::thread::sleep(Duration::from_millis(100));
    let period = Duration::from_nanos(1_000_000_000 / EVENTS_PER_SEC);
    let n = senders.len().max(1) as u32;
    let start = Instant::now() + Duration::from_millis(50);
    let total = senders.len() as u64 * EVENTS_PER_SEC * secs;
    let mut buf = [0u8; MAX_PACKET_LEN];
    let mut payload = [0u8; PAYLOAD_LEN];
    for k in 0..total {
        let i = (k % senders.len() as u64) as usize;
        let round = k / senders.len() as u64;
        let due = start + period * round as u32 + period / n * i as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let (sock, session_member, dest, to, session) = &senders[i];
        payload[..4].copy_from_slice(&session_member.to_be_bytes());
        payload[4..8].copy_from_slice(&(round as u32).to_be_bytes());
        payload[8..16].copy_from_slice(&(origin.elapsed().as_nanos() as u64).to_be_bytes());
        let len = if *session == 0 {
            buf[..PAYLOAD_LEN].copy_from_slice(&payload);
            PAYLOAD_LEN
        } else {
            relay::encode_data(*session, *session_member, *dest, &payload, &mut buf).unwrap()
        };
        let _ = sock.send_to(&buf[..len], to);
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    handles
        .into_iter()
        .map(|h| {
            let (d, c) = h.join().unwrap();
            (Delays(d), c)
        })
        .collect()
}

/// The delays and received counts of several listeners, merged.
fn merged(results: &[(Delays, u64)]) -> (Delays, u64) {
    let mut all = Delays::default();
    let mut received = 0;
    for (d, c) in results {
        all.0.extend_from_slice(&d.0);
        received += c;
    }
    (all, received)
}

/// The loopback path without the relay: `listeners` sockets each fed by
/// `per_listener` senders at 10 events/s for `secs` (with `--net veth`,
/// the generator namespace's own loopback).
fn baseline(listeners: usize, per_listener: u64, secs: u64) -> Delays {
    let socks: Vec<UdpSocket> = (0..listeners)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut senders = Vec::new();
    for s in &socks {
        let to = s.local_addr().unwrap();
        for i in 0..per_listener.max(1) {
            senders.push((
                UdpSocket::bind("127.0.0.1:0").unwrap(),
                i as u32,
                0u32,
                to,
                0u64,
            ));
        }
    }
    merged(&run_load(&senders, socks, secs)).0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // `cargo bench` passes --bench. Test runners also start bench targets
    // (`cargo test --all-targets`, nextest's `--list`): this load test is
    // minutes long and changes scheduler priorities, so it runs only when
    // asked for as a benchmark.
    if !jam_tests::bench::measuring() {
        return;
    }
    let a = args();
    let veth = match a.net.as_str() {
        "loopback" => None,
        "veth" => match Veth::from_env() {
            Some(v) => Some(v),
            None => {
                // Set up the namespaces, run this same bench as the
                // generator inside its namespace, then delete them (also
                // when the run fails or this process panics).
                let guard = VethGuard(Veth::create());
                let status = Command::new("ip")
                    .args(["netns", "exec", &guard.0.gen_ns])
                    .arg(std::env::current_exe().unwrap())
                    .args(std::env::args().skip(1))
                    .env(NETNS_ENV, guard.0.to_env())
                    .status()
                    .expect("ip netns exec");
                drop(guard);
                if !status.success() {
                    std::process::exit(status.code().unwrap_or(1));
                }
                return;
            }
        },
        other => panic!("unknown --net {other} (loopback or veth)"),
    };
    let net = Net { veth };
    // Pin the generator (every thread) to core 1; jamd runs on core 0.
    let me = std::process::id().to_string();
    let _ = Command::new("taskset")
        .args(["-a", "-p", "-c", "1", &me])
        .stdout(Stdio::null())
        .status();
    let _ = Command::new("renice")
        .args(["-n", "-20", "-p", &me])
        .stdout(Stdio::null())
        .status();
    // Run the bench under `setsid` so that this raises only the bench's own
    // session, not the shell that started it.
    boost_autogroup(std::process::id());
    println!(
        "mode={} events/s/player={} listeners={} payload={}B secs={}",
        a.mode, EVENTS_PER_SEC, LISTENERS, PAYLOAD_LEN, a.secs
    );
    println!("{}", net.describe());
    println!(
        "{:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>10} {:>8} {:>11} {:>11} {:>7}",
        "players",
        "p50 ms",
        "p99 ms",
        "base p50",
        "base p99",
        "added99",
        "p99.9 ms",
        "loss",
        "drops",
        "cpu %",
        "relay %",
        "in B/s",
        "out B/s",
        "KiB/pl"
    );
    for &n in &a.players {
        let j = start_jamd(&net).await;
        let pid = j.child.id();
        let (_, rss0) = proc_stat(pid);
        let session = 0x00be_0c4a_0000_0000 | n as u64;
        let players = connect_players(&j, &net, session, n).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (_, rss1) = proc_stat(pid);
        // Listeners: in mesh mode the last LISTENERS players; in conductor
        // mode the conductor (player 0), then FAN_LISTENERS players spread
        // over the member order for the fan-out copies.
        let mut senders = Vec::new();
        let mut listeners = Vec::new();
        let mut fan_players = Vec::new();
        let expected = (n as u64 - 1) * EVENTS_PER_SEC * a.secs;
        match a.mode.as_str() {
            "mesh" => {
                for (i, p) in players.iter().enumerate() {
                    senders.push((
                        p.sock.try_clone().unwrap(),
                        p.member,
                        0u32,
                        j.relay,
                        session,
                    ));
                    if i >= n - LISTENERS.min(n) {
                        listeners.push(p.sock.try_clone().unwrap());
                    }
                }
            }
            "conductor" => {
                let conductor = players[0].member;
                for (i, p) in players.iter().enumerate() {
                    let dest = if i == 0 { 0 } else { conductor };
                    senders.push((
                        p.sock.try_clone().unwrap(),
                        p.member,
                        dest,
                        j.relay,
                        session,
                    ));
                }
                listeners.push(players[0].sock.try_clone().unwrap());
                fan_players = (1..=FAN_LISTENERS)
                    .map(|k| (k * (n - 1)).div_ceil(FAN_LISTENERS))
                    .filter(|&i| i > 0)
                    .collect();
                fan_players.dedup();
                for &i in &fan_players {
                    listeners.push(players[i].sock.try_clone().unwrap());
                }
            }
            m => panic!("unknown mode {m}"),
        }
        let m0 = metrics(j.http).await;
        let (cpu0, _) = proc_stat(pid);
        let rcpu0 = thread_cpu(pid, j.relay_tid);
        let cpus0 = CpuNet::read();
        let t0 = Instant::now();
        let results = run_load(&senders, listeners, a.secs);
        let cpus1 = CpuNet::read();
        let relay_cpu = last_cpu(pid, j.relay_tid);
        let (cpu1, _) = proc_stat(pid);
        let rcpu1 = thread_cpu(pid, j.relay_tid);
        let wall = t0.elapsed().as_secs_f64();
        let m1 = metrics(j.http).await;
        let delta = |k: &str| m1.get(k).copied().unwrap_or(0.0) - m0.get(k).copied().unwrap_or(0.0);
        let drops: f64 = m1
            .iter()
            .filter(|(k, _)| k.starts_with("jamd_relay_dropped_total"))
            .map(|(_, v)| v)
            .sum();
        // The table row: in mesh mode every listener, in conductor mode the
        // conductor; the baseline is one listener at the same packet rate.
        let main = if fan_players.is_empty() {
            results.len()
        } else {
            1
        };
        let (mut d, received) = merged(&results[..main]);
        let want = expected * main as u64;
        let mut b = baseline(1, n as u64 - 1, a.secs);
        let p99 = d.pct(0.99);
        let b99 = b.pct(0.99);
        println!(
            "{:>7} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>8} {:>8} {:>10.1} {:>8.1} {:>11.0} {:>11.0} {:>7.1}",
            n,
            d.pct(0.5),
            p99,
            b.pct(0.5),
            b99,
            p99 - b99,
            d.pct(0.999),
            want.saturating_sub(received),
            drops,
            (cpu1 - cpu0) as f64 / 1e6 / wall * 100.0,
            (rcpu1 - rcpu0) as f64 / 1e6 / wall * 100.0,
            delta("jamd_relay_bytes_in_total") / wall,
            delta("jamd_relay_bytes_out_total") / wall,
            (rss1 as f64 - rss0 as f64) / n as f64,
        );
        if !fan_players.is_empty() {
            let (mut f, got) = merged(&results[main..]);
            let want = fan_players.len() as u64 * EVENTS_PER_SEC * a.secs;
            let mut fb = baseline(fan_players.len(), 1, a.secs);
            let (f99, fb99) = (f.pct(0.99), fb.pct(0.99));
            println!(
                "        fan-out copies at {} players (positions {:?}): p50 {:.3} p99 {:.3} \
                 base p50 {:.3} base p99 {:.3} added99 {:.3} p99.9 {:.3} max {:.3} ms, loss {}",
                fan_players.len(),
                fan_players,
                f.pct(0.5),
                f99,
                fb.pct(0.5),
                fb99,
                f99 - fb99,
                f.pct(0.999),
                f.pct(1.0),
                want.saturating_sub(got),
            );
        }
        println!(
            "        {}; relay thread last on cpu {relay_cpu}",
            cpus1.since(&cpus0)
        );
        drop(players);
    }
}
