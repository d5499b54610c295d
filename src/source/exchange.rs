//! The exchange: how an event reaches the partition that counts its postcode when that is not
//! the partition it was read from — a topic not keyed by postcode. Kafka Streams' way: an
//! internal topic, `pageviews-<pipeline>-<id>-exchange` (`id` is made when the pipeline is
//! created), with one partition per counting partition.
//!
//! Exactly once without transactions: every forwarded event carries its source partition and
//! the ordinal (offset) it had there, and the counting side keeps, per source, the highest
//! ordinal it counted in its committed state and drops anything at or below it. The forwarding
//! side flushes the producer before it commits a position, so everything before a committed
//! position is in the topic; after a crash it forwards again from that position, and what
//! arrives twice is dropped. The producer is idempotent, so one producer's events to one
//! counting partition stay in order.
//!
//! Progress markers travel the same way: at each checkpoint a source tells every counting
//! partition it forwards to how far its event time has come, so their watermarks can pass
//! even when it has nothing more for them. One marker record carries every source of the
//! worker that has news, so an interval takes workers × counting partitions of them, not
//! source partitions × counting partitions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::Message;
use tracing::{info, warn};

use super::kafka::{
    ensure_topic, kafka_error, prefetch_bounds, with_options, Deliveries, DeliveryContext, KafkaConfig,
};
use super::{PartitionTime, SourceError};
use crate::Shutdown;

/// How long one wait of [`Exchange::flush`] lasts before it notes an outage and goes on.
const FLUSH_SLICE: Duration = Duration::from_secs(5);

const RECORD: u8 = b'R';
/// One source's progress (written by pageviews before markers were batched; still read).
const PROGRESS: u8 = b'P';
/// Several sources' progress: a count, then per source its number, the length of its
/// encoded time and the time.
const PROGRESS_BATCH: u8 = b'Q';
const HEADER: usize = 1 + 4 + 8;

/// The exchange topic of a pipeline: unique to its creation, so that a new pipeline with the
/// same id (on another output, say) never reads what an old one forwarded.
pub(crate) fn exchange_topic(facts: &pageviews_core::commit::Facts) -> String {
    format!("pageviews-{}-{}-exchange", facts.pipeline, facts.id)
}

/// One item read from the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A forwarded event: the original record's bytes.
    Record {
        /// The counting partition.
        counting: u32,
        /// Its offset in the exchange topic.
        offset: i64,
        /// The source partition it was read from.
        source: u32,
        /// Its ordinal there.
        ordinal: u64,
        /// The record as read.
        payload: Vec<u8>,
    },
    /// How far a source has come.
    Progress {
        /// The counting partition.
        counting: u32,
        /// Its offset in the exchange topic.
        offset: i64,
        /// The source partition.
        source: u32,
        /// The source's event time.
        time: PartitionTime,
    },
}

/// Which kind of record a refused payload was: 1 for a progress marker, 0 for an event.
fn kind(payload: &[u8]) -> usize {
    usize::from(matches!(payload.first(), Some(&PROGRESS | &PROGRESS_BATCH)))
}

/// One instance's end of the exchange: a producer for what its sources forward, and a
/// consumer of the counting partitions it hosts.
pub struct Exchange {
    config: KafkaConfig,
    topic: String,
    producer: ThreadedProducer<DeliveryContext>,
    deliveries: Arc<Deliveries>,
    consumer: BaseConsumer,
    /// Hosted counting partitions and the next offset to read in each.
    hosted: BTreeMap<u32, Option<i64>>,
    /// Partitions in the consumer's assignment. One is added when first hosted and never
    /// removed (those not hosted now are paused, and one hosted again comes with a new
    /// consumer): librdkafka 2.12 aborts when a partition leaves an assignment twice before
    /// its fetcher confirmed the first stop (confluentinc/librdkafka#5573, fixed after the
    /// 2.12 that rdkafka-sys bundles), and replacing the whole assignment at each change did
    /// that when partitions were taken or given up one after another.
    assigned: BTreeSet<u32>,
    /// Events were forwarded since the last flush that found everything delivered.
    unflushed: bool,
    /// Checkpoints put off in a row because the exchange did not take what was forwarded in
    /// time ([`Exchange::settled`]).
    put_off: u32,
    scratch: Vec<u8>,
}

