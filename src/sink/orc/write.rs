//! Writing: rows buffered per column, encoded a stripe at a time, with a file tail at every
//! checkpoint that makes the bytes so far a readable file.

use bytes::Bytes;
use pageviews_core::table::Table;

use super::proto::Message;
use super::rle::{self, Sign};
use super::{compress, OrcError, BLOCK, MAGIC, SNAPPY, TIMESTAMP_BASE_S};
use crate::sink::columns::{kind, Buffered, Kind, Labels};
use crate::sink::Row;

/// `Type.Kind` of each column kind, and of the row.
const LONG: u64 = 4;
const STRING: u64 = 7;
const TIMESTAMP: u64 = 9;
const STRUCT: u64 = 12;

/// `Stream.Kind`.
const DATA: u64 = 1;
const LENGTH: u64 = 2;
const DICTIONARY_DATA: u64 = 3;
const SECONDARY: u64 = 5;

/// `ColumnEncoding.Kind`.
const DIRECT: u64 = 0;
const DIRECT_V2: u64 = 2;
const DICTIONARY_V2: u64 = 3;

/// The postscript's `writerVersion`: ORC-135, which stores timestamp statistics in UTC.
const WRITER_VERSION: u64 = 6;

/// `CalendarKind` PROLEPTIC_GREGORIAN: times before 1582 are chrono's, not Julian.
const PROLEPTIC_GREGORIAN: u64 = 2;

/// What the statistics say of one column of a stripe or of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stats {
    /// The row itself: only the count.
    Row,
    Int {
        min: i64,
        max: i64,
        sum: Option<i64>,
    },
    Timestamp {
        min: i64,
        max: i64,
    },
    /// Labels: the dictionary's first and last entries.
    Label {
        min: Bytes,
        max: Bytes,
        sum: i64,
    },
    /// Free text: only the total length, as its values can be long.
    Text {
        sum: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ColumnStats {
    values: u64,
    stats: Stats,
}

impl ColumnStats {
    fn merge(&mut self, other: &ColumnStats) {
        self.values += other.values;
        self.stats = match (&self.stats, &other.stats) {
            (Stats::Int { min, max, sum }, Stats::Int { min: m, max: x, sum: s }) => Stats::Int {
                min: *min.min(m),
                max: *max.max(x),
                sum: sum.zip(*s).and_then(|(a, b)| a.checked_add(b)),
            },
            (Stats::Timestamp { min, max }, Stats::Timestamp { min: m, max: x }) => {
                Stats::Timestamp { min: *min.min(m), max: *max.max(x) }
            }
            (Stats::Label { min, max, sum }, Stats::Label { min: m, max: x, sum: s }) => Stats::Label {
                min: min.clone().min(m.clone()),
                max: max.clone().max(x.clone()),
                sum: sum.saturating_add(*s),
            },
            (Stats::Text { sum }, Stats::Text { sum: s }) => Stats::Text { sum: sum.saturating_add(*s) },
            (same, _) => same.clone(),
        };
    }

    fn message(&self) -> Message {
        let mut m = Message::new();
        m.uint(1, self.values);
        match &self.stats {
            Stats::Row => {}
            Stats::Int { min, max, sum } => {
                let mut s = Message::new();
                s.sint(1, *min).sint(2, *max);
                if let Some(sum) = sum {
                    s.sint(3, *sum);
                }
                m.message(2, &s);
            }
            Stats::Label { min, max, sum } => {
                m.message(4, Message::new().bytes(1, min).bytes(2, max).sint(3, *sum));
            }
            Stats::Text { sum } => {
                m.message(4, Message::new().sint(3, *sum));
            }
            Stats::Timestamp { min, max } => {
                // minimum/maximum are the writer's local time, the same in UTC.
                m.message(9, Message::new().sint(1, *min).sint(2, *max).sint(3, *min).sint(4, *max));
            }
        }
        m.uint(10, 0);
        m
    }
}

/// A stripe written: where it is and what it holds.
struct Stripe {
    offset: u64,
    data: u64,
    footer: u64,
    rows: u64,
    stats: Vec<ColumnStats>,
}

/// One ORC table file being written: rows in, bytes out as stripes are encoded.
///
/// Memory: a buffered row costs what a Parquet row does (see
/// [`ParquetFile`](crate::sink::parquet::ParquetFile)), plus one stripe's streams while it is
/// encoded, and one encoded stripe in [`Self::output`] until drained.
pub struct OrcFile {
    table: Table,
    stripe_rows: usize,
    labels: Labels,
    buffered: Buffered,
    output: Vec<u8>,
    /// Bytes ever put into `output`: the file's length so far, tail excluded.
    written: u64,
    stripes: Vec<Stripe>,
    rows: u64,
    /// Reused per stripe: a label's index in the stripe's sorted dictionary.
    remap: Vec<u32>,
}

impl std::fmt::Debug for OrcFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrcFile")
            .field("table", &self.table)
            .field("rows", &self.rows)
            .field("buffered_rows", &self.buffered.rows)
            .field("stripes", &self.stripes.len())
            .finish_non_exhaustive()
    }
}

