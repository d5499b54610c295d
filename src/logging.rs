//! Log output: where `tracing` events go and how they look.
//!
//! Logs go to stderr (stdout carries results: `verify`'s report, `sql`'s rows). People read
//! `text`, coloured only when stderr is a terminal, so a file, a pipe or journald never gets
//! ANSI escape codes; log shippers (Vector, Fluent Bit, Loki's promtail) read `json`, one
//! object per line with the level, target, message and fields. `RUST_LOG` filters either
//! (default `info`).

use std::borrow::Cow;
use std::io::{IsTerminal, Write};

use pageviews_core::secrets;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line per event for people; coloured when stderr is a terminal.
    Text,
    /// One JSON object per line (timestamp, level, target, fields), for log shippers.
    Json,
}

/// Installs the process's log subscriber and panic hook. Call once, first thing in `main`.
pub fn init(format: LogFormat) {
    // object_store logs each of its own request retries at info; pageviews logs an outage
    // once (core::storage), so those stay out unless RUST_LOG asks for them.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,object_store=warn"));
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| Scrubbed(std::io::stderr()));
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info.to_string();
        match secrets::scrub(&text) {
            Cow::Borrowed(_) => default(info),
            Cow::Owned(clean) => eprintln!("{clean}"),
        }
    }));
}

/// A log line's writer that blanks out registered secrets: each event arrives in one write.
struct Scrubbed<W>(W);

impl<W: Write> Write for Scrubbed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::str::from_utf8(buf).map(secrets::scrub) {
            Ok(Cow::Owned(clean)) => self.0.write_all(clean.as_bytes()).map(|()| buf.len()),
            _ => self.0.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