impl Exchange {
    /// Opens the exchange topic `topic`, creating it with `partitions` partitions (the
    /// pipeline's counting partitions) when it is missing.
    pub fn open(config: &KafkaConfig, topic: &str, partitions: u32) -> Result<Exchange, SourceError> {
        let topic = topic.to_string();
        let fail = |e| kafka_error(config, "create the exchange topic", e);
        if ensure_topic(&config.brokers, &config.options, &topic, partitions as i32).map_err(fail)? {
            info!(topic = %topic, partitions, "created the exchange topic");
        }
        let deliveries = Deliveries::new(kind);
        let mut producer = ClientConfig::new();
        producer
            .set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("client.id", "pageviews-exchange");
        let producer = with_options(producer, &config.options)
            .create_with_context(DeliveryContext(deliveries.clone()))
            .map_err(|e| kafka_error(config, "create the exchange producer", e))?;
        Ok(Exchange {
            config: config.clone(),
            topic,
            producer,
            deliveries,
            consumer: open_consumer(config)?,
            hosted: BTreeMap::new(),
            assigned: BTreeSet::new(),
            unflushed: false,
            put_off: 0,
            scratch: Vec::with_capacity(1024),
        })
    }

    /// The producer and the consumer apart, to be closed side by side: closing either waits
    /// on librdkafka (rust-rdkafka polls 100 ms at a time).
    pub fn into_clients(self) -> [Box<dyn Send>; 2] {
        [Box::new(self.producer), Box::new(self.consumer)]
    }

    /// Forwards one event read from `source` at `ordinal` to counting partition `counting`.
    pub fn forward(
        &mut self,
        counting: u32,
        source: u32,
        ordinal: u64,
        key: &[u8],
        payload: &[u8],
    ) -> Result<(), SourceError> {
        self.scratch.clear();
        self.scratch.push(RECORD);
        self.scratch.extend_from_slice(&source.to_be_bytes());
        self.scratch.extend_from_slice(&ordinal.to_be_bytes());
        self.scratch.extend_from_slice(payload);
        self.unflushed = true;
        self.send(counting, Some(key))
    }

