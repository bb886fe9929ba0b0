//! LAN discovery of AppleMIDI participants over mDNS / DNS-SD
//! (`rtp-midi.md` §6.7), with the `mdns-sd` crate.
//!
//! A participant advertises its **control** port as a service of type
//! `_apple-midi._udp.local.` whose instance name is the session name users
//! see (Audio MIDI Setup, rtpMIDI); no TXT record is needed. Browsing the
//! same type lists the others. [`Discovery`] does both and reports
//! [`DiscoveryEvent`]s; our own advertisement is filtered out.
//!
//! This is an edge module like [`crate::driver`]: `mdns-sd` runs its own
//! thread and multicast sockets. It sits behind the `mdns` cargo feature
//! (on by default).
//!
//! ```no_run
//! use jam_transport::discovery::{Discovery, DiscoveryConfig, DiscoveryEvent};
//!
//! # async fn demo() -> Result<(), jam_transport::discovery::DiscoveryError> {
//! let mut disco = Discovery::start(DiscoveryConfig::new("jam on studio", 5004))?;
//! while let Some(event) = disco.next_event().await {
//!     if let DiscoveryEvent::PeerFound(peer) = event {
//!         println!("{} at {:?} port {}", peer.name, peer.addresses, peer.port);
//!     }
//! }
//! # Ok(()) }
//! ```

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use std::net::IpAddr;

/// The DNS-SD service type of AppleMIDI sessions.
pub const SERVICE_TYPE: &str = "_apple-midi._udp.local.";

/// The standard mDNS port.
pub const MDNS_PORT: u16 = 5353;

/// Which network interfaces discovery uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interfaces {
    /// Every interface (a real LAN).
    #[default]
    All,
    /// Only 127.0.0.0/8 (tests, and sessions on one machine).
    LoopbackV4,
}

/// What to advertise and where to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// The session name: our instance name.
    pub name: String,
    /// Our AppleMIDI control port (the data port is the next one).
    pub control_port: u16,
    /// The host name for the SRV record (must end in `.local.`); derived
    /// from `name` when `None`.
    pub host_name: Option<String>,
    /// The addresses to advertise; empty means every address of the
    /// enabled interfaces, kept up to date by `mdns-sd`.
    pub addresses: Vec<IpAddr>,
    /// The interfaces to use.
    pub interfaces: Interfaces,
    /// The mDNS port (5353; another one only for isolated tests).
    pub mdns_port: u16,
    /// Advertise ourselves (false: browse only).
    pub advertise: bool,
}

impl DiscoveryConfig {
    /// Advertise `name` on `control_port` and browse, on every interface.
    pub fn new(name: impl Into<String>, control_port: u16) -> Self {
        DiscoveryConfig {
            name: name.into(),
            control_port,
            host_name: None,
            addresses: Vec::new(),
            interfaces: Interfaces::All,
            mdns_port: MDNS_PORT,
            advertise: true,
        }
    }
}

/// A participant found on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredPeer {
    /// Its session name (the DNS-SD instance name).
    pub name: String,
    /// The full DNS-SD name (`<instance>._apple-midi._udp.local.`).
    pub fullname: String,
    /// The host name from its SRV record.
    pub host: String,
    /// Its addresses, sorted.
    pub addresses: Vec<IpAddr>,
    /// Its control port (invite `address:port`).
    pub port: u16,
}

/// What [`Discovery`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoveryEvent {
    /// A participant was found (or its record changed).
    PeerFound(DiscoveredPeer),
    /// A participant withdrew its advertisement (or it expired).
    PeerRemoved {
        /// Its session name.
        name: String,
        /// The full DNS-SD name.
        fullname: String,
    },
}

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The mDNS daemon refused an operation.
    #[error("mdns {what} failed")]
    Mdns {
        /// The operation.
        what: &'static str,
        /// The underlying error.
        #[source]
        source: mdns_sd::Error,
    },
}

fn mdns(what: &'static str) -> impl FnOnce(mdns_sd::Error) -> DiscoveryError {
    move |source| DiscoveryError::Mdns { what, source }
}

/// A host name for the SRV record derived from a session name: lowercase
/// letters, digits and dashes, then `.local.`.
pub fn host_name_for(name: &str) -> String {
    let mut h: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    h = h.trim_matches('-').to_string();
    if h.is_empty() {
        h = "jam".into();
    }
    h.truncate(63);
    format!("{h}.local.")
}

