//! S3 helpers for the integration tests: the project's S3-compatible server (moto, started
//! by scripts/s3-local), fresh buckets, and the environment pageviews reads.

use std::process::Stdio;
use std::sync::OnceLock;

use pageviews::sink::Storage;

/// The server's endpoint: `PAGEVIEWS_TEST_S3` if set (scripts/test sets it), else the
/// project's local server (started once). The process environment gets the AWS settings,
/// so in-process storage and every child `pageviews` find the server.
pub fn endpoint() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        let endpoint = match std::env::var("PAGEVIEWS_TEST_S3") {
            Ok(e) => e,
            Err(_) => last_line(std::process::Command::new("scripts/s3-local").arg("start")),
        };
        for (k, v) in aws_env(&endpoint) {
            std::env::set_var(k, v);
        }
        endpoint
    })
}

fn aws_env(endpoint: &str) -> [(&'static str, String); 6] {
    [
        ("AWS_ENDPOINT_URL", endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ALLOW_HTTP", "true".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
    ]
}

fn last_line(cmd: &mut std::process::Command) -> String {
    let out = cmd.stderr(Stdio::inherit()).output().expect("run a project script");
    assert!(out.status.success(), "{cmd:?} failed");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().last().expect("the script prints its result last").trim().to_string()
}

/// A new, empty bucket; returns its name.
pub fn bucket(prefix: &str) -> String {
    let _ = endpoint();
    let name = super::kafka::unique(prefix).to_lowercase();
    let s3_dir = std::env::var("S3_LOCAL_DIR").ok();
    let mut cmd = std::process::Command::new("scripts/s3-local");
    cmd.args(["bucket", &name]);
    if let Some(dir) = s3_dir {
        cmd.env("S3_LOCAL_DIR", dir);
    }
    last_line(&mut cmd);
    name
}

/// Storage on `url` (an s3:// URL) with the runtime it runs on.
pub fn storage(url: &str) -> (tokio::runtime::Runtime, Storage) {
    let _ = endpoint();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let storage = Storage::open(url, rt.handle().clone()).expect("open the S3 root");
    (rt, storage)
}
