//! Joining a jam session through `jamd`.
//!
//! Two pieces, both at the I/O edge (the protocol logic is sans-IO in
//! `jam-transport`):
//!
//! - [`Jamd`]: the HTTP API client: log in, register the device's X25519
//!   public key, find or create a session by name, join it (relay address,
//!   ticket, members' public keys), list members, leave.
//! - [`spawn_peer`]: runs a [`RelayPeer`] (a participant whose packets ride
//!   the relay, end-to-end encrypted) on the tokio UDP driver, reports the
//!   peer's own address for direct paths, and follows the member list so
//!   that joins and leaves reach the peer (a leave makes every remaining
//!   member rotate its sender key) and members' addresses reach the
//!   direct-path prober. The list is pushed by `jamd` over server-sent
//!   events ([`Jamd::member_events`], decoded by [`sse::SseDecoder`]); while
//!   that stream is down (`jamd` restarting, or a `jamd` without it) the
//!   list is polled and the stream retried with backoff ([`MemberFeed`]
//!   counts both). Peers reach each other directly where the network lets
//!   them ([`jam_transport::direct`]), through the relay otherwise.
//!
//! - [`join_session`]: the whole join by name in one call (log in,
//!   register the device key, find or create the session, join, start the
//!   peer), with a [`Leave`] to say goodbye to `jamd` afterwards. The CLI
//!   (`jam peer --server`) and the plugin both join this way.
//!
//! ```no_run
//! # async fn demo() -> Result<(), jam_join::JoinError> {
//! use jam_join::{JoinRequest, PeerOptions, join_session};
//! let secret = [7u8; 32]; // the device's X25519 secret (from its key file)
//! let peer = PeerOptions::new("ana", secret, 1, [9; 32]);
//! let request = JoinRequest::new("http://127.0.0.1:8080", "friday", "ana", "correct horse", peer);
//! let session = join_session(request).await?;
//! println!("member {} through {}", session.peer.joined.member_id, session.peer.joined.relay);
//! let leave = session.leave.clone();
//! session.peer.close().await?;
//! leave.run().await?;
//! # Ok(()) }
//! ```
//!
//! The same steps one by one:
//!
//! ```no_run
//! # async fn demo() -> Result<(), jam_join::JoinError> {
//! use jam_join::{Jamd, PeerOptions, spawn_peer};
//! let mut jamd = Jamd::new("http://127.0.0.1:8080");
//! jamd.login("ana", "correct horse").await?;
//! let secret = [7u8; 32]; // the device's X25519 secret (from its key file)
//! let public = jam_join::public_key(&secret);
//! let device = jamd.ensure_device("laptop", &public).await?;
//! let session = jamd.find_session("friday").await?.expect("the session exists");
//! let joined = jamd.join(&session, Some(&device), None).await?;
//! let peer = spawn_peer(jamd, joined, PeerOptions::new("ana", secret, 1, [9; 32])).await?;
//! // ... drive peer.driver, read peer.events ...
//! peer.close().await?;
//! # Ok(()) }
//! ```
//!
//! Not here: re-joining when a ticket expires (tickets last 12 hours by
//! default), reading key files (callers hand over the raw secret).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use jam_core::MonotonicClock;
use jam_engine::session_sync::SharedSession;
use jam_transport::direct::DirectConfig;
use jam_transport::driver::{Driver, DriverConfig, DriverError, DriverHandle};
use jam_transport::participant::{ParticipantConfig, ParticipantEvent};
use jam_transport::relay::{
    HelloKey, MAX_REPORTED_ADDRS, ReportedAddrs, Ticket, hex_decode, hex_encode,
};
use jam_transport::relay_client::{
    RelayClientConfig, RelayPeer, RelayPeerConfig, RelayPeerEvent, RemoteMember,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;

pub mod sse;

use sse::{SseDecoder, SseError};

/// Why talking to `jamd` or starting the peer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The request did not get an answer.
    #[error("cannot reach {url}: {source}")]
    Http {
        /// The URL requested.
        url: String,
        /// What went wrong.
        #[source]
        source: reqwest::Error,
    },
    /// `jamd` refused the request.
    #[error("{what}: jamd answered {status}: {message}")]
    Refused {
        /// What we asked for.
        what: &'static str,
        /// The HTTP status.
        status: StatusCode,
        /// `jamd`'s message.
        message: String,
    },
    /// The answer is not what the API documents.
    #[error("unexpected answer to {what}: {detail}")]
    BadResponse {
        /// What we asked for.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// The relay address does not resolve.
    #[error("cannot resolve relay address {0}")]
    Resolve(String),
    /// The UDP driver failed.
    #[error("network driver: {0}")]
    Driver(#[from] DriverError),
    /// A call needs a login first.
    #[error("not logged in")]
    NotLoggedIn,
    /// No session has that name (and the request did not ask to create
    /// it).
    #[error("no session called {name:?} on {server}")]
    NoSession {
        /// The name asked for.
        name: String,
        /// The server asked.
        server: String,
    },
    /// The member event stream cannot be decoded.
    #[error("member event stream: {0}")]
    Stream(#[from] SseError),
    /// The member event stream sent nothing, not even a keep-alive.
    #[error("member event stream silent for {0:?}")]
    Silent(Duration),
}

/// A client of `jamd`'s HTTP API.
#[derive(Debug, Clone)]
pub struct Jamd {
    base: String,
    http: reqwest::Client,
    /// For the member stream: no limit on the whole response, which lasts
    /// as long as the session.
    stream_http: reqwest::Client,
    token: Option<String>,
}

/// Everything a join returns that the peer needs.
#[derive(Debug, Clone)]
pub struct Joined {
    /// Session id (16 hex digits).
    pub session_id: String,
    /// The session's name, as `jamd` has it.
    pub session_name: String,
    /// When the session was created on `jamd` (Unix ms).
    pub session_created_ms: i64,
    /// Our member id.
    pub member_id: u32,
    /// The relay's UDP address as `jamd` gave it (`host:port`).
    pub relay: String,
    /// The relay ticket.
    pub ticket: Ticket,
    /// The key for our relay control messages.
    pub hello_key: HelloKey,
    /// `jamd`'s unix clock (ms) when it answered.
    pub server_time_ms: i64,
    /// The members (ourselves included) that have a device key.
    pub members: Vec<RemoteMember>,
}

/// The X25519 public key of a raw secret.
pub fn public_key(secret: &[u8; 32]) -> [u8; 32] {
    jam_transport::secure::public_key(secret)
}

/// Parses a member list as `GET /api/sessions/{id}/members` (and each
/// event of the member stream) carries it: a JSON array of members; those
/// without a device key are left out.
pub fn parse_member_list(json: &str) -> Result<Vec<RemoteMember>, JoinError> {
    let v: Value = serde_json::from_str(json).map_err(|e| JoinError::BadResponse {
        what: "members",
        detail: format!("not JSON: {e}"),
    })?;
    parse_members(&v)
}

fn parse_members(v: &Value) -> Result<Vec<RemoteMember>, JoinError> {
    let bad = |detail: String| JoinError::BadResponse {
        what: "members",
        detail,
    };
    let list = v
        .as_array()
        .ok_or_else(|| bad(format!("not a list: {v}")))?;
    let mut out = Vec::new();
    for m in list {
        let id = m["member_id"]
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| bad(format!("no member_id in {m}")))?;
        // A member without a device key cannot take part in an encrypted
        // session; it is left out.
        let Some(pk) = m["public_key"].as_str() else {
            continue;
        };
        let mut public_key = [0u8; 32];
        hex_decode(pk, &mut public_key).ok_or_else(|| bad(format!("public key {pk:?}")))?;
        // Addresses that do not parse are skipped: they only ever cost a
        // direct path, never the session.
        let observed = m["observed_addr"]
            .as_str()
            .and_then(|a| a.parse::<SocketAddr>().ok());
        let reported: Vec<SocketAddr> = m["reported_addrs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str()?.parse().ok())
            .take(MAX_REPORTED_ADDRS)
            .collect();
        let mut member = RemoteMember::new(id, public_key, m["online"].as_bool().unwrap_or(false));
        member.observed = observed;
        member.reported = ReportedAddrs::new(&reported).unwrap_or_default();
        out.push(member);
    }
    Ok(out)
}

impl Jamd {
    /// A client for the server at `base` (`http://host:port`).
    pub fn new(base: impl Into<String>) -> Self {
        Jamd {
            base: base.into().trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            stream_http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            token: None,
        }
    }

    async fn request(
        &self,
        what: &'static str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, JoinError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|source| JoinError::Http {
            url: url.clone(),
            source,
        })?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|source| JoinError::Http { url, source })?;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(JoinError::Refused {
                what,
                status,
                message: v["message"].as_str().unwrap_or(&text).to_string(),
            });
        }
        Ok(v)
    }

    fn need_token(&self) -> Result<(), JoinError> {
        self.token
            .as_ref()
            .map(|_| ())
            .ok_or(JoinError::NotLoggedIn)
    }

    /// Creates an account (servers with open registration).
    pub async fn register(&self, username: &str, password: &str) -> Result<(), JoinError> {
        self.request(
            "register",
            Method::POST,
            "/api/accounts",
            Some(json!({ "username": username, "password": password })),
        )
        .await
        .map(|_| ())
    }

    /// Logs in; later calls use the token.
    pub async fn login(&mut self, username: &str, password: &str) -> Result<(), JoinError> {
        let v = self
            .request(
                "login",
                Method::POST,
                "/api/login",
                Some(json!({ "username": username, "password": password })),
            )
            .await?;
        let token = v["token"].as_str().ok_or_else(|| JoinError::BadResponse {
            what: "login",
            detail: "no token".into(),
        })?;
        self.token = Some(token.to_string());
        Ok(())
    }

    /// The id of our device with this public key, registering it under
    /// `name` if it is not yet.
    pub async fn ensure_device(
        &self,
        name: &str,
        public_key: &[u8; 32],
    ) -> Result<String, JoinError> {
        self.need_token()?;
        let hex = hex_encode(public_key);
        let list = self
            .request("list devices", Method::GET, "/api/devices", None)
            .await?;
        if let Some(id) = list
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["public_key"].as_str() == Some(hex.as_str()))
            .and_then(|d| d["id"].as_str())
        {
            return Ok(id.to_string());
        }
        let d = self
            .request(
                "register device",
                Method::POST,
                "/api/devices",
                Some(json!({ "name": name, "public_key": hex })),
            )
            .await?;
        d["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| JoinError::BadResponse {
                what: "register device",
                detail: format!("no id in {d}"),
            })
    }

    /// The id of the session called `name`, if there is one.
    pub async fn find_session(&self, name: &str) -> Result<Option<String>, JoinError> {
        let path = format!("/api/sessions/by-name/{}", encode_path(name));
        match self.request("find session", Method::GET, &path, None).await {
            Ok(v) => Ok(v["id"].as_str().map(str::to_string)),
            Err(JoinError::Refused {
                status: StatusCode::NOT_FOUND,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a public session called `name`; returns its id.
    pub async fn create_session(&self, name: &str) -> Result<String, JoinError> {
        self.need_token()?;
        let v = self
            .request(
                "create session",
                Method::POST,
                "/api/sessions",
                Some(json!({ "name": name, "public": true })),
            )
            .await?;
        v["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| JoinError::BadResponse {
                what: "create session",
                detail: format!("no id in {v}"),
            })
    }

    /// Joins a session with a device (default: the newest one).
    pub async fn join(
        &self,
        session_id: &str,
        device_id: Option<&str>,
        password: Option<&str>,
    ) -> Result<Joined, JoinError> {
        self.need_token()?;
        let mut body = json!({});
        if let Some(d) = device_id {
            body["device_id"] = json!(d);
        }
        if let Some(p) = password {
            body["password"] = json!(p);
        }
        let v = self
            .request(
                "join",
                Method::POST,
                &format!("/api/sessions/{session_id}/join"),
                Some(body),
            )
            .await?;
        let bad = |detail: &str| JoinError::BadResponse {
            what: "join",
            detail: detail.to_string(),
        };
        let ticket = Ticket::from_hex(v["ticket"].as_str().ok_or_else(|| bad("no ticket"))?)
            .map_err(|e| bad(&format!("ticket: {e}")))?;
        let hello_key = HelloKey::from_hex(v["hello_key"].as_str().ok_or_else(|| bad("no key"))?)
            .ok_or_else(|| bad("hello key is not 64 hex digits"))?;
        let session = &v["session"];
        Ok(Joined {
            session_id: session_id.to_string(),
            session_name: session["name"]
                .as_str()
                .ok_or_else(|| bad("no session name"))?
                .to_string(),
            session_created_ms: session["created_at"]
                .as_i64()
                .ok_or_else(|| bad("no session creation time"))?,
            member_id: ticket.member,
            relay: v["relay"]
                .as_str()
                .ok_or_else(|| bad("no relay"))?
                .to_string(),
            ticket,
            hello_key,
            server_time_ms: v["server_time_ms"]
                .as_i64()
                .ok_or_else(|| bad("no server time"))?,
            members: parse_members(&v["members"])?,
        })
    }

    /// The session's members that have a device key.
    pub async fn members(&self, session_id: &str) -> Result<Vec<RemoteMember>, JoinError> {
        let v = self
            .request(
                "members",
                Method::GET,
                &format!("/api/sessions/{session_id}/members"),
                None,
            )
            .await?;
        parse_members(&v)
    }

    /// Opens the session's member stream
    /// (`GET /api/sessions/{id}/members/events`): the member list now, and
    /// again whenever it changes. Refused like [`Jamd::members`] (403 for
    /// non-members); a `jamd` without the stream answers 404.
    pub async fn member_events(&self, session_id: &str) -> Result<MemberEvents, JoinError> {
        self.need_token()?;
        let url = format!("{}/api/sessions/{session_id}/members/events", self.base);
        let mut req = self
            .stream_http
            .get(&url)
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = tokio::time::timeout(STREAM_SILENCE, req.send())
            .await
            .map_err(|_| JoinError::Silent(STREAM_SILENCE))?
            .map_err(|source| JoinError::Http {
                url: url.clone(),
                source,
            })?;
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Err(JoinError::Refused {
                what: "member events",
                status,
                message: v["message"].as_str().unwrap_or(&text).to_string(),
            });
        }
        Ok(MemberEvents {
            resp,
            decoder: SseDecoder::new(),
            ready: VecDeque::new(),
        })
    }

    /// Leaves a session (the relay forgets us; the others rotate).
    pub async fn leave(&self, session_id: &str) -> Result<(), JoinError> {
        self.request(
            "leave",
            Method::POST,
            &format!("/api/sessions/{session_id}/leave"),
            None,
        )
        .await
        .map(|_| ())
    }
}

/// How long the member stream may stay silent before it counts as dead:
/// `jamd` sends a keep-alive comment every 15 s.
const STREAM_SILENCE: Duration = Duration::from_secs(40);

/// An open member stream ([`Jamd::member_events`]).
#[derive(Debug)]
pub struct MemberEvents {
    resp: reqwest::Response,
    decoder: SseDecoder,
    ready: VecDeque<sse::SseEvent>,
}

impl MemberEvents {
    /// The next member list `jamd` pushes; `Ok(None)` when `jamd` ended the
    /// stream (shutting down, or we may no longer see the members). Events
    /// of other names are skipped.
    pub async fn next(&mut self) -> Result<Option<Vec<RemoteMember>>, JoinError> {
        loop {
            while let Some(e) = self.ready.pop_front() {
                if e.event == "members" {
                    return parse_member_list(&e.data).map(Some);
                }
            }
            let chunk = tokio::time::timeout(STREAM_SILENCE, self.resp.chunk())
                .await
                .map_err(|_| JoinError::Silent(STREAM_SILENCE))?
                .map_err(|source| JoinError::Http {
                    url: self.resp.url().to_string(),
                    source,
                })?;
            match chunk {
                Some(bytes) => self.ready.extend(self.decoder.push(&bytes)?),
                None => return Ok(None),
            }
        }
    }
}

/// How a peer has learnt the member list so far (see [`spawn_peer`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemberFeed {
    /// Member streams opened (1 normally; more after `jamd` restarts).
    pub streams_opened: u64,
    /// Member lists received on a stream.
    pub pushed: u64,
    /// Member lists fetched by polling while no stream was open.
    pub polled: u64,
    /// Stream attempts and polls that failed.
    pub failures: u64,
}

