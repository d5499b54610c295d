//! The built-in generator: the original job's datagen, deterministic and rate-limited.
//!
//! Record `n` of a stream is a pure function of `(seed, start_ms, n)`, so the sequence
//! number is a complete position: after a crash the generator resumes at the checkpoint's
//! `next_seq` and produces byte-identical records. The same code feeds `pageviews datagen`.

use std::time::Duration;

use pageviews_core::commit::{Position, SourceIdentity, TaskState, NO_WATERMARK};
use pageviews_core::time::{check_range, format_timestamp, write_timestamp, MAX_MS, MIN_MS};
use tracing::info;

use super::{Batch, Poll, Source, SourceError};

/// The 20 London postcodes of the original datagen.
pub(crate) const POSTCODES: [&str; 20] = [
    "SW1A 1AA", "W1J 7NT", "EC1A 1BB", "NW1 5PN", "SE1 7DP", "SW1H 9EA", "W1W 8NQ", "NW1 9DJ", "SE1 1DP",
    "SW1P 3DD", "W1F 6DP", "NW1 1PE", "SE1 8RT", "SW1P 4DP", "W1G 6RL", "NW1 1PF", "SE1 9RT", "SW1R 4RG",
    "W1K 5DP", "NW1 1PJ",
];

/// The 5 pages of the original datagen.
pub(crate) const WEBPAGES: [&str; 5] = [
    "www.website.com/index.html",
    "www.website.com/faq.html",
    "www.website.com/deals.html",
    "www.website.com/catalog.html",
    "www.website.com/blah.html",
];

/// Highest user id; ids are drawn from `0..=MAX_USER_ID`.
pub(crate) const MAX_USER_ID: u64 = 1000;

/// What the generator produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratorConfig {
    /// Events per second; 0 means as fast as possible.
    pub rate: u64,
    /// The stream's total: stop once record `count - 1` is produced (a position, so it
    /// survives restarts; a resumed run produces only what is missing).
    pub count: Option<u64>,
    /// Timestamps lie up to this many ms before the record's nominal time.
    pub max_late_ms: u64,
    /// Seed of the stream.
    pub seed: u64,
    /// Event time of record 0, UTC ms.
    pub start_ms: i64,
    /// Event time between consecutive records, in µs; `None` derives it from `rate`. Set
    /// apart from the rate, a run covers days of event time in minutes (scripts/month).
    pub interval_us: Option<u64>,
}

impl GeneratorConfig {
    /// Nominal spacing of event time between records: `interval_us` when given, else
    /// `1000 / rate` ms, or 1 ms when the rate is unlimited, so event time always advances
    /// and windows close.
    pub(crate) fn step_us(&self) -> u64 {
        if let Some(us) = self.interval_us {
            us.max(1)
        } else if self.rate == 0 {
            1_000
        } else {
            1_000_000 / self.rate.max(1)
        }
    }

    /// Record `seq`'s nominal event time, moved on by `shift_ms` (see [`GeneratorSource`]);
    /// its timestamp lies up to `max_late_ms` before it.
    fn nominal_ms(&self, seq: u64, shift_ms: i64) -> i64 {
        let offset = i64::try_from(seq.saturating_mul(self.step_us()) / 1000).unwrap_or(i64::MAX);
        self.start_ms.saturating_add(shift_ms).saturating_add(offset)
    }

