//! What a storage call that failed says: the operation, the path, and what to do about it.

use object_store::path::Path;
use thiserror::Error;

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
    /// A call kept failing for a reason that usually passes, for longer than the retry
    /// timeout.
    #[error("{op} {path}: storage did not answer for {:.0} s (--storage-retry-timeout); the last error: {source}", waited.as_secs_f64())]
    Unreachable {
        /// The operation.
        op: &'static str,
        /// The path, relative to the table root.
        path: String,
        /// How long it was retried.
        waited: std::time::Duration,
        /// The last failure.
        source: Box<StorageError>,
    },
    /// The bucket (S3) or container (Azure) of the output does not exist.
    #[error("the {kind} of --output does not exist (the store answered {code} to {op} {path}); create it, or correct --output")]
    NoSuchBucket {
        /// `bucket` or `container`.
        kind: &'static str,
        /// The store's error code.
        code: &'static str,
        /// The operation.
        op: &'static str,
        /// The path, relative to the table root.
        path: String,
    },
    /// The store refused the credentials or the operation.
    #[error("{op} {path}: access denied ({source}); check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for s3://, AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_KEY for az://), and that the bucket or container allows this")]
    Denied {
        /// The operation.
        op: &'static str,
        /// The path, relative to the table root.
        path: String,
        /// The store's error (boxed: it is large and rare).
        source: Box<object_store::Error>,
    },
    /// The store does not implement an optional call.
    #[error("{what} is not implemented by this store: {reason}")]
    Unsupported {
        /// The call.
        what: &'static str,
        /// The store's answer.
        reason: String,
    },
}

impl StorageError {
    pub(crate) fn store<'a>(
        op: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(object_store::Error) -> StorageError + 'a {
        move |source| {
            let text = crate::error_chain(&source);
            let path = path.to_string();
            match source {
                object_store::Error::AlreadyExists { .. } => StorageError::AlreadyExists(path),
                _ if text.contains("NoSuchBucket") => {
                    StorageError::NoSuchBucket { kind: "bucket", code: "NoSuchBucket", op, path }
                }
                _ if text.contains("ContainerNotFound") => {
                    StorageError::NoSuchBucket { kind: "container", code: "ContainerNotFound", op, path }
                }
                object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. } => {
                    StorageError::Denied { op, path, source: Box::new(source) }
                }
                _ if text.contains("status code: 403") => {
                    StorageError::Denied { op, path, source: Box::new(source) }
                }
                source => StorageError::Store { op, path, source },
            }
        }
    }

    /// True when the object or upload does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::Store { source: object_store::Error::NotFound { .. }, .. })
    }

    /// True for failures that pass with time (timeouts, refused or reset connections, 5xx,
    /// throttling), which [`Storage`](super::Storage) retries in place.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StorageError::Store { source, .. } if super::retry::retryable(source))
    }
}

/// An I/O error on a local root, as a storage error about `path`.
pub(crate) fn local_error(op: &'static str, path: &Path, e: std::io::Error) -> StorageError {
    // A missing file is "not found" as on S3, so callers tell it from an outage the same way.
    let source = if e.kind() == std::io::ErrorKind::NotFound {
        object_store::Error::NotFound { path: path.to_string(), source: Box::new(e) }
    } else {
        object_store::Error::Generic { store: "local", source: Box::new(e) }
    };
    StorageError::Store { op, path: path.to_string(), source }
}
