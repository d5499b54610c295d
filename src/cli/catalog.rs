//! The Iceberg catalog flags: which catalog `run` commits the tables to and `verify` audits.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use super::parse_duration;

/// How the tables are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TableFormat {
    /// Hive-partitioned folders with `_SUCCESS` markers; readers take committed files from
    /// the folders (or `pageviews sql` from the commit log).
    Hive,
    /// The same Parquet files, also committed as Iceberg tables (format version 2) in a
    /// catalog (--catalog), one snapshot per checkpoint that completes files.
    Iceberg,
}

/// The Iceberg catalog and how to reach it: the tables `run` commits to and `verify` audits.
#[derive(Debug, Args)]
pub(crate) struct CatalogArgs {
    /// The Iceberg catalog: `sqlite:PATH` (the JDBC catalog's tables in a SQLite file, which
    /// Spark's JdbcCatalog and pyiceberg's SqlCatalog read under the catalog name
    /// `pageviews`), `http(s)://HOST[:PORT][/PATH]` (an Iceberg REST catalog) or
    /// `glue://[CATALOG_ID]` (AWS Glue, with the AWS_* settings S3 uses). A local
    /// --output defaults to `sqlite:<output>/catalog.db`.
    #[arg(long, env = "PAGEVIEWS_CATALOG", value_name = "URI")]
    pub(super) catalog: Option<String>,

    /// The Iceberg namespace (Glue: database) of the four tables.
    #[arg(long, env = "PAGEVIEWS_NAMESPACE", default_value = "pageviews", value_name = "NAME")]
    namespace: String,

    /// REST catalog: the warehouse to ask the server for.
    #[arg(long, env = "PAGEVIEWS_CATALOG_WAREHOUSE", value_name = "NAME")]
    catalog_warehouse: Option<String>,

    /// REST catalog: a bearer token.
    #[arg(long, env = "PAGEVIEWS_CATALOG_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    catalog_token: Option<String>,

    /// REST catalog: OAuth2 client credentials `ID:SECRET`, exchanged for a token at the
    /// server's `/v1/oauth/tokens`.
    #[arg(long, env = "PAGEVIEWS_CATALOG_CREDENTIAL", hide_env_values = true, value_name = "ID:SECRET")]
    catalog_credential: Option<String>,
}

impl CatalogArgs {
    /// The configuration of `catalog` (this or a default) with the rest of these flags.
    pub(super) fn config(&self, catalog: String) -> crate::sink::iceberg::IcebergConfig {
        let mut config = crate::sink::iceberg::IcebergConfig::new(catalog);
        config.namespace = self.namespace.clone();
        config.warehouse = self.catalog_warehouse.clone();
        config.token = self.catalog_token.clone();
        config.credential = self.catalog_credential.clone();
        config
    }
}

/// Where and how the Iceberg tables are kept (`--table-format iceberg`).
#[derive(Debug, Args)]
pub(crate) struct IcebergArgs {
    /// How the tables are kept: `hive` (folders only) or `iceberg` (also Iceberg tables in
    /// --catalog; needs --format parquet).
    #[arg(long, value_enum, default_value_t = TableFormat::Hive)]
    pub(crate) table_format: TableFormat,

    #[command(flatten)]
    catalog: CatalogArgs,

    /// Iceberg snapshots older than this are expired (the current one never), with the
    /// manifests only they named; data files are never deleted.
    #[arg(long, default_value = "1d", value_parser = parse_duration, value_name = "DURATION")]
    pub(crate) snapshot_retention: Duration,
}

impl IcebergArgs {
    /// The Iceberg configuration, `None` for `--table-format hive`.
    pub(crate) fn config(&self, output: &str) -> anyhow::Result<Option<crate::sink::iceberg::IcebergConfig>> {
        if self.table_format == TableFormat::Hive {
            return Ok(None);
        }
        let catalog = match &self.catalog.catalog {
            Some(c) => c.clone(),
            None => crate::sink::iceberg::IcebergConfig::default_catalog(output).with_context(|| {
                format!("--output {output} is not a local folder, so there is no default catalog: give --catalog (http(s):// for a REST catalog, glue:// for AWS Glue)")
            })?,
        };
        let namespace = &self.catalog.namespace;
        if namespace.is_empty() || namespace.contains(['/', '\\']) {
            bail!("--namespace {namespace:?} must be a name, like pageviews");
        }
        let mut config = self.catalog.config(catalog);
        config.snapshot_retention = self.snapshot_retention;
        Ok(Some(config))
    }
}
