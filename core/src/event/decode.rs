//! Decoding one input record (a Kafka value or a line of a file) into a [`PageView`].
//!
//! Every way a record can be wrong has its own [`DecodeError`] variant, whose
//! [`DecodeError::reason`] labels the dead letter and the metric. Unknown fields are
//! ignored; when a key repeats, the last value wins (as in serde_json's maps).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use thiserror::Error;

use super::PageView;
use crate::time::{check_range, format_timestamp, parse_timestamp, TimestampError};

/// Why a record is a dead letter rather than a page view.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DecodeError {
    /// The bytes are not UTF-8, so they cannot be JSON.
    #[error("invalid UTF-8 at byte {valid_up_to}")]
    InvalidUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// Not parseable as JSON.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// Valid JSON, but not an object.
    #[error("expected a JSON object, found {0}")]
    NotAnObject(&'static str),
    /// A required field is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A required field has the wrong JSON type.
    #[error("field `{field}` must be {expected}, found {found}")]
    WrongType {
        /// The field's name.
        field: &'static str,
        /// What the field must hold.
        expected: &'static str,
        /// What it held.
        found: String,
    },
    /// `timestamp` is a string or number that is not a valid instant.
    #[error("bad timestamp {value}: {reason}")]
    BadTimestamp {
        /// The offending value as it appeared in the record.
        value: String,
        /// What is wrong with it.
        reason: TimestampError,
    },
    /// The event time is more than `--max-future` ahead of the wall clock (checked after
    /// decoding, by [`super::EventTimeBounds`]).
    #[error(
        "timestamp {} is more than {} ahead of this machine's clock ({}); raise --max-future if such events should count",
        format_timestamp(*timestamp),
        humantime::format_duration(std::time::Duration::from_millis(*max_future_ms as u64)),
        format_timestamp(*wall)
    )]
    FutureTimestamp {
        /// The event time, UTC ms.
        timestamp: i64,
        /// The wall clock when the record was processed, UTC ms.
        wall: i64,
        /// The configured bound.
        max_future_ms: i64,
    },
    /// The record exceeds `--max-record-bytes`.
    #[error("record of {size} bytes exceeds the {limit}-byte limit")]
    Oversized {
        /// The record's size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
}

impl DecodeError {
    /// A short, stable label for the dead letter's `reason` column and the metric label.
    pub fn reason(&self) -> Reason {
        match self {
            DecodeError::InvalidUtf8 { .. } => Reason::InvalidUtf8,
            DecodeError::InvalidJson(_) => Reason::InvalidJson,
            DecodeError::NotAnObject(_) => Reason::NotAnObject,
            DecodeError::MissingField(_) => Reason::MissingField,
            DecodeError::WrongType { .. } => Reason::WrongType,
            DecodeError::BadTimestamp { .. } => Reason::BadTimestamp,
            DecodeError::Oversized { .. } => Reason::Oversized,
            DecodeError::FutureTimestamp { .. } => Reason::FutureTimestamp,
        }
    }
}

/// The dead-letter reasons, in a fixed order so counters can live in an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// See [`DecodeError::InvalidUtf8`].
    InvalidUtf8,
    /// See [`DecodeError::InvalidJson`].
    InvalidJson,
    /// See [`DecodeError::NotAnObject`].
    NotAnObject,
    /// See [`DecodeError::MissingField`].
    MissingField,
    /// See [`DecodeError::WrongType`].
    WrongType,
    /// See [`DecodeError::BadTimestamp`].
    BadTimestamp,
    /// See [`DecodeError::Oversized`].
    Oversized,
    /// See [`DecodeError::FutureTimestamp`].
    FutureTimestamp,
}

impl Reason {
    /// Every reason, in counter order.
    pub const ALL: [Reason; 8] = [
        Reason::InvalidUtf8,
        Reason::InvalidJson,
        Reason::NotAnObject,
        Reason::MissingField,
        Reason::WrongType,
        Reason::BadTimestamp,
        Reason::Oversized,
        Reason::FutureTimestamp,
    ];

