//! The consumer group's offsets: advisory copies of the commit log's positions, so
//! `kafka-consumer-groups` and lag exporters see them. Sent after each checkpoint, and held
//! back or sent again around outages, when a commit could get this static member fenced.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tracing::warn;

use super::rebalance::Shared;
use super::KafkaSource;
use crate::source::Position;

/// How often owed group offsets are sent again.
const GROUP_COMMIT_RETRY: Duration = Duration::from_secs(1);

/// How long after an outage group offsets are held back: longer than the session (10 s), so
/// any session the outage ends has timed out (and the assignment is lost) before then.
const GROUP_COMMIT_AFTER_OUTAGE: Duration = Duration::from_secs(12);

impl KafkaSource {
    /// Sends the committed positions of the partitions assigned now to the group, where lag
    /// monitors read them (advisory: the commit log holds the truth).
    ///
    /// Held back while the assignment is lost, while Kafka is unreachable, and for a session
    /// timeout after an outage. A session that times out makes librdkafka forget its member
    /// id, and a commit in flight then is sent under the forgotten id: the broker fences this
    /// static member (FENCED_INSTANCE_ID), which librdkafka makes fatal. A session can still
    /// time out seconds after Kafka is reachable again: a restarted broker's coordinator
    /// answers no heartbeat until it has loaded the group (measured: 4 s after). What is held
    /// back, or refused (a restarted broker may not know the member until it rejoins), is
    /// owed, and sent again once it is safe ([`KafkaSource::retry_group_commit`]).
    pub(super) fn commit_group_offsets(&mut self) {
        self.group_commit_at = Some(Instant::now());
        let set_owed = |shared: &Mutex<Shared>, owed: bool| {
            if let Ok(mut s) = shared.lock() {
                s.group_commit_owed = owed;
            }
        };
        let settling = self.recovered_at.is_some_and(|at| at.elapsed() < GROUP_COMMIT_AFTER_OUTAGE);
        if self.outage.is_some() || settling || self.consumer.assignment_lost() {
            set_owed(&self.shared, true);
            return;
        }
        let assigned = self.consumer.assignment().unwrap_or_default();
        let mut tpl = TopicPartitionList::new();
        for elem in assigned.elements() {
            if let Some(offset) = self.durable_offsets.get(&elem.partition()) {
                let _ =
                    tpl.add_partition_offset(&self.config.topic, elem.partition(), Offset::Offset(*offset));
            }
        }
        if tpl.count() == 0 {
            return;
        }
        set_owed(&self.shared, false);
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            warn!(error = %e, "cannot commit offsets to the consumer group");
            set_owed(&self.shared, true);
        }
    }

    /// Notes `partition`'s committed `position` for the group; true when there was one to note
    /// (a Kafka position past the partition's start).
    pub(super) fn note_durable(&mut self, partition: u32, position: &Position) -> bool {
        match position {
            Position::Kafka { offset, .. } if position.ordinal() > 0 => {
                self.durable_offsets.insert(partition as i32, *offset);
                true
            }
            _ => false,
        }
    }

    /// Sends owed group offsets again, at most once a second. Without it, an idle topic's
    /// offsets stayed behind after an outage until new records came, or for good when the
    /// restarted broker refused the first commits (it did not know the member yet).
    pub(super) fn retry_group_commit(&mut self) {
        let owed = self.shared.lock().is_ok_and(|s| s.group_commit_owed);
        if owed && self.group_commit_at.is_none_or(|at| at.elapsed() >= GROUP_COMMIT_RETRY) {
            self.commit_group_offsets();
        }
    }
}
