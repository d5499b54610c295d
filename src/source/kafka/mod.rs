//! Kafka as a source: a consumer group member whose positions live in the checkpoint.
//!
//! Positions come from the commit log, which is the truth; the group's committed
//! offsets are only where a partition starts when no log entry names it (and `earliest` when
//! the group has none either). After every checkpoint the log entry's positions are
//! committed to the group, so `kafka-consumer-groups` and lag exporters see them.
//!
//! Rebalances (cooperative: only the partitions that move are revoked and assigned): an
//! assignment seeks each partition to its known position. A revocation is deferred: the
//! source asks the pipeline for a checkpoint (so everything read from those partitions is
//! committed), and only then gives the partitions up.
//! librdkafka allows the unassign call after the rebalance callback, within the session
//! timeout.
//!
//! The consumer is polled from the pipeline thread, and records are taken many to a call
//! from the source's own queue (`fetch.rs`), so there is no hand-off between threads: a
//! record is in the batch, then in a table file, then committed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::Message;
use tracing::{info, warn};

mod client;
mod end;
mod fetch;
mod group;
mod offsets;
mod rebalance;
mod settled;

use client::METADATA_TIMEOUT;
pub(crate) use client::{ensure_topic, Deliveries, DeliveryContext};
pub(super) use client::{kafka_error, prefetch_bounds};
pub use client::{partition_count, with_options, KafkaConfig};
use fetch::{FetchQueue, Item};
pub use offsets::OffsetReset;
use rebalance::{Context, Membership, Shared};

use super::{Batch, PartitionEvent, Poll, Position, Restore, Restored, Source, SourceError};
use crate::metrics::{Metrics, PartitionLabel};

/// A Kafka topic as a [`Source`]: the partitions this member is assigned.
pub struct KafkaSource {
    consumer: BaseConsumer<Context>,
    config: KafkaConfig,
    shared: Arc<Mutex<Shared>>,
    /// `--until-end`: the end offset per partition seen at start (`None` until fetched).
    targets: Option<BTreeMap<i32, i64>>,
    /// Where each partition started, for partitions no record has moved yet.
    floors: BTreeMap<i32, i64>,
    /// The outage being waited out, and when it was last reported.
    outage: Option<(String, Instant)>,
    checkpoint_due: bool,
    /// The committed position of each partition this member holds, as the group should
    /// have it, and when it was last sent (or held back).
    durable_offsets: BTreeMap<i32, i64>,
    group_commit_at: Option<Instant>,
    /// When the last outage ended.
    recovered_at: Option<Instant>,
    /// `--until-end`: whether the group had placed every partition, and when that was asked.
    placed: Option<(bool, Instant)>,
    /// `--until-end`: the client that asks the coordinator, made when first needed. Through
    /// the consumer the question queued behind its fetch (ARCHITECTURE §6).
    describer: Option<BaseConsumer<client::FatalErrors>>,
    /// Partition events to deliver with the next batch (revocations after a checkpoint).
    events: Vec<PartitionEvent>,
    /// Partitions whose end the consumer reached (librdkafka's partition EOF) with no record
    /// since: only these can be idle.
    caught_up: BTreeSet<i32>,
    metrics: Arc<Metrics>,
    /// Longer records are handed out cut (the pipeline dead-letters them as `oversized`).
    max_record_bytes: usize,
}

/// How long after an assignment change a closing consumer lets the fetchers settle.
const ASSIGNMENT_SETTLE: Duration = Duration::from_millis(500);

