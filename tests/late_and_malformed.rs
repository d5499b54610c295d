//! Late events and bad input: nothing is lost, nothing stops the pipeline.

mod common;

use common::*;
use pageviews_testkit::event_time;

#[test]
fn late_events_go_to_both_page_views_and_late_page_views_and_never_change_a_count() {
    let dir = tempfile::tempdir().unwrap();
    // The original example grouped by postcode: once SW1A 1AA reaches 00:01:53 the watermark
    // (00:01:48) has closed the first window, so W1J 7NT's 00:00:03 and 00:00:08 are late.
    let lines = original_example_grouped_lines();
    let input = write_input(dir.path(), "grouped.jsonl", &lines);
    let out = dir.path().join("out");
    let summary = run_files(&[input], &out, |_| {});
    assert_eq!(summary.totals.late_page_views, 2);

    let mut late: Vec<String> = rows(&out, "late_page_views")
        .iter()
        .map(|r| format!("{} {} wm={}", r.value["postcode"], r.value["timestamp"], r.value["watermark"]))
        .collect();
    late.sort();
    assert_eq!(
        late,
        vec![
            r#""W1J 7NT" "2020-01-01 00:00:03.000" wm="2020-01-01 00:01:48.000""#,
            r#""W1J 7NT" "2020-01-01 00:00:08.000" wm="2020-01-01 00:01:48.000""#,
        ]
    );
    assert_eq!(rows(&out, "page_views").len(), 10, "late events are valid events too");
    assert_eq!(
        aggregate_lines(&out),
        vec![
            r#""SW1A 1AA" "2020-01-01 00:01:00.000" 3"#,
            r#""SW1A 1AA" "2020-01-01 00:02:00.000" 2"#,
            r#""W1J 7NT" "2020-01-01 00:02:00.000" 3"#,
        ],
        "no row for W1J 7NT's first window: it closed before its events arrived"
    );
    assert_verified(&out);
}

#[test]
fn a_larger_watermark_delay_lets_the_same_events_count() {
    let dir = tempfile::tempdir().unwrap();
    let lines = vec![view(1, "A", "2020-01-01 00:01:53"), view(2, "A", "2020-01-01 00:00:03")];
    let input = write_input(dir.path(), "in.jsonl", &lines);
    let out = dir.path().join("out");
    let summary = run_files(&[input], &out, |c| c.windows.watermark_delay_ms = 120_000);
    assert_eq!(summary.totals.late_page_views, 0);
    assert_eq!(rows(&out, "page_view_aggregates").len(), 2);
}

/// Three files over the same hours, read by two workers at once: worker 1 relays its file's
/// events to worker 0, which counts every window once every file has passed it. An event is
/// late by its own file's watermark alone, so however the two workers interleave, the tables
/// are the reference's.
#[test]
fn two_workers_over_files_of_the_same_hours_count_every_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let gen = pageviews::source::GeneratorConfig {
        rate: 0,
        count: None,
        max_late_ms: 8_000,
        seed: 3,
        start_ms: 1_577_836_800_000,
        interval_us: None,
    };
    // Record i to file i mod 3: every file spans the same hours.
    let mut files = [Vec::new(), Vec::new(), Vec::new()];
    for seq in 0..60_000u64 {
        let bytes = &mut files[(seq % 3) as usize];
        gen.write_record(seq, bytes);
        bytes.push(b'\n');
    }
    let inputs: Vec<String> = files
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let path = dir.path().join(format!("part-{i}.jsonl"));
            std::fs::write(&path, bytes).unwrap();
            path.display().to_string()
        })
        .collect();
    let out = dir.path().join("out");
    let mut config =
        pageviews::PipelineConfig::new(pageviews::SourceConfig::Files(inputs), out.display().to_string());
    config.workers = 2;
    let metrics = std::sync::Arc::new(pageviews::metrics::Metrics::new(&config.pipeline_id));
    let summary =
        pageviews::start(config, pageviews::Shutdown::default(), metrics.clone()).unwrap().join().unwrap();
    assert!(summary.reached_end);
    assert_eq!(summary.totals.page_views, 60_000);
    assert!(summary.totals.late_page_views > 0, "the input must exercise late events");
    // Files 0 and 2 in worker 0, file 1 in worker 1.
    let members: Vec<String> = holders(&out).into_values().collect();
    assert_eq!(members, ["0-w0", "0-w1", "0-w0"]);
    // Each file's events are judged by that file's own watermark, counted once all files
    // passed their windows: the reference, whichever worker was ahead.
    let files: Vec<Vec<Vec<u8>>> =
        files.iter().map(|bytes| bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect()).collect();
    let want = event_time::per_partition(files.iter().map(Vec::as_slice), event_time::Rules::default());
    let got = event_time::outcome_of(&out);
    assert!(got == want, "differs from the reference\n{}", got.diff(&want));
    let late = got.late.len() as u64;
    assert_eq!(
        metrics.late_events.get(),
        late,
        "late events counted where they were relayed to count in the metric"
    );
    assert_verified(&out);
}

