//! Riding out storage outages: a storage call that fails for a reason that passes (a timeout,
//! a refused or reset connection, a 5xx answer, throttling) is tried again in place, with
//! exponential backoff and jitter, for up to the retry timeout (`--storage-retry-timeout`).
//! Every other failure (access denied, no such bucket, disk full, a path that cannot be a
//! folder, a create-only conflict) returns at once, with its message.
//!
//! object_store retries each HTTP request itself (`RetryConfig`), but only up to a count and
//! a timeout, only some kinds of request on a timeout, never an error in the middle of a
//! response body, and never our own ListMultipartUploads; so the client `Storage` builds keeps
//! its retries short (blips pass unseen) and this layer owns long outages.
//!
//! An outage is logged once: a warning when the first call has to retry, an info line when
//! storage answers again. The pipeline sees it through a [`StorageObserver`], which keeps
//! this crate free of the metrics library.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// Tokio's clock, so tests can drive the waits (it is the system clock otherwise).
use tokio::time::Instant;

use super::StorageError;
use crate::shutdown::Shutdown;

/// Told about storage outages, requests and commit-log appends, for metrics. Calls come
/// from I/O tasks and the commit path: keep them cheap.
pub trait StorageObserver: Send + Sync {
    /// A call failed for a reason that passes and is about to be tried again.
    fn retry(&self, op: &'static str);
    /// An outage began (`true`: some call is retrying) or ended (`false`: storage answered).
    fn outage(&self, ongoing: bool);
    /// A request is about to be sent to an object store.
    fn request(&self, _kind: super::StorageRequest) {}
    /// A create-only log append lost the race for its version to another member, which
    /// now reads what it missed and tries the next one.
    fn log_conflict(&self) {}
    /// A log entry was appended, `took` after this member began reading the log for it
    /// (lost races included).
    fn log_appended(&self, _took: Duration) {}
}

/// An observer that ignores everything (verify, the SQL client, tests).
#[derive(Debug, Default)]
pub struct NoObserver;

impl StorageObserver for NoObserver {
    fn retry(&self, _op: &'static str) {}
    fn outage(&self, _ongoing: bool) {}
}

/// How long and how often to retry.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Give up on a call this long after its first failure.
    pub timeout: Duration,
    /// The first wait; each later one doubles, up to `max_backoff`.
    pub first_backoff: Duration,
    /// The longest wait between tries.
    pub max_backoff: Duration,
    /// Give up, too, once this stop was requested more than [`crate::shutdown::STOP_GRACE`]
    /// ago: a stop is honoured within seconds, also while storage is away.
    pub stop: Option<Shutdown>,
}

impl Default for RetryPolicy {
    /// 5 minutes: longer than S3's throttling bursts and a broker-side network blip, short
    /// enough that a store gone for good stops the pipeline while someone is still looking.
    fn default() -> Self {
        RetryPolicy {
            timeout: Duration::from_secs(300),
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            stop: None,
        }
    }
}

/// The retry loop and the outage it reports, shared by every clone of a `Storage`.
pub(crate) struct Retrier {
    policy: RetryPolicy,
    observer: Arc<dyn StorageObserver>,
    /// Bumped each time an outage ends: a failure of a try started before the end is
    /// news from the outage that ended, not the start of a new one.
    generation: AtomicU64,
    in_outage: AtomicBool,
    outage: Mutex<Option<Outage>>,
}

struct Outage {
    since: Instant,
    retries: u64,
}

impl std::fmt::Debug for Retrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retrier").field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl Retrier {
    pub(crate) fn new(policy: RetryPolicy, observer: Arc<dyn StorageObserver>) -> Self {
        Retrier {
            policy,
            observer,
            generation: AtomicU64::new(0),
            in_outage: AtomicBool::new(false),
            outage: Mutex::new(None),
        }
    }

    pub(crate) fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    pub(crate) fn observer(&self) -> Arc<dyn StorageObserver> {
        self.observer.clone()
    }

