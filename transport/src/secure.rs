//! End-to-end encryption of a session's traffic: sender keys, pairwise key
//! channels, rotation when a member leaves, and a replay window, sans-IO.
//!
//! Everything a participant sends through a relay (RTP-MIDI, AppleMIDI
//! session packets, the session document's [`crate::reliable`] frames) is
//! sealed here first, so the relay sees the routing header, the size and the
//! time of each packet and nothing else.
//!
//! # Keys
//!
//! - Every member has an X25519 identity (raw 32-byte keys here; the CLI
//!   converts from `jam_capture::Identity`), registered with the control
//!   plane, which hands every member the others' public keys.
//! - **Pairwise channel** from member `a` to member `b`:
//!   `HKDF-SHA256(salt = "jam-e2e-pairwise-v1", ikm = X25519(a, B),
//!   info = session id · a's member id · A · b's member id · B)`. Each
//!   direction has its own key, and both public keys and the session id are
//!   bound in, so a key never serves another session or another pair. A
//!   shared secret that is all zeros (a low-order public key) is refused.
//! - **Sender key**: each member seals its own outgoing stream once with a
//!   random ChaCha20-Poly1305 key of its own, numbered by an *epoch*; the
//!   key travels to every current member in a [`FrameKind::Key`] frame over
//!   the pairwise channel.
//! - **Rotation**: when [`SecureSession::set_members`] sees a member gone,
//!   the session draws a new sender key under a new epoch and sends it to
//!   the remaining members only, and forgets every key it held from the
//!   leaver. The leaver therefore holds no key for anything sent after the
//!   rotation.
//!
//! Epochs grow: a new epoch is `max(previous + 1, unix seconds)`, so a
//! member that restarts (and draws a fresh key) starts above every epoch it
//! used before. Receivers keep the two newest epochs per sender (the
//! previous one for packets still in flight during a rotation) and refuse a
//! key for an older epoch, or a different key for an epoch they already
//! hold, so an old key frame replayed cannot reopen an old epoch.
//!
//! # Frame
//!
//! ```text
//!  0     1      2             6                  14
//! +-----+------+-------------+-------------------+----------------------+
//! | ver | kind | epoch (u32) | counter (u64)     | ciphertext · tag (16) |
//! +-----+------+-------------+-------------------+----------------------+
//! ```
//!
//! The nonce is `epoch · counter` (12 bytes, big-endian). The associated
//! data is a label, the session id, the sender's member id, (for pairwise
//! frames) the addressee's member id, and the 14 header bytes. Data frames
//! are sealed under the sender key of `epoch` with `counter` counting from 0
//! for each epoch; their plaintext is a channel byte (see [`Channel`]) and
//! the body. Key frames carry the sender's 32-byte key for `epoch`; key
//! requests are empty; both are sealed under the pairwise key, with the
//! sender's current epoch and a per-addressee counter in the nonce. The
//! pairwise key is deterministic, so its counters start in every epoch at a
//! secret 62-bit point drawn from the instance's seed: a member that
//! restarts within the same wall-clock second (same first epoch) does not
//! repeat the nonces of its previous instance.
//!
//! Every receiver keeps a [`ReplayWindow`] per sender and epoch (and per
//! pairwise channel), so a replayed frame is refused, as is any frame whose
//! bytes were changed.
//!
//! ```
//! use jam_core::Micros;
//! use jam_transport::secure::{Channel, Member, Opened, SecureSession};
//! use x25519_dalek::{PublicKey, StaticSecret};
//!
//! let (sa, sb) = ([1u8; 32], [2u8; 32]);
//! let pa = PublicKey::from(&StaticSecret::from(sa)).to_bytes();
//! let pb = PublicKey::from(&StaticSecret::from(sb)).to_bytes();
//! let members = [Member { id: 1, public_key: pa }, Member { id: 2, public_key: pb }];
//! let mut a = SecureSession::new(7, 1, sa, [11; 32], 1_700_000_000);
//! let mut b = SecureSession::new(7, 2, sb, [12; 32], 1_700_000_000);
//! a.set_members(1_700_000_000, &members);
//! b.set_members(1_700_000_000, &members);
//! // Deliver a's key frame to b.
//! while let Some((dest, frame)) = a.poll_transmit() {
//!     assert_eq!(dest, 2);
//!     b.open(Micros::ZERO, 1, &frame).unwrap();
//! }
//! let frame = a.seal(2, Channel::Data, b"note on").unwrap();
//! match b.open(Micros::ZERO, 1, &frame).unwrap() {
//!     Opened::Data { channel, body } => {
//!         assert_eq!(channel, Channel::Data);
//!         assert_eq!(body, b"note on");
//!     }
//!     other => panic!("{other:?}"),
//! }
//! // The same frame again is a replay.
//! assert!(b.open(Micros::ZERO, 1, &frame).is_err());
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use hkdf::Hkdf;
use jam_core::Micros;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

/// The frame format version this module speaks.
pub const VERSION: u8 = 1;
/// Length of the frame header (version, kind, epoch, counter).
pub const HEADER_LEN: usize = 14;
/// Length of the Poly1305 tag at the end of every frame.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed data frame adds to its body (header, channel byte, tag).
pub const DATA_OVERHEAD: usize = HEADER_LEN + 1 + TAG_LEN;
/// Length of a key frame.
pub const KEY_FRAME_LEN: usize = HEADER_LEN + 32 + TAG_LEN;
/// How many counters below the newest one a receiver still accepts (once
/// each). A sender's counter runs over all its addressees, so the window is
/// wide enough for a few dozen peers' interleaved packets to be reordered.
pub const REPLAY_WINDOW: u64 = 2048;
/// How long after asking a sender for its key a receiver asks again.
pub const KEY_REQUEST_INTERVAL: Duration = Duration::from_millis(250);

const DATA_LABEL: &[u8] = b"jam-e2e-data-v1";
const PAIR_LABEL: &[u8] = b"jam-e2e-pair-v1";
const PAIR_SALT: &[u8] = b"jam-e2e-pairwise-v1";

