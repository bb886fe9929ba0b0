//! The relay wire format: a small routing header in front of an opaque
//! payload, plus the authenticated control messages that let a relay learn
//! where a member is.
//!
//! Musicians behind home routers cannot open ports, so every member of a
//! session talks to one UDP port on a relay (`jamd`). The relay learns each
//! member's reply address from an authenticated hello, keeps it alive with
//! keepalives, and copies every data packet to the other live members of the
//! session. It never looks past the routing header: the payload is whatever
//! the peers put there (end-to-end encrypted RTP-MIDI on the internet).
//!
//! This module is the codec both sides share, sans-IO: it parses and builds
//! byte slices, computes and checks tags, and keeps no state. The relay's
//! member table lives in `jam-control-plane`; the client's hello/keepalive
//! timers live with the peer.
//!
//! # Format
//!
//! All integers are big-endian. Every packet starts with a 16-byte header:
//!
//! ```text
//!  0      2     3      4              12            16
//! +------+-----+------+---------------+-------------+
//! | "JR" | ver | type | session (u64) | member (u32)|
//! +------+-----+------+---------------+-------------+
//! ```
//!
//! `ver` is [`VERSION`]. `member` is the sender for packets from a client
//! and the addressee for packets from the relay. Member id 0 is never
//! assigned: in a data packet's destination it means "every other member".
//!
//! | type | name | body after the header |
//! |---|---|---|
//! | 1 | [`Hello`] | ticket (37) · client time µs (u64) · nonce (u64) · address count (u8) · addresses · tag (16) |
//! | 2 | [`HelloAck`] | client time echo (u64) · nonce echo (u64) · relay time µs (u64) · observed address · tag (16) |
//! | 3 | [`Keepalive`] | sequence (u32) · client time µs (u64) · RTT µs (u32) · loss ‰ (u16) · jitter µs (u32) · tag (16) |
//! | 4 | [`KeepaliveAck`] | sequence echo (u32) · client time echo (u64) · relay time µs (u64) · tag (16) |
//! | 5 | [`Leave`] | client time µs (u64) · nonce (u64) · tag (16) |
//! | 16 | data | destination member (u32, 0 = all) · payload |
//!
//! An address is `family (4 or 6) · IP (4 or 16 bytes) · port (u16)`; a
//! hello carries at most [`MAX_REPORTED_ADDRS`] addresses the client sees on
//! its own interfaces (for the direct path between peers).
//!
//! # Authentication
//!
//! The control plane's HTTP API hands a joining member a [`Ticket`] and a
//! [`HelloKey`]. The ticket (`ver · session · member · expiry · tag`) is
//! tagged under the server secret, which every relay node sharing the
//! database knows, so any node can check it; the hello key is derived from
//! the same secret and the ticket body, so the relay recomputes it from the
//! ticket instead of storing it. Every control message ends in a 16-byte tag:
//! HMAC-SHA-256 under the hello key over every byte before the tag,
//! truncated to 16 bytes. Replays are the relay's business: it accepts a
//! hello only with a client time newer than the last one it accepted for
//! that member (and within a freshness window), and keepalives only with a
//! growing sequence number. Data packets carry no tag: the relay accepts
//! them only from the address a hello registered, and the payload is
//! authenticated end to end by the peers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The two bytes every relay packet starts with.
pub const MAGIC: [u8; 2] = *b"JR";
/// The wire format version this module speaks.
pub const VERSION: u8 = 1;
/// Length of the common header.
pub const HEADER_LEN: usize = 16;
/// Length of a data packet's header (common header plus destination).
pub const DATA_HEADER_LEN: usize = HEADER_LEN + 4;
/// Length of the authentication tag at the end of every control message.
pub const TAG_LEN: usize = 16;
/// Length of an encoded [`Ticket`].
pub const TICKET_LEN: usize = 1 + 8 + 4 + 8 + TAG_LEN;
/// The largest packet a relay accepts or sends: an Ethernet MTU less the IPv4
/// and UDP headers, so nothing is fragmented on a typical path.
pub const MAX_PACKET_LEN: usize = 1472;
/// The largest payload a data packet can carry.
pub const MAX_PAYLOAD_LEN: usize = MAX_PACKET_LEN - DATA_HEADER_LEN;
/// How many self-reported addresses a hello may carry.
pub const MAX_REPORTED_ADDRS: usize = 4;
/// The destination member id that means "every other member of the session".
pub const ALL_MEMBERS: u32 = 0;
/// How often a client should send a keepalive, in milliseconds. Home NATs
/// typically forget an idle UDP mapping after 30 s or more.
pub const KEEPALIVE_INTERVAL_MS: u64 = 5_000;

