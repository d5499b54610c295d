//! The catalog: pageviews' four tables, registered from a table root as DataFusion listing
//! tables, and the same definitions printed as SQL DDL for other engines.
//!
//! Each table is `<root>/<table>/day=YYYY-MM-DD/hour=HH/part-*.{jsonl,parquet,orc}`
//! (ARCHITECTURE.md §3), on a local disk or an object store (see [`crate::root`]). A table's
//! format is read off its files: `.jsonl` files are JSON lines, `.parquet` files Parquet,
//! `.orc` files ORC (`orc.rs`). A table with no files yet takes the format
//! of the root's other tables (one pipeline writes one format), or JSON lines when the root
//! is empty. The schemas are written down here instead of inferred, so a table reads the
//! same whether it holds one file or none, and in either format:
//!
//! - timestamps (`timestamp`, `window_start`, `window`, `watermark`, `received_at`) are
//!   `TIMESTAMP(3)` without a time zone, holding UTC. JSON lines write them as
//!   `yyyy-MM-dd HH:mm:ss.SSS` UTC, which the JSON reader parses; Parquet stores them as
//!   UTC-adjusted milliseconds and ORC as TIMESTAMP written in UTC, which are read as the
//!   same instants with the zone dropped.
//!   So `date_trunc`, range filters and printed values are the same for both formats;
//! - strings are `VARCHAR` (Parquet's dictionary-encoded columns are decoded), integers
//!   `BIGINT`;
//! - `day` and `hour` are the partition columns, both `VARCHAR` as they appear in the folder
//!   names (`day = '2020-01-01' AND hour = '00'`). A filter on them is applied to the folder
//!   names before any file is opened, so it reads only the matching partitions.
//!
//! Only files with the table's extension are read, so `_SUCCESS` markers are skipped. What a
//! table folder holds depends on the root's view ([`crate::root::View`]): by default the
//! snapshot of every committed file, open ones up to their committed length; with
//! `--visible-only`, the folder as it is, where the pipeline puts only committed files.

use std::fmt::Write as _;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::prelude::SessionContext;
use pageviews_core::table::{ColumnType, Format, Table};
use thiserror::Error;

pub use crate::root::TableRoot;

pub use pageviews_core::table::PARTITION_COLUMNS;

/// The format of a table's files (the pipeline's `--format`).
pub type TableFormat = Format;

/// How DataFusion reads a format.
fn file_format(format: Format) -> Arc<dyn FileFormat> {
    match format {
        Format::Jsonl => Arc::new(JsonFormat::default()),
        // Plain Utf8 rather than DataFusion's default string views: the declared
        // columns are Utf8, as for JSON lines, so no batch needs a cast.
        Format::Parquet => Arc::new(ParquetFormat::default().with_force_view_types(false)),
        Format::Orc => Arc::new(crate::orc::OrcTables),
    }
}

/// The format's name in `STORED AS`.
fn stored_as(format: Format) -> &'static str {
    match format {
        Format::Jsonl => "JSON",
        Format::Parquet => "PARQUET",
        Format::Orc => "ORC",
    }
}

/// The committed files' extension, with its dot.
fn dot_extension(format: Format) -> String {
    format!(".{}", format.extension())
}

fn arrow_type(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::BigInt => DataType::Int64,
        ColumnType::Varchar => DataType::Utf8,
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, None),
    }
}

fn sql_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::BigInt => "BIGINT",
        ColumnType::Varchar => "VARCHAR",
        ColumnType::Timestamp => "TIMESTAMP(3)",
    }
}

/// The Arrow schema of a table's files (without the partition columns): the columns the
/// pipeline writes, from their one definition in `pageviews_core::table`.
pub fn file_schema(table: Table) -> Schema {
    Schema::new(
        table.columns().iter().map(|c| Field::new(c.name, arrow_type(c.ty), true)).collect::<Vec<_>>(),
    )
}

