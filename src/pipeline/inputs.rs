//! Before the workers of a files pipeline start: which source partition each input is read
//! as (`source::file::plan`), decided once for the instance, so partitions created for new
//! content are numbered once and every worker counts them among the pipeline's sources.

use pageviews_core::commit::layout::facts_path;
use pageviews_core::commit::{Facts, Log, PartitionTime, Position, SourceIdentity, TaskState, View};
use pageviews_core::storage::Storage;
use tracing::info;

use super::{PipelineConfig, PipelineError, SourceConfig};
use crate::source::file::{plan, Checksum, InputPlan, Taken};

/// One worker's share of the plan.
pub(super) struct WorkerInputs {
    /// The partitions it takes: those of its inputs (input `i` to worker `i % workers`).
    pub(crate) taken: Vec<Taken>,
    /// Committed partitions nobody takes, with their event time: worker 0, which hosts the
    /// counting partition, is told them.
    pub(crate) left: Vec<(u32, PartitionTime)>,
    /// Source partitions of the pipeline.
    pub(crate) partitions: u32,
}

/// The plan for a files pipeline, split among `config.workers` workers (empty for other
/// sources). New content is logged as it is found, and partitions created for it are
/// committed empty first when several workers take them (see [`commit_created`]).
pub(super) fn prepare(
    config: &PipelineConfig,
    storage: &Storage,
) -> Result<Vec<WorkerInputs>, PipelineError> {
    let SourceConfig::Files(paths) = &config.source else { return Ok(Vec::new()) };
    let facts = read_facts(storage, &config.pipeline_id)?;
    // Another source's pipeline is refused when the workers open it; nothing is read here.
    let ours = facts.as_ref().filter(|f| f.source == SourceIdentity::Files { paths: paths.clone() });
    let view = match ours {
        Some(_) => storage.block_on(View::load(storage, &config.pipeline_id))?,
        None => View::default(),
    };
    let plan = plan(paths, config.input_mode, &view.tasks)?;
    for (partition, input) in &plan.created {
        info!(input = %paths[*input as usize], partition, "new content: read from its start as a new partition");
    }
    if let (Some(facts), false) = (ours, plan.created.is_empty()) {
        if config.workers > 1 {
            commit_created(config, storage, facts, &plan)?;
        }
    }
    Ok(split(plan, config.workers.max(1)))
}

fn split(plan: InputPlan, workers: usize) -> Vec<WorkerInputs> {
    let mut shares: Vec<WorkerInputs> = (0..workers)
        .map(|_| WorkerInputs { taken: Vec::new(), left: Vec::new(), partitions: plan.partitions })
        .collect();
    for taken in plan.taken {
        shares[taken.input as usize % workers].taken.push(taken);
    }
    shares[0].left = plan.left;
    shares
}

/// Commits the partitions created for new content, empty and each with its input, in one
/// log entry before any worker reads. Workers commit separately: were one killed before its
/// first commit while another committed a higher new partition, the lower number would be
/// left without a state, holding every window and hour back for good. One worker commits all
/// its tasks in one entry, so it needs none of this.
fn commit_created(
    config: &PipelineConfig,
    storage: &Storage,
    facts: &Facts,
    plan: &InputPlan,
) -> Result<(), PipelineError> {
    let member = format!("{}-inputs", config.instance_id);
    let run = super::run_id(config.clock.wall_ms(), usize::MAX);
    let (mut log, _) = Log::open(storage, &config.pipeline_id, &member, &run, facts)?;
    if !log.fencing() {
        // Such a store runs one worker; the workers refuse the start themselves.
        return Ok(());
    }
    let ids: Vec<u32> = plan.created.iter().map(|(p, _)| *p).collect();
    let claims = log.claim(&ids)?;
    let states = claims
        .into_iter()
        .map(|(partition, claim)| TaskState {
            partition,
            claim,
            cp: 0,
            position: Position::File {
                offset: 0,
                line: 0,
                checksum: Some(Checksum::default().value()),
                input: plan.created.iter().find(|(p, _)| *p == partition).map(|(_, i)| *i),
            },
            time: PartitionTime::default(),
            counting: None,
            forwarded_to: Default::default(),
            files: Vec::new(),
            open: Vec::new(),
            totals: Default::default(),
        })
        .collect();
    log.commit(states, |_, _| Vec::new())?;
    Ok(())
}

fn read_facts(storage: &Storage, pipeline: &str) -> Result<Option<Facts>, PipelineError> {
    let path = facts_path(pipeline);
    match storage.block_on(storage.get(&path)) {
        // One that cannot be read is reported when the workers open the log.
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}
