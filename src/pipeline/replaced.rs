//! A run whose partitions another run took over: it stops and says so.
//!
//! Files and the generator have no consumer group to hand a partition back: a run holds every
//! partition it reads from its start, and one claimed by another run is gone for good (a
//! second instance took the pipeline over, or the same instance started twice on a store
//! without file locks). Such a run stops at once with [`CheckpointError::Replaced`], naming
//! who took over and when, rather than read on into nothing and end as if it had finished.
//! Kafka partitions move between members as the group rebalances: there a fenced partition is
//! given up and the run goes on.

use pageviews_core::commit::CheckpointError;

use super::worker::Pipeline;
use super::PipelineError;

impl Pipeline {
    /// After a commit fenced `fenced`: the error that stops a run whose partitions no group
    /// hands back, naming who took the first one.
    pub(super) fn replaced(&self, fenced: &[u32]) -> Result<(), PipelineError> {
        let Some(&partition) = fenced.first().filter(|_| !self.rebalances) else { return Ok(()) };
        let log = self.log.lock().map_err(|_| super::checkpoint::poisoned())?;
        Err(log.replaced(partition).into())
    }

    /// A run that failed: when another run took over its partitions meanwhile (its recovery
    /// removes the uploads this run was writing, for one), that is the error to report.
    pub(super) fn explain(&self, error: PipelineError) -> PipelineError {
        if self.rebalances || matches!(error, PipelineError::Checkpoint(CheckpointError::Replaced { .. })) {
            return error;
        }
        let held: Vec<(u32, u64)> = self.tasks.values().map(|t| (t.partition, t.claim)).collect();
        let Ok(mut log) = self.log.lock() else { return error };
        match log.taken_over(&held) {
            Ok(Some(replaced)) => {
                tracing::debug!(error = %error, "failed after being replaced");
                replaced.into()
            }
            _ => error,
        }
    }
}
