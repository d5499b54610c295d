//! The object store the bucket tests run against, one real server per run: an S3-compatible
//! server (moto, or s3rver; scripts/s3-local) or Azurite (scripts/azure-local). scripts/test
//! runs the suites once per store, naming it in `PAGEVIEWS_TEST_STORE`. Also fresh buckets
//! (containers, on Azure), their URLs, and the settings that reach the server. The settings
//! are handed to in-process storage and to child processes explicitly; the tests' own
//! environment is never changed, since other test threads read it at the same time.

use std::sync::OnceLock;

use pageviews_core::storage::{Storage, StoreEnv};

/// The kind of object store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An S3-compatible server: `s3://bucket/prefix`.
    S3,
    /// Azure Blob Storage (Azurite): `az://container/prefix`.
    Azure,
}

/// Which server the tests run against: `PAGEVIEWS_TEST_STORE` = `moto` (default), `s3rver`
/// or `azurite`. Tests consult it only for what a server cannot do (s3rver neither lists
/// uploads nor fences; Azure has no upload listing).
pub fn server() -> String {
    std::env::var("PAGEVIEWS_TEST_STORE").unwrap_or_else(|_| "moto".into())
}

/// The kind of [`server`].
pub fn kind() -> Kind {
    match server().as_str() {
        "moto" | "s3rver" => Kind::S3,
        "azurite" => Kind::Azure,
        other => panic!("PAGEVIEWS_TEST_STORE must be moto, s3rver or azurite, not {other}"),
    }
}

/// True when the server refuses a second create-only write of a key (everything but s3rver).
pub fn fences() -> bool {
    server() != "s3rver"
}

/// True when the server lists unfinished uploads, so tests can see what recovery aborts
/// (moto; s3rver answers 501, and Azure has no such call).
pub fn lists_uploads() -> bool {
    server() == "moto"
}

/// The server's endpoint: `PAGEVIEWS_TEST_S3` or `PAGEVIEWS_TEST_AZURE` if set (scripts/test
/// sets them), else the project's local server of kind [`server`] (started once).
pub fn endpoint() -> &'static str {
    endpoint_of(kind())
}

/// The endpoint of the suite's server of `kind`, whichever store this run tests (the README's
/// test runs the commands for each).
fn endpoint_of(kind: Kind) -> &'static str {
    static S3: OnceLock<String> = OnceLock::new();
    static AZURE: OnceLock<String> = OnceLock::new();
    let (cell, var, script) = match kind {
        Kind::S3 => (&S3, "PAGEVIEWS_TEST_S3", "s3-local"),
        Kind::Azure => (&AZURE, "PAGEVIEWS_TEST_AZURE", "azure-local"),
    };
    cell.get_or_init(|| match std::env::var(var) {
        Ok(e) => e,
        // scripts/s3-local reads its choice of server from S3_SERVER.
        Err(_) => crate::script_with(script, &["start"], &[("S3_SERVER", &s3_server())]),
    })
}

/// The S3 server of a run: [`server`], or moto when the run tests another kind of store.
fn s3_server() -> String {
    match kind() {
        Kind::S3 => server(),
        Kind::Azure => "moto".into(),
    }
}

/// The settings of the test server, for `Storage::open_with`, the pipeline's and the SQL
/// client's configs, and (through [`StoreEnv::vars`]) child processes.
pub fn env() -> StoreEnv {
    env_of(kind())
}

/// The settings of the suite's server of `kind`.
pub fn env_of(kind: Kind) -> StoreEnv {
    settings(kind, endpoint_of(kind))
}

/// [`env()`] with another endpoint: a proxy in front of the server.
pub fn env_at(endpoint: &str) -> StoreEnv {
    settings(kind(), endpoint)
}

fn settings(kind: Kind, endpoint: &str) -> StoreEnv {
    match kind {
        // s3rver's one account; moto takes any keys.
        Kind::S3 => StoreEnv::from_pairs([
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_ACCESS_KEY_ID", "S3RVER"),
            ("AWS_SECRET_ACCESS_KEY", "S3RVER"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]),
        // What `scripts/azure-local env` prints (Azurite's one account), at `endpoint`.
        Kind::Azure => {
            let account = azurite_var("AZURE_STORAGE_ACCOUNT_NAME");
            StoreEnv::from_pairs([
                ("AZURE_STORAGE_ACCOUNT_NAME", account.clone()),
                ("AZURE_STORAGE_ACCOUNT_KEY", azurite_var("AZURE_STORAGE_ACCOUNT_KEY")),
                ("AZURE_STORAGE_ENDPOINT", format!("{endpoint}/{account}")),
                ("AZURE_ALLOW_HTTP", "true".into()),
            ])
        }
    }
}

/// A variable of `scripts/azure-local env`, where the emulator's account is written once.
fn azurite_var(name: &str) -> String {
    static VARS: OnceLock<String> = OnceLock::new();
    let text = VARS.get_or_init(|| crate::script_output("azure-local", &["env"]));
    let prefix = format!("export {name}=");
    let line = text.lines().find_map(|l| l.strip_prefix(&prefix));
    let value = line.unwrap_or_else(|| panic!("scripts/azure-local env prints no {name}"));
    value.trim_matches('\'').to_string()
}

/// A new, empty bucket (a container on Azure); returns its name.
pub fn bucket(prefix: &str) -> String {
    let _ = endpoint();
    let name = crate::kafka::unique(prefix).to_lowercase();
    let script = match kind() {
        Kind::S3 => "s3-local",
        Kind::Azure => "azure-local",
    };
    crate::script_with(script, &["bucket", &name], &[("S3_SERVER", &s3_server())]);
    name
}

/// The URL of `path` (may be empty) in `bucket`: `s3://bucket/path` or `az://bucket/path`.
pub fn url(bucket: &str, path: &str) -> String {
    let scheme = match kind() {
        Kind::S3 => "s3",
        Kind::Azure => "az",
    };
    if path.is_empty() {
        format!("{scheme}://{bucket}")
    } else {
        format!("{scheme}://{bucket}/{path}")
    }
}

/// True for a URL of a bucket, as opposed to a local path.
pub fn is_bucket_url(url: &str) -> bool {
    url.starts_with("s3://") || url.starts_with("az://")
}

/// Storage on `url` (a bucket URL) with the runtime it runs on.
pub fn storage(url: &str) -> (tokio::runtime::Runtime, Storage) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let storage = Storage::open_with(url, rt.handle().clone(), &env()).expect("open the bucket root");
    (rt, storage)
}

/// Gives a child process the test server's settings.
pub fn envs(cmd: &mut std::process::Command) -> &mut std::process::Command {
    envs_at(cmd, endpoint())
}

/// Gives a child process the settings for `endpoint` (a proxy in front of the server).
pub fn envs_at<'a>(cmd: &'a mut std::process::Command, endpoint: &str) -> &'a mut std::process::Command {
    cmd.envs(env_at(endpoint).vars().iter().map(|(k, v)| (k.to_string(), v.to_string())))
}
