//! The four tables: their names, columns, file formats and Hive partitions.
//!
//! One definition serves every party: the pipeline's encoders write these columns, the SQL
//! client declares them to DataFusion, and the Parquet schema is derived from them. A column
//! added here appears everywhere at once, so writer and reader cannot drift.

use object_store::path::Path;
use serde::{Deserialize, Serialize};

use crate::time::partition_dir;

/// The four output tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Every valid event.
    PageViews,
    /// Views per postcode per window.
    PageViewAggregates,
    /// Events that arrived after their window was emitted.
    LatePageViews,
    /// Records that could not be decoded.
    DeadLetters,
}

impl Table {
    /// All tables, in the order metrics, summaries and the catalog list them.
    pub const ALL: [Table; 4] =
        [Table::PageViews, Table::PageViewAggregates, Table::LatePageViews, Table::DeadLetters];

    /// The table's name, which is also its folder under the root.
    pub fn name(self) -> &'static str {
        match self {
            Table::PageViews => "page_views",
            Table::PageViewAggregates => "page_view_aggregates",
            Table::LatePageViews => "late_page_views",
            Table::DeadLetters => "dead_letters",
        }
    }

    /// The table called `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The table's columns in file order (the partition columns `day` and `hour` come from
    /// the folders, not the files).
    pub fn columns(self) -> &'static [Column] {
        match self {
            Table::PageViews => PAGE_VIEWS,
            Table::LatePageViews => LATE_PAGE_VIEWS,
            Table::PageViewAggregates => PAGE_VIEW_AGGREGATES,
            Table::DeadLetters => DEAD_LETTERS,
        }
    }
}

/// The partition columns, outermost first, as they appear in the folder names
/// (`day=2020-01-01/hour=00`); both are text.
pub const PARTITION_COLUMNS: [&str; 2] = ["day", "hour"];

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// A 64-bit integer.
    BigInt,
    /// Text.
    Varchar,
    /// Milliseconds since the epoch, UTC: `yyyy-MM-dd HH:mm:ss.SSS` in JSON lines,
    /// `timestamp(ms, UTC)` in Parquet, TIMESTAMP written in UTC in ORC.
    Timestamp,
}

/// One column of a table, named exactly as the JSON-lines field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// The name.
    pub name: &'static str,
    /// The type.
    pub ty: ColumnType,
    /// Text from a small set (postcode, webpage, reason…), which Parquet dictionary-encodes;
    /// false for free-form text (payload, error) and for numbers.
    pub low_cardinality: bool,
}

const fn int(name: &'static str) -> Column {
    Column { name, ty: ColumnType::BigInt, low_cardinality: false }
}
const fn ts(name: &'static str) -> Column {
    Column { name, ty: ColumnType::Timestamp, low_cardinality: false }
}
const fn label(name: &'static str) -> Column {
    Column { name, ty: ColumnType::Varchar, low_cardinality: true }
}
const fn text(name: &'static str) -> Column {
    Column { name, ty: ColumnType::Varchar, low_cardinality: false }
}

const PAGE_VIEWS: &[Column] = &[int("user_id"), label("postcode"), ts("timestamp"), label("webpage")];
const LATE_PAGE_VIEWS: &[Column] =
    &[int("user_id"), label("postcode"), ts("timestamp"), label("webpage"), ts("watermark")];
const PAGE_VIEW_AGGREGATES: &[Column] = &[label("postcode"), ts("window_start"), ts("window"), int("views")];
const DEAD_LETTERS: &[Column] = &[
    text("payload"),
    label("payload_encoding"),
    label("reason"),
    text("error"),
    label("source"),
    int("partition"),
    int("offset"),
    ts("received_at"),
];

/// How table files are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// JSON lines: readable, Flink's JSON format.
    #[default]
    Jsonl,
    /// Parquet: typed columns, dictionary-encoded strings, snappy.
    Parquet,
    /// ORC: typed columns, dictionary-encoded strings, snappy; what Hive-lineage engines
    /// (Hive, Spark, Trino) read natively.
    Orc,
}

impl Format {
    /// Every format, in the order a file's name is tested against them.
    pub const ALL: [Format; 3] = [Format::Jsonl, Format::Parquet, Format::Orc];

    /// The file extension, without its dot.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Parquet => "parquet",
            Format::Orc => "orc",
        }
    }

    /// The format of a file, from its name.
    pub fn of_file(name: &str) -> Option<Format> {
        let ext = name.rsplit_once('.')?.1;
        Format::ALL.into_iter().find(|f| f.extension() == ext)
    }
}

/// A table partition: a table and an hour since the epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Partition {
    /// The table.
    pub table: Table,
    /// Hours since the epoch; [`partition_dir`] names its folder.
    pub hour: i64,
}

impl Partition {
    /// The partition's folder, relative to the table root.
    pub fn dir(self) -> String {
        format!("{}/{}", self.table.name(), partition_dir(self.hour))
    }

    /// The `_SUCCESS` marker of this partition, relative to the table root.
    pub fn marker(self) -> Path {
        Path::from(format!("{}/_SUCCESS", self.dir()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_formats_come_from_extensions() {
        for t in Table::ALL {
            assert_eq!(Table::from_name(t.name()), Some(t));
        }
        assert_eq!(Format::of_file("a/part-x-1-2.parquet"), Some(Format::Parquet));
        assert_eq!(Format::of_file("a/part-x-1-2.jsonl"), Some(Format::Jsonl));
        assert_eq!(Format::of_file("a/part-x-1-2.orc"), Some(Format::Orc));
        assert_eq!(Format::of_file("a/_SUCCESS"), None);
    }

    #[test]
    fn a_marker_sits_in_its_partition_folder() {
        let p = Partition { table: Table::DeadLetters, hour: 438_288 };
        assert_eq!(p.marker().as_ref(), "dead_letters/day=2020-01-01/hour=00/_SUCCESS");
    }
}
