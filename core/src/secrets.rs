//! Secrets given to pageviews — librdkafka properties such as `sasl.password`, S3 keys —
//! never appear in what it prints. Values are registered where they are applied, and every
//! text that leaves the process passes [`scrub`]: log lines (text and JSON), the status
//! page's error, the final error message, panics.
//!
//! The list is process-wide on purpose: the texts that carry secrets are built inside other
//! libraries (librdkafka's configuration errors quote the value, object_store's and AWS's
//! may), far from any configuration, and they meet process-wide sinks.

use std::borrow::Cow;
use std::sync::RwLock;

/// What stands in for a secret in printed text.
pub const REDACTED: &str = "[redacted]";

/// Values shorter than this are not treated as secrets: they would blank out ordinary words.
const MIN_SECRET_LEN: usize = 4;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// `sasl.*` properties that name things rather than prove them: a user name can be a word
/// that appears everywhere in the logs.
const SASL_NAMES: [&str; 6] = [
    "sasl.mechanism",
    "sasl.username",
    "sasl.kerberos.service.name",
    "sasl.kerberos.principal",
    "sasl.oauthbearer.client.id",
    "sasl.oauthbearer.method",
];

/// Keys that hold a secret without naming it: Azure's account keys and SAS. (`AWS_ACCESS_KEY_ID`
/// names a key and is no secret: an id is left alone.)
const SECRET_KEY_WORDS: [&str; 4] = ["account_key", "access_key", "master_key", "sas_key"];

/// True for a configuration key whose value is a secret: anything naming a password, a
/// secret, a token or a credential, an account or SAS key, every other `sasl.*` property,
/// and private keys (`ssl.key.*`).
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "passwd", "pasword", "secret", "token", "credential"].iter().any(|w| key.contains(w))
        || (SECRET_KEY_WORDS.iter().any(|w| key.contains(w)) && !key.ends_with("_id"))
        || (key.starts_with("sasl.") && !SASL_NAMES.iter().any(|n| key.starts_with(n)))
        || key.starts_with("ssl.key.")
}

/// Remembers `value` as a secret, never to be printed.
pub fn register(value: &str) {
    if value.len() < MIN_SECRET_LEN {
        return;
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|p| p.into_inner());
    if !secrets.iter().any(|s| s == value) {
        secrets.push(value.to_string());
        // Longest first, so a secret that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Registers the value of `key` when the key names a secret.
pub fn register_option(key: &str, value: &str) {
    if is_secret_key(key) {
        register(value);
    }
}

/// `text` with every registered secret replaced by [`REDACTED`].
pub fn scrub(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(|p| p.into_inner());
    if !secrets.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in secrets.iter() {
        out = out.replace(s.as_str(), REDACTED);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_are_told_from_settings() {
        for key in [
            "sasl.password",
            "sasl.pasword",
            "sasl.oauthbearer.config",
            "SASL.OAUTHBEARER.CLIENT.SECRET",
            "ssl.key.password",
            "ssl.key.pem",
            "ssl.keystore.password",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AZURE_STORAGE_ACCOUNT_KEY",
            "AZURE_STORAGE_ACCESS_KEY",
            "AZURE_STORAGE_SAS_KEY",
            "AZURE_STORAGE_SAS_TOKEN",
            "AZURE_CLIENT_SECRET",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "sasl.mechanism",
            "sasl.mechanisms",
            "sasl.username",
            "security.protocol",
            "ssl.ca.location",
            "AWS_ACCESS_KEY_ID",
            "AZURE_STORAGE_ACCOUNT_NAME",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn a_registered_secret_never_comes_out_and_short_values_are_left_alone() {
        register_option("sasl.password", "S3CRETPW-scrub-test");
        register_option("sasl.oauthbearer.config", "abc");
        register_option("security.protocol", "SASL_SSL-scrub-test");
        let text = r#"No such configuration property: "sasl.pasword" sasl.pasword S3CRETPW-scrub-test (abc)"#;
        assert_eq!(
            scrub(text),
            r#"No such configuration property: "sasl.pasword" sasl.pasword [redacted] (abc)"#
        );
        assert_eq!(scrub("SASL_SSL-scrub-test"), "SASL_SSL-scrub-test");
    }
}
