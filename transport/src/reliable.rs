//! An ordered, acknowledged message channel over datagrams, for the
//! session document's sync messages.
//!
//! Automerge's sync protocol assumes a reliable, ordered stream, and a full
//! sync of a large session is far larger than one datagram. [`Reliable`] is
//! one end of a point-to-point channel that gives exactly that over a lossy,
//! reordering, duplicating path: messages of up to
//! [`ReliableConfig::max_message_len`] bytes come out at the other end
//! complete, once, and in the order they were sent.
//!
//! # Wire format
//!
//! Every frame starts with the magic byte `0x4A` (`J`) and a type byte; all
//! integers are big-endian.
//!
//! ```text
//! DATA  4A 01 | src_epoch u32 | dst_epoch u32 | seq u32 | frag_index u32 | frag_count u32 | payload
//! ACK   4A 02 | src_epoch u32 | dst_epoch u32 | next u32 | sack u64
//! ```
//!
//! - A message is cut into fragments that fit the MTU; each fragment has its
//!   own sequence number, and fragments of one message are consecutive.
//! - `next` in an ACK is cumulative (every `seq < next` arrived); bit `i` of
//!   `sack` says that `next + 1 + i` arrived too (selective acknowledgement).
//! - Epochs name an incarnation of an endpoint (random, non-zero, from the
//!   caller). `dst_epoch` is the peer's epoch as the sender knows it (0 before
//!   first contact). A frame from a new peer epoch means the peer restarted:
//!   both directions start over from sequence 0 and
//!   [`ReliableEvent::PeerRestarted`] tells the application, which must
//!   resynchronise its own state (the session document resets its sync state
//!   for the peer). Frames from retired epochs are ignored.
//!
//! # Behaviour
//!
//! - Retransmission: RTT is estimated per RFC 6298 (SRTT, RTTVAR, Karn's rule:
//!   no samples from retransmitted fragments); an unacknowledged fragment is
//!   resent after one RTO, and the RTO doubles on every timeout up to
//!   [`ReliableConfig::max_rto_us`], so a channel across a partition keeps
//!   probing at that rate and resumes as soon as the partition heals. A
//!   fragment reported missing while three later ones arrived is resent at
//!   once (fast retransmit).
//! - Flow: at most [`ReliableConfig::send_window`] fragments are in flight;
//!   the receiver buffers at most [`ReliableConfig::recv_window`] fragments
//!   ahead of the next expected one and drops anything further. Queued
//!   outgoing bytes are bounded by [`ReliableConfig::max_queued_bytes`]
//!   ([`SendError::QueueFull`]). There is no congestion control beyond the
//!   fixed window: session sync traffic is small and bursty.
//! - Duplicates and stale frames are dropped; malformed frames return a
//!   [`FrameError`] and change nothing.
//!
//! Sans-IO: the driver feeds [`Reliable::handle_datagram`] and
//! [`Reliable::handle_timeout`], then drains [`Reliable::poll_transmit`] and
//! [`Reliable::poll_event`], and sleeps until [`Reliable::poll_timeout`].
//!
//! ```
//! use jam_transport::reliable::{Reliable, ReliableConfig, ReliableEvent};
//! use jam_core::Micros;
//!
//! let now = Micros::ZERO;
//! let mut a = Reliable::new(ReliableConfig::default(), 1);
//! let mut b = Reliable::new(ReliableConfig::default(), 2);
//! a.send(&vec![7u8; 5000]).unwrap();
//! while let Some(d) = a.poll_transmit(now) {
//!     b.handle_datagram(now, &d).unwrap();
//! }
//! assert_eq!(b.poll_event(), Some(ReliableEvent::Message(vec![7u8; 5000])));
//! while let Some(ack) = b.poll_transmit(now) {
//!     a.handle_datagram(now, &ack).unwrap();
//! }
//! assert!(a.is_idle());
//! ```

use jam_core::Micros;
use std::collections::{BTreeMap, VecDeque};

