//! Judging value records: [`RecordValidator`].

use std::sync::Arc;

use dht_proto::Record;

/// Judges the value records a get-value walk collects.
///
/// The node implements it with its record validators (public keys, IPNS); this crate never
/// looks inside a value. Implemented for `&T`, `Arc<T>` and `Box<T>`.
///
/// ```
/// use dht_proto::Record;
/// use dht_routing::RecordValidator;
///
/// /// Values are decimal sequence numbers; the highest wins.
/// struct Counter;
///
/// impl RecordValidator for Counter {
///     fn validate(&self, record: &Record) -> bool {
///         std::str::from_utf8(&record.value).is_ok_and(|v| v.parse::<u64>().is_ok())
///     }
///     fn select(&self, records: &[Record]) -> usize {
///         let n = |r: &Record| std::str::from_utf8(&r.value).ok().and_then(|v| v.parse::<u64>().ok());
///         (0..records.len()).max_by_key(|&i| (n(&records[i]), std::cmp::Reverse(i))).unwrap_or(0)
///     }
/// }
///
/// let records = [Record::new("/c/x", "3"), Record::new("/c/x", "7")];
/// assert_eq!(Counter.select(&records), 1);
/// assert!(!Counter.validate(&Record::new("/c/x", "seven")));
/// ```
pub trait RecordValidator: Send + Sync {
    /// Whether `record` is valid for its key (signature, expiry, format).
    fn validate(&self, record: &Record) -> bool;

    /// The index of the best of `records` (all valid, all for one key, never empty), e.g. the
    /// IPNS record with the highest sequence number. On ties, prefer the first.
    fn select(&self, records: &[Record]) -> usize;
}

macro_rules! forward_validator {
    ($($ty:ty),*) => {$(
        impl<T: RecordValidator + ?Sized> RecordValidator for $ty {
            fn validate(&self, record: &Record) -> bool {
                (**self).validate(record)
            }
            fn select(&self, records: &[Record]) -> usize {
                (**self).select(records)
            }
        }
    )*};
}

forward_validator!(&T, Arc<T>, Box<T>);
