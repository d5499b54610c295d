//! The table root as the user gives it (`--output`): a plain path, a `file://` URL or
//! `s3://bucket/prefix`, and the S3 client for it, configured the AWS way.
//!
//! The pipeline and the SQL client both open roots here, so both accept the same URLs and
//! refuse the same unusable settings, before any request, with what to set.

use std::path::PathBuf;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::{BackoffConfig, ClientConfigKey, RetryConfig};

use super::StorageError;

/// What to set for an S3 root, shown with every S3 configuration error.
pub const S3_SETTINGS: &str = "set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION, and for \
     an S3-compatible server AWS_ENDPOINT_URL (plus AWS_ALLOW_HTTP=true for plain http)";

/// Where a root is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local directory, as given (not made absolute, and it may not exist yet).
    Local(PathBuf),
    /// A bucket and a key prefix without leading or trailing `/` (may be empty).
    S3 {
        /// The bucket.
        bucket: String,
        /// The prefix of the table root inside the bucket.
        prefix: String,
    },
}

impl Location {
    /// Parses `--output`.
    pub fn parse(url: &str) -> Result<Location, StorageError> {
        if let Some(rest) = url.strip_prefix("file://") {
            return Ok(Location::Local(PathBuf::from(rest)));
        }
        if let Some(rest) = url.strip_prefix("s3://").or_else(|| url.strip_prefix("s3a://")) {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad(url, "no bucket: write s3://bucket/prefix".into()));
            }
            return Ok(Location::S3 { bucket: bucket.into(), prefix: prefix.trim_matches('/').into() });
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(bad(
                url,
                format!("the {scheme}:// scheme is not supported; use a local path, file:// or s3://"),
            ));
        }
        Ok(Location::Local(PathBuf::from(url)))
    }
}

fn bad(url: &str, reason: String) -> StorageError {
    StorageError::BadOutput { url: url.to_string(), reason }
}

/// The `AWS_*` settings an S3 root is configured from: the process environment, or given
/// explicitly (tests, which must not change the environment of other threads).
#[derive(Clone, Default)]
pub struct S3Env {
    vars: Vec<(String, String)>,
}

/// Names only: the values hold secrets, and configs get logged.
impl std::fmt::Debug for S3Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.vars.iter().map(|(k, _)| k)).finish()
    }
}

impl S3Env {
    /// The `AWS_*` variables of this process.
    pub fn process() -> Self {
        S3Env { vars: std::env::vars().filter(|(k, _)| k.starts_with("AWS_")).collect() }
    }

    /// These variables only, as `(name, value)` pairs such as `("AWS_REGION", "us-east-1")`.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        S3Env { vars: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }

    /// The variables, for a child process that must see the same store.
    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }

    fn builder(&self) -> AmazonS3Builder {
        let mut builder = AmazonS3Builder::new();
        for (key, value) in &self.vars {
            if let Ok(config_key) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                builder = builder.with_config(config_key, value);
            }
        }
        builder
    }
}

/// An S3 client for one bucket, and what the one call object_store lacks
/// (ListMultipartUploads) needs to reach and sign for the same bucket.
#[derive(Debug)]
pub struct S3Client {
    /// The client.
    pub s3: AmazonS3,
    /// Base URL of the bucket.
    pub bucket_url: String,
    /// The signing region.
    pub region: String,
    /// Plain http is allowed.
    pub allow_http: bool,
}

/// Builds the client for `bucket` from `env`, refusing settings that cannot work: half a
/// key pair, no keys for a non-AWS endpoint, or a plain-http endpoint not allowed. Each
/// request is retried as object_store does by default (up to 10 times in 3 minutes), for
/// callers with no retries of their own (the SQL client).
pub fn s3_client(url: &str, bucket: &str, env: &S3Env) -> Result<S3Client, StorageError> {
    build(url, bucket, env, RetryConfig::default())
}

/// The client [`super::Storage`] uses: object_store retries a request only briefly, so a
/// blip passes unseen and a longer outage reaches [`super::Storage`]'s own retries, which
/// have no count limit, cover every call and failure that passes, and report the outage.
pub(super) fn s3_client_for_storage(url: &str, bucket: &str, env: &S3Env) -> Result<S3Client, StorageError> {
    let brief = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: Duration::from_secs(5),
    };
    build(url, bucket, env, brief)
}

