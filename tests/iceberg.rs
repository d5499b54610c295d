//! The Iceberg tables (`--table-format iceberg`) as readers nobody here wrote see them:
//! pyiceberg 0.12 through the SQLite catalog (the default), Apache Iceberg's own REST
//! catalog server (scripts/iceberg-rest) and Glue (moto's server, scripts/s3-local). Each
//! reads the rows `verify` counts from the commit log, each older snapshot holds exactly the
//! rows of the checkpoint it records, and a filter on the time column plans only its hours;
//! Spark, through the SQLite catalog, reads the same and travels to each snapshot. kill -9
//! during commit cycles, two pipelines committing to one set of tables at once, and two
//! instances of one consumer group leave every table exact.
//!
//! `PAGEVIEWS_SOAK_KILLS=N` raises the number of kills (scripts/soak does, outside CI).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use pageviews::core::commit::index::read_index;
use pageviews::core::commit::View;
use pageviews::core::storage::{Storage, StoreEnv};
use pageviews::sink::iceberg::IcebergConfig;
use pageviews::source::GeneratorConfig;
use pageviews_testkit::kafka::*;
use serde_json::Value;

const TABLES: [&str; 4] = ["page_views", "page_view_aggregates", "late_page_views", "dead_letters"];

fn python() -> String {
    let out = Command::new("scripts/python-env").output().expect("run scripts/python-env");
    assert!(out.status.success(), "scripts/python-env failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().last().expect("the venv's python").trim().to_string()
}

/// pyiceberg's view of the four tables (tests/readers/read_iceberg.py).
fn pyiceberg(catalog: &Value, namespace: &str, env: &StoreEnv) -> Value {
    let out = Command::new(python())
        .arg("tests/readers/read_iceberg.py")
        .arg(catalog.to_string())
        .arg(namespace)
        .envs(env.vars().iter().map(|(k, v)| (k.clone(), v.clone())))
        .output()
        .expect("run read_iceberg.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "pyiceberg failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("read_iceberg.py prints JSON")
}

fn spawn(args: &[&str], env: &StoreEnv) -> Child {
    bin()
        .args(args)
        .envs(env.vars().iter().map(|(k, v)| (k.clone(), v.clone())))
        .env("RUST_LOG", "pageviews=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pageviews")
}

fn run(args: &[&str], env: &StoreEnv) -> String {
    let out = spawn(args, env).wait_with_output().expect("run pageviews");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "pageviews {args:?} failed:\n{stderr}");
    stderr
}

/// The audit of the root and its Iceberg tables; panics on any violation.
fn verified(url: &str, config: &IcebergConfig, env: &StoreEnv) -> pageviews::verify::Report {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let storage = Storage::open_with(url, rt.handle().clone(), env).unwrap();
    let report = pageviews::verify::verify_with(&storage, Some(config), env).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.iceberg_pending, 0, "{report}");
    report
}

/// Rows the log committed into completed files of each table through each log version.
fn log_rows(url: &str, pipeline: &str, env: &StoreEnv) -> BTreeMap<&'static str, Vec<(u64, u64)>> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let storage = Storage::open_with(url, rt.handle().clone(), env).unwrap();
    let view = rt.block_on(View::load(&storage, pipeline)).unwrap();
    let files = rt.block_on(read_index(&storage, &view.index, &view.recent_files)).unwrap();
    let mut out: BTreeMap<&'static str, Vec<(u64, u64)>> = BTreeMap::new();
    for f in files {
        out.entry(f.table.name()).or_default().push((f.version, f.rows));
    }
    out
}

/// pyiceberg reads what verify counts, each snapshot is its checkpoint, and filters prune.
fn assert_read_back(
    read: &Value,
    report: &pageviews::verify::Report,
    through: &BTreeMap<&str, Vec<(u64, u64)>>,
) {
    for table in TABLES {
        let rows = report.rows.get(table).copied().unwrap_or(0);
        let (files, iceberg_rows) = report.iceberg.get(table).copied().unwrap_or_default();
        assert_eq!(
            iceberg_rows, rows,
            "{table}: the Iceberg table holds other rows than its folder\n{report}"
        );
        assert_eq!(
            read[table]["rows"], rows,
            "{table}: pyiceberg read other rows than verify counted\n{read}"
        );
        assert_eq!(read[table]["files"], files, "{table}\n{read}");
        for s in read[table]["snapshots"].as_array().unwrap() {
            let version = s["version"].as_u64().unwrap();
            let want: u64 = through
                .get(table)
                .map_or(0, |f| f.iter().filter(|(v, _)| *v <= version).map(|(_, r)| r).sum());
            assert_eq!(s["rows"], want, "{table}: snapshot {} (log version {version}) has other rows than the log committed through it", s["id"]);
        }
    }
    let pv = report.rows.get("page_views").copied().unwrap_or(0);
    let late = report.rows.get("late_page_views").copied().unwrap_or(0);
    assert_eq!(read["views"], pv - late, "views = page_views - late\n{read}");
    assert_eq!(read["page_views"]["type"], "timestamp[us, tz=UTC]", "{read}");
}

