//! Iceberg tables in a catalog, committed exactly once with each checkpoint.
//!
//! ```text
//!  Log::commit ──> publish (files into their folders) ──> IcebergSink::publish(view)
//!  recovery ─────> publish, seal ───────────────────────> IcebergSink::publish(view)
//!                                                          │ per table: files of log versions
//!                                                          │ the table lacks → manifest,
//!                                                          ▼ manifest list, snapshot
//!                                              catalog compare-and-swap (sqlite | REST | Glue)
//! ```
//!
//! The commit log stays the one commit point: an Iceberg snapshot only ever adds files the
//! log committed, and records the newest log version it carries (snapshot summary and a
//! table property, `metadata`). Before each commit the table is read again, so a version
//! the table has (a crash after the catalog commit, a timeout that landed, another member
//! that committed it) is never added twice, and one it lacks is added by whichever member
//! commits next. Versions are added in order: a file not visible yet (another member's
//! entry, not published) holds its version and every later one back until it is.
//!
//! Catalog-independent pieces — the tables' schemas and specs (`spec`), manifests
//! (`manifest`), metadata (`metadata`) — are what `verify` reads the tables with.

mod catalog;
mod commit;
pub(crate) mod manifest;
pub(crate) mod metadata;
pub(crate) mod spec;
mod tables;

use std::time::Duration;

use object_store::path::Path;
use pageviews_core::storage::{Storage, StorageError};
use thiserror::Error;

pub(crate) use tables::read_tables;
pub(crate) use tables::IcebergSink;

/// Where the Iceberg tables live, and how long their history is kept.
#[derive(Clone)]
pub struct IcebergConfig {
    /// `sqlite:PATH`, `http(s)://…` (REST) or `glue://[CATALOG_ID]`.
    pub(crate) catalog: String,
    /// The namespace (Glue: database) of the four tables.
    pub namespace: String,
    /// REST: the `warehouse` asked for at the config endpoint.
    pub(crate) warehouse: Option<String>,
    /// REST: a bearer token.
    pub(crate) token: Option<String>,
    /// REST: OAuth2 client credentials, `ID:SECRET`, exchanged for a token.
    pub(crate) credential: Option<String>,
    /// Snapshots older than this are expired (the current one never).
    pub(crate) snapshot_retention: Duration,
    /// How long a catalog that does not answer is waited for, checkpoint after checkpoint,
    /// before the run stops.
    pub(crate) retry_timeout: Duration,
}

/// Names only: tokens are secrets.
impl std::fmt::Debug for IcebergConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IcebergConfig")
            .field("catalog", &self.catalog)
            .field("namespace", &self.namespace)
            .field("warehouse", &self.warehouse)
            .field("snapshot_retention", &self.snapshot_retention)
            .finish_non_exhaustive()
    }
}

impl IcebergConfig {
    /// A configuration for `catalog` with the defaults: namespace `pageviews`, a day of
    /// snapshots.
    pub fn new(catalog: impl Into<String>) -> Self {
        IcebergConfig {
            catalog: catalog.into(),
            namespace: "pageviews".into(),
            warehouse: None,
            token: None,
            credential: None,
            snapshot_retention: Duration::from_secs(24 * 3600),
            retry_timeout: Duration::from_secs(300),
        }
    }

    /// The catalog of a local output when none is given: `<output>/catalog.db`.
    pub(crate) fn default_catalog(output: &str) -> Option<String> {
        match pageviews_core::storage::Location::parse(output).ok()? {
            pageviews_core::storage::Location::Local(path) => {
                Some(format!("sqlite:{}", path.join("catalog.db").display()))
            }
            _ => None,
        }
    }
}

/// Why the Iceberg tables could not be read or committed.
#[derive(Debug, Error)]
pub enum IcebergError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The catalog failed or refused.
    #[error("catalog {catalog}: {reason}")]
    Catalog {
        /// The catalog, as given (no secrets).
        catalog: String,
        /// What failed.
        reason: String,
        /// A failure that passes (unreachable, 5xx, busy): the next checkpoint tries again.
        transient: bool,
    },
    /// A manifest or manifest list could not be written or read.
    #[error("Avro {what}: {reason}")]
    Avro {
        /// The file or schema.
        what: String,
        /// Why.
        reason: String,
    },
    /// A metadata file is unreadable.
    #[error("{path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The flags or the catalog's tables do not fit this pipeline.
    #[error("{0}")]
    Config(String),
}

impl IcebergError {
    fn is_transient(&self) -> bool {
        match self {
            IcebergError::Catalog { transient, .. } => *transient,
            IcebergError::Storage(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// Where the file at `uri` is under the output, or an error for a file outside it.
pub(crate) fn relative(storage: &Storage, uri: &str) -> Result<Path, IcebergError> {
    let root = storage.root_uri();
    let rest = uri
        .strip_prefix(root.as_str())
        .and_then(|r| r.strip_prefix('/'))
        .or_else(|| {
            uri.strip_prefix("file:")
                .and_then(|u| u.strip_prefix(root.trim_start_matches("file:")))
                .and_then(|r| r.strip_prefix('/'))
        })
        .ok_or_else(|| {
            IcebergError::Config(format!(
                "{uri} is outside the output {root}: the Iceberg tables' files must live under --output"
            ))
        })?;
    Ok(Path::from(rest))
}

/// A random version-4 UUID, for the names of metadata files and a new table's id.
pub(crate) fn random_uuid() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// A random positive snapshot id.
pub(crate) fn random_id() -> i64 {
    (i64::from_le_bytes(random_bytes::<8>()) & i64::MAX).max(1)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut b = [0u8; N];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // The system's generator failed: the clock and a counter still give distinct ids.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = now_ms() as u64;
        for (i, x) in b.iter_mut().enumerate() {
            *x = ((t.rotate_left(i as u32 * 7) ^ n.rotate_left(i as u32 * 3)) & 0xff) as u8;
        }
    }
    b
}

/// Wall-clock time, UTC ms: snapshots are stamped with it (time travel goes by it).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
