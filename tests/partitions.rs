//! Partition completion: once the watermark passes the end of an hour, that hour's files
//! close (they are visible without waiting for --roll-age) and its folders get `_SUCCESS`,
//! while the next hour stays open.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

#[test]
fn an_hour_gets_success_markers_and_visible_files_once_the_watermark_passes_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let out_arg = out.display().to_string();
    // 1000 events/s of event time in real time from 00:59:58 (no jitter), a 1 s watermark
    // delay: hour 00 is complete about 3 s in, hour 01 only when the 20 s run ends.
    let mut child = bin()
        .args(["run", "--output", &out_arg, "--http", "off", "--seed", "2", "--rate", "1000"])
        .args(["--count", "20000", "--max-late-ms", "0", "--start-time", "2020-01-01 00:59:58"])
        .args(["--watermark-delay", "1s", "--checkpoint-interval", "500ms", "--format", "parquet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let hour0 = "day=2020-01-01/hour=00";
    let marker = out.join("page_views").join(hour0).join("_SUCCESS");
    wait_for("hour 00's _SUCCESS", Duration::from_secs(30), || marker.exists());
    assert!(child.try_wait().unwrap().is_none(), "the marker came while the run goes on");
    assert!(!out.join("page_views/day=2020-01-01/hour=01/_SUCCESS").exists(), "hour 01 is not complete");
    let rows_hour0 = rows(&out, "page_views").iter().filter(|r| r.partition == hour0).count();
    assert_eq!(rows_hour0, 2_000, "every row of hour 00 is visible with its marker");

    assert!(child.wait().unwrap().success());
    assert!(out.join("page_views/day=2020-01-01/hour=01/_SUCCESS").exists(), "the end completes every hour");
    let report = assert_verified(&out);
    assert_eq!(report.rows.get("page_views"), Some(&20_000), "{report}");
}