const TICKET_TAG_LABEL: &[u8] = b"jam-relay-ticket-v1";
const HELLO_KEY_LABEL: &[u8] = b"jam-relay-hello-key-v1";

/// The kind of a relay packet (the header's `type` byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PacketType {
    /// Client → relay: "I am this member, reply to this address".
    Hello,
    /// Relay → client: the hello was accepted.
    HelloAck,
    /// Client → relay: still here, with link statistics.
    Keepalive,
    /// Relay → client: keepalive received (for RTT).
    KeepaliveAck,
    /// Client → relay: forget my address now.
    Leave,
    /// Either way: routing header plus opaque payload.
    Data,
}

impl PacketType {
    /// The type byte on the wire.
    pub const fn to_byte(self) -> u8 {
        match self {
            PacketType::Hello => 1,
            PacketType::HelloAck => 2,
            PacketType::Keepalive => 3,
            PacketType::KeepaliveAck => 4,
            PacketType::Leave => 5,
            PacketType::Data => 16,
        }
    }

    /// The packet type for a type byte, if it is one.
    pub const fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => PacketType::Hello,
            2 => PacketType::HelloAck,
            3 => PacketType::Keepalive,
            4 => PacketType::KeepaliveAck,
            5 => PacketType::Leave,
            16 => PacketType::Data,
            _ => return None,
        })
    }
}

/// Why bytes are not a relay packet (or a ticket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the packet's fixed part needs.
    #[error("truncated: need {needed} bytes, got {got}")]
    Truncated {
        /// Bytes the fixed part needs.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// Longer than [`MAX_PACKET_LEN`].
    #[error("packet of {0} bytes is longer than the limit")]
    TooLong(usize),
    /// The first two bytes are not [`MAGIC`].
    #[error("bad magic {0:02x?}")]
    BadMagic([u8; 2]),
    /// A version this module does not speak.
    #[error("unsupported version {0}")]
    Version(u8),
    /// An unknown packet type byte.
    #[error("unknown packet type {0}")]
    UnknownType(u8),
    /// An address family byte other than 4 or 6.
    #[error("bad address family {0}")]
    AddressFamily(u8),
    /// A hello claims more addresses than [`MAX_REPORTED_ADDRS`].
    #[error("hello reports {0} addresses")]
    TooManyAddrs(u8),
    /// Bytes left over after a control message's tag.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    /// The ticket's header ids differ from the packet header's.
    #[error(
        "ticket is for session {ticket_session:x} member {ticket_member}, header says session {session:x} member {member}"
    )]
    TicketMismatch {
        /// Session id in the ticket.
        ticket_session: u64,
        /// Member id in the ticket.
        ticket_member: u32,
        /// Session id in the header.
        session: u64,
        /// Member id in the header.
        member: u32,
    },
    /// Member id 0 is reserved for "all members".
    #[error("member id 0 is reserved")]
    ReservedMember,
    /// A ticket's text form is not hex.
    #[error("ticket text is not hex")]
    NotHex,
}

/// Why a control message or ticket is not authentic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The tag does not match the bytes (tampered, forged, or wrong key).
    #[error("bad tag")]
    BadTag,
    /// The ticket expired at the given unix time (seconds).
    #[error("ticket expired at {0}")]
    Expired(u64),
    /// The packet is too short to carry a tag.
    #[error("too short for a tag ({0} bytes)")]
    Short(usize),
}

/// Why a packet could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is smaller than the packet.
    #[error("buffer of {got} bytes is too small, need {needed}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// The payload is longer than [`MAX_PAYLOAD_LEN`].
    #[error("payload of {0} bytes is too long")]
    PayloadTooLong(usize),
    /// A hello may report at most [`MAX_REPORTED_ADDRS`] addresses.
    #[error("{0} reported addresses, at most 4 fit")]
    TooManyAddrs(usize),
}

/// The common header of every relay packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What kind of packet follows.
    pub kind: PacketType,
    /// The session it belongs to.
    pub session: u64,
    /// The sender (client → relay) or addressee (relay → client).
    pub member: u32,
}

