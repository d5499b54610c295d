//! The table root as the user gives it (`--output`): a plain path, a `file://` URL,
//! `s3://bucket/prefix` or `az://container/prefix` (also `abfs://` and `abfss://`), and the
//! settings its object store is configured from.
//!
//! The pipeline and the SQL client both open roots here, so both accept the same URLs and
//! refuse the same unusable settings, before any request, with what to set. Each store's
//! client and checks live beside this file: `s3.rs`, `azure.rs`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::multipart::MultipartStore;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};

use super::azure::{self, AzureSettings};
use super::requests::CountingConnector;
use super::s3::{self, S3Client};
use super::StorageError;

/// Where a root is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local directory, as given (not made absolute, and it may not exist yet).
    Local(PathBuf),
    /// An S3 bucket and a key prefix without leading or trailing `/` (may be empty).
    S3 {
        /// The bucket.
        bucket: String,
        /// The prefix of the table root inside the bucket.
        prefix: String,
    },
    /// An Azure Blob Storage container and a blob-name prefix without leading or trailing `/`.
    Azure {
        /// The container (an ADLS Gen2 file system).
        container: String,
        /// The storage account, when the URL names it (`abfss://fs@account.dfs.core.windows.net`).
        account: Option<String>,
        /// The prefix of the table root inside the container.
        prefix: String,
        /// The URL up to the container (`az://container`), under which readers register the store.
        store_url: String,
    },
}

impl Location {
    /// Parses `--output`.
    pub fn parse(url: &str) -> Result<Location, StorageError> {
        if let Some(rest) = url.strip_prefix("file://") {
            return Ok(Location::Local(PathBuf::from(rest)));
        }
        if let Some(rest) = url.strip_prefix("s3://").or_else(|| url.strip_prefix("s3a://")) {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad(url, "no bucket: write s3://bucket/prefix".into()));
            }
            return Ok(Location::S3 { bucket: bucket.into(), prefix: prefix.trim_matches('/').into() });
        }
        if let Some((scheme, rest)) = url.split_once("://") {
            if matches!(scheme, "az" | "abfs" | "abfss") {
                return azure::parse_location(url, scheme, rest);
            }
            return Err(bad(
                url,
                format!("the {scheme}:// scheme is not supported; use a local path, file://, s3:// or az://"),
            ));
        }
        Ok(Location::Local(PathBuf::from(url)))
    }
}

pub(super) fn bad(url: &str, reason: String) -> StorageError {
    StorageError::BadOutput { url: url.to_string(), reason }
}

/// The settings an object-store root is configured from, the usual way for each store
/// (`AWS_*` for S3, `AZURE_*` for Azure): the process environment, or given explicitly
/// (tests, which must not change the environment of other threads).
#[derive(Clone, Default)]
pub struct StoreEnv {
    vars: Vec<(String, String)>,
}

/// Names only: the values hold secrets, and configs get logged.
impl std::fmt::Debug for StoreEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.vars.iter().map(|(k, _)| k)).finish()
    }
}

impl StoreEnv {
    /// The `AWS_*` and `AZURE_*` variables of this process, and `AZURITE_BLOB_STORAGE_URL`
    /// (which object_store reads itself, and a child process must see too).
    pub fn process() -> Self {
        let ours =
            |k: &str| k.starts_with("AWS_") || k.starts_with("AZURE_") || k == "AZURITE_BLOB_STORAGE_URL";
        StoreEnv { vars: std::env::vars().filter(|(k, _)| ours(k)).collect() }
    }

    /// These variables only, as `(name, value)` pairs such as `("AWS_REGION", "us-east-1")`.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        StoreEnv { vars: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }

    /// The variables, for a child process that must see the same store.
    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }

    /// The value of variable `name`.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The variables whose names start with `prefix`.
    pub(super) fn with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.vars.iter().filter(move |(k, _)| k.starts_with(prefix)).map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// How a client retries each request itself.
#[derive(Debug, Clone, Copy)]
pub(super) enum Retries {
    /// object_store's default (up to 10 times in 3 minutes), for callers with no retries of
    /// their own (the SQL client).
    Default,
    /// Briefly (3 tries in at most 5 s), so a blip passes unseen and a longer outage reaches
    /// [`super::Storage`]'s own retries, which have no count limit, cover every call and
    /// failure that passes, and report the outage.
    Brief,
}

