//! Printing a streaming result as it comes, in Flink's result modes.
//!
//! On a terminal (`--format table`):
//! - `table`: rows print as boxed rows when they arrive (append-only results); an updating
//!   result is a grid redrawn in place, in the order of its `GROUP BY` columns;
//! - `tableau`: boxed rows with an `op` column (`+I`, `-U`, `+U`, `-D`);
//! - `changelog`: one `+I[…]` line per row or change.
//!
//! A box cannot be measured before its rows are known, so column widths come from the
//! types (as Flink's tableau does) and longer values are cut with `...`. Elsewhere (a pipe,
//! `--format csv|json`): CSV with one header, or JSON lines, flushed per batch, with an `op`
//! column first when the result updates.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::display::ArrayFormatter;
use unicode_width::UnicodeWidthStr;

use super::updating::{Changes, Op};
use crate::output::{self, table_options, Format, TIMESTAMP_FORMAT};
use crate::settings::ResultMode;

/// Most rows of an updating result a grid shows: the rest is counted below it.
pub(crate) const GRID_ROWS: usize = 40;

/// How rows are printed.
#[derive(Debug)]
enum Style {
    /// Boxed rows of fixed widths as they come, with an `op` column when `ops`.
    Boxed { ops: bool, widths: Vec<usize>, started: bool },
    /// `+I[a, b]` lines.
    Changelog,
    /// The whole result, redrawn in place; how many lines the last drawing took.
    Grid { drawn: usize },
    /// CSV, with an `op` column when `ops`.
    Csv { ops: bool, started: bool },
    /// JSON lines, with an `op` key when `ops`.
    Json { ops: bool },
}

/// Prints one streaming statement's result.
pub(crate) struct Renderer<'a> {
    out: &'a mut dyn Write,
    style: Style,
    schema: SchemaRef,
    /// Rows or changes printed.
    printed: u64,
}

impl<'a> Renderer<'a> {
    /// A renderer of rows of `schema` to `out`: a terminal when `terminal`; `updating`
    /// when the result changes rows it printed.
    pub(crate) fn new(
        out: &'a mut dyn Write,
        format: Format,
        mode: ResultMode,
        terminal: bool,
        updating: bool,
        schema: SchemaRef,
    ) -> Self {
        let boxed = |ops: bool| Style::Boxed { ops, widths: widths(&schema, ops), started: false };
        let style = match (format, mode) {
            (Format::Csv, _) => Style::Csv { ops: updating, started: false },
            (Format::Json, _) => Style::Json { ops: updating },
            (Format::Table, ResultMode::Changelog) => Style::Changelog,
            (Format::Table, ResultMode::Tableau) => boxed(true),
            (Format::Table, ResultMode::Table) if updating && terminal => Style::Grid { drawn: 0 },
            (Format::Table, ResultMode::Table) => boxed(updating),
        };
        Renderer { out, style, schema, printed: 0 }
    }

    /// True when the result is drawn whole, in place, rather than told change by change.
    pub(crate) fn is_grid(&self) -> bool {
        matches!(self.style, Style::Grid { .. })
    }

    /// Rows or changes printed so far.
    pub(crate) fn printed(&self) -> u64 {
        self.printed
    }

    /// New rows of an append-only result.
    pub(crate) fn rows(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        let ops = vec![Op::Insert; batch.num_rows()];
        self.changes(&Changes { ops, rows: batch.clone() })
    }

