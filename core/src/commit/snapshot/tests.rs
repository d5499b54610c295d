//! Snapshots of hand-made log entries on local disk: what each kind of file reads as, and
//! the races a reader meets (a file rolling, a tail deleted, a file opened after the
//! checkpoint). The pipeline-written cases are in the SQL client's tests.

use std::collections::BTreeMap;

use bytes::Bytes;
use object_store::path::Path;

use super::*;
use crate::commit::layout::{entry_path, file_path, tails_prefix, upload_staging};
use crate::commit::{
    ClosedFile, Entry, OpenFileState, PartitionTime, Position, TaskState, Totals, LOG_VERSION,
};
use crate::storage::UploadRef;
use crate::table::{Format, Partition};

/// The claim every hand-made task is held under.
const CLAIM: u64 = 1;

struct Root {
    dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    storage: Storage,
}

fn root() -> Root {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let storage = Storage::open(&dir.path().display().to_string(), rt.handle().clone()).unwrap();
    Root { dir, rt, storage }
}

impl Root {
    fn put(&self, path: &str, bytes: &[u8]) {
        let bytes = Bytes::copy_from_slice(bytes);
        self.rt.block_on(self.storage.put(&Path::from(path), bytes)).unwrap();
    }

    fn file(&self, path: &str) -> std::path::PathBuf {
        self.dir.path().join(path)
    }

    fn snapshot(&self) -> Snapshot {
        self.rt.block_on(read_snapshot(&self.storage)).unwrap()
    }

    fn read(&self, f: &SnapshotFile, range: Range<u64>) -> Result<Bytes, SnapshotError> {
        self.rt.block_on(f.read(&self.storage, range))
    }

    /// Appends log entry `version` of pipeline `p`, committing source partition 0 at task
    /// checkpoint `cp`, as the commit point does, without publishing.
    fn commit(&self, p: &str, version: u64, cp: u64, files: Vec<ClosedFile>, open: Vec<OpenFileState>) {
        let task = TaskState {
            partition: 0,
            claim: CLAIM,
            cp,
            position: Position::Generator { next_seq: 0, shift_ms: 0 },
            time: PartitionTime::default(),
            counting: None,
            forwarded_to: Default::default(),
            files,
            open,
            totals: Totals::default(),
        };
        let entry = Entry {
            format: LOG_VERSION,
            version,
            member: "m".into(),
            run: "r".into(),
            created_at: String::new(),
            claims: BTreeMap::from([(0, CLAIM)]),
            tasks: vec![task],
            markers: Vec::new(),
        };
        self.put(entry_path(p, version).as_ref(), &serde_json::to_vec(&entry).unwrap());
    }
}

/// A file of source partition 0 first recorded by task checkpoint `cp`.
fn path(p: &str, cp: u64, n: u32) -> String {
    file_path(Partition { table: Table::PageViews, hour: 0 }, p, 0, CLAIM, cp, n, Format::Jsonl)
}

/// A local file open at task checkpoint `cp` with `sent` bytes written in place and `tail`.
fn open_file(p: &str, cp: u64, path: &str, sent: u64, tail: &[u8], rows: u64) -> OpenFileState {
    let staged = upload_staging(p, path).to_string();
    OpenFileState {
        table: Table::PageViews,
        hour: 0,
        path: path.into(),
        upload: Some(UploadRef { path: path.into(), id: String::new(), staged }),
        parts: Vec::new(),
        sent,
        tail: (!tail.is_empty()).then(|| format!("{}/{path}", tails_prefix(p, 0, CLAIM, cp))),
        rows,
        bytes: sent + tail.len() as u64,
    }
}

#[test]
fn an_open_file_reads_up_to_its_committed_length_and_no_further() {
    let r = root();
    let f = path("p", 1, 0);
    let state = open_file("p", 1, &f, 10, b"", 2);
    // Written on past the checkpoint: the last line is not committed.
    r.put(&state.upload.as_ref().unwrap().staged, b"row-1 ...\nrow-2 ...\nrow-3, half");
    r.commit("p", 1, 1, Vec::new(), vec![state]);

    let snap = r.snapshot();
    assert_eq!(snap.checkpoints, BTreeMap::from([("p".to_string(), 1)]));
    assert_eq!(snap.files.len(), 1);
    let file = snap.file(&f).expect("the open file is in the snapshot");
    assert!(file.is_open());
    assert_eq!(file.meta.size, 10, "its committed length");
    assert_eq!(r.read(file, 0..10).unwrap(), "row-1 ...\n".as_bytes());
    assert_eq!(r.read(file, 6..10).unwrap(), "...\n".as_bytes());
    let err = r.read(file, 0..11).unwrap_err();
    assert!(matches!(err, SnapshotError::OutOfRange { size: 10, .. }), "{err}");
    assert!(!r.file(&f).exists(), "the table folder itself is untouched");
}

