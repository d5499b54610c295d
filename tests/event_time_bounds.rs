//! Event times the tables cannot take: one far-future event must not poison the watermark,
//! and every timestamp the decoder accepts lands in a well-formed row and partition, or in
//! dead_letters, whatever --window is.

mod common;

use std::sync::Arc;

use common::*;
use pageviews::clock::ManualClock;
use pageviews::core::time::{format_timestamp, parse_timestamp, MAX_MS, MIN_MS};
use pageviews::metrics::Metrics;
use pageviews::{PipelineConfig, Shutdown, SourceConfig};

#[test]
fn one_event_dated_2100_is_a_dead_letter_and_the_50000_after_it_are_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let start = parse_timestamp("2020-01-01 00:00:00").unwrap();
    let mut lines: Vec<String> = (0..50_010).map(|i| view_at(i, "SW1A 1AA", start + i * 10)).collect();
    lines.insert(10, view(99, "SW1A 1AA", "2100-01-01 00:00:00"));
    let input = write_input(dir.path(), "events.jsonl", &lines);
    let out = dir.path().join("out");
    let o = bin().args(["run", "--http", "off", "--input", &input, "--output"]).arg(&out).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let totals = committed(&out);
    assert_eq!((totals.page_views, totals.dead_letters), (50_010, 1));
    assert_eq!(totals.late_page_views, 0, "the 2100 event moved the watermark");
    let dead = rows(&out, "dead_letters");
    assert_eq!(dead[0].value["reason"], "future_timestamp");
    assert_eq!(dead[0].value["offset"], 11, "its line");
    let error = dead[0].value["error"].as_str().unwrap();
    assert!(error.contains("2100-01-01 00:00:00.000") && error.contains("--max-future"), "{error}");
    let views: u64 =
        rows(&out, "page_view_aggregates").iter().map(|r| r.value["views"].as_u64().unwrap()).sum();
    assert_eq!(views, 50_010);
    let report = assert_verified(&out);
    assert_eq!(report.dead_letters_by_reason.get("future_timestamp"), Some(&1));
}

#[test]
fn max_future_is_measured_from_the_pipelines_clock_and_counted_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let wall = parse_timestamp("2020-01-01 12:00:00").unwrap();
    // 10 min ahead of the driven clock: refused at --max-future 5m, taken at 15m.
    let lines = vec![view_at(1, "A", wall), view_at(2, "A", wall + 600_000)];
    let input = write_input(dir.path(), "in.jsonl", &lines);
    for (max_future_ms, dead) in [(300_000, 1), (900_000, 0)] {
        let out = dir.path().join(format!("out-{max_future_ms}"));
        let mut config =
            PipelineConfig::new(SourceConfig::Files(vec![input.clone()]), out.display().to_string());
        config.clock = Arc::new(ManualClock::new(wall));
        config.max_future_ms = max_future_ms;
        let metrics = Arc::new(Metrics::new(&config.pipeline_id));
        let summary = pageviews::start(config, Shutdown::default(), metrics.clone()).unwrap().join().unwrap();
        assert_eq!(summary.totals.dead_letters, dead, "--max-future {max_future_ms} ms");
        let text = metrics.encode();
        let found = text.lines().any(|l| {
            l.starts_with("pageviews_dead_letters_total{")
                && l.contains("reason=\"future_timestamp\"")
                && l.ends_with(&format!("}} {dead}"))
        });
        assert!(found, "future_timestamp dead letters {dead} missing from:\n{text}");
    }
}

/// Every timestamp in a row is `yyyy-MM-dd HH:mm:ss.SSS` with a four-digit year, and every
/// partition folder `day=yyyy-MM-dd/hour=HH`.
fn assert_well_formed(out: &std::path::Path, table: &str, fields: &[&str]) -> Vec<Row> {
    let rows = rows(out, table);
    let ts = |s: &str| {
        let b = s.as_bytes();
        b.len() == 23 && parse_timestamp(s).is_ok_and(|ms| format_timestamp(ms) == s) && b[4] == b'-'
    };
    for r in &rows {
        let (day, hour) = r.partition.split_once('/').unwrap_or_default();
        let day = day.strip_prefix("day=").unwrap_or_default();
        let hour = hour.strip_prefix("hour=").unwrap_or_default();
        assert!(
            day.len() == 10 && parse_timestamp(&format!("{day} {hour}:00:00")).is_ok() && hour.len() == 2,
            "{table}: bad partition folder {}",
            r.partition
        );
        for f in fields {
            let v = r.value[*f].as_str().unwrap_or_default();
            assert!(ts(v), "{table}.{f} = {v:?} in {}", r.partition);
        }
    }
    rows
}

#[test]
fn timestamps_at_the_edges_of_the_supported_years_land_in_well_formed_rows_or_dead_letters() {
    for window_ms in [60_000, 7 * 60_000, 3_600_000, 86_400_000] {
        let dir = tempfile::tempdir().unwrap();
        let edges = [
            MIN_MS,
            MIN_MS + 1,
            MIN_MS + window_ms,
            MAX_MS - window_ms - 1,
            MAX_MS - window_ms,
            MAX_MS - 1,
            MAX_MS,
        ];
        let mut lines: Vec<String> = edges.iter().map(|ms| view_at(1, "A", *ms)).collect();
        // The same instants as epoch milliseconds, the decoder's third form.
        lines.extend(
            edges
                .iter()
                .map(|ms| format!(r#"{{"user_id": 2, "postcode": "B", "webpage": "w", "timestamp": {ms}}}"#)),
        );
        let input = write_input(dir.path(), "edges.jsonl", &lines);
        let out = dir.path().join("out");
        let mut config = PipelineConfig::new(SourceConfig::Files(vec![input]), out.display().to_string());
        // The clock in the last day of 9999, and no future bound: only the years limit.
        config.clock = Arc::new(ManualClock::new(parse_timestamp("9999-12-31 00:00:00").unwrap()));
        config.max_future_ms = i64::MAX;
        config.windows.window_ms = window_ms;
        pageviews::run(config, Shutdown::default()).unwrap();

        let views = assert_well_formed(&out, "page_views", &["timestamp"]);
        let aggs = assert_well_formed(&out, "page_view_aggregates", &["window_start", "window"]);
        assert_well_formed(&out, "late_page_views", &["timestamp", "watermark"]);
        let dead = assert_well_formed(&out, "dead_letters", &["received_at"]);
        assert_eq!(views.len() + dead.len(), lines.len(), "window {window_ms}: every record somewhere");
        assert!(!views.is_empty(), "window {window_ms}: the edges inside are taken");
        for a in &aggs {
            let (s, e) = (a.value["window_start"].as_str().unwrap(), a.value["window"].as_str().unwrap());
            assert_eq!(parse_timestamp(e).unwrap() - parse_timestamp(s).unwrap(), window_ms, "{}", a.value);
        }
        for d in &dead {
            assert_eq!(d.value["reason"], "bad_timestamp", "{}", d.value);
            assert!(d.value["error"].as_str().unwrap().contains("window"), "{}", d.value);
        }
        let report = audit(&out);
        assert!(report.is_clean(), "window {window_ms}:\n{report}");
    }
}
