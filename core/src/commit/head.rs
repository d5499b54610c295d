//! Checking the log's newest entry against the tables before a run reads anything.
//!
//! Only a commit puts a file into a table folder, and a file's name says which checkpoint of
//! its task first recorded it. So a log that lost entries from its end (removed by hand, or
//! put back from an older backup) shows in the tables: a file the newest states record as
//! open is there at another size (a later commit closed it), or a file is there whose name is
//! past its partition's newest checkpoint. A run going on from such a log would read again,
//! and write a second time, what the lost entries committed.
//!
//! The check looks only where the newest commits' files are: the hour folders the newest
//! states hold files in, the hour after each, and every table's newest hour. That costs a
//! few requests, not a listing of whole tables (which `verify` does), and it finds the newest
//! entries lost; older ones are `verify`'s to find.

use std::collections::BTreeSet;

use object_store::path::Path;

use super::layout::FileName;
use super::view::View;
use super::CheckpointError;
use crate::storage::Storage;
use crate::table::{Partition, Table};

/// Rounds of reading the log again while other instances keep committing.
const ROUNDS: usize = 8;

/// Fails with [`CheckpointError::LogBehind`] when the tables hold a file of `pipeline` that
/// only a commit after the log's newest entry can have published.
pub async fn check_head(storage: &Storage, pipeline: &str) -> Result<(), CheckpointError> {
    let mut view = View::load(storage, pipeline).await?;
    for _ in 0..ROUNDS {
        let Some(path) = published_past(storage, pipeline, &view).await? else { return Ok(()) };
        // A running instance may have committed and published it since the log was read:
        // only a file the log read again does not account for counts.
        let before = view.version;
        view.catch_up(storage, pipeline).await?;
        if view.version == before {
            return Err(CheckpointError::LogBehind { pipeline: pipeline.to_string(), newest: before, path });
        }
    }
    // Every round, someone had committed since: live instances write this log.
    tracing::debug!(pipeline, "the commit log kept growing while its head was checked");
    Ok(())
}

/// A table file of `pipeline` the view does not account for, if one is where the newest
/// commits' files are.
async fn published_past(
    storage: &Storage,
    pipeline: &str,
    view: &View,
) -> Result<Option<String>, CheckpointError> {
    let mut folders = BTreeSet::new();
    let mut near = |table: Table, hour: i64| {
        for hour in [hour, hour.saturating_add(1)] {
            folders.insert(Partition { table, hour }.dir());
        }
    };
    for task in view.tasks.values() {
        for f in &task.open {
            match storage.size(&Path::from(f.path.as_str())).await? {
                Some(size) if size != f.bytes => return Ok(Some(f.path.clone())),
                _ => near(f.table, f.hour),
            }
        }
        for f in &task.files {
            near(f.table, f.hour);
        }
    }
    for table in Table::ALL {
        if let Some(dir) = newest_hour(storage, table).await? {
            folders.insert(dir);
        }
    }
    for dir in folders {
        for path in list_or_none(storage, &Path::from(dir)).await? {
            let Some(name) = FileName::parse(path.as_ref()) else { continue };
            let committed = view.tasks.get(&name.partition).map_or(0, |t| t.cp);
            if name.pipeline == pipeline && name.cp > committed {
                return Ok(Some(path.to_string()));
            }
        }
    }
    Ok(None)
}

/// The newest hour folder of `table` (folder names sort as the hours they hold).
async fn newest_hour(storage: &Storage, table: Table) -> Result<Option<String>, CheckpointError> {
    let mut dir = Path::from(table.name());
    // `day=…`, then `hour=…`.
    for _ in 0..2 {
        match storage.list_dirs(&dir).await {
            Ok(found) => match found.into_iter().max_by(|a, b| a.as_ref().cmp(b.as_ref())) {
                Some(newest) => dir = newest,
                None => return Ok(None),
            },
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(dir.to_string()))
}

async fn list_or_none(storage: &Storage, dir: &Path) -> Result<Vec<Path>, CheckpointError> {
    match storage.list(dir).await {
        Ok(found) => Ok(found),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}
