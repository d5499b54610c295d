//! SQL over tables the pipeline wrote: results match the data, a Parquet root answers as
//! the JSON-lines root of the same input does, a day/hour filter opens only that partition's
//! files, empty tables are reported, and the CLI prints what it is asked.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use pageviews_sql::catalog::TableFormat;
use pageviews_sql::{catalog, output, TableRoot};

#[test]
fn sum_of_views_equals_the_on_time_page_views() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, on_time) = three_hours();
    let root = pipeline(dir.path(), &lines);
    let s = session(&root);

    let views = single_i64(&s, "SELECT count(*) FROM page_views");
    let late = single_i64(&s, "SELECT count(*) FROM late_page_views");
    let sum = single_i64(&s, "SELECT sum(views) FROM page_view_aggregates");
    assert_eq!((views, late), (610, 10), "600 on time + 10 late");
    assert_eq!(sum, views - late, "every on-time view is in exactly one emitted window");
    assert_eq!(single_i64(&s, "SELECT count(*) FROM dead_letters WHERE reason = 'invalid_json'"), 3);

    // Per window and postcode, the aggregate holds exactly the on-time events of the input.
    let rows = csv(
        &s,
        "SELECT postcode, window_start, views FROM page_view_aggregates ORDER BY postcode, window_start",
    );
    let want: Vec<String> = std::iter::once("postcode,window_start,views".to_string())
        .chain(on_time.iter().map(|((p, w), n)| format!("{p},{w},{n}")))
        .collect();
    assert_eq!(rows, want);

    // The window equation of ARCHITECTURE.md §4, in SQL: views = page_views in the window − late ones.
    let mismatches = single_i64(
        &s,
        "WITH raw AS (SELECT postcode, date_trunc('minute', \"timestamp\") AS w, count(*) AS n
                      FROM page_views GROUP BY 1, 2),
              late AS (SELECT postcode, date_trunc('minute', \"timestamp\") AS w, count(*) AS n
                       FROM late_page_views GROUP BY 1, 2)
         SELECT count(*) FROM page_view_aggregates a
         JOIN raw r ON r.postcode = a.postcode AND r.w = a.window_start
         LEFT JOIN late l ON l.postcode = a.postcode AND l.w = a.window_start
         WHERE a.views <> r.n - coalesce(l.n, 0)",
    );
    assert_eq!(mismatches, 0);
}

#[test]
fn the_original_examples_counts_come_back_from_sql() {
    let dir = tempfile::tempdir().unwrap();
    let root = pipeline(dir.path(), &original_example());
    let s = session(&root);
    let rows = csv(
        &s,
        "SELECT postcode, window_start, \"window\", views, day, hour FROM page_view_aggregates
         ORDER BY postcode, window_start",
    );
    assert_eq!(
        rows,
        vec![
            "postcode,window_start,window,views,day,hour",
            "SW1A 1AA,2020-01-01 00:00:00.000,2020-01-01 00:01:00.000,3,2020-01-01,00",
            "SW1A 1AA,2020-01-01 00:01:00.000,2020-01-01 00:02:00.000,2,2020-01-01,00",
            "W1J 7NT,2020-01-01 00:00:00.000,2020-01-01 00:01:00.000,2,2020-01-01,00",
            "W1J 7NT,2020-01-01 00:01:00.000,2020-01-01 00:02:00.000,3,2020-01-01,00",
        ]
    );
    assert_eq!(single_i64(&s, "SELECT count(DISTINCT user_id) FROM page_views"), 10);
}

