//! Streaming mode: a query over a Kafka topic that follows it until it is stopped, in the
//! manner of Flink's SQL client.
//!
//! DataFusion is a batch engine: it plans, type-checks and optimises the statement, and its
//! physical expressions and accumulators compute every value; the incremental part, which
//! it does not have, is here:
//!
//! ```text
//!  TopicReader ─ poll (≤ 100 ms) ─> valid events (the pipeline's decoder; bad ones counted)
//!     ├─ append:    stages (filter, projection) ──────────────────────────> rows as they arrive
//!     ├─ windowed:  event time (windowed.rs: the pipeline's watermark, idleness and lateness)
//!     │             └─> stages ─> groups in open windows ─ watermark passes ─> the window's rows, once
//!     └─ updating:  stages ─> groups (updating.rs) ───────────────────────> changes, or a grid
//!                                                                            (render.rs)
//! ```
//!
//! `plan.rs` says which statements stream. A query holds its open windows or its groups
//! and nothing of the records they came from; that memory counts against the session's
//! budget, so a `GROUP BY` of unbounded keys fails within `--memory-limit` instead of
//! filling the machine. A query ends when it is stopped (Ctrl-C, SIGINT, SIGTERM), at
//! `--max-rows` or `--timeout`, or at its own LIMIT.

mod groups;
pub(crate) mod plan;
pub(crate) mod render;
mod stages;
mod updating;
mod windowed;

pub use plan::StreamError;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool};
use pageviews_core::time::format_timestamp;
use pageviews_core::window::{WindowSpec, NO_WATERMARK};
use pageviews_core::Shutdown;

use crate::kafka::{topic_schema, KafkaError, Skips, Start, TopicReader};
use crate::output::Format;
use crate::settings::{Settings, StartupMode};
use crate::SqlError;
use plan::{Shape, StreamPlan};
use render::{Renderer, GRID_ROWS};
use updating::Updating;
use windowed::Windowed;

/// Records read per poll at most.
const BATCH: usize = 8192;

/// How long a poll waits for records: also how soon a stop, an idle partition or a due
/// redraw is noticed.
const POLL_WAIT: Duration = Duration::from_millis(100);

/// How often a grid is redrawn at most, and live notes are printed.
const REDRAW_EVERY: Duration = Duration::from_millis(250);
const NOTE_EVERY: Duration = Duration::from_secs(1);

/// When a streaming statement ends besides being stopped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// After this many rows or changes (`--max-rows`).
    pub max_rows: Option<u64>,
    /// After this long (`--timeout`).
    pub timeout: Option<Duration>,
}

/// Why a streaming statement ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Stopped: Ctrl-C in the shell, SIGINT or SIGTERM elsewhere.
    Stopped,
    /// `--max-rows` rows printed.
    MaxRows,
    /// `--timeout` passed.
    Timeout,
    /// The query's own LIMIT was reached.
    Limit,
}

impl Ended {
    fn why(self) -> &'static str {
        match self {
            Ended::Stopped => "stopped",
            Ended::MaxRows => "--max-rows reached",
            Ended::Timeout => "--timeout reached",
            Ended::Limit => "LIMIT reached",
        }
    }
}

/// What a streaming statement runs with.
pub(crate) struct Context<'a> {
    pub settings: &'a Settings,
    pub limits: Limits,
    pub stop: &'a Shutdown,
    pub pool: &'a Arc<dyn MemoryPool>,
}

/// What a query keeps between polls.
enum State {
    Append,
    Windowed(Windowed),
    Updating(Updating),
}

/// Runs `plan` until it ends, printing its result to `out` in `format` and the session's
/// result mode (a grid when `terminal` and the result updates); notes go to `info`.
pub(crate) fn run_statement(
    plan: StreamPlan,
    cx: Context<'_>,
    format: Format,
    terminal: bool,
    out: &mut dyn Write,
    info: &mut dyn Write,
) -> Result<Ended, SqlError> {
    let updating = matches!(plan.shape, Shape::Updating { .. });
    let mut renderer =
        Renderer::new(out, format, cx.settings.result_mode, terminal, updating, plan.schema.clone());
    run(plan, cx, &mut renderer, info)
}

