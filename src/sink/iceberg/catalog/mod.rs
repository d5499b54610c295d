//! Catalogs: where a table's current metadata is named, and the compare-and-swap that moves
//! it. Three, chosen by `--catalog`: `sqlite:PATH` (the JDBC catalog's tables, which Java's
//! `JdbcCatalog` and pyiceberg's `SqlCatalog` read), `http(s)://…` (the Iceberg REST
//! protocol) and `glue://[CATALOG_ID]` (AWS Glue).
//!
//! SQLite and Glue store whole metadata files, which this side writes under the table's
//! location and then swaps in (`UPDATE … WHERE metadata_location = ?`; Glue's `VersionId`);
//! a REST server takes the changes with requirements and writes the file itself. Either way a
//! stale commit is a [`Outcome::Conflict`], and the caller reads the table again.

mod glue;
mod rest;
mod sql;

use pageviews_core::storage::{Storage, StoreEnv};
use pageviews_core::table::Table;
use serde_json::{Map, Value};

use super::metadata::Metadata;
use super::{random_uuid, IcebergConfig, IcebergError};

/// A table as the catalog holds it now.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    pub(crate) metadata: Metadata,
    /// The metadata file the catalog names.
    pub(crate) location: Option<String>,
    /// Glue's version of the table entry, which its update must name.
    pub(crate) version_id: Option<String>,
}

/// One commit: a snapshot on `main`, properties, and expired snapshots to remove.
pub(crate) struct Change<'a> {
    pub(crate) base: &'a Loaded,
    pub(crate) snapshot: Value,
    pub(crate) properties: Map<String, Value>,
    pub(crate) remove: Vec<i64>,
}

/// What became of a commit.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Committed; the metadata files that dropped out of the log, for a catalog whose
    /// metadata files this side writes (a REST server deletes its own).
    Committed { dropped: Vec<String> },
    /// The table moved on since it was read: read it again.
    Conflict,
}

/// A connected catalog.
pub(crate) enum Catalog {
    Sql(sql::SqlCatalog),
    Rest(rest::RestCatalog),
    Glue(glue::GlueCatalog),
}

impl Catalog {
    /// Connects to the catalog `config` names and makes sure its namespace exists.
    pub(crate) async fn connect(config: &IcebergConfig, env: &StoreEnv) -> Result<Catalog, IcebergError> {
        let uri = config.catalog.as_str();
        let catalog = if let Some(path) = uri.strip_prefix("sqlite:") {
            Catalog::Sql(sql::SqlCatalog::open(path.trim_start_matches("//"), &config.namespace)?)
        } else if uri.starts_with("http://") || uri.starts_with("https://") {
            Catalog::Rest(rest::RestCatalog::connect(config).await?)
        } else if let Some(id) = uri.strip_prefix("glue://") {
            Catalog::Glue(glue::GlueCatalog::new(id.trim_end_matches('/'), &config.namespace, env)?)
        } else {
            return Err(IcebergError::Config(format!(
                "--catalog {uri:?} is not a catalog: give sqlite:PATH, http(s)://HOST/… (Iceberg REST) or glue://[CATALOG_ID]"
            )));
        };
        catalog.ensure_namespace().await?;
        Ok(catalog)
    }

    /// How the catalog is named in messages (no secrets).
    pub(crate) fn describe(&self) -> String {
        match self {
            Catalog::Sql(c) => c.describe(),
            Catalog::Rest(c) => c.describe(),
            Catalog::Glue(c) => c.describe(),
        }
    }

    async fn ensure_namespace(&self) -> Result<(), IcebergError> {
        match self {
            Catalog::Sql(c) => c.ensure_namespace(),
            Catalog::Rest(c) => c.ensure_namespace().await,
            Catalog::Glue(c) => c.ensure_namespace().await,
        }
    }