/// The kind of a frame (the header's second byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FrameKind {
    /// A channel byte and a body, sealed under the sender key.
    Data,
    /// The sender's key for an epoch, sealed under the pairwise key.
    Key,
    /// "Send me your current key", sealed under the pairwise key.
    KeyRequest,
}

impl FrameKind {
    /// The byte on the wire.
    pub const fn to_byte(self) -> u8 {
        match self {
            FrameKind::Data => 1,
            FrameKind::Key => 2,
            FrameKind::KeyRequest => 3,
        }
    }

    /// The kind of a byte, if it is one.
    pub const fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => FrameKind::Data,
            2 => FrameKind::Key,
            3 => FrameKind::KeyRequest,
            _ => return None,
        })
    }
}

/// What a data frame carries, so that one relay stream multiplexes the
/// AppleMIDI ports and the session document without the relay learning
/// which is which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Channel {
    /// AppleMIDI session packets of the control port.
    Control,
    /// RTP-MIDI and AppleMIDI packets of the data port.
    Data,
    /// [`crate::reliable`] frames (the session document's sync messages).
    Reliable,
    /// Direct-path probes ([`crate::direct::Probe`]), sent straight to a
    /// member's address instead of through the relay.
    Path,
}

impl Channel {
    /// The byte in the plaintext.
    pub const fn to_byte(self) -> u8 {
        match self {
            Channel::Control => 0,
            Channel::Data => 1,
            Channel::Reliable => 2,
            Channel::Path => 3,
        }
    }

    /// The channel of a byte, if it is one.
    pub const fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Channel::Control,
            1 => Channel::Data,
            2 => Channel::Reliable,
            3 => Channel::Path,
            _ => return None,
        })
    }
}

/// The clear header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the frame carries.
    pub kind: FrameKind,
    /// The sender's key epoch.
    pub epoch: u32,
    /// The nonce counter.
    pub counter: u64,
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Shorter than a header and a tag.
    #[error("frame of {0} bytes is shorter than a header and a tag")]
    Truncated(usize),
    /// A version this module does not speak.
    #[error("unsupported frame version {0}")]
    Version(u8),
    /// An unknown kind byte.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// A key frame or key request of the wrong length.
    #[error("{kind:?} frame of {len} bytes")]
    BadLength {
        /// The frame's kind.
        kind: FrameKind,
        /// Its length.
        len: usize,
    },
}

impl FrameHeader {
    /// Parses the clear part of a frame and checks its length for its kind;
    /// returns the header and the ciphertext with its tag.
    pub fn parse(frame: &[u8]) -> Result<(FrameHeader, &[u8]), FrameError> {
        if frame.len() < HEADER_LEN + TAG_LEN {
            return Err(FrameError::Truncated(frame.len()));
        }
        if frame[0] != VERSION {
            return Err(FrameError::Version(frame[0]));
        }
        let kind = FrameKind::from_byte(frame[1]).ok_or(FrameError::UnknownKind(frame[1]))?;
        let ok = match kind {
            FrameKind::Data => frame.len() > HEADER_LEN + TAG_LEN,
            FrameKind::Key => frame.len() == KEY_FRAME_LEN,
            FrameKind::KeyRequest => frame.len() == HEADER_LEN + TAG_LEN,
        };
        if !ok {
            return Err(FrameError::BadLength {
                kind,
                len: frame.len(),
            });
        }
        let epoch = u32::from_be_bytes(frame[2..6].try_into().expect("4 bytes"));
        let counter = u64::from_be_bytes(frame[6..14].try_into().expect("8 bytes"));
        Ok((
            FrameHeader {
                kind,
                epoch,
                counter,
            },
            &frame[HEADER_LEN..],
        ))
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        out.push(self.kind.to_byte());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.counter.to_be_bytes());
    }

    fn nonce(&self) -> Nonce {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&self.epoch.to_be_bytes());
        n[4..].copy_from_slice(&self.counter.to_be_bytes());
        Nonce::from(n)
    }
}

/// Why a frame was not opened. Nothing is ever half-applied: a refused
/// frame changes no state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Not a frame at all.
    #[error("malformed frame: {0}")]
    Malformed(#[from] FrameError),
    /// The sender is not a current member (or its key is unusable).
    #[error("member {0} is not in the session")]
    UnknownSender(u32),
    /// No key for this sender and epoch (yet, or any more); a key request
    /// may have been queued.
    #[error("no key for member {sender} epoch {epoch}")]
    NoKey {
        /// The sender.
        sender: u32,
        /// The epoch the frame names.
        epoch: u32,
    },
    /// The tag does not verify: tampered, forged, or sealed under another
    /// key.
    #[error("frame from member {0} does not authenticate")]
    BadTag(u32),
    /// The counter was seen before or is below the replay window.
    #[error("replayed or stale frame from member {sender} (epoch {epoch}, counter {counter})")]
    Replay {
        /// The sender.
        sender: u32,
        /// The epoch.
        epoch: u32,
        /// The counter.
        counter: u64,
    },
    /// A key for an epoch older than the ones kept, or a different key for
    /// an epoch already held.
    #[error("stale or conflicting key from member {sender} for epoch {epoch}")]
    StaleKey {
        /// The sender.
        sender: u32,
        /// The epoch.
        epoch: u32,
    },
    /// An authentic data frame whose channel byte is unknown.
    #[error("unknown channel {0}")]
    UnknownChannel(u8),
}

/// Why a frame could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The addressee is not a current member.
    #[error("member {0} is not in the session")]
    UnknownMember(u32),
    /// The epoch's nonce counter is used up (after 2^64 frames).
    #[error("nonce counter exhausted")]
    Exhausted,
}

