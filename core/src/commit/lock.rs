//! One run per instance on a local disk: a second run beside a live one is refused.
//!
//! Two runs with the same instance id take each other's partitions: the second claims them,
//! and the first learns it only at its next commit, which the claims fence. Telling a live
//! first run from a dead one (a restart after kill -9, which must go on at once) needs
//! something that dies with the process. On a local disk the kernel has it: each run holds an
//! advisory lock on `_checkpoints/<pipeline>/instance-<id>.lock` for as long as it lasts,
//! released however the process ends, and a second run finding it held is refused, naming
//! the first. Object stores have no such lock: there the claims alone keep runs apart, and
//! the run that was taken over stops with [`CheckpointError::Replaced`].

use std::fs::{OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};

use serde::{Deserialize, Serialize};

use super::layout::instance_lock_path;
use super::lease::wall_ms;
use super::CheckpointError;
use crate::storage::{local_error, Storage};
use crate::time::format_timestamp;

/// Who holds the lock, written into the locked file for the run it refuses.
#[derive(Serialize, Deserialize)]
struct Holder {
    pid: u32,
    since: String,
}

/// Held by a run of an instance until dropped; the kernel drops it with the process.
#[derive(Debug)]
pub struct InstanceLock {
    _file: std::fs::File,
}

impl InstanceLock {
    /// Locks `instance` of `pipeline` for this process, or refuses with
    /// [`CheckpointError::Running`] while another run holds it. `None` on an object store,
    /// or a file system without locks, where the log's claims alone keep runs apart.
    pub fn take(
        storage: &Storage,
        pipeline: &str,
        instance: &str,
    ) -> Result<Option<InstanceLock>, CheckpointError> {
        let rel = instance_lock_path(pipeline, instance);
        let Some(path) = storage.local_path(&rel) else { return Ok(None) };
        let io = |e| CheckpointError::Storage(local_error("lock", &rel, e));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                // Unreadable or not written yet: the refusal still names the instance.
                let holder =
                    file.read_to_string(&mut text).ok().and_then(|_| serde_json::from_str(&text).ok());
                let holder = match holder {
                    Some(Holder { pid, since }) => format!("process {pid}, since {since} UTC"),
                    None => "a process starting now".into(),
                };
                let (pipeline, instance) = (pipeline.to_string(), instance.to_string());
                return Err(CheckpointError::Running { pipeline, instance, holder });
            }
            Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
                tracing::debug!(path = %rel, "this file system has no file locks: runs are kept apart by the log alone");
                return Ok(None);
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let holder = Holder { pid: std::process::id(), since: format_timestamp(wall_ms()) };
        let json = serde_json::to_vec(&holder)
            .map_err(|e| CheckpointError::Corrupt { path: rel.to_string(), reason: e.to_string() })?;
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        file.write_all(&json).map_err(io)?;
        Ok(Some(InstanceLock { _file: file }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_of_an_instance_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let storage = Storage::open(&dir.path().display().to_string(), rt.handle().clone()).unwrap();
        let first = InstanceLock::take(&storage, "p", "0").unwrap();
        assert!(first.is_some());
        let refused = InstanceLock::take(&storage, "p", "0").unwrap_err().to_string();
        let pid = format!("process {}", std::process::id());
        assert!(refused.contains("instance 0 of pipeline p") && refused.contains(&pid), "{refused}");
        assert!(InstanceLock::take(&storage, "p", "1").unwrap().is_some(), "another instance id");
        assert!(InstanceLock::take(&storage, "q", "0").unwrap().is_some(), "another pipeline");
        drop(first);
        assert!(InstanceLock::take(&storage, "p", "0").unwrap().is_some(), "free once the first ended");
    }
}
