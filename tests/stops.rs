//! Every stop is honoured within seconds, in every state, and what the run was given as a
//! secret never comes out: against the real binary and the real broker, whose SASL/PLAIN
//! listener (`scripts/kafka-local sasl`) refuses a wrong password. The stops while storage
//! is away are in `tests/stores_outages.rs`.

mod common;

use std::io::Read;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use pageviews_testkit::kafka::{broker, broker_sasl, create_topic, generator, produce, unique};

/// Spawns `pageviews` with `args`, its stderr to a file the test reads.
fn spawn(args: &[&str]) -> (Child, tempfile::NamedTempFile) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let child = bin().args(args).stdout(Stdio::null()).stderr(log.reopen().unwrap()).spawn().unwrap();
    (child, log)
}

fn text(log: &tempfile::NamedTempFile) -> String {
    let mut s = String::new();
    log.reopen().unwrap().read_to_string(&mut s).unwrap();
    s
}

/// Sends `signal` and returns how long the process took to exit, and its status.
fn signal_and_wait(child: &mut Child, signal: &str) -> (Duration, std::process::ExitStatus) {
    let sent = Instant::now();
    let ok = std::process::Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(ok.success());
    let exited = poll_until(Duration::from_secs(30), || child.try_wait().unwrap().is_some());
    let took = sent.elapsed();
    assert!(exited, "no exit 30 s after {signal}");
    (took, child.wait().unwrap())
}

#[test]
fn sigterm_while_kafka_cannot_be_reached_stops_within_seconds() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on.
    let brokers = free_loopback_addr().to_string();
    let out = dir.path().join("out").display().to_string();
    let (mut child, log) = spawn(&["run", "--brokers", &brokers, "--output", &out, "--http", "off"]);
    wait_for("the wait for the broker", Duration::from_secs(30), || text(&log).contains("retrying"));
    let (took, status) = signal_and_wait(&mut child, "-TERM");
    let log = text(&log);
    assert!(took < Duration::from_secs(10), "stopped {took:?} after SIGTERM:\n{log}");
    assert!(!status.success(), "nothing was run: not a success\n{log}");
    assert!(log.contains("stopped while waiting for Kafka"), "says what it was doing:\n{log}");
}

/// Reads `topic` through the SASL/PLAIN listener as user `pageviews` with `password`.
fn sasl_run(topic: &str, out: &str, password: &str, extra: &[&str]) -> (Child, tempfile::NamedTempFile) {
    let brokers = broker_sasl();
    let password = format!("sasl.password={password}");
    #[rustfmt::skip]
    let mut args = vec!["run", "--brokers", &brokers, "--topic", topic, "--group", topic, "--output", out,
        "--http", "off", "--kafka-option", "security.protocol=SASL_PLAINTEXT",
        "--kafka-option", "sasl.mechanism=PLAIN", "--kafka-option", "sasl.username=pageviews",
        "--kafka-option", &password];
    args.extend_from_slice(extra);
    spawn(&args)
}

#[test]
fn a_refused_password_stops_the_run_naming_the_cause_and_never_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("sasl");
    create_topic(&topic, 2);
    produce(&topic, generator(3, "2020-01-01 00:00:00", 500), 0.0);
    let out = dir.path().join("out").display().to_string();
    for format in ["text", "json"] {
        let secret = format!("Wrong-{format}-pw-9f3a");
        let (mut child, log) = sasl_run(&topic, &out, &secret, &["--log-format", format]);
        let exited = poll_until(Duration::from_secs(30), || child.try_wait().unwrap().is_some());
        let log = text(&log);
        assert!(exited, "a refused password was retried for good:\n{log}");
        assert!(!child.wait().unwrap().success(), "{log}");
        assert!(log.contains("Authentication failed"), "the cause is named:\n{log}");
        assert!(!log.contains(&secret), "the password was printed:\n{log}");
    }
    // The right one reads the topic.
    let (mut child, log) = sasl_run(&topic, &out, "pageviews-test", &["--until-end"]);
    assert!(child.wait().unwrap().success(), "{}", text(&log));
    assert_eq!(committed(dir.path().join("out").as_path()).records_read, 500);
}

#[test]
fn a_misspelled_secret_option_is_refused_without_its_value_in_any_log_format() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out").display().to_string();
    for format in ["text", "json"] {
        let (mut child, log) = spawn(&[
            "--log-format",
            format,
            "run",
            "--brokers",
            broker(),
            "--output",
            &out,
            "--http",
            "off",
            "--kafka-option",
            "sasl.pasword=SECRETPW-7c1e",
        ]);
        let status = child.wait().unwrap();
        let log = text(&log);
        assert!(!status.success(), "{log}");
        assert!(log.contains("sasl.pasword"), "the misspelled key is named:\n{log}");
        assert!(!log.contains("SECRETPW-7c1e"), "{format}: the value was printed:\n{log}");
    }
}

#[test]
fn the_status_page_never_shows_a_secret_in_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = pageviews_testkit::kafka::kafka_config("any", "g", dir.path(), false);
    if let pageviews::SourceConfig::Kafka(k) = &mut config.source {
        k.options.push(("sasl.pasword".into(), "STATUS-SECRET-51d0".into()));
    }
    config.http.addr = Some("127.0.0.1:0".parse().unwrap());
    let metrics = std::sync::Arc::new(pageviews::metrics::Metrics::new(&config.pipeline_id));
    let run = pageviews::start(config, pageviews::Shutdown::default(), metrics).unwrap();
    let addr = run.http_addr().unwrap();
    wait_for("the run to fail", Duration::from_secs(30), || run.status().state == "failed");
    let (_, body) = http_get(addr, "/api/status");
    assert!(body.contains("sasl.pasword"), "the error is shown:\n{body}");
    assert!(!body.contains("STATUS-SECRET-51d0"), "the secret is shown:\n{body}");
    assert!(run.join().is_err());
}