/// What an opened frame was.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Opened<'a> {
    /// Application bytes.
    Data {
        /// Which stream they belong to.
        channel: Channel,
        /// The plaintext.
        body: &'a [u8],
    },
    /// The sender's key for an epoch was installed.
    KeyInstalled {
        /// The epoch.
        epoch: u32,
    },
    /// A key frame that repeats a key already held.
    KeyKnown,
    /// The sender asked for our key; a key frame was queued.
    KeyRequested,
}

/// A sliding window over 64-bit counters: each counter is accepted once,
/// and counters more than [`REPLAY_WINDOW`] below the newest are refused.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Newest counter accepted plus one (0 = none yet).
    top: u64,
    bits: [u64; (REPLAY_WINDOW / 64) as usize],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// An empty window.
    pub const fn new() -> Self {
        ReplayWindow {
            top: 0,
            bits: [0; (REPLAY_WINDOW / 64) as usize],
        }
    }

    fn slot(c: u64) -> (usize, u64) {
        let i = c % REPLAY_WINDOW;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    /// Whether `counter` would be accepted (check before authenticating,
    /// [`ReplayWindow::commit`] after).
    pub fn check(&self, counter: u64) -> bool {
        if counter >= self.top {
            return counter != u64::MAX;
        }
        if self.top - counter > REPLAY_WINDOW {
            return false;
        }
        let (w, b) = Self::slot(counter);
        self.bits[w] & b == 0
    }

    /// Records `counter` as seen. Call only after [`ReplayWindow::check`]
    /// returned true and the frame authenticated.
    pub fn commit(&mut self, counter: u64) {
        if counter >= self.top {
            let advance = counter + 1 - self.top;
            if advance >= REPLAY_WINDOW {
                self.bits = [0; (REPLAY_WINDOW / 64) as usize];
            } else {
                for c in self.top..=counter {
                    let (w, b) = Self::slot(c);
                    self.bits[w] &= !b;
                }
            }
            self.top = counter + 1;
        }
        let (w, b) = Self::slot(counter);
        self.bits[w] |= b;
    }
}

/// A member of the session as the control plane lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Member id on the relay.
    pub id: u32,
    /// The X25519 public key of the device it joined with.
    pub public_key: [u8; 32],
}

/// A sender key of one epoch with the receiver's replay window.
#[derive(Clone)]
struct RecvKey {
    epoch: u32,
    key: Zeroizing<[u8; 32]>,
    cipher: ChaCha20Poly1305,
    window: ReplayWindow,
}

/// What we hold about one other member.
#[derive(Clone)]
struct Peer {
    public_key: [u8; 32],
    /// Pairwise key us → them.
    to: Zeroizing<[u8; 32]>,
    /// Pairwise key them → us.
    from: Zeroizing<[u8; 32]>,
    /// Counter of pairwise frames we sent them in our current epoch.
    to_counter: u64,
    /// Replay window of their pairwise frames, per their epoch.
    from_windows: BTreeMap<u32, ReplayWindow>,
    /// Their sender keys, newest last (at most two).
    keys: Vec<RecvKey>,
    /// When we last asked them for their key.
    last_request: Option<Micros>,
}

/// One member's end-to-end encryption state; see the [module docs](self).
/// Cloning copies the keys (a clone must not seal: it would reuse nonces;
/// it serves tests and fuzzing, which open frames against a fixed state).
#[derive(Clone)]
pub struct SecureSession {
    session: u64,
    member: u32,
    secret: StaticSecret,
    public: [u8; 32],
    /// Secret seed the sender keys are derived from, and how many were.
    key_seed: Zeroizing<[u8; 32]>,
    keys_drawn: u64,
    /// Where pairwise counters start in each epoch
    /// (see `pairwise_counter_base`).
    pair_base: u64,
    epoch: u32,
    send_key: Zeroizing<[u8; 32]>,
    send_cipher: ChaCha20Poly1305,
    send_counter: u64,
    peers: BTreeMap<u32, Peer>,
    transmits: VecDeque<(u32, Vec<u8>)>,
    buf: Vec<u8>,
    rotations: u64,
}

impl std::fmt::Debug for SecureSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureSession")
            .field("session", &self.session)
            .field("member", &self.member)
            .field("epoch", &self.epoch)
            .field("peers", &self.peers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn aad(label: &[u8], session: u64, sender: u32, dest: Option<u32>, header: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(label.len() + 8 + 8 + HEADER_LEN);
    a.extend_from_slice(label);
    a.extend_from_slice(&session.to_be_bytes());
    a.extend_from_slice(&sender.to_be_bytes());
    if let Some(d) = dest {
        a.extend_from_slice(&d.to_be_bytes());
    }
    a.extend_from_slice(header);
    a
}

/// The pairwise key for frames from (`from`, `from_pub`) to (`to`,
/// `to_pub`) in `session`, given the X25519 shared secret of the two.
/// `None` if the shared secret is all zeros (a low-order public key).
pub fn pairwise_key(
    shared: &[u8; 32],
    session: u64,
    from: u32,
    from_pub: &[u8; 32],
    to: u32,
    to_pub: &[u8; 32],
) -> Option<Zeroizing<[u8; 32]>> {
    if shared.iter().all(|&b| b == 0) {
        return None;
    }
    let mut info = Vec::with_capacity(8 + 2 * (4 + 32));
    info.extend_from_slice(&session.to_be_bytes());
    info.extend_from_slice(&from.to_be_bytes());
    info.extend_from_slice(from_pub);
    info.extend_from_slice(&to.to_be_bytes());
    info.extend_from_slice(to_pub);
    let mut out = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(PAIR_SALT), shared)
        .expand(&info, out.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    Some(out)
}

/// Sender key number `n` drawn from a secret seed:
/// `HKDF-SHA256(salt = "jam-e2e-sender-v1", ikm = seed, info = n)`.
/// Where this instance's pairwise counters start in every epoch: a secret
/// 62-bit value drawn from the seed. Pairwise keys are deterministic (static
/// X25519 between the two members), and a member that restarts within the
/// same wall-clock second gets the same first epoch again; starting from a
/// random point keeps its pairwise nonces from repeating the previous
/// instance's (two instances overlap only if their few counters meet in a
/// 2^62 space).
fn pairwise_counter_base(seed: &[u8; 32]) -> u64 {
    let mut out = [0u8; 8];
    Hkdf::<Sha256>::new(Some(b"jam-e2e-pairwise-base-v1"), seed)
        .expand(&[], &mut out)
        .expect("8 bytes is a valid HKDF-SHA256 output length");
    u64::from_be_bytes(out) >> 2
}

fn sender_key(seed: &[u8; 32], n: u64) -> Zeroizing<[u8; 32]> {
    let mut out = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(b"jam-e2e-sender-v1"), seed)
        .expand(&n.to_be_bytes(), out.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    out
}

/// The X25519 public key of a raw 32-byte secret.
pub fn public_key(secret: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*secret)).to_bytes()
}