    /// Changes of the result, in order.
    pub(crate) fn changes(&mut self, changes: &Changes) -> Result<(), ArrowError> {
        let rows = &changes.rows;
        if rows.num_rows() == 0 {
            return Ok(());
        }
        match &mut self.style {
            Style::Boxed { ops, widths, started } => {
                let mut text = String::new();
                if !*started {
                    let rule = rule(widths);
                    let mut header: Vec<String> = Vec::new();
                    if *ops {
                        header.push("op".into());
                    }
                    header.extend(self.schema.fields().iter().map(|f| f.name().clone()));
                    let _ = writeln!(text, "{rule}\n{}\n{rule}", line(widths, &header));
                    *started = true;
                }
                let formatters = formatters(rows)?;
                for row in 0..rows.num_rows() {
                    let mut cells: Vec<String> = Vec::with_capacity(widths.len());
                    if *ops {
                        cells.push(changes.ops[row].as_str().to_string());
                    }
                    for f in &formatters {
                        cells.push(f.value(row).to_string());
                    }
                    let _ = writeln!(text, "{}", line(widths, &cells));
                }
                self.out.write_all(text.as_bytes())?;
            }
            Style::Changelog | Style::Grid { .. } => {
                let formatters = formatters(rows)?;
                let mut text = String::new();
                for row in 0..rows.num_rows() {
                    let values: Vec<String> = formatters.iter().map(|f| f.value(row).to_string()).collect();
                    let _ = writeln!(text, "{}[{}]", changes.ops[row].as_str(), values.join(", "));
                }
                self.out.write_all(text.as_bytes())?;
            }
            Style::Csv { ops, started } => {
                let batch = if *ops { with_ops(&changes.ops, rows)? } else { rows.clone() };
                let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(!*started)
                    .with_timestamp_format(TIMESTAMP_FORMAT.to_string())
                    .build(&mut *self.out);
                writer.write(&batch)?;
                *started = true;
            }
            Style::Json { ops } => {
                let batch = if *ops { with_ops(&changes.ops, rows)? } else { rows.clone() };
                output::write_batches(&mut *self.out, Format::Json, &[batch])?;
            }
        }
        self.printed += rows.num_rows() as u64;
        self.out.flush()?;
        Ok(())
    }

    /// Draws the updating result `view` (its first rows) in place of the last drawing, with
    /// `total` rows in all and a status line.
    pub(crate) fn grid(&mut self, view: &RecordBatch, total: usize, status: &str) -> Result<(), ArrowError> {
        let Style::Grid { drawn } = &mut self.style else { return Ok(()) };
        let mut text = Vec::new();
        output::write_batches(&mut text, Format::Table, std::slice::from_ref(view))?;
        let mut text = String::from_utf8_lossy(&text).into_owned();
        if total > view.num_rows() {
            let _ = writeln!(text, "… and {} more rows", total - view.num_rows());
        }
        let _ = writeln!(text, "{status}");
        let mut frame = String::new();
        if *drawn > 0 {
            // Up to the first line of the last drawing, and clear from there down.
            let _ = write!(frame, "\x1b[{}F\x1b[J", *drawn);
        }
        frame.push_str(&text);
        *drawn = text.matches('\n').count();
        self.out.write_all(frame.as_bytes())?;
        self.out.flush()?;
        Ok(())
    }

    /// Ends the result: the bottom rule of a box.
    pub(crate) fn finish(&mut self) -> Result<(), ArrowError> {
        if let Style::Boxed { widths, started: true, .. } = &self.style {
            writeln!(self.out, "{}", rule(widths))?;
        }
        self.out.flush()?;
        Ok(())
    }
}

/// Column widths from the types (Flink's tableau: a BIGINT takes 20, a TIMESTAMP(3) 23), at
/// least the header's.
fn widths(schema: &Schema, ops: bool) -> Vec<usize> {
    let mut out = Vec::new();
    if ops {
        out.push(2);
    }
    for f in schema.fields() {
        let by_type = match f.data_type() {
            DataType::Int64 | DataType::UInt64 => 20,
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32 => 11,
            DataType::Float32
            | DataType::Float64
            | DataType::Decimal128(_, _)
            | DataType::Decimal256(_, _) => 24,
            DataType::Timestamp(_, _) => 23,
            DataType::Date32 | DataType::Date64 => 10,
            DataType::Boolean => 5,
            _ => 30,
        };
        out.push(by_type.max(f.name().width()));
    }
    out
}

fn rule(widths: &[usize]) -> String {
    widths.iter().fold(String::from("+"), |mut rule, w| {
        rule.extend(std::iter::repeat_n('-', w + 2));
        rule.push('+');
        rule
    })
}

