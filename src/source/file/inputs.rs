//! Which source partition each `--input` is read as: inputs are identified, never assumed.
//!
//! A committed file position holds the checksum of the bytes before it. An input goes on
//! from there only when it still begins with those bytes (the same file, or one that grew);
//! anything else under the same name — a rewritten file, new data piped to stdin — is new
//! content, read from its start as a new source partition numbered after every other, so
//! its records are neither skipped nor taken for ones counted before. A regular file is told
//! by reading its committed prefix again; stdin cannot be read twice, so up to
//! [`STDIN_COMPARE_BYTES`] of it are held while they are compared, and replayed when it is
//! new. Where it cannot be told (a log written before checksums, stdin with a longer
//! committed prefix), the run is refused and `--input-mode` decides.

use std::collections::BTreeMap;
use std::fs::{File, Metadata};
use std::io::{self, Cursor, Read};
use std::time::SystemTime;

use pageviews_core::commit::{PartitionTime, Position, TaskState};

use super::checksum::Checksum;
use super::READ_CHUNK;
use crate::source::SourceError;

/// The most of stdin held in memory while it is compared with the committed prefix.
pub(crate) const STDIN_COMPARE_BYTES: u64 = 64 << 20;

/// How an input with a committed position is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum InputMode {
    /// By content: an input that begins with the bytes committed from it continues; any
    /// other is read from its start as new content. Refused where that cannot be told.
    #[default]
    Auto,
    /// Every input is the one committed, or grew since: it continues, and one that does not
    /// begin with the committed bytes is refused.
    Continue,
    /// Every input is new content: each is read from its start as a new source partition.
    New,
}

/// What a regular file looked like when its prefix was checked: reading it later without
/// checking again is safe only while it still looks so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    id: (u64, u64),
}

impl Stamp {
    pub(crate) fn of(meta: &Metadata) -> Stamp {
        #[cfg(unix)]
        let id = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        #[cfg(not(unix))]
        let id = (0, 0);
        Stamp { len: meta.len(), modified: meta.modified().ok(), id }
    }
}

/// Where an input's bytes come from when reading reaches it.
pub(crate) enum Bytes {
    /// A regular file, opened then; `checked` is how it looked when its committed prefix
    /// was found equal (`None` when there is none).
    File { checked: Option<Stamp> },
    /// A stream prepared already (stdin): just after its committed prefix, or replaying
    /// what was read of it to compare.
    Stream(Box<dyn Read + Send>),
}

/// Where reading an input starts: after the bytes committed from it, checked.
pub(crate) struct Opening {
    pub(crate) offset: u64,
    pub(crate) line: u64,
    /// The checksum of the bytes before `offset`.
    pub(crate) checksum: Checksum,
    pub(crate) bytes: Bytes,
}

impl Opening {
    fn beginning(bytes: Bytes) -> Self {
        Opening { offset: 0, line: 0, checksum: Checksum::default(), bytes }
    }
}

/// A source partition this run takes.
pub(crate) struct Taken {
    pub(crate) partition: u32,
    /// The input it reads (its index among the paths).
    pub(crate) input: u32,
    pub(crate) path: String,
    /// How it is read; `None` for an earlier content of its input, taken only to finish it
    /// (recover its files, mark it finished) or because it hosts the counting partition.
    pub(crate) read: Option<Opening>,
}

/// What the run does with the pipeline's source partitions.
pub(crate) struct InputPlan {
    /// Source partitions of the pipeline: every committed one and those created now. Each
    /// holds the counting watermark until it says how far it has come.
    pub(crate) partitions: u32,
    /// Partitions created for new content, with their input.
    pub(crate) created: Vec<(u32, u32)>,
    /// Partitions taken, by input.
    pub(crate) taken: Vec<Taken>,
    /// Committed partitions left alone (finished earlier contents), with their event time,
    /// which the counting partition is told.
    pub(crate) left: Vec<(u32, PartitionTime)>,
}

/// What a committed file position says.
struct Committed {
    offset: u64,
    line: u64,
    checksum: Option<u64>,
}

