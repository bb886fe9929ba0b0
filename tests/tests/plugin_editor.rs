//! The editor in a real window: `jam-clap-host --gui` embeds it in an X11
//! window on a virtual display (Xvfb) while the plugin is in a session with
//! a `jam peer`, and ImageMagick's `import` captures the screen. The test
//! checks that the editor opened and drew (a captured image that is not a
//! flat colour); what it shows (connection state, listening port, every
//! peer with RTT, loss and role) is the manual check in the README, with
//! `docs/editor.png` captured exactly this way.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn the_editor_opens_in_a_host_window_and_draws() {
    let Some(xvfb) = jam_tests::require_tool("Xvfb", "apt-get install xvfb") else {
        return;
    };
    let Some(import) = jam_tests::require_tool("import", "apt-get install imagemagick") else {
        return;
    };
    let (clap, _) = jam_tests::plugin_bundles("jam-plugin", "jam-togthr");
    let host = jam_tests::workspace_bin("jam-tests", "jam-clap-host");
    let jam = jam_tests::workspace_bin("jam-cli", "jam");
    // A display number of our own: Xvfb picks a free one and prints it.
    let mut x = Command::new(&xvfb)
        .args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "640x480x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(x.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let display = format!(":{}", line.trim());
    let mut peer = Command::new(&jam)
        .args([
            "peer",
            "--name",
            "bob",
            "--listen",
            "127.0.0.1:0",
            "--duration",
            "60",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(peer.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    let control = first
        .split("listening on control ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    let gui = Command::new(&host)
        .arg(&clap)
        .args([
            "--seconds",
            "6",
            "--name",
            "alice",
            "--session",
            &control,
            "--gui",
        ])
        .env("DISPLAY", &display)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("editor.png");
    let ok = Command::new(&import)
        .args([
            "-display",
            &display,
            "-window",
            "root",
            "-crop",
            "560x420+0+0",
        ])
        .arg(&shot)
        .status()
        .unwrap()
        .success();
    let gui_out = gui.wait_with_output().unwrap();
    let _ = peer.kill();
    let _ = peer.wait();
    let _ = x.kill();
    let _ = x.wait();
    let log = String::from_utf8_lossy(&gui_out.stderr);
    assert!(gui_out.status.success(), "{log}");
    assert!(log.contains("editor open (560x420)"), "{log}");
    assert!(ok, "import failed");
    let identify = import.with_file_name("identify");
    let sd = Command::new(identify)
        .args(["-format", "%[fx:standard_deviation]"])
        .arg(&shot)
        .output()
        .unwrap();
    let sd: f64 = String::from_utf8_lossy(&sd.stdout).trim().parse().unwrap();
    assert!(sd > 0.02, "the captured editor is a flat image (sd {sd})");
}
