//! Protobuf primitives, written once: the varint, the field tag, length-delimited bytes, and
//! a [`Reader`] of a message's fields. The `/ipfs/kad/1.0.0` codec ([`wire`](crate::wire)),
//! the batched provide codec ([`batch`](crate::batch)) and dht-handler's record validators
//! (libp2p's `PublicKey`, IPNS's `IpnsEntry`) read with it. Never panics on any input.

/// Wire type of a varint field.
pub const WT_VARINT: u8 = 0;
/// Wire type of a 64-bit fixed-width field.
pub const WT_I64: u8 = 1;
/// Wire type of a length-delimited field (bytes, strings, messages, packed lists).
pub const WT_LEN: u8 = 2;
/// Wire type of a 32-bit fixed-width field.
pub const WT_I32: u8 = 5;
/// The longest a varint of 64 bits is.
pub const MAX_VARINT_LEN: usize = 10;

/// Why a message does not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PbError {
    /// The input ends inside a varint or a field.
    #[error("message truncated")]
    Truncated,
    /// The input is not protobuf (or not the message expected).
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

impl PbError {
    /// A short phrase saying what is wrong, for errors that carry a `&'static str`.
    pub fn reason(self) -> &'static str {
        match self {
            PbError::Truncated => "truncated protobuf",
            PbError::Malformed(why) => why,
        }
    }
}

/// Adds the `i`-th byte (from 0) of a varint to `acc`; refuses a tenth byte beyond 64 bits.
pub(crate) fn varint_step(acc: u64, byte: u8, i: usize) -> Result<u64, PbError> {
    if i == MAX_VARINT_LEN - 1 && byte > 1 {
        return Err(PbError::Malformed("varint overflows 64 bits"));
    }
    Ok(acc | (u64::from(byte & 0x7f) << (7 * i)))
}

/// Reads the fields of a message body, front to back.
#[derive(Clone, Copy, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

/// One field's value, as [`Reader::field`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// A varint (wire type 0).
    Varint(u64),
    /// Length-delimited bytes (wire type 2).
    Bytes(&'a [u8]),
    /// A fixed-width value (wire types 1 and 5), skipped.
    Fixed,
}

impl<'a> Reader<'a> {
    /// A reader of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// What is left to read.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// A varint.
    ///
    /// # Errors
    /// [`PbError::Truncated`] when the input ends inside it, [`PbError::Malformed`] when it
    /// is longer than 64 bits.
    pub fn varint(&mut self) -> Result<u64, PbError> {
        let mut v = 0u64;
        for i in 0..MAX_VARINT_LEN {
            let (&b, rest) = self.buf.split_first().ok_or(PbError::Truncated)?;
            self.buf = rest;
            v = varint_step(v, b, i)?;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(PbError::Malformed("varint longer than 10 bytes"))
    }

    /// The next `n` bytes.
    ///
    /// # Errors
    /// [`PbError::Truncated`] when fewer are left.
    pub fn take(&mut self, n: u64) -> Result<&'a [u8], PbError> {
        let n = usize::try_from(n).map_err(|_| PbError::Truncated)?;
        if n > self.buf.len() {
            return Err(PbError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A length-delimited value: its length (a varint), then that many bytes.
    ///
    /// # Errors
    /// Those of [`Reader::varint`] and [`Reader::take`].
    pub fn bytes(&mut self) -> Result<&'a [u8], PbError> {
        let n = self.varint()?;
        self.take(n)
    }

    /// The next field's number and wire type; `None` at the end of the input.
    ///
    /// # Errors
    /// Those of [`Reader::varint`]; [`PbError::Malformed`] for field number 0.
    pub fn tag(&mut self) -> Result<Option<(u64, u8)>, PbError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let field = tag >> 3;
        if field == 0 {
            return Err(PbError::Malformed("field number 0"));
        }
        Ok(Some((field, (tag & 7) as u8)))
    }

    /// Skips a value of `wire_type`.
    ///
    /// # Errors
    /// [`PbError::Truncated`]; [`PbError::Malformed`] for a wire type protobuf does not have
    /// (or the deprecated groups).
    pub fn skip(&mut self, wire_type: u8) -> Result<(), PbError> {
        match wire_type {
            WT_VARINT => self.varint().map(drop),
            WT_I64 => self.take(8).map(drop),
            WT_LEN => self.bytes().map(drop),
            WT_I32 => self.take(4).map(drop),
            _ => Err(PbError::Malformed("unsupported wire type")),
        }
    }

    /// The next field's number and value; `None` at the end of the input.
    ///
    /// # Errors
    /// Those of [`Reader::tag`] and [`Reader::skip`].
    pub fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, PbError> {
        let Some((number, wire_type)) = self.tag()? else {
            return Ok(None);
        };
        let value = match wire_type {
            WT_VARINT => Value::Varint(self.varint()?),
            WT_LEN => Value::Bytes(self.bytes()?),
            other => {
                self.skip(other)?;
                Value::Fixed
            }
        };
        Ok(Some((number, value)))
    }
}

impl<'a> Value<'a> {
    /// The varint.
    ///
    /// # Errors
    /// [`PbError::Malformed`] when the field is of another wire type.
    pub fn varint(self) -> Result<u64, PbError> {
        match self {
            Value::Varint(v) => Ok(v),
            _ => Err(PbError::Malformed("expected a varint field")),
        }
    }