/// Runs `plan` until it ends, printing to `out`; notes go to `info`.
fn run(
    plan: StreamPlan,
    cx: Context<'_>,
    out: &mut Renderer<'_>,
    info: &mut dyn Write,
) -> Result<Ended, SqlError> {
    let settings = plan.table.settings().clone();
    let mut reader = TopicReader::open(&settings, plan.table.topic(), topic_schema()).map_err(kafka)?;
    reader
        .assign(match cx.settings.startup_mode {
            StartupMode::EarliestOffset => Start::Earliest,
            StartupMode::LatestOffset => Start::Latest,
        })
        .map_err(kafka)?;
    writeln!(
        info,
        "[INFO] Following {}.{} from {}; Ctrl-C stops.",
        crate::kafka::SCHEMA,
        plan.table.topic(),
        cx.settings.startup_mode
    )?;
    info.flush()?;
    let started = Instant::now();
    let now_ms = || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut state = match &plan.shape {
        Shape::Append => State::Append,
        Shape::Windowed { size_ms, .. } => State::Windowed(Windowed::new(
            WindowSpec::new(*size_ms, 0),
            i64::try_from(cx.settings.watermark_delay.as_millis()).unwrap_or(i64::MAX),
            u64::try_from(cx.settings.idle_timeout.as_millis()).unwrap_or(u64::MAX),
            reader.partitions(),
            0,
        )),
        Shape::Updating { .. } => State::Updating(Updating::new()),
    };
    let reservation = MemoryConsumer::new("streaming query state").register(cx.pool);
    let scan = |batch: RecordBatch| -> DfResult<(RecordBatch, UInt32Array)> {
        let batch = match &plan.projection {
            Some(p) => batch.project(p)?,
            None => batch,
        };
        plan.below.run(batch)
    };
    let mut skips = Skips::default();
    let mut skip_left = plan.skip;
    let (mut noted, mut last_note, mut last_draw) = ((0, 0), Instant::now(), None::<Instant>);
    let mut drawn_skips = 0;
    let ended = loop {
        if cx.stop.is_triggered() {
            break Ended::Stopped;
        }
        if cx.limits.timeout.is_some_and(|t| started.elapsed() >= t) {
            break Ended::Timeout;
        }
        let polled = reader.poll(BATCH, POLL_WAIT, None).map_err(kafka)?;
        skips.merge(&polled.skipped);
        let now = now_ms();
        let mut emitted: Vec<RecordBatch> = Vec::new();
        match (&mut state, &plan.shape) {
            (State::Append, _) => emitted.push(scan(polled.batch)?.0),
            (State::Windowed(w), Shape::Windowed { agg, above, .. }) => {
                let closed = w.on_batch(&polled.batch, &scan, agg, above, now)?;
                let closing = w.on_tick(&polled.ended, now, agg, above)?;
                emitted.extend(closed.into_iter().chain(closing).map(|c| c.rows));
                reserve(&reservation, w.held())?;
            }
            (State::Updating(u), Shape::Updating { agg, above }) => {
                u.on_batch(&scan(polled.batch)?.0, agg)?;
                reserve(&reservation, u.held())?;
                let due = last_draw.is_none_or(|t| t.elapsed() >= REDRAW_EVERY);
                if !out.is_grid() {
                    if let Some(changes) = u.changes(agg, above)? {
                        let changes = cap_changes(changes, cx.limits.max_rows, out.printed());
                        out.changes(&changes)?;
                    }
                } else if due {
                    // The status line counts skipped records: a batch of bad ones redraws too.
                    let changed = u.changes(agg, above)?.is_some();
                    if changed || last_draw.is_none() || skips.total() != drawn_skips {
                        if let Some((view, total)) = u.view(GRID_ROWS)? {
                            out.grid(&view, total, &status(&plan, &skips, None))?;
                            (last_draw, drawn_skips) = (Some(Instant::now()), skips.total());
                        }
                    }
                }
            }
            _ => return Err(SqlError::Query(DataFusionError::Internal("a state for another shape".into()))),
        }
        for batch in emitted {
            let batch = skip_rows(batch, &mut skip_left);
            let left = [plan.fetch.map(|f| f as u64), cx.limits.max_rows]
                .into_iter()
                .flatten()
                .map(|m| m.saturating_sub(out.printed()))
                .min();
            let batch = match left {
                Some(left) if (batch.num_rows() as u64) > left => batch.slice(0, left as usize),
                _ => batch,
            };
            out.rows(&batch)?;
        }
        if plan.fetch.is_some_and(|f| out.printed() >= f as u64) {
            break Ended::Limit;
        }
        if cx.limits.max_rows.is_some_and(|m| out.printed() >= m) {
            break Ended::MaxRows;
        }
        let late = match &state {
            State::Windowed(w) => w.late,
            _ => 0,
        };
        if (skips.total(), late) != noted && last_note.elapsed() >= NOTE_EVERY && !out.is_grid() {
            let watermark = match &state {
                State::Windowed(w) => Some(w.watermark()),
                _ => None,
            };
            writeln!(info, "-- {}", status(&plan, &skips, watermark.map(|wm| (late, wm))))?;
            noted = (skips.total(), late);
            last_note = Instant::now();
        }
    };
    out.finish()?;
    let what = if matches!(plan.shape, Shape::Updating { .. }) { "changes" } else { "rows" };
    writeln!(info, "Received a total of {} {what} ({}).", out.printed(), ended.why())?;
    if skips.total() > 0 {
        writeln!(info, "note: {}.{}: {skips}", crate::kafka::SCHEMA, plan.table.topic())?;
    }
    if let State::Windowed(w) = &state {
        if w.late > 0 {
            writeln!(info, "note: {}", late_note(w.late, w.watermark()))?;
        }
    }
    Ok(ended)
}

