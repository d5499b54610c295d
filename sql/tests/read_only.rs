//! `pageviews sql` only reads. A statement that would write a file, register, change or drop
//! a table, or change the session is refused in one line that says what to use instead, and
//! the table root stays exactly as the pipeline committed it; queries, EXPLAIN, SHOW and
//! DESCRIBE run.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn sql_bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pageviews-sql"));
    cmd.env_remove("PAGEVIEWS_OUTPUT");
    cmd
}

/// Every file below `dir` with its length.
fn listing(dir: &Path) -> Vec<(PathBuf, u64)> {
    files(dir).into_iter().map(|f| (f.clone(), std::fs::metadata(&f).map_or(0, |m| m.len()))).collect()
}

/// Statements that write, register or change something; `{outside}` is a folder outside the
/// table root.
const WRITES: &[&str] = &[
    "INSERT INTO page_views VALUES (1, 'SW1A 1AA', TIMESTAMP '2020-01-01 00:00:00', 'www.website.com/x.html', '2020-01-01', '00')",
    "INSERT INTO page_views SELECT * FROM page_views",
    "EXPLAIN ANALYZE INSERT INTO page_views SELECT * FROM page_views",
    "DELETE FROM page_views",
    "UPDATE page_views SET user_id = 0",
    "COPY page_views TO '{outside}/copy.json'",
    "COPY (SELECT 1 AS x) TO '{outside}/one.csv'",
    "CREATE EXTERNAL TABLE passwd (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'",
    "CREATE TABLE copy AS SELECT * FROM page_views",
    "CREATE VIEW recent AS SELECT * FROM page_views",
    "CREATE SCHEMA scratch",
    "DROP TABLE page_views",
    "SET datafusion.runtime.memory_limit = '1T'",
    "SET datafusion.runtime.temp_directory = '{outside}'",
    "SET datafusion.execution.batch_size = 1",
    "RESET datafusion.execution.batch_size",
    "START TRANSACTION",
    "PREPARE q AS SELECT 1",
];

/// Statements that only read.
const READS: &[&str] = &[
    "SELECT count(*) AS n FROM page_views",
    "WITH v AS (SELECT postcode FROM page_views) SELECT count(*) AS n FROM v",
    "EXPLAIN SELECT count(*) FROM page_views",
    "EXPLAIN ANALYZE SELECT count(*) FROM page_views",
    "SHOW TABLES",
    "SHOW COLUMNS FROM page_views",
    "SHOW datafusion.execution.batch_size",
    "DESCRIBE page_views",
    "SELECT * FROM information_schema.tables",
    "VALUES (1, 2)",
];

#[test]
fn writes_are_refused_in_one_line_reads_run_and_the_root_stays_as_committed() {
    let dir = tempfile::tempdir().unwrap();
    let root = pipeline(dir.path(), &original_example());
    let outside = dir.path().join("outside");
    let before = listing(&root);
    for statement in WRITES {
        let statement = statement.replace("{outside}", &outside.display().to_string());
        let out = sql_bin().arg("--output").arg(&root).args(["-e", &statement]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{statement}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{statement}: one line, not {stderr}");
        assert!(
            lines[0].contains("pageviews sql is read-only") && lines[0].contains("`pageviews run` writes"),
            "{statement}: {stderr}"
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "", "{statement}");
    }
    for statement in READS {
        let out =
            sql_bin().arg("--output").arg(&root).args(["--format", "csv", "-e", statement]).output().unwrap();
        assert!(out.status.success(), "{statement}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).lines().count() >= 2, "{statement}: a header and rows");
    }
    assert_eq!(listing(&root), before, "the table root changed");
    assert!(!outside.exists(), "a statement wrote outside the root");
    assert_verified(&root);
}

#[test]
fn a_refused_statement_leaves_the_session_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let root = pipeline(dir.path(), &original_example());
    let s = session(&root);
    let rt = runtime();
    for statement in [
        "DROP TABLE page_views",
        "CREATE VIEW page_views_2 AS SELECT 1",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let err = rt.block_on(s.query(statement)).expect_err(statement).to_string();
        assert!(err.contains("read-only"), "{statement}: {err}");
    }
    assert_eq!(single_i64(&s, "SELECT count(*) FROM page_views"), 10);
    let err = rt.block_on(s.query("SELECT * FROM page_views_2")).unwrap_err().to_string();
    assert!(err.contains("not found"), "{err}");
    assert_eq!(
        csv(
            &s,
            "SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.batch_size'"
        ),
        ["value", "8192"]
    );
}
