//! `/metrics`, `/healthz` and `/api/status` over a real socket, metric values that match
//! what a run did, an exposition `promtool check metrics` accepts, and the header read
//! timeout.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use pageviews::clock::SystemClock;
use pageviews::http::{serve, HttpState, Status};
use pageviews::metrics::Metrics;
use pageviews::{PipelineConfig, RunHandle, Shutdown, SourceConfig};

/// The Accept header Prometheus 2.x scrapes with.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// A finished run over a small input with good, late and bad records, still serving HTTP
/// on a loopback port.
fn finished_run(dir: &std::path::Path, header_timeout: Duration) -> RunHandle {
    let mut lines: Vec<String> =
        (0..10).map(|i| view(i, "SW1A 1AA", &format!("2020-01-01 00:00:{i:02}"))).collect();
    lines.push("not json".into());
    lines.push(r#"{"user_id": 1}"#.into());
    lines.push(view(99, "SW1A 1AA", "2019-12-31 00:00:00"));
    let input = write_input(dir, "in.jsonl", &lines);
    let mut config =
        PipelineConfig::new(SourceConfig::Files(vec![input]), dir.join("out").display().to_string());
    config.http.addr = Some("127.0.0.1:0".parse().unwrap());
    config.http.header_timeout = header_timeout;
    let run_metrics = Arc::new(Metrics::new(&config.pipeline_id));
    let run = pageviews::start(config, Shutdown::default(), run_metrics).unwrap();
    wait_for("the run to end", Duration::from_secs(60), || run.is_finished());
    run
}

#[test]
fn metrics_count_what_the_run_read_accepted_rejected_and_committed() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> =
        (0..10).map(|i| view(i, "SW1A 1AA", &format!("2020-01-01 00:00:{i:02}"))).collect();
    lines.push("not json".into());
    lines.push(r#"{"user_id": 1}"#.into());
    lines.push(view(99, "SW1A 1AA", "2019-12-31 00:00:00"));
    let input = write_input(dir.path(), "in.jsonl", &lines);
    let metrics = Arc::new(Metrics::new("pageviews"));
    let mut config =
        PipelineConfig::new(SourceConfig::Files(vec![input]), dir.path().join("out").display().to_string());
    config.pipeline_id = "pageviews".into();
    pageviews::pipeline::run_with_metrics(config, Shutdown::default(), metrics.clone()).unwrap();

    let text = metrics.encode();
    for line in [
        "pageviews_records_read_total{pipeline=\"pageviews\"} 13",
        "pageviews_records_accepted_total{pipeline=\"pageviews\"} 11",
        "pageviews_late_events_total{pipeline=\"pageviews\"} 1",
        "pageviews_dead_letters_total{pipeline=\"pageviews\",reason=\"invalid_json\"} 1",
        "pageviews_dead_letters_total{pipeline=\"pageviews\",reason=\"missing_field\"} 1",
        "pageviews_dead_letters_total{pipeline=\"pageviews\",reason=\"oversized\"} 0",
        "pageviews_rows_committed_total{pipeline=\"pageviews\",table=\"page_views\"} 11",
        "pageviews_rows_committed_total{pipeline=\"pageviews\",table=\"page_view_aggregates\"} 1",
        "pageviews_rows_committed_total{pipeline=\"pageviews\",table=\"late_page_views\"} 1",
        "pageviews_rows_committed_total{pipeline=\"pageviews\",table=\"dead_letters\"} 2",
        "pageviews_files_committed_total{pipeline=\"pageviews\",table=\"page_views\"} 2",
        "pageviews_checkpoints_total{pipeline=\"pageviews\"} 1",
        "pageviews_checkpoint_duration_seconds_count{pipeline=\"pageviews\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
    }
}

#[test]
fn the_http_endpoints_answer_over_a_socket() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let metrics = Arc::new(Metrics::new("pageviews"));
    metrics.records_read.inc_by(42);
    let status = Arc::new(Mutex::new(Status {
        state: "running".into(),
        last_checkpoint: Some(7),
        ..Status::default()
    }));
    let state = HttpState::new(metrics, status.clone(), Arc::new(SystemClock::new()));
    let addr = rt.block_on(serve("127.0.0.1:0".parse().unwrap(), state)).unwrap();

    // Prometheus asks for OpenMetrics.
    let (code, body) = http_get_with(addr, "/metrics", &[("Accept", PROMETHEUS_ACCEPT)]);
    assert_eq!(code, 200);
    assert!(body.contains("pageviews_records_read_total{pipeline=\"pageviews\"} 42"), "{body}");
    assert!(body.contains("# EOF"), "OpenMetrics ends with # EOF");
    // Anyone else (curl, promtool) gets the classic text format, where a counter's
    // metadata names its samples.
    let (code, body) = http_get(addr, "/metrics");
    assert_eq!(code, 200);
    assert!(body.contains("# TYPE pageviews_records_read_total counter\n"), "{body}");
    assert!(!body.contains("# EOF"), "{body}");
    assert_eq!(http_get(addr, "/healthz"), (200, "ok".to_string()));
    let (code, body) = http_get(addr, "/api/status");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["last_checkpoint"], 7);
    status.lock().unwrap().state = "failed".into();
    assert_eq!(http_get(addr, "/healthz").0, 503, "a failed pipeline is unhealthy");
}

