//! SQL over a bucket root (`s3://` or `az://`): tables the pipeline wrote to a real object
//! store answer the same queries as the same input written to local disk, in both formats.
//!
//! The store is the one the testkit's `store` module names (`PAGEVIEWS_TEST_STORE`: moto,
//! s3rver or Azurite; scripts/test runs this suite against each). Its settings are handed to
//! the pipeline and the SQL client explicitly; the process environment is left alone.

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
fn a_bucket_root_answers_like_the_local_root_of_the_same_input() {
    let bucket = store::bucket("pv-sql");

    let dir = tempfile::tempdir().unwrap();
    let (lines, _) = three_hours();
    for (format, table_format) in
        [(WriteFormat::Jsonl, TableFormat::Jsonl), (WriteFormat::Parquet, TableFormat::Parquet)]
    {
        let url = store::url(&bucket, &format!("x/{}", format.extension()));
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
    let missing = store::url(&format!("{bucket}-missing"), "x");
    let hint = match store::kind() {
        store::Kind::S3 => "AWS_ENDPOINT_URL",
        store::Kind::Azure => "AZURE_STORAGE_ACCOUNT_NAME",
    };
    let root = pageviews_sql::TableRoot::parse_with(&missing, &store::env()).unwrap();
    let err = runtime()
        .block_on(pageviews_sql::Session::open(&root, budget()))
        .err()
        .expect("no such bucket")
        .to_string();
    assert!(err.contains(&format!("state of {missing}:")) && err.contains(hint), "{err}");
    // The folder view lists the table folders, and names the one it could not list.
    let folders = pageviews_sql::TableRoot::parse_with(&missing, &store::env()).unwrap().visible_only();
    let err = runtime()
        .block_on(pageviews_sql::Session::open(&folders, budget()))
        .err()
        .expect("no such bucket")
        .to_string();
    assert!(err.contains(&format!("{missing}/page_views/")) && err.contains(hint), "{err}");
}

#[test]
fn settings_that_cannot_work_are_refused_with_what_to_set() {
    // Only checks of the parsed settings, no requests: these run without a server. Each
    // case builds its own configuration from these values, not from the process's.
    let parse = |output: &str, vars: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pageviews-sql"));
        for (key, _) in std::env::vars() {
            if key.starts_with("AWS_") || key.starts_with("AZURE_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(vars.iter().copied()).args(["--output", output, "-e", "SELECT 1"]);
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{vars:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let no_keys = parse("s3://bucket/x", &[("AWS_ENDPOINT_URL", "http://127.0.0.1:1")]);
    assert!(no_keys.contains("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"), "{no_keys}");
    let half = parse("s3://bucket/x", &[("AWS_ACCESS_KEY_ID", "a")]);
    assert!(half.contains("AWS_SECRET_ACCESS_KEY"), "{half}");
    let http = parse(
        "s3://bucket/x",
        &[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
            ("AWS_ACCESS_KEY_ID", "a"),
            ("AWS_SECRET_ACCESS_KEY", "b"),
        ],
    );
    assert!(http.contains("set AWS_ALLOW_HTTP=true"), "{http}");
    let no_account = parse("az://container/x", &[]);
    assert!(no_account.contains("set AZURE_STORAGE_ACCOUNT_NAME"), "{no_account}");
    let no_key = parse(
        "az://container/x",
        &[("AZURE_STORAGE_ACCOUNT_NAME", "a"), ("AZURE_STORAGE_ENDPOINT", "http://127.0.0.1:1/a")],
    );
    assert!(no_key.contains("set AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_KEY"), "{no_key}");
}

/// A pipeline frozen mid-run in a bucket at 95 s of virtual time, 1000 events/s, 5 MiB parts:
/// page_views' open file (~110 bytes a row) has uploaded a part, which neither S3 nor Azure
/// lets anyone read before the upload completes; page_view_aggregates' open file is all in
/// its checkpoint tail, which is read.
#[test]
fn open_files_in_a_bucket_are_read_from_their_tails_or_said_to_wait_for_their_roll() {
    use std::sync::Arc;
    use std::time::Duration;

    use pageviews::clock::ManualClock;
    use pageviews::source::GeneratorConfig;
    use pageviews::{PipelineConfig, Shutdown, SourceConfig};

    let bucket = store::bucket("pv-open");
    let url = store::url(&bucket, "x");
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
    config.store_env = store::env();
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
        "1 file still being written under {url} holds {} committed rows that the store cannot serve until it rolls",
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
