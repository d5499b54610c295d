//! The log's promises, on a local root: claims fence, views fold the same from any reader,
//! snapshots keep the log bounded without losing anything an audit needs.

use super::*;
use crate::storage::Storage;

fn facts() -> Facts {
    Facts {
        version: LOG_VERSION,
        pipeline: "p".into(),
        id: "i".into(),
        source: SourceIdentity::Kafka { topic: "t".into() },
        counting_partitions: 3,
        window_ms: 60_000,
        created_at: String::new(),
    }
}

struct Root {
    _dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
    storage: Storage,
}

fn root() -> Root {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let storage = Storage::open(&dir.path().display().to_string(), rt.handle().clone()).unwrap();
    Root { _dir: dir, _rt: rt, storage }
}

fn open(root: &Root, member: &str, run: &str) -> Log {
    Log::open(&root.storage, "p", member, run, &facts()).unwrap().0
}

fn task(partition: u32, claim: u64, offset: i64) -> TaskState {
    TaskState {
        partition,
        claim,
        cp: offset as u64,
        position: Position::Kafka { offset, last_ts: None },
        time: PartitionTime::default(),
        counting: None,
        forwarded_to: Default::default(),
        files: Vec::new(),
        open: Vec::new(),
        totals: Totals { records_read: offset as u64, page_views: offset as u64, ..Totals::default() },
    }
}

fn no_markers(_: &View, _: &[TaskState]) -> Vec<crate::table::Partition> {
    Vec::new()
}

#[test]
fn a_partition_claimed_by_another_instance_is_fenced_out_of_the_zombies_commit() {
    let root = root();
    let mut a = open(&root, "a", "run-a");
    let claims = a.claim(&[0, 1]).unwrap();
    assert_eq!(claims, vec![(0, 1), (1, 1)]);
    a.commit(vec![task(0, 1, 10), task(1, 1, 20)], no_markers).unwrap();

    // b takes partition 1 while a still believes it holds it.
    let mut b = open(&root, "b", "run-b");
    assert_eq!(b.claim(&[1]).unwrap(), vec![(1, 2)]);
    assert_eq!(
        b.view().tasks[&1].position,
        Position::Kafka { offset: 20, last_ts: None },
        "b restores a's commit"
    );

    let done = a.commit(vec![task(0, 1, 11), task(1, 1, 25)], no_markers).unwrap();
    assert_eq!(done.fenced, vec![1], "a may no longer commit partition 1");
    b.commit(vec![task(1, 2, 30)], no_markers).unwrap();

    let view = View::load(&root.storage, "p").await_in(&root);
    assert_eq!(view.tasks[&0].position, Position::Kafka { offset: 11, last_ts: None });
    assert_eq!(
        view.tasks[&1].position,
        Position::Kafka { offset: 30, last_ts: None },
        "only b's commit of 1 counts"
    );
    assert_eq!(view.claims[&1].member, "b");
}

#[test]
fn snapshots_keep_the_log_bounded_and_every_reader_folds_the_same_view() {
    let root = root();
    let mut a = open(&root, "a", "run-a");
    a.claim(&[0]).unwrap();
    for i in 1..=200 {
        let mut t = task(0, 1, i);
        t.files.push(ClosedFile {
            table: crate::table::Table::PageViews,
            hour: i,
            upload: crate::storage::UploadRef {
                path: format!("page_views/x/part-p-p0-000001-{i:08}-0000.jsonl"),
                id: String::new(),
                staged: format!("_staging/p/uploads/page_views/x/part-p-p0-000001-{i:08}-0000.jsonl"),
            },
            parts: Vec::new(),
            rows: 1,
            bytes: 1,
        });
        // Nothing was staged: publishing would fail, so stage an empty upload first.
        let up = &t.files[0].upload;
        root.storage
            .block_on(root.storage.begin_upload(
                &object_store::path::Path::from(up.path.as_str()),
                &object_store::path::Path::from(up.staged.as_str()),
            ))
            .unwrap();
        a.commit(vec![t], no_markers).unwrap();
    }
    let objects = root.storage.block_on(root.storage.list(&layout::checkpoints_dir("p"))).unwrap();
    assert!(
        objects.len() <= 2 * log::SNAPSHOT_EVERY as usize + 2 + index::max_segments(a.view().version) + 2,
        "{} objects",
        objects.len()
    );

    let view = View::load(&root.storage, "p").await_in(&root);
    assert_eq!(view.version, a.view().version);
    assert_eq!(view.tasks, a.view().tasks);
    let files =
        root.storage.block_on(index::read_index(&root.storage, &view.index, &view.recent_files)).unwrap();
    assert_eq!(files.len(), 200, "the index still lists every completed file");
}