/// A day/hour filter on page_views under `root` lists only hour 01's files (ending in
/// `extension`), and reads exactly that hour's rows.
fn assert_hour_01_is_read_alone(root: &Path, extension: &str) {
    let hours: Vec<String> = std::fs::read_dir(root.join("page_views/day=2020-01-01"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(hours.len() >= 3, "the data spans several hours: {hours:?}");

    let s = session(root);
    let plan = csv(
        &s,
        "EXPLAIN SELECT user_id, \"timestamp\" FROM page_views WHERE day = '2020-01-01' AND hour = '01'",
    )
    .join("\n");
    let physical = plan.split("physical_plan").nth(1).unwrap_or_else(|| panic!("no physical plan: {plan}"));
    assert!(physical.contains("page_views/day=2020-01-01/hour=01/part-"), "{physical}");
    assert!(physical.contains(extension), "{physical}");
    for other in ["hour=00", "hour=02", "day=2019-12-31"] {
        assert!(!physical.contains(other), "the scan lists a file of {other}: {physical}");
    }

    // And the rows are exactly that hour's: 200 events 18 s apart, plus the late copies of
    // events 299, 349, 399 and 449, which fall 20 minutes back into hour 01.
    let rows = csv(
        &s,
        "SELECT count(*), min(\"timestamp\"), max(\"timestamp\") FROM page_views
         WHERE day = '2020-01-01' AND hour = '01'",
    );
    assert_eq!(rows[1], "204,2020-01-01 01:00:00.000,2020-01-01 01:59:42.000");
}

#[test]
fn a_filter_on_day_and_hour_opens_only_that_partitions_files() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, _) = three_hours();
    assert_hour_01_is_read_alone(&pipeline(dir.path(), &lines), ".jsonl");
}

#[test]
fn an_empty_or_missing_table_reads_as_empty_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let root = pipeline(dir.path(), &original_example());
    let s = session(&root);
    let result = query(&s, "SELECT * FROM late_page_views");
    assert_eq!(result.rows(), 0);
    let location = root.join("late_page_views").display().to_string();
    assert_eq!(
        result.notes,
        vec![format!("table late_page_views has no committed files yet under {location}/")]
    );
    assert!(query(&s, "SELECT * FROM page_views").notes.is_empty(), "page_views has files");

    // A root nothing was written to: every table is empty, none is an error.
    let missing = session(&dir.path().join("nothing-here"));
    for table in pageviews_core::table::Table::ALL {
        let result = query(&missing, &format!("SELECT count(*) AS n FROM {}", table.name()));
        assert_eq!(result.notes.len(), 1, "{}: {:?}", table.name(), result.notes);
        assert!(result.notes[0].contains("has no committed files yet"), "{:?}", result.notes);
    }

    // An unknown table is an error that names the real ones.
    let err = runtime().block_on(s.query("SELECT * FROM pageviews")).unwrap_err().to_string();
    assert!(err.contains("not found") && err.contains("page_view_aggregates"), "{err}");
}

