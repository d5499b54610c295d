//! A SQL session over the catalog: runs one statement, prints its result, its row count
//! and the time it took, and says when a table it read has no committed files yet or holds
//! committed rows the root cannot serve. It runs only statements that read: the others are
//! refused before they run (see `read_only`).
//!
//! Each statement sees the root as of the newest checkpoints when it starts: the session
//! reads a new snapshot first (see [`crate::committed`]). If a checkpoint committed while
//! the statement ran removed what the snapshot named, the statement runs again on a new
//! snapshot; it prints nothing before it has all its rows, so nobody sees the first try.

use std::io::Write;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use pageviews_core::commit::SnapshotError;
use pageviews_core::table::Table;
use pageviews_core::Shutdown;
use thiserror::Error;

use crate::budget::{self, format_size, Budget, Exhausted};
use crate::catalog::{self, Catalog, CatalogError, TableRoot};
use crate::committed::unreadable_notes;
use crate::group_window::{self, GroupWindowError};
use crate::kafka::{KafkaError, KafkaSettings, KafkaTable};
use crate::output::{self, Format};
use crate::read_only;
use crate::root::View;
use crate::settings::{self, RuntimeMode, SettingError, Settings};
use crate::stream::{self, Limits, StreamError};

/// Runs of one statement before a snapshot that keeps expiring is reported: each run needs a
/// checkpoint to commit during it, so this many in a row means checkpoints come faster than
/// the statement runs.
const ATTEMPTS: usize = 5;

/// A statement that could not be run, or whose result could not be printed.
#[derive(Debug, Error)]
pub enum SqlError {
    /// DataFusion rejected or failed the statement (syntax, unknown table or column, a file
    /// it could not read).
    #[error("{0}")]
    Query(#[from] DataFusionError),
    /// The committed state of the root could not be read.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// The result could not be written out.
    #[error("cannot print the result: {0}")]
    Output(#[from] datafusion::arrow::error::ArrowError),
    /// Writing to the terminal or a pipe failed.
    #[error("cannot print the result: {0}")]
    Io(#[from] std::io::Error),
    /// The statement would write or register something, or change the session.
    #[error(
        "pageviews sql is read-only: {statement} is refused (it runs SELECT, WITH, EXPLAIN, SHOW and \
         DESCRIBE); `pageviews run` writes the tables, and --format csv or json with a redirect \
         saves a result"
    )]
    ReadOnly {
        /// The statement, in SQL's words: `INSERT INTO`, `CREATE EXTERNAL TABLE`, `COPY`.
        statement: String,
    },
    /// The statement needed more memory than the budget allows, and could not spill.
    #[error(
        "{source}\nhint: the statement needs more than --memory-limit {limit}: raise it, or have it \
         read less with a filter (day, hour) or a LIMIT"
    )]
    Memory {
        /// DataFusion's "Resources exhausted".
        source: DataFusionError,
        /// The memory limit, as the flag takes it.
        limit: String,
    },
    /// A Kafka topic could not be read.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// Streaming mode cannot run the statement.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// A Flink group window this client does not have, or written with other arguments.
    #[error(transparent)]
    GroupWindow(#[from] GroupWindowError),
    /// A `SET` of a session option with a value it does not take.
    #[error(transparent)]
    Setting(#[from] SettingError),
    /// The statement was stopped (Ctrl-C) before it finished.
    #[error("stopped")]
    Stopped,
    /// The statement spilled as much as the budget allows, and needed more.
    #[error(
        "Resources exhausted: the statement spilled more than --spill-limit {limit} to disk\n\
         hint: raise --spill-limit (or --memory-limit, so that less spills), or have it read less \
         with a filter (day, hour) or a LIMIT"
    )]
    Spill {
        /// DataFusion's error, which names a setting of its own instead of the flag.
        error: DataFusionError,
        /// The spill limit, as the flag takes it.
        limit: String,
    },
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
    /// What the result leaves out and why, as messages: tables the statement read that
    /// have no committed files yet, committed rows the root cannot serve.
    pub notes: Vec<String>,
    /// Counts the rows against the memory budget for as long as they are held.
    _held: MemoryReservation,
}