/// The first wait before the member stream is tried again; it doubles on
/// every failed attempt up to [`STREAM_RETRY_MAX`].
const STREAM_RETRY_MIN: Duration = Duration::from_millis(250);

/// The longest wait between attempts to reopen the member stream.
const STREAM_RETRY_MAX: Duration = Duration::from_secs(4);

/// Hands the member list to the peer for as long as it runs: from the
/// member stream while it is open; otherwise by polling every
/// `poll_interval` (once at least per gap) while the stream is retried
/// after a growing wait.
async fn follow_members(
    jamd: Jamd,
    session: String,
    handle: DriverHandle<RelayPeer>,
    poll_interval: Duration,
    feed: watch::Sender<MemberFeed>,
) {
    let deliver = |list: Vec<RemoteMember>| {
        handle
            .submit(move |p, now| p.set_members(now, &list))
            .is_ok()
    };
    let count = |f: fn(&mut MemberFeed)| feed.send_modify(f);
    let mut wait = STREAM_RETRY_MIN;
    loop {
        match jamd.member_events(&session).await {
            Ok(mut events) => {
                count(|f| f.streams_opened += 1);
                loop {
                    match events.next().await {
                        Ok(Some(list)) => {
                            count(|f| f.pushed += 1);
                            wait = STREAM_RETRY_MIN;
                            if !deliver(list) {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "member stream dropped");
                            count(|f| f.failures += 1);
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "member stream unavailable; polling");
                count(|f| f.failures += 1);
            }
        }
        let retry_at = tokio::time::Instant::now() + wait;
        loop {
            match jamd.members(&session).await {
                Ok(list) => {
                    count(|f| f.polled += 1);
                    if !deliver(list) {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "member poll failed");
                    count(|f| f.failures += 1);
                }
            }
            let next = tokio::time::Instant::now() + poll_interval;
            if next >= retry_at {
                tokio::time::sleep_until(retry_at).await;
                break;
            }
            tokio::time::sleep_until(next).await;
        }
        wait = (wait * 2).min(STREAM_RETRY_MAX);
    }
}

/// Percent-encodes a path segment (session names may hold spaces and
/// anything else but control characters).
fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How to run a peer.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// The name other participants see.
    pub name: String,
    /// The device's raw X25519 secret.
    pub secret: [u8; 32],
    /// Seeds SSRC, tokens, sequence numbers and nonces.
    pub seed: u64,
    /// Seeds the sender keys (32 bytes from the OS generator).
    pub key_seed: [u8; 32],
    /// The local address to bind (0.0.0.0 by default).
    pub bind: IpAddr,
    /// How often the member list is fetched while `jamd`'s member stream
    /// is not open (it normally pushes every change).
    pub poll_interval: Duration,
    /// The clock the driver runs on (share it to stamp MIDI you send).
    pub clock: MonotonicClock,
    /// Try direct paths to the other members (`None`: relay only).
    pub direct: Option<DirectConfig>,
    /// Report our own address to `jamd` for the others' direct paths
    /// (`false` keeps a LAN address private; members then only try the
    /// address the relay sees).
    pub report_addrs: bool,
}

impl PeerOptions {
    /// Defaults: bind every IPv4 interface, poll members every 500 ms when
    /// the member stream is down.
    pub fn new(name: impl Into<String>, secret: [u8; 32], seed: u64, key_seed: [u8; 32]) -> Self {
        PeerOptions {
            name: name.into(),
            secret,
            seed,
            key_seed,
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            poll_interval: Duration::from_millis(500),
            clock: MonotonicClock::new(),
            direct: Some(DirectConfig::default()),
            report_addrs: true,
        }
    }
}

/// A running peer: the driver (send MIDI with
/// `driver.call(|p, now| p.participant().send(now, now, msg))`) and its
/// events.
pub struct RunningPeer {
    /// The UDP driver running the [`RelayPeer`].
    pub driver: Driver<RelayPeer>,
    /// What the peer reports.
    pub events: UnboundedReceiver<RelayPeerEvent>,
    /// The session joined.
    pub joined: Joined,
    poller: tokio::task::JoinHandle<()>,
    feed: watch::Receiver<MemberFeed>,
}

impl RunningPeer {
    /// How the member list has reached the peer so far (stream or polls);
    /// changes as it does.
    pub fn member_feed(&self) -> watch::Receiver<MemberFeed> {
        self.feed.clone()
    }

    /// The driver and its events, for a caller that runs the peer itself
    /// (the engine's network adapter). The member feed keeps running until
    /// the driver stops; close the peer through the driver
    /// (`RelayPeer::close`) before shutting it down.
    pub fn into_parts(self) -> (Driver<RelayPeer>, UnboundedReceiver<RelayPeerEvent>, Joined) {
        (self.driver, self.events, self.joined)
    }

    /// Ends every session, says goodbye to the relay, stops the driver;
    /// returns the peer for a last look at its state.
    pub async fn close(self) -> Result<RelayPeer, JoinError> {
        self.poller.abort();
        self.driver.call(|p, now| p.close(now)).await?;
        Ok(self.driver.shutdown().await?)
    }
}

/// Starts a [`RelayPeer`] for a join on a fresh UDP port, and a task that
/// hands it the member list whenever it changes: pushed by `jamd`'s member
/// stream, polled every [`PeerOptions::poll_interval`] while the stream is
/// down (failed polls, e.g. while `jamd` restarts, are skipped; the stream
/// is retried after 250 ms, doubling up to 4 s).
pub async fn spawn_peer(
    jamd: Jamd,
    joined: Joined,
    opts: PeerOptions,
) -> Result<RunningPeer, JoinError> {
    let relay = tokio::net::lookup_host(&joined.relay)
        .await
        .map_err(|_| JoinError::Resolve(joined.relay.clone()))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| JoinError::Resolve(joined.relay.clone()))?;
    let config = RelayPeerConfig {
        relay: RelayClientConfig::new(relay, joined.ticket, joined.hello_key.clone()),
        participant: ParticipantConfig::new(opts.name.clone(), opts.seed),
        secret: opts.secret,
        key_seed: opts.key_seed,
        unix_us: u64::try_from(joined.server_time_ms).unwrap_or(0) * 1_000,
        reinvite_interval: Duration::from_secs(1),
        direct: opts.direct,
    };
    let driver_config = DriverConfig {
        ip: opts.bind,
        ..DriverConfig::loopback()
    };
    let members = joined.members.clone();
    let (driver, events) = Driver::spawn(driver_config, opts.clock, move |now| {
        let mut p = RelayPeer::new(config, now);
        p.set_members(now, &members);
        p
    })
    .await?;
    if opts.report_addrs {
        let port = driver.control_addr().port();
        let addrs = local_addrs(opts.bind, relay, port);
        driver.submit(move |p, now| p.set_reported(now, &addrs))?;
    }
    let (feed_tx, feed) = watch::channel(MemberFeed::default());
    let poller = tokio::spawn(follow_members(
        jamd,
        joined.session_id.clone(),
        driver.handle(),
        opts.poll_interval,
        feed_tx,
    ));
    Ok(RunningPeer {
        driver,
        events,
        joined,
        poller,
        feed,
    })
}

