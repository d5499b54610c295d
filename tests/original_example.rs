//! The original Flink job's own example: ten events on 2020-01-01 give known counts.

mod common;

use common::*;

#[test]
fn the_originals_ten_events_give_its_counts_in_hour_zero() {
    let dir = tempfile::tempdir().unwrap();
    // The two postcodes' events interleaved, as they arrive from a topic keyed by postcode.
    // (Read grouped, one after the other, W1J 7NT's first two would be late: see
    // `late_page_views.rs`.)
    let lines = original_example_lines();
    let input = write_input(dir.path(), "example.jsonl", &lines);
    let out = dir.path().join("out");
    let summary = run_files(&[input], &out, |_| {});
    assert!(summary.reached_end);

    let mut aggs: Vec<(String, String, String, u64)> = rows(&out, "page_view_aggregates")
        .into_iter()
        .map(|r| {
            let v = &r.value;
            assert_eq!(r.partition, "day=2020-01-01/hour=00");
            (
                v["postcode"].as_str().unwrap().to_string(),
                v["window_start"].as_str().unwrap().to_string(),
                v["window"].as_str().unwrap().to_string(),
                v["views"].as_u64().unwrap(),
            )
        })
        .collect();
    aggs.sort();
    let want = |p: &str, s: &str, e: &str, n| {
        (p.to_string(), format!("2020-01-01 {s}.000"), format!("2020-01-01 {e}.000"), n)
    };
    assert_eq!(
        aggs,
        vec![
            want("SW1A 1AA", "00:00:00", "00:01:00", 3),
            want("SW1A 1AA", "00:01:00", "00:02:00", 2),
            want("W1J 7NT", "00:00:00", "00:01:00", 2),
            want("W1J 7NT", "00:01:00", "00:02:00", 3),
        ]
    );

    let views = rows(&out, "page_views");
    assert_eq!(views.len(), 10, "the pass-through keeps all ten");
    for r in &views {
        assert_eq!(r.partition, "day=2020-01-01/hour=00");
        let ts = r.value["timestamp"].as_str().unwrap();
        assert!(ts.starts_with("2020-01-01 00:0") && ts.ends_with(".000"), "{ts}");
    }
    let mut users: Vec<i64> = views.iter().map(|r| r.value["user_id"].as_i64().unwrap()).collect();
    users.sort();
    assert_eq!(users, (0..10).collect::<Vec<_>>());
    assert!(rows(&out, "late_page_views").is_empty());
    assert!(rows(&out, "dead_letters").is_empty());
    assert_verified(&out);
}

#[test]
fn partitions_follow_utc_across_midnight_and_the_new_year() {
    let dir = tempfile::tempdir().unwrap();
    let lines = vec![
        view(1, "A", "2019-12-31 23:59:59.999"),
        view(2, "A", "2020-01-01T00:00:00Z"),
        view(3, "A", "2020-01-01T00:30:00+01:00"),
        view(4, "A", "2020-03-29T01:30:00+01:00"),
    ];
    let input = write_input(dir.path(), "edges.jsonl", &lines);
    let out = dir.path().join("out");
    run_files(&[input], &out, |_| {});
    let mut got: Vec<(i64, String)> = rows(&out, "page_views")
        .into_iter()
        .map(|r| (r.value["user_id"].as_i64().unwrap(), r.partition))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (1, "day=2019-12-31/hour=23".to_string()),
            (2, "day=2020-01-01/hour=00".to_string()),
            (3, "day=2019-12-31/hour=23".to_string()),
            (4, "day=2020-03-29/hour=00".to_string()),
        ]
    );
    // The window ending at midnight lands in the new day's hour 00 (its end's hour).
    let aggs = rows(&out, "page_view_aggregates");
    let first =
        aggs.iter().find(|r| r.value["window"] == "2020-01-01 00:00:00.000").expect("window at midnight");
    assert_eq!(first.partition, "day=2020-01-01/hour=00");
    assert_eq!(first.value["views"], 1);
    // 00:30+01:00 is 23:30 UTC, behind the watermark (00:00:00 − 5 s): late, in hour 23.
    let late = rows(&out, "late_page_views");
    assert_eq!(late.len(), 1);
    assert_eq!(
        (late[0].value["user_id"].as_i64(), late[0].partition.as_str()),
        (Some(3), "day=2019-12-31/hour=23")
    );
    assert_eq!(late[0].value["watermark"], "2019-12-31 23:59:55.000");
    assert_verified(&out);
}

#[test]
fn stdin_is_read_like_a_file() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out_s = out.display().to_string();
    let mut child = bin()
        .args(["run", "--input", "-", "--output", &out_s, "--http", "off"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for line in original_example_lines() {
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
    let mut views: Vec<u64> =
        rows(&out, "page_view_aggregates").iter().map(|r| r.value["views"].as_u64().unwrap()).collect();
    views.sort();
    assert_eq!(views, vec![2, 2, 3, 3]);
    assert_eq!(rows(&out, "page_views").len(), 10);
}
