//! `pageviews datagen`: the built-in generator, produced to Kafka.
//!
//! The records are the embedded generator's (the same [`GeneratorSource`], same pacing), keyed
//! by postcode as the original job's producer did, or with no key (`--unkeyed`), spread over
//! the partitions as a producer that keys by nothing spreads them. `--bad-ratio` swaps a deterministic share
//! of them for malformed records, cycling through every dead-letter kind, so a test can
//! compute exactly what the pipeline must write. The producer is idempotent: a retried send
//! never duplicates a record.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use thiserror::Error;
use tracing::info;

use crate::pipeline::Shutdown;
use crate::source::kafka::{ensure_topic, with_options, Deliveries, DeliveryContext};
use crate::source::{Batch, GeneratorConfig, GeneratorSource, Poll, Source, SourceError};

/// What to produce, and where.
#[derive(Debug, Clone)]
pub struct DatagenConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// Target topic.
    pub topic: String,
    /// Partitions when the topic is created.
    pub partitions: i32,
    /// The stream.
    pub generator: GeneratorConfig,
    /// Share of records replaced by malformed ones.
    pub bad_ratio: f64,
    /// Records carry their postcode as the key (else none, and each goes to a random
    /// partition).
    pub keyed: bool,
    /// librdkafka properties from `--kafka-option`, applied over ours.
    pub options: Vec<(String, String)>,
}

/// What a datagen run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatagenSummary {
    /// Records the broker acknowledged.
    pub delivered: u64,
    /// Of those, malformed on purpose.
    pub(crate) malformed: u64,
    /// Records the broker did not acknowledge.
    pub failed: u64,
}

/// Why datagen stopped.
#[derive(Debug, Error)]
pub enum DatagenError {
    /// A Kafka call failed.
    #[error("Kafka at {brokers}: cannot {what}: {source}")]
    Kafka {
        /// Bootstrap servers.
        brokers: String,
        /// What was attempted.
        what: &'static str,
        /// The client's error.
        source: KafkaError,
    },
    /// The generator cannot go on (its stream left the years the tables can hold). What was
    /// produced before is flushed first.
    #[error("the generator stopped after {sent} records: {source}")]
    Source {
        /// Records sent before it stopped.
        sent: u64,
        /// Why.
        source: SourceError,
    },
    /// Some records were not delivered before the flush timeout.
    #[error("{failed} of {total} records were not delivered")]
    Undelivered {
        /// Records not acknowledged.
        failed: u64,
        /// Records sent.
        total: u64,
    },
}

/// The malformed records `--bad-ratio` mixes in, one kind after another.
const MALFORMED: [&[u8]; 6] = [
    b"{\"user_id\": 1, \"postcode\": ",
    b"{\"user_id\": 1, \"webpage\": \"www.website.com/index.html\", \"timestamp\": 0}",
    b"{\"user_id\": \"one\", \"postcode\": \"SW1A 1AA\", \"webpage\": \"w\", \"timestamp\": 0}",
    b"{\"user_id\": 1, \"postcode\": \"SW1A 1AA\", \"webpage\": \"w\", \"timestamp\": \"yesterday\"}",
    b"[\"not\", \"an\", \"object\"]",
    b"{\"user_id\": 1, \"postcode\": \"\xff\xfe\"}",
];

