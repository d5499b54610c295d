//! The row-wise part of a streaming query: filters, projections and (within one window) a
//! sort, evaluated batch by batch with DataFusion's own physical expressions, as its
//! `FilterExec`, `ProjectionExec` and `SortExec` would.
//!
//! A batch goes through with the input row each output row came from, so a caller can tell
//! which rows a filter kept: the event time of an aggregate's input row, the group an
//! updating row belongs to.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions, UInt32Array};
use datafusion::arrow::compute::{
    filter, filter_record_batch, lexsort_to_indices, prep_null_mask_filter, take,
};
use datafusion::arrow::compute::{take_record_batch, SortColumn};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_expr::{PhysicalExpr, PhysicalSortExpr};

/// One step.
#[derive(Debug)]
pub(crate) enum Stage {
    /// Keeps the rows where the predicate is true (NULL counts as false, as in SQL).
    Filter(Arc<dyn PhysicalExpr>),
    /// Computes the columns of `schema`.
    Project { exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef },
    /// Orders the rows (used within one window's rows).
    Sort(Vec<PhysicalSortExpr>),
}

/// Steps in the order they apply.
#[derive(Debug, Default)]
pub(crate) struct Stages(pub(crate) Vec<Stage>);

impl Stages {
    /// `batch` through every stage, with the input row of each output row.
    pub(crate) fn run(&self, batch: RecordBatch) -> Result<(RecordBatch, UInt32Array)> {
        let rows = u32::try_from(batch.num_rows())
            .map_err(|_| DataFusionError::Execution("a batch of more than 2^32 rows".into()))?;
        let mut index = UInt32Array::from_iter_values(0..rows);
        let mut batch = batch;
        for stage in &self.0 {
            match stage {
                Stage::Filter(predicate) => {
                    let mask = predicate.evaluate(&batch)?.into_array(batch.num_rows())?;
                    let mask = mask
                        .as_any()
                        .downcast_ref::<BooleanArray>()
                        .ok_or_else(|| DataFusionError::Execution("a filter that is not boolean".into()))?;
                    let mask = if mask.null_count() > 0 { prep_null_mask_filter(mask) } else { mask.clone() };
                    batch = filter_record_batch(&batch, &mask)?;
                    index = downcast_index(filter(&index, &mask)?)?;
                }
                Stage::Project { exprs, schema } => {
                    let columns = exprs
                        .iter()
                        .map(|e| e.evaluate(&batch)?.into_array(batch.num_rows()))
                        .collect::<Result<Vec<ArrayRef>>>()?;
                    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
                    batch = RecordBatch::try_new_with_options(schema.clone(), columns, &options)?;
                }
                Stage::Sort(order) => {
                    let columns = order
                        .iter()
                        .map(|s| {
                            Ok(SortColumn {
                                values: s.expr.evaluate(&batch)?.into_array(batch.num_rows())?,
                                options: Some(s.options),
                            })
                        })
                        .collect::<Result<Vec<SortColumn>>>()?;
                    let sorted = lexsort_to_indices(&columns, None)?;
                    batch = take_record_batch(&batch, &sorted)?;
                    index = downcast_index(take(&index, &sorted, None)?)?;
                }
            }
        }
        Ok((batch, index))
    }
}

fn downcast_index(array: ArrayRef) -> Result<UInt32Array> {
    array
        .as_any()
        .downcast_ref::<UInt32Array>()
        .cloned()
        .ok_or_else(|| DataFusionError::Internal("row indices are not u32".into()))
}
