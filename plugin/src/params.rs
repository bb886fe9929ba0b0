//! The plugin's parameters and persisted fields.
//!
//! Every parameter has a short, permanent `#[id]`: renaming a display name
//! never breaks saved automation or presets. Persisted fields (`#[persist]`)
//! are saved with the host project and restored with it.

use jam_engine::net::Role;
use jam_engine::{LatencyMode, Settings};
use nice_plug::prelude::*;
use std::sync::{Arc, RwLock};

/// Largest interval length, in beats.
pub const MAX_INTERVAL_BEATS: i32 = jam_engine::rt::MAX_INTERVAL_BEATS as i32;

/// The local participant's role, as a parameter.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleParam {
    /// Inferred by the session.
    #[id = "auto"]
    Auto,
    /// Drums, bass, comping.
    #[id = "rhythm"]
    Rhythm,
    /// Lead lines.
    #[id = "melody"]
    Melody,
    /// Pads and chords.
    #[id = "harmony"]
    Harmony,
}

impl From<RoleParam> for Role {
    fn from(r: RoleParam) -> Role {
        match r {
            RoleParam::Auto => Role::Auto,
            RoleParam::Rhythm => Role::Rhythm,
            RoleParam::Melody => Role::Melody,
            RoleParam::Harmony => Role::Harmony,
        }
    }
}

/// How remote notes are placed in time, as a parameter.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyParam {
    /// As soon as they arrive, through an adaptive jitter buffer.
    #[id = "live"]
    Live,
    /// Exactly N beats after they were played.
    #[id = "interval"]
    Interval,
    /// Every note at its beat plus one shared schedule-ahead: everyone
    /// hears the same thing.
    #[id = "coherent"]
    Coherent,
    /// Like live, with late notes played from the player's agent.
    #[id = "predictive"]
    Predictive,
}

impl From<LatencyParam> for LatencyMode {
    fn from(p: LatencyParam) -> LatencyMode {
        match p {
            LatencyParam::Live => LatencyMode::Live,
            LatencyParam::Interval => LatencyMode::Interval,
            LatencyParam::Coherent => LatencyMode::Coherent,
            LatencyParam::Predictive => LatencyMode::Predictive,
        }
    }
}

/// Everything the host automates and saves.
#[derive(Params)]
pub struct JamParams {
    /// The local role announced to the session.
    #[id = "role"]
    pub role: EnumParam<RoleParam>,
    /// Latency mode for remote notes.
    #[id = "latency"]
    pub latency: EnumParam<LatencyParam>,
    /// Interval length in beats (interval mode).
    #[id = "interval"]
    pub interval: IntParam,
    /// Play remote notes through the built-in monitor synth.
    #[id = "monitor"]
    pub monitor: BoolParam,
    /// Monitor synth level (linear gain; shown in dB).
    #[id = "level"]
    pub level: FloatParam,
    /// Send the track's notes to the session.
    #[id = "send"]
    pub send: BoolParam,

    // --- Capture (recording) -------------------------------------------
    /// Record the session into a sealed capture in `capture_folder` while
    /// on (automatable; off by default). Read on the audio thread and acted
    /// on by the engine worker.
    #[id = "record"]
    pub record: BoolParam,
    /// Folder the captures (`.scp`) go into, one file per recording, named
    /// by date, time and session; sealed to the owner of `key_file`.
    #[persist = "capture-folder"]
    pub capture_folder: Arc<RwLock<String>>,
    // --- end of capture -------------------------------------------------
    /// Session address (`host:port`, `ip:port` or `lan:NAME`) to join.
    #[persist = "session"]
    pub session: Arc<RwLock<String>>,
    /// The name other participants see.
    #[persist = "display-name"]
    pub display_name: Arc<RwLock<String>>,
    /// Path of the identity key file for the secure channel (may be empty).
    #[persist = "key-file"]
    pub key_file: Arc<RwLock<String>>,
    /// This instance's participant id (32 hex digits), made on first
    /// activation and kept with the project so a reopened project is the
    /// same participant.
    #[persist = "peer-id"]
    pub peer_id: Arc<RwLock<String>>,
    /// Control port address to listen on (`ip:port`; the data port is the
    /// next one up). Empty: a free port pair on every interface, chosen at
    /// activation. Fixed by the user so that peers can keep inviting the
    /// same address; takes effect when the engine starts.
    #[persist = "listen"]
    pub listen: Arc<RwLock<String>>,
    /// Path of the player's agent (`.agent`) for predictive mode (may be
    /// empty); opened with `key_file` when the engine starts.
    #[persist = "agent"]
    pub agent: Arc<RwLock<String>>,

    // ---- Joining through jamd (see `crate::server`). The password is
    // ---- never persisted.
    /// `jamd`'s URL (`http://host:port`) to join a session by name through;
    /// empty: sessions by address only.
    #[persist = "server"]
    pub server: Arc<RwLock<String>>,
    /// The name of the session to join on `server`.
    #[persist = "server-session"]
    pub server_session: Arc<RwLock<String>>,
    /// The account on `server` (empty: the display name).
    #[persist = "server-user"]
    pub server_user: Arc<RwLock<String>>,
}

