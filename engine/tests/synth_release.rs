//! The monitor synth's note releases are click-free: rendered in host-sized
//! blocks as a remote player's scale reaches it, every release ramps down
//! no faster than the tone itself moves, carries no low-frequency thump,
//! and ends in exact silence.
//!
//! (The extra sixth "onset" at ~51 Hz that `tests/python/pedalboard_render.py`
//! once reported after the last note was its 2 ms RMS envelope, shorter than
//! one period of these notes, rippling as a release tail crossed its
//! threshold; 51 Hz is the lowest bin its pitch search looks at, i.e.
//! silence. The script now detects attacks, and this test pins the synth.)

use jam_core::ShortMessage;
use jam_engine::OutEvent;
use jam_engine::synth::{MonitorSynth, TIMBRES, timbre_for_slot};

const SR: f32 = 48_000.0;
const BLOCK: usize = 256;

/// Renders `notes` (sample on, sample off, key) for `slot` into mono.
fn render(slot: u8, notes: &[(usize, usize, u8)], len: usize) -> Vec<f32> {
    let mut synth = MonitorSynth::new(SR, 0.7);
    let mut out = Vec::with_capacity(len);
    let mut l = vec![0.0; BLOCK];
    let mut r = vec![0.0; BLOCK];
    for start in (0..len).step_by(BLOCK) {
        let mut events = Vec::new();
        for &(on, off, key) in notes {
            for (at, msg) in [
                (on, ShortMessage::note_on(slot, key, 100)),
                (off, ShortMessage::note_off(slot, key, 0)),
            ] {
                if (start..start + BLOCK).contains(&at) {
                    events.push(OutEvent {
                        offset: (at - start) as u32,
                        msg,
                        slot,
                        source: None,
                    });
                }
            }
        }
        events.sort_by_key(|e| e.offset);
        synth.render(&events, 0.7, &mut l, &mut r);
        out.extend(l.iter().zip(&r).map(|(a, b)| a + b));
    }
    out
}

fn max_step(x: &[f32]) -> f32 {
    x.windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .fold(0.0, f32::max)
}

/// Energy below `hz` over total energy, under a Hann window (so that the
/// window's own edges add no low frequencies): a DFT at 2 Hz steps.
fn low_band_share(x: &[f32], hz: f32) -> f64 {
    let n = x.len() as f64;
    let x: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(k, &v)| {
            let w = 0.5 - 0.5 * (std::f64::consts::TAU * k as f64 / n).cos();
            (f64::from(v) * w) as f32
        })
        .collect();
    let total: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    if total == 0.0 {
        return 0.0;
    }
    let mut low = 0.0;
    let mut f = 0.0f64;
    while f < f64::from(hz) {
        let w = std::f64::consts::TAU * f / f64::from(SR);
        let (mut re, mut im) = (0.0, 0.0);
        for (k, &v) in x.iter().enumerate() {
            re += f64::from(v) * (w * k as f64).cos();
            im -= f64::from(v) * (w * k as f64).sin();
        }
        // |X(f)|² / n is the energy per bin of width sr/n; 2 Hz steps.
        low += (re * re + im * im) / n * (2.0 * n / f64::from(SR));
        f += 2.0;
    }
    low / total
}

/// What is wrong with the release of a note held over `[on, off)` whose
/// release ends by `end`, if anything.
fn release_fault(x: &[f32], on: usize, off: usize, end: usize) -> Option<String> {
    // The tone's own largest step while it sustains: a click is a step the
    // tone does not make.
    let tone = max_step(&x[on + 2_000..off]);
    let tail = max_step(&x[off - 1..end]);
    if tail > tone * 1.05 {
        return Some(format!("release step {tail} over the tone's {tone}"));
    }
    // From 50 ms before the note-off to the end of the release.
    let share = low_band_share(&x[off - 2_400..end], 100.0);
    if share > 1e-3 {
        return Some(format!("{share} of the release's energy below 100 Hz"));
    }
    if let Some(i) = x[end..].iter().position(|&v| v != 0.0) {
        return Some(format!(
            "{} at sample {} after the release",
            x[end + i],
            end + i
        ));
    }
    None
}

#[test]
fn releases_ramp_down_without_a_click_or_thump_and_end_in_silence() {
    // The scale `jam peer` plays in the plugin tests: 125 ms notes every
    // 250 ms, one second in; then a second of silence.
    let notes: Vec<(usize, usize, u8)> = [60u8, 62, 64, 65, 67]
        .into_iter()
        .enumerate()
        .map(|(i, k)| {
            (
                48_000 + i * 12_000 + 37 * i,
                54_000 + i * 12_000 + 101 * i,
                k,
            )
        })
        .collect();
    for slot in 0..TIMBRES.len() as u8 {
        let t = timbre_for_slot(slot);
        let len = 48_000 * 3;
        let x = render(slot, &notes, len);
        // Notes of this timbre that still sound at their note-off.
        let sustains = t.sustain > 0.0;
        let release = (t.release_ms * SR / 1000.0) as usize + 1;
        for (i, &(on, off, _)) in notes.iter().enumerate() {
            let end = off + release;
            let next = notes.get(i + 1).map_or(len, |n| n.0);
            if !sustains || end > next {
                continue;
            }
            let window = &x[..next];
            assert_eq!(
                release_fault(window, on, off, end),
                None,
                "slot {slot}, note {i}"
            );
        }
        let last_end = notes[4].1 + release;
        assert!(
            x[last_end..].iter().all(|&v| v == 0.0),
            "slot {slot}: sound after the last release"
        );
    }
}

#[test]
fn the_release_check_catches_a_click_a_thump_and_a_tail() {
    let (on, off) = (4_800, 12_000);
    let release = (timbre_for_slot(0).release_ms * SR / 1000.0) as usize + 1;
    let end = off + release;
    let clean = render(0, &[(on, off, 67)], 24_000);
    assert_eq!(release_fault(&clean, on, off, end), None);
    // A voice cut at its note-off: the level drops in one sample.
    let mut cut = clean.clone();
    cut[off + 10..].fill(0.0);
    assert!(release_fault(&cut, on, off, end).is_some());
    // A 30 Hz thump under the release, at a tenth of the tone's level.
    let mut thump = clean.clone();
    let peak = clean.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (k, v) in thump[off..end].iter_mut().enumerate() {
        let ramp = (k as f32 / 480.0).min(1.0) * (1.0 - k as f32 / release as f32);
        *v += 0.1 * peak * ramp * (std::f32::consts::TAU * 30.0 * k as f32 / SR).sin();
    }
    assert!(release_fault(&thump, on, off, end).is_some());
    // A denormal-sized residue left after the voice should be idle.
    let mut tail = clean;
    tail[end + 5] = 1e-30;
    assert!(release_fault(&tail, on, off, end).is_some());
}
