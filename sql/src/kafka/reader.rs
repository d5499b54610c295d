//! Reading a topic: a librdkafka consumer of assigned partitions, polled from one thread,
//! its records decoded into Arrow batches of valid page views with their positions.
//!
//! The consumer joins no group and commits nothing: reading a topic from `pageviews sql`
//! leaves no trace on the brokers. Its prefetch is bounded as the pipeline's is
//! (`pageviews_kafka::prefetch_bounds`), so memory does not grow with the partitions.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{ArrayRef, Int64Builder, StringBuilder, TimestampMillisecondBuilder};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use pageviews_core::event::{decode, DecodeError, PageView};
use pageviews_kafka::FatalErrors;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError as RdKafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Message;

use super::{KafkaError, KafkaSettings, Skips};

/// How long a metadata or offsets request may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// Where each partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// Its first record still in the topic.
    Earliest,
    /// Its end: only records produced from now on.
    Latest,
}

/// What one poll brought.
#[derive(Debug)]
pub(crate) struct Polled {
    /// The valid page views, in the table's schema, in the order they were read.
    pub batch: RecordBatch,
    /// Records left out, per reason.
    pub skipped: Skips,
    /// Partitions read to their end since the last poll, with no record after.
    pub ended: Vec<i32>,
    /// Per partition that delivered records, the offset after the last one (whether it was
    /// valid, bad, or past a batch statement's end).
    pub read_to: BTreeMap<i32, i64>,
}

/// A consumer of one topic's partitions.
pub(crate) struct TopicReader {
    consumer: BaseConsumer<FatalErrors>,
    topic: String,
    brokers: String,
    partitions: Vec<i32>,
    rows: Rows,
    schema: SchemaRef,
    max_record_bytes: usize,
    bounds: pageviews_core::event::EventTimeBounds,
}

impl TopicReader {
    /// A consumer of `topic`, with the topic's partitions looked up; nothing assigned yet.
    pub(crate) fn open(settings: &KafkaSettings, topic: &str, schema: SchemaRef) -> Result<Self, KafkaError> {
        let kafka = |what: &str, source| KafkaError::Kafka {
            what: what.to_string(),
            brokers: settings.brokers.clone(),
            source: Box::new(source),
        };
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &settings.brokers)
            .set("client.id", "pageviews-sql")
            // librdkafka needs a group for a consumer even when it only assigns; nothing is
            // committed to it and it never joins.
            .set("group.id", "pageviews-sql")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // Reaching a partition's end is an event: how a batch statement knows it is done
            // and a stream knows a partition is caught up (and may turn idle).
            .set("enable.partition.eof", "true");
        pageviews_kafka::prefetch_bounds(&mut client);
        let consumer: BaseConsumer<FatalErrors> = pageviews_kafka::with_options(client, &settings.options)
            .create_with_context(FatalErrors::default())
            .map_err(|e| kafka("create a consumer", e))?;
        let metadata = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT);
        if metadata.is_err() {
            // An authentication failure reaches the context's callback only when the client
            // is polled; unserved, it would show as a transport failure.
            let _ = consumer.poll(Duration::from_millis(100));
        }
        if let Some(cause) = consumer.context().take() {
            return Err(KafkaError::Refused { brokers: settings.brokers.clone(), cause });
        }
        let metadata = metadata.map_err(|e| kafka("read the metadata of the topic", e))?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().iter().map(|p| p.id()).collect())
            .unwrap_or_default();
        if partitions.is_empty() {
            return Err(KafkaError::NoTopic { topic: topic.to_string(), brokers: settings.brokers.clone() });
        }
        Ok(TopicReader {
            consumer,
            topic: topic.to_string(),
            brokers: settings.brokers.clone(),
            partitions,
            rows: Rows::default(),
            schema,
            max_record_bytes: settings.max_record_bytes,
            bounds: settings.bounds,
        })
    }

    /// The topic's partitions, as its metadata said when the reader opened.
    pub(crate) fn partitions(&self) -> &[i32] {
        &self.partitions
    }

    /// Each partition's end offset now: the offset the next record will have.
    pub(crate) fn end_offsets(&self) -> Result<BTreeMap<i32, i64>, KafkaError> {
        self.partitions
            .iter()
            .map(|&p| {
                let (_, high) = self
                    .consumer
                    .fetch_watermarks(&self.topic, p, METADATA_TIMEOUT)
                    .map_err(|e| self.error("read the end offsets of the topic", e))?;
                Ok((p, high))
            })
            .collect()
    }

    /// Reads every partition from `start`. `Latest` is each partition's end offset now, asked
    /// of the brokers before this returns: a record produced after it is read.
    pub(crate) fn assign(&self, start: Start) -> Result<(), KafkaError> {
        let ends = match start {
            Start::Earliest => None,
            Start::Latest => Some(self.end_offsets()?),
        };
        let mut list = TopicPartitionList::new();
        for &p in &self.partitions {
            let offset = match ends.as_ref().and_then(|e| e.get(&p)) {
                Some(end) => Offset::Offset(*end),
                None => Offset::Beginning,
            };
            list.add_partition_offset(&self.topic, p, offset).map_err(|e| self.error("assign", e))?;
        }
        self.consumer.assign(&list).map_err(|e| self.error("assign the topic's partitions", e))
    }

    /// Stops fetching `partition` (read as far as a statement needs).
    pub(crate) fn pause(&self, partition: i32) -> Result<(), KafkaError> {
        let mut list = TopicPartitionList::new();
        list.add_partition(&self.topic, partition);
        self.consumer.pause(&list).map_err(|e| self.error("pause a partition", e))
    }

    /// Reads up to `max` records, waiting at most `wait` for the first. Records at or past
    /// `until[partition]` are left out (a batch statement's end offsets).
    pub(crate) fn poll(
        &mut self,
        max: usize,
        wait: Duration,
        until: Option<&BTreeMap<i32, i64>>,
    ) -> Result<Polled, KafkaError> {
        let deadline = Instant::now() + wait;
        let wall_ms = wall_clock_ms();
        let mut skipped = Skips::default();
        let mut ended = Vec::new();
        let mut read_to = BTreeMap::new();
        let mut read = 0;
        while read < max {
            let timeout =
                if read == 0 { deadline.saturating_duration_since(Instant::now()) } else { Duration::ZERO };
            match self.consumer.poll(timeout) {
                None => break,
                Some(Ok(msg)) => {
                    read += 1;
                    let (p, offset) = (msg.partition(), msg.offset());
                    ended.retain(|e| *e != p);
                    read_to.insert(p, offset + 1);
                    if until.and_then(|u| u.get(&p)).is_some_and(|end| offset >= *end) {
                        continue;
                    }
                    let payload = msg.payload().unwrap_or_default();
                    match self.decode(payload, wall_ms) {
                        Ok(pv) => self.rows.push(&pv, p, offset, msg.timestamp().to_millis()),
                        Err(e) => skipped.add(e.reason()),
                    }
                }
                Some(Err(RdKafkaError::PartitionEOF(p))) => ended.push(p),
                Some(Err(_)) => {
                    if let Some(cause) = self.consumer.context().take() {
                        return Err(KafkaError::Refused { brokers: self.brokers.clone(), cause });
                    }
                    // Transport trouble, which librdkafka rides out by itself.
                    if Instant::now() >= deadline {
                        break;
                    }
                }
            }
        }
        if let Some(cause) = self.consumer.context().take() {
            return Err(KafkaError::Refused { brokers: self.brokers.clone(), cause });
        }
        let batch = self.rows.finish(&self.schema)?;
        Ok(Polled { batch, skipped, ended, read_to })
    }

    /// The pipeline's decoding of a record, with its checks of the event time.
    fn decode<'a>(&self, payload: &'a [u8], wall_ms: i64) -> Result<PageView<'a>, DecodeError> {
        decode(payload, self.max_record_bytes).and_then(|pv| self.bounds.check(pv, wall_ms))
    }

    fn error(&self, what: &str, source: RdKafkaError) -> KafkaError {
        KafkaError::Kafka { what: what.to_string(), brokers: self.brokers.clone(), source: Box::new(source) }
    }
}

