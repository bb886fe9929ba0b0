//! Nodes sharing one database tell each other what changed.
//!
//! Several `jamd` nodes may share one PostgreSQL database. A session lives
//! on the relay of the node that created it, but its members may call any
//! node's API: join or leave through one node, follow the member list
//! through another. So every change a node makes to a session (a join, a
//! leave, a deletion, a member going on- or offline on its relay, new
//! addresses) is published by [`ChangeFeed::publish`] as PostgreSQL
//! `NOTIFY jamd_changes, '<node> <session id>'`, and every node listens
//! ([`run`]). A change made elsewhere wakes this node's dashboard and the
//! session's member streams, and when the session lives here, the relay
//! drops at once the members whose membership is gone (a leave made through
//! another node), instead of at the next membership sweep.
//!
//! Whether a member is live is the hosting relay's knowledge; the hosting
//! node writes it into `members.online_since`, which the other nodes read
//! (`api::member_views`, the dashboard) while the hosting node's heartbeat
//! deadline (`Db::beat`, pushed forward at every sweep) has not passed, so
//! a node killed mid-session stops showing its members online.
//!
//! Notices are not stored: one sent while a listener is reconnecting is
//! lost, so after every (re)connection the listener treats every session
//! as changed. The periodic membership sweep (`server::housekeeping`,
//! `Config::membership_sweep`) stays as the backstop, and is the only path
//! between nodes that share a SQLite file, which has no such channel.

use std::collections::BTreeSet;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::{mpsc, watch};

use crate::db::Backend;
use crate::server::AppState;

/// The PostgreSQL notification channel the nodes share.
pub const CHANNEL: &str = "jamd_changes";

/// Longest payload [`parse`] accepts (a node name is free text; PostgreSQL
/// itself caps payloads at 8000 bytes).
const MAX_PAYLOAD: usize = 512;

/// This node's side of the feed: hands changed session ids to the
/// publishing task. Cheap to clone; does nothing on SQLite.
#[derive(Debug, Clone, Default)]
pub struct ChangeFeed {
    tx: Option<mpsc::UnboundedSender<String>>,
}

impl ChangeFeed {
    /// Publishes that `session` (its id, 16 lowercase hex digits) changed
    /// on this node. Never waits: the publishing task sends the notice.
    pub fn publish(&self, session: &str) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(session.to_string());
        }
    }
}

/// Whether a member shows as online on this node: what this node's relay
/// knows (`live_here`) for a session it hosts, else the presence the
/// hosting node recorded (`MemberRow::online_since`, already `None` once
/// that node is past its heartbeat deadline). The member list and the
/// dashboard both apply this rule.
pub fn shows_online(hosted_here: bool, live_here: bool, recorded: Option<i64>) -> bool {
    if hosted_here {
        live_here
    } else {
        recorded.is_some()
    }
}

/// The notice for a change to `session` made on `node`.
pub fn payload(node: &str, session: &str) -> String {
    format!("{node} {session}")
}

/// The node and session id of a notice; `None` for anything else (another
/// program may share the channel name, and nothing from the database is
/// trusted blindly). The session id must be 16 lowercase hex digits, as
/// stored; the node name is everything before the last space.
pub fn parse(payload: &str) -> Option<(&str, &str)> {
    if payload.len() > MAX_PAYLOAD {
        return None;
    }
    let (node, session) = payload.rsplit_once(' ')?;
    let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
    (session.len() == 16 && session.chars().all(hex)).then_some((node, session))
}

/// A feed for a database on `backend` and the receiving end its
/// publishing task needs ([`spawn`]): on SQLite, an inert feed and `None`.
pub fn channel(backend: Backend) -> (ChangeFeed, Option<mpsc::UnboundedReceiver<String>>) {
    if backend != Backend::Postgres {
        return (ChangeFeed::default(), None);
    }
    let (tx, rx) = mpsc::unbounded_channel();
    (ChangeFeed { tx: Some(tx) }, Some(rx))
}

/// Starts the task that publishes this node's changes (from `rx`, made by
/// [`channel`]) and the one that listens for the other nodes' ([`run`]);
/// both end with `shutdown`. Nothing on SQLite (`rx` is `None`).
pub fn spawn(
    state: &AppState,
    rx: Option<mpsc::UnboundedReceiver<String>>,
    shutdown: watch::Receiver<bool>,
) {
    if let Some(rx) = rx {
        tokio::spawn(publish_loop(state.clone(), rx, shutdown.clone()));
        tokio::spawn(run(state.clone(), shutdown));
    }
}

