//! What the commit log's fencing rests on, against the suite's object store
//! (`PAGEVIEWS_TEST_STORE`; scripts/test runs these against each): whether a second
//! create-only write is refused, and, on a store that does not fence (s3rver), the lease
//! that runs one instance of one worker at a time and lapses after a killed one.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::stores::*;
use common::*;
use object_store::path::Path as ObjectPath;

/// True, having said the test is skipped, where the store refuses a second create-only write:
/// the tests of the lease are for a store that does not (s3rver). `why` says what fencing
/// makes of the test there.
fn skipped_where_the_store_fences(why: &str) -> bool {
    if store::fences() {
        eprintln!(
            "skipped: {} refuses a second create-only write{why} (this test is for s3rver: PAGEVIEWS_TEST_STORE=s3rver)",
            store::server()
        );
    }
    store::fences()
}

#[test]
fn create_only_writes_are_refused_the_second_time_except_on_s3rver() {
    // What the commit log's fencing rests on, as each server really behaves: moto honours
    // If-None-Match: * on PutObject, and Azurite on Put Blob (409); s3rver ignores it and
    // overwrites.
    let (rt, storage) = store::storage(&store::url(&store::bucket("pv-fence"), "f"));
    let path = ObjectPath::from("probe");
    rt.block_on(storage.put_new(&path, bytes::Bytes::from_static(b"a"))).unwrap();
    let second = rt.block_on(storage.put_new(&path, bytes::Bytes::from_static(b"b")));
    if !store::fences() {
        assert!(
            second.is_ok(),
            "s3rver started fencing: {second:?}; the lease may no longer be needed there"
        );
    } else {
        assert!(
            matches!(second, Err(pageviews::core::storage::StorageError::AlreadyExists(_))),
            "{}: a second create-only write must be refused: {second:?}",
            store::server()
        );
    }
}

#[test]
fn on_a_store_that_does_not_fence_a_second_instance_is_refused_while_the_first_runs() {
    if skipped_where_the_store_fences(
        ", so instances are fenced by the log's claims, not kept apart by a lease",
    ) {
        return;
    }
    let bucket = store::bucket("pv-lease");
    let url = store::url(&bucket, "l");
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut first = store_bin()
        .args(run_args(&url, &["--rate", "1000", "--checkpoint-interval", "300ms", "--instance-id", "a"]))
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let (rt, storage) = store::storage(&url);
    wait_for("the first instance's first commit", Duration::from_secs(60), || log_version(&rt, &storage) > 0);

    let second = store_bin()
        .args(run_args(&url, &["--count", "100", "--rate", "0", "--instance-id", "b"]))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "the second instance must be refused:\n{stderr}");
    assert!(
        stderr.contains("instance a of pipeline generator is running on this output"),
        "the refusal names the running instance:\n{stderr}"
    );
    assert!(first.try_wait().unwrap().is_none(), "the first instance runs on");

    let before = log_version(&rt, &storage);
    wait_for("the first instance commits after the refusal", Duration::from_secs(60), || {
        log_version(&rt, &storage) > before
    });
    let sent = std::process::Command::new("kill").args(["-INT", &first.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let status = first.wait().unwrap();
    let mut first_log = String::new();
    log.reopen().unwrap().read_to_string(&mut first_log).unwrap();
    assert!(status.success(), "{first_log}");
    assert!(
        first_log.contains("does not fence"),
        "the first instance says why a lease is taken:\n{first_log}"
    );
    let report = pageviews::verify::verify(&storage).unwrap();
    assert!(report.is_clean(), "{report}");
}

#[test]
fn on_a_store_that_does_not_fence_an_instance_runs_one_worker() {
    if skipped_where_the_store_fences("") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = write_input(dir.path(), "a.jsonl", &original_example_lines());
    let b = write_input(dir.path(), "b.jsonl", &original_example_lines());
    let url = store::url(&store::bucket("pv-workers"), "w");
    let args = ["run", "--output", &url, "--http", "off", "--input", &a, "--input", &b];
    // Two workers append to one commit log: without create-only writes one could silently
    // replace the other's entry.
    let two = store_bin().args(args).args(["--workers", "2"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&two.stderr);
    assert!(!two.status.success(), "two workers must be refused on this store:\n{stderr}");
    assert!(
        stderr.contains("--workers 1") && stderr.contains("create-only"),
        "the refusal says what to do:\n{stderr}"
    );
    let one = store_bin().args(args).output().unwrap();
    assert!(one.status.success(), "{}", String::from_utf8_lossy(&one.stderr));
    let (_rt, storage) = store::storage(&url);
    let report = pageviews::verify::verify(&storage).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.rows.get("page_views").copied(), Some(2 * original_example_lines().len() as u64));
}

#[test]
fn on_a_store_that_does_not_fence_the_lease_lasts_as_long_as_its_instance_and_lapses_after_it() {
    if skipped_where_the_store_fences(", so no lease is taken") {
        return;
    }
    // A 4 s lease instead of a minute. The first instance's checkpoints are an hour apart,
    // so only its renewals while idle can keep the lease.
    let lease = Duration::from_secs(4);
    let url = store::url(&store::bucket("pv-renew"), "r");
    let first_args = ["--rate", "100", "--checkpoint-interval", "1h", "--instance-id", "a", "--lease", "4s"];
    let mut first = store_bin()
        .args(run_args(&url, &first_args))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (rt, storage) = store::storage(&url);
    let lease_file = ObjectPath::from("_checkpoints/generator/lease.json");
    wait_for("the first instance's lease", Duration::from_secs(60), || {
        rt.block_on(storage.exists(&lease_file)).unwrap_or(false)
    });
    let second = || {
        let args = run_args(&url, &["--count", "100", "--rate", "0", "--instance-id", "b", "--lease", "4s"]);
        store_bin().args(args).output().unwrap()
    };
    let refused = |out: &std::process::Output, when: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{when}: the second instance was let in:\n{stderr}");
        assert!(stderr.contains("instance a of pipeline generator is running"), "{when}:\n{stderr}");
    };
    // Three leases after the first started: what keeps it out is the first's renewals. This
    // wait is the time the lease must outlast, not a synchronisation.
    std::thread::sleep(3 * lease);
    refused(&second(), "three leases into the first instance's run");
    assert!(first.try_wait().unwrap().is_none(), "the first instance runs on");

    first.kill().unwrap();
    first.wait().unwrap();
    let killed = Instant::now();
    // The lease was renewed at most a third of a lease before the kill, so it holds for two
    // thirds of one after it; a second instance that took longer to start may rightly get in.
    let out = second();
    if killed.elapsed() < 2 * lease / 3 {
        refused(&out, "right after the first instance was killed");
    }
    let admitted = poll_until(Duration::from_secs(60), || second().status.success());
    assert!(admitted, "the lease of a killed instance lapses");
    assert!(killed.elapsed() < 4 * lease, "admitted {:?} after the kill", killed.elapsed());
    let report = pageviews::verify::verify(&storage).unwrap();
    assert!(report.is_clean(), "{report}");
}