    /// The label written to tables and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::InvalidJson => "invalid_json",
            Reason::NotAnObject => "not_an_object",
            Reason::MissingField => "missing_field",
            Reason::WrongType => "wrong_type",
            Reason::BadTimestamp => "bad_timestamp",
            Reason::Oversized => "oversized",
            Reason::FutureTimestamp => "future_timestamp",
        }
    }
}

/// The UTF-8 byte order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Decodes one record. `max_bytes` is the oversize limit. A leading UTF-8 byte order mark
/// is skipped, as Jackson (and so Flink's JSON format) skips it: editors on Windows start a
/// saved file with one, which makes it the first line's.
pub fn decode(bytes: &[u8], max_bytes: usize) -> Result<PageView<'_>, DecodeError> {
    if bytes.len() > max_bytes {
        return Err(DecodeError::Oversized { size: bytes.len(), limit: max_bytes });
    }
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    let text =
        std::str::from_utf8(bytes).map_err(|e| DecodeError::InvalidUtf8 { valid_up_to: e.valid_up_to() })?;
    if let Some(fields) = parse_flat(text) {
        return fields.validate();
    }
    decode_general(text)
}

/// The general path: serde_json, for any shape and for precise error messages.
fn decode_general(text: &str) -> Result<PageView<'_>, DecodeError> {
    let fields = match serde_json::from_str::<Fields<'_>>(text) {
        Ok(fields) => fields,
        Err(e) => return Err(classify_parse_error(text, e)),
    };
    fields.validate()
}

/// The fast path for the shape nearly every record has: one flat object whose values are
/// strings without escapes or integers. Anything else (escapes, floats, booleans, nesting,
/// any syntax error) returns `None` and goes to [`decode_general`], so both paths give the
/// same result for every input; a differential test holds them to that.
fn parse_flat(text: &str) -> Option<Fields<'_>> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    let mut out = Fields::default();
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if b.get(i) != Some(&b'"') {
                return None;
            }
            let (key, next) = scan_str(text, i + 1)?;
            i = skip_ws(b, next);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = skip_ws(b, i + 1);
            let (value, next) = match *b.get(i)? {
                b'"' => {
                    let (s, next) = scan_str(text, i + 1)?;
                    (Value::Str(Cow::Borrowed(s)), next)
                }
                b'-' | b'0'..=b'9' => scan_int(b, i)?,
                _ => return None,
            };
            match key {
                "user_id" => out.user_id = Some(value),
                "postcode" => out.postcode = Some(value),
                "webpage" => out.webpage = Some(value),
                "timestamp" => out.timestamp = Some(value),
                _ => {}
            }
            i = skip_ws(b, next);
            match *b.get(i)? {
                b',' => i = skip_ws(b, i + 1),
                b'}' => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_ws(b, i) == b.len()).then_some(out)
}

#[inline]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// A string body from `start` to its closing quote; `None` on an escape or control byte.
#[inline]
fn scan_str(text: &str, start: usize) -> Option<(&str, usize)> {
    let b = text.as_bytes();
    let mut j = start;
    loop {
        match *b.get(j)? {
            b'"' => return Some((text.get(start..j)?, j + 1)),
            b'\\' | 0..=0x1f => return None,
            _ => j += 1,
        }
    }
}

/// A JSON integer that fits in i64; `None` for floats, exponents, leading zeros, `-0`,
/// and overflow (the general path classifies those).
#[inline]
fn scan_int(b: &[u8], start: usize) -> Option<(Value<'static>, usize)> {
    let neg = b[start] == b'-';
    let digits = start + usize::from(neg);
    let mut j = digits;
    let mut v: i64 = 0;
    while let Some(&c) = b.get(j) {
        if !c.is_ascii_digit() {
            break;
        }
        v = v.checked_mul(10)?.checked_add(i64::from(c - b'0'))?;
        j += 1;
    }
    let n = j - digits;
    if n == 0 || (b[digits] == b'0' && (n > 1 || neg)) {
        return None;
    }
    if let Some(b'.' | b'e' | b'E') = b.get(j) {
        return None;
    }
    Some((Value::Int(if neg { -v } else { v }), j))
}

