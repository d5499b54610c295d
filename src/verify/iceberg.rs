//! The Iceberg tables against the commit logs: per table, the live data files of the
//! current snapshot are exactly the committed Parquet files of the log versions the table
//! holds (per pipeline, its `pageviews.log-version`), each once, with the rows its commit
//! recorded. Files of later versions are pending: the next commit or recovery adds them.

use std::collections::BTreeMap;

use pageviews_core::storage::{Storage, StoreEnv};

use super::committed::Committed;
use super::{Report, VerifyError};
use crate::sink::iceberg::{read_tables, relative, IcebergConfig};

pub(super) fn audit(
    storage: &Storage,
    committed: &Committed,
    config: &IcebergConfig,
    env: &StoreEnv,
    report: &mut Report,
) -> Result<(), VerifyError> {
    let tables = read_tables(config, storage, env)?;
    for (table, found) in tables {
        let name = table.name();
        let Some(found) = found else {
            if committed.pipelines.values().any(|p| p.files.values().any(|f| f.table == table && !f.open)) {
                report.violation(format!(
                    "catalog {} has no table {}.{name}",
                    config.catalog, config.namespace
                ));
            }
            continue;
        };
        let mut seen: BTreeMap<String, u32> = BTreeMap::new();
        let mut rows = 0u64;
        for f in &found.files {
            rows += f.records.max(0) as u64;
            let Ok(path) = relative(storage, &f.path) else {
                report.violation(format!("Iceberg table {name} names {}, outside the output", f.path));
                continue;
            };
            let path = path.to_string();
            *seen.entry(path.clone()).or_default() += 1;
            match committed.file(&path) {
                None => report.violation(format!("Iceberg table {name} names {path}, which no commit log committed")),
                Some(rec) if rec.table != table => {
                    report.violation(format!("Iceberg table {name} names {path}, a file of {}", rec.table.name()))
                }
                Some(rec) if (rec.rows, rec.bytes) != (f.records as u64, f.bytes as u64) => report.violation(format!(
                    "Iceberg table {name} lists {path} with {} rows in {} bytes, but its commit recorded {} rows in {} bytes",
                    f.records, f.bytes, rec.rows, rec.bytes
                )),
                Some(_) => {}
            }
        }
        for (path, n) in &seen {
            if *n > 1 {
                report.violation(format!("Iceberg table {name} lists {path} {n} times"));
            }
        }
        for (id, p) in &committed.pipelines {
            let held = found.metadata.committed_through(id);
            for (path, rec) in &p.files {
                if rec.table != table || rec.open || !path.ends_with(".parquet") {
                    continue;
                }
                if rec.version > held {
                    report.iceberg_pending += 1;
                } else if !seen.contains_key(path) {
                    report.violation(format!(
                        "{path}, committed by log entry {} of {id}, is not in Iceberg table {name}, which holds the log through entry {held}",
                        rec.version
                    ));
                }
            }
        }
        if let Some(total) = found.metadata.current_total("total-records") {
            if total as u64 != rows {
                report.violation(format!(
                    "Iceberg table {name}'s current snapshot says total-records {total}, but its data files hold {rows} rows"
                ));
            }
        }
        report.iceberg.insert(name, (found.files.len() as u64, rows));
    }
    Ok(())
}
