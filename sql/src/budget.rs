//! The SQL client's budget: how much memory a statement may hold, and how much it may spill
//! to temporary files once that is used.
//!
//! DataFusion counts what its operators hold (sort buffers, the hash tables of joins and
//! aggregates, a cross join's build side) against the session's memory pool; the session
//! counts the result it collects there too. A `FairSpillPool` gives each operator that can
//! spill (sorts, aggregates) an equal share of what the others leave, so a sort under an
//! aggregate is not starved by it; the pool's tracking wrapper names the biggest holders
//! when a statement runs out. What can spill goes to a temporary folder (`$TMPDIR`), up to
//! the spill limit, which keeps a runaway statement from filling the disk instead of the
//! memory. Past either, the statement fails with DataFusion's "Resources exhausted" error;
//! the session is unharmed and runs the next one.
//!
//! Sizes are given in bytes with a unit (`512MiB`, `4GiB`, `1.5GB`) or as a share of this
//! machine's memory (`25%`): the `MemTotal` of `/proc/meminfo`, or the cgroup's
//! `memory.max` where that is smaller (a container's limit).

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use thiserror::Error;

/// A size as given on the command line: bytes, or a share of the machine's memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    /// So many bytes.
    Bytes(u64),
    /// A fraction (0, 1] of the machine's memory.
    Share(f64),
}

/// A size that cannot be used, or a machine whose memory cannot be read.
#[derive(Debug, Error)]
pub enum BudgetError {
    /// The text is not a size.
    #[error(
        "{value:?} is not a size ({reason}): give bytes with a unit, such as 512MiB or 4GiB, or a \
         share of this machine's memory, such as 25%"
    )]
    Size {
        /// What was given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A share was given, and the machine's memory is unknown.
    #[error("cannot tell this machine's memory ({reason}): give the limit as a size, such as 4GiB")]
    MachineMemory {
        /// Why.
        reason: String,
    },
}

impl FromStr for Amount {
    type Err = BudgetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |reason| BudgetError::Size { value: text.to_string(), reason };
        let trimmed = text.trim();
        if let Some(percent) = trimmed.strip_suffix('%') {
            let percent: f64 = percent.trim().parse().map_err(|_| bad("not a number before %"))?;
            if !(percent > 0.0 && percent <= 100.0) {
                return Err(bad("a share is more than 0% and at most 100%"));
            }
            return Ok(Amount::Share(percent / 100.0));
        }
        let split = trimmed.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let number: f64 = number.parse().map_err(|_| bad("no number"))?;
        let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kib" => 1024.0,
            "m" | "mib" => 1024.0 * 1024.0,
            "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
            "t" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            "kb" => 1e3,
            "mb" => 1e6,
            "gb" => 1e9,
            "tb" => 1e12,
            _ => return Err(bad("unknown unit")),
        };
        let bytes = number * scale;
        if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
            return Err(bad("out of range"));
        }
        Ok(Amount::Bytes(bytes as u64))
    }
}

impl Amount {
    /// The size in bytes; a share is taken of `machine`, asked only then.
    pub fn resolve(self, machine: impl FnOnce() -> Result<u64, BudgetError>) -> Result<u64, BudgetError> {
        match self {
            Amount::Bytes(bytes) => Ok(bytes),
            Amount::Share(share) => Ok(((machine()? as f64) * share).max(1.0) as u64),
        }
    }
}

/// How much memory a statement may hold, and how much it may spill to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    memory: u64,
    spill: u64,
}

impl Budget {
    /// Spill allowed per byte of memory when no spill limit is given: a sort or an aggregate
    /// of up to a few times the memory finishes, a runaway one stops before the disk fills.
    pub const SPILL_PER_MEMORY: u64 = 4;

    /// `memory` bytes in memory, `spill` on disk.
    pub fn new(memory: u64, spill: u64) -> Self {
        Budget { memory, spill }
    }

