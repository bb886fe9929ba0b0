//! Starting and stopping a `jamd` node: database, relay thread, background
//! tasks and the HTTP server, wired through one shared [`AppState`].

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use jam_transport::relay::ServerSecret;
use tokio::sync::watch;

use crate::config::Config;
use crate::dashboard::{self, Dashboard};
use crate::db::{self, Db};
use crate::metrics::{self, Metrics};
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

    /// Something in `session` (its id, 16 lowercase hex digits) changed:
    /// asks the dashboard to rebuild now (it shows every session) and wakes
    /// the member streams of that session only.
    pub fn dashboard_changed(&self, session: &str) {
        self.dashboard.changed.notify_one();
        self.dashboard.sessions.bump(session);
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
        let state = AppState {
            db,
            config: Arc::new(config),
            secret,
            relay_commands: relay.commands.clone(),
            relay_shared: relay.shared.clone(),
            relay_local: relay.local_addr,
            metrics: Arc::new(Metrics::default()),
            dashboard: Arc::new(Dashboard::default()),
            shutdown: shutdown_rx.clone(),
        };
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
    /// thread, background tasks, and closes the database.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let r = self.wait().await;
        self.relay.shutdown();
        self.state.db.close().await;
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
                if let Err(e) = state
                    .db
                    .set_member_addrs(&sid, member, &observed.to_string(), &reported.join(","))
                    .await
                {
                    tracing::warn!(error = %e, "recording a member's addresses failed");
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
                tracing::info!(session = %sid, member, ?reason, "member offline");
                sid
            }
        };
        state.dashboard_changed(&sid);
    }
}

/// Every few seconds: revoke live relay members whose membership is gone
/// from the database (left through another node), forget the change counts
/// of sessions whose member streams have all ended, purge expired tokens.
async fn housekeeping(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut tick = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = shutdown.changed() => return,
        }
        tick += 1;
        state.dashboard.sessions.prune();
        // One query per session with live members, not one per member.
        let mut live: std::collections::HashMap<u64, Vec<u32>> = std::collections::HashMap::new();
        for m in state.relay_snapshot().members {
            live.entry(m.session).or_default().push(m.member);
        }
        for (session, members) in live {
            let sid = format!("{session:016x}");
            match state.db.members(&sid).await {
                Ok(rows) => {
                    let current: HashSet<u32> = rows.iter().map(|r| r.member_id).collect();
                    for m in members.into_iter().filter(|m| !current.contains(m)) {
                        state.revoke(&sid, m);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "membership sweep failed"),
            }
        }
        if tick % 720 == 1
            && let Err(e) = state.db.purge_expired(db::now_ms()).await
        {
            tracing::warn!(error = %e, "purging expired tokens failed");
        }
    }
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
