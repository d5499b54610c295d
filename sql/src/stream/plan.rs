//! Which queries run on an unbounded topic, and how: DataFusion parses, checks and optimises
//! the statement; this module reads the optimised logical plan and turns it into what
//! `crate::stream` evaluates itself, or refuses it saying why and what to write instead.
//!
//! The shapes that stream, over one Kafka table:
//!
//! ```text
//!  append     [LIMIT] (projection | filter)*                                   scan
//!  windowed   [LIMIT] (projection | filter | ORDER BY window, …)* GROUP BY window, …  (projection | filter)*  scan
//!  updating           (projection | filter)*            GROUP BY …  (projection | filter)*  scan
//! ```
//!
//! A window is `date_bin(INTERVAL '…', "timestamp")` (origin the epoch, or none) or
//! `date_trunc('second' | 'minute' | 'hour' | 'day', "timestamp")` over the event's own
//! time: epoch-aligned tumbling windows, the pipeline's kind (Flink's `TUMBLE(…)` arrives
//! here as `date_bin`: `crate::group_window`). Any aggregate function DataFusion has may be
//! computed in them. Everything else (joins, unions, `OVER`, ORDER BY outside a window, an
//! aggregate of an aggregate) waits for the end of its input, which a stream never reaches.

use std::sync::Arc;

use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::ScalarValue;
use datafusion::datasource::source_as_provider;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionState;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::logical_plan::{FetchType, SkipType};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Aggregate as AggregateNode, Expr, ExprSchemable, LogicalPlan, TableScan};
use datafusion::physical_expr::aggregate::LoweredAggregateBuilder;
use datafusion::physical_expr::PhysicalSortExpr;
use thiserror::Error;

use super::groups::{Aggregate, Aggregation};
use super::stages::{Stage, Stages};
use crate::kafka::KafkaTable;

/// How to write a query so that it runs over what the topic holds now.
const IN_BATCH: &str =
    "or run it over what the topic holds now, in batch mode: SET 'execution.runtime-mode' = 'batch';";

