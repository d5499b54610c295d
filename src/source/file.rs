//! JSON-lines files (and stdin) as a source: backfill and replay without a broker.
//!
//! Files are read in command-line order; each is a partition that is assigned when reading
//! starts and finished at its end, so a finished file never holds the watermark back. The
//! position is the byte offset (plus the line number, for dead letters), so a restart seeks
//! straight to the first uncommitted record. Stdin cannot seek: on resume the bytes already
//! committed are read and skipped, which assumes the same stream is piped in again.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use super::{Batch, PartitionEvent, Poll, Position, Source, SourceError};

const READ_CHUNK: usize = 1 << 20;

/// How far into a file [`first_event`] looks for its first page view.
const PEEK_BYTES: u64 = 4 << 20;

/// The event time of the first record of the file at `path` that `accept` takes (the
/// pipeline's decoder and event-time checks), looking at most [`PEEK_BYTES`] in; `None`
/// when there is none that early, or for stdin (`-`), which cannot be read twice. Lines are
/// cut as the reader cuts them; one longer than `max_record_bytes` is a dead letter, not
/// taken.
pub fn first_event(
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

/// An oversized line being skipped: its first bytes (kept for the dead letter) and its
/// length so far. Its bytes count towards the offset only once the line ends, so a
/// checkpoint never points into the middle of a line.
struct Skip {
    prefix: Vec<u8>,
    len: u64,
}

struct Input {
    /// The source partition this input is.
    partition: u32,
    path: String,
    reader: Option<Box<dyn Read + Send>>,
    offset: u64,
    line: u64,
    done: bool,
}

/// Reads JSON lines from files or stdin, one record per non-empty line.
pub struct FileSource {
    inputs: Vec<Input>,
    current: usize,
    /// Bytes read from the current input but not yet handed out.
    pending: Vec<u8>,
    /// Start of the unconsumed part of `pending`.
    cursor: usize,
    /// Longest record kept whole; longer lines are cut (the pipeline dead-letters them).
    max_record_bytes: usize,
    /// Set while skipping the rest of an oversized line.
    skipping: Option<Skip>,
}

impl FileSource {
    /// Reads `inputs` in order: each a source partition number, a path (`-` is stdin) and
    /// where to resume in it (its committed position), or from the start. Opens nothing yet;
    /// files are opened in turn as reading reaches them.
    pub fn new(inputs: Vec<(u32, String, Option<Position>)>, max_record_bytes: usize) -> Self {
        let inputs = inputs
            .into_iter()
            .map(|(partition, path, at)| {
                let (offset, line) = match at {
                    Some(Position::File { offset, line }) => (offset, line),
                    _ => (0, 0),
                };
                Input { partition, path, reader: None, offset, line, done: false }
            })
            .collect();
        FileSource {
            inputs,
            current: 0,
            pending: Vec::with_capacity(READ_CHUNK * 2),
            cursor: 0,
            max_record_bytes,
            skipping: None,
        }
    }

    fn open(&mut self, idx: usize) -> Result<(), SourceError> {
        let input = &mut self.inputs[idx];
        let io_err = |source| SourceError::Io { path: input.path.clone(), source };
        let reader: Box<dyn Read + Send> = if input.path == "-" {
            let mut stdin = io::stdin();
            io::copy(&mut (&mut stdin).take(input.offset), &mut io::sink()).map_err(io_err)?;
            Box::new(stdin)
        } else {
            let mut file = File::open(&input.path).map_err(io_err)?;
            let size = file.metadata().map_err(io_err)?.len();
            if size < input.offset {
                return Err(SourceError::Shrunk { path: input.path.clone(), size, offset: input.offset });
            }
            file.seek(SeekFrom::Start(input.offset)).map_err(io_err)?;
            Box::new(file)
        };
        input.reader = Some(reader);
        Ok(())
    }

    /// Reads more of the current input; returns false at its end.
    fn fill(&mut self) -> Result<bool, SourceError> {
        if self.cursor > 0 {
            self.pending.drain(..self.cursor);
            self.cursor = 0;
        }
        let input = &mut self.inputs[self.current];
        let Some(reader) = input.reader.as_mut() else { return Ok(false) };
        let old = self.pending.len();
        self.pending.resize(old + READ_CHUNK, 0);
        let n = loop {
            match reader.read(&mut self.pending[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    self.pending.truncate(old);
                    return Err(SourceError::Io { path: input.path.clone(), source });
                }
            }
        };
        self.pending.truncate(old + n);
        Ok(n > 0)
    }

    /// Hands out the line `pending[start..end]`; `newline` tells whether one follows it.
    fn emit(&mut self, batch: &mut Batch, start: usize, end: usize, newline: bool) {
        let input = &mut self.inputs[self.current];
        let partition = input.partition;
        let consumed = (end - start + usize::from(newline)) as u64;
        input.line += 1;
        if let Some(skip) = self.skipping.take() {
            let total = skip.len + (end - start) as u64;
            input.offset += skip.len + consumed;
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
}

impl Source for FileSource {
    fn poll(&mut self, batch: &mut Batch, max_records: usize, _now_ms: u64) -> Result<Poll, SourceError> {
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
                self.cursor = self.pending.len();
            } else if unterminated > self.max_record_bytes {
                let keep = self.max_record_bytes.min(crate::event::OVERSIZED_KEEP);
                let prefix = self.pending[self.cursor..self.cursor + keep].to_vec();
                self.skipping = Some(Skip { prefix, len: unterminated as u64 });
                self.cursor = self.pending.len();
            }
            if !self.fill()? {
                // End of this input: a last line without newline is still a record.
                let rest = self.pending.len() - self.cursor;
                if rest > 0 || self.skipping.is_some() {
                    let (start, end) = (self.cursor, self.pending.len());
                    self.cursor = end;
                    self.emit(batch, start, end, false);
                }
                self.pending.clear();
                self.cursor = 0;
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

    fn position(&self, partition: u32) -> Option<Position> {
        let input = self.inputs.iter().find(|i| i.partition == partition)?;
        Some(Position::File { offset: input.offset, line: input.line })
    }

    fn partition_name(&self, partition: u32) -> &str {
        self.inputs.iter().find(|i| i.partition == partition).map_or("?", |i| i.path.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn fresh(paths: &[String]) -> Vec<(u32, String, Option<Position>)> {
        paths.iter().enumerate().map(|(i, p)| (i as u32, p.clone(), None)).collect()
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

    #[test]
    fn lines_carry_file_and_line_and_blank_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jsonl");
        let b = dir.path().join("b.jsonl");
        std::fs::write(&a, "one\r\n\ntwo\n").unwrap();
        std::fs::write(&b, "three").unwrap();
        let paths = vec![a.display().to_string(), b.display().to_string()];
        let mut src = FileSource::new(fresh(&paths), 100);
        let got = read_all(&mut src, 1);
        let lines: Vec<_> = got.iter().map(|(p, l, _, b)| (*p, *l, b.clone())).collect();
        assert_eq!(lines, vec![(0, 1, b"one".to_vec()), (0, 3, b"two".to_vec()), (1, 1, b"three".to_vec())]);
        assert_eq!(src.position(0), Some(Position::File { offset: 10, line: 3 }));
        assert_eq!(src.position(1), Some(Position::File { offset: 5, line: 1 }));
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
        let mut first = FileSource::new(fresh(&paths), 100);
        let mut batch = Batch::default();
        first.poll(&mut batch, 4321, 0).unwrap();
        assert_eq!(batch.len(), 4321);
        let at = first.position(0);
        let rest = read_all(&mut FileSource::new(vec![(0, paths[0].clone(), at)], 100), 1000);
        assert_eq!(rest.len(), 10_000 - 4321);
        assert_eq!(rest[0].1, 4322);
        assert_eq!(rest[0].3, b"line 4321");
    }

    #[test]
    fn an_oversized_line_is_cut_with_its_length_and_the_next_line_survives() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jsonl");
        let big = "x".repeat(3 * READ_CHUNK + 17);
        std::fs::write(&a, format!("small\n{big}\nafter\n")).unwrap();
        let paths = vec![a.display().to_string()];
        let got = read_all(&mut FileSource::new(fresh(&paths), 1000), 100);
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
    fn a_shrunk_file_is_refused_on_resume() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jsonl");
        std::fs::write(&a, "x\n").unwrap();
        let paths = [a.display().to_string()];
        let at = Some(Position::File { offset: 99, line: 9 });
        let mut src = FileSource::new(vec![(0, paths[0].clone(), at)], 100);
        let err = src.poll(&mut Batch::default(), 10, 0).unwrap_err();
        assert!(matches!(err, SourceError::Shrunk { .. }), "{err}");
    }
}
