//! [`SendStream`]: the sending half of one RTP-MIDI stream, with the
//! recovery journal (RFC 6295 §4-5, RFC 4696 §4; `rtp-midi.md` §4.7).
//!
//! The stream is a sans-IO state machine. Commands go in with [`push`] and
//! [`push_sysex`], each stamped with its sender time in AppleMIDI ticks;
//! packets come out of [`poll_transmit`]; receiver feedback (`RS`) goes in
//! through [`handle_feedback`]; the guard-packet timer is [`poll_timeout`] /
//! [`handle_timeout`]. A driver polls in this order after every input:
//! `poll_transmit` until `None`, then `poll_timeout`.
//!
//! # Packets
//!
//! Each packet carries the queued commands in order (running status when
//! [`SendConfig::running_status`] is set), stamped with the first command's
//! time (never earlier than the previous packet's), M=0, PT=97, Z=0, and a
//! journal (J=1) unless [`SendConfig::journal`] is off. Sequence numbers
//! start at [`SendConfig::initial_seq`] and count every packet, guards
//! included.
//!
//! # The journal
//!
//! The journal of packet I covers the checkpoint history `C .. I-1` with
//! `C = acked + 1`, where `acked` is the newest sequence number the receiver
//! confirmed (before any feedback, `C` is the first packet of the stream, so
//! a receiver that joins late still gets the full state). S bits come from
//! "this element's latest command was in packet I-1". Note Ons get Y=1 when
//! their onset is at most [`SendConfig::y_window`] older than packet I's
//! timestamp. After the last packet with MIDI in it, guard packets (empty
//! list, journal only) follow after 100 ms, 100 ms more, then doubling up to
//! 1 s, until feedback confirms that packet.
//!
//! # Staying within the MTU
//!
//! No packet exceeds [`SendConfig::mtu`] octets (the whole RTP packet, i.e.
//! the UDP payload). The budget is shared like this:
//!
//! 1. The full journal for `C = acked + 1` is built first.
//! 2. The MIDI list may use whatever that journal leaves, but never less
//!    than half of the payload room (`mtu - 12`) and never more than 4095
//!    octets. Commands that do not fit wait for the next packet; a SysEx
//!    that does not fit is cut into segments (first/middle/last) across
//!    packets, and nothing but its own segments follows until it is done.
//! 3. If the full journal does not fit in what the list left, the
//!    checkpoint moves forward: the sender picks the oldest checkpoint
//!    (among the packets that hold journal elements) whose journal fits,
//!    dropping the oldest history. `C = I` (an empty, 3-octet journal)
//!    always fits. A checkpoint moved this way can leave a loss uncovered;
//!    the receiver then falls back to all-notes-off plus what the journal
//!    still carries, and [`SendStats::checkpoint_advances`] counts it.
//!
//! The same search also keeps every 10-bit LENGTH field (channel journal,
//! system journal, Chapter M) in range.
//!
//! [`push`]: SendStream::push
//! [`push_sysex`]: SendStream::push_sysex
//! [`poll_transmit`]: SendStream::poll_transmit
//! [`handle_feedback`]: SendStream::handle_feedback
//! [`poll_timeout`]: SendStream::poll_timeout
//! [`handle_timeout`]: SendStream::handle_timeout

mod history;

use super::header::RtpHeader;
use super::list::{
    MAX_DELTA, MAX_LIST_LEN, SectionHeader, delta_len, encode_delta, encode_short, short_len,
};
use super::state::MidiState;
use super::sysex::{SysExError, SysExRef};
use crate::clock::{MICROS_PER_TICK, Ticks};
use history::History;
use jam_core::{Micros, ShortMessage};
use std::collections::VecDeque;
use std::time::Duration;