/// A catalog as `verify` reaches it, and as pyiceberg does (its catalog properties).
struct Catalog {
    config: IcebergConfig,
    pyiceberg: Value,
}

impl Catalog {
    /// The SQLite catalog a local `out` defaults to.
    fn sqlite(out: &str) -> Catalog {
        Catalog {
            config: IcebergConfig::new(format!("sqlite:{out}/catalog.db")),
            pyiceberg: serde_json::json!({"type": "sql", "uri": format!("sqlite:///{out}/catalog.db")}),
        }
    }
}

/// Runs the generator pipeline `args` into `out` to its end, then reads its tables back:
/// `verify` finds the root and `catalog` clean with `page_views` rows, and pyiceberg reads
/// them as [`assert_read_back`] requires. Returns what pyiceberg read.
fn run_and_read_back(
    args: &[String],
    out: &str,
    catalog: &Catalog,
    page_views: u64,
    env: &StoreEnv,
) -> Value {
    run(&refs(args), env);
    let report = verified(out, &catalog.config, env);
    assert_eq!(report.rows.get("page_views"), Some(&page_views), "{report}");
    let read = pyiceberg(&catalog.pyiceberg, &catalog.config.namespace, env);
    assert_read_back(&read, &report, &log_rows(out, "generator", env));
    read
}

/// The generator of [`generator`]'s runs: its seed and first event time (events 100 ms apart).
const SEED: u64 = 7;
const START: &str = "2020-01-01 00:40:00";

