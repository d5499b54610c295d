//! Taking over source partitions: claim them in the commit log, then finish and restore what
//! their newest committed states (written by whichever instance) left.

use std::sync::{Arc, Mutex};

use pageviews_core::commit::{CheckpointError, Log};
use tracing::info;

use crate::source::{Restore, Restored};

/// Claims and restores partitions through the instance's commit log.
pub(super) struct LogRestorer {
    pub(crate) log: Arc<Mutex<Log>>,
    /// The source can go on past where a partition finished (Kafka, the generator with a
    /// higher count), so a restored partition is not finished any more; files stay finished.
    pub(crate) resumable: bool,
}

impl Restore for LogRestorer {
    fn restore(&mut self, partitions: &[u32]) -> Result<Vec<(u32, Restored)>, CheckpointError> {
        let mut log = self.log.lock().map_err(|_| CheckpointError::Corrupt {
            path: "commit log".into(),
            reason: "a thread panicked while holding it".into(),
        })?;
        let claims = log.claim(partitions)?;
        if !claims.is_empty() {
            log.republish_markers()?;
        }
        let mut out = Vec::with_capacity(claims.len());
        for (partition, claim) in claims {
            let mut state = log.recover_task(partition)?;
            if let Some(s) = state.as_mut() {
                if self.resumable {
                    s.time.finished = false;
                    if let Some(c) = s.counting.as_mut() {
                        c.inputs.values_mut().for_each(|i| i.time.finished = false);
                    }
                }
                info!(partition, claim, from = ?s.position, sealed = s.files.len(), "restored partition");
            }
            out.push((partition, Restored { claim, state }));
        }
        if !out.is_empty() {
            // What a crash left between an entry and its catalog commit.
            log.publish_tables()?;
        }
        Ok(out)
    }
}