/// Flink's group window over page_views answers as the `date_bin` window does, and both
/// hold the count of the input's valid lines per minute and postcode.
#[test]
fn flinks_tumble_windows_are_the_date_bin_windows() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, _) = three_hours();
    let s = session(&pipeline(dir.path(), &lines));

    // Every valid line, late ones too, counted by the minute it falls in.
    let mut per_window: std::collections::BTreeMap<(i64, String), i64> = Default::default();
    for line in &lines {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let ms = pageviews_core::time::parse_timestamp(event["timestamp"].as_str().unwrap()).unwrap();
        let postcode = event["postcode"].as_str().unwrap().to_string();
        *per_window.entry((ms - ms.rem_euclid(60_000), postcode)).or_default() += 1;
    }
    let at = pageviews_core::time::format_timestamp;
    let want: Vec<String> = std::iter::once("window_start,window_end,rowtime,postcode,views".to_string())
        .chain(per_window.iter().map(|((start, postcode), n)| {
            format!("{},{},{},{postcode},{n}", at(*start), at(start + 60_000), at(start + 59_999))
        }))
        .collect();
    assert!(want.len() > 500, "{} windows", want.len());

    let tumble = csv(
        &s,
        "SELECT TUMBLE_START(\"timestamp\", INTERVAL '1' MINUTE) AS window_start,
                TUMBLE_END(\"timestamp\", INTERVAL '1' MINUTE) AS window_end,
                TUMBLE_ROWTIME(\"timestamp\", INTERVAL '1' MINUTE) AS rowtime,
                postcode, COUNT(*) AS views
         FROM page_views
         GROUP BY TUMBLE(\"timestamp\", INTERVAL '1' MINUTE), postcode
         ORDER BY window_start, postcode",
    );
    assert_eq!(tumble, want);
    let date_bin = csv(
        &s,
        "SELECT date_bin(INTERVAL '1 minute', \"timestamp\") AS window_start, postcode, count(*) AS views
         FROM page_views GROUP BY 1, 2 ORDER BY 1, 2",
    );
    let tumble_as_date_bin: Vec<String> = tumble
        .iter()
        .map(|row| {
            let f: Vec<&str> = row.split(',').collect();
            [f[0], f[3], f[4]].join(",")
        })
        .collect();
    assert_eq!(tumble_as_date_bin, date_bin);

    // An unnamed window column is named as it was written.
    let hours = query(
        &s,
        "SELECT TUMBLE_START(\"timestamp\", INTERVAL '1' HOUR), count(*) AS n FROM page_views
         GROUP BY TUMBLE(\"timestamp\", INTERVAL '1' HOUR)",
    );
    assert_eq!(hours.schema.field(0).name(), "TUMBLE_START(\"timestamp\", INTERVAL '1' HOUR)");
    assert_eq!(hours.rows(), 3);

    // Flink's other windows are refused, saying what to write.
    for sql in [
        "SELECT count(*) FROM page_views GROUP BY HOP(\"timestamp\", INTERVAL '1' MINUTE, INTERVAL '5' MINUTE)",
        "SELECT * FROM TABLE(TUMBLE(TABLE page_views, DESCRIPTOR(\"timestamp\"), INTERVAL '1' MINUTES))",
    ] {
        let err = runtime().block_on(s.query(sql)).unwrap_err().to_string();
        assert!(err.contains("hint: group by") && err.contains("TUMBLE(\"timestamp\""), "{err}");
    }
}

/// Runs the printed catalog of `root` in a plain DataFusion context and checks that it
/// answers like our session.
fn assert_printed_catalog_reads_like_the_session(root: &Path) {
    let ours = session(root);
    let ddl = catalog::ddl(&ours.catalog());
    let rt = runtime();
    let ctx = datafusion::prelude::SessionContext::new();
    for statement in pageviews_sql::script::split_statements(&ddl) {
        rt.block_on(async { ctx.sql(&statement).await?.collect().await })
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let sql = "SELECT day, hour, count(*) AS n, min(\"timestamp\") AS first FROM page_views GROUP BY day, hour ORDER BY day, hour";
    let theirs =
        rt.block_on(async { ctx.sql(sql).await?.collect().await }).unwrap_or_else(|e| panic!("{ddl}: {e}"));
    let mut out = Vec::new();
    output::write_batches(&mut out, output::Format::Csv, &theirs).unwrap();
    let theirs: Vec<String> = String::from_utf8(out).unwrap().lines().map(str::to_string).collect();
    assert_eq!(theirs, csv(&ours, sql));
    assert_eq!(theirs.len(), 1 + 3, "header + hours 00, 01, 02");
}

#[test]
fn the_printed_catalog_registers_the_same_tables_in_datafusion() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, _) = three_hours();
    let root = pipeline(dir.path(), &lines);
    // The completion marker (ARCHITECTURE.md §3): the DDL's tables read only data files, and a marker
    // must add no rows.
    std::fs::write(root.join("page_views/day=2020-01-01/hour=00/_SUCCESS"), "").unwrap();
    assert_printed_catalog_reads_like_the_session(&root);
}

fn sql_bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pageviews-sql"));
    cmd.env_remove("PAGEVIEWS_OUTPUT");
    cmd
}

#[test]
fn the_cli_runs_e_statements_and_prints_csv() {
    let dir = tempfile::tempdir().unwrap();
    let root = pipeline(dir.path(), &original_example());
    let out = sql_bin()
        .args(["--output", &root.display().to_string(), "--format", "csv", "-e"])
        .arg("SELECT postcode, sum(views) AS views FROM page_view_aggregates GROUP BY postcode ORDER BY postcode; SELECT count(*) AS late FROM late_page_views")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "postcode,views\nSW1A 1AA,5\nW1J 7NT,5\nlate\n0\n");
    assert!(stderr.contains("2 rows in set ("), "{stderr}");
    assert!(stderr.contains("note: table late_page_views has no committed files yet"), "{stderr}");
}

