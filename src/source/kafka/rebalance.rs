//! The librdkafka side of the Kafka source: what the rebalance callback does (claim and
//! restore assigned partitions, check their positions against the broker, note
//! revocations) and the state it shares with the source on the pipeline thread.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use tracing::{info, warn};

use super::METADATA_TIMEOUT;
use crate::metrics::{Metrics, PartitionLabel};
use crate::source::{Position, Restore, Restored};

/// Rebalance news from the callback, handed to the source on the pipeline thread.
#[derive(Default)]
pub(super) struct Shared {
    /// Next offset per partition: the committed state's, then advanced by every record
    /// handed out.
    pub(super) positions: BTreeMap<i32, i64>,
    pub(super) assigned: Vec<i32>,
    /// Claims and restored states of assigned partitions, until the pipeline takes them.
    pub(super) restored: BTreeMap<i32, Restored>,
    /// Restoring assigned partitions failed: the pipeline stops with this.
    pub(super) restore_error: Option<String>,
    /// Partitions this instance was fenced out of: their records are dropped until they are
    /// assigned again.
    pub(super) fenced: std::collections::BTreeSet<i32>,
    /// Partitions assigned to this instance now.
    pub(super) owned: std::collections::BTreeSet<i32>,
    /// Where this member stands in the group's assignment cycle.
    pub(super) membership: Membership,
    /// When this member's assignment last changed (assigned, or given up).
    pub(super) changed_at: Option<Instant>,
    /// Timestamp of the last record read per partition (the position's fingerprint).
    pub(super) last_ts: BTreeMap<i32, i64>,
    /// Restored partitions whose first record must be the one read last: (its offset, its
    /// timestamp). The partition was sought one record back to check it.
    pub(super) verify: BTreeMap<i32, (i64, i64)>,
    /// Restored positions outside their partition's offsets, to decide on the pipeline
    /// thread: (partition, position, low, high).
    pub(super) out_of_range: Vec<(i32, i64, i64, i64)>,
    pub(super) revoked: Vec<i32>,
    /// The newest durable positions are not known to be in the group's offsets: a commit was
    /// held back (an outage, a lost assignment) or the broker refused it (after a broker
    /// restart the coordinator may not know the member until it rejoins).
    pub(super) group_commit_owed: bool,
    /// Partitions the topic has, as the client's metadata last showed them.
    pub(super) partitions: u32,
}

/// Where a member stands in the group's assignment cycle.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Membership {
    /// The group has not assigned this member anything yet.
    #[default]
    Joining,
    /// It holds its assignment (maybe no partition).
    Assigned,
    /// Partitions were revoked: a checkpoint is due before they are given up. After it the
    /// member awaits the assignment that follows (`rejoin`: every revocation of a rebalance
    /// is followed by an assignment, of everything under the eager protocol and of what is
    /// added under the cooperative one), or, after a failed rebalance, holds the rest.
    Revoking { rejoin: bool },
    /// Revoked partitions were given up and the assignment that follows has not come yet
    /// (librdkafka delivers one under either protocol, empty or not): holding nothing now
    /// does not mean this member is done.
    Rejoining,
    /// The source is being dropped: librdkafka's close revokes everything and waits for the
    /// unassign, and no checkpoint can come any more (the pipeline took its last one), so a
    /// revocation is honoured at once.
    Closing,
}

impl Membership {
    /// A revocation waits for a checkpoint.
    pub(super) fn revoking(self) -> bool {
        matches!(self, Membership::Revoking { .. })
    }

    /// The checkpoint a revocation waited for is committed and the partitions given up.
    pub(super) fn released(self) -> Membership {
        match self {
            Membership::Revoking { rejoin: true } => Membership::Rejoining,
            Membership::Revoking { rejoin: false } => Membership::Assigned,
            other => other,
        }
    }

    /// Holding nothing now means nothing more will come: assigned, and no change pending.
    pub(super) fn settled(self) -> bool {
        self == Membership::Assigned
    }
}

/// librdkafka callbacks: rebalances and statistics.
pub(super) struct Context {
    pub(super) topic: String,
    pub(super) shared: Arc<Mutex<Shared>>,
    pub(super) metrics: Arc<Metrics>,
    /// Claims and restores partitions as they are assigned, before they are read.
    pub(super) restorer: Mutex<Box<dyn Restore>>,
    /// An authentication or TLS failure, which the source stops with.
    pub(super) fatal: super::client::FatalErrors,
    /// The group rebalances cooperatively (see [`cooperative`]).
    pub(super) cooperative: bool,
    /// Where assigned partitions deliver their records (`fetch.rs`).
    pub(super) fetch: Arc<super::FetchQueue>,
}

