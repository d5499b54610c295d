//! The records of this member's partitions, taken from librdkafka many to a call.
//!
//! rust-rdkafka's `poll` hands out one record per call, and each call reads the clock three
//! times (twice in librdkafka, for `max.poll.interval.ms`, once in rdkafka): with the event
//! dispatch around them, about a sixth of what a worker spends per record
//! (docs/measurements.md). librdkafka's callback dispatch pays that once per call, but on the
//! consumer queue it would serve a rebalance itself (an unassign: rust-rdkafka sets no
//! rebalance callback), and the source would never claim and restore what it is assigned.
//! So each partition's queue is forwarded to a queue of our own before the partition is
//! assigned: records and partition ends come from there, while rebalances and errors stay
//! on the consumer queue, which the source polls as before. Not the batch call
//! (`rd_kafka_consume_batch_queue`): it moves a partition's read position past its end on
//! a partition-EOF message, and the next rebalance resumed fetching there, out of range,
//! which `auto.offset.reset` answered by reading the partition again from the start.

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

/// Our queue, while it is open.
struct Queue {
    queue: NonNull<rd::rd_kafka_queue_t>,
    client: NonNull<rd::rd_kafka_t>,
    topic: CString,
    /// Partitions forwarded here.
    routed: Vec<i32>,
}

impl Queue {
    /// Forwards partition `p`'s queue to `to`; false when librdkafka has no such partition.
    ///
    /// # Safety
    /// The client must be alive and `to` a live queue of it.
    unsafe fn forward(&self, p: i32, to: *mut rd::rd_kafka_queue_t) -> bool {
        // SAFETY: per the caller; the partition's queue handle is released here.
        unsafe {
            let pq = rd::rd_kafka_queue_get_partition(self.client.as_ptr(), self.topic.as_ptr(), p);
            if pq.is_null() {
                return false;
            }
            rd::rd_kafka_queue_forward(pq, to);
            rd::rd_kafka_queue_destroy(pq);
        }
        true
    }
}

// SAFETY: librdkafka's queues and clients are thread-safe; the pointers are used under the
// mutex of `FetchQueue`, and only while the client lives (see `FetchQueue::close`).
unsafe impl Send for Queue {}

/// The queue the source's partitions deliver to, shared by the source (which takes from it
/// and closes it, on its own thread) and the consumer's callbacks (which route to it and wake
/// it). Closed, or never opened, it routes and yields nothing.
#[derive(Default)]
pub(super) struct FetchQueue(Mutex<Option<Queue>>);

impl FetchQueue {
    /// Opens a queue of `client`'s for partitions of `topic`; false when librdkafka makes
    /// none. The client must not be destroyed before [`FetchQueue::close`].
    pub(super) fn open(&self, client: *mut rd::rd_kafka_t, topic: &str) -> bool {
        let Some(client) = NonNull::new(client) else { return false };
        let Ok(topic) = CString::new(topic) else { return false };
        let Ok(mut open) = self.0.lock() else { return false };
        // SAFETY: a live client; the queue is destroyed in `close`, before the client.
        let Some(queue) = NonNull::new(unsafe { rd::rd_kafka_queue_new(client.as_ptr()) }) else {
            return false;
        };
        *open = Some(Queue { queue, client, topic, routed: Vec::new() });
        true
    }

    /// Forwards `partitions` here. Called before they are assigned, so that no record of
    /// theirs reaches the consumer queue.
    pub(super) fn route(&self, partitions: impl IntoIterator<Item = i32>) {
        let Ok(mut open) = self.0.lock() else { return };
        let Some(q) = open.as_mut() else { return };
        for p in partitions {
            // Forwarded again at every assignment: a partition librdkafka made anew (its topic
            // created again) would deliver to the consumer queue.
            // SAFETY: a live client and queue (`close` takes the queue under this lock).
            if unsafe { q.forward(p, q.queue.as_ptr()) } && !q.routed.contains(&p) {
                q.routed.push(p);
            }
        }
    }

    /// Ends a [`FetchQueue::take`] that is waiting (or the next one): something arrived on
    /// the consumer queue.
    pub(super) fn wake(&self) {
        if let Ok(open) = self.0.lock() {
            if let Some(q) = open.as_ref() {
                // SAFETY: a live queue.
                unsafe { rd::rd_kafka_queue_yield(q.queue.as_ptr()) }
            }
        }
    }