const MAGIC: u8 = 0x4A;
const TYPE_DATA: u8 = 0x01;
const TYPE_ACK: u8 = 0x02;
/// Bytes of a DATA frame before the payload.
pub const DATA_HEADER_LEN: usize = 22;
/// Bytes of an ACK frame.
pub const ACK_LEN: usize = 22;
/// Retired peer epochs remembered (frames from them are ignored).
const RETIRED_EPOCHS: usize = 8;
/// Later fragments acknowledged past a hole before it is resent early.
const FAST_RETRANSMIT_AFTER: u32 = 3;

/// Why bytes are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Shorter than its header.
    #[error("frame truncated: {len} bytes, need at least {need}")]
    Truncated {
        /// Bytes received.
        len: usize,
        /// Bytes the header needs.
        need: usize,
    },
    /// An ACK frame longer than an ACK.
    #[error("ack frame has {len} bytes, an ack has exactly 22")]
    TrailingBytes {
        /// Bytes received.
        len: usize,
    },
    /// Does not start with the magic byte.
    #[error("not a reliable-channel frame: first byte {0:#04x}")]
    BadMagic(u8),
    /// Unknown frame type.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// An epoch of zero where a real one is required.
    #[error("frame has source epoch 0")]
    ZeroEpoch,
    /// A fragment index outside its count, or a count of zero.
    #[error("fragment {index} of {count} is impossible")]
    BadFragment {
        /// The index.
        index: u32,
        /// The count.
        count: u32,
    },
    /// A fragment of a message longer than the receiver accepts.
    #[error("message of {count} fragments exceeds the limit of {max}")]
    MessageTooLong {
        /// Fragments announced.
        count: u32,
        /// Most fragments accepted.
        max: u32,
    },
    /// A fragment that contradicts fragments already received.
    #[error("fragment seq {seq} contradicts the message it belongs to")]
    Inconsistent {
        /// The fragment's sequence number.
        seq: u32,
    },
}

