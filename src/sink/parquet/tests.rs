//! The Parquet writer and reader against each other, DuckDB's and pyarrow's expectations,
//! and the JSON-lines bytes.

use super::read::{read_column, Values};
use super::*;
use crate::event::PageView;
use crate::sink::fixtures::{bad_records, jsonl, origins, view, views, Fixtures};
use crate::sink::Row;
use bytes::Bytes;
use pageviews_core::table::Table;
use pageviews_core::time::{MAX_MS, MIN_MS};
use parquet::basic::Encoding;
use parquet::file::reader::FileReader;
use parquet::file::serialized_reader::SerializedFileReader;

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
    let pv =
        PageView { user_id: 1, postcode: long.as_str().into(), webpage: long.as_str().into(), timestamp: 0 };
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
        matches!(
            err,
            ParquetError::Columns(ColumnsError::WrongTable { table: Table::DeadLetters, row: "page_views" })
        ),
        "{err}"
    );
    assert_eq!(file.rows(), 0);
    let bad = bad_records();
    let origin = origins()[0];
    let row = Row::DeadLetter { payload: bad[0].0, error: &bad[0].1, origin, received_at: 0 };
    file.push(&row).unwrap();
    let mut bytes = std::mem::take(file.output());
    bytes.extend(file.finish().unwrap());
    assert_eq!(to_jsonl(Table::DeadLetters, bytes.into()).unwrap(), (jsonl(&[row]), 1), "the file goes on");
}

#[test]
fn to_jsonl_refuses_files_it_did_not_write() {
    let views = views();
    let rows: Vec<Row<'_>> = views.iter().map(Row::View).collect();
    let file = Bytes::from(parquet(Table::PageViews, 10, &rows));
    let err = to_jsonl(Table::LatePageViews, file.clone()).unwrap_err();
    assert!(matches!(err, ParquetError::Columns(ColumnsError::Schema { .. })), "{err}");
    assert!(err.to_string().contains("watermark"), "{err}");
    let err = to_jsonl(Table::PageViews, file.slice(..file.len() - 1)).unwrap_err();
    assert!(matches!(err, ParquetError::Read { .. }), "{err}");
}