/// This machine's wall clock, UTC ms: what the pipeline checks `--max-future` against.
fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Columns being built from decoded page views.
#[derive(Default)]
struct Rows {
    user_id: Int64Builder,
    postcode: StringBuilder,
    timestamp: TimestampMillisecondBuilder,
    webpage: StringBuilder,
    partition: Int64Builder,
    offset: Int64Builder,
    kafka_timestamp: TimestampMillisecondBuilder,
}

impl Rows {
    fn push(&mut self, pv: &PageView<'_>, partition: i32, offset: i64, kafka_ms: Option<i64>) {
        self.user_id.append_value(pv.user_id);
        self.postcode.append_value(&pv.postcode);
        self.timestamp.append_value(pv.timestamp);
        self.webpage.append_value(&pv.webpage);
        self.partition.append_value(i64::from(partition));
        self.offset.append_value(offset);
        self.kafka_timestamp.append_option(kafka_ms);
    }

    /// The rows so far as a batch of `schema` (the topic's, columns matched by name); the
    /// builders start again empty.
    fn finish(&mut self, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let column: ArrayRef = match field.name().as_str() {
                "user_id" => std::sync::Arc::new(self.user_id.finish()),
                "postcode" => std::sync::Arc::new(self.postcode.finish()),
                "timestamp" => std::sync::Arc::new(self.timestamp.finish()),
                "webpage" => std::sync::Arc::new(self.webpage.finish()),
                "partition" => std::sync::Arc::new(self.partition.finish()),
                "offset" => std::sync::Arc::new(self.offset.finish()),
                "kafka_timestamp" => std::sync::Arc::new(self.kafka_timestamp.finish()),
                other => return Err(ArrowError::SchemaError(format!("no column {other} in a topic"))),
            };
            columns.push(column);
        }
        RecordBatch::try_new(schema.clone(), columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_out_in_the_tables_columns() {
        let mut rows = Rows::default();
        let pv = decode(br#"{"user_id":7,"postcode":"A","webpage":"w","timestamp":1000}"#, 1 << 20).unwrap();
        rows.push(&pv, 2, 41, Some(5));
        rows.push(&pv, 0, 3, None);
        let batch = rows.finish(&super::super::topic_schema()).unwrap();
        let mut out = Vec::new();
        crate::output::write_batches(&mut out, crate::output::Format::Csv, &[batch]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "user_id,postcode,timestamp,webpage,partition,offset,kafka_timestamp\n\
             7,A,1970-01-01 00:00:01.000,w,2,41,1970-01-01 00:00:00.005\n\
             7,A,1970-01-01 00:00:01.000,w,0,3,\n"
        );
        assert_eq!(rows.finish(&super::super::topic_schema()).unwrap().num_rows(), 0, "it starts again");
    }
}
