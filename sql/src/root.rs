//! The table root: where `pageviews run --output` wrote the tables, on local disk, in an S3
//! bucket or an Azure container, the object store that lists its files, and which view of it
//! queries see.
//!
//! The root is parsed by the same code as the pipeline's `--output` (`pageviews_core::storage`):
//! a plain path, a `file://` URL, `s3://bucket/prefix` or `az://container/prefix`. A bucket
//! is configured the usual way for its store, from `AWS_*` or `AZURE_*` variables read once,
//! when the root is parsed, and refused up front when the settings cannot work; its store is
//! registered in the session's runtime so that DataFusion reads the tables through the same
//! client that listed them.
//!
//! Two views ([`View`]): by default every committed row, as of each pipeline's newest
//! checkpoint ([`crate::committed`]); with `--visible-only`, the table folders as they are,
//! which is what external readers (DuckDB, Spark, pyarrow) see.

use std::path::{Component, PathBuf};
use std::sync::Arc;

use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::ObjectStore;
use pageviews_core::storage::{open_bucket, StorageError, StoreEnv};

use crate::catalog::CatalogError;
use crate::committed::{Committed, CommittedStore};

/// What queries see of the root.
#[derive(Debug, Clone)]
pub enum View {
    /// Every committed row, as of each pipeline's newest checkpoint, re-read per statement.
    Committed(Arc<Committed>),
    /// The files in the table folders: what readers of the folders see.
    Folders,
}

/// The table root: a local directory, or a bucket (S3) or container (Azure) and prefix.
#[derive(Debug, Clone)]
pub struct TableRoot {
    /// Where the tables' folders are, without a trailing `/`: an absolute path or
    /// `s3://bucket/prefix` (or `az://container/prefix`). Table locations are `<base>/<table>/`.
    base: String,
    /// Lists the root's files.
    store: Arc<dyn ObjectStore>,
    /// The root inside `store`.
    prefix: StorePath,
    /// For a bucket root, the bucket's URL (`s3://bucket`, `az://container`), under which
    /// `store` is registered.
    bucket_url: Option<ObjectStoreUrl>,
    /// What to check when listing fails, appended to the error; empty for local roots.
    list_hint: String,
    /// What queries see.
    view: View,
}

impl TableRoot {
    /// Parses `--output` the way `pageviews run` does (the same code: `pageviews_core`): a
    /// plain path, a `file://` URL, or `s3://bucket/prefix` or `az://container/prefix` with
    /// the `AWS_*` or `AZURE_*` variables of the environment. A local directory does not have
    /// to exist: its tables then read as empty.
    pub fn parse(url: &str) -> Result<Self, CatalogError> {
        Self::parse_with(url, &StoreEnv::process())
    }

    /// [`TableRoot::parse`] with the store's settings given instead of read from the process.
    pub fn parse_with(url: &str, env: &StoreEnv) -> Result<Self, CatalogError> {
        let bad = |reason: String| CatalogError::BadRoot { url: url.to_string(), reason };
        if let Some(bucket) = open_bucket(url, env).map_err(|e| root_error(url, e))? {
            let bucket_url = ObjectStoreUrl::parse(&bucket.store_url).map_err(|e| bad(e.to_string()))?;
            let base = if bucket.prefix.is_empty() {
                bucket.store_url.clone()
            } else {
                format!("{}/{}", bucket.store_url, bucket.prefix)
            };
            return Ok(TableRoot {
                base,
                store: bucket.store,
                prefix: StorePath::from(bucket.prefix),
                bucket_url: Some(bucket_url),
                list_hint: format!("; check that {} exists, and {}", bucket.store_url, bucket.settings),
                view: View::Committed(Arc::new(Committed::new(url, env, None))),
            });
        }
        let path = match pageviews_core::storage::Location::parse(url).map_err(|e| root_error(url, e))? {
            pageviews_core::storage::Location::Local(path) => path,
            _ => return Err(bad("not a local path".into())),
        };
        // Absolute, so the DDL's LOCATION works from any directory; not canonicalized,
        // since the root may not exist yet.
        let dir = normalize(&std::path::absolute(&path).map_err(|e| bad(e.to_string()))?);
        let prefix = StorePath::from_absolute_path(&dir).map_err(|e| bad(e.to_string()))?;
        let base = dir.display().to_string().trim_end_matches('/').to_string();
        let store = Arc::new(LocalFileSystem::new());
        let view = View::Committed(Arc::new(Committed::new(&base, env, Some(dir))));
        Ok(TableRoot { base, store, prefix, bucket_url: None, list_hint: String::new(), view })
    }