/// Whether an input continues its committed partition.
enum Verdict {
    Continue(Opening),
    /// New content, read from `bytes`.
    New(Bytes),
}

/// Decides, for each of `paths` (`-` is stdin), which partition reads it and from where,
/// given the newest committed state of every partition of the pipeline (`tasks`).
pub(crate) fn plan(
    paths: &[String],
    mode: InputMode,
    tasks: &BTreeMap<u32, TaskState>,
) -> Result<InputPlan, SourceError> {
    let inputs = paths.len() as u32;
    // Every committed partition, by the input it reads.
    let mut by_input: BTreeMap<u32, Vec<(u32, &TaskState)>> = BTreeMap::new();
    for (&p, state) in tasks {
        let Position::File { input, .. } = &state.position else {
            return Err(SourceError::Restore(format!(
                "partition {p} of this files pipeline holds a position of another source: {:?}",
                state.position
            )));
        };
        let input = input.unwrap_or(p);
        if input < inputs {
            by_input.entry(input).or_default().push((p, state));
        }
    }
    let mut next = tasks.keys().next_back().map_or(0, |p| p + 1).max(inputs);
    let (mut created, mut taken) = (Vec::new(), Vec::new());
    for (i, path) in paths.iter().enumerate() {
        let i = i as u32;
        let earlier = by_input.remove(&i).unwrap_or_default();
        // The newest content of the input is its highest partition.
        let (partition, read) = match earlier.last() {
            None => (i, Opening::beginning(fresh_bytes(path))),
            Some((p, state)) => match judge(path, committed(state), mode)? {
                Verdict::Continue(opening) => (*p, opening),
                Verdict::New(bytes) => {
                    created.push((next, i));
                    next += 1;
                    (next - 1, Opening::beginning(bytes))
                }
            },
        };
        for (p, state) in earlier {
            // An earlier content is taken once more while recovery has work there (files to
            // publish or seal) or it is not marked finished; partition 0 hosts the counting.
            let unsettled = !state.time.finished || !state.files.is_empty() || !state.open.is_empty();
            if p != partition && (p == 0 || unsettled) {
                taken.push(Taken { partition: p, input: i, path: path.clone(), read: None });
            }
        }
        taken.push(Taken { partition, input: i, path: path.clone(), read: Some(read) });
    }
    let left = tasks
        .iter()
        .filter(|(p, _)| !taken.iter().any(|t| t.partition == **p))
        .map(|(p, state)| (*p, state.time.clone()))
        .collect();
    Ok(InputPlan { partitions: next, created, taken, left })
}

fn committed(state: &TaskState) -> Committed {
    match &state.position {
        Position::File { offset, line, checksum, .. } => {
            Committed { offset: *offset, line: *line, checksum: *checksum }
        }
        _ => Committed { offset: 0, line: 0, checksum: None },
    }
}

fn fresh_bytes(path: &str) -> Bytes {
    if path == "-" {
        Bytes::Stream(Box::new(io::stdin()))
    } else {
        Bytes::File { checked: None }
    }
}

/// Where a file goes on from `state`, a committed state newer than the one the plan judged
/// (another instance committed in between, and this run took the partition over): the
/// file must still begin with the bytes that state committed. `None` for stdin, which
/// cannot be read again.
pub(crate) fn reopen(path: &str, state: &TaskState) -> Result<Option<Opening>, SourceError> {
    if path == "-" {
        return Ok(None);
    }
    let at = committed(state);
    let offset = at.offset;
    match judge_file(path, at, InputMode::Continue)? {
        Verdict::Continue(opening) => Ok(Some(opening)),
        Verdict::New(_) => Err(not_continued(path, offset, "its first bytes differ".into())),
    }
}

