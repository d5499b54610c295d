//! JSON-lines files (and stdin) as a source: backfill and replay without a broker.
//!
//! Each input is read as a source partition that is assigned when reading reaches it and
//! finished at its end, so a finished input never holds the watermark back. The position is
//! the byte offset (plus the line number, for dead letters) and the checksum of the bytes
//! before it, so a restart goes straight to the first uncommitted record of the same
//! content, and new content under the same name is told apart (`inputs`: which partition
//! each input is read as, and from where).

mod checksum;
mod inputs;
mod pipe;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use super::{Batch, PartitionEvent, Poll, Position, Source, SourceError};
pub(crate) use checksum::Checksum;
pub(crate) use inputs::InputMode;
pub(crate) use inputs::{plan, reopen, InputPlan, Taken};
use inputs::{prefix_checksum, Bytes, Opening, Stamp};
use pipe::PipeReader;

const READ_CHUNK: usize = 1 << 20;

/// How soon a poll comes back to a stream that had nothing new.
const PIPE_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// How far into a file [`first_event`] looks for its first page view.
const PEEK_BYTES: u64 = 4 << 20;

/// The event time of the first record of the file at `path` that `accept` takes (the
/// pipeline's decoder and event-time checks), looking at most `PEEK_BYTES` in; `None`
/// when there is none that early, or for stdin (`-`), which cannot be read twice. Lines are
/// cut as the reader cuts them; one longer than `max_record_bytes` is a dead letter, not
/// taken.
pub(crate) fn first_event(
    path: &str,
    max_record_bytes: usize,
    accept: impl Fn(&[u8]) -> Option<i64>,
) -> Result<Option<i64>, SourceError> {
    if path == "-" {
        return Ok(None);
    }
    let io_err = |source| SourceError::Io { path: path.to_string(), source };
    let mut head = Vec::new();
    File::open(path).and_then(|f| f.take(PEEK_BYTES).read_to_end(&mut head)).map_err(io_err)?;
    let whole = (head.len() as u64) < PEEK_BYTES;
    let mut lines = head.split(|b| *b == b'\n').peekable();
    while let Some(line) = lines.next() {
        if lines.peek().is_none() && !whole {
            break; // cut by the peek, not by the file
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > max_record_bytes || line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if let Some(ms) = accept(line) {
            return Ok(Some(ms));
        }
    }
    Ok(None)
}

/// An oversized line being skipped: its first bytes (kept for the dead letter), its length
/// so far, and the checksum up to its end so far. Its bytes count towards the offset (and
/// the input's checksum) only once the line ends, so a checkpoint never points into the
/// middle of a line.
struct Skip {
    prefix: Vec<u8>,
    len: u64,
    checksum: Checksum,
}

struct Input {
    /// The source partition this input is.
    partition: u32,
    /// Its index among the pipeline's inputs.
    input: u32,
    path: String,
    /// How to open it, until reading reaches it.
    bytes: Option<Bytes>,
    reader: Option<Reader>,
    offset: u64,
    line: u64,
    /// The checksum of the bytes before `offset`.
    checksum: Checksum,
    done: bool,
}

/// An open input: a file, read in the loop (a disk answers at once), or a stream (stdin),
/// read on a thread of its own so that a quiet writer never stalls the loop.
enum Reader {
    File(Box<dyn Read + Send>),
    Pipe(PipeReader),
}

/// What one read of the current input brought.
enum Filled {
    Bytes,
    End,
    /// A stream with nothing new yet.
    Later,
}

/// A partition held but not read: its committed position stands.
struct Kept {
    partition: u32,
    path: String,
    position: Position,
}

/// Reads JSON lines from files or stdin, one record per non-empty line.
pub(crate) struct FileSource {
    inputs: Vec<Input>,
    kept: Vec<Kept>,
    current: usize,
    /// Bytes read from the current input but not yet handed out.
    pending: Vec<u8>,
    /// Start of the unconsumed part of `pending`.
    cursor: usize,
    /// Start of the consumed bytes of `pending` not yet in the current input's checksum.
    hashed: usize,
    /// Longest record kept whole; longer lines are cut (the pipeline dead-letters them).
    max_record_bytes: usize,
    /// Set while skipping the rest of an oversized line.
    skipping: Option<Skip>,
}

impl FileSource {
    /// Reads the partitions of `taken` that are to be read, in order, each from where the
    /// plan found it to start; the others (earlier contents of an input) are held at
    /// `committed`, their committed positions. Opens no file yet: each is opened as reading
    /// reaches it.
    pub(crate) fn new(
        taken: Vec<Taken>,
        committed: &BTreeMap<u32, Position>,
        max_record_bytes: usize,
    ) -> Self {
        let (mut inputs, mut kept) = (Vec::new(), Vec::new());
        for t in taken {
            match t.read {
                Some(Opening { offset, line, checksum, bytes }) => inputs.push(Input {
                    partition: t.partition,
                    input: t.input,
                    path: t.path,
                    bytes: Some(bytes),
                    reader: None,
                    offset,
                    line,
                    checksum,
                    done: false,
                }),
                None => {
                    let position = committed.get(&t.partition).cloned().unwrap_or(Position::File {
                        offset: 0,
                        line: 0,
                        checksum: Some(Checksum::default().value()),
                        input: Some(t.input),
                    });
                    kept.push(Kept { partition: t.partition, path: t.path, position });
                }
            }
        }
        FileSource {
            inputs,
            kept,
            current: 0,
            pending: Vec::with_capacity(READ_CHUNK * 2),
            cursor: 0,
            hashed: 0,
            max_record_bytes,
            skipping: None,
        }
    }

    fn open(&mut self, idx: usize) -> Result<(), SourceError> {
        let input = &mut self.inputs[idx];
        let io_err = |source| SourceError::Io { path: input.path.clone(), source };
        let reader = match input.bytes.take() {
            Some(Bytes::Stream(stream)) => Reader::Pipe(PipeReader::spawn(stream).map_err(io_err)?),
            Some(Bytes::File { checked }) => {
                let mut file = File::open(&input.path).map_err(io_err)?;
                if input.offset > 0 {
                    // Checked at start; checked again if it changed since.
                    let now = Stamp::of(&file.metadata().map_err(io_err)?);
                    if checked.as_ref() != Some(&now) {
                        let found = prefix_checksum(&mut file, input.offset).map_err(io_err)?;
                        if found.is_none_or(|c| c.value() != input.checksum.value()) {
                            return Err(SourceError::Changed {
                                path: input.path.clone(),
                                offset: input.offset,
                            });
                        }
                    }
                    file.seek(SeekFrom::Start(input.offset)).map_err(io_err)?;
                }
                Reader::File(Box::new(file))
            }
            None => return Ok(()),
        };
        input.reader = Some(reader);
        Ok(())
    }

    /// Adds the bytes handed out since the last call to the current input's checksum, so
    /// that it covers exactly the bytes before its offset. While an oversized line is
    /// skipped its bytes go to the skip's own checksum instead.
    fn settle(&mut self) {
        if self.skipping.is_none() && self.hashed < self.cursor {
            if let Some(input) = self.inputs.get_mut(self.current) {
                input.checksum.update(&self.pending[self.hashed..self.cursor]);
            }
        }
        self.hashed = self.cursor;
    }

    /// Reads more of the current input.
    fn fill(&mut self) -> Result<Filled, SourceError> {
        if self.cursor > 0 {
            self.settle();
            self.pending.drain(..self.cursor);
            self.cursor = 0;
            self.hashed = 0;
        }
        let input = &mut self.inputs[self.current];
        let Some(reader) = input.reader.as_mut() else { return Ok(Filled::End) };
        let old = self.pending.len();
        self.pending.resize(old + READ_CHUNK, 0);
        let read = loop {
            let read = match reader {
                Reader::File(file) => file.read(&mut self.pending[old..]).map(Some),
                Reader::Pipe(pipe) => pipe.try_read(&mut self.pending[old..]),
            };
            match read {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                read => break read,
            }
        };
        let n = match read {
            Ok(n) => n,
            Err(source) => {
                self.pending.truncate(old);
                return Err(SourceError::Io { path: input.path.clone(), source });
            }
        };
        self.pending.truncate(old + n.unwrap_or(0));
        Ok(match n {
            None => Filled::Later,
            Some(0) => Filled::End,
            Some(_) => Filled::Bytes,
        })
    }

    /// Hands out the line `pending[start..end]`; `newline` tells whether one follows it.
    /// The caller has moved the cursor past it.
    fn emit(&mut self, batch: &mut Batch, start: usize, end: usize, newline: bool) {
        let input = &mut self.inputs[self.current];
        let partition = input.partition;
        let consumed = (end - start + usize::from(newline)) as u64;
        input.line += 1;
        if let Some(mut skip) = self.skipping.take() {
            let total = skip.len + (end - start) as u64;
            input.offset += skip.len + consumed;
            skip.checksum.update(&self.pending[start..start + consumed as usize]);
            input.checksum = skip.checksum;
            self.hashed = self.cursor;
            batch.push_truncated(partition, input.line, &skip.prefix, total);
            return;
        }
        input.offset += consumed;
        let mut line = &self.pending[start..end];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            batch.push(partition, input.line, line);
        }
    }

    fn read_lines(&mut self, batch: &mut Batch, max_records: usize) -> Result<Poll, SourceError> {
        loop {
            if self.current >= self.inputs.len() {
                return Ok(if batch.records().is_empty() && batch.events().is_empty() {
                    Poll::End
                } else {
                    Poll::Ready
                });
            }
            if self.inputs[self.current].reader.is_none() && !self.inputs[self.current].done {
                self.open(self.current)?;
                batch.push_event(PartitionEvent::Assigned(self.inputs[self.current].partition));
            }
            // Hand out the complete lines already buffered.
            while batch.len() < max_records {
                let rest = &self.pending[self.cursor..];
                let Some(nl) = memchr::memchr(b'\n', rest) else { break };
                let (start, end) = (self.cursor, self.cursor + nl);
                self.cursor = end + 1;
                self.emit(batch, start, end, true);
            }
            if batch.len() >= max_records {
                return Ok(Poll::Ready);
            }
            let unterminated = self.pending.len() - self.cursor;
            if let Some(skip) = self.skipping.as_mut() {
                skip.len += unterminated as u64;
                skip.checksum.update(&self.pending[self.cursor..]);
                self.cursor = self.pending.len();
                self.hashed = self.cursor;
            } else if unterminated > self.max_record_bytes {
                self.settle();
                let keep = self.max_record_bytes.min(crate::event::OVERSIZED_KEEP);
                let prefix = self.pending[self.cursor..self.cursor + keep].to_vec();
                let mut checksum = self.inputs[self.current].checksum.clone();
                checksum.update(&self.pending[self.cursor..]);
                self.skipping = Some(Skip { prefix, len: unterminated as u64, checksum });
                self.cursor = self.pending.len();
                self.hashed = self.cursor;
            }
            let filled = self.fill()?;
            if let Filled::Later = filled {
                // A stream that has nothing more yet: hand out what there is, come back soon.
                let any = !batch.records().is_empty() || !batch.events().is_empty();
                return Ok(if any { Poll::Ready } else { Poll::Pending(PIPE_WAIT) });
            }
            if let Filled::End = filled {
                // End of this input: a last line without newline is still a record.
                let rest = self.pending.len() - self.cursor;
                if rest > 0 || self.skipping.is_some() {
                    let (start, end) = (self.cursor, self.pending.len());
                    self.cursor = end;
                    self.emit(batch, start, end, false);
                }
                self.settle();
                self.pending.clear();
                (self.cursor, self.hashed) = (0, 0);
                let input = &mut self.inputs[self.current];
                input.reader = None;
                input.done = true;
                batch.push_event(PartitionEvent::Finished(input.partition));
                self.current += 1;
                if !batch.is_empty() {
                    return Ok(Poll::Ready);
                }
            }
        }
    }
}