/// A query streaming mode cannot run, or could not plan.
#[derive(Debug, Error)]
pub enum StreamError {
    /// A query shape a stream has no answer for.
    #[error("streaming mode cannot run this query: {what}.\nhint: {instead}")]
    Unsupported {
        /// What in the query, and why.
        what: String,
        /// What to write instead.
        instead: String,
    },
    /// DataFusion could not plan a part of it.
    #[error(transparent)]
    Plan(#[from] DataFusionError),
}

fn unsupported(what: impl Into<String>, instead: impl Into<String>) -> StreamError {
    StreamError::Unsupported { what: what.into(), instead: instead.into() }
}

/// A streaming query, ready to run.
#[derive(Debug)]
pub(crate) struct StreamPlan {
    /// The topic.
    pub table: Arc<KafkaTable>,
    /// The scan's columns (indices into the topic's schema), or all.
    pub projection: Option<Vec<usize>>,
    /// Row-wise stages from the scan up to the aggregate (or to the result).
    pub below: Stages,
    /// What is done with the rows.
    pub shape: Shape,
    /// Rows to leave out first (`OFFSET`).
    pub skip: usize,
    /// Rows after which the query is done (`LIMIT`).
    pub fetch: Option<usize>,
    /// The result's columns.
    pub schema: SchemaRef,
}

/// What is done with the topic's rows.
#[derive(Debug)]
pub(crate) enum Shape {
    /// Each row is printed as it arrives.
    Append,
    /// Tumbling windows of `size_ms`, each printed once, when the watermark passes its end.
    Windowed { agg: Aggregation, size_ms: i64, above: Stages },
    /// Groups without a window: an updating result.
    Updating { agg: Aggregation, above: Stages },
}

/// The streaming plan of `plan`, or `None` when it reads no Kafka table (or only describes
/// one: EXPLAIN, DESCRIBE), which then runs as any batch statement does.
pub(crate) fn plan(plan: &LogicalPlan, state: &SessionState) -> Result<Option<StreamPlan>, StreamError> {
    if !reads_kafka(plan)
        || matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) | LogicalPlan::DescribeTable(_))
    {
        return Ok(None);
    }
    // The plan as a chain of single-input nodes from the result down to the scan.
    let mut chain: Vec<&LogicalPlan> = Vec::new();
    let mut node = plan;
    let scan = loop {
        match node {
            LogicalPlan::TableScan(scan) => break scan,
            LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::SubqueryAlias(_)
            | LogicalPlan::Aggregate(_)
            | LogicalPlan::Sort(_)
            | LogicalPlan::Limit(_) => {
                chain.push(node);
                node = node.inputs()[0];
            }
            other => return Err(refuse_node(other)),
        }
    };
    let table = kafka_table(scan).ok_or_else(|| {
        unsupported("it reads a table that is not a Kafka topic together with one", IN_BATCH)
    })?;
    let (mut skip, mut fetch) = (0, None);
    if let Some(LogicalPlan::Limit(limit)) = chain.first() {
        skip = match limit.get_skip_type()? {
            SkipType::Literal(n) => n,
            SkipType::UnsupportedExpr => return Err(unsupported("its OFFSET is not a number", IN_BATCH)),
        };
        fetch = match limit.get_fetch_type()? {
            FetchType::Literal(n) => n,
            FetchType::UnsupportedExpr => return Err(unsupported("its LIMIT is not a number", IN_BATCH)),
        };
        chain.remove(0);
    }
    if chain.iter().any(|n| matches!(n, LogicalPlan::Limit(_))) {
        return Err(unsupported(
            "it has a LIMIT inside a subquery, which would end the stream there",
            format!("put the LIMIT on the outer query, {IN_BATCH}"),
        ));
    }
    fetch = min_fetch(fetch, scan.fetch.map(|f| f.saturating_sub(skip)));
    let aggregates: Vec<usize> = chain
        .iter()
        .enumerate()
        .filter(|(_, n)| matches!(n, LogicalPlan::Aggregate(_)))
        .map(|(i, _)| i)
        .collect();
    let schema = SchemaRef::new(plan.schema().as_arrow().clone());
    let projection = scan.projection.clone();
    let Some(&at) = aggregates.first() else {
        if chain.iter().any(|n| matches!(n, LogicalPlan::Sort(_))) {
            return Err(unsupported(
                "ORDER BY sorts every row, and a stream has no last row",
                format!(
                    "leave the ORDER BY out and rows print as they arrive; or count per window and order by \
                     the window first (GROUP BY date_bin(INTERVAL '1 minute', \"timestamp\"), … ORDER BY 1, …): \
                     each window's rows print sorted when it closes; {IN_BATCH}"
                ),
            ));
        }
        let below = stages(&chain, state)?;
        return Ok(Some(StreamPlan { table, projection, below, shape: Shape::Append, skip, fetch, schema }));
    };
    if aggregates.len() > 1 {
        return Err(unsupported(
            "it aggregates the result of an aggregate, which changes with every record",
            format!("aggregate once per query in streaming mode, {IN_BATCH}"),
        ));
    }
    let LogicalPlan::Aggregate(node) = chain[at] else { unreachable!("an aggregate was found at {at}") };
    let (above_nodes, below_nodes) = (&chain[..at], &chain[at + 1..]);
    if below_nodes.iter().any(|n| matches!(n, LogicalPlan::Sort(_))) {
        return Err(unsupported("it sorts the rows before aggregating them", IN_BATCH));
    }
    let below = stages(below_nodes, state)?;
    let (agg, window) = aggregation(node, below_nodes, state)?;
    let sorts: Vec<&LogicalPlan> =
        above_nodes.iter().copied().filter(|n| matches!(n, LogicalPlan::Sort(_))).collect();
    let shape = match window {
        Some((size_ms, column)) => {
            for sort in &sorts {
                check_window_order(sort, above_nodes, node, column)?;
                if let LogicalPlan::Sort(s) = sort {
                    fetch = min_fetch(fetch, s.fetch);
                }
            }
            Shape::Windowed { agg, size_ms, above: stages(above_nodes, state)? }
        }
        None => {
            if !sorts.is_empty() {
                return Err(unsupported(
                    "ORDER BY over an updating result: its order changes with every record",
                    format!(
                        "leave the ORDER BY out: in 'table' result mode the result is a grid in the order of \
                         its GROUP BY columns, updated in place; {IN_BATCH}"
                    ),
                ));
            }
            if fetch.is_some() || skip > 0 {
                return Err(unsupported(
                    "LIMIT or OFFSET over an updating result: which rows come first changes with every record",
                    format!("leave it out, or filter the groups with HAVING; {IN_BATCH}"),
                ));
            }
            Shape::Updating { agg, above: stages(above_nodes, state)? }
        }
    };
    Ok(Some(StreamPlan { table, projection, below, shape, skip, fetch, schema }))
}

