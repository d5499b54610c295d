//! [`IcebergSink`]: the four tables of one pipeline, kept up with its commit log — the hook
//! the log calls after publishing an entry and after recovery. And [`read_tables`], the
//! current files of each table, for `verify`.

use std::collections::BTreeMap;
use std::time::Instant;

use pageviews_core::commit::index::read_index;
use pageviews_core::commit::{CheckpointError, IndexedFile, TablePublisher, View};
use pageviews_core::storage::{Storage, StoreEnv};
use pageviews_core::table::{Format, Table};
use tracing::{info, warn};

use super::catalog::Catalog;
use super::commit::TableCommit;
use super::manifest::{self, DataFile};
use super::metadata::Metadata;
use super::{now_ms, random_uuid, relative, spec, IcebergConfig, IcebergError};

/// The Iceberg tables of one pipeline, committed after its log (see the module docs).
pub(crate) struct IcebergSink {
    storage: Storage,
    catalog: Catalog,
    pipeline: String,
    retention_ms: i64,
    retry_timeout: std::time::Duration,
    /// Per table, the log version it holds as last read: files up to it are in.
    held: BTreeMap<Table, u64>,
    /// Files the log committed after their table's version, from the views seen.
    pending: Vec<IndexedFile>,
    /// `pending` holds every such file of the log's versions through this one.
    seen: u64,
    /// When the catalog stopped answering, while it does not.
    failing_since: Option<Instant>,
}

impl IcebergSink {
    /// Connects to the catalog and creates the tables it lacks. A pipeline that committed
    /// files before its tables existed (one started with `--table-format hive`) is refused:
    /// its earlier files have millisecond timestamps, which Iceberg tables do not hold.
    pub(crate) fn open(
        config: &IcebergConfig,
        storage: &Storage,
        pipeline: &str,
        env: &StoreEnv,
        view: &View,
    ) -> Result<IcebergSink, IcebergError> {
        for secret in [&config.token, &config.credential].into_iter().flatten() {
            pageviews_core::secrets::register_option("token", secret);
        }
        storage.block_on(async {
            let catalog = Catalog::connect(config, env).await?;
            let root = storage.root_uri();
            let mut held = BTreeMap::new();
            for table in Table::ALL {
                let loaded = match catalog.load(storage, table).await? {
                    Some(loaded) => loaded,
                    None => {
                        let committed = !view.index.is_empty() || !view.recent_files.is_empty();
                        if committed {
                            return Err(IcebergError::Config(format!(
                                "pipeline {pipeline} committed files before its Iceberg tables existed (it ran with --table-format hive); an Iceberg pipeline starts with its tables: use a new --pipeline-id, or another --output"
                            )));
                        }
                        let location = format!("{root}/_iceberg/{}/{}", config.namespace, table.name());
                        let metadata = spec::new_metadata(table, &location, &random_uuid(), now_ms());
                        catalog.create(storage, table, &location, &metadata).await?;
                        info!(table = table.name(), catalog = %catalog.describe(), "created the Iceberg table");
                        catalog.load(storage, table).await?.ok_or_else(|| {
                            IcebergError::Config(format!("table {} was created but cannot be loaded", table.name()))
                        })?
                    }
                };
                check(table, &loaded.metadata, storage)?;
                held.insert(table, loaded.metadata.committed_through(pipeline));
            }
            let seen = held.values().copied().min().unwrap_or(0);
            Ok(IcebergSink {
                storage: storage.clone(),
                catalog,
                pipeline: pipeline.to_string(),
                retention_ms: config.snapshot_retention.as_millis() as i64,
                retry_timeout: config.retry_timeout,
                held,
                pending: Vec::new(),
                seen,
                failing_since: None,
            })
        })
    }

    /// Takes in the files of entries this sink has not seen. They come from the view's
    /// recent files, or from the index when the view's snapshot moved past entries whose
    /// files this sink never saw (at start, or after a snapshot pruned them) and a table
    /// still lacks some of them.
    async fn learn(&mut self, view: &View) -> Result<(), IcebergError> {
        let lowest = self.held.values().copied().min().unwrap_or(0);
        if view.snapshot_version > self.seen && lowest < view.snapshot_version {
            self.pending = read_index(&self.storage, &view.index, &view.recent_files)
                .await
                .map_err(|e| IcebergError::Config(format!("reading the commit log's index: {e}")))?;
        } else {
            let seen = self.seen;
            self.pending.extend(view.recent_files.iter().filter(|f| f.version > seen).cloned());
        }
        self.seen = self.seen.max(view.version);
        let held = &self.held;
        let parquet = Format::Parquet.extension();
        self.pending
            .retain(|f| f.path.ends_with(parquet) && held.get(&f.table).is_none_or(|h| f.version > *h));
        Ok(())
    }

