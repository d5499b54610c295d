//! The catalog: pageviews' four tables, registered from a table root as DataFusion listing
//! tables, and the same definitions printed as SQL DDL for other engines.
//!
//! Each table is `<root>/<table>/day=YYYY-MM-DD/hour=HH/part-*.jsonl` (DESIGN §3). The
//! schemas are written down here instead of inferred, so a table reads the same whether it
//! holds one file or none, and columns have their real types:
//!
//! - timestamps (`timestamp`, `window_start`, `window`, `watermark`, `received_at`) are
//!   `TIMESTAMP(3)` without a time zone, holding UTC: the JSON-lines files write them as
//!   `yyyy-MM-dd HH:mm:ss.SSS` UTC, which the JSON reader parses, and a real timestamp lets
//!   `date_trunc` and range filters work without string tricks;
//! - `day` and `hour` are the partition columns, both `VARCHAR` as they appear in the folder
//!   names (`day = '2020-01-01' AND hour = '00'`). A filter on them is applied to the folder
//!   names before any file is opened, so it reads only the matching partitions.
//!
//! Only files ending in `.jsonl` are read: the pipeline keeps work in progress outside the
//! table folders, so every such file is committed.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::prelude::SessionContext;
use thiserror::Error;

/// File extension of the committed JSON-lines files the pipeline writes.
pub const JSONL_EXTENSION: &str = ".jsonl";

/// The partition columns, outermost first, as they appear in the folder names.
pub const PARTITION_COLUMNS: [&str; 2] = ["day", "hour"];

/// A column's type, in the few kinds the tables use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// A 64-bit integer.
    BigInt,
    /// Text.
    Varchar,
    /// Milliseconds since the epoch, UTC, without a time zone attached.
    Timestamp,
}

impl ColumnType {
    fn arrow(self) -> DataType {
        match self {
            ColumnType::BigInt => DataType::Int64,
            ColumnType::Varchar => DataType::Utf8,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, None),
        }
    }

    fn sql(self) -> &'static str {
        match self {
            ColumnType::BigInt => "BIGINT",
            ColumnType::Varchar => "VARCHAR",
            ColumnType::Timestamp => "TIMESTAMP(3)",
        }
    }
}

/// One table of the catalog.
#[derive(Debug, Clone, Copy)]
pub struct TableDef {
    /// The table's name, which is also its folder under the root.
    pub name: &'static str,
    /// Its data columns (the partition columns come after them), as written by the pipeline.
    pub columns: &'static [(&'static str, ColumnType)],
}

use ColumnType::{BigInt, Timestamp, Varchar};

/// page_views, page_view_aggregates, late_page_views and dead_letters, with the columns
/// `src/sink/jsonl.rs` in the pipeline writes.
pub const TABLES: [TableDef; 4] = [
    TableDef {
        name: "page_views",
        columns: &[
            ("user_id", BigInt),
            ("postcode", Varchar),
            ("timestamp", Timestamp),
            ("webpage", Varchar),
        ],
    },
    TableDef {
        name: "page_view_aggregates",
        columns: &[
            ("postcode", Varchar),
            ("window_start", Timestamp),
            ("window", Timestamp),
            ("views", BigInt),
        ],
    },
    TableDef {
        name: "late_page_views",
        columns: &[
            ("user_id", BigInt),
            ("postcode", Varchar),
            ("timestamp", Timestamp),
            ("webpage", Varchar),
            ("watermark", Timestamp),
        ],
    },
    TableDef {
        name: "dead_letters",
        columns: &[
            ("payload", Varchar),
            ("payload_encoding", Varchar),
            ("reason", Varchar),
            ("error", Varchar),
            ("source", Varchar),
            ("partition", BigInt),
            ("offset", BigInt),
            ("received_at", Timestamp),
        ],
    },
];

impl TableDef {
    /// The Arrow schema of the files' columns (without the partition columns).
    pub fn file_schema(&self) -> Schema {
        Schema::new(
            self.columns.iter().map(|(name, ty)| Field::new(*name, ty.arrow(), true)).collect::<Vec<_>>(),
        )
    }
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

/// The table root as a local directory.
#[derive(Debug, Clone)]
pub struct TableRoot {
    dir: PathBuf,
}

impl TableRoot {
    /// Parses `--output` the way `pageviews run` does: a plain path or a `file://` URL.
    /// The directory does not have to exist: its tables then read as empty.
    pub fn parse(url: &str) -> Result<Self, CatalogError> {
        let bad = |reason: String| CatalogError::BadRoot { url: url.to_string(), reason };
        let path = if let Some(rest) = url.strip_prefix("file://") {
            PathBuf::from(rest)
        } else if let Some((scheme, _)) = url.split_once("://") {
            return Err(bad(format!("the {scheme}:// scheme is not supported yet; use a local path")));
        } else {
            PathBuf::from(url)
        };
        // Absolute, so the DDL's LOCATION works from any directory; not canonicalized,
        // since the root may not exist yet.
        let dir = std::path::absolute(&path).map_err(|e| bad(e.to_string()))?;
        Ok(TableRoot { dir })
    }