#[test]
fn curl_metrics_piped_to_promtool_check_metrics_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let run = finished_run(dir.path(), Duration::from_secs(10));
    let url = format!("http://{}/metrics", run.http_addr().unwrap());
    let out = Command::new("bash")
        .args(["-o", "pipefail", "-c", &format!("curl -sSf {url} | promtool check metrics")])
        .output()
        .expect("run curl and promtool (scripts/setup installs promtool)");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {}\n{said}", out.status);

    let (_, text) = http_get(run.http_addr().unwrap(), "/metrics");
    for series in [
        "pageviews_build_info{pipeline=\"files\",version=\"",
        "pageviews_checkpoint_interval_seconds{pipeline=\"files\"} 10",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_virtual_memory_bytes ",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(text.lines().any(|l| l.starts_with(series)), "no `{series}…` in:\n{text}");
    }
    run.join().unwrap();
}

#[test]
fn a_half_sent_request_is_disconnected_after_the_header_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let timeout = Duration::from_secs(1);
    let run = finished_run(dir.path(), timeout);
    let addr = run.http_addr().unwrap();

    let mut socket = std::net::TcpStream::connect(addr).unwrap();
    socket.write_all(b"GET /api/status HTTP/1.1\r\nHost: test\r\n").unwrap();
    let sent = Instant::now();
    // Far longer than the server's timeout: a server without one keeps this read waiting.
    socket.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut answer = Vec::new();
    let closed = match socket.read_to_end(&mut answer) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    let waited = sent.elapsed();
    assert!(closed, "the server kept the half-sent request's connection open for {waited:?}");
    assert!(waited >= timeout - Duration::from_millis(100), "closed after {waited:?}, before the timeout");
    assert!(waited < timeout * 5, "closed only after {waited:?}");
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains("200 OK"), "a half-sent request got an answer: {answer}");
    assert_eq!(http_get(addr, "/healthz").0, 200, "the server still serves whole requests");
    run.join().unwrap();
}

/// The binary's resident memory, from `/proc`.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A flood of 10,000 connections that each send one byte and wait: the server holds at most
/// `MAX_CONNECTIONS` of them and closes the rest at once, so its memory stays near where it
/// was, during the flood and after, and it serves whole requests again as soon as it ends.
#[test]
fn a_flood_of_half_open_connections_is_capped_and_memory_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_loopback_addr();
    let out = dir.path().join("out").display().to_string();
    let addr_arg = addr.to_string();
    #[rustfmt::skip]
    let mut child = bin()
        .args(["run", "--rate", "10", "--seed", "1", "--output", &out, "--http", &addr_arg])
        .stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    wait_for("the server", Duration::from_secs(30), || try_http_get(addr, "/healthz", &[]).is_ok());
    let before = rss_kib(child.id());
    let mut flood = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            let _ = s.write_all(b"G");
            flood.push(s);
        }
    }
    // A connection the server holds has nothing to read yet; one it closed reads its end.
    // Those still in the listen queue count as held until the server takes them in.
    let held = |flood: &mut Vec<std::net::TcpStream>| {
        flood.retain_mut(|s| {
            s.set_nonblocking(true).unwrap();
            matches!(s.read(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        });
        flood.len()
    };
    let capped = poll_until(Duration::from_secs(30), || held(&mut flood) <= pageviews::http::MAX_CONNECTIONS);
    let during = rss_kib(child.id());
    let open = flood.len();
    drop(flood);
    assert!(capped, "{open} connections held open, more than the cap");
    wait_for("whole requests served again", Duration::from_secs(30), || {
        try_http_get(addr, "/healthz", &[]).is_ok_and(|(code, _)| code == 200)
    });
    let after = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    eprintln!("RSS {before} KiB before the flood, {during} during, {after} after");
    assert!(during < before + 30 * 1024, "RSS {before} KiB before the flood, {during} KiB during it");
    assert!(after < before + 30 * 1024, "RSS {before} KiB before the flood, {after} KiB after it");
}

#[test]
fn a_metrics_handle_made_for_another_pipeline_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), "in.jsonl", &[view(1, "SW1A 1AA", "2020-01-01 00:00:00")]);
    let mut config =
        PipelineConfig::new(SourceConfig::Files(vec![input]), dir.path().join("out").display().to_string());
    config.pipeline_id = "eu-1".into();
    let err = pageviews::start(config, Shutdown::default(), Arc::new(Metrics::new("pageviews"))).err();
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("\"pageviews\"") && msg.contains("\"eu-1\""), "{msg}");
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
    let generator =
        GeneratorConfig { rate: 1000, count: None, max_late_ms: 0, seed: 1, start_ms, interval_us: None };
    let clock = Arc::new(ManualClock::new(start_ms));
    let mut config =
        PipelineConfig::new(SourceConfig::Generator(generator.into()), dir.path().display().to_string());
    config.files.roll_age = Duration::from_secs(60);
    config.clock = clock.clone();
    let metrics = Arc::new(Metrics::new("generator"));
    let sql = "pageviews_freshness_seconds{pipeline=\"generator\",reader=\"sql\"}";
    let folders = "pageviews_freshness_seconds{pipeline=\"generator\",reader=\"folders\"}";

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
