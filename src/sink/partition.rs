//! Hive partition paths: `day=YYYY-MM-DD/hour=HH`, computed in UTC from hour numbers.
//!
//! Rows are grouped by the hour since the epoch (`ms.div_euclid(HOUR_MS)`), an integer that
//! is cheap to compare on the hot path; the path text is made only when a file opens.

use crate::event::timestamp::{civil_from_days, HOUR_MS};

/// The hour (since the epoch, UTC) that holds instant `ms`.
#[inline]
pub fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(HOUR_MS)
}

/// The partition directory of an hour number, e.g. `day=2020-01-01/hour=00`.
pub fn partition_dir(hour: i64) -> String {
    let (y, m, d) = civil_from_days(hour.div_euclid(24));
    format!("day={y:04}-{m:02}-{d:02}/hour={:02}", hour.rem_euclid(24))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::timestamp::parse_timestamp;

    fn dir(ts: &str) -> String {
        partition_dir(hour_of(parse_timestamp(ts).unwrap()))
    }

    #[test]
    fn midnight_belongs_to_the_new_day() {
        assert_eq!(dir("2020-01-01 23:59:59.999"), "day=2020-01-01/hour=23");
        assert_eq!(dir("2020-01-02 00:00:00.000"), "day=2020-01-02/hour=00");
    }

    #[test]
    fn the_end_of_a_year_and_a_leap_day() {
        assert_eq!(dir("2019-12-31 23:59:59.999"), "day=2019-12-31/hour=23");
        assert_eq!(dir("2020-01-01 00:00:00.000"), "day=2020-01-01/hour=00");
        assert_eq!(dir("2020-02-29 12:30:00"), "day=2020-02-29/hour=12");
        assert_eq!(dir("1969-12-31 23:00:00"), "day=1969-12-31/hour=23");
    }

    #[test]
    fn daylight_saving_changes_do_not_exist_in_utc() {
        // Europe/London went from 01:00 GMT to 02:00 BST on 2020-03-29 and back on
        // 2020-10-25: in UTC every hour of those days exists exactly once.
        for day in ["2020-03-29", "2020-10-25"] {
            let dirs: Vec<String> = (0..24).map(|h| dir(&format!("{day} {h:02}:30:00"))).collect();
            for (h, d) in dirs.iter().enumerate() {
                assert_eq!(d, &format!("day={day}/hour={h:02}"));
            }
        }
        // An offset timestamp lands in its UTC hour: 01:30+01:00 is 00:30 UTC.
        assert_eq!(dir("2020-03-29T01:30:00+01:00"), "day=2020-03-29/hour=00");
        assert_eq!(dir("2020-10-25T01:30:00+01:00"), "day=2020-10-25/hour=00");
        assert_eq!(dir("2020-10-25T01:30:00+00:00"), "day=2020-10-25/hour=01");
    }
}
