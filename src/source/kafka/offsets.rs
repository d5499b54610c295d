//! Checking a restored Kafka position before it is trusted, and what `--on-offset-reset`
//! decides when it does not fit the partition (a topic deleted and created again, or
//! truncated).

use rdkafka::consumer::Consumer;
use rdkafka::topic_partition_list::Offset;
use tracing::warn;

use super::{kafka_error, KafkaSource, METADATA_TIMEOUT};
use crate::source::SourceError;

/// What to do when a committed position is outside the partition's offsets, or the record
/// before it is not the one read (the topic was deleted and created again, or truncated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum OffsetReset {
    /// Stop with an error naming the topic, partition and offsets.
    #[default]
    Fail,
    /// Read the partition from its first offset.
    Earliest,
    /// Read only what arrives from now on.
    Latest,
}

impl OffsetReset {
    pub(super) fn label(self) -> &'static str {
        match self {
            OffsetReset::Fail => "fail",
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        }
    }
}

impl KafkaSource {
    /// Whether the record at `offset` of partition `p`, the first since it was restored
    /// with `check` (offset and timestamp of the record read last), is to be read. A restored partition
    /// starts one record back, at the record read last: the same timestamp there proves the
    /// position belongs to this partition, and that record is skipped. A different one means
    /// the topic was created again: `--on-offset-reset` decides. A gap (compaction) cannot be
    /// checked, and the record is read.
    pub(super) fn verified(
        &self,
        p: i32,
        offset: i64,
        ts: i64,
        (expected, want_ts): (i64, i64),
    ) -> Result<bool, SourceError> {
        if offset > expected {
            return Ok(true);
        }
        if offset == expected && ts == want_ts {
            return Ok(false);
        }
        let problem = format!(
            "the record before the checkpoint's position {} has timestamp {ts}, not {want_ts} as when it was read",
            expected + 1
        );
        self.reset(p, expected + 1, problem)?;
        Ok(false)
    }

    /// Restored positions outside their partition's offsets: `--on-offset-reset` decides.
    pub(super) fn decide_out_of_range(&mut self) -> Result<(), SourceError> {
        let found = self.shared.lock().map(|mut s| std::mem::take(&mut s.out_of_range)).unwrap_or_default();
        for (p, offset, low, high) in found {
            self.reset(
                p,
                offset,
                format!("the checkpoint's position {offset} is outside its offsets [{low}, {high}]"),
            )?;
        }
        Ok(())
    }

    /// Applies `--on-offset-reset` to partition `p`, whose saved position does not fit it:
    /// an error, or a seek to its first or next offset. Logged and counted either way.
    fn reset(&self, p: i32, saved: i64, problem: String) -> Result<(), SourceError> {
        let (topic, policy) = (self.config.topic.clone(), self.config.on_offset_reset);
        self.metrics
            .kafka_offset_resets
            .get_or_create(&crate::metrics::OffsetResetLabel {
                partition: p,
                decision: policy.label().into(),
            })
            .inc();
        if policy == OffsetReset::Fail {
            tracing::error!(
                topic,
                partition = p,
                saved,
                problem,
                "the checkpoint's position does not fit the partition"
            );
            return Err(SourceError::OffsetReset { topic, partition: p, problem });
        }
        let (low, high) = self
            .consumer
            .fetch_watermarks(&topic, p, METADATA_TIMEOUT)
            .map_err(|e| kafka_error(&self.config, "fetch the partition's offsets", e))?;
        let to = if policy == OffsetReset::Earliest { low } else { high };
        warn!(
            topic,
            partition = p,
            saved,
            to,
            problem,
            decision = policy.label(),
            "--on-offset-reset: reading the partition from {to}"
        );
        self.consumer
            .seek(&topic, p, Offset::Offset(to), METADATA_TIMEOUT)
            .map_err(|e| kafka_error(&self.config, "seek to the reset position", e))?;
        if let Ok(mut shared) = self.shared.lock() {
            shared.positions.insert(p, to);
            shared.last_ts.remove(&p);
        }
        Ok(())
    }
}