    /// Runs `call` (given the try number, from 0) until it succeeds, fails for good, or has
    /// failed for longer than the policy's timeout.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        op: &'static str,
        path: &str,
        mut call: F,
    ) -> Result<T, StorageError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, StorageError>>,
    {
        let mut first_failure: Option<Instant> = None;
        let mut backoff = self.policy.first_backoff;
        for attempt in 0u32.. {
            let generation = self.generation.load(Ordering::Acquire);
            match call(attempt).await {
                Ok(v) => {
                    self.answered();
                    return Ok(v);
                }
                Err(e) if e.is_retryable() => {
                    let since = *first_failure.get_or_insert_with(Instant::now);
                    let stop = self.policy.stop.as_ref();
                    if since.elapsed() >= self.policy.timeout || stop.is_some_and(Shutdown::grace_passed) {
                        return Err(StorageError::Unreachable {
                            op,
                            path: path.to_string(),
                            waited: since.elapsed(),
                            source: Box::new(e),
                        });
                    }
                    self.failed(op, path, &e, generation);
                    // After a stop, no wait outlasts its grace; before, a stop cuts it short.
                    let left = stop.and_then(Shutdown::grace_left).unwrap_or(Duration::MAX);
                    let wait = tokio::time::sleep(self.jitter(backoff).min(left));
                    match stop {
                        Some(stop) if !stop.is_triggered() => {
                            futures::future::select(Box::pin(wait), Box::pin(stop.triggered())).await;
                        }
                        _ => wait.await,
                    }
                    backoff = (backoff * 2).min(self.policy.max_backoff);
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }

    fn failed(&self, op: &'static str, path: &str, e: &StorageError, generation: u64) {
        self.observer.retry(op);
        let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        match outage.as_mut() {
            Some(o) => o.retries += 1,
            // A try that began before the last outage ended reports that outage, not a new one.
            None if generation != self.generation.load(Ordering::Acquire) => {}
            None => {
                *outage = Some(Outage { since: Instant::now(), retries: 1 });
                self.in_outage.store(true, Ordering::Release);
                self.observer.outage(true);
                tracing::warn!(
                    error = %crate::error_chain(e),
                    "storage unreachable: {op} {path} failed; retrying for up to {} (--storage-retry-timeout); \
                     this is logged once until storage answers",
                    humanize(self.policy.timeout)
                );
            }
        }
    }

    fn answered(&self) {
        if !self.in_outage.load(Ordering::Acquire) {
            return;
        }
        let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = outage.take() {
            self.in_outage.store(false, Ordering::Release);
            self.generation.fetch_add(1, Ordering::AcqRel);
            self.observer.outage(false);
            tracing::info!(
                retries = o.retries,
                "storage reachable again after {}",
                humanize(o.since.elapsed())
            );
        }
    }

    /// A wait between half of `d` and `d` ("equal jitter"), so clients that failed together
    /// do not come back together.
    fn jitter(&self, d: Duration) -> Duration {
        let half = d / 2;
        half + random_up_to(half)
    }
}

/// A random duration from zero to `d`, for waits that must spread clients apart.
pub(crate) fn random_up_to(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    // RandomState's keys differ per instance: enough randomness to spread processes apart.
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    d.mul_f64((random >> 11) as f64 / (1u64 << 53) as f64)
}

fn humanize(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// True for failures that pass with time: transport errors, 5xx answers (except 501 Not
/// Implemented, which does not pass), 429 and 408, S3's `SlowDown` and `InternalError`,
/// and local I/O that timed out or was interrupted.
pub(crate) fn retryable(e: &object_store::Error) -> bool {
    let object_store::Error::Generic { source, .. } = e else {
        // NotFound, AlreadyExists, Precondition, PermissionDenied, Unauthenticated,
        // NotImplemented…: answers, not outages.
        return false;
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
    while let Some(err) = cause {
        if let Some(h) = err.downcast_ref::<object_store::client::HttpError>() {
            use object_store::client::HttpErrorKind::*;
            return matches!(h.kind(), Connect | Request | Timeout | Interrupted | Decode);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return matches!(
                io.kind(),
                TimedOut | Interrupted | ConnectionRefused | ConnectionReset | ConnectionAborted | BrokenPipe
            );
        }
        if let Some(status) = err.downcast_ref::<HttpStatus>() {
            return retryable_status(status.status);
        }
        let text = err.to_string();
        if let Some(status) = status_in(&text) {
            return retryable_status(status);
        }
        // S3 may answer 200 with an error document; object_store calls it an error response.
        if text.contains("<Code>SlowDown</Code>") || text.contains("<Code>InternalError</Code>") {
            return true;
        }
        cause = err.source();
    }
    false
}

fn retryable_status(status: u16) -> bool {
    (status >= 500 && status != 501) || status == 429 || status == 408
}

/// The status in object_store's text for an HTTP error answer ("… status code: 503 …"):
/// the only place it keeps it, its retry error type being private.
fn status_in(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    text.get(at..at + 3)?.parse().ok()
}

/// An HTTP error answer from a request pageviews makes itself (ListMultipartUploads).
#[derive(Debug, thiserror::Error)]
#[error("HTTP {status}: {body}")]
pub(crate) struct HttpStatus {
    pub(crate) status: u16,
    pub(crate) body: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(source: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
        object_store::Error::Generic { store: "S3", source: Box::new(source) }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Text(String);

    #[test]
    fn passing_failures_are_told_apart_from_answers() {
        use std::io::{Error, ErrorKind};
        let retry = [
            generic(Text(
                "Server returned non-2xx status code: 503 Service Unavailable: <Code>SlowDown</Code>".into(),
            )),
            generic(Text("Server returned non-2xx status code: 500 Internal Server Error: ".into())),
            generic(Text("Server returned non-2xx status code: 429 Too Many Requests".into())),
            generic(Text("Server returned error response: <Error><Code>SlowDown</Code></Error>".into())),
            // Azure's throttling and server timeouts.
            generic(Text("Server returned non-2xx status code: 503 Service Unavailable: <Code>ServerBusy</Code>".into())),
            generic(Text("Server returned non-2xx status code: 500 Internal Server Error: <Code>OperationTimedOut</Code>".into())),
            generic(HttpStatus { status: 503, body: String::new() }),
            generic(Error::new(ErrorKind::ConnectionReset, "reset")),
            generic(object_store::client::HttpError::new(
                object_store::client::HttpErrorKind::Connect,
                Error::new(ErrorKind::ConnectionRefused, "refused"),
            )),
        ];
        for e in &retry {
            assert!(retryable(e), "{e}");
        }
        let fatal = [
            generic(Text(
                "Server returned non-2xx status code: 403 Forbidden: <Code>AccessDenied</Code>".into(),
            )),
            generic(Text(
                "Server returned non-2xx status code: 404 Not Found: <Code>NoSuchBucket</Code>".into(),
            )),
            generic(HttpStatus { status: 501, body: "<Code>NotImplemented</Code>".into() }),
            generic(Text(
                "Server returned non-2xx status code: 400 Bad Request: <Code>InvalidBlockList</Code>".into(),
            )),
            generic(Text(
                "Server returned non-2xx status code: 404 Not Found: <Code>ContainerNotFound</Code>".into(),
            )),
            generic(Text(
                "Server returned non-2xx status code: 403 Forbidden: <Code>AuthenticationFailed</Code>"
                    .into(),
            )),
            generic(Error::new(ErrorKind::StorageFull, "No space left on device")),
            generic(Error::new(ErrorKind::NotADirectory, "Not a directory")),
            object_store::Error::AlreadyExists { path: "x".into(), source: Box::new(Text("exists".into())) },
            object_store::Error::PermissionDenied { path: "x".into(), source: Box::new(Text("no".into())) },
        ];
        for e in &fatal {
            assert!(!retryable(e), "{e}");
        }
    }

    #[derive(Default)]
    struct Count(std::sync::Mutex<(u32, Vec<bool>)>);

    impl StorageObserver for Count {
        fn retry(&self, _op: &'static str) {
            self.0.lock().unwrap().0 += 1;
        }
        fn outage(&self, ongoing: bool) {
            self.0.lock().unwrap().1.push(ongoing);
        }
    }

    fn unavailable() -> StorageError {
        StorageError::Store {
            op: "put",
            path: "x".into(),
            source: generic(Text("Server returned non-2xx status code: 503 Service Unavailable".into())),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_is_retried_until_it_answers_and_the_outage_is_reported_once() {
        let observer = Arc::new(Count::default());
        let policy = RetryPolicy { timeout: Duration::from_secs(60), ..RetryPolicy::default() };
        let r = Retrier::new(policy, observer.clone());
        let got = r
            .run("put", "x", |attempt| async move {
                if attempt < 5 {
                    Err(unavailable())
                } else {
                    Ok(attempt)
                }
            })
            .await;
        assert_eq!(got.unwrap(), 5);
        assert_eq!(*observer.0.lock().unwrap(), (5, vec![true, false]));

        // A failure that does not pass returns at once.
        let denied = || StorageError::AlreadyExists("x".into());
        assert!(matches!(
            r.run("create", "x", |_| async { Err::<(), _>(denied()) }).await,
            Err(StorageError::AlreadyExists(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_keeps_failing_gives_up_after_the_timeout_naming_what_it_waited_for() {
        let policy = RetryPolicy { timeout: Duration::from_secs(30), ..RetryPolicy::default() };
        let r = Retrier::new(policy, Arc::new(NoObserver));
        let started = tokio::time::Instant::now();
        let err = r.run("put", "t/x", |_| async { Err::<(), _>(unavailable()) }).await.unwrap_err();
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(30) && waited < Duration::from_secs(45), "{waited:?}");
        let text = crate::error_chain(&err);
        assert!(
            text.contains("put t/x") && text.contains("--storage-retry-timeout") && text.contains("503"),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_retries_within_its_grace_however_long_the_timeout() {
        let stop = Shutdown::default();
        let policy = RetryPolicy {
            timeout: Duration::from_secs(3600),
            stop: Some(stop.clone()),
            ..RetryPolicy::default()
        };
        let r = Retrier::new(policy, Arc::new(NoObserver));
        let started = tokio::time::Instant::now();
        let call = r.run("put", "t/x", |_| async { Err::<(), _>(unavailable()) });
        let stopper = async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            stop.trigger();
            std::future::pending::<()>().await
        };
        let err = tokio::select! {
            e = call => e.unwrap_err(),
            _ = stopper => unreachable!(),
        };
        let waited = started.elapsed();
        let limit = Duration::from_secs(30) + crate::shutdown::STOP_GRACE + Duration::from_secs(1);
        assert!(waited >= Duration::from_secs(30) && waited <= limit, "{waited:?}");
        assert!(matches!(err, StorageError::Unreachable { .. }), "{err}");
    }
}
