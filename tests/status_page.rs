//! The status page at `/`, rendered by a real browser (headless Chromium): after a run has
//! finished (so nothing moves), every number it shows equals what `/api/status` reports,
//! and `/api/status` itself agrees with what the run read — also when several workers share
//! it.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pageviews::metrics::Metrics;
use pageviews::{PipelineConfig, Shutdown, SourceConfig};
use pageviews_testkit::browser::{data_values, dump_dom};
use pageviews_testkit::kafka::{broker, create_topic, end_offsets, generator, kafka_config, produce, unique};
use serde_json::Value;

/// How the page writes a count: with thousands separators.
fn shown(n: &Value) -> String {
    let digits = n.as_u64().map(|n| n.to_string()).unwrap_or_else(|| panic!("{n} is not a count"));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[test]
fn the_status_page_in_a_browser_shows_what_the_status_api_reports() {
    let dir = tempfile::tempdir().unwrap();
    // Two inputs, so two source partitions. Events over five minutes of event time, one of
    // them late, and four records that are no page views.
    let base = pageviews::core::time::parse_timestamp("2020-01-01 00:00:00").unwrap();
    let postcodes = ["SW1A 1AA", "W1J 7NT", "EC1A 1BB"];
    let mut a: Vec<String> =
        (0..1500).map(|i| view_at(i, postcodes[i as usize % 3], base + i * 100)).collect();
    a.push(view(7, "SW1A 1AA", "2020-01-01 00:00:01"));
    a.extend(["not json".to_string(), "{\"user_id\": ".to_string()]);
    a.push(r#"{"user_id": "x", "postcode": "A", "webpage": "w", "timestamp": "2020-01-01 00:00:00"}"#.into());
    let mut b: Vec<String> =
        (0..600).map(|i| view_at(i, postcodes[i as usize % 3], base + 150_000 + i * 250)).collect();
    b.push(r#"{"user_id": 1}"#.into());
    let inputs = vec![write_input(dir.path(), "a.jsonl", &a), write_input(dir.path(), "b.jsonl", &b)];
    let mut config =
        PipelineConfig::new(SourceConfig::Files(inputs), dir.path().join("out").display().to_string());
    config.pipeline_id = "page-test".into();
    config.http.addr = Some("127.0.0.1:0".parse().unwrap());
    let run_metrics = Arc::new(Metrics::new(&config.pipeline_id));
    let run = pageviews::start(config, Shutdown::default(), run_metrics).unwrap();
    let addr = run.http_addr().unwrap();
    // The run ends; its HTTP endpoint stays up until the handle is joined.
    wait_for("the run to end", Duration::from_secs(60), || run.is_finished());

    let (code, body) = http_get(addr, "/api/status");
    assert_eq!(code, 200);
    let st: Value = serde_json::from_str(&body).unwrap();
    let (code, page) = http_get(addr, "/");
    assert_eq!(code, 200);
    assert!(page.contains("<title>pageviews</title>") && !page.contains("src=\"http"), "self-contained page");

    // /api/status agrees with the run.
    assert_eq!(st["state"], "stopped");
    assert_eq!(st["totals"]["records_read"], (a.len() + b.len()) as u64);
    assert_eq!(st["totals"]["late_page_views"], 1);
    let reasons = &st["dead_letters_by_reason"];
    assert_eq!((reasons["invalid_json"].as_u64(), reasons["wrong_type"].as_u64()), (Some(2), Some(1)));
    assert_eq!((reasons["missing_field"].as_u64(), reasons["oversized"].as_u64()), (Some(1), Some(0)));
    let partitions = st["partitions"].as_array().unwrap();
    let read: Vec<(u64, u64)> = partitions
        .iter()
        .map(|p| (p["partition"].as_u64().unwrap(), p["records_read"].as_u64().unwrap()))
        .collect();
    assert_eq!(read, [(0, a.len() as u64), (1, b.len() as u64)]);
    assert!(partitions.iter().all(|p| p["finished"] == true && p["watermark"].is_string()));
    assert!(partitions.iter().all(|p| p["member"] == "0" && p["claim"] == 1), "one worker holds both: {st}");
    // Files have one counting partition, hosted by partition 0: it sets the watermark.
    assert_eq!(partitions[0]["counting_watermark"], st["watermark"]);
    assert!(partitions[1]["counting_watermark"].is_null());
    let tables = st["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 4);
    for t in tables {
        assert_eq!(t["rows"], st["totals"][t["table"].as_str().unwrap()], "{t}");
        assert_eq!(t["open_files"], 0, "a finished run closed every file: {t}");
    }
    assert!(!st["checkpoints"].as_array().unwrap().is_empty());

    // The page, rendered by Chromium, shows the same.
    let dom = dump_dom(&format!("http://{addr}/"), Duration::from_secs(5));
    assert!(dom.contains("data-loaded=\"true\""), "the page never rendered /api/status:\n{dom}");
    let mut on_page: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, text) in data_values(&dom) {
        on_page.entry(key).or_default().push(text);
    }
    let one = |key: &str| -> String {
        match on_page.get(key).map(Vec::as_slice) {
            Some([text]) => text.clone(),
            other => panic!("the page shows {other:?} for {key}"),
        }
    };
    assert_eq!(one("pipeline"), "page-test");
    assert_eq!(one("state"), "stopped");
    assert_eq!(one("health"), "healthy");
    assert_eq!(one("watermark"), st["watermark"].as_str().unwrap());
    assert_eq!(one("last_checkpoint"), st["last_checkpoint"].to_string());
    for total in ["records_read", "page_views", "late_page_views", "dead_letters"] {
        assert_eq!(one(&format!("totals.{total}")), shown(&st["totals"][total]), "totals.{total}");
    }
    for t in tables {
        let name = t["table"].as_str().unwrap();
        for field in ["rows", "open_files", "files_committed"] {
            assert_eq!(one(&format!("table.{name}.{field}")), shown(&t[field]), "{name} {field}");
        }
    }
    for (reason, n) in reasons.as_object().unwrap() {
        assert_eq!(one(&format!("reason.{reason}")), shown(n), "dead letters {reason}");
    }
    for p in partitions {
        let k = format!("partition.{}", p["partition"]);
        assert_eq!(one(&format!("{k}.records_read")), shown(&p["records_read"]));
        assert_eq!(one(&format!("{k}.position")), shown(&p["position"]));
        assert_eq!(one(&format!("{k}.watermark")), p["watermark"].as_str().unwrap());
        assert_eq!(one(&format!("{k}.kafka_lag")), "–", "no lag for files");
        assert_eq!(
            one(&format!("{k}.member")),
            format!("{} · claim {}", p["member"].as_str().unwrap(), p["claim"])
        );
        let counting = p["counting_watermark"].as_str().unwrap_or("–");
        assert_eq!(one(&format!("{k}.counting_watermark")), counting);
    }
    let versions: Vec<String> =
        st["checkpoints"].as_array().unwrap().iter().map(|c| format!("#{}", c["version"])).collect();
    assert_eq!(on_page.get("checkpoint.version"), Some(&versions));
    for c in st["checkpoints"].as_array().unwrap() {
        assert_eq!(one(&format!("checkpoint.{}.rows", c["version"])), shown(&c["rows"]));
    }
    run.join().unwrap();
}

/// Two workers share one status: each reports the partitions it holds under its own member
/// name, and neither's updates erase the other's partitions or checkpoints.
#[test]
fn with_two_workers_the_status_shows_every_partition_under_its_holder() {
    let dir = tempfile::tempdir().unwrap();
    let (topic, group) = (unique("status-workers"), unique("group"));
    create_topic(&topic, 4);
    let stream = generator(17, "2020-01-01 00:00:00", 20_000);
    produce(&topic, stream, 0.0);
    let mut config = kafka_config(&topic, &group, &dir.path().join("out"), false);
    config.instance_id = "i".into();
    config.workers = 2;
    config.http.addr = Some("127.0.0.1:0".parse().unwrap());
    let run_metrics = Arc::new(Metrics::new(&config.pipeline_id));
    let run = pageviews::start(config, Shutdown::default(), run_metrics).unwrap();
    let addr = run.http_addr().unwrap();
    let status = || -> Value { serde_json::from_str(&http_get(addr, "/api/status").1).unwrap() };
    let members = |st: &Value| -> BTreeMap<u64, String> {
        let partitions = st["partitions"].as_array().unwrap();
        partitions.iter().map(|p| (p["partition"].as_u64().unwrap(), p["member"].to_string())).collect()
    };
    // The group settles on two partitions each; every record is committed by then.
    wait_for("both workers to hold and commit two partitions each", Duration::from_secs(120), || {
        let st = status();
        let held = members(&st);
        let w0 = held.values().filter(|m| *m == "\"i-w0\"").count();
        let w1 = held.values().filter(|m| *m == "\"i-w1\"").count();
        held.len() == 4 && w0 == 2 && w1 == 2 && st["totals"]["records_read"] == 20_000
    });
    let st = status();
    assert_eq!((st["instance"].as_str(), st["workers"].as_u64()), (Some("i"), Some(2)));
    run.shutdown().trigger();
    wait_for("the run to stop", Duration::from_secs(60), || run.is_finished());
    // After the final checkpoints, each partition's position is its end offset.
    let st = status();
    let ends = end_offsets(broker(), &topic, 4);
    for p in st["partitions"].as_array().unwrap() {
        let partition = p["partition"].as_u64().unwrap() as i32;
        assert_eq!(p["position"].as_i64(), ends.get(&partition).copied(), "partition {partition}: {p}");
    }
    assert_eq!(st["state"], "stopped");
    // Each worker's final checkpoint (it closes its files) is among the newest ten: a worker
    // that overwrote the list would leave only its own.
    let by: std::collections::BTreeSet<&str> =
        st["checkpoints"].as_array().unwrap().iter().map(|c| c["member"].as_str().unwrap()).collect();
    assert_eq!(by, ["i-w0", "i-w1"].into(), "both workers' commits are listed");
    let versions: Vec<u64> =
        st["checkpoints"].as_array().unwrap().iter().map(|c| c["version"].as_u64().unwrap()).collect();
    assert!(versions.windows(2).all(|w| w[0] > w[1]), "newest first: {versions:?}");
    assert_eq!(st["last_checkpoint"].as_u64(), versions.first().copied());
    run.join().unwrap();
}

#[test]
fn the_screenshot_script_renders_the_page_of_a_kafka_run() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("status.png");
    // The suite's broker (the script leaves a running broker running, and stops one it
    // started itself). The script fails unless the page rendered /api/status before the
    // screenshot.
    pageviews_testkit::kafka::broker();
    let status = std::process::Command::new(workspace().join("scripts/screenshot-status"))
        .arg(&png)
        .env("PAGEVIEWS_BIN", env!("CARGO_BIN_EXE_pageviews"))
        .status()
        .expect("run scripts/screenshot-status");
    assert!(status.success(), "scripts/screenshot-status failed: {status}");
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!((be(16), be(20)), (1280, 1060), "IHDR width and height");
}
