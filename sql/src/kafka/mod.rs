//! The Kafka topics as tables: schema `kafka`, one table per `--topic`, read with the
//! pipeline's decoder.
//!
//! ```text
//!  topic ──> reader.rs (librdkafka consumer, no group: nothing is committed) ──> decode
//!            (pageviews_core::event: the pipeline's decoder and EventTimeBounds)
//!              ├─ valid  ──> rows: the event's four columns as page_views types them,
//!              │             plus "partition", "offset", kafka_timestamp
//!              └─ invalid ─> skipped, counted per dead-letter reason (never an error)
//!  batch mode:     scan.rs reads each partition from its earliest offset to the end offset
//!                  it had when the statement started, then ends
//!  streaming mode: crate::stream follows the topic until the statement is stopped
//! ```
//!
//! A bad record is what the pipeline would write to dead_letters: it is left out and
//! counted, and the count is reported after the statement (or live, in streaming mode).

mod reader;
mod scan;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, Session as CatalogSession};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::streaming::StreamingTableExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use pageviews_core::event::{EventTimeBounds, Reason};
use pageviews_core::table::Table;
use thiserror::Error;

pub(crate) use reader::{Start, TopicReader};

/// The schema the topics' tables are registered in: `kafka.page_views`.
pub const SCHEMA: &str = "kafka";

/// The metadata columns after the event's own: where the record is, and Kafka's timestamp.
pub const METADATA_COLUMNS: [&str; 3] = ["partition", "offset", "kafka_timestamp"];

/// How to reach the topics and decode their records: what `pageviews run` is given.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// Bootstrap servers.
    pub brokers: String,
    /// The topics, each a table of schema `kafka`.
    pub topics: Vec<String>,
    /// librdkafka properties (`--kafka-option`), applied over ours.
    pub options: Vec<(String, String)>,
    /// Which event times are taken (`--max-future`; the pipeline's default window).
    pub bounds: EventTimeBounds,
    /// Longer records are skipped as `oversized` (`--max-record-bytes`).
    pub max_record_bytes: usize,
}

/// Why a topic could not be read.
#[derive(Debug, Error)]
pub enum KafkaError {
    /// The brokers did not answer, or a client could not be made.
    #[error("cannot {what} at Kafka {brokers}: {source}")]
    Kafka {
        /// What was being done.
        what: String,
        /// The bootstrap servers.
        brokers: String,
        /// librdkafka's error (boxed: it is large, and errors travel in every `Result`).
        source: Box<rdkafka::error::KafkaError>,
    },
    /// The brokers refused the client's credentials or TLS.
    #[error("Kafka at {brokers} refused the connection: {cause}")]
    Refused {
        /// The bootstrap servers.
        brokers: String,
        /// librdkafka's reason.
        cause: String,
    },
    /// The decoded rows did not make a batch of the table's schema.
    #[error("cannot build a batch of the topic's rows: {0}")]
    Batch(#[from] datafusion::arrow::error::ArrowError),
    /// The topic does not exist.
    #[error("topic {topic} does not exist at Kafka {brokers}")]
    NoTopic {
        /// The topic.
        topic: String,
        /// The bootstrap servers.
        brokers: String,
    },
}

/// Records left out because the pipeline would have made them dead letters, per reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skips([u64; Reason::ALL.len()]);

impl Skips {
    /// One more record skipped for `reason`.
    pub fn add(&mut self, reason: Reason) {
        self.0[reason as usize] += 1;
    }

    /// Every skipped record.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &Skips) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }

    /// The records skipped for `reason`.
    pub fn of(&self, reason: Reason) -> u64 {
        self.0[reason as usize]
    }
}

impl std::fmt::Display for Skips {
    /// `3 records skipped (invalid_json 2, missing_field 1)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total = self.total();
        write!(f, "{total} record{} skipped (", if total == 1 { "" } else { "s" })?;
        let mut first = true;
        for reason in Reason::ALL {
            let n = self.of(reason);
            if n > 0 {
                write!(f, "{}{} {n}", if first { "" } else { ", " }, reason.as_str())?;
                first = false;
            }
        }
        write!(f, ")")
    }
}

