//! Reading back: a table file as the JSON lines the JSON-lines writer makes for the same
//! rows, so `verify` audits ORC tables with the code that audits the others.
//!
//! It reads what [`super::OrcFile`] writes (RLE v2 without patched-base runs, Snappy or no
//! compression, UTC timestamps) and refuses anything else by name, rather than guessing.

use bytes::Bytes;
use pageviews_core::table::Table;

use super::proto::{unpack, Fields, Value};
use super::rle::{self, Sign};
use super::{decompress, OrcError, MAGIC, TIMESTAMP_BASE_S};
use crate::sink::columns::{kind, Decoded, Kind, Values};
use crate::sink::ColumnsError;

/// `Type.Kind` names, for messages; ORC numbers them in this order.
const TYPE_NAMES: [&str; 19] = [
    "boolean",
    "tinyint",
    "smallint",
    "int",
    "bigint",
    "float",
    "double",
    "string",
    "binary",
    "timestamp",
    "array",
    "map",
    "struct",
    "uniontype",
    "decimal",
    "date",
    "varchar",
    "char",
    "timestamp_instant",
];

/// Converts an ORC file of `table`, as [`super::OrcFile`] writes it, into the JSON-lines
/// bytes [`crate::sink::Row::write_jsonl`] writes for the same rows in the same order, and
/// the row count. Fails on a file that is not ORC, has other columns, or holds a value the
/// pipeline could not have written.
pub fn to_jsonl(table: Table, file: &[u8]) -> Result<(Vec<u8>, u64), OrcError> {
    let read = |problem: String| OrcError::Read { table, problem };
    let malformed = |what: &str| read(format!("its {what} is malformed"));
    if !file.starts_with(MAGIC) || file.len() < MAGIC.len() + 1 {
        return Err(read("it does not start with ORC".into()));
    }
    let ps_len = usize::from(file[file.len() - 1]);
    let ps_start = file.len().checked_sub(1 + ps_len).ok_or_else(|| malformed("postscript"))?;
    let (mut footer_len, mut compression, mut magic) = (0u64, 0u64, None);
    for field in Fields(&file[ps_start..file.len() - 1]) {
        match field.map_err(|()| malformed("postscript"))? {
            (1, Value::Varint(v)) => footer_len = v,
            (2, Value::Varint(v)) => compression = v,
            (8000, Value::Bytes(b)) => magic = Some(b),
            _ => {}
        }
    }
    if magic != Some(MAGIC) {
        return Err(read("its postscript does not end with ORC".into()));
    }
    let inflate = |bytes: &[u8], what: &str| match compression {
        0 => Ok(bytes.to_vec()),
        2 => decompress(bytes).map_err(|e| read(format!("its {what}: {e}"))),
        other => Err(read(format!("its compression {other} is not Snappy"))),
    };
    let footer_start = usize::try_from(footer_len)
        .ok()
        .and_then(|len| ps_start.checked_sub(len))
        .ok_or_else(|| malformed("footer length"))?;
    let footer = inflate(&file[footer_start..ps_start], "footer")?;

    let (mut stripes, mut types) = (Vec::new(), Vec::new());
    for field in Fields(&footer) {
        match field.map_err(|()| malformed("footer"))? {
            (3, Value::Bytes(b)) => {
                stripes.push(StripeInfo::parse(b).ok_or_else(|| malformed("stripe list"))?)
            }
            (4, Value::Bytes(b)) => types.push(TypeInfo::parse(b).ok_or_else(|| malformed("schema"))?),
            _ => {}
        }
    }
    check_schema(table, &types)?;

    let mut out = Vec::new();
    let mut first_row = 0u64;
    for stripe in &stripes {
        let rows = usize::try_from(stripe.rows).map_err(|_| malformed("row count"))?;
        let span = |start: u64, len: u64| {
            let start = usize::try_from(start).ok()?;
            file.get(start..start.checked_add(usize::try_from(len).ok()?)?)
        };
        let footer_at = stripe.offset + stripe.index + stripe.data;
        let stripe_footer = inflate(
            span(footer_at, stripe.footer).ok_or_else(|| malformed("stripe list"))?,
            "stripe footer",
        )?;
        let layout =
            StripeLayout::parse(&stripe_footer, stripe.offset).ok_or_else(|| malformed("stripe footer"))?;
        if !matches!(layout.timezone.as_deref(), None | Some("UTC") | Some("GMT") | Some("Etc/UTC")) {
            return Err(read(format!("its times are in {:?}, not UTC", layout.timezone)));
        }
        let stream = |column: u64, kind: u64| -> Result<Vec<u8>, OrcError> {
            let (start, len) = layout
                .streams
                .iter()
                .find(|(c, k, ..)| (*c, *k) == (column, kind))
                .map(|&(_, _, start, len)| (start, len))
                .ok_or_else(|| read(format!("column {column} has no stream of kind {kind}")))?;
            inflate(span(start, len).ok_or_else(|| malformed("stream list"))?, "data")
        };
        let ints = |column: u64, kind: u64, sign: Sign, count: usize| {
            rle::decode(&stream(column, kind)?, sign, count)
                .map_err(|e| read(format!("column {column}, stream kind {kind}: {e:?}")))
        };
        let mut values = Vec::with_capacity(table.columns().len());
        for (i, column) in table.columns().iter().enumerate() {
            let id = i as u64 + 1;
            let (encoding, dictionary) = layout.encodings.get(i + 1).copied().unwrap_or((0, 0));
            if encoding != 2 && encoding != 3 {
                return Err(read(format!("column {} is not RLE v2 (encoding {encoding})", column.name)));
            }
            values.push(match kind(column) {
                Kind::Int => Values::Ints(ints(id, 1, Sign::Signed, rows)?),
                Kind::Timestamp => {
                    let seconds = ints(id, 1, Sign::Signed, rows)?;
                    let nanos = ints(id, 5, Sign::Unsigned, rows)?;
                    let ms = seconds.iter().zip(&nanos).map(|(&s, &n)| millis(s, n));
                    Values::Ints(ms.collect::<Option<_>>().ok_or_else(|| {
                        read(format!("column {} holds a time that is not whole milliseconds", column.name))
                    })?)
                }
                Kind::Label | Kind::Text if encoding == 3 => {
                    let count = usize::try_from(dictionary).map_err(|_| malformed("dictionary size"))?;
                    let entries = strings(Bytes::from(stream(id, 3)?), &ints(id, 2, Sign::Unsigned, count)?)
                        .ok_or_else(|| malformed("dictionary"))?;
                    let keys = ints(id, 1, Sign::Unsigned, rows)?;
                    let picked = keys.iter().map(|&k| entries.get(usize::try_from(k).ok()?).cloned());
                    Values::Strings(
                        picked.collect::<Option<_>>().ok_or_else(|| malformed("dictionary index"))?,
                    )
                }
                Kind::Label | Kind::Text => Values::Strings(
                    strings(Bytes::from(stream(id, 1)?), &ints(id, 2, Sign::Unsigned, rows)?)
                        .ok_or_else(|| malformed("string lengths"))?,
                ),
            });
        }
        let decoded = Decoded { table, values, first_row, format: "ORC" };
        for r in 0..rows {
            decoded.write_jsonl(r, &mut out)?;
        }
        first_row += rows as u64;
    }
    Ok((out, first_row))
}

