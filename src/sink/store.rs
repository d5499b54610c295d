//! The table root: one object store, local disk or S3, behind one code path.
//!
//! Paths here are relative to the root the user gave with `--output`. The pipeline thread
//! is synchronous; it runs the store's async calls on the I/O runtime through
//! [`Storage::block_on`], and part uploads run there concurrently with the record loop.
//!
//! Table files are written as uploads that stay invisible until completed, so one file can
//! span many checkpoints. On S3 that is a multipart upload to the file's final key, which
//! appears atomically on completion. On local disk it is a file under `_staging/`, written
//! part by part at known offsets and renamed into the table on completion.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsAuthorizer};
use object_store::client::HttpConnector;
use object_store::local::LocalFileSystem;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
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
    /// Rows could not be encoded into a file.
    #[error("encoding a table file failed: {0}")]
    Encode(String),
}

impl StorageError {
    fn store<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(object_store::Error) -> StorageError + 'a {
        move |source| match source {
            object_store::Error::AlreadyExists { .. } => StorageError::AlreadyExists(path.to_string()),
            source => StorageError::Store { op, path: path.to_string(), source },
        }
    }
}

/// An upload in progress: enough to add parts, complete or abort it, also from another
/// process after a crash (it is recorded in checkpoint manifests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRef {
    /// The file's final path, relative to the table root.
    pub path: String,
    /// The S3 upload id; empty on local disk.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Where a local upload is written until completion; empty on S3.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub staged: String,
}

/// S3 needs every part but the last to be at least this large.
pub const MIN_PART_BYTES: usize = 5 << 20;

#[derive(Debug, Clone)]
enum Backend {
    /// A local directory: uploads are staging files written at offsets.
    Local(PathBuf),
    /// An S3 bucket (or S3-compatible server) under a key prefix.
    S3(Arc<S3Root>),
}

#[derive(Debug)]
struct S3Root {
    s3: Arc<AmazonS3>,
    /// The key prefix of the table root, e.g. `warehouse/pageviews`.
    prefix: Path,
    /// Base URL of the bucket, for the one call object_store lacks (listing uploads).
    bucket_url: String,
    region: String,
    http: object_store::client::HttpClient,
}

/// The table root and the runtime its I/O runs on.
#[derive(Debug, Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    backend: Backend,
    url: String,
    rt: Handle,
}

impl Storage {
    /// Opens `--output`: a plain path, a `file://` URL (the directory is created), or
    /// `s3://bucket/prefix`, configured the AWS way from `AWS_*` variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL` for
    /// S3-compatible servers, `AWS_ALLOW_HTTP=true` for plain-http ones).
    pub fn open(url: &str, rt: Handle) -> Result<Self, StorageError> {
        let bad = |reason: String| StorageError::BadOutput { url: url.to_string(), reason };
        let path = if let Some(rest) = url.strip_prefix("file://") {
            PathBuf::from(rest)
        } else if url.starts_with("s3://") || url.starts_with("s3a://") {
            return Self::open_s3(url, rt);
        } else if let Some((scheme, _)) = url.split_once("://") {
            return Err(bad(format!(
                "the {scheme}:// scheme is not supported; use a local path, file:// or s3://"
            )));
        } else {
            PathBuf::from(url)
        };
        std::fs::create_dir_all(&path).map_err(|e| bad(format!("cannot create the directory: {e}")))?;
        let root = path.canonicalize().map_err(|e| bad(e.to_string()))?;
        let store = LocalFileSystem::new_with_prefix(&root).map_err(|e| bad(e.to_string()))?;
        Ok(Storage { store: Arc::new(store), backend: Backend::Local(root), url: url.to_string(), rt })
    }

