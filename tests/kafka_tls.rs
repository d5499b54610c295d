//! TLS to Kafka: librdkafka is built with OpenSSL (rdkafka's `ssl` feature), so the
//! `security.protocol=SSL`/`SASL_SSL` settings the README promises create a consumer, and a
//! CA file that cannot be read is refused with its path. No TLS broker is needed: creating
//! the consumer loads the TLS context and its certificates, and no connection is made yet.

mod common;

use std::process::Stdio;
use std::sync::Arc;

use common::*;
use pageviews::metrics::Metrics;
use pageviews::source::{KafkaConfig, KafkaSource};

fn tls_config(options: &[(&str, &str)]) -> KafkaConfig {
    KafkaConfig {
        // Nothing listens there; creation must not need a broker.
        brokers: "127.0.0.1:9".into(),
        topic: "page_views".into(),
        group: "tls".into(),
        until_end: false,
        options: options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

/// A self-signed CA certificate made by the openssl tool, as an operator would bring one.
fn ca_file(dir: &std::path::Path) -> String {
    let (key, cert) = (dir.join("ca.key"), dir.join("ca.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=pageviews-test-ca",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl (scripts/setup installs it)");
    assert!(status.success(), "openssl could not make a CA certificate");
    cert.display().to_string()
}

#[test]
fn a_consumer_with_ssl_settings_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca_file(dir.path());
    for protocol in ["SSL", "SASL_SSL"] {
        let mut options = vec![("security.protocol", protocol), ("ssl.ca.location", ca.as_str())];
        if protocol == "SASL_SSL" {
            options.extend([("sasl.mechanism", "PLAIN"), ("sasl.username", "u"), ("sasl.password", "p")]);
        }
        let source = KafkaSource::new(
            tls_config(&options),
            "tls-test",
            pageviews_testkit::kafka::no_restore(),
            Arc::new(Metrics::new()),
        );
        if let Err(e) = source {
            panic!("{protocol}: the consumer must be created: {}", pageviews::core::error_chain(&e));
        }
    }
}

#[test]
fn an_unreadable_ca_file_is_refused_with_its_path() {
    // Through the library: librdkafka's own refusal, at creation.
    let missing = "/nonexistent/pageviews/ca.pem";
    let options = [("security.protocol", "SSL"), ("ssl.ca.location", missing)];
    let err = KafkaSource::new(
        tls_config(&options),
        "tls-test",
        pageviews_testkit::kafka::no_restore(),
        Arc::new(Metrics::new()),
    )
    .err()
    .map(|e| pageviews::core::error_chain(&e))
    .expect("a missing CA file must fail");
    assert!(err.contains("ssl.ca.location"), "{err}");
    assert!(!err.contains("not available at build time"), "{err}");

    // Through the binary: the flag is named with the file it could not read.
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["run", "--brokers", "127.0.0.1:9", "--http", "off", "--output"])
        .arg(dir.path().join("out"))
        .args(["--kafka-option", "security.protocol=SSL", "--kafka-option"])
        .arg(format!("ssl.ca.location={missing}"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ssl.ca.location") && stderr.contains(missing), "{stderr}");
}