fn build(url: &str, bucket: &str, env: &S3Env, retry: RetryConfig) -> Result<S3Client, StorageError> {
    let mut builder = env.builder().with_bucket_name(bucket).with_retry(retry);
    // Both spellings of the region are common; object_store reads only AWS_DEFAULT_REGION
    // when AWS_REGION is absent, so take either.
    if builder.get_config_value(&AmazonS3ConfigKey::Region).is_none() {
        if let Some((_, region)) = env.vars.iter().find(|(k, _)| k == "AWS_REGION") {
            builder = builder.with_region(region);
        }
    }
    let is_set = |key: AmazonS3ConfigKey| builder.get_config_value(&key).is_some_and(|v| !v.is_empty());
    let is_true = |key: AmazonS3ConfigKey| builder.get_config_value(&key).is_some_and(|v| v == "true");
    let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
    match (is_set(AmazonS3ConfigKey::AccessKeyId), is_set(AmazonS3ConfigKey::SecretAccessKey)) {
        (true, false) => {
            return Err(bad(url, "AWS_ACCESS_KEY_ID is set but not AWS_SECRET_ACCESS_KEY".into()))
        }
        (false, true) => {
            return Err(bad(url, "AWS_SECRET_ACCESS_KEY is set but not AWS_ACCESS_KEY_ID".into()))
        }
        // An S3-compatible server (not an AWS endpoint) has no instance metadata to take
        // credentials from, so without keys every request would fail.
        (false, false)
            if endpoint.as_deref().is_some_and(|e| !e.contains(".amazonaws.com"))
                && !is_true(AmazonS3ConfigKey::SkipSignature) =>
        {
            return Err(bad(
                url,
                format!(
                    "no credentials for the endpoint {}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                    endpoint.unwrap_or_default()
                ),
            ))
        }
        _ => {}
    }
    let region = builder.get_config_value(&AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
    let virtual_hosted = is_true(AmazonS3ConfigKey::VirtualHostedStyleRequest);
    // The same rule object_store applies, so listing uploads talks to the same bucket.
    let bucket_url = match (&endpoint, virtual_hosted) {
        (Some(e), true) => e.trim_end_matches('/').to_string(),
        (Some(e), false) => format!("{}/{bucket}", e.trim_end_matches('/')),
        (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
        (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
    };
    let allow_http = is_true(AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp));
    if bucket_url.starts_with("http://") && !allow_http {
        return Err(bad(
            url,
            format!(
                "the endpoint {} is plain http; set AWS_ALLOW_HTTP=true to allow it",
                endpoint.unwrap_or_default()
            ),
        ));
    }
    let s3 = builder.build().map_err(|e| bad(url, format!("{e}; {S3_SETTINGS}")))?;
    Ok(S3Client { s3, bucket_url, region, allow_http })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_folder_or_a_bucket_and_prefix() {
        assert_eq!(Location::parse("./x").unwrap(), Location::Local("./x".into()));
        assert_eq!(Location::parse("file:///tmp/x/").unwrap(), Location::Local("/tmp/x/".into()));
        assert_eq!(
            Location::parse("s3://b/warehouse/pv/").unwrap(),
            Location::S3 { bucket: "b".into(), prefix: "warehouse/pv".into() }
        );
        let err = Location::parse("gs://bucket/x").unwrap_err().to_string();
        assert!(err.contains("gs:// scheme is not supported"), "{err}");
        let err = Location::parse("s3:///prefix").unwrap_err().to_string();
        assert!(err.contains("no bucket"), "{err}");
    }

    #[test]
    fn unusable_s3_settings_are_refused_with_what_to_set() {
        let endpoint = ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000");
        let cases = [
            (vec![("AWS_ACCESS_KEY_ID", "k")], "not AWS_SECRET_ACCESS_KEY"),
            (vec![endpoint], "no credentials for the endpoint"),
            (
                vec![endpoint, ("AWS_ACCESS_KEY_ID", "k"), ("AWS_SECRET_ACCESS_KEY", "s")],
                "set AWS_ALLOW_HTTP=true",
            ),
        ];
        for (vars, want) in cases {
            let err = s3_client("s3://b", "b", &S3Env::from_pairs(vars)).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        let ok = S3Env::from_pairs([
            endpoint,
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_ALLOW_HTTP", "true"),
        ]);
        let client = s3_client("s3://b", "b", &ok).unwrap();
        assert_eq!(client.bucket_url, "http://127.0.0.1:9000/b");
    }
}