#[test]
fn a_file_that_rolls_after_the_snapshot_is_read_at_its_final_path() {
    let r = root();
    let f = path("p", 1, 0);
    let state = open_file("p", 1, &f, 4, b"", 1);
    let staged = state.upload.as_ref().unwrap().staged.clone();
    r.put(&staged, b"one\n");
    r.commit("p", 1, 1, Vec::new(), vec![state]);
    let snap = r.snapshot();

    // The pipeline writes on and rolls the file into place before the reader gets to it.
    std::fs::write(r.file(&staged), "one\ntwo\n").unwrap();
    std::fs::create_dir_all(r.file(&f).parent().unwrap()).unwrap();
    std::fs::rename(r.file(&staged), r.file(&f)).unwrap();
    assert_eq!(r.read(snap.file(&f).unwrap(), 0..4).unwrap(), "one\n".as_bytes());

    // A snapshot taken now, while checkpoint 1 is still the newest, reads the rolled file
    // as checkpoint 1 committed it.
    let again = r.snapshot();
    let file = again.file(&f).unwrap();
    assert_eq!((file.is_open(), file.meta.size), (true, 4));
    assert_eq!(r.read(file, 0..4).unwrap(), "one\n".as_bytes());
}

#[test]
fn the_tail_follows_the_prefix_and_a_newer_checkpoint_expires_it() {
    let r = root();
    let f = path("p", 1, 0);
    let state = open_file("p", 1, &f, 6, b"FOOTER", 3);
    r.put(&state.upload.as_ref().unwrap().staged, b"AAAAAAnext row group, uncommitted");
    r.put(state.tail.as_deref().unwrap(), b"FOOTER");
    r.commit("p", 1, 1, Vec::new(), vec![state.clone()]);

    let snap = r.snapshot();
    let file = snap.file(&f).unwrap();
    assert_eq!(file.meta.size, 12);
    assert_eq!(r.read(file, 0..12).unwrap(), "AAAAAAFOOTER".as_bytes());
    assert_eq!(r.read(file, 4..8).unwrap(), "AAFO".as_bytes(), "a range across prefix and tail");
    assert_eq!(r.read(file, 8..12).unwrap(), "OTER".as_bytes(), "a range in the tail: a footer read");

    // A new holder of the partition recovers it and drops its tails.
    std::fs::remove_dir_all(r.file(tails_prefix("p", 0, CLAIM, 1).as_ref())).unwrap();
    let err = r.read(file, 6..12).unwrap_err();
    assert!(err.is_expired(), "{err}");
    assert_eq!(r.read(file, 0..6).unwrap(), "AAAAAA".as_bytes(), "the prefix is still there");
}

#[test]
fn files_opened_after_the_checkpoint_are_left_out_and_older_ones_read_whole() {
    let r = root();
    let (old, rolled_later, newer) = (path("p", 1, 0), path("p", 2, 0), path("p", 3, 0));
    r.put(&old, b"published by checkpoint 1\n");
    // Open at checkpoint 2, rolled and published by checkpoint 3 after the reader read 2.
    let state = open_file("p", 2, &rolled_later, 6, b"", 1);
    r.put(&rolled_later, b"row 1\nrow 2 (checkpoint 3)\n");
    // Opened after checkpoint 2, published by checkpoint 3.
    r.put(&newer, b"checkpoint 3 only\n");
    // Files of no pipeline (copied in by hand) and of a pipeline with no checkpoint are read whole.
    r.put("page_views/day=1970-01-01/hour=00/other.jsonl", b"x\n");
    r.put(&path("q", 9, 0), b"y\n");
    r.put("page_views/day=1970-01-01/hour=00/_SUCCESS", b"");
    r.commit("p", 1, 2, Vec::new(), vec![state]);

    let snap = r.snapshot();
    let listed: Vec<(&str, u64, bool)> =
        snap.files.iter().map(|f| (f.meta.location.as_ref(), f.meta.size, f.is_open())).collect();
    let mut want = vec![
        (old.as_str(), 26, false),
        (rolled_later.as_str(), 6, true),
        ("page_views/day=1970-01-01/hour=00/_SUCCESS", 0, false),
        ("page_views/day=1970-01-01/hour=00/other.jsonl", 2, false),
    ];
    let q = path("q", 9, 0);
    want.push((q.as_str(), 2, false));
    want.sort();
    assert_eq!(listed, want);
    assert_eq!(r.read(snap.file(&rolled_later).unwrap(), 0..6).unwrap(), "row 1\n".as_bytes());
}