impl Source for FileSource {
    fn poll(&mut self, batch: &mut Batch, max_records: usize, _now_ms: u64) -> Result<Poll, SourceError> {
        let polled = self.read_lines(batch, max_records);
        // Positions are asked for between polls: the checksum must reach the offset.
        self.settle();
        polled
    }

    fn position(&self, partition: u32) -> Option<Position> {
        if let Some(input) = self.inputs.iter().find(|i| i.partition == partition) {
            return Some(Position::File {
                offset: input.offset,
                line: input.line,
                checksum: Some(input.checksum.value()),
                input: Some(input.input),
            });
        }
        self.kept.iter().find(|k| k.partition == partition).map(|k| k.position.clone())
    }

    fn partition_name(&self, partition: u32) -> &str {
        let input = self.inputs.iter().find(|i| i.partition == partition).map(|i| i.path.as_str());
        input
            .or_else(|| self.kept.iter().find(|k| k.partition == partition).map(|k| k.path.as_str()))
            .unwrap_or("?")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pageviews_core::commit::{PartitionTime, TaskState, Totals};
    use std::io::Write;

    /// `paths` as a new pipeline takes them.
    fn fresh(paths: &[String]) -> FileSource {
        resumed(paths, &BTreeMap::new())
    }

    /// `paths` as a pipeline that committed `positions` takes them.
    fn resumed(paths: &[String], positions: &BTreeMap<u32, Position>) -> FileSource {
        let tasks = positions
            .iter()
            .map(|(p, position)| {
                let state = TaskState {
                    partition: *p,
                    claim: 1,
                    cp: 1,
                    position: position.clone(),
                    time: PartitionTime::default(),
                    counting: None,
                    forwarded_to: Default::default(),
                    files: Vec::new(),
                    open: Vec::new(),
                    totals: Totals::default(),
                };
                (*p, state)
            })
            .collect();
        let plan = plan(paths, InputMode::Auto, &tasks).unwrap();
        FileSource::new(plan.taken, positions, 100)
    }

    fn read_all(src: &mut FileSource, max: usize) -> Vec<(u32, u64, u64, Vec<u8>)> {
        let mut out = Vec::new();
        let mut batch = Batch::default();
        while src.poll(&mut batch, max, 0).unwrap() == Poll::Ready {
            for r in batch.records() {
                out.push((r.partition, r.position, r.len, batch.payload(r).to_vec()));
            }
            batch.clear();
        }
        out
    }

    fn at(offset: u64, line: u64, before: &[u8], input: u32) -> Option<Position> {
        let checksum = Some(Checksum::of(before).value());
        Some(Position::File { offset, line, checksum, input: Some(input) })
    }

    #[test]
    fn lines_carry_file_and_line_and_blank_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jsonl");
        let b = dir.path().join("b.jsonl");
        std::fs::write(&a, "one\r\n\ntwo\n").unwrap();
        std::fs::write(&b, "three").unwrap();
        let paths = vec![a.display().to_string(), b.display().to_string()];
        let mut src = fresh(&paths);
        let got = read_all(&mut src, 1);
        let lines: Vec<_> = got.iter().map(|(p, l, _, b)| (*p, *l, b.clone())).collect();
        assert_eq!(lines, vec![(0, 1, b"one".to_vec()), (0, 3, b"two".to_vec()), (1, 1, b"three".to_vec())]);
        assert_eq!(src.position(0), at(10, 3, b"one\r\n\ntwo\n", 0));
        assert_eq!(src.position(1), at(5, 1, b"three", 1));
    }

