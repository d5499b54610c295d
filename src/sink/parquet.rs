//! Parquet table files: rows in, Parquet bytes out a part at a time, and back to JSON lines.
//!
//! The Parquet counterpart of [`super::jsonl`], at the same place in the flow: the table
//! writer pushes each row into a [`ParquetFile`] and ships whatever [`ParquetFile::output`]
//! holds as the next multipart-upload part. Rows wait in per-column buffers until a row group
//! is full and are only then encoded, so a row costs a few `Vec` pushes and, for the
//! low-cardinality strings, one hash lookup into a per-file dictionary.
//!
//! What it guarantees:
//! - Everything ever taken from `output`, in order, is a prefix of the final file: bytes once
//!   shipped never change.
//! - [`ParquetFile::checkpoint_footer`] returns the bytes that, appended to that prefix, make a
//!   complete file holding every row pushed so far, while the file stays open for more rows.
//!   Page indexes are off (statistics are per column chunk), because they are written only at
//!   close: so a checkpoint footer and the final footer describe the same kind of file, and
//!   the final footer equals a checkpoint footer taken after the last row.
//! - [`to_jsonl`] turns a table file back into exactly the bytes [`Row::write_jsonl`] makes for
//!   the same rows, so `pageviews verify` audits Parquet tables with the JSON-lines code.
//!
//! ```
//! use pageviews::event::PageView;
//! use pageviews::sink::parquet::{to_jsonl, ParquetFile};
//! use pageviews::sink::{Row, Table};
//!
//! let pv = PageView { user_id: 1, postcode: "SW19".into(), webpage: "/".into(), timestamp: 0 };
//! let mut file = ParquetFile::new(Table::PageViews, 128 * 1024)?;
//! file.push(&Row::View(&pv))?;
//! let mut shipped = std::mem::take(file.output()); // a multipart-upload part
//! let footer = file.checkpoint_footer()?; // readable up to here, yet still open
//! let at_checkpoint = [shipped.as_slice(), file.output().as_slice(), footer.as_slice()].concat();
//! assert_eq!(to_jsonl(Table::PageViews, at_checkpoint.into())?.1, 1);
//! shipped.append(file.output());
//! shipped.extend(file.finish()?); // the last part
//! let mut want = Vec::new();
//! Row::View(&pv).write_jsonl(&mut want);
//! assert_eq!(to_jsonl(Table::PageViews, shipped.into())?, (want, 1));
//! # Ok::<(), pageviews::sink::parquet::ParquetError>(())
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use parquet::basic::{Compression, LogicalType, Repetition, TimeUnit, Type as PhysicalType};
use parquet::column::reader::ColumnReader;
use parquet::column::writer::ColumnWriter;
use parquet::data_type::ByteArray;
use parquet::errors::ParquetError as LibError;
use parquet::file::metadata::{FileMetaData, ParquetMetaData, ParquetMetaDataWriter};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::{FileReader, RowGroupReader};
use parquet::file::serialized_reader::SerializedFileReader;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::{ColumnDescriptor, ColumnPath, SchemaDescriptor, Type, TypePtr};

use super::{Row, Table};
use crate::event::timestamp::{write_timestamp, MAX_MS, MIN_MS};
use crate::event::{write_json_str, PageView};
use crate::window::{Fnv, WindowCount};

/// File extension of Parquet table files.
pub const EXTENSION: &str = "parquet";

/// Written into every file's metadata, in the `<name> version <v>` form readers parse.
const CREATED_BY: &str = concat!("pageviews version ", env!("CARGO_PKG_VERSION"));

/// Values handed to the column writer per call: bounds the `ByteArray` scratch, whatever the
/// row-group size.
const BATCH: usize = 8 * 1024;

/// Why a Parquet file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ParquetError {
    /// The Parquet library refused to encode: a bug here, or a file past Parquet's limits
    /// (32767 row groups, i.e. checkpoints plus full row groups).
    #[error("encoding a {} Parquet file: {source}", .table.name())]
    Encode {
        /// The table being written.
        table: Table,
        /// The library's error.
        source: LibError,
    },
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
    /// The bytes are not a readable Parquet file.
    #[error("reading a {} Parquet file: {source}", .table.name())]
    Read {
        /// The table being read.
        table: Table,
        /// The library's error.
        source: LibError,
    },
    /// The file is Parquet, but not with this table's columns.
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
    #[error("{} Parquet file, row {row}, column `{column}`: {problem}", .table.name())]
    BadValue {
        /// The table being read.
        table: Table,
        /// The row, counted from 0 over the whole file.
        row: u64,
        /// The column.
        column: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
}

