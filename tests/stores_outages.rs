//! Storage that fails mid-run, against the suite's object store (`PAGEVIEWS_TEST_STORE`;
//! scripts/test runs these against each) behind a fault-injecting proxy: an outage is ridden
//! out in the same process and commits exactly once, one while the source is idle stops the
//! run once the retries give up, a stop while storage is away is honoured within seconds,
//! and an error that does not pass stops the run at once.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::stores::*;
use common::*;
use pageviews::core::commit::View;
use pageviews::core::storage::Storage;
use pageviews::source::GeneratorConfig;
use pageviews::{PipelineConfig, Shutdown, SourceConfig};
use pageviews_testkit::proxy::{Fault, FaultProxy};

fn scrape(addr: std::net::SocketAddr, name: &str) -> Option<f64> {
    std::net::TcpStream::connect(addr).ok()?;
    metric(&http_get(addr, "/metrics").1, name)
}

#[test]
fn a_storage_outage_mid_run_is_ridden_out_in_the_same_process_and_commits_exactly_once() {
    let bucket = store::bucket("pv-outage");
    let url = store::url(&bucket, "o");
    let proxy = FaultProxy::in_front_of(store::endpoint());
    let http = free_loopback_addr();
    let http_arg = http.to_string();
    // 150k events at 3000/s: a 50 s run, long enough for two 20 s outages.
    let extra =
        ["--count", "150000", "--rate", "3000", "--checkpoint-interval", "500ms", "--http", &http_arg];
    let mut args = run_args(&url, &[]);
    args.retain(|a| *a != "--http" && *a != "off");
    args.extend_from_slice(&extra);
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = bin();
    store::envs_at(&mut child, &proxy.endpoint());
    let mut child = child.args(&args).stdout(Stdio::null()).stderr(log.reopen().unwrap()).spawn().unwrap();
    let (rt, storage) = store::storage(&url);
    let seq = |rt: &tokio::runtime::Runtime, storage: &Storage| log_version(rt, storage);
    wait_for("a first checkpoint", Duration::from_secs(60), || seq(&rt, &storage) > 0);

    for fault in [Fault::Refuse, Fault::SlowDown] {
        proxy.set(fault);
        wait_for("the retrying gauge", Duration::from_secs(60), || {
            scrape(http, "pageviews_storage_retrying") == Some(1.0)
        });
        let (met, retries) =
            (proxy.faulted(), scrape(http, "pageviews_storage_retries_total").unwrap_or(0.0));
        // The outage itself: 20 s in which every call fails. This wait is the fault's
        // length, not a synchronisation; everything after it is polled.
        std::thread::sleep(Duration::from_secs(20));
        assert!(child.try_wait().unwrap().is_none(), "{fault:?}: the run must not stop");
        // A refused connect never reaches the proxy; a 503 is counted by it.
        if fault == Fault::SlowDown {
            assert!(proxy.faulted() > met, "{fault:?}: calls kept being retried through the outage");
        }
        let later = scrape(http, "pageviews_storage_retries_total").unwrap_or(0.0);
        assert!(later > retries, "{fault:?}: retries counted ({retries} → {later})");
        let before = seq(&rt, &storage);
        proxy.set(Fault::Pass);
        wait_for("the gauge back at 0", Duration::from_secs(60), || {
            scrape(http, "pageviews_storage_retrying") == Some(0.0)
        });
        wait_for("a checkpoint after the outage", Duration::from_secs(60), || seq(&rt, &storage) > before);
    }
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    log.reopen().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    let count = |needle: &str| stderr.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("storage unreachable"), 2, "one warning per outage, not one per retry:\n{stderr}");
    assert_eq!(count("storage reachable again"), 2, "{stderr}");

    let report = pageviews::verify::verify(&storage).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.rows.get("page_views"), Some(&150_000), "{report}");
    // The same stream without an outage (virtual time: no need to wait 50 s for it).
    let local = tempfile::tempdir().unwrap();
    let stream = GeneratorConfig {
        rate: 3000,
        count: Some(150_000),
        max_late_ms: 1000,
        seed: 5,
        start_ms: pageviews::core::time::parse_timestamp("2020-01-01 00:10:00").unwrap(),
        interval_us: None,
    };
    let start_ms = stream.start_ms;
    let mut config =
        PipelineConfig::new(SourceConfig::Generator(stream.into()), local.path().display().to_string());
    // Its wall clock where the stream starts: the stream stays within --max-future of it.
    config.clock = std::sync::Arc::new(pageviews::clock::ManualClock::new(start_ms));
    pageviews::run(config, Shutdown::default()).unwrap();
    let tables = ["page_views", "page_view_aggregates", "late_page_views", "dead_letters"];
    assert_rows_as_uninterrupted(&rt, &storage, local.path(), &tables, "the outages");
}

