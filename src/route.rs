//! Which partition a postcode belongs to: Kafka's default partitioner for keyed records.
//!
//! A postcode's windows are counted in one counting partition, chosen exactly as Apache
//! Kafka's Java producer (and librdkafka's `murmur2_random` partitioner) choose the partition
//! of a record keyed by that postcode: `(murmur2(key) & 0x7fffffff) % partitions`. So a topic
//! keyed by postcode — `pageviews datagen`, Flink's Kafka sink with a key, any Java producer —
//! is already partitioned the way the counting is, and no record has to move: each partition
//! counts its own postcodes where it is read. Records of any other topic are forwarded to the
//! counting partition of their postcode.

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`): MurmurHash2 with Kafka's
/// seed, over little-endian 4-byte words.
pub(crate) fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if let Some(&b) = rest.first() {
        h ^= u32::from(b);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `key` among `partitions` (at least 1), as Kafka's default partitioner
/// places a keyed record.
#[inline]
pub(crate) fn partition_of(key: &[u8], partitions: u32) -> u32 {
    ((murmur2(key) & 0x7fff_ffff) as u32) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's own test vectors (`UtilsTest.testMurmur2`).
    #[test]
    fn murmur2_matches_kafka() {
        for (key, want) in [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            ("abc", 479_470_107),
        ] {
            assert_eq!(murmur2(key.as_bytes()), want, "{key}");
        }
    }

    #[test]
    fn every_key_lands_in_range() {
        for n in 1..10 {
            for key in ["SW1A 1AA", "", "W1J 7NT", "é"] {
                assert!(partition_of(key.as_bytes(), n) < n);
            }
        }
        assert_eq!(partition_of(b"x", 0), 0, "no partitions count as one");
    }
}
