//! `jam demo --mode`: the players' deliveries through the engine's timing
//! decisions in coherent and predictive mode, over the emulated network.

use std::process::Command;

fn demo(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_jam"))
        .args(["demo", "--json", "--players", "3", "--seconds", "8"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn coherent_mode_reports_the_schedule_ahead_and_nothing_late_on_a_calm_network() {
    let v = demo(&["--mode", "coherent", "--loss", "0", "--jitter-ms", "1"]);
    assert_eq!(v["mode"], "coherent");
    for p in v["players"].as_array().unwrap() {
        let heard = &p["heard"];
        assert_eq!(heard["late"], 0, "{p}");
        assert_eq!(heard["predicted"], 0, "{p}");
        // 20 ms one way: the schedule-ahead follows the p99 plus margin,
        // well under the initial quarter beat (125 ms at 120 BPM).
        let ahead = heard["schedule_ahead_ms"].as_f64().unwrap();
        assert!(ahead > 20.0 && ahead < 125.0, "{p}");
    }
}

#[test]
fn predictive_mode_plays_and_judges_predictions_on_a_lossy_network() {
    let v = demo(&["--mode", "predictive", "--loss", "0.1", "--jitter-ms", "8"]);
    assert_eq!(v["mode"], "predictive");
    let players = v["players"].as_array().unwrap();
    let total = |k: &str| -> u64 {
        players
            .iter()
            .map(|p| p["heard"][k].as_u64().unwrap())
            .sum()
    };
    let predicted = total("predicted");
    assert!(predicted > 0, "{v}");
    assert!(
        total("predictions_right") + total("predictions_wrong") <= predicted,
        "{v}"
    );
}

#[test]
fn an_unknown_mode_is_refused_with_the_known_ones() {
    let out = Command::new(env!("CARGO_BIN_EXE_jam"))
        .args(["demo", "--mode", "loud"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("loud") && e.contains("predictive"), "{e}");
}