impl Header {
    /// Parses the first [`HEADER_LEN`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Header, DecodeError> {
        if bytes.len() > MAX_PACKET_LEN {
            return Err(DecodeError::TooLong(bytes.len()));
        }
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::Truncated {
                needed: HEADER_LEN,
                got: bytes.len(),
            });
        }
        let magic = [bytes[0], bytes[1]];
        if magic != MAGIC {
            return Err(DecodeError::BadMagic(magic));
        }
        if bytes[2] != VERSION {
            return Err(DecodeError::Version(bytes[2]));
        }
        let kind = PacketType::from_byte(bytes[3]).ok_or(DecodeError::UnknownType(bytes[3]))?;
        let session = u64::from_be_bytes(bytes[4..12].try_into().expect("8 bytes"));
        let member = u32::from_be_bytes(bytes[12..16].try_into().expect("4 bytes"));
        Ok(Header {
            kind,
            session,
            member,
        })
    }

    fn write(&self, w: &mut Writer<'_>) {
        w.put(&MAGIC);
        w.put(&[VERSION, self.kind.to_byte()]);
        w.put(&self.session.to_be_bytes());
        w.put(&self.member.to_be_bytes());
    }
}

/// The server secret that tags tickets; every relay node of one deployment
/// shares it (it lives in the database).
#[derive(Clone)]
pub struct ServerSecret(pub [u8; 32]);

impl std::fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerSecret(..)")
    }
}

/// The per-membership key that tags a member's control messages. The HTTP
/// API gives it to the member with the ticket; the relay derives it again
/// from the ticket and the [`ServerSecret`].
#[derive(Clone, PartialEq, Eq)]
pub struct HelloKey(pub [u8; 32]);

impl std::fmt::Debug for HelloKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HelloKey(..)")
    }
}

/// Proof, issued by the control plane, that a member belongs to a session
/// until a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// The session.
    pub session: u64,
    /// The member id within the session (never 0).
    pub member: u32,
    /// Unix time (seconds) after which the ticket is refused.
    pub expires_unix: u64,
    /// Tag over the fields above under the server secret.
    pub tag: [u8; TAG_LEN],
}

impl Ticket {
    /// Issues a ticket and the matching hello key.
    pub fn issue(
        secret: &ServerSecret,
        session: u64,
        member: u32,
        expires_unix: u64,
    ) -> (Ticket, HelloKey) {
        let mut t = Ticket {
            session,
            member,
            expires_unix,
            tag: [0; TAG_LEN],
        };
        let body = t.body();
        t.tag = truncated(&hmac(&secret.0, &[TICKET_TAG_LABEL, &body]));
        (t, HelloKey(hmac(&secret.0, &[HELLO_KEY_LABEL, &body])))
    }

    /// Checks the ticket's tag and expiry; returns the member's hello key.
    pub fn verify(&self, secret: &ServerSecret, now_unix: u64) -> Result<HelloKey, AuthError> {
        let body = self.body();
        let want = truncated(&hmac(&secret.0, &[TICKET_TAG_LABEL, &body]));
        if !ct_eq(&want, &self.tag) {
            return Err(AuthError::BadTag);
        }
        if now_unix >= self.expires_unix {
            return Err(AuthError::Expired(self.expires_unix));
        }
        Ok(HelloKey(hmac(&secret.0, &[HELLO_KEY_LABEL, &body])))
    }

    fn body(&self) -> [u8; TICKET_LEN - TAG_LEN] {
        let mut b = [0u8; TICKET_LEN - TAG_LEN];
        b[0] = VERSION;
        b[1..9].copy_from_slice(&self.session.to_be_bytes());
        b[9..13].copy_from_slice(&self.member.to_be_bytes());
        b[13..21].copy_from_slice(&self.expires_unix.to_be_bytes());
        b
    }

    /// The ticket's [`TICKET_LEN`] bytes.
    pub fn encode(&self) -> [u8; TICKET_LEN] {
        let mut b = [0u8; TICKET_LEN];
        b[..TICKET_LEN - TAG_LEN].copy_from_slice(&self.body());
        b[TICKET_LEN - TAG_LEN..].copy_from_slice(&self.tag);
        b
    }

    /// Parses exactly [`TICKET_LEN`] bytes (the tag is not checked here).
    pub fn decode(bytes: &[u8]) -> Result<Ticket, DecodeError> {
        if bytes.len() < TICKET_LEN {
            return Err(DecodeError::Truncated {
                needed: TICKET_LEN,
                got: bytes.len(),
            });
        }
        if bytes.len() > TICKET_LEN {
            return Err(DecodeError::Trailing(bytes.len() - TICKET_LEN));
        }
        if bytes[0] != VERSION {
            return Err(DecodeError::Version(bytes[0]));
        }
        let mut r = Reader::new(&bytes[1..]);
        let session = r.u64()?;
        let member = r.u32()?;
        let expires_unix = r.u64()?;
        let tag = r.array::<TAG_LEN>()?;
        if member == ALL_MEMBERS {
            return Err(DecodeError::ReservedMember);
        }
        Ok(Ticket {
            session,
            member,
            expires_unix,
            tag,
        })
    }

