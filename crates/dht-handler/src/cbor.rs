//! A minimal DAG-CBOR reader for the `data` document of an IPNS record: a map with string
//! keys holding `Value`, `Validity` (byte strings), `ValidityType`, `Sequence` and `TTL`
//! (unsigned integers), and any extra fields, which are checked for well-formedness and
//! skipped. Never panics on any input.
//!
//! Stricter than plain CBOR where DAG-CBOR is: no indefinite lengths, no tag but 42 (CID),
//! no simple values but `false`, `true` and `null`, only 64-bit floats, text keys, no
//! duplicate keys, nothing after the document. Key order and minimal integer encoding are
//! not enforced (the signature covers the bytes as sent, and Go's decoder does not enforce
//! them either).

const MAJOR_UINT: u8 = 0;
const MAJOR_NINT: u8 = 1;
const MAJOR_BYTES: u8 = 2;
const MAJOR_TEXT: u8 = 3;
const MAJOR_ARRAY: u8 = 4;
const MAJOR_MAP: u8 = 5;
const MAJOR_TAG: u8 = 6;
const MAJOR_SIMPLE: u8 = 7;

/// Deepest nesting of extra fields accepted.
const MAX_DEPTH: usize = 32;

/// The signed fields of an IPNS record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct IpnsData<'a> {
    pub(crate) value: &'a [u8],
    pub(crate) validity: &'a [u8],
    pub(crate) validity_type: u64,
    pub(crate) sequence: u64,
    pub(crate) ttl: u64,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, &'static str> {
        let (&b, rest) = self.buf.split_first().ok_or("truncated CBOR")?;
        self.buf = rest;
        Ok(b)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], &'static str> {
        let n = usize::try_from(n).map_err(|_| "CBOR length too large")?;
        if n > self.buf.len() {
            return Err("truncated CBOR");
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A data item's head: major type, additional information and argument.
    fn head_info(&mut self) -> Result<(u8, u8, u64), &'static str> {
        let b = self.byte()?;
        let major = b >> 5;
        let info = b & 0x1f;
        let arg = match info {
            0..=23 => u64::from(info),
            24..=27 => {
                let bytes = self.take(1 << (info - 24))?;
                bytes.iter().fold(0u64, |v, &x| (v << 8) | u64::from(x))
            }
            31 => return Err("indefinite-length CBOR is not DAG-CBOR"),
            _ => return Err("reserved CBOR additional information"),
        };
        Ok((major, info, arg))
    }

    /// A data item's head: major type and argument.
    fn head(&mut self) -> Result<(u8, u64), &'static str> {
        let (major, _, arg) = self.head_info()?;
        Ok((major, arg))
    }

    /// A count of items that must each take at least one byte.
    fn count(&self, n: u64, per_item: u64) -> Result<u64, &'static str> {
        if n.saturating_mul(per_item) > self.buf.len() as u64 {
            return Err("CBOR count exceeds the data");
        }
        Ok(n)
    }

    fn text(&mut self) -> Result<&'a [u8], &'static str> {
        match self.head()? {
            (MAJOR_TEXT, n) => {
                let s = self.take(n)?;
                std::str::from_utf8(s).map_err(|_| "CBOR text is not UTF-8")?;
                Ok(s)
            }
            _ => Err("DAG-CBOR map keys must be strings"),
        }
    }

    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], &'static str> {
        match self.head()? {
            (MAJOR_BYTES, n) => self.take(n),
            _ => Err(field),
        }
    }

    fn uint(&mut self, field: &'static str) -> Result<u64, &'static str> {
        match self.head()? {
            (MAJOR_UINT, n) => Ok(n),
            _ => Err(field),
        }
    }

    /// Checks and skips one data item.
    fn skip(&mut self, depth: usize) -> Result<(), &'static str> {
        if depth > MAX_DEPTH {
            return Err("CBOR nested too deeply");
        }
        let (major, info, arg) = self.head_info()?;
        match major {
            MAJOR_UINT | MAJOR_NINT => {}
            MAJOR_BYTES => {
                self.take(arg)?;
            }
            MAJOR_TEXT => {
                let s = self.take(arg)?;
                std::str::from_utf8(s).map_err(|_| "CBOR text is not UTF-8")?;
            }
            MAJOR_ARRAY => {
                for _ in 0..self.count(arg, 1)? {
                    self.skip(depth + 1)?;
                }
            }
            MAJOR_MAP => {
                for _ in 0..self.count(arg, 2)? {
                    self.text()?;
                    self.skip(depth + 1)?;
                }
            }
            MAJOR_TAG => {
                if arg != 42 {
                    return Err("DAG-CBOR allows no tag but 42");
                }
                self.bytes("tag 42 must hold a byte string")?;
            }
            MAJOR_SIMPLE => match info {
                // false, true, null; and a 64-bit float, whose 8 bytes the head consumed.
                20..=22 | 27 => {}
                _ => return Err("DAG-CBOR allows only false, true, null and 64-bit floats"),
            },
            _ => return Err("unknown CBOR major type"),
        }
        Ok(())
    }
}