/// `batch` without its first `*left` rows, which are counted off.
fn skip_rows(batch: RecordBatch, left: &mut usize) -> RecordBatch {
    if *left == 0 {
        return batch;
    }
    let skipped = (*left).min(batch.num_rows());
    *left -= skipped;
    batch.slice(skipped, batch.num_rows() - skipped)
}

/// `changes` up to `max_rows` printed in all.
fn cap_changes(changes: updating::Changes, max_rows: Option<u64>, printed: u64) -> updating::Changes {
    let Some(left) = max_rows.map(|m| m.saturating_sub(printed) as usize) else { return changes };
    if changes.ops.len() <= left {
        return changes;
    }
    updating::Changes { ops: changes.ops[..left].to_vec(), rows: changes.rows.slice(0, left) }
}

/// What the live line says: skipped records, late events and the watermark.
fn status(plan: &StreamPlan, skips: &Skips, late: Option<(u64, i64)>) -> String {
    let mut parts = vec![format!("{}.{}", crate::kafka::SCHEMA, plan.table.topic())];
    if skips.total() > 0 {
        parts.push(skips.to_string());
    }
    if let Some((late, watermark)) = late {
        if late > 0 {
            parts.push(late_note(late, watermark));
        }
    }
    parts.join(" · ")
}

fn late_note(late: u64, watermark: i64) -> String {
    let wm = if watermark == NO_WATERMARK { "none yet".to_string() } else { format_timestamp(watermark) };
    let s = if late == 1 { "" } else { "s" };
    format!("{late} late event{s} not counted: their windows had closed (watermark {wm})")
}

/// Counts what the state holds against the session's memory budget.
fn reserve(
    reservation: &datafusion::execution::memory_pool::MemoryReservation,
    (items, bytes): (usize, i64),
) -> DfResult<()> {
    let bytes = usize::try_from(bytes.max(0)).unwrap_or(usize::MAX);
    reservation.try_resize(bytes).map_err(|e| {
        DataFusionError::ResourcesExhausted(format!(
            "the streaming query's state ({items} open windows or groups, {}) does not fit: {e}",
            crate::budget::format_size(bytes as u64)
        ))
    })
}

fn kafka(e: KafkaError) -> SqlError {
    SqlError::Kafka(e)
}
