//! The relay: a sans-IO member table ([`core`]) and the thread that drives
//! it on one UDP socket ([`server`]). The wire format is
//! `jam_transport::relay`, shared with the peers.

pub mod core;
pub mod server;

pub use self::core::{
    DropReason, MemberStats, OfflineReason, Output, RelayConfig, RelayCore, RelayEvent, RelayStats,
};
pub use self::server::{RelayCommand, RelayHandle, RelayShared, RelaySnapshot};
