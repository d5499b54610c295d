//! The table root: one object store, local disk, S3 or Azure Blob Storage, behind one code
//! path.
//!
//! Paths here are relative to the root the user gave with `--output`. Callers on a
//! synchronous thread (the pipeline's record loop, `verify`) run the store's async calls on
//! an I/O runtime through [`Storage::block_on`]; async callers (the SQL client) await them.
//!
//! Table files are written as uploads that stay invisible until completed (see
//! [`UploadRef`]), so one file can span many checkpoints. On S3 that is a multipart upload to
//! the file's final key, on Azure a block blob's staged blocks; either appears atomically on
//! completion. On local disk it is a file under `_staging/`, written part by part at known
//! offsets and renamed into the table on completion.

mod azure;
mod error;
mod requests;
mod retry;
mod root;
mod s3;
mod s3_uploads;
mod upload;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::runtime::Handle;

pub(crate) use error::local_error;
pub use error::StorageError;
pub use requests::StorageRequest;
pub(crate) use retry::random_up_to;
pub use retry::{NoObserver, RetryPolicy, StorageObserver};
pub use root::{open_bucket, Bucket, Location, StoreEnv};
pub use upload::{UploadRef, MIN_PART_BYTES};

#[derive(Debug, Clone)]
enum Backend {
    /// A local directory: uploads are staging files written at offsets.
    Local(PathBuf),
    /// An S3 bucket (or S3-compatible server) or an Azure container, under a key prefix.
    Object(Arc<ObjectRoot>),
}

#[derive(Debug)]
struct ObjectRoot {
    client: root::Client,
    /// The key prefix of the table root, e.g. `warehouse/pageviews`.
    prefix: Path,
}

/// The table root and the runtime its I/O runs on. Every call rides out passing failures
/// (see [`RetryPolicy`]); clones share the retry state, so an outage is reported once.
#[derive(Debug, Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    backend: Backend,
    url: String,
    rt: Handle,
    retry: Arc<retry::Retrier>,
    /// Where requests and log appends are reported; its clients' HTTP connectors hold it too.
    observer: requests::ObserverSlot,
    /// Set once the store was found not to list multipart uploads (warned about once).
    no_upload_listing: Arc<std::sync::atomic::AtomicBool>,
}

impl Storage {
    /// Opens `--output`: a plain path, a `file://` URL (the directory is created),
    /// `s3://bucket/prefix`, configured the AWS way from the process's `AWS_*` variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL` for
    /// S3-compatible servers, `AWS_ALLOW_HTTP=true` for plain-http ones), or
    /// `az://container/prefix`, configured from its `AZURE_*` variables
    /// (`AZURE_STORAGE_ACCOUNT_NAME` with `AZURE_STORAGE_ACCOUNT_KEY` or `AZURE_STORAGE_SAS_KEY`,
    /// `AZURE_STORAGE_USE_EMULATOR=true` for Azurite).
    pub fn open(url: &str, rt: Handle) -> Result<Self, StorageError> {
        Self::open_with(url, rt, &StoreEnv::process())
    }

