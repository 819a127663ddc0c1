//! The error type shared by the three stores.

use std::path::PathBuf;

/// What can go wrong in a store.
///
/// Stores never panic on what they read from disk or receive from callers: a value that
/// does not decode is [`StoreError::Corrupt`], a full disk is [`StoreError::DiskFull`], a
/// database held by another process (or another handle in this process) is
/// [`StoreError::Locked`].
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database directory is locked by another process or another open handle.
    #[error("database at {path} is locked by another process or handle")]
    Locked {
        /// The database directory.
        path: PathBuf,
    },
    /// The disk (or quota) is full; the write was not applied.
    ///
    /// RocksDB then refuses writes until there is room again; it looks for free space every
    /// few seconds and resumes by itself, without a reopen.
    #[error("no space left on the device holding the database")]
    DiskFull,
    /// A stored key or value does not decode: damaged data or a foreign writer.
    #[error(
        "corrupt data in the store: {what}{}",
        source.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
    )]
    Corrupt {
        /// What did not decode, and why.
        what: String,
        /// The decoder's (or RocksDB's) error, where there is one.
        #[source]
        source: Option<dht_proto::SharedError>,
    },
    /// The database was written by a newer (or unknown) version of this crate.
    #[error("unsupported on-disk format version {found} (this build reads version {expected})")]
    UnsupportedFormat {
        /// The version found on disk.
        found: u32,
        /// The version this build reads and writes.
        expected: u32,
    },
    /// A record that cannot be stored, e.g. a key longer than the encoding allows.
    #[error("record cannot be stored: {reason}")]
    InvalidRecord {
        /// Why.
        reason: String,
    },
    /// An I/O error outside the database engine (e.g. creating the directory).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Any other error reported by the database engine.
    #[error("database error: {0}")]
    Db(#[source] dht_proto::SharedError),
    /// The database lacks a column family this crate creates when it opens one: it was
    /// changed by another program.
    #[error("the database has no column family {0}")]
    MissingColumnFamily(&'static str),
    /// A [`ProviderStore`](crate::ProviderStore) answered a batch of records with another
    /// number of outcomes than records: the implementation breaks the trait's contract.
    /// Nothing is acknowledged.
    #[error("the store answered {outcomes} outcomes for {records} records")]
    WrongOutcomeCount {
        /// Records in the batch.
        records: usize,
        /// Outcomes the store answered.
        outcomes: usize,
    },
    /// A setting that cannot work (a zero count); nothing was opened or started.
    #[error(transparent)]
    InvalidSetting(#[from] dht_proto::InvalidSetting),
    /// The store is shutting down or closed.
    #[error("the store is closed")]
    Closed,
    /// A [`GroupWriter`](crate::GroupWriter)'s queue is full: the records were not taken.
    /// Nothing is queued on the caller's behalf; try again later or refuse the request.
    #[error("the write queue is full ({queued} records queued, at most {limit})")]
    Busy {
        /// Records queued when the submission came.
        queued: usize,
        /// The most records the queue holds ([`WriterConfig::max_queued_records`](crate::WriterConfig::max_queued_records)).
        limit: usize,
    },
    /// The database directory holds as much as [`Config::max_disk_bytes`](crate::Config::max_disk_bytes)
    /// allows: a record another peer sent was not stored. Not the sender's fault; taken
    /// again once expiry has freed space.
    #[error("the disk quota is used up ({used} of {quota} bytes)")]
    QuotaExceeded {
        /// Bytes the database takes (as last measured, plus what was written since).
        used: u64,
        /// The quota.
        quota: u64,
    },
}

impl StoreError {
    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        StoreError::Corrupt {
            what: what.into(),
            source: None,
        }
    }

    /// [`StoreError::Corrupt`] with the error that made `what` undecodable as its source.
    #[cfg_attr(not(feature = "rocksdb"), allow(dead_code))]
    pub(crate) fn corrupt_because(
        what: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Corrupt {
            what: what.to_owned(),
            source: Some(dht_proto::SharedError::new(source)),
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        StoreError::InvalidRecord {
            reason: reason.into(),
        }
    }

    /// The same error again, for each of many callers answered by one failed write: the
    /// variants are kept, an I/O error keeps its kind and message.
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            StoreError::Locked { path } => StoreError::Locked { path: path.clone() },
            StoreError::DiskFull => StoreError::DiskFull,
            StoreError::Corrupt { what, source } => StoreError::Corrupt {
                what: what.clone(),
                source: source.clone(),
            },
            StoreError::UnsupportedFormat { found, expected } => StoreError::UnsupportedFormat {
                found: *found,
                expected: *expected,
            },
            StoreError::InvalidRecord { reason } => StoreError::InvalidRecord {
                reason: reason.clone(),
            },
            StoreError::Io(e) => StoreError::Io(std::io::Error::new(e.kind(), e.to_string())),
            StoreError::Db(source) => StoreError::Db(source.clone()),
            StoreError::MissingColumnFamily(name) => StoreError::MissingColumnFamily(name),
            StoreError::WrongOutcomeCount { records, outcomes } => StoreError::WrongOutcomeCount {
                records: *records,
                outcomes: *outcomes,
            },
            StoreError::InvalidSetting(e) => StoreError::InvalidSetting(*e),
            StoreError::Closed => StoreError::Closed,
            StoreError::Busy { queued, limit } => StoreError::Busy {
                queued: *queued,
                limit: *limit,
            },
            StoreError::QuotaExceeded { used, quota } => StoreError::QuotaExceeded {
                used: *used,
                quota: *quota,
            },
        }
    }

    /// Maps a RocksDB error to a store error: full disk, corruption and shutdown get their
    /// own variants, the rest is [`StoreError::Db`].
    #[cfg(feature = "rocksdb")]
    pub(crate) fn from_rocks(e: rocksdb::Error) -> Self {
        let msg = e.to_string();
        if is_no_space(&msg) {
            return StoreError::DiskFull;
        }
        match e.kind() {
            rocksdb::ErrorKind::Corruption => StoreError::corrupt_because("RocksDB", e),
            rocksdb::ErrorKind::ShutdownInProgress => StoreError::Closed,
            _ => StoreError::Db(dht_proto::SharedError::new(e)),
        }
    }

    /// Like [`StoreError::from_rocks`], and recognises the lock error of `DB::open`.
    #[cfg(feature = "rocksdb")]
    pub(crate) fn from_rocks_open(e: rocksdb::Error, path: &std::path::Path) -> Self {
        if is_lock_error(e.as_ref()) {
            return StoreError::Locked {
                path: path.to_path_buf(),
            };
        }
        Self::from_rocks(e)
    }
}

