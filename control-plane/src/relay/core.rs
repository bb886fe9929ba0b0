//! The relay's member table and forwarding decisions, sans-IO.
//!
//! [`RelayCore`] takes datagrams with their source address and the time,
//! and answers what to send where; it owns no socket and reads no clock.
//! Method groups (quinn's vocabulary):
//!
//! - input: [`RelayCore::handle_datagram`], [`RelayCore::handle_timeout`],
//!   and the command [`RelayCore::revoke`];
//! - output: the [`Output`] returned by `handle_datagram` (valid until the
//!   next call), then [`RelayCore::poll_event`] until it returns `None`;
//! - getters: [`RelayCore::stats`], [`RelayCore::members`].
//!
//! A driver calls `handle_datagram` for every packet, sends what it returns,
//! calls `handle_timeout` at least every [`RelayConfig::keepalive_timeout`]
//! / 4, and drains `poll_event` after each call. Time must not go backwards.
//!
//! The data path (a data packet from a known member) does not allocate: the
//! forward list is the session's own address array, and the reply buffer is
//! a fixed array inside the core.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use jam_core::Micros;
use jam_transport::relay::{
    self, ALL_MEMBERS, AuthError, HelloAck, HelloKey, KeepaliveAck, Packet, ReportedAddrs,
    ServerSecret,
};

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// A member that sends nothing for this long is forgotten.
    pub keepalive_timeout: Duration,
    /// A hello's client time must be this close to the relay's clock.
    pub hello_window: Duration,
    /// Sustained packets per second one member may send.
    pub rate_packets_per_sec: u32,
    /// Packets one member may send in a burst above the sustained rate.
    pub burst_packets: u32,
    /// Sustained bytes per second one member may send.
    pub rate_bytes_per_sec: u32,
    /// Bytes one member may send in a burst.
    pub burst_bytes: u32,
    /// The most live members one session may have on this relay.
    pub max_members_per_session: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            keepalive_timeout: Duration::from_secs(20),
            hello_window: Duration::from_secs(30),
            rate_packets_per_sec: 200,
            burst_packets: 400,
            rate_bytes_per_sec: 256 * 1024,
            burst_bytes: 512 * 1024,
            max_members_per_session: 4096,
        }
    }
}

/// Why the relay dropped a packet (a metric label each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Not a relay packet at all.
    Malformed,
    /// A data packet from an address no hello registered.
    UnknownSource,
    /// A data packet whose header names another member or session than
    /// the one its source address belongs to.
    Spoofed,
    /// A data packet for a member id that is not live in the session.
    UnknownDestination,
    /// Over the member's rate limit.
    RateLimited,
    /// A hello whose ticket's tag is wrong (forged or for another server).
    ForgedTicket,
    /// A hello whose ticket expired.
    ExpiredTicket,
    /// A control message whose tag is wrong (tampered).
    BadTag,
    /// A hello or leave whose client time is not newer than the last one, or
    /// a keepalive whose sequence number did not grow.
    Replay,
    /// A hello whose client time is outside the freshness window.
    Stale,
    /// A hello for a membership the control plane revoked (left the session).
    Revoked,
    /// A keepalive or leave from an address other than the registered one,
    /// or for a member that is not live.
    NotRegistered,
    /// The session already has the maximum number of live members.
    SessionFull,
    /// A packet type only the relay sends.
    WrongDirection,
}

impl DropReason {
    /// Every reason, for exporting counters.
    pub const ALL: [DropReason; 14] = [
        DropReason::Malformed,
        DropReason::UnknownSource,
        DropReason::Spoofed,
        DropReason::UnknownDestination,
        DropReason::RateLimited,
        DropReason::ForgedTicket,
        DropReason::ExpiredTicket,
        DropReason::BadTag,
        DropReason::Replay,
        DropReason::Stale,
        DropReason::Revoked,
        DropReason::NotRegistered,
        DropReason::SessionFull,
        DropReason::WrongDirection,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnknownSource => "unknown_source",
            DropReason::Spoofed => "spoofed",
            DropReason::UnknownDestination => "unknown_destination",
            DropReason::RateLimited => "rate_limited",
            DropReason::ForgedTicket => "forged_ticket",
            DropReason::ExpiredTicket => "expired_ticket",
            DropReason::BadTag => "bad_tag",
            DropReason::Replay => "replay",
            DropReason::Stale => "stale",
            DropReason::Revoked => "revoked",
            DropReason::NotRegistered => "not_registered",
            DropReason::SessionFull => "session_full",
            DropReason::WrongDirection => "wrong_direction",
        }
    }

    fn index(self) -> usize {
        DropReason::ALL
            .iter()
            .position(|r| *r == self)
            .expect("ALL lists every reason")
    }
}

