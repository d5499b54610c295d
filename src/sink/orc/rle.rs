//! ORC's integer run-length encoding, version 2: what every integer stream holds.
//!
//! The writer uses three of its four sub-encodings: SHORT_REPEAT for 3–10 equal values,
//! DELTA for longer runs of equal values and for monotonic sequences (event times, ends of
//! windows), DIRECT for the rest, each run taking the smaller of DELTA and DIRECT. PATCHED_BASE
//! pays off for a few outliers in narrow values, which these tables rarely hold, and is
//! neither written nor read here. Widths are the spec's non-deprecated ones, so every
//! reader decodes them.

use super::proto::{read_varint, unzigzag, varint, zigzag};

/// Most values in one run.
const MAX_RUN: usize = 512;

/// Whether a stream holds signed values (zigzagged) or unsigned ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sign {
    Signed,
    Unsigned,
}

impl Sign {
    /// The value as the stream stores it, before bit packing.
    fn raw(self, v: i64) -> u64 {
        match self {
            Sign::Signed => zigzag(v),
            Sign::Unsigned => v as u64,
        }
    }

    fn value(self, raw: u64) -> i64 {
        match self {
            Sign::Signed => unzigzag(raw),
            Sign::Unsigned => raw as i64,
        }
    }
}

/// Appends `values` RLEv2-encoded. Unsigned streams take values as `i64` bit patterns
/// (lengths, dictionary indices and nanoseconds are never negative).
pub(super) fn encode(values: &[i64], sign: Sign, out: &mut Vec<u8>) {
    let mut i = 0;
    while i < values.len() {
        let repeat = values[i..].iter().take(MAX_RUN).take_while(|&&v| v == values[i]).count();
        if repeat >= 3 {
            if repeat <= 10 {
                short_repeat(values[i], repeat, sign, out);
            } else {
                delta(&values[i..i + repeat], sign, out);
            }
            i += repeat;
            continue;
        }
        // A run of different values ends where three equal ones begin, which a repeat
        // encodes better.
        let mut end = i + 1;
        while end < values.len() && end - i < MAX_RUN {
            if end + 2 < values.len() && values[end] == values[end + 1] && values[end] == values[end + 2] {
                break;
            }
            end += 1;
        }
        let run = &values[i..end];
        match delta_width(run) {
            Some(width) if delta_size(run, width, sign) <= direct_size(run, sign) => delta(run, sign, out),
            _ => direct(run, sign, out),
        }
        i = end;
    }
}

fn short_repeat(v: i64, count: usize, sign: Sign, out: &mut Vec<u8>) {
    let raw = sign.raw(v);
    let bytes = ((64 - raw.leading_zeros()) as usize).div_ceil(8).max(1);
    out.push((((bytes - 1) as u8) << 3) | (count - 3) as u8);
    out.extend_from_slice(&raw.to_be_bytes()[8 - bytes..]);
}

/// The narrowest width at least `bits` wide that the spec does not deprecate.
fn fixed_width(bits: u32) -> u32 {
    match bits {
        0 | 1 => 1,
        2 => 2,
        3 | 4 => 4,
        5..=8 => 8,
        9..=16 => 16,
        17..=24 => 24,
        25..=32 => 32,
        33..=40 => 40,
        41..=48 => 48,
        49..=56 => 56,
        _ => 64,
    }
}

/// The 5-bit code of a width from [`fixed_width`] (or 0 bits, in DELTA).
fn width_code(width: u32) -> u8 {
    match width {
        0 => 0,
        1..=24 => (width - 1) as u8,
        32 => 27,
        40 => 28,
        48 => 29,
        56 => 30,
        _ => 31,
    }
}

fn code_width(code: u8, delta: bool) -> u32 {
    match code {
        0 if delta => 0,
        0..=23 => u32::from(code) + 1,
        24 => 26,
        25 => 28,
        26 => 30,
        27 => 32,
        28 => 40,
        29 => 48,
        30 => 56,
        _ => 64,
    }
}

fn header(kind: u8, code: u8, len: usize, out: &mut Vec<u8>) {
    let len = (len - 1) as u16;
    out.push((kind << 6) | (code << 1) | (len >> 8) as u8);
    out.push(len as u8);
}

fn direct_width(run: &[i64], sign: Sign) -> u32 {
    let widest = run.iter().fold(0u64, |acc, &v| acc | sign.raw(v));
    fixed_width(64 - widest.leading_zeros())
}