    /// The ticket as lowercase hex (how the HTTP API carries it).
    pub fn to_hex(&self) -> String {
        hex_encode(&self.encode())
    }

    /// Parses the hex form ([`TICKET_LEN`] bytes as hex digits).
    pub fn from_hex(s: &str) -> Result<Ticket, DecodeError> {
        let mut b = [0u8; TICKET_LEN];
        if s.len() != TICKET_LEN * 2 {
            return Err(DecodeError::Truncated {
                needed: TICKET_LEN * 2,
                got: s.len(),
            });
        }
        hex_decode(s, &mut b).ok_or(DecodeError::NotHex)?;
        Ticket::decode(&b)
    }
}

impl HelloKey {
    /// The key as lowercase hex (how the HTTP API carries it).
    pub fn to_hex(&self) -> String {
        hex_encode(&self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<HelloKey> {
        let mut b = [0u8; 32];
        (s.len() == 64).then_some(())?;
        hex_decode(s, &mut b)?;
        Some(HelloKey(b))
    }

    /// The 16-byte tag of `bytes` under this key.
    pub fn tag(&self, bytes: &[u8]) -> [u8; TAG_LEN] {
        truncated(&hmac(&self.0, &[bytes]))
    }

    /// Checks the tag at the end of a control message.
    pub fn verify(&self, packet: &[u8]) -> Result<(), AuthError> {
        if packet.len() < HEADER_LEN + TAG_LEN {
            return Err(AuthError::Short(packet.len()));
        }
        let (body, tag) = packet.split_at(packet.len() - TAG_LEN);
        if ct_eq(&self.tag(body), tag) {
            Ok(())
        } else {
            Err(AuthError::BadTag)
        }
    }
}

/// Addresses a client reports (its own interface addresses), without
/// allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportedAddrs {
    addrs: [SocketAddr; MAX_REPORTED_ADDRS],
    len: u8,
}

impl Default for ReportedAddrs {
    fn default() -> Self {
        ReportedAddrs {
            addrs: [SocketAddr::from(([0, 0, 0, 0], 0)); MAX_REPORTED_ADDRS],
            len: 0,
        }
    }
}

impl ReportedAddrs {
    /// Up to [`MAX_REPORTED_ADDRS`] addresses.
    pub fn new(addrs: &[SocketAddr]) -> Result<Self, EncodeError> {
        if addrs.len() > MAX_REPORTED_ADDRS {
            return Err(EncodeError::TooManyAddrs(addrs.len()));
        }
        let mut r = ReportedAddrs::default();
        r.addrs[..addrs.len()].copy_from_slice(addrs);
        r.len = addrs.len() as u8;
        Ok(r)
    }

    /// The addresses.
    pub fn as_slice(&self) -> &[SocketAddr] {
        &self.addrs[..self.len as usize]
    }
}

/// Client → relay: register this member's reply address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The ticket from the HTTP join.
    pub ticket: Ticket,
    /// The client's estimate of the relay's unix clock, µs (the join
    /// response carries the server time so clients can correct their own).
    pub client_time_us: u64,
    /// A random number the ack echoes.
    pub nonce: u64,
    /// The client's own interface addresses, for the direct path.
    pub reported: ReportedAddrs,
}

/// Relay → client: the hello was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloAck {
    /// Echo of [`Hello::client_time_us`].
    pub client_time_us: u64,
    /// Echo of [`Hello::nonce`].
    pub nonce: u64,
    /// The relay's unix clock, µs.
    pub relay_time_us: u64,
    /// The hello's source address as the relay saw it (the member's public
    /// address behind its NAT, as STUN would report it).
    pub observed: SocketAddr,
}

/// Client → relay: still here; how the link looks from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Grows by one per keepalive since the last hello.
    pub seq: u32,
    /// Client clock (µs), echoed by the ack for RTT measurement.
    pub client_time_us: u64,
    /// The client's smoothed RTT to the relay, µs.
    pub rtt_us: u32,
    /// Packet loss the client sees, in tenths of a percent (0..=1000).
    pub loss_permille: u16,
    /// Interarrival jitter the client sees, µs.
    pub jitter_us: u32,
}

