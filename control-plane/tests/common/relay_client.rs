//! A small blocking relay client for tests and the load benchmark: says
//! hello with the ticket from an HTTP join, sends keepalives and data, and
//! receives what the relay forwards. (The peers' real client is sans-IO and
//! lives with the peer; this one only drives the wire format.)

#![allow(dead_code, unreachable_pub)]

use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jam_transport::relay::{
    self, Hello, HelloAck, HelloKey, Keepalive, KeepaliveAck, Leave, MAX_PACKET_LEN, Packet,
    ReportedAddrs, Ticket,
};

/// Unix time in µs.
pub fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

/// One member's relay connection.
pub struct RelayClient {
    /// The socket (bound to 127.0.0.1:0).
    pub sock: UdpSocket,
    /// Relay address.
    pub relay: SocketAddr,
    /// Session id.
    pub session: u64,
    /// Member id.
    pub member: u32,
    /// Ticket from the join.
    pub ticket: Ticket,
    /// Hello key from the join.
    pub key: HelloKey,
    seq: u32,
    last_time: u64,
    buf: Vec<u8>,
}

impl RelayClient {
    /// A client for the member described by a join response (JSON).
    pub fn from_join(join: &serde_json::Value) -> RelayClient {
        let relay = join["relay"]
            .as_str()
            .expect("relay address")
            .to_socket_addrs()
            .expect("resolvable relay address")
            .find(|a| a.is_ipv4())
            .expect("an IPv4 relay address");
        let ticket =
            Ticket::from_hex(join["ticket"].as_str().expect("ticket")).expect("ticket hex");
        let key = HelloKey::from_hex(join["hello_key"].as_str().expect("key")).expect("key hex");
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind a client socket");
        RelayClient {
            sock,
            relay,
            session: ticket.session,
            member: ticket.member,
            ticket,
            key,
            seq: 0,
            last_time: 0,
            buf: vec![0; MAX_PACKET_LEN + 1],
        }
    }

    fn next_time(&mut self) -> u64 {
        self.last_time = wall_us().max(self.last_time + 1);
        self.last_time
    }

    /// The bytes of a fresh hello.
    pub fn hello_bytes(&mut self, reported: &[SocketAddr]) -> Vec<u8> {
        let hello = Hello {
            ticket: self.ticket,
            client_time_us: self.next_time(),
            nonce: u64::from(self.member) << 8 | u64::from(self.seq),
            reported: ReportedAddrs::new(reported).expect("at most 4 addresses"),
        };
        let mut buf = [0u8; MAX_PACKET_LEN];
        let n = relay::encode_hello(&hello, &self.key, &mut buf).expect("hello fits");
        buf[..n].to_vec()
    }

    /// Sends raw bytes to the relay.
    pub fn send_raw(&self, bytes: &[u8]) {
        self.sock
            .send_to(bytes, self.relay)
            .expect("send to the relay");
    }

    /// Waits for the next packet from the relay (any type).
    pub fn recv_packet(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        self.sock
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .ok()?;
        match self.sock.recv_from(&mut self.buf) {
            Ok((n, _)) => Some(self.buf[..n].to_vec()),
            Err(_) => None,
        }
    }

    /// Sends a hello and waits for its ack (three tries).
    pub fn hello(&mut self) -> io::Result<HelloAck> {
        self.hello_with(&[])
    }

    /// Like [`RelayClient::hello`], reporting addresses.
    pub fn hello_with(&mut self, reported: &[SocketAddr]) -> io::Result<HelloAck> {
        for _ in 0..3 {
            let bytes = self.hello_bytes(reported);
            self.send_raw(&bytes);
            let deadline = Instant::now() + Duration::from_secs(1);
            while let Some(p) = self.recv_packet(deadline.saturating_duration_since(Instant::now()))
            {
                if let Ok(Packet::HelloAck(_, ack)) = Packet::decode(&p) {
                    assert!(self.key.verify(&p).is_ok(), "hello ack with a bad tag");
                    return Ok(ack);
                }
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "no hello ack"))
    }

    /// Sends a keepalive with link statistics and waits for the ack.
    pub fn keepalive(
        &mut self,
        rtt_us: u32,
        loss_permille: u16,
        jitter_us: u32,
    ) -> io::Result<KeepaliveAck> {
        self.seq += 1;
        let ka = Keepalive {
            seq: self.seq,
            client_time_us: wall_us(),
            rtt_us,
            loss_permille,
            jitter_us,
        };
        let mut buf = [0u8; 128];
        let n = relay::encode_keepalive(self.session, self.member, &ka, &self.key, &mut buf)
            .expect("fits");
        self.send_raw(&buf[..n]);
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Some(p) = self.recv_packet(deadline.saturating_duration_since(Instant::now())) {
            if let Ok(Packet::KeepaliveAck(_, ack)) = Packet::decode(&p) {
                return Ok(ack);
            }
        }
        Err(io::Error::new(io::ErrorKind::TimedOut, "no keepalive ack"))
    }

    /// Sends a leave.
    pub fn leave(&mut self) {
        let leave = Leave {
            client_time_us: self.next_time(),
            nonce: 1,
        };
        let mut buf = [0u8; 128];
        let n = relay::encode_leave(self.session, self.member, &leave, &self.key, &mut buf)
            .expect("fits");
        self.send_raw(&buf[..n]);
    }

    /// Sends a data packet to `dest` (0 = everyone).
    pub fn send_data(&self, dest: u32, payload: &[u8]) {
        let mut buf = [0u8; MAX_PACKET_LEN];
        let n =
            relay::encode_data(self.session, self.member, dest, payload, &mut buf).expect("fits");
        self.send_raw(&buf[..n]);
    }

    /// Sends a data packet claiming another sender id (for spoofing tests).
    pub fn send_data_as(&self, session: u64, sender: u32, payload: &[u8]) {
        let mut buf = [0u8; MAX_PACKET_LEN];
        let n = relay::encode_data(session, sender, 0, payload, &mut buf).expect("fits");
        self.send_raw(&buf[..n]);
    }

    /// The next data packet within `timeout`: (sender, payload). Other
    /// packet types are skipped.
    pub fn recv_data(&mut self, timeout: Duration) -> Option<(u32, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let p = self.recv_packet(left)?;
            if let Ok(Packet::Data {
                header, payload, ..
            }) = Packet::decode(&p)
            {
                return Some((header.member, payload.to_vec()));
            }
        }
    }

    /// Every data packet arriving within `window`.
    pub fn drain_data(&mut self, window: Duration) -> Vec<(u32, Vec<u8>)> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        while let Some(d) = self.recv_data(deadline.saturating_duration_since(Instant::now())) {
            out.push(d);
        }
        out
    }
}
