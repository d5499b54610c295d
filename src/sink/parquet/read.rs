//! Reading back: a table file as the JSON lines the JSON-lines writer makes for the same
//! rows, so `verify` audits both formats with one code path.

use bytes::Bytes;
use pageviews_core::table::Table;
use parquet::column::reader::ColumnReader;
use parquet::data_type::ByteArray;
use parquet::errors::ParquetError as LibError;
use parquet::file::reader::{FileReader, RowGroupReader};
use parquet::file::serialized_reader::SerializedFileReader;
use parquet::schema::types::{ColumnDescriptor, SchemaDescriptor};

use super::{columns, kind, schema, Kind, ParquetError, TimestampUnit};
use crate::sink::columns::Decoded;
pub(super) use crate::sink::columns::Values;
use crate::sink::ColumnsError;

/// Converts a Parquet file of `table`, as `ParquetFile` writes it, into the JSON-lines
/// bytes [`crate::sink::Row::write_jsonl`] writes for the same rows in the same order, and the row count.
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
        let decoded = Decoded { table, values, first_row, format: "Parquet" };
        for r in 0..rows {
            decoded.write_jsonl(r, &mut out)?;
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
    Err(ColumnsError::Schema { table, found: describe(found), expected: describe(&expected) }.into())
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

pub(super) fn read_column(
    group: &dyn RowGroupReader,
    column: usize,
    rows: usize,
) -> Result<Values<ByteArray>, LibError> {
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