    /// The bytes.
    ///
    /// # Errors
    /// [`PbError::Malformed`] when the field is of another wire type.
    pub fn bytes(self) -> Result<&'a [u8], PbError> {
        match self {
            Value::Bytes(b) => Ok(b),
            _ => Err(PbError::Malformed("expected a length-delimited field")),
        }
    }
}

/// `Ok` when a field's wire type is the one expected.
pub(crate) fn expect_wt(actual: u8, expected: u8) -> Result<(), PbError> {
    if actual == expected {
        Ok(())
    } else {
        Err(PbError::Malformed("field has the wrong wire type"))
    }
}

// --- encoding ---------------------------------------------------------------------------------

/// Appends `v` as a protobuf (and unsigned-varint) varint: seven bits a byte, lowest first.
///
/// ```
/// let mut out = Vec::new();
/// dht_proto::pb::put_varint(&mut out, 300);
/// assert_eq!(out, [0xac, 0x02]);
/// ```
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// `v` as a varint ([`put_varint`]), e.g. the length prefix of a frame.
///
/// ```
/// assert_eq!(dht_proto::pb::varint_bytes(4 * 1024 * 1024), [0x80, 0x80, 0x80, 0x02]);
/// ```
pub fn varint_bytes(v: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(varint_len(v));
    put_varint(&mut out, v);
    out
}

pub(crate) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

pub(crate) fn put_tag(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(out, field, WT_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// The encoded length of a length-delimited field of `len` bytes.
pub(crate) fn len_field(field: u32, len: usize) -> usize {
    varint_len(u64::from(field) << 3) + varint_len(len as u64) + len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(buf: &[u8]) -> Result<Vec<(u64, String)>, PbError> {
        let mut r = Reader::new(buf);
        let mut out = Vec::new();
        while let Some((n, v)) = r.field()? {
            out.push((
                n,
                match v {
                    Value::Varint(v) => format!("v{v}"),
                    Value::Bytes(b) => format!("b{b:?}"),
                    Value::Fixed => "f".into(),
                },
            ));
        }
        Ok(out)
    }

    #[test]
    fn reader_cases() {
        let check = |buf: &[u8], expected: Result<Vec<(u64, &str)>, PbError>| {
            let expected =
                expected.map(|v| v.into_iter().map(|(n, s)| (n, s.to_owned())).collect());
            assert_eq!(fields(buf), expected, "{buf:02x?}");
        };
        let malformed = PbError::Malformed;
        check(&[], Ok(vec![]));
        check(&[0x08, 0x96, 0x01], Ok(vec![(1, "v150")]));
        check(&[0x12, 0x02, 7, 8], Ok(vec![(2, "b[7, 8]")]));
        check(
            &[0x19, 0, 0, 0, 0, 0, 0, 0, 0, 0x25, 1, 2, 3, 4],
            Ok(vec![(3, "f"), (4, "f")]),
        );
        check(&[0x12, 0x05, 7], Err(PbError::Truncated));
        check(&[0x08], Err(PbError::Truncated));
        check(&[0x08, 0xff], Err(PbError::Truncated));
        check(&[0x00, 0x01], Err(malformed("field number 0")));
        check(&[0x0b], Err(malformed("unsupported wire type")));
        let max = [
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        check(&max, Ok(vec![(1, "v18446744073709551615")]));
        let over = [
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
        ];
        check(&over, Err(malformed("varint overflows 64 bits")));
        let long = [
            0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        check(&long, Err(PbError::Truncated));
    }

    #[test]
    fn varint_lengths() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
            assert_eq!(Reader::new(&b).varint(), Ok(v));
        }
    }
}