/// Our own addresses to report for direct paths: the bound address, or
/// when bound to every interface, the address the system would send from
/// towards the relay (a UDP `connect` sends nothing, it only picks the
/// route), with the driver's control port.
fn local_addrs(bind: IpAddr, relay: SocketAddr, port: u16) -> Vec<SocketAddr> {
    if !bind.is_unspecified() {
        return vec![SocketAddr::new(bind, port)];
    }
    let routed = std::net::UdpSocket::bind(SocketAddr::new(bind, 0))
        .and_then(|s| {
            s.connect(relay)?;
            s.local_addr()
        })
        .map(|a| a.ip());
    match routed {
        Ok(ip) if !ip.is_unspecified() => vec![SocketAddr::new(ip, port)],
        _ => Vec::new(),
    }
}

/// Everything [`join_session`] needs: where, which session, as whom, and
/// how to run the peer.
#[derive(Clone)]
pub struct JoinRequest {
    /// `jamd`'s base URL (`http://host:port`).
    pub server: String,
    /// The session's name.
    pub session: String,
    /// The account to log in with.
    pub user: String,
    /// The account's password (kept only as long as the request).
    pub password: String,
    /// The name this device is registered under if its key is new.
    pub device_name: String,
    /// Create the account first (servers with open registration); an
    /// account that already exists is not an error.
    pub register: bool,
    /// Create the session if there is none by that name.
    pub create: bool,
    /// How to run the peer (its `secret` is the device key registered).
    pub peer: PeerOptions,
}