/// What the scans of one table skipped in the statement being run: each scan has its slot,
/// and a statement that reads the table twice (a self-join) reports the larger, not the sum.
#[derive(Debug, Default)]
pub(crate) struct SkipLog(Mutex<Vec<Skips>>);

impl SkipLog {
    /// A slot for a new scan.
    fn start(&self) -> usize {
        let mut slots = self.0.lock().unwrap_or_else(|e| e.into_inner());
        slots.push(Skips::default());
        slots.len() - 1
    }

    fn add(&self, slot: usize, skips: &Skips) {
        if let Some(s) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get_mut(slot) {
            s.merge(skips);
        }
    }

    /// What the statement's scans skipped, forgetting them for the next statement.
    pub(crate) fn take(&self) -> Option<Skips> {
        let slots = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        slots.into_iter().filter(|s| s.total() > 0).max_by_key(Skips::total)
    }
}

/// The columns of a topic's table: page_views' four, typed as the committed tables are,
/// then the metadata columns.
pub fn topic_schema() -> SchemaRef {
    let mut fields: Vec<Field> =
        crate::catalog::file_schema(Table::PageViews).fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(METADATA_COLUMNS[0], DataType::Int64, false));
    fields.push(Field::new(METADATA_COLUMNS[1], DataType::Int64, false));
    fields.push(Field::new(METADATA_COLUMNS[2], DataType::Timestamp(TimeUnit::Millisecond, None), true));
    Arc::new(Schema::new(fields))
}

/// One topic as a table. A scan reads it from the start to the end offsets of the moment
/// the statement runs; a streaming statement follows it instead (`crate::stream`).
#[derive(Debug)]
pub struct KafkaTable {
    topic: String,
    settings: Arc<KafkaSettings>,
    schema: SchemaRef,
    skipped: Arc<SkipLog>,
}

impl KafkaTable {
    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// How to reach it.
    pub fn settings(&self) -> &KafkaSettings {
        &self.settings
    }

    /// What the scans of this table skipped since the last call.
    pub(crate) fn take_skipped(&self) -> Option<Skips> {
        self.skipped.take()
    }
}

#[async_trait]
impl TableProvider for KafkaTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let stream = scan::BoundedScan::new(
            self.topic.clone(),
            self.settings.clone(),
            self.schema.clone(),
            self.skipped.clone(),
        );
        let exec = StreamingTableExec::try_new(
            self.schema.clone(),
            vec![Arc::new(stream)],
            projection,
            [],
            false,
            limit,
        )?;
        Ok(Arc::new(exec))
    }
}

/// Registers schema `kafka` with one table per topic in `ctx`; returns the tables.
pub fn register(ctx: &SessionContext, settings: KafkaSettings) -> DfResult<Vec<Arc<KafkaTable>>> {
    let settings = Arc::new(settings);
    let schema = Arc::new(MemorySchemaProvider::new());
    let mut tables = Vec::new();
    for topic in &settings.topics {
        let table = Arc::new(KafkaTable {
            topic: topic.clone(),
            settings: settings.clone(),
            schema: topic_schema(),
            skipped: Arc::default(),
        });
        schema.register_table(topic.clone(), table.clone())?;
        tables.push(table);
    }
    let catalog = ctx.catalog("datafusion").ok_or_else(|| {
        datafusion::error::DataFusionError::Internal("the session has no default catalog".into())
    })?;
    catalog.register_schema(SCHEMA, schema)?;
    Ok(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_say_how_many_and_why() {
        let mut s = Skips::default();
        s.add(Reason::InvalidJson);
        s.add(Reason::MissingField);
        s.add(Reason::InvalidJson);
        assert_eq!(s.to_string(), "3 records skipped (invalid_json 2, missing_field 1)");
        let log = SkipLog::default();
        let (a, b) = (log.start(), log.start());
        log.add(a, &s);
        log.add(b, &Skips::default());
        assert_eq!(log.take(), Some(s), "a self-join's two scans report one table's records once");
        assert_eq!(log.take(), None);
    }

    #[test]
    fn a_topic_has_page_views_columns_then_its_metadata() {
        let names: Vec<String> = topic_schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(
            names,
            ["user_id", "postcode", "timestamp", "webpage", "partition", "offset", "kafka_timestamp"]
        );
    }
}