    fn open_s3(url: &str, rt: Handle) -> Result<Self, StorageError> {
        let bad = |reason: String| StorageError::BadOutput { url: url.to_string(), reason };
        let rest = url.split_once("://").map_or("", |(_, r)| r);
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket: write s3://bucket/prefix".into()));
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        // Both spellings of the region are common; object_store reads only AWS_DEFAULT_REGION
        // when AWS_REGION is absent, so take either.
        if builder.get_config_value(&AmazonS3ConfigKey::Region).is_none() {
            if let Ok(region) = std::env::var("AWS_REGION") {
                builder = builder.with_region(region);
            }
        }
        let region =
            builder.get_config_value(&AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
        let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
        let virtual_hosted = builder
            .get_config_value(&AmazonS3ConfigKey::VirtualHostedStyleRequest)
            .is_some_and(|v| v == "true");
        // The same rule object_store applies, so listing uploads talks to the same bucket.
        let bucket_url = match (&endpoint, virtual_hosted) {
            (Some(e), true) => e.trim_end_matches('/').to_string(),
            (Some(e), false) => format!("{}/{bucket}", e.trim_end_matches('/')),
            (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        let allow_http = builder
            .get_config_value(&AmazonS3ConfigKey::Client(object_store::ClientConfigKey::AllowHttp))
            .is_some_and(|v| v == "true");
        if bucket_url.starts_with("http://") && !allow_http {
            return Err(bad(format!(
                "the endpoint {} is plain http; set AWS_ALLOW_HTTP=true to allow it",
                endpoint.unwrap_or_default()
            )));
        }
        let s3 = Arc::new(builder.build().map_err(|e| bad(e.to_string()))?);
        let http = object_store::client::ReqwestConnector::default()
            .connect(&ClientOptions::new().with_allow_http(allow_http))
            .map_err(|e| bad(e.to_string()))?;
        let prefix = Path::from(prefix.trim_matches('/'));
        let store: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
            s3.clone()
        } else {
            Arc::new(PrefixStore::new(s3.clone(), prefix.clone()))
        };
        let root = S3Root { s3, prefix, bucket_url, region, http };
        Ok(Storage { store, backend: Backend::S3(Arc::new(root)), url: url.to_string(), rt })
    }

    /// True when the root is an object store that needs parts of at least
    /// [`MIN_PART_BYTES`].
    pub fn is_object_store(&self) -> bool {
        matches!(self.backend, Backend::S3(_))
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

    /// Removes everything under `prefix`, including unfinished uploads.
    pub async fn remove_all(&self, prefix: &Path) -> Result<(), StorageError> {
        if let Backend::Local(root) = &self.backend {
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

    /// Starts an upload that will become `path` when completed. Local uploads are written
    /// to `staged` meanwhile.
    pub async fn begin_upload(&self, path: &Path, staged: &Path) -> Result<UploadRef, StorageError> {
        match &self.backend {
            Backend::Local(root) => {
                let file = root.join(staged.as_ref());
                let io = async {
                    if let Some(dir) = file.parent() {
                        tokio::fs::create_dir_all(dir).await?;
                    }
                    tokio::fs::File::create(&file).await.map(drop)
                };
                io.await.map_err(|e| local_error("upload", staged, e))?;
                Ok(UploadRef { path: path.to_string(), id: String::new(), staged: staged.to_string() })
            }
            Backend::S3(root) => {
                let key = root.key(path);
                let id = root.s3.create_multipart(&key).await.map_err(StorageError::store("upload", path))?;
                Ok(UploadRef { path: path.to_string(), id, staged: String::new() })
            }
        }
    }

    /// Uploads part `idx` (from 0), which starts `offset` bytes into the file. Parts may
    /// be uploaded concurrently; uploading an index again replaces it. Returns the part's
    /// id for [`Storage::complete_upload`].
    pub async fn put_part(
        &self,
        upload: &UploadRef,
        idx: usize,
        offset: u64,
        data: Bytes,
    ) -> Result<String, StorageError> {
        match &self.backend {
            Backend::Local(root) => {
                let file = root.join(&upload.staged);
                let staged = Path::from(upload.staged.as_str());
                tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt;
                    let f = std::fs::OpenOptions::new().write(true).open(&file)?;
                    f.write_all_at(&data, offset)
                })
                .await
                .map_err(|e| local_error("upload part", &staged, std::io::Error::other(e)))?
                .map_err(|e| local_error("upload part", &staged, e))?;
                Ok(String::new())
            }
            Backend::S3(root) => {
                let path = Path::from(upload.path.as_str());
                let part = root
                    .s3
                    .put_part(&root.key(&path), &upload.id, idx, PutPayload::from(data))
                    .await
                    .map_err(StorageError::store("upload part", &path))?;
                Ok(part.content_id)
            }
        }
    }

    /// Completes an upload from its parts (in order) and `len`, the file's size: the file
    /// appears at its final path, whole, in one step. Returns false when that already
    /// happened (completing is idempotent, so recovery can redo it).
    pub async fn complete_upload(
        &self,
        upload: &UploadRef,
        parts: &[String],
        len: u64,
    ) -> Result<bool, StorageError> {
        let path = Path::from(upload.path.as_str());
        match &self.backend {
            Backend::Local(root) => {
                let (from, to) = (root.join(&upload.staged), root.join(path.as_ref()));
                let staged = Path::from(upload.staged.as_str());
                let io = async {
                    // A crashed run may have written past what the checkpoint recorded.
                    let f = tokio::fs::OpenOptions::new().write(true).open(&from).await?;
                    f.set_len(len).await?;
                    f.sync_all().await?;
                    if let Some(dir) = to.parent() {
                        tokio::fs::create_dir_all(dir).await?;
                    }
                    tokio::fs::rename(&from, &to).await
                };
                match io.await {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && to.exists() => Ok(false),
                    Err(e) => Err(local_error("complete upload", &staged, e)),
                }
            }
            Backend::S3(root) => {
                let key = root.key(&path);
                let ids = parts.iter().map(|p| PartId { content_id: p.clone() }).collect();
                match root.s3.complete_multipart(&key, &upload.id, ids).await {
                    Ok(_) => Ok(true),
                    Err(object_store::Error::NotFound { .. }) if self.exists(&path).await? => Ok(false),
                    Err(source) => Err(StorageError::store("complete upload", &path)(source)),
                }
            }
        }
    }

    /// Abandons an upload; nothing of it stays. Unknown uploads are fine.
    pub async fn abort_upload(&self, upload: &UploadRef) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Local(root) => match tokio::fs::remove_file(root.join(&upload.staged)).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(local_error("abort upload", &Path::from(upload.staged.as_str()), e))
                }
                _ => Ok(()),
            },
            Backend::S3(root) => {
                let path = Path::from(upload.path.as_str());
                match root.s3.abort_multipart(&root.key(&path), &upload.id).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(source) => Err(StorageError::store("abort upload", &path)(source)),
                }
            }
        }
    }

    /// Unfinished S3 multipart uploads whose keys start with `prefix`: what a crash leaves
    /// behind, invisible to listings but billed. Empty on local disk, where unfinished
    /// uploads are plain files under `_staging/`.
    pub async fn list_uploads(&self, prefix: &Path) -> Result<Vec<UploadRef>, StorageError> {
        let Backend::S3(root) = &self.backend else { return Ok(Vec::new()) };
        root.list_uploads(prefix).await
    }

    /// True when `path` exists.
    pub async fn exists(&self, path: &Path) -> Result<bool, StorageError> {
        match self.store.head(path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(source) => Err(StorageError::store("head", path)(source)),
        }
    }
}

