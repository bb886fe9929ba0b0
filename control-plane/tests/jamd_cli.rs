//! The `jamd` binary as a self-hoster runs it: `user add`, `invite`,
//! serving with registration by invite, a TOML file, JSON logs, and a clean
//! stop on SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use jam_tests::process::KillOnDrop;
use serde_json::{Value, json};

fn jamd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jamd"))
}

/// A serving `jamd`, killed and reaped on drop.
struct Running {
    child: KillOnDrop,
    base: String,
    lines: mpsc::Receiver<String>,
}

/// Starts `jamd` with `args` and waits for the line announcing its address.
fn serve(args: &[&str], envs: &[(&str, &str)]) -> Running {
    let mut child = jamd()
        .args(args)
        .envs(envs.iter().copied())
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--relay-listen",
            "127.0.0.1:0",
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("jamd starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // From here on the guard kills and reaps jamd, whatever happens.
    let mut running = Running {
        child: KillOnDrop(child),
        base: String::new(),
        lines: rx,
    };
    let mut seen = Vec::new();
    loop {
        let line = running
            .lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("jamd did not announce its address; output: {seen:#?}"));
        if let Some(rest) = line.strip_prefix("jamd: dashboard on http://") {
            running.base = format!("http://{}", rest.split('/').next().unwrap());
            return running;
        }
        seen.push(line);
    }
}

async fn call(base: &str, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn add_user(dir: &Path, name: &str, password: &str, admin: bool) -> std::process::Output {
    let mut cmd = jamd();
    cmd.arg("--data-dir")
        .arg(dir)
        .args(["user", "add", name, "--password-stdin"]);
    if admin {
        cmd.arg("--admin");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_hoster_flow_with_invites() {
    let dir = tempfile::tempdir().unwrap();
    let out = add_user(dir.path(), "admin", "admin password", true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "created administrator admin"
    );
    let again = add_user(dir.path(), "admin", "admin password", false);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&again.stderr).trim(),
        "jamd: error: user \"admin\" exists already"
    );
    let short = add_user(dir.path(), "shorty", "short", false);
    assert_eq!(short.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&short.stderr).contains("password must be 8 to 256 bytes"));
    let inv = jamd()
        .arg("--data-dir")
        .arg(dir.path())
        .arg("invite")
        .output()
        .unwrap();
    assert!(inv.status.success());
    let code = String::from_utf8(inv.stdout).unwrap().trim().to_string();
    assert!(code.starts_with("ji_") && code.len() == 35, "{code}");

    // Registration is by invite unless configured otherwise.
    let srv = serve(&["--data-dir", dir.path().to_str().unwrap()], &[]);
    let b = &srv.base;
    let (s, _) = call(
        b,
        "/api/accounts",
        None,
        json!({"username": "newbie", "password": "newbie password"}),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = call(
        b,
        "/api/accounts",
        None,
        json!({"username": "newbie", "password": "newbie password", "invite_code": code}),
    )
    .await;
    assert_eq!(s, 201);
    let (s, _) = call(
        b,
        "/api/accounts",
        None,
        json!({"username": "second", "password": "second password", "invite_code": code}),
    )
    .await;
    assert_eq!(s, 403, "an invite for one account works once");
    // The administrator logs in and makes invites over the API; others can't.
    let (s, login) = call(
        b,
        "/api/login",
        None,
        json!({"username": "admin", "password": "admin password"}),
    )
    .await;
    assert_eq!(s, 200);
    let admin = login["token"].as_str().unwrap();
    let (s, inv) = call(b, "/api/invites", Some(admin), json!({"uses": 2})).await;
    assert_eq!(s, 201);
    assert_eq!(inv["uses"], 2);
    let (_, login) = call(
        b,
        "/api/login",
        None,
        json!({"username": "newbie", "password": "newbie password"}),
    )
    .await;
    let (s, _) = call(
        b,
        "/api/invites",
        Some(login["token"].as_str().unwrap()),
        json!({}),
    )
    .await;
    assert_eq!(s, 403);

    // SIGTERM stops it cleanly.
    let pid = srv.child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut srv = srv;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = srv.child.0.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "jamd ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toml_file_environment_and_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jamd.toml");
    std::fs::write(
        &file,
        "data_dir = \"data\"\nregistration = \"open\"\nnode_name = \"from-file\"\n",
    )
    .unwrap();
    let mut cmd_args = vec!["--config", file.to_str().unwrap(), "--log-format", "json"];
    cmd_args.extend(["--node-name", "from-flag"]);
    let srv = serve(
        &cmd_args,
        &[
            ("JAMD_NODE_NAME", "from-env"),
            ("JAMD_MAX_JSON_BYTES", "300"),
        ],
    );
    let (s, _) = call(
        &srv.base,
        "/api/accounts",
        None,
        json!({"username": "open", "password": "open registration"}),
    )
    .await;
    assert_eq!(s, 201, "the file opened registration");
    let (_, login) = call(
        &srv.base,
        "/api/login",
        None,
        json!({"username": "open", "password": "open registration"}),
    )
    .await;
    let (s, session) = call(
        &srv.base,
        "/api/sessions",
        Some(login["token"].as_str().unwrap()),
        json!({"name": "x"}),
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(session["node"], "from-flag", "flags win over the file");
    assert!(
        dir.path().join("data/jamd.db").is_file(),
        "data_dir is relative to the file"
    );
    // The environment set the JSON body limit.
    let (s, _) = call(
        &srv.base,
        "/api/login",
        None,
        json!({"username": "x".repeat(400), "password": "p"}),
    )
    .await;
    assert_eq!(s, 413);
    // Logs are JSON lines (besides jamd's own startup notices).
    let line = loop {
        let l = srv.lines.recv_timeout(Duration::from_secs(10)).unwrap();
        if !l.starts_with("jamd: ") {
            break l;
        }
    };
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert!(v["fields"].is_object(), "{line}");
    // A bad file is a clear error.
    std::fs::write(&file, "registraton = \"open\"\n").unwrap();
    let out = jamd()
        .args(["--config", file.to_str().unwrap(), "migrate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("parsing") && err.contains("registraton"),
        "{err}"
    );
}
