//! The checksum of the bytes read from an input so far: what tells, on resume, whether an
//! input still begins with the bytes committed from it.
//!
//! Committed positions carry it, so its value for given bytes must never change: the
//! constants and the steps below are part of the commit log's format. It detects accidental
//! differences (another file, another stream); it is not a defence against crafted input.
//! Every byte read passes through it, so it takes eight bytes per step (FNV takes one), and
//! it is a few lines here rather than a dependency.

/// Multipliers (xxHash64's primes): odd, so every step is a bijection of the state.
const K1: u64 = 0x9E37_79B1_85EB_CA87;
const K2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const SEED: u64 = 0x2545_F491_4F6C_DD1D;

/// A running checksum of a byte stream, fed in pieces of any size: the value depends only on
/// the bytes, never on how they were split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Checksum {
    state: u64,
    len: u64,
    /// The bytes of an unfinished eight-byte word (`len % 8` of them).
    tail: [u8; 8],
}

impl Default for Checksum {
    fn default() -> Self {
        Checksum { state: SEED, len: 0, tail: [0; 8] }
    }
}

#[inline]
fn step(state: u64, word: u64) -> u64 {
    (state ^ word.wrapping_mul(K1)).rotate_left(31).wrapping_mul(K2)
}

impl Checksum {
    /// The checksum of `bytes`.
    pub(crate) fn of(bytes: &[u8]) -> Self {
        let mut c = Checksum::default();
        c.update(bytes);
        c
    }

    /// Bytes taken so far.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Takes the next bytes of the stream.
    pub(crate) fn update(&mut self, mut bytes: &[u8]) {
        let pending = (self.len % 8) as usize;
        self.len += bytes.len() as u64;
        if pending > 0 {
            let take = (8 - pending).min(bytes.len());
            self.tail[pending..pending + take].copy_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if pending + take < 8 {
                return;
            }
            self.state = step(self.state, u64::from_le_bytes(self.tail));
        }
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut w = [0; 8];
            w.copy_from_slice(word);
            self.state = step(self.state, u64::from_le_bytes(w));
        }
        let rest = words.remainder();
        self.tail[..rest.len()].copy_from_slice(rest);
    }

    /// The checksum of the bytes taken so far (more may follow).
    pub(crate) fn value(&self) -> u64 {
        let pending = (self.len % 8) as usize;
        let mut last = [0; 8];
        last[..pending].copy_from_slice(&self.tail[..pending]);
        // The length tells a stream from the same bytes followed by zeros.
        let mut h = step(self.state, u64::from_le_bytes(last)) ^ self.len.wrapping_mul(K2);
        // Final avalanche (MurmurHash3's fmix64), so every input bit reaches every output bit.
        h ^= h >> 33;
        h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        h ^= h >> 33;
        h = h.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
        h ^ (h >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_depends_on_the_bytes_and_not_on_how_they_were_split() {
        let bytes: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let whole = Checksum::of(&bytes).value();
        for cuts in [vec![1], vec![7, 8, 9], vec![3, 500, 501, 999], (1..40).collect()] {
            let mut c = Checksum::default();
            let mut from = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                c.update(&bytes[from..cut]);
                from = cut;
            }
            assert_eq!(c.value(), whole);
            assert_eq!(c.len(), 1000);
        }
    }

    #[test]
    fn values_are_fixed_because_committed_positions_carry_them() {
        // Changing these invalidates every committed file position. (The same steps written
        // in Python give the same values.)
        assert_eq!(Checksum::default().value(), 0x77A3_EAEC_6DFA_B5F1);
        assert_eq!(Checksum::of(b"{\"user_id\": 1}\n").value(), 0xB764_8D51_2C7D_1CFC);
    }

    #[test]
    fn a_changed_byte_a_longer_stream_or_trailing_zeros_change_the_value() {
        let base = b"{\"user_id\": 1, \"postcode\": \"SW1A 1AA\"}\n".to_vec();
        let value = Checksum::of(&base).value();
        for i in 0..base.len() {
            let mut other = base.clone();
            other[i] ^= 1;
            assert_ne!(Checksum::of(&other).value(), value, "byte {i}");
        }
        let mut longer = base.clone();
        longer.push(0);
        assert_ne!(Checksum::of(&longer).value(), value);
        assert_ne!(Checksum::of(&base[..base.len() - 1]).value(), value);
        assert_ne!(Checksum::of(&[0; 8]).value(), Checksum::of(&[0; 16]).value());
    }
}
