//! `/metrics`, `/healthz` and `/api/status` over a real socket, and metric values that
//! match what a run did.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use pageviews::http::{serve, HttpState, Status};
use pageviews::metrics::Metrics;
use pageviews::{PipelineConfig, Shutdown, SourceConfig};

#[test]
fn metrics_count_what_the_run_read_accepted_rejected_and_committed() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> =
        (0..10).map(|i| view(i, "SW1A 1AA", &format!("2020-01-01 00:00:{i:02}"))).collect();
    lines.push("not json".into());
    lines.push(r#"{"user_id": 1}"#.into());
    lines.push(view(99, "SW1A 1AA", "2019-12-31 00:00:00"));
    let input = write_input(dir.path(), "in.jsonl", &lines);
    let metrics = Arc::new(Metrics::new());
    let config =
        PipelineConfig::new(SourceConfig::Files(vec![input]), dir.path().join("out").display().to_string());
    pageviews::pipeline::run_with_metrics(config, Shutdown::default(), metrics.clone()).unwrap();

    let text = metrics.encode();
    for line in [
        "pageviews_records_read_total 13",
        "pageviews_records_accepted_total 11",
        "pageviews_late_events_total 1",
        "pageviews_dead_letters_total{reason=\"invalid_json\"} 1",
        "pageviews_dead_letters_total{reason=\"missing_field\"} 1",
        "pageviews_dead_letters_total{reason=\"oversized\"} 0",
        "pageviews_rows_committed_total{table=\"page_views\"} 11",
        "pageviews_rows_committed_total{table=\"page_view_aggregates\"} 1",
        "pageviews_rows_committed_total{table=\"late_page_views\"} 1",
        "pageviews_rows_committed_total{table=\"dead_letters\"} 2",
        "pageviews_files_committed_total{table=\"page_views\"} 2",
        "pageviews_checkpoints_total 1",
        "pageviews_checkpoint_duration_seconds_count 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
    }
}

#[test]
fn the_http_endpoints_answer_over_a_socket() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let metrics = Arc::new(Metrics::new());
    metrics.records_read.inc_by(42);
    let status = Arc::new(Mutex::new(Status {
        state: "running".into(),
        last_checkpoint: Some(7),
        ..Status::default()
    }));
    let state = HttpState { metrics, status: status.clone() };
    let addr = rt.block_on(serve("127.0.0.1:0".parse().unwrap(), state)).unwrap();

    let (code, body) = http_get(addr, "/metrics");
    assert_eq!(code, 200);
    assert!(body.contains("pageviews_records_read_total 42"), "{body}");
    assert!(body.contains("# EOF"), "OpenMetrics ends with # EOF");
    assert_eq!(http_get(addr, "/healthz"), (200, "ok".to_string()));
    let (code, body) = http_get(addr, "/api/status");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["last_checkpoint"], 7);
    status.lock().unwrap().state = "failed".into();
    assert_eq!(http_get(addr, "/healthz").0, 503, "a failed pipeline is unhealthy");
}