#[test]
fn the_cli_runs_a_file_prints_tables_and_goes_on_after_a_failing_statement() {
    let dir = tempfile::tempdir().unwrap();
    let root = pipeline(dir.path(), &original_example());
    let script = dir.path().join("q.sql");
    std::fs::write(
        &script,
        "-- views per postcode\nSELECT postcode, sum(views) AS views\nFROM page_view_aggregates\nGROUP BY postcode\nORDER BY postcode;\nSELECT nope FROM page_views;\nSELECT count(*) AS events FROM page_views;\n",
    )
    .unwrap();
    let out = sql_bin().arg("--output").arg(&root).arg("-f").arg(&script).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a statement failed: {stderr}");
    let table = "+----------+-------+\n| postcode | views |\n+----------+-------+\n| SW1A 1AA | 5     |\n| W1J 7NT  | 5     |\n+----------+-------+\n";
    let (printed, rest) = stdout.split_at(table.len().min(stdout.len()));
    assert_eq!(printed, table);
    let (footer, rest) = rest.split_once('\n').unwrap_or((rest, ""));
    assert!(footer.starts_with("2 rows in set (") && footer.ends_with(" s)"), "{footer:?}");
    // The statement after the failing one ran.
    let events = "+--------+\n| events |\n+--------+\n| 10     |\n+--------+\n1 row in set (";
    assert!(rest.starts_with(events), "{rest:?}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].starts_with(&format!("error: {}, statement 2: ", script.display())), "{stderr}");
    assert!(errors[0].contains("nope"), "{stderr}");
}

#[test]
fn print_catalog_needs_no_data() {
    let dir = tempfile::tempdir().unwrap();
    let out = sql_bin().arg("--output").arg(dir.path()).arg("--print-catalog").output().unwrap();
    assert!(out.status.success());
    let ddl = String::from_utf8_lossy(&out.stdout);
    assert_eq!(ddl.matches("CREATE EXTERNAL TABLE").count(), 4, "{ddl}");
    assert!(ddl.contains("PARTITIONED BY (day, hour)"), "{ddl}");
}

/// The same input written by the pipeline as JSON lines and as Parquet: the two roots.
fn both_formats(dir: &Path, lines: &[String]) -> (PathBuf, PathBuf) {
    let jsonl = pipeline(dir, lines);
    let parquet = dir.join("tables-parquet");
    pipeline_to(dir, lines, WriteFormat::Parquet, &parquet.display().to_string());
    (jsonl, parquet)
}

/// Queries whose answers must not depend on the format the tables were written in: the
/// README's, sums and counts per postcode, timestamps printed, truncated and compared.
const SAME_ANSWER_QUERIES: &[&str] = &[
    "SELECT sum(views) AS views FROM page_view_aggregates",
    "SELECT postcode, count(*) AS n FROM page_views GROUP BY postcode ORDER BY postcode",
    "SELECT postcode, window_start, \"window\", views, day, hour FROM page_view_aggregates
     ORDER BY postcode, window_start",
    "SELECT date_trunc('hour', window_start) AS hour_start, postcode, sum(views) AS views
     FROM page_view_aggregates GROUP BY 1, 2 ORDER BY views DESC, postcode, hour_start LIMIT 5",
    "SELECT webpage, count(*) AS views FROM page_views GROUP BY webpage ORDER BY views DESC, webpage LIMIT 3",
    "WITH events AS (SELECT day, hour, count(*) AS events FROM page_views GROUP BY day, hour),
          late AS (SELECT day, hour, count(*) AS late FROM late_page_views GROUP BY day, hour)
     SELECT e.day, e.hour, e.events, coalesce(l.late, 0) AS late,
            round(100.0 * coalesce(l.late, 0) / e.events, 2) AS late_pct
     FROM events e LEFT JOIN late l ON l.day = e.day AND l.hour = e.hour
     ORDER BY e.day, e.hour",
    "SELECT reason, count(*) AS records, min(error) AS example FROM dead_letters
     GROUP BY reason ORDER BY records DESC, reason",
    "SELECT user_id, postcode, \"timestamp\", webpage, watermark, day, hour FROM late_page_views ORDER BY user_id",
    "SELECT count(*) AS n FROM page_views
     WHERE \"timestamp\" >= '2020-01-01 01:30:00' AND \"timestamp\" < TIMESTAMP '2020-01-01 02:00:00'",
    "SELECT count(*) AS n FROM page_views WHERE date_trunc('minute', \"timestamp\") = TIMESTAMP '2020-01-01 00:00:00'",
    "SELECT postcode, count(*) AS n FROM page_views WHERE day = '2020-01-01' AND hour = '02'
     GROUP BY postcode ORDER BY n DESC, postcode",
    "SELECT table_name, column_name, data_type FROM information_schema.columns
     WHERE table_schema = 'public' ORDER BY table_name, ordinal_position",
];

#[test]
fn a_parquet_root_answers_queries_like_the_json_lines_root_of_the_same_input() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, _) = three_hours();
    let (jsonl, parquet) = both_formats(dir.path(), &lines);
    let (j, p) = (session(&jsonl), session(&parquet));
    for (jt, pt) in j.catalog().tables.iter().zip(&p.catalog().tables) {
        assert_eq!((jt.format, pt.format), (TableFormat::Jsonl, TableFormat::Parquet), "{}", pt.name);
        assert!(pt.files > 0, "{} has Parquet files", pt.name);
    }
    for sql in SAME_ANSWER_QUERIES {
        let want = csv(&j, sql);
        assert!(want.len() > 1, "{sql}: no rows to compare");
        assert_eq!(csv(&p, sql), want, "{sql}");
    }
    assert_eq!(single_i64(&p, "SELECT sum(views) FROM page_view_aggregates"), 600);
}

