//! pageviews-kafka: how pageviews' Kafka clients are set up, shared by the pipeline (its
//! group consumer, the exchange, datagen) and by `pageviews sql`, which reads the topic as a
//! table.
//!
//! ```text
//!   pageviews (pipeline)          pageviews-sql (the topic as a table)
//!            └──────────┬──────────────────┘
//!                       ▼
//!   pageviews-kafka: --kafka-option applied last, with its secrets registered · the prefetch
//!                    bound · the errors no retry cures · TLS files checked before a client
//!                       ▼
//!   pageviews-core (secrets)          rdkafka 0.39 (bundled librdkafka, TLS)
//! ```
//!
//! One copy, so a fix to how a client is configured reaches every reader of the topic.

#![warn(missing_docs)]

use std::sync::Mutex;

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use thiserror::Error;

/// Applies user-given librdkafka properties last, so they override the built-in ones, and
/// registers the secret ones (`sasl.password`, `ssl.key.password`…) so that no text that
/// quotes them is printed.
pub fn with_options(mut config: ClientConfig, options: &[(String, String)]) -> ClientConfig {
    for (key, value) in options {
        // librdkafka quotes a value in its errors (a misspelled key's, for one).
        pageviews_core::secrets::register_option(key, value);
        config.set(key, value);
    }
    config
}

/// How much a consumer fetches ahead, for every consumer of ours: librdkafka's
/// per-partition prefetch is bounded, or memory grows with the partitions assigned; a full
/// partition pauses 10 ms, not 1 s, or that pause sets the pace; and a fetch of partitions with
/// nothing new waits 100 ms at the broker, not 500, or the others queue behind it. The
/// measurements: docs/measurements.md.
pub fn prefetch_bounds(client: &mut ClientConfig) {
    client
        .set("fetch.wait.max.ms", "100")
        .set("fetch.queue.backoff.ms", "10")
        .set("queued.min.messages", "20000")
        .set("queued.max.messages.kbytes", "4096");
}

/// librdkafka's error callback for a client of ours: an authentication or TLS failure is kept
/// for the caller, which stops with it (no retry cures a wrong password or an untrusted
/// certificate); other errors are transport trouble the caller waits out and reports once.
#[derive(Debug, Default)]
pub struct FatalErrors(Mutex<Option<String>>);

impl FatalErrors {
    /// The authentication or TLS failure reported since the last call, if any.
    pub fn take(&self) -> Option<String> {
        self.0.lock().ok()?.take()
    }

    /// Keeps `error` when no retry can cure it; true when it was kept.
    pub fn note(&self, error: &KafkaError, reason: &str) -> bool {
        use rdkafka::types::RDKafkaErrorCode as Code;
        let fatal = matches!(
            error.rdkafka_error_code(),
            Some(Code::Authentication | Code::SaslAuthenticationFailed | Code::SSL)
        );
        if fatal {
            if let Ok(mut slot) = self.0.lock() {
                *slot = Some(reason.to_string());
            }
        }
        fatal
    }
}

impl rdkafka::consumer::ConsumerContext for FatalErrors {}

impl ClientContext for FatalErrors {
    fn error(&self, error: KafkaError, reason: &str) {
        if !self.note(&error, reason) {
            tracing::debug!(%error, reason, "librdkafka");
        }
    }
}

/// librdkafka properties that name a file (or, for the CA, a folder) to read at start.
const TLS_FILE_OPTIONS: [&str; 5] = [
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.keystore.location",
    "ssl.crl.location",
];

/// A `--kafka-option` naming a file that cannot be read.
#[derive(Debug, Error)]
#[error("--kafka-option {key}={path}: cannot read {path}: {source}")]
pub struct OptionFileError {
    /// The option.
    pub key: String,
    /// The file it names.
    pub path: String,
    /// Why it cannot be read.
    pub source: std::io::Error,
}

/// Refuses a TLS file option whose file does not exist, naming it: librdkafka's own refusal
/// ("ssl.ca.location failed: x509 certificate routines::system lib") does not say which
/// file. `probe` (the CA) asks librdkafka to search the system's usual places.
pub fn check_option_files(options: &[(String, String)]) -> Result<(), OptionFileError> {
    for (key, value) in options {
        if TLS_FILE_OPTIONS.contains(&key.as_str()) && value != "probe" {
            if let Err(source) = std::fs::metadata(value) {
                return Err(OptionFileError { key: key.clone(), path: value.clone(), source });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tls_file_is_named_and_probe_is_left_to_librdkafka() {
        let options = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let err = check_option_files(&options("ssl.ca.location", "/no/such/ca.pem")).unwrap_err();
        assert!(err.to_string().starts_with("--kafka-option ssl.ca.location=/no/such/ca.pem: cannot read"));
        assert!(check_option_files(&options("ssl.ca.location", "probe")).is_ok());
        assert!(check_option_files(&options("security.protocol", "/no/such")).is_ok());
    }

    #[test]
    fn options_override_ours_and_their_secrets_are_registered() {
        let mut ours = ClientConfig::new();
        ours.set("fetch.wait.max.ms", "100");
        let given = vec![
            ("fetch.wait.max.ms".to_string(), "5".to_string()),
            ("sasl.password".to_string(), "kafka-lib-test-secret".to_string()),
        ];
        let config = with_options(ours, &given);
        assert_eq!(config.get("fetch.wait.max.ms"), Some("5"));
        let text = pageviews_core::secrets::scrub("refused: kafka-lib-test-secret");
        assert!(!text.contains("kafka-lib-test-secret"), "{text}");
    }
}