/// One boxed line; a value wider than its column is cut and ends in `...`, and its lines
/// are joined with spaces.
fn line(widths: &[usize], cells: &[String]) -> String {
    let mut out = String::from("|");
    for (cell, w) in cells.iter().zip(widths) {
        let cell = cell.replace('\n', " ");
        let shown = if cell.width() > *w {
            cut(&cell, w.saturating_sub(3)).trim_end().to_string() + "..."
        } else {
            cell
        };
        out.push(' ');
        out.push_str(&shown);
        out.extend(std::iter::repeat_n(' ', w.saturating_sub(shown.width()) + 1));
        out.push('|');
    }
    out
}

/// The longest start of `text` at most `width` terminal columns wide.
fn cut(text: &str, width: usize) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let mut next = out.clone();
        next.push(c);
        if next.width() > width {
            break;
        }
        out = next;
    }
    out
}

fn formatters(batch: &RecordBatch) -> Result<Vec<ArrayFormatter<'_>>, ArrowError> {
    let options = table_options();
    batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options)).collect()
}

/// `rows` with an `op` column first.
fn with_ops(ops: &[Op], rows: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let mut fields = vec![Arc::new(Field::new("op", DataType::Utf8, false))];
    fields.extend(rows.schema().fields().iter().cloned());
    let mut columns: Vec<ArrayRef> =
        vec![Arc::new(StringArray::from_iter_values(ops.iter().map(|o| o.as_str())))];
    columns.extend(rows.columns().iter().cloned());
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;

    fn batch(names: &[&str], counts: &[i64]) -> RecordBatch {
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("postcode", Arc::new(StringArray::from(names.to_vec()))),
            ("views", Arc::new(Int64Array::from(counts.to_vec()))),
        ];
        RecordBatch::try_from_iter(columns).unwrap()
    }

    fn render(format: Format, mode: ResultMode, updating: bool, f: impl Fn(&mut Renderer<'_>)) -> String {
        let mut out = Vec::new();
        {
            let schema = batch(&[], &[]).schema();
            let mut r = Renderer::new(&mut out, format, mode, false, updating, schema);
            f(&mut r);
            r.finish().unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn boxed_rows_print_as_they_come_with_widths_from_the_types() {
        let text = render(Format::Table, ResultMode::Table, false, |r| {
            r.rows(&batch(&["SW1A 1AA"], &[3])).unwrap();
            r.rows(&batch(&["a postcode far longer than thirty columns"], &[12])).unwrap();
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], format!("| postcode{} | views{} |", " ".repeat(22), " ".repeat(15)));
        assert_eq!(lines[3], format!("| SW1A 1AA{} | 3{} |", " ".repeat(22), " ".repeat(19)));
        assert_eq!(lines[4], format!("| a postcode far longer than...  | 12{} |", " ".repeat(18)));
        assert_eq!(lines.len(), 6, "{text}");
    }

    #[test]
    fn changes_carry_flinks_ops_in_every_style() {
        let changes = Changes {
            ops: vec![Op::Insert, Op::UpdateBefore, Op::UpdateAfter],
            rows: batch(&["A", "A", "A"], &[1, 1, 2]),
        };
        let changelog = render(Format::Table, ResultMode::Changelog, true, |r| r.changes(&changes).unwrap());
        assert_eq!(changelog, "+I[A, 1]\n-U[A, 1]\n+U[A, 2]\n");
        let csv = render(Format::Csv, ResultMode::Table, true, |r| {
            r.changes(&changes).unwrap();
            r.changes(&changes).unwrap();
        });
        assert_eq!(csv.lines().next(), Some("op,postcode,views"));
        assert_eq!(csv.lines().filter(|l| l.starts_with("op")).count(), 1, "one header: {csv}");
        assert_eq!(csv.lines().nth(2), Some("-U,A,1"));
        let json = render(Format::Json, ResultMode::Table, true, |r| r.changes(&changes).unwrap());
        assert_eq!(json.lines().next(), Some(r#"{"op":"+I","postcode":"A","views":1}"#));
        let tableau = render(Format::Table, ResultMode::Tableau, true, |r| r.changes(&changes).unwrap());
        assert!(tableau.lines().nth(1).unwrap().starts_with("| op | postcode"), "{tableau}");
        assert!(tableau.lines().nth(4).unwrap().starts_with("| -U | A "), "{tableau}");
    }
}
