//! A stream read on a thread of its own (stdin): a poll takes what has arrived and never
//! waits for a writer that is slow to write, so checkpoints go on and a stop is honoured
//! while a pipe stays open (`tail -f events.jsonl | pageviews run --input -`).

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, TryRecvError};

/// How much one read of the stream takes at most.
const CHUNK: usize = 64 << 10;

/// Chunks read ahead before the reading thread waits: bounds the memory a fast writer can
/// take while the pipeline is busy.
const AHEAD: usize = 16;

/// The reading end of a stream read on its own thread.
pub(super) struct PipeReader {
    chunks: Receiver<io::Result<Vec<u8>>>,
    /// The chunk being handed out, and how much of it was.
    current: Vec<u8>,
    taken: usize,
    ended: bool,
}

impl PipeReader {
    /// Starts reading `stream` on a thread of its own. The thread ends at the stream's end
    /// or error; one still blocked in a read when the process exits ends with it.
    pub(super) fn spawn(mut stream: Box<dyn Read + Send>) -> io::Result<Self> {
        let (tx, chunks) = sync_channel(AHEAD);
        std::thread::Builder::new().name("pageviews-stdin".into()).spawn(move || loop {
            let mut chunk = vec![0; CHUNK];
            match stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => {
                    chunk.truncate(n);
                    if tx.send(Ok(chunk)).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        })?;
        Ok(PipeReader { chunks, current: Vec::new(), taken: 0, ended: false })
    }

    /// Copies what has arrived into `buf`: `Some(n)`, `Some(0)` once the stream ended, or
    /// `None` when nothing has arrived yet.
    pub(super) fn try_read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        if self.taken == self.current.len() {
            if self.ended {
                return Ok(Some(0));
            }
            match self.chunks.try_recv() {
                Ok(chunk) => (self.current, self.taken) = (chunk?, 0),
                Err(TryRecvError::Empty) => return Ok(None),
                Err(TryRecvError::Disconnected) => {
                    self.ended = true;
                    return Ok(Some(0));
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.taken);
        buf[..n].copy_from_slice(&self.current[self.taken..self.taken + n]);
        self.taken += n;
        Ok(Some(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_arrives_is_handed_out_in_order_then_the_end() {
        let (mut writer, reader) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut pipe = PipeReader::spawn(Box::new(reader)).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(pipe.try_read(&mut buf).unwrap(), None, "nothing written yet: no wait");
        std::io::Write::write_all(&mut writer, b"abcdef").unwrap();
        drop(writer);
        let mut got = Vec::new();
        loop {
            match pipe.try_read(&mut buf).unwrap() {
                Some(0) => break,
                Some(n) => got.extend_from_slice(&buf[..n]),
                None => std::thread::yield_now(),
            }
        }
        assert_eq!(got, b"abcdef");
    }
}
