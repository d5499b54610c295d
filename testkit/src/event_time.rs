//! The event-time reference: which events are late and what every window counts, computed
//! from the records alone, with nothing of the pipeline but its decoder.
//!
//! The rule it models (ARCHITECTURE.md §4): an event is late when its window's last
//! millisecond is at or below its own source partition's watermark — the highest event time
//! that partition delivered before it, minus the watermark delay. Every other event is
//! counted in its window, and the end of bounded input emits every window.
//!
//! The same rule over one stream holding every record in production order is the
//! *single-stream reference*: what one ordered reader would decide. A partition holds a
//! subsequence of that stream, so its highest event time before any event is at most the
//! stream's: an event late in its partition is late in the single stream too. The
//! per-partition count is therefore at most the single-stream one, and equal to it (zero)
//! when no event is later than the delay within the stream. It is also the most a Flink job
//! with per-partition watermarks can mark late: Flink judges an event against the minimum
//! over all partitions' watermarks, which is never above the event's own partition's.

use std::collections::BTreeMap;
use std::path::Path;

use pageviews::event::decode;
use pageviews_core::time::format_timestamp;

/// The windows and the watermark delay.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub window_ms: i64,
    pub delay_ms: i64,
}

impl Default for Rules {
    /// The pipeline's defaults: 1-minute windows, a 5 s watermark delay.
    fn default() -> Self {
        Rules { window_ms: 60_000, delay_ms: 5_000 }
    }
}

/// What the late and aggregate tables hold, as sorted lines that compare whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// `timestamp|postcode|user_id|webpage|watermark` per late row.
    pub late: Vec<String>,
    /// `window end|postcode|views` per aggregate row.
    pub aggregates: Vec<String>,
}

impl Outcome {
    /// Views summed over every window.
    pub fn views(&self) -> u64 {
        self.aggregates
            .iter()
            .map(|a| a.rsplit('|').next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0))
            .sum()
    }

    /// The first lines where `self` and `other` differ, for a failure message.
    pub fn diff(&self, other: &Outcome) -> String {
        let side = |name: &str, a: &[String], b: &[String]| {
            let only_a: Vec<_> = a.iter().filter(|x| b.binary_search(x).is_err()).take(5).collect();
            let only_b: Vec<_> = b.iter().filter(|x| a.binary_search(x).is_err()).take(5).collect();
            format!("{name}: {} vs {} rows; only here {only_a:?}; only there {only_b:?}\n", a.len(), b.len())
        };
        side("late", &self.late, &other.late) + &side("aggregates", &self.aggregates, &other.aggregates)
    }
}

/// The rule applied to each partition's records, in order. Records that do not decode are
/// dead letters and take no part.
pub fn per_partition<'a>(partitions: impl IntoIterator<Item = &'a [Vec<u8>]>, rules: Rules) -> Outcome {
    let mut late = Vec::new();
    let mut counts: BTreeMap<(i64, String), u64> = BTreeMap::new();
    for records in partitions {
        let mut newest: Option<i64> = None;
        for record in records {
            let Ok(pv) = decode(record, 1 << 20) else { continue };
            let end = pv.timestamp.div_euclid(rules.window_ms) * rules.window_ms + rules.window_ms;
            match newest.map(|m| m - rules.delay_ms) {
                Some(watermark) if end - 1 <= watermark => late.push(format!(
                    "{}|{}|{}|{}|{}",
                    format_timestamp(pv.timestamp),
                    pv.postcode,
                    pv.user_id,
                    pv.webpage,
                    format_timestamp(watermark)
                )),
                _ => *counts.entry((end, pv.postcode.to_string())).or_default() += 1,
            }
            newest = newest.max(Some(pv.timestamp));
        }
    }
    late.sort();
    let mut aggregates: Vec<String> = counts
        .into_iter()
        .map(|((end, postcode), n)| format!("{}|{postcode}|{n}", format_timestamp(end)))
        .collect();
    aggregates.sort();
    Outcome { late, aggregates }
}

/// The single-stream reference: every record in one partition, in production order.
pub fn single_stream(records: &[Vec<u8>], rules: Rules) -> Outcome {
    per_partition([records], rules)
}

/// What the late_page_views and page_view_aggregates tables under `root` hold.
pub fn outcome_of(root: &Path) -> Outcome {
    let text = |v: &serde_json::Value, field: &str| match &v[field] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut late: Vec<String> = crate::rows(root, "late_page_views")
        .iter()
        .map(|r| {
            let v = &r.value;
            ["timestamp", "postcode", "user_id", "webpage", "watermark"].map(|f| text(v, f)).join("|")
        })
        .collect();
    late.sort();
    let mut aggregates: Vec<String> = crate::rows(root, "page_view_aggregates")
        .iter()
        .map(|r| ["window", "postcode", "views"].map(|f| text(&r.value, f)).join("|"))
        .collect();
    aggregates.sort();
    Outcome { late, aggregates }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ts: &str, postcode: &str) -> Vec<u8> {
        crate::view(1, postcode, ts).into_bytes()
    }

    #[test]
    fn an_event_is_late_only_behind_its_own_partitions_watermark() {
        let rules = Rules { window_ms: 60_000, delay_ms: 5_000 };
        let a = vec![at("2020-01-01 00:01:10", "A"), at("2020-01-01 00:00:50", "A")];
        let b = vec![at("2020-01-01 00:00:30", "A")];
        let got = per_partition([a.as_slice(), b.as_slice()], rules);
        assert_eq!(got.late.len(), 1, "00:00:50 is behind 00:01:05 in its own partition");
        assert!(got.late[0].starts_with("2020-01-01 00:00:50.000|A|"), "{:?}", got.late);
        assert!(got.late[0].ends_with("|2020-01-01 00:01:05.000"));
        assert_eq!(
            got.aggregates,
            vec!["2020-01-01 00:01:00.000|A|1".to_string(), "2020-01-01 00:02:00.000|A|1".to_string()],
            "00:00:30 in another partition is on time"
        );
        let one = single_stream(&[a, b].concat(), rules);
        assert_eq!(one.late.len(), 2, "one reader of the whole stream marks both");
    }
}