    /// Tells counting partition `counting` how far each of `sources` has come, in one record.
    pub(crate) fn progress<'a>(
        &mut self,
        counting: u32,
        sources: impl Iterator<Item = &'a (u32, PartitionTime)>,
    ) -> Result<(), SourceError> {
        self.scratch.clear();
        encode_progress(sources, &mut self.scratch);
        self.send(counting, None)
    }

    fn send(&mut self, partition: u32, key: Option<&[u8]>) -> Result<(), SourceError> {
        let mut record =
            BaseRecord::<[u8], [u8]>::to(&self.topic).partition(partition as i32).payload(&self.scratch);
        if let Some(key) = key {
            record = record.key(key);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(kafka_error(&self.config, "forward to the exchange", e)),
            }
        }
    }

    /// Whether everything forwarded so far is in the topic, waiting at most `wait`: before a
    /// position is committed, every event before it must be where the counting side can
    /// find it. Progress markers need not be: a counting partition only waits longer for
    /// one that is late, and one that is lost is said again ([`Exchange::markers_lost`]).
    /// So with no event forwarded since the last flush, this does not wait, also while the
    /// broker is away. `false` means try again later; an event the producer gave up on
    /// (after librdkafka's `message.timeout.ms`, 5 minutes) is an error.
    pub(crate) fn flushed(&mut self, wait: Duration) -> Result<bool, SourceError> {
        if self.unflushed {
            match self.producer.flush(wait) {
                Ok(()) => self.unflushed = false,
                Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => return Ok(false),
                Err(e) => return Err(kafka_error(&self.config, "flush the exchange", e)),
            }
        }
        let failed = self.deliveries.take_failed(0);
        if failed > 0 {
            return Err(SourceError::Exchange { topic: self.topic.clone(), failed });
        }
        Ok(true)
    }

    /// [`Exchange::flushed`] for a checkpoint that is put off when it is `false`: each one
    /// in a row that was put off waits twice as long, up to 8 × `wait`. A broker that
    /// answers, but slower than `wait` (one serving 64 members on two cores took seconds),
    /// would otherwise put off every checkpoint for as long as it stays slow.
    pub(crate) fn settled(&mut self, wait: Duration) -> Result<bool, SourceError> {
        let settled = self.flushed(settle_wait(wait, self.put_off))?;
        self.put_off = if settled { 0 } else { self.put_off + 1 };
        Ok(settled)
    }

    /// Waits until everything forwarded so far is in the topic, however long the broker is
    /// away (see `Exchange::flushed`), or until `stop`'s grace has passed.
    pub fn flush(&mut self, stop: &Shutdown) -> Result<(), SourceError> {
        let mut waiting = false;
        while !self.flushed(stop.grace_left().map_or(FLUSH_SLICE, |left| left.min(FLUSH_SLICE)))? {
            if stop.grace_passed() {
                let pending = self.producer.in_flight_count().max(0) as u64;
                return Err(SourceError::ExchangeStopped { topic: self.topic.clone(), pending });
            }
            if !waiting {
                warn!(topic = %self.topic, "the exchange topic does not take events now; waiting");
                waiting = true;
            }
        }
        if waiting {
            info!(topic = %self.topic, "the exchange topic takes events again");
        }
        Ok(())
    }

    /// True when progress markers were lost since the last call: every source must say
    /// again how far it is.
    pub(crate) fn markers_lost(&self) -> bool {
        self.deliveries.take_failed(1) > 0
    }

    /// Reads the hosted counting partitions from these offsets (`None`: the beginning).
    pub fn assign(&mut self, hosted: BTreeMap<u32, Option<i64>>) -> Result<(), SourceError> {
        if hosted == self.hosted {
            return Ok(());
        }
        // A partition hosted again, or restored from an older commit, is read from its
        // committed offset by a new consumer rather than a seek: librdkafka 2.12 checks a
        // sought offset with the partition's leader first, and a partition sought while a
        // broker restarted was never fetched again, so its counting partition counted nothing.
        let moved =
            hosted.iter().any(|(p, offset)| self.assigned.contains(p) && self.hosted.get(p) != Some(offset));
        if moved {
            let old = std::mem::replace(&mut self.consumer, open_consumer(&self.config)?);
            // Closing waits for its broker threads, which an outage can hold; the loop goes on.
            std::thread::spawn(move || drop(old));
            self.assigned.clear();
            self.hosted.clear();
        }
        let fail = |e| kafka_error(&self.config, "assign the exchange", e);
        let (mut added, mut paused) = (TopicPartitionList::new(), TopicPartitionList::new());
        for (&p, &offset) in hosted.iter().filter(|(p, _)| !self.assigned.contains(p)) {
            let at = offset.map_or(Offset::Beginning, Offset::Offset);
            added.add_partition_offset(&self.topic, p as i32, at).map_err(fail)?;
        }
        for &p in self.hosted.keys().filter(|p| !hosted.contains_key(p)) {
            paused.add_partition(&self.topic, p as i32);
        }
        if paused.count() > 0 {
            self.consumer.pause(&paused).map_err(fail)?;
        }
        if added.count() > 0 {
            self.consumer.incremental_assign(&added).map_err(fail)?;
            self.assigned.extend(hosted.keys().copied());
        }
        self.hosted = hosted;
        Ok(())
    }

    /// Appends up to `max` items read from the hosted counting partitions.
    pub fn poll(&mut self, out: &mut Vec<Item>, max: usize) -> Result<(), SourceError> {
        if self.hosted.is_empty() {
            return Ok(());
        }
        while out.len() < max {
            match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(msg)) => {
                    let counting = msg.partition() as u32;
                    let offset = msg.offset();
                    // A paused partition's records already on their way are not hosted ones.
                    let Some(next) = self.hosted.get_mut(&counting) else { continue };
                    if decode(counting, offset, msg.payload().unwrap_or_default(), out).is_some() {
                        *next = Some(offset + 1);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "exchange consumer");
                    break;
                }
            }
        }
        Ok(())
    }

    /// The offset past the last item of counting partition `counting` now.
    pub(crate) fn end_offset(&self, counting: u32) -> Result<i64, SourceError> {
        // Through the producer: through the consumer, each answer queued behind its fetch
        // (ARCHITECTURE §6).
        let (_, high) = self
            .producer
            .client()
            .fetch_watermarks(&self.topic, counting as i32, Duration::from_secs(5))
            .map_err(|e| kafka_error(&self.config, "read the exchange's end offsets", e))?;
        Ok(high)
    }
}