/// How a column is stored and typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// INT64.
    Int,
    /// INT64 UTC milliseconds, read as `timestamp(ms, UTC)`.
    Timestamp,
    /// A string from a small set (postcode, webpage, reason…): interned per file.
    Label,
    /// A free-form string (payload, error text).
    Text,
}

/// One column of a table, named exactly as the JSON-lines field.
#[derive(Debug)]
struct Column {
    name: &'static str,
    kind: Kind,
}

const fn col(name: &'static str, kind: Kind) -> Column {
    Column { name, kind }
}

// The `push` arms fill `ints` (Int and Timestamp), `labels` and `texts` in the order their
// columns appear here; `encode_row_group` takes them back in the same order.
const PAGE_VIEWS: &[Column] = &[
    col("user_id", Kind::Int),
    col("postcode", Kind::Label),
    col("timestamp", Kind::Timestamp),
    col("webpage", Kind::Label),
];
const LATE_PAGE_VIEWS: &[Column] = &[
    col("user_id", Kind::Int),
    col("postcode", Kind::Label),
    col("timestamp", Kind::Timestamp),
    col("webpage", Kind::Label),
    col("watermark", Kind::Timestamp),
];
const PAGE_VIEW_AGGREGATES: &[Column] = &[
    col("postcode", Kind::Label),
    col("window_start", Kind::Timestamp),
    col("window", Kind::Timestamp),
    col("views", Kind::Int),
];
const DEAD_LETTERS: &[Column] = &[
    col("payload", Kind::Text),
    col("payload_encoding", Kind::Label),
    col("reason", Kind::Label),
    col("error", Kind::Text),
    col("source", Kind::Label),
    col("partition", Kind::Int),
    col("offset", Kind::Int),
    col("received_at", Kind::Timestamp),
];

fn columns(table: Table) -> &'static [Column] {
    match table {
        Table::PageViews => PAGE_VIEWS,
        Table::LatePageViews => LATE_PAGE_VIEWS,
        Table::PageViewAggregates => PAGE_VIEW_AGGREGATES,
        Table::DeadLetters => DEAD_LETTERS,
    }
}

/// The table's Parquet schema: every column REQUIRED.
fn schema(table: Table) -> Result<TypePtr, LibError> {
    let fields = columns(table)
        .iter()
        .map(|c| {
            let (physical, logical) = match c.kind {
                Kind::Int => (PhysicalType::INT64, None),
                Kind::Timestamp => {
                    (PhysicalType::INT64, Some(LogicalType::timestamp(true, TimeUnit::MILLIS)))
                }
                Kind::Label | Kind::Text => (PhysicalType::BYTE_ARRAY, Some(LogicalType::String)),
            };
            Type::primitive_type_builder(c.name, physical)
                .with_repetition(Repetition::REQUIRED)
                .with_logical_type(logical)
                .build()
                .map(Arc::new)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(Type::group_type_builder(table.name()).with_fields(fields).build()?))
}

fn properties(table: Table) -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_created_by(CREATED_BY.to_string())
        .set_compression(Compression::SNAPPY)
        // Page indexes are written only when the file closes, after the last checkpoint
        // footer; without them every footer describes the same kind of file. Chunk
        // statistics still let readers skip row groups by time.
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_offset_index_disabled(true);
    for c in columns(table) {
        if matches!(c.kind, Kind::Int | Kind::Timestamp) {
            // Numbers go plain: timestamps and offsets are nearly unique per row, so a
            // dictionary would fill up and fall back after costing a hash per value; Snappy
            // takes the repeats out of the others.
            props = props.set_column_dictionary_enabled(ColumnPath::from(c.name), false);
        }
    }
    props.build()
}

/// The distinct labels of one file, each stored once: buffered rows hold a `u32` index, and
/// the values handed to the encoder share that one copy.
#[derive(Default)]
struct Labels {
    index: HashMap<Bytes, u32, BuildHasherDefault<Fnv>>,
    values: Vec<ByteArray>,
}

