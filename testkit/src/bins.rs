//! The two binaries side by side, as users run them: `pageviews sql` execs `pageviews-sql`
//! from the folder `pageviews` is in. Cargo puts both in one folder when it builds the
//! workspace (`cargo test --workspace`, which `scripts/test` runs), but a test knows the
//! path of its own package's binary only (`env!("CARGO_BIN_EXE_…")`); this finds the other
//! one beside it and refuses it when it is missing or older than its sources, rather than
//! testing stale code.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::workspace;

/// Paths of both binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `pageviews`.
    pub pageviews: PathBuf,
    /// `pageviews-sql`.
    pub sql: PathBuf,
}

impl Binaries {
    /// The pair, given the path of `pageviews` (from the root package's tests).
    pub fn beside_pageviews(pageviews: &str) -> Self {
        let pageviews = PathBuf::from(pageviews);
        let sql = pageviews.with_file_name("pageviews-sql");
        assert_fresh(&sql, &["sql/src", "sql/Cargo.toml", "core/src"]);
        Binaries { pageviews, sql }
    }

    /// The pair, given the path of `pageviews-sql` (from the sql package's tests).
    pub fn beside_sql(sql: &str) -> Self {
        let sql = PathBuf::from(sql);
        let pageviews = sql.with_file_name("pageviews");
        assert_fresh(&pageviews, &["src", "Cargo.toml", "core/src"]);
        Binaries { pageviews, sql }
    }

    /// A `pageviews` command with the flag-default variables removed (see [`crate::command`]).
    pub fn pageviews(&self) -> std::process::Command {
        crate::command(&self.pageviews.display().to_string())
    }
}

/// Fails the test unless `binary` exists and is newer than every file under `sources`
/// (relative to the workspace).
fn assert_fresh(binary: &Path, sources: &[&str]) {
    let build = "build both binaries with `cargo build --workspace` (scripts/test and \
                 `cargo test --workspace` do), then run the test again";
    let built = std::fs::metadata(binary)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{} is needed beside the test's binary ({e}): {build}", binary.display()));
    let newest = sources.iter().filter_map(|s| newest_mtime(&workspace().join(s))).max();
    if let Some((changed, path)) = newest {
        assert!(changed <= built, "{} is older than {}: {build}", binary.display(), path.display());
    }
}

/// The newest modification time of `path` or of a file below it, with that file.
fn newest_mtime(path: &Path) -> Option<(SystemTime, PathBuf)> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return Some((meta.modified().ok()?, path.to_path_buf()));
    }
    std::fs::read_dir(path).ok()?.flatten().filter_map(|e| newest_mtime(&e.path())).max()
}
