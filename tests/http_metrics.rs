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

/// A gauge's value for one label set in Prometheus text (`name{labels} value`).
fn labelled(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn freshness_says_how_far_behind_sql_and_folder_readers_are() {
    use pageviews::clock::ManualClock;
    use pageviews::source::GeneratorConfig;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    // 1000 events/s of virtual time whose event time is the wall clock's (no jitter); files
    // roll after 60 s, checkpoints every 10 s.
    use pageviews::core::time::parse_timestamp;
    let start_ms = parse_timestamp("2020-01-01 00:00:00").unwrap();
    let generator = GeneratorConfig { rate: 1000, count: None, max_late_ms: 0, seed: 1, start_ms };
    let clock = Arc::new(ManualClock::new(start_ms));
    let mut config =
        PipelineConfig::new(SourceConfig::Generator(generator.into()), dir.path().display().to_string());
    config.roll_age = Duration::from_secs(60);
    config.clock = clock.clone();
    let metrics = Arc::new(Metrics::new());
    let sql = "pageviews_freshness_seconds{reader=\"sql\"}";
    let folders = "pageviews_freshness_seconds{reader=\"folders\"}";

    let at = |event: &Option<String>| {
        event.as_deref().and_then(|e| parse_timestamp(e).ok()).map(|ms| ms - start_ms)
    };

    // At 35 s: the third checkpoint (30 s) committed events up to 30 s; nothing has rolled.
    clock.hold_at(35_000);
    let run = pageviews::start(config, Shutdown::default(), metrics.clone()).unwrap();
    wait_for("the checkpoint at 30 s", Duration::from_secs(60), || {
        metrics.checkpoints.get() >= 3 && at(&run.status().freshness.sql_newest_event) >= Some(29_000)
    });
    let status = run.status();
    let f = &status.freshness;
    assert!(f.sql_seconds.is_some_and(|s| (0.0..=5.0).contains(&s)), "{f:?}");
    assert!(at(&f.sql_newest_event).is_some_and(|ms| (29_000..=30_000).contains(&ms)), "{f:?}");
    assert_eq!((f.folders_seconds, f.folders_newest_event.as_deref()), (None, None), "nothing rolled yet");
    let text = metrics.encode();
    assert!(labelled(&text, sql).is_some_and(|s| (0.0..=5.0).contains(&s)), "{text}");
    assert!(!text.contains(folders), "no folder freshness before a file rolls:\n{text}");

    // At 95 s: the first files rolled at 60 s, checkpoint 9 (90 s) committed up to 90 s.
    clock.hold_at(95_000);
    wait_for("the checkpoint at 90 s", Duration::from_secs(60), || {
        metrics.checkpoints.get() >= 9 && at(&run.status().freshness.sql_newest_event) >= Some(89_000)
    });
    let status = run.status();
    let f = &status.freshness;
    assert!(f.sql_seconds.is_some_and(|s| (0.0..=5.0).contains(&s)), "{f:?}");
    assert!(f.folders_seconds.is_some_and(|s| (29.0..=36.0).contains(&s)), "{f:?}");
    assert!(at(&f.folders_newest_event).is_some_and(|ms| (59_000..=61_000).contains(&ms)), "{f:?}");
    let text = metrics.encode();
    assert!(labelled(&text, folders).is_some_and(|s| (29.0..=36.0).contains(&s)), "{text}");
    let json = serde_json::to_value(&status).unwrap();
    assert!(
        json["freshness"]["folders_seconds"].is_number() && json["freshness"]["sql_seconds"].is_number(),
        "{json}"
    );

    clock.release();
    run.shutdown().trigger();
    run.join().unwrap();
}