impl KafkaSource {
    /// Joins the group and subscribes. Assigned partitions are claimed and restored by
    /// `restorer` before they are read.
    ///
    /// `member_id` is the group member's static instance id (KIP-345): an instance restarted
    /// after kill -9 takes its partitions back at once instead of waiting out the dead
    /// member's session timeout (10 s), and a second process with the same id is fenced by the
    /// broker rather than reading alongside the first.
    pub fn new(
        config: KafkaConfig,
        member_id: &str,
        restorer: Box<dyn Restore>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SourceError> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let fetch = Arc::new(FetchQueue::default());
        let context = Context {
            fetch: fetch.clone(),
            topic: config.topic.clone(),
            shared: shared.clone(),
            metrics: metrics.clone(),
            restorer: Mutex::new(restorer),
            fatal: client::FatalErrors::default(),
            cooperative: rebalance::cooperative(&config.options),
        };
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group)
            .set("group.instance.id", member_id)
            // A static member that stops (kill -9, or SIGTERM: static members do not leave
            // the group on close) holds its partitions until its session times out. Heartbeats
            // come from librdkafka's own thread, so a busy loop never misses one; 10 s rather
            // than the default 45 s hands a stopped instance's partitions on sooner.
            .set("session.timeout.ms", "10000")
            // A member learns of a rebalance from its next heartbeat's answer, and a moving
            // partition is read by nobody until every member has rejoined: at the default 3 s
            // a second worker joining a running one waited 3 s for its partitions
            // (docs/measurements.md).
            .set("heartbeat.interval.ms", "500")
            // Incremental rebalances (KIP-429): only the partitions that move stop, and every
            // member reads the rest throughout, where the eager default stops the whole group
            // at each join or leave (docs/scale.md). `--kafka-option` can set an eager
            // strategy for a group whose other members still use one: a group agrees on one.
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", "1000")
            // Reaching a partition's end is an event: a partition is idle only once it has
            // nothing more to read, never while a backlog waits behind other partitions.
            .set("enable.partition.eof", "true")
            // New partitions are found on the next metadata refresh; the default is 5 min.
            .set("topic.metadata.refresh.interval.ms", "5000")
            .set("client.id", "pageviews");
        prefetch_bounds(&mut client);
        let mut consumer: BaseConsumer<Context> = with_options(client, &config.options)
            .create_with_context(context)
            .map_err(|e| kafka_error(&config, "create the consumer", e))?;
        if !fetch.open(consumer.client().native_ptr(), &config.topic) {
            let e = KafkaError::ClientCreation("librdkafka made no queue".into());
            return Err(kafka_error(&config, "create the fetch queue", e));
        }
        // Rebalances and errors arrive on the consumer queue while the source waits on its
        // own: they end the wait.
        let waker = fetch.clone();
        consumer.set_nonempty_callback(move || waker.wake());
        if let Err(e) = consumer.subscribe(&[&config.topic]) {
            fetch.close();
            return Err(kafka_error(&config, "subscribe", e));
        }
        info!(brokers = %config.brokers, topic = %config.topic, group = %config.group, "consuming from Kafka");
        Ok(KafkaSource {
            consumer,
            config,
            shared,
            targets: None,
            floors: BTreeMap::new(),
            outage: None,
            checkpoint_due: false,
            durable_offsets: BTreeMap::new(),
            group_commit_at: None,
            recovered_at: None,
            placed: None,
            describer: None,
            events: Vec::new(),
            caught_up: BTreeSet::new(),
            metrics,
            max_record_bytes: usize::MAX,
        })
    }

    /// Hands out records longer than `n` bytes cut to the prefix their dead letter keeps,
    /// as the file source does, instead of copying them whole.
    pub fn with_max_record_bytes(mut self, n: usize) -> Self {
        self.max_record_bytes = n;
        self
    }

    /// Logs an outage once, then every minute while it lasts.
    fn report_outage(&mut self, what: String) {
        let due = match &self.outage {
            Some((_, at)) => at.elapsed() >= Duration::from_secs(60),
            None => true,
        };
        if due {
            warn!(brokers = %self.config.brokers, error = %what, "Kafka unavailable; retrying with backoff");
            self.outage = Some((what, Instant::now()));
        }
    }

    fn recovered(&mut self) {
        if let Some((what, _)) = self.outage.take() {
            info!(was = %what, "Kafka reachable again");
            self.recovered_at = Some(Instant::now());
        }
    }

    /// Adds one record to the batch, unless its partition is fenced or it is the record a
    /// restored position is checked with (`checks`: either may apply).
    fn take(
        &mut self,
        batch: &mut Batch,
        positions: &mut Vec<(i32, i64, i64)>,
        (p, offset, ts): (i32, i64, i64),
        payload: &[u8],
        checks: bool,
    ) -> Result<(), SourceError> {
        if checks {
            let (fenced, check) = match self.shared.lock() {
                Ok(mut s) => (s.fenced.contains(&p), s.verify.remove(&p)),
                Err(_) => (false, None),
            };
            if fenced {
                return Ok(());
            }
            if let Some(check) = check {
                if !self.verified(p, offset, ts, check)? {
                    return Ok(());
                }
            }
        }
        batch.push_capped(p as u32, offset as u64, payload, self.max_record_bytes);
        if !self.caught_up.is_empty() {
            self.caught_up.remove(&p);
        }
        match positions.last_mut() {
            Some((lp, lo, lt)) if *lp == p => (*lo, *lt) = (offset + 1, ts),
            _ => positions.push((p, offset + 1, ts)),
        }
        Ok(())
    }

    /// A consumer error: a fatal one (another process took our static member id) will not
    /// pass with retries and stops the source; everything else is an outage waited out.
    fn failed(&mut self, e: KafkaError) -> Result<(), SourceError> {
        if let Some((_, reason)) = self.consumer.client().fatal_error() {
            let what = format!(
                "go on consuming ({reason}; is another pageviews with the same --pipeline-id running?)"
            );
            return Err(kafka_error(&self.config, &what, e));
        }
        self.report_outage(e.to_string());
        Ok(())
    }

    /// Moves rebalance news into the batch; true when a revocation waits for a checkpoint.
    fn take_rebalance(&mut self, batch: &mut Batch) -> bool {
        let Ok(mut shared) = self.shared.lock() else { return false };
        for p in shared.assigned.drain(..) {
            self.caught_up.remove(&p);
            batch.push_event(PartitionEvent::Assigned(p as u32));
        }
        let revoking = shared.membership.revoking();
        if revoking {
            self.checkpoint_due = true;
        }
        revoking
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        // Runs before the consumer field is dropped, which closes the consumer.
        let changed_at = self.shared.lock().ok().and_then(|mut shared| {
            shared.membership = Membership::Closing;
            shared.changed_at
        });
        // Before the client goes: the fetch queue, whose partitions go back to the consumer
        // queue that closing serves.
        self.consumer.context().fetch.close();
        // librdkafka 2.12 aborts when a partition is removed from the assignment again before
        // the fetcher confirmed the previous stop (confluentinc/librdkafka#5573, fixed after
        // the 2.12 that rdkafka-sys bundles): closing right after a rebalance did that. So
        // the consumer is served for a moment after a recent assignment change; what it
        // returns lies past the last checkpoint and is read again by the next holder.
        if let Some(at) = changed_at {
            let settle = at + ASSIGNMENT_SETTLE;
            while Instant::now() < settle {
                let _ = self.consumer.poll(Duration::from_millis(20));
            }
        }
    }
}