/// Relay → client: the keepalive arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepaliveAck {
    /// Echo of [`Keepalive::seq`].
    pub seq: u32,
    /// Echo of [`Keepalive::client_time_us`].
    pub client_time_us: u64,
    /// The relay's unix clock, µs.
    pub relay_time_us: u64,
}

/// Client → relay: I am leaving; forget my address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leave {
    /// Client time (µs), newer than the last accepted hello.
    pub client_time_us: u64,
    /// A random number.
    pub nonce: u64,
}

/// A decoded relay packet. Control messages still need their tag checked
/// with [`HelloKey::verify`] on the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Packet<'a> {
    /// See [`Hello`].
    Hello(Header, Hello),
    /// See [`HelloAck`].
    HelloAck(Header, HelloAck),
    /// See [`Keepalive`].
    Keepalive(Header, Keepalive),
    /// See [`KeepaliveAck`].
    KeepaliveAck(Header, KeepaliveAck),
    /// See [`Leave`].
    Leave(Header, Leave),
    /// Routing header and the opaque payload.
    Data {
        /// The common header (`member` is the sender).
        header: Header,
        /// The addressee, or [`ALL_MEMBERS`].
        dest: u32,
        /// The bytes the relay forwards without reading.
        payload: &'a [u8],
    },
}