/// Relay-wide counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Datagrams received.
    pub packets_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Datagrams sent (each copy of a fanned-out packet counts).
    pub packets_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Hellos accepted.
    pub hellos_accepted: u64,
    /// Data packets forwarded (each copy of a fanned-out packet counts):
    /// what peers on a direct path no longer send through the relay.
    pub data_forwarded: u64,
    /// Dropped datagrams by reason, indexed like [`DropReason::ALL`].
    pub dropped: [u64; DropReason::ALL.len()],
}

impl RelayStats {
    /// Drops for one reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }
}

/// What the driver must send after a datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Output<'a> {
    /// Nothing (dropped, or nothing to answer).
    Nothing,
    /// Send `bytes` to `to` (an ack).
    Reply {
        /// Where.
        to: SocketAddr,
        /// What.
        bytes: &'a [u8],
    },
    /// Send the received datagram unchanged to every address in `to` except
    /// the one at index `except` (if any).
    Forward {
        /// Candidate destinations.
        to: &'a [SocketAddr],
        /// Index in `to` to skip (the sender), or `usize::MAX`.
        except: usize,
    },
}

/// Something the rest of the server should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayEvent {
    /// A member's hello was accepted (first time, new address, or new
    /// reported addresses).
    Online {
        /// Session id.
        session: u64,
        /// Member id.
        member: u32,
        /// The source address of the hello.
        observed: SocketAddr,
        /// The addresses the client reported.
        reported: Vec<SocketAddr>,
    },
    /// A member is no longer live on this relay.
    Offline {
        /// Session id.
        session: u64,
        /// Member id.
        member: u32,
        /// Why.
        reason: OfflineReason,
    },
}

/// Why a member went offline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OfflineReason {
    /// No packet for [`RelayConfig::keepalive_timeout`].
    Timeout,
    /// The client sent a leave.
    Left,
    /// The control plane revoked the membership.
    Revoked,
    /// Another member's hello took over its address.
    Replaced,
}

/// Live statistics of one member, for the dashboard and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStats {
    /// Session id.
    pub session: u64,
    /// Member id.
    pub member: u32,
    /// The reply address the relay uses.
    pub addr: SocketAddr,
    /// RTT to the relay the client last reported, µs.
    pub rtt_us: u32,
    /// Loss the client last reported, ‰.
    pub loss_permille: u16,
    /// Jitter the client last reported, µs.
    pub jitter_us: u32,
    /// Datagrams received from the member.
    pub packets_in: u64,
    /// Bytes received from the member.
    pub bytes_in: u64,
    /// Datagrams forwarded to the member.
    pub packets_out: u64,
    /// Bytes forwarded to the member.
    pub bytes_out: u64,
    /// Datagrams of the member dropped by its rate limit.
    pub rate_limited: u64,
}

#[derive(Debug)]
struct TokenBucket {
    packets: f64,
    bytes: f64,
    last: Micros,
}

#[derive(Debug)]
struct Member {
    id: u32,
    key: HelloKey,
    last_seen: Micros,
    keepalive_seq: u32,
    reported: ReportedAddrs,
    bucket: TokenBucket,
    rtt_us: u32,
    loss_permille: u16,
    jitter_us: u32,
    packets_in: u64,
    bytes_in: u64,
    /// Broadcast packets and bytes the member sent (they reach everyone but
    /// the member, so its own share is subtracted from the session total).
    bcast_packets_in: u64,
    bcast_bytes_in: u64,
    unicast_packets_out: u64,
    unicast_bytes_out: u64,
    rate_limited: u64,
}

#[derive(Debug, Default)]
struct Session {
    /// Parallel to `addrs`: the fan-out list is `addrs` itself.
    members: Vec<Member>,
    addrs: Vec<SocketAddr>,
    index: HashMap<u32, usize>,
    bcast_packets: u64,
    bcast_bytes: u64,
}