    /// The root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A table's folder, with the trailing `/` that tells DataFusion it is a directory.
    pub fn location(&self, table: &str) -> String {
        format!("{}/", self.dir.join(table).display())
    }
}

/// What the catalog found for one table when it was registered.
#[derive(Debug, Clone)]
pub struct TableStatus {
    /// The table's name.
    pub name: &'static str,
    /// Its folder.
    pub location: String,
    /// Committed `.jsonl` files found in it.
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
    /// One entry per table, in [`TABLES`] order.
    pub tables: Vec<TableStatus>,
}

impl Catalog {
    /// The status of `name`, if it is one of the catalog's tables.
    pub fn table(&self, name: &str) -> Option<&TableStatus> {
        self.tables.iter().find(|t| t.name == name)
    }
}

/// Listing options shared by every table: JSON lines, `.jsonl` only, partitioned by day and
/// hour.
fn listing_options() -> ListingOptions {
    ListingOptions::new(Arc::new(JsonFormat::default()))
        .with_file_extension(JSONL_EXTENSION)
        .with_table_partition_cols(
            PARTITION_COLUMNS.iter().map(|c| (c.to_string(), DataType::Utf8)).collect(),
        )
}

/// Registers the four tables of `root` in `ctx`. A table whose folder is missing or empty is
/// registered too (it reads as empty), and its status says so.
pub fn register(ctx: &SessionContext, root: &TableRoot) -> Result<Catalog, CatalogError> {
    let mut tables = Vec::with_capacity(TABLES.len());
    for def in TABLES {
        let location = root.location(def.name);
        let err = |source| CatalogError::Register { table: def.name, location: location.clone(), source };
        let url = ListingTableUrl::parse(&location).map_err(err)?;
        let config = ListingTableConfig::new(url)
            .with_listing_options(listing_options())
            .with_schema(Arc::new(def.file_schema()));
        let table = ListingTable::try_new(config).map_err(err)?;
        ctx.register_table(def.name, Arc::new(table)).map_err(err)?;
        let files = count_committed_files(root, def.name);
        tables.push(TableStatus { name: def.name, location, files });
    }
    Ok(Catalog { root: root.clone(), tables })
}

/// Committed files of `table` under `root`; a folder that cannot be read counts as empty
/// (a query then reports what is wrong with it).
pub fn count_committed_files(root: &TableRoot, table: &str) -> usize {
    let mut count = 0;
    let mut stack = vec![root.dir.join(table)];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(JSONL_EXTENSION) {
                count += 1;
            }
        }
    }
    count
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
/// engines read with small changes): the columns, `day` and `hour` as partition columns, and
/// the table folder as LOCATION.
///
/// DataFusion gives a table created from a folder LOCATION no extension filter, so it reads
/// every file below it. That is the same set as [`register`]'s `.jsonl` filter, because a
/// table folder holds only committed files (and, once the pipeline writes them, empty
/// `_SUCCESS` markers, which read as no rows).
pub fn ddl(root: &TableRoot) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "-- pageviews tables under {}", root.dir.display());
    let _ = writeln!(
        out,
        "-- Timestamps are UTC. day = 'YYYY-MM-DD' and hour = 'HH' come from the folder names."
    );
    for def in TABLES {
        let _ = writeln!(out, "\nCREATE EXTERNAL TABLE {} (", def.name);
        let mut columns: Vec<String> =
            def.columns.iter().map(|(name, ty)| format!("  {} {}", ident(name), ty.sql())).collect();
        columns.extend(PARTITION_COLUMNS.iter().map(|c| format!("  {c} VARCHAR")));
        let _ = writeln!(out, "{}", columns.join(",\n"));
        let _ = writeln!(out, ")");
        let _ = writeln!(out, "STORED AS JSON");
        let _ = writeln!(out, "PARTITIONED BY ({})", PARTITION_COLUMNS.join(", "));
        let _ = writeln!(out, "LOCATION '{}';", root.location(def.name).replace('\'', "''"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_names_every_table_with_its_partitions_and_folder() {
        let root = TableRoot::parse("/tmp/tables").unwrap();
        let ddl = ddl(&root);
        for def in TABLES {
            assert!(ddl.contains(&format!("CREATE EXTERNAL TABLE {} (", def.name)), "{ddl}");
            assert!(ddl.contains(&format!("LOCATION '/tmp/tables/{}/';", def.name)), "{ddl}");
        }
        assert_eq!(ddl.matches("PARTITIONED BY (day, hour)").count(), 4);
        assert!(ddl.contains("\"timestamp\" TIMESTAMP(3)"), "{ddl}");
    }

    #[test]
    fn only_local_roots_are_accepted_for_now() {
        assert!(TableRoot::parse("file:///tmp/x").is_ok());
        let err = TableRoot::parse("s3://bucket/prefix").unwrap_err().to_string();
        assert!(err.contains("s3:// scheme is not supported"), "{err}");
    }
}
