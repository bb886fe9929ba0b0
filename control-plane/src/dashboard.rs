//! The web dashboard: one HTML page and a small script that renders
//! snapshots pushed over server-sent events.
//!
//! A background task ([`run_builder`]) builds the snapshot JSON when
//! something changes (a join, a leave, a relay event) and at least once a
//! second (relay counters move continuously), and publishes two variants:
//! public sessions only (for anyone) and everything (for administrators,
//! recognised by their token cookie). `GET /api/events` streams the variant
//! the viewer may see; `GET /api/dashboard` returns it once.
//!
//! The member streams (`GET /api/sessions/{id}/members/events`, in `api`)
//! share the SSE loop (`event_stream`) but not the node-wide wake-up:
//! each follows its own session's change count in [`SessionSignals`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::{Router, routing};
use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::api::ApiError;
use crate::auth::MaybeUser;
use crate::db;
use crate::relay::MemberStats;
use crate::server::AppState;

/// The two published snapshot variants and the change signals.
#[derive(Debug)]
pub struct Dashboard {
    /// Wakes the builder early, on a change in any session.
    pub changed: Notify,
    /// JSON of the public view.
    pub public: watch::Sender<Arc<str>>,
    /// JSON of the administrators' view.
    pub admin: watch::Sender<Arc<str>>,
    /// One change count per followed session (joins, leaves, relay hellos
    /// and goodbyes, reported addresses): a member stream wakes on its own
    /// session's count only.
    pub sessions: SessionSignals,
}

impl Default for Dashboard {
    fn default() -> Self {
        Dashboard {
            changed: Notify::new(),
            public: watch::channel(Arc::from("{}")).0,
            admin: watch::channel(Arc::from("{}")).0,
            sessions: SessionSignals::default(),
        }
    }
}

/// Per-session change counts for the member streams, so a change in one
/// session wakes only the streams of that session (a node-wide signal made
/// every stream on the node re-read its list on every change anywhere).
///
/// An entry exists only while someone follows the session: [`subscribe`]
/// makes it, [`bump`] of a session nobody follows does nothing, [`forget`]
/// drops it when the session is deleted (its streams see the channel close
/// and end), and [`prune`] drops entries whose streams have all ended. So
/// the map holds at most the sessions with an open member stream, plus
/// those whose last stream ended since the last prune.
///
/// [`subscribe`]: SessionSignals::subscribe
/// [`bump`]: SessionSignals::bump
/// [`forget`]: SessionSignals::forget
/// [`prune`]: SessionSignals::prune
#[derive(Debug, Default)]
pub struct SessionSignals {
    map: Mutex<HashMap<String, watch::Sender<u64>>>,
}

