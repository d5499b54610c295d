//! SQL over tables the pipeline wrote: results match the data, a day/hour filter opens only
//! that partition's files, empty tables are reported, and the CLI prints what it is asked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pageviews::event::timestamp::format_timestamp;
use pageviews::{PipelineConfig, Shutdown, SourceConfig};
use pageviews_sql::{catalog, output, Format, QueryResult, Session, TableRoot};

const POSTCODES: [&str; 3] = ["SW1A 1AA", "W1J 7NT", "EC1A 1BB"];

/// Milliseconds of 2020-01-01 00:00:00 UTC.
const BASE_MS: i64 = 1_577_836_800_000;

fn view(user: i64, postcode: &str, ms: i64) -> String {
    format!(
        r#"{{"user_id": {user}, "postcode": "{postcode}", "webpage": "www.website.com/p{}.html", "timestamp": "{}"}}"#,
        user % 4,
        format_timestamp(ms)
    )
}

/// Runs the pipeline over `lines` and returns the table root.
fn pipeline(dir: &Path, lines: &[String]) -> PathBuf {
    let input = dir.join("input.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").expect("write input");
    let out = dir.join("tables");
    let config = PipelineConfig::new(
        SourceConfig::Files(vec![input.display().to_string()]),
        out.display().to_string(),
    );
    let summary = pageviews::run(config, Shutdown::default()).expect("pipeline run");
    assert!(summary.reached_end);
    out
}

/// Three hours of events, 18 s apart, round-robin over three postcodes; every 50th event
/// after the first hundred is repeated 20 minutes in the past (late), and three lines are
/// malformed. Returns the lines and the on-time count per (postcode, window start).
fn three_hours() -> (Vec<String>, BTreeMap<(String, String), i64>) {
    let mut lines = Vec::new();
    let mut on_time: BTreeMap<(String, String), i64> = BTreeMap::new();
    for i in 0..600i64 {
        let ms = BASE_MS + i * 18_000;
        let postcode = POSTCODES[(i % 3) as usize];
        lines.push(view(i, postcode, ms));
        *on_time.entry((postcode.to_string(), format_timestamp(ms - ms % 60_000))).or_default() += 1;
        if i % 50 == 49 && i > 100 {
            lines.push(view(10_000 + i, postcode, ms - 20 * 60_000));
        }
        if i % 200 == 7 {
            lines.push(format!("{{\"user_id\": {i}, \"postcode\":"));
        }
    }
    (lines, on_time)
}

