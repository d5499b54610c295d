//! The shared test kit, plus what needs this crate's binary path: [`bin`], and what the
//! object-store suites share ([`stores`]).
#![allow(dead_code, unused_imports)]

pub mod stores;

pub use pageviews_testkit::*;

/// The `pageviews` binary built for this test run, with flag-default variables removed.
pub fn bin() -> std::process::Command {
    command(env!("CARGO_BIN_EXE_pageviews"))
}
