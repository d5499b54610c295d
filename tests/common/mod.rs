//! The shared test kit, plus what needs this crate's binary path: [`bin`], and what the
//! object-store suites share ([`stores`]).
#![allow(dead_code, unused_imports)]

pub mod stores;

pub use pageviews_testkit::*;

/// The `pageviews` binary built for this test run, with flag-default variables removed.
pub fn bin() -> std::process::Command {
    command(env!("CARGO_BIN_EXE_pageviews"))
}

/// Sends this process's logs to the test's captured output, printed when a test fails:
/// in-process instances name themselves in each line (`worker{member=…}`). `RUST_LOG`
/// filters (default `info`).
pub fn capture_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,object_store=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}