fn min_fetch(a: Option<usize>, b: Option<usize>) -> Option<usize> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// True when `plan` scans a Kafka table anywhere, subqueries included.
fn reads_kafka(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            found |= kafka_table(scan).is_some();
        }
        Ok(if found { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    found
}

/// The Kafka table `scan` reads, if it reads one.
fn kafka_table(scan: &TableScan) -> Option<Arc<KafkaTable>> {
    let provider = source_as_provider(&scan.source).ok()?;
    let any: Arc<dyn std::any::Any + Send + Sync> = provider;
    any.downcast::<KafkaTable>().ok()
}

/// The refusal of a plan node that needs the end of its input.
fn refuse_node(node: &LogicalPlan) -> StreamError {
    match node {
        LogicalPlan::Join(_) => unsupported(
            "it joins two inputs, and a join with a stream would wait for the stream's end for good",
            format!("count the topic on its own in streaming mode, {IN_BATCH}"),
        ),
        LogicalPlan::Union(_) => unsupported(
            "it combines several inputs (UNION), and streaming mode follows one topic",
            format!("run one query per input, {IN_BATCH}"),
        ),
        LogicalPlan::Window(_) => unsupported(
            "it uses a window function (OVER), which orders its whole input",
            format!(
                "count per tumbling window instead (GROUP BY date_bin(INTERVAL '1 minute', \"timestamp\"), …), \
                 {IN_BATCH}"
            ),
        ),
        other => unsupported(
            format!("it needs {}, which streaming mode does not evaluate", other.display()),
            IN_BATCH,
        ),
    }
}

/// Row-wise stages of `nodes` (given from the top down), in the order they apply.
fn stages(nodes: &[&LogicalPlan], state: &SessionState) -> Result<Stages, StreamError> {
    let mut out = Vec::new();
    for node in nodes.iter().rev() {
        match node {
            LogicalPlan::Projection(p) => {
                let exprs = p
                    .expr
                    .iter()
                    .map(|e| state.create_physical_expr(e.clone(), p.input.schema()))
                    .collect::<Result<Vec<_>, _>>()?;
                out.push(Stage::Project { exprs, schema: SchemaRef::new(p.schema.as_arrow().clone()) });
            }
            LogicalPlan::Filter(f) => {
                out.push(Stage::Filter(state.create_physical_expr(f.predicate.clone(), f.input.schema())?));
            }
            LogicalPlan::Sort(s) => {
                let order = s
                    .expr
                    .iter()
                    .map(|e| {
                        let expr = state.create_physical_expr(e.expr.clone(), s.input.schema())?;
                        Ok(PhysicalSortExpr::new(expr, SortOptions::new(!e.asc, e.nulls_first)))
                    })
                    .collect::<Result<Vec<_>, DataFusionError>>()?;
                out.push(Stage::Sort(order));
            }
            LogicalPlan::SubqueryAlias(_) => {}
            other => return Err(refuse_node(other)),
        }
    }
    Ok(Stages(out))
}

/// The aggregation of `node`, over the stages `below` (from the top down); with the
/// window's size and its place among the group columns when one `GROUP BY` expression is a
/// tumbling window of the event time.
fn aggregation(
    node: &AggregateNode,
    below: &[&LogicalPlan],
    state: &SessionState,
) -> Result<(Aggregation, Option<(i64, usize)>), StreamError> {
    let input = node.input.schema();
    let mut window: Option<(i64, usize)> = None;
    let (mut keys, mut key_types) = (Vec::new(), Vec::new());
    for (i, e) in node.group_expr.iter().enumerate() {
        if matches!(e, Expr::GroupingSet(_)) {
            return Err(unsupported("it groups by GROUPING SETS, ROLLUP or CUBE", IN_BATCH));
        }
        if let Some(size) = tumbling_window(&resolve(e, below)?)? {
            if window.is_some() {
                return Err(unsupported(
                    "it groups by two windows of the event time",
                    "group by one window: date_bin(INTERVAL '1 minute', \"timestamp\")",
                ));
            }
            window = Some((size, i));
            continue;
        }
        keys.push(state.create_physical_expr(e.clone(), input)?);
        key_types.push(e.get_type(input)?);
    }
    let physical_input = input.as_arrow();
    let mut aggregates = Vec::new();
    for e in &node.aggr_expr {
        let (name, inner) = match e {
            Expr::Alias(a) => (a.name.clone(), a.expr.as_ref()),
            other => (other.schema_name().to_string(), other),
        };
        if let Expr::AggregateFunction(AggregateFunction { params, .. }) = inner {
            if !params.order_by.is_empty() {
                return Err(unsupported(
                    "an aggregate orders its input (… ORDER BY inside the call)",
                    IN_BATCH,
                ));
            }
        }
        let planning = PhysicalPlanningContext::default();
        let lowered =
            LoweredAggregateBuilder::new(e, input, physical_input, state.execution_props(), &planning)
                .with_name(name)
                .with_human_display(e.human_display().to_string())
                .build()?;
        let (function, filter) = (lowered.aggregate, lowered.filter);
        aggregates.push(Aggregate { function, filter });
    }
    let output = SchemaRef::new(node.schema.as_arrow().clone());
    let agg = Aggregation::new(keys, key_types, window.map(|(_, i)| i), aggregates, output)?;
    Ok((agg, window))
}

/// `expr` with the columns the projections of `below` (from the top down) compute replaced
/// by what computes them, down to the scan's columns.
fn resolve(expr: &Expr, below: &[&LogicalPlan]) -> Result<Expr, StreamError> {
    let mut e = expr.clone();
    for node in below {
        let LogicalPlan::Projection(p) = node else { continue };
        e = e
            .transform_up(|x| {
                let Expr::Column(c) = &x else { return Ok(Transformed::no(x)) };
                let found = p.schema.columns().iter().position(|pc| pc.name == c.name);
                Ok(match found {
                    Some(i) => Transformed::yes(unalias(&p.expr[i]).clone()),
                    None => Transformed::no(x),
                })
            })?
            .data;
    }
    Ok(e)
}

fn unalias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => unalias(&a.expr),
        other => other,
    }
}