fn judge(path: &str, at: Committed, mode: InputMode) -> Result<Verdict, SourceError> {
    if at.offset == 0 {
        // Nothing committed: every content begins with it.
        return Ok(Verdict::Continue(Opening::beginning(fresh_bytes(path))));
    }
    if mode == InputMode::New {
        return Ok(Verdict::New(fresh_bytes(path)));
    }
    if path == "-" {
        judge_stream(path, Box::new(io::stdin()), at, mode, STDIN_COMPARE_BYTES)
    } else {
        judge_file(path, at, mode)
    }
}

fn judge_file(path: &str, at: Committed, mode: InputMode) -> Result<Verdict, SourceError> {
    let io_err = |source| SourceError::Io { path: path.to_string(), source };
    let mut file = File::open(path).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if meta.len() < at.offset {
        return match mode {
            InputMode::Continue => Err(not_continued(
                path,
                at.offset,
                format!("it is {} bytes, shorter than the {} committed", meta.len(), at.offset),
            )),
            _ => Ok(Verdict::New(Bytes::File { checked: None })),
        };
    }
    if at.checksum.is_none() && mode == InputMode::Auto {
        return Err(SourceError::Unidentified { input: input_name(path), offset: at.offset });
    }
    let checksum = prefix_checksum(&mut file, at.offset).map_err(io_err)?;
    let Some(checksum) = checksum.filter(|c| at.checksum.is_none_or(|want| c.value() == want)) else {
        return match mode {
            InputMode::Continue => Err(not_continued(path, at.offset, "its first bytes differ".into())),
            _ => Ok(Verdict::New(Bytes::File { checked: None })),
        };
    };
    let bytes = Bytes::File { checked: Some(Stamp::of(&meta)) };
    Ok(Verdict::Continue(Opening { offset: at.offset, line: at.line, checksum, bytes }))
}

