//! [`RecvStream`]: the receiving half of one RTP-MIDI stream, with journal
//! repair (RFC 6295 §4, RFC 4696 §6-7; `rtp-midi.md` §4.8).
//!
//! A sans-IO state machine: datagrams of one stream (one SSRC) go in through
//! [`handle_packet`] with `now` and the [`ClockMap`] that maps the sender's
//! clock onto ours; MIDI comes out of [`poll_event`] as [`RecvEvent`]s
//! carrying the sender's time (64-bit, unwrapped) and whether the journal
//! produced them; the `RS` feedback to send comes out of [`poll_feedback`],
//! its deadline out of [`poll_timeout`]. A driver polls `poll_event` until
//! `None`, then `poll_feedback`, then `poll_timeout`, after every input.
//!
//! # What happens to a packet
//!
//! 1. It is decoded and its MIDI list checked. A broken list drops the whole
//!    packet (nothing of it is played; the next packet's journal repairs it
//!    like a loss). A broken journal is ignored (counted) and the list plays.
//! 2. Its extended sequence number is compared with the highest seen so
//!    far. Duplicates and late packets (at or below it) are dropped and
//!    counted: replaying them after a repair would double notes.
//! 3. A gap (or the first packet of the stream) is repaired from this
//!    packet's journal **before** its list plays, in the journal's order:
//!    system chapters, then per channel P, C, M, W, N, E, T, A, each
//!    compared with what this receiver has played (its mirror) and
//!    corrected where they differ. A single-packet loss reads only the S=0
//!    elements. A loss the journal does not cover (J=0, a broken journal, or
//!    a checkpoint newer than the first lost packet) first releases every
//!    sounding note and the sustain pedal, then applies what the journal
//!    still carries.
//! 4. Recovered Note Ons are played only while musically useful: when the
//!    log's Y bit is set and the packet is no later than
//!    [`RecvConfig::late_note_threshold`] (its timestamp, mapped through the
//!    `ClockMap`, against `now`). Otherwise the note is skipped (counted)
//!    and remembered, so a later journal does not start it late.
//! 5. The list plays; SysEx segments are reassembled across fields and
//!    packets, and a partial SysEx is discarded on cancel or loss.
//!
//! [`end`] (for `BY`, a session timeout or shutdown) releases everything
//! still sounding and the sustain pedal.
//!
//! [`handle_packet`]: RecvStream::handle_packet
//! [`poll_event`]: RecvStream::poll_event
//! [`poll_feedback`]: RecvStream::poll_feedback
//! [`poll_timeout`]: RecvStream::poll_timeout
//! [`end`]: RecvStream::end

mod repair;

use super::DecodeError;
use super::list::{Command, validate_list};
use super::packet::Packet;
use super::state::{MidiState, SystemCounters, Tools};
use super::sysex::{Reassembler, Reassembly, SysEx};
use crate::clock::{ClockMap, Ticks};
use jam_core::{Micros, ShortMessage};
use std::collections::VecDeque;
use std::time::Duration;

/// Settings of a [`RecvStream`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvConfig {
    /// A recovered Note On is played only if its packet is at most this
    /// late (and the sender set Y).
    pub late_note_threshold: Duration,
    /// Minimum time between two `RS` reports while packets keep arriving
    /// (a repair asks for one at once).
    pub feedback_interval: Duration,
    /// Repair losses from the journal (turn off only to measure without).
    pub use_journal: bool,
}

impl Default for RecvConfig {
    fn default() -> Self {
        RecvConfig {
            late_note_threshold: Duration::from_millis(50),
            feedback_interval: Duration::from_secs(1),
            use_journal: true,
        }
    }
}

/// A MIDI message out of a [`RecvStream`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecvMessage {
    /// Any message but System Exclusive.
    Short(ShortMessage),
    /// A whole (reassembled) System Exclusive message.
    SysEx(SysEx),
}

/// One message out of a [`RecvStream`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecvEvent {
    /// The sender's time for the command (`T_k`), unwrapped to 64 bits. For
    /// recovered messages, the timestamp of the packet whose journal
    /// produced them.
    pub time: Ticks,
    /// The message.
    pub message: RecvMessage,
    /// True when the journal (or `end`) produced the message rather than
    /// a MIDI list.
    pub recovered: bool,
}

/// Why [`RecvStream::handle_packet`] refused a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The datagram is not a valid RTP-MIDI packet; nothing of it played.
    #[error("malformed rtp-midi packet")]
    Decode(#[from] DecodeError),
    /// The packet belongs to another stream.
    #[error("packet from ssrc {got:#010x}, stream is {expected:#010x}")]
    ForeignSsrc {
        /// This stream's SSRC.
        expected: u32,
        /// The packet's SSRC.
        got: u32,
    },
}

