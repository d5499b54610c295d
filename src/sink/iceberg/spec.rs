//! The four tables as Iceberg declares them: schema with field ids, the hidden `hour`
//! partition on each table's time column, and the first metadata of a new table.
//!
//! Field ids are the columns' positions from 1, the ids the Parquet writer puts in every
//! data file's schema (`sink::parquet::schema`), so readers match columns by id. The
//! partition value of a file is its Hive partition hour (hours since the epoch), which is
//! exactly Iceberg's `hour` transform of the time column: every row of a file lies in it.

use pageviews_core::table::{ColumnType, Table};
use serde_json::{json, Value};

/// The id of the one partition field.
pub(crate) const PARTITION_FIELD_ID: i64 = 1000;

/// The column a table is partitioned by the hour of.
pub(crate) fn time_column(table: Table) -> &'static str {
    match table {
        Table::PageViews | Table::LatePageViews => "timestamp",
        Table::PageViewAggregates => "window",
        Table::DeadLetters => "received_at",
    }
}

/// The partition field's name: `<column>_hour`, as Spark names an `hours()` field.
pub(crate) fn partition_name(table: Table) -> String {
    format!("{}_hour", time_column(table))
}

/// The table's schema (id 0). Timestamps are `timestamptz`: UTC instants, stored in
/// microseconds.
pub(crate) fn schema(table: Table) -> Value {
    let fields: Vec<Value> = table
        .columns()
        .iter()
        .zip(1..)
        .map(|(c, id): (_, i64)| {
            let ty = match c.ty {
                ColumnType::BigInt => "long",
                ColumnType::Varchar => "string",
                ColumnType::Timestamp => "timestamptz",
            };
            json!({"id": id, "name": c.name, "required": true, "type": ty})
        })
        .collect();
    json!({"type": "struct", "schema-id": 0, "fields": fields})
}

/// The table's partition spec (id 0): `hour(<time column>)`.
pub(crate) fn partition_spec(table: Table) -> Value {
    let source = table.columns().iter().position(|c| c.name == time_column(table)).map_or(0, |i| i + 1);
    json!({
        "spec-id": 0,
        "fields": [{
            "name": partition_name(table),
            "transform": "hour",
            "source-id": source,
            "field-id": PARTITION_FIELD_ID,
        }],
    })
}

/// Properties every table is created with: old metadata files are deleted as they drop
/// out of the log of the newest few (`commit` keeps the rest bounded).
pub(crate) fn properties() -> Value {
    json!({
        "write.format.default": "parquet",
        "write.metadata.delete-after-commit.enabled": "true",
        "write.metadata.previous-versions-max": PREVIOUS_VERSIONS_MAX.to_string(),
        "commit.manifest.min-count-to-merge": MERGE_AT.to_string(),
    })
}

/// Metadata files kept besides the current one.
pub(crate) const PREVIOUS_VERSIONS_MAX: usize = 20;

/// Manifests in a snapshot past which the small ones are merged into one (Iceberg's
/// `commit.manifest.min-count-to-merge` default).
pub(crate) const MERGE_AT: usize = 100;

/// The first metadata of a new table at `location`, with no snapshot.
pub(crate) fn new_metadata(table: Table, location: &str, uuid: &str, now_ms: i64) -> Value {
    json!({
        "format-version": 2,
        "table-uuid": uuid,
        "location": location,
        "last-sequence-number": 0,
        "last-updated-ms": now_ms,
        "last-column-id": table.columns().len(),
        "current-schema-id": 0,
        "schemas": [schema(table)],
        "default-spec-id": 0,
        "partition-specs": [partition_spec(table)],
        "last-partition-id": PARTITION_FIELD_ID,
        "default-sort-order-id": 0,
        "sort-orders": [{"order-id": 0, "fields": []}],
        "properties": properties(),
        "current-snapshot-id": -1,
        "refs": {},
        "snapshots": [],
        "snapshot-log": [],
        "metadata-log": [],
    })
}

/// The table's columns as Glue's `StorageDescriptor` lists them (Hive type names), for
/// engines that read Glue's own schema rather than Iceberg's.
pub(crate) fn glue_columns(table: Table) -> Value {
    let columns: Vec<Value> = table
        .columns()
        .iter()
        .map(|c| {
            let ty = match c.ty {
                ColumnType::BigInt => "bigint",
                ColumnType::Varchar => "string",
                ColumnType::Timestamp => "timestamp",
            };
            json!({"Name": c.name, "Type": ty})
        })
        .collect();
    Value::Array(columns)
}

/// Whether a table's schema and spec, as a catalog holds them, are the ones this build writes.
pub(crate) fn matches(table: Table, metadata: &Value) -> bool {
    let fields = |v: &Value| v.get("fields").cloned().unwrap_or(Value::Null);
    let current = metadata.get("current-schema-id").and_then(Value::as_i64).unwrap_or(0);
    let schema = metadata
        .get("schemas")
        .and_then(Value::as_array)
        .and_then(|s| s.iter().find(|s| s.get("schema-id").and_then(Value::as_i64) == Some(current)));
    let ids = |v: &Value| -> Vec<(i64, String)> {
        fields(v)
            .as_array()
            .map(|f| {
                f.iter()
                    .map(|f| {
                        let id = f.get("id").and_then(Value::as_i64).unwrap_or(-1);
                        (id, f.get("name").and_then(Value::as_str).unwrap_or("").to_string())
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    schema.is_some_and(|s| ids(s) == ids(&self::schema(table)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_table_is_partitioned_by_the_hour_of_its_time_column() {
        for table in Table::ALL {
            let spec = partition_spec(table);
            let source = spec["fields"][0]["source-id"].as_i64().unwrap();
            let column = &schema(table)["fields"][(source - 1) as usize];
            assert_eq!(column["name"], time_column(table));
            assert_eq!(column["type"], "timestamptz");
            assert!(matches(table, &new_metadata(table, "file:///x", "u", 0)));
        }
        assert_eq!(partition_name(Table::PageViewAggregates), "window_hour");
    }
}