/// The instance name inside a full DNS-SD name of [`SERVICE_TYPE`], with
/// mDNS escapes (`\.`, `\\`) removed; `None` for another service type.
pub fn instance_name(fullname: &str) -> Option<String> {
    let escaped = fullname.strip_suffix(SERVICE_TYPE)?.strip_suffix('.')?;
    let mut out = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// Converts an `mdns-sd` event; `None` for events about ourselves, other
/// service types, or that carry nothing to report.
fn convert(event: ServiceEvent, own_fullname: Option<&str>) -> Option<DiscoveryEvent> {
    match event {
        ServiceEvent::ServiceResolved(s) => {
            if Some(s.get_fullname()) == own_fullname {
                return None;
            }
            let name = instance_name(s.get_fullname())?;
            let mut addresses: Vec<IpAddr> =
                s.get_addresses().iter().map(|a| a.to_ip_addr()).collect();
            addresses.sort();
            Some(DiscoveryEvent::PeerFound(DiscoveredPeer {
                name,
                fullname: s.get_fullname().to_string(),
                host: s.get_hostname().to_string(),
                addresses,
                port: s.get_port(),
            }))
        }
        ServiceEvent::ServiceRemoved(_, fullname) => {
            if Some(fullname.as_str()) == own_fullname {
                return None;
            }
            let name = instance_name(&fullname)?;
            Some(DiscoveryEvent::PeerRemoved { name, fullname })
        }
        _ => None,
    }
}

/// Advertises one participant and browses for others. Dropping it (or
/// [`Discovery::shutdown`]) withdraws the advertisement.
pub struct Discovery {
    daemon: ServiceDaemon,
    own_fullname: Option<String>,
    events: mdns_sd::Receiver<ServiceEvent>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("own_fullname", &self.own_fullname)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// Starts the mDNS daemon, advertises (unless disabled) and browses.
    pub fn start(config: DiscoveryConfig) -> Result<Self, DiscoveryError> {
        let daemon =
            ServiceDaemon::new_with_port(config.mdns_port).map_err(mdns("daemon start"))?;
        if config.interfaces == Interfaces::LoopbackV4 {
            daemon
                .disable_interface(IfKind::All)
                .map_err(mdns("interface selection"))?;
            daemon
                .enable_interface(IfKind::LoopbackV4)
                .map_err(mdns("interface selection"))?;
        }
        let own_fullname = if config.advertise {
            let host = config
                .host_name
                .clone()
                .unwrap_or_else(|| host_name_for(&config.name));
            let addresses = config
                .addresses
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let mut info = ServiceInfo::new(
                SERVICE_TYPE,
                &config.name,
                &host,
                addresses.as_str(),
                config.control_port,
                None::<std::collections::HashMap<String, String>>,
            )
            .map_err(mdns("service description"))?;
            if config.addresses.is_empty() {
                info = info.enable_addr_auto();
            }
            let fullname = info.get_fullname().to_string();
            daemon.register(info).map_err(mdns("register"))?;
            Some(fullname)
        } else {
            None
        };
        let events = daemon.browse(SERVICE_TYPE).map_err(mdns("browse"))?;
        Ok(Discovery {
            daemon,
            own_fullname,
            events,
        })
    }

    /// Our own full DNS-SD name, if we advertise.
    pub fn own_fullname(&self) -> Option<&str> {
        self.own_fullname.as_deref()
    }

    /// The next event; `None` once the daemon has stopped.
    pub async fn next_event(&mut self) -> Option<DiscoveryEvent> {
        loop {
            let e = self.events.recv_async().await.ok()?;
            if let Some(e) = convert(e, self.own_fullname.as_deref()) {
                return Some(e);
            }
        }
    }

    /// The next event if one is ready.
    pub fn try_next_event(&mut self) -> Option<DiscoveryEvent> {
        while let Ok(e) = self.events.try_recv() {
            if let Some(e) = convert(e, self.own_fullname.as_deref()) {
                return Some(e);
            }
        }
        None
    }

    /// Blocks up to `timeout` for the next event (for non-async callers).
    pub fn next_event_timeout(&mut self, timeout: std::time::Duration) -> Option<DiscoveryEvent> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let e = self.events.recv_timeout(left).ok()?;
            if let Some(e) = convert(e, self.own_fullname.as_deref()) {
                return Some(e);
            }
        }
    }

    /// Withdraws the advertisement (a goodbye packet) and stops the daemon.
    pub fn shutdown(self) {
        // Dropping does the same; this names the intent.
        drop(self);
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        if let Some(f) = &self.own_fullname
            && let Ok(rx) = self.daemon.unregister(f)
        {
            // Wait briefly so the goodbye leaves before the daemon stops.
            let _ = rx.recv_timeout(std::time::Duration::from_secs(1));
        }
        let _ = self.daemon.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_are_unescaped_and_other_types_refused() {
        assert_eq!(
            instance_name("jam on studio._apple-midi._udp.local.").as_deref(),
            Some("jam on studio")
        );
        assert_eq!(
            instance_name("v1\\.2 \\\\ x._apple-midi._udp.local.").as_deref(),
            Some("v1.2 \\ x")
        );
        assert_eq!(instance_name("printer._ipp._tcp.local."), None);
        assert_eq!(instance_name("_apple-midi._udp.local."), None);
    }

    #[test]
    fn host_names_are_dns_safe() {
        assert_eq!(host_name_for("Mike\u{2019}s Mac"), "mike-s-mac.local.");
        assert_eq!(host_name_for("..."), "jam.local.");
        assert!(host_name_for(&"x".repeat(300)).len() <= 63 + ".local.".len());
    }

    #[test]
    fn removal_of_others_is_reported_and_of_ourselves_is_not() {
        let ours = "us._apple-midi._udp.local.";
        let theirs = "them._apple-midi._udp.local.";
        assert_eq!(
            convert(
                ServiceEvent::ServiceRemoved(SERVICE_TYPE.into(), theirs.into()),
                Some(ours)
            ),
            Some(DiscoveryEvent::PeerRemoved {
                name: "them".into(),
                fullname: theirs.into()
            })
        );
        assert_eq!(
            convert(
                ServiceEvent::ServiceRemoved(SERVICE_TYPE.into(), ours.into()),
                Some(ours)
            ),
            None
        );
        assert_eq!(
            convert(ServiceEvent::SearchStarted(SERVICE_TYPE.into()), None),
            None
        );
    }
}