impl QueryResult {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// What one run of a statement found.
struct Answer {
    /// The catalog tables it read.
    scanned: Vec<Table>,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    /// The batches' memory, counted against the budget.
    held: MemoryReservation,
}

/// A DataFusion context with pageviews' tables registered.
pub struct Session {
    ctx: SessionContext,
    catalog: RwLock<Catalog>,
    budget: Budget,
    /// The Kafka topics, schema `kafka`.
    kafka: Vec<Arc<KafkaTable>>,
    /// The options `SET` changes, and what `RESET` goes back to.
    settings: Mutex<Settings>,
    defaults: Settings,
    /// When a streaming statement ends besides being stopped.
    limits: Limits,
    /// Whether results go to a terminal (an updating result is then a grid).
    terminal: bool,
}

impl Session {
    /// Registers the tables under `root`, each in the format its files are in; an S3 root's
    /// folders are listed here. `information_schema` is on, so `SHOW TABLES`, `SHOW COLUMNS`
    /// and `information_schema.*` work. Statements run within `budget`.
    pub async fn open(root: &TableRoot, budget: Budget) -> Result<Self, CatalogError> {
        let config = SessionConfig::new().with_information_schema(true);
        // No listing cache: DataFusion's keeps a table's listing for good, and the tables
        // grow while the session lasts. (The committed view lists from its snapshot anyway.)
        let caches = CacheManagerConfig::default().with_list_files_cache_limit(0);
        let runtime = budget.apply(RuntimeEnvBuilder::new().with_cache_manager(caches)).build_arc().map_err(
            |source| CatalogError::Register { table: "*", location: root.base().to_string(), source },
        )?;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        let catalog = catalog::register(&ctx, root).await?;
        Ok(Session {
            ctx,
            catalog: RwLock::new(catalog),
            budget,
            kafka: Vec::new(),
            settings: Mutex::default(),
            defaults: Settings::default(),
            limits: Limits::default(),
            terminal: false,
        })
    }

    /// Registers schema `kafka`, one table per topic of `settings`.
    pub fn with_kafka(mut self, settings: KafkaSettings) -> Result<Self, SqlError> {
        self.kafka = crate::kafka::register(&self.ctx, settings)?;
        Ok(self)
    }

    /// Starts with `settings` (the flags'), which `RESET` goes back to.
    pub fn with_settings(mut self, settings: Settings) -> Self {
        self.settings = Mutex::new(settings.clone());
        self.defaults = settings;
        self
    }

    /// Streaming statements end at `limits` besides being stopped; results go to a terminal
    /// when `terminal`.
    pub fn with_limits(mut self, limits: Limits, terminal: bool) -> Self {
        self.limits = limits;
        self.terminal = terminal;
        self
    }

