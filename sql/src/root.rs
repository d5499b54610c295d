//! The table root: where `pageviews run --output` wrote the tables, on local disk or in an S3
//! bucket, and the object store that lists its files.
//!
//! The root is parsed the way the pipeline parses `--output`: a plain path, a `file://` URL
//! or `s3://bucket/prefix`. An S3 root is configured the AWS way, from `AWS_*` variables read
//! once here, when the root is parsed; its store is registered in the session's runtime so
//! that DataFusion reads the tables through the same client that listed them.

use std::path::{Component, PathBuf};
use std::sync::Arc;

use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ClientConfigKey, ObjectStore};

use crate::catalog::CatalogError;

/// What to set for an S3 root, shown with every S3 configuration or listing error.
const S3_SETTINGS: &str = "set AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION, and for an \
     S3-compatible server AWS_ENDPOINT_URL (plus AWS_ALLOW_HTTP=true for plain http)";

/// The table root: a local directory or an S3 bucket and prefix.
#[derive(Debug, Clone)]
pub struct TableRoot {
    /// Where the tables' folders are, without a trailing `/`: an absolute path or
    /// `s3://bucket/prefix`. Table locations are `<base>/<table>/`.
    base: String,
    /// Lists the root's files.
    store: Arc<dyn ObjectStore>,
    /// The root inside `store`.
    prefix: StorePath,
    /// For an S3 root, the bucket's URL (`s3://bucket`), under which `store` is registered.
    s3_bucket: Option<ObjectStoreUrl>,
    /// What to check when listing fails, appended to the error; empty for local roots.
    list_hint: String,
}

impl TableRoot {
    /// Parses `--output` the way `pageviews run` does: a plain path, a `file://` URL, or
    /// `s3://bucket/prefix` with the `AWS_*` variables of the environment. A local directory
    /// does not have to exist: its tables then read as empty.
    pub fn parse(url: &str) -> Result<Self, CatalogError> {
        let bad = |reason: String| CatalogError::BadRoot { url: url.to_string(), reason };
        let path = if let Some(rest) = url.strip_prefix("file://") {
            PathBuf::from(rest)
        } else if let Some(rest) = url.strip_prefix("s3://").or_else(|| url.strip_prefix("s3a://")) {
            return Self::parse_s3(url, rest);
        } else if let Some((scheme, _)) = url.split_once("://") {
            return Err(bad(format!(
                "the {scheme}:// scheme is not supported; use a local path, file:// or s3://"
            )));
        } else {
            PathBuf::from(url)
        };
        // Absolute, so the DDL's LOCATION works from any directory; not canonicalized,
        // since the root may not exist yet.
        let dir = normalize(&std::path::absolute(&path).map_err(|e| bad(e.to_string()))?);
        let prefix = StorePath::from_absolute_path(&dir).map_err(|e| bad(e.to_string()))?;
        let base = dir.display().to_string().trim_end_matches('/').to_string();
        let store = Arc::new(LocalFileSystem::new());
        Ok(TableRoot { base, store, prefix, s3_bucket: None, list_hint: String::new() })
    }

    /// `s3://bucket/prefix`: an S3 client for the bucket, from the `AWS_*` variables.
    /// Settings that cannot work are refused here, before any request, with what to set.
    fn parse_s3(url: &str, rest: &str) -> Result<Self, CatalogError> {
        let bad = |reason: String| CatalogError::BadRoot { url: url.to_string(), reason };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("no bucket: write s3://bucket/prefix".into()));
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        // object_store reads AWS_DEFAULT_REGION only; the pipeline takes AWS_REGION too.
        if builder.get_config_value(&AmazonS3ConfigKey::Region).is_none() {
            if let Ok(region) = std::env::var("AWS_REGION") {
                builder = builder.with_region(region);
            }
        }
        let is_set = |key: AmazonS3ConfigKey| builder.get_config_value(&key).is_some_and(|v| !v.is_empty());
        let is_true = |key: AmazonS3ConfigKey| builder.get_config_value(&key).is_some_and(|v| v == "true");
        let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
        match (is_set(AmazonS3ConfigKey::AccessKeyId), is_set(AmazonS3ConfigKey::SecretAccessKey)) {
            (true, false) => {
                return Err(bad("AWS_ACCESS_KEY_ID is set but not AWS_SECRET_ACCESS_KEY".into()))
            }
            (false, true) => {
                return Err(bad("AWS_SECRET_ACCESS_KEY is set but not AWS_ACCESS_KEY_ID".into()))
            }
            // An S3-compatible server (not an AWS endpoint) has no instance metadata to take
            // credentials from, so without keys every request would fail.
            (false, false)
                if endpoint.as_deref().is_some_and(|e| !e.contains(".amazonaws.com"))
                    && !is_true(AmazonS3ConfigKey::SkipSignature) =>
            {
                return Err(bad(format!(
                    "no credentials for the endpoint {}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                    endpoint.unwrap_or_default()
                )))
            }
            _ => {}
        }
        if let Some(e) = endpoint.as_deref().filter(|e| e.starts_with("http://")) {
            if !is_true(AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp)) {
                return Err(bad(format!(
                    "the endpoint {e} is plain http; set AWS_ALLOW_HTTP=true to allow it"
                )));
            }
        }
        let s3 = builder.build().map_err(|e| bad(format!("{e}; {S3_SETTINGS}")))?;
        let prefix = prefix.trim_matches('/');
        let bucket_url = ObjectStoreUrl::parse(format!("s3://{bucket}")).map_err(|e| bad(e.to_string()))?;
        let base =
            if prefix.is_empty() { format!("s3://{bucket}") } else { format!("s3://{bucket}/{prefix}") };
        Ok(TableRoot {
            base,
            store: Arc::new(s3),
            prefix: StorePath::from(prefix),
            s3_bucket: Some(bucket_url),
            list_hint: format!("; check that bucket {bucket} exists, and {S3_SETTINGS}"),
        })
    }

    /// The root as a path or `s3://` URL, without a trailing `/`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// True for an `s3://` root.
    pub fn is_s3(&self) -> bool {
        self.s3_bucket.is_some()
    }

    /// A table's folder, with the trailing `/` that tells DataFusion it is a directory.
    pub fn location(&self, table: &str) -> String {
        format!("{}/{table}/", self.base)
    }

    /// Lets `ctx` read this root: an S3 root's client is registered for its bucket (local
    /// paths need nothing, DataFusion reads them itself).
    pub fn register_store(&self, ctx: &SessionContext) {
        if let Some(url) = &self.s3_bucket {
            ctx.runtime_env().register_object_store(url.as_ref(), Arc::clone(&self.store));
        }
    }

    /// Every file under a table's folder, as paths relative to the store. A folder that does
    /// not exist holds no files.
    pub async fn list_files(&self, table: &str) -> Result<Vec<String>, CatalogError> {
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
        assert!(!root.is_s3());
        let err = TableRoot::parse("gs://bucket/x").unwrap_err().to_string();
        assert!(err.contains("gs:// scheme is not supported"), "{err}");
    }

    #[test]
    fn an_s3_root_without_a_bucket_is_refused() {
        let err = TableRoot::parse("s3:///prefix").unwrap_err().to_string();
        assert!(err.contains("no bucket"), "{err}");
    }
}
