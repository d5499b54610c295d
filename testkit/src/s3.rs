//! S3 for the tests: the project's S3-compatible server (started by scripts/s3-local: moto,
//! or s3rver with `S3_SERVER=s3rver`; scripts/test runs the S3 tests against both), fresh
//! buckets, and the `AWS_*` settings that reach it. The settings are handed to in-process
//! storage and to child processes explicitly; the tests' own environment is never changed,
//! since other test threads read it at the same time.

use std::sync::OnceLock;

use pageviews_core::storage::{S3Env, Storage};

/// The server's endpoint: `PAGEVIEWS_TEST_S3` if set (scripts/test sets it), else the
/// project's local server of kind [`server`] (started once).
pub fn endpoint() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| match std::env::var("PAGEVIEWS_TEST_S3") {
        Ok(e) => e,
        Err(_) => crate::script("s3-local", &["start"]),
    })
}

/// Which server the tests run against, as scripts/s3-local names it: `S3_SERVER`, default
/// `moto`. Tests consult it only for what a server cannot do (s3rver lists no uploads).
pub fn server() -> String {
    std::env::var("S3_SERVER").unwrap_or_else(|_| "moto".into())
}

/// The `AWS_*` settings of the test server, for `Storage::open_with`, the pipeline's and the
/// SQL client's configs, and (through [`S3Env::vars`]) child processes. The keys are
/// s3rver's one account; moto takes any.
pub fn env() -> S3Env {
    env_at(endpoint())
}

/// [`env`] with another endpoint: a proxy in front of the server.
pub fn env_at(endpoint: &str) -> S3Env {
    S3Env::from_pairs([
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", "S3RVER"),
        ("AWS_SECRET_ACCESS_KEY", "S3RVER"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ])
}

/// A new, empty bucket; returns its name.
pub fn bucket(prefix: &str) -> String {
    let _ = endpoint();
    let name = crate::kafka::unique(prefix).to_lowercase();
    crate::script("s3-local", &["bucket", &name]);
    name
}

/// Storage on `url` (an s3:// URL) with the runtime it runs on.
pub fn storage(url: &str) -> (tokio::runtime::Runtime, Storage) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let storage = Storage::open_with(url, rt.handle().clone(), &env()).expect("open the S3 root");
    (rt, storage)
}

/// Gives a child process the test server's `AWS_*` settings.
pub fn envs(cmd: &mut std::process::Command) -> &mut std::process::Command {
    envs_at(cmd, endpoint())
}

/// Gives a child process the `AWS_*` settings for `endpoint` (a proxy in front of the server).
pub fn envs_at<'a>(cmd: &'a mut std::process::Command, endpoint: &str) -> &'a mut std::process::Command {
    cmd.envs(env_at(endpoint).vars().iter().map(|(k, v)| (k.to_string(), v.to_string())))
}
