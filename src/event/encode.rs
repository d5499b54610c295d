//! Encoding events back to JSON: the building blocks every JSON-lines row is made of.
//!
//! Hand-laid rather than serde-derived because it runs once per record per table: strings go
//! through serde_json's escaper, numbers through `itoa`, timestamps through the cached date.

use super::PageView;
use pageviews_core::time::write_timestamp;

/// Appends `s` as a JSON string literal, escaping only what JSON requires (serde_json's
/// escaper: a string with nothing to escape is copied in one go).
#[inline]
pub(crate) fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(out, s);
}

/// Appends `"user_id":…,"postcode":…,"timestamp":…,"webpage":…` without braces, so the raw
/// and the late table share the same field encoding.
pub(crate) fn write_view_fields(out: &mut Vec<u8>, pv: &PageView<'_>) {
    out.extend_from_slice(b"\"user_id\":");
    out.extend_from_slice(itoa::Buffer::new().format(pv.user_id).as_bytes());
    out.extend_from_slice(b",\"postcode\":");
    write_json_str(out, &pv.postcode);
    out.extend_from_slice(b",\"timestamp\":\"");
    write_timestamp(out, pv.timestamp);
    out.extend_from_slice(b"\",\"webpage\":");
    write_json_str(out, &pv.webpage);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::decode;

    #[test]
    fn escapes_round_trip_through_a_json_parser() {
        for s in ["plain", "quote\"back\\slash", "tab\tnl\ncr\r", "\u{1}\u{1f}", "é✓🙂", ""] {
            let mut out = Vec::new();
            write_json_str(&mut out, s);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn a_written_view_decodes_to_the_same_view() {
        let pv = PageView {
            user_id: -3,
            postcode: "SW1A \"1AA\"".into(),
            webpage: "www.website.com/index.html".into(),
            timestamp: 1_577_836_805_123,
        };
        let mut out = b"{".to_vec();
        write_view_fields(&mut out, &pv);
        out.push(b'}');
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"user_id":-3,"postcode":"SW1A \"1AA\"","timestamp":"2020-01-01 00:00:05.123","webpage":"www.website.com/index.html"}"#
        );
        assert_eq!(decode(&out, 1 << 20).unwrap(), pv);
    }
}