fn direct_size(run: &[i64], sign: Sign) -> usize {
    2 + (direct_width(run, sign) as usize * run.len()).div_ceil(8)
}

fn direct(run: &[i64], sign: Sign, out: &mut Vec<u8>) {
    let width = direct_width(run, sign);
    header(1, width_code(width), run.len(), out);
    pack(run.iter().map(|&v| sign.raw(v)), width, out);
}

/// The width of a monotonic run's deltas after the first, `None` for a run DELTA cannot
/// hold: shorter than 3, a first delta of 0 (its sign gives the direction) unless all are
/// 0, a change of direction, or deltas past 64 bits.
fn delta_width(run: &[i64]) -> Option<u32> {
    if run.len() < 3 {
        return None;
    }
    let first = i128::from(run[1]) - i128::from(run[0]);
    i64::try_from(first).ok()?;
    let (mut fixed, mut widest) = (true, 0u64);
    for pair in run[1..].windows(2) {
        let d = i128::from(pair[1]) - i128::from(pair[0]);
        fixed &= d == first;
        if (first > 0 && d < 0) || (first < 0 && d > 0) {
            return None;
        }
        widest |= u64::try_from(d.unsigned_abs()).ok()?;
    }
    match (fixed, first) {
        (true, _) => Some(0),
        (false, 0) => None,
        // In DELTA the code of width 1 means 0 bits.
        (false, _) => Some(fixed_width(64 - widest.leading_zeros()).max(2)),
    }
}

fn delta_size(run: &[i64], width: u32, sign: Sign) -> usize {
    let varint_len = |v: u64| ((64 - v.leading_zeros()) as usize).div_ceil(7).max(1);
    let first = zigzag(run[1].wrapping_sub(run[0]));
    2 + varint_len(sign.raw(run[0])) + varint_len(first) + (width as usize * (run.len() - 2)).div_ceil(8)
}

/// A DELTA run: the first value, the first delta, then the absolute value of every later
/// delta (none when all are equal: width 0).
fn delta(run: &[i64], sign: Sign, out: &mut Vec<u8>) {
    let width = delta_width(run).unwrap_or(0);
    header(3, width_code(width), run.len(), out);
    varint(out, sign.raw(run[0]));
    varint(out, zigzag(run[1].wrapping_sub(run[0])));
    if width > 0 {
        pack(run[1..].windows(2).map(|p| p[1].wrapping_sub(p[0]).unsigned_abs()), width, out);
    }
}

/// Big-endian bit packing, padded to a byte.
fn pack(values: impl Iterator<Item = u64>, width: u32, out: &mut Vec<u8>) {
    let (mut acc, mut bits) = (0u128, 0u32);
    for v in values {
        acc = (acc << width) | u128::from(v);
        bits += width;
        while bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
        acc &= (1u128 << bits) - 1;
    }
    if bits > 0 {
        out.push((acc << (8 - bits)) as u8);
    }
}

/// Why a stream could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RleError {
    /// The stream ends inside a run.
    Truncated,
    /// A PATCHED_BASE run, which pageviews does not write.
    PatchedBase,
    /// Fewer values than the stripe's rows.
    Short,
}

/// Decodes `count` values from an RLEv2 stream.
pub(super) fn decode(mut buf: &[u8], sign: Sign, count: usize) -> Result<Vec<i64>, RleError> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let (&first, rest) = buf.split_first().ok_or(RleError::Short)?;
        buf = rest;
        match first >> 6 {
            0 => {
                let bytes = usize::from((first >> 3) & 7) + 1;
                let repeat = usize::from(first & 7) + 3;
                let raw = buf.get(..bytes).ok_or(RleError::Truncated)?;
                buf = &buf[bytes..];
                let v = sign.value(raw.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)));
                out.extend(std::iter::repeat_n(v, repeat));
            }
            1 => {
                let (width, len) = run_header(first, &mut buf, false)?;
                unpack(&mut buf, width, len, |raw| out.push(sign.value(raw)))?;
            }
            2 => return Err(RleError::PatchedBase),
            _ => {
                let (width, len) = run_header(first, &mut buf, true)?;
                let base = sign.value(read_varint(&mut buf).ok_or(RleError::Truncated)?);
                let step = unzigzag(read_varint(&mut buf).ok_or(RleError::Truncated)?);
                out.push(base);
                if len > 1 {
                    let mut prev = base.wrapping_add(step);
                    out.push(prev);
                    if width == 0 {
                        for _ in 2..len {
                            prev = prev.wrapping_add(step);
                            out.push(prev);
                        }
                    } else {
                        unpack(&mut buf, width, len - 2, |d| {
                            let d = d as i64;
                            prev = if step < 0 { prev.wrapping_sub(d) } else { prev.wrapping_add(d) };
                            out.push(prev);
                        })?;
                    }
                }
            }
        }
    }
    out.truncate(count);
    Ok(out)
}

