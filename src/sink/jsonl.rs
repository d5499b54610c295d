//! JSON-lines rows for the four tables. Timestamps use `yyyy-MM-dd HH:mm:ss.SSS` (UTC),
//! the form Flink's JSON format reads back.

use base64::Engine;

use pageviews_core::commit::WindowCount;
use pageviews_core::time::{write_timestamp, MAX_MS, MIN_MS};

use crate::event::{write_json_str, write_view_fields, DecodeError, PageView};

/// A `page_views` row.
#[inline]
pub fn write_view(out: &mut Vec<u8>, pv: &PageView<'_>) {
    out.push(b'{');
    write_view_fields(out, pv);
    out.extend_from_slice(b"}\n");
}

/// A `late_page_views` row: the event plus the watermark it arrived behind.
pub(crate) fn write_late(out: &mut Vec<u8>, pv: &PageView<'_>, watermark: i64) {
    out.push(b'{');
    write_view_fields(out, pv);
    out.extend_from_slice(b",\"watermark\":\"");
    write_timestamp(out, watermark.clamp(MIN_MS, MAX_MS));
    out.extend_from_slice(b"\"}\n");
}

/// A `page_view_aggregates` row.
pub(crate) fn write_aggregate(out: &mut Vec<u8>, w: &WindowCount, size_ms: i64) {
    out.extend_from_slice(b"{\"postcode\":");
    write_json_str(out, &w.postcode);
    out.extend_from_slice(b",\"window_start\":\"");
    write_timestamp(out, w.end - size_ms);
    out.extend_from_slice(b"\",\"window\":\"");
    write_timestamp(out, w.end);
    out.extend_from_slice(b"\",\"views\":");
    out.extend_from_slice(itoa::Buffer::new().format(w.views).as_bytes());
    out.extend_from_slice(b"}\n");
}

/// Where a dead letter came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// Topic, file path, or `generator`.
    pub(crate) source: &'a str,
    /// Kafka partition or file index.
    pub(crate) partition: u32,
    /// Kafka offset, line number, or sequence number.
    pub(crate) offset: u64,
}

/// A `dead_letters` row. The payload is kept verbatim when it is UTF-8 and in base64
/// otherwise (`payload_encoding` says which), so nothing is lost.
pub(crate) fn write_dead_letter(
    out: &mut Vec<u8>,
    payload: &[u8],
    error: &DecodeError,
    origin: Origin<'_>,
    received_at_ms: i64,
) {
    let base64;
    let (payload, payload_encoding) = match std::str::from_utf8(payload) {
        Ok(text) => (text, "utf8"),
        Err(_) => {
            base64 = base64::engine::general_purpose::STANDARD.encode(payload);
            (base64.as_str(), "base64")
        }
    };
    let text = error.to_string();
    let fields = DeadLetterFields {
        payload,
        payload_encoding,
        reason: error.reason().as_str(),
        error: &text,
        source: origin.source,
        partition: i64::from(origin.partition),
        offset: origin.offset,
        received_at_ms,
    };
    write_dead_letter_fields(out, &fields);
}

/// A `dead_letters` row's fields as text, the way both formats store them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeadLetterFields<'a> {
    /// The payload, verbatim or base64.
    pub(crate) payload: &'a str,
    /// `utf8` or `base64`.
    pub(crate) payload_encoding: &'a str,
    /// The dead-letter reason label.
    pub(crate) reason: &'a str,
    /// The decode error's text.
    pub(crate) error: &'a str,
    /// Topic, file path, or `generator`.
    pub(crate) source: &'a str,
    /// Kafka partition or file index.
    pub(crate) partition: i64,
    /// Kafka offset, line number, or sequence number.
    pub(crate) offset: u64,
    /// When it was read (UTC ms).
    pub(crate) received_at_ms: i64,
}

/// Lays out a `dead_letters` row: the one layout the JSON-lines writer and the Parquet
/// reader both produce.
pub(crate) fn write_dead_letter_fields(out: &mut Vec<u8>, f: &DeadLetterFields<'_>) {
    out.extend_from_slice(b"{\"payload\":");
    write_json_str(out, f.payload);
    out.extend_from_slice(b",\"payload_encoding\":");
    write_json_str(out, f.payload_encoding);
    out.extend_from_slice(b",\"reason\":");
    write_json_str(out, f.reason);
    out.extend_from_slice(b",\"error\":");
    write_json_str(out, f.error);
    out.extend_from_slice(b",\"source\":");
    write_json_str(out, f.source);
    out.extend_from_slice(b",\"partition\":");
    out.extend_from_slice(itoa::Buffer::new().format(f.partition).as_bytes());
    out.extend_from_slice(b",\"offset\":");
    out.extend_from_slice(itoa::Buffer::new().format(f.offset).as_bytes());
    out.extend_from_slice(b",\"received_at\":\"");
    write_timestamp(out, f.received_at_ms);
    out.extend_from_slice(b"\"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::decode;

    #[test]
    fn a_binary_payload_survives_as_base64() {
        let payload = b"{\"user_id\":\xff}";
        let err = decode(payload, 100).unwrap_err();
        let mut out = Vec::new();
        let origin = Origin { source: "t", partition: 2, offset: 7 };
        write_dead_letter(&mut out, payload, &err, origin, 0);
        let row: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(row["payload_encoding"], "base64");
        assert_eq!(row["reason"], "invalid_utf8");
        let back =
            base64::engine::general_purpose::STANDARD.decode(row["payload"].as_str().unwrap()).unwrap();
        assert_eq!(back, payload);
        assert_eq!((row["partition"].as_u64(), row["offset"].as_u64()), (Some(2), Some(7)));
    }

    #[test]
    fn an_aggregate_row_names_start_and_end() {
        let mut out = Vec::new();
        let w = WindowCount { end: 1_577_836_860_000, postcode: "SW1A 1AA".into(), views: 3 };
        write_aggregate(&mut out, &w, 60_000);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "{\"postcode\":\"SW1A 1AA\",\"window_start\":\"2020-01-01 00:00:00.000\",\"window\":\"2020-01-01 00:01:00.000\",\"views\":3}\n"
        );
    }
}