    /// Record `seq`'s event time; `None` when it falls outside the years 0000..=9999 that
    /// the tables can hold.
    fn timestamp_ms(&self, seq: u64, shift_ms: i64) -> Option<i64> {
        let r2 = mix(mix(self.seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)) ^ 0xD1B5_4A32_D192_ED03);
        // `% (max + 1)` without overflowing at u64::MAX (where every r2 is in range).
        let late = match self.max_late_ms.checked_add(1) {
            Some(m) => r2 % m,
            None => r2,
        };
        let ts = self.nominal_ms(seq, shift_ms).saturating_sub(i64::try_from(late).unwrap_or(i64::MAX));
        check_range(ts).ok()
    }

    /// Writes record `seq` as a JSON line (without newline) to `out`.
    pub fn write_record(&self, seq: u64, out: &mut Vec<u8>) {
        self.write_record_shifted(seq, 0, out);
    }

    fn write_record_shifted(&self, seq: u64, shift_ms: i64, out: &mut Vec<u8>) {
        let r1 = mix(self.seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let user = r1 % (MAX_USER_ID + 1);
        let postcode = POSTCODES[((r1 >> 32) % POSTCODES.len() as u64) as usize];
        let page = WEBPAGES[((r1 >> 48) % WEBPAGES.len() as u64) as usize];
        // Out of range only past year 9999, which the source refuses before writing.
        let ts = self.timestamp_ms(seq, shift_ms).unwrap_or(MAX_MS);
        out.extend_from_slice(b"{\"user_id\":");
        out.extend_from_slice(itoa::Buffer::new().format(user).as_bytes());
        out.extend_from_slice(b",\"postcode\":\"");
        out.extend_from_slice(postcode.as_bytes());
        out.extend_from_slice(b"\",\"webpage\":\"");
        out.extend_from_slice(page.as_bytes());
        out.extend_from_slice(b"\",\"timestamp\":\"");
        write_timestamp(out, ts);
        out.extend_from_slice(b"\"}");
    }

    /// The key the original keyed Kafka records by (the postcode).
    pub(crate) fn key_of(&self, seq: u64) -> &'static str {
        let r1 = mix(self.seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        POSTCODES[((r1 >> 32) % POSTCODES.len() as u64) as usize]
    }

    /// The first record in `from..to` whose event time the tables cannot hold. Nominal time
    /// only grows with `seq`, so checking the ends of the range is enough unless one of them
    /// is near the edge of the supported years.
    fn first_out_of_range(&self, from: u64, to: u64, shift_ms: i64) -> Option<u64> {
        if from >= to {
            return None;
        }
        let late = i64::try_from(self.max_late_ms).unwrap_or(i64::MAX);
        let low = self.nominal_ms(from, shift_ms).saturating_sub(late);
        let high = self.nominal_ms(to - 1, shift_ms);
        if low >= MIN_MS && high <= MAX_MS {
            return None;
        }
        (from..to).find(|&seq| self.timestamp_ms(seq, shift_ms).is_none())
    }
}

/// SplitMix64's finaliser: a fast, well-mixed hash of the sequence number.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator as a run was told: the stream for a fresh output, and which of its
/// parameters were given explicitly. A run that resumes a checkpoint continues the
/// checkpoint's stream: a seed or start time it was not given comes from the checkpoint, and
/// one it was given must match it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratorSpec {
    /// The stream, as a fresh output gets it.
    pub(crate) stream: GeneratorConfig,
    /// `--seed` was given.
    pub(crate) seed_given: bool,
    /// `--start-time` was given.
    pub(crate) start_given: bool,
}

/// A stream fixed in full (library callers and tests): both seed and start time given.
impl From<GeneratorConfig> for GeneratorSpec {
    fn from(stream: GeneratorConfig) -> Self {
        GeneratorSpec { stream, seed_given: true, start_given: true }
    }
}

/// The generator as a [`Source`]: one partition, paced to `rate` in processing time.
///
/// Record `n`'s event time is its nominal time plus a *shift*, 0 unless a bounded run ended
/// and a later run continues the stream: the end of bounded input emitted every open window,
/// so the continuation moves on to the first window after the last one emitted (its events
/// would otherwise all be late). The shift is kept in the checkpoint, so a replay after a
/// crash produces the same records.
pub struct GeneratorSource {
    config: GeneratorConfig,
    next_seq: u64,
    shift_ms: i64,
    /// Pacing restarts at (`paced_from_seq`, first poll's time) so a resume does not burst.
    paced_from: Option<(u64, u64)>,
    started: bool,
}

impl GeneratorSpec {
    /// The stream a run continues on a pipeline created with `stored`: its seed and start
    /// time unless this run gave them (then they must match).
    pub(crate) fn continue_stream(&self, stored: &SourceIdentity) -> Result<GeneratorConfig, SourceError> {
        let SourceIdentity::Generator { seed, start_ms } = stored else {
            return Err(SourceError::Mismatch {
                checkpoint: stored.describe(),
                this_run: "the built-in generator".into(),
            });
        };
        let mismatch = |what: &str, theirs: String, ours: String| SourceError::Mismatch {
            checkpoint: format!("the generator with {what} {theirs}"),
            this_run: format!(
                "the generator with {what} {ours} (leave {what} out to continue the pipeline's stream)"
            ),
        };
        if self.seed_given && *seed != self.stream.seed {
            return Err(mismatch("--seed", seed.to_string(), self.stream.seed.to_string()));
        }
        if self.start_given && *start_ms != self.stream.start_ms {
            let show = |ms: i64| format!("{:?}", format_timestamp(ms));
            return Err(mismatch("--start-time", show(*start_ms), show(self.stream.start_ms)));
        }
        Ok(GeneratorConfig { seed: *seed, start_ms: *start_ms, ..self.stream.clone() })
    }
}

