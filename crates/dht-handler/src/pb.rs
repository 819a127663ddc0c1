//! A minimal protobuf reader for the two small messages the validators parse (libp2p's
//! `PublicKey` and IPNS's `IpnsEntry`). Never panics on any input.

pub(crate) const WT_VARINT: u8 = 0;
pub(crate) const WT_I64: u8 = 1;
pub(crate) const WT_LEN: u8 = 2;
pub(crate) const WT_I32: u8 = 5;

/// Reads fields from a protobuf message body.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

/// One field's value.
pub(crate) enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A fixed-width value (wire types 1 and 5), which neither message uses.
    Fixed,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn varint(&mut self) -> Result<u64, &'static str> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            if i == 9 && b > 1 {
                return Err("varint overflows 64 bits");
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes")
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.buf.len() {
            return Err("truncated field");
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field number and its value, or `None` at the end of the message.
    pub(crate) fn field(&mut self) -> Result<Option<(u64, Value<'a>)>, &'static str> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let number = tag >> 3;
        if number == 0 {
            return Err("field number 0");
        }
        let value = match (tag & 7) as u8 {
            WT_VARINT => Value::Varint(self.varint()?),
            WT_LEN => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
                Value::Bytes(self.take(len)?)
            }
            WT_I64 => {
                self.take(8)?;
                Value::Fixed
            }
            WT_I32 => {
                self.take(4)?;
                Value::Fixed
            }
            _ => return Err("unsupported wire type"),
        };
        Ok(Some((number, value)))
    }
}

impl<'a> Value<'a> {
    pub(crate) fn varint(self) -> Result<u64, &'static str> {
        match self {
            Value::Varint(v) => Ok(v),
            _ => Err("expected a varint field"),
        }
    }

    pub(crate) fn bytes(self) -> Result<&'a [u8], &'static str> {
        match self {
            Value::Bytes(b) => Ok(b),
            _ => Err("expected a length-delimited field"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(buf: &[u8]) -> Result<Vec<(u64, String)>, &'static str> {
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
        let check = |buf: &[u8], expected: Result<Vec<(u64, &str)>, &'static str>| {
            let expected =
                expected.map(|v| v.into_iter().map(|(n, s)| (n, s.to_owned())).collect());
            assert_eq!(fields(buf), expected, "{buf:02x?}");
        };
        check(&[], Ok(vec![]));
        check(&[0x08, 0x96, 0x01], Ok(vec![(1, "v150")]));
        check(&[0x12, 0x02, 7, 8], Ok(vec![(2, "b[7, 8]")]));
        check(
            &[0x19, 0, 0, 0, 0, 0, 0, 0, 0, 0x25, 1, 2, 3, 4],
            Ok(vec![(3, "f"), (4, "f")]),
        );
        check(&[0x12, 0x05, 7], Err("truncated field"));
        check(&[0x08], Err("truncated varint"));
        check(&[0x08, 0xff], Err("truncated varint"));
        check(&[0x00, 0x01], Err("field number 0"));
        check(&[0x0b], Err("unsupported wire type"));
        check(
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            Ok(vec![(1, "v18446744073709551615")]),
        );
        check(
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
            ],
            Err("varint overflows 64 bits"),
        );
        check(
            &[
                0x12, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            Err("truncated field"),
        );
    }
}
