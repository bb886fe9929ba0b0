//! Prometheus metrics at `/metrics`, in the text exposition format.
//!
//! The metric set is small and fixed (relay counters the relay thread
//! already keeps, a few HTTP, blob and member-stream counters, two
//! gauges), so the text is written by hand rather than through a metrics
//! registry crate: nothing extra on the relay's hot path, and no
//! dependency for thirty lines.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::relay::server::drops;
use crate::server::AppState;

/// HTTP and blob counters, and gauges the dashboard builder refreshes.
/// Written by request handlers and the dashboard task, read by `/metrics`;
/// all Relaxed: independent counters, no ordering between them needed.
#[derive(Debug, Default)]
pub struct Metrics {
    http: [AtomicU64; 5],
    blob_in: AtomicU64,
    blob_out: AtomicU64,
    sessions: AtomicU64,
    members: AtomicU64,
    member_stream_renders: AtomicU64,
}

impl Metrics {
    /// Counts bytes uploaded to the blob store.
    pub fn blob_bytes_in(&self, n: u64) {
        self.blob_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts bytes served from the blob store.
    pub fn blob_bytes_out(&self, n: u64) {
        self.blob_out.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets the session and member gauges.
    pub fn set_gauges(&self, sessions: u64, members: u64) {
        self.sessions.store(sessions, Ordering::Relaxed);
        self.members.store(members, Ordering::Relaxed);
    }

    /// Counts one member stream re-reading its session's list (woken by a
    /// change in that session, or opened).
    pub fn member_stream_render(&self) {
        self.member_stream_renders.fetch_add(1, Ordering::Relaxed);
    }

    fn count_status(&self, status: u16) {
        let i = (usize::from(status / 100)).clamp(1, 5) - 1;
        self.http[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// Middleware: logs every request (method, path, status, duration) and
/// counts it by status class.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    state.metrics.count_status(status);
    tracing::info!(%method, %path, status, micros = start.elapsed().as_micros() as u64, "http");
    resp
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

/// `GET /metrics`
pub async fn render(State(state): State<AppState>) -> Response {
    let relay = state.relay_snapshot();
    let s = &relay.stats;
    let m = &state.metrics;
    let mut out = String::with_capacity(2048);
    counter(
        &mut out,
        "jamd_relay_packets_in_total",
        "Datagrams the relay received.",
        s.packets_in,
    );
    counter(
        &mut out,
        "jamd_relay_bytes_in_total",
        "Bytes the relay received.",
        s.bytes_in,
    );
    counter(
        &mut out,
        "jamd_relay_packets_out_total",
        "Datagrams the relay sent.",
        s.packets_out,
    );
    counter(
        &mut out,
        "jamd_relay_bytes_out_total",
        "Bytes the relay sent.",
        s.bytes_out,
    );
    counter(
        &mut out,
        "jamd_relay_data_forwarded_total",
        "Data packets the relay forwarded (each copy counts).",
        s.data_forwarded,
    );
    counter(
        &mut out,
        "jamd_relay_hellos_accepted_total",
        "Hellos the relay accepted.",
        s.hellos_accepted,
    );
    let _ = writeln!(
        out,
        "# HELP jamd_relay_dropped_total Datagrams the relay dropped, by reason.\n# TYPE jamd_relay_dropped_total counter"
    );
    for (label, n) in drops(s) {
        let _ = writeln!(out, "jamd_relay_dropped_total{{reason=\"{label}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "# HELP jamd_relay_cpu_seconds_total CPU time of the relay thread.\n# TYPE jamd_relay_cpu_seconds_total counter\njamd_relay_cpu_seconds_total {:.3}",
        relay.cpu_us as f64 / 1e6
    );
    gauge(
        &mut out,
        "jamd_relay_live_members",
        "Members live on this relay.",
        relay.members.len() as u64,
    );
    gauge(
        &mut out,
        "jamd_sessions",
        "Sessions in the database.",
        m.sessions.load(Ordering::Relaxed),
    );
    gauge(
        &mut out,
        "jamd_session_members",
        "Session memberships in the database.",
        m.members.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "jamd_blob_bytes_in_total",
        "Bytes uploaded to the blob store.",
        m.blob_in.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "jamd_blob_bytes_out_total",
        "Bytes served from the blob store.",
        m.blob_out.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "jamd_member_stream_renders_total",
        "Member list reads by member streams: one when a stream opens, one each time a change in its own session wakes it.",
        m.member_stream_renders.load(Ordering::Relaxed),
    );
    let _ = writeln!(
        out,
        "# HELP jamd_http_responses_total HTTP responses by status class.\n# TYPE jamd_http_responses_total counter"
    );
    for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
        let _ = writeln!(
            out,
            "jamd_http_responses_total{{class=\"{class}\"}} {}",
            m.http[i].load(Ordering::Relaxed)
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