#[test]
fn a_commit_that_loses_the_race_for_a_version_retries_after_the_winner() {
    let root = root();
    let mut a = open(&root, "a", "run-a");
    let mut b = open(&root, "b", "run-b");
    a.claim(&[0]).unwrap();
    b.claim(&[1]).unwrap();
    // Both views are now stale for one of the two entries; both commits must land.
    a.commit(vec![task(0, 1, 5)], no_markers).unwrap();
    b.commit(vec![task(1, 1, 7)], no_markers).unwrap();
    let view = View::load(&root.storage, "p").await_in(&root);
    assert_eq!(view.version, 4);
    assert_eq!(view.totals().records_read, 12);
}

#[test]
fn a_version_pruned_while_its_writer_stalled_is_withdrawn_and_the_entry_lands_at_the_head() {
    let root = root();
    let mut a = open(&root, "a", "run-a");
    a.claim(&[0]).unwrap();
    // a builds its next entry (version 2), then stalls while b writes 41 versions: the
    // snapshot at 32 prunes entries up to the one at 16, so version 2 is free again.
    let stalled = a.entry([(1, 1)].into(), Vec::new(), Vec::new());
    assert_eq!(stalled.version, 2);
    let mut b = open(&root, "b", "run-b");
    b.claim(&[2]).unwrap();
    for cp in 1..=40 {
        b.commit(vec![task(2, 1, cp)], no_markers).unwrap();
    }
    let entry_2 = layout::entry_path("p", 2);
    assert!(!root.storage.block_on(root.storage.exists(&entry_2)).unwrap(), "pruned");

    assert!(!a.append(&stalled, std::time::Instant::now()).unwrap(), "a pruned version is not a's to take");
    assert!(!root.storage.block_on(root.storage.exists(&entry_2)).unwrap(), "the stray entry is withdrawn");
    assert_eq!(a.view().version, 32, "a goes on from the snapshot that pruned it");
    assert_eq!(a.claim(&[1]).unwrap(), vec![(1, 1)]);

    let view = View::load(&root.storage, "p").await_in(&root);
    assert_eq!(view.version, 43, "a's claim lands after b's 41 entries");
    assert_eq!(view.claims[&1].member, "a");
    assert_eq!(view.tasks[&2].cp, 40);
}

/// Runs a view load on the root's runtime.
trait AwaitIn {
    fn await_in(self, root: &Root) -> View;
}

impl<F: std::future::Future<Output = Result<View, CheckpointError>>> AwaitIn for F {
    fn await_in(self, root: &Root) -> View {
        root.storage.block_on(self).unwrap()
    }
}

