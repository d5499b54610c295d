//! Log output: plain text without ANSI codes when stderr is not a terminal (files, pipes,
//! journald), colour on a terminal, and JSON lines for log shippers with --log-format json or
//! PAGEVIEWS_LOG_FORMAT=json, on every subcommand.

mod common;

use common::*;

const ESC: &str = "\u{1b}[";

fn run_stderr(cmd: &mut std::process::Command) -> String {
    let o = cmd.output().expect("run pageviews");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn text_logs_carry_no_ansi_codes_unless_stderr_is_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let stderr = run_stderr(
        bin().args(["run", "--count", "50", "--rate", "0", "--http", "off", "--output"]).arg(&out),
    );
    assert!(stderr.contains("INFO") && stderr.contains("stopped with everything read committed"), "{stderr}");
    assert!(!stderr.contains(ESC), "escape codes in piped logs: {stderr:?}");

    // Under a pseudo-terminal (util-linux `script`), the same run is coloured.
    let exe = env!("CARGO_BIN_EXE_pageviews");
    let cmd =
        format!("{exe} run --count 50 --rate 0 --http off --output {}", dir.path().join("tty").display());
    let o =
        std::process::Command::new("script").args(["-qec", &cmd, "/dev/null"]).output().expect("run script");
    let tty = String::from_utf8_lossy(&o.stdout);
    assert!(tty.contains(ESC), "no colour on a terminal: {tty:?}");
}

/// Every line of `stderr` is a JSON object with a level and a message.
fn assert_json_lines(stderr: &str) -> Vec<serde_json::Value> {
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(!lines.is_empty(), "no log lines");
    for v in &lines {
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string() && v["timestamp"].is_string(),
            "{v}"
        );
    }
    lines
}

#[test]
fn log_format_json_writes_one_object_per_line_for_every_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // The flag after the subcommand…
    let stderr = run_stderr(
        bin()
            .args([
                "run",
                "--log-format",
                "json",
                "--count",
                "50",
                "--rate",
                "0",
                "--http",
                "off",
                "--output",
            ])
            .arg(&out),
    );
    let lines = assert_json_lines(&stderr);
    assert!(
        lines.iter().any(|v| v["fields"]["message"] == "stopped with everything read committed"),
        "{stderr}"
    );

    // …before it, and from the environment; an error ends the run as a JSON line too.
    let stderr = run_stderr(bin().args(["--log-format", "json", "run", "--http", "nowhere"]));
    let lines = assert_json_lines(&stderr);
    assert!(
        lines
            .iter()
            .any(|v| v["level"] == "ERROR"
                && v["fields"]["error"].as_str().is_some_and(|e| e.contains("--http"))),
        "{stderr}"
    );
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a folder").unwrap();
    let stderr = run_stderr(
        bin().env("PAGEVIEWS_LOG_FORMAT", "json").args(["verify", "--output"]).arg(file.join("x")),
    );
    let lines = assert_json_lines(&stderr);
    assert!(lines.iter().any(|v| v["level"] == "ERROR"), "{stderr}");
}