impl OrcFile {
    /// A new file for `table`; a stripe is cut every `stripe_rows` rows (at least 1) and at
    /// every checkpoint. The magic bytes are in [`Self::output`] at once.
    pub fn new(table: Table, stripe_rows: usize) -> Self {
        OrcFile {
            table,
            stripe_rows: stripe_rows.max(1),
            labels: Labels::default(),
            buffered: Buffered::for_table(table),
            output: MAGIC.to_vec(),
            written: MAGIC.len() as u64,
            stripes: Vec::new(),
            rows: 0,
            remap: Vec::new(),
        }
    }

    /// Buffers one row; encodes a stripe into [`Self::output`] when `stripe_rows` are
    /// buffered. The row must belong to the file's table; a refused row leaves the file as
    /// it was.
    #[inline]
    pub fn push(&mut self, row: &Row<'_>) -> Result<(), OrcError> {
        self.buffered.push(&mut self.labels, self.table, row)?;
        self.rows += 1;
        if self.buffered.rows >= self.stripe_rows {
            self.encode_stripe()?;
        }
        Ok(())
    }

    /// Bytes held in memory: encoded but not taken, plus buffered rows.
    pub(crate) fn held_bytes(&self) -> usize {
        self.output.len() + self.buffered.bytes()
    }