#[test]
fn recovering_a_partition_leaves_the_staging_of_every_other_partition_alone() {
    use crate::table::{Format, Partition, Table};
    use layout::{file_path, upload_staging};
    let root = root();
    let mut a = open(&root, "a", "run-a");
    let mut b = open(&root, "b", "run-b");
    a.claim(&[0]).unwrap();
    b.claim(&[1]).unwrap();
    let hour = Partition { table: Table::PageViewAggregates, hour: 0 };
    let local = |path: &object_store::path::Path| root._dir.path().join(path.as_ref());
    // Partition 1 left an upload behind, in the same hour partition 0 writes.
    let orphan = file_path(hour, "p", 1, 1, 1, 0, Format::Jsonl);
    let orphan_staged = upload_staging("p", &orphan);
    root.storage
        .block_on(root.storage.begin_upload(&object_store::path::Path::from(orphan.as_str()), &orphan_staged))
        .unwrap();
    // a is where a local upload has made its folder and not yet created its file in it.
    let mine = file_path(hour, "p", 0, 1, 1, 0, Format::Jsonl);
    let mine_staged = local(&upload_staging("p", &mine));
    let folder = mine_staged.parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&folder).unwrap();

    b.recover_task(1).unwrap();
    assert!(!local(&orphan_staged).exists(), "recovery removes its own partition's orphans");
    assert!(folder.is_dir(), "recovery of partition 1 removed {folder:?}, where partition 0 is writing");
    std::fs::File::create(&mine_staged).expect("a goes on with its upload");
}

#[test]
fn a_file_recorded_open_but_completed_at_another_size_is_refused_as_a_log_that_lost_entries() {
    use crate::table::{Format, Partition, Table};
    use layout::{file_path, upload_staging};
    use object_store::path::Path;
    let root = root();
    let mut a = open(&root, "a", "run-a");
    a.claim(&[0]).unwrap();
    let path = file_path(Partition { table: Table::PageViews, hour: 0 }, "p", 0, 1, 1, 0, Format::Jsonl);
    let storage = &root.storage;
    let upload = storage
        .block_on(storage.begin_upload(&Path::from(path.as_str()), &upload_staging("p", &path)))
        .unwrap();
    let part =
        storage.block_on(storage.put_part(&upload, 0, 0, bytes::Bytes::from_static(b"0123456789"))).unwrap();
    let mut t = task(0, 1, 5);
    t.open.push(OpenFileState {
        table: Table::PageViews,
        hour: 0,
        path: path.clone(),
        upload: Some(upload),
        parts: vec![part],
        sent: 10,
        tail: None,
        rows: 1,
        bytes: 10,
    });
    a.commit(vec![t], no_markers).unwrap();
    // A newer commit closed the file with more rows, and its entry was removed since.
    std::fs::create_dir_all(root._dir.path().join(&path).parent().unwrap()).unwrap();
    std::fs::write(root._dir.path().join(&path), "0123456789abcdefghij").unwrap();

    let behind = |e: CheckpointError| matches!(&e, CheckpointError::LogBehind { newest: 2, path: p, .. } if *p == path);
    let checked = storage.block_on(check_head(storage, "p")).unwrap_err();
    assert!(behind(checked), "the start check");
    let recovered = a.recover_task(0).unwrap_err();
    assert!(behind(recovered), "recovery, for a partition taken later");

    // At the recorded size it is what an earlier recovery sealed: no complaint.
    std::fs::write(root._dir.path().join(&path), "0123456789").unwrap();
    storage.block_on(check_head(storage, "p")).unwrap();
    let sealed = a.recover_task(0).unwrap().unwrap();
    assert_eq!(sealed.files.len(), 1);
}

/// Counts the log's appends and lost races.
#[derive(Default)]
struct Appends {
    appended: std::sync::atomic::AtomicU64,
    conflicts: std::sync::atomic::AtomicU64,
}

impl Appends {
    fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.appended.load(Relaxed), self.conflicts.load(Relaxed))
    }
}

