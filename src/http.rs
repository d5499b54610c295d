//! The HTTP side: `/metrics` for Prometheus, `/healthz` for orchestrators, `/api/status`
//! for tools, and `/`, a status page for people.
//!
//! The router is built by `router` so tests exercise it without a socket; [`serve`] binds
//! it on the I/O runtime beside the pipeline. The page is one HTML file with its CSS and
//! script inline (`http/status.html`, compiled in): no build step, nothing fetched from
//! elsewhere; it polls `/api/status`.
//!
//! Connections are served by hyper directly rather than `axum::serve`, for a header read
//! timeout: a client that opens a connection and sends half a request (or nothing) is
//! disconnected after it instead of holding a socket and a task forever.

mod status;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use pageviews_core::time::format_timestamp;

pub use status::Status;
pub(crate) use status::{CheckpointStatus, Freshness, Progress, TableStatus};

use crate::clock::Clock;
use crate::metrics::{Metrics, PartitionLabel};

/// How long a client may take to send a request's headers, from the moment the server
/// starts waiting for them (a new connection, or the next request on a kept-alive one).
pub(crate) const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once. Prometheus, a status page or two and the odd curl need a
/// handful; each costs about 15 KiB of buffers, so a flood of 17,000 half-sent requests had
/// taken 250 MB.
pub const MAX_CONNECTIONS: usize = 64;

/// The status page.
const STATUS_PAGE: &str = include_str!("http/status.html");

/// Shared state behind the routes.
#[derive(Clone)]
pub struct HttpState {
    /// The metrics handle.
    pub(crate) metrics: Arc<Metrics>,
    /// The live status.
    pub(crate) status: Arc<Mutex<Status>>,
    /// The pipeline's clock: health and ages are judged on it, so tests drive them.
    pub(crate) clock: Arc<dyn Clock>,
}

impl HttpState {
    /// The state for a pipeline's metrics, status and clock.
    pub fn new(metrics: Arc<Metrics>, status: Arc<Mutex<Status>>, clock: Arc<dyn Clock>) -> Self {
        HttpState { metrics, status, clock }
    }

    /// A copy of the status as of now: the time, health and Kafka lag filled in.
    pub(crate) fn snapshot(&self) -> Status {
        let mut st = self.status.lock().map(|st| st.clone()).unwrap_or_else(|e| {
            // A panic while the status was locked: report what is there, as failed.
            let mut st = e.into_inner().clone();
            st.state = "failed".into();
            st
        });
        st.health = st.health(self.clock.now_ms());
        st.now_ms = self.clock.wall_ms();
        st.now = Some(format_timestamp(st.now_ms));
        for p in &mut st.partitions {
            // Only a Kafka source registers lag; other sources' names match no label.
            let label = PartitionLabel { topic: p.source.clone(), partition: p.partition as i32 };
            p.kafka_lag = self.metrics.kafka_consumer_lag.get(&label).map(|g| g.get());
        }
        st
    }
}

/// Builds the router.
pub(crate) fn router(state: HttpState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/status", get(status))
        .with_state(state)
}

async fn page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(STATUS_PAGE))
}

/// OpenMetrics when the client asks for it (Prometheus does), else the classic text format,
/// as Prometheus's own client libraries negotiate.
async fn metrics(State(s): State<HttpState>, headers: HeaderMap) -> impl IntoResponse {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.contains("application/openmetrics-text") {
        (
            [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            s.metrics.encode(),
        )
    } else {
        ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.encode_text())
    }
}

async fn healthz(State(s): State<HttpState>) -> impl IntoResponse {
    let health = s.snapshot().health;
    match health.reason {
        Some(reason) if !health.ok => (StatusCode::SERVICE_UNAVAILABLE, reason),
        _ => (StatusCode::OK, "ok".to_string()),
    }
}

async fn status(State(s): State<HttpState>) -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Json(s.snapshot()))
}

/// Binds `addr` and serves until the runtime shuts down, with the default header read
/// timeout. Returns the bound address (useful with port 0).
pub async fn serve(addr: SocketAddr, state: HttpState) -> std::io::Result<SocketAddr> {
    serve_with_timeout(addr, state, DEFAULT_HEADER_READ_TIMEOUT).await
}

/// [`serve`] with a header read timeout of `header_read_timeout`.
pub(crate) async fn serve_with_timeout(
    addr: SocketAddr,
    state: HttpState,
    header_read_timeout: Duration,
) -> std::io::Result<SocketAddr> {
    // A long listen queue: connections past the cap are closed by the accept loop, and one
    // that overflowed the queue would wait out a SYN retransmission instead.
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(4096)?;
    let bound = listener.local_addr()?;
    let app = router(state);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: passes when connections close.
                    tracing::warn!(error = %e, "cannot accept an HTTP connection; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // Past the cap a connection is closed at once: accepted and dropped, it costs no
            // memory, where one left waiting would hold its buffers for the header timeout.
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!("HTTP connection closed at once: {MAX_CONNECTIONS} are open");
                continue;
            };
            let service = TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let mut http = hyper::server::conn::http1::Builder::new();
                http.timer(TokioTimer::new()).header_read_timeout(header_read_timeout);
                if let Err(e) = http.serve_connection(TokioIo::new(stream), service).await {
                    tracing::debug!(error = %e, "HTTP connection closed");
                }
            });
        }
    });
    Ok(bound)
}
