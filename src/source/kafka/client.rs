//! Configuring librdkafka clients for the source topic, and reading its metadata: shared by
//! the group consumer, the exchange and datagen.

use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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

/// Applies user-given librdkafka properties last, so they override the built-in ones.
pub fn with_options(mut config: ClientConfig, options: &[(String, String)]) -> ClientConfig {
    for (key, value) in options {
        // librdkafka quotes a value in its errors (a misspelled key's, for one).
        pageviews_core::secrets::register_option(key, value);
        config.set(key, value);
    }
    config
}

/// How much a consumer fetches ahead, for the source and the exchange alike: librdkafka's
/// per-partition prefetch is bounded, or memory grows with the partitions assigned; a full
/// partition pauses 10 ms, not 1 s, or that pause sets the pace; and a fetch of partitions with
/// nothing new waits 100 ms at the broker, not 500, or the others queue behind it. The
/// measurements: docs/measurements.md.
pub(in crate::source) fn prefetch_bounds(client: &mut ClientConfig) {
    client
        .set("fetch.wait.max.ms", "100")
        .set("fetch.queue.backoff.ms", "10")
        .set("queued.min.messages", "20000")
        .set("queued.max.messages.kbytes", "4096");
}

/// The topic's partition count, waiting for the topic to exist unless `--until-end` is set
/// (then a missing topic is an error), and for the brokers to answer, until `stop` fires.
pub fn partition_count(config: &KafkaConfig, stop: &Shutdown) -> Result<u32, SourceError> {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    let consumer: BaseConsumer<FatalErrors> = with_options(client, &config.options)
        .create_with_context(FatalErrors::default())
        .map_err(|e| kafka_error(config, "create a metadata client", e))?;
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

/// librdkafka's error callback for a client of ours: an authentication or TLS failure is kept
/// for the caller, which stops with it (no retry cures a wrong password or an untrusted
/// certificate); other errors are transport trouble the caller waits out and reports once.
#[derive(Debug, Default)]
pub struct FatalErrors(Mutex<Option<String>>);

impl FatalErrors {
    /// The authentication or TLS failure reported since the last call, if any.
    pub fn take(&self) -> Option<String> {
        self.0.lock().ok()?.take()
    }

    /// Keeps `error` when no retry can cure it; true when it was kept.
    pub fn note(&self, error: &KafkaError, reason: &str) -> bool {
        use rdkafka::types::RDKafkaErrorCode as Code;
        let fatal = matches!(
            error.rdkafka_error_code(),
            Some(Code::Authentication | Code::SaslAuthenticationFailed | Code::SSL)
        );
        if fatal {
            if let Ok(mut slot) = self.0.lock() {
                *slot = Some(reason.to_string());
            }
        }
        fatal
    }
}

impl rdkafka::consumer::ConsumerContext for FatalErrors {}

impl ClientContext for FatalErrors {
    fn error(&self, error: KafkaError, reason: &str) {
        if !self.note(&error, reason) {
            tracing::debug!(%error, reason, "librdkafka");
        }
    }
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
    pub fn new(kind: fn(&[u8]) -> usize) -> Arc<Self> {
        Arc::new(Deliveries { delivered: AtomicU64::new(0), failed: Default::default(), kind })
    }

    /// Records the broker acknowledged so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Records of `kind` the broker refused so far.
    pub fn failed(&self, kind: usize) -> u64 {
        self.failed[kind.min(1)].load(Ordering::Relaxed)
    }

    /// Records of `kind` refused since the last call.
    pub fn take_failed(&self, kind: usize) -> u64 {
        self.failed[kind.min(1)].swap(0, Ordering::Relaxed)
    }
}

/// The producer context that counts [`Deliveries`].
pub(crate) struct DeliveryContext(pub Arc<Deliveries>);

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