/// True when record `seq` of a stream is replaced by a malformed one.
pub(crate) fn is_malformed(generator: &GeneratorConfig, bad_ratio: f64, seq: u64) -> bool {
    if bad_ratio <= 0.0 {
        return false;
    }
    let h = (generator.seed ^ 0xA076_1D64_78BD_642F).wrapping_add(seq.wrapping_mul(0xE703_7ED1_A0B4_28DB));
    let h = (h ^ (h >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    ((h >> 11) as f64 / (1u64 << 53) as f64) < bad_ratio
}

/// Record `seq` as datagen produces it: the generator's record, or a malformed one.
pub fn datagen_record(generator: &GeneratorConfig, bad_ratio: f64, seq: u64, out: &mut Vec<u8>) {
    if is_malformed(generator, bad_ratio, seq) {
        out.extend_from_slice(MALFORMED[(seq % MALFORMED.len() as u64) as usize]);
    } else {
        generator.write_record(seq, out);
    }
}

/// Produces the stream until `--count` is reached or `shutdown` fires, then flushes.
/// `progress` prints a line to stderr every second.
pub fn run_datagen(
    config: &DatagenConfig,
    shutdown: &Shutdown,
    progress: bool,
) -> Result<DatagenSummary, DatagenError> {
    let kafka = |what, source| DatagenError::Kafka { brokers: config.brokers.clone(), what, source };
    if ensure_topic(&config.brokers, &config.options, &config.topic, config.partitions)
        .map_err(|e| kafka("create the topic", e))?
    {
        info!(topic = %config.topic, partitions = config.partitions, "created topic");
    }
    let deliveries = Deliveries::new(|_| 0);
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.brokers)
        .set("enable.idempotence", "true")
        // Kafka's Java partitioner for keyed records, which is also how the pipeline routes a
        // postcode to the partition that counts it: a keyed datagen topic needs no record
        // moved. Records without a key go to a random partition.
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "500000")
        .set("client.id", "pageviews-datagen");
    if !config.keyed {
        // Each record to a random partition: librdkafka's sticky default sends everything
        // produced within 10 ms to one, so a fast backlog could land in a single partition.
        client.set("sticky.partitioning.linger.ms", "0");
    }
    let producer: ThreadedProducer<DeliveryContext> = with_options(client, &config.options)
        .create_with_context(DeliveryContext(deliveries.clone()))
        .map_err(|e| kafka("create the producer", e))?;

    let mut source = GeneratorSource::new(config.generator.clone(), 0);
    let started = Instant::now();
    let mut batch = Batch::default();
    let (mut sent, mut malformed) = (0u64, 0u64);
    let mut payload = Vec::with_capacity(256);
    let mut next_report = Duration::from_secs(1);
    let mut failed = None;
    while !shutdown.is_triggered() {
        batch.clear();
        match source.poll(&mut batch, 10_000, started.elapsed().as_millis() as u64) {
            Ok(Poll::Ready) => {}
            Ok(Poll::Pending(wait)) => {
                std::thread::sleep(wait);
                continue;
            }
            Ok(Poll::End) => break,
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
        for rec in batch.records() {
            let seq = rec.position;
            payload.clear();
            if is_malformed(&config.generator, config.bad_ratio, seq) {
                malformed += 1;
                datagen_record(&config.generator, config.bad_ratio, seq, &mut payload);
            } else {
                payload.extend_from_slice(batch.payload(rec));
            }
            let key = config.keyed.then(|| config.generator.key_of(seq));
            let mut record = BaseRecord { key, ..BaseRecord::to(&config.topic).payload(payload.as_slice()) };
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((e, _)) => return Err(kafka("produce", e)),
                }
            }
            sent += 1;
        }
        if progress && started.elapsed() >= next_report {
            next_report += Duration::from_secs(1);
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "datagen: {sent} sent, {} delivered, {:.0}/s",
                deliveries.delivered(),
                sent as f64 / secs
            );
        }
    }
    producer.flush(Duration::from_secs(60)).map_err(|e| kafka("flush", e))?;
    if let Some(source) = failed {
        return Err(DatagenError::Source { sent, source });
    }
    let summary =
        DatagenSummary { delivered: deliveries.delivered(), malformed, failed: deliveries.failed(0) };
    info!(
        topic = %config.topic,
        delivered = summary.delivered,
        malformed = summary.malformed,
        seconds = started.elapsed().as_secs_f64(),
        "datagen finished"
    );
    if summary.failed > 0 || summary.delivered < sent {
        return Err(DatagenError::Undelivered { failed: sent - summary.delivered, total: sent });
    }
    Ok(summary)
}
