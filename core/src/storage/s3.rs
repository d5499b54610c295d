//! The S3 client of an `s3://bucket/prefix` root, configured the AWS way from `AWS_*`
//! settings, and the checks that refuse settings which cannot work before any request.

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::{ClientConfigKey, RetryConfig};

use super::requests::CountingConnector;
use super::root::{bad, StoreEnv};
use super::StorageError;

/// What to set for an S3 root, shown with every S3 configuration error.
pub(crate) const S3_SETTINGS: &str = "set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION, and for \
     an S3-compatible server AWS_ENDPOINT_URL (plus AWS_ALLOW_HTTP=true for plain http)";

fn builder(env: &StoreEnv) -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::new();
    for (key, value) in env.with_prefix("AWS_") {
        if let Ok(config_key) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
            builder = builder.with_config(config_key, value);
        }
    }
    builder
}

/// An S3 client for one bucket, and what the one call object_store lacks
/// (ListMultipartUploads) needs to reach and sign for the same bucket.
#[derive(Debug)]
pub(crate) struct S3Client {
    /// The client.
    pub(crate) s3: AmazonS3,
    /// Base URL of the bucket.
    pub(crate) bucket_url: String,
    /// The signing region.
    pub(crate) region: String,
    /// Plain http is allowed.
    pub(crate) allow_http: bool,
    /// The HTTP client's maker, which counts requests: the upload listing's too.
    pub(crate) connector: CountingConnector,
}

/// Builds the client for `bucket` from `env`, refusing settings that cannot work: half a
/// key pair, no keys for a non-AWS endpoint, or a plain-http endpoint not allowed.
pub(super) fn build(
    url: &str,
    bucket: &str,
    env: &StoreEnv,
    retry: RetryConfig,
    connector: CountingConnector,
) -> Result<S3Client, StorageError> {
    let mut builder =
        builder(env).with_bucket_name(bucket).with_retry(retry).with_http_connector(connector.clone());
    // Both spellings of the region are common; object_store reads only AWS_DEFAULT_REGION
    // when AWS_REGION is absent, so take either.
    if builder.get_config_value(&AmazonS3ConfigKey::Region).is_none() {
        if let Some(region) = env.get("AWS_REGION") {
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
    Ok(S3Client { s3, bucket_url, region, allow_http, connector })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let retry = RetryConfig::default();
        for (vars, want) in cases {
            let err = build(
                "s3://b",
                "b",
                &StoreEnv::from_pairs(vars),
                retry.clone(),
                CountingConnector::default(),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(want), "{err}");
        }
        let ok = StoreEnv::from_pairs([
            endpoint,
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_ALLOW_HTTP", "true"),
        ]);
        let client = build("s3://b", "b", &ok, retry, CountingConnector::default()).unwrap();
        assert_eq!(client.bucket_url, "http://127.0.0.1:9000/b");
    }
}