impl GeneratorSource {
    /// A generator of `config`'s stream whose next record is `next_seq` (0 for a new
    /// stream), without shift. The caller checks that `config` is the pipeline's stream.
    pub(crate) fn new(config: GeneratorConfig, next_seq: u64) -> Self {
        GeneratorSource { config, next_seq, shift_ms: 0, paced_from: None, started: false }
    }

    /// A generator of `config` (the pipeline's stream, see [`GeneratorSpec::continue_stream`])
    /// continuing the committed state of its partition, if any. `allowed_lateness_ms` tells
    /// which emitted windows the watermark fired and which only the end of bounded input did.
    pub(crate) fn resume(
        config: GeneratorConfig,
        state: Option<&TaskState>,
        allowed_lateness_ms: i64,
    ) -> Result<Self, SourceError> {
        let mut source = Self::new(config, 0);
        let Some(state) = state else { return Ok(source) };
        let Position::Generator { next_seq, shift_ms } = state.position else {
            return Err(SourceError::Mismatch {
                checkpoint: format!("a task positioned at {:?}", state.position),
                this_run: "the built-in generator".into(),
            });
        };
        source.next_seq = next_seq;
        source.shift_ms = shift_ms;
        if let Some(c) = &state.counting {
            let fired_by_watermark = c.emitted_through == NO_WATERMARK
                || c.emitted_through.saturating_sub(1).saturating_add(allowed_lateness_ms) <= c.watermark;
            if !fired_by_watermark {
                source.start_after(c.emitted_through);
            }
        }
        if let Some(count) = source.config.count.filter(|c| source.next_seq >= *c) {
            info!(
                count,
                "nothing left to generate: the stream in this output already holds all --count {count} \
                 events (--count is the stream's total); give a larger --count to add more"
            );
        }
        Ok(source)
    }

    /// Moves the rest of the stream on so that its earliest possible timestamp is
    /// `emitted_through`, the end of the last emitted window: every continued event falls in
    /// a window after it.
    fn start_after(&mut self, emitted_through: i64) {
        let late = i64::try_from(self.config.max_late_ms).unwrap_or(i64::MAX);
        let earliest = self.config.nominal_ms(self.next_seq, self.shift_ms).saturating_sub(late);
        if earliest >= emitted_through {
            return;
        }
        let by = emitted_through.saturating_sub(earliest);
        self.shift_ms = self.shift_ms.saturating_add(by);
        info!(
            record = self.next_seq,
            shift_ms = by,
            next_event_time = %format_timestamp(self.config.nominal_ms(self.next_seq, self.shift_ms)),
            "continuing the generated stream after the windows the last run emitted at its end"
        );
    }
}

impl Source for GeneratorSource {
    fn poll(&mut self, batch: &mut Batch, max_records: usize, now_ms: u64) -> Result<Poll, SourceError> {
        if !self.started {
            self.started = true;
            batch.push_event(super::PartitionEvent::Assigned(0));
        }
        let end = self.config.count.unwrap_or(u64::MAX);
        if self.next_seq >= end {
            return Ok(Poll::End);
        }
        let (from_seq, from_ms) = *self.paced_from.get_or_insert((self.next_seq, now_ms));
        let due = if self.config.rate == 0 {
            end
        } else {
            let elapsed = now_ms.saturating_sub(from_ms);
            from_seq.saturating_add(elapsed.saturating_mul(self.config.rate) / 1000 + 1)
        };
        let upto = due.min(end).min(self.next_seq + max_records as u64);
        if upto <= self.next_seq {
            let wait_ms = 1000 / self.config.rate.max(1);
            return Ok(Poll::Pending(Duration::from_millis(wait_ms.clamp(1, 50))));
        }
        // Records before the first one out of range go out; the next poll reports it.
        let upto = match self.config.first_out_of_range(self.next_seq, upto, self.shift_ms) {
            Some(seq) if seq == self.next_seq => return Err(SourceError::GeneratorRange { seq }),
            Some(seq) => seq,
            None => upto,
        };
        for seq in self.next_seq..upto {
            batch.push_with(0, seq, |out| self.config.write_record_shifted(seq, self.shift_ms, out));
        }
        self.next_seq = upto;
        Ok(Poll::Ready)
    }

    fn position(&self, partition: u32) -> Option<Position> {
        (partition == 0).then_some(Position::Generator { next_seq: self.next_seq, shift_ms: self.shift_ms })
    }

