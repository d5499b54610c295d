//! The generator's flags (shared by `run` and `datagen`) and `datagen`'s own.

use std::time::Duration;

use anyhow::bail;
use clap::Args;

use super::parse::{parse_duration, parse_key_value};
use crate::source::{GeneratorConfig, GeneratorSpec};
use pageviews_core::time::parse_timestamp;

/// The generator's flags, shared by `run` and `datagen` so both make the same stream.
#[derive(Debug, Args)]
pub(crate) struct GeneratorArgs {
    /// Generator: events per second (0 = as fast as possible). Event time advances 1000/N ms
    /// per event (1 ms at 0), so at 0 it runs ahead of the clock.
    #[arg(long, env = "ROWS_PER_SECOND", default_value_t = 1000, value_name = "N")]
    pub(crate) rate: u64,

    /// Generator: the stream's total number of events. A run on an --output that already
    /// holds part of the stream produces only the rest (after a crash too, so N stays N),
    /// and says so and exits when nothing is left; give a larger N to add events.
    #[arg(long, value_name = "N")]
    pub(crate) count: Option<u64>,

    /// Generator: timestamps lie up to N ms before the event's nominal time (at most a
    /// year).
    #[arg(long, env = "MAX_LATE_RECORD", default_value_t = 1000, value_name = "N",
          value_parser = clap::value_parser!(u64).range(..=MAX_LATE_MS))]
    pub(crate) max_late_ms: u64,

    /// Generator: seed for a reproducible stream (default: random for a new output; a run
    /// that resumes a checkpoint continues its stream, and refuses a different --seed).
    #[arg(long, value_name = "N")]
    pub(crate) seed: Option<u64>,

    /// Generator: event time of the first event, e.g. "2020-01-01 00:00:00" (default: now;
    /// with --rate 0 and --count, so that the last event is stamped now). A resumed run
    /// continues its checkpoint's stream, and refuses a different --start-time.
    #[arg(long, value_name = "TIMESTAMP")]
    pub(crate) start_time: Option<String>,

    /// Generator: event time between consecutive events, e.g. "100ms" (default: 1/--rate,
    /// 1 ms at --rate 0). With --rate 0 and --start-time, replays days of event time in
    /// minutes: 100ms is 864,000 events a day.
    #[arg(long, value_name = "DURATION", value_parser = parse_interval)]
    pub(crate) event_interval: Option<Duration>,
}

/// A positive generator interval (the step must advance event time).
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.as_micros() == 0 || d > Duration::from_secs(24 * 3600) {
        return Err("must lie between 1µs and 24h".into());
    }
    Ok(d)
}

/// The largest --max-late-ms: a year, far more than any test of lateness needs, and far
/// from the ends of the supported years.
const MAX_LATE_MS: u64 = 365 * 24 * 3600 * 1000;

impl GeneratorArgs {
    /// True when any generator flag was given explicitly.
    pub(super) fn any_set(&self) -> bool {
        self.count.is_some()
            || self.seed.is_some()
            || self.start_time.is_some()
            || self.event_interval.is_some()
    }

    /// The stream these flags describe, for a new output (unset seed: random; unset start:
    /// now, or with `--rate 0 --count N` now minus N ms so the stream does not run ahead of
    /// the clock).
    pub(crate) fn config(&self) -> anyhow::Result<GeneratorConfig> {
        let mut config = GeneratorConfig {
            rate: self.rate,
            count: self.count,
            max_late_ms: self.max_late_ms,
            seed: self.seed.unwrap_or_else(random_seed),
            start_ms: 0,
            interval_us: self.event_interval.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        };
        config.start_ms = match &self.start_time {
            Some(t) => parse_timestamp(t).map_err(|e| anyhow::anyhow!("--start-time {t:?}: {e}"))?,
            None => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                match (self.rate, self.count) {
                    (0, Some(n)) => {
                        let span_ms = n.saturating_mul(config.step_us()) / 1000;
                        now.saturating_sub(i64::try_from(span_ms).unwrap_or(i64::MAX))
                    }
                    (0, None) => {
                        tracing::warn!(
                            "--rate 0 without --count or --start-time: event time runs ahead of the clock \
                             (one --event-interval per event), and events more than --max-future ahead become \
                             dead letters; give --start-time in the past for long runs"
                        );
                        now
                    }
                    _ => now,
                }
            }
        };
        Ok(config)
    }

    /// [`GeneratorArgs::config`] with which of seed and start time were given, for `run`,
    /// which continues a checkpoint's stream unless told otherwise.
    pub(crate) fn spec(&self) -> anyhow::Result<GeneratorSpec> {
        Ok(GeneratorSpec {
            stream: self.config()?,
            seed_given: self.seed.is_some(),
            start_given: self.start_time.is_some(),
        })
    }
}

/// Flags of `pageviews datagen`.
#[derive(Debug, Args)]
pub struct DatagenArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP", value_name = "HOST:PORT,…")]
    pub(crate) brokers: String,

    /// Target topic; created when missing.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "page_views")]
    pub(crate) topic: String,

    /// Partitions of the topic when datagen creates it.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub(crate) partitions: i32,

    /// The stream to produce (the same generator as `run`'s embedded one).
    #[command(flatten)]
    pub(crate) generator: GeneratorArgs,

    /// Share of records replaced by malformed ones (0.0–1.0), one of each dead-letter kind
    /// in turn, for testing.
    #[arg(long, default_value_t = 0.0, value_name = "RATIO")]
    pub(crate) bad_ratio: f64,

    /// Produce records without a key, each to a random partition, as a producer that does
    /// not key by postcode spreads them. The pipeline then moves each event to the partition
    /// that counts its postcode, through its exchange topic; with datagen's 20 postcodes,
    /// this is also how every partition of a large topic gets events.
    #[arg(long)]
    pub(crate) unkeyed: bool,

    /// A librdkafka property for the producer, e.g. compression.type=lz4; repeatable, and
    /// applied over datagen's own settings.
    #[arg(long = "kafka-option", env = "KAFKA_OPTIONS", value_delimiter = ',', value_parser = parse_key_value, value_name = "KEY=VALUE")]
    pub(crate) kafka_options: Vec<(String, String)>,
}

impl DatagenArgs {
    /// Validates the flags.
    pub fn into_config(self) -> anyhow::Result<crate::datagen::DatagenConfig> {
        if !(0.0..=1.0).contains(&self.bad_ratio) {
            bail!("--bad-ratio must be between 0 and 1, got {}", self.bad_ratio);
        }
        if self.partitions < 1 {
            bail!("--partitions must be at least 1");
        }
        Ok(crate::datagen::DatagenConfig {
            brokers: self.brokers,
            topic: self.topic,
            partitions: self.partitions,
            generator: self.generator.config()?,
            bad_ratio: self.bad_ratio,
            keyed: !self.unkeyed,
            options: self.kafka_options,
        })
    }
}

fn random_seed() -> u64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}
