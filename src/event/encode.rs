//! Encoding events back to JSON: the building blocks every JSON-lines row is made of.
//!
//! Hand-written rather than serde-derived because it runs once per record per table: a
//! string with nothing to escape is one `memcpy`, and numbers go through `itoa`.

use super::timestamp::write_timestamp;
use super::PageView;

/// Bytes JSON requires escaped inside a string: controls, `"` and `\\`.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Appends `s` as a JSON string literal, escaping only what JSON requires.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    if !bytes.iter().any(|&b| NEEDS_ESCAPE[usize::from(b)]) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends `"user_id":…,"postcode":…,"timestamp":…,"webpage":…` without braces, so the raw
/// and the late table share the same field encoding.
pub fn write_view_fields(out: &mut Vec<u8>, pv: &PageView<'_>) {
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