impl Default for JamParams {
    fn default() -> Self {
        JamParams {
            role: EnumParam::new("Role", RoleParam::Auto),
            latency: EnumParam::new("Latency mode", LatencyParam::Live),
            interval: IntParam::new(
                "Interval",
                16,
                IntRange::Linear {
                    min: 1,
                    max: MAX_INTERVAL_BEATS,
                },
            )
            .with_unit(" beats"),
            monitor: BoolParam::new("Monitor", true),
            level: FloatParam::new(
                "Monitor level",
                0.7,
                FloatRange::Skewed {
                    min: 0.0,
                    max: 1.0,
                    factor: FloatRange::gain_skew_factor(-60.0, 0.0),
                },
            )
            .with_unit(" dB")
            .with_value_to_string(formatters::v2s_f32_gain_to_db(1))
            .with_string_to_value(formatters::s2v_f32_gain_to_db()),
            send: BoolParam::new("Send", true),
            record: BoolParam::new("Record", false),
            capture_folder: Arc::new(RwLock::new(String::new())),
            session: Arc::new(RwLock::new(String::new())),
            display_name: Arc::new(RwLock::new(String::new())),
            key_file: Arc::new(RwLock::new(String::new())),
            peer_id: Arc::new(RwLock::new(String::new())),
            listen: Arc::new(RwLock::new(String::new())),
            agent: Arc::new(RwLock::new(String::new())),
            // Joining through jamd.
            server: Arc::new(RwLock::new(String::new())),
            server_session: Arc::new(RwLock::new(String::new())),
            server_user: Arc::new(RwLock::new(String::new())),
        }
    }
}

impl JamParams {
    /// The engine settings for the current parameter values. Realtime-safe:
    /// yes (atomic loads only).
    pub fn settings(&self) -> Settings {
        Settings {
            latency: self.latency.value().into(),
            interval_beats: self.interval.value().clamp(1, MAX_INTERVAL_BEATS) as u32,
            monitor: self.monitor.value(),
            level: self.level.value(),
            send: self.send.value(),
            role: self.role.value().into(),
        }
    }
}

/// Reads a persisted string field (a poisoned lock still holds a string).
pub fn read_field(f: &RwLock<String>) -> String {
    f.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Writes a persisted string field.
pub fn write_field(f: &RwLock<String>, value: &str) {
    let mut g = f.write().unwrap_or_else(|e| e.into_inner());
    g.clear();
    g.push_str(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_engine_defaults_except_where_documented() {
        let p = JamParams::default();
        assert_eq!(p.settings(), Settings::default());
        assert!(!p.record.value(), "record is off by default");
    }

    #[test]
    fn parameter_ids_are_permanent() {
        let ids: Vec<String> = p_ids();
        assert_eq!(
            ids,
            [
                "role", "latency", "interval", "monitor", "level", "send", "record"
            ]
        );
    }

    fn p_ids() -> Vec<String> {
        JamParams::default()
            .param_map()
            .into_iter()
            .map(|(id, _, _)| id)
            .collect()
    }

    #[test]
    fn every_latency_mode_is_offered() {
        let p = JamParams::default();
        let modes: Vec<LatencyMode> = (0..LatencyParam::variants().len())
            .map(|i| LatencyParam::from_index(i).into())
            .collect();
        assert_eq!(modes.len(), LatencyMode::ALL.len());
        for m in LatencyMode::ALL {
            assert!(modes.contains(&m), "{m} missing");
        }
        assert_eq!(p.latency.value(), LatencyParam::Live);
    }

    #[test]
    fn persisted_fields_round_trip() {
        let a = JamParams::default();
        write_field(&a.session, "127.0.0.1:5004");
        write_field(&a.display_name, "Ana");
        write_field(&a.agent, "/home/ana/ana.agent");
        write_field(&a.capture_folder, "/home/ana/captures");
        let saved = a.serialize_fields();
        let b = JamParams::default();
        b.deserialize_fields(&saved);
        assert_eq!(read_field(&b.capture_folder), "/home/ana/captures");
        assert_eq!(read_field(&b.session), "127.0.0.1:5004");
        assert_eq!(read_field(&b.display_name), "Ana");
        assert_eq!(read_field(&b.agent), "/home/ana/ana.agent");
    }

    #[test]
    fn server_fields_round_trip_under_their_permanent_names() {
        let a = JamParams::default();
        write_field(&a.server, "http://jam.example:8080");
        write_field(&a.server_session, "friday night");
        write_field(&a.server_user, "ana");
        let saved = a.serialize_fields();
        for key in ["server", "server-session", "server-user"] {
            assert!(saved.contains_key(key), "{key} missing from {saved:?}");
        }
        let b = JamParams::default();
        b.deserialize_fields(&saved);
        assert_eq!(read_field(&b.server), "http://jam.example:8080");
        assert_eq!(read_field(&b.server_session), "friday night");
        assert_eq!(read_field(&b.server_user), "ana");
    }
}
