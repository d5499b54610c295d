//! What `/api/status` reports and the status page at `/` shows, and how health is judged.
//!
//! The pipeline fills [`Status`] (`pipeline/report.rs`: per batch the live partition state,
//! per checkpoint the rest); the HTTP handlers add what depends on the moment of the
//! request (the time, health, Kafka lag) and serialise a copy.
//!
//! One `Status` serves every worker of the instance. Each worker writes only what it owns —
//! the partitions it holds (marked with its member name), its own progress, its own
//! checkpoints — and the instance-wide figures (pipeline watermark, open files) are derived
//! from those, so no worker overwrites another's state.

use std::collections::BTreeMap;

use pageviews_core::commit::Totals;
use serde::Serialize;

/// A pipeline is unhealthy once this many checkpoint intervals pass without progress.
pub(crate) const STALLED_INTERVALS: f64 = 3.0;

/// What `/api/status` reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// Pipeline id.
    pub pipeline: String,
    /// This instance of the deployment (`--instance-id`).
    pub instance: String,
    /// Workers in this instance (`--workers`).
    pub workers: usize,
    /// Version of the running binary.
    pub version: String,
    /// Where records come from, for humans.
    pub source: String,
    /// Table root.
    pub output: String,
    /// `starting`, `running`, `stopping`, `stopped` or `failed`.
    pub state: String,
    /// Health as `/healthz` judges it at the moment of the request.
    pub health: Health,
    /// The pipeline clock's wall time at the moment of the request (`yyyy-MM-dd
    /// HH:mm:ss.SSS`); ages on the status page are measured from it.
    pub now: Option<String>,
    /// The same, UTC ms.
    pub now_ms: i64,
    /// `--checkpoint-interval`.
    pub checkpoint_interval_seconds: f64,
    /// `--watermark-delay`: a partition's watermark is its newest event time minus this.
    pub watermark_delay_seconds: f64,
    /// The instance's watermark: the lowest counting watermark of the partitions it holds
    /// (`yyyy-MM-dd HH:mm:ss.SSS`), once there is one.
    pub watermark: Option<String>,
    /// The same, UTC ms.
    pub watermark_ms: Option<i64>,
    /// Newest commit-log version this instance knows of (its own commits or, at start,
    /// the log it resumed from).
    pub last_checkpoint: Option<u64>,
    /// When it committed (pipeline clock, wall time).
    pub last_checkpoint_at: Option<String>,
    /// The same, UTC ms.
    pub last_checkpoint_ms: Option<i64>,
    /// Committed totals of the whole deployment, over the pipeline's life (earlier runs and
    /// other instances included), as of the last checkpoint.
    pub totals: Totals,
    /// Per table: committed rows and their rate, files.
    pub tables: Vec<TableStatus>,
    /// Dead letters committed by this process, by reason (every reason, zeros included).
    pub dead_letters_by_reason: BTreeMap<String, u64>,
    /// Source partitions this instance holds, by partition number.
    pub partitions: Vec<PartitionStatus>,
    /// The last checkpoints committed by this instance's workers, newest first.
    pub checkpoints: Vec<CheckpointStatus>,
    /// The error that stopped the pipeline, if any.
    pub error: Option<String>,
    /// How current what each kind of reader sees is.
    pub freshness: Freshness,
    /// Per running worker (its member name), when its loop last showed progress: it
    /// started running, a checkpoint committed, or one fell due with nothing to commit.
    /// Health judges the oldest, so one stuck worker is seen even while the others commit.
    #[serde(skip)]
    pub progress: BTreeMap<String, Progress>,
}

/// When a worker last showed progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Processing time (the pipeline clock's `now_ms`): what health is judged on.
    pub(crate) at_ms: u64,
    /// Wall time, UTC ms: what `pageviews_last_checkpoint_timestamp_seconds` reports.
    pub(crate) wall_ms: i64,
}

/// `/healthz`'s verdict.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Health {
    /// True when `/healthz` answers 200.
    pub(crate) ok: bool,
    /// Why not, for an operator.
    pub(crate) reason: Option<String>,
}

/// One table's progress.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TableStatus {
    /// Table name.
    pub(crate) table: String,
    /// Rows committed, over the pipeline's life.
    pub(crate) rows: u64,
    /// Rows committed per second over the last minute of checkpoints (0 before two).
    pub(crate) rows_per_second: f64,
    /// Files being written: their rows are committed, the files not visible yet.
    pub(crate) open_files: u64,
    /// Files rolled and made visible by this process.
    pub(crate) files_committed: u64,
    /// Bytes in those files.
    pub(crate) bytes_committed: u64,
}

