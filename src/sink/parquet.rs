//! Parquet table files (stub until the encoder lands).

use super::{Row, Table};

/// File extension of Parquet table files.
pub const EXTENSION: &str = "parquet";

/// Why a Parquet file could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("parquet: {0}")]
pub struct ParquetError(String);

/// A Parquet file being written.
pub struct ParquetFile {
    out: Vec<u8>,
}

impl ParquetFile {
    /// A new file.
    pub fn new(_table: Table, _row_group_rows: usize) -> Result<Self, ParquetError> {
        Err(ParquetError("not implemented".into()))
    }
    /// Buffers a row.
    pub fn push(&mut self, _row: &Row<'_>) -> Result<(), ParquetError> {
        Ok(())
    }
    /// Encoded bytes.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }
    /// Bytes held.
    pub fn held_bytes(&self) -> usize {
        self.out.len()
    }
    /// Footer.
    pub fn checkpoint_footer(&mut self) -> Result<Vec<u8>, ParquetError> {
        Ok(Vec::new())
    }
    /// End.
    pub fn finish(self) -> Result<Vec<u8>, ParquetError> {
        Ok(self.out)
    }
}

/// To JSON lines.
pub fn to_jsonl(_table: Table, _file: bytes::Bytes) -> Result<(Vec<u8>, u64), ParquetError> {
    Err(ParquetError("not implemented".into()))
}