fn generator(out: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> =
        ["run", "--output", out, "--format", "parquet", "--table-format", "iceberg", "--http", "off"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.extend(
        ["--seed", &SEED.to_string(), "--start-time", START, "--event-interval", "100ms"].map(String::from),
    );
    for (flag, default) in [("--checkpoint-interval", "300ms"), ("--roll-age", "500ms")] {
        if !extra.contains(&flag) {
            args.extend([flag.to_string(), default.to_string()]);
        }
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A JSON-lines input of `n` generated page views over a few hours.
fn input_file(dir: &Path, n: u64) -> String {
    let gen = pageviews::source::GeneratorConfig {
        rate: 20,
        count: None,
        max_late_ms: 8_000,
        seed: 4,
        start_ms: 1_577_833_200_000,
        interval_us: None,
    };
    let lines: Vec<String> = (0..n)
        .map(|seq| {
            let mut out = Vec::new();
            gen.write_record(seq, &mut out);
            String::from_utf8(out).unwrap()
        })
        .collect();
    write_input(dir, "in.jsonl", &lines)
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn pyiceberg_reads_every_checkpoint_of_the_sqlite_catalog_tables() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out").display().to_string();
    let env = StoreEnv::from_pairs::<String, String>([]);
    let args = generator(&out, &["--count", "40000", "--rate", "10000"]);
    let read = run_and_read_back(&args, &out, &Catalog::sqlite(&out), 40_000, &env);
    let snapshots = read["page_views"]["snapshots"].as_array().unwrap().len();
    assert!(snapshots >= 3, "one snapshot per checkpoint that completed files: {snapshots}\n{read}");
    let pruned = read["page_views"]["pruned_files"].as_u64().unwrap();
    assert!(
        pruned < read["page_views"]["files"].as_u64().unwrap(),
        "a filter on the newest hour plans fewer files\n{read}"
    );
}

#[test]
fn jsonl_is_refused_with_iceberg() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out").display().to_string();
    let result =
        bin().args(["run", "--output", &out, "--table-format", "iceberg", "--count", "1"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success() && stderr.contains("--format parquet"), "{stderr}");
}

/// Apache Iceberg's REST catalog server in its own folder, stopped when dropped.
struct RestServer {
    dir: std::path::PathBuf,
    uri: String,
}

impl RestServer {
    fn start(dir: &Path) -> RestServer {
        let dir = dir.join("rest");
        let out = Command::new(workspace().join("scripts/iceberg-rest"))
            .arg("start")
            .env("ICEBERG_REST_DIR", &dir)
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/iceberg-rest");
        assert!(out.status.success(), "scripts/iceberg-rest start failed");
        let uri = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").trim().to_string();
        RestServer { dir, uri }
    }
}

impl Drop for RestServer {
    fn drop(&mut self) {
        let _ = Command::new(workspace().join("scripts/iceberg-rest"))
            .arg("stop")
            .env("ICEBERG_REST_DIR", &self.dir)
            .status();
    }
}

#[test]
fn two_pipelines_commit_to_the_rest_catalog_at_once_and_pyiceberg_reads_both() {
    let dir = tempfile::tempdir().unwrap();
    let rest = RestServer::start(dir.path());
    let catalog = Catalog {
        config: IcebergConfig::new(rest.uri.clone()),
        pyiceberg: serde_json::json!({"type": "rest", "uri": rest.uri}),
    };
    two_pipelines_at_once(dir.path(), &rest.uri, &catalog);
}

/// The SQL catalog's compare-and-swap (`UPDATE … WHERE metadata_location = ?`): the loser of
/// a race reads the table again and commits over the winner's snapshot.
#[test]
fn two_pipelines_commit_to_one_sqlite_catalog_at_once_and_pyiceberg_reads_both() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out").display().to_string();
    let catalog = Catalog::sqlite(&out);
    two_pipelines_at_once(dir.path(), &format!("sqlite:{out}/catalog.db"), &catalog);
}

/// Two pipelines (the generator's and a file's) commit into the same four tables of
/// `catalog_uri` every 100 ms; each table then holds both pipelines' rows, as `verify` counts
/// them from the log and pyiceberg reads them through the catalog.
fn two_pipelines_at_once(dir: &Path, catalog_uri: &str, catalog: &Catalog) {
    let out = dir.join("out").display().to_string();
    let env = StoreEnv::from_pairs::<String, String>([]);
    let input = input_file(dir, 60_000);
    let a = generator(
        &out,
        &["--count", "40000", "--rate", "10000", "--catalog", catalog_uri, "--checkpoint-interval", "100ms"],
    );
    #[rustfmt::skip]
    let b = ["run", "--output", &out, "--format", "parquet", "--table-format", "iceberg", "--http", "off",
        "--input", &input, "--catalog", catalog_uri, "--checkpoint-interval", "100ms", "--roll-age", "200ms"];
    let (ca, cb) = (spawn(&refs(&a), &env), spawn(&b, &env));
    let (oa, ob) = (ca.wait_with_output().unwrap(), cb.wait_with_output().unwrap());
    let logs = format!("{}{}", String::from_utf8_lossy(&oa.stderr), String::from_utf8_lossy(&ob.stderr));
    assert!(oa.status.success() && ob.status.success(), "{logs}");
    let conflicts = logs.matches("the Iceberg table moved on").count();
    eprintln!("commits that met a newer table and were retried: {conflicts}");

    let report = verified(&out, &catalog.config, &env);
    let read = pyiceberg(&catalog.pyiceberg, "pageviews", &env);
    for table in TABLES {
        assert_eq!(read[table]["rows"], report.rows.get(table).copied().unwrap_or(0), "{table}\n{read}");
    }
    assert!(report.rows.get("page_views").copied().unwrap_or(0) > 40_000, "{report}");
}

#[test]
fn kill_9_during_commit_cycles_leaves_every_iceberg_table_exact() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out").display().to_string();
    let env = StoreEnv::from_pairs::<String, String>([]);
    let want = soak_kills(4);
    // A second of events per kill: a run lives 0.4–1 s, so every kill finds one running.
    let count = 60_000.max(10_000 * want as u64);
    let args = generator(
        &out,
        &[
            "--count",
            &count.to_string(),
            "--rate",
            "10000",
            "--checkpoint-interval",
            "50ms",
            "--roll-age",
            "100ms",
        ],
    );
    let mut rng = Lcg::from_env_or_clock();
    let mut kills = 0;
    let started = Instant::now();
    while kills < want && started.elapsed() < Duration::from_secs(600) {
        let mut child = spawn(&refs(&args), &env);
        std::thread::sleep(Duration::from_millis(400 + rng.below(600)));
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    assert!(kills >= want.min(2), "only {kills} kills hit a running pipeline");
    run_and_read_back(&args, &out, &Catalog::sqlite(&out), count, &env);
    // The generator's own records, against the rows of the files the tables hold.
    let stream = GeneratorConfig {
        rate: 10_000,
        count: Some(count),
        max_late_ms: 1_000,
        seed: SEED,
        start_ms: pageviews::core::time::parse_timestamp(START).unwrap(),
        interval_us: Some(100_000),
    };
    let (lost, duplicated) =
        lost_and_duplicated(&page_view_lines(Path::new(&out)), &expected(&[(stream, 0.0)]).0);
    eprintln!("kills {kills}, records {count}, lost {lost}, duplicated {duplicated}");
    assert_eq!((lost, duplicated), (0, 0), "page_views against the generator's records");
}

/// Two instances of one deployment (one consumer group) share a topic's partitions and commit
/// to one set of Iceberg tables, each after its own log entries: every produced record lands
/// in page_views once, each table holds exactly the files the log committed, and pyiceberg
/// reads every snapshot as the log versions it records.
#[test]
fn two_instances_of_one_group_commit_every_record_once_to_one_set_of_tables() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("out");
    let out = root.display().to_string();
    let env = StoreEnv::from_pairs::<String, String>([]);
    let (topic, group) = (unique("iceberg"), unique("group"));
    create_topic(&topic, 4);
    let stream = paced(17, 20_000, 5_000);
    let producer = produce_in_background(&topic, stream.clone(), 0.01);
    let iceberg = ["--format", "parquet", "--table-format", "iceberg", "--idle-timeout", "1h"];
    let spawn = |extra: &[&str]| {
        let args = [&iceberg[..], extra].concat();
        spawn_kafka_run(bin(), broker(), &topic, &group, &root, "300ms", &args)
    };
    let (mut a, mut b) = (spawn(&["--instance-id", "a"]), spawn(&["--instance-id", "b"]));
    producer.join().unwrap();
    let (rows, bad) = expected(&[(stream.clone(), 0.01)]);
    wait_for("every record committed", Duration::from_secs(120), || {
        let c = committed(&root);
        c.page_views as usize == rows.len() && c.dead_letters == bad
    });
    sigterm(&mut a, &root);
    sigterm(&mut b, &root);
    for member in ["a", "b"] {
        assert!(!runs_of(&root, member).is_empty(), "{member} committed nothing\n{}", log_text(&root));
    }
    // A last run to the end of the topic closes the windows still open.
    let status = spawn(&["--until-end"]).wait().unwrap();
    assert!(status.success(), "the draining run failed\n{}", log_text(&root));
    assert_exactly_once(&root, &[(stream, 0.01)]);
    let catalog = Catalog::sqlite(&out);
    let report = verified(&out, &catalog.config, &env);
    let read = pyiceberg(&catalog.pyiceberg, "pageviews", &env);
    assert_read_back(&read, &report, &log_rows(&out, &format!("kafka-{topic}"), &env));
}

#[test]
fn glue_on_moto_holds_the_tables_of_an_s3_output_and_pyiceberg_reads_them() {
    if store::server() != "moto" {
        eprintln!("skipped: Glue is served by moto (PAGEVIEWS_TEST_STORE=moto), not {}", store::server());
        return;
    }
    let bucket = store::bucket("iceberg-glue");
    let out = format!("s3://{bucket}/warehouse");
    let env = store::env();
    // The suite's moto keeps its Glue databases across runs: a namespace of this test's own.
    let namespace = bucket.replace('-', "_");
    let args = generator(
        &out,
        &["--count", "20000", "--rate", "10000", "--catalog", "glue://", "--namespace", &namespace],
    );
    let mut config = IcebergConfig::new("glue://");
    config.namespace = namespace;
    let endpoint = store::endpoint();
    let pyiceberg = serde_json::json!({
        "type": "glue", "glue.endpoint": endpoint, "glue.region": "us-east-1",
        "glue.access-key-id": "S3RVER", "glue.secret-access-key": "S3RVER",
        "s3.endpoint": endpoint, "s3.access-key-id": "S3RVER", "s3.secret-access-key": "S3RVER",
        "s3.region": "us-east-1",
    });
    run_and_read_back(&args, &out, &Catalog { config, pyiceberg }, 20_000, &env);
}

/// Spark 4.0 with Iceberg's runtime reads the tables through the SQLite (JDBC) catalog, as the
/// README shows: the rows per table and the views per postcode the files hold (read by the
/// test kit's own reader), and a filter on one hour of `timestamp` plans only that hour's
/// files (hidden partitioning), and a time-travel read of each snapshot returns its checkpoint's
/// rows.
#[test]
fn spark_reads_the_sqlite_catalog_tables_and_a_time_filter_reads_one_hours_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out").display().to_string();
    let env = StoreEnv::from_pairs::<String, String>([]);
    // 60,000 events 100 ms apart from 00:40: hours 00, 01 and 02 of 2020-01-01, over about
    // 3 s, so that several checkpoints make snapshots to travel to.
    run(&refs(&generator(&out, &["--count", "60000", "--rate", "20000"])), &env);
    let root = Path::new(&out);
    let mut want: Vec<String> = TABLES.iter().map(|t| format!("{t},{}", rows(root, t).len())).collect();
    let mut views = BTreeMap::<String, u64>::new();
    for r in rows(root, "page_view_aggregates") {
        let postcode = r.value["postcode"].as_str().expect("a postcode").to_string();
        *views.entry(postcode).or_default() += r.value["views"].as_u64().expect("views");
    }
    want.extend(views.iter().map(|(p, v)| format!("agg,{p},{v}")));
    let hour = "day=2020-01-01/hour=01";
    let hour_files = files(&root.join("page_views").join(hour))
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
        .count();
    let hour_rows = rows(root, "page_views").iter().filter(|r| r.partition == hour).count();
    let all_files = files(&root.join("page_views"))
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
        .count();
    assert!(0 < hour_files && hour_files < all_files, "hour 01 holds some of the files, not all");
    want.extend([
        format!("pruned,{hour_files}"),
        format!("skipped,{}", all_files - hour_files),
        format!("pruned_rows,{hour_rows}"),
    ]);
    want.sort();

    let spark =
        Command::new("scripts/python-env").arg("spark").output().expect("run scripts/python-env spark");
    assert!(spark.status.success(), "scripts/python-env spark:\n{}", String::from_utf8_lossy(&spark.stderr));
    let python = String::from_utf8_lossy(&spark.stdout).lines().last().expect("a python").trim().to_string();
    let jars =
        Command::new("scripts/iceberg-rest").arg("spark-jars").output().expect("run scripts/iceberg-rest");
    assert!(
        jars.status.success(),
        "scripts/iceberg-rest spark-jars:\n{}",
        String::from_utf8_lossy(&jars.stderr)
    );
    let jars = String::from_utf8_lossy(&jars.stdout).lines().last().expect("the jars").trim().to_string();
    let read = Command::new(python)
        .args(["tests/readers/spark_iceberg.py", &out, &jars, "2020-01-01 01:00:00", "2020-01-01 02:00:00"])
        .env("TZ", "America/New_York")
        .output()
        .expect("run spark_iceberg.py");
    let stderr = String::from_utf8_lossy(&read.stderr);
    assert!(read.status.success(), "spark_iceberg.py failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&read.stdout);
    let (travel, got): (Vec<&str>, Vec<&str>) = stdout.lines().partition(|l| l.starts_with("snapshot,"));
    assert_eq!(got, want, "Spark's answers (left) against the files'; Spark said:\n{stderr}");
    // Time travel: each snapshot as of its id holds what the log committed through its version.
    let through = &log_rows(&out, "generator", &env)["page_views"];
    let mut sizes = Vec::new();
    for line in &travel {
        let mut fields = line.split(',').skip(1).map(|f| f.parse::<u64>().expect("a number"));
        let (version, rows) = (fields.next().unwrap(), fields.next().unwrap());
        let want: u64 = through.iter().filter(|(v, _)| *v <= version).map(|(_, r)| r).sum();
        assert_eq!(rows, want, "Spark's read of page_views as of log version {version}");
        sizes.push(rows);
    }
    assert!(
        sizes.len() >= 2 && sizes[0] < sizes[sizes.len() - 1],
        "an older snapshot with fewer rows than the newest: {travel:?}"
    );
}