/// One source partition (Kafka partition, input file, the generator).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PartitionStatus {
    /// Partition number (Kafka partition, input file index, 0 for the generator).
    pub(crate) partition: u32,
    /// Its source: topic, file path, `generator`.
    pub(crate) source: String,
    /// The worker holding it: its member name in the group and the commit log
    /// (`<instance>` or `<instance>-w<k>`).
    pub(crate) member: String,
    /// The claim under which it holds the partition (raised by every new holder).
    pub(crate) claim: u64,
    /// Records read from it by this process.
    pub(crate) records_read: u64,
    /// Newest event time it delivered.
    pub(crate) max_event_time: Option<String>,
    /// Its watermark: newest event time minus the watermark delay.
    pub(crate) watermark: Option<String>,
    /// The same, UTC ms.
    pub(crate) watermark_ms: Option<i64>,
    /// The watermark of the counting partition this task hosts (the minimum over the
    /// sources that feed it), if it hosts one and it has a watermark.
    pub(crate) counting_watermark: Option<String>,
    /// The same, UTC ms.
    pub(crate) counting_watermark_ms: Option<i64>,
    /// It will deliver nothing more (an input file read to its end).
    pub(crate) finished: bool,
    /// Committed position: the next Kafka offset, the file's byte offset, the generator's
    /// next sequence number (from the last checkpoint).
    pub(crate) position: Option<u64>,
    /// Messages behind the end of the Kafka partition, where known.
    pub(crate) kafka_lag: Option<i64>,
    /// Files open per table (in `Table::ALL` order) after the last checkpoint: summed over
    /// the instance's partitions for `pageviews_open_files`.
    #[serde(skip)]
    pub(crate) open_files: [u64; 4],
    /// Windows open in the counting partition it hosts, after the last checkpoint.
    #[serde(skip)]
    pub(crate) open_windows: u64,
}

/// One committed checkpoint.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CheckpointStatus {
    /// The commit-log version it wrote.
    pub(crate) version: u64,
    /// The worker that committed it.
    pub(crate) member: String,
    /// Tasks (partitions) it committed.
    pub(crate) tasks: usize,
    /// When it committed (pipeline clock, wall time).
    pub(crate) at: String,
    /// The same, UTC ms.
    pub(crate) at_ms: i64,
    /// From closing files to the published log entry.
    pub(crate) duration_seconds: f64,
    /// Files it rolled (made visible).
    pub(crate) files: usize,
    /// Files still open after it.
    pub(crate) open_files: usize,
    /// Rows it committed, over all tables.
    pub(crate) rows: u64,
    /// Cumulative totals after it, for rates.
    #[serde(skip)]
    pub(crate) totals: Totals,
}

impl Status {
    /// `/healthz`'s verdict at processing time `now_ms` of the pipeline clock: unhealthy
    /// when the pipeline failed, or when it runs but has not shown progress (a commit, or a
    /// due checkpoint with nothing to commit) for [`STALLED_INTERVALS`] checkpoint
    /// intervals: then the loop or the commit path is stuck and nothing new becomes visible.
    pub(crate) fn health(&self, now_ms: u64) -> Health {
        let unhealthy = |reason: String| Health { ok: false, reason: Some(reason) };
        match self.state.as_str() {
            "failed" => {
                unhealthy(format!("the pipeline failed: {}", self.error.as_deref().unwrap_or("see its log")))
            }
            "running" => {
                let limit_ms = (STALLED_INTERVALS * self.checkpoint_interval_seconds * 1000.0) as u64;
                match self.progress.values().map(|p| p.at_ms).min().map(|p| now_ms.saturating_sub(p)) {
                    Some(since) if limit_ms > 0 && since > limit_ms => unhealthy(format!(
                        "no checkpoint for {:.1} s, more than {STALLED_INTERVALS} checkpoint intervals \
                         ({:.1} s): the loop or the commit path is stuck; the log names the storage \
                         call or source it waits on",
                        since as f64 / 1000.0,
                        limit_ms as f64 / 1000.0
                    )),
                    _ => Health { ok: true, reason: None },
                }
            }
            _ => Health { ok: true, reason: None },
        }
    }

    /// The entry for `partition` held by `member`, created on first sight. A partition that
    /// moved from another worker of this instance starts afresh under its new holder.
    pub(crate) fn partition_mut(
        &mut self,
        partition: u32,
        source: &str,
        member: &str,
    ) -> &mut PartitionStatus {
        let i = match self.partitions.binary_search_by_key(&partition, |p| p.partition) {
            Ok(i) if self.partitions[i].member == member => i,
            found => {
                let p = PartitionStatus {
                    partition,
                    source: source.to_string(),
                    member: member.to_string(),
                    ..Default::default()
                };
                match found {
                    Ok(i) => self.partitions[i] = p,
                    Err(i) => self.partitions.insert(i, p),
                }
                found.unwrap_or_else(|i| i)
            }
        };
        &mut self.partitions[i]
    }

