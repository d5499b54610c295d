//! Partition completion: once the watermark passes the end of an hour, that hour's files
//! close (they are visible without waiting for --roll-age) and its folders get `_SUCCESS`,
//! while the next hour stays open.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use pageviews::clock::{Clock, ManualClock};
use pageviews::metrics::Metrics;
use pageviews::source::GeneratorConfig;
use pageviews::{PipelineConfig, Shutdown, SourceConfig};

#[test]
fn an_hour_gets_success_markers_and_visible_files_once_the_watermark_passes_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // 1000 events/s of event time in processing time from 00:59:58 (no jitter), a 1 s
    // watermark delay: hour 00 is complete about 3 s in, hour 01 only when the 20 s run ends.
    // Processing time is virtual, held at 5 s so the test looks at the run mid-way.
    let generator = GeneratorConfig {
        rate: 1000,
        count: Some(20_000),
        max_late_ms: 0,
        seed: 2,
        start_ms: pageviews::core::time::parse_timestamp("2020-01-01 00:59:58").unwrap(),
        interval_us: None,
    };
    let clock = Arc::new(ManualClock::new(generator.start_ms));
    clock.hold_at(5_000);
    let mut config =
        PipelineConfig::new(SourceConfig::Generator(generator.into()), out.display().to_string());
    config.windows.watermark_delay_ms = 1_000;
    config.checkpoint_interval = Duration::from_millis(500);
    config.files.format = pageviews::sink::Format::Parquet;
    config.clock = clock.clone();
    let run_metrics = Arc::new(Metrics::new(&config.pipeline_id));
    let run = pageviews::start(config, Shutdown::default(), run_metrics).unwrap();

    let hour0 = "day=2020-01-01/hour=00";
    let marker = out.join("page_views").join(hour0).join("_SUCCESS");
    wait_for("hour 00's _SUCCESS", Duration::from_secs(60), || marker.exists());
    assert!(!run.is_finished(), "the marker came while the run goes on");
    assert!(clock.now_ms() <= 5_000, "processing time is held at 5 s");
    assert!(!out.join("page_views/day=2020-01-01/hour=01/_SUCCESS").exists(), "hour 01 is not complete");
    let rows_hour0 = rows(&out, "page_views").iter().filter(|r| r.partition == hour0).count();
    assert_eq!(rows_hour0, 2_000, "every row of hour 00 is visible with its marker");

    clock.release();
    let summary = run.join().unwrap();
    assert!(summary.reached_end);
    assert!(out.join("page_views/day=2020-01-01/hour=01/_SUCCESS").exists(), "the end completes every hour");
    let report = assert_verified(&out);
    assert_eq!(report.rows.get("page_views"), Some(&20_000), "{report}");
}