/// The relay's state: live members per session, their addresses, replay
/// windows, revocations and counters. See the module doc for the driving
/// order.
#[derive(Debug)]
pub struct RelayCore {
    secret: ServerSecret,
    config: RelayConfig,
    sessions: HashMap<u64, Session>,
    by_addr: HashMap<SocketAddr, (u64, u32)>,
    /// Newest accepted hello/leave client time per membership, kept while it
    /// is inside the freshness window so a replay is recognised even after
    /// the member timed out.
    last_hello: HashMap<(u64, u32), u64>,
    /// Revoked memberships and until when (unix seconds, the ticket expiry
    /// bound) the revocation must be remembered.
    revoked: HashMap<(u64, u32), u64>,
    stats: RelayStats,
    events: VecDeque<RelayEvent>,
    reply: [u8; 128],
}

impl RelayCore {
    /// A relay with no members.
    pub fn new(secret: ServerSecret, config: RelayConfig) -> Self {
        RelayCore {
            secret,
            config,
            sessions: HashMap::new(),
            by_addr: HashMap::new(),
            last_hello: HashMap::new(),
            revoked: HashMap::new(),
            stats: RelayStats::default(),
            events: VecDeque::new(),
            reply: [0; 128],
        }
    }

    /// Relay-wide counters.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }

    /// The live members and their statistics.
    pub fn members(&self) -> impl Iterator<Item = MemberStats> + '_ {
        self.sessions.iter().flat_map(|(sid, s)| {
            s.members
                .iter()
                .zip(&s.addrs)
                .map(move |(m, a)| MemberStats {
                    session: *sid,
                    member: m.id,
                    addr: *a,
                    rtt_us: m.rtt_us,
                    loss_permille: m.loss_permille,
                    jitter_us: m.jitter_us,
                    packets_in: m.packets_in,
                    bytes_in: m.bytes_in,
                    packets_out: s.bcast_packets - m.bcast_packets_in + m.unicast_packets_out,
                    bytes_out: s.bcast_bytes - m.bcast_bytes_in + m.unicast_bytes_out,
                    rate_limited: m.rate_limited,
                })
        })
    }

    /// Number of live members on this relay.
    pub fn live_members(&self) -> usize {
        self.by_addr.len()
    }

    /// The next event for the rest of the server.
    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }

    /// Forgets a membership now and refuses its ticket until `until_unix`
    /// (the control plane calls this when a member leaves the session).
    pub fn revoke(&mut self, session: u64, member: u32, until_unix: u64) {
        self.revoked.insert((session, member), until_unix);
        self.remove(session, member, OfflineReason::Revoked);
    }

    /// Expires silent members and old replay/revocation records.
    pub fn handle_timeout(&mut self, now: Micros, wall_us: u64) {
        let timeout = self.config.keepalive_timeout;
        let mut expired: Vec<(u64, u32)> = Vec::new();
        for (sid, s) in &self.sessions {
            for m in &s.members {
                if now.saturating_duration_since(m.last_seen) >= timeout {
                    expired.push((*sid, m.id));
                }
            }
        }
        for (sid, mid) in expired {
            self.remove(sid, mid, OfflineReason::Timeout);
        }
        let window = self.config.hello_window.as_micros() as u64;
        self.last_hello
            .retain(|_, t| t.saturating_add(window) >= wall_us);
        let wall_s = wall_us / 1_000_000;
        self.revoked.retain(|_, until| *until > wall_s);
    }

    /// The latest time by which [`RelayCore::handle_timeout`] should run.
    pub fn poll_timeout(&self, now: Micros) -> Micros {
        now + self.config.keepalive_timeout / 4
    }

    fn drop_packet(&mut self, reason: DropReason) -> Output<'_> {
        self.stats.dropped[reason.index()] += 1;
        Output::Nothing
    }

    /// Handles one datagram from `from`. `now` is the monotonic clock,
    /// `wall_us` the unix clock in µs (for ticket expiry and hello
    /// freshness).
    pub fn handle_datagram(
        &mut self,
        now: Micros,
        wall_us: u64,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Output<'_> {
        self.stats.packets_in += 1;
        self.stats.bytes_in += bytes.len() as u64;
        let packet = match Packet::decode(bytes) {
            Ok(p) => p,
            Err(_) => return self.drop_packet(DropReason::Malformed),
        };
        match packet {
            Packet::Data { header, dest, .. } => {
                self.handle_data(now, from, header.session, header.member, dest, bytes.len())
            }
            Packet::Hello(_, hello) => self.handle_hello(now, wall_us, from, &hello, bytes),
            Packet::Keepalive(h, ka) => {
                let Some((s, i)) = self.registered(h.session, h.member, from) else {
                    return self.drop_packet(DropReason::NotRegistered);
                };
                let m = &self.sessions.get(&s).expect("registered").members[i];
                if m.key.verify(bytes).is_err() {
                    return self.drop_packet(DropReason::BadTag);
                }
                if ka.seq <= m.keepalive_seq {
                    return self.drop_packet(DropReason::Replay);
                }
                let m = &mut self.sessions.get_mut(&s).expect("registered").members[i];
                m.keepalive_seq = ka.seq;
                m.last_seen = now;
                m.rtt_us = ka.rtt_us;
                m.loss_permille = ka.loss_permille.min(1000);
                m.jitter_us = ka.jitter_us;
                let ack = KeepaliveAck {
                    seq: ka.seq,
                    client_time_us: ka.client_time_us,
                    relay_time_us: wall_us,
                };
                let n =
                    relay::encode_keepalive_ack(h.session, h.member, &ack, &m.key, &mut self.reply)
                        .expect("the reply buffer fits every ack");
                self.stats.packets_out += 1;
                self.stats.bytes_out += n as u64;
                Output::Reply {
                    to: from,
                    bytes: &self.reply[..n],
                }
            }
            Packet::Leave(h, leave) => {
                let Some((s, i)) = self.registered(h.session, h.member, from) else {
                    return self.drop_packet(DropReason::NotRegistered);
                };
                let m = &self.sessions.get(&s).expect("registered").members[i];
                if m.key.verify(bytes).is_err() {
                    return self.drop_packet(DropReason::BadTag);
                }
                let last = self.last_hello.get(&(h.session, h.member)).copied();
                if last.is_some_and(|t| leave.client_time_us <= t) {
                    return self.drop_packet(DropReason::Replay);
                }
                self.last_hello
                    .insert((h.session, h.member), leave.client_time_us);
                self.remove(h.session, h.member, OfflineReason::Left);
                Output::Nothing
            }
            Packet::HelloAck(..) | Packet::KeepaliveAck(..) => {
                self.drop_packet(DropReason::WrongDirection)
            }
            _ => self.drop_packet(DropReason::Malformed),
        }
    }

    /// The session and member index of a live member registered at `from`.
    fn registered(&self, session: u64, member: u32, from: SocketAddr) -> Option<(u64, usize)> {
        match self.by_addr.get(&from) {
            Some(&(s, m)) if s == session && m == member => {
                let i = *self.sessions.get(&s)?.index.get(&m)?;
                Some((s, i))
            }
            _ => None,
        }
    }

    fn handle_data(
        &mut self,
        now: Micros,
        from: SocketAddr,
        session: u64,
        sender: u32,
        dest: u32,
        len: usize,
    ) -> Output<'_> {
        let Some(&(s, m)) = self.by_addr.get(&from) else {
            return self.drop_packet(DropReason::UnknownSource);
        };
        if s != session || m != sender {
            return self.drop_packet(DropReason::Spoofed);
        }
        let cfg = &self.config;
        let dropped = &mut self.stats.dropped;
        let sess = self
            .sessions
            .get_mut(&s)
            .expect("by_addr points at a live session");
        let idx = *sess.index.get(&m).expect("by_addr points at a live member");
        let member = &mut sess.members[idx];
        member.last_seen = now;
        // Token bucket: refill by elapsed time, then take one packet and
        // `len` bytes, or drop.
        let b = &mut member.bucket;
        let dt = now.saturating_duration_since(b.last).as_secs_f64();
        b.last = now;
        b.packets = (b.packets + dt * f64::from(cfg.rate_packets_per_sec))
            .min(f64::from(cfg.burst_packets));
        b.bytes =
            (b.bytes + dt * f64::from(cfg.rate_bytes_per_sec)).min(f64::from(cfg.burst_bytes));
        if b.packets < 1.0 || b.bytes < len as f64 {
            member.rate_limited += 1;
            dropped[DropReason::RateLimited.index()] += 1;
            return Output::Nothing;
        }
        b.packets -= 1.0;
        b.bytes -= len as f64;
        member.packets_in += 1;
        member.bytes_in += len as u64;
        if dest == ALL_MEMBERS {
            member.bcast_packets_in += 1;
            member.bcast_bytes_in += len as u64;
            sess.bcast_packets += 1;
            sess.bcast_bytes += len as u64;
            let copies = sess.addrs.len() as u64 - 1;
            self.stats.data_forwarded += copies;
            self.stats.packets_out += copies;
            self.stats.bytes_out += copies * len as u64;
            return Output::Forward {
                to: &sess.addrs,
                except: idx,
            };
        }
        let Some(&d) = sess.index.get(&dest) else {
            dropped[DropReason::UnknownDestination.index()] += 1;
            return Output::Nothing;
        };
        if d == idx {
            dropped[DropReason::UnknownDestination.index()] += 1;
            return Output::Nothing;
        }
        let target = &mut sess.members[d];
        target.unicast_packets_out += 1;
        target.unicast_bytes_out += len as u64;
        self.stats.data_forwarded += 1;
        self.stats.packets_out += 1;
        self.stats.bytes_out += len as u64;
        Output::Forward {
            to: std::slice::from_ref(&sess.addrs[d]),
            except: usize::MAX,
        }
    }

    fn handle_hello(
        &mut self,
        now: Micros,
        wall_us: u64,
        from: SocketAddr,
        hello: &relay::Hello,
        bytes: &[u8],
    ) -> Output<'_> {
        let t = hello.ticket;
        let key_id = (t.session, t.member);
        if self.revoked.contains_key(&key_id) {
            return self.drop_packet(DropReason::Revoked);
        }
        let key = match t.verify(&self.secret, wall_us / 1_000_000) {
            Ok(k) => k,
            Err(AuthError::Expired(_)) => return self.drop_packet(DropReason::ExpiredTicket),
            Err(_) => return self.drop_packet(DropReason::ForgedTicket),
        };
        if key.verify(bytes).is_err() {
            return self.drop_packet(DropReason::BadTag);
        }
        let window = self.config.hello_window.as_micros() as u64;
        if hello.client_time_us.abs_diff(wall_us) > window {
            return self.drop_packet(DropReason::Stale);
        }
        if self
            .last_hello
            .get(&key_id)
            .is_some_and(|last| hello.client_time_us <= *last)
        {
            return self.drop_packet(DropReason::Replay);
        }
        // The address may belong to another membership (a client that
        // rejoined with a new member id from the same socket): that one goes.
        if let Some(&(s, m)) = self.by_addr.get(&from)
            && (s, m) != key_id
        {
            self.remove(s, m, OfflineReason::Replaced);
        }
        let full = self
            .sessions
            .get(&t.session)
            .is_some_and(|s| s.members.len() >= self.config.max_members_per_session);
        let existing = self
            .sessions
            .get(&t.session)
            .and_then(|s| s.index.get(&t.member).copied());
        if existing.is_none() && full {
            return self.drop_packet(DropReason::SessionFull);
        }
        self.last_hello.insert(key_id, hello.client_time_us);
        self.stats.hellos_accepted += 1;
        let sess = self.sessions.entry(t.session).or_default();
        let changed = match existing {
            Some(i) => {
                let old_addr = sess.addrs[i];
                let m = &mut sess.members[i];
                m.last_seen = now;
                m.keepalive_seq = 0;
                let changed = old_addr != from || m.reported != hello.reported;
                m.reported = hello.reported;
                if old_addr != from {
                    sess.addrs[i] = from;
                    self.by_addr.remove(&old_addr);
                    self.by_addr.insert(from, key_id);
                }
                changed
            }
            None => {
                sess.index.insert(t.member, sess.members.len());
                sess.addrs.push(from);
                sess.members.push(Member {
                    id: t.member,
                    key: key.clone(),
                    last_seen: now,
                    keepalive_seq: 0,
                    reported: hello.reported,
                    bucket: TokenBucket {
                        packets: f64::from(self.config.burst_packets),
                        bytes: f64::from(self.config.burst_bytes),
                        last: now,
                    },
                    rtt_us: 0,
                    loss_permille: 0,
                    jitter_us: 0,
                    packets_in: 0,
                    bytes_in: 0,
                    bcast_packets_in: sess.bcast_packets,
                    bcast_bytes_in: sess.bcast_bytes,
                    unicast_packets_out: 0,
                    unicast_bytes_out: 0,
                    rate_limited: 0,
                });
                self.by_addr.insert(from, key_id);
                true
            }
        };
        if changed {
            self.events.push_back(RelayEvent::Online {
                session: t.session,
                member: t.member,
                observed: from,
                reported: hello.reported.as_slice().to_vec(),
            });
        }
        let ack = HelloAck {
            client_time_us: hello.client_time_us,
            nonce: hello.nonce,
            relay_time_us: wall_us,
            observed: from,
        };
        let n = relay::encode_hello_ack(t.session, t.member, &ack, &key, &mut self.reply)
            .expect("the reply buffer fits every ack");
        self.stats.packets_out += 1;
        self.stats.bytes_out += n as u64;
        Output::Reply {
            to: from,
            bytes: &self.reply[..n],
        }
    }

    fn remove(&mut self, session: u64, member: u32, reason: OfflineReason) {
        let Some(sess) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(i) = sess.index.remove(&member) else {
            return;
        };
        let addr = sess.addrs.swap_remove(i);
        sess.members.swap_remove(i);
        if let Some(moved) = sess.members.get(i) {
            sess.index.insert(moved.id, i);
        }
        self.by_addr.remove(&addr);
        if sess.members.is_empty() {
            self.sessions.remove(&session);
        }
        self.events.push_back(RelayEvent::Offline {
            session,
            member,
            reason,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jam_transport::relay::{Hello, Keepalive, Leave, Ticket, encode_data};

    const WALL: u64 = 1_700_000_000_000_000;

    fn core() -> RelayCore {
        RelayCore::new(ServerSecret([3; 32]), RelayConfig::default())
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn hello_bytes(
        secret: &ServerSecret,
        session: u64,
        member: u32,
        time: u64,
    ) -> (Vec<u8>, HelloKey) {
        let (ticket, key) = Ticket::issue(secret, session, member, WALL / 1_000_000 + 3600);
        let mut buf = [0u8; 256];
        let n = relay::encode_hello(
            &Hello {
                ticket,
                client_time_us: time,
                nonce: 1,
                reported: ReportedAddrs::default(),
            },
            &key,
            &mut buf,
        )
        .unwrap();
        (buf[..n].to_vec(), key)
    }

    fn join(c: &mut RelayCore, session: u64, member: u32, port: u16) -> HelloKey {
        let (h, key) = hello_bytes(&ServerSecret([3; 32]), session, member, WALL);
        assert!(matches!(
            c.handle_datagram(Micros::ZERO, WALL, addr(port), &h),
            Output::Reply { .. }
        ));
        key
    }

    fn data(session: u64, sender: u32, dest: u32) -> Vec<u8> {
        let mut buf = [0u8; 64];
        let n = encode_data(session, sender, dest, b"note", &mut buf).unwrap();
        buf[..n].to_vec()
    }

    fn forwarded(out: Output<'_>) -> Vec<SocketAddr> {
        match out {
            Output::Forward { to, except } => to
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != except)
                .map(|(_, a)| *a)
                .collect(),
            other => panic!("expected a forward, got {other:?}"),
        }
    }

    #[test]
    fn fans_out_to_every_other_member_and_unicasts() {
        let mut c = core();
        for (m, p) in [(1, 1001), (2, 1002), (3, 1003)] {
            join(&mut c, 7, m, p);
        }
        let mut to = forwarded(c.handle_datagram(Micros::ZERO, WALL, addr(1002), &data(7, 2, 0)));
        to.sort();
        assert_eq!(to, vec![addr(1001), addr(1003)]);
        let to = forwarded(c.handle_datagram(Micros::ZERO, WALL, addr(1002), &data(7, 2, 3)));
        assert_eq!(to, vec![addr(1003)]);
        assert_eq!(c.stats().packets_out, 3 + 3); // three acks, three copies
    }

    #[test]
    fn strangers_and_spoofers_are_dropped_and_counted() {
        let mut c = core();
        join(&mut c, 7, 1, 1001);
        join(&mut c, 7, 2, 1002);
        assert_eq!(
            c.handle_datagram(Micros::ZERO, WALL, addr(9999), &data(7, 1, 0)),
            Output::Nothing
        );
        assert_eq!(c.stats().dropped(DropReason::UnknownSource), 1);
        // A member claiming to be another member, or another session.
        c.handle_datagram(Micros::ZERO, WALL, addr(1001), &data(7, 2, 0));
        c.handle_datagram(Micros::ZERO, WALL, addr(1001), &data(8, 1, 0));
        assert_eq!(c.stats().dropped(DropReason::Spoofed), 2);
        c.handle_datagram(Micros::ZERO, WALL, addr(1001), b"garbage");
        assert_eq!(c.stats().dropped(DropReason::Malformed), 1);
    }

    #[test]
    fn hello_replay_tamper_forgery_and_staleness_are_refused() {
        let mut c = core();
        let secret = ServerSecret([3; 32]);
        let (h, _) = hello_bytes(&secret, 7, 1, WALL);
        assert!(matches!(
            c.handle_datagram(Micros::ZERO, WALL, addr(1), &h),
            Output::Reply { .. }
        ));
        // The same hello again, from an attacker's address: a replay.
        assert_eq!(
            c.handle_datagram(Micros::ZERO, WALL, addr(666), &h),
            Output::Nothing
        );
        assert_eq!(c.stats().dropped(DropReason::Replay), 1);
        // Tampered: flip a byte of the client time.
        let (mut h2, _) = hello_bytes(&secret, 7, 1, WALL + 10);
        let at = relay::HEADER_LEN + relay::TICKET_LEN + 3;
        h2[at] ^= 1;
        c.handle_datagram(Micros::ZERO, WALL, addr(666), &h2);
        assert_eq!(c.stats().dropped(DropReason::BadTag), 1);
        // Forged: a ticket made with another secret.
        let (h3, _) = hello_bytes(&ServerSecret([4; 32]), 7, 5, WALL + 20);
        c.handle_datagram(Micros::ZERO, WALL, addr(666), &h3);
        assert_eq!(c.stats().dropped(DropReason::ForgedTicket), 1);
        // Stale: a minute old.
        let (h4, _) = hello_bytes(&secret, 7, 2, WALL - 60_000_000);
        c.handle_datagram(Micros::ZERO, WALL, addr(2), &h4);
        assert_eq!(c.stats().dropped(DropReason::Stale), 1);
        // The member still sits at its first address.
        assert_eq!(c.members().next().unwrap().addr, addr(1));
    }

    #[test]
    fn a_newer_hello_moves_the_member_to_its_new_address() {
        let mut c = core();
        let secret = ServerSecret([3; 32]);
        join(&mut c, 7, 1, 1001);
        join(&mut c, 7, 2, 1002);
        let (h, _) = hello_bytes(&secret, 7, 1, WALL + 1);
        c.handle_datagram(Micros::ZERO, WALL, addr(2001), &h);
        let to = forwarded(c.handle_datagram(Micros::ZERO, WALL, addr(1002), &data(7, 2, 0)));
        assert_eq!(to, vec![addr(2001)]);
        // The old address is no longer a member.
        c.handle_datagram(Micros::ZERO, WALL, addr(1001), &data(7, 1, 0));
        assert_eq!(c.stats().dropped(DropReason::UnknownSource), 1);
    }

    #[test]
    fn keepalives_keep_members_and_silence_expires_them() {
        let mut c = core();
        let key = join(&mut c, 7, 1, 1001);
        join(&mut c, 7, 2, 1002);
        let mut buf = [0u8; 128];
        let ka = Keepalive {
            seq: 1,
            client_time_us: 5,
            rtt_us: 1234,
            loss_permille: 7,
            jitter_us: 100,
        };
        let n = relay::encode_keepalive(7, 1, &ka, &key, &mut buf).unwrap();
        let t = Micros::from_secs(15);
        assert!(matches!(
            c.handle_datagram(t, WALL, addr(1001), &buf[..n]),
            Output::Reply { .. }
        ));
        // Replayed keepalive.
        assert_eq!(
            c.handle_datagram(t, WALL, addr(1001), &buf[..n]),
            Output::Nothing
        );
        assert_eq!(c.stats().dropped(DropReason::Replay), 1);
        while c.poll_event().is_some() {}
        c.handle_timeout(Micros::from_secs(25), WALL);
        let live: Vec<u32> = c.members().map(|m| m.member).collect();
        assert_eq!(live, vec![1]);
        assert_eq!(c.members().next().unwrap().rtt_us, 1234);
        assert_eq!(
            c.poll_event(),
            Some(RelayEvent::Offline {
                session: 7,
                member: 2,
                reason: OfflineReason::Timeout
            })
        );
    }

    #[test]
    fn leave_and_revoke_remove_members_and_revoked_tickets_stay_out() {
        let mut c = core();
        let key = join(&mut c, 7, 1, 1001);
        join(&mut c, 7, 2, 1002);
        let mut buf = [0u8; 128];
        let n = relay::encode_leave(
            7,
            1,
            &Leave {
                client_time_us: WALL + 5,
                nonce: 9,
            },
            &key,
            &mut buf,
        )
        .unwrap();
        c.handle_datagram(Micros::ZERO, WALL, addr(1001), &buf[..n]);
        assert_eq!(c.live_members(), 1);
        c.revoke(7, 2, WALL / 1_000_000 + 100);
        assert_eq!(c.live_members(), 0);
        let (h, _) = hello_bytes(&ServerSecret([3; 32]), 7, 2, WALL + 50);
        c.handle_datagram(Micros::ZERO, WALL, addr(1002), &h);
        assert_eq!(c.stats().dropped(DropReason::Revoked), 1);
    }

    #[test]
    fn rate_limit_drops_bursts_and_refills() {
        let cfg = RelayConfig {
            rate_packets_per_sec: 10,
            burst_packets: 5,
            ..RelayConfig::default()
        };
        let mut c = RelayCore::new(ServerSecret([3; 32]), cfg);
        join(&mut c, 7, 1, 1001);
        join(&mut c, 7, 2, 1002);
        let d = data(7, 1, 0);
        let sent = (0..20)
            .filter(|_| {
                matches!(
                    c.handle_datagram(Micros::ZERO, WALL, addr(1001), &d),
                    Output::Forward { .. }
                )
            })
            .count();
        assert_eq!(sent, 5);
        assert_eq!(c.stats().dropped(DropReason::RateLimited), 15);
        // One second later ten more tokens (capped at the burst of five).
        let later = (0..20)
            .filter(|_| {
                matches!(
                    c.handle_datagram(Micros::from_secs(1), WALL, addr(1001), &d),
                    Output::Forward { .. }
                )
            })
            .count();
        assert_eq!(later, 5);
    }

    #[test]
    fn per_member_traffic_counts_add_up() {
        let mut c = core();
        join(&mut c, 7, 1, 1001);
        join(&mut c, 7, 2, 1002);
        join(&mut c, 7, 3, 1003);
        let d = data(7, 1, 0);
        for _ in 0..4 {
            c.handle_datagram(Micros::ZERO, WALL, addr(1001), &d);
        }
        let mut ms: Vec<MemberStats> = c.members().collect();
        ms.sort_by_key(|m| m.member);
        assert_eq!(ms[0].packets_in, 4);
        assert_eq!(ms[0].packets_out, 0);
        assert_eq!(ms[1].packets_out, 4);
        assert_eq!(ms[2].bytes_out, 4 * d.len() as u64);
    }

    proptest::proptest! {
        /// Arbitrary datagrams (raw, or behind a valid data header of a
        /// real member) never panic the relay, are all counted, and never
        /// reach anyone unless they come from a registered member.
        #[test]
        fn arbitrary_datagrams_are_counted_and_never_panic(
            packets in proptest::collection::vec(
                (proptest::prelude::any::<bool>(), 0u16..4, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80)),
                1..60,
            )
        ) {
            let mut c = core();
            join(&mut c, 7, 1, 1001);
            join(&mut c, 7, 2, 1002);
            let before = c.stats().packets_in;
            for (wrap, port, body) in &packets {
                let bytes = if *wrap {
                    let mut b = data(7, 1, 0)[..relay::DATA_HEADER_LEN].to_vec();
                    b.extend_from_slice(body);
                    b
                } else {
                    body.clone()
                };
                let from = addr(1000 + port);
                let registered = from == addr(1001) || from == addr(1002);
                if let Output::Forward { .. } = c.handle_datagram(Micros::ZERO, WALL, from, &bytes) {
                    proptest::prop_assert!(registered);
                }
            }
            proptest::prop_assert_eq!(c.stats().packets_in - before, packets.len() as u64);
        }
    }
}
