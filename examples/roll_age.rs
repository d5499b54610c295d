//! What `--roll-age` costs and buys: files per hour and file sizes per table, at the
//! generator's 1000 events/s, for several roll ages, in both formats.
//!
//! It runs the real pipeline (generator, windows, writers, checkpoints every 10 s) on
//! virtual processing time: a `ManualClock` moves only when the pipeline waits, and the
//! generator paces itself at 1000 events/s of that time, so an hour of events takes seconds.
//! 65 minutes from 00:00:00 are generated and hour 00, whole, is measured. The generator
//! writes no malformed records, and its timestamps jitter by 1 s against a 5 s watermark
//! delay, so dead_letters and late_page_views stay empty; the two other tables are shown.
//!
//! ```sh
//! cargo run --release --example roll_age             # roll ages 1m, 2m, 5m
//! cargo run --release --example roll_age -- 30s 10m  # others
//! ```

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pageviews::clock::ManualClock;
use pageviews::metrics::Metrics;
use pageviews::sink::Format;
use pageviews::source::GeneratorConfig;
use pageviews::{PipelineConfig, Shutdown, SourceConfig};
use pageviews_core::time::parse_timestamp;

const MINUTES: u64 = 65;

fn main() -> anyhow::Result<()> {
    let ages: Vec<Duration> = match std::env::args().skip(1).collect::<Vec<_>>() {
        args if args.is_empty() => [1, 2, 5].iter().map(|m| Duration::from_secs(m * 60)).collect(),
        args => args.iter().map(|a| humantime::parse_duration(a)).collect::<Result<_, _>>()?,
    };
    println!(
        "| format | --roll-age | table | files in the hour | smallest | median | largest | hour total |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|");
    for format in [Format::Jsonl, Format::Parquet] {
        for age in &ages {
            let dir = tempfile::tempdir()?;
            let started = std::time::Instant::now();
            run(dir.path(), format, *age)?;
            let took = started.elapsed();
            for table in ["page_views", "page_view_aggregates"] {
                let mut sizes = sizes(&dir.path().join(table).join("day=2020-01-01/hour=00"), format)?;
                sizes.sort_unstable();
                let (n, total) = (sizes.len(), sizes.iter().sum::<u64>());
                let pick = |i: usize| sizes.get(i).copied().map_or("-".into(), human);
                println!(
                    "| {} | {} | {table} | {n} | {} | {} | {} | {} |",
                    format.extension(),
                    humantime::format_duration(*age),
                    pick(0),
                    pick(n / 2),
                    pick(n.saturating_sub(1)),
                    human(total),
                );
            }
            eprintln!(
                "{} {}: {MINUTES} min of events in {took:.1?}",
                format.extension(),
                humantime::format_duration(*age)
            );
        }
    }
    Ok(())
}

/// The pipeline at its defaults but for the roll age and format, on virtual time.
fn run(out: &Path, format: Format, roll_age: Duration) -> anyhow::Result<()> {
    let start_ms = parse_timestamp("2020-01-01 00:00:00").map_err(anyhow::Error::msg)?;
    let generator = GeneratorConfig {
        rate: 1000,
        count: Some(MINUTES * 60 * 1000),
        max_late_ms: 1000,
        seed: 1,
        start_ms,
        interval_us: None,
    };
    let mut config =
        PipelineConfig::new(SourceConfig::Generator(generator.into()), out.display().to_string());
    config.files.format = format;
    config.files.roll_age = roll_age;
    config.clock = Arc::new(ManualClock::new(start_ms));
    let metrics = Arc::new(Metrics::new(&config.pipeline_id));
    pageviews::start(config, Shutdown::default(), metrics)?.join()?;
    Ok(())
}

/// Sizes of the table files in `dir`.
fn sizes(dir: &Path, format: Format) -> anyhow::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.path().extension().is_some_and(|e| e == format.extension()) {
            out.push(entry.metadata()?.len());
        }
    }
    Ok(out)
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.0} KiB", b as f64 / (1 << 10) as f64),
        b => format!("{b} B"),
    }
}