/// A storage outage while the source has nothing new: the file that rolls on age cannot be
/// uploaded, `/healthz` reports the stalled checkpoint, and once the retries have given up
/// the run stops with the error instead of idling on as if healthy. A restart commits
/// every record exactly once.
#[test]
fn a_storage_outage_while_the_source_is_idle_stops_the_run_and_a_restart_resumes_exactly() {
    use pageviews_testkit::kafka::{broker, create_topic, generator, produce, unique};
    let bucket = store::bucket("pv-idle-outage");
    let url = store::url(&bucket, "o");
    let (topic, group) = (unique("idle-outage"), unique("group"));
    create_topic(&topic, 2);
    produce(&topic, generator(9, "2020-01-01 00:00:00", 2_000), 0.0);
    let proxy = FaultProxy::in_front_of(store::endpoint());
    let http = free_loopback_addr();
    let http_arg = http.to_string();
    #[rustfmt::skip]
    let args = ["run", "--brokers", broker(), "--topic", &topic, "--group", &group, "--output", &url,
        "--roll-age", "3s", "--checkpoint-interval", "500ms", "--storage-retry-timeout", "5s"];
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = bin();
    store::envs_at(&mut cmd, &proxy.endpoint());
    let mut child = cmd
        .args(args)
        .args(["--http", &http_arg])
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let (rt, storage) = store::storage(&url);
    let pipeline = format!("kafka-{topic}");
    let read = || rt.block_on(View::load(&storage, &pipeline)).map_or(0, |v| v.totals().records_read);
    wait_for("every record committed", Duration::from_secs(60), || read() == 2_000);

    proxy.set(Fault::Refuse);
    let healthz = || try_http_get(http, "/healthz", &[]).ok().map(|(code, _)| code);
    let mut unhealthy = false;
    let stopped = poll_until(Duration::from_secs(90), || {
        unhealthy |= healthz() == Some(503);
        child.try_wait().unwrap().is_some()
    });
    let mut stderr = String::new();
    log.reopen().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(stopped, "the run idled on after its storage gave up:\n{stderr}");
    assert!(unhealthy, "/healthz never reported the stalled checkpoint:\n{stderr}");
    assert!(!child.wait().unwrap().success(), "a run whose writes gave up must not exit 0:\n{stderr}");
    assert!(stderr.contains("--storage-retry-timeout"), "the error says what gave up:\n{stderr}");

    proxy.set(Fault::Pass);
    let mut cmd = bin();
    store::envs_at(&mut cmd, &proxy.endpoint());
    let out = cmd.args(args).args(["--http", "off", "--until-end"]).stderr(Stdio::piped()).output().unwrap();
    assert!(out.status.success(), "the restart failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let report = pageviews::verify::verify(&storage).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.rows.get("page_views"), Some(&2_000), "{report}");
}

/// A stop while storage is away is honoured within seconds, however long
/// `--storage-retry-timeout` is: the retries give up shortly after the signal and the run
/// exits non-zero, saying what was not committed. A second signal aborts at once. Runs
/// after each commit the stream exactly once.
#[test]
fn a_stop_while_storage_is_away_is_honoured_within_seconds_and_a_second_signal_aborts() {
    let bucket = store::bucket("pv-stop");
    let url = store::url(&bucket, "o");
    let proxy = FaultProxy::in_front_of(store::endpoint());
    let extra = [
        "--count",
        "30000",
        "--rate",
        "2000",
        "--checkpoint-interval",
        "500ms",
        "--storage-retry-timeout",
        "1h",
    ];
    let args = run_args(&url, &extra);
    let (rt, storage) = store::storage(&url);
    let start = || {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = bin();
        store::envs_at(&mut cmd, &proxy.endpoint());
        let child = cmd.args(&args).stdout(Stdio::null()).stderr(log.reopen().unwrap()).spawn().unwrap();
        (child, log)
    };
    let text = |log: &tempfile::NamedTempFile| {
        let mut s = String::new();
        log.reopen().unwrap().read_to_string(&mut s).unwrap();
        s
    };
    let kill = |child: &std::process::Child, signal: &str| {
        let ok = std::process::Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    };
    for signals in [1, 2] {
        let (mut child, log) = start();
        let before = log_version(&rt, &storage);
        wait_for("a checkpoint", Duration::from_secs(60), || log_version(&rt, &storage) > before);
        proxy.set(Fault::Refuse);
        let noticed = poll_until(Duration::from_secs(60), || text(&log).contains("storage unreachable"));
        assert!(
            noticed,
            "{signals} signal(s): the outage was not noticed in 60 s (exited: {:?}):\n{}",
            child.try_wait().unwrap(),
            text(&log)
        );
        let sent = Instant::now();
        kill(&child, "-TERM");
        if signals == 2 {
            wait_for("the first signal taken", Duration::from_secs(10), || {
                text(&log).contains("signal received")
            });
            kill(&child, "-TERM");
        }
        let exited = poll_until(Duration::from_secs(30), || child.try_wait().unwrap().is_some());
        let (took, log) = (sent.elapsed(), text(&log));
        assert!(
            exited && took < Duration::from_secs(10),
            "{signals} signal(s): no exit after {took:?}:\n{log}"
        );
        let status = child.wait().unwrap();
        assert!(!status.success(), "a stop that could not commit is not a success:\n{log}");
        if signals == 1 {
            assert!(log.contains("storage did not answer"), "says what was not committed:\n{log}");
        } else {
            assert_eq!(status.code(), Some(130), "the second signal aborts:\n{log}");
            assert!(took < Duration::from_secs(3), "the second signal aborts at once, not after {took:?}");
        }
        proxy.set(Fault::Pass);
    }
    let (mut child, log) = start();
    assert!(child.wait().unwrap().success(), "{}", text(&log));
    let report = pageviews::verify::verify(&storage).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.rows.get("page_views"), Some(&30_000), "{report}");
}