/// A scalar as it appeared in the record, before type checking.
enum Value<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    /// A number that is not an i64: a float, or an integer beyond i64.
    OtherNumber(String),
    Other(&'static str),
}

impl Value<'_> {
    fn kind(&self) -> String {
        match self {
            Value::Str(s) => format!("string {:?}", truncate(s)),
            Value::Int(i) => format!("number {i}"),
            Value::OtherNumber(n) => format!("number {n}"),
            Value::Other(kind) => (*kind).to_string(),
        }
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl<'de> Deserialize<'de> for Value<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Value<'de>, E> {
                Ok(Value::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Value<'de>, E> {
                Ok(Value::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Value<'de>, E> {
                Ok(Value::Str(Cow::Owned(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Value<'de>, E> {
                Ok(Value::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Value<'de>, E> {
                Ok(i64::try_from(v).map_or_else(|_| Value::OtherNumber(v.to_string()), Value::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Value<'de>, E> {
                Ok(Value::OtherNumber(v.to_string()))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Value<'de>, E> {
                Ok(Value::Other("a boolean"))
            }
            fn visit_unit<E>(self) -> Result<Value<'de>, E> {
                Ok(Value::Other("null"))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut a: A) -> Result<Value<'de>, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Value::Other("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Value<'de>, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Value::Other("an object"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A field name, matched without allocating (serde's `Cow<str>` always copies keys).
enum Key {
    UserId,
    Postcode,
    Webpage,
    Timestamp,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "user_id" => Key::UserId,
                    "postcode" => Key::Postcode,
                    "webpage" => Key::Webpage,
                    "timestamp" => Key::Timestamp,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// The four fields of interest, untyped until [`Fields::validate`].
#[derive(Default)]
struct Fields<'a> {
    user_id: Option<Value<'a>>,
    postcode: Option<Value<'a>>,
    webpage: Option<Value<'a>>,
    timestamp: Option<Value<'a>>,
}

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut out = Fields::default();
                while let Some(key) = map.next_key::<Key>()? {
                    let slot = match key {
                        Key::UserId => &mut out.user_id,
                        Key::Postcode => &mut out.postcode,
                        Key::Webpage => &mut out.webpage,
                        Key::Timestamp => &mut out.timestamp,
                        Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(map.next_value()?);
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> Fields<'a> {
    fn validate(self) -> Result<PageView<'a>, DecodeError> {
        let user_id = match self.user_id.ok_or(DecodeError::MissingField("user_id"))? {
            Value::Int(i) => i,
            other => return Err(wrong_type("user_id", "an integer", &other)),
        };
        let postcode = string_field("postcode", self.postcode)?;
        let webpage = string_field("webpage", self.webpage)?;
        let timestamp = match self.timestamp.ok_or(DecodeError::MissingField("timestamp"))? {
            Value::Str(s) => parse_timestamp(&s).map_err(|reason| DecodeError::BadTimestamp {
                value: format!("{:?}", truncate(&s)),
                reason,
            })?,
            Value::Int(ms) => check_range(ms)
                .map_err(|reason| DecodeError::BadTimestamp { value: ms.to_string(), reason })?,
            Value::OtherNumber(n) => {
                return Err(DecodeError::BadTimestamp { value: n, reason: TimestampError::NotInteger })
            }
            other => return Err(wrong_type("timestamp", "a string or epoch milliseconds", &other)),
        };
        Ok(PageView { user_id, postcode, webpage, timestamp })
    }
}

fn string_field<'a>(name: &'static str, value: Option<Value<'a>>) -> Result<Cow<'a, str>, DecodeError> {
    match value.ok_or(DecodeError::MissingField(name))? {
        Value::Str(s) => Ok(s),
        other => Err(wrong_type(name, "a string", &other)),
    }
}

fn wrong_type(field: &'static str, expected: &'static str, found: &Value<'_>) -> DecodeError {
    DecodeError::WrongType { field, expected, found: found.kind() }
}

/// serde_json reports "not an object" as a type error; tell it apart from broken JSON by
/// checking whether the text is valid JSON at all.
fn classify_parse_error(text: &str, err: serde_json::Error) -> DecodeError {
    if err.is_data() {
        let kind = match text.trim_start().as_bytes().first() {
            Some(b'[') => "an array",
            Some(b'"') => "a string",
            Some(b't' | b'f') => "a boolean",
            Some(b'n') => "null",
            _ => "a number",
        };
        if serde_json::from_str::<IgnoredAny>(text).is_ok() {
            return DecodeError::NotAnObject(kind);
        }
    }
    DecodeError::InvalidJson(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1 << 20;

    #[test]
    fn decodes_the_original_record_and_ignores_unknown_fields() {
        let rec = br#"{"user_id": 1234, "postcode": "SW1A 1AA", "webpage": "www.website.com/index.html", "timestamp": "2020-01-01 00:00:05.123", "extra": {"nested": [1, 2]}}"#;
        let pv = decode(rec, MAX).unwrap();
        assert_eq!(pv.user_id, 1234);
        assert_eq!(pv.postcode, "SW1A 1AA");
        assert_eq!(pv.webpage, "www.website.com/index.html");
        assert_eq!(pv.timestamp, 1_577_836_805_123);
        assert!(matches!(pv.postcode, Cow::Borrowed(_)), "plain strings must not allocate");
    }

    #[test]
    fn a_leading_byte_order_mark_is_skipped_and_one_elsewhere_is_not() {
        let rec = "{\"user_id\": 1, \"postcode\": \"A\", \"webpage\": \"w\", \"timestamp\": 0}";
        assert_eq!(decode(format!("\u{feff}{rec}").as_bytes(), MAX).unwrap().user_id, 1);
        let inside = format!("{{\u{feff}{}", &rec[1..]);
        assert_eq!(decode(inside.as_bytes(), MAX).unwrap_err().reason(), Reason::InvalidJson);
        let twice = format!("\u{feff}\u{feff}{rec}");
        assert_eq!(decode(twice.as_bytes(), MAX).unwrap_err().reason(), Reason::InvalidJson);
    }

    #[test]
    fn accepts_epoch_millis_iso_and_escaped_strings() {
        let pv =
            decode(br#"{"timestamp":1577836805123,"user_id":1,"postcode":"A\"B","webpage":"p\u00e9"}"#, MAX)
                .unwrap();
        assert_eq!(pv.timestamp, 1_577_836_805_123);
        assert_eq!(pv.postcode, "A\"B");
        assert_eq!(pv.webpage, "p\u{e9}");
        let iso = br#"{"timestamp":"2020-01-01T00:00:05.123Z","user_id":1,"postcode":"x","webpage":"y"}"#;
        assert_eq!(decode(iso, MAX).unwrap().timestamp, 1_577_836_805_123);
    }

    #[test]
    fn each_malformation_has_its_own_reason() {
        let ok = r#""postcode":"SW1A 1AA","webpage":"w","timestamp":"2020-01-01 00:00:05""#;
        let cases: Vec<(Vec<u8>, Reason)> = vec![
            (b"{\"user_id\":1,\xff}".to_vec(), Reason::InvalidUtf8),
            (b"{\"user_id\":1,".to_vec(), Reason::InvalidJson),
            (b"not json".to_vec(), Reason::InvalidJson),
            (b"".to_vec(), Reason::InvalidJson),
            (b"[1,2,3]".to_vec(), Reason::NotAnObject),
            (b"\"a string\"".to_vec(), Reason::NotAnObject),
            (b"42".to_vec(), Reason::NotAnObject),
            (b"null".to_vec(), Reason::NotAnObject),
            (format!("{{{ok}}}").into_bytes(), Reason::MissingField),
            (format!("{{\"user_id\":\"7\",{ok}}}").into_bytes(), Reason::WrongType),
            (format!("{{\"user_id\":1.5,{ok}}}").into_bytes(), Reason::WrongType),
            (format!("{{\"user_id\":null,{ok}}}").into_bytes(), Reason::WrongType),
            (br#"{"user_id":1,"postcode":7,"webpage":"w","timestamp":0}"#.to_vec(), Reason::WrongType),
            (
                br#"{"user_id":1,"postcode":"p","webpage":"w","timestamp":"2020-02-30 00:00:00"}"#.to_vec(),
                Reason::BadTimestamp,
            ),
            (br#"{"user_id":1,"postcode":"p","webpage":"w","timestamp":1.5}"#.to_vec(), Reason::BadTimestamp),
            (
                br#"{"user_id":1,"postcode":"p","webpage":"w","timestamp":99999999999999999}"#.to_vec(),
                Reason::BadTimestamp,
            ),
            (br#"{"user_id":1,"postcode":"p","webpage":"w","timestamp":true}"#.to_vec(), Reason::WrongType),
            (vec![b' '; MAX + 1], Reason::Oversized),
        ];
        for (bytes, want) in cases {
            let got = decode(&bytes, MAX).expect_err(&String::from_utf8_lossy(&bytes));
            assert_eq!(got.reason(), want, "{got} for {:?}", String::from_utf8_lossy(&bytes));
        }
    }

    /// A record shaped as the generator writes them (the pipeline's `GeneratorConfig`): the
    /// four fields in its order, a timestamp string, varied by `seq`.
    fn generated(seq: u64) -> Vec<u8> {
        const POSTCODES: [&str; 3] = ["SW1A 1AA", "EC1A 1BB", "W1J 7NT"];
        const PAGES: [&str; 2] = ["www.website.com/index.html", "www.website.com/faq.html"];
        let ts = format_timestamp(1_577_836_800_000 + (seq as i64) * 1_009 - (seq as i64 % 7) * 331);
        format!(
            "{{\"user_id\":{},\"postcode\":\"{}\",\"webpage\":\"{}\",\"timestamp\":\"{ts}\"}}",
            seq.wrapping_mul(2_654_435_761) % 10_000,
            POSTCODES[seq as usize % POSTCODES.len()],
            PAGES[seq as usize % PAGES.len()],
        )
        .into_bytes()
    }

    /// The fast path must agree with serde_json on every input: generated records and
    /// thousands of byte-level mutations of them (escapes, floats, truncations, junk).
    #[test]
    fn the_fast_path_agrees_with_the_general_path() {
        let inserts: [&[u8]; 12] =
            [b"\\", b"\"", b"1.5", b"e3", b"-", b"0", b"{}", b"[1]", b" ", b"\\u0041", b"null", b","];
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let mut fast_hits = 0;
        for seq in 0..20_000u64 {
            let mut rec = generated(seq);
            if seq % 4 != 0 {
                let at = next(rec.len());
                match next(3) {
                    0 => rec.truncate(at),
                    1 => {
                        let ins = inserts[next(inserts.len())];
                        rec.splice(at..at, ins.iter().copied());
                    }
                    _ => rec[at] = b" 0a\"}:-9"[next(8)],
                }
            }
            let Ok(text) = std::str::from_utf8(&rec) else { continue };
            let general = decode_general(text);
            if let Some(fields) = parse_flat(text) {
                fast_hits += 1;
                assert_eq!(fields.validate(), general, "{text}");
            }
        }
        assert!(fast_hits > 5_000, "the fast path must cover the common shape ({fast_hits})");
    }

    #[test]
    fn messages_name_the_field_and_the_value() {
        let e = decode(br#"{"user_id":"7","postcode":"p","webpage":"w","timestamp":0}"#, MAX).unwrap_err();
        assert_eq!(e.to_string(), "field `user_id` must be an integer, found string \"7\"");
        let e = decode(br#"{"user_id":7,"postcode":"p","timestamp":0}"#, MAX).unwrap_err();
        assert_eq!(e.to_string(), "missing field `webpage`");
    }
}