    /// The same root seen as its table folders are: only rolled files, as external readers
    /// see them (`--visible-only`).
    pub fn visible_only(mut self) -> Self {
        self.view = View::Folders;
        self
    }

    /// What queries see of this root.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// Reads the newest committed state, for the next statement (the folder view reads the
    /// folders when the statement runs).
    pub async fn refresh(&self) -> Result<(), CatalogError> {
        if let View::Committed(committed) = &self.view {
            committed.refresh().await.map_err(|source| CatalogError::Snapshot {
                root: self.base.clone(),
                hint: self.list_hint.clone(),
                source: Box::new(source),
            })?;
        }
        Ok(())
    }

    /// The root as a path or a bucket URL, without a trailing `/`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// True for a bucket root (`s3://`, `az://`).
    pub fn is_bucket(&self) -> bool {
        self.bucket_url.is_some()
    }

    /// A table's folder, with the trailing `/` that tells DataFusion it is a directory.
    pub fn location(&self, table: &str) -> String {
        format!("{}/{table}/", self.base)
    }

    /// Lets `ctx` read this root. The committed view is a store over the root's own (local
    /// disk's or the bucket's) that serves the table folders from the snapshot; the folder
    /// view registers a bucket root's client for its bucket (local paths need nothing,
    /// DataFusion reads them itself).
    pub fn register_store(&self, ctx: &SessionContext) {
        let url = self.bucket_url.clone().unwrap_or_else(ObjectStoreUrl::local_filesystem);
        match &self.view {
            View::Committed(committed) => {
                let store =
                    CommittedStore::new(Arc::clone(&self.store), self.prefix.clone(), committed.clone());
                ctx.runtime_env().register_object_store(url.as_ref(), Arc::new(store));
            }
            View::Folders => {
                if self.bucket_url.is_some() {
                    ctx.runtime_env().register_object_store(url.as_ref(), Arc::clone(&self.store));
                }
            }
        }
    }

    /// Every file of a table, as paths relative to the store: in the committed view the
    /// snapshot's (refreshed by [`TableRoot::refresh`]), in the folder view those listed
    /// under its folder. A folder that does not exist holds no files.
    pub async fn list_files(&self, table: &str) -> Result<Vec<String>, CatalogError> {
        if let View::Committed(committed) = &self.view {
            let Some(table) = pageviews_core::table::Table::from_name(table) else { return Ok(Vec::new()) };
            let snapshot = committed.current();
            let full = |rel: &StorePath| -> StorePath { self.prefix.parts().chain(rel.parts()).collect() };
            return Ok(snapshot.table_files(table).map(|f| full(&f.meta.location).to_string()).collect());
        }
        let folder = self.prefix.clone().join(table);
        let files: Vec<String> = self
            .store
            .list(Some(&folder))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .map_err(|source| CatalogError::List {
                location: self.location(table),
                hint: self.list_hint.clone(),
                source,
            })?;
        Ok(files)
    }
}

/// The pipeline's words for a root it cannot use, as the SQL client's.
fn root_error(url: &str, e: StorageError) -> CatalogError {
    match e {
        StorageError::BadOutput { url, reason } => CatalogError::BadRoot { url, reason },
        other => CatalogError::BadRoot { url: url.to_string(), reason: other.to_string() },
    }
}

/// `path` without `.` and `..` components, which object store paths do not allow. Lexical:
/// `a/link/..` becomes `a` even where `link` is a symbolic link, as a shell's `cd` does.
fn normalize(path: &std::path::Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_roots_are_made_absolute_without_dot_dot() {
        let cwd = std::env::current_dir().unwrap();
        let root = TableRoot::parse("./x/../y").unwrap();
        assert_eq!(root.location("t"), format!("{}/y/t/", cwd.display()));
        let parent = cwd.parent().unwrap().join("z");
        assert_eq!(TableRoot::parse("../z").unwrap().base(), parent.display().to_string());
    }

    #[test]
    fn local_roots_are_absolute_folders() {
        let root = TableRoot::parse("file:///tmp/x/").unwrap();
        assert_eq!(root.location("page_views"), "/tmp/x/page_views/");
        assert!(!root.is_bucket());
        let err = TableRoot::parse("gs://bucket/x").unwrap_err().to_string();
        assert!(err.contains("gs:// scheme is not supported"), "{err}");
        let err = TableRoot::parse("s3:///prefix").unwrap_err().to_string();
        assert!(err.contains("no bucket"), "{err}");
    }
}
