//! Inputs are identified, never assumed: a file or stdin continues its committed position
//! only when its content begins with the bytes committed from it. New data on stdin, or a
//! file rewritten under the same name, is read from its start as a new source partition; an
//! appended file continues where it stopped. Every record lands exactly once in page_views or
//! dead_letters, and a run that cannot tell which it is refuses, naming the flag that decides.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::*;
use pageviews::core::commit::Position;

/// 2020-01-01 00:00:00 UTC.
const T0: i64 = 1_577_836_800_000;

/// `n` page views of users `first..first + n`, a second apart from `at_s` seconds past `T0`.
fn views(first: i64, n: i64, at_s: i64) -> Vec<String> {
    (0..n).map(|i| view_at(first + i, "SW1A 1AA", T0 + (at_s + i) * 1000)).collect()
}

fn text(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn run(out: &Path, inputs: &[&str], extra: &[&str]) -> Output {
    let mut cmd = bin();
    cmd.args(["run", "--http", "off", "--output"]).arg(out);
    for input in inputs {
        cmd.args(["--input", input]);
    }
    cmd.args(extra).output().expect("run pageviews")
}

/// `pageviews run --input -` with `data` piped to its stdin.
fn run_stdin(out: &Path, data: &str, extra: &[&str]) -> Output {
    let mut child = bin()
        .args(["run", "--http", "off", "--input", "-", "--output"])
        .arg(out)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pageviews");
    let mut stdin = child.stdin.take().expect("its stdin");
    // A run that refuses may exit before it reads: a broken pipe is its answer, not ours.
    let _ = stdin.write_all(data.as_bytes());
    drop(stdin);
    child.wait_with_output().expect("wait for pageviews")
}

fn assert_ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what} failed ({}):\n{}", o.status, String::from_utf8_lossy(&o.stderr));
}

/// Every line of `written` is in the tables exactly once: a page view as a page_views row
/// (told by its user id, unique in these tests), anything else as a dead letter's payload.
fn assert_each_once(out: &Path, written: &[String]) {
    let mut want_users = Vec::new();
    let mut want_dead = Vec::new();
    for line in written {
        match serde_json::from_str::<serde_json::Value>(line).ok().and_then(|v| v["user_id"].as_i64()) {
            Some(user) if line.contains("timestamp") => want_users.push(user),
            _ => want_dead.push(line.clone()),
        }
    }
    let mut got_users: Vec<i64> =
        rows(out, "page_views").iter().map(|r| r.value["user_id"].as_i64().expect("a user id")).collect();
    let mut got_dead: Vec<String> = rows(out, "dead_letters")
        .iter()
        .map(|r| r.value["payload"].as_str().expect("a payload").to_string())
        .collect();
    for v in [&mut want_users, &mut got_users] {
        v.sort_unstable();
    }
    for v in [&mut want_dead, &mut got_dead] {
        v.sort();
    }
    assert_eq!(got_users, want_users, "page_views must hold every page view written, once");
    assert_eq!(got_dead, want_dead, "dead_letters must hold every other line written, once");
    assert_eq!(committed(out).records_read, written.len() as u64, "records read");
    assert_verified(out);
}

/// Source partitions committed under `out`, in order.
fn partitions(out: &Path) -> Vec<u32> {
    positions(out).into_keys().collect()
}

#[test]
fn new_data_piped_to_stdin_is_read_whole_every_time_and_the_same_data_again_adds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let first = views(1, 3, 0);
    let mut second = views(11, 6, 60);
    second[3] = r#"{"user_id": 14, "postcode":"#.to_string();
    let third = views(21, 2, 120);

    let mut written = Vec::new();
    for (n, batch) in [&first, &second, &third].into_iter().enumerate() {
        assert_ok(&run_stdin(&out, &text(batch), &[]), &format!("run {}", n + 1));
        written.extend(batch.iter().cloned());
    }
    assert_each_once(&out, &written);
    assert_eq!(partitions(&out), [0, 1, 2], "each new stream is a source partition of its own");

    // The last stream piped again is the stream committed: nothing of it is read twice.
    assert_ok(&run_stdin(&out, &text(&third), &[]), "the same data again");
    assert_each_once(&out, &written);
}