/// RocksDB reports ENOSPC as `IO error: No space left on device` (from `strerror`), and its
/// own space checks (`SstFileManager`) as `IO error: No space ...`.
#[cfg(feature = "rocksdb")]
fn is_no_space(msg: &str) -> bool {
    msg.to_ascii_lowercase().contains("no space")
}

/// Another process: `IO error: While lock file: <path>/LOCK: Resource temporarily unavailable`.
/// This process: `IO error: lock hold by current process, acquire time … : <path>/LOCK: No locks available`.
#[cfg(feature = "rocksdb")]
fn is_lock_error(msg: &str) -> bool {
    msg.starts_with("IO error")
        && (msg.contains("lock file") || msg.contains("lock hold by current process"))
}

#[cfg(all(test, feature = "rocksdb"))]
mod tests {
    use super::*;

    #[test]
    fn classify_messages() {
        fn check(msg: &str, lock: bool, space: bool) {
            assert_eq!(is_lock_error(msg), lock, "{msg}");
            assert_eq!(is_no_space(msg), space, "{msg}");
        }
        check(
            "IO error: While lock file: /tmp/x/LOCK: Resource temporarily unavailable",
            true,
            false,
        );
        check(
            "IO error: lock hold by current process, acquire time 1 acquiring thread 2: /tmp/x/LOCK: No locks available",
            true,
            false,
        );
        check(
            "IO error: While appending to file: /tmp/x/000004.log: No space left on device",
            false,
            true,
        );
        check("Corruption: block checksum mismatch", false, false);
    }
}