/// Why the catalog could not be built.
#[derive(Debug, Error)]
pub enum CatalogError {
    /// The `--output` value cannot be used.
    #[error("cannot read tables from {url:?}: {reason}")]
    BadRoot {
        /// What the user gave.
        url: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A table's folder could not be listed.
    #[error("cannot list {location}: {source}{hint}")]
    List {
        /// The table's folder.
        location: String,
        /// What to check, or empty.
        hint: String,
        /// The store's error.
        source: object_store::Error,
    },
    /// A table holds files of more than one format, so there is no one schema to read it
    /// with.
    #[error("table {table} at {location} holds {found} files; a table root must be written in one --format")]
    MixedFormats {
        /// The table.
        table: &'static str,
        /// Its folder.
        location: String,
        /// The formats found and their files, as `both .jsonl (3) and .parquet (1)`.
        found: String,
    },
    /// The committed state of the root could not be read.
    #[error("cannot read the committed state of {root}: {source}{hint}")]
    Snapshot {
        /// The root.
        root: String,
        /// What to check, or empty.
        hint: String,
        /// What failed.
        source: Box<pageviews_core::commit::SnapshotError>,
    },
    /// DataFusion refused a table definition.
    #[error("cannot register table {table} at {location}: {source}")]
    Register {
        /// The table.
        table: &'static str,
        /// Its folder.
        location: String,
        /// DataFusion's error.
        source: datafusion::error::DataFusionError,
    },
}

/// What the catalog found for one table when it was registered.
#[derive(Debug, Clone)]
pub struct TableStatus {
    /// The table's name.
    pub name: &'static str,
    /// Its folder.
    pub location: String,
    /// The format it is read as.
    pub format: TableFormat,
    /// Committed files found in it.
    pub files: usize,
}

impl TableStatus {
    /// The message shown when a query reads this table while it holds nothing.
    pub fn empty_note(&self) -> String {
        format!("table {} has no committed files yet under {}", self.name, self.location)
    }
}

/// The registered tables.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// The root they were registered from.
    pub root: TableRoot,
    /// One entry per table, in `Table::ALL` order.
    pub tables: Vec<TableStatus>,
}

impl Catalog {
    /// The status of `name`, if it is one of the catalog's tables.
    pub fn table(&self, name: &str) -> Option<&TableStatus> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// Finds the tables under `root` and their formats, without registering them.
    pub async fn discover(root: &TableRoot) -> Result<Catalog, CatalogError> {
        let mut found = Vec::with_capacity(Table::ALL.len());
        for def in Table::ALL {
            let counts = count_committed_files(root, def.name()).await?;
            let location = root.location(def.name());
            let present: Vec<String> = Format::ALL
                .iter()
                .zip(counts)
                .filter(|(_, n)| *n > 0)
                .map(|(f, n)| format!("{} ({n})", dot_extension(*f)))
                .collect();
            if let [first @ .., last] = present.as_slice() {
                if !first.is_empty() {
                    let both = if first.len() == 1 { "both " } else { "" };
                    let found = format!("{both}{} and {last}", first.join(", "));
                    return Err(CatalogError::MixedFormats { table: def.name(), location, found });
                }
            }
            let format = Format::ALL.into_iter().zip(counts).find(|(_, n)| *n > 0);
            found.push((def.name(), location, format));
        }
        let root_format =
            found.iter().find_map(|(_, _, f)| f.map(|(format, _)| format)).unwrap_or(Format::Jsonl);
        let tables = found
            .into_iter()
            .map(|(name, location, format)| {
                let (format, files) = format.unwrap_or((root_format, 0));
                TableStatus { name, location, format, files }
            })
            .collect();
        Ok(Catalog { root: root.clone(), tables })
    }
}

/// Listing options for a table in `format`: its extension only, partitioned by day and hour.
fn listing_options(format: TableFormat) -> ListingOptions {
    ListingOptions::new(file_format(format))
        .with_file_extension(dot_extension(format))
        .with_table_partition_cols(
            PARTITION_COLUMNS.iter().map(|c| (c.to_string(), DataType::Utf8)).collect(),
        )
}

/// Registers the four tables of `root` in `ctx`, each in the format of its files. A table
/// whose folder is missing or empty is registered too (it reads as empty), and its status
/// says so.
pub async fn register(ctx: &SessionContext, root: &TableRoot) -> Result<Catalog, CatalogError> {
    root.register_store(ctx);
    root.refresh().await?;
    let catalog = Catalog::discover(root).await?;
    for (def, status) in Table::ALL.iter().zip(&catalog.tables) {
        register_table(ctx, *def, status)?;
    }
    Ok(catalog)
}

/// Finds the tables of `root` again (after [`TableRoot::refresh`]) and registers anew the
/// ones whose format changed since `before`: a shell started before the pipeline wrote its
/// first Parquet file reads that file once it is committed.
pub async fn rediscover(ctx: &SessionContext, before: &Catalog) -> Result<Catalog, CatalogError> {
    let catalog = Catalog::discover(&before.root).await?;
    for ((def, old), new) in Table::ALL.iter().zip(&before.tables).zip(&catalog.tables) {
        if old.format != new.format {
            let err =
                |source| CatalogError::Register { table: def.name(), location: new.location.clone(), source };
            ctx.deregister_table(def.name()).map_err(err)?;
            register_table(ctx, *def, new)?;
        }
    }
    Ok(catalog)
}

fn register_table(ctx: &SessionContext, def: Table, status: &TableStatus) -> Result<(), CatalogError> {
    let err =
        |source| CatalogError::Register { table: def.name(), location: status.location.clone(), source };
    let url = ListingTableUrl::parse(&status.location).map_err(err)?;
    let config = ListingTableConfig::new(url)
        .with_listing_options(listing_options(status.format))
        .with_schema(Arc::new(file_schema(def)));
    let table = ListingTable::try_new(config).map_err(err)?;
    ctx.register_table(def.name(), Arc::new(table)).map_err(err)?;
    Ok(())
}

