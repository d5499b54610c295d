//! Time: parsing the three accepted input forms, formatting UTC timestamps, and the Hive
//! partition (`day=YYYY-MM-DD/hour=HH`) an instant belongs to.
//!
//! Everything here is UTC milliseconds since the Unix epoch (`i64`). No local time zone is
//! ever consulted, so a partition path or a window boundary cannot shift with the machine's
//! `TZ` or a daylight-saving change. Parsing is hand-written: the generic chrono parser costs
//! about a third of decode throughput (ARCHITECTURE.md, measured facts); chrono is the test
//! oracle instead.

use thiserror::Error;

/// Milliseconds per second, minute, hour and day.
pub const SECOND_MS: i64 = 1_000;
/// Milliseconds in one minute.
pub const MINUTE_MS: i64 = 60 * SECOND_MS;
/// Milliseconds in one hour.
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
/// Milliseconds in one day.
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// Earliest accepted instant: 0000-01-01 00:00:00.000 UTC.
pub const MIN_MS: i64 = -62_167_219_200_000;
/// Latest accepted instant: 9999-12-31 23:59:59.999 UTC. Four-digit years keep every path
/// and every formatted timestamp the same width, which is what Hive partitioning and Flink's
/// JSON reader expect.
pub const MAX_MS: i64 = 253_402_300_799_999;

/// Why a timestamp was refused; becomes part of a dead letter's error text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TimestampError {
    /// The text matches none of the accepted layouts.
    #[error("expected 'yyyy-MM-dd HH:mm:ss[.SSS]', ISO-8601 or epoch milliseconds")]
    Layout,
    /// The layout is right but a field is out of range (month 13, 31 April, hour 24...).
    #[error("{0} out of range")]
    Field(&'static str),
    /// The instant lies outside years 0000..=9999.
    #[error("outside years 0000..=9999")]
    OutOfRange,
    /// The instant is in range, but its event-time window starts before year 0000 or ends
    /// after 9999-12-31 23:59:59.999, so the window cannot be written.
    #[error("its window crosses the edge of years 0000..=9999")]
    WindowOutOfRange,
    /// Epoch milliseconds given as a non-integral or too large number.
    #[error("epoch milliseconds must be an integer")]
    NotInteger,
}

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The (year, month, day) of a day number counted from 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Parses `yyyy-MM-dd HH:mm:ss[.fraction]` or ISO-8601 (`T` separator, optional `Z` or
/// `±HH[:MM]` offset). No zone means UTC. Fractions beyond milliseconds are truncated, as
/// Flink's `TIMESTAMP(3)` does.
pub fn parse_timestamp(text: &str) -> Result<i64, TimestampError> {
    let b = text.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return Err(TimestampError::Layout);
    }
    if b[10] != b' ' && b[10] != b'T' && b[10] != b't' {
        return Err(TimestampError::Layout);
    }
    let year = digits(&b[0..4])? as i64;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(1..=12).contains(&month) {
        return Err(TimestampError::Field("month"));
    }
    if day == 0 || day > days_in_month(year, month) {
        return Err(TimestampError::Field("day"));
    }
    if hour > 23 {
        return Err(TimestampError::Field("hour"));
    }
    if minute > 59 {
        return Err(TimestampError::Field("minute"));
    }
    if second > 59 {
        return Err(TimestampError::Field("second"));
    }
    let mut rest = &b[19..];
    let mut millis = 0i64;
    if let Some((&b'.', frac)) = rest.split_first() {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return Err(TimestampError::Layout);
        }
        for (i, &c) in frac[..n.min(3)].iter().enumerate() {
            millis += i64::from(c - b'0') * [100, 10, 1][i];
        }
        rest = &frac[n..];
    }
    let offset_ms = parse_zone(rest)?;
    let days = days_from_civil(year, month, day);
    let ms = days * DAY_MS
        + i64::from(hour) * HOUR_MS
        + i64::from(minute) * MINUTE_MS
        + i64::from(second) * SECOND_MS
        + millis
        - offset_ms;
    check_range(ms)
}

/// Accepts epoch milliseconds when they fall inside the supported years.
pub fn check_range(ms: i64) -> Result<i64, TimestampError> {
    if (MIN_MS..=MAX_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(TimestampError::OutOfRange)
    }
}

