//! Where everything lives under the table root.
//!
//! ```text
//! <root>/<table>/day=YYYY-MM-DD/hour=HH/part-<pipeline>-<epoch>-<n>.<ext>   committed files
//! <root>/<table>/day=…/hour=…/_SUCCESS                                      complete partitions
//! <root>/_checkpoints/<pipeline>/<seq>.json                                 the commit log
//! <root>/_staging/<pipeline>/uploads/<table>/…                              local uploads in progress
//! <root>/_staging/<pipeline>/tails/<seq>/<table>/…                          open files' tails
//! ```
//!
//! Only committed files and markers are ever in a table folder; everything in progress is
//! under `_staging/` or in an unfinished S3 multipart upload, so no reader globbing the table
//! folders sees it.

use object_store::path::Path;

use crate::table::{Format, Partition};

/// The folder of a pipeline's manifests.
pub fn manifest_dir(pipeline_id: &str) -> Path {
    Path::from(format!("_checkpoints/{pipeline_id}"))
}

/// The manifest of checkpoint `seq`.
pub fn manifest_path(pipeline_id: &str, seq: u64) -> Path {
    Path::from(format!("_checkpoints/{pipeline_id}/{seq:020}.json"))
}

/// The sequence number of a manifest path, if it is one.
pub fn manifest_seq(path: &Path) -> Option<u64> {
    path.filename()?.strip_suffix(".json")?.parse().ok()
}

/// The prefix under which a pipeline stages uploads and tails.
pub fn staging_prefix(pipeline_id: &str) -> Path {
    Path::from(format!("_staging/{pipeline_id}"))
}

/// Where a local upload of the file `rel` is written until it completes.
pub fn upload_staging(pipeline_id: &str, rel: &str) -> Path {
    Path::from(format!("{}/uploads/{rel}", staging_prefix(pipeline_id)))
}

/// Where the tails of checkpoint `seq` live.
pub fn tails_prefix(pipeline_id: &str, seq: u64) -> Path {
    Path::from(format!("_staging/{pipeline_id}/tails/{seq:020}"))
}

/// A table file's path relative to the root: `<table>/<partition>/part-<pipeline>-<epoch>-<n>.<ext>`,
/// where `epoch` is the checkpoint the file was opened after and `n` counts files opened since.
pub fn file_path(partition: Partition, pipeline_id: &str, epoch: u64, n: u32, format: Format) -> String {
    format!("{}/part-{pipeline_id}-{epoch:08}-{n:04}.{}", partition.dir(), format.extension())
}

/// The pipeline id in a table file name `part-<pipeline>-<epoch>-<n>.<ext>`.
pub fn file_pipeline(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next()?.strip_prefix("part-")?;
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    let mut it = stem.rsplitn(3, '-');
    let (_n, _epoch, pipeline) = (it.next()?, it.next()?, it.next()?);
    Some(pipeline)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Table;

    #[test]
    fn file_names_give_back_their_pipeline() {
        assert_eq!(
            file_pipeline("page_views/day=2020-01-01/hour=00/part-a-b-00000003-0001.parquet"),
            Some("a-b")
        );
        assert_eq!(file_pipeline("x/part-p-00000001-0000.jsonl"), Some("p"));
        assert_eq!(file_pipeline("x/other.jsonl"), None);
        let path = file_path(Partition { table: Table::PageViews, hour: 0 }, "a-b", 3, 1, Format::Parquet);
        assert_eq!(path, "page_views/day=1970-01-01/hour=00/part-a-b-00000003-0001.parquet");
        assert_eq!(file_pipeline(&path), Some("a-b"));
    }

    #[test]
    fn manifests_sort_by_name_and_give_back_their_sequence_number() {
        let (a, b) = (manifest_path("p", 9), manifest_path("p", 10));
        assert!(a.as_ref() < b.as_ref());
        assert_eq!((manifest_seq(&a), manifest_seq(&b)), (Some(9), Some(10)));
        assert_eq!(manifest_seq(&Path::from("_checkpoints/p/x.tmp")), None);
    }
}