impl Retries {
    pub(super) fn config(self) -> RetryConfig {
        match self {
            Retries::Default => RetryConfig::default(),
            Retries::Brief => RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(1),
                    base: 2.0,
                },
                max_retries: 3,
                retry_timeout: Duration::from_secs(5),
            },
        }
    }
}

/// The client of an object-store root's bucket or container.
#[derive(Debug, Clone)]
pub(super) enum Client {
    /// S3, with what its upload listing needs.
    S3(Arc<S3Client>),
    /// Azure Blob Storage.
    Azure(Arc<object_store::azure::MicrosoftAzure>),
}

impl Client {
    /// Builds the client for `location` (not a local one) from `env`, refusing settings that
    /// cannot work.
    pub(super) fn open(
        url: &str,
        location: &Location,
        env: &StoreEnv,
        retries: Retries,
        connector: CountingConnector,
    ) -> Result<Client, StorageError> {
        match location {
            Location::Local(_) => Err(bad(url, "a local path has no object store client".into())),
            Location::S3 { bucket, .. } => {
                Ok(Client::S3(Arc::new(s3::build(url, bucket, env, retries.config(), connector)?)))
            }
            Location::Azure { container, account, .. } => {
                let settings = AzureSettings { container, account: account.as_deref() };
                Ok(Client::Azure(Arc::new(azure::build(url, &settings, env, retries.config(), connector)?)))
            }
        }
    }

    pub(super) fn object_store(&self) -> Arc<dyn ObjectStore> {
        match self {
            Client::S3(c) => Arc::new(c.s3.clone()),
            Client::Azure(a) => a.clone(),
        }
    }

    pub(super) fn multipart(&self) -> &dyn MultipartStore {
        match self {
            Client::S3(c) => &c.s3,
            Client::Azure(a) => a.as_ref(),
        }
    }

    /// What to set for this kind of store, shown with configuration and access errors.
    pub(super) fn settings(&self) -> &'static str {
        match self {
            Client::S3(_) => s3::S3_SETTINGS,
            Client::Azure(_) => azure::AZURE_SETTINGS,
        }
    }
}

/// A bucket or container, for a reader that brings no retries of its own (the SQL client):
/// the store over the whole bucket, the URL it is registered under, and the root inside it.
#[derive(Debug)]
pub struct Bucket {
    /// The bucket's (or container's) store; paths are keys in it.
    pub store: Arc<dyn ObjectStore>,
    /// `s3://bucket` or `az://container`: what the table locations start with.
    pub store_url: String,
    /// The root's key prefix inside the bucket, without leading or trailing `/`.
    pub prefix: String,
    /// What to check when the bucket cannot be listed.
    pub settings: &'static str,
}

/// Opens the bucket of an object-store root for reading, with object_store's default
/// retries. `None` for a local root.
pub fn open_bucket(url: &str, env: &StoreEnv) -> Result<Option<Bucket>, StorageError> {
    let location = Location::parse(url)?;
    let (store_url, prefix) = match &location {
        Location::Local(_) => return Ok(None),
        Location::S3 { bucket, prefix } => (format!("s3://{bucket}"), prefix.clone()),
        Location::Azure { store_url, prefix, .. } => (store_url.clone(), prefix.clone()),
    };
    let client = Client::open(url, &location, env, Retries::Default, CountingConnector::default())?;
    Ok(Some(Bucket { store: client.object_store(), store_url, prefix, settings: client.settings() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_folder_or_a_bucket_and_prefix() {
        assert_eq!(Location::parse("./x").unwrap(), Location::Local("./x".into()));
        assert_eq!(Location::parse("file:///tmp/x/").unwrap(), Location::Local("/tmp/x/".into()));
        assert_eq!(
            Location::parse("s3://b/warehouse/pv/").unwrap(),
            Location::S3 { bucket: "b".into(), prefix: "warehouse/pv".into() }
        );
        let err = Location::parse("gs://bucket/x").unwrap_err().to_string();
        assert!(err.contains("gs:// scheme is not supported"), "{err}");
        let err = Location::parse("s3:///prefix").unwrap_err().to_string();
        assert!(err.contains("no bucket"), "{err}");
    }
}
