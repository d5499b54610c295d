//! One Iceberg commit of one table: the files of the log versions it lacks, as a new
//! manifest under a new snapshot, with the manifests kept few (small ones merged) and the
//! history kept short (snapshots past the retention expired, and their manifest lists and
//! the manifests nothing names any more deleted — never a data file).

use pageviews_core::commit::IndexedFile;
use pageviews_core::storage::Storage;
use pageviews_core::table::Table;
use serde_json::{json, Map, Value};

use super::catalog::{delete_file, Catalog, Change, Loaded, Outcome};
use super::manifest::{self, DataFile, ManifestFile, ADDED, EXISTING};
use super::metadata::{version_property, Metadata, SUMMARY_PIPELINE, SUMMARY_VERSION};
use super::spec::MERGE_AT;
use super::{now_ms, random_id, random_uuid, relative, IcebergError};

/// Manifests at least this large are not merged again.
const MERGE_TARGET: i64 = 8 << 20;

/// Compare-and-swap attempts before a commit gives up on a table others keep changing.
const ATTEMPTS: usize = 100;

/// What one table commit needs to know.
pub(crate) struct TableCommit<'a> {
    pub(crate) storage: &'a Storage,
    pub(crate) catalog: &'a Catalog,
    pub(crate) table: Table,
    pub(crate) pipeline: &'a str,
    pub(crate) retention_ms: i64,
}