/// Settings of a [`SendStream`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendConfig {
    /// Our SSRC (the one sent in the session's `IN`/`OK`/`CK`/`RS`/`BY`).
    pub ssrc: u32,
    /// Sequence number of the first packet (random, drawn by the caller).
    pub initial_seq: u16,
    /// Largest packet (the whole RTP packet, i.e. the UDP payload), octets.
    pub mtu: usize,
    /// Send a recovery journal in every packet.
    pub journal: bool,
    /// Omit repeated channel status octets.
    pub running_status: bool,
    /// A Note On gets Y=1 ("play it if it was lost") while it is at most
    /// this much older than the packet carrying the journal.
    pub y_window: Duration,
    /// Complete SysEx messages up to this many octets are protected by
    /// the journal (Chapter X); Reset State SysEx always are.
    pub journal_sysex_max: usize,
}

impl SendConfig {
    /// Default MTU: 1200 octets of UDP payload.
    pub const DEFAULT_MTU: usize = 1200;
    /// Smallest MTU the stream accepts (header, section header, one short
    /// command, empty journal and a SysEx segment fit).
    pub const MIN_MTU: usize = 32;

    /// Defaults with the given SSRC and first sequence number.
    pub fn new(ssrc: u32, initial_seq: u16) -> Self {
        SendConfig {
            ssrc,
            initial_seq,
            mtu: Self::DEFAULT_MTU,
            journal: true,
            running_status: true,
            y_window: Duration::from_millis(100),
            journal_sysex_max: 64,
        }
    }

    /// Defaults with SSRC and first sequence number drawn from `rng` (the
    /// caller's seeded or operating-system generator).
    pub fn random<R: rand::Rng + ?Sized>(rng: &mut R) -> Self {
        let ssrc = rng.next_u32();
        let seq = rng.next_u32() as u16;
        Self::new(ssrc, seq)
    }
}

/// Why [`SendStream::push`] or [`SendStream::push_sysex`] refused a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The undefined commands F4, F5, F9 and FD may not appear in an
    /// RTP-MIDI list (RFC 6295 §3.2).
    #[error("undefined midi command {0:#04x} cannot be sent")]
    Undefined(u8),
    /// The bytes are not a SysEx message.
    #[error("invalid system exclusive message")]
    SysEx(#[from] SysExError),
}

/// Counters of a [`SendStream`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendStats {
    /// Packets sent (guards included).
    pub packets: u64,
    /// Guard packets (no MIDI, journal only).
    pub guard_packets: u64,
    /// Octets sent.
    pub bytes: u64,
    /// Commands sent (a segmented SysEx counts once).
    pub commands: u64,
    /// SysEx fields sent (whole messages and segments).
    pub sysex_fields: u64,
    /// Journal octets sent.
    pub journal_bytes: u64,
    /// Packets whose checkpoint had to move past `acked + 1` to fit.
    pub checkpoint_advances: u64,
    /// Feedback reports that moved the acknowledgement forward.
    pub feedback_accepted: u64,
    /// Feedback reports ignored as stale or out of range.
    pub feedback_ignored: u64,
}

#[derive(Debug)]
enum Queued {
    Short(u64, ShortMessage),
    SysEx {
        time: u64,
        bytes: Vec<u8>,
        sent: usize,
    },
}

impl Queued {
    fn time(&self) -> u64 {
        match self {
            Queued::Short(t, _) | Queued::SysEx { time: t, .. } => *t,
        }
    }
}

const GUARD_FIRST: Duration = Duration::from_millis(100);
const GUARD_MAX: Duration = Duration::from_secs(1);

/// The sending half of an RTP-MIDI stream; see the [module docs](self).
#[derive(Debug)]
pub struct SendStream {
    config: SendConfig,
    /// Extended sequence number of the next packet.
    next_seq: u64,
    /// Newest extended sequence number the receiver confirmed.
    acked: u64,
    /// Extended sequence number of the latest packet with MIDI in it.
    last_midi_seq: u64,
    /// RTP time (ticks) of the latest packet or command.
    last_time: u64,
    queue: VecDeque<Queued>,
    history: History,
    guard_at: Option<Micros>,
    guard_interval: Duration,
    guard_pending: bool,
    stats: SendStats,
    journal_buf: Vec<u8>,
    list_buf: Vec<u8>,
    candidates: Vec<u64>,
    /// Commands of the packet being built: (time, message) or completed SysEx.
    sent: Vec<Sent>,
}