    /// Hands what has arrived to `each`, one message at a time, until it returns false or
    /// nothing is left, waiting up to `wait` for the first. librdkafka drops the records of a
    /// partition sought meanwhile, also one sought by `each` during this call.
    pub(super) fn take(&self, wait: Duration, each: &mut dyn FnMut(Item<'_>) -> bool) {
        // The lock is not held while waiting: `wake` must get through.
        let Some((queue, client)) =
            self.0.lock().ok().and_then(|open| open.as_ref().map(|q| (q.queue, q.client)))
        else {
            return;
        };
        let mut serving = Serving { each, client, panic: None };
        let wait_ms = wait.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: the queue lives until `close`, which the source calls on the thread that
        // takes, so never during this call; `serving` outlives the call that uses it.
        unsafe {
            rd::rd_kafka_consume_callback_queue(
                queue.as_ptr(),
                wait_ms,
                Some(serve),
                &mut serving as *mut Serving<'_> as *mut std::ffi::c_void,
            );
        }
        if let Some(panic) = serving.panic {
            std::panic::resume_unwind(panic);
        }
    }

    /// Hands the routed partitions back to the consumer queue (so closing the consumer, which
    /// serves that queue, finds everything where rust-rdkafka expects it) and destroys the
    /// queue, with any record fetched and not taken: it lies past the last checkpoint.
    pub(super) fn close(&self) {
        let Some(q) = self.0.lock().ok().and_then(|mut open| open.take()) else { return };
        // SAFETY: the client is alive (the source closes this before its consumer); every
        // handle taken here is released here.
        unsafe {
            let consumer = rd::rd_kafka_queue_get_consumer(q.client.as_ptr());
            if !consumer.is_null() {
                for &p in &q.routed {
                    q.forward(p, consumer);
                }
                rd::rd_kafka_queue_destroy(consumer);
            }
            rd::rd_kafka_queue_destroy(q.queue.as_ptr());
        }
    }
}

/// One message handed to [`FetchQueue::take`]'s callback.
pub(super) enum Item<'a> {
    Record {
        partition: i32,
        offset: i64,
        timestamp: i64,
        payload: &'a [u8],
    },
    /// The partition's end was reached (librdkafka's partition EOF).
    End(i32),
    Error(KafkaError),
}

/// What [`serve`] needs: the callback, the client to stop librdkafka's dispatch on, and a
/// panic of the callback, carried past librdkafka's frames.
struct Serving<'a> {
    each: &'a mut dyn FnMut(Item<'_>) -> bool,
    client: NonNull<rd::rd_kafka_t>,
    panic: Option<Box<dyn std::any::Any + Send>>,
}

/// librdkafka's consume callback: one message, owned by librdkafka for the call.
unsafe extern "C" fn serve(message: *mut rd::rd_kafka_message_t, opaque: *mut std::ffi::c_void) {
    // SAFETY: `take` passes its `Serving`, alive for the whole dispatch.
    let serving = unsafe { &mut *(opaque as *mut Serving<'_>) };
    // SAFETY: a message librdkafka keeps alive until this returns (null for an op it does not
    // make a message of).
    let Some(msg) = (unsafe { message.as_ref() }) else { return };
    let go_on = if serving.panic.is_some() {
        false
    } else {
        let item = item(msg);
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (serving.each)(item))) {
            Ok(go_on) => go_on,
            Err(panic) => {
                serving.panic = Some(panic);
                false
            }
        }
    };
    if !go_on {
        // SAFETY: a live client; ends the dispatch after this message, keeping the rest queued.
        unsafe { rd::rd_kafka_yield(serving.client.as_ptr()) }
    }
}

/// The message as an [`Item`], borrowing its payload.
fn item(msg: &rd::rd_kafka_message_t) -> Item<'_> {
    match msg.err {
        rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => {
            let payload = if msg.payload.is_null() {
                &[][..]
            } else {
                // SAFETY: librdkafka's payload of `len` bytes, owned by the message.
                unsafe { std::slice::from_raw_parts(msg.payload as *const u8, msg.len) }
            };
            let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
            // SAFETY: a live message.
            let ts = unsafe { rd::rd_kafka_message_timestamp(msg, &mut kind) };
            let timestamp = if kind == rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE {
                i64::MIN
            } else {
                ts
            };
            Item::Record { partition: msg.partition, offset: msg.offset, timestamp, payload }
        }
        rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF => Item::End(msg.partition),
        err => Item::Error(KafkaError::MessageConsumption(RDKafkaErrorCode::from(err))),
    }
}
