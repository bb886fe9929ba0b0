//! `jamd`'s settings: flags, environment (`JAMD_*`), an optional TOML file,
//! then defaults, in that order of precedence.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::relay::RelayConfig;

/// Who may create an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// Anyone who can reach the server.
    Open,
    /// Only with an invite code (`jamd invite`, or an admin's `POST /api/invites`).
    Invite,
    /// Nobody through the API; accounts come from `jamd user add`.
    Closed,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Settings as they may appear in the TOML file (every key optional). The
/// same names, upper-cased with a `JAMD_` prefix, are environment variables,
/// and with dashes instead of underscores, flags.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where the SQLite database and the blob files live.
    pub data_dir: Option<PathBuf>,
    /// `sqlite://...` or `postgres://...`; default: SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// HTTP listen address.
    pub http_listen: Option<SocketAddr>,
    /// Relay UDP listen address.
    pub relay_listen: Option<SocketAddr>,
    /// The relay address clients are told to use (host:port). Default: the
    /// host the client reached the HTTP API on, with the relay's port.
    pub public_relay_addr: Option<String>,
    /// This node's name (several relay nodes may share one database).
    pub node_name: Option<String>,
    /// Who may create accounts.
    pub registration: Option<Registration>,
    /// Login token lifetime, seconds.
    pub token_ttl_secs: Option<u64>,
    /// Relay ticket lifetime, seconds.
    pub ticket_ttl_secs: Option<u64>,
    /// Largest JSON request body, bytes.
    pub max_json_bytes: Option<usize>,
    /// Largest blob upload, bytes.
    pub max_blob_bytes: Option<u64>,
    /// Relay: sustained packets per second per member.
    pub relay_rate_pps: Option<u32>,
    /// Relay: burst packets per member.
    pub relay_burst_packets: Option<u32>,
    /// Relay: sustained bytes per second per member.
    pub relay_rate_bytes: Option<u32>,
    /// Relay: silence after which a member is forgotten, seconds.
    pub keepalive_timeout_secs: Option<u64>,
    /// Seconds between two checks of the relay's live members against the
    /// database (the backstop for leaves made through another node).
    pub membership_sweep_secs: Option<u64>,
    /// Log format.
    pub log_format: Option<LogFormat>,
}

impl FileConfig {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        use anyhow::Context;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Fills every unset field of `self` from `other`.
    pub fn or(self, other: FileConfig) -> FileConfig {
        FileConfig {
            data_dir: self.data_dir.or(other.data_dir),
            database_url: self.database_url.or(other.database_url),
            http_listen: self.http_listen.or(other.http_listen),
            relay_listen: self.relay_listen.or(other.relay_listen),
            public_relay_addr: self.public_relay_addr.or(other.public_relay_addr),
            node_name: self.node_name.or(other.node_name),
            registration: self.registration.or(other.registration),
            token_ttl_secs: self.token_ttl_secs.or(other.token_ttl_secs),
            ticket_ttl_secs: self.ticket_ttl_secs.or(other.ticket_ttl_secs),
            max_json_bytes: self.max_json_bytes.or(other.max_json_bytes),
            max_blob_bytes: self.max_blob_bytes.or(other.max_blob_bytes),
            relay_rate_pps: self.relay_rate_pps.or(other.relay_rate_pps),
            relay_burst_packets: self.relay_burst_packets.or(other.relay_burst_packets),
            relay_rate_bytes: self.relay_rate_bytes.or(other.relay_rate_bytes),
            keepalive_timeout_secs: self.keepalive_timeout_secs.or(other.keepalive_timeout_secs),
            membership_sweep_secs: self.membership_sweep_secs.or(other.membership_sweep_secs),
            log_format: self.log_format.or(other.log_format),
        }
    }

