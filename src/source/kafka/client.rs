//! Configuring librdkafka clients for the source topic, and reading its metadata: shared by
//! the group consumer, the exchange and datagen. How every client of ours is set up (options,
//! the prefetch bound, fatal errors) is `pageviews_kafka`'s, which the SQL client shares.

use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::ProducerContext;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Message;
use tracing::{info, warn};

use super::offsets::OffsetReset;
use crate::source::SourceError;
use crate::Shutdown;

/// How long a metadata or watermark request may take.
pub(super) const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach and read the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// Source topic.
    pub topic: String,
    /// Consumer group.
    pub group: String,
    /// Stop once the end offsets seen at start are reached.
    pub until_end: bool,
    /// librdkafka properties from `--kafka-option`, applied over ours (security, tuning).
    pub options: Vec<(String, String)>,
    /// What to do when a checkpoint's position does not belong to the partition as it is now.
    pub on_offset_reset: OffsetReset,
}

pub(in crate::source) use pageviews_kafka::prefetch_bounds;
pub use pageviews_kafka::{with_options, FatalErrors};

/// The topic's partition count, waiting for the topic to exist unless `--until-end` is set
/// (then a missing topic is an error), and for the brokers to answer, until `stop` fires.
pub fn partition_count(config: &KafkaConfig, stop: &Shutdown) -> Result<u32, SourceError> {
    let consumer = metadata_client(config)?;
    let mut waited = false;
    loop {
        match consumer.fetch_metadata(Some(&config.topic), METADATA_TIMEOUT) {
            Ok(metadata) => {
                let topic = metadata.topics().iter().find(|t| t.name() == config.topic);
                let n = topic.filter(|t| t.error().is_none()).map_or(0, |t| t.partitions().len() as u32);
                if n > 0 {
                    return Ok(n);
                }
                if config.until_end {
                    return Err(SourceError::NoTopic { topic: config.topic.clone() });
                }
                if !waited {
                    info!(topic = %config.topic, "waiting for the topic to be created");
                    waited = true;
                }
            }
            Err(e) => {
                // Errors reach the context's callback only when the client is polled (below).
                warn!(brokers = %config.brokers, error = %e, "cannot read the topic's metadata; retrying")
            }
        }
        // A second between tries, serving the client meanwhile: an authentication failure
        // arrives through its callback.
        for _ in 0..10 {
            let _ = consumer.poll(Duration::from_millis(100));
            if let Some(cause) = consumer.context().take() {
                return Err(SourceError::Refused { brokers: config.brokers.clone(), cause });
            }
            if stop.is_triggered() {
                let waiting_for = format!("Kafka at {} (topic {})", config.brokers, config.topic);
                return Err(SourceError::Stopped { waiting_for });
            }
        }
    }
}

/// A client of the brokers that joins no group and reads nothing: for metadata and for
/// questions that must not queue behind a consumer's fetch on the same connection.
pub(super) fn metadata_client(config: &KafkaConfig) -> Result<BaseConsumer<FatalErrors>, SourceError> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    with_options(client, &config.options)
        .create_with_context(FatalErrors::default())
        .map_err(|e| kafka_error(config, "create a metadata client", e))
}

/// Creates `topic` with `partitions` partitions and the broker's default replication when
/// it is missing; true when this call created it.
pub(crate) fn ensure_topic(
    brokers: &str,
    options: &[(String, String)],
    topic: &str,
    partitions: i32,
) -> Result<bool, KafkaError> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", brokers);
    let admin: AdminClient<DefaultClientContext> = with_options(client, options).create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = futures::executor::block_on(admin.create_topics([&new], &opts))?;
    let mut created = false;
    for result in results {
        match result {
            Ok(_) => created = true,
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(KafkaError::AdminOp(code)),
        }
    }
    Ok(created)
}

/// A producer's deliveries as the broker acknowledges or refuses them, the refused ones
/// apart by kind (`kind` reads it from the payload: 0 or 1).
pub(crate) struct Deliveries {
    delivered: AtomicU64,
    failed: [AtomicU64; 2],
    kind: fn(&[u8]) -> usize,
}

impl Deliveries {
    pub(crate) fn new(kind: fn(&[u8]) -> usize) -> Arc<Self> {
        Arc::new(Deliveries { delivered: AtomicU64::new(0), failed: Default::default(), kind })
    }

    /// Records the broker acknowledged so far.
    pub(crate) fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Records of `kind` the broker refused so far.
    pub(crate) fn failed(&self, kind: usize) -> u64 {
        self.failed[kind.min(1)].load(Ordering::Relaxed)
    }

    /// Records of `kind` refused since the last call.
    pub(crate) fn take_failed(&self, kind: usize) -> u64 {
        self.failed[kind.min(1)].swap(0, Ordering::Relaxed)
    }
}

/// The producer context that counts [`Deliveries`].
pub(crate) struct DeliveryContext(pub(crate) Arc<Deliveries>);

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.delivered.fetch_add(1, Ordering::Relaxed),
            Err((_, msg)) => {
                let kind = (self.0.kind)(msg.payload().unwrap_or_default()).min(1);
                self.0.failed[kind].fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

pub(in crate::source) fn kafka_error(config: &KafkaConfig, what: &str, e: KafkaError) -> SourceError {
    SourceError::Kafka { brokers: config.brokers.clone(), what: what.to_string(), source: Box::new(e) }
}
