//! The page-view event as the pipeline handles it: decoding and the event-time bounds are
//! `pageviews_core::event`'s (the SQL client decodes the Kafka topic with the same code);
//! encoding table rows is the pipeline's own.
//!
//! Sits first in the flow (`source -> decode -> event time -> writers`); encoding appends
//! JSON lines to a caller's buffer.

mod encode;

pub(crate) use encode::{write_json_str, write_view_fields};
pub use pageviews_core::event::*;