fn parse_zone(rest: &[u8]) -> Result<i64, TimestampError> {
    match rest {
        [] | [b'Z'] | [b'z'] => Ok(0),
        [sign @ (b'+' | b'-'), tail @ ..] => {
            let (h, m) = match tail {
                [h1, h2] => (digits(&[*h1, *h2])?, 0),
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?),
                _ => return Err(TimestampError::Layout),
            };
            if h > 23 || m > 59 {
                return Err(TimestampError::Field("zone offset"));
            }
            let ms = i64::from(h) * HOUR_MS + i64::from(m) * MINUTE_MS;
            Ok(if *sign == b'-' { -ms } else { ms })
        }
        _ => Err(TimestampError::Layout),
    }
}

fn digits(b: &[u8]) -> Result<u32, TimestampError> {
    let mut v = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return Err(TimestampError::Layout);
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Ok(v)
}

/// Appends `yyyy-MM-dd HH:mm:ss.SSS` (UTC), the form Flink's JSON format reads back.
/// `ms` must lie in `MIN_MS..=MAX_MS`, which decoding guarantees.
pub fn write_timestamp(out: &mut Vec<u8>, ms: i64) {
    let days = ms.div_euclid(DAY_MS);
    let in_day = ms.rem_euclid(DAY_MS);
    let date = DATE_CACHE.with(|cache| {
        let (cached_day, text) = cache.get();
        if cached_day == days {
            return text;
        }
        let text = date_text(days);
        cache.set((days, text));
        text
    });
    out.extend_from_slice(&date);
    let h = in_day / HOUR_MS;
    let mi = in_day % HOUR_MS / MINUTE_MS;
    let s = in_day % MINUTE_MS / SECOND_MS;
    let f = in_day % SECOND_MS;
    let buf = [
        b' ',
        b'0' + (h / 10) as u8,
        b'0' + (h % 10) as u8,
        b':',
        b'0' + (mi / 10) as u8,
        b'0' + (mi % 10) as u8,
        b':',
        b'0' + (s / 10) as u8,
        b'0' + (s % 10) as u8,
        b'.',
        b'0' + (f / 100) as u8,
        b'0' + (f / 10 % 10) as u8,
        b'0' + (f % 10) as u8,
    ];
    out.extend_from_slice(&buf);
}

thread_local! {
    /// The last day formatted: consecutive events almost always share it, and the calendar
    /// arithmetic is most of a timestamp's formatting cost.
    static DATE_CACHE: std::cell::Cell<(i64, [u8; 10])> = const { std::cell::Cell::new((i64::MIN, [0; 10])) };
}

/// `yyyy-MM-dd` of a day number.
fn date_text(days: i64) -> [u8; 10] {
    let (y, mo, d) = civil_from_days(days);
    let y = y as u32;
    [
        b'0' + (y / 1000 % 10) as u8,
        b'0' + (y / 100 % 10) as u8,
        b'0' + (y / 10 % 10) as u8,
        b'0' + (y % 10) as u8,
        b'-',
        b'0' + (mo / 10) as u8,
        b'0' + (mo % 10) as u8,
        b'-',
        b'0' + (d / 10) as u8,
        b'0' + (d % 10) as u8,
    ]
}

/// A timestamp as an owned string in the output form; for logs, tests and status output.
pub fn format_timestamp(ms: i64) -> String {
    let mut out = Vec::with_capacity(23);
    write_timestamp(&mut out, ms.clamp(MIN_MS, MAX_MS));
    String::from_utf8(out).unwrap_or_default()
}