    /// Applies the defaults.
    pub fn resolve(self) -> Config {
        let data_dir = self.data_dir.unwrap_or_else(|| PathBuf::from("jamd-data"));
        let database_url = self
            .database_url
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("jamd.db").display()));
        let d = RelayConfig::default();
        Config {
            database_url,
            http_listen: self
                .http_listen
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
            relay_listen: self
                .relay_listen
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 7400))),
            public_relay_addr: self.public_relay_addr,
            node_name: self.node_name.unwrap_or_else(|| "node1".into()),
            registration: self.registration.unwrap_or(Registration::Invite),
            token_ttl: Duration::from_secs(self.token_ttl_secs.unwrap_or(30 * 24 * 3600)),
            ticket_ttl: Duration::from_secs(self.ticket_ttl_secs.unwrap_or(12 * 3600)),
            max_json_bytes: self.max_json_bytes.unwrap_or(64 * 1024),
            max_blob_bytes: self.max_blob_bytes.unwrap_or(64 * 1024 * 1024),
            relay: RelayConfig {
                rate_packets_per_sec: self.relay_rate_pps.unwrap_or(d.rate_packets_per_sec),
                burst_packets: self.relay_burst_packets.unwrap_or(d.burst_packets),
                rate_bytes_per_sec: self.relay_rate_bytes.unwrap_or(d.rate_bytes_per_sec),
                burst_bytes: self
                    .relay_rate_bytes
                    .map(|r| r.saturating_mul(2))
                    .unwrap_or(d.burst_bytes),
                keepalive_timeout: self
                    .keepalive_timeout_secs
                    .map(Duration::from_secs)
                    .unwrap_or(d.keepalive_timeout),
                ..d
            },
            membership_sweep: Duration::from_secs(self.membership_sweep_secs.unwrap_or(5).max(1)),
            log_format: self.log_format.unwrap_or(LogFormat::Text),
            data_dir,
        }
    }
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory (SQLite file, blobs).
    pub data_dir: PathBuf,
    /// Database URL.
    pub database_url: String,
    /// HTTP listen address.
    pub http_listen: SocketAddr,
    /// Relay UDP listen address.
    pub relay_listen: SocketAddr,
    /// The relay address handed to clients, if fixed.
    pub public_relay_addr: Option<String>,
    /// This node's name.
    pub node_name: String,
    /// Who may create accounts.
    pub registration: Registration,
    /// Login token lifetime.
    pub token_ttl: Duration,
    /// Relay ticket lifetime.
    pub ticket_ttl: Duration,
    /// Largest JSON body.
    pub max_json_bytes: usize,
    /// Largest blob upload.
    pub max_blob_bytes: u64,
    /// Relay settings.
    pub relay: RelayConfig,
    /// How often the relay's live members are checked against the
    /// database. On PostgreSQL, nodes also tell each other of changes at
    /// once (`nodes`); this sweep is what remains when a notice is lost,
    /// and the only path between nodes sharing a SQLite file.
    pub membership_sweep: Duration,
    /// Log format.
    pub log_format: LogFormat,
}

impl Config {
    /// Settings for tests: everything on 127.0.0.1 port 0, open
    /// registration, data under `data_dir`.
    pub fn for_tests(data_dir: &Path, database_url: Option<String>) -> Config {
        FileConfig {
            data_dir: Some(data_dir.to_path_buf()),
            database_url,
            http_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            relay_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            registration: Some(Registration::Open),
            ..FileConfig::default()
        }
        .resolve()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let file: FileConfig = toml::from_str(
            "registration = \"open\"\nnode_name = \"from-file\"\nmax_blob_bytes = 10\n",
        )
        .unwrap();
        let flags = FileConfig {
            node_name: Some("from-flag".into()),
            ..FileConfig::default()
        };
        let c = flags.or(file).resolve();
        assert_eq!(c.node_name, "from-flag");
        assert_eq!(c.registration, Registration::Open);
        assert_eq!(c.max_blob_bytes, 10);
        assert_eq!(c.database_url, "sqlite://jamd-data/jamd.db");
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors() {
        assert!(toml::from_str::<FileConfig>("regstration = \"open\"").is_err());
    }
}
