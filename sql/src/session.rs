//! A SQL session over the catalog: runs one statement, prints its result, its row count
//! and the time it took, and says when a table it read has no committed files yet.

use std::io::Write;
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use thiserror::Error;

use crate::catalog::{self, Catalog, CatalogError, TableRoot};
use crate::output::{self, Format};

/// A statement that could not be run, or whose result could not be printed.
#[derive(Debug, Error)]
pub enum SqlError {
    /// DataFusion rejected or failed the statement (syntax, unknown table or column, a file
    /// it could not read).
    #[error("{0}")]
    Query(#[from] DataFusionError),
    /// The result could not be written out.
    #[error("cannot print the result: {0}")]
    Output(#[from] datafusion::arrow::error::ArrowError),
    /// Writing to the terminal or a pipe failed.
    #[error("cannot print the result: {0}")]
    Io(#[from] std::io::Error),
}

/// The result of one statement.
#[derive(Debug)]
pub struct QueryResult {
    /// The result's columns.
    pub schema: SchemaRef,
    /// The rows.
    pub batches: Vec<RecordBatch>,
    /// Planning and execution time.
    pub elapsed: Duration,
    /// Tables the statement read that have no committed files yet, as messages.
    pub notes: Vec<String>,
}

impl QueryResult {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// A DataFusion context with pageviews' tables registered.
pub struct Session {
    ctx: SessionContext,
    catalog: Catalog,
}

impl Session {
    /// Registers the tables under `root`, each in the format its files are in; an S3 root's
    /// folders are listed here. `information_schema` is on, so `SHOW TABLES`, `SHOW COLUMNS`
    /// and `information_schema.*` work.
    pub async fn open(root: &TableRoot) -> Result<Self, CatalogError> {
        let config = SessionConfig::new().with_information_schema(true);
        let ctx = SessionContext::new_with_config(config);
        let catalog = catalog::register(&ctx, root).await?;
        Ok(Session { ctx, catalog })
    }

    /// The DataFusion context, for callers that want plans or their own registrations.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// What was registered, and from where.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Plans and runs one statement.
    pub async fn query(&self, sql: &str) -> Result<QueryResult, SqlError> {
        let started = Instant::now();
        let sql = rewrite_shortcuts(sql);
        let df = self.ctx.sql(&sql).await.map_err(|e| SqlError::Query(self.explain_error(e)))?;
        let notes = self.empty_table_notes(df.logical_plan()).await;
        let schema = SchemaRef::from(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        Ok(QueryResult { schema, batches, elapsed: started.elapsed(), notes })
    }

    /// Runs one statement and prints its rows to `out` in `format`; the row count, the time
    /// taken and any empty-table notes go to `info`.
    pub async fn run(
        &self,
        sql: &str,
        format: Format,
        out: &mut dyn Write,
        info: &mut dyn Write,
    ) -> Result<(), SqlError> {
        let result = self.query(sql).await?;
        for note in &result.notes {
            writeln!(info, "note: {note}")?;
        }
        let rows = result.rows();
        let batches = if result.batches.is_empty() {
            // An empty result still prints its header.
            vec![RecordBatch::new_empty(result.schema)]
        } else {
            result.batches
        };
        output::write_batches(out, format, &batches)?;
        let plural = if rows == 1 { "" } else { "s" };
        writeln!(info, "{rows} row{plural} in set ({:.3} s)", result.elapsed.as_secs_f64())?;
        Ok(())
    }

    /// Notes for the catalog tables that `plan` reads and that hold no committed file now.
    async fn empty_table_notes(&self, plan: &LogicalPlan) -> Vec<String> {
        let mut scanned: Vec<String> = Vec::new();
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                scanned.push(scan.table_name.table().to_string());
            }
            Ok(TreeNodeRecursion::Continue)
        });
        scanned.sort();
        scanned.dedup();
        let mut notes = Vec::new();
        // Only tables that were empty at the start: the pipeline adds files, never removes
        // them, and listing a large table on S3 for every query would be slow.
        let was_empty = scanned.iter().filter_map(|name| self.catalog.table(name)).filter(|t| t.files == 0);
        for table in was_empty {
            // Counted again: the pipeline may have committed since the session started. A
            // folder that cannot be listed gets no note: the query itself reports that.
            let counts = catalog::count_committed_files(&self.catalog.root, table.name).await;
            if counts.is_ok_and(|c| c == [0, 0]) {
                notes.push(table.empty_note());
            }
        }
        notes
    }

    /// Adds the catalog's table names to DataFusion's "table not found" error.
    fn explain_error(&self, e: DataFusionError) -> DataFusionError {
        let text = e.to_string();
        if text.contains("table '") && text.contains("not found") {
            let names: Vec<&str> = self.catalog.tables.iter().map(|t| t.name).collect();
            DataFusionError::Plan(format!("{text}. The tables are: {}", names.join(", ")))
        } else {
            e
        }
    }
}

/// `SHOW TABLES` lists pageviews' tables only, not DataFusion's information_schema views.
fn rewrite_shortcuts(sql: &str) -> String {
    let words: Vec<String> = sql.split_whitespace().map(str::to_ascii_uppercase).collect();
    if words == ["SHOW", "TABLES"] {
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name"
            .to_string()
    } else {
        sql.to_string()
    }
}
