//! The built-in generator: the original job's datagen, deterministic and rate-limited.
//!
//! Record `n` of a stream is a pure function of `(seed, start_ms, n)`, so the sequence
//! number is a complete position: after a crash the generator resumes at the checkpoint's
//! `next_seq` and produces byte-identical records. The same code feeds `pageviews datagen`.

use std::time::Duration;

use super::{Batch, Poll, Position, Source, SourceError};
use pageviews_core::time::write_timestamp;

/// The 20 London postcodes of the original datagen.
pub const POSTCODES: [&str; 20] = [
    "SW1A 1AA", "W1J 7NT", "EC1A 1BB", "NW1 5PN", "SE1 7DP", "SW1H 9EA", "W1W 8NQ", "NW1 9DJ", "SE1 1DP",
    "SW1P 3DD", "W1F 6DP", "NW1 1PE", "SE1 8RT", "SW1P 4DP", "W1G 6RL", "NW1 1PF", "SE1 9RT", "SW1R 4RG",
    "W1K 5DP", "NW1 1PJ",
];

/// The 5 pages of the original datagen.
pub const WEBPAGES: [&str; 5] = [
    "www.website.com/index.html",
    "www.website.com/faq.html",
    "www.website.com/deals.html",
    "www.website.com/catalog.html",
    "www.website.com/blah.html",
];

/// Highest user id; ids are drawn from `0..=MAX_USER_ID`.
pub const MAX_USER_ID: u64 = 1000;

/// What the generator produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratorConfig {
    /// Events per second; 0 means as fast as possible.
    pub rate: u64,
    /// Stop after this many events in total (a position, so it survives restarts).
    pub count: Option<u64>,
    /// Timestamps lie up to this many ms before the record's nominal time.
    pub max_late_ms: u64,
    /// Seed of the stream.
    pub seed: u64,
    /// Event time of record 0, UTC ms.
    pub start_ms: i64,
}

impl GeneratorConfig {
    /// Nominal spacing of event time between records: `1000 / rate` ms, or 1 ms when the
    /// rate is unlimited, so event time always advances and windows close.
    fn step_us(&self) -> u64 {
        if self.rate == 0 {
            1_000
        } else {
            1_000_000 / self.rate.max(1)
        }
    }

    /// Writes record `seq` as a JSON line (without newline) to `out`.
    pub fn write_record(&self, seq: u64, out: &mut Vec<u8>) {
        let r1 = mix(self.seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let r2 = mix(r1 ^ 0xD1B5_4A32_D192_ED03);
        let user = r1 % (MAX_USER_ID + 1);
        let postcode = POSTCODES[((r1 >> 32) % POSTCODES.len() as u64) as usize];
        let page = WEBPAGES[((r1 >> 48) % WEBPAGES.len() as u64) as usize];
        let late = r2 % (self.max_late_ms + 1);
        let nominal = self.start_ms + (seq.saturating_mul(self.step_us()) / 1000) as i64;
        out.extend_from_slice(b"{\"user_id\":");
        out.extend_from_slice(itoa::Buffer::new().format(user).as_bytes());
        out.extend_from_slice(b",\"postcode\":\"");
        out.extend_from_slice(postcode.as_bytes());
        out.extend_from_slice(b"\",\"webpage\":\"");
        out.extend_from_slice(page.as_bytes());
        out.extend_from_slice(b"\",\"timestamp\":\"");
        write_timestamp(out, nominal - late as i64);
        out.extend_from_slice(b"\"}");
    }

    /// The key the original keyed Kafka records by (the postcode).
    pub fn key_of(&self, seq: u64) -> &'static str {
        let r1 = mix(self.seed ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        POSTCODES[((r1 >> 32) % POSTCODES.len() as u64) as usize]
    }
}

/// SplitMix64's finaliser: a fast, well-mixed hash of the sequence number.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator as a [`Source`]: one partition, paced to `rate` in processing time.
pub struct GeneratorSource {
    config: GeneratorConfig,
    next_seq: u64,
    /// Pacing restarts at (`paced_from_seq`, first poll's time) so a resume does not burst.
    paced_from: Option<(u64, u64)>,
    started: bool,
}

impl GeneratorSource {
    /// A generator of `config`'s stream whose next record is `next_seq` (0 for a new
    /// stream; the committed position when resuming). The caller checks that `config` is
    /// the stream the pipeline was created with.
    pub fn new(config: GeneratorConfig, next_seq: u64) -> Self {
        GeneratorSource { config, next_seq, paced_from: None, started: false }
    }

    /// The effective configuration (start time and seed as resumed).
    pub fn config(&self) -> &GeneratorConfig {
        &self.config
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
        for seq in self.next_seq..upto {
            batch.push_with(0, seq, |out| self.config.write_record(seq, out));
        }
        self.next_seq = upto;
        Ok(Poll::Ready)
    }

    fn position(&self, partition: u32) -> Option<Position> {
        (partition == 0).then_some(Position::Generator { next_seq: self.next_seq })
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
        GeneratorConfig { rate, count, max_late_ms: 1000, seed: 42, start_ms: 1_577_836_800_000 }
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
}
