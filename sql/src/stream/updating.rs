//! An aggregate without a window over the topic: an updating result, as Flink's SQL client
//! shows one. Each group's row changes as records arrive; what changed since the last look
//! is told as changes (`+I` a new row, `-U`/`+U` a row before and after an update, `-D` a
//! row a `HAVING` no longer keeps), and the whole result can be drawn as a grid.
//!
//! It holds one group per distinct key (with DataFusion's accumulators) and the row each
//! group shows: the result itself, and nothing of the records it came from.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::ScalarValue;
use datafusion::error::Result;

use super::groups::{partition_rows, Aggregation, Groups};
use super::stages::Stages;

/// What happened to a row of the result (Flink's `RowKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// A new row.
    Insert,
    /// A row as it was before an update.
    UpdateBefore,
    /// The same row after the update.
    UpdateAfter,
    /// A row that left the result.
    Delete,
}

impl Op {
    /// Flink's short name: `+I`, `-U`, `+U`, `-D`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "+I",
            Op::UpdateBefore => "-U",
            Op::UpdateAfter => "+U",
            Op::Delete => "-D",
        }
    }
}

/// Rows with what happened to each.
pub(crate) struct Changes {
    /// One per row.
    pub ops: Vec<Op>,
    /// The rows, in the result's schema.
    pub rows: RecordBatch,
}

/// The updating result of a query.
pub(crate) struct Updating {
    groups: Groups,
    /// Groups changed since the last look.
    dirty: BTreeSet<Box<[u8]>>,
    /// The row each group shows (after the stages above the aggregate), by key.
    shown: BTreeMap<Box<[u8]>, Vec<ScalarValue>>,
    /// The result's schema, once a row was made.
    schema: Option<SchemaRef>,
    /// Memory the groups and rows hold, estimated.
    bytes: i64,
}

impl Updating {
    pub(crate) fn new() -> Self {
        Updating {
            groups: Groups::new(),
            dirty: BTreeSet::new(),
            shown: BTreeMap::new(),
            schema: None,
            bytes: 0,
        }
    }

    /// Groups, and what they hold, estimated.
    pub(crate) fn held(&self) -> (usize, i64) {
        (self.groups.len(), self.bytes)
    }

    /// Counts `input` (the aggregate's input rows of one poll) into its groups.
    pub(crate) fn on_batch(&mut self, input: &RecordBatch, agg: &Aggregation) -> Result<()> {
        if input.num_rows() == 0 {
            return Ok(());
        }
        let ev = agg.evaluate(input)?;
        for ((_, key), rows) in partition_rows(&ev, input.num_rows(), |_| None) {
            let group = match self.groups.get_mut(&key) {
                Some(g) => g,
                None => self.groups.entry(key.clone()).or_insert(agg.new_group()?),
            };
            self.bytes += agg.update(group, key.len(), &ev, &rows)?;
            self.dirty.insert(key);
        }
        Ok(())
    }

    /// What changed since the last call, in key order.
    pub(crate) fn changes(&mut self, agg: &Aggregation, above: &Stages) -> Result<Option<Changes>> {
        if self.dirty.is_empty() {
            return Ok(None);
        }
        let keys: Vec<Box<[u8]>> = std::mem::take(&mut self.dirty).into_iter().collect();
        let mut picked = Vec::with_capacity(keys.len());
        // Take each dirty group out of the map for a moment, to lend them all at once.
        for key in &keys {
            if let Some(group) = self.groups.remove(key) {
                picked.push((key.clone(), group));
            }
        }
        let rows = agg.rows(None, picked.iter_mut().map(|(k, g)| (&k[..], g)));
        for (key, group) in picked {
            self.groups.insert(key, group);
        }
        let (out, kept) = above.run(rows?)?;
        let schema = out.schema();
        self.schema = Some(schema.clone());
        let mut now: Vec<Option<Vec<ScalarValue>>> = vec![None; keys.len()];
        for (j, i) in kept.values().iter().enumerate() {
            now[*i as usize] = Some(row(&out, j)?);
        }
        let mut ops = Vec::new();
        let mut changed: Vec<Vec<ScalarValue>> = Vec::new();
        for (key, new) in keys.into_iter().zip(now) {
            let old = self.shown.get(&key);
            match (old, new) {
                (None, None) => {}
                (Some(old), Some(new)) if *old == new => {}
                (None, Some(new)) => {
                    ops.push(Op::Insert);
                    changed.push(new.clone());
                    self.bytes += size(&new) + key.len() as i64;
                    self.shown.insert(key, new);
                }
                (Some(old), Some(new)) => {
                    ops.extend([Op::UpdateBefore, Op::UpdateAfter]);
                    changed.push(old.clone());
                    changed.push(new.clone());
                    self.bytes += size(&new) - size(old);
                    self.shown.insert(key, new);
                }
                (Some(old), None) => {
                    ops.push(Op::Delete);
                    changed.push(old.clone());
                    self.bytes -= size(old) + key.len() as i64;
                    self.shown.remove(&key);
                }
            }
        }
        if ops.is_empty() {
            return Ok(None);
        }
        Ok(Some(Changes { ops, rows: batch(&schema, changed)? }))
    }

    /// The result as it stands, in key order: its first `max` rows, and how many there are.
    pub(crate) fn view(&self, max: usize) -> Result<Option<(RecordBatch, usize)>> {
        let Some(schema) = &self.schema else { return Ok(None) };
        let rows: Vec<Vec<ScalarValue>> = self.shown.values().take(max).cloned().collect();
        Ok(Some((batch(schema, rows)?, self.shown.len())))
    }
}

/// Row `j` of `batch` as values.
fn row(batch: &RecordBatch, j: usize) -> Result<Vec<ScalarValue>> {
    batch.columns().iter().map(|c| ScalarValue::try_from_array(c, j)).collect()
}

/// What a row's values hold, estimated.
fn size(row: &[ScalarValue]) -> i64 {
    row.iter().map(|v| v.size() as i64).sum()
}

/// `rows` as a batch of `schema`.
fn batch(schema: &SchemaRef, rows: Vec<Vec<ScalarValue>>) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate() {
        let column = if rows.is_empty() {
            datafusion::arrow::array::new_empty_array(field.data_type())
        } else {
            ScalarValue::iter_to_array(rows.iter().map(|r| r[i].clone()))?
        };
        columns.push(column);
    }
    let options = datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows.len()));
    Ok(RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)?)
}
