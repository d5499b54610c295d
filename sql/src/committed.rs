//! The committed view: every table as of each pipeline's newest checkpoint, rows of files
//! still being written included, served to DataFusion as an object store.
//!
//! ```text
//!  DataFusion ──list/get──> CommittedStore ──┬── paths under <root>/<table>/ ──> the snapshot
//!                                             │     (pageviews_core::commit::snapshot):
//!                                             │     visible files, and open files as objects
//!                                             │     of their committed length
//!                                             └── any other path ──> the root's own store
//! ```
//!
//! A checkpoint commits rows long before the file holding them rolls into its table folder.
//! [`Committed::refresh`] reads a snapshot once per statement; [`CommittedStore`] then answers
//! DataFusion's listings of the table folders from it, and serves an open file at the path it
//! will have once it rolls, as an object whose bytes are its committed prefix plus (Parquet)
//! the checkpoint's footer — a complete file, read by ranges like any other, and never a byte
//! past what the checkpoint committed. Nothing is copied: a range request reads that range.
//! Partition pruning and `EXPLAIN` work as on the folders, since the paths are the same.
//!
//! The SQL client learns about commits only through `read_snapshot`, so a change to how
//! checkpoints are laid out changes nothing here.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use pageviews_core::commit::{read_snapshot, Snapshot, SnapshotError, SnapshotFile, Unreadable};
use pageviews_core::storage::{Storage, StoreEnv};
use pageviews_core::table::Table;

/// The snapshot the committed view shows, and how to read a new one.
#[derive(Debug)]
pub struct Committed {
    url: String,
    env: StoreEnv,
    /// A local root, which is opened only once it exists: a reader must not create it.
    local_dir: Option<PathBuf>,
    storage: Mutex<Option<Storage>>,
    snapshot: RwLock<Arc<Snapshot>>,
}

impl Committed {
    /// The view of the root `url` (as `--output` gives it); nothing is read yet.
    pub fn new(url: &str, env: &StoreEnv, local_dir: Option<PathBuf>) -> Self {
        Committed {
            url: url.to_string(),
            env: env.clone(),
            local_dir,
            storage: Mutex::new(None),
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
        }
    }

    /// The root's storage, opened on first use on the current runtime; `None` while a local
    /// root does not exist.
    fn storage(&self) -> Result<Option<Storage>, SnapshotError> {
        let mut slot = self.storage.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            if self.local_dir.as_ref().is_some_and(|dir| !dir.is_dir()) {
                return Ok(None);
            }
            let handle = tokio::runtime::Handle::current();
            *slot = Some(Storage::open_with(&self.url, handle, &self.env)?);
        }
        Ok(slot.clone())
    }

    /// Reads the newest committed state; what statements see until the next refresh.
    pub async fn refresh(&self) -> Result<Arc<Snapshot>, SnapshotError> {
        let snapshot = match self.storage()? {
            Some(storage) => Arc::new(read_snapshot(&storage).await?),
            None => Arc::new(Snapshot::default()),
        };
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = snapshot.clone();
        Ok(snapshot)
    }

    /// The snapshot of the last refresh.
    pub fn current(&self) -> Arc<Snapshot> {
        self.snapshot.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn read(&self, file: &SnapshotFile, range: Range<u64>) -> object_store::Result<Bytes> {
        let storage =
            self.storage().map_err(generic)?.ok_or_else(|| not_found(file.meta.location.as_ref()))?;
        file.read(&storage, range).await.map_err(generic)
    }
}

/// The notes a statement over `tables` prints about committed rows it cannot show: one line
/// per kind of problem.
pub fn unreadable_notes(snapshot: &Snapshot, tables: &[Table], base: &str) -> Vec<String> {
    let (mut files, mut rows) = (0, 0);
    let mut notes = Vec::new();
    for u in &snapshot.unreadable {
        match u {
            Unreadable::InProgressUpload { table, rows: n, .. } if tables.contains(table) => {
                files += 1;
                rows += n;
            }
            Unreadable::InProgressUpload { .. } => {}
            Unreadable::Log { pipeline, path, reason } => notes.push(format!(
                "the commit log of pipeline {pipeline} ({base}/{path}) cannot be read ({reason}); \
                 its tables show the files in the table folders only"
            )),
        }
    }
    if files > 0 {
        let (file, hold, it) =
            if files == 1 { ("file", "holds", "it rolls") } else { ("files", "hold", "they roll") };
        notes.insert(
            0,
            format!(
                "{files} {file} still being written under {base} {hold} {rows} committed rows that the store \
                 cannot serve until {it} (an unfinished multipart upload, or a blob's uncommitted blocks, cannot \
                 be read); the result shows the other committed rows"
            ),
        );
    }
    notes
}