impl crate::storage::StorageObserver for Appends {
    fn retry(&self, _op: &'static str) {}
    fn outage(&self, _ongoing: bool) {}
    fn log_conflict(&self) {
        self.conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    fn log_appended(&self, took: std::time::Duration) {
        assert!(took < std::time::Duration::from_secs(60), "{took:?}");
        self.appended.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn observed_root() -> (Root, std::sync::Arc<Appends>) {
    let mut root = root();
    let appends = std::sync::Arc::new(Appends::default());
    root.storage = root.storage.clone().with_observer(appends.clone());
    (root, appends)
}

#[test]
fn every_append_is_reported_once_with_its_time_and_no_conflict_when_alone() {
    let (root, appends) = observed_root();
    let mut a = open(&root, "a", "run-a");
    a.claim(&[0, 1]).unwrap();
    a.commit(vec![task(0, 1, 10), task(1, 1, 20)], no_markers).unwrap();
    a.commit(vec![task(0, 1, 11)], no_markers).unwrap();
    assert_eq!(appends.counts(), (3, 0), "a claim and two commits, no conflict");
}

#[test]
fn members_committing_at_once_land_every_commit_in_order_and_a_claim_still_fences() {
    const MEMBERS: u32 = 4;
    const COMMITS: i64 = 40;
    let (root, appends) = observed_root();
    let mut logs: Vec<Log> =
        (0..MEMBERS).map(|m| open(&root, &format!("m{m}"), &format!("run-{m}"))).collect();
    for (m, log) in logs.iter_mut().enumerate() {
        log.claim(&[m as u32]).unwrap();
    }
    // Partition 0 is taken from m0 halfway through its commits, by a fifth member.
    let taker = std::sync::Barrier::new(2);
    let fenced = std::thread::scope(|s| {
        let taker = &taker;
        let handles: Vec<_> = logs
            .into_iter()
            .enumerate()
            .map(|(m, mut log)| {
                s.spawn(move || {
                    let mut fenced = Vec::new();
                    for offset in 1..=COMMITS {
                        if m == 0 && offset == COMMITS / 2 + 1 {
                            taker.wait();
                            taker.wait();
                        }
                        fenced
                            .extend(log.commit(vec![task(m as u32, 1, offset)], no_markers).unwrap().fenced);
                    }
                    fenced
                })
            })
            .collect();
        let mut thief = open(&root, "thief", "run-thief");
        taker.wait();
        assert_eq!(thief.claim(&[0]).unwrap(), vec![(0, 2)]);
        taker.wait();
        handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });

    let view = View::load(&root.storage, "p").await_in(&root);
    // m0's commits after the claim are fenced, one entry each of nothing; every other
    // commit is one entry.
    let half = (COMMITS / 2) as u64;
    assert_eq!(fenced[0], vec![0; half as usize], "m0 loses partition 0 at the claim");
    assert!(fenced[1..].iter().all(Vec::is_empty));
    let entries = MEMBERS as u64 + 1 + half + (MEMBERS as u64 - 1) * COMMITS as u64;
    assert_eq!(view.version, entries, "one entry per claim and per commit that kept a task");
    assert_eq!(view.tasks[&0].position, Position::Kafka { offset: half as i64, last_ts: None });
    for m in 1..MEMBERS {
        assert_eq!(view.tasks[&m].position, Position::Kafka { offset: COMMITS, last_ts: None });
    }
    assert_eq!(view.claims[&0].member, "thief");
    let (appended, _) = appends.counts();
    assert_eq!(appended, entries, "every append reported once");
}

#[test]
fn a_member_that_keeps_losing_waits_a_random_time_that_doubles_up_to_a_bound() {
    let ms = |attempt: usize| -> Vec<u128> { (0..400).map(|_| log::backoff(attempt).as_millis()).collect() };
    for (attempt, ceiling) in [(2, 50), (3, 100), (4, 200), (7, 1600), (50, 1600)] {
        let waits = ms(attempt);
        assert!(waits.iter().all(|&w| w <= ceiling), "attempt {attempt}: {waits:?}");
        // Spread over the range, so members that lost together try apart.
        assert!(waits.iter().any(|&w| w < ceiling / 4) && waits.iter().any(|&w| w > ceiling * 3 / 4));
    }
}