/// Reading stops midway (kill -9 after a checkpoint); the same stream piped again goes on
/// from the committed position.
#[test]
fn stdin_killed_midway_continues_when_the_same_stream_is_piped_again() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let lines = views(1, 20_000, 0);
    let mut child = bin()
        .args(["run", "--http", "off", "--input", "-", "--checkpoint-interval", "50ms", "--output"])
        .arg(&out)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pageviews");
    // Most of the stream, with the pipe left open: whole batches are read and committed.
    let mut stdin = child.stdin.take().expect("its stdin");
    stdin.write_all(text(&lines[..19_000]).as_bytes()).unwrap();
    stdin.flush().unwrap();
    wait_for("a batch committed", Duration::from_secs(120), || committed(&out).records_read > 0);
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    let before = committed(&out).records_read;
    assert!(before < 20_000, "the kill came after the end");

    assert_ok(&run_stdin(&out, &text(&lines), &[]), "the same stream piped again");
    assert_each_once(&out, &lines);
    assert_eq!(partitions(&out), [0], "the same stream continues its own partition");
}

#[test]
fn a_file_replaced_by_another_is_read_from_its_start_whether_longer_or_shorter() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let path = dir.path().join("events.jsonl");
    let input = path.display().to_string();
    let mut written = Vec::new();
    for (n, batch) in [views(1, 3, 0), views(11, 6, 60), views(21, 2, 120)].into_iter().enumerate() {
        std::fs::write(&path, text(&batch)).unwrap();
        assert_ok(&run(&out, &[&input], &[]), &format!("run {}", n + 1));
        written.extend(batch);
    }
    assert_each_once(&out, &written);
    assert_eq!(partitions(&out), [0, 1, 2]);
}

#[test]
fn a_file_appended_to_continues_exactly_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let path = dir.path().join("events.jsonl");
    let input = path.display().to_string();
    let first = views(1, 3, 0);
    std::fs::write(&path, text(&first)).unwrap();
    assert_ok(&run(&out, &[&input], &[]), "the first run");

    let more = views(11, 4, 60);
    std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(text(&more).as_bytes()).unwrap();
    assert_ok(&run(&out, &[&input], &[]), "the run after the append");
    assert_each_once(&out, &[first, more].concat());
    let size = std::fs::metadata(&path).unwrap().len();
    match positions(&out).get(&0) {
        Some(Position::File { offset, line, .. }) => assert_eq!((*offset, *line), (size, 7)),
        other => panic!("a file position expected, found {other:?}"),
    }
    assert_eq!(partitions(&out), [0], "an appended file is the same stream");
}

/// Two inputs of one pipeline, one appended to and one rewritten, over two workers: each is
/// judged by its own content.
#[test]
fn each_input_is_judged_by_its_own_content_over_two_workers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let inputs = [a.display().to_string(), b.display().to_string()];
    let inputs = [inputs[0].as_str(), inputs[1].as_str()];
    let (a1, b1) = (views(1, 3, 0), views(11, 3, 1));
    std::fs::write(&a, text(&a1)).unwrap();
    std::fs::write(&b, text(&b1)).unwrap();
    assert_ok(&run(&out, &inputs, &["--workers", "2"]), "the first run");

    let (a2, b2) = (views(21, 2, 60), views(31, 8, 61));
    std::fs::OpenOptions::new().append(true).open(&a).unwrap().write_all(text(&a2).as_bytes()).unwrap();
    std::fs::write(&b, text(&b2)).unwrap();
    assert_ok(&run(&out, &inputs, &["--workers", "2"]), "the second run");
    assert_each_once(&out, &[a1, b1, a2, b2].concat());
    assert_eq!(partitions(&out), [0, 1, 2], "b's new content is a partition of its own");
}

