//! A real browser for the tests: Debian's headless Chromium (scripts/setup installs it),
//! kept off the network except for the page it is pointed at, with a fresh profile per run.

use std::process::Command;
use std::time::Duration;

/// Flags that make Chromium run headless as root in a container and talk to nothing but
/// the URL it is given (no update checks, sync, field trials or QUIC probes).
pub const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// The Chromium binary: `CHROMIUM` if set, else `chromium` on PATH.
pub fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".to_string())
}

/// Loads `url`, lets its scripts run for `budget` of virtual time (fetches complete within
/// it: Chromium advances virtual time only while the network is idle), and returns the DOM
/// as serialised HTML.
pub fn dump_dom(url: &str, budget: Duration) -> String {
    let profile = tempfile::tempdir().expect("a temp dir for the browser profile");
    let out = Command::new(chromium())
        .args(CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={}", budget.as_millis()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {}: {e}; run scripts/setup (it installs chromium)", chromium())
        });
    assert!(
        out.status.success(),
        "chromium --dump-dom {url} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of every element carrying a `data-k="KEY"` attribute, in document order:
/// (key, text). The status page marks each value it shows this way.
pub fn data_values(dom: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(at) = rest.find("data-k=\"") {
        rest = &rest[at + "data-k=\"".len()..];
        let Some(end) = rest.find('"') else { break };
        let key = rest[..end].to_string();
        let Some(open) = rest.find('>') else { break };
        let text_end = rest[open + 1..].find('<').map_or(rest.len(), |i| open + 1 + i);
        out.push((key, unescape(&rest[open + 1..text_end])));
        rest = &rest[text_end..];
    }
    out
}

/// The entities Chromium writes in text nodes.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&nbsp;", "\u{a0}").replace("&amp;", "&")
}
