//! The `pageviews-sql` binary (also `pageviews sql`): parse the command line, then print the
//! catalog, run statements from -e and -f, or start the shell.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use pageviews_core::event::EventTimeBounds;
use pageviews_core::Shutdown;
use pageviews_sql::kafka::KafkaSettings;
use pageviews_sql::settings::{ResultMode, RuntimeMode, Settings, StartupMode};
use pageviews_sql::stream::Limits;
use pageviews_sql::{budget, catalog, script, shell, Amount, Budget, Format, Session, TableRoot};
use tokio::signal::unix::{Signal, SignalKind};

/// The pipeline's window size, which bounds the event times taken (years 0000–9999).
const WINDOW_MS: i64 = 60_000;
/// Records larger than this are skipped as `oversized`, as the pipeline's default.
const MAX_RECORD_BYTES: usize = 1 << 20;

/// SQL over pageviews' tables (page_views, page_view_aggregates, late_page_views,
/// dead_letters), on Apache DataFusion.
///
/// With neither -e nor -f it starts an interactive shell (or, when stdin is not a terminal,
/// runs the statements read from stdin). Statements end with ';'. A failing statement
/// prints its error and the next one runs; the exit code is 1 when any failed. Filter on day
/// and hour (day = '2020-01-01' AND hour = '00') to read only those partitions.
///
/// Each statement sees every row the newest checkpoint of each pipeline committed, rows in
/// files the pipeline is still writing included: a running pipeline's rows show within one
/// --checkpoint-interval. --visible-only shows the table folders as other readers see them.
///
/// With --brokers, each --topic is also a table, kafka.<topic>: the events' four columns plus
/// "partition", "offset" and kafka_timestamp; records the pipeline would make dead letters
/// are skipped and counted. In batch mode (the default) a statement reads each partition up
/// to its end offset when the statement started. In streaming mode (--mode streaming, or
/// SET 'execution.runtime-mode' = 'streaming';) a query over a topic follows it until Ctrl-C
/// (SIGINT or SIGTERM outside the shell), --max-rows or --timeout: rows print as they
/// arrive, a GROUP BY date_bin(INTERVAL '1 minute', "timestamp"), … (or Flink's
/// TUMBLE("timestamp", INTERVAL '1' MINUTE)) prints each window once when the watermark
/// passes its end, and other aggregates print their changes.
///
/// It only reads: SELECT, WITH, EXPLAIN, SHOW and DESCRIBE run, and SET changes the options
/// above; INSERT, COPY, CREATE, DROP and every other statement that would write or register
/// something are refused.
#[derive(Debug, Parser)]
#[command(name = "pageviews sql", version)]
struct Args {
    /// Table root written by `pageviews run`: a directory, file:// URL, s3://bucket/prefix or
    /// az://container/prefix. Each table is read in the format of its files (.jsonl or
    /// .parquet). An s3:// root is configured from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_REGION, and for S3-compatible servers AWS_ENDPOINT_URL (plus AWS_ALLOW_HTTP=true
    /// for plain http); an az:// root from AZURE_STORAGE_ACCOUNT_NAME and
    /// AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_KEY (AZURE_STORAGE_USE_EMULATOR=true for
    /// Azurite).
    #[arg(long, env = "PAGEVIEWS_OUTPUT", default_value = "./data", value_name = "URL")]
    output: String,

    /// Run these statements and exit (repeatable; one may hold several, separated by ';').
    #[arg(short = 'e', long = "execute", value_name = "SQL")]
    execute: Vec<String>,

    /// Run the statements in this file and exit (repeatable; after any -e).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Vec<PathBuf>,

    /// How to print results.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,

    /// Print the catalog as CREATE EXTERNAL TABLE statements (STORED AS JSON or PARQUET,
    /// as the files are) and exit.
    #[arg(long)]
    print_catalog: bool,

    /// Show only the files in the table folders, as DuckDB, Spark or pyarrow see them.
    /// By default every statement sees every row committed by the newest checkpoint
    /// (every --checkpoint-interval), including rows in files the pipeline is still
    /// writing, which reach the folders only when they roll (--roll-age).
    #[arg(long)]
    visible_only: bool,

    /// Memory the statements may hold: sort buffers, hash tables of joins and aggregates, the
    /// rows of a result. A size (512MiB, 4GiB) or a share of this machine's memory (25%: of
    /// /proc/meminfo's MemTotal, or of the cgroup's memory.max where that is smaller). Sorts
    /// and aggregates that need more spill to temporary files in $TMPDIR; a statement that
    /// needs more still fails with "Resources exhausted", and the next one runs.
    #[arg(long, env = "PAGEVIEWS_SQL_MEMORY_LIMIT", default_value = "25%", value_name = "SIZE")]
    memory_limit: Amount,

