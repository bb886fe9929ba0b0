"""Host the plugin's .vst3 in pedalboard (JUCE's VST3 host), join a session
by restoring a saved state, render its monitor synth in real time, and
report the notes heard in the audio as JSON on stdout.

Usage: pedalboard_render.py BUNDLE.vst3 SESSION_ADDR SECONDS OUT_STATE

Steps, as a DAW reopening a project does them:

1. load the plugin (JUCE activates it: the engine and its network side
   start);
2. take its state (`raw_state`: JUCE's "VC2!" wrapper around the XML whose
   `IComponent` element holds the plugin's own state, base64 in JUCE's
   alphabet), set the session address and display name, and restore it
   (nice-plug activates again after a state load, and the plugin joins);
3. render 256-sample blocks in real time (the network delivers notes as
   they are played), concatenating the audio;
4. find note onsets (attacks) and the pitch of each note (FFT peak).

The plugin's VST3 side exposes 2080 hidden "MIDI Ch. N CC M" parameters
(how VST3 instruments receive MIDI CCs). pedalboard probes the text of every
parameter at 1001 values and looks parameters up by name with a linear scan
for every attribute it sets, which takes hours for 2086 parameters; it
already skips parameters named "MIDI CC ...", and here it is told to skip
nice-plug's names for the same pseudo-parameters too.
"""

import json
import re
import struct
import sys
import time

import numpy as np
import pedalboard
import pedalboard._pedalboard as pb

pb.PARAMETER_NAME_REGEXES_TO_IGNORE.add(re.compile(r"MIDI Ch\. \d+ "))

JUCE_B64 = ".ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+"
RATE = 48000
BLOCK = 256


def juce_b64_decode(text):
    size, _, chars = text.partition(".")
    value = 0
    for i, c in enumerate(chars):
        value |= JUCE_B64.index(c) << (6 * i)
    return value.to_bytes((len(chars) * 6 + 7) // 8, "little")[: int(size)]


def juce_b64_encode(data):
    value = int.from_bytes(data, "little")
    n = (len(data) * 8 + 5) // 6
    return str(len(data)) + "." + "".join(JUCE_B64[(value >> (6 * i)) & 63] for i in range(n))


def with_fields(raw, fields):
    """raw_state with the plugin's persisted fields replaced."""
    assert raw[:4] == b"VC2!", raw[:16]
    (size,) = struct.unpack("<i", raw[4:8])
    xml = raw[8 : 8 + size].rstrip(b"\0").decode()
    m = re.search(r"<IComponent>([^<]*)</IComponent>", xml)
    state = json.loads(juce_b64_decode(m.group(1)))
    for k, v in fields.items():
        state["fields"][k] = json.dumps(v)
    blob = juce_b64_encode(json.dumps(state).encode())
    xml = xml[: m.start(1)] + blob + xml[m.end(1) :]
    body = xml.encode() + b"\0"
    return b"VC2!" + struct.pack("<i", len(body)) + body, state


def onsets(mono, threshold):
    """Sample indices where a note attacks: the 2 ms RMS envelope is above
    threshold and over four times (12 dB) what it was 5 ms before (plus a
    quarter of the threshold, so that a rise out of silence counts as soon
    as it crosses the threshold).

    Not plain threshold crossings: the 2 ms window is shorter than one
    period of these notes, so as a release tail passes the threshold its
    envelope ripples by about 15% and can cross it upward again, reporting an
    onset with silence after it (pitch 51 Hz, the lowest bin searched). An
    attack rises far more than 12 dB in 5 ms; a decaying tail never does."""
    win = RATE // 500
    env = np.sqrt(np.convolve(mono**2, np.ones(win) / win, mode="same"))
    lag = RATE // 200
    before = np.concatenate([np.zeros(lag), env[:-lag]])
    attack = (env > threshold) & (env > 4 * (before + threshold / 4))
    rising = np.flatnonzero(attack[1:] & ~attack[:-1]) + 1
    keep = []
    for r in rising:
        if not keep or r - keep[-1] > RATE // 20:
            keep.append(int(r))
    return keep


def pitch(mono, start, length):
    seg = mono[start : start + length] * np.hanning(length)
    spec = np.abs(np.fft.rfft(seg, 8 * length))
    freqs = np.fft.rfftfreq(8 * length, 1 / RATE)
    band = freqs > 50
    return float(freqs[band][np.argmax(spec[band])])


def main():
    bundle, session, seconds, out_state = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    t = time.time()
    plugin = pedalboard.load_plugin(bundle)
    load_s = time.time() - t
    assert plugin.is_instrument
    raw, state = with_fields(plugin.raw_state, {"session": session, "display-name": "pedalboard"})
    plugin.raw_state = raw
    restored = plugin.raw_state
    blocks = []
    stalls = []
    start = time.monotonic()
    n = int(seconds * RATE / BLOCK)
    for b in range(n):
        due = start + b * BLOCK / RATE
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -0.010:
            # Rendered over 10 ms late: what arrives meanwhile lands later
            # in the audio than in real time.
            stalls.append(b * BLOCK)
        out = plugin.process(
            [], duration=BLOCK / RATE, sample_rate=RATE, num_channels=2, buffer_size=BLOCK, reset=False
        )
        blocks.append(out)
    audio = np.concatenate(blocks, axis=1)
    mono = audio.mean(axis=0)
    peak = float(np.abs(audio).max())
    found = onsets(mono, 0.02 * max(peak, 1e-9) + 1e-4)
    notes = [{"onset": o, "hz": pitch(mono, o + RATE // 50, 4096)} for o in found]
    with open(out_state, "wb") as f:
        f.write(restored)
    print(
        json.dumps(
            {
                "load_seconds": load_s,
                "parameters": len(plugin._parameters),
                "peak": peak,
                "samples": int(audio.shape[1]),
                "notes": notes,
                "stalls": stalls,
                "fields": state["fields"],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