#[test]
fn a_file_sealed_at_the_checkpoints_length_is_read_whole() {
    let r = root();
    let f = path("p", 1, 0);
    let state = open_file("p", 1, &f, 6, b"FOOTER", 1);
    // Recovery sealed it (tail appended, staging removed) before a new run committed anything.
    r.put(&f, b"AAAAAAFOOTER");
    r.commit("p", 1, 1, Vec::new(), vec![state]);
    let snap = r.snapshot();
    let file = snap.file(&f).unwrap();
    assert!(!file.is_open(), "no tail is needed");
    assert_eq!(r.read(file, 0..12).unwrap(), "AAAAAAFOOTER".as_bytes());
}

#[test]
fn a_rolled_file_whose_publication_is_under_way_is_read_from_staging() {
    let r = root();
    let f = path("p", 1, 0);
    let staged = upload_staging("p", &f).to_string();
    r.put(&staged, b"rolled\n");
    let closed = ClosedFile {
        table: Table::PageViews,
        hour: 0,
        upload: UploadRef { path: f.clone(), id: String::new(), staged },
        parts: vec![String::new()],
        rows: 1,
        bytes: 7,
    };
    r.commit("p", 1, 1, vec![closed], Vec::new());
    let snap = r.snapshot();
    assert_eq!(r.read(snap.file(&f).unwrap(), 0..7).unwrap(), "rolled\n".as_bytes());
}

#[test]
fn an_unreadable_log_is_reported_and_its_pipelines_files_read_whole() {
    let r = root();
    let f = path("p", 5, 0);
    r.put(&f, b"row\n");
    r.put(entry_path("p", 1).as_ref(), b"{\"format\": 1}");
    let snap = r.snapshot();
    assert_eq!(snap.files.len(), 1);
    assert!(snap.checkpoints.is_empty());
    assert!(
        matches!(&snap.unreadable[..], [Unreadable::Log { pipeline, .. }] if pipeline == "p"),
        "{:?}",
        snap.unreadable
    );
}

#[test]
fn files_of_other_partitions_and_newer_claims_follow_their_own_tasks() {
    let r = root();
    let hour = Partition { table: Table::PageViews, hour: 0 };
    // Partition 0 committed task checkpoint 3; partition 1 never committed.
    let committed = file_path(hour, "p", 0, CLAIM, 3, 0, Format::Jsonl);
    let next_holder = file_path(hour, "p", 0, CLAIM + 1, 4, 0, Format::Jsonl);
    let uncommitted_partition = file_path(hour, "p", 1, CLAIM, 1, 0, Format::Jsonl);
    for f in [&committed, &next_holder, &uncommitted_partition] {
        r.put(f, b"row\n");
    }
    r.commit("p", 1, 3, Vec::new(), Vec::new());
    let snap = r.snapshot();
    let listed: Vec<&str> = snap.files.iter().map(|f| f.meta.location.as_ref()).collect();
    assert_eq!(listed, vec![committed.as_str()]);
}

#[test]
fn a_root_without_checkpoints_reads_its_folders_whole() {
    let r = root();
    r.put("page_views/day=1970-01-01/hour=00/x.jsonl", b"x\n");
    let snap = r.snapshot();
    assert_eq!(snap.files.len(), 1);
    assert!(snap.checkpoints.is_empty() && snap.unreadable.is_empty());
}