/// Why a message could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Longer than [`ReliableConfig::max_message_len`].
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Queuing it would exceed [`ReliableConfig::max_queued_bytes`].
    #[error("send queue full: {queued} bytes queued, limit {max}")]
    QueueFull {
        /// Bytes already queued.
        queued: usize,
        /// The limit.
        max: usize,
    },
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A fragment of a message.
    Data {
        /// Sender's epoch.
        src_epoch: u32,
        /// Receiver's epoch as the sender knows it (0 = unknown).
        dst_epoch: u32,
        /// Sequence number of this fragment.
        seq: u32,
        /// Index of this fragment in its message.
        frag_index: u32,
        /// Fragments in the message.
        frag_count: u32,
        /// The fragment's bytes.
        payload: &'a [u8],
    },
    /// An acknowledgement.
    Ack {
        /// Sender's epoch.
        src_epoch: u32,
        /// Receiver's epoch as the sender knows it (0 = unknown).
        dst_epoch: u32,
        /// Every `seq < next` arrived.
        next: u32,
        /// Bit `i`: `next + 1 + i` arrived.
        sack: u64,
    },
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl<'a> Frame<'a> {
    /// Parses a frame. Never panics.
    pub fn decode(b: &'a [u8]) -> Result<Frame<'a>, FrameError> {
        if b.len() < 2 {
            return Err(FrameError::Truncated {
                len: b.len(),
                need: 2,
            });
        }
        if b[0] != MAGIC {
            return Err(FrameError::BadMagic(b[0]));
        }
        let need = match b[1] {
            TYPE_DATA => DATA_HEADER_LEN,
            TYPE_ACK => ACK_LEN,
            t => return Err(FrameError::UnknownType(t)),
        };
        if b.len() < need {
            return Err(FrameError::Truncated { len: b.len(), need });
        }
        let src_epoch = be32(b, 2);
        if src_epoch == 0 {
            return Err(FrameError::ZeroEpoch);
        }
        let dst_epoch = be32(b, 6);
        if b[1] == TYPE_ACK {
            if b.len() != ACK_LEN {
                return Err(FrameError::TrailingBytes { len: b.len() });
            }
            let mut sack = [0u8; 8];
            sack.copy_from_slice(&b[14..22]);
            return Ok(Frame::Ack {
                src_epoch,
                dst_epoch,
                next: be32(b, 10),
                sack: u64::from_be_bytes(sack),
            });
        }
        let frag_index = be32(b, 14);
        let frag_count = be32(b, 18);
        if frag_count == 0 || frag_index >= frag_count {
            return Err(FrameError::BadFragment {
                index: frag_index,
                count: frag_count,
            });
        }
        Ok(Frame::Data {
            src_epoch,
            dst_epoch,
            seq: be32(b, 10),
            frag_index,
            frag_count,
            payload: &b[DATA_HEADER_LEN..],
        })
    }

    /// Encodes the frame.
    pub fn encode(&self) -> Vec<u8> {
        match *self {
            Frame::Data {
                src_epoch,
                dst_epoch,
                seq,
                frag_index,
                frag_count,
                payload,
            } => {
                let mut out = Vec::with_capacity(DATA_HEADER_LEN + payload.len());
                out.extend_from_slice(&[MAGIC, TYPE_DATA]);
                for v in [src_epoch, dst_epoch, seq, frag_index, frag_count] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
                out.extend_from_slice(payload);
                out
            }
            Frame::Ack {
                src_epoch,
                dst_epoch,
                next,
                sack,
            } => {
                let mut out = Vec::with_capacity(ACK_LEN);
                out.extend_from_slice(&[MAGIC, TYPE_ACK]);
                for v in [src_epoch, dst_epoch, next] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
                out.extend_from_slice(&sack.to_be_bytes());
                out
            }
        }
    }
}

/// Settings of a channel end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReliableConfig {
    /// Largest datagram sent, in bytes (header included).
    pub mtu: usize,
    /// Most fragments in flight.
    pub send_window: u32,
    /// Most fragments buffered ahead of the next expected one.
    pub recv_window: u32,
    /// Longest message, in bytes.
    pub max_message_len: usize,
    /// Most bytes queued for sending (in flight included).
    pub max_queued_bytes: usize,
    /// RTO before the first RTT sample, µs.
    pub initial_rto_us: u64,
    /// Smallest RTO, µs.
    pub min_rto_us: u64,
    /// Largest RTO (the probing interval across a partition), µs.
    pub max_rto_us: u64,
}

impl Default for ReliableConfig {
    fn default() -> Self {
        ReliableConfig {
            mtu: 1200,
            send_window: 128,
            recv_window: 512,
            max_message_len: 64 << 20,
            max_queued_bytes: 128 << 20,
            initial_rto_us: 500_000,
            min_rto_us: 50_000,
            max_rto_us: 4_000_000,
        }
    }
}

impl ReliableConfig {
    fn payload_per_fragment(&self) -> usize {
        self.mtu.saturating_sub(DATA_HEADER_LEN).max(1)
    }

    fn max_fragments(&self) -> u32 {
        u32::try_from(self.max_message_len.div_ceil(self.payload_per_fragment()))
            .unwrap_or(u32::MAX)
            .max(1)
    }
}

/// What a channel end reports to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReliableEvent {
    /// A complete message, in order.
    Message(Vec<u8>),
    /// The peer restarted (a new epoch): everything in flight in either
    /// direction was dropped and both directions start over. Resynchronise
    /// application state with the peer.
    PeerRestarted,
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReliableStats {
    /// DATA frames sent, first transmissions.
    pub fragments_sent: u64,
    /// DATA frames resent.
    pub retransmits: u64,
    /// ACK frames sent.
    pub acks_sent: u64,
    /// Bytes of all frames sent.
    pub bytes_sent: u64,
    /// Messages delivered.
    pub messages_delivered: u64,
    /// Duplicate or stale DATA frames dropped.
    pub duplicates: u64,
    /// DATA frames dropped for being beyond the receive window.
    pub beyond_window: u64,
    /// Peer restarts seen.
    pub peer_restarts: u64,
}

