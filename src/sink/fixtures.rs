//! Rows of every table with the values that are hard to store: strings JSON must escape,
//! non-UTF-8 payloads, instants at both ends of the supported range. The columnar formats'
//! tests write them and read them back.

use crate::event::{decode, DecodeError, PageView};
use crate::sink::jsonl::Origin;
use crate::sink::Row;
use pageviews_core::commit::WindowCount;
use pageviews_core::table::Table;
use pageviews_core::time::{MAX_MS, MIN_MS};

pub(crate) fn view(
    user_id: i64,
    postcode: &'static str,
    webpage: &'static str,
    timestamp: i64,
) -> PageView<'static> {
    PageView { user_id, postcode: postcode.into(), webpage: webpage.into(), timestamp }
}

/// Strings JSON must escape, non-ASCII, empty strings, repeats, and instants before 1970
/// and at both ends of the supported range.
pub(crate) fn views() -> Vec<PageView<'static>> {
    vec![
        view(1, "SW1A 1AA", "www.website.com/index.html", 1_577_836_805_123),
        view(-3, "quote\"back\\slash", "tab\tnl\ncr\r\u{1}\u{1f}", -1),
        view(i64::MIN, "é✓🙂", "", MIN_MS),
        view(i64::MAX, "", "/a", MAX_MS),
        view(0, "SW1A 1AA", "www.website.com/index.html", -86_400_001),
        view(7, "quote\"back\\slash", "/a", 0),
        view(8, "EC1A 1BB", "/b", 1),
    ]
}

pub(crate) fn windows() -> Vec<WindowCount> {
    [(1_577_836_860_000, "SW1A 1AA", 3), (-60_000, "é\"✓", 0), (0, "", u64::MAX), (60_000, "SW1A 1AA", 1)]
        .into_iter()
        .map(|(end, postcode, views)| WindowCount { end, postcode: postcode.to_string(), views })
        .collect()
}

/// Records that fail to decode for every kind of reason, one of them not UTF-8.
pub(crate) fn bad_records() -> Vec<(&'static [u8], DecodeError)> {
    let cases: [(&[u8], usize); 6] = [
        (b"{\"user_id\":\xff}", 100),
        (b"not json \"quoted\"\n\\", 100),
        (b"[1,2]", 100),
        (b"{}", 100),
        (b"", 100),
        (b"{\"user_id\":1,\"postcode\":\"x\"}", 4),
    ];
    cases.into_iter().map(|(payload, limit)| (payload, decode(payload, limit).unwrap_err())).collect()
}

pub(crate) fn origins() -> [Origin<'static>; 3] {
    [
        Origin { source: "page_views", partition: 0, offset: 0 },
        Origin { source: "topic \"t\" é", partition: u32::MAX, offset: u64::MAX },
        Origin { source: "/data/in.jsonl", partition: 3, offset: 42 },
    ]
}

pub(crate) fn jsonl(rows: &[Row<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for row in rows {
        row.write_jsonl(&mut out);
    }
    out
}

/// Everything the rows of every table borrow.
pub(crate) struct Fixtures {
    views: Vec<PageView<'static>>,
    windows: Vec<WindowCount>,
    bad: Vec<(&'static [u8], DecodeError)>,
}

impl Fixtures {
    pub(crate) fn new() -> Self {
        Fixtures { views: views(), windows: windows(), bad: bad_records() }
    }

    /// Rows of every table, tricky values included.
    pub(crate) fn tables(&self) -> [(Table, Vec<Row<'_>>); 4] {
        let watermarks = [i64::MIN, 1_577_836_805_000, i64::MAX, -5, 0, MIN_MS - 1, MAX_MS + 1];
        let received = [-1, 0, 1_577_836_805_123, MIN_MS, MAX_MS, 5];
        [
            (Table::PageViews, self.views.iter().map(Row::View).collect()),
            (
                Table::LatePageViews,
                self.views.iter().zip(watermarks).map(|(pv, w)| Row::Late(pv, w)).collect(),
            ),
            (Table::PageViewAggregates, self.windows.iter().map(|w| Row::Aggregate(w, 60_000)).collect()),
            (
                Table::DeadLetters,
                self.bad
                    .iter()
                    .zip(origins().into_iter().cycle())
                    .zip(received)
                    .map(|(((payload, error), origin), received_at)| Row::DeadLetter {
                        payload,
                        error,
                        origin,
                        received_at,
                    })
                    .collect(),
            ),
        ]
    }
}
