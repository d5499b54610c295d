//! Rows split into typed column buffers, and decoded columns joined back into JSON lines:
//! what the two columnar encoders, [`super::parquet`] and [`super::orc`], share.
//!
//! Both hold a file's rows column by column until a row group (Parquet) or stripe (ORC) is
//! full, and both read a file back into the bytes [`Row::write_jsonl`] makes, so `verify`
//! audits every format with the JSON-lines code. This is the one mapping between a [`Row`]
//! and its table's columns, both ways, so the two formats cannot disagree on it; and
//! [`ColumnsError`] is what either refuses for the same reason, in the same words.

use std::borrow::Cow;
use std::collections::HashMap;

use base64::Engine;
use bytes::Bytes;
use pageviews_core::commit::WindowCount;
use pageviews_core::table::{Column, ColumnType, Table};
use pageviews_core::time::{MAX_MS, MIN_MS};
use rustc_hash::FxBuildHasher;

use crate::event::PageView;
use crate::sink::jsonl::{write_dead_letter_fields, DeadLetterFields};
use crate::sink::Row;

/// How a column is stored: its type, and for text whether it is interned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A 64-bit integer.
    Int,
    /// UTC milliseconds.
    Timestamp,
    /// A string from a small set (postcode, webpage, reason…): interned per file and
    /// dictionary-encoded.
    Label,
    /// A free-form string (payload, error text).
    Text,
}

pub(crate) fn kind(column: &Column) -> Kind {
    match (column.ty, column.low_cardinality) {
        (ColumnType::BigInt, _) => Kind::Int,
        (ColumnType::Timestamp, _) => Kind::Timestamp,
        (ColumnType::Varchar, true) => Kind::Label,
        (ColumnType::Varchar, false) => Kind::Text,
    }
}

/// What Parquet and ORC files refuse alike: a row that cannot be written, or a file that does
/// not read back into the rows pageviews writes. A refused row leaves the file as it was.
#[derive(Debug, thiserror::Error)]
pub enum ColumnsError {
    /// A row of one table was pushed into a file of another.
    #[error("a {row} row cannot go into a {} file", .table.name())]
    WrongTable {
        /// The file's table.
        table: Table,
        /// The kind of row pushed.
        row: &'static str,
    },
    /// A file holds more distinct postcodes, webpages or sources than a `u32` can count; roll
    /// files sooner.
    #[error("a {} file holds more than 2^32 distinct strings; roll files sooner", .table.name())]
    TooManyStrings {
        /// The table being written.
        table: Table,
    },
    /// The file is Parquet or ORC, but not with this table's columns.
    #[error("not a {} file: its columns are [{found}], expected [{expected}]", .table.name())]
    Schema {
        /// The table being read.
        table: Table,
        /// The file's columns.
        found: String,
        /// The table's columns.
        expected: String,
    },
    /// A value the JSON-lines writer could never have written.
    #[error("{} {format} file, row {row}, column `{column}`: {problem}", .table.name())]
    BadValue {
        /// The table being read.
        table: Table,
        /// The file's format, as the message names it: `Parquet` or `ORC`.
        format: &'static str,
        /// The row, counted from 0 over the whole file.
        row: u64,
        /// The column.
        column: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
}

/// The distinct labels of one file, each stored once: buffered rows hold a `u32` index, and
/// the values handed to the encoder share that one copy.
#[derive(Default)]
pub(crate) struct Labels {
    index: HashMap<Bytes, u32, FxBuildHasher>,
    values: Vec<Bytes>,
}

impl Labels {
    #[inline]
    fn intern(&mut self, table: Table, s: &str) -> Result<u32, ColumnsError> {
        if let Some(&i) = self.index.get(s.as_bytes()) {
            return Ok(i);
        }
        let i = u32::try_from(self.values.len()).map_err(|_| ColumnsError::TooManyStrings { table })?;
        let bytes = Bytes::copy_from_slice(s.as_bytes());
        self.values.push(bytes.clone());
        self.index.insert(bytes, i);
        Ok(i)
    }

    /// Every label so far, by index.
    pub(crate) fn values(&self) -> &[Bytes] {
        &self.values
    }
}

/// Free-form strings of one row group: one buffer, and where each value ends.
#[derive(Default)]
pub(crate) struct Texts {
    pub(crate) bytes: String,
    pub(crate) ends: Vec<usize>,
}

impl Texts {
    fn end_value(&mut self) {
        self.ends.push(self.bytes.len());
    }
}

/// Rows pushed since the last row group or stripe, column by column. The columns of each
/// kind are in table order: `ints` holds the Int and Timestamp columns, `labels` indices
/// into the file's [`Labels`], `texts` the Text columns.
#[derive(Default)]
pub(crate) struct Buffered {
    pub(crate) ints: Vec<Vec<i64>>,
    pub(crate) labels: Vec<Vec<u32>>,
    pub(crate) texts: Vec<Texts>,
    pub(crate) rows: usize,
}

impl Buffered {
    pub(crate) fn for_table(table: Table) -> Self {
        let count = |kinds: &[Kind]| table.columns().iter().filter(|c| kinds.contains(&kind(c))).count();
        Buffered {
            ints: vec![Vec::new(); count(&[Kind::Int, Kind::Timestamp])],
            labels: vec![Vec::new(); count(&[Kind::Label])],
            texts: (0..count(&[Kind::Text])).map(|_| Texts::default()).collect(),
            rows: 0,
        }
    }