/// A TIMESTAMP value as UTC milliseconds; `None` for a fraction finer than a millisecond or
/// a time past i64 milliseconds.
fn millis(seconds: i64, encoded_nanos: i64) -> Option<i64> {
    let zeros = (encoded_nanos & 7) as u32;
    let mut nanos = encoded_nanos >> 3;
    if zeros != 0 {
        nanos = nanos.checked_mul(10i64.checked_pow(zeros + 1)?)?;
    }
    let mut seconds = seconds.checked_add(TIMESTAMP_BASE_S)?;
    if seconds < 0 && nanos > 999_999 {
        seconds -= 1;
    }
    if nanos % 1_000_000 != 0 || !(0..1_000_000_000).contains(&nanos) {
        return None;
    }
    seconds.checked_mul(1000)?.checked_add(nanos / 1_000_000)
}

/// Cuts `data` into strings of the given lengths; `None` when they do not add up.
fn strings(data: Bytes, lengths: &[i64]) -> Option<Vec<Bytes>> {
    let mut start = 0usize;
    let mut out = Vec::with_capacity(lengths.len());
    for &len in lengths {
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        out.push(data.get(start..end).map(|_| data.slice(start..end))?);
        start = end;
    }
    (start == data.len()).then_some(out)
}

struct StripeInfo {
    offset: u64,
    index: u64,
    data: u64,
    footer: u64,
    rows: u64,
}