    /// The session options as they are now.
    pub fn settings(&self) -> Settings {
        self.settings.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The DataFusion context, for callers that want plans or their own registrations. What
    /// runs through it directly is not checked to be read-only.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The memory and spill the statements may use.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// What was registered, and from where, as of the last statement.
    pub fn catalog(&self) -> Catalog {
        self.catalog.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Plans and runs one statement on the newest committed state.
    pub async fn query(&self, sql: &str) -> Result<QueryResult, SqlError> {
        let started = Instant::now();
        let sql = rewrite_shortcuts(sql);
        let mut attempt = 1;
        loop {
            let catalog = self.refresh().await?;
            match self.run_once(&sql, &catalog).await {
                Ok(Answer { scanned, schema, batches, held }) => {
                    let notes = notes(&catalog, &scanned);
                    let elapsed = started.elapsed();
                    return Ok(QueryResult { schema, batches, elapsed, notes, _held: held });
                }
                Err(SqlError::Query(e)) if attempt < ATTEMPTS && snapshot_expired(&e) => attempt += 1,
                Err(SqlError::Query(e)) => return Err(self.budget_error(e)),
                Err(e) => return Err(e),
            }
        }
    }

    /// Plans `sql`, refuses it unless it only reads, and runs it on the snapshot `catalog` was
    /// found in.
    async fn run_once(&self, sql: &str, catalog: &Catalog) -> Result<Answer, SqlError> {
        let state = self.ctx.state();
        let statement = group_window::parse(&state, sql)?;
        let plan = state.statement_to_plan(statement).await.map_err(|e| self.explain_error(e, catalog))?;
        read_only::check(&plan).map_err(|statement| SqlError::ReadOnly { statement })?;
        let scanned = scanned_tables(&plan);
        let df = self.ctx.execute_logical_plan(plan).await?;
        let schema = SchemaRef::from(df.schema().as_arrow().clone());
        let (batches, held) = self.collect(df.execute_stream().await?).await?;
        Ok(Answer { scanned, schema, batches, held })
    }

    /// Every batch of `stream`, counted against the memory budget: the whole result is held
    /// before it is printed, so a cross join without an aggregate over it fails within the
    /// budget instead of filling the memory.
    async fn collect(
        &self,
        mut stream: SendableRecordBatchStream,
    ) -> Result<(Vec<RecordBatch>, MemoryReservation), DataFusionError> {
        let held = MemoryConsumer::new("pageviews sql result").register(&self.ctx.runtime_env().memory_pool);
        let mut batches = Vec::new();
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            held.try_grow(batch.get_array_memory_size())?;
            batches.push(batch);
        }
        Ok((batches, held))
    }

    /// Reads the newest committed state and finds the tables in it again.
    async fn refresh(&self) -> Result<Catalog, CatalogError> {
        let before = self.catalog();
        before.root.refresh().await?;
        let catalog = catalog::rediscover(&self.ctx, &before).await?;
        *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = catalog.clone();
        Ok(catalog)
    }

    /// Runs one statement and prints its rows to `out` in `format`; the row count, the time
    /// taken and any empty-table notes go to `info`. A streaming statement runs until its
    /// limits (or its LIMIT): see [`Session::run_until`].
    pub async fn run(
        &self,
        sql: &str,
        format: Format,
        out: &mut dyn Write,
        info: &mut dyn Write,
    ) -> Result<(), SqlError> {
        self.run_until(sql, format, out, info, &Shutdown::default()).await
    }

    /// [`Session::run`], stopped when `stop` is triggered: a batch statement then fails with
    /// [`SqlError::Stopped`], a streaming one ends as it does at its limits. A streaming
    /// statement blocks the calling thread while it runs; its rows print as they come.
    pub async fn run_until(
        &self,
        sql: &str,
        format: Format,
        out: &mut dyn Write,
        info: &mut dyn Write,
        stop: &Shutdown,
    ) -> Result<(), SqlError> {
        if let Some(statement) = settings::parse(sql) {
            return self.apply(statement, format, out, info);
        }
        let settings = self.settings();
        if settings.runtime_mode == RuntimeMode::Streaming {
            let state = self.ctx.state();
            let plan = state.statement_to_plan(group_window::parse(&state, &rewrite_shortcuts(sql))?).await?;
            read_only::check(&plan).map_err(|statement| SqlError::ReadOnly { statement })?;
            if let Some(plan) = stream::plan::plan(&state.optimize(&plan)?, &state)? {
                let cx = stream::Context {
                    settings: &settings,
                    limits: self.limits,
                    stop,
                    pool: &self.ctx.runtime_env().memory_pool,
                };
                return stream::run_statement(plan, cx, format, self.terminal, out, info).map(|_| ());
            }
        }
        let result = tokio::select! {
            result = self.query(sql) => result?,
            () = stop.triggered() => return Err(SqlError::Stopped),
        };
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
        for table in &self.kafka {
            if let Some(skipped) = table.take_skipped() {
                writeln!(info, "note: {}.{}: {skipped}", crate::kafka::SCHEMA, table.topic())?;
            }
        }
        let plural = if rows == 1 { "" } else { "s" };
        writeln!(info, "{rows} row{plural} in set ({:.3} s)", result.elapsed.as_secs_f64())?;
        Ok(())
    }

    /// Runs a `SET`, `RESET` or `SET;` of the session options.
    fn apply(
        &self,
        statement: settings::Statement,
        format: Format,
        out: &mut dyn Write,
        info: &mut dyn Write,
    ) -> Result<(), SqlError> {
        let mut settings = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        match statement {
            settings::Statement::Set { key, value } => {
                settings.set(&key, &value)?;
                writeln!(info, "[INFO] Session property has been set.")?;
            }
            settings::Statement::Reset(key) => {
                settings.reset(key.as_deref(), &self.defaults);
                writeln!(info, "[INFO] Session property has been reset.")?;
            }
            settings::Statement::Show => {
                let (keys, values): (Vec<&str>, Vec<String>) = settings.list().into_iter().unzip();
                let batch = RecordBatch::try_from_iter([
                    ("key", Arc::new(datafusion::arrow::array::StringArray::from(keys)) as _),
                    ("value", Arc::new(datafusion::arrow::array::StringArray::from(values)) as _),
                ])?;
                output::write_batches(out, format, &[batch])?;
            }
        }
        Ok(())
    }

    /// `e`, said in the flags' words when the statement ran out of its budget.
    fn budget_error(&self, e: DataFusionError) -> SqlError {
        match budget::exhausted(&e) {
            Some(Exhausted::Memory) => {
                SqlError::Memory { source: e, limit: format_size(self.budget.memory()) }
            }
            Some(Exhausted::Spill) => SqlError::Spill { error: e, limit: format_size(self.budget.spill()) },
            None => SqlError::Query(e),
        }
    }

    /// Adds the catalog's table names to DataFusion's "table not found" error.
    fn explain_error(&self, e: DataFusionError, catalog: &Catalog) -> DataFusionError {
        let text = e.to_string();
        if text.contains("table '") && text.contains("not found") {
            let names: Vec<&str> = catalog.tables.iter().map(|t| t.name).collect();
            DataFusionError::Plan(format!("{text}. The tables are: {}", names.join(", ")))
        } else {
            e
        }
    }
}

/// The catalog tables `plan` reads.
fn scanned_tables(plan: &LogicalPlan) -> Vec<Table> {
    let mut scanned: Vec<Table> = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        // kafka.page_views is a topic, not the page_views table.
        let in_files = |scan: &datafusion::logical_expr::TableScan| {
            scan.table_name.schema().is_none_or(|s| s != crate::kafka::SCHEMA)
        };
        if let LogicalPlan::TableScan(scan) = node {
            if in_files(scan) {
                scanned.extend(Table::from_name(scan.table_name.table()));
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    scanned.sort_by_key(|t| t.name());
    scanned.dedup();
    scanned
}

/// What a statement over `scanned` leaves out: tables with no committed file (as of the
/// snapshot it ran on), committed rows the root cannot serve.
fn notes(catalog: &Catalog, scanned: &[Table]) -> Vec<String> {
    let mut notes: Vec<String> = catalog
        .tables
        .iter()
        .filter(|t| t.files == 0 && scanned.iter().any(|s| s.name() == t.name))
        .map(|t| t.empty_note())
        .collect();
    if let View::Committed(committed) = catalog.root.view() {
        notes.extend(unreadable_notes(&committed.current(), scanned, catalog.root.base()));
    }
    notes
}

/// True when `e` comes from a snapshot a checkpoint expired while the statement ran.
fn snapshot_expired(e: &DataFusionError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cause {
        if err.downcast_ref::<SnapshotError>().is_some_and(SnapshotError::is_expired) {
            return true;
        }
        cause = err.source();
    }
    // Some readers keep only the text of the store's error.
    e.to_string().contains("read a new snapshot")
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::parquet::errors::ParquetError;

    fn expired() -> object_store::Error {
        let e = SnapshotError::Expired { pipeline: "p".into(), seq: 3, path: "page_views/x.parquet".into() };
        object_store::Error::Generic { store: "pageviews snapshot", source: Box::new(e) }
    }

    #[test]
    fn an_expired_snapshot_is_recognised_however_the_reader_wrapped_it() {
        let direct = DataFusionError::ObjectStore(Box::new(expired()));
        let parquet = DataFusionError::ParquetError(Box::new(ParquetError::External(Box::new(expired()))));
        let text = DataFusionError::Execution(format!("reading failed: {}", expired()));
        for e in [direct, parquet, text] {
            assert!(snapshot_expired(&e), "{e}");
        }
        let other = object_store::Error::NotFound { path: "x".into(), source: "gone".into() };
        assert!(!snapshot_expired(&DataFusionError::ObjectStore(Box::new(other))));
    }
}
