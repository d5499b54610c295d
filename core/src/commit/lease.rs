//! The lease: who may run on a store that does not fence.
//!
//! Where the store refuses a second create-only write, the log's claims keep instances apart
//! and no lease is taken. Where it does not (s3rver), two instances could write the same log
//! entry, so only one may run: it keeps `_checkpoints/<pipeline>/lease.json` (who, since
//! when, last renewed when, for how long) and renews it every third of its duration — from a
//! timer on the storage runtime, so a loop that waits on its source or works through a long
//! batch keeps it without committing, and before each log append, so a run whose lease was
//! taken never writes the log again. Another instance is refused while the lease is live,
//! and admitted once its holder has been silent for the whole duration (a kill -9). The
//! same instance id takes it over at once: that is the instance restarted.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::layout::lease_path;
use super::CheckpointError;
use crate::storage::Storage;
use crate::time::format_timestamp;

/// How long an instance on a store that cannot fence counts as running after it last
/// renewed its lease.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// What `lease.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseFile {
    member: String,
    run: String,
    /// When this run took it (UTC ms).
    #[serde(default)]
    since_ms: i64,
    /// When it was last renewed (UTC ms).
    heartbeat_ms: i64,
    /// How long after a renewal it stays live: the holder's own, which sets its renewals.
    #[serde(default = "default_lease_ms")]
    lease_ms: i64,
}

fn default_lease_ms() -> i64 {
    DEFAULT_LEASE.as_millis() as i64
}

impl LeaseFile {
    fn live_at(&self, now_ms: i64) -> bool {
        now_ms.saturating_sub(self.heartbeat_ms) < self.lease_ms
    }
}

/// This run's lease, renewed in the background until released or dropped.
pub(super) struct Lease {
    storage: Storage,
    path: Path,
    pipeline: String,
    mine: LeaseFile,
    /// Set when the lease is given up; the timer holds it across each renewal, so a renewal
    /// in flight never lands after the release deleted the file.
    stopped: Arc<tokio::sync::Mutex<bool>>,
    timer: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Takes the lease of `pipeline` for `member`'s run `run`, unless another member's is
    /// live; starts renewing it every third of `duration`.
    pub(super) async fn take(
        storage: &Storage,
        pipeline: &str,
        member: &str,
        run: &str,
        duration: Duration,
    ) -> Result<Lease, CheckpointError> {
        let path = lease_path(pipeline);
        let now = wall_ms();
        if let Some(held) = read(storage, &path).await? {
            if held.member != member && held.live_at(now) {
                return Err(CheckpointError::Unfenced {
                    pipeline: pipeline.to_string(),
                    other: held.member,
                    run: held.run,
                    since: format_timestamp(held.since_ms),
                });
            }
        }
        let lease_ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        let mine =
            LeaseFile { member: member.into(), run: run.into(), since_ms: now, heartbeat_ms: now, lease_ms };
        write(storage, &path, &mine).await?;
        let stopped = Arc::new(tokio::sync::Mutex::new(false));
        let timer = storage.runtime().spawn(renew_every(
            storage.clone(),
            path.clone(),
            pipeline.to_string(),
            mine.clone(),
            duration / 3,
            stopped.clone(),
        ));
        Ok(Lease { storage: storage.clone(), path, pipeline: pipeline.to_string(), mine, stopped, timer })
    }

    /// Renews the lease now; fails with [`CheckpointError::Replaced`] when another run
    /// holds it.
    pub(super) async fn renew(&self) -> Result<(), CheckpointError> {
        renew(&self.storage, &self.path, &self.pipeline, &self.mine).await
    }

    /// Gives the lease up on a clean stop, so another instance may start at once. Only this
    /// run's own lease is removed.
    pub(super) async fn release(self) -> Result<(), CheckpointError> {
        *self.stopped.lock().await = true;
        self.timer.abort();
        match read(&self.storage, &self.path).await? {
            Some(held) if held.run == self.mine.run => Ok(self.storage.delete(&self.path).await?),
            _ => Ok(()),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // A run that failed stops renewing: its lease lapses after its duration.
        self.timer.abort();
    }
}

/// The renewal timer: one task on the storage runtime, no thread of its own.
async fn renew_every(
    storage: Storage,
    path: Path,
    pipeline: String,
    mine: LeaseFile,
    period: Duration,
    stopped: Arc<tokio::sync::Mutex<bool>>,
) {
    loop {
        tokio::time::sleep(period).await;
        let stopped = stopped.lock().await;
        if *stopped {
            return;
        }
        match renew(&storage, &path, &pipeline, &mine).await {
            Ok(()) => {}
            Err(e @ CheckpointError::Replaced { .. }) => {
                // The next log append fails the same way and stops the run.
                tracing::warn!(error = %e, "the lease was taken: no longer renewing it");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "could not renew the lease; trying again"),
        }
    }
}

async fn renew(
    storage: &Storage,
    path: &Path,
    pipeline: &str,
    mine: &LeaseFile,
) -> Result<(), CheckpointError> {
    if let Some(held) = read(storage, path).await? {
        if held.run != mine.run {
            return Err(CheckpointError::Replaced {
                pipeline: pipeline.to_string(),
                by: held.member,
                run: held.run,
                took: "the lease".into(),
                since: format_timestamp(held.since_ms),
            });
        }
    }
    write(storage, path, &LeaseFile { heartbeat_ms: wall_ms(), ..mine.clone() }).await
}

async fn read(storage: &Storage, path: &Path) -> Result<Option<LeaseFile>, CheckpointError> {
    match storage.get(path).await {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn write(storage: &Storage, path: &Path, lease: &LeaseFile) -> Result<(), CheckpointError> {
    let json = serde_json::to_vec(lease)
        .map_err(|e| CheckpointError::Corrupt { path: path.to_string(), reason: e.to_string() })?;
    Ok(storage.put(path, Bytes::from(json)).await?)
}

/// The wall clock (UTC ms). Real time, not the pipeline's clock: leases are read by other
/// processes.
pub(super) fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_live_for_its_holders_duration_after_each_renewal() {
        let lease = LeaseFile {
            member: "a".into(),
            run: "r".into(),
            since_ms: 0,
            heartbeat_ms: 10_000,
            lease_ms: 4_000,
        };
        assert!(lease.live_at(10_000) && lease.live_at(13_999));
        assert!(!lease.live_at(14_000));
        let old: LeaseFile = serde_json::from_str(r#"{"member":"a","run":"r","heartbeat_ms":5}"#).unwrap();
        assert_eq!(old.lease_ms, 60_000, "a lease written without its duration lasts the default");
    }
}