#[derive(Debug, Clone)]
struct OutFragment {
    index: u32,
    count: u32,
    payload: Vec<u8>,
}

#[derive(Debug, Clone)]
struct InFlight {
    frag: OutFragment,
    first_sent: Micros,
    last_sent: Micros,
    retransmitted: bool,
    sacked: bool,
}

#[derive(Debug, Clone)]
struct InFragment {
    index: u32,
    count: u32,
    payload: Vec<u8>,
}

/// One end of a reliable, ordered channel. See the [module docs](self).
///
/// Method groups: commands ([`send`](Reliable::send)); input
/// ([`handle_datagram`](Reliable::handle_datagram),
/// [`handle_timeout`](Reliable::handle_timeout)); output, polled in this
/// order after every input ([`poll_transmit`](Reliable::poll_transmit),
/// [`poll_event`](Reliable::poll_event),
/// [`poll_timeout`](Reliable::poll_timeout)); getters
/// ([`stats`](Reliable::stats), [`is_idle`](Reliable::is_idle)).
#[derive(Debug)]
pub struct Reliable {
    config: ReliableConfig,
    epoch: u32,
    peer_epoch: Option<u32>,
    retired: VecDeque<u32>,
    // Sending.
    queue: VecDeque<OutFragment>,
    queued_bytes: usize,
    next_seq: u32,
    in_flight: BTreeMap<u32, InFlight>,
    /// Lowest unacknowledged sequence number.
    send_base: u32,
    srtt_us: Option<u64>,
    rttvar_us: u64,
    rto_us: u64,
    /// Earliest time the retransmission timer fires.
    rto_deadline: Option<Micros>,
    retransmit_now: Vec<u32>,
    // Receiving.
    next_expected: u32,
    received: BTreeMap<u32, InFragment>,
    /// Fragments of the message being assembled, in order.
    assembling: Vec<u8>,
    /// Fragment count of the message in progress (0: none in progress).
    assembling_count: u32,
    /// Index of the next fragment of the message in progress.
    assembling_next: u32,
    ack_pending: bool,
    events: VecDeque<ReliableEvent>,
    stats: ReliableStats,
}

impl Reliable {
    /// A channel end whose incarnation is `epoch` (random and non-zero;
    /// draw a new one each time the process starts). A zero epoch is
    /// replaced by 1.
    pub fn new(config: ReliableConfig, epoch: u32) -> Reliable {
        Reliable {
            config,
            epoch: epoch.max(1),
            peer_epoch: None,
            retired: VecDeque::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            next_seq: 0,
            in_flight: BTreeMap::new(),
            send_base: 0,
            srtt_us: None,
            rttvar_us: 0,
            rto_us: config.initial_rto_us,
            rto_deadline: None,
            retransmit_now: Vec::new(),
            next_expected: 0,
            received: BTreeMap::new(),
            assembling: Vec::new(),
            assembling_count: 0,
            assembling_next: 0,
            ack_pending: false,
            events: VecDeque::new(),
            stats: ReliableStats::default(),
        }
    }

    /// This end's epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Queues a message.
    pub fn send(&mut self, msg: &[u8]) -> Result<(), SendError> {
        if msg.len() > self.config.max_message_len {
            return Err(SendError::TooLong {
                len: msg.len(),
                max: self.config.max_message_len,
            });
        }
        if self.queued_bytes.saturating_add(msg.len()) > self.config.max_queued_bytes {
            return Err(SendError::QueueFull {
                queued: self.queued_bytes,
                max: self.config.max_queued_bytes,
            });
        }
        let per = self.config.payload_per_fragment();
        let count = msg.len().div_ceil(per).max(1) as u32;
        if msg.is_empty() {
            self.queue.push_back(OutFragment {
                index: 0,
                count: 1,
                payload: Vec::new(),
            });
        }
        for (i, chunk) in msg.chunks(per).enumerate() {
            self.queue.push_back(OutFragment {
                index: i as u32,
                count,
                payload: chunk.to_vec(),
            });
        }
        self.queued_bytes += msg.len();
        Ok(())
    }

