//! Two `pageviews run` processes of one pipeline on one local output: a second run of the
//! same instance is refused while the first lives, naming it; a run of another instance
//! takes the partitions over, and the run it replaced says so and exits non-zero.

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;

/// An unbounded, paced generator run into `out`, committing every 200 ms.
fn spawn_first(out: &Path, instance: &str, log: &tempfile::NamedTempFile) -> Child {
    bin()
        .args([
            "run",
            "--http",
            "off",
            "--rate",
            "500",
            "--checkpoint-interval",
            "200ms",
            "--instance-id",
            instance,
        ])
        .args(["--seed", "4", "--start-time", "2020-01-01 00:10:00", "--output"])
        .arg(out)
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap()
}

fn second(out: &Path, instance: &str) -> std::process::Output {
    bin()
        .args([
            "run",
            "--http",
            "off",
            "--rate",
            "0",
            "--count",
            "20000",
            "--instance-id",
            instance,
            "--output",
        ])
        .arg(out)
        .output()
        .unwrap()
}

fn interrupt(child: &Child) {
    let sent = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
}

#[test]
fn a_second_run_of_the_same_instance_is_refused_while_the_first_runs_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut first = spawn_first(&out, "0", &log);
    wait_for("the first run's commits", Duration::from_secs(60), || commit_count(&out) >= 2);

    let refused = second(&out, "0");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "the second run was let in:\n{stderr}");
    let named = format!(
        "instance 0 of pipeline generator already runs on this output (process {}, since",
        first.id()
    );
    assert!(stderr.contains(&named), "the refusal names the first run:\n{stderr}");

    let before = commit_count(&out);
    wait_for("the first run commits on", Duration::from_secs(60), || commit_count(&out) > before);
    assert!(first.try_wait().unwrap().is_none(), "the first run runs on");
    interrupt(&first);
    let status = first.wait().unwrap();
    assert!(status.success(), "{}", std::fs::read_to_string(log.path()).unwrap());
    assert_verified(&out);
    // A killed run holds nothing: the same instance starts again at once.
    let mut killed = spawn_first(&out, "0", &log);
    let before = commit_count(&out);
    wait_for("the restarted run's commits", Duration::from_secs(60), || commit_count(&out) > before);
    killed.kill().unwrap();
    killed.wait().unwrap();
    let again = second(&out, "0");
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_verified(&out);
}

#[test]
fn a_run_taken_over_by_another_instance_says_it_was_replaced_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut first = spawn_first(&out, "a", &log);
    wait_for("the first run's commits", Duration::from_secs(60), || commit_count(&out) >= 2);

    let took_over = second(&out, "b");
    assert!(took_over.status.success(), "{}", String::from_utf8_lossy(&took_over.stderr));
    let stopped = poll_until(Duration::from_secs(60), || first.try_wait().unwrap().is_some());
    let first_log = std::fs::read_to_string(log.path()).unwrap();
    assert!(stopped, "the replaced run went on:\n{first_log}");
    assert!(!first.wait().unwrap().success(), "the replaced run exited 0:\n{first_log}");
    assert!(
        first_log.contains("this run of pipeline generator was replaced: instance b (run "),
        "the replaced run says by whom:\n{first_log}"
    );
    assert!(!first_log.contains("everything read committed"), "{first_log}");
    let report = assert_verified(&out);
    assert_eq!(report.rows.get("page_views"), Some(&20_000), "{report}");
}