    /// The table, or `None` when the catalog has none of that name.
    pub(crate) async fn load(&self, storage: &Storage, table: Table) -> Result<Option<Loaded>, IcebergError> {
        match self {
            Catalog::Sql(c) => match c.metadata_location(table.name())? {
                Some(at) => Ok(Some(read_file(storage, &at, None).await?)),
                None => Ok(None),
            },
            Catalog::Rest(c) => c.load(table.name()).await,
            Catalog::Glue(c) => match c.get(table.name()).await? {
                Some((at, version)) => Ok(Some(read_file(storage, &at, Some(version)).await?)),
                None => Ok(None),
            },
        }
    }

    /// Creates the table at `location` with its first metadata; `None` when another
    /// instance created it first.
    pub(crate) async fn create(
        &self,
        storage: &Storage,
        table: Table,
        location: &str,
        metadata: &Value,
    ) -> Result<(), IcebergError> {
        match self {
            Catalog::Rest(c) => c.create(table, location).await,
            Catalog::Sql(c) => {
                let at = write_file(storage, location, 0, metadata).await?;
                if !c.insert(table.name(), &at)? {
                    delete_file(storage, &at).await;
                }
                Ok(())
            }
            Catalog::Glue(c) => {
                let at = write_file(storage, location, 0, metadata).await?;
                if !c.create(table, location, &at).await? {
                    delete_file(storage, &at).await;
                }
                Ok(())
            }
        }
    }

    /// Commits `change` over its base with the catalog's compare-and-swap.
    pub(crate) async fn commit(
        &self,
        storage: &Storage,
        table: Table,
        change: &Change<'_>,
        now_ms: i64,
    ) -> Result<Outcome, IcebergError> {
        if let Catalog::Rest(c) = self {
            return c.commit(table.name(), change).await;
        }
        let base = change.base;
        let previous = base.location.as_deref();
        let (next, dropped) =
            base.metadata.next(&change.snapshot, &change.properties, &change.remove, previous, now_ms);
        let location = base.metadata.location().unwrap_or_default().to_string();
        let version = previous.map_or(0, Metadata::file_version) + 1;
        let at = write_file(storage, &location, version, &next).await?;
        let swapped = match self {
            Catalog::Sql(c) => c.swap(table.name(), previous.unwrap_or_default(), &at)?,
            Catalog::Glue(c) => c.swap(table, base, &at).await?,
            Catalog::Rest(_) => false,
        };
        if swapped {
            Ok(Outcome::Committed { dropped })
        } else {
            delete_file(storage, &at).await;
            Ok(Outcome::Conflict)
        }
    }
}

/// Reads the metadata file at `at` (a URI under the output).
async fn read_file(storage: &Storage, at: &str, version_id: Option<String>) -> Result<Loaded, IcebergError> {
    let bytes = storage.get(&super::relative(storage, at)?).await?;
    let metadata = serde_json::from_slice(&bytes)
        .map_err(|e| IcebergError::Corrupt { path: at.to_string(), reason: e.to_string() })?;
    Ok(Loaded { metadata: Metadata(metadata), location: Some(at.to_string()), version_id })
}

/// Writes `metadata` as metadata file number `version` under `location`; its URI.
async fn write_file(
    storage: &Storage,
    location: &str,
    version: u64,
    metadata: &Value,
) -> Result<String, IcebergError> {
    let at = format!("{location}/metadata/{version:05}-{}.metadata.json", random_uuid());
    let json = serde_json::to_vec(metadata)
        .map_err(|e| IcebergError::Corrupt { path: at.clone(), reason: e.to_string() })?;
    storage.put_new(&super::relative(storage, &at)?, json.into()).await?;
    Ok(at)
}

/// Deletes a file this side wrote that no commit names; one left behind is only clutter.
pub(crate) async fn delete_file(storage: &Storage, at: &str) {
    if let Ok(path) = super::relative(storage, at) {
        if let Err(e) = storage.delete(&path).await {
            tracing::debug!(file = at, error = %e, "could not delete an unused Iceberg file");
        }
    }
}
