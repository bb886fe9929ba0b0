//! `jamd`, the self-hosted control plane of jam.togthr, as a library.
//!
//! One process holds everything a self-hoster needs so that musicians
//! behind home routers can play together:
//!
//! - [`api`]: accounts (Argon2id passwords, hashed expiring tokens, invite
//!   codes), device public keys (X25519), and session discovery (create,
//!   list, join, leave). Joining returns a relay ticket.
//! - [`relay`]: one UDP port; learns each member's reply address from an
//!   authenticated hello, keeps it with keepalives, fans data packets out to
//!   the session, rate-limits and drops strangers. It never reads payloads.
//! - [`blobs`]: a store for sealed `.agent` and `.scp` files with versions
//!   and per-recipient shares; it keeps ciphertext only.
//! - [`dashboard`] and [`metrics`]: a live web page (server-sent events)
//!   and Prometheus text at `/metrics`.
//! - [`db`]: one set of SQL statements for SQLite (default) and PostgreSQL,
//!   with versioned migrations; [`config`]: flags, environment, TOML.
//! - [`nodes`]: several nodes on one PostgreSQL database tell each other
//!   what changed (`NOTIFY`), so any node's API and dashboard show a
//!   session hosted by another, and a leave made anywhere reaches the
//!   hosting relay at once.
//!
//! [`server::Server`] starts it all:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use jam_control_plane::{config::Config, server::Server};
//! let dir = std::path::Path::new("/tmp/jamd-demo");
//! let server = Server::start(Config::for_tests(dir, None)).await?;
//! println!("API on http://{}, relay on udp/{}", server.http_addr, server.relay_addr);
//! server.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! Not here: the relay wire format (`jam_transport::relay`, shared with the
//! peers), end-to-end encryption of payloads and the client side of joining
//! (the peers), TLS (put a reverse proxy in front of the HTTP port).

pub mod api;
pub mod auth;
pub mod blobs;
pub mod config;
pub mod dashboard;
pub mod db;
pub mod metrics;
pub mod nodes;
pub mod relay;
pub mod server;