/// Counters of a [`RecvStream`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecvStats {
    /// Packets accepted (in order, not duplicates).
    pub packets: u64,
    /// Packets missing from the sequence (by gap).
    pub lost: u64,
    /// Copies of packets already received.
    pub duplicates: u64,
    /// Packets that arrived after a newer one and were dropped.
    pub late_dropped: u64,
    /// Datagrams refused as malformed.
    pub malformed: u64,
    /// Journals that could not be decoded (their lists still played).
    pub bad_journals: u64,
    /// Gaps (and stream starts) for which the journal was applied.
    pub repairs: u64,
    /// Messages produced by repairs.
    pub recovered_events: u64,
    /// Gaps the journal did not cover.
    pub uncovered_losses: u64,
    /// Recovered Note Ons not played (too late, or Y=0).
    pub skipped_note_ons: u64,
    /// Partial SysEx messages thrown away (cancel or loss).
    pub sysex_discarded: u64,
}

/// What this receiver has played, and the bookkeeping repairs need.
#[derive(Debug)]
struct Mirror {
    midi: MidiState,
    tools: Tools,
    sys: SystemCounters,
    /// Per note: the packet up to which we know its latest event (the
    /// packet whose list played it, or I-1 for a journal repair).
    note_seq: Box<[[u64; 128]; 16]>,
    /// Per channel, notes whose recovered Note On we chose to skip.
    skipped: [u128; 16],
}

/// The receiving half of an RTP-MIDI stream; see the [module docs](self).
#[derive(Debug)]
pub struct RecvStream {
    config: RecvConfig,
    ssrc: Option<u32>,
    /// Highest extended sequence number accepted.
    highest: Option<u64>,
    /// Bit k set: packet `highest - k` was received.
    window: u64,
    /// Latest packet timestamp, unwrapped.
    ts_ref: Option<u64>,
    mirror: Mirror,
    reassembler: Reassembler,
    events: VecDeque<RecvEvent>,
    stats: RecvStats,
    fb_sent_at: Option<Micros>,
    fb_sent_seq: Option<u64>,
    fb_repair: bool,
    scratch: Vec<super::journal::ControlLog>,
}

impl RecvStream {
    /// A receiver that has seen nothing yet; it adopts the SSRC of the first
    /// packet it accepts.
    pub fn new(config: RecvConfig) -> Self {
        RecvStream {
            config,
            ssrc: None,
            highest: None,
            window: 0,
            ts_ref: None,
            mirror: Mirror {
                midi: MidiState::new(),
                tools: Tools::default(),
                sys: SystemCounters::default(),
                note_seq: Box::new([[0; 128]; 16]),
                skipped: [0; 16],
            },
            reassembler: Reassembler::default(),
            events: VecDeque::new(),
            stats: RecvStats::default(),
            fb_sent_at: None,
            fb_sent_seq: None,
            fb_repair: false,
            scratch: Vec::new(),
        }
    }

    /// A receiver bound to one SSRC from the start.
    pub fn with_ssrc(config: RecvConfig, ssrc: u32) -> Self {
        let mut r = Self::new(config);
        r.ssrc = Some(ssrc);
        r
    }

    /// The stream's SSRC, once known.
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// Counters so far.
    pub fn stats(&self) -> RecvStats {
        self.stats
    }

    /// What this receiver has played so far.
    pub fn state(&self) -> &MidiState {
        &self.mirror.midi
    }

    /// The highest sequence number held (received or repaired).
    pub fn highest_sequence(&self) -> Option<u16> {
        self.highest.map(|h| h as u16)
    }

    /// The next message, in play order.
    pub fn poll_event(&mut self) -> Option<RecvEvent> {
        self.events.pop_front()
    }

    /// The sequence number to report in an `RS` now, if one is due: at once
    /// after the first packet and after a repair, else at most once per
    /// [`RecvConfig::feedback_interval`] while new packets arrive.
    pub fn poll_feedback(&mut self, now: Micros) -> Option<u16> {
        let h = self.highest?;
        if self.fb_sent_seq == Some(h) && !self.fb_repair {
            return None;
        }
        let due = match self.fb_sent_at {
            None => true,
            Some(t) => self.fb_repair || now >= t + self.config.feedback_interval,
        };
        if !due {
            return None;
        }
        self.fb_sent_at = Some(now);
        self.fb_sent_seq = Some(h);
        self.fb_repair = false;
        Some(h as u16)
    }

    /// When [`RecvStream::poll_feedback`] will next have something to say.
    pub fn poll_timeout(&self) -> Option<Micros> {
        let h = self.highest?;
        if self.fb_sent_seq == Some(h) && !self.fb_repair {
            return None;
        }
        match self.fb_sent_at {
            Some(t) if !self.fb_repair => Some(t + self.config.feedback_interval),
            _ => Some(Micros::ZERO),
        }
    }

    /// Releases every sounding note and the sustain pedal (for `BY`, a
    /// session timeout or shutdown); the messages come out of
    /// [`RecvStream::poll_event`].
    pub fn end(&mut self) {
        let time = self.ts_ref.unwrap_or(0);
        self.release_all(time, true);
        self.reassembler.discard();
    }