/// The size of the tumbling window `expr` is, when it is one over the event time: `None`
/// when it is not a window at all.
fn tumbling_window(expr: &Expr) -> Result<Option<i64>, StreamError> {
    let Expr::ScalarFunction(f) = unalias(expr) else { return Ok(None) };
    let over_event_time = |arg: Option<&Expr>| {
        let mut arg = arg.map(unalias);
        while let Some(Expr::Cast(c)) = arg {
            arg = Some(c.expr.as_ref());
        }
        matches!(arg, Some(Expr::Column(c)) if c.name == "timestamp")
    };
    let size = match f.name() {
        "date_bin" if over_event_time(f.args.get(1)) => {
            let size = match f.args.first().map(unalias) {
                Some(Expr::Literal(ScalarValue::IntervalMonthDayNano(Some(i)), _)) if i.months == 0 => {
                    i64::from(i.days) * 86_400_000 + i.nanoseconds / 1_000_000
                }
                Some(Expr::Literal(ScalarValue::IntervalDayTime(Some(i)), _)) => {
                    i64::from(i.days) * 86_400_000 + i64::from(i.milliseconds)
                }
                _ => {
                    return Err(unsupported(
                        "its window is not a fixed span of time (months vary)",
                        "give date_bin an interval in days, hours, minutes or seconds",
                    ))
                }
            };
            if let Some(origin) = f.args.get(2).map(unalias) {
                let aligned = match origin {
                    Expr::Literal(ScalarValue::TimestampNanosecond(Some(ns), _), _) => {
                        size > 0 && (ns / 1_000_000).rem_euclid(size) == 0 && ns % 1_000_000 == 0
                    }
                    _ => false,
                };
                if !aligned {
                    return Err(unsupported(
                        "its windows do not start at the epoch's multiples of their size",
                        "leave date_bin's origin out: windows then start at 00:00 UTC and every size after",
                    ));
                }
            }
            size
        }
        "date_trunc" if over_event_time(f.args.get(1)) => {
            let unit = match f.args.first().map(unalias) {
                Some(Expr::Literal(ScalarValue::Utf8(Some(u)) | ScalarValue::Utf8View(Some(u)), _)) => {
                    u.to_ascii_lowercase()
                }
                _ => String::new(),
            };
            match unit.as_str() {
                "second" => 1_000,
                "minute" => 60_000,
                "hour" => 3_600_000,
                "day" => 86_400_000,
                _ => return Err(unsupported(
                    format!("date_trunc('{unit}', …) is not a window of fixed size"),
                    "use date_trunc by second, minute, hour or day, or date_bin(INTERVAL '…', \"timestamp\")",
                )),
            }
        }
        _ => return Ok(None),
    };
    if size <= 0 {
        return Err(unsupported("its window is empty", "give the window a size of at least 1 ms"));
    }
    Ok(Some(size))
}

/// Accepts an ORDER BY of a windowed query only when it starts with the window, ascending:
/// then sorting each window's rows as it closes is the order of the whole result.
fn check_window_order(
    sort: &LogicalPlan,
    above: &[&LogicalPlan],
    agg: &AggregateNode,
    window_column: usize,
) -> Result<(), StreamError> {
    let LogicalPlan::Sort(s) = sort else { return Ok(()) };
    let between: Vec<&LogicalPlan> =
        above.iter().skip_while(|n| !std::ptr::eq(**n, sort)).skip(1).copied().collect();
    let window_name = agg.schema.field(window_column).name().clone();
    let first = s.expr.first().filter(|e| e.asc).map(|e| resolve(&e.expr, &between)).transpose()?;
    let by_window = matches!(first, Some(Expr::Column(ref c)) if c.name == window_name)
        || first.as_ref().is_some_and(|e| tumbling_window(e).ok().flatten().is_some());
    if by_window {
        return Ok(());
    }
    Err(unsupported(
        "its ORDER BY does not start with the window, and a stream has no last window",
        "order by the window first, ascending (ORDER BY 1, … when the window is the first column): each window's \
         rows then print sorted when it closes",
    ))
}