fn generic(e: SnapshotError) -> object_store::Error {
    object_store::Error::Generic { store: "pageviews snapshot", source: Box::new(e) }
}

fn not_found(path: &str) -> object_store::Error {
    object_store::Error::NotFound {
        path: path.to_string(),
        source: "not a committed file of the newest checkpoint".into(),
    }
}

/// The root's store with the table folders replaced by the committed view.
#[derive(Debug)]
pub struct CommittedStore {
    inner: Arc<dyn ObjectStore>,
    /// The root's path in `inner`.
    root: Path,
    committed: Arc<Committed>,
}

/// What a path names.
enum Lookup {
    /// Not under a table folder of the root: the store's own business.
    Outside,
    /// Under a table folder, at `rel` (relative to the root).
    Table(String),
}

impl CommittedStore {
    /// `inner` with the table folders under `root` served from `committed`.
    pub fn new(inner: Arc<dyn ObjectStore>, root: Path, committed: Arc<Committed>) -> Self {
        CommittedStore { inner, root, committed }
    }

    fn lookup(&self, location: &Path) -> Lookup {
        let Some(rest) = location.prefix_match(&self.root) else { return Lookup::Outside };
        let parts: Vec<String> = rest.map(|p| p.as_ref().to_string()).collect();
        match parts.first() {
            Some(table) if Table::from_name(table).is_some() => Lookup::Table(parts.join("/")),
            _ => Lookup::Outside,
        }
    }

    /// A snapshot path as `inner` spells it.
    fn full(&self, rel: &Path) -> Path {
        self.root.parts().chain(rel.parts()).collect()
    }

    /// The snapshot's files under `prefix`, with their paths as `inner` spells them.
    fn entries(&self, prefix: &Path) -> Vec<ObjectMeta> {
        self.committed
            .current()
            .files
            .iter()
            .map(|f| ObjectMeta { location: self.full(&f.meta.location), ..f.meta.clone() })
            .filter(|m| m.location.prefix_matches(prefix))
            .collect()
    }

    fn file(&self, rel: &str) -> object_store::Result<SnapshotFile> {
        self.committed.current().file(rel).cloned().ok_or_else(|| not_found(rel))
    }
}