impl Source for KafkaSource {
    fn poll(&mut self, batch: &mut Batch, max_records: usize, _now_ms: u64) -> Result<Poll, SourceError> {
        self.retry_group_commit();
        for event in self.events.drain(..) {
            batch.push_event(event);
        }
        if self.config.until_end && self.targets.is_none() {
            if let Err(e) = self.fetch_targets() {
                if matches!(
                    e,
                    KafkaError::MetadataFetch(rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition)
                ) {
                    return Err(SourceError::NoTopic { topic: self.config.topic.clone() });
                }
                self.report_outage(e.to_string());
                return Ok(Poll::Pending(Duration::from_secs(1)));
            }
        }
        if let Some(e) = self.shared.lock().ok().and_then(|mut s| s.restore_error.take()) {
            return Err(SourceError::Restore(e));
        }
        // Credentials or certificates the brokers refuse: no outage to wait out.
        if let Some(cause) = self.consumer.context().fatal.take() {
            return Err(SourceError::Refused { brokers: self.config.brokers.clone(), cause });
        }
        if self.take_rebalance(batch) {
            return Ok(Poll::Ready);
        }
        // Before the end is judged: a position past a recreated partition's end is no end.
        self.decide_out_of_range()?;
        if self.reached_end() {
            // The consumer is still polled: that is where librdkafka runs the rebalance
            // callback, and a member that stops polling never receives the partitions a
            // departed member leaves behind. A record it returns lies past the end this run
            // reads to; it is not taken (no position moves), so the next run reads it.
            let _ = self.consumer.poll(Duration::ZERO);
            return Ok(Poll::End);
        }
        let mut positions: Vec<(i32, i64, i64)> = Vec::new();
        let mut wait = Duration::from_millis(100);
        'fill: while batch.len() < max_records {
            // The consumer queue first, without waiting: a rebalance reaches the callback
            // (which routes and claims what is assigned) before any record is taken.
            loop {
                match self.consumer.poll(Duration::ZERO) {
                    None => break,
                    // Only a partition not routed to the fetch queue (none, as assigned).
                    Some(Ok(msg)) => {
                        let ts = msg.timestamp().to_millis().unwrap_or(i64::MIN);
                        let record = (msg.partition(), msg.offset(), ts);
                        let payload = msg.payload().unwrap_or_default().to_vec();
                        drop(msg);
                        self.take(batch, &mut positions, record, &payload, true)?;
                    }
                    Some(Err(KafkaError::PartitionEOF(p))) => {
                        self.caught_up.insert(p);
                    }
                    Some(Err(e)) => {
                        self.failed(e)?;
                        break 'fill;
                    }
                }
            }
            // Fenced partitions and restored ones to check change only in the callback, which
            // runs inside `consumer.poll`: one look serves the whole batch.
            let checks = match self.shared.lock() {
                Ok(s) if s.membership.revoking() || !s.assigned.is_empty() => break,
                Ok(s) => !s.fenced.is_empty() || !s.verify.is_empty(),
                Err(_) => false,
            };
            // `Ok(false)`: an outage, waited out after this batch.
            let (mut taken, mut reading) = (0, Ok(true));
            let fetch = self.consumer.context().fetch.clone();
            fetch.take(wait, &mut |item| {
                taken += 1;
                reading = match item {
                    Item::Record { partition, offset, timestamp, payload } => self
                        .take(batch, &mut positions, (partition, offset, timestamp), payload, checks)
                        .map(|()| true),
                    Item::End(p) => {
                        self.caught_up.insert(p);
                        Ok(true)
                    }
                    Item::Error(e) => self.failed(e).map(|()| false),
                };
                matches!(reading, Ok(true)) && batch.len() < max_records
            });
            if !reading? || taken == 0 {
                break;
            }
            wait = Duration::ZERO;
        }
        if !batch.is_empty() {
            self.recovered();
            if let Ok(mut shared) = self.shared.lock() {
                for (p, next, ts) in positions {
                    let slot = shared.positions.entry(p).or_insert(next);
                    if next >= *slot {
                        *slot = next;
                        shared.last_ts.insert(p, ts);
                    }
                }
            }
        }
        self.take_rebalance(batch);
        if batch.is_empty() && batch.events().is_empty() {
            let wait = if self.outage.is_some() { Duration::from_millis(500) } else { Duration::ZERO };
            return Ok(Poll::Pending(wait));
        }
        Ok(Poll::Ready)
    }

    fn position(&self, partition: u32) -> Option<Position> {
        let shared = self.shared.lock().ok()?;
        let p = partition as i32;
        match shared.positions.get(&p) {
            Some(&offset) => Some(Position::Kafka { offset, last_ts: shared.last_ts.get(&p).copied() }),
            // Held, but no record read and no committed offset: it starts from the group's
            // offset or the earliest, whichever applies when it is next assigned.
            None if shared.owned.contains(&p) => Some(Position::Kafka { offset: -1, last_ts: None }),
            None => None,
        }
    }

    fn partition_name(&self, _partition: u32) -> &str {
        &self.config.topic
    }

    fn revoking(&self) -> Vec<u32> {
        if !self.checkpoint_due {
            return Vec::new();
        }
        let revoked = self.shared.lock().map(|s| s.revoked.clone()).unwrap_or_default();
        revoked.into_iter().map(|p| p as u32).collect()
    }

    fn take_restored(&mut self, partition: u32) -> Option<Restored> {
        let shared = self.shared.clone();
        let mut shared = shared.lock().ok()?;
        let restored = shared.restored.remove(&(partition as i32))?;
        // The restored position is committed: the group should have it, also when no new
        // record comes to make a checkpoint (after a rejoin, say).
        if let Some(state) = restored.state.as_ref() {
            shared.group_commit_owed |= self.note_durable(partition, &state.position);
        }
        Some(restored)
    }

    fn partitions(&self) -> u32 {
        self.shared.lock().map_or(0, |s| s.partitions)
    }

    fn caught_up(&self, partition: u32) -> bool {
        self.caught_up.contains(&(partition as i32))
    }

    fn fenced(&mut self, partition: u32) {
        self.durable_offsets.remove(&(partition as i32));
        self.caught_up.remove(&(partition as i32));
        if let Ok(mut shared) = self.shared.lock() {
            shared.fenced.insert(partition as i32);
            shared.owned.remove(&(partition as i32));
            shared.positions.remove(&(partition as i32));
        }
    }

    fn committed(&mut self, positions: &BTreeMap<u32, Position>) {
        for (p, position) in positions {
            self.note_durable(*p, position);
        }
        self.commit_group_offsets();
        if self.checkpoint_due {
            self.checkpoint_due = false;
            let revoked = self
                .shared
                .lock()
                .map(|mut s| rebalance::give_up(&self.consumer, &mut s))
                .unwrap_or_default();
            for p in revoked {
                self.durable_offsets.remove(&p);
                self.caught_up.remove(&p);
                if let Ok(mut shared) = self.shared.lock() {
                    shared.owned.remove(&p);
                    shared.positions.remove(&p);
                    shared.last_ts.remove(&p);
                    shared.verify.remove(&p);
                }
                self.events.push(PartitionEvent::Revoked(p as u32));
                let label = PartitionLabel { topic: self.config.topic.clone(), partition: p };
                self.metrics.kafka_consumer_lag.remove(&label);
            }
        }
    }
}
