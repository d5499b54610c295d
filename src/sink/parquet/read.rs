//! Reading back: a table file as the JSON lines the JSON-lines writer makes for the same
//! rows, so `verify` audits both formats with one code path.

use std::borrow::Cow;

use bytes::Bytes;
use pageviews_core::commit::WindowCount;
use pageviews_core::table::{Column, Table};
use parquet::column::reader::ColumnReader;
use parquet::data_type::ByteArray;
use parquet::errors::ParquetError as LibError;
use parquet::file::reader::{FileReader, RowGroupReader};
use parquet::file::serialized_reader::SerializedFileReader;
use parquet::schema::types::{ColumnDescriptor, SchemaDescriptor};

use super::{columns, kind, schema, Kind, ParquetError, TimestampUnit};
use crate::event::PageView;
use crate::sink::jsonl::{write_dead_letter_fields, DeadLetterFields};
use crate::sink::Row;

/// Converts a Parquet file of `table`, as [`ParquetFile`] writes it, into the JSON-lines
/// bytes [`Row::write_jsonl`] writes for the same rows in the same order, and the row count.
/// Fails on a file that is not Parquet, has other columns, or holds a value the pipeline
/// could not have written (a string that is not UTF-8, say).
pub fn to_jsonl(table: Table, file: Bytes) -> Result<(Vec<u8>, u64), ParquetError> {
    let read = |source| ParquetError::Read { table, source };
    let reader = SerializedFileReader::new(file).map_err(read)?;
    let unit = check_schema(table, reader.metadata().file_metadata().schema_descr())?;
    let mut out = Vec::new();
    let mut first_row = 0u64;
    for i in 0..reader.num_row_groups() {
        let group = reader.get_row_group(i).map_err(read)?;
        let rows = usize::try_from(group.metadata().num_rows())
            .map_err(|_| read(LibError::General("negative row count".into())))?;
        let mut values = (0..columns(table).len())
            .map(|j| read_column(&*group, j, rows).map_err(read))
            .collect::<Result<Vec<_>, _>>()?;
        for (c, v) in columns(table).iter().zip(values.iter_mut()) {
            if let (Kind::Timestamp, Values::Ints(v)) = (kind(c), v) {
                v.iter_mut().for_each(|x| *x = x.div_euclid(unit.per_ms()));
            }
        }
        let mut rows_of = RowGroupValues { table, columns: columns(table), values, first_row };
        for r in 0..rows {
            rows_of.write_jsonl(r, &mut out)?;
        }
        first_row += rows as u64;
    }
    Ok((out, first_row))
}

/// Checks the file's columns against the table's, in either timestamp unit; returns the unit.
fn check_schema(table: Table, found: &SchemaDescriptor) -> Result<TimestampUnit, ParquetError> {
    let of = |unit| schema(table, unit).map(SchemaDescriptor::new);
    let encode = |source| ParquetError::Encode { table, source };
    let expected = of(TimestampUnit::Millis).map_err(encode)?;
    if matches_schema(found, &expected) {
        return Ok(TimestampUnit::Millis);
    }
    if matches_schema(found, &of(TimestampUnit::Micros).map_err(encode)?) {
        return Ok(TimestampUnit::Micros);
    }
    let describe = |s: &SchemaDescriptor| {
        let cols: Vec<String> = s
            .columns()
            .iter()
            .map(|c| {
                let logical = c.logical_type_ref().map(|l| format!(" {l:?}")).unwrap_or_default();
                let optional = if c.max_def_level() > 0 { " OPTIONAL" } else { "" };
                format!("{} {}{logical}{optional}", c.name(), c.physical_type())
            })
            .collect();
        cols.join(", ")
    };
    Err(ParquetError::Schema { table, found: describe(found), expected: describe(&expected) })
}

fn matches_schema(found: &SchemaDescriptor, expected: &SchemaDescriptor) -> bool {
    let same = |a: &ColumnDescriptor, b: &ColumnDescriptor| {
        a.name() == b.name()
            && a.physical_type() == b.physical_type()
            && a.logical_type_ref() == b.logical_type_ref()
            && a.max_def_level() == 0
            && a.max_rep_level() == 0
    };
    found.num_columns() == expected.num_columns()
        && found.columns().iter().zip(expected.columns()).all(|(f, e)| same(f, e))
}