#[test]
fn errors_that_do_not_pass_stop_the_run_at_once_with_what_to_do() {
    let bucket = store::bucket("pv-nobucket");
    let missing = store::url(&format!("{bucket}-missing"), "x");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let under_file = file.join("tables").display().to_string();
    let no_such = match store::kind() {
        store::Kind::S3 => "the bucket of --output does not exist",
        store::Kind::Azure => "the container of --output does not exist",
    };
    let mut cases = vec![
        (missing.as_str(), no_such, store_bin()),
        (under_file.as_str(), "cannot create the directory", store_bin()),
    ];
    // Wrong credentials, where the server checks them (moto takes any; s3rver knows its key
    // id but checks no signature): refused, and the secret never printed.
    let denied = store::url(&bucket, "x");
    let wrong_secret = "d3JvbmctYnV0LXZhbGlkLWJhc2U2NA==";
    if store::server() != "moto" {
        let mut cmd = store_bin();
        cmd.env("AWS_ACCESS_KEY_ID", "WRONGKEY").env("AWS_SECRET_ACCESS_KEY", wrong_secret);
        cmd.env("AZURE_STORAGE_ACCOUNT_KEY", wrong_secret);
        cases.push((denied.as_str(), "access denied", cmd));
    }
    for (output, want, mut cmd) in cases {
        let started = Instant::now();
        let out = cmd.args(run_args(output, &["--count", "10"])).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains(wrong_secret), "{output}: the secret is printed: {stderr}");
        assert!(!out.status.success(), "{output}: {stderr}");
        assert!(stderr.contains(want), "{output}: {stderr}");
        assert!(!stderr.contains("storage unreachable"), "{output}: not retried: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{output}: stopped after {:?}",
            started.elapsed()
        );
    }
}