    /// Buffers one row of `table`, interning its labels into `dict`. A refused row leaves
    /// both as they were.
    #[inline]
    pub(crate) fn push(
        &mut self,
        dict: &mut Labels,
        table: Table,
        row: &Row<'_>,
    ) -> Result<(), ColumnsError> {
        let Buffered { ints, labels, texts, rows } = self;
        match (*row, table) {
            (Row::View(pv), Table::PageViews) => {
                let (postcode, webpage) =
                    (dict.intern(table, &pv.postcode)?, dict.intern(table, &pv.webpage)?);
                ints[0].push(pv.user_id);
                labels[0].push(postcode);
                ints[1].push(pv.timestamp);
                labels[1].push(webpage);
            }
            (Row::Late(pv, watermark), Table::LatePageViews) => {
                let (postcode, webpage) =
                    (dict.intern(table, &pv.postcode)?, dict.intern(table, &pv.webpage)?);
                ints[0].push(pv.user_id);
                labels[0].push(postcode);
                ints[1].push(pv.timestamp);
                labels[1].push(webpage);
                ints[2].push(watermark.clamp(MIN_MS, MAX_MS));
            }
            (Row::Aggregate(w, size_ms), Table::PageViewAggregates) => {
                let postcode = dict.intern(table, &w.postcode)?;
                labels[0].push(postcode);
                ints[0].push(w.end - size_ms);
                ints[1].push(w.end);
                // The same 64 bits: a count past i64::MAX reads back negative elsewhere but
                // round-trips here.
                ints[2].push(w.views as i64);
            }
            (Row::DeadLetter { payload, error, origin, received_at }, Table::DeadLetters) => {
                // Verbatim when UTF-8, base64 otherwise: the choice jsonl::write_dead_letter makes.
                let text = std::str::from_utf8(payload).ok();
                let encoding = dict.intern(table, if text.is_some() { "utf8" } else { "base64" })?;
                let (reason, source) =
                    (dict.intern(table, error.reason().as_str())?, dict.intern(table, origin.source)?);
                match text {
                    Some(text) => texts[0].bytes.push_str(text),
                    None => {
                        base64::engine::general_purpose::STANDARD.encode_string(payload, &mut texts[0].bytes)
                    }
                }
                texts[0].end_value();
                labels[0].push(encoding);
                labels[1].push(reason);
                texts[1].bytes.push_str(&error.to_string());
                texts[1].end_value();
                labels[2].push(source);
                ints[0].push(i64::from(origin.partition));
                // Kafka offsets fit i64; the bit pattern round-trips whatever the value.
                ints[1].push(origin.offset as i64);
                ints[2].push(received_at);
            }
            (row, _) => return Err(ColumnsError::WrongTable { table, row: row_kind(&row) }),
        }
        *rows += 1;
        Ok(())
    }

    /// Bytes of memory the buffered rows take: 8 per Int/Timestamp column, 4 per label
    /// column, the text plus 8 per text column. Encoded they are usually much smaller, so
    /// this is an upper bound for roll-by-size decisions, not a forecast.
    pub(crate) fn bytes(&self) -> usize {
        // Every row adds one value to each int and label column: a fixed width. Only text
        // columns (dead letters) vary.
        let fixed = self.ints.len() * 8 + self.labels.len() * 4 + self.texts.len() * 8;
        self.rows * fixed + self.texts.iter().map(|t| t.bytes.len()).sum::<usize>()
    }
}

fn row_kind(row: &Row<'_>) -> &'static str {
    match row {
        Row::View(_) => Table::PageViews.name(),
        Row::Late(..) => Table::LatePageViews.name(),
        Row::Aggregate(..) => Table::PageViewAggregates.name(),
        Row::DeadLetter { .. } => Table::DeadLetters.name(),
    }
}

/// One column of a row group or stripe, decoded; strings as the reader holds them.
pub(crate) enum Values<S> {
    Ints(Vec<i64>),
    Strings(Vec<S>),
}

/// The decoded columns of a row group or stripe, in table order, written back out row by
/// row.
pub(crate) struct Decoded<S> {
    pub(crate) table: Table,
    pub(crate) values: Vec<Values<S>>,
    /// File-wide number of the first row, for error messages.
    pub(crate) first_row: u64,
    /// The file's format, for error messages: `Parquet` or `ORC`.
    pub(crate) format: &'static str,
}

impl<S: AsRef<[u8]>> Decoded<S> {
    fn bad(&self, r: usize, column: usize, problem: &'static str) -> ColumnsError {
        let column = self.table.columns().get(column).map_or("?", |c| c.name);
        let (table, format, row) = (self.table, self.format, self.first_row + r as u64);
        ColumnsError::BadValue { table, format, row, column, problem }
    }

    fn int(&self, r: usize, column: usize) -> Result<i64, ColumnsError> {
        match self.values.get(column) {
            Some(Values::Ints(v)) => v.get(r).copied().ok_or_else(|| self.bad(r, column, "missing")),
            _ => Err(self.bad(r, column, "not an integer column")),
        }
    }

    fn str(&self, r: usize, column: usize) -> Result<&str, ColumnsError> {
        match self.values.get(column) {
            Some(Values::Strings(v)) => {
                let value = v.get(r).ok_or_else(|| self.bad(r, column, "missing"))?;
                std::str::from_utf8(value.as_ref()).map_err(|_| self.bad(r, column, "not UTF-8"))
            }
            _ => Err(self.bad(r, column, "not a string column")),
        }
    }

    /// Appends row `r` as the JSON-lines writer would have. Page views and aggregates go
    /// through the writer itself; a dead letter's error is stored as text, not as the
    /// `DecodeError` it came from, so its fields go to the layout `jsonl::write_dead_letter`
    /// uses.
    pub(crate) fn write_jsonl(&self, r: usize, out: &mut Vec<u8>) -> Result<(), ColumnsError> {
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