impl StripeInfo {
    fn parse(bytes: &[u8]) -> Option<Self> {
        let mut s = StripeInfo { offset: 0, index: 0, data: 0, footer: 0, rows: 0 };
        for field in Fields(bytes) {
            match field.ok()? {
                (1, v) => s.offset = v.uint()?,
                (2, v) => s.index = v.uint()?,
                (3, v) => s.data = v.uint()?,
                (4, v) => s.footer = v.uint()?,
                (5, v) => s.rows = v.uint()?,
                _ => {}
            }
        }
        Some(s)
    }
}

struct TypeInfo {
    kind: u64,
    names: Vec<String>,
    subtypes: Vec<u64>,
}

impl TypeInfo {
    fn parse(bytes: &[u8]) -> Option<Self> {
        let mut t = TypeInfo { kind: 0, names: Vec::new(), subtypes: Vec::new() };
        for field in Fields(bytes) {
            match field.ok()? {
                (1, v) => t.kind = v.uint()?,
                (2, Value::Bytes(b)) => t.subtypes.extend(unpack(b).ok()?),
                (2, Value::Varint(v)) => t.subtypes.push(v),
                (3, v) => t.names.push(String::from_utf8_lossy(v.bytes()?).into_owned()),
                _ => {}
            }
        }
        Some(t)
    }

    fn name(&self) -> &'static str {
        usize::try_from(self.kind).ok().and_then(|k| TYPE_NAMES.get(k)).copied().unwrap_or("unknown")
    }
}

/// Where each stream of a stripe is, and how its columns are encoded.
struct StripeLayout {
    /// Column, kind, start in the file, length.
    streams: Vec<(u64, u64, u64, u64)>,
    /// Encoding kind and dictionary size, by column.
    encodings: Vec<(u64, u64)>,
    timezone: Option<String>,
}

impl StripeLayout {
    fn parse(footer: &[u8], offset: u64) -> Option<Self> {
        let mut layout = StripeLayout { streams: Vec::new(), encodings: Vec::new(), timezone: None };
        let mut at = offset;
        for field in Fields(footer) {
            match field.ok()? {
                (1, v) => {
                    let (mut kind, mut column, mut len) = (0, 0, 0);
                    for f in Fields(v.bytes()?) {
                        match f.ok()? {
                            (1, v) => kind = v.uint()?,
                            (2, v) => column = v.uint()?,
                            (3, v) => len = v.uint()?,
                            _ => {}
                        }
                    }
                    // Streams lie one after another in the order the footer lists them.
                    layout.streams.push((column, kind, at, len));
                    at = at.checked_add(len)?;
                }
                (2, v) => {
                    let (mut kind, mut size) = (0, 0);
                    for f in Fields(v.bytes()?) {
                        match f.ok()? {
                            (1, v) => kind = v.uint()?,
                            (2, v) => size = v.uint()?,
                            _ => {}
                        }
                    }
                    layout.encodings.push((kind, size));
                }
                (3, v) => layout.timezone = Some(String::from_utf8_lossy(v.bytes()?).into_owned()),
                _ => {}
            }
        }
        Some(layout)
    }
}

fn check_schema(table: Table, types: &[TypeInfo]) -> Result<(), OrcError> {
    let expected: Vec<(&str, &str)> = table
        .columns()
        .iter()
        .map(|c| {
            let ty = match kind(c) {
                Kind::Int => "bigint",
                Kind::Timestamp => "timestamp",
                Kind::Label | Kind::Text => "string",
            };
            (c.name, ty)
        })
        .collect();
    let found: Vec<(String, &str)> = match types.first() {
        Some(row) if row.kind == 12 => row
            .names
            .iter()
            .zip(&row.subtypes)
            .map(|(name, &t)| {
                let ty = usize::try_from(t).ok().and_then(|t| types.get(t)).map_or("unknown", TypeInfo::name);
                (name.clone(), ty)
            })
            .collect(),
        _ => Vec::new(),
    };
    let same =
        found.len() == expected.len() && found.iter().zip(&expected).all(|(f, e)| (f.0.as_str(), f.1) == *e);
    if same {
        return Ok(());
    }
    let describe =
        |cols: Vec<(&str, &str)>| cols.iter().map(|(n, t)| format!("{n} {t}")).collect::<Vec<_>>().join(", ");
    Err(ColumnsError::Schema {
        table,
        found: describe(found.iter().map(|(n, t)| (n.as_str(), *t)).collect()),
        expected: describe(expected),
    }
    .into())
}