    /// Forgets the partitions `member` no longer holds (revoked, fenced), leaving other
    /// workers' entries alone.
    pub(crate) fn retain_held(&mut self, member: &str, held: impl Fn(u32) -> bool) {
        self.partitions.retain(|p| p.member != member || held(p.partition));
    }

    /// Adds a commit of this instance to the recent ones, keeping the newest `keep` by log
    /// version (workers commit concurrently, so they arrive in any order).
    pub(crate) fn add_checkpoint(&mut self, checkpoint: CheckpointStatus, keep: usize) {
        let at = self.checkpoints.partition_point(|c| c.version > checkpoint.version);
        self.checkpoints.insert(at, checkpoint);
        self.checkpoints.truncate(keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(interval_s: f64, progress_ms: u64) -> Status {
        Status {
            state: "running".into(),
            checkpoint_interval_seconds: interval_s,
            progress: BTreeMap::from([("0".to_string(), Progress { at_ms: progress_ms, wall_ms: 0 })]),
            ..Status::default()
        }
    }

    #[test]
    fn a_running_pipeline_is_unhealthy_after_three_intervals_without_progress() {
        let st = running(10.0, 5_000);
        assert!(st.health(35_000).ok, "exactly 3 intervals is still fine");
        let h = st.health(35_001);
        assert!(!h.ok);
        assert!(h.reason.unwrap().contains("no checkpoint for 30.0 s"));
        let mut two = st.clone();
        two.progress.insert("0-w1".into(), Progress { at_ms: 34_000, wall_ms: 0 });
        assert!(!two.health(35_001).ok, "the oldest worker's progress decides");
        let stopped = Status { state: "stopped".into(), ..st.clone() };
        assert!(stopped.health(1_000_000).ok, "a stopped pipeline is judged by its exit, not its age");
        let failed = Status { state: "failed".into(), error: Some("disk full".into()), ..st };
        assert_eq!(failed.health(0).reason.as_deref(), Some("the pipeline failed: disk full"));
    }

    #[test]
    fn partitions_stay_sorted_by_number() {
        let mut st = Status::default();
        st.partition_mut(2, "t", "w0").records_read += 1;
        st.partition_mut(0, "t", "w0").records_read += 5;
        st.partition_mut(2, "t", "w0").records_read += 1;
        let got: Vec<(u32, u64)> = st.partitions.iter().map(|p| (p.partition, p.records_read)).collect();
        assert_eq!(got, [(0, 5), (2, 2)]);
    }

    #[test]
    fn a_worker_forgets_only_its_own_partitions() {
        let mut st = Status::default();
        st.partition_mut(0, "t", "w0").records_read = 1;
        st.partition_mut(1, "t", "w1").records_read = 2;
        st.partition_mut(2, "t", "w0").records_read = 3;
        st.retain_held("w0", |p| p == 2);
        let got: Vec<(u32, &str)> = st.partitions.iter().map(|p| (p.partition, p.member.as_str())).collect();
        assert_eq!(got, [(1, "w1"), (2, "w0")]);
        // Partition 1 moves to w0: its entry starts afresh, under w0.
        assert_eq!(st.partition_mut(1, "t", "w0").records_read, 0);
        assert_eq!(st.partitions[0].member, "w0");
    }

    #[test]
    fn recent_checkpoints_are_the_newest_by_version_whichever_worker_wrote_them() {
        let mut st = Status::default();
        for version in [3, 5, 4, 1, 6] {
            let cp = CheckpointStatus { version, ..Default::default() };
            st.add_checkpoint(cp, 3);
        }
        let got: Vec<u64> = st.checkpoints.iter().map(|c| c.version).collect();
        assert_eq!(got, [6, 5, 4]);
    }
}

/// How far behind the newest event each kind of reader sees is, on `/api/status` and as
/// `pageviews_freshness_seconds{reader}`. The newest event is the newest `timestamp` among
/// the page_views rows the reader can see (every valid event is one); behind is the wall
/// clock minus it, so it includes how far the source itself is behind. Unknown (`null`)
/// until the pipeline has committed a page view.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Freshness {
    /// `pageviews sql`, which sees every committed row: seconds behind.
    pub sql_seconds: Option<f64>,
    /// The newest event it sees (`yyyy-MM-dd HH:mm:ss.SSS`, UTC).
    pub sql_newest_event: Option<String>,
    /// Readers of the table folders (DuckDB, Spark, pyarrow), which see rolled files only:
    /// seconds behind.
    pub folders_seconds: Option<f64>,
    /// The newest event they see.
    pub folders_newest_event: Option<String>,
    /// The newest event times behind those, UTC ms, kept between checkpoints.
    #[serde(skip)]
    pub(crate) newest_ms: [Option<i64>; 2],
}
