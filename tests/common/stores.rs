//! What the object-store suites share (`tests/stores.rs`, `tests/stores_outages.rs`,
//! `tests/stores_fencing.rs`): the generator run they start against the test server, and
//! what they read back from its bucket.

use object_store::path::Path as ObjectPath;
use pageviews::core::commit::View;
use pageviews::core::storage::Storage;
use std::path::Path;

use pageviews_testkit::{row_multiset, store, table_file_text};

use super::bin;

/// A table's rows in the bucket as sorted lines, minus the fields named in `drop`.
pub fn store_rows(
    rt: &tokio::runtime::Runtime,
    storage: &Storage,
    table: &str,
    drop: &[&str],
) -> Vec<String> {
    let mut out = Vec::new();
    for path in rt.block_on(storage.list(&ObjectPath::from(table))).unwrap() {
        if path.filename() == Some("_SUCCESS") {
            continue;
        }
        let bytes = rt.block_on(storage.get(&path)).unwrap();
        let text = table_file_text(table, &bytes, path.as_ref());
        let partition = path
            .as_ref()
            .rsplit_once('/')
            .map(|(dir, _)| dir.trim_start_matches(&format!("{table}/")).to_string());
        for line in text.lines() {
            let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
            for f in drop {
                value.as_object_mut().unwrap().remove(*f);
            }
            out.push(format!("{}|{value}", partition.clone().unwrap_or_default()));
        }
    }
    out.sort();
    out
}

/// Asserts that each of `tables` holds the same rows in the bucket as under `local`, the root
/// of an uninterrupted run of the same stream; `after` is what the bucket's run went through.
pub fn assert_rows_as_uninterrupted(
    rt: &tokio::runtime::Runtime,
    storage: &Storage,
    local: &Path,
    tables: &[&str],
    after: &str,
) {
    for table in tables {
        let (got, want) = (store_rows(rt, storage, table, &[]), row_multiset(local, table, &[]));
        assert_eq!(got.len(), want.len(), "{table}: rows after {after} vs an uninterrupted run");
        assert!(got == want, "{table}: the rows differ from an uninterrupted run");
    }
}

/// The newest version of the generator pipeline's commit log (0 before the first entry); a
/// generator run's pipeline id is `generator` by default.
pub fn log_version(rt: &tokio::runtime::Runtime, storage: &Storage) -> u64 {
    rt.block_on(View::load(storage, "generator")).map_or(0, |view| view.version)
}

/// `pageviews run` of the seeded generator into `output`, then `extra`.
pub fn run_args<'a>(output: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--output",
        output,
        "--http",
        "off",
        "--seed",
        "5",
        "--start-time",
        "2020-01-01 00:10:00",
    ];
    args.extend_from_slice(extra);
    args
}

/// `pageviews` with the test server's settings.
pub fn store_bin() -> std::process::Command {
    let mut cmd = bin();
    store::envs(&mut cmd);
    cmd
}