#[test]
fn every_malformation_becomes_a_dead_letter_with_its_reason_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let good = view(7, "SW1A 1AA", "2020-01-01 00:00:05");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("invalid_json", b"{\"user_id\": 1,".to_vec()),
        ("invalid_utf8", b"{\"user_id\": 1, \"postcode\": \"\xff\"}".to_vec()),
        ("not_an_object", b"[1, 2, 3]".to_vec()),
        ("missing_field", br#"{"user_id": 1, "postcode": "A", "webpage": "w"}"#.to_vec()),
        ("wrong_type", br#"{"user_id": "one", "postcode": "A", "webpage": "w", "timestamp": 0}"#.to_vec()),
        (
            "bad_timestamp",
            br#"{"user_id": 1, "postcode": "A", "webpage": "w", "timestamp": "2020-02-30 00:00:00"}"#
                .to_vec(),
        ),
        ("oversized", format!(r#"{{"user_id": 1, "pad": "{}"}}"#, "x".repeat(3000)).into_bytes()),
    ];
    let mut bytes = Vec::new();
    for (_, bad) in &cases {
        bytes.extend_from_slice(good.as_bytes());
        bytes.push(b'\n');
        bytes.extend_from_slice(bad);
        bytes.push(b'\n');
    }
    let path = dir.path().join("mixed.jsonl");
    std::fs::write(&path, &bytes).unwrap();
    let out = dir.path().join("out");
    let summary = run_files(&[path.display().to_string()], &out, |c| c.max_record_bytes = 1024);

    assert_eq!(summary.totals.records_read, 14);
    assert_eq!(summary.totals.page_views, 7);
    assert_eq!(summary.totals.dead_letters, 7);
    let dead = rows(&out, "dead_letters");
    assert_eq!(dead.len(), 7);
    for (i, (reason, bad)) in cases.iter().enumerate() {
        let line = 2 * i as u64 + 2;
        let row = dead
            .iter()
            .find(|r| r.value["offset"].as_u64() == Some(line))
            .unwrap_or_else(|| panic!("no dead letter for line {line}"));
        assert_eq!(row.value["reason"], *reason, "line {line}: {}", row.value);
        assert_eq!(row.value["source"], path.display().to_string());
        assert!(!row.value["error"].as_str().unwrap().is_empty());
        if *reason == "invalid_utf8" {
            assert_eq!(row.value["payload_encoding"], "base64");
        } else if *reason == "oversized" {
            assert_eq!(row.value["payload"].as_str().unwrap().len(), 1024, "cut at the limit");
        } else {
            assert_eq!(row.value["payload"].as_str().unwrap().as_bytes(), bad.as_slice(), "payload verbatim");
        }
    }
    let report = assert_verified(&out);
    assert_eq!(report.dead_letters_by_reason.len(), 7);
}

/// A UTF-8 byte order mark at the start of a file (some editors save one) is not part of its
/// first record: Jackson, and so Flink's JSON format, skips it.
#[test]
fn a_byte_order_mark_at_the_start_of_an_input_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> =
        (1..=3).map(|u| view(u, "SW1A 1AA", &format!("2020-01-01 00:00:0{u}"))).collect();
    let path = dir.path().join("bom.jsonl");
    std::fs::write(&path, format!("\u{feff}{}\n", lines.join("\n"))).unwrap();
    let out = dir.path().join("out");
    let o = bin()
        .args(["run", "--http", "off", "--input"])
        .arg(&path)
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut users: Vec<i64> =
        rows(&out, "page_views").iter().map(|r| r.value["user_id"].as_i64().expect("a user id")).collect();
    users.sort_unstable();
    assert_eq!(users, [1, 2, 3], "every record is a page view, the first one too");
    assert!(rows(&out, "dead_letters").is_empty());
    assert_verified(&out);
}
