//! The table root: one object store, local disk or (later) S3, behind one code path.
//!
//! Paths here are relative to the root the user gave with `--output`. The pipeline thread
//! is synchronous; it runs the store's async calls on the I/O runtime through
//! [`Storage::block_on`], and part uploads run there concurrently with the record loop.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use thiserror::Error;
use tokio::runtime::Handle;

/// A storage operation that failed, with what and where.
#[derive(Debug, Error)]
pub enum StorageError {
    /// The `--output` value cannot be used.
    #[error("cannot use output {url:?}: {reason}")]
    BadOutput {
        /// What the user gave.
        url: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// An object store call failed.
    #[error("{op} {path} failed: {source}")]
    Store {
        /// The operation (put, rename, list…).
        op: &'static str,
        /// The path, relative to the table root.
        path: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// The object already exists (a create-only put lost a race).
    #[error("{0} already exists: is another pipeline with the same --pipeline-id writing to this output?")]
    AlreadyExists(String),
}

impl StorageError {
    fn store<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(object_store::Error) -> StorageError + 'a {
        move |source| match source {
            object_store::Error::AlreadyExists { .. } => StorageError::AlreadyExists(path.to_string()),
            source => StorageError::Store { op, path: path.to_string(), source },
        }
    }
}

/// The table root and the runtime its I/O runs on.
#[derive(Debug, Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// Set when the root is a local directory: lets cleanup remove partial uploads that the
    /// object store API hides.
    local_root: Option<PathBuf>,
    url: String,
    rt: Handle,
}

impl Storage {
    /// Opens `--output`: a plain path or a `file://` URL. The directory is created.
    pub fn open(url: &str, rt: Handle) -> Result<Self, StorageError> {
        let bad = |reason: String| StorageError::BadOutput { url: url.to_string(), reason };
        let path = if let Some(rest) = url.strip_prefix("file://") {
            PathBuf::from(rest)
        } else if let Some((scheme, _)) = url.split_once("://") {
            return Err(bad(format!("the {scheme}:// scheme is not supported yet; use a local path")));
        } else {
            PathBuf::from(url)
        };
        std::fs::create_dir_all(&path).map_err(|e| bad(format!("cannot create the directory: {e}")))?;
        let root = path.canonicalize().map_err(|e| bad(e.to_string()))?;
        let store = LocalFileSystem::new_with_prefix(&root).map_err(|e| bad(e.to_string()))?;
        Ok(Storage { store: Arc::new(store), local_root: Some(root), url: url.to_string(), rt })
    }

    /// The root as the user gave it, for logs.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs an async storage call to completion from the pipeline thread.
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        self.rt.block_on(fut)
    }

    /// The runtime handle, for spawning uploads.
    pub fn runtime(&self) -> &Handle {
        &self.rt
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Writes a whole object, replacing any previous one.
    pub async fn put(&self, path: &Path, bytes: Bytes) -> Result<(), StorageError> {
        self.store.put(path, PutPayload::from(bytes)).await.map_err(StorageError::store("put", path))?;
        Ok(())
    }

    /// Writes a whole object only if none exists: the atomic commit point of a checkpoint.
    pub async fn put_new(&self, path: &Path, bytes: Bytes) -> Result<(), StorageError> {
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        self.store
            .put_opts(path, PutPayload::from(bytes), opts)
            .await
            .map_err(StorageError::store("create", path))?;
        Ok(())
    }

    /// Reads a whole object.
    pub async fn get(&self, path: &Path) -> Result<Bytes, StorageError> {
        let res = self.store.get(path).await.map_err(StorageError::store("get", path))?;
        res.bytes().await.map_err(StorageError::store("read", path))
    }

    /// Moves an object. Returns false when `from` is gone and `to` exists: the move already
    /// happened, which makes publishing idempotent.
    pub async fn rename(&self, from: &Path, to: &Path) -> Result<bool, StorageError> {
        match self.store.rename(from, to).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => match self.store.head(to).await {
                Ok(_) => Ok(false),
                Err(source) => Err(StorageError::Store { op: "publish", path: from.to_string(), source }),
            },
            Err(source) => Err(StorageError::Store { op: "rename", path: from.to_string(), source }),
        }
    }

    /// Lists every object under `prefix` (recursively), as paths.
    pub async fn list(&self, prefix: &Path) -> Result<Vec<Path>, StorageError> {
        let metas: Vec<_> =
            self.store.list(Some(prefix)).try_collect().await.map_err(StorageError::store("list", prefix))?;
        Ok(metas.into_iter().map(|m| m.location).collect())
    }

    /// Files under `prefix` that [`Storage::list`] does not return. On local disk
    /// object_store hides names ending in `#<digits>`, which it takes for its own unfinished
    /// uploads. Readers that walk the folder themselves (Hive, Spark) still read them, so
    /// the audit has to see them. Object stores list everything, so this is empty there.
    pub fn unlisted_local_files(&self, prefix: &Path) -> Vec<String> {
        let Some(root) = &self.local_root else { return Vec::new() };
        let mut found = Vec::new();
        let mut dirs = vec![root.join(prefix.as_ref())];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                let hidden = name
                    .rsplit_once('#')
                    .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                if hidden {
                    if let Ok(rel) = path.strip_prefix(root) {
                        found.push(rel.to_string_lossy().replace('\\', "/"));
                    }
                }
            }
        }
        found.sort();
        found
    }

    /// Removes everything under `prefix`, including unfinished uploads.
    pub async fn remove_all(&self, prefix: &Path) -> Result<(), StorageError> {
        if let Some(root) = &self.local_root {
            let dir = root.join(prefix.as_ref());
            return match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(StorageError::Store {
                    op: "remove",
                    path: prefix.to_string(),
                    source: object_store::Error::Generic { store: "local", source: Box::new(e) },
                }),
            };
        }
        for path in self.list(prefix).await? {
            self.store.delete(&path).await.map_err(StorageError::store("delete", &path))?;
        }
        Ok(())
    }
}