impl Labels {
    #[inline]
    fn intern(&mut self, s: &str) -> Option<u32> {
        if let Some(&i) = self.index.get(s.as_bytes()) {
            return Some(i);
        }
        let i = u32::try_from(self.values.len()).ok()?;
        let bytes = Bytes::copy_from_slice(s.as_bytes());
        self.values.push(ByteArray::from(bytes.clone()));
        self.index.insert(bytes, i);
        Some(i)
    }
}

/// Free-form strings of one row group: one buffer, and where each value ends.
#[derive(Default)]
struct Texts {
    bytes: String,
    ends: Vec<usize>,
}

impl Texts {
    fn end_value(&mut self) {
        self.ends.push(self.bytes.len());
    }
}

/// Rows pushed since the last row group, column by column.
#[derive(Default)]
struct Buffered {
    /// Int and Timestamp columns, in schema order.
    ints: Vec<Vec<i64>>,
    /// Label columns, in schema order: indices into the file's [`Labels`].
    labels: Vec<Vec<u32>>,
    /// Text columns, in schema order.
    texts: Vec<Texts>,
    rows: usize,
}

impl Buffered {
    fn for_table(table: Table) -> Self {
        let count = |kinds: &[Kind]| columns(table).iter().filter(|c| kinds.contains(&c.kind)).count();
        Buffered {
            ints: vec![Vec::new(); count(&[Kind::Int, Kind::Timestamp])],
            labels: vec![Vec::new(); count(&[Kind::Label])],
            texts: (0..count(&[Kind::Text])).map(|_| Texts::default()).collect(),
            rows: 0,
        }
    }
}

/// One Parquet table file being written: rows in, bytes out as they are encoded.
///
/// Memory: a buffered row costs 8 bytes per Int/Timestamp column, 4 per label column and
/// the text itself plus 8 per text column (page_views: 24 bytes, late: 32, aggregates: 28),
/// on top of one copy of each distinct label for the life of the file, and one encoded row
/// group in [`Self::output`] until drained.
///
/// After an error other than a refused row the file is unusable: abandon it and its upload.
pub struct ParquetFile {
    table: Table,
    writer: SerializedFileWriter<Vec<u8>>,
    schema: Arc<SchemaDescriptor>,
    row_group_rows: usize,
    labels: Labels,
    buffered: Buffered,
    /// Reused between column batches so encoding does not allocate per batch.
    scratch: Vec<ByteArray>,
    rows: u64,
}

impl std::fmt::Debug for ParquetFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetFile")
            .field("table", &self.table)
            .field("rows", &self.rows)
            .field("buffered_rows", &self.buffered.rows)
            .finish_non_exhaustive()
    }
}

impl ParquetFile {
    /// A new file for `table`; a row group is cut every `row_group_rows` rows (at least 1)
    /// and at every checkpoint. The magic bytes are in [`Self::output`] at once.
    pub fn new(table: Table, row_group_rows: usize) -> Result<Self, ParquetError> {
        let encode = |source| ParquetError::Encode { table, source };
        let schema = schema(table).map_err(encode)?;
        let mut writer = SerializedFileWriter::new(Vec::new(), schema.clone(), Arc::new(properties(table)))
            .map_err(encode)?;
        writer.flush().map_err(|e| encode(e.into()))?;
        Ok(ParquetFile {
            table,
            writer,
            schema: Arc::new(SchemaDescriptor::new(schema)),
            row_group_rows: row_group_rows.max(1),
            labels: Labels::default(),
            buffered: Buffered::for_table(table),
            scratch: Vec::new(),
            rows: 0,
        })
    }

