//! Fixtures and helpers for the integration tests of pageviews and pageviews-sql, defined
//! once: the inputs (the original job's example, generated streams), runs of the pipeline,
//! reading committed tables back, the real services (the Kafka broker and the object stores
//! the project's scripts start: S3-compatible servers and Azurite), a fault-injecting proxy to
//! put between the pipeline and them, a real terminal (tmux) for the interactive shell, and
//! waiting for conditions with deadlines.
#![allow(clippy::missing_panics_doc)]

pub mod bins;
pub mod browser;
pub mod event_time;
pub mod fixtures;
pub mod kafka;
pub mod prometheus;
pub mod proxy;
pub mod store;
pub mod tables;
pub mod terminal;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

pub use bins::Binaries;
pub use fixtures::*;
pub use tables::*;

/// The workspace root, where `scripts/` lives.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs a project script (`scripts/<name>`) from the workspace root and returns the last line
/// it printed, where the scripts put their result.
pub fn script(name: &str, args: &[&str]) -> String {
    script_with(name, args, &[])
}

/// [`script`] with these environment variables set for it.
pub fn script_with(name: &str, args: &[&str], envs: &[(&str, &str)]) -> String {
    let text = run_script(name, args, envs);
    text.lines().last().unwrap_or_else(|| panic!("scripts/{name} printed nothing")).trim().to_string()
}

/// Runs a project script and returns everything it printed.
pub fn script_output(name: &str, args: &[&str]) -> String {
    run_script(name, args, &[])
}

fn run_script(name: &str, args: &[&str], envs: &[(&str, &str)]) -> String {
    let mut cmd = std::process::Command::new(workspace().join("scripts").join(name));
    cmd.args(args).envs(envs.iter().copied()).current_dir(workspace()).stderr(Stdio::inherit());
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run scripts/{name}: {e}"));
    assert!(out.status.success(), "scripts/{name} {args:?} failed: {}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A child process that is killed when this is dropped, so a test that fails midway leaves
/// nothing running (an unbounded `datagen` would produce into the broker for good).
pub struct KillOnDrop(std::process::Child);

impl KillOnDrop {
    /// Takes charge of `child`.
    pub fn new(child: std::process::Child) -> Self {
        KillOnDrop(child)
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `pageviews` command for the binary at `exe` (tests pass `env!("CARGO_BIN_EXE_pageviews")`),
/// with the environment variables pageviews reads as flag defaults removed: tests give every
/// flag they mean, and the caller's shell must not change the source or the output behind
/// their back.
pub fn command(exe: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(exe);
    for var in [
        "KAFKA_BOOTSTRAP",
        "KAFKA_TOPIC",
        "CONSUMER_GROUP",
        "KAFKA_OPTIONS",
        "ROWS_PER_SECOND",
        "MAX_LATE_RECORD",
        "PAGEVIEWS_OUTPUT",
        "PAGEVIEWS_HTTP",
        "PAGEVIEWS_PIPELINE_ID",
        "PAGEVIEWS_INSTANCE_ID",
        "PAGEVIEWS_WORKERS",
        "PAGEVIEWS_ON_OFFSET_RESET",
        "PAGEVIEWS_LOG_FORMAT",
        "PAGEVIEWS_MAX_FUTURE",
        "PAGEVIEWS_STORAGE_RETRY_TIMEOUT",
        "PAGEVIEWS_CATALOG",
        "PAGEVIEWS_NAMESPACE",
        "PAGEVIEWS_CATALOG_WAREHOUSE",
        "PAGEVIEWS_CATALOG_TOKEN",
        "PAGEVIEWS_CATALOG_CREDENTIAL",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// How many kills a kill -9 test makes: `default`, or `PAGEVIEWS_SOAK_KILLS` (scripts/soak
/// raises it outside CI).
pub fn soak_kills(default: usize) -> usize {
    std::env::var("PAGEVIEWS_SOAK_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Polls `cond` until it holds, failing the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    assert!(poll_until(timeout, cond), "timed out after {timeout:?} waiting for {what}");
}

/// Polls `cond` every 5 ms until it holds (true) or `timeout` passes (false).
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// GET `path` from `addr` over a plain socket: (status code, body).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    http_get_with(addr, path, &[])
}

/// GET `path` from `addr` with extra request headers: (status code, body). Reads a chunked
/// body too (Prometheus's API answers large results that way).
pub fn http_get_with(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    try_http_get(addr, path, headers).unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"))
}

/// [`http_get_with`] for a server that may be gone: an I/O error instead of a panic.
pub fn try_http_get(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    s.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(body) } else { body.to_string() };
    Ok((code, body))
}

/// The payload of a `Transfer-Encoding: chunked` body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].strip_prefix("\r\n").unwrap_or(&rest[size..]);
    }
    out
}

/// The value of metric `name` in Prometheus text: summed over all its series (every label
/// set), `None` when it has none.
pub fn metric(body: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = body
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.rsplit_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.trim().parse::<f64>().ok()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Percent-encodes `s` for a URL query value (everything but RFC 3986's unreserved
/// characters).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A small deterministic random number source, so a failing kill schedule can be replayed.
pub struct Lcg(pub u64);

impl Lcg {
    /// From the clock, printed so a failure can be reproduced with `PAGEVIEWS_TEST_SEED`.
    pub fn from_env_or_clock() -> Self {
        let seed =
            std::env::var("PAGEVIEWS_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64)
            });
        eprintln!("kill schedule seed: PAGEVIEWS_TEST_SEED={seed}");
        Lcg(seed)
    }

    /// Next value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

/// A loopback address with a port nothing listened on a moment ago, for a child process's
/// `--http` (the child cannot hand back the port it bound; in-process runs use
/// `RunHandle::http_addr` instead).
pub fn free_loopback_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("its address")
}