fn run_header(first: u8, buf: &mut &[u8], delta: bool) -> Result<(u32, usize), RleError> {
    let (&second, rest) = buf.split_first().ok_or(RleError::Truncated)?;
    *buf = rest;
    let width = code_width((first >> 1) & 0x1f, delta);
    let len = ((usize::from(first & 1) << 8) | usize::from(second)) + 1;
    Ok((width, len))
}

fn unpack(buf: &mut &[u8], width: u32, len: usize, mut f: impl FnMut(u64)) -> Result<(), RleError> {
    let bytes = (width as usize * len).div_ceil(8);
    let packed = buf.get(..bytes).ok_or(RleError::Truncated)?;
    *buf = &buf[bytes..];
    let (mut acc, mut bits, mut next) = (0u128, 0u32, packed.iter());
    let mask = if width == 64 { u64::MAX } else { (1u64 << width) - 1 };
    for _ in 0..len {
        while bits < width {
            acc = (acc << 8) | u128::from(*next.next().ok_or(RleError::Truncated)?);
            bits += 8;
        }
        bits -= width;
        f((acc >> bits) as u64 & mask);
        acc &= (1u128 << bits) - 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(values: &[i64], sign: Sign) -> Vec<u8> {
        let mut out = Vec::new();
        encode(values, sign, &mut out);
        out
    }

    #[test]
    fn the_specs_examples_encode_byte_for_byte() {
        // Short repeat, direct and delta examples of the ORC v1 specification.
        assert_eq!(encoded(&[10000; 5], Sign::Unsigned), [0x0a, 0x27, 0x10]);
        assert_eq!(
            encoded(&[23713, 43806, 57005, 48879], Sign::Unsigned),
            [0x5e, 0x03, 0x5c, 0xa1, 0xab, 0x1e, 0xde, 0xad, 0xbe, 0xef]
        );
        assert_eq!(
            encoded(&[2, 3, 5, 7, 11, 13, 17, 19, 23, 29], Sign::Unsigned),
            [0xc6, 0x09, 0x02, 0x02, 0x22, 0x42, 0x42, 0x46]
        );
    }

    #[test]
    fn every_kind_of_run_decodes_to_what_was_encoded() {
        let cases: Vec<Vec<i64>> = vec![
            vec![],
            vec![7],
            vec![i64::MIN, i64::MAX, 0, -1, 1],
            vec![5; 3],
            vec![5; 11],
            vec![-9; 700],
            (0..2000).map(|i| 1_577_836_800_000 + i * 17).collect(),
            (0..600).map(|i| 1_000 - i * i).collect(),
            (0..1500).map(|i| (i * 7919) % 1013 - 500).collect(),
            vec![1, 1, 2, 2, 2, 2, 3, 9, 9, 9, 0, i64::MAX, i64::MAX, i64::MAX, i64::MIN],
            vec![i64::MIN, 0, i64::MAX],
        ];
        for values in cases {
            for sign in [Sign::Signed, Sign::Unsigned] {
                let bytes = encoded(&values, sign);
                assert_eq!(decode(&bytes, sign, values.len()).unwrap(), values, "{sign:?} {values:?}");
            }
        }
    }

    #[test]
    fn monotonic_event_times_cost_a_few_bits_each() {
        let times: Vec<i64> = (0..10_000).map(|i| 1_577_836_800_000 + i * 3 + i % 2).collect();
        let bytes = encoded(&times, Sign::Signed);
        assert!(bytes.len() < 10_000, "{} bytes for 10,000 times", bytes.len());
    }

    #[test]
    fn a_cut_stream_is_an_error_not_a_panic() {
        let bytes = encoded(&(0..100).map(|i| i * i).collect::<Vec<_>>(), Sign::Signed);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], Sign::Signed, 100).is_err());
        }
    }
}
