//! Where everything lives under the table root.
//!
//! ```text
//! <root>/<table>/day=YYYY-MM-DD/hour=HH/part-<pipeline>-p<P>-<claim>-<cp>-<n>.<ext>   committed files
//! <root>/<table>/day=…/hour=…/_SUCCESS                         complete partitions
//! <root>/_checkpoints/<pipeline>/pipeline.json                 facts fixed at creation
//! <root>/_checkpoints/<pipeline>/log/<version>.json            the commit log (recent entries)
//! <root>/_checkpoints/<pipeline>/snapshot/<version>.json       the log folded up to a version
//! <root>/_checkpoints/<pipeline>/index/<from>-<to>.json        every file completed, for audits
//! <root>/_checkpoints/<pipeline>/lease.json                    who runs, on a store that does not fence
//! <root>/_checkpoints/<pipeline>/instance-<id>.lock            held by a running instance (local disk)
//! <root>/_staging/<pipeline>/uploads/p<P>/<table>/…            local uploads in progress
//! <root>/_staging/<pipeline>/tails/p<P>/<claim>-<cp>/<table>/… open files' tails
//! ```
//!
//! Only committed files and markers are ever in a table folder; everything in progress is
//! under `_staging/` or in an unfinished S3 multipart upload, so no reader globbing the table
//! folders sees it. A file's name carries the source partition whose records it holds and the
//! claim and checkpoint under which it was opened, so two owners of a partition (a restarted
//! one and its zombie) never write the same name. Staging is kept per source partition, so
//! the recovery of one partition clears its own folders and never one another partition's
//! holder is writing into.

use object_store::path::Path;

use crate::table::{Format, Partition};

/// The folder of a pipeline's commit log, snapshots and index.
pub fn checkpoints_dir(pipeline_id: &str) -> Path {
    Path::from(format!("_checkpoints/{pipeline_id}"))
}

/// The pipeline's fixed facts.
pub fn facts_path(pipeline_id: &str) -> Path {
    Path::from(format!("_checkpoints/{pipeline_id}/pipeline.json"))
}

/// The folder of log entries.
pub fn log_dir(pipeline_id: &str) -> Path {
    Path::from(format!("_checkpoints/{pipeline_id}/log"))
}

/// Log entry `version`.
pub fn entry_path(pipeline_id: &str, version: u64) -> Path {
    Path::from(format!("_checkpoints/{pipeline_id}/log/{version:020}.json"))
}

/// The folder of snapshots.
pub fn snapshot_dir(pipeline_id: &str) -> Path {
    Path::from(format!("_checkpoints/{pipeline_id}/snapshot"))
}

/// The snapshot of the log as of `version`.
pub fn snapshot_path(pipeline_id: &str, version: u64) -> Path {
    Path::from(format!("_checkpoints/{pipeline_id}/snapshot/{version:020}.json"))
}

/// The folder of index segments.
pub fn index_dir(pipeline_id: &str) -> Path {
    Path::from(format!("_checkpoints/{pipeline_id}/index"))
}

/// The index segment of files completed by entries `from..=to`.
pub fn index_path(pipeline_id: &str, from: u64, to: u64) -> Path {
    Path::from(format!("_checkpoints/{pipeline_id}/index/{from:020}-{to:020}.json"))
}

/// Where an instance on a store without create-only writes records that it runs.
pub fn lease_path(pipeline_id: &str) -> Path {
    Path::from(format!("_checkpoints/{pipeline_id}/lease.json"))
}

/// What a running instance holds locked on a local disk (see `commit::lock`).
pub(crate) fn instance_lock_path(pipeline_id: &str, instance: &str) -> Path {
    Path::from(format!("_checkpoints/{pipeline_id}/instance-{instance}.lock"))
}

/// The version a log entry or snapshot path names, if it is one.
pub fn version_of(path: &Path) -> Option<u64> {
    path.filename()?.strip_suffix(".json")?.parse().ok()
}

/// The prefix of a pipeline's staged local uploads (every partition's, and those staged
/// before uploads were kept per partition).
pub fn uploads_prefix(pipeline_id: &str) -> Path {
    Path::from(format!("_staging/{pipeline_id}/uploads"))
}

