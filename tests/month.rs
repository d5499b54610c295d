//! A month in minutes, the short version of `scripts/month` (issue: runs for months): 30 days
//! of event time at one event per 10 s, through the real binary, killed -9 on the first and
//! the last day. Every hour gets `_SUCCESS`, `verify` is clean, and what lies under
//! `_checkpoints` does not grow with the days.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

#[test]
fn thirty_days_of_event_time_with_kills_complete_every_hour_and_keep_checkpoints_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let summary_path = dir.path().join("summary.json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/month");
    let out = dir.path().join("out");
    let status = Command::new("python3")
        .arg(&script)
        .args(["--bin", env!("CARGO_BIN_EXE_pageviews"), "--days", "30", "--interval", "10s"])
        .args(["--rate", "20000", "--kills", "2", "--checkpoint-interval", "100ms"])
        .arg("--out")
        .arg(&out)
        .arg("--json")
        .arg(&summary_path)
        .status()
        .expect("python3 runs scripts/month");
    assert!(status.success(), "scripts/month failed; its log is in {}", out.join("month.log").display());
    let text = std::fs::read_to_string(&summary_path).unwrap();
    let summary: serde_json::Value = serde_json::from_str(&text).unwrap();

    assert_eq!(summary["kills"], 2, "{text}");
    assert_eq!(summary["hours"], 720, "{text}");
    for table in ["page_views", "page_view_aggregates"] {
        assert_eq!(summary["hours_with_success"][table], 720, "{table}: {text}");
    }
    assert_eq!(summary["verify_ok"], true, "{text}");
    // Bounded checkpoints: without pruning, the log alone would hold one file per checkpoint
    // (about 105 here on an idle machine, fewer on a busy one, whose checkpoints take longer);
    // it prunes behind its snapshots and merges its index, so no day sees more than a few
    // dozen files, the last no more than the others.
    let days = summary["per_day"].as_array().unwrap();
    let checkpoints: u64 = days.iter().map(|d| d["checkpoints"].as_u64().unwrap()).sum();
    assert!(checkpoints > 64, "enough checkpoints to show growth past 48 if there were any: {text}");
    let most = days.iter().map(|d| d["checkpoint_files"].as_u64().unwrap()).max().unwrap();
    assert!(most <= 48, "{most} files under _checkpoints on some day: {text}");
    assert!(summary["final_checkpoint_files"].as_u64().unwrap() <= 48, "{text}");

    // An hour completed hundreds of checkpoints ago whose marker is gone would make batch
    // jobs wait forever, and no recovery writes it again: verify names it.
    let first_marker =
        files(&out.join("page_views")).into_iter().filter(|p| p.ends_with("_SUCCESS")).min().unwrap();
    std::fs::remove_file(&first_marker).unwrap();
    let first_hour = first_marker.parent().unwrap().strip_prefix(&out).unwrap().display().to_string();
    let verify = bin().args(["verify", "--output"]).arg(&out).output().unwrap();
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("{first_hour} is complete in the log of"))
            && stdout.contains("no _SUCCESS marker"),
        "{stdout}"
    );
}