/// Committed files of `table` under `root`, per format in `Format::ALL` order.
pub async fn count_committed_files(
    root: &TableRoot,
    table: &str,
) -> Result<[usize; Format::ALL.len()], CatalogError> {
    let mut counts = [0; Format::ALL.len()];
    for file in root.list_files(table).await? {
        for (count, format) in counts.iter_mut().zip(Format::ALL) {
            if file.ends_with(&dot_extension(format)) {
                *count += 1;
            }
        }
    }
    Ok(counts)
}

/// Quotes an identifier that is a keyword in some SQL dialect (`timestamp`, `window`,
/// `partition`, `offset`, `source`), so the DDL parses in every engine.
fn ident(name: &str) -> String {
    const KEYWORDS: [&str; 5] = ["timestamp", "window", "partition", "offset", "source"];
    if KEYWORDS.contains(&name) {
        format!("\"{name}\"")
    } else {
        name.to_string()
    }
}

/// The catalog as `CREATE EXTERNAL TABLE` statements (DataFusion's dialect, which Hive-style
/// engines read with small changes): the columns, `day` and `hour` as partition columns,
/// each table's format as `STORED AS JSON`, `STORED AS PARQUET` or `STORED AS ORC`, and the
/// table folder as LOCATION.
///
/// DataFusion gives a table created from a folder LOCATION no extension filter, so it reads
/// every file below it. That is the same set as [`register`]'s extension filter, because a
/// table folder holds only committed files of one format and `_SUCCESS` markers, which are
/// empty, and DataFusion skips empty files (a Parquet reader could not open them).
pub fn ddl(catalog: &Catalog) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "-- pageviews tables under {}", catalog.root.base());
    let _ = writeln!(
        out,
        "-- Timestamps are UTC. day = 'YYYY-MM-DD' and hour = 'HH' come from the folder names."
    );
    if catalog.root.is_bucket() {
        let _ = writeln!(
            out,
            "-- Bucket locations: the reading engine needs the same AWS_* (s3://) or AZURE_* (az://) settings."
        );
    }
    for (def, status) in Table::ALL.iter().zip(&catalog.tables) {
        let _ = writeln!(out, "\nCREATE EXTERNAL TABLE {} (", def.name());
        let mut columns: Vec<String> =
            def.columns().iter().map(|c| format!("  {} {}", ident(c.name), sql_type(c.ty))).collect();
        columns.extend(PARTITION_COLUMNS.iter().map(|c| format!("  {c} VARCHAR")));
        let _ = writeln!(out, "{}", columns.join(",\n"));
        let _ = writeln!(out, ")");
        let _ = writeln!(out, "STORED AS {}", stored_as(status.format));
        let _ = writeln!(out, "PARTITIONED BY ({})", PARTITION_COLUMNS.join(", "));
        let _ = writeln!(out, "LOCATION '{}';", status.location.replace('\'', "''"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(format: TableFormat) -> Catalog {
        let root = TableRoot::parse("/tmp/tables").unwrap();
        let tables = Table::ALL
            .iter()
            .map(|def| TableStatus {
                name: def.name(),
                location: root.location(def.name()),
                format,
                files: 0,
            })
            .collect();
        Catalog { root, tables }
    }

    #[test]
    fn ddl_names_every_table_with_its_partitions_format_and_folder() {
        for (format, stored) in [
            (TableFormat::Jsonl, "STORED AS JSON"),
            (TableFormat::Parquet, "STORED AS PARQUET"),
            (TableFormat::Orc, "STORED AS ORC"),
        ] {
            let ddl = ddl(&catalog(format));
            for def in Table::ALL {
                assert!(ddl.contains(&format!("CREATE EXTERNAL TABLE {} (", def.name())), "{ddl}");
                assert!(ddl.contains(&format!("LOCATION '/tmp/tables/{}/';", def.name())), "{ddl}");
            }
            assert_eq!(ddl.matches("PARTITIONED BY (day, hour)").count(), 4);
            assert_eq!(ddl.matches(stored).count(), 4, "{ddl}");
            assert!(ddl.contains("\"timestamp\" TIMESTAMP(3)"), "{ddl}");
        }
    }

    #[test]
    fn local_file_and_s3_roots_are_accepted() {
        assert!(TableRoot::parse("file:///tmp/x").is_ok());
        assert!(TableRoot::parse("/tmp/x").is_ok());
        let err = TableRoot::parse("hdfs://namenode/x").unwrap_err().to_string();
        assert!(err.contains("hdfs:// scheme is not supported"), "{err}");
    }
}