fn next_epoch(previous: u32, unix_secs: u64) -> u32 {
    let wall = u32::try_from(unix_secs).unwrap_or(u32::MAX - 1);
    wall.max(previous.saturating_add(1))
}

impl SecureSession {
    /// State for member `member` of relay session `session`, with the raw
    /// X25519 secret of the device it joined with. `seed` seeds the sender
    /// keys (32 bytes from the operating system's generator at the edge);
    /// `unix_secs` (wall-clock seconds) numbers the first epoch.
    pub fn new(
        session: u64,
        member: u32,
        mut secret: [u8; 32],
        seed: [u8; 32],
        unix_secs: u64,
    ) -> Self {
        let sk = StaticSecret::from(secret);
        secret.zeroize();
        let public = PublicKey::from(&sk).to_bytes();
        let key_seed = Zeroizing::new(seed);
        let key = sender_key(&key_seed, 0);
        let pair_base = pairwise_counter_base(&key_seed);
        SecureSession {
            pair_base,
            session,
            member,
            secret: sk,
            public,
            key_seed,
            keys_drawn: 1,
            epoch: next_epoch(0, unix_secs),
            send_cipher: ChaCha20Poly1305::new(&(*key).into()),
            send_key: key,
            send_counter: 0,
            peers: BTreeMap::new(),
            transmits: VecDeque::new(),
            buf: Vec::new(),
            rotations: 0,
        }
    }

    /// Our X25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// Our member id.
    pub fn member(&self) -> u32 {
        self.member
    }

    /// The epoch of our current sender key.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// How many times our sender key was rotated.
    pub fn rotations(&self) -> u64 {
        self.rotations
    }

