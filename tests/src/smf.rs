//! Writing Standard MIDI Files for tests that play them with `jam peer
//! --play`.

use midly::live::LiveEvent;
use midly::num::{u15, u24, u28};
use midly::{Format, Header, MetaMessage, Smf, Timing, TrackEvent, TrackEventKind};
use std::path::Path;

/// Writes a format-0 file at `ticks_per_beat` and a fixed tempo
/// (`us_per_beat`) holding `events`: (delta ticks since the previous
/// event, channel message octets). Panics on octets that are not one
/// complete channel message.
pub fn write(path: &Path, ticks_per_beat: u16, us_per_beat: u32, events: &[(u32, Vec<u8>)]) {
    let mut track = vec![TrackEvent {
        delta: u28::new(0),
        kind: TrackEventKind::Meta(MetaMessage::Tempo(u24::new(us_per_beat))),
    }];
    for (delta, bytes) in events {
        let kind = match LiveEvent::parse(bytes) {
            Ok(LiveEvent::Midi { channel, message }) => TrackEventKind::Midi { channel, message },
            other => panic!("not a channel message: {bytes:02x?} ({other:?})"),
        };
        track.push(TrackEvent {
            delta: u28::new(*delta),
            kind,
        });
    }
    track.push(TrackEvent {
        delta: u28::new(0),
        kind: TrackEventKind::Meta(MetaMessage::EndOfTrack),
    });
    let smf = Smf {
        header: Header::new(
            Format::SingleTrack,
            Timing::Metrical(u15::new(ticks_per_beat)),
        ),
        tracks: vec![track],
    };
    smf.save(path)
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// The five-note scale several tests play (C D E F G, each 120 ticks long
/// and 120 ticks apart, velocity 100, released with velocity 64), as
/// events for [`write`]: at 480 ticks per beat and 120 BPM, a note every
/// 125 ms.
pub fn scale() -> Vec<(u32, Vec<u8>)> {
    let mut events = Vec::new();
    for (i, key) in [60u8, 62, 64, 65, 67].into_iter().enumerate() {
        events.push((if i == 0 { 0 } else { 120 }, vec![0x90, key, 100]));
        events.push((120, vec![0x80, key, 64]));
    }
    events
}
