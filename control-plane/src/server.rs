//! Starting and stopping a `jamd` node: database, relay thread, background
//! tasks and the HTTP server, wired through one shared [`AppState`].

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, mpsc};

use anyhow::Context;
use axum::Router;
use jam_transport::relay::ServerSecret;
use tokio::sync::watch;

use crate::config::Config;
use crate::dashboard::{self, Dashboard};
use crate::db::{self, Db};
use crate::metrics::{self, Metrics};
use crate::nodes::{self, ChangeFeed};
use crate::relay::{self, RelayCommand, RelayEvent, RelayHandle, RelayShared, RelaySnapshot};
use crate::{api, blobs};

/// What every handler and background task shares. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// Settings.
    pub config: Arc<Config>,
    /// Tags relay tickets.
    pub secret: ServerSecret,
    /// Commands to the relay thread.
    pub relay_commands: mpsc::Sender<RelayCommand>,
    /// What the relay thread publishes.
    pub relay_shared: Arc<RelayShared>,
    /// The relay's bound address.
    pub relay_local: SocketAddr,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Dashboard snapshots.
    pub dashboard: Arc<Dashboard>,
    /// Tells the other nodes on the same database what changed here.
    pub feed: ChangeFeed,
    /// Becomes true when the server shuts down (ends SSE streams).
    pub shutdown: watch::Receiver<bool>,
}

impl AppState {
    /// A copy of the relay's latest snapshot.
    pub fn relay_snapshot(&self) -> RelaySnapshot {
        self.relay_shared
            .snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Member ids of a session that are live on this relay.
    pub fn online_members(&self, session: u64) -> HashSet<u32> {
        self.relay_shared
            .snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .members
            .iter()
            .filter(|m| m.session == session)
            .map(|m| m.member)
            .collect()
    }

    /// Something in `session` (its id, 16 lowercase hex digits) changed on
    /// this node: asks the dashboard to rebuild now (it shows every
    /// session), wakes the member streams of that session only, and tells
    /// the other nodes on the same database (`nodes`).
    pub fn dashboard_changed(&self, session: &str) {
        self.dashboard.changed.notify_one();
        self.dashboard.sessions.bump(session);
        self.feed.publish(session);
    }
}

/// The full HTTP application.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(api::router(&state))
        .merge(blobs::router())
        .merge(dashboard::router())
        .route("/metrics", axum::routing::get(metrics::render))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

/// A running node.
#[derive(Debug)]
pub struct Server {
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// Where the relay listens.
    pub relay_addr: SocketAddr,
    /// The shared state (for tests and subcommands).
    pub state: AppState,
    shutdown: watch::Sender<bool>,
    http: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    relay: RelayHandle,
}

impl Server {
    /// Opens the database (running migrations), starts the relay thread,
    /// the background tasks and the HTTP server.
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
        let db = Db::connect(&config.database_url)
            .await
            .with_context(|| format!("opening database {}", redact(&config.database_url)))?;
        let secret = ServerSecret(
            db.server_secret()
                .await
                .context("reading the relay secret")?,
        );
        // Nobody is live on a relay that is only starting, whatever a node
        // killed mid-session left in the database.
        let stale = db
            .clear_presence(&config.node_name)
            .await
            .context("clearing the presence left by an earlier run")?;
        db.beat(&config.node_name, alive_until(&config))
            .await
            .context("recording this node's heartbeat")?;
        let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let relay = relay::server::spawn(
            config.relay_listen,
            secret.clone(),
            config.relay.clone(),
            events_tx,
        )
        .with_context(|| format!("binding the relay to {}", config.relay_listen))?;
        let listener = tokio::net::TcpListener::bind(config.http_listen)
            .await
            .with_context(|| format!("binding HTTP to {}", config.http_listen))?;
        let http_addr = listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (feed, feed_rx) = nodes::channel(db.backend());
        let state = AppState {
            db,
            config: Arc::new(config),
            secret,
            relay_commands: relay.commands.clone(),
            relay_shared: relay.shared.clone(),
            relay_local: relay.local_addr,
            metrics: Arc::new(Metrics::default()),
            dashboard: Arc::new(Dashboard::default()),
            feed,
            shutdown: shutdown_rx.clone(),
        };
        nodes::spawn(&state, feed_rx, shutdown_rx.clone());
        for sid in &stale {
            state.dashboard_changed(sid);
        }
        tokio::spawn(relay_events(state.clone(), events_rx, shutdown_rx.clone()));
        tokio::spawn(dashboard::run_builder(state.clone(), shutdown_rx.clone()));
        tokio::spawn(housekeeping(state.clone(), shutdown_rx.clone()));
        let mut stop = shutdown_rx.clone();
        let http = tokio::spawn(
            axum::serve(listener, app(state.clone()))
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .into_future(),
        );
        tracing::info!(http = %http_addr, relay = %relay.local_addr, node = %state.config.node_name,
            backend = ?state.db.backend(), "jamd started");
        Ok(Server {
            http_addr,
            relay_addr: relay.local_addr,
            state,
            shutdown: shutdown_tx,
            http: Some(http),
            relay,
        })
    }

