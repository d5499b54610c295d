//! Writing: rows buffered per column, encoded a row group at a time, with a footer at every
//! checkpoint that makes the bytes so far a readable file.

use std::sync::Arc;

use bytes::Bytes;
use pageviews_core::table::Table;
use parquet::column::writer::ColumnWriter;
use parquet::data_type::ByteArray;
use parquet::errors::ParquetError as LibError;
use parquet::file::metadata::{FileMetaData, ParquetMetaData, ParquetMetaDataWriter};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::SchemaDescriptor;

use super::{columns, properties, schema, ParquetError, TimestampUnit, BATCH};
use crate::sink::columns::{kind, Buffered, Kind, Labels};
use crate::sink::Row;

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
    unit: TimestampUnit,
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
        Self::with_unit(table, row_group_rows, TimestampUnit::Millis)
    }

    /// [`Self::new`] with timestamps stored in `unit`.
    pub(crate) fn with_unit(
        table: Table,
        row_group_rows: usize,
        unit: TimestampUnit,
    ) -> Result<Self, ParquetError> {
        let encode = |source| ParquetError::Encode { table, source };
        let schema = schema(table, unit).map_err(encode)?;
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
            unit,
        })
    }

    /// Buffers one row; encodes a row group into [`Self::output`] when `row_group_rows` are
    /// buffered. The row must belong to the file's table; a refused row leaves the file as
    /// it was.
    #[inline]
    pub fn push(&mut self, row: &Row<'_>) -> Result<(), ParquetError> {
        self.buffered.push(&mut self.labels, self.table, row)?;
        self.rows += 1;
        if self.buffered.rows >= self.row_group_rows {
            self.encode_row_group()?;
        }
        Ok(())
    }

    /// Bytes held in memory: encoded but not taken, plus buffered rows. What a roll-by-size
    /// decision adds to the bytes already shipped.
    pub(crate) fn held_bytes(&self) -> usize {
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
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.buffered.bytes()
    }

    /// Rows pushed into the file, buffered or encoded.
    #[cfg(test)]
    pub(crate) fn rows(&self) -> u64 {
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
        let dict = self.labels.values();
        let scratch = &mut self.scratch;
        let per_ms = self.unit.per_ms();
        let mut group = self.writer.next_row_group().map_err(encode)?;
        for column in columns(table) {
            let mut writer = group.next_column().map_err(encode)?.ok_or_else(mismatch)?;
            match (kind(column), writer.untyped()) {
                (k @ (Kind::Int | Kind::Timestamp), ColumnWriter::Int64ColumnWriter(w)) => {
                    let values = ints.next().ok_or_else(mismatch)?;
                    if k == Kind::Timestamp && per_ms != 1 {
                        // Rows carry milliseconds, whose range fits microseconds (years 0000-9999).
                        values.iter_mut().for_each(|v| *v = v.saturating_mul(per_ms));
                    }
                    w.write_batch(values, None, None).map_err(encode)?;
                    values.clear();
                }
                (Kind::Label, ColumnWriter::ByteArrayColumnWriter(w)) => {
                    let keys = labels.next().ok_or_else(mismatch)?;
                    for batch in keys.chunks(BATCH) {
                        scratch.clear();
                        scratch.extend(batch.iter().map(|&k| ByteArray::from(dict[k as usize].clone())));
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