    /// `memory` bytes in memory and [`Budget::SPILL_PER_MEMORY`] times that on disk.
    pub fn with_memory(memory: u64) -> Self {
        Budget::new(memory, memory.saturating_mul(Self::SPILL_PER_MEMORY))
    }

    /// The memory limit in bytes.
    pub fn memory(&self) -> u64 {
        self.memory
    }

    /// The spill limit in bytes.
    pub fn spill(&self) -> u64 {
        self.spill
    }

    /// `builder` with this budget's memory pool and temporary folder.
    pub(crate) fn apply(&self, builder: RuntimeEnvBuilder) -> RuntimeEnvBuilder {
        let memory = usize::try_from(self.memory).unwrap_or(usize::MAX);
        // The error names the three biggest holders, so it says which operator ran out.
        let top = NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN);
        let pool = TrackConsumersPool::new(FairSpillPool::new(memory), top);
        let disk = DiskManagerBuilder::default()
            .with_mode(DiskManagerMode::OsTmpDirectory)
            .with_max_temp_directory_size(self.spill);
        builder.with_memory_pool(Arc::new(pool)).with_disk_manager_builder(disk)
    }
}

/// What a statement ran out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exhausted {
    /// The memory limit: DataFusion's "Resources exhausted".
    Memory,
    /// The spill limit.
    Spill,
}

/// What `e` says the statement ran out of, if it ran out of anything, however the operator
/// that ran out wrapped the error.
pub(crate) fn exhausted(e: &DataFusionError) -> Option<Exhausted> {
    if matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)) {
        return Some(Exhausted::Memory);
    }
    // DataFusion 55 reports a full spill folder as a plain I/O error from its spill writer
    // (disk_manager.rs), naming the setting behind our spill limit: its text is the only sign.
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cause {
        if err.downcast_ref::<std::io::Error>().is_some_and(|io| io.to_string().contains(SPILL_SETTING)) {
            return Some(Exhausted::Spill);
        }
        cause = err.source();
    }
    None
}

/// The DataFusion setting the spill limit sets, which its error names.
const SPILL_SETTING: &str = "datafusion.runtime.max_temp_directory_size";

/// `bytes` the way the flags take them: `64 MiB`, `1.5 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let text = format!("{value:.1}");
    format!("{} {}", text.strip_suffix(".0").unwrap_or(&text), UNITS[unit])
}