/// One column chunk, decoded.
pub(super) enum Values {
    Ints(Vec<i64>),
    Strings(Vec<ByteArray>),
}

pub(super) fn read_column(
    group: &dyn RowGroupReader,
    column: usize,
    rows: usize,
) -> Result<Values, LibError> {
    let short = |n: usize| LibError::General(format!("column {column} holds {n} of {rows} values"));
    // Columns are REQUIRED (checked with the schema), so there are no levels to read.
    match group.get_column_reader(column)? {
        ColumnReader::Int64ColumnReader(mut r) => {
            let mut values = Vec::with_capacity(rows);
            let (n, _, _) = r.read_records(rows, None, None, &mut values)?;
            if n != rows || values.len() != rows {
                return Err(short(n));
            }
            Ok(Values::Ints(values))
        }
        ColumnReader::ByteArrayColumnReader(mut r) => {
            let mut values = Vec::with_capacity(rows);
            let (n, _, _) = r.read_records(rows, None, None, &mut values)?;
            if n != rows || values.len() != rows {
                return Err(short(n));
            }
            Ok(Values::Strings(values))
        }
        _ => Err(LibError::General(format!("column {column} is neither INT64 nor BYTE_ARRAY"))),
    }
}

/// A decoded row group, written back out row by row.
struct RowGroupValues {
    table: Table,
    columns: &'static [Column],
    values: Vec<Values>,
    /// File-wide number of the group's first row, for error messages.
    first_row: u64,
}

impl RowGroupValues {
    fn bad(&self, r: usize, column: usize, problem: &'static str) -> ParquetError {
        let column = self.columns.get(column).map_or("?", |c| c.name);
        ParquetError::BadValue { table: self.table, row: self.first_row + r as u64, column, problem }
    }

    fn int(&self, r: usize, column: usize) -> Result<i64, ParquetError> {
        match self.values.get(column) {
            Some(Values::Ints(v)) => v.get(r).copied().ok_or_else(|| self.bad(r, column, "missing")),
            _ => Err(self.bad(r, column, "not an integer column")),
        }
    }

    fn str(&self, r: usize, column: usize) -> Result<&str, ParquetError> {
        match self.values.get(column) {
            Some(Values::Strings(v)) => {
                let value = v.get(r).ok_or_else(|| self.bad(r, column, "missing"))?;
                std::str::from_utf8(value.data()).map_err(|_| self.bad(r, column, "not UTF-8"))
            }
            _ => Err(self.bad(r, column, "not a string column")),
        }
    }

    /// Appends row `r` as the JSON-lines writer would have. Page views and aggregates go
    /// through the writer itself; a dead letter's error is stored as text, not as the
    /// `DecodeError` it came from, so its fields go to the layout `jsonl::write_dead_letter`
    /// uses.
    fn write_jsonl(&mut self, r: usize, out: &mut Vec<u8>) -> Result<(), ParquetError> {
        match self.table {
            Table::PageViews | Table::LatePageViews => {
                let pv = PageView {
                    user_id: self.int(r, 0)?,
                    postcode: Cow::Borrowed(self.str(r, 1)?),
                    timestamp: self.int(r, 2)?,
                    webpage: Cow::Borrowed(self.str(r, 3)?),
                };
                if self.table == Table::PageViews {
                    Row::View(&pv).write_jsonl(out);
                } else {
                    Row::Late(&pv, self.int(r, 4)?).write_jsonl(out);
                }
            }
            Table::PageViewAggregates => {
                let (start, end) = (self.int(r, 1)?, self.int(r, 2)?);
                let size_ms =
                    end.checked_sub(start).ok_or_else(|| self.bad(r, 1, "window size overflows"))?;
                let window =
                    WindowCount { end, postcode: self.str(r, 0)?.to_string(), views: self.int(r, 3)? as u64 };
                Row::Aggregate(&window, size_ms).write_jsonl(out);
            }
            Table::DeadLetters => {
                let fields = DeadLetterFields {
                    payload: self.str(r, 0)?,
                    payload_encoding: self.str(r, 1)?,
                    reason: self.str(r, 2)?,
                    error: self.str(r, 3)?,
                    source: self.str(r, 4)?,
                    partition: self.int(r, 5)?,
                    offset: self.int(r, 6)? as u64,
                    received_at_ms: self.int(r, 7)?,
                };
                write_dead_letter_fields(out, &fields);
            }
        }
        Ok(())
    }
}