    /// True when nothing is queued, in flight or waiting to be acknowledged.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.in_flight.is_empty() && !self.ack_pending
    }

    /// Counters so far.
    pub fn stats(&self) -> ReliableStats {
        self.stats
    }

    /// The current retransmission timeout, µs.
    pub fn rto_us(&self) -> u64 {
        self.rto_us
    }

    fn reset_streams(&mut self) {
        self.queue.clear();
        self.queued_bytes = 0;
        self.next_seq = 0;
        self.in_flight.clear();
        self.send_base = 0;
        self.rto_deadline = None;
        self.retransmit_now.clear();
        self.rto_us = self.config.initial_rto_us;
        self.next_expected = 0;
        self.received.clear();
        self.assembling.clear();
        self.assembling_count = 0;
        self.assembling_next = 0;
    }

    /// Checks the frame's source epoch. Returns false if the frame must be
    /// ignored (from a retired incarnation).
    fn check_peer_epoch(&mut self, src: u32) -> bool {
        match self.peer_epoch {
            Some(e) if e == src => true,
            _ if self.retired.contains(&src) => false,
            None => {
                self.peer_epoch = Some(src);
                true
            }
            Some(old) => {
                if self.retired.len() >= RETIRED_EPOCHS {
                    self.retired.pop_front();
                }
                self.retired.push_back(old);
                self.peer_epoch = Some(src);
                self.reset_streams();
                self.stats.peer_restarts += 1;
                self.events.push_back(ReliableEvent::PeerRestarted);
                true
            }
        }
    }

    /// Handles a datagram from the peer. Malformed frames return an error and
    /// change nothing.
    pub fn handle_datagram(&mut self, now: Micros, bytes: &[u8]) -> Result<(), FrameError> {
        let frame = Frame::decode(bytes)?;
        match frame {
            Frame::Data {
                src_epoch,
                dst_epoch,
                seq,
                frag_index,
                frag_count,
                payload,
            } => {
                let max = self.config.max_fragments();
                if frag_count > max {
                    return Err(FrameError::MessageTooLong {
                        count: frag_count,
                        max,
                    });
                }
                if !self.check_peer_epoch(src_epoch) {
                    return Ok(());
                }
                if dst_epoch != 0 && dst_epoch != self.epoch {
                    // Meant for an earlier incarnation of us: our ACK tells
                    // the peer our new epoch.
                    self.ack_pending = true;
                    return Ok(());
                }
                self.on_data(seq, frag_index, frag_count, payload)
            }
            Frame::Ack {
                src_epoch,
                dst_epoch,
                next,
                sack,
            } => {
                if !self.check_peer_epoch(src_epoch) {
                    return Ok(());
                }
                if dst_epoch != self.epoch {
                    // An ACK for an earlier incarnation of us (or before the
                    // peer knew us): nothing of ours it refers to.
                    if dst_epoch == 0 {
                        return Ok(());
                    }
                    self.ack_pending = true;
                    return Ok(());
                }
                self.on_ack(now, next, sack);
                Ok(())
            }
        }
    }

    fn on_data(
        &mut self,
        seq: u32,
        frag_index: u32,
        frag_count: u32,
        payload: &[u8],
    ) -> Result<(), FrameError> {
        self.ack_pending = true;
        if seq < self.next_expected || self.received.contains_key(&seq) {
            self.stats.duplicates += 1;
            return Ok(());
        }
        if seq - self.next_expected >= self.config.recv_window {
            self.stats.beyond_window += 1;
            return Ok(());
        }
        self.received.insert(
            seq,
            InFragment {
                index: frag_index,
                count: frag_count,
                payload: payload.to_vec(),
            },
        );
        // Deliver everything now contiguous.
        while let Some(f) = self.received.remove(&self.next_expected) {
            let consistent = f.index == self.assembling_next
                && (self.assembling_count == 0 || f.count == self.assembling_count)
                && self.assembling.len() + f.payload.len() <= self.config.max_message_len;
            if !consistent {
                // A well-formed sender never does this; drop the message in
                // progress rather than deliver something corrupt.
                let seq = self.next_expected;
                self.next_expected += 1;
                self.assembling.clear();
                self.assembling_count = 0;
                self.assembling_next = 0;
                return Err(FrameError::Inconsistent { seq });
            }
            self.next_expected += 1;
            self.assembling_count = f.count;
            self.assembling.extend_from_slice(&f.payload);
            self.assembling_next = f.index + 1;
            if f.index + 1 == f.count {
                let msg = std::mem::take(&mut self.assembling);
                self.assembling_count = 0;
                self.assembling_next = 0;
                self.stats.messages_delivered += 1;
                self.events.push_back(ReliableEvent::Message(msg));
            }
        }
        Ok(())
    }

    fn on_ack(&mut self, now: Micros, next: u32, sack: u64) {
        if next > self.next_seq {
            // Acknowledges something never sent: ignore.
            return;
        }
        let mut progressed = false;
        // Cumulative part.
        let acked: Vec<u32> = self.in_flight.range(..next).map(|(s, _)| *s).collect();
        for s in acked {
            if let Some(f) = self.in_flight.remove(&s) {
                self.sample_rtt(now, &f);
                self.queued_bytes = self.queued_bytes.saturating_sub(f.frag.payload.len());
                progressed = true;
            }
        }
        if next > self.send_base {
            self.send_base = next;
        }
        // Selective part.
        let mut highest_sacked = None;
        for i in 0..64u32 {
            if sack & (1u64 << i) == 0 {
                continue;
            }
            let s = next.saturating_add(1 + i);
            if let Some(f) = self.in_flight.get_mut(&s)
                && !f.sacked
            {
                f.sacked = true;
                let f = f.clone();
                self.sample_rtt(now, &f);
                progressed = true;
            }
            highest_sacked = Some(s);
        }
        // Fast retransmit: holes with enough later fragments acknowledged.
        if let Some(h) = highest_sacked {
            for (s, f) in self.in_flight.range(..h) {
                if !f.sacked
                    && h - s >= FAST_RETRANSMIT_AFTER
                    && now.0.saturating_sub(f.last_sent.0) >= self.srtt_us.unwrap_or(self.rto_us)
                    && !self.retransmit_now.contains(s)
                {
                    self.retransmit_now.push(*s);
                }
            }
        }
        if progressed {
            self.rto_us = self.computed_rto();
            self.rto_deadline = self.earliest_unsacked().map(|t| t_plus(t, self.rto_us));
        }
    }

    fn sample_rtt(&mut self, now: Micros, f: &InFlight) {
        if f.retransmitted {
            return; // Karn's rule.
        }
        let r = now.0.saturating_sub(f.first_sent.0);
        match self.srtt_us {
            None => {
                self.srtt_us = Some(r);
                self.rttvar_us = r / 2;
            }
            Some(srtt) => {
                let diff = srtt.abs_diff(r);
                self.rttvar_us = (3 * self.rttvar_us + diff) / 4;
                self.srtt_us = Some((7 * srtt + r) / 8);
            }
        }
    }

    fn computed_rto(&self) -> u64 {
        match self.srtt_us {
            None => self.config.initial_rto_us,
            Some(srtt) => (srtt + (4 * self.rttvar_us).max(1_000))
                .clamp(self.config.min_rto_us, self.config.max_rto_us),
        }
    }

    fn earliest_unsacked(&self) -> Option<Micros> {
        self.in_flight
            .values()
            .filter(|f| !f.sacked)
            .map(|f| f.last_sent)
            .min()
    }

    /// Resends what the retransmission timer says is overdue.
    pub fn handle_timeout(&mut self, now: Micros) {
        let Some(deadline) = self.rto_deadline else {
            return;
        };
        if now < deadline {
            return;
        }
        let rto = self.rto_us;
        let due: Vec<u32> = self
            .in_flight
            .iter()
            .filter(|(_, f)| !f.sacked && now.0.saturating_sub(f.last_sent.0) >= rto)
            .map(|(s, _)| *s)
            .collect();
        for s in due {
            if !self.retransmit_now.contains(&s) {
                self.retransmit_now.push(s);
            }
        }
        // Exponential backoff while nothing gets through.
        self.rto_us = (self.rto_us * 2).min(self.config.max_rto_us);
        self.rto_deadline = Some(t_plus(now, self.rto_us));
    }

    /// The next datagram to send, if any: an ACK first, then retransmissions,
    /// then new fragments within the window.
    pub fn poll_transmit(&mut self, now: Micros) -> Option<Vec<u8>> {
        let dst_epoch = self.peer_epoch.unwrap_or(0);
        if self.ack_pending {
            self.ack_pending = false;
            let mut sack = 0u64;
            for s in self.received.keys() {
                let d = s.wrapping_sub(self.next_expected);
                if (1..=64).contains(&d) {
                    sack |= 1u64 << (d - 1);
                }
            }
            let out = Frame::Ack {
                src_epoch: self.epoch,
                dst_epoch,
                next: self.next_expected,
                sack,
            }
            .encode();
            self.stats.acks_sent += 1;
            self.stats.bytes_sent += out.len() as u64;
            return Some(out);
        }
        while let Some(s) = self.retransmit_now.pop() {
            let epoch = self.epoch;
            let rto = self.rto_us;
            let Some(f) = self.in_flight.get_mut(&s) else {
                continue;
            };
            if f.sacked {
                continue;
            }
            f.last_sent = now;
            f.retransmitted = true;
            let out = Frame::Data {
                src_epoch: epoch,
                dst_epoch,
                seq: s,
                frag_index: f.frag.index,
                frag_count: f.frag.count,
                payload: &f.frag.payload,
            }
            .encode();
            if self.rto_deadline.is_none() {
                self.rto_deadline = Some(t_plus(now, rto));
            }
            self.stats.retransmits += 1;
            self.stats.bytes_sent += out.len() as u64;
            return Some(out);
        }
        if (self.in_flight.len() as u32) < self.config.send_window
            && let Some(frag) = self.queue.pop_front()
        {
            let seq = self.next_seq;
            self.next_seq += 1;
            let out = Frame::Data {
                src_epoch: self.epoch,
                dst_epoch,
                seq,
                frag_index: frag.index,
                frag_count: frag.count,
                payload: &frag.payload,
            }
            .encode();
            self.in_flight.insert(
                seq,
                InFlight {
                    frag,
                    first_sent: now,
                    last_sent: now,
                    retransmitted: false,
                    sacked: false,
                },
            );
            if self.rto_deadline.is_none() {
                self.rto_deadline = Some(t_plus(now, self.rto_us));
            }
            self.stats.fragments_sent += 1;
            self.stats.bytes_sent += out.len() as u64;
            return Some(out);
        }
        None
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<ReliableEvent> {
        self.events.pop_front()
    }

    /// When [`Reliable::handle_timeout`] must run next (the retransmission
    /// timer), if anything is in flight.
    pub fn poll_timeout(&self) -> Option<Micros> {
        if self.in_flight.values().all(|f| f.sacked) {
            return None;
        }
        self.rto_deadline
    }
}

fn t_plus(t: Micros, us: u64) -> Micros {
    Micros(t.0.saturating_add(us))
}

#[cfg(test)]
mod tests;