#[derive(Debug)]
enum Sent {
    Short(u64, ShortMessage),
    SysEx(Vec<u8>),
}

impl SendStream {
    /// A stream that has sent nothing yet. `now` is accepted for symmetry
    /// with the other state machines; nothing is scheduled before the first
    /// command.
    pub fn new(config: SendConfig, now: Micros) -> Self {
        let _ = now;
        let mut config = config;
        config.mtu = config.mtu.max(SendConfig::MIN_MTU);
        let first = (1u64 << 16) | u64::from(config.initial_seq);
        SendStream {
            config,
            next_seq: first,
            acked: first - 1,
            last_midi_seq: first - 1,
            last_time: 0,
            queue: VecDeque::new(),
            history: History::new(config.journal_sysex_max),
            guard_at: None,
            guard_interval: GUARD_FIRST,
            guard_pending: false,
            stats: SendStats::default(),
            journal_buf: Vec::new(),
            list_buf: Vec::new(),
            candidates: Vec::new(),
            sent: Vec::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &SendConfig {
        &self.config
    }

    /// Queues a command with its sender time.
    pub fn push(&mut self, time: Ticks, msg: ShortMessage) -> Result<(), PushError> {
        if matches!(msg.status(), 0xF4 | 0xF5 | 0xF9 | 0xFD) {
            return Err(PushError::Undefined(msg.status()));
        }
        self.queue.push_back(Queued::Short(time.0, msg));
        Ok(())
    }

    /// Queues a SysEx message (`F0 data.. F7`, or `F0 data..` when the
    /// source dropped the final F7) with its sender time.
    pub fn push_sysex(&mut self, time: Ticks, bytes: &[u8]) -> Result<(), PushError> {
        let s = SysExRef::new(bytes)?;
        self.queue.push_back(Queued::SysEx {
            time: time.0,
            bytes: s.as_bytes().to_vec(),
            sent: 0,
        });
        Ok(())
    }

    /// Commands waiting to be sent.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Counters so far.
    pub fn stats(&self) -> SendStats {
        self.stats
    }

    /// What this stream has sent so far, as MIDI state.
    pub fn state(&self) -> &MidiState {
        self.history.midi()
    }

    /// Sequence number the next packet will carry.
    pub fn next_sequence(&self) -> u16 {
        self.next_seq as u16
    }

    /// The next time [`SendStream::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Micros> {
        self.guard_at
    }

    /// Runs the guard-packet timer.
    pub fn handle_timeout(&mut self, now: Micros) {
        let Some(at) = self.guard_at else { return };
        if now < at {
            return;
        }
        if self.up_to_date() || !self.config.journal {
            self.guard_at = None;
            return;
        }
        self.guard_pending = true;
        self.guard_at = Some(now + self.guard_interval);
        self.guard_interval = (self.guard_interval * 2).min(GUARD_MAX);
    }

    fn up_to_date(&self) -> bool {
        self.acked >= self.last_midi_seq
    }

    /// Receiver feedback (`RS`): the receiver holds every packet up to
    /// `seq`. Stale, reordered and out-of-range reports are ignored. With
    /// several receivers, pass the oldest of their reports.
    pub fn handle_feedback(&mut self, now: Micros, seq: u16) {
        let _ = now;
        let last_sent = self.next_seq - 1;
        let d = i64::from(seq.wrapping_sub(last_sent as u16) as i16);
        let ext = last_sent as i64 + d;
        if d > 0 || ext <= self.acked as i64 {
            self.stats.feedback_ignored += 1;
            return;
        }
        self.acked = ext as u64;
        self.stats.feedback_accepted += 1;
        self.history.trim(self.acked + 1);
        if self.up_to_date() {
            self.guard_at = None;
            self.guard_pending = false;
        }
    }

    /// Writes the next packet into `buf` (cleared first) and returns its
    /// length, or `None` when there is nothing to send.
    pub fn poll_transmit(&mut self, now: Micros, buf: &mut Vec<u8>) -> Option<usize> {
        if self.queue.is_empty() && !self.guard_pending {
            return None;
        }
        buf.clear();
        let this = self.next_seq;
        let time = match self.queue.front() {
            Some(q) => q.time().max(self.last_time),
            None => (now.as_micros() / MICROS_PER_TICK).max(self.last_time),
        };
        let room = self.config.mtu - RtpHeader::LEN;
        let checkpoint = self.acked + 1;

        // 1. The full journal.
        let mut journal_fits_any = true;
        if self.config.journal {
            self.journal_buf.clear();
            let y = self.y_window_ticks();
            if !self
                .history
                .encode_journal(&mut self.journal_buf, checkpoint, this, time, y)
            {
                journal_fits_any = false;
            }
        }
        let journal_len = if !self.config.journal {
            0
        } else if journal_fits_any {
            self.journal_buf.len()
        } else {
            usize::MAX
        };

        // 2. The list.
        let min_journal = if self.config.journal { 3 } else { 0 };
        let list_room = room - 2 - min_journal;
        let wanted = room
            .saturating_sub(2)
            .saturating_sub(journal_len.max(min_journal));
        let budget = wanted.max(room / 2).min(list_room).min(MAX_LIST_LEN);
        let (list_time, last_time, commands) = self.fill_list(time, budget);
        self.last_time = last_time;

        // 3. Fit the journal into what is left.
        let left = room - SectionHeader::encoded_len(self.list_buf.len()) - self.list_buf.len();
        if self.config.journal && journal_len > left {
            self.shrink_journal(checkpoint, this, list_time, left);
            self.stats.checkpoint_advances += 1;
        }

        RtpHeader::new(this as u16, list_time as u32, self.config.ssrc).encode(buf);
        SectionHeader {
            journal: self.config.journal,
            z: false,
            phantom: false,
            len: self.list_buf.len(),
        }
        .encode(buf);
        buf.extend_from_slice(&self.list_buf);
        if self.config.journal {
            buf.extend_from_slice(&self.journal_buf);
            self.stats.journal_bytes += self.journal_buf.len() as u64;
        }
        debug_assert!(buf.len() <= self.config.mtu);

        // Record what went out, now that the journal of this packet is built.
        for s in self.sent.drain(..) {
            match s {
                Sent::Short(t, m) => self.history.record(this, t, &m),
                Sent::SysEx(bytes) => self.history.record_sysex(this, &bytes),
            }
        }
        self.next_seq += 1;
        self.stats.packets += 1;
        self.stats.bytes += buf.len() as u64;
        if commands > 0 {
            self.last_midi_seq = this;
            self.guard_interval = GUARD_FIRST;
            self.guard_at = self.config.journal.then(|| now + GUARD_FIRST);
        } else {
            self.stats.guard_packets += 1;
        }
        self.guard_pending = false;
        Some(buf.len())
    }

    fn y_window_ticks(&self) -> u64 {
        (self.config.y_window.as_micros() / u128::from(MICROS_PER_TICK)) as u64
    }

    /// Moves queued commands into `list_buf` within `budget` octets; returns
    /// the packet time, the time of the last command and the number of
    /// command fields written.
    fn fill_list(&mut self, packet_time: u64, budget: usize) -> (u64, u64, usize) {
        self.list_buf.clear();
        self.sent.clear();
        let mut running = 0u8;
        let mut prev = packet_time;
        let mut fields = 0;
        while let Some(q) = self.queue.front_mut() {
            let t = q.time().max(prev);
            let delta = t - prev;
            if delta > u64::from(MAX_DELTA) {
                break;
            }
            let dlen = if fields == 0 {
                0
            } else {
                delta_len(delta as u32)
            };
            let left = budget - self.list_buf.len();
            match q {
                Queued::Short(_, m) => {
                    let n = dlen + short_len(m, running, self.config.running_status);
                    if n > left {
                        break;
                    }
                    if fields > 0 {
                        encode_delta(&mut self.list_buf, delta as u32);
                    }
                    encode_short(
                        &mut self.list_buf,
                        m,
                        &mut running,
                        self.config.running_status,
                    );
                    self.sent.push(Sent::Short(t, *m));
                    self.stats.commands += 1;
                    self.queue.pop_front();
                }
                Queued::SysEx { bytes, sent, .. } => {
                    let terminated = bytes.last() == Some(&0xF7) && bytes.len() >= 2;
                    let body_end = if terminated {
                        bytes.len() - 1
                    } else {
                        bytes.len()
                    };
                    let body = &bytes[1..body_end];
                    let rest = &body[*sent..];
                    let whole = dlen + 2 + rest.len();
                    let continuing = *sent > 0;
                    if whole <= left {
                        let tail = if terminated { 0xF7 } else { 0xF5 };
                        if fields > 0 {
                            encode_delta(&mut self.list_buf, delta as u32);
                        }
                        self.list_buf.push(if continuing { 0xF7 } else { 0xF0 });
                        self.list_buf.extend_from_slice(rest);
                        self.list_buf.push(tail);
                        running = 0;
                        self.stats.sysex_fields += 1;
                        self.stats.commands += 1;
                        let done = std::mem::take(bytes);
                        self.sent.push(Sent::SysEx(done));
                        self.queue.pop_front();
                    } else if dlen + 3 <= left && rest.len() > 1 {
                        // A first or middle segment with as much data as fits
                        // (at least one octet; the rest follows).
                        let n = (left - dlen - 2).min(rest.len() - 1);
                        if fields > 0 {
                            encode_delta(&mut self.list_buf, delta as u32);
                        }
                        self.list_buf.push(if continuing { 0xF7 } else { 0xF0 });
                        self.list_buf.extend_from_slice(&rest[..n]);
                        self.list_buf.push(0xF0);
                        *sent += n;
                        self.stats.sysex_fields += 1;
                        prev = t;
                        fields += 1;
                        break;
                    } else {
                        break;
                    }
                }
            }
            prev = t;
            fields += 1;
        }
        (packet_time, prev, fields)
    }

    /// Rebuilds the journal with the oldest checkpoint whose journal fits in
    /// `left` octets.
    fn shrink_journal(&mut self, checkpoint: u64, this: u64, time: u64, left: usize) {
        let y = self.y_window_ticks();
        let mut cands = std::mem::take(&mut self.candidates);
        self.history
            .candidate_checkpoints(checkpoint + 1, &mut cands);
        cands.retain(|&c| c < this);
        cands.push(this);
        // Journal size only shrinks as the checkpoint moves forward: binary
        // search for the first candidate that fits.
        let (mut lo, mut hi) = (0usize, cands.len() - 1);
        while lo < hi {
            let mid = (lo + hi) / 2;
            self.journal_buf.clear();
            let ok = self
                .history
                .encode_journal(&mut self.journal_buf, cands[mid], this, time, y);
            if ok && self.journal_buf.len() <= left {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        self.journal_buf.clear();
        let ok = self
            .history
            .encode_journal(&mut self.journal_buf, cands[lo], this, time, y);
        debug_assert!(
            ok && self.journal_buf.len() <= left,
            "an empty journal always fits"
        );
        self.candidates = cands;
    }
}