    /// The other members we hold pairwise keys for.
    pub fn members(&self) -> impl Iterator<Item = u32> + '_ {
        self.peers.keys().copied()
    }

    /// The epochs of `sender`'s keys we hold, oldest first.
    pub fn held_epochs(&self, sender: u32) -> Vec<u32> {
        self.peers
            .get(&sender)
            .map(|p| p.keys.iter().map(|k| k.epoch).collect())
            .unwrap_or_default()
    }

    /// Updates the member list (ours may be included; it is skipped). New
    /// members get our current key. If a member we knew is gone (or came
    /// back with another public key), we rotate: a fresh sender key under a
    /// new epoch goes to every remaining member, and everything we held from
    /// the leaver is forgotten. Returns true if we rotated.
    pub fn set_members(&mut self, unix_secs: u64, members: &[Member]) -> bool {
        let wanted: BTreeMap<u32, [u8; 32]> = members
            .iter()
            .filter(|m| m.id != self.member)
            .map(|m| (m.id, m.public_key))
            .collect();
        let gone: Vec<u32> = self
            .peers
            .iter()
            .filter(|(id, p)| wanted.get(id) != Some(&p.public_key))
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            self.peers.remove(id);
        }
        let mut added = Vec::new();
        for (&id, pk) in &wanted {
            if self.peers.contains_key(&id) {
                continue;
            }
            let shared = self.secret.diffie_hellman(&PublicKey::from(*pk));
            let shared = Zeroizing::new(shared.to_bytes());
            let (Some(to), Some(from)) = (
                pairwise_key(&shared, self.session, self.member, &self.public, id, pk),
                pairwise_key(&shared, self.session, id, pk, self.member, &self.public),
            ) else {
                tracing::warn!(member = id, "ignoring a member with a low-order public key");
                continue;
            };
            self.peers.insert(
                id,
                Peer {
                    public_key: *pk,
                    to,
                    from,
                    to_counter: self.pair_base,
                    from_windows: BTreeMap::new(),
                    keys: Vec::new(),
                    last_request: None,
                },
            );
            added.push(id);
        }
        if !gone.is_empty() {
            self.rotate(unix_secs);
            return true;
        }
        for id in added {
            self.queue_key(id);
        }
        false
    }

    /// Draws a new sender key under a new epoch and queues it for every
    /// current member.
    pub fn rotate(&mut self, unix_secs: u64) {
        self.epoch = next_epoch(self.epoch, unix_secs);
        self.send_key = sender_key(&self.key_seed, self.keys_drawn);
        self.keys_drawn += 1;
        self.send_cipher = ChaCha20Poly1305::new(&(*self.send_key).into());
        self.send_counter = 0;
        self.rotations += 1;
        let ids: Vec<u32> = self.peers.keys().copied().collect();
        for p in self.peers.values_mut() {
            p.to_counter = self.pair_base;
        }
        for id in ids {
            self.queue_key(id);
        }
    }

    /// Queues our current key for every member again (a cheap repair for a
    /// lost key frame; the session layer calls it now and then).
    pub fn resend_keys(&mut self) {
        let ids: Vec<u32> = self.peers.keys().copied().collect();
        for id in ids {
            self.queue_key(id);
        }
    }

    fn pairwise_frame(&mut self, dest: u32, kind: FrameKind, body: &[u8]) -> Option<Vec<u8>> {
        let peer = self.peers.get_mut(&dest)?;
        let h = FrameHeader {
            kind,
            epoch: self.epoch,
            counter: peer.to_counter,
        };
        peer.to_counter += 1;
        let mut out = Vec::with_capacity(HEADER_LEN + body.len() + TAG_LEN);
        h.write(&mut out);
        let a = aad(
            PAIR_LABEL,
            self.session,
            self.member,
            Some(dest),
            &out[..HEADER_LEN],
        );
        out.extend_from_slice(body);
        let cipher = ChaCha20Poly1305::new(&(*peer.to).into());
        let tag = cipher
            .encrypt_inout_detached(&h.nonce(), &a, (&mut out[HEADER_LEN..]).into())
            .expect("a short message is within ChaCha20-Poly1305 limits");
        out.extend_from_slice(&tag);
        Some(out)
    }

    fn queue_key(&mut self, dest: u32) {
        let key = self.send_key.clone();
        if let Some(f) = self.pairwise_frame(dest, FrameKind::Key, key.as_ref()) {
            self.transmits.push_back((dest, f));
        }
    }

    /// Seals `body` for `dest` under our sender key. The frame goes to the
    /// relay as the payload of a data packet addressed to `dest`.
    pub fn seal(&mut self, dest: u32, channel: Channel, body: &[u8]) -> Result<Vec<u8>, SealError> {
        if !self.peers.contains_key(&dest) {
            return Err(SealError::UnknownMember(dest));
        }
        self.seal_for_any(channel, body)
    }

    /// Seals `body` under our sender key for whoever holds it (a frame the
    /// relay fans out to every member).
    pub fn seal_for_any(&mut self, channel: Channel, body: &[u8]) -> Result<Vec<u8>, SealError> {
        if self.send_counter == u64::MAX {
            return Err(SealError::Exhausted);
        }
        let h = FrameHeader {
            kind: FrameKind::Data,
            epoch: self.epoch,
            counter: self.send_counter,
        };
        self.send_counter += 1;
        let mut out = Vec::with_capacity(body.len() + DATA_OVERHEAD);
        h.write(&mut out);
        let mut a = [0u8; DATA_LABEL.len() + 12 + HEADER_LEN];
        a[..DATA_LABEL.len()].copy_from_slice(DATA_LABEL);
        a[DATA_LABEL.len()..DATA_LABEL.len() + 8].copy_from_slice(&self.session.to_be_bytes());
        a[DATA_LABEL.len() + 8..DATA_LABEL.len() + 12].copy_from_slice(&self.member.to_be_bytes());
        a[DATA_LABEL.len() + 12..].copy_from_slice(&out[..HEADER_LEN]);
        out.push(channel.to_byte());
        out.extend_from_slice(body);
        let tag = self
            .send_cipher
            .encrypt_inout_detached(&h.nonce(), &a, (&mut out[HEADER_LEN..]).into())
            .expect("a datagram is within ChaCha20-Poly1305 limits");
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// The next key frame or key request to send: (addressee, frame).
    pub fn poll_transmit(&mut self) -> Option<(u32, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// Opens a frame the relay delivered from `sender` (the relay header's
    /// sender id). `now` paces key requests.
    pub fn open(
        &mut self,
        now: Micros,
        sender: u32,
        frame: &[u8],
    ) -> Result<Opened<'_>, OpenError> {
        let (h, sealed) = FrameHeader::parse(frame)?;
        let header = &frame[..HEADER_LEN];
        let (ct, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        let tag = Tag::try_from(tag).expect("16 bytes");
        let Some(peer) = self.peers.get_mut(&sender) else {
            return Err(OpenError::UnknownSender(sender));
        };
        match h.kind {
            FrameKind::Data => {
                let Some(k) = peer.keys.iter_mut().find(|k| k.epoch == h.epoch) else {
                    let newer = peer.keys.last().is_none_or(|k| h.epoch > k.epoch);
                    let due = peer
                        .last_request
                        .is_none_or(|t| now.saturating_duration_since(t) >= KEY_REQUEST_INTERVAL);
                    if newer && due {
                        peer.last_request = Some(now);
                        if let Some(f) = self.pairwise_frame(sender, FrameKind::KeyRequest, &[]) {
                            self.transmits.push_back((sender, f));
                        }
                    }
                    return Err(OpenError::NoKey {
                        sender,
                        epoch: h.epoch,
                    });
                };
                if !k.window.check(h.counter) {
                    return Err(OpenError::Replay {
                        sender,
                        epoch: h.epoch,
                        counter: h.counter,
                    });
                }
                let a = aad(DATA_LABEL, self.session, sender, None, header);
                self.buf.clear();
                self.buf.extend_from_slice(ct);
                k.cipher
                    .decrypt_inout_detached(&h.nonce(), &a, self.buf.as_mut_slice().into(), &tag)
                    .map_err(|_| OpenError::BadTag(sender))?;
                k.window.commit(h.counter);
                let channel = Channel::from_byte(self.buf[0])
                    .ok_or(OpenError::UnknownChannel(self.buf[0]))?;
                Ok(Opened::Data {
                    channel,
                    body: &self.buf[1..],
                })
            }
            FrameKind::Key | FrameKind::KeyRequest => {
                let w = peer.from_windows.get(&h.epoch);
                if w.is_some_and(|w| !w.check(h.counter)) {
                    return Err(OpenError::Replay {
                        sender,
                        epoch: h.epoch,
                        counter: h.counter,
                    });
                }
                // An epoch older than the keys we hold is stale before we
                // spend a decryption on it.
                if peer.keys.first().is_some_and(|k| h.epoch < k.epoch) {
                    return Err(OpenError::StaleKey {
                        sender,
                        epoch: h.epoch,
                    });
                }
                let a = aad(PAIR_LABEL, self.session, sender, Some(self.member), header);
                let mut plain = Zeroizing::new(ct.to_vec());
                ChaCha20Poly1305::new(&(*peer.from).into())
                    .decrypt_inout_detached(&h.nonce(), &a, plain.as_mut_slice().into(), &tag)
                    .map_err(|_| OpenError::BadTag(sender))?;
                if h.kind == FrameKind::KeyRequest {
                    peer.from_windows
                        .entry(h.epoch)
                        .or_default()
                        .commit(h.counter);
                    trim_windows(&mut peer.from_windows);
                    self.queue_key(sender);
                    return Ok(Opened::KeyRequested);
                }
                let key: [u8; 32] = plain.as_slice().try_into().expect("length checked");
                if let Some(k) = peer.keys.iter().find(|k| k.epoch == h.epoch) {
                    if *k.key != key {
                        return Err(OpenError::StaleKey {
                            sender,
                            epoch: h.epoch,
                        });
                    }
                    peer.from_windows
                        .entry(h.epoch)
                        .or_default()
                        .commit(h.counter);
                    return Ok(Opened::KeyKnown);
                }
                peer.from_windows
                    .entry(h.epoch)
                    .or_default()
                    .commit(h.counter);
                trim_windows(&mut peer.from_windows);
                peer.keys.push(RecvKey {
                    epoch: h.epoch,
                    cipher: ChaCha20Poly1305::new(&key.into()),
                    key: Zeroizing::new(key),
                    window: ReplayWindow::new(),
                });
                peer.keys.sort_by_key(|k| k.epoch);
                if peer.keys.len() > 2 {
                    peer.keys.remove(0);
                }
                Ok(Opened::KeyInstalled { epoch: h.epoch })
            }
        }
    }
}

/// The body of the `secure_frame` fuzz target, shared with the stable
/// test that replays its corpus: member 2 of a three-member session, holding
/// member 1's key, opens `data[1..]` as a frame from member `data[0] % 4`.
/// Opening never panics, a refused frame changes nothing, and a frame that
/// opened once is refused as a replay the second time.
pub fn fuzz_one(data: &[u8]) {
    let Some((&who, frame)) = data.split_first() else {
        return;
    };
    static START: std::sync::LazyLock<SecureSession> = std::sync::LazyLock::new(|| fuzz_pair().1);
    let mut b = START.clone();
    let sender = u32::from(who % 4);
    let before = b.held_epochs(1);
    match b.open(Micros::ZERO, sender, frame) {
        Ok(Opened::Data { .. }) => {
            assert!(matches!(
                b.open(Micros::ZERO, sender, frame),
                Err(OpenError::Replay { .. })
            ));
        }
        Ok(_) => {}
        Err(_) => assert_eq!(b.held_epochs(1), before, "a refused frame changed the keys"),
    }
}

/// Members 1 and 2 of session 0x5e55 (a third member, 3, is listed too)
/// with fixed keys, 2 holding 1's key: the fuzz target's starting state,
/// and the source of its seed corpus.
pub fn fuzz_pair() -> (SecureSession, SecureSession) {
    let ids = [1u32, 2, 3];
    let members: Vec<Member> = ids
        .iter()
        .map(|&id| Member {
            id,
            public_key: PublicKey::from(&StaticSecret::from([id as u8; 32])).to_bytes(),
        })
        .collect();
    let mut a = SecureSession::new(0x5e55, 1, [1; 32], [101; 32], 1_700_000_000);
    let mut b = SecureSession::new(0x5e55, 2, [2; 32], [102; 32], 1_700_000_000);
    a.set_members(1_700_000_000, &members);
    b.set_members(1_700_000_000, &members);
    while let Some((dest, f)) = a.poll_transmit() {
        if dest == 2 {
            let _ = b.open(Micros::ZERO, 1, &f);
        }
    }
    while b.poll_transmit().is_some() {}
    (a, b)
}

/// Keeps the pairwise replay windows of the newest few epochs.
fn trim_windows(w: &mut BTreeMap<u32, ReplayWindow>) {
    while w.len() > 4 {
        w.pop_first();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    const T0: u64 = 1_700_000_000;

    fn ident(n: u8) -> ([u8; 32], [u8; 32]) {
        let s = [n; 32];
        (s, PublicKey::from(&StaticSecret::from(s)).to_bytes())
    }

    fn members(ids: &[u32]) -> Vec<Member> {
        ids.iter()
            .map(|&id| Member {
                id,
                public_key: ident(id as u8).1,
            })
            .collect()
    }

    fn node(id: u32) -> SecureSession {
        SecureSession::new(0x5e55, id, ident(id as u8).0, [id as u8 + 100; 32], T0)
    }

    /// Delivers every queued key frame among `nodes` until all are quiet.
    fn exchange(nodes: &mut [SecureSession]) {
        loop {
            let mut moved = false;
            for i in 0..nodes.len() {
                while let Some((dest, f)) = nodes[i].poll_transmit() {
                    moved = true;
                    let from = nodes[i].member();
                    if let Some(n) = nodes.iter_mut().find(|n| n.member() == dest) {
                        let _ = n.open(Micros::ZERO, from, &f);
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn data(r: Result<Opened<'_>, OpenError>) -> Result<Vec<u8>, OpenError> {
        match r? {
            Opened::Data { body, .. } => Ok(body.to_vec()),
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[test]
    fn three_members_read_each_other() {
        let ms = members(&[1, 2, 3]);
        let mut n: Vec<_> = [1, 2, 3].map(node).into();
        for x in &mut n {
            x.set_members(T0, &ms);
        }
        exchange(&mut n);
        for i in 0..3 {
            for j in 0..3 {
                if i == j {
                    continue;
                }
                let dest = n[j].member();
                let f = n[i].seal(dest, Channel::Reliable, b"sync").unwrap();
                let from = n[i].member();
                assert_eq!(data(n[j].open(Micros::ZERO, from, &f)).unwrap(), b"sync");
            }
        }
    }

    #[test]
    fn known_answer_vector() {
        // Pairwise key derivation and a data frame, computed independently
        // (Python `cryptography`: X25519, HKDF-SHA256, ChaCha20-Poly1305)
        // from the formulas in the module docs.
        let (sa, pa) = ident(1);
        let (_, pb) = ident(2);
        let shared = StaticSecret::from(sa)
            .diffie_hellman(&PublicKey::from(pb))
            .to_bytes();
        let k = pairwise_key(&shared, 0x5e55, 1, &pa, 2, &pb).unwrap();
        assert_eq!(
            crate::relay::hex_encode(k.as_ref()),
            "e6e9713ca6cafb0a85cf6c6a7d2ccc1e365f7150edb981fcae44d969eb1758f5"
        );
        let mut a = node(1);
        a.set_members(T0, &members(&[1, 2]));
        *a.send_key = [0x42; 32];
        a.send_cipher = ChaCha20Poly1305::new(&(*a.send_key).into());
        let f = a.seal(2, Channel::Data, b"\x90\x3c\x64").unwrap();
        assert_eq!(
            crate::relay::hex_encode(&f),
            "01016553f1000000000000000000d348d1c49661079f905908a72798a9ecbe1b0612"
        );
    }

    #[test]
    fn replayed_and_tampered_frames_are_refused() {
        let ms = members(&[1, 2]);
        let mut n: Vec<_> = [1, 2].map(node).into();
        for x in &mut n {
            x.set_members(T0, &ms);
        }
        exchange(&mut n);
        let f = n[0].seal(2, Channel::Data, b"hello").unwrap();
        for i in 0..f.len() {
            for bit in [0x01, 0x80] {
                let mut t = f.clone();
                t[i] ^= bit;
                assert!(n[1].open(Micros::ZERO, 1, &t).is_err(), "byte {i}");
            }
        }
        // The untouched frame still opens once, then never again.
        assert_eq!(data(n[1].open(Micros::ZERO, 1, &f)).unwrap(), b"hello");
        assert!(matches!(
            n[1].open(Micros::ZERO, 1, &f),
            Err(OpenError::Replay { .. })
        ));
        // Claiming another sender id breaks the tag (the id is bound).
        let g = n[0].seal(2, Channel::Data, b"x").unwrap();
        n[1].set_members(T0, &members(&[1, 2, 3]));
        assert!(n[1].open(Micros::ZERO, 3, &g).is_err());
    }

    #[test]
    fn a_non_member_can_neither_read_nor_inject() {
        let ms = members(&[1, 2]);
        let mut n: Vec<_> = [1, 2].map(node).into();
        for x in &mut n {
            x.set_members(T0, &ms);
        }
        exchange(&mut n);
        // Member 9 is not in anyone's list: its frames are refused, and it
        // holds no key to open theirs even if it sees them.
        let mut outsider = node(9);
        outsider.set_members(T0, &members(&[1, 2, 9]));
        let f = outsider.seal(1, Channel::Data, b"evil").unwrap();
        assert_eq!(
            n[0].open(Micros::ZERO, 9, &f),
            Err(OpenError::UnknownSender(9))
        );
        // Posing as member 2 does not help: the tag is wrong.
        assert!(n[0].open(Micros::ZERO, 2, &f).is_err());
        let g = n[0].seal(2, Channel::Data, b"secret").unwrap();
        assert!(matches!(
            outsider.open(Micros::ZERO, 1, &g),
            Err(OpenError::NoKey { .. })
        ));
    }

    #[test]
    fn a_leaver_cannot_read_anything_after_the_rotation() {
        let ms = members(&[1, 2, 3]);
        let mut n: Vec<_> = [1, 2, 3].map(node).into();
        for x in &mut n {
            x.set_members(T0, &ms);
        }
        exchange(&mut n);
        let before = n[0].seal(3, Channel::Data, b"before").unwrap();
        assert_eq!(
            data(n[2].open(Micros::ZERO, 1, &before)).unwrap(),
            b"before"
        );
        // Member 3 leaves: 1 and 2 rotate and exchange new keys, while 3
        // keeps everything it had and sees every frame anyway.
        let mut leaver = n.pop().unwrap();
        let rest = members(&[1, 2]);
        for x in &mut n {
            assert!(x.set_members(T0, &rest));
        }
        // Key frames for 3 are never queued.
        for x in &mut n {
            let mut q = Vec::new();
            while let Some(t) = x.poll_transmit() {
                assert_ne!(t.0, 3);
                q.push(t);
            }
            for t in q {
                x.transmits.push_back(t);
            }
        }
        exchange(&mut n);
        let after = n[0].seal(2, Channel::Data, b"after").unwrap();
        assert_eq!(data(n[1].open(Micros::ZERO, 1, &after)).unwrap(), b"after");
        assert!(matches!(
            leaver.open(Micros::ZERO, 1, &after),
            Err(OpenError::NoKey { .. })
        ));
        // Its key request is sealed to 1, which no longer knows it.
        while let Some((dest, f)) = leaver.poll_transmit() {
            assert_eq!(
                n[0].open(Micros::ZERO, leaver.member(), &f),
                Err(OpenError::UnknownSender(3))
            );
            assert_eq!(dest, 1);
        }
        // And the remaining members no longer accept the leaver's frames.
        let f = leaver.seal(1, Channel::Data, b"still here").unwrap();
        assert_eq!(
            n[0].open(Micros::ZERO, 3, &f),
            Err(OpenError::UnknownSender(3))
        );
    }

    #[test]
    fn a_lost_key_frame_is_asked_for_again() {
        let ms = members(&[1, 2]);
        let mut a = node(1);
        let mut b = node(2);
        a.set_members(T0, &ms);
        b.set_members(T0, &ms);
        // a's key frame is lost.
        while a.poll_transmit().is_some() {}
        while let Some((_, f)) = b.poll_transmit() {
            a.open(Micros::ZERO, 2, &f).unwrap();
        }
        let f = a.seal(2, Channel::Data, b"1").unwrap();
        assert!(matches!(
            b.open(Micros::ZERO, 1, &f),
            Err(OpenError::NoKey { .. })
        ));
        // b asked; a answers with the key; the next frame opens.
        let (dest, req) = b.poll_transmit().unwrap();
        assert_eq!(dest, 1);
        assert_eq!(a.open(Micros::ZERO, 2, &req), Ok(Opened::KeyRequested));
        let (_, key) = a.poll_transmit().unwrap();
        assert!(matches!(
            b.open(Micros::ZERO, 1, &key),
            Ok(Opened::KeyInstalled { .. })
        ));
        assert_eq!(data(b.open(Micros::ZERO, 1, &f)).unwrap(), b"1");
        // The same key frame again changes nothing; a replayed request is
        // refused.
        assert!(matches!(
            b.open(Micros::ZERO, 1, &key),
            Err(OpenError::Replay { .. })
        ));
        assert!(matches!(
            a.open(Micros::ZERO, 2, &req),
            Err(OpenError::Replay { .. })
        ));
    }

    #[test]
    fn a_restart_in_the_same_second_never_repeats_a_pairwise_nonce() {
        // Same member, same static key, same session, same wall-clock
        // second: only the instance's seed differs, as after a crash and an
        // immediate restart.
        let ms = members(&[1, 2]);
        let mut first = SecureSession::new(0x5e55, 1, ident(1).0, [7; 32], T0);
        let mut second = SecureSession::new(0x5e55, 1, ident(1).0, [8; 32], T0);
        assert_eq!(first.epoch(), second.epoch());
        first.set_members(T0, &ms);
        second.set_members(T0, &ms);
        let (_, a) = first.poll_transmit().unwrap();
        let (_, b) = second.poll_transmit().unwrap();
        let (ha, hb) = (
            FrameHeader::parse(&a).unwrap().0,
            FrameHeader::parse(&b).unwrap().0,
        );
        assert_eq!(ha.kind, FrameKind::Key);
        assert_eq!(ha.epoch, hb.epoch);
        assert_ne!(ha.counter, hb.counter, "pairwise nonce reused");
        // Both still open at the receiver's side of the pairwise channel.
        let mut bob = node(2);
        bob.set_members(T0, &ms);
        bob.open(Micros::ZERO, 1, &a).unwrap();
    }

    #[test]
    fn an_old_key_frame_cannot_reopen_an_old_epoch() {
        let ms = members(&[1, 2]);
        let mut a = node(1);
        let mut b = node(2);
        a.set_members(T0, &ms);
        b.set_members(T0, &ms);
        let (_, k0) = a.poll_transmit().unwrap();
        b.open(Micros::ZERO, 1, &k0).unwrap();
        let old = a.seal(2, Channel::Data, b"old").unwrap();
        for i in 1..=3 {
            a.rotate(T0 + i);
            let (_, k) = a.poll_transmit().unwrap();
            b.open(Micros::ZERO, 1, &k).unwrap();
        }
        assert_eq!(b.held_epochs(1), vec![a.epoch() - 1, a.epoch()]);
        assert!(matches!(
            b.open(Micros::ZERO, 1, &k0),
            Err(OpenError::StaleKey { .. } | OpenError::Replay { .. })
        ));
        // Even sealed afresh (not a replay), a key for an epoch older than
        // the ones held is refused.
        let mut old_a = node(1);
        old_a.set_members(T0, &ms);
        old_a.peers.get_mut(&2).unwrap().to_counter += 99;
        while old_a.poll_transmit().is_some() {}
        let fresh = old_a.pairwise_frame(2, FrameKind::Key, &[0; 32]).unwrap();
        assert!(matches!(
            b.open(Micros::ZERO, 1, &fresh),
            Err(OpenError::StaleKey { .. })
        ));
        assert!(matches!(
            b.open(Micros::ZERO, 1, &old),
            Err(OpenError::NoKey { .. })
        ));
    }

    #[test]
    fn the_replay_window_accepts_reordering_once() {
        let mut w = ReplayWindow::new();
        for c in [5, 3, 4, 0, 10, 9, REPLAY_WINDOW + 10] {
            assert!(w.check(c), "{c}");
            w.commit(c);
            assert!(!w.check(c), "{c} twice");
        }
        assert!(!w.check(9));
        assert!(!w.check(10), "more than a window below the top");
        assert!(w.check(11));
        assert!(!w.check(u64::MAX));
    }

    proptest! {
        #[test]
        fn open_never_panics_on_arbitrary_bytes(sender in 0u32..4, bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut a = node(1);
            a.set_members(T0, &members(&[1, 2, 3]));
            let _ = a.open(Micros::ZERO, sender, &bytes);
            let _ = FrameHeader::parse(&bytes);
        }

        #[test]
        fn open_inverts_seal(bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..20),
                             order in any::<u64>()) {
            let ms = members(&[1, 2]);
            let mut n: Vec<_> = [1, 2].map(node).into();
            for x in &mut n {
                x.set_members(T0, &ms);
            }
            exchange(&mut n);
            let mut frames: Vec<_> = bodies.iter().map(|b| (b.clone(), n[0].seal(2, Channel::Data, b).unwrap())).collect();
            // Any delivery order within the window opens every frame once.
            let mut rng = StdRng::seed_from_u64(order);
            for i in (1..frames.len()).rev() {
                frames.swap(i, rng.random_range(0..=i));
            }
            for (body, f) in &frames {
                prop_assert_eq!(&data(n[1].open(Micros::ZERO, 1, f)).unwrap(), body);
            }
            for (_, f) in &frames {
                let replay_refused = matches!(n[1].open(Micros::ZERO, 1, f), Err(OpenError::Replay { .. }));
                prop_assert!(replay_refused);
            }
        }

        #[test]
        fn window_accepts_each_counter_at_most_once(counters in proptest::collection::vec(0u64..5000, 1..300)) {
            let mut w = ReplayWindow::new();
            let mut seen = std::collections::BTreeSet::new();
            for c in counters {
                if w.check(c) {
                    prop_assert!(seen.insert(c), "{} accepted twice", c);
                    w.commit(c);
                }
            }
        }
    }
}