    /// Encoded bytes not yet taken. The caller drains it into upload parts; everything ever
    /// drained, in order, is the file's prefix.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.output
    }

    /// Bytes of memory the rows buffered since the last stripe take (an upper bound of
    /// what they encode to).
    #[cfg(test)]
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.buffered.bytes()
    }

    /// Rows pushed into the file, buffered or encoded.
    #[cfg(test)]
    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// Checkpoint: encodes the buffered rows (if any) as a stripe into [`Self::output`], then
    /// returns the tail (stripe statistics, footer, postscript and its length) that, appended
    /// after everything drained so far plus the current output, makes a complete ORC file of
    /// every row pushed so far. The file stays open: later stripes go on after the bytes
    /// this tail describes, and a later tail describes them too.
    pub fn checkpoint_footer(&mut self) -> Result<Vec<u8>, OrcError> {
        self.encode_stripe()?;
        self.tail()
    }

    /// Ends the file: encodes the buffered rows and writes the tail. Returns the output not
    /// yet drained, tail included: the file's last part.
    pub fn finish(mut self) -> Result<Vec<u8>, OrcError> {
        self.encode_stripe()?;
        let tail = self.tail()?;
        let mut last = std::mem::take(&mut self.output);
        last.extend(tail);
        Ok(last)
    }

    /// Encodes the buffered rows as one stripe into the output: each column's streams,
    /// compressed, then the stripe footer naming them.
    fn encode_stripe(&mut self) -> Result<(), OrcError> {
        let rows = self.buffered.rows;
        if rows == 0 {
            return Ok(());
        }
        let table = self.table;
        let mut data = Vec::new();
        let mut streams = Message::new();
        let mut encodings = Message::new();
        encodings.message(2, Message::new().uint(1, DIRECT));
        let mut stats = vec![ColumnStats { values: rows as u64, stats: Stats::Row }];
        let mut raw = Vec::new();
        let mut stream = |kind: u64, column: u64, raw: &[u8], data: &mut Vec<u8>| {
            let start = data.len();
            compress(table, raw, data)?;
            let length = (data.len() - start) as u64;
            streams.message(1, Message::new().uint(1, kind).uint(2, column).uint(3, length));
            Ok::<_, OrcError>(())
        };
        let Buffered { ints, labels, texts, .. } = &mut self.buffered;
        let (mut ints, mut labels, mut texts) = (ints.iter_mut(), labels.iter_mut(), texts.iter_mut());
        for (i, column) in table.columns().iter().enumerate() {
            let id = i as u64 + 1;
            let mismatch =
                || OrcError::Read { table, problem: "column buffers do not match the schema".into() };
            raw.clear();
            let column_stats = match kind(column) {
                Kind::Int => {
                    let values = ints.next().ok_or_else(mismatch)?;
                    rle::encode(values, Sign::Signed, &mut raw);
                    stream(DATA, id, &raw, &mut data)?;
                    encodings.message(2, Message::new().uint(1, DIRECT_V2));
                    let stats = int_stats(values);
                    values.clear();
                    stats
                }
                Kind::Timestamp => {
                    let values = ints.next().ok_or_else(mismatch)?;
                    let (seconds, nanos): (Vec<i64>, Vec<i64>) = values.iter().map(|&ms| split(ms)).unzip();
                    rle::encode(&seconds, Sign::Signed, &mut raw);
                    stream(DATA, id, &raw, &mut data)?;
                    raw.clear();
                    rle::encode(&nanos, Sign::Unsigned, &mut raw);
                    stream(SECONDARY, id, &raw, &mut data)?;
                    encodings.message(2, Message::new().uint(1, DIRECT_V2));
                    let (min, max) =
                        values.iter().fold((i64::MAX, i64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                    values.clear();
                    Stats::Timestamp { min, max }
                }
                Kind::Label => {
                    let keys = labels.next().ok_or_else(mismatch)?;
                    let dict = self.labels.values();
                    // The stripe's dictionary: the labels it uses, sorted as ORC asks.
                    let mut used = keys.clone();
                    used.sort_unstable();
                    used.dedup();
                    used.sort_unstable_by(|&a, &b| dict[a as usize].cmp(&dict[b as usize]));
                    self.remap.resize(dict.len(), 0);
                    for (pos, &key) in used.iter().enumerate() {
                        self.remap[key as usize] = pos as u32;
                    }
                    let indices: Vec<i64> = keys.iter().map(|&k| i64::from(self.remap[k as usize])).collect();
                    rle::encode(&indices, Sign::Unsigned, &mut raw);
                    stream(DATA, id, &raw, &mut data)?;
                    raw.clear();
                    for &key in &used {
                        raw.extend_from_slice(&dict[key as usize]);
                    }
                    stream(DICTIONARY_DATA, id, &raw, &mut data)?;
                    raw.clear();
                    let lengths: Vec<i64> = used.iter().map(|&k| dict[k as usize].len() as i64).collect();
                    rle::encode(&lengths, Sign::Unsigned, &mut raw);
                    stream(LENGTH, id, &raw, &mut data)?;
                    encodings.message(2, Message::new().uint(1, DICTIONARY_V2).uint(2, used.len() as u64));
                    let sum = keys.iter().map(|&k| dict[k as usize].len() as i64).sum();
                    let (min, max) = match (used.first(), used.last()) {
                        (Some(&a), Some(&b)) => (dict[a as usize].clone(), dict[b as usize].clone()),
                        _ => (Bytes::new(), Bytes::new()),
                    };
                    keys.clear();
                    Stats::Label { min, max, sum }
                }
                Kind::Text => {
                    let text = texts.next().ok_or_else(mismatch)?;
                    stream(DATA, id, text.bytes.as_bytes(), &mut data)?;
                    let mut start = 0;
                    let lengths: Vec<i64> = text
                        .ends
                        .iter()
                        .map(|&end| {
                            let len = end - start;
                            start = end;
                            len as i64
                        })
                        .collect();
                    rle::encode(&lengths, Sign::Unsigned, &mut raw);
                    stream(LENGTH, id, &raw, &mut data)?;
                    encodings.message(2, Message::new().uint(1, DIRECT_V2));
                    let sum = text.bytes.len() as i64;
                    text.bytes.clear();
                    text.ends.clear();
                    Stats::Text { sum }
                }
            };
            stats.push(ColumnStats { values: rows as u64, stats: column_stats });
        }
        // The stripe footer: the streams (field 1) and encodings (field 2) in column order,
        // and the writer's time zone, which TIMESTAMP values are counted in.
        let mut footer = streams.into_bytes();
        footer.extend(encodings.into_bytes());
        footer.extend(Message::new().bytes(3, b"UTC").clone().into_bytes());
        let mut compressed_footer = Vec::new();
        compress(table, &footer, &mut compressed_footer)?;
        self.stripes.push(Stripe {
            offset: self.written,
            data: data.len() as u64,
            footer: compressed_footer.len() as u64,
            rows: rows as u64,
            stats,
        });
        self.written += (data.len() + compressed_footer.len()) as u64;
        self.output.extend_from_slice(&data);
        self.output.extend_from_slice(&compressed_footer);
        self.buffered.rows = 0;
        Ok(())
    }

    /// The stripe statistics, footer, postscript and the postscript's length, for the
    /// stripes written so far.
    fn tail(&self) -> Result<Vec<u8>, OrcError> {
        let table = self.table;
        let mut metadata = Message::new();
        let mut file_stats: Option<Vec<ColumnStats>> = None;
        for stripe in &self.stripes {
            let mut stripe_stats = Message::new();
            for s in &stripe.stats {
                stripe_stats.message(1, &s.message());
            }
            metadata.message(1, &stripe_stats);
            match &mut file_stats {
                None => file_stats = Some(stripe.stats.clone()),
                Some(all) => all.iter_mut().zip(&stripe.stats).for_each(|(a, s)| a.merge(s)),
            }
        }
        let mut footer = Message::new();
        footer.uint(1, MAGIC.len() as u64).uint(2, self.written);
        for s in &self.stripes {
            let info = Message::new()
                .uint(1, s.offset)
                .uint(2, 0)
                .uint(3, s.data)
                .uint(4, s.footer)
                .uint(5, s.rows)
                .clone();
            footer.message(3, &info);
        }
        let columns = table.columns();
        let mut row_type = Message::new();
        row_type.uint(1, STRUCT).packed(2, &(1..=columns.len() as u64).collect::<Vec<_>>());
        for c in columns {
            row_type.bytes(3, c.name.as_bytes());
        }
        footer.message(4, &row_type);
        for c in columns {
            let kind = match kind(c) {
                Kind::Int => LONG,
                Kind::Timestamp => TIMESTAMP,
                Kind::Label | Kind::Text => STRING,
            };
            footer.message(4, Message::new().uint(1, kind));
        }
        footer.uint(6, self.stripes.iter().map(|s| s.rows).sum());
        let empty = || {
            // A file with no stripe: counts of 0 and no ranges.
            (0..=columns.len()).map(|_| ColumnStats { values: 0, stats: Stats::Row }).collect()
        };
        for s in file_stats.unwrap_or_else(empty) {
            footer.message(7, &s.message());
        }
        footer.uint(8, 0).uint(11, PROLEPTIC_GREGORIAN);
        footer.bytes(12, concat!("pageviews ", env!("CARGO_PKG_VERSION")).as_bytes());

        let mut tail = Vec::new();
        compress(table, &metadata.into_bytes(), &mut tail)?;
        let metadata_len = tail.len() as u64;
        compress(table, &footer.into_bytes(), &mut tail)?;
        let footer_len = tail.len() as u64 - metadata_len;
        let mut postscript = Message::new();
        postscript
            .uint(1, footer_len)
            .uint(2, SNAPPY)
            .uint(3, BLOCK as u64)
            .packed(4, &[0, 12])
            .uint(5, metadata_len)
            .uint(6, WRITER_VERSION)
            .bytes(8000, MAGIC);
        let postscript = postscript.into_bytes();
        tail.extend_from_slice(&postscript);
        // A postscript is a few dozen bytes; ORC caps it at 255.
        tail.push(postscript.len() as u8);
        Ok(tail)
    }
}

/// A time in UTC milliseconds as ORC's two TIMESTAMP values: seconds since 2015-01-01 UTC
/// and the encoded nanoseconds.
fn split(ms: i64) -> (i64, i64) {
    let (mut seconds, nanos) = (ms.div_euclid(1000), ms.rem_euclid(1000) * 1_000_000);
    // Readers take a second off a time before 1970 with a fraction of a millisecond or more
    // (ORC-763), so it is stored a second later.
    if seconds < 0 && nanos > 999_999 {
        seconds += 1;
    }
    (seconds - TIMESTAMP_BASE_S, encode_nanos(nanos))
}

/// Nanoseconds with their trailing decimal zeros taken off: the value shifted left by 3, and
/// in the low 3 bits how many zeros less one (when there were at least 2).
fn encode_nanos(nanos: i64) -> i64 {
    if nanos == 0 || nanos % 100 != 0 {
        return nanos << 3;
    }
    let (mut n, mut zeros) = (nanos / 100, 1);
    while n % 10 == 0 && zeros < 7 {
        n /= 10;
        zeros += 1;
    }
    (n << 3) | zeros
}

fn int_stats(values: &[i64]) -> Stats {
    let (mut min, mut max, mut sum) = (i64::MAX, i64::MIN, Some(0i64));
    for &v in values {
        min = min.min(v);
        max = max.max(v);
        sum = sum.and_then(|s| s.checked_add(v));
    }
    Stats::Int { min, max, sum }
}