/// The hour (since the epoch, UTC) that holds instant `ms`. Rows are grouped by this
/// integer, cheap to compare on the hot path; the folder name is made only when a file opens.
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

    #[test]
    fn accepts_the_three_forms_and_agrees_on_the_instant() {
        let want = 1_577_836_805_123; // 2020-01-01T00:00:05.123Z
        for text in [
            "2020-01-01 00:00:05.123",
            "2020-01-01T00:00:05.123",
            "2020-01-01T00:00:05.123Z",
            "2020-01-01T01:00:05.123+01:00",
            "2019-12-31T19:00:05.123-0500",
            "2020-01-01T03:00:05.123+03",
            "2020-01-01 00:00:05.123456789",
        ] {
            assert_eq!(parse_timestamp(text), Ok(want), "{text}");
        }
        assert_eq!(parse_timestamp("2020-01-01 00:00:05"), Ok(want - 123));
        assert_eq!(parse_timestamp("2020-01-01 00:00:05.1"), Ok(want - 23));
    }

    #[test]
    fn refuses_impossible_dates_and_bad_layouts() {
        for (text, err) in [
            ("2021-02-29 00:00:00", TimestampError::Field("day")),
            ("2020-04-31 00:00:00", TimestampError::Field("day")),
            ("2020-13-01 00:00:00", TimestampError::Field("month")),
            ("2020-01-01 24:00:00", TimestampError::Field("hour")),
            ("2020-01-01 00:60:00", TimestampError::Field("minute")),
            ("2020-01-01 00:00:60", TimestampError::Field("second")),
            ("2020-01-01", TimestampError::Layout),
            ("2020/01/01 00:00:00", TimestampError::Layout),
            ("2020-01-01 00:00:00.", TimestampError::Layout),
            ("2020-01-01 00:00:00 UTC", TimestampError::Layout),
            ("yesterday at noon", TimestampError::Layout),
        ] {
            assert_eq!(parse_timestamp(text), Err(err), "{text}");
        }
        assert_eq!(parse_timestamp("2000-02-29 12:00:00").map(|_| ()), Ok(()));
    }

    #[test]
    fn civil_round_trip_over_four_centuries() {
        for days in (-800_000..800_000).step_by(7) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn formats_utc_with_milliseconds() {
        assert_eq!(format_timestamp(1_577_836_805_123), "2020-01-01 00:00:05.123");
        assert_eq!(format_timestamp(0), "1970-01-01 00:00:00.000");
        assert_eq!(format_timestamp(-1), "1969-12-31 23:59:59.999");
        assert_eq!(format_timestamp(MAX_MS), "9999-12-31 23:59:59.999");
        assert_eq!(format_timestamp(MIN_MS), "0000-01-01 00:00:00.000");
    }

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

/// The hand-written calendar against chrono's, over the whole supported range: the day
/// arithmetic, the formatting and the parsing must agree with an independent implementation,
/// not only with themselves.
#[cfg(test)]
mod chrono_oracle {
    use super::*;
    use chrono::{DateTime, Datelike, NaiveDate};

    /// Instants spread over years 0000..=9999, with the edges and leap days included.
    fn instants() -> impl Iterator<Item = i64> {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let spread = (0..20_000).map(move |_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            MIN_MS + (x % (MAX_MS - MIN_MS + 1) as u64) as i64
        });
        let edges = [MIN_MS, MAX_MS, 0, -1, 951_782_400_000, 951_868_799_999, -2_203_891_200_000];
        edges.into_iter().chain(spread)
    }

    #[test]
    fn day_numbers_match_chrono() {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        for days in (-719_528..=2_932_896).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            let want = epoch + chrono::Duration::days(days);
            assert_eq!((y, m, d), (i64::from(want.year()), want.month(), want.day()), "day {days}");
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn formatting_and_partitions_match_chrono() {
        for ms in instants() {
            let want = DateTime::from_timestamp_millis(ms).unwrap().naive_utc();
            assert_eq!(format_timestamp(ms), want.format("%Y-%m-%d %H:%M:%S%.3f").to_string(), "{ms}");
            assert_eq!(partition_dir(hour_of(ms)), want.format("day=%Y-%m-%d/hour=%H").to_string(), "{ms}");
        }
    }

    #[test]
    fn parsing_matches_chrono() {
        for ms in instants() {
            let at = DateTime::from_timestamp_millis(ms).unwrap();
            let iso = at.naive_utc().format("%Y-%m-%dT%H:%M:%S%.3f").to_string();
            assert_eq!(parse_timestamp(&iso), Ok(ms), "{iso}");
            let shifted = at.with_timezone(&chrono::FixedOffset::east_opt(-5 * 3600 - 1800).unwrap());
            let offset = shifted.format("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string();
            if shifted.year() >= 0 {
                assert_eq!(parse_timestamp(&offset), Ok(ms), "{offset}");
            }
        }
    }
}