    /// Waits until the HTTP server stops (it runs until [`Server::shutdown`]).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        if let Some(h) = self.http.take() {
            h.await.context("HTTP task")?.context("HTTP server")?;
        }
        Ok(())
    }

    /// Stops everything: HTTP (after open requests finish), the relay
    /// thread, background tasks; marks this relay's members offline (and
    /// tells the other nodes) and this node stopped, and closes the
    /// database.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let r = self.wait().await;
        self.relay.shutdown();
        let state = &self.state;
        match state.db.clear_presence(&state.config.node_name).await {
            Ok(sessions) if state.db.backend() == db::Backend::Postgres => {
                for sid in sessions {
                    nodes::tell(state, &sid).await;
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "marking this relay's members offline failed"),
        }
        if let Err(e) = state.db.forget_node(&state.config.node_name).await {
            tracing::warn!(error = %e, "recording this node's stop failed");
        }
        state.db.close().await;
        r
    }
}

/// Hides the password in a database URL for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Records what the relay learns (members' addresses) in the database and
/// wakes the dashboard.
async fn relay_events(
    state: AppState,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<RelayEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let event = tokio::select! {
            e = rx.recv() => match e { Some(e) => e, None => return },
            _ = shutdown.changed() => return,
        };
        let sid = match event {
            RelayEvent::Online {
                session,
                member,
                observed,
                reported,
            } => {
                let reported: Vec<String> = reported.iter().map(|a| a.to_string()).collect();
                let sid = format!("{session:016x}");
                let (observed_s, reported_s) = (observed.to_string(), reported.join(","));
                if let Err(e) = state
                    .db
                    .set_member_online(&sid, member, &observed_s, &reported_s, db::now_ms())
                    .await
                {
                    tracing::warn!(error = %e, "recording a member's hello failed");
                }
                tracing::info!(session = %sid, member, %observed, "member online");
                sid
            }
            RelayEvent::Offline {
                session,
                member,
                reason,
            } => {
                let sid = format!("{session:016x}");
                if let Err(e) = state.db.set_member_offline(&sid, member).await {
                    tracing::warn!(error = %e, "recording a member's departure failed");
                }
                tracing::info!(session = %sid, member, ?reason, "member offline");
                sid
            }
        };
        state.dashboard_changed(&sid);
    }
}

/// The deadline a heartbeat now gives this node: three sweeps ahead, so a
/// late sweep or two does not make the node look dead.
fn alive_until(config: &Config) -> i64 {
    db::now_ms() + 3 * config.membership_sweep.as_millis() as i64
}

/// Every `Config::membership_sweep` (5 s by default): push this node's
/// heartbeat forward and notice nodes that stopped beating, revoke live relay
/// members whose membership is gone from the database (left through
/// another node; on PostgreSQL `nodes` does this at once, and this is the
/// backstop), forget the change counts of sessions whose member streams
/// have all ended, and now and then purge expired tokens.
async fn housekeeping(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let period = state.config.membership_sweep;
    let purge_every = (3600 / period.as_secs().max(1)).max(1);
    let mut tick = 0u64;
    let mut live_nodes = state.db.live_nodes().await.ok();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => return,
        }
        tick += 1;
        if let Err(e) = state
            .db
            .beat(&state.config.node_name, alive_until(&state.config))
            .await
        {
            tracing::warn!(error = %e, "recording this node's heartbeat failed");
        }
        // A node that stopped beating (killed) tells nobody: when the set of
        // live nodes changes, what this node shows of their sessions does.
        match state.db.live_nodes().await {
            Ok(now) if live_nodes.as_ref() != Some(&now) => {
                tracing::info!(nodes = ?now, "live nodes changed");
                state.dashboard.changed.notify_one();
                state.dashboard.sessions.bump_all();
                live_nodes = Some(now);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reading the live nodes failed"),
        }
        state.dashboard.sessions.prune();
        sweep_memberships(&state).await;
        if (tick - 1).is_multiple_of(purge_every)
            && let Err(e) = state.db.purge_expired(db::now_ms()).await
        {
            tracing::warn!(error = %e, "purging expired tokens failed");
        }
    }
}

/// Checks every live member of this node's relay against the database,
/// one query per session with live members, and revokes the departed.
pub(crate) async fn sweep_memberships(state: &AppState) {
    let mut live: std::collections::HashMap<u64, Vec<u32>> = std::collections::HashMap::new();
    for m in state.relay_snapshot().members {
        live.entry(m.session).or_default().push(m.member);
    }
    for (session, members) in live {
        if let Err(e) = drop_departed(state, session, members).await {
            tracing::warn!(error = %e, "membership sweep failed");
        }
    }
}

/// Revokes those of `live` (members of `session` live on this relay) who
/// are no longer members in the database.
pub(crate) async fn drop_departed(
    state: &AppState,
    session: u64,
    live: Vec<u32>,
) -> Result<(), db::DbError> {
    let sid = format!("{session:016x}");
    let current: HashSet<u32> = state
        .db
        .members(&sid)
        .await?
        .iter()
        .map(|r| r.member_id)
        .collect();
    for m in live.into_iter().filter(|m| !current.contains(m)) {
        tracing::info!(session = %sid, member = m, "membership gone; dropping from the relay");
        state.revoke(&sid, m);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(
            super::redact("postgres://jam:secret@db:5432/jam"),
            "postgres://jam:***@db:5432/jam"
        );
        assert_eq!(super::redact("sqlite://x.db"), "sqlite://x.db");
    }
}