/// The consumer of the hosted counting partitions: assigned, never subscribed.
fn open_consumer(config: &KafkaConfig) -> Result<BaseConsumer, SourceError> {
    let mut consumer = ClientConfig::new();
    consumer
        .set("bootstrap.servers", &config.brokers)
        // Positions live in the commit log; the group is only a name librdkafka wants.
        .set("group.id", format!("{}.exchange", config.group))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("client.id", "pageviews-exchange");
    prefetch_bounds(&mut consumer);
    with_options(consumer, &config.options)
        .create()
        .map_err(|e| kafka_error(config, "create the exchange consumer", e))
}

/// Appends the items of one exchange record to `out`; `None` (and nothing appended) for a
/// record that is not one of ours.
fn decode(counting: u32, offset: i64, value: &[u8], out: &mut Vec<Item>) -> Option<()> {
    let (&kind, rest) = value.split_first()?;
    let number = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    match kind {
        RECORD => {
            let ordinal = u64::from_be_bytes(rest.get(4..12)?.try_into().ok()?);
            let payload = value.get(HEADER..)?.to_vec();
            out.push(Item::Record { counting, offset, source: number, ordinal, payload });
        }
        PROGRESS => {
            out.push(Item::Progress { counting, offset, source: number, time: decode_time(rest.get(4..)?)? });
        }
        PROGRESS_BATCH => {
            let mut items = Vec::with_capacity(number as usize);
            let mut rest = rest.get(4..)?;
            for _ in 0..number {
                let source = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
                let len = usize::from(*rest.get(4)?);
                let time = decode_time(rest.get(5..5 + len)?)?;
                items.push(Item::Progress { counting, offset, source, time });
                rest = &rest[5 + len..];
            }
            out.extend(items);
        }
        _ => return None,
    }
    Some(())
}

/// How long a checkpoint waits for the exchange after `put_off` checkpoints in a row were
/// put off.
fn settle_wait(wait: Duration, put_off: u32) -> Duration {
    wait * (1 << put_off.min(3))
}

/// A marker record of `sources`' progress; the count and each time's length are filled in
/// once written.
fn encode_progress<'a>(sources: impl Iterator<Item = &'a (u32, PartitionTime)>, out: &mut Vec<u8>) {
    out.push(PROGRESS_BATCH);
    let count_at = out.len();
    out.extend_from_slice(&0u32.to_be_bytes());
    let mut count = 0u32;
    for (source, time) in sources {
        out.extend_from_slice(&source.to_be_bytes());
        let at = out.len();
        out.push(0);
        encode_time(time, out);
        out[at] = (out.len() - at - 1) as u8;
        count += 1;
    }
    out[count_at..count_at + 4].copy_from_slice(&count.to_be_bytes());
}

const FINISHED: u8 = 1;
const IDLE: u8 = 2;