/// Removes what a commit log written before inputs were identified lacks: the checksum of
/// each file position's committed prefix, and the input it reads.
fn strip_identity(out: &Path) {
    for file in files(&out.join("_checkpoints/files")) {
        let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&std::fs::read(&file).unwrap()) else {
            continue;
        };
        let mut changed = false;
        if let Some(tasks) = json["tasks"].as_array_mut() {
            for task in tasks {
                if let Some(position) = task["position"].as_object_mut() {
                    changed |= position.remove("checksum").is_some();
                    changed |= position.remove("input").is_some();
                }
            }
        }
        if changed {
            std::fs::write(&file, serde_json::to_vec(&json).unwrap()).unwrap();
        }
    }
}

#[test]
fn a_checkpoint_that_cannot_tell_the_input_is_refused_until_the_input_mode_says() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let path = dir.path().join("events.jsonl");
    let input = path.display().to_string();
    let first = views(1, 3, 0);
    std::fs::write(&path, text(&first)).unwrap();
    assert_ok(&run(&out, &[&input], &[]), "the first run");
    strip_identity(&out);

    let more = views(11, 2, 60);
    std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(text(&more).as_bytes()).unwrap();
    let refused = run(&out, &[&input], &[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "an input that cannot be told must be refused:\n{stderr}");
    assert!(stderr.contains("--input-mode continue") && stderr.contains("--input-mode new"), "{stderr}");
    assert_eq!(committed(&out).records_read, 3, "a refused run commits nothing");

    assert_ok(&run(&out, &[&input], &["--input-mode", "continue"]), "--input-mode continue");
    assert_each_once(&out, &[first.clone(), more.clone()].concat());

    // From then on the position carries the checksum again: a rewrite is told without help.
    let rewritten = views(21, 9, 120);
    std::fs::write(&path, text(&rewritten)).unwrap();
    assert_ok(&run(&out, &[&input], &[]), "the run after the rewrite");
    assert_each_once(&out, &[first, more, rewritten].concat());
}

#[test]
fn input_mode_continue_refuses_stdin_that_is_not_the_stream_committed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let first = views(1, 3, 0);
    assert_ok(&run_stdin(&out, &text(&first), &[]), "the first run");
    let other = views(11, 6, 60);
    let refused = run_stdin(&out, &text(&other), &["--input-mode", "continue"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "stdin that is another stream must not continue:\n{stderr}");
    assert!(stderr.contains("--input-mode new"), "{stderr}");
    assert_eq!(committed(&out).records_read, 3, "a refused run commits nothing");

    assert_ok(&run_stdin(&out, &text(&other), &["--input-mode", "new"]), "--input-mode new");
    assert_each_once(&out, &[first, other].concat());
}

/// A pipe that stays open (`tail -f events | pageviews run --input -`): what arrives is
/// committed as it arrives, and a stop is honoured at once, though the writer never closes.
#[test]
fn a_pipe_that_stays_open_is_committed_as_it_arrives_and_a_stop_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut child = bin()
        .args(["run", "--http", "off", "--input", "-", "--checkpoint-interval", "200ms", "--output"])
        .arg(&out)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pageviews");
    let mut stdin = child.stdin.take().expect("its stdin");
    let first = views(1, 3, 0);
    stdin.write_all(text(&first).as_bytes()).unwrap();
    stdin.flush().unwrap();
    wait_for("the first lines committed", Duration::from_secs(30), || committed(&out).records_read == 3);
    let second = views(4, 2, 10);
    stdin.write_all(text(&second).as_bytes()).unwrap();
    stdin.flush().unwrap();
    wait_for("the next lines committed", Duration::from_secs(30), || committed(&out).records_read == 5);
    let sent = std::time::Instant::now();
    let ok = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    let exited = poll_until(Duration::from_secs(30), || child.try_wait().unwrap().is_some());
    assert!(exited && sent.elapsed() < Duration::from_secs(10), "no exit {:?} after SIGTERM", sent.elapsed());
    let output = child.wait_with_output().unwrap();
    assert_ok(&output, "the stopped run");
    drop(stdin);
    let mut rows: Vec<i64> =
        rows(&out, "page_views").iter().map(|r| r.value["user_id"].as_i64().unwrap()).collect();
    rows.sort();
    assert_eq!(rows, [1, 2, 3, 4, 5]);
}
