//! Every metric the pipeline exports, defined in one place and passed around as a handle.
//!
//! Names follow Prometheus conventions: base units in the name (`_seconds`, `_bytes`),
//! counters end in `_total` (the encoder appends it), and no label takes values from the
//! data (no postcodes): a series per table, reason, partition is bounded. Every
//! `pageviews_*` series carries a `pipeline` label with the pipeline id (a constant label of
//! the registry), so one Prometheus tells pipelines apart without relabelling; the
//! `process_*` series describe the process and carry none (the dashboards join them to a
//! pipeline through `pageviews_build_info`).
//!
//! The record loop counts into plain integers per batch and adds them here once per batch,
//! so the hot path touches no atomics per record. `/metrics` serves OpenMetrics to clients
//! that ask for it (Prometheus does) and the classic text format otherwise (`text`).

mod process;
mod text;

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::event::Reason;
use pageviews_core::storage::{StorageObserver, StorageRequest};
use pageviews_core::table::Table;

/// Label set naming a table.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TableLabel {
    /// The table's name.
    pub(crate) table: &'static str,
}

/// Label set naming a Kafka partition.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PartitionLabel {
    /// The topic.
    pub(crate) topic: String,
    /// The partition.
    pub(crate) partition: i32,
}

/// Label set naming a kind of reader: `sql` (every committed row) or `folders` (rolled files).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReaderLabel {
    /// `sql` or `folders`.
    pub(crate) reader: &'static str,
}

/// Label set naming a kind of object-store request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabel {
    /// `put`, `get`, `list`, `upload_part`… ([`StorageRequest::as_str`]).
    pub(crate) op: &'static str,
}

/// Label set naming a dead-letter reason.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    /// The reason label, e.g. `invalid_json`.
    pub(crate) reason: &'static str,
}

/// The pipeline's metrics and the registry that exports them.
pub struct Metrics {
    registry: Registry,
    pipeline: String,
    /// Records read from the source.
    pub records_read: Counter,
    /// Records decoded into page views.
    pub(crate) records_accepted: Counter,
    /// Records sent to dead_letters, by reason.
    pub(crate) dead_letters: Family<ReasonLabel, Counter>,
    /// Valid events that arrived after their window was emitted.
    pub late_events: Counter,
    /// Rows committed, by table.
    pub(crate) rows_committed: Family<TableLabel, Counter>,
    /// Files committed and visible, by table.
    pub(crate) files_committed: Family<TableLabel, Counter>,
    /// Files being written (committed rows, not yet visible), by table.
    pub(crate) open_files: Family<TableLabel, Gauge>,
    /// Bytes committed, by table.
    pub(crate) bytes_committed: Family<TableLabel, Counter>,
    /// Checkpoints committed.
    pub checkpoints: Counter,
    /// Time from closing files to the published log entry.
    pub(crate) checkpoint_duration: Histogram,
    /// Pipeline watermark, as Unix seconds.
    pub(crate) watermark: Gauge<f64, AtomicU64>,
    /// Unix time of the last committed checkpoint.
    pub(crate) last_checkpoint: Gauge<f64, AtomicU64>,
    /// Windows counted but not yet emitted.
    pub(crate) open_windows: Gauge,
    /// Kafka consumer lag per partition (messages), from librdkafka's statistics.
    pub(crate) kafka_consumer_lag: Family<PartitionLabel, Gauge>,
    /// Checkpoint positions that did not fit their partition, by `--on-offset-reset` decision.
    pub(crate) kafka_offset_resets: Family<OffsetResetLabel, Counter>,
    /// The configured checkpoint interval, so alerts can judge checkpoint age against it.
    pub(crate) checkpoint_interval: Gauge<f64, AtomicU64>,
    /// Wall clock minus the newest page_views event time each kind of reader sees.
    pub(crate) freshness: Family<ReaderLabel, Gauge<f64, AtomicU64>>,
    /// 1 while storage calls are failing and being retried, else 0.
    pub(crate) storage_retrying: Gauge,
    /// Storage calls tried again after a failure that passes.
    pub(crate) storage_retries: Counter,
    /// Requests sent to the object store, by kind.
    pub(crate) storage_requests: Family<RequestLabel, Counter>,
    /// Time from reading the commit log for an entry to appending it, lost races included.
    pub(crate) log_append_duration: Histogram,
    /// Create-only log appends that lost their version to another member.
    pub(crate) log_conflicts: Counter,
}

