//! `/healthz` for operators: it fails when checkpoints stop (judged on the pipeline's clock,
//! so the tests drive it), recovers when they resume, and stays healthy while a pipeline
//! simply has nothing to read.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use pageviews::clock::{Clock, ManualClock};
use pageviews::metrics::Metrics;
use pageviews::source::GeneratorConfig;
use pageviews::{PipelineConfig, Shutdown, SourceConfig};
use pageviews_testkit::kafka::{kafka_config, produce, unique};

fn status_json(addr: std::net::SocketAddr) -> serde_json::Value {
    let (code, body) = http_get(addr, "/api/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn healthz_fails_after_three_intervals_without_a_checkpoint_and_recovers_when_they_resume() {
    let dir = tempfile::tempdir().unwrap();
    let generator = GeneratorConfig {
        rate: 1_000,
        count: None,
        max_late_ms: 0,
        seed: 3,
        start_ms: pageviews::core::time::parse_timestamp("2020-01-01 00:00:00").unwrap(),
        interval_us: None,
    };
    let clock = Arc::new(ManualClock::new(generator.start_ms));
    // The loop runs until processing time reaches 5 s, then waits there: stuck, as a loop
    // blocked on a hung store or source would be.
    clock.hold_at(5_000);
    let mut config =
        PipelineConfig::new(SourceConfig::Generator(generator.into()), dir.path().display().to_string());
    config.checkpoint_interval = Duration::from_secs(1);
    config.clock = clock.clone();
    config.http.addr = Some("127.0.0.1:0".parse().unwrap());
    let run_metrics = Arc::new(Metrics::new(&config.pipeline_id));
    let run = pageviews::start(config, Shutdown::default(), run_metrics).unwrap();
    let addr = run.http_addr().unwrap();

    wait_for("the loop to wait at the hold after 4 checkpoints", Duration::from_secs(60), || {
        clock.held() == 1 && run.status().last_checkpoint >= Some(4)
    });
    assert_eq!(http_get(addr, "/healthz"), (200, "ok".to_string()));
    let stuck_at = run.status().last_checkpoint;

    // Ten seconds pass on the pipeline's clock; the loop stays where it is.
    clock.advance(Duration::from_secs(10));
    let (code, reason) = http_get(addr, "/healthz");
    assert_eq!(code, 503, "{reason}");
    assert!(reason.contains("no checkpoint for") && reason.contains("3 checkpoint intervals"), "{reason}");
    let status = status_json(addr);
    assert_eq!(status["state"], "running");
    assert_eq!(status["health"]["ok"], false);
    assert_eq!(status["health"]["reason"], reason.as_str());
    assert_eq!(run.status().last_checkpoint, stuck_at, "nothing committed meanwhile");

    clock.release();
    wait_for("healthz to recover once checkpoints resume", Duration::from_secs(60), || {
        http_get(addr, "/healthz").0 == 200
    });
    assert!(run.status().last_checkpoint > stuck_at, "it recovered by committing");
    run.shutdown().trigger();
    run.join().unwrap();
}

#[test]
fn an_idle_pipeline_with_everything_committed_stays_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let (topic, group) = (unique("idle"), unique("group"));
    produce(&topic, pageviews_testkit::kafka::generator(5, "2020-01-01 00:00:00", 300), 0.0);
    let wall_start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let clock = Arc::new(ManualClock::new(wall_start as i64));
    let mut config = kafka_config(&topic, &group, &dir.path().join("out"), false);
    config.checkpoint_interval = Duration::from_secs(1);
    config.clock = clock.clone();
    config.http.addr = Some("127.0.0.1:0".parse().unwrap());
    let metrics = Arc::new(Metrics::new(&config.pipeline_id));
    let run = pageviews::start(config, Shutdown::default(), metrics.clone()).unwrap();
    let addr = run.http_addr().unwrap();

    // Drive the pipeline's clock until everything produced is committed.
    wait_for("the 300 records to be committed", Duration::from_secs(60), || {
        clock.advance(Duration::from_millis(100));
        run.status().totals.records_read == 300
    });
    let committed = run.status().last_checkpoint;

    // Nothing new arrives while ten checkpoint intervals pass: the tables hold everything
    // read, so the pipeline is healthy, and the checkpoint-age metric (which alerts read)
    // says it is current, without a new checkpoint being written for it.
    clock.advance(Duration::from_secs(10));
    let advanced_to = clock.wall_ms();
    wait_for("healthz to report an idle pipeline healthy", Duration::from_secs(30), || {
        http_get(addr, "/healthz").0 == 200
    });
    let last = metric(&metrics.encode(), "pageviews_last_checkpoint_timestamp_seconds").unwrap();
    assert!(
        last * 1000.0 >= advanced_to as f64,
        "checkpoint age counts from {last}, before {advanced_to} ms"
    );
    assert_eq!(run.status().last_checkpoint, committed, "idleness writes no checkpoints");
    run.shutdown().trigger();
    run.join().unwrap();
}