/// The original Flink job's ten events (see the pipeline's tests/original_example.rs).
fn original_example() -> Vec<String> {
    let sw = ["00:00:05", "00:00:47", "00:00:36", "00:01:53", "00:01:32"];
    let w1 = ["00:00:03", "00:00:08", "00:01:31", "00:01:19", "00:01:42"];
    sw.iter()
        .zip(w1)
        .flat_map(|(a, b)| [("SW1A 1AA", *a), ("W1J 7NT", b)])
        .enumerate()
        .map(|(i, (p, t))| {
            format!(
                r#"{{"user_id": {i}, "postcode": "{p}", "webpage": "www.website.com/index.html", "timestamp": "2020-01-01 {t}"}}"#
            )
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime")
}

fn session(root: &Path) -> Session {
    Session::open(&TableRoot::parse(&root.display().to_string()).expect("root")).expect("catalog")
}

fn query(session: &Session, sql: &str) -> QueryResult {
    runtime().block_on(session.query(sql)).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A query's rows as CSV lines, header first.
fn csv(session: &Session, sql: &str) -> Vec<String> {
    let result = query(session, sql);
    let mut out = Vec::new();
    output::write_batches(&mut out, Format::Csv, &result.batches).expect("csv");
    String::from_utf8(out).expect("utf8").lines().map(str::to_string).collect()
}

fn single_i64(session: &Session, sql: &str) -> i64 {
    let rows = csv(session, sql);
    assert_eq!(rows.len(), 2, "{sql}: {rows:?}");
    rows[1].parse().unwrap_or_else(|e| panic!("{sql}: {:?}: {e}", rows[1]))
}

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

    // DESIGN §4's equation, in SQL: views = page_views in the window − late ones.
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

#[test]
fn a_filter_on_day_and_hour_opens_only_that_partitions_files() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, _) = three_hours();
    let root = pipeline(dir.path(), &lines);
    let hours: Vec<String> = std::fs::read_dir(root.join("page_views/day=2020-01-01"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(hours.len() >= 3, "the data spans several hours: {hours:?}");

    let s = session(&root);
    let plan = csv(
        &s,
        "EXPLAIN SELECT user_id, \"timestamp\" FROM page_views WHERE day = '2020-01-01' AND hour = '01'",
    )
    .join("\n");
    let physical = plan.split("physical_plan").nth(1).unwrap_or_else(|| panic!("no physical plan: {plan}"));
    assert!(physical.contains("page_views/day=2020-01-01/hour=01/part-"), "{physical}");
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
    for table in catalog::TABLES {
        let result = query(&missing, &format!("SELECT count(*) AS n FROM {}", table.name));
        assert_eq!(result.notes.len(), 1, "{}: {:?}", table.name, result.notes);
        assert!(result.notes[0].contains("has no committed files yet"), "{:?}", result.notes);
    }

    // An unknown table is an error that names the real ones.
    let err = runtime().block_on(s.query("SELECT * FROM pageviews")).unwrap_err().to_string();
    assert!(err.contains("not found") && err.contains("page_view_aggregates"), "{err}");
}

#[test]
fn the_printed_catalog_registers_the_same_tables_in_datafusion() {
    let dir = tempfile::tempdir().unwrap();
    let (lines, _) = three_hours();
    let root = pipeline(dir.path(), &lines);
    // DESIGN §3's completion marker (not written by the pipeline yet): the DDL's tables read
    // every file in their folder, and an empty marker must add no rows.
    std::fs::write(root.join("page_views/day=2020-01-01/hour=00/_SUCCESS"), "").unwrap();
    let ddl = catalog::ddl(&TableRoot::parse(&root.display().to_string()).unwrap());
    let rt = runtime();
    let ctx = datafusion::prelude::SessionContext::new();
    for statement in pageviews_sql::script::split_statements(&ddl) {
        rt.block_on(async { ctx.sql(&statement).await?.collect().await })
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    let ours = session(&root);
    let sql = "SELECT day, hour, count(*) AS n, min(\"timestamp\") AS first FROM page_views GROUP BY day, hour ORDER BY day, hour";
    let theirs = rt.block_on(async { ctx.sql(sql).await?.collect().await }).unwrap();
    let mut out = Vec::new();
    output::write_batches(&mut out, Format::Csv, &theirs).unwrap();
    let theirs: Vec<String> = String::from_utf8(out).unwrap().lines().map(str::to_string).collect();
    assert_eq!(theirs, csv(&ours, sql));
    assert_eq!(theirs.len(), 1 + 3, "header + hours 00, 01, 02");
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
fn the_cli_runs_a_file_prints_tables_and_stops_at_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = pipeline(dir.path(), &original_example());
    let script = dir.path().join("q.sql");
    std::fs::write(
        &script,
        "-- views per postcode\nSELECT postcode, sum(views) AS views\nFROM page_view_aggregates\nGROUP BY postcode\nORDER BY postcode;\nSELECT nope FROM page_views;\nSELECT 1;\n",
    )
    .unwrap();
    let out = sql_bin().arg("--output").arg(&root).arg("-f").arg(&script).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let table = "+----------+-------+\n| postcode | views |\n+----------+-------+\n| SW1A 1AA | 5     |\n| W1J 7NT  | 5     |\n+----------+-------+\n";
    let (printed, footer) = stdout.split_at(table.len().min(stdout.len()));
    assert_eq!(printed, table);
    assert!(footer.starts_with("2 rows in set (") && footer.ends_with(" s)\n"), "{footer:?}");
    assert!(stderr.contains("statement 2") && stderr.contains("nope"), "{stderr}");
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
