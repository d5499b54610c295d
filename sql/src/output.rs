//! Query results as text: boxed tables (like Flink's tableau mode), CSV, or JSON lines.
//!
//! Timestamps print as `yyyy-MM-dd HH:mm:ss.SSS` in every format, the form the pipeline
//! writes, so a value can be pasted back into a filter. JSON keeps null columns as `null`
//! so every row has every key.
//!
//! Every format is written as it goes, so printing needs little memory besides the result
//! itself, which counts against the session's budget. The boxed table is arrow's
//! (comfy-table with arrow's preset), character for character, but written in two passes
//! over the rows (the columns' widths, then the lines) instead of built whole: a table held
//! in memory took about twenty times the result (docs/measurements.md).

use std::fmt::Write as _;
use std::io::Write;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use unicode_width::UnicodeWidthStr;

/// The timestamp format of the tables, in chrono's notation.
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S%.3f";

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// A boxed table with a header row.
    #[default]
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per row.
    Json,
}

/// How values print in a table: NULL, timestamps as the tables write them.
pub(crate) fn table_options() -> FormatOptions<'static> {
    FormatOptions::default()
        .with_null("NULL")
        .with_timestamp_format(Some(TIMESTAMP_FORMAT))
        .with_types_info(false)
}

/// Writes `batches` to `out` in `format`. An empty result prints the header only (table,
/// CSV) or nothing (JSON).
pub fn write_batches(out: &mut dyn Write, format: Format, batches: &[RecordBatch]) -> Result<(), ArrowError> {
    match format {
        Format::Table => write_table(out, batches, &table_options())?,
        Format::Csv => {
            let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .with_timestamp_format(TIMESTAMP_FORMAT.to_string())
                .build(&mut *out);
            for batch in batches {
                writer.write(batch)?;
            }
        }
        Format::Json => {
            let mut writer = datafusion::arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .with_timestamp_format(TIMESTAMP_FORMAT.to_string())
                .build::<_, datafusion::arrow::json::writer::LineDelimited>(&mut *out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Writes `batches` as a boxed table: a `+---+` rule, the header, a rule, the rows, a rule;
/// each value left-aligned with a space either side, and a value's lines (split at `\n`) on
/// lines of their own. Columns are as wide as their widest line, measured in terminal
/// columns (`unicode-width`, as comfy-table does).
fn write_table(
    out: &mut dyn Write,
    batches: &[RecordBatch],
    options: &FormatOptions,
) -> Result<(), ArrowError> {
    let Some(schema) = batches.first().map(RecordBatch::schema) else {
        // No schema: no header and no columns, the top and bottom rules alone.
        writeln!(out, "++\n++")?;
        return Ok(());
    };
    let header: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| width(h)).collect();
    let mut value = String::new();
    for batch in batches {
        for (column, formatter) in formatters(batch, options)?.iter().enumerate() {
            for row in 0..batch.num_rows() {
                value.clear();
                write!(value, "{}", formatter.value(row))
                    .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
                widths[column] = widths[column].max(width(&value));
            }
        }
    }
    let rule = widths.iter().fold(String::from("+"), |mut rule, w| {
        rule.extend(std::iter::repeat_n('-', w + 2));
        rule.push('+');
        rule
    });
    writeln!(out, "{rule}")?;
    write_row(out, &widths, &header)?;
    writeln!(out, "{rule}")?;
    let mut cells = vec![String::new(); widths.len()];
    for batch in batches {
        let formatters = formatters(batch, options)?;
        for row in 0..batch.num_rows() {
            for (cell, formatter) in cells.iter_mut().zip(&formatters) {
                cell.clear();
                write!(cell, "{}", formatter.value(row))
                    .map_err(|e| ArrowError::ExternalError(Box::new(e)))?;
            }
            write_row(out, &widths, &cells)?;
        }
    }
    writeln!(out, "{rule}")?;
    Ok(())
}

fn formatters<'a>(
    batch: &'a RecordBatch,
    options: &FormatOptions<'a>,
) -> Result<Vec<ArrayFormatter<'a>>, ArrowError> {
    batch.columns().iter().map(|column| ArrayFormatter::try_new(column.as_ref(), options)).collect()
}

/// The widest line of `text`, in terminal columns.
fn width(text: &str) -> usize {
    text.split('\n').map(UnicodeWidthStr::width).max().unwrap_or(0)
}

/// One row of the table: as many lines as its tallest value.
fn write_row(out: &mut dyn Write, widths: &[usize], cells: &[String]) -> std::io::Result<()> {
    let height = cells.iter().map(|c| c.split('\n').count()).max().unwrap_or(1);
    let mut lines: Vec<std::str::Split<'_, char>> = cells.iter().map(|c| c.split('\n')).collect();
    let mut line = String::new();
    for _ in 0..height {
        line.clear();
        line.push('|');
        for (parts, w) in lines.iter_mut().zip(widths) {
            let part = parts.next().unwrap_or("");
            line.push(' ');
            line.push_str(part);
            line.extend(std::iter::repeat_n(' ', w.saturating_sub(part.width()) + 1));
            line.push('|');
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMillisecondArray};
    use datafusion::arrow::util::pretty::pretty_format_batches_with_options;

    use super::*;

    fn batch(names: &[Option<&str>], counts: &[Option<i64>], times: &[Option<i64>]) -> RecordBatch {
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("name", Arc::new(StringArray::from(names.to_vec()))),
            ("n", Arc::new(Int64Array::from(counts.to_vec()))),
            ("at", Arc::new(TimestampMillisecondArray::from(times.to_vec()))),
        ];
        RecordBatch::try_from_iter(columns).expect("a batch")
    }

    /// What arrow's table printer makes of `batches`, as `write_batches` printed it.
    fn arrows(batches: &[RecordBatch]) -> String {
        let options = FormatOptions::default()
            .with_null("NULL")
            .with_timestamp_format(Some(TIMESTAMP_FORMAT))
            .with_types_info(false);
        format!("{}\n", pretty_format_batches_with_options(batches, &options).expect("arrow's table"))
    }

    fn ours(batches: &[RecordBatch]) -> String {
        let mut out = Vec::new();
        write_batches(&mut out, Format::Table, batches).expect("our table");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn tables_are_arrows_character_for_character() {
        let cases = [
            vec![batch(&[Some("SW1A 1AA"), None], &[Some(5), Some(-12)], &[Some(1_577_836_800_000), None])],
            // Columns sized over several batches, wider in the second.
            vec![
                batch(&[Some("a")], &[Some(1)], &[Some(0)]),
                batch(&[Some("a much longer name")], &[Some(1_234_567_890)], &[Some(86_400_000)]),
            ],
            // Wide, combining and zero-width characters, lines, blanks at the ends.
            vec![batch(
                &[
                    Some("漢字"),
                    Some("é and e\u{301}"),
                    Some("🙂"),
                    Some("two\nlines\n"),
                    Some(""),
                    Some(" x "),
                ],
                &[None, Some(1), Some(2), Some(3), Some(4), Some(5)],
                &[None, None, Some(1), Some(2), Some(3), Some(4)],
            )],
            // No rows: the header alone.
            vec![batch(&[], &[], &[])],
            vec![],
        ];
        for batches in cases {
            assert_eq!(ours(&batches), arrows(&batches));
        }
    }
}
