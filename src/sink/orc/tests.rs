//! The ORC writer and reader against each other and the JSON-lines bytes. Readers written
//! elsewhere (pyarrow, Spark, DataFusion through orc-rust) read the pipeline's files in
//! `tests/readers.rs` and `pageviews-sql`'s tests.

use super::*;
use crate::sink::fixtures::{bad_records, jsonl, origins, view, views, Fixtures};
use crate::sink::Row;

/// Writes the rows as the table writer would: every output drained as a part, then the
/// last part from `finish`.
fn orc(table: Table, stripe_rows: usize, rows: &[Row<'_>]) -> Vec<u8> {
    let mut file = OrcFile::new(table, stripe_rows);
    let mut shipped = std::mem::take(file.output());
    for row in rows {
        file.push(row).unwrap();
        shipped.append(file.output());
    }
    assert_eq!(file.rows(), rows.len() as u64);
    shipped.extend(file.finish().unwrap());
    shipped
}

/// What ORC readers make of the fixtures' times in the last second before 1970 (ORC-763):
/// the same fraction a second later. Every other instant reads back as written.
fn as_orc_reads_it(jsonl: &[u8]) -> String {
    String::from_utf8_lossy(jsonl).replace("1969-12-31 23:59:59.", "1970-01-01 00:00:00.")
}

#[test]
fn every_table_reads_back_as_its_jsonl_bytes() {
    let fixtures = Fixtures::new();
    for (table, rows) in &fixtures.tables() {
        let want = as_orc_reads_it(&jsonl(rows));
        for stripe_rows in [2, 1 << 20] {
            let file = orc(*table, stripe_rows, rows);
            let (got, n) = to_jsonl(*table, &file).unwrap();
            assert_eq!(String::from_utf8_lossy(&got), want, "{}, {stripe_rows} rows a stripe", table.name());
            assert_eq!(n, rows.len() as u64);
        }
    }
}

#[test]
fn times_before_1970_read_back_exactly_but_in_its_last_second() {
    for (ms, reads) in [
        (-1_000, -1_000),
        (-1_001, -1_001),
        (-86_400_001, -86_400_001),
        (-62_167_219_200_000, -62_167_219_200_000),
        (-1, 999),
        (-999, 1),
        (1, 1),
    ] {
        let pv = view(1, "a", "b", ms);
        let file = orc(Table::PageViews, 10, &[Row::View(&pv)]);
        let want = view(1, "a", "b", reads);
        assert_eq!(to_jsonl(Table::PageViews, &file).unwrap().0, jsonl(&[Row::View(&want)]), "{ms}");
    }
}

#[test]
fn a_checkpoint_footer_makes_the_shipped_prefix_a_file_of_the_rows_so_far() {
    let views: Vec<_> = views().into_iter().filter(|v| !(-1000..0).contains(&v.timestamp)).collect();
    let rows: Vec<Row<'_>> = views.iter().map(Row::View).collect();
    let mut file = OrcFile::new(Table::PageViews, 2);
    let mut shipped = Vec::new();
    for row in &rows[..3] {
        file.push(row).unwrap();
    }
    shipped.append(file.output());
    assert!(file.buffered_bytes() > 0, "the third row waits for its stripe");
    let first = file.checkpoint_footer().unwrap();
    assert_eq!(file.buffered_bytes(), 0, "the checkpoint encoded it");
    shipped.append(file.output());
    let at_first = [shipped.as_slice(), &first].concat();
    assert_eq!(to_jsonl(Table::PageViews, &at_first).unwrap(), (jsonl(&rows[..3]), 3));

    for row in &rows[3..] {
        file.push(row).unwrap();
        shipped.append(file.output());
    }
    let second = file.checkpoint_footer().unwrap();
    shipped.append(file.output());
    let at_second = [shipped.as_slice(), &second].concat();
    assert_eq!(to_jsonl(Table::PageViews, &at_second).unwrap(), (jsonl(&rows), rows.len() as u64));

    let last = file.finish().unwrap();
    assert_eq!(last, second, "nothing pushed since, so the real tail is the checkpoint's");
    shipped.extend(last);
    assert_eq!(to_jsonl(Table::PageViews, &shipped).unwrap(), (jsonl(&rows), rows.len() as u64));
}

#[test]
fn an_empty_file_is_a_file_of_no_rows() {
    let mut file = OrcFile::new(Table::DeadLetters, 10);
    let mut bytes = std::mem::take(file.output());
    bytes.extend(file.finish().unwrap());
    assert_eq!(to_jsonl(Table::DeadLetters, &bytes).unwrap(), (Vec::new(), 0));
}

#[test]
fn page_views_take_fewer_bytes_than_their_json_lines() {
    let pages = ["www.website.com/index.html", "www.website.com/news.html", "www.website.com/contact.html"];
    let views: Vec<_> = (0..20_000i64)
        .map(|i| {
            view(
                i * 7919 % 100_000,
                ["SW19", "EC1A 1BB", "N1"][i as usize % 3],
                pages[i as usize % 3],
                1_577_836_800_000 + i * 17,
            )
        })
        .collect();
    let rows: Vec<Row<'_>> = views.iter().map(Row::View).collect();
    let file = orc(Table::PageViews, 1 << 17, &rows);
    let json = jsonl(&rows);
    assert!(file.len() * 10 < json.len(), "{} bytes of ORC for {} of JSON lines", file.len(), json.len());
    assert_eq!(to_jsonl(Table::PageViews, &file).unwrap(), (json, 20_000));
}

#[test]
fn a_row_of_another_table_is_refused() {
    let pv = view(1, "a", "b", 0);
    let mut file = OrcFile::new(Table::DeadLetters, 10);
    let err = file.push(&Row::View(&pv)).unwrap_err();
    assert!(
        matches!(
            err,
            OrcError::Columns(ColumnsError::WrongTable { table: Table::DeadLetters, row: "page_views" })
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
    assert_eq!(to_jsonl(Table::DeadLetters, &bytes).unwrap(), (jsonl(&[row]), 1), "the file goes on");
}

#[test]
fn to_jsonl_refuses_files_it_did_not_write() {
    let views = views();
    let rows: Vec<Row<'_>> = views.iter().map(Row::View).collect();
    let file = orc(Table::PageViews, 10, &rows);
    let err = to_jsonl(Table::LatePageViews, &file).unwrap_err();
    assert!(matches!(err, OrcError::Columns(ColumnsError::Schema { .. })), "{err}");
    assert!(err.to_string().contains("watermark timestamp"), "{err}");
    for cut in [0, 1, 3, file.len() / 2, file.len() - 1] {
        let err = to_jsonl(Table::PageViews, &file[..cut]).unwrap_err();
        assert!(
            matches!(err, OrcError::Read { .. } | OrcError::Columns(ColumnsError::Schema { .. })),
            "cut at {cut}: {err}"
        );
    }
    let mut flipped = file.clone();
    let middle = flipped.len() / 3;
    flipped[middle] ^= 0xff;
    // Flipped bits in a stream: an error or other rows, never a panic.
    let _ = to_jsonl(Table::PageViews, &flipped);
}