    fn partition_name(&self, _partition: u32) -> &str {
        "generator"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::decode;

    fn config(rate: u64, count: Option<u64>) -> GeneratorConfig {
        GeneratorConfig {
            rate,
            count,
            max_late_ms: 1000,
            seed: 42,
            start_ms: 1_577_836_800_000,
            interval_us: None,
        }
    }

    fn drain(src: &mut GeneratorSource) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut batch = Batch::default();
        while src.poll(&mut batch, 1000, 0).unwrap() == Poll::Ready {
            out.extend(batch.records().iter().map(|r| batch.payload(r).to_vec()));
            batch.clear();
        }
        out
    }

    #[test]
    fn records_use_the_originals_value_ranges_and_decode() {
        let cfg = config(0, Some(5000));
        let records = drain(&mut GeneratorSource::new(cfg.clone(), 0));
        assert_eq!(records.len(), 5000);
        let mut postcodes = std::collections::HashSet::new();
        for (seq, bytes) in records.iter().enumerate() {
            let pv = decode(bytes, 1 << 20).unwrap();
            assert!((0..=1000).contains(&pv.user_id));
            assert!(WEBPAGES.contains(&pv.webpage.as_ref()));
            let nominal = cfg.start_ms + seq as i64;
            assert!((nominal - 1000..=nominal).contains(&pv.timestamp), "{seq}");
            postcodes.insert(pv.postcode.into_owned());
        }
        assert_eq!(postcodes.len(), 20, "all 20 postcodes appear");
    }

    #[test]
    fn resuming_at_a_sequence_number_replays_identical_records() {
        let cfg = config(0, Some(300));
        let all = drain(&mut GeneratorSource::new(cfg.clone(), 0));
        let tail = drain(&mut GeneratorSource::new(cfg, 120));
        assert_eq!(tail, all[120..]);
    }

    #[test]
    fn an_event_interval_spaces_event_time_whatever_the_rate() {
        let cfg = GeneratorConfig { interval_us: Some(100_000), max_late_ms: 0, ..config(0, Some(11)) };
        let records = drain(&mut GeneratorSource::new(cfg.clone(), 0));
        let last = decode(&records[10], 1 << 20).unwrap();
        assert_eq!(last.timestamp, cfg.start_ms + 1_000, "ten steps of 100 ms");
    }

    #[test]
    fn pacing_follows_the_rate_in_processing_time() {
        let mut src = GeneratorSource::new(config(1000, None), 0);
        let mut batch = Batch::default();
        src.poll(&mut batch, 1_000_000, 0).unwrap();
        assert_eq!(batch.len(), 1);
        batch.clear();
        assert!(matches!(src.poll(&mut batch, 1_000_000, 0).unwrap(), Poll::Pending(_)));
        src.poll(&mut batch, 1_000_000, 500).unwrap();
        assert_eq!(batch.len(), 500, "half a second at 1000/s");
    }

    #[test]
    fn a_stream_that_leaves_the_supported_years_stops_at_its_first_record_outside() {
        let cfg =
            GeneratorConfig { max_late_ms: u64::MAX, start_ms: MAX_MS - 2_000, ..config(0, Some(10_000)) };
        let mut src = GeneratorSource::new(GeneratorConfig { max_late_ms: 0, ..cfg.clone() }, 0);
        let mut batch = Batch::default();
        assert_eq!(src.poll(&mut batch, 100_000, 0).unwrap(), Poll::Ready);
        assert_eq!(batch.len(), 2_001, "records up to 9999-12-31 23:59:59.999 go out");
        assert!(matches!(src.poll(&mut batch, 100_000, 0), Err(SourceError::GeneratorRange { seq: 2_001 })));
        // A lateness as large as u64 allows neither overflows nor divides by zero.
        let mut out = Vec::new();
        cfg.write_record(0, &mut out);
        assert!(decode(&out, 1 << 20).is_ok());
    }

    #[test]
    fn a_different_seed_refuses_to_resume_and_an_omitted_one_continues() {
        let stored = SourceIdentity::Generator { seed: 7, start_ms: 5 };
        let given = GeneratorSpec::from(config(0, None));
        assert!(matches!(given.continue_stream(&stored), Err(SourceError::Mismatch { .. })));
        let omitted = GeneratorSpec { seed_given: false, start_given: false, ..given };
        let stream = omitted.continue_stream(&stored).unwrap();
        assert_eq!((stream.seed, stream.start_ms), (7, 5));
    }
}