    /// Brings every table up to `view`.
    async fn publish_view(&mut self, view: &View) -> Result<(), IcebergError> {
        self.learn(view).await?;
        let through = self.visible_through(view.version).await?;
        for table in Table::ALL {
            let held = self.held.get(&table).copied().unwrap_or(0);
            if held >= through {
                continue;
            }
            let files: Vec<IndexedFile> =
                self.pending.iter().filter(|f| f.table == table && f.version <= through).cloned().collect();
            if files.is_empty() {
                // Nothing of this table in those versions: nothing to commit.
                self.held.insert(table, through);
                continue;
            }
            let commit = TableCommit {
                storage: &self.storage,
                catalog: &self.catalog,
                table,
                pipeline: &self.pipeline,
                retention_ms: self.retention_ms,
            };
            let began = Instant::now();
            let now = commit.commit(&files, through).await?;
            tracing::debug!(
                table = table.name(),
                files = files.len(),
                version = now,
                elapsed_ms = began.elapsed().as_secs_f64() * 1000.0,
                "Iceberg commit"
            );
            self.held.insert(table, now);
        }
        let held = &self.held;
        self.pending.retain(|f| held.get(&f.table).is_none_or(|h| f.version > *h));
        Ok(())
    }

    /// The newest version through which every pending file is in its table folder: a file
    /// another member committed but did not publish yet holds its version back.
    async fn visible_through(&self, newest: u64) -> Result<u64, IcebergError> {
        let mut through = newest;
        let checks = self.pending.iter().filter(|f| f.version <= newest).map(|f| async move {
            let size = self.storage.size(&object_store::path::Path::from(f.path.as_str())).await;
            (f, size)
        });
        for (f, size) in futures::future::join_all(checks).await {
            if size? != Some(f.bytes) {
                through = through.min(f.version.saturating_sub(1));
            }
        }
        Ok(through)
    }
}

impl TablePublisher for IcebergSink {
    fn publish(&mut self, view: &View) -> Result<(), CheckpointError> {
        let storage = self.storage.clone();
        match storage.block_on(self.publish_view(view)) {
            Ok(()) => {
                if self.failing_since.take().is_some() {
                    info!(catalog = %self.catalog.describe(), "the Iceberg catalog answers again; the tables caught up");
                }
                Ok(())
            }
            Err(e) if e.is_transient() => {
                // The log entry stands; the next checkpoint adds what this one could not.
                let since = *self.failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > self.retry_timeout {
                    return Err(CheckpointError::Tables(e.to_string()));
                }
                warn!(error = %e, "the Iceberg tables could not be committed; the next checkpoint tries again");
                Ok(())
            }
            Err(e) => Err(CheckpointError::Tables(e.to_string())),
        }
    }
}

/// Refuses a table whose columns are not the ones this build writes, or whose files would
/// live outside the output.
fn check(table: Table, metadata: &Metadata, storage: &Storage) -> Result<(), IcebergError> {
    if !spec::matches(table, &metadata.0) {
        return Err(IcebergError::Config(format!(
            "the catalog's table {} has other columns than pageviews writes; drop it, or use another --namespace",
            table.name()
        )));
    }
    let location = metadata.location().unwrap_or_default();
    relative(storage, &format!("{location}/metadata/x")).map(|_| ())
}

/// A table as `verify` sees it: the live data files of its current snapshot, and the log
/// version per pipeline it holds.
pub(crate) struct IcebergTable {
    pub(crate) files: Vec<DataFile>,
    pub(crate) metadata: Metadata,
}

/// Reads the current snapshot of each of the four tables in `config`'s catalog (`None`
/// for a table the catalog does not have).
pub(crate) fn read_tables(
    config: &IcebergConfig,
    storage: &Storage,
    env: &StoreEnv,
) -> Result<BTreeMap<Table, Option<IcebergTable>>, IcebergError> {
    storage.block_on(async {
        let catalog = Catalog::connect(config, env).await?;
        let mut out = BTreeMap::new();
        for table in Table::ALL {
            let Some(loaded) = catalog.load(storage, table).await? else {
                out.insert(table, None);
                continue;
            };
            let mut files = Vec::new();
            if let Some(list) =
                loaded.metadata.current_snapshot().and_then(|s| s.get("manifest-list")?.as_str())
            {
                let bytes = storage.get(&relative(storage, list)?).await?;
                for m in manifest::read_list(&bytes, list)? {
                    let bytes = storage.get(&relative(storage, &m.path)?).await?;
                    files.extend(manifest::read_manifest(&bytes, &m)?.into_iter().filter(DataFile::is_live));
                }
            }
            out.insert(table, Some(IcebergTable { files, metadata: loaded.metadata }));
        }
        Ok(out)
    })
}