/// A progress marker's event time: the newest event time (`i64::MIN` for none), a flags byte
/// (finished, idle), and the first event time when known.
fn encode_time(time: &PartitionTime, out: &mut Vec<u8>) {
    out.extend_from_slice(&time.max_event_ms.unwrap_or(i64::MIN).to_be_bytes());
    let flags = if time.finished { FINISHED } else { 0 } | if time.idle { IDLE } else { 0 };
    out.push(flags);
    if let Some(first) = time.first_event_ms {
        out.extend_from_slice(&first.to_be_bytes());
    }
}

fn decode_time(bytes: &[u8]) -> Option<PartitionTime> {
    let max = i64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let flags = *bytes.get(8)?;
    let first = bytes.get(9..17).and_then(|b| Some(i64::from_be_bytes(b.try_into().ok()?)));
    Some(PartitionTime {
        max_event_ms: (max != i64::MIN).then_some(max),
        first_event_ms: first,
        finished: flags & FINISHED != 0,
        idle: flags & IDLE != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_read_back_as_they_were_forwarded() {
        let mut v = vec![RECORD];
        v.extend_from_slice(&7u32.to_be_bytes());
        v.extend_from_slice(&42u64.to_be_bytes());
        v.extend_from_slice(b"{}");
        let read = |counting, offset, value: &[u8]| {
            let mut out = Vec::new();
            decode(counting, offset, value, &mut out).map(|()| out)
        };
        assert_eq!(
            read(2, 9, &v),
            Some(vec![Item::Record {
                counting: 2,
                offset: 9,
                source: 7,
                ordinal: 42,
                payload: b"{}".to_vec()
            }])
        );
        let mut p = vec![PROGRESS];
        p.extend_from_slice(&3u32.to_be_bytes());
        p.extend_from_slice(&i64::MIN.to_be_bytes());
        p.push(1);
        let time = PartitionTime { finished: true, ..PartitionTime::default() };
        assert_eq!(read(0, 1, &p), Some(vec![Item::Progress { counting: 0, offset: 1, source: 3, time }]));
        assert_eq!(read(0, 1, b"X"), None);
    }

    #[test]
    fn a_checkpoint_put_off_in_a_row_waits_longer_up_to_eight_times() {
        let waits: Vec<u64> = (0..6).map(|n| settle_wait(Duration::from_secs(1), n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 8, 8]);
    }

    #[test]
    fn one_marker_record_carries_every_source_it_was_given() {
        let times = [
            (4, PartitionTime::default()),
            (9, PartitionTime { max_event_ms: Some(7), first_event_ms: Some(3), finished: true, idle: true }),
            (11, PartitionTime { max_event_ms: Some(-5), idle: true, ..PartitionTime::default() }),
        ];
        let mut record = Vec::new();
        encode_progress(times.iter(), &mut record);
        let mut out = Vec::new();
        assert_eq!(decode(5, 8, &record, &mut out), Some(()));
        let want: Vec<Item> = times
            .iter()
            .map(|(source, time)| Item::Progress {
                counting: 5,
                offset: 8,
                source: *source,
                time: time.clone(),
            })
            .collect();
        assert_eq!(out, want);
        // Cut short, it is nobody's: nothing of it is taken.
        let mut out = Vec::new();
        assert_eq!(decode(5, 8, &record[..record.len() - 1], &mut out), None);
        assert!(out.is_empty());
        assert_eq!(kind(&record), 1, "a batch is a marker");
    }

    #[test]
    fn every_part_of_a_declared_event_time_travels() {
        for time in [
            PartitionTime::default(),
            PartitionTime { max_event_ms: Some(-5), idle: true, ..PartitionTime::default() },
            PartitionTime { first_event_ms: Some(1_000), finished: true, ..PartitionTime::default() },
            PartitionTime { max_event_ms: Some(7), first_event_ms: Some(3), finished: true, idle: true },
        ] {
            let mut bytes = Vec::new();
            encode_time(&time, &mut bytes);
            assert_eq!(decode_time(&bytes), Some(time));
        }
    }
}