    /// Handles one datagram of this stream at local time `now`; `clock`
    /// maps the sender's session clock onto ours.
    pub fn handle_packet(
        &mut self,
        now: Micros,
        clock: &ClockMap,
        datagram: &[u8],
    ) -> Result<(), RecvError> {
        let packet = Packet::decode(datagram).inspect_err(|_| self.stats.malformed += 1)?;
        if let Some(expected) = self.ssrc
            && expected != packet.header.ssrc
        {
            return Err(RecvError::ForeignSsrc {
                expected,
                got: packet.header.ssrc,
            });
        }
        validate_list(packet.list, packet.section.z).inspect_err(|_| self.stats.malformed += 1)?;
        let seq = packet.header.sequence;
        let (ext, prev) = match self.highest {
            None => ((1u64 << 32) | u64::from(seq), None),
            Some(h) => {
                let d = i64::from(seq.wrapping_sub(h as u16) as i16);
                if d <= 0 {
                    let k = d.unsigned_abs();
                    if k < 64 && self.window & (1 << k) != 0 {
                        self.stats.duplicates += 1;
                    } else {
                        self.stats.late_dropped += 1;
                    }
                    return Ok(());
                }
                (h + d as u64, Some(h))
            }
        };
        self.ssrc = Some(packet.header.ssrc);
        self.stats.packets += 1;
        let reference = self.ts_ref.unwrap_or_else(|| clock.to_remote(now).0);
        let ts = Ticks::unwrap_rtp(packet.header.timestamp, Ticks(reference)).0;
        self.ts_ref = Some(ts);
        let late = now.signed_diff(clock.to_local(Ticks(ts)))
            > self.config.late_note_threshold.as_micros() as i64;

        match prev {
            None => self.repair(&packet, ext, None, ts, late),
            Some(h) if ext > h + 1 => {
                self.stats.lost += ext - h - 1;
                if self.reassembler.discard() {
                    self.stats.sysex_discarded += 1;
                }
                self.repair(&packet, ext, Some(h), ts, late);
            }
            Some(_) => {}
        }

        for c in packet.commands() {
            let Ok(c) = c else { break };
            let time = ts + c.offset;
            match c.command {
                Command::Short(m) => self.emit(time, m, false, ext),
                Command::SysEx(seg) => match self.reassembler.push(&seg) {
                    Reassembly::Complete => {
                        let bytes = self.reassembler.message().to_vec();
                        self.emit_sysex(time, bytes, false);
                    }
                    Reassembly::Discarded => self.stats.sysex_discarded += 1,
                    Reassembly::Pending | Reassembly::Orphan => {}
                },
            }
        }

        let shift = ext - prev.unwrap_or(ext);
        self.window = if shift >= 64 {
            1
        } else {
            (self.window << shift) | 1
        };
        self.highest = Some(ext);
        Ok(())
    }

    /// Plays one message: updates the mirror and queues the event. `mark`
    /// is the packet up to which a note event is known (see `note_seq`).
    fn emit(&mut self, time: u64, m: ShortMessage, recovered: bool, mark: u64) {
        let mi = &mut self.mirror;
        mi.tools.apply(&mi.midi, &m);
        mi.sys.apply(&m);
        mi.midi.apply(&m);
        if let Some(ch) = m.channel()
            && matches!(m.status() & 0xF0, 0x80 | 0x90)
        {
            let n = usize::from(m.data1());
            mi.note_seq[usize::from(ch)][n] = mark;
            mi.skipped[usize::from(ch)] &= !(1u128 << n);
        }
        if recovered {
            self.stats.recovered_events += 1;
        }
        self.events.push_back(RecvEvent {
            time: Ticks(time),
            message: RecvMessage::Short(m),
            recovered,
        });
    }

    fn emit_sysex(&mut self, time: u64, bytes: Vec<u8>, recovered: bool) {
        let mi = &mut self.mirror;
        mi.tools.apply_sysex(&bytes);
        mi.sys.apply_sysex();
        mi.midi.apply_sysex(&bytes);
        if recovered {
            self.stats.recovered_events += 1;
        }
        let Ok(s) = SysEx::new(&bytes) else { return };
        self.events.push_back(RecvEvent {
            time: Ticks(time),
            message: RecvMessage::SysEx(s),
            recovered,
        });
    }

    /// Note Off for every sounding note, then CC 64 = 0 where the pedal is
    /// down (or everywhere a note sounded, with `all_channels`).
    fn release_all(&mut self, time: u64, all_channels: bool) {
        let mark = self.highest.unwrap_or(0);
        for ch in 0..16u8 {
            let had_notes = self.mirror.midi.channel(ch).sounding_count() > 0;
            for n in 0..128u8 {
                if self.mirror.midi.channel(ch).notes[usize::from(n)] > 0 {
                    self.emit(time, ShortMessage::note_off(ch, n, 64), true, mark);
                }
            }
            if self.mirror.midi.channel(ch).controllers[64] != 0 || (all_channels && had_notes) {
                self.emit(time, ShortMessage::control_change(ch, 64, 0), true, mark);
            }
        }
    }
}
