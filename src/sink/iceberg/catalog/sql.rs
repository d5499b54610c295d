//! The JDBC catalog's tables in a SQLite file: `iceberg_tables` (one row per table, naming
//! its current metadata file) and `iceberg_namespace_properties`, laid out as Java's
//! `JdbcCatalog` and pyiceberg's `SqlCatalog` create and read them. A commit is
//! `UPDATE … WHERE metadata_location = ?`: of two writers with the same base, one changes a
//! row and the other none.

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::super::IcebergError;

/// The catalog name rows carry: readers configure their catalog under this name.
pub(crate) const CATALOG_NAME: &str = "pageviews";

pub(crate) struct SqlCatalog {
    db: Connection,
    path: String,
    namespace: String,
    /// The table was created by Java's catalog with the V1 schema (`iceberg_type`).
    typed: bool,
}

fn sql(path: &str) -> impl Fn(rusqlite::Error) -> IcebergError + '_ {
    move |e| IcebergError::Catalog {
        catalog: format!("sqlite:{path}"),
        reason: e.to_string(),
        transient: matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        ),
    }
}

impl SqlCatalog {
    pub(crate) fn open(path: &str, namespace: &str) -> Result<SqlCatalog, IcebergError> {
        let db = Connection::open(path).map_err(sql(path))?;
        // Instances sharing the file wait for each other's short transactions.
        db.busy_timeout(Duration::from_secs(30)).map_err(sql(path))?;
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS iceberg_tables (
                catalog_name VARCHAR(255) NOT NULL,
                table_namespace VARCHAR(255) NOT NULL,
                table_name VARCHAR(255) NOT NULL,
                metadata_location VARCHAR(1000),
                previous_metadata_location VARCHAR(1000),
                PRIMARY KEY (catalog_name, table_namespace, table_name));
             CREATE TABLE IF NOT EXISTS iceberg_namespace_properties (
                catalog_name VARCHAR(255) NOT NULL,
                namespace VARCHAR(255) NOT NULL,
                property_key VARCHAR(255),
                property_value VARCHAR(1000),
                PRIMARY KEY (catalog_name, namespace, property_key));",
        )
        .map_err(sql(path))?;
        let typed = db
            .prepare("SELECT name FROM pragma_table_info('iceberg_tables') WHERE name = 'iceberg_type'")
            .and_then(|mut s| s.exists([]))
            .map_err(sql(path))?;
        Ok(SqlCatalog { db, path: path.to_string(), namespace: namespace.to_string(), typed })
    }

    pub(crate) fn describe(&self) -> String {
        format!("sqlite:{}", self.path)
    }

    pub(crate) fn ensure_namespace(&self) -> Result<(), IcebergError> {
        self.db
            .execute(
                "INSERT OR IGNORE INTO iceberg_namespace_properties VALUES (?1, ?2, 'exists', 'true')",
                params![CATALOG_NAME, self.namespace],
            )
            .map_err(sql(&self.path))?;
        Ok(())
    }

    pub(crate) fn metadata_location(&self, table: &str) -> Result<Option<String>, IcebergError> {
        let row = self
            .db
            .query_row(
                "SELECT metadata_location FROM iceberg_tables
                 WHERE catalog_name = ?1 AND table_namespace = ?2 AND table_name = ?3",
                params![CATALOG_NAME, self.namespace, table],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
            .map_err(sql(&self.path))?;
        Ok(row.flatten())
    }

    /// Adds the table's row; false when it exists already.
    pub(crate) fn insert(&self, table: &str, at: &str) -> Result<bool, IcebergError> {
        let statement = if self.typed {
            "INSERT OR IGNORE INTO iceberg_tables (catalog_name, table_namespace, table_name, metadata_location, previous_metadata_location, iceberg_type)
             VALUES (?1, ?2, ?3, ?4, NULL, 'TABLE')"
        } else {
            "INSERT OR IGNORE INTO iceberg_tables (catalog_name, table_namespace, table_name, metadata_location, previous_metadata_location)
             VALUES (?1, ?2, ?3, ?4, NULL)"
        };
        let n = self
            .db
            .execute(statement, params![CATALOG_NAME, self.namespace, table, at])
            .map_err(sql(&self.path))?;
        Ok(n == 1)
    }

    /// Moves the table from `base` to `at`; false when it is no longer at `base`.
    pub(crate) fn swap(&self, table: &str, base: &str, at: &str) -> Result<bool, IcebergError> {
        let n = self
            .db
            .execute(
                "UPDATE iceberg_tables SET metadata_location = ?1, previous_metadata_location = ?2
                 WHERE catalog_name = ?3 AND table_namespace = ?4 AND table_name = ?5 AND metadata_location = ?2",
                params![at, base, CATALOG_NAME, self.namespace, table],
            )
            .map_err(sql(&self.path))?;
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two writers on one file, as two pipelines sharing a catalog are: of two swaps from the
    /// same base one moves the table and the other is told it moved on; the loser's next swap,
    /// from what it reads again, goes through.
    #[test]
    fn of_two_swaps_from_one_base_one_wins_and_the_other_commits_after_reading_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db").display().to_string();
        let (a, b) =
            (SqlCatalog::open(&path, "pageviews").unwrap(), SqlCatalog::open(&path, "pageviews").unwrap());
        assert!(a.insert("page_views", "m0.json").unwrap());
        assert!(!b.insert("page_views", "other.json").unwrap(), "the table exists: the row stays");
        assert!(a.swap("page_views", "m0.json", "m1-a.json").unwrap());
        assert!(!b.swap("page_views", "m0.json", "m1-b.json").unwrap(), "b's base is stale");
        assert_eq!(b.metadata_location("page_views").unwrap().as_deref(), Some("m1-a.json"));
        assert!(b.swap("page_views", "m1-a.json", "m2-b.json").unwrap());
        assert_eq!(a.metadata_location("page_views").unwrap().as_deref(), Some("m2-b.json"));
        let previous: String =
            a.db.query_row("SELECT previous_metadata_location FROM iceberg_tables", [], |r| r.get(0))
                .unwrap();
        assert_eq!(previous, "m1-a.json", "readers follow the chain of metadata files");
    }
}
