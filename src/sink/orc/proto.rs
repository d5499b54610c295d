//! The few protocol-buffer messages of an ORC file's stripe footers, footer and postscript,
//! written and read field by field.
//!
//! ORC's metadata is protobuf (`orc_proto.proto`), but a file uses a handful of scalar,
//! string and nested fields of it; writing them by hand is a few dozen lines where a
//! protobuf crate and its generated code would be a build step of their own.

/// A message being written: fields in the order they are added.
#[derive(Debug, Default, Clone)]
pub(super) struct Message(Vec<u8>);

impl Message {
    pub(super) fn new() -> Self {
        Message(Vec::new())
    }

    fn key(&mut self, field: u32, wire: u8) {
        varint(&mut self.0, (u64::from(field) << 3) | u64::from(wire));
    }

    /// An unsigned varint field (`uint32`, `uint64`, `bool`, an enum).
    pub(super) fn uint(&mut self, field: u32, value: u64) -> &mut Self {
        self.key(field, 0);
        varint(&mut self.0, value);
        self
    }

    /// A `sint64` field: zigzag, then varint.
    pub(super) fn sint(&mut self, field: u32, value: i64) -> &mut Self {
        self.uint(field, zigzag(value))
    }

    /// A length-delimited field: `string`, `bytes`, or a nested message.
    pub(super) fn bytes(&mut self, field: u32, value: &[u8]) -> &mut Self {
        self.key(field, 2);
        varint(&mut self.0, value.len() as u64);
        self.0.extend_from_slice(value);
        self
    }

    pub(super) fn message(&mut self, field: u32, value: &Message) -> &mut Self {
        self.bytes(field, &value.0)
    }

    /// A `repeated uint32 [packed = true]` field.
    pub(super) fn packed(&mut self, field: u32, values: &[u64]) -> &mut Self {
        let mut body = Vec::new();
        for &v in values {
            varint(&mut body, v);
        }
        self.bytes(field, &body)
    }

    pub(super) fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// Appends `value` as a base-128 varint, low bits first.
pub(super) fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Moves the sign to the lowest bit, so small negative numbers are small varints.
pub(super) fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

pub(super) fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Reads a varint at the start of `buf`, advancing it; `None` past its end or past 64 bits.
pub(super) fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// A field's value as read: what a reader of these messages needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A fixed-width value, skipped.
    Fixed,
}

impl<'a> Value<'a> {
    pub(super) fn uint(self) -> Option<u64> {
        match self {
            Value::Varint(v) => Some(v),
            _ => None,
        }
    }

    pub(super) fn bytes(self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
}

/// The fields of an encoded message, in order; `Err(())` on a malformed one (the caller
/// names the message).
pub(super) struct Fields<'a>(pub(super) &'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Value<'a>), ()>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let mut field = || {
            let key = read_varint(&mut self.0).ok_or(())?;
            let number = u32::try_from(key >> 3).map_err(|_| ())?;
            let value = match key & 7 {
                0 => Value::Varint(read_varint(&mut self.0).ok_or(())?),
                1 | 5 => {
                    let width = if key & 7 == 1 { 8 } else { 4 };
                    self.0 = self.0.get(width..).ok_or(())?;
                    Value::Fixed
                }
                2 => {
                    let len = usize::try_from(read_varint(&mut self.0).ok_or(())?).map_err(|_| ())?;
                    let (value, rest) = (self.0.get(..len).ok_or(())?, &self.0[len..]);
                    self.0 = rest;
                    Value::Bytes(value)
                }
                _ => return Err(()),
            };
            Ok((number, value))
        };
        let item = field();
        if item.is_err() {
            self.0 = &[];
        }
        Some(item)
    }
}

/// The values of a packed repeated varint field.
pub(super) fn unpack(mut packed: &[u8]) -> Result<Vec<u64>, ()> {
    let mut out = Vec::new();
    while !packed.is_empty() {
        out.push(read_varint(&mut packed).ok_or(())?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_read_back_as_written() {
        let mut inner = Message::new();
        inner.uint(1, 3);
        let mut m = Message::new();
        m.uint(1, 300).sint(2, -2).bytes(3, b"ORC").message(4, &inner).packed(5, &[0, 12]).uint(8000, 1);
        let bytes = m.into_bytes();
        let fields: Vec<_> = Fields(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(fields[0], (1, Value::Varint(300)));
        assert_eq!(unzigzag(fields[1].1.uint().unwrap()), -2);
        assert_eq!(fields[2], (3, Value::Bytes(b"ORC")));
        assert_eq!(fields[3], (4, Value::Bytes(&[8, 3])));
        assert_eq!(unpack(fields[4].1.bytes().unwrap()).unwrap(), [0, 12]);
        assert_eq!(fields[5], (8000, Value::Varint(1)));
        assert!(Fields(&bytes[..bytes.len() - 1]).any(|f| f.is_err()), "a cut message is malformed");
    }

    #[test]
    fn zigzag_round_trips_the_extremes() {
        for v in [0, -1, 1, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!((zigzag(-1), zigzag(1)), (1, 2));
    }
}