/// This machine's memory in bytes: `MemTotal` from `/proc/meminfo`, or the memory limit of
/// the process's cgroup (v2) where that is smaller.
pub fn machine_memory() -> Result<u64, BudgetError> {
    let unknown = |reason: String| BudgetError::MachineMemory { reason };
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| unknown(format!("cannot read /proc/meminfo: {e}")))?;
    let total = mem_total(&meminfo).ok_or_else(|| unknown("no MemTotal in /proc/meminfo".to_string()))?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok();
    let limit = cgroup.and_then(|c| cgroup_limit(Path::new("/sys/fs/cgroup"), &c));
    Ok(limit.map_or(total, |limit| limit.min(total)))
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// The smallest `memory.max` of the cgroup (v2) that `/proc/self/cgroup` (`self_cgroup`)
/// names and of those above it, under the cgroup file system at `root`; `None` when no
/// limit is set or cgroup v2 is not mounted there.
fn cgroup_limit(root: &Path, self_cgroup: &str) -> Option<u64> {
    let path = self_cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mut dir: PathBuf = root.join(path.trim().trim_start_matches('/'));
    let mut limit: Option<u64> = None;
    loop {
        // "max" (no limit) does not parse, and is skipped.
        let found = std::fs::read_to_string(dir.join("memory.max")).ok().and_then(|t| t.trim().parse().ok());
        if let Some(found) = found {
            limit = Some(limit.map_or(found, |l: u64| l.min(found)));
        }
        if dir == root || !dir.pop() || !dir.starts_with(root) {
            return limit;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{SessionConfig, SessionContext};

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn sizes_take_binary_and_decimal_units_and_shares() {
        for (text, want) in [
            ("512MiB", Amount::Bytes(512 * MIB)),
            ("4GiB", Amount::Bytes(4096 * MIB)),
            ("4 gib", Amount::Bytes(4096 * MIB)),
            ("1.5G", Amount::Bytes(1536 * MIB)),
            ("64M", Amount::Bytes(64 * MIB)),
            ("2GB", Amount::Bytes(2_000_000_000)),
            ("1000", Amount::Bytes(1000)),
            ("25%", Amount::Share(0.25)),
            (" 100% ", Amount::Share(1.0)),
        ] {
            assert_eq!(text.parse::<Amount>().unwrap_or_else(|e| panic!("{text}: {e}")), want, "{text}");
        }
        for text in ["", "MiB", "12XB", "0", "0MiB", "0%", "150%", "-1GiB", "x%", "1e3"] {
            let err = text.parse::<Amount>().expect_err(text).to_string();
            assert!(err.contains("512MiB") && err.contains("25%"), "{text}: {err}");
        }
    }

    #[test]
    fn a_share_is_taken_of_the_machine_and_only_a_share_asks_for_it() {
        let machine = || Ok(8192 * MIB);
        assert_eq!(Amount::Share(0.25).resolve(machine).unwrap(), 2048 * MIB);
        let unknown = || Err(BudgetError::MachineMemory { reason: "none".into() });
        assert_eq!(Amount::Bytes(5).resolve(unknown).unwrap(), 5);
        assert!(Amount::Share(0.25).resolve(unknown).is_err());
    }

    /// Sorts four million numbers (32 MiB) within `budget`: the error, if any.
    fn sort_within(budget: Budget) -> Option<DataFusionError> {
        let runtime = budget.apply(RuntimeEnvBuilder::new()).build_arc().expect("a runtime");
        let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
        let sql = "SELECT value FROM generate_series(1, 4000000) ORDER BY value DESC";
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
        rt.block_on(async { ctx.sql(sql).await?.collect().await }).err()
    }

    #[test]
    fn running_out_of_memory_or_of_spill_is_recognised() {
        assert!(sort_within(Budget::new(1 << 30, 0)).is_none(), "it fits in memory");
        // Sorts spill, so memory alone does not run out; 64 KiB of disk does.
        let e = sort_within(Budget::new(16 * MIB, 64 * 1024)).expect("out of spill");
        assert_eq!(exhausted(&e), Some(Exhausted::Spill), "{e}");
        if let Some(e) = sort_within(Budget::new(16 * MIB, 1 << 30)) {
            panic!("it spills: {e}");
        }
        let e = DataFusionError::ResourcesExhausted("no".into()).context("in a sort");
        assert_eq!(exhausted(&e), Some(Exhausted::Memory), "{e}");
        assert_eq!(exhausted(&DataFusionError::Plan("no".into())), None);
    }

    #[test]
    fn sizes_print_as_the_flags_take_them() {
        assert_eq!(format_size(64 * MIB), "64 MiB");
        assert_eq!(format_size(1536 * MIB), "1.5 GiB");
        assert_eq!(format_size(100), "100 B");
    }

    #[test]
    fn the_machine_is_memtotal_or_a_smaller_cgroup_limit() {
        assert_eq!(mem_total("MemFree: 1 kB\nMemTotal:       24683772 kB\n"), Some(24_683_772 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert!(machine_memory().is_ok_and(|m| m > 0), "this test runs on Linux");

        let root = tempfile::tempdir().unwrap();
        let group = root.path().join("a/b");
        std::fs::create_dir_all(&group).unwrap();
        std::fs::write(root.path().join("memory.max"), "max\n").unwrap();
        std::fs::write(root.path().join("a/memory.max"), format!("{}\n", 512 * MIB)).unwrap();
        std::fs::write(group.join("memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_limit(root.path(), "0::/a/b\n"), Some(512 * MIB));
        assert_eq!(cgroup_limit(root.path(), "0::/\n"), None);
        assert_eq!(cgroup_limit(root.path(), "12:memory:/a\n"), None, "cgroup v1 is not read");
    }
}