impl SessionSignals {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<u64>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A receiver of `session`'s change count (its id, 16 lowercase hex
    /// digits, as stored), making the entry if it is the first.
    pub fn subscribe(&self, session: &str) -> watch::Receiver<u64> {
        let mut map = self.map();
        match map.get(session) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(0);
                map.insert(session.to_string(), tx);
                rx
            }
        }
    }

    /// Counts a change in `session`, waking its streams.
    pub fn bump(&self, session: &str) {
        if let Some(tx) = self.map().get(session) {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Counts a change in every followed session (after changes elsewhere
    /// may have been missed, see `nodes`).
    pub fn bump_all(&self) {
        for tx in self.map().values() {
            tx.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Drops `session`'s entry (the session is gone): its streams' signal
    /// closes and they end.
    pub fn forget(&self, session: &str) {
        self.map().remove(session);
    }

    /// Drops the entries nobody follows any more; returns how many remain.
    pub fn prune(&self) -> usize {
        let mut map = self.map();
        map.retain(|_, tx| tx.receiver_count() > 0);
        map.len()
    }

    /// How many sessions have an entry.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// No session has an entry.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }
}

/// One member's line on the dashboard.
#[derive(Debug, Serialize)]
pub struct MemberLine {
    /// Member id.
    pub member_id: u32,
    /// Username.
    pub username: String,
    /// Live on the relay.
    pub online: bool,
    /// Reported RTT to the relay, ms.
    pub rtt_ms: f64,
    /// Reported loss, percent.
    pub loss_pct: f64,
    /// Reported jitter, ms.
    pub jitter_ms: f64,
    /// Packets the relay received from it.
    pub packets_in: u64,
    /// Packets the relay sent to it.
    pub packets_out: u64,
    /// Bytes the relay received from it.
    pub bytes_in: u64,
    /// Bytes the relay sent to it.
    pub bytes_out: u64,
    /// Its packets dropped by the rate limit.
    pub rate_limited: u64,
}

/// One session on the dashboard.
#[derive(Debug, Serialize)]
pub struct SessionLine {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Owner.
    pub owner: String,
    /// Listed publicly.
    pub public: bool,
    /// The node whose relay hosts it. For another node's session, this
    /// node knows who is online (from the database) but not their relay
    /// figures, which stay zero here.
    pub node: String,
    /// Members.
    pub members: Vec<MemberLine>,
}

/// Relay totals.
#[derive(Debug, Serialize)]
pub struct RelayLine {
    /// Relay UDP address.
    pub addr: String,
    /// Live members.
    pub live_members: usize,
    /// Datagrams in.
    pub packets_in: u64,
    /// Datagrams out.
    pub packets_out: u64,
    /// Bytes in.
    pub bytes_in: u64,
    /// Bytes out.
    pub bytes_out: u64,
    /// Datagrams dropped (all reasons).
    pub dropped: u64,
}

/// What the page renders.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    /// Unix ms.
    pub generated_at: i64,
    /// This node.
    pub node: String,
    /// Relay totals.
    pub relay: RelayLine,
    /// Sessions the viewer may see.
    pub sessions: Vec<SessionLine>,
    /// Private sessions not shown to this viewer.
    pub hidden_sessions: usize,
}

async fn build(state: &AppState) -> Result<(String, String), db::DbError> {
    let relay = state.relay_snapshot();
    let live: HashMap<(u64, u32), &MemberStats> = relay
        .members
        .iter()
        .map(|m| ((m.session, m.member), m))
        .collect();
    let mut sessions = Vec::new();
    let mut member_count = 0;
    for s in state.db.all_sessions().await? {
        let sid = u64::from_str_radix(&s.id, 16).unwrap_or(0);
        let here = s.node == state.config.node_name;
        let members: Vec<MemberLine> = state
            .db
            .members(&s.id)
            .await?
            .into_iter()
            .map(|m| {
                let l = live.get(&(sid, m.member_id));
                MemberLine {
                    member_id: m.member_id,
                    username: m.username,
                    online: crate::nodes::shows_online(here, l.is_some(), m.online_since),
                    rtt_ms: l.map_or(0.0, |l| f64::from(l.rtt_us) / 1000.0),
                    loss_pct: l.map_or(0.0, |l| f64::from(l.loss_permille) / 10.0),
                    jitter_ms: l.map_or(0.0, |l| f64::from(l.jitter_us) / 1000.0),
                    packets_in: l.map_or(0, |l| l.packets_in),
                    packets_out: l.map_or(0, |l| l.packets_out),
                    bytes_in: l.map_or(0, |l| l.bytes_in),
                    bytes_out: l.map_or(0, |l| l.bytes_out),
                    rate_limited: l.map_or(0, |l| l.rate_limited),
                }
            })
            .collect();
        member_count += members.len();
        sessions.push(SessionLine {
            id: s.id,
            name: s.name,
            owner: s.owner,
            public: s.is_public,
            node: s.node,
            members,
        });
    }
    state
        .metrics
        .set_gauges(sessions.len() as u64, member_count as u64);
    let relay_line = RelayLine {
        addr: state.relay_local.to_string(),
        live_members: relay.members.len(),
        packets_in: relay.stats.packets_in,
        packets_out: relay.stats.packets_out,
        bytes_in: relay.stats.bytes_in,
        bytes_out: relay.stats.bytes_out,
        dropped: relay.stats.dropped.iter().sum(),
    };
    let total = sessions.len();
    let mut snap = Snapshot {
        generated_at: db::now_ms(),
        node: state.config.node_name.clone(),
        relay: relay_line,
        sessions,
        hidden_sessions: 0,
    };
    let admin = serde_json::to_string(&snap).unwrap_or_default();
    snap.sessions.retain(|s| s.public);
    snap.hidden_sessions = total - snap.sessions.len();
    let public = serde_json::to_string(&snap).unwrap_or_default();
    Ok((public, admin))
}

/// Rebuilds the snapshots on change and every second until the state's
/// shutdown signal.
pub async fn run_builder(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut last = (String::new(), String::new());
    loop {
        match build(&state).await {
            Ok((public, admin)) => {
                // Timestamps change every build; compare without them.
                let strip = |s: &str| {
                    s.split_once(",\"node\"")
                        .map(|(_, r)| r.to_string())
                        .unwrap_or_default()
                };
                if strip(&public) != strip(&last.0) || strip(&admin) != strip(&last.1) {
                    state
                        .dashboard
                        .public
                        .send_replace(Arc::from(public.as_str()));
                    state
                        .dashboard
                        .admin
                        .send_replace(Arc::from(admin.as_str()));
                    last = (public, admin);
                }
            }
            Err(e) => tracing::warn!(error = %e, "dashboard snapshot failed"),
        }
        tokio::select! {
            _ = state.dashboard.changed.notified() => {
                // Let a burst of changes settle into one snapshot.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

fn channel_for(state: &AppState, user: &Option<db::User>) -> watch::Receiver<Arc<str>> {
    if user.as_ref().is_some_and(|u| u.is_admin) {
        state.dashboard.admin.subscribe()
    } else {
        state.dashboard.public.subscribe()
    }
}

/// A server-sent-events response of `event` messages: whenever `signal`
/// changes (and once at the start), `render` gets its value and returns the
/// message's data; data equal to the last message sent is skipped, and
/// `None` ends the stream (so does the server's shutdown). A comment every
/// 15 s keeps idle connections open and lets clients notice a dead server.
/// The response tells reverse proxies not to buffer it.
pub(crate) fn event_stream<T, F, Fut>(
    state: &AppState,
    mut signal: watch::Receiver<T>,
    event: &'static str,
    render: F,
) -> Response
where
    T: Clone + Send + Sync + 'static,
    F: FnMut(T) -> Fut + Send + 'static,
    Fut: Future<Output = Option<Arc<str>>> + Send,
{
    signal.mark_changed();
    let start = (signal, state.shutdown.clone(), render, None::<Arc<str>>);
    let stream = futures_util::stream::unfold(
        start,
        move |(mut signal, mut shutdown, mut render, mut last)| async move {
            loop {
                tokio::select! {
                    r = signal.changed() => r.ok()?,
                    _ = shutdown.changed() => return None,
                }
                let value = signal.borrow_and_update().clone();
                let data = render(value).await?;
                if last.as_deref() == Some(&*data) {
                    continue;
                }
                last = Some(data.clone());
                let message = Event::default().event(event).data(&*data);
                return Some((
                    Ok::<_, Infallible>(message),
                    (signal, shutdown, render, last),
                ));
            }
        },
    );
    // `X-Accel-Buffering: no` makes nginx (and proxies that honour it) pass
    // each event on at once instead of holding it in a buffer.
    (
        [(
            header::HeaderName::from_static("x-accel-buffering"),
            header::HeaderValue::from_static("no"),
        )],
        Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))),
    )
        .into_response()
}

async fn events(State(state): State<AppState>, MaybeUser(user): MaybeUser) -> Response {
    let rx = channel_for(&state, &user);
    event_stream(&state, rx, "snapshot", |data| async move { Some(data) })
}

async fn snapshot(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
) -> Result<Response, ApiError> {
    let data = channel_for(&state, &user).borrow().clone();
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        data.to_string(),
    )
        .into_response())
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

/// `/`, `/dashboard.js`, `/api/dashboard`, `/api/events`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", routing::get(page))
        .route("/dashboard.js", routing::get(script))
        .route("/api/dashboard", routing::get(snapshot))
        .route("/api/events", routing::get(events))
}

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>jamd</title>
<style>
 body { font: 14px/1.4 system-ui, sans-serif; margin: 2rem; color: #222; }
 h1 { font-size: 1.4rem; margin: 0 0 .2rem; }
 .muted { color: #777; }
 table { border-collapse: collapse; margin: .5rem 0 1.5rem; min-width: 40rem; }
 th, td { text-align: left; padding: .25rem .7rem; border-bottom: 1px solid #ddd; }
 td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
 .on { color: #080; } .off { color: #a00; }
 #status.live { color: #080; } #status.down { color: #a00; }
</style>
</head>
<body>
<h1>jamd</h1>
<p class="muted">node <span id="node">?</span> · relay <span id="relay-addr">?</span> ·
 <span id="status">connecting…</span></p>
<form id="login" class="muted">administrators see private sessions too:
 <input name="username" placeholder="username" autocomplete="username" size="12">
 <input name="password" type="password" placeholder="password" autocomplete="current-password" size="12">
 <button>log in</button> <span id="login-status"></span></form>
<p id="relay-totals" class="muted"></p>
<div id="sessions"><p class="muted">No sessions yet.</p></div>
<p id="hidden" class="muted"></p>
<script src="/dashboard.js"></script>
</body>
</html>
"#;

const SCRIPT: &str = r#"'use strict';
// Renders the snapshots jamd pushes over server-sent events.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}
function bytes(n) {
  if (n < 1024) return n + ' B';
  if (n < 1048576) return (n / 1024).toFixed(1) + ' KiB';
  return (n / 1048576).toFixed(1) + ' MiB';
}
function render(s) {
  document.getElementById('node').textContent = s.node;
  document.getElementById('relay-addr').textContent = s.relay.addr;
  document.getElementById('relay-totals').textContent =
    `relay: ${s.relay.live_members} live · in ${s.relay.packets_in} pkts / ${bytes(s.relay.bytes_in)}` +
    ` · out ${s.relay.packets_out} pkts / ${bytes(s.relay.bytes_out)} · dropped ${s.relay.dropped}`;
  const root = document.getElementById('sessions');
  root.replaceChildren();
  if (s.sessions.length === 0) root.append(el('p', {class: 'muted'}, 'No sessions yet.'));
  for (const sess of s.sessions) {
    const box = el('section', {class: 'session', 'data-session': sess.id});
    box.append(el('h2', {}, sess.name + ' ',
      el('span', {class: 'muted'}, `(${sess.members.length} members, owner ${sess.owner}` +
        (sess.node === s.node ? ')' : `, on ${sess.node}: relay figures there)`))));
    const head = el('tr', {}, el('th', {}, 'member'), el('th', {}, 'state'),
      el('th', {class: 'num'}, 'RTT ms'), el('th', {class: 'num'}, 'loss %'),
      el('th', {class: 'num'}, 'jitter ms'), el('th', {class: 'num'}, 'relay in'),
      el('th', {class: 'num'}, 'relay out'), el('th', {class: 'num'}, 'rate-limited'));
    const table = el('table', {}, el('thead', {}, head));
    const body = el('tbody');
    for (const m of sess.members) {
      body.append(el('tr', {class: 'member', 'data-member': String(m.member_id)},
        el('td', {class: 'username'}, m.username),
        el('td', {class: m.online ? 'on' : 'off'}, m.online ? 'online' : 'offline'),
        el('td', {class: 'num rtt'}, m.rtt_ms.toFixed(1)),
        el('td', {class: 'num'}, m.loss_pct.toFixed(1)),
        el('td', {class: 'num'}, m.jitter_ms.toFixed(1)),
        el('td', {class: 'num'}, `${m.packets_in} / ${bytes(m.bytes_in)}`),
        el('td', {class: 'num'}, `${m.packets_out} / ${bytes(m.bytes_out)}`),
        el('td', {class: 'num'}, String(m.rate_limited))));
    }
    table.append(body);
    box.append(table);
    root.append(box);
  }
  document.getElementById('hidden').textContent =
    s.hidden_sessions ? `${s.hidden_sessions} private session(s) not shown` : '';
}
const status = document.getElementById('status');
const source = new EventSource('/api/events');
source.addEventListener('snapshot', (e) => {
  status.textContent = 'live'; status.className = 'live';
  render(JSON.parse(e.data));
});
source.onerror = () => { status.textContent = 'reconnecting…'; status.className = 'down'; };
// Logging in sets an HttpOnly cookie; the event stream then carries the
// administrators' view, so reconnect it by reloading the page.
document.getElementById('login').addEventListener('submit', async (e) => {
  e.preventDefault();
  const f = new FormData(e.target);
  const r = await fetch('/api/login', {method: 'POST', headers: {'content-type': 'application/json'},
    body: JSON.stringify({username: f.get('username'), password: f.get('password')})});
  if (r.ok) location.reload();
  else document.getElementById('login-status').textContent = 'wrong username or password';
});
"#;

#[cfg(test)]
mod tests {
    use super::SessionSignals;

    const A: &str = "00000000000000a1";
    const B: &str = "00000000000000b2";

    #[test]
    fn a_change_wakes_only_its_own_sessions_streams() {
        let s = SessionSignals::default();
        let a = s.subscribe(A);
        let mut b = s.subscribe(B);
        let b2 = s.subscribe(B);
        s.bump(B);
        s.bump(B);
        assert!(!a.has_changed().unwrap(), "a change in B woke A");
        assert!(b.has_changed().unwrap() && b2.has_changed().unwrap());
        assert_eq!(*b.borrow_and_update(), 2);
        s.bump(A);
        assert!(a.has_changed().unwrap());
        assert!(!b.has_changed().unwrap(), "a change in A woke B");
    }

    #[test]
    fn entries_live_only_while_followed_and_until_the_session_is_deleted() {
        let s = SessionSignals::default();
        // Nobody follows A: counting its changes keeps nothing.
        s.bump(A);
        assert!(s.is_empty());
        let a = s.subscribe(A);
        let b = s.subscribe(B);
        assert_eq!(s.len(), 2);
        // A is deleted: its stream sees the signal close.
        s.forget(A);
        assert!(a.has_changed().is_err());
        assert_eq!(s.len(), 1);
        // A change after the delete (the relay's goodbye) brings nothing back.
        s.bump(A);
        assert_eq!(s.len(), 1);
        // B's last stream ends: the next prune drops B.
        assert_eq!(s.prune(), 1);
        drop(b);
        assert_eq!(s.prune(), 0);
        assert!(s.is_empty());
    }
}