/// Decodes the `data` document of an IPNS record. Extra fields are allowed (the spec lets
/// publishers add metadata); the five signed fields are required with their types.
pub(crate) fn decode_ipns_data(buf: &[u8]) -> Result<IpnsData<'_>, &'static str> {
    let mut r = Reader { buf };
    let n = match r.head()? {
        (MAJOR_MAP, n) => r.count(n, 2)?,
        _ => return Err("IPNS data is not a CBOR map"),
    };
    let mut value = None;
    let mut validity = None;
    let mut validity_type = None;
    let mut sequence = None;
    let mut ttl = None;
    let mut keys: Vec<&[u8]> = Vec::new();
    for _ in 0..n {
        let key = r.text()?;
        keys.push(key);
        match key {
            b"Value" => value = Some(r.bytes("IPNS data Value is not bytes")?),
            b"Validity" => validity = Some(r.bytes("IPNS data Validity is not bytes")?),
            b"ValidityType" => {
                validity_type = Some(r.uint("IPNS data ValidityType is not an unsigned integer")?)
            }
            b"Sequence" => {
                sequence = Some(r.uint("IPNS data Sequence is not an unsigned integer")?)
            }
            b"TTL" => ttl = Some(r.uint("IPNS data TTL is not an unsigned integer")?),
            _ => r.skip(1)?,
        }
    }
    if !r.buf.is_empty() {
        return Err("bytes after the IPNS data document");
    }
    keys.sort_unstable();
    if keys.windows(2).any(|w| w.first() == w.get(1)) {
        return Err("duplicate key in IPNS data");
    }
    Ok(IpnsData {
        value: value.ok_or("IPNS data has no Value")?,
        validity: validity.ok_or("IPNS data has no Validity")?,
        validity_type: validity_type.ok_or("IPNS data has no ValidityType")?,
        sequence: sequence.ok_or("IPNS data has no Sequence")?,
        ttl: ttl.ok_or("IPNS data has no TTL")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The data of a record with Value "/ipfs/x", Validity "v", ValidityType 0, Sequence 1,
    /// TTL 2, in DAG-CBOR key order (length, then bytes), with `extra` pairs appended to the
    /// map (count adjusted).
    fn doc(extra: &[u8], extra_pairs: u8) -> Vec<u8> {
        let mut v = vec![0xa0 | (5 + extra_pairs)];
        v.extend_from_slice(b"\x63TTL\x02");
        v.extend_from_slice(b"\x65Value\x47/ipfs/x");
        v.extend_from_slice(b"\x68Sequence\x01");
        v.extend_from_slice(b"\x68Validity\x41v");
        v.extend_from_slice(b"\x6cValidityType\x00");
        v.extend_from_slice(extra);
        v
    }

    fn ok() -> IpnsData<'static> {
        IpnsData {
            value: b"/ipfs/x",
            validity: b"v",
            validity_type: 0,
            sequence: 1,
            ttl: 2,
        }
    }

    #[test]
    fn decode_cases() {
        let check = |buf: &[u8], expected: Result<IpnsData<'static>, &'static str>| {
            assert_eq!(decode_ipns_data(buf), expected, "{}", hex::encode(buf));
        };
        check(&doc(b"", 0), Ok(ok()));
        // Extra fields of every DAG-CBOR kind are skipped.
        check(&doc(b"\x62_a\x20", 1), Ok(ok())); // -1
        check(&doc(b"\x62_b\x82\xf5\xf6", 1), Ok(ok())); // [true, null]
        check(&doc(b"\x62_c\xa1\x61k\x61v", 1), Ok(ok())); // {"k": "v"}
        check(&doc(b"\x62_d\xd8\x2a\x42\x00\x01", 1), Ok(ok())); // CID tag
        check(&doc(b"\x62_e\xfb\x3f\xf0\0\0\0\0\0\0", 1), Ok(ok())); // 1.0
        check(&doc(b"\x62_f\x19\x01\x00", 1), Ok(ok())); // 256, 2-byte argument
        // Non-DAG-CBOR extras are refused.
        check(
            &doc(b"\x62_g\xf9\x3c\x00", 1),
            Err("DAG-CBOR allows only false, true, null and 64-bit floats"),
        );
        check(
            &doc(b"\x62_h\xf7", 1),
            Err("DAG-CBOR allows only false, true, null and 64-bit floats"),
        );
        check(
            &doc(b"\x62_i\xc1\x00", 1),
            Err("DAG-CBOR allows no tag but 42"),
        );
        check(
            &doc(b"\x62_j\x9f\xff", 1),
            Err("indefinite-length CBOR is not DAG-CBOR"),
        );
        check(
            &doc(b"\x62_k\x1c", 1),
            Err("reserved CBOR additional information"),
        );
        check(
            &doc(b"\x01\x00", 1),
            Err("DAG-CBOR map keys must be strings"),
        );
        check(
            &doc(b"\x62_l\x62\xff\xfe", 1),
            Err("CBOR text is not UTF-8"),
        );
        check(&doc(b"\x63TTL\x02", 1), Err("duplicate key in IPNS data"));
        check(&doc(b"\x00", 0), Err("bytes after the IPNS data document"));
        // Deep nesting is bounded.
        let mut deep = b"\x62_m".to_vec();
        deep.extend(std::iter::repeat_n(0x81, 40));
        deep.push(0x00);
        check(&doc(&deep, 1), Err("CBOR nested too deeply"));
        // Huge counts and lengths do not allocate or loop.
        check(
            &doc(b"\x62_n\x9b\xff\xff\xff\xff\xff\xff\xff\xff", 1),
            Err("CBOR count exceeds the data"),
        );
        check(
            &doc(b"\x62_o\x5b\xff\xff\xff\xff\xff\xff\xff\xff", 1),
            Err("truncated CBOR"),
        );
        check(
            b"\xbb\xff\xff\xff\xff\xff\xff\xff\xff",
            Err("CBOR count exceeds the data"),
        );
        // Wrong types and missing fields of the signed fields.
        check(b"\x80", Err("IPNS data is not a CBOR map"));
        check(b"", Err("truncated CBOR"));
        check(
            b"\xa1\x63TTL\x20",
            Err("IPNS data TTL is not an unsigned integer"),
        );
        check(b"\xa1\x65Value\x61x", Err("IPNS data Value is not bytes"));
        check(b"\xa1\x63TTL\x02", Err("IPNS data has no Value"));
        let mut no_seq = doc(b"", 0);
        no_seq[0] = 0xa4;
        let seq_at = no_seq
            .windows(9)
            .position(|w| w == b"\x68Sequence")
            .expect("present");
        no_seq.drain(seq_at..seq_at + 10);
        check(&no_seq, Err("IPNS data has no Sequence"));
    }
}
