//! The shared test kit, plus the one helper that needs this crate's binary path.
#![allow(dead_code, unused_imports)]

pub use pageviews_testkit::*;

/// The `pageviews` binary built for this test run, with flag-default variables removed.
pub fn bin() -> std::process::Command {
    command(env!("CARGO_BIN_EXE_pageviews"))
}
