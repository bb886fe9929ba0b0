//! Joining a session by name through `jamd`, from the editor or from the
//! saved state.
//!
//! The persisted fields `server` (jamd URL), `server-session` (the
//! session's name) and `server-user` (the account; the display name when
//! empty) say where; the key-file field gives the device identity (an
//! unencrypted key file, as for `jam peer --key`). The password is never
//! persisted: the editor hands it over in memory, and a host without an
//! editor (or a test) sets `JAM_PASSWORD` in its environment, read when the
//! saved state names a server and a session.
//!
//! [`join`] runs [`jam_join::join_session`] (HTTP, then the relay peer) as
//! a task on the engine worker's runtime, never on the audio thread or the
//! host's main thread, and hands the joined relay peer to the worker with
//! [`EngineControl::switch_network`]; the rings to the audio thread stay.
//! The network side it replaces (the address participant) says goodbye and
//! stops. [`leave`] switches back to an address participant; the relay
//! peer's task then closes it and calls `jamd`'s leave, which is also what
//! happens when the plugin is dropped (the worker waits for that task up to
//! [`jam_engine::worker::NET_CLOSE_TIMEOUT`]).
//!
//! [`ServerLink`] holds what the editor shows: logging in, joined as member
//! N through relay X, or the error text.

use crate::params::{JamParams, read_field};
use crate::{EditorLink, display_name, key_file, lock, process_clock};
use jam_engine::EngineControl;
use jam_engine::net::net_link;
use jam_engine::network::{NetworkConfig, start_carrier};
use jam_join::{JoinRequest, PeerOptions, join_session, split_events};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Where a join through `jamd` stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerState {
    /// Not joined through `jamd`.
    #[default]
    Off,
    /// Logging in and joining.
    LoggingIn {
        /// The jamd URL.
        server: String,
        /// The session's name.
        session: String,
        /// The account.
        user: String,
    },
    /// In the session, its relay peer running.
    Joined {
        /// The session's name.
        session: String,
        /// Our member id.
        member: u32,
        /// The relay's address as `jamd` gave it.
        relay: String,
    },
    /// The join failed (wrong password, unknown session, jamd down, no key
    /// file, ...).
    Failed(String),
}

impl std::fmt::Display for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerState::Off => write!(f, "not joined through a server"),
            ServerState::LoggingIn {
                server,
                session,
                user,
            } => write!(f, "logging in to {server} as {user} to join {session:?}…"),
            ServerState::Joined {
                session,
                member,
                relay,
            } => write!(
                f,
                "joined {session:?} as member {member} through relay {relay}"
            ),
            ServerState::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// The plugin's side of a join through `jamd`, shared by the editor, the
/// main thread and the join's task. The audio thread never touches it.
#[derive(Debug, Default)]
pub struct ServerLink {
    state: Mutex<ServerState>,
    /// The server, session and user last joined from the saved state, so
    /// that a re-activation does not join again.
    saved: Mutex<String>,
    /// Bumped by every join and leave: a join that finishes after a newer
    /// request closes what it made instead of handing it over.
    generation: AtomicU64,
}

impl ServerLink {
    /// Where the join stands.
    pub fn state(&self) -> ServerState {
        lock(&self.state).clone()
    }

    fn set(&self, generation: u64, state: ServerState) {
        if self.generation.load(Ordering::SeqCst) == generation {
            *lock(&self.state) = state;
        }
    }
}

/// The saved server fields: (server, session, user), when a server and a
/// session are set.
pub fn saved_target(params: &JamParams) -> Option<(String, String, String)> {
    let server = read_field(&params.server).trim().to_string();
    let session = read_field(&params.server_session).trim().to_string();
    let user = read_field(&params.server_user).trim().to_string();
    let user = if user.is_empty() {
        display_name(params)
    } else {
        user
    };
    (!server.is_empty() && !session.is_empty()).then_some((server, session, user))
}

/// Joins the saved session by name at activation, once per saved
/// server/session/user, with the password from `JAM_PASSWORD` (a saved
/// state never holds one). Returns whether the saved state names a server
/// (then the saved address is not joined).
pub fn join_saved(params: &JamParams, control: &EngineControl, link: &Arc<EditorLink>) -> bool {
    let Some((server, session, user)) = saved_target(params) else {
        return false;
    };
    let key = format!("{server}\n{session}\n{user}");
    {
        let mut saved = lock(&link.server.saved);
        if *saved == key {
            return true;
        }
        *saved = key;
    }
    match std::env::var("JAM_PASSWORD") {
        Ok(p) if !p.is_empty() => join(params, control, link, p),
        _ => {
            let g = link.server.generation.fetch_add(1, Ordering::SeqCst) + 1;
            link.server.set(
                g,
                ServerState::Failed(format!(
                    "no password for {user} on {server}: type it in the editor \
                     (or set JAM_PASSWORD for the host)"
                )),
            );
        }
    }
    true
}

