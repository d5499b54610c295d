//! The standard `process_*` metrics (the names every Prometheus client library exports),
//! read from `/proc/self` at scrape time, so they cost nothing between scrapes.
//!
//! Linux only: elsewhere `/proc` is missing and the collector exports nothing rather than
//! wrong numbers. A file that cannot be read or parsed drops only the metrics it feeds.

use std::fs;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second of `/proc/<pid>/stat` times. The kernel reports in USER_HZ, which
/// is 100 on every architecture Linux exports to user space (Prometheus's own procfs
/// library assumes the same), so no `sysconf` call is needed.
const USER_HZ: f64 = 100.0;

/// Exports the process metrics on each scrape.
#[derive(Debug)]
pub(super) struct ProcessCollector;

/// What one scrape read; `None` where the source was unavailable.
#[derive(Debug, Default, PartialEq)]
pub(super) struct ProcessStats {
    pub(super) cpu_seconds: Option<f64>,
    pub(super) start_time_seconds: Option<f64>,
    pub(super) resident_bytes: Option<f64>,
    pub(super) virtual_bytes: Option<f64>,
    pub(super) open_fds: Option<f64>,
    pub(super) max_fds: Option<f64>,
}

impl ProcessStats {
    /// Reads `/proc/self/{stat,status,fd,limits}` and `/proc/stat`.
    pub(super) fn read() -> Self {
        let mut s = ProcessStats::default();
        if let Ok(stat) = fs::read_to_string("/proc/self/stat") {
            if let Some((cpu, start_ticks)) = parse_stat(&stat) {
                s.cpu_seconds = Some(cpu);
                let boot = fs::read_to_string("/proc/stat").ok().and_then(|t| parse_btime(&t));
                s.start_time_seconds = boot.map(|b| b + start_ticks / USER_HZ);
            }
        }
        if let Ok(status) = fs::read_to_string("/proc/self/status") {
            s.resident_bytes = status_kib(&status, "VmRSS:").map(|k| k * 1024.0);
            s.virtual_bytes = status_kib(&status, "VmSize:").map(|k| k * 1024.0);
        }
        // The iterator's own descriptor is counted too, as client_golang does.
        s.open_fds = fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as f64);
        s.max_fds = fs::read_to_string("/proc/self/limits").ok().and_then(|t| parse_max_fds(&t));
        s
    }
}

/// (user + system CPU seconds, start time in ticks after boot) from `/proc/self/stat`.
/// The command name (field 2) is in parentheses and may hold spaces and parentheses, so
/// fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(f64, f64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest starts at field 3 (state); utime and stime are fields 14 and 15, starttime 22.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    Some(((field(14)? + field(15)?) / USER_HZ, field(22)?))
}

/// Boot time (Unix seconds) from `/proc/stat`.
fn parse_btime(stat: &str) -> Option<f64> {
    stat.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

/// A `Key:   123 kB` line of `/proc/self/status`, in KiB.
fn status_kib(status: &str, key: &str) -> Option<f64> {
    let line = status.lines().find_map(|l| l.strip_prefix(key))?;
    line.split_whitespace().next()?.parse().ok()
}

/// The soft limit of "Max open files" in `/proc/self/limits` (`unlimited` is no number).
fn parse_max_fds(limits: &str) -> Option<f64> {
    let line = limits.lines().find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = ProcessStats::read();
        if let Some(v) = s.cpu_seconds {
            let c = ConstCounter::new(v);
            let e = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                c.metric_type(),
            )?;
            c.encode(e)?;
        }
        let gauges = [
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                s.start_time_seconds,
            ),
            ("process_resident_memory_bytes", "Resident memory size in bytes.", s.resident_bytes),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes.", s.virtual_bytes),
            ("process_open_fds", "Number of open file descriptors.", s.open_fds),
            ("process_max_fds", "Maximum number of open file descriptors.", s.max_fds),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let g = ConstGauge::new(v);
                let e = encoder.encode_descriptor(name, help, None, g.metric_type())?;
                g.encode(e)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with spaces and a parenthesis, as a thread may be named.
        let stat = "4242 (pv (io) x) S 1 4242 4242 0 -1 4194560 2712 0 0 0 250 150 0 0 20 0 9 0 \
                    123456 1048576000 5000 18446744073709551615";
        let (cpu, start) = parse_stat(stat).unwrap();
        assert_eq!(cpu, 4.0, "(250 + 150) ticks at 100 Hz");
        assert_eq!(start, 123_456.0);
        assert_eq!(parse_btime("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"), Some(1_700_000_000.0));
        assert_eq!(
            status_kib("Name:\tpv\nVmSize:\t  12345 kB\nVmRSS:\t   2048 kB\n", "VmRSS:"),
            Some(2048.0)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024.0));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_as_alive_with_memory_and_descriptors() {
        let s = ProcessStats::read();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let start = s.start_time_seconds.unwrap();
        assert!(start <= now + 1.0 && start > now - 86_400.0 * 365.0, "started at {start}, now {now}");
        assert!(s.resident_bytes.unwrap() > 1e6, "{s:?}");
        assert!(s.virtual_bytes.unwrap() >= s.resident_bytes.unwrap(), "{s:?}");
        assert!(s.open_fds.unwrap() >= 3.0 && s.open_fds <= s.max_fds, "{s:?}");
        assert!(s.cpu_seconds.unwrap() >= 0.0);
    }
}