impl fmt::Display for CommittedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "committed view of {}", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CommittedStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        let rel = match self.lookup(location) {
            Lookup::Outside => return self.inner.get_opts(location, options).await,
            Lookup::Table(rel) => rel,
        };
        let file = self.file(&rel)?;
        if !file.is_open() {
            // Visible files never change: the store serves them as they are.
            return self.inner.get_opts(location, options).await;
        }
        let size = file.meta.size;
        let range = match &options.range {
            Some(r) => r.as_range(size).map_err(|e| object_store::Error::Generic {
                store: "pageviews snapshot",
                source: Box::new(e),
            })?,
            None => 0..size,
        };
        let meta = ObjectMeta { location: location.clone(), ..file.meta.clone() };
        let bytes =
            if options.head { Bytes::new() } else { self.committed.read(&file, range.clone()).await? };
        Ok(GetResult {
            payload: GetResultPayload::Stream(stream::once(async move { Ok(bytes) }).boxed()),
            meta,
            range,
            attributes: Attributes::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match prefix.map(|p| self.lookup(p)) {
            Some(Lookup::Table(_)) => {
                let prefix = prefix.cloned().unwrap_or_default();
                stream::iter(self.entries(&prefix).into_iter().map(Ok)).boxed()
            }
            _ => self.inner.list(prefix),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let prefix = match prefix.map(|p| self.lookup(p)) {
            Some(Lookup::Table(_)) => prefix.cloned().unwrap_or_default(),
            _ => return self.inner.list_with_delimiter(prefix).await,
        };
        let depth = prefix.parts().count();
        let mut result = ListResult { common_prefixes: Vec::new(), objects: Vec::new() };
        for meta in self.entries(&prefix) {
            let parts: Vec<_> = meta.location.parts().collect();
            if parts.len() == depth + 1 {
                result.objects.push(meta);
            } else {
                let dir: Path = parts[..=depth].iter().cloned().collect();
                if result.common_prefixes.last() != Some(&dir) {
                    result.common_prefixes.push(dir);
                }
            }
        }
        result.common_prefixes.dedup();
        Ok(result)
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use futures::TryStreamExt;
    use object_store::local::LocalFileSystem;
    use object_store::{GetRange, ObjectStoreExt};
    use pageviews_core::commit::layout::{entry_path, upload_staging};
    use pageviews_core::commit::{
        Entry, OpenFileState, PartitionTime, Position, TaskState, Totals, LOG_VERSION,
    };
    use pageviews_core::storage::UploadRef;

    use super::*;

    const VISIBLE: &str = "page_views/day=2020-01-01/hour=00/part-p-p0-000001-00000001-0000.jsonl";
    const OPEN: &str = "page_views/day=2020-01-01/hour=01/part-p-p0-000001-00000002-0000.jsonl";

    /// A root with one rolled file and one open at task checkpoint 2, whose staged upload holds
    /// a row past the checkpoint; and the store DataFusion would read it through.
    async fn root(dir: &std::path::Path) -> CommittedStore {
        let write = |rel: &str, text: &str| {
            let path = dir.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write(VISIBLE, "rolled\n");
        let staged = upload_staging("p", OPEN).to_string();
        write(&staged, "one\ntwo\nnot committed\n");
        let open = OpenFileState {
            table: Table::PageViews,
            hour: 1,
            path: OPEN.into(),
            upload: Some(UploadRef { path: OPEN.into(), id: String::new(), staged }),
            parts: Vec::new(),
            sent: 8,
            tail: None,
            rows: 2,
            bytes: 8,
        };
        let task = TaskState {
            partition: 0,
            claim: 1,
            cp: 2,
            position: Position::Generator { next_seq: 0, shift_ms: 0 },
            time: PartitionTime::default(),
            counting: None,
            forwarded_to: BTreeSet::new(),
            files: Vec::new(),
            open: vec![open],
            totals: Totals::default(),
        };
        let entry = Entry {
            format: LOG_VERSION,
            version: 1,
            member: "m".into(),
            run: "r".into(),
            created_at: String::new(),
            claims: BTreeMap::from([(0, 1)]),
            tasks: vec![task],
            markers: Vec::new(),
        };
        write(entry_path("p", 1).as_ref(), &serde_json::to_string(&entry).unwrap());
        write("_staging/p/unrelated", "x");

        let base = dir.display().to_string();
        let committed = Arc::new(Committed::new(&base, &StoreEnv::default(), Some(dir.to_path_buf())));
        committed.refresh().await.unwrap();
        CommittedStore::new(
            Arc::new(LocalFileSystem::new()),
            Path::from_absolute_path(dir).unwrap(),
            committed,
        )
    }

    fn full(store: &CommittedStore, rel: &str) -> Path {
        store.full(&Path::from(rel))
    }

    #[tokio::test]
    async fn table_folders_list_the_snapshot_with_committed_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let store = root(dir.path()).await;
        let table = full(&store, "page_views");
        let listed: Vec<(String, u64)> = store
            .list(Some(&table))
            .map_ok(|m| (m.location.to_string(), m.size))
            .try_collect()
            .await
            .unwrap();
        let want = [(full(&store, VISIBLE).to_string(), 7), (full(&store, OPEN).to_string(), 8)];
        assert_eq!(listed, want);

        let days = store.list_with_delimiter(Some(&table)).await.unwrap();
        assert_eq!(days.common_prefixes, [full(&store, "page_views/day=2020-01-01")]);
        assert!(days.objects.is_empty());
        let hour = store
            .list_with_delimiter(Some(&full(&store, "page_views/day=2020-01-01/hour=01")))
            .await
            .unwrap();
        assert_eq!(hour.objects.iter().map(|m| m.size).collect::<Vec<_>>(), [8]);
        // Outside the table folders the store is the root's own.
        let staging: Vec<ObjectMeta> =
            store.list(Some(&full(&store, "_staging"))).try_collect().await.unwrap();
        assert_eq!(staging.len(), 2);
    }

    #[tokio::test]
    async fn an_open_file_is_served_by_ranges_up_to_its_committed_length() {
        let dir = tempfile::tempdir().unwrap();
        let store = root(dir.path()).await;
        let open = full(&store, OPEN);
        assert_eq!(store.get(&open).await.unwrap().bytes().await.unwrap(), "one\ntwo\n".as_bytes());
        assert_eq!(store.get_range(&open, 4..8).await.unwrap(), "two\n".as_bytes());
        let suffix = GetOptions { range: Some(GetRange::Suffix(4)), ..GetOptions::default() };
        let result = store.get_opts(&open, suffix).await.unwrap();
        assert_eq!(result.range, 4..8);
        assert_eq!(result.bytes().await.unwrap(), "two\n".as_bytes());
        assert_eq!(store.head(&open).await.unwrap().size, 8);
        // A range past the end is cut at the end, as stores do: at the committed length.
        assert_eq!(store.get_range(&open, 4..20).await.unwrap(), "two\n".as_bytes(), "never past it");
        let visible = full(&store, VISIBLE);
        assert_eq!(store.get(&visible).await.unwrap().bytes().await.unwrap(), "rolled\n".as_bytes());
        let missing = full(&store, "page_views/day=2020-01-01/hour=01/part-p-p0-000001-00000003-0000.jsonl");
        assert!(matches!(store.get(&missing).await, Err(object_store::Error::NotFound { .. })));
    }
}