/// Joins the session named in the saved fields with `password` (kept in
/// memory for the join only). The work runs on the worker's runtime; the
/// state shows how it goes.
pub fn join(params: &JamParams, control: &EngineControl, link: &Arc<EditorLink>, password: String) {
    let server = &link.server;
    let generation = server.generation.fetch_add(1, Ordering::SeqCst) + 1;
    let fail = |why: String| server.set(generation, ServerState::Failed(why));
    let Some((url, session, user)) = saved_target(params) else {
        return fail("type the server's URL and the session's name".into());
    };
    // Captures are named after the session.
    crate::update_capture_target(params, control);
    let Some(key) = key_file(params) else {
        return fail(
            "choose a key file: it is this device's identity (jam keys new makes one)".into(),
        );
    };
    let identity = match jam_engine::read_identity(&key) {
        Ok(i) => i,
        Err(e) => return fail(e.to_string()),
    };
    let Some(runtime) = control.runtime() else {
        return fail("the engine is not running".into());
    };
    let name = display_name(params);
    let seed: u64 = rand::random();
    let peer = PeerOptions::new(
        name.clone(),
        *identity.to_secret_bytes(),
        seed,
        rand::random(),
    );
    let mut peer = peer;
    peer.clock = process_clock();
    let mut request = JoinRequest::new(url.clone(), session.clone(), user.clone(), password, peer);
    request.device_name = format!("jam.togthr plugin {name}");
    server.set(
        generation,
        ServerState::LoggingIn {
            server: url,
            session: session.clone(),
            user,
        },
    );
    let control = control.clone();
    let link = link.clone();
    runtime.spawn(async move {
        let joined = match join_session(request).await {
            Ok(j) => j,
            Err(e) => {
                return link
                    .server
                    .set(generation, ServerState::Failed(e.to_string()));
            }
        };
        let leave = joined.leave.clone();
        if link.server.generation.load(Ordering::SeqCst) != generation {
            // Left (or joined elsewhere) meanwhile.
            let _ = joined.peer.close().await;
            let _ = leave.run().await;
            return;
        }
        let state = ServerState::Joined {
            session,
            member: joined.peer.joined.member_id,
            relay: joined.peer.joined.relay.clone(),
        };
        let shared = joined.shared_session();
        let (driver, events, _) = joined.peer.into_parts();
        let events = split_events(events, |_| {});
        let (worker_end, port) = net_link();
        let config = NetworkConfig::new(process_clock(), name, seed);
        let (_, adapter) = start_carrier(config, driver, events, port);
        // Once the worker lets go of this side (leave, another join, or the
        // plugin dropped), the adapter closes the relay peer; then jamd
        // hears that we left.
        let task = tokio::spawn(async move {
            let _ = adapter.await;
            let _ = leave.run().await;
        });
        // Before the switch: the new network's members are met with the
        // session's shared genesis in place.
        control.share_session(shared);
        control.switch_network(worker_end, Some(task));
        link.server.set(generation, state);
    });
}

/// Leaves the session joined through `jamd`, if any: the worker goes back
/// to an address participant (on the saved listen address), which makes the
/// relay peer close and call `jamd`'s leave.
pub fn leave(params: &JamParams, control: &EngineControl, link: &Arc<EditorLink>) {
    let server = &link.server;
    let generation = server.generation.fetch_add(1, Ordering::SeqCst) + 1;
    let was = std::mem::take(&mut *lock(&server.state));
    if !matches!(was, ServerState::Joined { .. }) {
        return;
    }
    let Some(runtime) = control.runtime() else {
        return;
    };
    let (attempts, problem) = crate::listen_attempts(params);
    let name = display_name(params);
    let control = control.clone();
    let link = link.clone();
    runtime.spawn(async move {
        let mut problem = problem;
        for listen in attempts {
            let mut config = NetworkConfig::new(process_clock(), name.clone(), rand::random());
            config.listen = listen;
            let (worker_end, port) = net_link();
            match jam_engine::network::start_task(config, port).await {
                Ok((info, task)) => {
                    control.switch_network(worker_end, Some(task));
                    *lock(&link.listen) = Some(info.control);
                    *lock(&link.listen_problem) = problem;
                    return;
                }
                Err(e) => problem = Some(e.to_string()),
            }
        }
        // No address participant: the relay peer still goes.
        let (worker_end, _port) = net_link();
        control.switch_network(worker_end, None);
        *lock(&link.listen) = None;
        *lock(&link.listen_problem) = problem;
        link.server.set(generation, ServerState::Off);
    });
}