/// Where a local upload of the file `rel` is written until it completes: under the folder of
/// the source partition its name carries (a name that carries none, directly under
/// `uploads/`).
pub fn upload_staging(pipeline_id: &str, rel: &str) -> Path {
    match FileName::parse(rel) {
        Some(name) => Path::from(format!("_staging/{pipeline_id}/uploads/p{}/{rel}", name.partition)),
        None => Path::from(format!("_staging/{pipeline_id}/uploads/{rel}")),
    }
}

/// Where the local uploads of source partition `partition` are staged.
pub(crate) fn partition_uploads_prefix(pipeline_id: &str, partition: u32) -> Path {
    Path::from(format!("_staging/{pipeline_id}/uploads/p{partition}"))
}

/// Where every tail of source partition `partition` lives.
pub fn partition_tails_prefix(pipeline_id: &str, partition: u32) -> Path {
    Path::from(format!("_staging/{pipeline_id}/tails/p{partition}"))
}

/// Where the tails of one checkpoint of a task live.
pub fn tails_prefix(pipeline_id: &str, partition: u32, claim: u64, cp: u64) -> Path {
    Path::from(format!("_staging/{pipeline_id}/tails/p{partition}/{claim:08}-{cp:08}"))
}

/// What a table file's name says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName<'a> {
    /// The pipeline that wrote it.
    pub pipeline: &'a str,
    /// The source partition whose records (or, for aggregates and late rows, whose counting
    /// partition's windows) it holds.
    pub partition: u32,
    /// The claim it was opened under.
    pub claim: u64,
    /// The task checkpoint it was opened after.
    pub cp: u64,
    /// Files opened since that checkpoint.
    pub n: u32,
}

impl<'a> FileName<'a> {
    /// Parses `…/part-<pipeline>-p<P>-<claim>-<cp>-<n>.<ext>`.
    pub fn parse(path: &'a str) -> Option<FileName<'a>> {
        let name = path.rsplit('/').next()?.strip_prefix("part-")?;
        let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
        let mut it = stem.rsplitn(5, '-');
        let n = it.next()?.parse().ok()?;
        let cp = it.next()?.parse().ok()?;
        let claim = it.next()?.parse().ok()?;
        let partition = it.next()?.strip_prefix('p')?.parse().ok()?;
        let pipeline = it.next()?;
        Some(FileName { pipeline, partition, claim, cp, n })
    }
}

/// A table file's path relative to the root.
pub fn file_path(
    partition: Partition,
    pipeline_id: &str,
    source_partition: u32,
    claim: u64,
    cp: u64,
    n: u32,
    format: Format,
) -> String {
    format!(
        "{}/part-{pipeline_id}-p{source_partition}-{claim:06}-{cp:08}-{n:04}.{}",
        partition.dir(),
        format.extension()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Table;

    #[test]
    fn file_names_give_back_who_wrote_them() {
        let hour = Partition { table: Table::PageViews, hour: 0 };
        let path = file_path(hour, "a-b", 7, 3, 12, 1, Format::Parquet);
        assert_eq!(path, "page_views/day=1970-01-01/hour=00/part-a-b-p7-000003-00000012-0001.parquet");
        let name = FileName::parse(&path).unwrap();
        assert_eq!(name, FileName { pipeline: "a-b", partition: 7, claim: 3, cp: 12, n: 1 });
        assert_eq!(FileName::parse("x/other.jsonl"), None);
        assert_eq!(FileName::parse("x/part-p-00000001-0000.jsonl"), None, "an old-style name");
    }

    #[test]
    fn log_entries_sort_by_name_and_give_back_their_version() {
        let (a, b) = (entry_path("p", 9), entry_path("p", 10));
        assert!(a.as_ref() < b.as_ref());
        assert_eq!((version_of(&a), version_of(&b)), (Some(9), Some(10)));
        assert_eq!(version_of(&Path::from("_checkpoints/p/log/x.tmp")), None);
    }
}