/// Labels of [`Metrics::kafka_offset_resets`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OffsetResetLabel {
    /// The partition.
    pub(crate) partition: i32,
    /// `fail`, `earliest` or `latest`.
    pub(crate) decision: String,
}

/// The version of this build, as `pageviews_build_info` reports it.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");

impl Metrics {
    /// Creates and registers every metric, labelled with pipeline id `pipeline` (the run's
    /// `--pipeline-id`; [`crate::start`] refuses a handle made for another id).
    pub fn new(pipeline: &str) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(process::ProcessCollector));
        let m = Metrics {
            records_read: Counter::default(),
            records_accepted: Counter::default(),
            dead_letters: Family::default(),
            late_events: Counter::default(),
            rows_committed: Family::default(),
            files_committed: Family::default(),
            open_files: Family::default(),
            bytes_committed: Family::default(),
            checkpoints: Counter::default(),
            checkpoint_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            watermark: Gauge::default(),
            last_checkpoint: Gauge::default(),
            open_windows: Gauge::default(),
            kafka_consumer_lag: Family::default(),
            kafka_offset_resets: Family::default(),
            checkpoint_interval: Gauge::default(),
            freshness: Family::default(),
            storage_retrying: Gauge::default(),
            storage_retries: Counter::default(),
            storage_requests: Family::default(),
            log_append_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            log_conflicts: Counter::default(),
            registry: Registry::default(),
            pipeline: pipeline.to_string(),
        };
        let r = registry.sub_registry_with_label(("pipeline".into(), pipeline.to_string().into()));
        r.register(
            "pageviews_build",
            "The build of pageviews serving this pipeline (always 1)",
            Info::new(vec![("version", VERSION)]),
        );
        r.register("pageviews_records_read", "Records read from the source", m.records_read.clone());
        r.register(
            "pageviews_records_accepted",
            "Records decoded into page views",
            m.records_accepted.clone(),
        );
        r.register(
            "pageviews_dead_letters",
            "Records written to dead_letters, by reason",
            m.dead_letters.clone(),
        );
        r.register(
            "pageviews_late_events",
            "Events that arrived after their window was emitted",
            m.late_events.clone(),
        );
        r.register("pageviews_rows_committed", "Rows committed, by table", m.rows_committed.clone());
        r.register(
            "pageviews_files_committed",
            "Files rolled and made visible, by table",
            m.files_committed.clone(),
        );
        r.register(
            "pageviews_open_files",
            "Files still being written (their rows are committed, not yet visible), by table",
            m.open_files.clone(),
        );
        r.register("pageviews_bytes_committed", "Bytes committed, by table", m.bytes_committed.clone());
        r.register("pageviews_checkpoints", "Checkpoints committed", m.checkpoints.clone());
        r.register(
            "pageviews_checkpoint_duration_seconds",
            "Time to close files, write the log entry and publish",
            m.checkpoint_duration.clone(),
        );
        r.register("pageviews_watermark_seconds", "Pipeline watermark (Unix seconds)", m.watermark.clone());
        r.register(
            "pageviews_last_checkpoint_timestamp_seconds",
            "When the tables last caught up with everything read: a checkpoint committed, or \
             one fell due with nothing new to commit (Unix seconds)",
            m.last_checkpoint.clone(),
        );
        r.register(
            "pageviews_checkpoint_interval_seconds",
            "How often the pipeline checkpoints (--checkpoint-interval)",
            m.checkpoint_interval.clone(),
        );
        r.register("pageviews_open_windows", "Windows counted but not yet emitted", m.open_windows.clone());
        r.register(
            "pageviews_kafka_consumer_lag",
            "Messages behind the end of each Kafka partition",
            m.kafka_consumer_lag.clone(),
        );
        r.register(
            "pageviews_kafka_offset_resets",
            "Checkpoint positions that did not fit their Kafka partition (topic recreated or truncated), by --on-offset-reset decision",
            m.kafka_offset_resets.clone(),
        );
        r.register(
            "pageviews_freshness_seconds",
            "Wall clock minus the newest page_views event time a reader sees: reader=sql is every \
             committed row (pageviews sql), reader=folders the rows of rolled files (DuckDB, Spark, \
             pyarrow on the table folders); absent until a page view is committed",
            m.freshness.clone(),
        );
        r.register(
            "pageviews_storage_retrying",
            "1 while storage calls fail for a passing reason (timeouts, 5xx, throttling, refused connections) and are retried",
            m.storage_retrying.clone(),
        );
        r.register(
            "pageviews_storage_retries",
            "Storage calls tried again after a failure that passes",
            m.storage_retries.clone(),
        );
        r.register(
            "pageviews_storage_requests",
            "Requests sent to the object store (none for a local disk), by kind: put, create_upload, \
             upload_part, complete_upload, abort_upload, get, head, list (a page), delete, other",
            m.storage_requests.clone(),
        );
        r.register(
            "pageviews_log_append_duration_seconds",
            "Time from reading the commit log for an entry (a claim or a checkpoint) to its \
             create-only append, lost races included",
            m.log_append_duration.clone(),
        );
        r.register(
            "pageviews_log_conflicts",
            "Create-only commit-log appends that lost their version to another member and were \
             tried again at the next one",
            m.log_conflicts.clone(),
        );
        // Zero-valued series exist from the start, so dashboards and rate() see every label.
        for reason in Reason::ALL {
            let _ = m.dead_letters.get_or_create(&ReasonLabel { reason: reason.as_str() });
        }
        for kind in StorageRequest::ALL {
            let _ = m.storage_requests.get_or_create(&RequestLabel { op: kind.as_str() });
        }
        for table in Table::ALL {
            let label = TableLabel { table: table.name() };
            let _ = m.rows_committed.get_or_create(&label);
            let _ = m.files_committed.get_or_create(&label);
            let _ = m.open_files.get_or_create(&label);
            let _ = m.bytes_committed.get_or_create(&label);
        }
        Metrics { registry, ..m }
    }

    /// The pipeline id every `pageviews_*` series is labelled with.
    pub(crate) fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// The OpenMetrics text exposition (what Prometheus asks for).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The classic Prometheus text exposition (format 0.0.4), for clients that do not ask
    /// for OpenMetrics: `curl`, `promtool check metrics`, older scrapers.
    pub(crate) fn encode_text(&self) -> String {
        text::from_openmetrics(&self.encode())
    }
}

