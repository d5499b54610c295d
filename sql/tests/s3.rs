//! SQL over an s3:// table root: tables the pipeline wrote to an S3-compatible server
//! answer the same queries as the same input written to local disk, in both formats.
//!
//! The server is `PAGEVIEWS_TEST_S3` (an endpoint URL) or the project's moto server, which
//! `scripts/s3-local start` starts. Its `AWS_*` settings are handed to the pipeline and the
//! SQL client explicitly; the process environment is left alone.

mod common;

use std::process::Command;

use common::*;
use pageviews_sql::catalog::TableFormat;

/// Queries that read every table and its timestamps, partitions and counts.
const QUERIES: &[&str] = &[
    "SELECT sum(views) AS views FROM page_view_aggregates",
    "SELECT postcode, count(*) AS n FROM page_views GROUP BY postcode ORDER BY postcode",
    "SELECT postcode, window_start, \"window\", views, day, hour FROM page_view_aggregates
     ORDER BY postcode, window_start",
    "SELECT date_trunc('hour', \"timestamp\") AS h, count(*) AS n FROM late_page_views GROUP BY 1 ORDER BY 1",
    "SELECT postcode, count(*) AS n FROM page_views WHERE day = '2020-01-01' AND hour = '01'
     GROUP BY postcode ORDER BY postcode",
    "SELECT reason, count(*) AS n FROM dead_letters GROUP BY reason ORDER BY reason",
];

#[test]
fn an_s3_root_answers_like_the_local_root_of_the_same_input() {
    let bucket = s3::bucket("pv-sql");

    let dir = tempfile::tempdir().unwrap();
    let (lines, _) = three_hours();
    for (format, table_format) in
        [(WriteFormat::Jsonl, TableFormat::Jsonl), (WriteFormat::Parquet, TableFormat::Parquet)]
    {
        let url = format!("s3://{bucket}/x/{}", format.extension());
        pipeline_to(dir.path(), &lines, format, &url);
        let local = dir.path().join(format!("local-{}", format.extension()));
        pipeline_to(dir.path(), &lines, format, &local.display().to_string());

        let (remote, local) = (session_on(&url), session(&local));
        for table in &remote.catalog().tables {
            assert_eq!(table.format, table_format, "{url}: {}", table.name);
            assert!(table.files > 0, "{url}: {} has files", table.name);
            assert!(table.location.starts_with(&format!("{url}/")), "{}", table.location);
        }
        for sql in QUERIES {
            let want = csv(&local, sql);
            assert!(want.len() > 1, "{sql}: no rows to compare");
            assert_eq!(csv(&remote, sql), want, "{url}: {sql}");
        }

        // The scan of a day/hour filter lists only that folder's objects.
        let plan =
            csv(&remote, "EXPLAIN SELECT user_id FROM page_views WHERE day = '2020-01-01' AND hour = '01'")
                .join("\n");
        assert!(plan.contains("page_views/day=2020-01-01/hour=01/part-"), "{plan}");
        assert!(!plan.contains("hour=00") && !plan.contains("hour=02"), "{plan}");
    }

    // A bucket that does not exist is an error naming the root and what to check.
    let missing = format!("s3://{bucket}-missing/x");
    let root = pageviews_sql::TableRoot::parse_with(&missing, &s3::env()).unwrap();
    let err = runtime()
        .block_on(pageviews_sql::Session::open(&root, budget()))
        .err()
        .expect("no such bucket")
        .to_string();
    assert!(err.contains(&format!("state of {missing}:")) && err.contains("AWS_ENDPOINT_URL"), "{err}");
    // The folder view lists the table folders, and names the one it could not list.
    let folders = pageviews_sql::TableRoot::parse_with(&missing, &s3::env()).unwrap().visible_only();
    let err = runtime()
        .block_on(pageviews_sql::Session::open(&folders, budget()))
        .err()
        .expect("no such bucket")
        .to_string();
    assert!(err.contains(&format!("{missing}/page_views/")) && err.contains("AWS_ENDPOINT_URL"), "{err}");
}

