//! The HTTP side: `/metrics` for Prometheus, `/healthz`, and `/api/status`.
//!
//! The router is built by [`router`] so tests exercise it without a socket; [`serve`] binds
//! it on the I/O runtime beside the pipeline.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::metrics::Metrics;

/// What `/api/status` reports; the pipeline updates it at every checkpoint.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// Pipeline id.
    pub pipeline: String,
    /// Table root.
    pub output: String,
    /// `starting`, `running`, `stopping`, `stopped` or `failed`.
    pub state: String,
    /// Pipeline watermark (`yyyy-MM-dd HH:mm:ss.SSS`), once there is one.
    pub watermark: Option<String>,
    /// Last committed checkpoint.
    pub last_checkpoint: Option<u64>,
    /// Committed totals.
    pub totals: pageviews_core::commit::Totals,
    /// The error that stopped the pipeline, if any.
    pub error: Option<String>,
    /// How current what each kind of reader sees is.
    pub freshness: Freshness,
}

/// How far behind the newest event each kind of reader sees is, on `/api/status` and as
/// `pageviews_freshness_seconds{reader}`. The newest event is the newest `timestamp` among
/// the page_views rows the reader can see (every valid event is one); behind is the wall
/// clock minus it, so it includes how far the source itself is behind. Unknown (`null`)
/// until the pipeline has committed a page view.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Freshness {
    /// `pageviews sql`, which sees every committed row: seconds behind.
    pub sql_seconds: Option<f64>,
    /// The newest event it sees (`yyyy-MM-dd HH:mm:ss.SSS`, UTC).
    pub sql_newest_event: Option<String>,
    /// Readers of the table folders (DuckDB, Spark, pyarrow), which see rolled files only:
    /// seconds behind.
    pub folders_seconds: Option<f64>,
    /// The newest event they see.
    pub folders_newest_event: Option<String>,
    /// The newest event times behind those, UTC ms, kept between checkpoints.
    #[serde(skip)]
    pub(crate) newest_ms: [Option<i64>; 2],
}

/// Shared state behind the routes.
#[derive(Clone)]
pub struct HttpState {
    /// The metrics handle.
    pub metrics: Arc<Metrics>,
    /// The live status.
    pub status: Arc<Mutex<Status>>,
}

/// Builds the router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/api/status", get(status))
        .with_state(state)
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        s.metrics.encode(),
    )
}

async fn healthz(State(s): State<HttpState>) -> impl IntoResponse {
    let state = s.status.lock().map(|st| st.state.clone()).unwrap_or_else(|_| "failed".into());
    if state == "failed" {
        (StatusCode::SERVICE_UNAVAILABLE, state)
    } else {
        (StatusCode::OK, "ok".to_string())
    }
}

async fn status(State(s): State<HttpState>) -> impl IntoResponse {
    let snapshot = s.status.lock().map(|st| st.clone()).unwrap_or_default();
    Json(snapshot)
}

/// Binds `addr` and serves until the runtime shuts down. Returns the bound address (useful
/// with port 0).
pub async fn serve(addr: SocketAddr, state: HttpState) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(state)).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok(bound)
}
