//! [`SeqValidator`]: value records for experiments, newest sequence number wins.

use dht_proto::{Record, UnixSecs, ValidationError, Validator, split_key};

/// The record namespace of [`SeqValidator`]: every simulated handler accepts it besides
/// `/pk/` and `/ipns/`.
pub const SIM_NAMESPACE: &str = "sim";

/// Validates `/sim/<anything>` records whose value is `<sequence number>` or
/// `<sequence number>:<payload>` in ASCII decimal; the highest sequence number is the best
/// record (the first of equals). Registered in every simulated node's handler, and usable as
/// the client's validator, so get/put value experiments need no signatures.
///
/// ```
/// use dht_proto::Validator;
/// use dht_test_kit::SeqValidator;
///
/// let (old, new) = (SeqValidator::record("/sim/a", 1), SeqValidator::record("/sim/a", 2));
/// assert_eq!(SeqValidator.select(b"/sim/a", &[&old.value, &new.value]), Ok(1));
/// assert_eq!(new.value, b"2");
/// assert!(SeqValidator.validate(b"/sim/a", b"two", 0).is_err());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SeqValidator;

impl SeqValidator {
    /// A record of `key` with sequence number `seq`.
    pub fn record(key: impl Into<Vec<u8>>, seq: u64) -> Record {
        Record::new(key, seq.to_string())
    }

    /// The sequence number of a value, if it is well formed.
    pub fn seq(value: &[u8]) -> Option<u64> {
        let digits = value.split(|&b| b == b':').next()?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    }

    fn best(values: &[&[u8]]) -> usize {
        let mut best: Option<(usize, u64)> = None;
        for (i, v) in values.iter().enumerate() {
            let seq = Self::seq(v).unwrap_or(0);
            if best.is_none_or(|(_, b)| seq > b) {
                best = Some((i, seq));
            }
        }
        best.map_or(0, |(i, _)| i)
    }
}

impl Validator for SeqValidator {
    fn validate(&self, key: &[u8], value: &[u8], _now: UnixSecs) -> Result<(), ValidationError> {
        match split_key(key) {
            Some((ns, _)) if ns == SIM_NAMESPACE.as_bytes() => {}
            _ => return Err(ValidationError::InvalidKey("not a /sim/ key")),
        }
        Self::seq(value)
            .map(|_| ())
            .ok_or(ValidationError::Malformed("value is not <seq>[:<payload>]"))
    }

    fn select(&self, _key: &[u8], values: &[&[u8]]) -> Result<usize, ValidationError> {
        if values.is_empty() {
            return Err(ValidationError::NoRecords);
        }
        Ok(Self::best(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_cases() {
        let check = |v: &str, expected: Option<u64>| {
            assert_eq!(SeqValidator::seq(v.as_bytes()), expected, "{v}")
        };
        check("0", Some(0));
        check("17", Some(17));
        check("17:payload", Some(17));
        check("17:a:b", Some(17));
        check("", None);
        check(":x", None);
        check("-1", None);
        check("1x", None);
        check("99999999999999999999999", None);
    }

    #[test]
    fn select_prefers_highest_then_first() {
        let check = |values: &[&str], expected: usize| {
            let v: Vec<&[u8]> = values.iter().map(|s| s.as_bytes()).collect();
            assert_eq!(
                Validator::select(&SeqValidator, b"/sim/k", &v),
                Ok(expected),
                "{values:?}"
            );
        };
        check(&["1"], 0);
        check(&["1", "2"], 1);
        check(&["2", "1"], 0);
        check(&["2:a", "2:b"], 0);
        check(&["bad", "0"], 0);
        assert!(Validator::select(&SeqValidator, b"/sim/k", &[]).is_err());
    }

    #[test]
    fn only_sim_keys() {
        assert!(Validator::validate(&SeqValidator, b"/sim/k", b"1", 0).is_ok());
        assert!(Validator::validate(&SeqValidator, b"/pk/k", b"1", 0).is_err());
        assert!(Validator::validate(&SeqValidator, b"/sim/k", b"x", 0).is_err());
    }
}