#[test]
fn a_filter_on_day_and_hour_opens_only_that_partitions_parquet_files() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, _) = three_hours();
    let root = dir.path().join("tables");
    pipeline_to(dir.path(), &lines, WriteFormat::Parquet, &root.display().to_string());
    assert_hour_01_is_read_alone(&root, ".parquet");
}

#[test]
fn an_orc_root_answers_queries_like_the_json_lines_root_of_the_same_input() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, _) = three_hours();
    let jsonl = pipeline(dir.path(), &lines);
    let orc = dir.path().join("tables-orc");
    pipeline_to(dir.path(), &lines, WriteFormat::Orc, &orc.display().to_string());
    let (j, o) = (session(&jsonl), session(&orc));
    for t in &o.catalog().tables {
        assert_eq!(t.format, TableFormat::Orc, "{}", t.name);
        assert!(t.files > 0, "{} has ORC files", t.name);
    }
    for sql in SAME_ANSWER_QUERIES {
        let want = csv(&j, sql);
        assert!(want.len() > 1, "{sql}: no rows to compare");
        assert_eq!(csv(&o, sql), want, "{sql}");
    }
    // Columns in another order than the file's, and the partition columns between them.
    assert_eq!(
        csv(&o, "SELECT hour, webpage, day, user_id FROM page_views ORDER BY user_id, hour LIMIT 3"),
        csv(&j, "SELECT hour, webpage, day, user_id FROM page_views ORDER BY user_id, hour LIMIT 3")
    );
    assert_eq!(single_i64(&o, "SELECT sum(views) FROM page_view_aggregates"), 600);
    let ddl = catalog::ddl(&o.catalog());
    assert_eq!(ddl.matches("STORED AS ORC").count(), 4, "{ddl}");
}

#[test]
fn a_filter_on_day_and_hour_opens_only_that_partitions_orc_files() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, _) = three_hours();
    let root = dir.path().join("tables");
    pipeline_to(dir.path(), &lines, WriteFormat::Orc, &root.display().to_string());
    assert_hour_01_is_read_alone(&root, ".orc");
}