    /// [`Storage::open`] with the store's settings given instead of read from the process.
    pub fn open_with(url: &str, rt: Handle, env: &StoreEnv) -> Result<Self, StorageError> {
        let location = Location::parse(url)?;
        match &location {
            Location::Local(path) => {
                let bad = |reason: String| StorageError::BadOutput { url: url.to_string(), reason };
                std::fs::create_dir_all(path)
                    .map_err(|e| bad(format!("cannot create the directory: {e}")))?;
                let root = path.canonicalize().map_err(|e| bad(e.to_string()))?;
                let store = LocalFileSystem::new_with_prefix(&root).map_err(|e| bad(e.to_string()))?;
                let observer = requests::ObserverSlot::default();
                Ok(Storage::new(Arc::new(store), Backend::Local(root), url, rt, observer))
            }
            Location::S3 { prefix, .. } | Location::Azure { prefix, .. } => {
                for (key, value) in env.vars() {
                    crate::secrets::register_option(key, value);
                }
                let observer = requests::ObserverSlot::default();
                let connector = requests::CountingConnector::new(observer.clone());
                let client = root::Client::open(url, &location, env, root::Retries::Brief, connector)?;
                let bucket = client.object_store();
                let prefix = Path::from(prefix.as_str());
                let store: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
                    bucket
                } else {
                    Arc::new(PrefixStore::new(bucket, prefix.clone()))
                };
                let root = ObjectRoot { client, prefix };
                Ok(Storage::new(store, Backend::Object(Arc::new(root)), url, rt, observer))
            }
        }
    }

    fn new(
        store: Arc<dyn ObjectStore>,
        backend: Backend,
        url: &str,
        rt: Handle,
        observer: requests::ObserverSlot,
    ) -> Self {
        Storage {
            store,
            backend,
            url: url.to_string(),
            rt,
            retry: Arc::new(retry::Retrier::new(RetryPolicy::default(), Arc::new(NoObserver))),
            observer,
            no_upload_listing: Arc::default(),
        }
    }

    /// This root with `policy` for passing failures (set up before the root is shared).
    pub fn with_retries(mut self, policy: RetryPolicy) -> Self {
        self.retry = Arc::new(retry::Retrier::new(policy, self.retry.observer()));
        self
    }

    /// This root reporting outages, requests and log appends to `observer` (set up before
    /// the root is shared: its clones report there too).
    pub fn with_observer(mut self, observer: Arc<dyn StorageObserver>) -> Self {
        self.observer.set(observer.clone());
        self.retry = Arc::new(retry::Retrier::new(self.retry.policy().clone(), observer));
        self
    }

    /// Where this root reports what it does, for the commit log's appends.
    pub(crate) fn observer(&self) -> Arc<dyn StorageObserver> {
        self.observer.get()
    }

    /// True when the root is an object store that needs parts of at least
    /// [`MIN_PART_BYTES`].
    pub fn is_object_store(&self) -> bool {
        matches!(self.backend, Backend::Object(_))
    }

    /// The root as the user gave it, for logs.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The root as an absolute URI, `file:///abs/path`, `s3://bucket/prefix` or
    /// `az://container/prefix`: how other
    /// programs (a table catalog, its readers) name the files under it.
    pub fn root_uri(&self) -> String {
        match &self.backend {
            Backend::Local(root) => format!("file://{}", root.display()),
            Backend::Object(object) => {
                let base = match Location::parse(&self.url) {
                    Ok(Location::S3 { bucket, .. }) => format!("s3://{bucket}"),
                    Ok(Location::Azure { store_url, .. }) => store_url,
                    _ => String::new(),
                };
                match object.prefix.as_ref() {
                    "" => base,
                    prefix => format!("{base}/{prefix}"),
                }
            }
        }
    }

    /// Runs an async storage call to completion from a synchronous thread.
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        self.rt.block_on(fut)
    }

    /// The runtime handle, for spawning uploads.
    pub fn runtime(&self) -> &Handle {
        &self.rt
    }

    /// Where `path` is on this machine, for a root on a local disk; `None` on an object
    /// store.
    pub(crate) fn local_path(&self, path: &Path) -> Option<PathBuf> {
        let Backend::Local(root) = &self.backend else { return None };
        Some(root.join(path.as_ref()))
    }

    /// The underlying store, rooted at the table root.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Writes a whole object, replacing any previous one.
    pub async fn put(&self, path: &Path, bytes: Bytes) -> Result<(), StorageError> {
        self.retry
            .run("put", path.as_ref(), |_| async {
                self.store
                    .put(path, PutPayload::from(bytes.clone()))
                    .await
                    .map_err(StorageError::store("put", path))
            })
            .await?;
        Ok(())
    }

    /// Writes an empty `_SUCCESS`-style marker. On local disk the file is created directly:
    /// object_store writes through a temporary `<name>#<n>` beside it, which a kill at the
    /// wrong instant would leave in a table folder, where readers would see it.
    pub async fn put_marker(&self, path: &Path) -> Result<(), StorageError> {
        let Backend::Local(root) = &self.backend else { return self.put(path, Bytes::new()).await };
        let file = root.join(path.as_ref());
        let io = async {
            if let Some(dir) = file.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            tokio::fs::File::create(&file).await.map(drop)
        };
        io.await.map_err(|e| local_error("put marker", path, e))
    }

    /// Writes a whole object only if none exists: the atomic commit point of a checkpoint.
    /// A retry that finds the object already there with exactly these bytes takes it for
    /// its own earlier try, whose answer was lost.
    pub async fn put_new(&self, path: &Path, bytes: Bytes) -> Result<(), StorageError> {
        self.retry
            .run("create", path.as_ref(), |attempt| {
                let bytes = bytes.clone();
                async move {
                    let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
                    match self.store.put_opts(path, PutPayload::from(bytes.clone()), opts).await {
                        Ok(_) => Ok(()),
                        Err(object_store::Error::AlreadyExists { .. }) if attempt > 0 => {
                            match self.get_once(path).await {
                                Ok(existing) if existing == bytes => Ok(()),
                                _ => Err(StorageError::AlreadyExists(path.to_string())),
                            }
                        }
                        Err(e) => Err(StorageError::store("create", path)(e)),
                    }
                }
            })
            .await
    }

    /// Reads a whole object.
    pub async fn get(&self, path: &Path) -> Result<Bytes, StorageError> {
        self.retry.run("get", path.as_ref(), |_| self.get_once(path)).await
    }

    async fn get_once(&self, path: &Path) -> Result<Bytes, StorageError> {
        let res = self.store.get(path).await.map_err(StorageError::store("get", path))?;
        res.bytes().await.map_err(StorageError::store("read", path))
    }

    /// Lists every object under `prefix` (recursively), as paths.
    pub async fn list(&self, prefix: &Path) -> Result<Vec<Path>, StorageError> {
        self.retry
            .run("list", prefix.as_ref(), |_| async {
                let metas: Vec<_> = self
                    .store
                    .list(Some(prefix))
                    .try_collect()
                    .await
                    .map_err(StorageError::store("list", prefix))?;
                Ok(metas.into_iter().map(|m| m.location).collect())
            })
            .await
    }

    /// True when `path` exists.
    pub async fn exists(&self, path: &Path) -> Result<bool, StorageError> {
        self.retry.run("head", path.as_ref(), |_| self.exists_once(path)).await
    }

    async fn exists_once(&self, path: &Path) -> Result<bool, StorageError> {
        Ok(self.size_once(path).await?.is_some())
    }

    /// The size of the object at `path`; `None` when there is none.
    pub async fn size(&self, path: &Path) -> Result<Option<u64>, StorageError> {
        self.retry.run("head", path.as_ref(), |_| self.size_once(path)).await
    }

    async fn size_once(&self, path: &Path) -> Result<Option<u64>, StorageError> {
        match self.store.head(path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(StorageError::store("head", path)(source)),
        }
    }

    /// The folders directly under `prefix` (object stores: the common prefixes of the keys
    /// below it), as paths.
    pub(crate) async fn list_dirs(&self, prefix: &Path) -> Result<Vec<Path>, StorageError> {
        self.retry
            .run("list", prefix.as_ref(), |_| async {
                let listed = self
                    .store
                    .list_with_delimiter(Some(prefix))
                    .await
                    .map_err(StorageError::store("list", prefix))?;
                Ok(listed.common_prefixes)
            })
            .await
    }

    /// Files under `prefix` that [`Storage::list`] does not return. On local disk
    /// object_store hides names ending in `#<digits>`, which it takes for its own unfinished
    /// uploads. Readers that walk the folder themselves (Hive, Spark) still read them, so
    /// the audit has to see them. Object stores list everything, so this is empty there.
    pub fn unlisted_local_files(&self, prefix: &Path) -> Vec<String> {
        let Backend::Local(root) = &self.backend else { return Vec::new() };
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

    /// Deletes one object; one that does not exist is fine.
    pub async fn delete(&self, path: &Path) -> Result<(), StorageError> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(StorageError::store("delete", path)(source)),
        }
    }

    /// Removes the empty folders under `prefix` (local disk; object stores have none), so
    /// finished staging leaves nothing behind.
    pub async fn remove_empty_dirs(&self, prefix: &Path) -> Result<(), StorageError> {
        let Backend::Local(root) = &self.backend else { return Ok(()) };
        let top = root.join(prefix.as_ref());
        tokio::task::spawn_blocking(move || remove_empty_below(&top))
            .await
            .map_err(|e| local_error("remove empty folders", prefix, std::io::Error::other(e)))?
            .map_err(|e| local_error("remove empty folders", prefix, e))
    }

    /// Removes everything under `prefix`, including unfinished uploads.
    pub async fn remove_all(&self, prefix: &Path) -> Result<(), StorageError> {
        if let Backend::Local(root) = &self.backend {
            let dir = root.join(prefix.as_ref());
            return match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(local_error("remove", prefix, e)),
            };
        }
        for path in self.list(prefix).await? {
            self.retry
                .run("delete", path.as_ref(), |_| async {
                    self.store.delete(&path).await.map_err(StorageError::store("delete", &path))
                })
                .await?;
        }
        Ok(())
    }
}

/// Removes empty folders below `dir` (deepest first), and `dir` itself if it ends up empty.
fn remove_empty_below(dir: &std::path::Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_empty_below(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        // Not empty, or gone meanwhile: both are fine.
        Ok(()) | Err(_) => Ok(()),
    }
}