/// Storage outages, requests and log appends, reported by `pageviews-core`'s storage and
/// commit log (which do not know prometheus-client).
impl StorageObserver for Metrics {
    fn retry(&self, _op: &'static str) {
        self.storage_retries.inc();
    }

    fn outage(&self, ongoing: bool) {
        self.storage_retrying.set(i64::from(ongoing));
    }

    fn request(&self, kind: StorageRequest) {
        self.storage_requests.get_or_create(&RequestLabel { op: kind.as_str() }).inc();
    }

    fn log_conflict(&self) {
        self.log_conflicts.inc();
    }

    fn log_appended(&self, took: std::time::Duration) {
        self.log_append_duration.observe(took.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pageviews_series_carries_the_pipeline_label_and_process_series_none() {
        let m = Metrics::new("eu-1");
        m.records_read.inc_by(3);
        let text = m.encode();
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(samples.contains(&"pageviews_records_read_total{pipeline=\"eu-1\"} 3"), "{text}");
        for line in &samples {
            if line.starts_with("pageviews_") {
                assert!(line.contains("pipeline=\"eu-1\""), "no pipeline label: {line}");
            } else {
                assert!(line.starts_with("process_"), "unexpected series {line}");
                assert!(!line.contains("pipeline="), "process series are per process: {line}");
            }
        }
        let build = format!("pageviews_build_info{{pipeline=\"eu-1\",version=\"{VERSION}\"}} 1");
        assert!(samples.contains(&build.as_str()), "{text}");
    }

    #[test]
    fn what_core_reports_reaches_the_requests_and_log_series() {
        let m = Metrics::new("p");
        m.request(StorageRequest::UploadPart);
        m.request(StorageRequest::UploadPart);
        m.log_conflict();
        m.log_appended(std::time::Duration::from_millis(30));
        let text = m.encode();
        for want in [
            "pageviews_storage_requests_total{pipeline=\"p\",op=\"upload_part\"} 2",
            "pageviews_storage_requests_total{pipeline=\"p\",op=\"list\"} 0",
            "pageviews_log_conflicts_total{pipeline=\"p\"} 1",
            "pageviews_log_append_duration_seconds_count{pipeline=\"p\"} 1",
        ] {
            assert!(text.lines().any(|l| l == want), "{want} in {text}");
        }
    }
}