#[test]
fn s3_settings_that_cannot_work_are_refused_with_what_to_set() {
    // Only checks of the parsed settings, no requests: these run without a server. Each
    // case builds its own configuration from these values, not from the process's.
    let parse = |vars: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pageviews-sql"));
        for key in ["AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ALLOW_HTTP"] {
            cmd.env_remove(key);
        }
        cmd.envs(vars.iter().copied()).args(["--output", "s3://bucket/x", "-e", "SELECT 1"]);
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{vars:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let no_keys = parse(&[("AWS_ENDPOINT_URL", "http://127.0.0.1:1")]);
    assert!(no_keys.contains("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"), "{no_keys}");
    let half = parse(&[("AWS_ACCESS_KEY_ID", "a")]);
    assert!(half.contains("AWS_SECRET_ACCESS_KEY"), "{half}");
    let http = parse(&[
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
        ("AWS_ACCESS_KEY_ID", "a"),
        ("AWS_SECRET_ACCESS_KEY", "b"),
    ]);
    assert!(http.contains("set AWS_ALLOW_HTTP=true"), "{http}");
}

/// A pipeline frozen mid-run on S3 at 95 s of virtual time, 1000 events/s, 5 MiB parts:
/// page_views' open file (~110 bytes a row) has uploaded a part, which S3 does not let
/// anyone read before the upload completes; page_view_aggregates' open file is all in its
/// checkpoint tail, which is read.
#[test]
fn open_files_on_s3_are_read_from_their_tails_or_said_to_wait_for_their_roll() {
    use std::sync::Arc;
    use std::time::Duration;

    use pageviews::clock::ManualClock;
    use pageviews::source::GeneratorConfig;
    use pageviews::{PipelineConfig, Shutdown, SourceConfig};

    let bucket = s3::bucket("pv-open");
    let url = format!("s3://{bucket}/x");
    let generator = GeneratorConfig {
        rate: 1000,
        count: None,
        max_late_ms: 0,
        seed: 3,
        start_ms: BASE_MS,
        interval_us: None,
    };
    let clock = Arc::new(ManualClock::new(BASE_MS));
    clock.hold_at(95_000);
    let mut config = PipelineConfig::new(SourceConfig::Generator(generator.into()), url.clone());
    config.s3_env = s3::env();
    config.files.part_bytes = Some(5 << 20);
    config.files.roll_age = Duration::from_secs(600);
    config.clock = clock.clone();
    let metrics = Arc::new(pageviews::metrics::Metrics::new(&config.pipeline_id));
    let run = pageviews::start(config, Shutdown::default(), metrics.clone()).unwrap();
    // Checkpoints every 10 s up to 90 s; the clock stays at 95 s.
    wait_for("checkpoint 9", Duration::from_secs(120), || metrics.checkpoints.get() >= 9);
    let totals = run.status().totals;

    let s = session_on(&url);
    let result = query(&s, "SELECT count(*) FROM page_view_aggregates");
    assert!(result.notes.is_empty(), "{:?}", result.notes);
    assert_eq!(
        single_i64(&s, "SELECT count(*) FROM page_view_aggregates") as u64,
        totals.page_view_aggregates
    );
    assert!(totals.page_view_aggregates > 0);

    let result = query(&s, "SELECT count(*) AS n FROM page_views");
    assert_eq!(
        single_i64(&s, "SELECT count(*) AS n FROM page_views"),
        0,
        "the only page_views file is unreadable"
    );
    let note = format!(
        "1 file still being written under {url} holds {} committed rows that S3 cannot serve until it rolls",
        totals.page_views
    );
    assert!(result.notes.iter().any(|n| n.starts_with(&note)), "{note:?} in {:?}", result.notes);

    clock.release();
    run.shutdown().trigger();
    run.join().unwrap();
    // Rolled: every row readable, no note.
    let result = query(&s, "SELECT count(*) FROM page_views");
    assert!(result.notes.is_empty(), "{:?}", result.notes);
    assert!(single_i64(&s, "SELECT count(*) FROM page_views") as u64 >= totals.page_views);
}