/// Sends this node's changes, a burst of them folded into one notice per
/// session.
async fn publish_loop(
    state: AppState,
    mut rx: mpsc::UnboundedReceiver<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let first = tokio::select! {
            s = rx.recv() => match s { Some(s) => s, None => return },
            _ = shutdown.changed() => return,
        };
        let mut batch = BTreeSet::from([first]);
        while let Ok(s) = rx.try_recv() {
            batch.insert(s);
        }
        for session in batch {
            tell(&state, &session).await;
        }
    }
}

/// Sends the notice that `session` changed on this node (PostgreSQL only);
/// a failure is logged: the others then see the change at their next
/// sweep or notice.
pub async fn tell(state: &AppState, session: &str) {
    let notice = payload(&state.config.node_name, session);
    if let Err(e) = state.db.notify(CHANNEL, &notice).await {
        tracing::warn!(error = %e, session = %session, "telling the other nodes failed");
    }
}

/// Listens for the other nodes' changes until `shutdown`. Whenever the
/// connection is lost it connects and listens again (after a second when
/// that fails), and only then counts everything as changed: a notice sent
/// while nobody listened is unknown, and one sent after the new `LISTEN`
/// arrives.
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    loop {
        let mut listener = match listen(&state.config.database_url).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "listening for the other nodes failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        everything_changed(&state).await;
        loop {
            tokio::select! {
                n = listener.try_recv() => match n {
                    Ok(Some(n)) => {
                        let Some((node, session)) = parse(n.payload()) else {
                            tracing::debug!(payload = n.payload(), "ignoring a foreign notice");
                            continue;
                        };
                        if node != state.config.node_name {
                            changed_elsewhere(&state, session).await;
                        }
                    }
                    Ok(None) => {
                        tracing::warn!("lost the other nodes' notices; listening again");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the other nodes' notices failed; listening again");
                        // Not at once: the next connection may fail alike.
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => break,
                            _ = shutdown.changed() => return,
                        }
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}

async fn listen(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut l = PgListener::connect(url).await?;
    l.listen(CHANNEL).await?;
    Ok(l)
}

/// `session` changed on another node: wake what shows it here, and if it
/// lives here, drop from the relay whoever is no longer a member.
async fn changed_elsewhere(state: &AppState, session: &str) {
    state.dashboard.changed.notify_one();
    state.dashboard.sessions.bump(session);
    let Ok(sid) = u64::from_str_radix(session, 16) else {
        return;
    };
    let live: Vec<u32> = state
        .relay_snapshot()
        .members
        .iter()
        .filter(|m| m.session == sid)
        .map(|m| m.member)
        .collect();
    if !live.is_empty()
        && let Err(e) = crate::server::drop_departed(state, sid, live).await
    {
        tracing::warn!(error = %e, session = %session, "checking memberships failed");
    }
    match state.db.session(session).await {
        // Deleted elsewhere: its member streams end.
        Ok(None) => state.dashboard.sessions.forget(session),
        Ok(Some(_)) => {}
        Err(e) => {
            tracing::warn!(error = %e, session = %session, "reading a changed session failed")
        }
    }
}

/// Anything may have changed: wake the dashboard and every member stream,
/// and check every live member of this node's relay.
async fn everything_changed(state: &AppState) {
    state.dashboard.changed.notify_one();
    state.dashboard.sessions.bump_all();
    crate::server::sweep_memberships(state).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip_and_foreign_ones_are_refused() {
        let p = payload("node 2", "00ff00ff00ff00ff");
        assert_eq!(parse(&p), Some(("node 2", "00ff00ff00ff00ff")));
        assert_eq!(
            parse(&payload("", "0123456789abcdef")),
            Some(("", "0123456789abcdef"))
        );
        for bad in [
            "",
            "node1",
            "node1 ",
            "node1 0123456789ABCDEF",
            "node1 0123456789abcde",
            "node1 0123456789abcdef0",
            "node1 0123456789abcdeg",
            "node1 0123456789abcdef ",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        let long = payload(&"n".repeat(MAX_PAYLOAD), "0123456789abcdef");
        assert_eq!(parse(&long), None);
    }
}