impl std::fmt::Debug for JoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the password nor the secret key is ever printed.
        f.debug_struct("JoinRequest")
            .field("server", &self.server)
            .field("session", &self.session)
            .field("user", &self.user)
            .field("device_name", &self.device_name)
            .field("register", &self.register)
            .field("create", &self.create)
            .finish_non_exhaustive()
    }
}

impl JoinRequest {
    /// A request that neither registers the account nor creates the
    /// session; the device is registered as `jam <peer name>`.
    pub fn new(
        server: impl Into<String>,
        session: impl Into<String>,
        user: impl Into<String>,
        password: impl Into<String>,
        peer: PeerOptions,
    ) -> Self {
        JoinRequest {
            server: server.into(),
            session: session.into(),
            user: user.into(),
            password: password.into(),
            device_name: format!("jam {}", peer.name),
            register: false,
            create: false,
            peer,
        }
    }
}

/// A session joined by name, its peer running.
pub struct JoinedSession {
    /// The running relay peer (driver, events, what the join returned).
    pub peer: RunningPeer,
    /// Whether [`JoinRequest::register`] created the account.
    pub created_account: bool,
    /// Says goodbye to `jamd` once the peer is closed.
    pub leave: Leave,
}

impl JoinedSession {
    /// Our device public key, as the member list has it.
    pub fn own_key(&self) -> Option<[u8; 32]> {
        let j = &self.peer.joined;
        j.members
            .iter()
            .find(|m| m.id == j.member_id)
            .map(|m| m.public_key)
    }

