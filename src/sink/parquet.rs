//! Parquet table files (to be written).