    /// Temporary disk the statements may spill to once --memory-limit is used: a size, or a
    /// share of this machine's memory. Default: 4 times --memory-limit, so a runaway
    /// statement stops before it fills the disk.
    #[arg(long, env = "PAGEVIEWS_SQL_SPILL_LIMIT", value_name = "SIZE")]
    spill_limit: Option<Amount>,

    /// Kafka bootstrap servers: each --topic becomes the table kafka.<topic>.
    #[arg(long, env = "KAFKA_BOOTSTRAP", value_name = "HOST:PORT,…")]
    brokers: Option<String>,

    /// A Kafka topic to read as a table (repeatable).
    #[arg(long = "topic", env = "KAFKA_TOPIC", default_value = "page_views", value_name = "TOPIC")]
    topics: Vec<String>,

    /// A librdkafka property for the consumer, as for `pageviews run` (TLS, SASL);
    /// repeatable, applied over pageviews' own settings.
    #[arg(long = "kafka-option", env = "KAFKA_OPTIONS", value_delimiter = ',', value_parser = parse_key_value, value_name = "KEY=VALUE")]
    kafka_options: Vec<(String, String)>,

    /// How statements over a topic run: `batch` reads up to the end offsets at their start;
    /// `streaming` follows the topic (SET 'execution.runtime-mode').
    #[arg(long, value_enum, default_value_t = Mode::Batch)]
    mode: Mode,

    /// Where a streaming statement starts reading (SET 'scan.startup.mode').
    #[arg(long, value_enum, default_value_t = Startup::Latest)]
    startup: Startup,

    /// How an updating streaming result is shown (SET 'sql-client.execution.result-mode').
    #[arg(long, value_enum, default_value_t = ResultModeArg::Table)]
    result_mode: ResultModeArg,

    /// Streaming windows: the watermark trails a partition's highest event time by this much,
    /// as the pipeline's --watermark-delay (SET 'pageviews.watermark-delay').
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    watermark_delay: Duration,

    /// Streaming windows: a partition read to its end and silent this long stops holding the
    /// watermark back, as the pipeline's --idle-timeout (SET 'table.exec.source.idle-timeout').
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    idle_timeout: Duration,

    /// Events dated more than this ahead of this machine's clock are skipped (reason
    /// future_timestamp), as the pipeline's --max-future.
    #[arg(long, env = "PAGEVIEWS_MAX_FUTURE", default_value = "1h", value_parser = humantime::parse_duration, value_name = "DURATION")]
    max_future: Duration,

    /// A streaming statement ends after printing this many rows or changes.
    #[arg(long, value_name = "N")]
    max_rows: Option<u64>,

    /// A streaming statement ends after running this long.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    timeout: Option<Duration>,
}

/// `--mode` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    Batch,
    Streaming,
}

/// `--startup` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Startup {
    /// Each partition's first record.
    Earliest,
    /// What is produced from now on.
    Latest,
}

/// `--result-mode` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ResultModeArg {
    Table,
    Changelog,
    Tableau,
}

/// `KEY=VALUE`.
fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

impl Args {
    /// The budget the flags give, with shares taken of this machine's memory.
    fn budget(&self) -> anyhow::Result<Budget> {
        let memory = self.memory_limit.resolve(budget::machine_memory).context("--memory-limit")?;
        Ok(match self.spill_limit {
            Some(spill) => {
                Budget::new(memory, spill.resolve(budget::machine_memory).context("--spill-limit")?)
            }
            None => Budget::with_memory(memory),
        })
    }

    /// The session options the flags give.
    fn settings(&self) -> Settings {
        Settings {
            runtime_mode: match self.mode {
                Mode::Batch => RuntimeMode::Batch,
                Mode::Streaming => RuntimeMode::Streaming,
            },
            result_mode: match self.result_mode {
                ResultModeArg::Table => ResultMode::Table,
                ResultModeArg::Changelog => ResultMode::Changelog,
                ResultModeArg::Tableau => ResultMode::Tableau,
            },
            startup_mode: match self.startup {
                Startup::Earliest => StartupMode::EarliestOffset,
                Startup::Latest => StartupMode::LatestOffset,
            },
            watermark_delay: self.watermark_delay,
            idle_timeout: self.idle_timeout,
        }
    }