    /// Buffers one row; encodes a row group into [`Self::output`] when `row_group_rows` are
    /// buffered. The row must belong to the file's table; a refused row leaves the file as
    /// it was.
    #[inline]
    pub fn push(&mut self, row: &Row<'_>) -> Result<(), ParquetError> {
        let table = self.table;
        let Buffered { ints, labels, texts, rows } = &mut self.buffered;
        let dict = &mut self.labels;
        let mut intern = |s: &str| dict.intern(s).ok_or(ParquetError::TooManyStrings { table });
        match (*row, table) {
            (Row::View(pv), Table::PageViews) => {
                let (postcode, webpage) = (intern(&pv.postcode)?, intern(&pv.webpage)?);
                ints[0].push(pv.user_id);
                labels[0].push(postcode);
                ints[1].push(pv.timestamp);
                labels[1].push(webpage);
            }
            (Row::Late(pv, watermark), Table::LatePageViews) => {
                let (postcode, webpage) = (intern(&pv.postcode)?, intern(&pv.webpage)?);
                ints[0].push(pv.user_id);
                labels[0].push(postcode);
                ints[1].push(pv.timestamp);
                labels[1].push(webpage);
                ints[2].push(watermark.clamp(MIN_MS, MAX_MS));
            }
            (Row::Aggregate(w, size_ms), Table::PageViewAggregates) => {
                let postcode = intern(&w.postcode)?;
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
                let encoding = intern(if text.is_some() { "utf8" } else { "base64" })?;
                let (reason, source) = (intern(error.reason().as_str())?, intern(origin.source)?);
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
            (row, table) => return Err(ParquetError::WrongTable { table, row: row_kind(&row) }),
        }
        *rows += 1;
        self.rows += 1;
        if *rows >= self.row_group_rows {
            self.encode_row_group()?;
        }
        Ok(())
    }

    /// Bytes held in memory: encoded but not taken, plus buffered rows. What a roll-by-size
    /// decision adds to the bytes already shipped.
    pub fn held_bytes(&self) -> usize {
        self.writer.inner().len() + self.buffered_bytes()
    }

    /// Encoded bytes not yet taken. The caller drains it (`std::mem::take`) into upload
    /// parts; everything ever drained, in order, is the file's prefix.
    pub fn output(&mut self) -> &mut Vec<u8> {
        // Row groups flush the writer's internal buffer, so the Vec holds every encoded byte.
        self.writer.inner_mut()
    }

    /// Bytes of memory the rows buffered since the last row group take. Encoded, they are
    /// usually much smaller (labels become dictionary indices, then Snappy), so this is an
    /// upper bound for roll-by-size decisions, not a forecast.
    pub fn buffered_bytes(&self) -> usize {
        let b = &self.buffered;
        // Every row adds one value to each int and label column: a fixed width. Only text
        // columns (dead letters) vary.
        let fixed = b.ints.len() * 8 + b.labels.len() * 4 + b.texts.len() * 8;
        b.rows * fixed + b.texts.iter().map(|t| t.bytes.len()).sum::<usize>()
    }

    /// Rows pushed into the file, buffered or encoded.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Checkpoint: encodes the buffered rows (if any) as a row group into [`Self::output`],
    /// then returns the footer (FileMetaData, its length, `PAR1`) that, appended after
    /// everything drained so far plus the current output, makes a complete Parquet file of
    /// every row pushed so far. The file stays open: later rows go on after the bytes this
    /// footer describes, and a later footer describes them too.
    pub fn checkpoint_footer(&mut self) -> Result<Vec<u8>, ParquetError> {
        self.encode_row_group()?;
        let encode = |source| ParquetError::Encode { table: self.table, source };
        let row_groups = self.writer.flushed_row_groups().to_vec();
        let num_rows = row_groups.iter().map(|g| g.num_rows()).sum();
        let props = self.writer.properties();
        let file_metadata = FileMetaData::new(
            props.writer_version().as_num(),
            num_rows,
            Some(props.created_by().to_string()),
            None,
            self.schema.clone(),
            // The metadata writer derives column orders from the schema, as `close` does.
            None,
        );
        let metadata = ParquetMetaData::new(file_metadata, row_groups);
        let mut footer = Vec::new();
        ParquetMetaDataWriter::new(&mut footer, &metadata)
            .with_write_path_in_schema(props.write_path_in_schema())
            .finish()
            .map_err(encode)?;
        Ok(footer)
    }

    /// Ends the file: encodes the buffered rows and writes the footer. Returns the output
    /// not yet drained, footer included: the file's last part.
    pub fn finish(mut self) -> Result<Vec<u8>, ParquetError> {
        self.encode_row_group()?;
        let table = self.table;
        self.writer.finish().map_err(|source| ParquetError::Encode { table, source })?;
        Ok(std::mem::take(self.writer.inner_mut()))
    }

    /// Encodes the buffered rows as one row group into the output.
    fn encode_row_group(&mut self) -> Result<(), ParquetError> {
        if self.buffered.rows == 0 {
            return Ok(());
        }
        let table = self.table;
        let encode = |source| ParquetError::Encode { table, source };
        let mismatch = || encode(LibError::General("column buffers do not match the schema".into()));
        let Buffered { ints, labels, texts, rows } = &mut self.buffered;
        let (mut ints, mut labels, mut texts) = (ints.iter_mut(), labels.iter_mut(), texts.iter_mut());
        let dict = &self.labels.values;
        let scratch = &mut self.scratch;
        let mut group = self.writer.next_row_group().map_err(encode)?;
        for column in columns(table) {
            let mut writer = group.next_column().map_err(encode)?.ok_or_else(mismatch)?;
            match (column.kind, writer.untyped()) {
                (Kind::Int | Kind::Timestamp, ColumnWriter::Int64ColumnWriter(w)) => {
                    let values = ints.next().ok_or_else(mismatch)?;
                    w.write_batch(values, None, None).map_err(encode)?;
                    values.clear();
                }
                (Kind::Label, ColumnWriter::ByteArrayColumnWriter(w)) => {
                    let keys = labels.next().ok_or_else(mismatch)?;
                    for batch in keys.chunks(BATCH) {
                        scratch.clear();
                        scratch.extend(batch.iter().map(|&k| dict[k as usize].clone()));
                        w.write_batch(scratch, None, None).map_err(encode)?;
                    }
                    keys.clear();
                }
                (Kind::Text, ColumnWriter::ByteArrayColumnWriter(w)) => {
                    let text = texts.next().ok_or_else(mismatch)?;
                    // One allocation for the whole column; each value is a slice of it.
                    let bytes = Bytes::from(std::mem::take(&mut text.bytes));
                    let mut start = 0;
                    for batch in text.ends.chunks(BATCH) {
                        scratch.clear();
                        for &end in batch {
                            scratch.push(ByteArray::from(bytes.slice(start..end)));
                            start = end;
                        }
                        w.write_batch(scratch, None, None).map_err(encode)?;
                    }
                    text.ends.clear();
                }
                _ => return Err(mismatch()),
            }
            scratch.clear();
            writer.close().map_err(encode)?;
        }
        group.close().map_err(encode)?;
        // Moves the row group from the writer's internal buffer into the output.
        self.writer.flush().map_err(|e| encode(e.into()))?;
        *rows = 0;
        Ok(())
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

/// Converts a Parquet file of `table`, as [`ParquetFile`] writes it, into the JSON-lines
/// bytes [`Row::write_jsonl`] writes for the same rows in the same order, and the row count.
/// Fails on a file that is not Parquet, has other columns, or holds a value the pipeline
/// could not have written (a string that is not UTF-8, say).
pub fn to_jsonl(table: Table, file: Bytes) -> Result<(Vec<u8>, u64), ParquetError> {
    let read = |source| ParquetError::Read { table, source };
    let reader = SerializedFileReader::new(file).map_err(read)?;
    check_schema(table, reader.metadata().file_metadata().schema_descr())?;
    let mut out = Vec::new();
    let mut first_row = 0u64;
    for i in 0..reader.num_row_groups() {
        let group = reader.get_row_group(i).map_err(read)?;
        let rows = usize::try_from(group.metadata().num_rows())
            .map_err(|_| read(LibError::General("negative row count".into())))?;
        let values = (0..columns(table).len())
            .map(|j| read_column(&*group, j, rows).map_err(read))
            .collect::<Result<Vec<_>, _>>()?;
        let mut rows_of = RowGroupValues { table, columns: columns(table), values, first_row };
        for r in 0..rows {
            rows_of.write_jsonl(r, &mut out)?;
        }
        first_row += rows as u64;
    }
    Ok((out, first_row))
}

fn check_schema(table: Table, found: &SchemaDescriptor) -> Result<(), ParquetError> {
    let expected =
        SchemaDescriptor::new(schema(table).map_err(|source| ParquetError::Encode { table, source })?);
    let same = |a: &ColumnDescriptor, b: &ColumnDescriptor| {
        a.name() == b.name()
            && a.physical_type() == b.physical_type()
            && a.logical_type_ref() == b.logical_type_ref()
            && a.max_def_level() == 0
            && a.max_rep_level() == 0
    };
    let matches = found.num_columns() == expected.num_columns()
        && found.columns().iter().zip(expected.columns()).all(|(f, e)| same(f, e));
    if matches {
        return Ok(());
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

/// One column chunk, decoded.
enum Values {
    Ints(Vec<i64>),
    Strings(Vec<ByteArray>),
}

fn read_column(group: &dyn RowGroupReader, column: usize, rows: usize) -> Result<Values, LibError> {
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
    /// `DecodeError` it came from, so its line is laid out here, field for field as
    /// `jsonl::write_dead_letter` does.
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
                out.extend_from_slice(b"{\"payload\":");
                write_json_str(out, self.str(r, 0)?);
                out.extend_from_slice(b",\"payload_encoding\":");
                write_json_str(out, self.str(r, 1)?);
                out.extend_from_slice(b",\"reason\":");
                write_json_str(out, self.str(r, 2)?);
                out.extend_from_slice(b",\"error\":");
                write_json_str(out, self.str(r, 3)?);
                out.extend_from_slice(b",\"source\":");
                write_json_str(out, self.str(r, 4)?);
                out.extend_from_slice(b",\"partition\":");
                out.extend_from_slice(itoa::Buffer::new().format(self.int(r, 5)?).as_bytes());
                out.extend_from_slice(b",\"offset\":");
                out.extend_from_slice(itoa::Buffer::new().format(self.int(r, 6)? as u64).as_bytes());
                out.extend_from_slice(b",\"received_at\":\"");
                write_timestamp(out, self.int(r, 7)?);
                out.extend_from_slice(b"\"}\n");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{decode, DecodeError};
    use crate::sink::jsonl::Origin;
    use parquet::basic::Encoding;

    fn view(
        user_id: i64,
        postcode: &'static str,
        webpage: &'static str,
        timestamp: i64,
    ) -> PageView<'static> {
        PageView { user_id, postcode: postcode.into(), webpage: webpage.into(), timestamp }
    }

    /// Strings JSON must escape, non-ASCII, empty strings, repeats, and instants before 1970
    /// and at both ends of the supported range.
    fn views() -> Vec<PageView<'static>> {
        vec![
            view(1, "SW1A 1AA", "www.website.com/index.html", 1_577_836_805_123),
            view(-3, "quote\"back\\slash", "tab\tnl\ncr\r\u{1}\u{1f}", -1),
            view(i64::MIN, "é✓🙂", "", MIN_MS),
            view(i64::MAX, "", "/a", MAX_MS),
            view(0, "SW1A 1AA", "www.website.com/index.html", -86_400_001),
            view(7, "quote\"back\\slash", "/a", 0),
            view(8, "EC1A 1BB", "/b", 1),
        ]
    }

    fn windows() -> Vec<WindowCount> {
        [(1_577_836_860_000, "SW1A 1AA", 3), (-60_000, "é\"✓", 0), (0, "", u64::MAX), (60_000, "SW1A 1AA", 1)]
            .into_iter()
            .map(|(end, postcode, views)| WindowCount { end, postcode: postcode.to_string(), views })
            .collect()
    }

    /// Records that fail to decode for every kind of reason, one of them not UTF-8.
    fn bad_records() -> Vec<(&'static [u8], DecodeError)> {
        let cases: [(&[u8], usize); 6] = [
            (b"{\"user_id\":\xff}", 100),
            (b"not json \"quoted\"\n\\", 100),
            (b"[1,2]", 100),
            (b"{}", 100),
            (b"", 100),
            (b"{\"user_id\":1,\"postcode\":\"x\"}", 4),
        ];
        cases.into_iter().map(|(payload, limit)| (payload, decode(payload, limit).unwrap_err())).collect()
    }

    fn origins() -> [Origin<'static>; 3] {
        [
            Origin { source: "page_views", partition: 0, offset: 0 },
            Origin { source: "topic \"t\" é", partition: u32::MAX, offset: u64::MAX },
            Origin { source: "/data/in.jsonl", partition: 3, offset: 42 },
        ]
    }

    fn jsonl(rows: &[Row<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for row in rows {
            row.write_jsonl(&mut out);
        }
        out
    }

    /// Writes the rows as the table writer would: every output drained as a part, then the
    /// last part from `finish`.
    fn parquet(table: Table, row_group_rows: usize, rows: &[Row<'_>]) -> Vec<u8> {
        let mut file = ParquetFile::new(table, row_group_rows).unwrap();
        let mut shipped = std::mem::take(file.output());
        for row in rows {
            file.push(row).unwrap();
            shipped.append(file.output());
        }
        assert_eq!(file.rows(), rows.len() as u64);
        shipped.extend(file.finish().unwrap());
        shipped
    }

    fn row_groups(file: &[u8]) -> usize {
        SerializedFileReader::new(Bytes::copy_from_slice(file)).unwrap().num_row_groups()
    }

    /// Everything the rows of every table borrow.
    pub(super) struct Fixtures {
        views: Vec<PageView<'static>>,
        windows: Vec<WindowCount>,
        bad: Vec<(&'static [u8], DecodeError)>,
    }

    impl Fixtures {
        pub(super) fn new() -> Self {
            Fixtures { views: views(), windows: windows(), bad: bad_records() }
        }

        /// Rows of every table, tricky values included.
        pub(super) fn tables(&self) -> [(Table, Vec<Row<'_>>); 4] {
            let watermarks = [i64::MIN, 1_577_836_805_000, i64::MAX, -5, 0, MIN_MS - 1, MAX_MS + 1];
            let received = [-1, 0, 1_577_836_805_123, MIN_MS, MAX_MS, 5];
            [
                (Table::PageViews, self.views.iter().map(Row::View).collect()),
                (
                    Table::LatePageViews,
                    self.views.iter().zip(watermarks).map(|(pv, w)| Row::Late(pv, w)).collect(),
                ),
                (Table::PageViewAggregates, self.windows.iter().map(|w| Row::Aggregate(w, 60_000)).collect()),
                (
                    Table::DeadLetters,
                    self.bad
                        .iter()
                        .zip(origins().into_iter().cycle())
                        .zip(received)
                        .map(|(((payload, error), origin), received_at)| Row::DeadLetter {
                            payload,
                            error,
                            origin,
                            received_at,
                        })
                        .collect(),
                ),
            ]
        }
    }

    #[test]
    fn every_table_reads_back_as_its_jsonl_bytes() {
        let fixtures = Fixtures::new();
        let tables = fixtures.tables();
        for (table, rows) in &tables {
            let want = jsonl(rows);
            let file = parquet(*table, 2, rows);
            assert!(row_groups(&file) > 1, "{}: several row groups", table.name());
            let (got, n) = to_jsonl(*table, file.into()).unwrap();
            assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want), "{}", table.name());
            assert_eq!(got, want, "{}: byte-identical", table.name());
            assert_eq!(n, rows.len() as u64);
        }
        let dead = String::from_utf8(jsonl(&tables[3].1)).unwrap();
        assert!(dead.contains("\"payload_encoding\":\"base64\""), "the invalid UTF-8 payload is covered");
    }

    #[test]
    fn a_checkpoint_footer_makes_the_shipped_prefix_a_file_of_the_rows_so_far() {
        let views = views();
        let rows: Vec<Row<'_>> = views.iter().map(Row::View).collect();
        let mut file = ParquetFile::new(Table::PageViews, 2).unwrap();
        let mut shipped = Vec::new();
        for row in &rows[..3] {
            file.push(row).unwrap();
        }
        shipped.append(file.output());
        assert!(file.buffered_bytes() > 0, "the third row waits for its row group");
        let first = file.checkpoint_footer().unwrap();
        assert_eq!(file.buffered_bytes(), 0, "the checkpoint encoded it");
        shipped.append(file.output());
        let at_first = [shipped.as_slice(), &first].concat();
        assert_eq!(to_jsonl(Table::PageViews, at_first.into()).unwrap(), (jsonl(&rows[..3]), 3));

        for row in &rows[3..] {
            file.push(row).unwrap();
            shipped.append(file.output());
        }
        let second = file.checkpoint_footer().unwrap();
        shipped.append(file.output());
        let at_second = [shipped.as_slice(), &second].concat();
        assert_eq!(row_groups(&at_second), 4, "2 + 1 rows, then 2 + 2");
        assert_eq!(to_jsonl(Table::PageViews, at_second.into()).unwrap(), (jsonl(&rows), 7));

        let last = file.finish().unwrap();
        assert_eq!(last, second, "nothing pushed since, so the real footer is the checkpoint's");
        shipped.extend(last);
        assert_eq!(to_jsonl(Table::PageViews, shipped.into()).unwrap(), (jsonl(&rows), 7));
    }

    #[test]
    fn columns_are_typed_for_duckdb_and_pyarrow() {
        let views = views();
        let watermarks = [i64::MIN, i64::MAX, 0, 0, 0, 0, 0];
        let rows: Vec<Row<'_>> = views.iter().zip(watermarks).map(|(pv, w)| Row::Late(pv, w)).collect();
        let file = parquet(Table::LatePageViews, 1 << 20, &rows);
        let reader = SerializedFileReader::new(Bytes::from(file)).unwrap();
        let Values::Ints(stored) = read_column(&*reader.get_row_group(0).unwrap(), 4, 7).unwrap() else {
            panic!("the watermark is INT64");
        };
        assert_eq!(stored[..2], [MIN_MS, MAX_MS], "watermarks clamped as in JSON lines");
        let meta = reader.metadata();
        assert_eq!(meta.file_metadata().created_by(), Some(CREATED_BY));
        let schema = meta.file_metadata().schema_descr();
        let names: Vec<&str> = schema.columns().iter().map(|c| c.name()).collect();
        assert_eq!(names, ["user_id", "postcode", "timestamp", "webpage", "watermark"]);
        let millis_utc = Some(LogicalType::timestamp(true, TimeUnit::MILLIS));
        for (i, logical) in
            [None, Some(LogicalType::String), millis_utc.clone(), Some(LogicalType::String), millis_utc]
                .into_iter()
                .enumerate()
        {
            let c = schema.column(i);
            assert_eq!(c.logical_type_ref(), logical.as_ref(), "{}", c.name());
            assert_eq!(c.self_type().get_basic_info().repetition(), Repetition::REQUIRED, "{}", c.name());
        }
        let group = meta.row_group(0);
        let dictionary = |i: usize| {
            group
                .column(i)
                .encodings()
                .any(|e| matches!(e, Encoding::PLAIN_DICTIONARY | Encoding::RLE_DICTIONARY))
        };
        assert!(dictionary(1) && dictionary(3), "postcode and webpage are dictionary-encoded");
        assert!(!dictionary(2), "timestamps are not");
        for c in group.columns() {
            assert_eq!(c.compression(), Compression::SNAPPY);
            assert!(c.statistics().is_some(), "chunk statistics for {}", c.column_path());
            assert_eq!((c.column_index_offset(), c.offset_index_offset()), (None, None));
        }
    }

    #[test]
    fn a_repeated_string_is_buffered_once() {
        let long = "x".repeat(1000);
        let pv = PageView {
            user_id: 1,
            postcode: long.as_str().into(),
            webpage: long.as_str().into(),
            timestamp: 0,
        };
        let mut file = ParquetFile::new(Table::PageViews, 1 << 20).unwrap();
        for _ in 0..100 {
            file.push(&Row::View(&pv)).unwrap();
        }
        assert_eq!(file.buffered_bytes(), 100 * (8 + 4 + 8 + 4), "a row holds indices, not the strings");
    }

    #[test]
    fn a_row_of_another_table_is_refused() {
        let pv = view(1, "a", "b", 0);
        let mut file = ParquetFile::new(Table::DeadLetters, 10).unwrap();
        let err = file.push(&Row::View(&pv)).unwrap_err();
        assert!(
            matches!(err, ParquetError::WrongTable { table: Table::DeadLetters, row: "page_views" }),
            "{err}"
        );
        assert_eq!(file.rows(), 0);
        let bad = bad_records();
        let origin = origins()[0];
        let row = Row::DeadLetter { payload: bad[0].0, error: &bad[0].1, origin, received_at: 0 };
        file.push(&row).unwrap();
        let mut bytes = std::mem::take(file.output());
        bytes.extend(file.finish().unwrap());
        assert_eq!(
            to_jsonl(Table::DeadLetters, bytes.into()).unwrap(),
            (jsonl(&[row]), 1),
            "the file goes on"
        );
    }

    #[test]
    fn to_jsonl_refuses_files_it_did_not_write() {
        let views = views();
        let rows: Vec<Row<'_>> = views.iter().map(Row::View).collect();
        let file = Bytes::from(parquet(Table::PageViews, 10, &rows));
        let err = to_jsonl(Table::LatePageViews, file.clone()).unwrap_err();
        assert!(matches!(err, ParquetError::Schema { .. }), "{err}");
        assert!(err.to_string().contains("watermark"), "{err}");
        let err = to_jsonl(Table::PageViews, file.slice(..file.len() - 1)).unwrap_err();
        assert!(matches!(err, ParquetError::Read { .. }), "{err}");
    }
}