impl ClientContext for Context {
    fn stats(&self, stats: Statistics) {
        let Some(topic) = stats.topics.get(&self.topic) else { return };
        // The statistics list every partition the client's metadata knows (and -1, for
        // records not yet assigned one): a topic that grew shows here within a refresh.
        let known = topic.partitions.keys().filter(|p| **p >= 0).map(|p| *p as u32 + 1).max().unwrap_or(0);
        if let Ok(mut shared) = self.shared.lock() {
            shared.partitions = shared.partitions.max(known);
        }
        for (partition, p) in &topic.partitions {
            if *partition >= 0 && p.consumer_lag >= 0 {
                let label = PartitionLabel { topic: self.topic.clone(), partition: *partition };
                self.metrics.kafka_consumer_lag.get_or_create(&label).set(p.consumer_lag);
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Transport errors repeat every few seconds during an outage; the source logs the
        // outage once, so keep these at debug.
        if !self.fatal.note(&error, reason) {
            tracing::debug!(%error, reason, "librdkafka");
        }
    }
}

/// Gives up what was revoked, after the checkpoint it waited for: those partitions leave
/// the consumer's assignment, and the member awaits the assignment that follows. Returns the
/// partitions given up.
pub(super) fn give_up(consumer: &BaseConsumer<Context>, shared: &mut Shared) -> Vec<i32> {
    let revoked = std::mem::take(&mut shared.revoked);
    info!(partitions = ?revoked, "giving up the revoked partitions");
    if let Err(e) = release(consumer, &revoked) {
        warn!(error = %e, "cannot give up revoked partitions");
    }
    shared.membership = shared.membership.released();
    shared.changed_at = Some(Instant::now());
    revoked
}

/// Under the cooperative protocol (`cooperative-sticky`, ours) a rebalance revokes and assigns
/// only the partitions that move, so the others are read on throughout; under the eager one
/// (an operator's `partition.assignment.strategy`, say while older members remain in the
/// group) every assignment is whole. Decided by the strategy the consumer was configured
/// with (librdkafka takes no mix of the two): asking librdkafka (`rebalance_protocol`) from
/// the callback waits for its group thread, which during close waits for the callback, and
/// the process hung at exit.
pub(super) fn cooperative(options: &[(String, String)]) -> bool {
    let strategy = options.iter().rev().find(|(k, _)| k == "partition.assignment.strategy");
    strategy.is_none_or(|(_, v)| v.contains("cooperative-sticky"))
}

/// Adds what the group assigned to the consumer's assignment.
fn take(consumer: &BaseConsumer<Context>, assigned: &TopicPartitionList) -> KafkaResult<()> {
    if consumer.context().cooperative {
        consumer.incremental_assign(assigned)
    } else {
        consumer.assign(assigned)
    }
}

/// Removes revoked partitions from the consumer's assignment: only those, cooperatively;
/// under the eager protocol a revocation is always of everything.
fn release(consumer: &BaseConsumer<Context>, partitions: &[i32]) -> KafkaResult<()> {
    if !consumer.context().cooperative {
        return consumer.unassign();
    }
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(&consumer.context().topic, *p);
    }
    consumer.incremental_unassign(&tpl)
}

/// A revocation of nothing, by a member that holds nothing, is given up at once. The group's
/// next assignment waits for every member to give up what was revoked, and a member without
/// tasks takes no checkpoint to do it after: the whole group would stall until the
/// rebalance timed out (300 s), a member of a one-partition topic holding none.
fn give_up_if_nothing_to_commit(consumer: &BaseConsumer<Context>, shared: &mut Shared) {
    if shared.revoked.is_empty() {
        give_up(consumer, shared);
    }
}

impl ConsumerContext for Context {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let Ok(mut shared) = self.shared.lock() else { return };
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS
                if shared.membership == Membership::Closing =>
            {
                // The pipeline took its last checkpoint: nothing is claimed or read any more.
                // The assignment is still taken, as librdkafka waits for it, and close revokes
                // it again; a member that turned back to `Assigned` here would then wait for
                // a checkpoint to give that revocation up, and close would never return.
                if let Err(e) = take(consumer, tpl) {
                    warn!(error = %e, "cannot take partitions while closing");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // Claim the partitions and restore their committed state before a record is
                // read, so each is read from where its newest commit (by any instance) ends.
                let partitions: Vec<u32> = tpl.elements().iter().map(|e| e.partition() as u32).collect();
                info!(?partitions, "assigned by the group");
                let restored = match self.restorer.lock() {
                    Ok(mut restorer) => restorer.restore(&partitions).map_err(|e| e.to_string()),
                    Err(_) => Err("the restorer panicked".to_string()),
                };
                shared.membership = match shared.membership {
                    // Already given up only after its checkpoint: that still comes.
                    Membership::Revoking { .. } => Membership::Revoking { rejoin: false },
                    _ => Membership::Assigned,
                };
                shared.changed_at = Some(Instant::now());
                let seeded = tpl.clone();
                match restored {
                    Ok(restored) => {
                        for (partition, r) in restored {
                            let p = partition as i32;
                            // A negative offset: committed before any record was read.
                            let saved = r.state.as_ref().and_then(|s| match s.position {
                                Position::Kafka { offset, last_ts } if offset >= 0 => Some((offset, last_ts)),
                                _ => None,
                            });
                            if let (Some((offset, last_ts)), Some(mut elem)) =
                                (saved, seeded.find_partition(&self.topic, p))
                            {
                                // A position is trusted only once it fits the partition as it
                                // is: within its offsets, and after the same record.
                                let seek = match consumer.fetch_watermarks(&self.topic, p, METADATA_TIMEOUT) {
                                    Ok((low, high)) if offset < low || offset > high => {
                                        shared.out_of_range.push((p, offset, low, high));
                                        offset.clamp(low, high)
                                    }
                                    Ok((low, _)) => match last_ts {
                                        Some(ts) if offset > low => {
                                            shared.verify.insert(p, (offset - 1, ts));
                                            offset - 1
                                        }
                                        _ => offset,
                                    },
                                    Err(e) => {
                                        warn!(partition = p, error = %e, "cannot check the restored position against the broker");
                                        offset
                                    }
                                };
                                let _ = elem.set_offset(Offset::Offset(seek));
                                shared.positions.insert(p, offset);
                                if let Some(ts) = last_ts {
                                    shared.last_ts.insert(p, ts);
                                }
                            } else {
                                // Never committed: the group's offset, else the earliest.
                                shared.positions.remove(&p);
                            }
                            shared.fenced.remove(&p);
                            shared.owned.insert(p);
                            shared.restored.insert(p, r);
                            shared.assigned.push(p);
                        }
                    }
                    Err(e) => shared.restore_error = Some(e),
                }
                self.fetch.route(seeded.elements().iter().map(|e| e.partition()));
                if let Err(e) = take(consumer, &seeded) {
                    warn!(error = %e, "cannot assign partitions");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS
                if shared.membership == Membership::Closing =>
            {
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                if let Err(e) = release(consumer, &partitions) {
                    warn!(error = %e, "cannot give up partitions while closing");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                info!(?partitions, "revoked by the group: given up after a checkpoint");
                shared.revoked.extend(partitions);
                shared.membership = Membership::Revoking { rejoin: true };
                give_up_if_nothing_to_commit(consumer, &mut shared);
            }
            other => {
                warn!(error = ?other, "rebalance failed; giving up the assignment");
                shared.revoked.extend(tpl.elements().iter().map(|e| e.partition()));
                if shared.membership != Membership::Closing {
                    // Still to be assigned what follows, unless it held an assignment.
                    let held = matches!(
                        shared.membership,
                        Membership::Assigned | Membership::Revoking { rejoin: false }
                    );
                    let rejoin = !held;
                    shared.membership = Membership::Revoking { rejoin };
                    give_up_if_nothing_to_commit(consumer, &mut shared);
                }
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if result.is_err() {
            if let Ok(mut shared) = self.shared.lock() {
                shared.group_commit_owed = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::cooperative;

    #[test]
    fn the_protocol_follows_the_strategy_an_operator_sets_last() {
        let set = |v: &str| ("partition.assignment.strategy".to_string(), v.to_string());
        assert!(cooperative(&[]), "ours: cooperative-sticky");
        assert!(!cooperative(&[set("range")]));
        assert!(!cooperative(&[set("cooperative-sticky"), set("roundrobin")]));
        assert!(cooperative(&[set("range"), set("cooperative-sticky")]));
        assert!(cooperative(&[("security.protocol".into(), "ssl".into())]));
    }
}