    #[test]
    fn resuming_at_an_offset_reads_only_what_follows() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jsonl");
        let mut f = File::create(&a).unwrap();
        for i in 0..10_000 {
            writeln!(f, "line {i}").unwrap();
        }
        let paths = vec![a.display().to_string()];
        let mut first = fresh(&paths);
        let mut batch = Batch::default();
        first.poll(&mut batch, 4321, 0).unwrap();
        assert_eq!(batch.len(), 4321);
        let Some(at) = first.position(0) else { panic!("a position") };
        let rest = read_all(&mut resumed(&paths, &BTreeMap::from([(0, at)])), 1000);
        assert_eq!(rest.len(), 10_000 - 4321);
        assert_eq!(rest[0].1, 4322);
        assert_eq!(rest[0].3, b"line 4321");
    }

    #[test]
    fn the_checksum_covers_exactly_the_bytes_before_the_offset_at_every_poll() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jsonl");
        let big = "x".repeat(3 * READ_CHUNK + 17);
        let text = format!("small\r\n\n{big}\nafter\n{big}\nlast");
        std::fs::write(&a, &text).unwrap();
        let mut src = fresh(&[a.display().to_string()]);
        let mut batch = Batch::default();
        let mut polls = 0;
        while src.poll(&mut batch, 1, 0).unwrap() == Poll::Ready {
            let Some(Position::File { offset, checksum, .. }) = src.position(0) else { panic!("a position") };
            let want = Checksum::of(&text.as_bytes()[..offset as usize]).value();
            assert_eq!(checksum, Some(want), "at offset {offset}");
            batch.clear();
            polls += 1;
        }
        assert!(polls >= 5);
        assert_eq!(src.position(0), at(text.len() as u64, 6, text.as_bytes(), 0));
    }

    #[test]
    fn an_oversized_line_is_cut_with_its_length_and_the_next_line_survives() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jsonl");
        let big = "x".repeat(3 * READ_CHUNK + 17);
        std::fs::write(&a, format!("small\n{big}\nafter\n")).unwrap();
        let mut src = fresh(&[a.display().to_string()]);
        src.max_record_bytes = 1000;
        let got = read_all(&mut src, 100);
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].1, 2);
        assert_eq!(got[1].2, big.len() as u64);
        assert_eq!(got[1].3.len(), 1000);
        assert_eq!((got[2].1, got[2].3.as_slice()), (3, b"after".as_slice()));
    }

    #[test]
    fn the_first_event_is_the_first_line_taken_and_never_a_cut_one() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jsonl");
        std::fs::write(&a, "\nbad\r\n123456789\n7\r\n8").unwrap();
        let path = a.display().to_string();
        let number = |line: &[u8]| std::str::from_utf8(line).ok()?.parse::<i64>().ok();
        assert_eq!(first_event(&path, 100, number).unwrap(), Some(123_456_789));
        assert_eq!(first_event(&path, 5, number).unwrap(), Some(7), "an oversized line is not taken");
        assert_eq!(first_event(&path, 100, |_| None).unwrap(), None);
        assert_eq!(first_event("-", 100, number).unwrap(), None);
        // A line cut by the peek's limit is not read as a shorter number.
        let b = dir.path().join("b.jsonl");
        let mut text = "x\n".repeat((PEEK_BYTES as usize - 4) / 2);
        text.push_str("12345\n");
        std::fs::write(&b, text).unwrap();
        assert_eq!(first_event(&b.display().to_string(), 100, number).unwrap(), None);
    }

    #[test]
    fn a_file_rewritten_after_the_start_of_the_run_is_refused_when_reached() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jsonl");
        std::fs::write(&a, "x\ny\n").unwrap();
        let paths = [a.display().to_string()];
        let mut src = resumed(&paths, &BTreeMap::from([(0, at(2, 1, b"x\n", 0).unwrap())]));
        // Appended since the check: the same prefix, so reading goes on.
        std::fs::write(&a, "x\ny\nz\n").unwrap();
        let got = read_all(&mut src, 10);
        assert_eq!(got.iter().map(|r| r.3.clone()).collect::<Vec<_>>(), [b"y".to_vec(), b"z".to_vec()]);

        let mut src = resumed(&paths, &BTreeMap::from([(0, at(2, 1, b"x\n", 0).unwrap())]));
        std::fs::write(&a, "Q\ny\nw\n").unwrap();
        let err = src.poll(&mut Batch::default(), 10, 0).unwrap_err();
        assert!(matches!(err, SourceError::Changed { offset: 2, .. }), "{err}");
    }
}