/// Spark 4 (pyspark, from `scripts/python-env spark`) reads the ORC folders with nothing but
/// Hive partition discovery, and counts what `pageviews sql` counts: rows per table and per
/// day/hour, and the smallest and largest event time.
#[test]
fn spark_reads_the_orc_tables_with_the_counts_of_pageviews_sql() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, _) = three_hours();
    let root = dir.path().join("tables");
    pipeline_to(dir.path(), &lines, WriteFormat::Orc, &root.display().to_string());

    let s = session(&root);
    let mut want = Vec::new();
    for (table, time) in [
        ("page_views", "timestamp"),
        ("late_page_views", "timestamp"),
        ("page_view_aggregates", "window"),
        ("dead_letters", "received_at"),
    ] {
        let t = |c: &str| format!("to_char(\"{c}\"(\"{time}\"), '%Y-%m-%d %H:%M:%S%.3f')");
        let (lo, hi) = (t("min"), t("max"));
        let sql = format!(
            "SELECT '{table}', CAST(NULL AS VARCHAR) AS d, CAST(NULL AS VARCHAR) AS h, count(*), {lo}, {hi} FROM {table} \
             UNION ALL SELECT '{table}', day, hour, count(*), {lo}, {hi} FROM {table} GROUP BY day, hour"
        );
        want.extend(csv(&s, &sql).into_iter().skip(1));
    }
    want.sort();
    assert!(want.len() > 8, "every table has rows in several hours: {want:?}");

    let spark =
        Command::new("../scripts/python-env").arg("spark").output().expect("run scripts/python-env spark");
    assert!(spark.status.success(), "scripts/python-env spark:\n{}", String::from_utf8_lossy(&spark.stderr));
    let python = String::from_utf8_lossy(&spark.stdout).lines().last().expect("a python").trim().to_string();
    let out = Command::new(python)
        .arg("../tests/readers/spark_orc.py")
        .arg(&root)
        .env("TZ", "America/New_York")
        .output()
        .expect("run spark_orc.py");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "spark_orc.py failed:\n{stderr}");
    let got: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(got, want, "Spark's counts (left) against pageviews sql's; Spark said:\n{stderr}");
}

#[test]
fn the_printed_catalog_of_a_parquet_root_says_parquet_and_reads_in_datafusion() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, _) = three_hours();
    let root = dir.path().join("tables");
    pipeline_to(dir.path(), &lines, WriteFormat::Parquet, &root.display().to_string());
    // A marker in a Parquet folder (the pipeline writes them too): a Parquet reader cannot
    // open an empty file, so the DDL's tables must skip it.
    std::fs::write(root.join("page_views/day=2020-01-01/hour=01/_SUCCESS"), "").unwrap();
    assert_printed_catalog_reads_like_the_session(&root);

    let out = sql_bin().arg("--output").arg(&root).arg("--print-catalog").output().unwrap();
    let ddl = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(ddl.matches("STORED AS PARQUET").count(), 4, "{ddl}");
    assert!(ddl.contains(&format!("LOCATION '{}/page_views/';", root.display())), "{ddl}");
}

#[test]
fn a_table_holding_both_formats_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (jsonl, parquet) = both_formats(dir.path(), &original_example());
    let file = std::fs::read_dir(parquet.join("page_views/day=2020-01-01/hour=00"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .expect("a Parquet file");
    std::fs::copy(&file, jsonl.join("page_views/day=2020-01-01/hour=00/part-extra.parquet")).unwrap();
    let root = TableRoot::parse(&jsonl.display().to_string()).unwrap();
    let err =
        runtime().block_on(pageviews_sql::Session::open(&root, budget())).err().expect("refused").to_string();
    assert!(err.contains("page_views") && err.contains("both .jsonl") && err.contains("--format"), "{err}");
}

#[test]
fn an_empty_table_of_a_parquet_root_is_read_as_parquet_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tables");
    pipeline_to(dir.path(), &original_example(), WriteFormat::Parquet, &root.display().to_string());
    let s = session(&root);
    // The ten events are all on time: late_page_views has no files, and takes the format of
    // the root's other tables, so the DDL stays right once the pipeline writes some.
    let late = s.catalog().table("late_page_views").expect("a catalog table").clone();
    assert_eq!((late.format, late.files), (TableFormat::Parquet, 0));
    let result = query(&s, "SELECT * FROM late_page_views");
    assert_eq!(result.rows(), 0);
    assert_eq!(result.notes, vec![late.empty_note()]);
    assert_eq!(catalog::ddl(&s.catalog()).matches("STORED AS PARQUET").count(), 4);
    assert_eq!(
        csv(&s, "SELECT postcode, sum(views) AS views FROM page_view_aggregates GROUP BY postcode ORDER BY postcode"),
        ["postcode,views", "SW1A 1AA,5", "W1J 7NT,5"]
    );
}