    /// How to reach the topics, when --brokers is given.
    fn kafka(&self) -> anyhow::Result<Option<KafkaSettings>> {
        let Some(brokers) = &self.brokers else {
            anyhow::ensure!(
                self.kafka_options.is_empty(),
                "--kafka-option configures the Kafka consumer; it needs --brokers"
            );
            return Ok(None);
        };
        pageviews_kafka::check_option_files(&self.kafka_options)?;
        let max_future_ms =
            i64::try_from(self.max_future.as_millis()).context("--max-future is too large")?;
        Ok(Some(KafkaSettings {
            brokers: brokers.clone(),
            topics: self.topics.clone(),
            options: self.kafka_options.clone(),
            bounds: EventTimeBounds::new(max_future_ms, WINDOW_MS),
            max_record_bytes: MAX_RECORD_BYTES,
        }))
    }
}

/// `--format` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputFormat {
    /// Boxed tables, like Flink's tableau mode.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per row.
    Json,
}

impl From<OutputFormat> for Format {
    fn from(f: OutputFormat) -> Self {
        match f {
            OutputFormat::Table => Format::Table,
            OutputFormat::Csv => Format::Csv,
            OutputFormat::Json => Format::Json,
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", pageviews_core::secrets::scrub(&pageviews_core::error_chain(e.as_ref())));
            ExitCode::FAILURE
        }
    }
}

/// Runs what the arguments ask; the exit code is a failure when a statement failed.
fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut root = TableRoot::parse(&args.output)?;
    if args.visible_only {
        root = root.visible_only();
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if args.print_catalog {
        let catalog = rt.block_on(async {
            root.refresh().await?;
            catalog::Catalog::discover(&root).await
        })?;
        print!("{}", catalog::ddl(&catalog));
        return Ok(ExitCode::SUCCESS);
    }
    let format = Format::from(args.format);
    let limits = Limits { max_rows: args.max_rows, timeout: args.timeout };
    let mut session = rt
        .block_on(Session::open(&root, args.budget()?))?
        .with_settings(args.settings())
        .with_limits(limits, std::io::stdout().is_terminal() && format == Format::Table);
    if let Some(kafka) = args.kafka()? {
        session = session.with_kafka(kafka)?;
    }

    let mut scripts: Vec<(String, String)> =
        args.execute.iter().enumerate().map(|(i, sql)| (format!("-e #{}", i + 1), sql.clone())).collect();
    for path in &args.file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        scripts.push((path.display().to_string(), text));
    }
    if scripts.is_empty() {
        if std::io::stdin().is_terminal() {
            let history =
                std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".pageviews_sql_history"));
            shell::run(&session, &rt, format, history).context("the shell failed")?;
            return Ok(ExitCode::SUCCESS);
        }
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read stdin")?;
        scripts.push(("stdin".to_string(), text));
    }

    // A table is for people, so its row count and time follow it on stdout, as in Flink's
    // client; CSV and JSON are for programs, so stdout holds the rows only.
    let mut out = std::io::stdout();
    let mut info: Box<dyn std::io::Write> =
        if format == Format::Table { Box::new(std::io::stdout()) } else { Box::new(std::io::stderr()) };
    // SIGINT or SIGTERM ends a streaming statement, and the script with it.
    let stop = Shutdown::default();
    let signals =
        (shell::listen(&rt, SignalKind::interrupt())?, shell::listen(&rt, SignalKind::terminate())?);
    rt.spawn(stop_on_signals(stop.clone(), signals));
    // The client only reads, so a failing statement changes nothing a later one sees: each
    // runs, its error goes to stderr, and the exit code says whether any failed.
    let mut failed = 0;
    'scripts: for (origin, text) in &scripts {
        for (i, statement) in script::split_statements(text).iter().enumerate() {
            if stop.is_triggered() {
                break 'scripts;
            }
            if let Err(e) = rt.block_on(session.run_until(statement, format, &mut out, &mut *info, &stop)) {
                failed += 1;
                eprintln!(
                    "error: {origin}, statement {}: {}",
                    i + 1,
                    pageviews_core::secrets::scrub(&pageviews_core::error_chain(&e))
                );
            }
        }
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Triggers `stop` on SIGINT or SIGTERM.
async fn stop_on_signals(stop: Shutdown, (mut interrupt, mut terminate): (Signal, Signal)) {
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    stop.trigger();
}