/// Judges a stream that cannot be read twice: in `Auto` mode it holds what it reads (at
/// most `cap` bytes), to read it again as new content if it differs.
fn judge_stream(
    path: &str,
    mut stream: Box<dyn Read + Send>,
    at: Committed,
    mode: InputMode,
    cap: u64,
) -> Result<Verdict, SourceError> {
    let io_err = |source| SourceError::Io { path: path.to_string(), source };
    if mode == InputMode::Auto {
        let Some(want) = at.checksum else {
            return Err(SourceError::Unidentified { input: input_name(path), offset: at.offset });
        };
        if at.offset > cap {
            return Err(SourceError::StdinUnjudged { offset: at.offset, cap });
        }
        let mut held = Vec::new();
        (&mut stream).take(at.offset).read_to_end(&mut held).map_err(io_err)?;
        let checksum = Checksum::of(&held);
        if checksum.len() == at.offset && checksum.value() == want {
            let bytes = Bytes::Stream(stream);
            return Ok(Verdict::Continue(Opening { offset: at.offset, line: at.line, checksum, bytes }));
        }
        return Ok(Verdict::New(Bytes::Stream(Box::new(Cursor::new(held).chain(stream)))));
    }
    let mut checksum = Checksum::default();
    let mut buf = vec![0; READ_CHUNK.min(at.offset as usize)];
    while checksum.len() < at.offset {
        let want = (at.offset - checksum.len()).min(buf.len() as u64) as usize;
        match stream.read(&mut buf[..want]) {
            Ok(0) => {
                let why =
                    format!("it ended after {} bytes, before the {} committed", checksum.len(), at.offset);
                return Err(not_continued(path, at.offset, why));
            }
            Ok(n) => checksum.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
    }
    if at.checksum.is_some_and(|want| checksum.value() != want) {
        return Err(not_continued(path, at.offset, "its first bytes differ".into()));
    }
    let bytes = Bytes::Stream(stream);
    Ok(Verdict::Continue(Opening { offset: at.offset, line: at.line, checksum, bytes }))
}

fn not_continued(path: &str, offset: u64, why: String) -> SourceError {
    let retry = if path == "-" { "pipe it again" } else { "run again" };
    SourceError::NotContinued { input: input_name(path), offset, why, retry }
}

/// An input as errors name it.
fn input_name(path: &str) -> String {
    if path == "-" {
        "stdin".into()
    } else {
        path.to_string()
    }
}

/// The checksum of the first `len` bytes of `file`, read from its start; `None` when it is
/// shorter.
pub(crate) fn prefix_checksum(file: &mut File, len: u64) -> io::Result<Option<Checksum>> {
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(0))?;
    let mut checksum = Checksum::default();
    let mut buf = vec![0; READ_CHUNK.min(len as usize)];
    let mut prefix = file.take(len);
    loop {
        match prefix.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => checksum.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((checksum.len() == len).then_some(checksum))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pageviews_core::commit::Totals;

    fn state(partition: u32, offset: u64, line: u64, checksum: Option<u64>, input: Option<u32>) -> TaskState {
        TaskState {
            partition,
            claim: 1,
            cp: 1,
            position: Position::File { offset, line, checksum, input },
            time: PartitionTime { finished: true, ..PartitionTime::default() },
            counting: None,
            forwarded_to: Default::default(),
            files: Vec::new(),
            open: Vec::new(),
            totals: Totals::default(),
        }
    }

    fn read_all(bytes: Bytes) -> Vec<u8> {
        let Bytes::Stream(mut r) = bytes else { panic!("a stream expected") };
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        out
    }

    fn stream(bytes: &[u8]) -> Box<dyn Read + Send> {
        Box::new(Cursor::new(bytes.to_vec()))
    }

    fn committed_of(bytes: &[u8], line: u64) -> Committed {
        Committed { offset: bytes.len() as u64, line, checksum: Some(Checksum::of(bytes).value()) }
    }

    #[test]
    fn a_stream_that_begins_with_the_committed_bytes_continues_after_them() {
        let at = committed_of(b"a\nb\n", 2);
        match judge_stream("-", stream(b"a\nb\nc\n"), at, InputMode::Auto, 100).unwrap() {
            Verdict::Continue(o) => {
                assert_eq!((o.offset, o.line, o.checksum.value()), (4, 2, Checksum::of(b"a\nb\n").value()));
                assert_eq!(read_all(o.bytes), b"c\n");
            }
            Verdict::New(_) => panic!("the same stream must continue"),
        }
    }

    #[test]
    fn another_stream_is_replayed_whole_as_new_content() {
        for other in [&b"x\ny\nz\n"[..], b"a\n", b"", b"a\nB\nc\n"] {
            match judge_stream("-", stream(other), committed_of(b"a\nb\n", 2), InputMode::Auto, 100).unwrap()
            {
                Verdict::New(bytes) => assert_eq!(read_all(bytes), other),
                Verdict::Continue(_) => panic!("{other:?} must be new content"),
            }
        }
    }

    #[test]
    fn a_stream_that_cannot_be_told_is_refused_in_auto_mode_and_continue_checks_it() {
        let long = committed_of(b"0123456789", 1);
        let err = judge_stream("-", stream(b"0123456789"), long, InputMode::Auto, 4).err().unwrap();
        assert!(matches!(err, SourceError::StdinUnjudged { offset: 10, cap: 4 }), "{err}");
        let unknown = Committed { offset: 4, line: 2, checksum: None };
        let err = judge_stream("-", stream(b"a\nb\n"), unknown, InputMode::Auto, 100).err().unwrap();
        assert!(matches!(err, SourceError::Unidentified { .. }), "{err}");

        // `Continue` reads the prefix without holding it, and checks what it can.
        let long = committed_of(b"0123456789", 1);
        assert!(matches!(
            judge_stream("-", stream(b"0123456789\n"), long, InputMode::Continue, 4),
            Ok(Verdict::Continue(_))
        ));
        let other = judge_stream("-", stream(b"x\ny\n"), committed_of(b"a\nb\n", 2), InputMode::Continue, 4);
        assert!(matches!(other, Err(SourceError::NotContinued { .. })));
        let short = judge_stream("-", stream(b"a\n"), committed_of(b"a\nb\n", 2), InputMode::Continue, 4);
        assert!(matches!(short, Err(SourceError::NotContinued { .. })));
        let unknown = Committed { offset: 4, line: 2, checksum: None };
        let trusted = judge_stream("-", stream(b"x\ny\nz\n"), unknown, InputMode::Continue, 4);
        assert!(
            matches!(trusted, Ok(Verdict::Continue(o)) if o.checksum.value() == Checksum::of(b"x\ny\n").value())
        );
    }

    #[test]
    fn a_file_continues_when_it_grew_and_is_new_content_when_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let path_s = path.display().to_string();
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        let at = || committed_of(b"a\nb\n", 2);
        assert!(
            matches!(judge_file(&path_s, at(), InputMode::Auto), Ok(Verdict::Continue(o)) if o.offset == 4)
        );
        for rewritten in ["x\ny\nz\n", "a\n"] {
            std::fs::write(&path, rewritten).unwrap();
            assert!(matches!(judge_file(&path_s, at(), InputMode::Auto), Ok(Verdict::New(_))), "{rewritten}");
            assert!(matches!(
                judge_file(&path_s, at(), InputMode::Continue),
                Err(SourceError::NotContinued { .. })
            ));
        }
        std::fs::write(&path, "a\nb\n").unwrap();
        let unknown = || Committed { offset: 4, line: 2, checksum: None };
        assert!(matches!(
            judge_file(&path_s, unknown(), InputMode::Auto),
            Err(SourceError::Unidentified { .. })
        ));
        assert!(matches!(judge_file(&path_s, unknown(), InputMode::Continue), Ok(Verdict::Continue(_))));
    }

    #[test]
    fn new_content_takes_the_next_partition_and_earlier_ones_are_taken_only_to_settle_them() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        };
        let paths = vec![write("a", "a1\na2\n"), write("b", "b2\n")];
        let mut tasks = BTreeMap::new();
        // Input 0 continues partition 0; input 1 read b1 as partition 1, then b2 as
        // partition 2, which a kill stopped before it finished; now it holds b2 again.
        let a = Checksum::of(b"a1\n").value();
        tasks.insert(0, state(0, 3, 1, Some(a), None));
        tasks.insert(1, state(1, 3, 1, Some(Checksum::of(b"b1\n").value()), None));
        let mut two = state(2, 0, 0, Some(Checksum::default().value()), Some(1));
        two.time.finished = false;
        tasks.insert(2, two);
        let plan = plan(&paths, InputMode::Auto, &tasks).unwrap();
        let taken: Vec<(u32, u32, Option<u64>)> =
            plan.taken.iter().map(|t| (t.partition, t.input, t.read.as_ref().map(|o| o.offset))).collect();
        assert_eq!(taken, [(0, 0, Some(3)), (2, 1, Some(0))]);
        assert!(plan.created.is_empty());
        assert_eq!(plan.partitions, 3);
        assert_eq!(plan.left.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [1]);

        // b rewritten again: a new partition after every other; partition 2, unfinished, is
        // taken to finish it.
        std::fs::write(dir.path().join("b"), "b3\n").unwrap();
        tasks.insert(2, {
            let mut s = state(2, 3, 1, Some(Checksum::of(b"b2\n").value()), Some(1));
            s.time.finished = false;
            s
        });
        let plan = super::plan(&paths, InputMode::Auto, &tasks).unwrap();
        let taken: Vec<(u32, u32, bool)> =
            plan.taken.iter().map(|t| (t.partition, t.input, t.read.is_some())).collect();
        assert_eq!(taken, [(0, 0, true), (2, 1, false), (3, 1, true)]);
        assert_eq!((plan.created, plan.partitions), (vec![(3, 1)], 4));

        // Input 0 rewritten: partition 0 still hosts the counting partition, so it is taken.
        std::fs::write(dir.path().join("a"), "A\n").unwrap();
        let plan = super::plan(&paths, InputMode::Auto, &tasks).unwrap();
        let taken: Vec<(u32, bool)> = plan.taken.iter().map(|t| (t.partition, t.read.is_some())).collect();
        assert_eq!(taken, [(0, false), (3, true), (2, false), (4, true)]);
    }
}