impl TableCommit<'_> {
    /// Adds the files of `files` (every file of this table the log committed in versions
    /// after the table's, through `through`) that the table lacks, in one snapshot recording
    /// `through`. Returns the log version the table holds afterwards.
    pub(crate) async fn commit(&self, files: &[IndexedFile], through: u64) -> Result<u64, IcebergError> {
        for _ in 0..ATTEMPTS {
            let Some(base) = self.catalog.load(self.storage, self.table).await? else {
                return Err(IcebergError::Config(format!(
                    "table {} is gone from catalog {}; it was there when the run started",
                    self.table.name(),
                    self.catalog.describe()
                )));
            };
            let held = base.metadata.committed_through(self.pipeline);
            if held >= through {
                return Ok(held);
            }
            let mut add: Vec<&IndexedFile> =
                files.iter().filter(|f| f.version > held || (held == 0 && f.version == 0)).collect();
            add.sort_by(|a, b| a.path.cmp(&b.path));
            add.dedup_by(|a, b| a.path == b.path);
            if add.is_empty() {
                // The versions it lacks hold no file of this table: nothing to commit.
                return Ok(through);
            }
            let prepared = self.prepare(&base, &add, through).await?;
            let change = Change {
                base: &base,
                snapshot: prepared.snapshot.clone(),
                properties: prepared.properties.clone(),
                remove: prepared.remove.clone(),
            };
            match self.catalog.commit(self.storage, self.table, &change, now_ms()).await? {
                Outcome::Committed { dropped } => {
                    for file in dropped {
                        delete_file(self.storage, &file).await;
                    }
                    self.clean_expired(&base.metadata, &prepared).await?;
                    return Ok(through);
                }
                Outcome::Conflict => {
                    tracing::debug!(
                        table = self.table.name(),
                        "the Iceberg table moved on; reading it again"
                    );
                    for file in prepared.written {
                        delete_file(self.storage, &file).await;
                    }
                }
            }
        }
        Err(IcebergError::Catalog {
            catalog: self.catalog.describe(),
            reason: format!("table {} kept changing under {ATTEMPTS} commits", self.table.name()),
            transient: true,
        })
    }

    /// Writes the new manifest (and a merged one, when the snapshot would name too many)
    /// and the manifest list, and builds the snapshot over `base`.
    async fn prepare(
        &self,
        base: &Loaded,
        add: &[&IndexedFile],
        through: u64,
    ) -> Result<Prepared, IcebergError> {
        let m = &base.metadata;
        let location = m.location().unwrap_or_default().to_string();
        let id = random_id();
        let sequence = m.last_sequence_number() + 1;
        let parent = m.current_snapshot_id();
        let root = self.storage.root_uri();
        let mut written = Vec::new();
        let mut manifests = Vec::new();
        let mut added = Totals::default();
        if !add.is_empty() {
            let files: Vec<DataFile> = add
                .iter()
                .map(|f| DataFile {
                    path: format!("{root}/{}", f.path),
                    hour: i32::try_from(f.hour).ok(),
                    records: f.rows as i64,
                    bytes: f.bytes as i64,
                    status: ADDED,
                    snapshot_id: Some(id),
                    sequence: None,
                    file_sequence: None,
                })
                .collect();
            added = Totals::of(&files);
            let at = format!("{location}/metadata/{}-m0.avro", random_uuid());
            let length = self.put(&at, manifest::write_manifest(self.table, &files)?).await?;
            written.push(at.clone());
            manifests.push(ManifestFile {
                path: at,
                length,
                sequence,
                min_sequence: sequence,
                added_snapshot_id: id,
                added_files: files.len() as i32,
                existing_files: 0,
                deleted_files: 0,
                added_rows: added.records,
                existing_rows: 0,
                deleted_rows: 0,
                hours: hours(&files),
                content: 0,
            });
        }
        let current = match m.current_snapshot() {
            Some(s) => self.list(s).await?,
            None => Vec::new(),
        };
        let mut kept = current.clone();
        if kept.len() + manifests.len() > MERGE_AT {
            let (small, large): (Vec<_>, Vec<_>) =
                kept.into_iter().partition(|f| f.content == 0 && f.length < MERGE_TARGET);
            kept = large;
            let merged = self.merge(&small, &location, id, sequence).await?;
            written.push(merged.path.clone());
            manifests.push(merged);
        }
        manifests.extend(kept);
        let list_at = format!("{location}/metadata/snap-{id}-1-{}.avro", random_uuid());
        self.put(&list_at, manifest::write_list(&manifests, id, parent, sequence)?).await?;
        written.push(list_at.clone());

        let total = |key: &str, add: i64| m.current_total(key).map_or(add, |t| t + add);
        let live_files: i64 = manifests.iter().map(|f| i64::from(f.added_files + f.existing_files)).sum();
        let live_rows: i64 = manifests.iter().map(|f| f.added_rows + f.existing_rows).sum();
        let summary = json!({
            "operation": "append",
            "added-data-files": added.files.to_string(),
            "added-records": added.records.to_string(),
            "added-files-size": added.bytes.to_string(),
            "total-data-files": live_files.to_string(),
            "total-records": live_rows.to_string(),
            "total-files-size": total("total-files-size", added.bytes).to_string(),
            "total-delete-files": "0",
            "total-position-deletes": "0",
            "total-equality-deletes": "0",
            SUMMARY_PIPELINE: self.pipeline,
            SUMMARY_VERSION: through.to_string(),
        });
        let parent_ms =
            m.current_snapshot().and_then(|s| s.get("timestamp-ms")).and_then(Value::as_i64).unwrap_or(0);
        let mut snapshot = json!({
            "snapshot-id": id,
            "sequence-number": sequence,
            "timestamp-ms": now_ms().max(parent_ms),
            "manifest-list": list_at,
            "summary": summary,
            "schema-id": 0,
        });
        if let Some(p) = parent {
            snapshot["parent-snapshot-id"] = json!(p);
        }
        let mut properties = Map::new();
        properties.insert(version_property(self.pipeline), json!(through.to_string()));
        let remove = m.expired(now_ms() - self.retention_ms);
        Ok(Prepared { snapshot, properties, remove, manifests, written })
    }

    /// One manifest holding the live files of `small`, as existing files.
    async fn merge(
        &self,
        small: &[ManifestFile],
        location: &str,
        id: i64,
        sequence: i64,
    ) -> Result<ManifestFile, IcebergError> {
        let mut files = Vec::new();
        for m in small {
            let bytes = self.storage.get(&relative(self.storage, &m.path)?).await?;
            for mut f in manifest::read_manifest(&bytes, m)? {
                if f.is_live() {
                    f.status = EXISTING;
                    files.push(f);
                }
            }
        }
        let totals = Totals::of(&files);
        let at = format!("{location}/metadata/{}-m1.avro", random_uuid());
        let length = self.put(&at, manifest::write_manifest(self.table, &files)?).await?;
        let min_sequence = files.iter().filter_map(|f| f.sequence).min().unwrap_or(sequence);
        Ok(ManifestFile {
            path: at,
            length,
            sequence,
            min_sequence,
            added_snapshot_id: id,
            added_files: 0,
            existing_files: files.len() as i32,
            deleted_files: 0,
            added_rows: 0,
            existing_rows: totals.records,
            deleted_rows: 0,
            hours: hours(&files),
            content: 0,
        })
    }

    /// The manifests a snapshot's manifest list names.
    async fn list(&self, snapshot: &Value) -> Result<Vec<ManifestFile>, IcebergError> {
        let Some(at) = snapshot.get("manifest-list").and_then(Value::as_str) else {
            return Ok(Vec::new());
        };
        let bytes = self.storage.get(&relative(self.storage, at)?).await?;
        manifest::read_list(&bytes, at)
    }

    async fn put(&self, at: &str, bytes: Vec<u8>) -> Result<i64, IcebergError> {
        let length = bytes.len() as i64;
        self.storage.put(&relative(self.storage, at)?, bytes.into()).await?;
        Ok(length)
    }

    /// After a commit that expired snapshots: deletes their manifest lists, and the
    /// manifests they name that neither the new snapshot nor the oldest one kept names.
    /// History on `main` is a line, so a manifest no longer in the oldest kept snapshot is
    /// in no later one either.
    async fn clean_expired(&self, before: &Metadata, prepared: &Prepared) -> Result<(), IcebergError> {
        if prepared.remove.is_empty() {
            return Ok(());
        }
        let mut keep: Vec<String> = prepared.manifests.iter().map(|m| m.path.clone()).collect();
        let oldest_kept = before
            .snapshots()
            .iter()
            .filter(|s| {
                !s.get("snapshot-id").and_then(Value::as_i64).is_some_and(|id| prepared.remove.contains(&id))
            })
            .min_by_key(|s| s.get("sequence-number").and_then(Value::as_i64).unwrap_or(0));
        if let Some(s) = oldest_kept {
            keep.extend(self.list(s).await?.into_iter().map(|m| m.path));
        }
        for id in &prepared.remove {
            let Some(snapshot) = before.snapshot(*id) else { continue };
            let listed = match self.list(snapshot).await {
                Ok(listed) => listed,
                // Deleted by an earlier cleanup that did not finish: nothing left to do.
                Err(IcebergError::Storage(e)) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            for m in listed {
                if !keep.contains(&m.path) {
                    delete_file(self.storage, &m.path).await;
                }
            }
            if let Some(at) = snapshot.get("manifest-list").and_then(Value::as_str) {
                delete_file(self.storage, at).await;
            }
        }
        Ok(())
    }
}

/// A snapshot ready to commit, with the files written for it.
struct Prepared {
    snapshot: Value,
    properties: Map<String, Value>,
    remove: Vec<i64>,
    manifests: Vec<ManifestFile>,
    /// Manifests and list written for this attempt: deleted when it loses.
    written: Vec<String>,
}

#[derive(Default)]
struct Totals {
    files: i64,
    records: i64,
    bytes: i64,
}

impl Totals {
    fn of(files: &[DataFile]) -> Totals {
        Totals {
            files: files.len() as i64,
            records: files.iter().map(|f| f.records).sum(),
            bytes: files.iter().map(|f| f.bytes).sum(),
        }
    }
}

fn hours(files: &[DataFile]) -> Option<(i32, i32)> {
    let lo = files.iter().filter_map(|f| f.hour).min()?;
    let hi = files.iter().filter_map(|f| f.hour).max()?;
    Some((lo, hi))
}
