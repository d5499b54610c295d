//! The page-view event: decoding input records and encoding table rows.
//!
//! Sits first in the flow (`source -> decode -> event time -> writers`). A decoded
//! [`PageView`] borrows its strings from the input buffer, so the hot path allocates
//! nothing per record; encoding appends JSON lines to a caller's buffer.

mod decode;
mod encode;
pub mod timestamp;

pub use decode::{decode, DecodeError, Reason};
pub use encode::{write_json_str, write_view_fields};

use std::borrow::Cow;

/// One valid page view. Strings borrow from the record unless JSON escapes forced a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageView<'a> {
    /// Who viewed the page.
    pub user_id: i64,
    /// Where they were (a UK postcode in the original job; any string is accepted).
    pub postcode: Cow<'a, str>,
    /// Which page.
    pub webpage: Cow<'a, str>,
    /// Event time, UTC milliseconds since the epoch.
    pub timestamp: i64,
}
