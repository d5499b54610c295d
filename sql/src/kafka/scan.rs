//! A batch statement's scan of a topic: every partition from its earliest offset to the end
//! offset it had when the scan started, then the end.
//!
//! The consumer runs on a thread of its own and hands batches of at most the session's
//! batch size over a channel of two, so a scan holds a few batches and librdkafka's bounded
//! prefetch, whatever the topic's size: what sorts, joins and aggregates above it keep
//! counts against the statement's memory budget as for any other table. When the statement
//! stops reading (a LIMIT, an error, Ctrl-C) the channel closes and the thread stops.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use tokio::sync::mpsc;

use super::reader::{Start, TopicReader};
use super::{KafkaError, KafkaSettings, SkipLog};

/// How long one poll waits for records before checking whether the statement still reads.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// One topic read up to the end offsets of the moment [`PartitionStream::execute`] runs.
#[derive(Debug)]
pub(super) struct BoundedScan {
    topic: String,
    settings: Arc<KafkaSettings>,
    schema: SchemaRef,
    skipped: Arc<SkipLog>,
}

impl BoundedScan {
    pub(super) fn new(
        topic: String,
        settings: Arc<KafkaSettings>,
        schema: SchemaRef,
        skipped: Arc<SkipLog>,
    ) -> Self {
        BoundedScan { topic, settings, schema, skipped }
    }
}

impl PartitionStream for BoundedScan {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (tx, rx) = mpsc::channel::<DfResult<RecordBatch>>(2);
        let batch_size = ctx.session_config().batch_size().max(1);
        let (topic, settings, schema) = (self.topic.clone(), self.settings.clone(), self.schema.clone());
        let (skipped, slot) = (self.skipped.clone(), self.skipped.start());
        let spawned = std::thread::Builder::new().name(format!("kafka-scan-{topic}")).spawn(move || {
            let result =
                read_to_end(&topic, &settings, schema, batch_size, &tx, |skips| skipped.add(slot, skips));
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(DataFusionError::External(Box::new(e))));
            }
        });
        let stream = futures::stream::unfold((rx, spawned.err()), |(mut rx, failed)| async move {
            if let Some(e) = failed {
                return Some((Err(DataFusionError::IoError(e)), (rx, None)));
            }
            rx.recv().await.map(|item| (item, (rx, None)))
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

/// Sends the topic's valid records up to the end offsets of now, in batches of at most
/// `batch_size`, until done or until nobody reads; `skipped` hears of each batch's bad ones.
fn read_to_end(
    topic: &str,
    settings: &KafkaSettings,
    schema: SchemaRef,
    batch_size: usize,
    tx: &mpsc::Sender<DfResult<RecordBatch>>,
    skipped: impl Fn(&super::Skips),
) -> Result<(), KafkaError> {
    let mut reader = TopicReader::open(settings, topic, schema)?;
    let ends = reader.end_offsets()?;
    // A partition is done once a record at or past its end offset was seen (offsets can have
    // gaps: transaction markers, compaction) or the consumer reached its end.
    let mut left: BTreeMap<i32, i64> =
        ends.iter().filter(|(_, end)| **end > 0).map(|(p, e)| (*p, *e)).collect();
    if left.is_empty() {
        return Ok(());
    }
    reader.assign(Start::Earliest)?;
    while !left.is_empty() {
        let polled = reader.poll(batch_size, POLL_WAIT, Some(&ends))?;
        skipped(&polled.skipped);
        let read_past = polled.read_to.iter().filter(|(p, next)| left.get(p).is_some_and(|end| *next >= end));
        let done: Vec<i32> = polled.ended.iter().copied().chain(read_past.map(|(p, _)| *p)).collect();
        for p in done {
            if left.remove(&p).is_some() {
                reader.pause(p)?;
            }
        }
        if polled.batch.num_rows() > 0 && tx.blocking_send(Ok(polled.batch)).is_err() {
            // The statement stopped reading.
            return Ok(());
        }
        if tx.is_closed() {
            return Ok(());
        }
    }
    Ok(())
}
