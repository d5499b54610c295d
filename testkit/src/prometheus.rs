//! A real Prometheus for the tests (scripts/prom-local, Debian's binary, our
//! deploy/prometheus config and alerts), in a state folder of the test's own, and its HTTP
//! API.

use std::net::SocketAddr;
use std::process::Stdio;

use serde_json::Value;

use crate::{http_get, url_encode, workspace};

/// A Prometheus of a test's own; stopped (by its pid, through prom-local) when dropped.
pub struct Prometheus {
    dir: tempfile::TempDir,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Prometheus {
    /// Starts one with the project's config and rules and no targets yet.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = prom_local(dir.path(), &["start"]);
        let addr = url
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("scripts/prom-local start printed {url:?}, not http://HOST:PORT"));
        Prometheus { dir, addr }
    }

    /// Scrapes `address` (`HOST:PORT`) as job `job` (`pageviews` or `kafka`), under `name`.
    pub fn target(&self, job: &str, address: &str, name: &str) {
        prom_local(self.dir.path(), &["target", job, address, name]);
    }

    /// GET an API path; the parsed `data` of a successful answer, or the error it gave.
    pub fn api(&self, path_and_query: &str) -> Result<Value, String> {
        let (code, body) = http_get(self.addr, path_and_query);
        let v: Value =
            serde_json::from_str(&body).map_err(|e| format!("HTTP {code}, not JSON ({e}): {body}"))?;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"].clone())
    }

    /// An instant query: its result (a vector's samples, or a scalar as one element).
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(expr)))?;
        match data["resultType"].as_str() {
            Some("vector") | Some("matrix") => Ok(data["result"].as_array().cloned().unwrap_or_default()),
            _ => Ok(vec![data["result"].clone()]),
        }
    }

    /// The active targets: (job, scrape URL, health).
    pub fn targets(&self) -> Vec<(String, String, String)> {
        let data = self.api("/api/v1/targets?state=active").unwrap_or(Value::Null);
        let targets = data["activeTargets"].as_array().cloned().unwrap_or_default();
        targets
            .iter()
            .map(|t| {
                let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
                (s(&t["labels"]["job"]), s(&t["scrapeUrl"]), s(&t["health"]))
            })
            .collect()
    }

    /// Alerts that are pending or firing: (name, state, labels).
    pub fn alerts(&self) -> Vec<(String, String, Value)> {
        let data = self.api("/api/v1/alerts").unwrap_or(Value::Null);
        let alerts = data["alerts"].as_array().cloned().unwrap_or_default();
        alerts
            .into_iter()
            .map(|a| {
                let name = a["labels"]["alertname"].as_str().unwrap_or_default().to_string();
                (name, a["state"].as_str().unwrap_or_default().to_string(), a["labels"].clone())
            })
            .collect()
    }

    /// When each rule group was last evaluated (RFC 3339), by group name.
    pub fn rule_evaluations(&self) -> Vec<(String, String)> {
        let data = self.api("/api/v1/rules").unwrap_or(Value::Null);
        let groups = data["groups"].as_array().cloned().unwrap_or_default();
        groups
            .iter()
            .map(|g| {
                let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
                (s(&g["name"]), s(&g["lastEvaluation"]))
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        prom_local(self.dir.path(), &["stop"]);
    }
}

/// Runs scripts/prom-local with `dir` as its state folder; its last line of output.
fn prom_local(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(workspace().join("scripts/prom-local"))
        .current_dir(workspace())
        .args(args)
        .env("PROM_LOCAL_DIR", dir)
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/prom-local");
    assert!(out.status.success(), "scripts/prom-local {args:?} failed: {}", out.status);
    String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string()
}
