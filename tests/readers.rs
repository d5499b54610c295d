//! Parquet and ORC tables as other engines read them: DuckDB and pyarrow (from PyPI, installed
//! by scripts/python-env) read all four Parquet tables, and pyarrow's ORC reader (Apache ORC's
//! C++ library) the ORC ones, with Hive partitioning and no options, and get the same rows as
//! the JSON-lines tables of the same input. The pipeline's own reader (verify) agrees too.
//! Spark reads the ORC tables in `sql/tests/queries.rs`, against `pageviews sql`'s counts.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use pageviews::sink::Format;
use pageviews::source::GeneratorConfig;

/// Input with late events (up to 8 s behind a 5 s watermark delay) over two hours, and
/// every kind of malformed record.
fn input(dir: &Path) -> String {
    let gen = GeneratorConfig {
        rate: 20,
        count: None,
        max_late_ms: 8_000,
        seed: 4,
        start_ms: 1_577_833_200_000,
        interval_us: None,
    };
    let mut lines = Vec::new();
    for seq in 0..120_000u64 {
        let mut out = Vec::new();
        gen.write_record(seq, &mut out);
        lines.push(String::from_utf8(out).unwrap());
        if seq % 20_000 == 7 {
            lines.push(r#"{"user_id": "x", "postcode": "A", "webpage": "w", "timestamp": 0}"#.into());
            lines.push("not json \"quoted\" \\ back".into());
        }
    }
    write_input(dir, "in.jsonl", &lines)
}

fn python() -> String {
    let out = Command::new("scripts/python-env").output().expect("run scripts/python-env");
    assert!(out.status.success(), "scripts/python-env failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().last().expect("the venv's python").trim().to_string()
}

#[test]
fn duckdb_and_pyarrow_read_the_parquet_tables_as_the_json_lines_ones() {
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path());
    let (jsonl, parquet) = (dir.path().join("jsonl"), dir.path().join("parquet"));
    for (out, format) in [(&jsonl, Format::Jsonl), (&parquet, Format::Parquet)] {
        run_files(std::slice::from_ref(&input), out, |c| {
            c.files.format = format;
            // Several files and row groups per partition.
            c.files.roll_bytes = 1 << 20;
            c.files.row_group_rows = 5_000;
        });
    }
    let report = assert_verified(&parquet);
    assert_eq!(report.rows.get("page_views"), Some(&120_000), "{report}");
    assert!(report.rows.get("late_page_views").is_some_and(|n| *n > 0), "late rows expected:\n{report}");
    for table in ["page_views", "page_view_aggregates", "late_page_views"] {
        assert_eq!(row_multiset(&parquet, table, &[]), row_multiset(&jsonl, table, &[]), "{table}");
    }
    assert_eq!(
        row_multiset(&parquet, "dead_letters", &["received_at"]).len(),
        row_multiset(&jsonl, "dead_letters", &["received_at"]).len()
    );

    let out = Command::new(python())
        .arg("tests/readers/read_tables.py")
        .arg(&jsonl)
        .arg(&parquet)
        .output()
        .expect("run read_tables.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for reader in ["duckdb", "pyarrow"] {
        for table in ["page_views", "page_view_aggregates", "late_page_views", "dead_letters"] {
            assert!(
                stdout
                    .lines()
                    .any(|l| l.starts_with(&format!("{reader} {table} ")) && l.ends_with("rows match")),
                "{reader} did not match {table}:\n{stdout}"
            );
        }
    }
}

#[test]
fn pyarrow_reads_the_orc_tables_as_the_json_lines_ones() {
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path());
    let (jsonl, orc) = (dir.path().join("jsonl"), dir.path().join("orc"));
    for (out, format) in [(&jsonl, Format::Jsonl), (&orc, Format::Orc)] {
        run_files(std::slice::from_ref(&input), out, |c| {
            c.files.format = format;
            // Several files and stripes per partition.
            c.files.roll_bytes = 1 << 20;
            c.files.row_group_rows = 5_000;
        });
    }
    let report = assert_verified(&orc);
    assert_eq!(report.rows.get("page_views"), Some(&120_000), "{report}");
    for table in ["page_views", "page_view_aggregates", "late_page_views"] {
        assert_eq!(row_multiset(&orc, table, &[]), row_multiset(&jsonl, table, &[]), "{table}");
    }

    // A zone other than UTC: ORC readers that turned the writer's UTC into local time
    // would show other instants.
    let out = Command::new(python())
        .arg("tests/readers/read_orc.py")
        .arg(&jsonl)
        .arg(&orc)
        .env("TZ", "America/New_York")
        .output()
        .expect("run read_orc.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for table in ["page_views", "page_view_aggregates", "late_page_views", "dead_letters"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("pyarrow-orc {table} ")) && l.ends_with("rows match")),
            "pyarrow did not match {table}:\n{stdout}"
        );
    }
}