impl<'a> Packet<'a> {
    /// Parses a packet (structure only; tags are checked separately).
    pub fn decode(bytes: &'a [u8]) -> Result<Packet<'a>, DecodeError> {
        let header = Header::decode(bytes)?;
        if header.member == ALL_MEMBERS {
            return Err(DecodeError::ReservedMember);
        }
        let mut r = Reader::new(&bytes[HEADER_LEN..]);
        let packet = match header.kind {
            PacketType::Data => {
                let dest = r.u32()?;
                return Ok(Packet::Data {
                    header,
                    dest,
                    payload: r.rest(),
                });
            }
            PacketType::Hello => {
                let ticket = Ticket::decode(r.take(TICKET_LEN)?)?;
                if ticket.session != header.session || ticket.member != header.member {
                    return Err(DecodeError::TicketMismatch {
                        ticket_session: ticket.session,
                        ticket_member: ticket.member,
                        session: header.session,
                        member: header.member,
                    });
                }
                let client_time_us = r.u64()?;
                let nonce = r.u64()?;
                let n = r.u8()?;
                if n as usize > MAX_REPORTED_ADDRS {
                    return Err(DecodeError::TooManyAddrs(n));
                }
                let mut reported = ReportedAddrs::default();
                for slot in reported.addrs.iter_mut().take(n as usize) {
                    *slot = r.addr()?;
                }
                reported.len = n;
                Packet::Hello(
                    header,
                    Hello {
                        ticket,
                        client_time_us,
                        nonce,
                        reported,
                    },
                )
            }
            PacketType::HelloAck => Packet::HelloAck(
                header,
                HelloAck {
                    client_time_us: r.u64()?,
                    nonce: r.u64()?,
                    relay_time_us: r.u64()?,
                    observed: r.addr()?,
                },
            ),
            PacketType::Keepalive => Packet::Keepalive(
                header,
                Keepalive {
                    seq: r.u32()?,
                    client_time_us: r.u64()?,
                    rtt_us: r.u32()?,
                    loss_permille: r.u16()?,
                    jitter_us: r.u32()?,
                },
            ),
            PacketType::KeepaliveAck => Packet::KeepaliveAck(
                header,
                KeepaliveAck {
                    seq: r.u32()?,
                    client_time_us: r.u64()?,
                    relay_time_us: r.u64()?,
                },
            ),
            PacketType::Leave => Packet::Leave(
                header,
                Leave {
                    client_time_us: r.u64()?,
                    nonce: r.u64()?,
                },
            ),
        };
        r.take(TAG_LEN)?;
        if !r.rest().is_empty() {
            return Err(DecodeError::Trailing(r.rest().len()));
        }
        Ok(packet)
    }

    /// The packet's common header.
    pub fn header(&self) -> Header {
        match *self {
            Packet::Hello(h, _)
            | Packet::HelloAck(h, _)
            | Packet::Keepalive(h, _)
            | Packet::KeepaliveAck(h, _)
            | Packet::Leave(h, _) => h,
            Packet::Data { header, .. } => header,
        }
    }
}

fn control(
    kind: PacketType,
    session: u64,
    member: u32,
    key: &HelloKey,
    buf: &mut [u8],
    body: impl FnOnce(&mut Writer<'_>),
) -> Result<usize, EncodeError> {
    let mut w = Writer::new(buf);
    Header {
        kind,
        session,
        member,
    }
    .write(&mut w);
    body(&mut w);
    let end = w.pos;
    if w.overflow || end + TAG_LEN > w.buf.len() {
        return Err(EncodeError::BufferTooSmall {
            needed: end.max(w.buf.len()) + TAG_LEN,
            got: w.buf.len(),
        });
    }
    let tag = key.tag(&w.buf[..end]);
    w.buf[end..end + TAG_LEN].copy_from_slice(&tag);
    Ok(end + TAG_LEN)
}

/// Builds a hello into `buf`; returns its length.
pub fn encode_hello(hello: &Hello, key: &HelloKey, buf: &mut [u8]) -> Result<usize, EncodeError> {
    let t = hello.ticket;
    control(PacketType::Hello, t.session, t.member, key, buf, |w| {
        w.put(&t.encode());
        w.put(&hello.client_time_us.to_be_bytes());
        w.put(&hello.nonce.to_be_bytes());
        w.put(&[hello.reported.len]);
        for a in hello.reported.as_slice() {
            w.addr(a);
        }
    })
}

/// Builds a hello ack for `member` into `buf`; returns its length.
pub fn encode_hello_ack(
    session: u64,
    member: u32,
    ack: &HelloAck,
    key: &HelloKey,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    control(PacketType::HelloAck, session, member, key, buf, |w| {
        w.put(&ack.client_time_us.to_be_bytes());
        w.put(&ack.nonce.to_be_bytes());
        w.put(&ack.relay_time_us.to_be_bytes());
        w.addr(&ack.observed);
    })
}

/// Builds a keepalive from `member` into `buf`; returns its length.
pub fn encode_keepalive(
    session: u64,
    member: u32,
    ka: &Keepalive,
    key: &HelloKey,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    control(PacketType::Keepalive, session, member, key, buf, |w| {
        w.put(&ka.seq.to_be_bytes());
        w.put(&ka.client_time_us.to_be_bytes());
        w.put(&ka.rtt_us.to_be_bytes());
        w.put(&ka.loss_permille.to_be_bytes());
        w.put(&ka.jitter_us.to_be_bytes());
    })
}

/// Builds a keepalive ack for `member` into `buf`; returns its length.
pub fn encode_keepalive_ack(
    session: u64,
    member: u32,
    ack: &KeepaliveAck,
    key: &HelloKey,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    control(PacketType::KeepaliveAck, session, member, key, buf, |w| {
        w.put(&ack.seq.to_be_bytes());
        w.put(&ack.client_time_us.to_be_bytes());
        w.put(&ack.relay_time_us.to_be_bytes());
    })
}

/// Builds a leave from `member` into `buf`; returns its length.
pub fn encode_leave(
    session: u64,
    member: u32,
    leave: &Leave,
    key: &HelloKey,
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    control(PacketType::Leave, session, member, key, buf, |w| {
        w.put(&leave.client_time_us.to_be_bytes());
        w.put(&leave.nonce.to_be_bytes());
    })
}

/// Builds a data packet (header plus `payload`) into `buf`; returns its
/// length.
pub fn encode_data(
    session: u64,
    sender: u32,
    dest: u32,
    payload: &[u8],
    buf: &mut [u8],
) -> Result<usize, EncodeError> {
    if payload.len() > MAX_PAYLOAD_LEN {
        return Err(EncodeError::PayloadTooLong(payload.len()));
    }
    let needed = DATA_HEADER_LEN + payload.len();
    if buf.len() < needed {
        return Err(EncodeError::BufferTooSmall {
            needed,
            got: buf.len(),
        });
    }
    let mut w = Writer::new(buf);
    Header {
        kind: PacketType::Data,
        session,
        member: sender,
    }
    .write(&mut w);
    w.put(&dest.to_be_bytes());
    w.put(payload);
    Ok(needed)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Offset of `bytes` in the packet, for error messages.
    base: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader {
            bytes,
            pos: 0,
            base: HEADER_LEN,
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos + n;
        if end > self.bytes.len() {
            return Err(DecodeError::Truncated {
                needed: self.base + end,
                got: self.base + self.bytes.len(),
            });
        }
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn addr(&mut self) -> Result<SocketAddr, DecodeError> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>()?)),
            f => return Err(DecodeError::AddressFamily(f)),
        };
        Ok(SocketAddr::new(ip, self.u16()?))
    }
    fn rest(&self) -> &'a [u8] {
        &self.bytes[self.pos..]
    }
}

struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
    overflow: bool,
}

impl<'a> Writer<'a> {
    fn new(buf: &'a mut [u8]) -> Self {
        Writer {
            buf,
            pos: 0,
            overflow: false,
        }
    }
    fn put(&mut self, b: &[u8]) {
        match self.buf.get_mut(self.pos..self.pos + b.len()) {
            Some(dst) if !self.overflow => {
                dst.copy_from_slice(b);
                self.pos += b.len();
            }
            _ => {
                self.overflow = true;
                self.pos += b.len();
            }
        }
    }
    fn addr(&mut self, a: &SocketAddr) {
        match a.ip() {
            IpAddr::V4(ip) => {
                self.put(&[4]);
                self.put(&ip.octets());
            }
            IpAddr::V6(ip) => {
                self.put(&[6]);
                self.put(&ip.octets());
            }
        }
        self.put(&a.port().to_be_bytes());
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m =
        <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn truncated(full: &[u8; 32]) -> [u8; TAG_LEN] {
    full[..TAG_LEN].try_into().expect("32 > 16")
}

/// Compares without an early exit, so timing does not reveal how many
/// leading tag bytes an attacker guessed.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Lowercase hex of `bytes`.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Decodes `s` (upper- or lowercase hex, exactly twice `out.len()` digits)
/// into `out`; `None` if it is not.
pub fn hex_decode(s: &str, out: &mut [u8]) -> Option<()> {
    let s = s.as_bytes();
    if s.len() != out.len() * 2 {
        return None;
    }
    fn nib(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = (nib(pair[0])? << 4) | nib(pair[1])?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secret() -> ServerSecret {
        ServerSecret([7; 32])
    }

    #[test]
    fn ticket_round_trips_and_verifies() {
        let (t, key) = Ticket::issue(&secret(), 0xabcd, 42, 1_000);
        let back = Ticket::from_hex(&t.to_hex()).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.verify(&secret(), 999).unwrap(), key);
        assert_eq!(
            back.verify(&secret(), 1_000),
            Err(AuthError::Expired(1_000))
        );
        assert_eq!(
            back.verify(&ServerSecret([8; 32]), 0),
            Err(AuthError::BadTag)
        );
    }

    #[test]
    fn a_ticket_with_any_field_changed_is_refused() {
        let (t, _) = Ticket::issue(&secret(), 1, 2, 3_000);
        let bytes = t.encode();
        for i in 0..TICKET_LEN {
            let mut b = bytes;
            b[i] ^= 0x01;
            // A changed version byte or member 0 is refused by decode already.
            if let Ok(forged) = Ticket::decode(&b) {
                assert_eq!(forged.verify(&secret(), 0), Err(AuthError::BadTag));
            }
        }
    }

    #[test]
    fn hello_round_trips_and_any_flipped_bit_breaks_the_tag() {
        let (ticket, key) = Ticket::issue(&secret(), 9, 3, 5_000);
        let hello = Hello {
            ticket,
            client_time_us: 123_456,
            nonce: 77,
            reported: ReportedAddrs::new(&[
                "192.168.1.5:5004".parse().unwrap(),
                "[fe80::1]:5004".parse().unwrap(),
            ])
            .unwrap(),
        };
        let mut buf = [0u8; MAX_PACKET_LEN];
        let n = encode_hello(&hello, &key, &mut buf).unwrap();
        let p = Packet::decode(&buf[..n]).unwrap();
        assert_eq!(
            p,
            Packet::Hello(
                Header {
                    kind: PacketType::Hello,
                    session: 9,
                    member: 3
                },
                hello
            )
        );
        key.verify(&buf[..n]).unwrap();
        for i in 0..n {
            let mut b = buf;
            b[i] ^= 0x80;
            assert!(
                key.verify(&b[..n]).is_err(),
                "flipping byte {i} kept the tag valid"
            );
        }
    }

    #[test]
    fn control_messages_round_trip() {
        let key = HelloKey([1; 32]);
        let mut buf = [0u8; 128];
        let ka = Keepalive {
            seq: 5,
            client_time_us: 10,
            rtt_us: 2_000,
            loss_permille: 12,
            jitter_us: 300,
        };
        let n = encode_keepalive(1, 2, &ka, &key, &mut buf).unwrap();
        assert!(matches!(Packet::decode(&buf[..n]), Ok(Packet::Keepalive(_, k)) if k == ka));
        let ack = KeepaliveAck {
            seq: 5,
            client_time_us: 10,
            relay_time_us: 11,
        };
        let n = encode_keepalive_ack(1, 2, &ack, &key, &mut buf).unwrap();
        assert!(matches!(Packet::decode(&buf[..n]), Ok(Packet::KeepaliveAck(_, k)) if k == ack));
        let ha = HelloAck {
            client_time_us: 1,
            nonce: 2,
            relay_time_us: 3,
            observed: "[2001:db8::1]:40000".parse().unwrap(),
        };
        let n = encode_hello_ack(1, 2, &ha, &key, &mut buf).unwrap();
        assert!(matches!(Packet::decode(&buf[..n]), Ok(Packet::HelloAck(_, k)) if k == ha));
        let l = Leave {
            client_time_us: 4,
            nonce: 5,
        };
        let n = encode_leave(1, 2, &l, &key, &mut buf).unwrap();
        assert!(matches!(Packet::decode(&buf[..n]), Ok(Packet::Leave(_, k)) if k == l));
        key.verify(&buf[..n]).unwrap();
    }

    #[test]
    fn small_buffers_are_refused_not_overrun() {
        let key = HelloKey([1; 32]);
        let l = Leave {
            client_time_us: 4,
            nonce: 5,
        };
        for len in 0..(HEADER_LEN + 16 + TAG_LEN) {
            let mut buf = vec![0u8; len];
            assert!(matches!(
                encode_leave(1, 2, &l, &key, &mut buf),
                Err(EncodeError::BufferTooSmall { .. })
            ));
        }
        assert!(encode_data(1, 2, 0, &[0; 10], &mut [0; 29]).is_err());
        assert!(encode_data(1, 2, 0, &[0; MAX_PAYLOAD_LEN + 1], &mut [0; 2000]).is_err());
    }

    #[test]
    fn errors_name_what_is_wrong() {
        assert_eq!(
            Packet::decode(b"JR"),
            Err(DecodeError::Truncated { needed: 16, got: 2 })
        );
        let mut b = [0u8; 20];
        b[..2].copy_from_slice(b"XX");
        assert_eq!(Packet::decode(&b), Err(DecodeError::BadMagic(*b"XX")));
        let mut big = vec![0u8; MAX_PACKET_LEN + 1];
        big[..2].copy_from_slice(&MAGIC);
        assert_eq!(
            Packet::decode(&big),
            Err(DecodeError::TooLong(MAX_PACKET_LEN + 1))
        );
        let mut d = [0u8; 24];
        let n = encode_data(5, 6, 0, b"abcd", &mut d).unwrap();
        d[3] = 99;
        assert_eq!(Packet::decode(&d[..n]), Err(DecodeError::UnknownType(99)));
        d[3] = 16;
        d[2] = 2;
        assert_eq!(Packet::decode(&d[..n]), Err(DecodeError::Version(2)));
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Packet::decode(&bytes);
            let _ = Ticket::decode(&bytes);
        }

        #[test]
        fn data_round_trips(session: u64, sender in 1u32.., dest: u32,
                            payload in proptest::collection::vec(any::<u8>(), 0..MAX_PAYLOAD_LEN)) {
            let mut buf = [0u8; MAX_PACKET_LEN];
            let n = encode_data(session, sender, dest, &payload, &mut buf).unwrap();
            let p = Packet::decode(&buf[..n]).unwrap();
            prop_assert_eq!(p, Packet::Data {
                header: Header { kind: PacketType::Data, session, member: sender },
                dest,
                payload: &payload,
            });
        }

        #[test]
        fn hello_decode_inverts_encode(session: u64, member in 1u32.., exp: u64, time: u64, nonce: u64,
                                       n in 0usize..=4, port: u16, ip: [u8; 4]) {
            let (ticket, key) = Ticket::issue(&secret(), session, member, exp);
            let addrs: Vec<SocketAddr> = (0..n).map(|i| SocketAddr::from((ip, port.wrapping_add(i as u16)))).collect();
            let hello = Hello { ticket, client_time_us: time, nonce, reported: ReportedAddrs::new(&addrs).unwrap() };
            let mut buf = [0u8; MAX_PACKET_LEN];
            let len = encode_hello(&hello, &key, &mut buf).unwrap();
            match Packet::decode(&buf[..len]).unwrap() {
                Packet::Hello(_, h) => prop_assert_eq!(h, hello),
                other => prop_assert!(false, "decoded {:?}", other),
            }
        }
    }
}