fn local_error(op: &'static str, path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Store {
        op,
        path: path.to_string(),
        source: object_store::Error::Generic { store: "local", source: Box::new(e) },
    }
}

impl S3Root {
    /// The bucket key of a path relative to the table root.
    fn key(&self, path: &Path) -> Path {
        if self.prefix.as_ref().is_empty() {
            path.clone()
        } else {
            self.prefix.parts().chain(path.parts()).collect()
        }
    }

    /// ListMultipartUploads, which object_store does not offer, signed with its own
    /// credentials and signer.
    async fn list_uploads(&self, prefix: &Path) -> Result<Vec<UploadRef>, StorageError> {
        let err = |reason: String| StorageError::Store {
            op: "list uploads",
            path: prefix.to_string(),
            source: object_store::Error::Generic { store: "S3", source: reason.into() },
        };
        let key_prefix = format!("{}/", self.key(prefix));
        let root_len = if self.prefix.as_ref().is_empty() { 0 } else { self.prefix.as_ref().len() + 1 };
        let credential = self.s3.credentials().get_credential().await.map_err(|e| err(e.to_string()))?;
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut url = format!("{}/?prefix={}&uploads=", self.bucket_url, encode_query(&key_prefix));
            if let Some((key, id)) = &markers {
                url.push_str(&format!(
                    "&key-marker={}&upload-id-marker={}",
                    encode_query(key),
                    encode_query(id)
                ));
            }
            let mut request = http::Request::builder()
                .method(http::Method::GET)
                .uri(&url)
                .body(object_store::client::HttpRequestBody::empty())
                .map_err(|e| err(e.to_string()))?;
            AwsAuthorizer::new(&credential, "s3", &self.region).authorize(&mut request, None);
            let response = self.http.execute(request).await.map_err(|e| err(e.to_string()))?;
            let status = response.status();
            let body = response.into_body().bytes().await.map_err(|e| err(e.to_string()))?;
            let body = String::from_utf8_lossy(&body);
            if !status.is_success() {
                return Err(err(format!("HTTP {status}: {body}")));
            }
            for upload in xml_elements(&body, "Upload") {
                let (Some(key), Some(id)) = (xml_text(upload, "Key"), xml_text(upload, "UploadId")) else {
                    continue;
                };
                if let Some(rel) = key.get(root_len..) {
                    out.push(UploadRef { path: rel.to_string(), id, staged: String::new() });
                }
            }
            if xml_text(&body, "IsTruncated").as_deref() != Some("true") {
                return Ok(out);
            }
            match (xml_text(&body, "NextKeyMarker"), xml_text(&body, "NextUploadIdMarker")) {
                (Some(k), Some(i)) => markers = Some((k, i)),
                _ => return Ok(out),
            }
        }
    }
}

/// Percent-encodes a query value the way SigV4 canonicalises it.
fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The bodies of every `<name>…</name>` element, in order (flat scan; S3's listing XML has
/// no nesting of the names used here).
fn xml_elements<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    out
}

/// The unescaped text of the first `<name>` element.
fn xml_text(xml: &str, name: &str) -> Option<String> {
    let raw = xml_elements(xml, name).into_iter().next()?;
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&#39;", "'")
            .replace("&amp;", "&"),
    )
}