    /// The session as the engine founds its document and aligns its clock
    /// in it ([`jam_engine::session_sync::SharedSession`]): the same for
    /// every member but for our key and whether we were first online.
    pub fn shared_session(&self) -> SharedSession {
        let j = &self.peer.joined;
        SharedSession::jamd(
            &j.session_id,
            &j.session_name,
            j.session_created_ms,
            self.own_key().unwrap_or_default(),
            self.others_online() == 0,
        )
    }

    /// How many other members were online when we joined.
    pub fn others_online(&self) -> usize {
        let me = self.peer.joined.member_id;
        self.peer
            .joined
            .members
            .iter()
            .filter(|m| m.online && m.id != me)
            .count()
    }
}

/// Leaving a joined session through the HTTP API (the relay forgets us and
/// the other members rotate their sender keys). Cloneable so that it can be
/// kept apart from the peer.
#[derive(Debug, Clone)]
pub struct Leave {
    jamd: Jamd,
    session_id: String,
}

impl Leave {
    /// The session left.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Leaves. A failure (`jamd` down) only means the membership stays
    /// until an owner removes it.
    pub async fn run(self) -> Result<(), JoinError> {
        self.jamd.leave(&self.session_id).await
    }
}

/// Joins the session `request.session` on `request.server` by name: logs in
/// (registering the account first if asked), registers the device's public
/// key (derived from `request.peer.secret`) unless it is already, finds the
/// session (creating it if asked), joins it and starts its [`RelayPeer`]
/// with [`spawn_peer`] on the current tokio runtime.
///
/// Errors say which step failed: [`JoinError::Http`] when `jamd` cannot be
/// reached, [`JoinError::Refused`] (a wrong password is `login` answered
/// `401`), [`JoinError::NoSession`] for an unknown name.
pub async fn join_session(request: JoinRequest) -> Result<JoinedSession, JoinError> {
    let JoinRequest {
        server,
        session,
        user,
        password,
        device_name,
        register,
        create,
        peer,
    } = request;
    let mut jamd = Jamd::new(server.clone());
    let mut created_account = false;
    if register {
        match jamd.register(&user, &password).await {
            Ok(()) => created_account = true,
            Err(JoinError::Refused {
                status: StatusCode::CONFLICT,
                ..
            }) => {}
            Err(e) => return Err(e),
        }
    }
    jamd.login(&user, &password).await?;
    drop(password);
    let public = public_key(&peer.secret);
    let device = jamd.ensure_device(&device_name, &public).await?;
    let id = match jamd.find_session(&session).await? {
        Some(id) => id,
        None if create => jamd.create_session(&session).await?,
        None => {
            return Err(JoinError::NoSession {
                name: session,
                server,
            });
        }
    };
    let joined = jamd.join(&id, Some(&device), None).await?;
    let leave = Leave {
        jamd: jamd.clone(),
        session_id: id,
    };
    let peer = match spawn_peer(jamd, joined, peer).await {
        Ok(p) => p,
        Err(e) => {
            // Joined but cannot play: do not stay a member.
            let _ = leave.clone().run().await;
            return Err(e);
        }
    };
    Ok(JoinedSession {
        peer,
        created_account,
        leave,
    })
}

/// Splits a relay peer's events: the participant's go to the returned
/// receiver (what the engine's network adapter reads), the relay peer's
/// own (relay connection, key rotations, path changes) to `other`. Runs as
/// a task on the current tokio runtime until the peer's events end or the
/// receiver is dropped.
pub fn split_events(
    mut events: UnboundedReceiver<RelayPeerEvent>,
    mut other: impl FnMut(RelayPeerEvent) + Send + 'static,
) -> UnboundedReceiver<ParticipantEvent> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                RelayPeerEvent::Participant(e) => {
                    if tx.send(e).is_err() {
                        return;
                    }
                }
                e => other(e),
            }
        }
    });
    rx
}
