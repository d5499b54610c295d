//! Aggregation for a streaming query: the rows of each group of a `GROUP BY` fed to
//! DataFusion's own accumulators (count, sum, min, max, avg, count(DISTINCT …) and every
//! other aggregate function it has), kept as long as the group is live: until its window
//! closes, or for the whole query for an updating result.
//!
//! A group's key is its values in arrow's row format, which sorts as the values do, so
//! emitting groups in key order prints them ordered by their `GROUP BY` columns. A window,
//! when the query has one, is kept outside the key: it is the window's end the rows are
//! filed under (`windowed.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, TimestampMillisecondArray, UInt32Array,
};
use datafusion::arrow::compute::{cast, filter, prep_null_mask_filter, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::PhysicalExpr;

/// Bytes a group costs besides its key and its accumulators' own sizes (the map's entry,
/// the boxes): an estimate, for the memory budget.
const GROUP_OVERHEAD: usize = 64;

/// One group's accumulators, one per aggregate expression.
#[derive(Debug)]
pub(crate) struct Group {
    accumulators: Vec<Box<dyn Accumulator>>,
    /// What it was counted as using, the last time it changed.
    bytes: usize,
}

impl Group {
    /// What the group was counted as using, the last time it changed.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Groups by their key.
pub(crate) type Groups = HashMap<Box<[u8]>, Group>;

/// One aggregate function of the query.
#[derive(Debug)]
pub(crate) struct Aggregate {
    /// DataFusion's description of it, which makes the accumulators.
    pub function: Arc<AggregateFunctionExpr>,
    /// Its `FILTER (WHERE …)`, if any.
    pub filter: Option<Arc<dyn PhysicalExpr>>,
}

/// How the rows of a batch are grouped and aggregated, and how groups become rows again.
#[derive(Debug)]
pub(crate) struct Aggregation {
    /// The `GROUP BY` expressions but the window's, over the aggregate's input.
    keys: Vec<Arc<dyn PhysicalExpr>>,
    /// Turns key values into sortable bytes and back; `None` without keys.
    converter: Option<RowConverter>,
    aggregates: Vec<Aggregate>,
    /// Where the window's start goes among the output's group columns, if windowed.
    window_column: Option<usize>,
    /// The output: group columns in `GROUP BY` order, then one column per aggregate.
    output: SchemaRef,
}

/// A batch's key bytes and aggregate arguments, evaluated once.
pub(crate) struct Evaluated {
    keys: Option<Rows>,
    args: Vec<Vec<ArrayRef>>,
    filters: Vec<Option<BooleanArray>>,
}

impl Evaluated {
    /// The key of row `row`: its group.
    pub(crate) fn key(&self, row: usize) -> &[u8] {
        self.keys.as_ref().map_or(&[], |k| k.row(row).data())
    }
}

impl Aggregation {
    /// An aggregation grouping by `keys` (of `key_types`), with `window_column` the place of
    /// a window among the output's group columns, computing `aggregates` into `output`.
    pub(crate) fn new(
        keys: Vec<Arc<dyn PhysicalExpr>>,
        key_types: Vec<DataType>,
        window_column: Option<usize>,
        aggregates: Vec<Aggregate>,
        output: SchemaRef,
    ) -> Result<Self> {
        let converter = if keys.is_empty() {
            None
        } else {
            Some(RowConverter::new(key_types.into_iter().map(SortField::new).collect())?)
        };
        Ok(Aggregation { keys, converter, aggregates, window_column, output })
    }

    /// Evaluates the keys and the aggregates' arguments and filters over `batch`.
    pub(crate) fn evaluate(&self, batch: &RecordBatch) -> Result<Evaluated> {
        let n = batch.num_rows();
        let keys = match &self.converter {
            Some(converter) => {
                let columns =
                    self.keys.iter().map(|k| k.evaluate(batch)?.into_array(n)).collect::<Result<Vec<_>>>()?;
                Some(converter.convert_columns(&columns)?)
            }
            None => None,
        };
        let mut args = Vec::with_capacity(self.aggregates.len());
        let mut filters = Vec::with_capacity(self.aggregates.len());
        for a in &self.aggregates {
            let values = a
                .function
                .expressions()
                .iter()
                .map(|e| e.evaluate(batch)?.into_array(n))
                .collect::<Result<Vec<_>>>()?;
            args.push(values);
            let mask = match &a.filter {
                Some(f) => {
                    let mask = f.evaluate(batch)?.into_array(n)?;
                    let mask = mask
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .ok_or_else(|| {
                            DataFusionError::Execution("an aggregate FILTER that is not boolean".into())
                        })?
                        .clone();
                    Some(if mask.null_count() > 0 { prep_null_mask_filter(&mask) } else { mask })
                }
                None => None,
            };
            filters.push(mask);
        }
        Ok(Evaluated { keys, args, filters })
    }

    /// A new, empty group.
    pub(crate) fn new_group(&self) -> Result<Group> {
        let accumulators =
            self.aggregates.iter().map(|a| a.function.create_accumulator()).collect::<Result<Vec<_>>>()?;
        Ok(Group { accumulators, bytes: 0 })
    }

    /// Feeds rows `rows` of `ev` to `group`; returns how many bytes the group grew by, with
    /// `key_len` bytes of key (negative when it shrank).
    pub(crate) fn update(
        &self,
        group: &mut Group,
        key_len: usize,
        ev: &Evaluated,
        rows: &UInt32Array,
    ) -> Result<i64> {
        for (i, acc) in group.accumulators.iter_mut().enumerate() {
            let mut values =
                ev.args[i].iter().map(|a| take(a, rows, None)).collect::<std::result::Result<Vec<_>, _>>()?;
            if let Some(mask) = &ev.filters[i] {
                let taken = take(mask, rows, None)?;
                let mask = taken
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| DataFusionError::Internal("a filter mask that is not boolean".into()))?;
                values =
                    values.iter().map(|v| filter(v, mask)).collect::<std::result::Result<Vec<_>, _>>()?;
            }
            acc.update_batch(&values)?;
        }
        let bytes = key_len + GROUP_OVERHEAD + group.accumulators.iter().map(|a| a.size()).sum::<usize>();
        let grew = bytes as i64 - group.bytes as i64;
        group.bytes = bytes;
        Ok(grew)
    }

    /// The rows of `groups` (key bytes, group), with `window_start` for the window column:
    /// the aggregate's output, in the order given.
    pub(crate) fn rows<'a>(
        &self,
        window_start: Option<i64>,
        groups: impl IntoIterator<Item = (&'a [u8], &'a mut Group)>,
    ) -> Result<RecordBatch> {
        let (keys, groups): (Vec<&[u8]>, Vec<&mut Group>) = groups.into_iter().unzip();
        let n = groups.len();
        let mut key_columns = match &self.converter {
            Some(converter) => {
                let parser = converter.parser();
                converter.convert_rows(keys.iter().map(|k| parser.parse(k)))?
            }
            None => Vec::new(),
        }
        .into_iter();
        let group_columns = self.output.fields().len() - self.aggregates.len();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.output.fields().len());
        for i in 0..group_columns {
            let column = if Some(i) == self.window_column {
                let start = window_start
                    .ok_or_else(|| DataFusionError::Internal("no window for a window column".into()))?;
                Arc::new(TimestampMillisecondArray::from(vec![start; n])) as ArrayRef
            } else {
                key_columns
                    .next()
                    .ok_or_else(|| DataFusionError::Internal("fewer keys than group columns".into()))?
            };
            columns.push(column);
        }
        let mut groups = groups;
        for a in 0..self.aggregates.len() {
            let values = groups
                .iter_mut()
                .map(|g| g.accumulators[a].evaluate())
                .collect::<Result<Vec<ScalarValue>>>()?;
            let field = self.output.field(group_columns + a);
            let column = if values.is_empty() {
                datafusion::arrow::array::new_empty_array(field.data_type())
            } else {
                ScalarValue::iter_to_array(values)?
            };
            columns.push(column);
        }
        let columns = columns
            .into_iter()
            .zip(self.output.fields())
            .map(|(c, f)| if c.data_type() == f.data_type() { Ok(c) } else { cast(&c, f.data_type()) })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(RecordBatch::try_new(self.output.clone(), columns)?)
    }
}

/// A group's window end (when windowed) and key bytes.
pub(crate) type GroupKey = (Option<i64>, Box<[u8]>);
type BorrowedKey<'a> = (Option<i64>, &'a [u8]);

/// Rows of a batch by group: each group's key and the rows that belong to it, in the order
/// groups first appear, with `window` (a window's end) when windowed.
pub(crate) fn partition_rows(
    ev: &Evaluated,
    rows: usize,
    window: impl Fn(usize) -> Option<i64>,
) -> Vec<(GroupKey, UInt32Array)> {
    let mut index: HashMap<(Option<i64>, &[u8]), usize> = HashMap::new();
    let mut parts: Vec<(BorrowedKey<'_>, Vec<u32>)> = Vec::new();
    for row in 0..rows {
        let key = (window(row), ev.key(row));
        let at = *index.entry(key).or_insert_with(|| {
            parts.push((key, Vec::new()));
            parts.len() - 1
        });
        parts[at].1.push(row as u32);
    }
    parts.into_iter().map(|((w, k), rows)| ((w, Box::from(k)), UInt32Array::from(rows))).collect()
}
