//! The little state a sweep keeps across restarts, and where it is kept.
//!
//! Keys live in the [`Keystore`](dht_provider_store::Keystore). Beside them the sweep needs
//! only: when its cycles started (the epoch), the interval they were walked at (so that a
//! changed interval rescales the schedule), its slice length, how far the current cycle got
//! ([`Progress`]), which slices hold keys whose first provide has not finished yet, and what
//! failed and waits for a retry. The pending set is written *before* `start_providing`
//! acknowledges, so keys added just before a `kill -9` are provided right after the restart
//! rather than at their next reprovide time; the retries are kept so that a restart sends
//! only what failed (each weak key only to the servers it missed), not whole slices.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
};

use dht_proto::{Key, PeerId, Prefix, UnixSecs};
use parking_lot::Mutex;

use crate::{Multihash, error::ProviderError, schedule::Progress};

/// A short tag for a server: 8 bytes of its peer id, enough to tell the servers of a region
/// apart, and a tenth of a [`PeerId`]'s size.
pub type PeerTag = u64;

/// The [`PeerTag`] of `peer`: the last 8 bytes of its id (the public key, or its digest).
pub fn peer_tag(peer: &PeerId) -> PeerTag {
    let bytes = peer.to_bytes();
    let mut tail = [0u8; 8];
    let n = bytes.len().min(8);
    tail[8 - n..].copy_from_slice(&bytes[bytes.len() - n..]);
    u64::from_be_bytes(tail)
}

/// Which of a slice's keys in the keystore are still to be sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Unsent {
    /// None of them.
    #[default]
    Nothing,
    /// All of them.
    All,
    /// Those after this Kademlia key (a job stopped there: its deadline came, or a read
    /// failed).
    After(Key),
}

impl Unsent {
    /// What is unsent if either `self` or `other` is: the earlier of the two.
    pub fn or(self, other: Unsent) -> Unsent {
        match (self, other) {
            (Unsent::All, _) | (_, Unsent::All) => Unsent::All,
            (Unsent::After(a), Unsent::After(b)) => Unsent::After(a.min(b)),
            (Unsent::Nothing, x) | (x, Unsent::Nothing) => x,
        }
    }
}

/// A key that reached too few servers, and the servers it did reach: its retry goes only
/// to the others among its closest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeakKey {
    /// The key.
    pub key: Multihash,
    /// The servers that took it.
    pub reached: Vec<PeerTag>,
}

/// A slice whose provide failed, waiting for its retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceRetry {
    /// When the retry is due.
    pub at: UnixSecs,
    /// When the slice first failed (kept while its retries fail): its keys are overdue since.
    pub since: UnixSecs,
    /// The keys that reached too few servers.
    pub keys: Vec<WeakKey>,
    /// The slice's keys that were not sent at all.
    pub unsent: Unsent,
}

/// Where a provider persists its [`SweepState`]: one small blob, replaced whole.
pub trait StateStore: Send + Sync {
    /// The last blob saved, if any.
    fn load(&self) -> Result<Option<Vec<u8>>, ProviderError>;
    /// Replaces the blob; durable when this returns.
    fn save(&self, blob: &[u8]) -> Result<(), ProviderError>;
}

/// A [`StateStore`] in one file, replaced atomically (write, fsync, rename, fsync the folder).
#[derive(Debug)]
pub struct FileStateStore {
    path: PathBuf,
}

impl FileStateStore {
    /// Keeps the state in `path` (its folder must exist).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileStateStore { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl StateStore for FileStateStore {
    fn load(&self) -> Result<Option<Vec<u8>>, ProviderError> {
        match fs::read(&self.path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ProviderError::StateIo {
                action: "reading",
                path: self.path.clone(),
                source,
            }),
        }
    }

    fn save(&self, blob: &[u8]) -> Result<(), ProviderError> {
        let io = |action: &'static str, source: std::io::Error| ProviderError::StateIo {
            action,
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("tmp");
        let mut f = File::create(&tmp).map_err(|e| io("creating", e))?;
        f.write_all(blob).map_err(|e| io("writing", e))?;
        f.sync_all().map_err(|e| io("syncing", e))?;
        drop(f);
        fs::rename(&tmp, &self.path).map_err(|e| io("renaming", e))?;
        if let Some(dir) = self.path.parent()
            && let Ok(d) = File::open(dir)
        {
            d.sync_all().map_err(|e| io("syncing the folder of", e))?;
        }
        Ok(())
    }
}

/// A [`StateStore`] in memory (tests, the simulator). Clones share the state.
#[derive(Debug, Default, Clone)]
pub struct MemoryStateStore {
    blob: std::sync::Arc<Mutex<Option<Vec<u8>>>>,
}

impl StateStore for MemoryStateStore {
    fn load(&self) -> Result<Option<Vec<u8>>, ProviderError> {
        Ok(self.blob.lock().clone())
    }

    fn save(&self, blob: &[u8]) -> Result<(), ProviderError> {
        *self.blob.lock() = Some(blob.to_vec());
        Ok(())
    }
}

impl<T: StateStore + ?Sized> StateStore for std::sync::Arc<T> {
    fn load(&self) -> Result<Option<Vec<u8>>, ProviderError> {
        (**self).load()
    }

    fn save(&self, blob: &[u8]) -> Result<(), ProviderError> {
        (**self).save(blob)
    }
}

/// What a sweep persists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SweepState {
    /// When cycle 0 started.
    pub epoch: UnixSecs,
    /// The reprovide interval the cycles were walked at, in seconds (0: not recorded, a state
    /// written before the interval was kept).
    pub interval: u64,
    /// The slice length in use.
    pub slice_len: usize,
    /// How far the current cycle got.
    pub progress: Progress,
    /// Slices holding keys whose first provide has not finished.
    pub pending: BTreeSet<Prefix>,
    /// Slices whose provide failed, waiting for a retry.
    pub retries: BTreeMap<Prefix, SliceRetry>,
}

const MAGIC: &[u8; 4] = b"SWP3";
/// The format before the retries were kept: read, never written.
const MAGIC_V2: &[u8; 4] = b"SWP2";
/// The format before the interval was kept: read, never written.
const MAGIC_V1: &[u8; 4] = b"SWP1";

impl SweepState {
    /// A new sweep starting its first cycle at `now`, one cycle per `interval` seconds.
    pub fn new(now: UnixSecs, interval: u64, slice_len: usize) -> Self {
        SweepState {
            epoch: now,
            interval,
            slice_len,
            progress: Progress {
                cycle: 0,
                next: Key::ZERO,
            },
            pending: BTreeSet::new(),
            retries: BTreeMap::new(),
        }
    }

    /// The binary form: magic, epoch, interval, slice length, progress, each pending prefix
    /// as its length (2 bytes) and its 32 bytes, then each retry: its prefix, when it is due
    /// and since when its slice failed, what of the slice was not sent (a tag byte, and a key
    /// for "after"), and its weak keys (each a length byte, the multihash, a count byte and
    /// that many 8-byte peer tags).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 8 + 8 + 2 + 40 + 4 + self.pending.len() * 34);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.interval.to_be_bytes());
        out.extend_from_slice(&(self.slice_len as u16).to_be_bytes());
        out.extend_from_slice(&self.progress.to_bytes());
        out.extend_from_slice(&(self.pending.len() as u32).to_be_bytes());
        let put_prefix = |out: &mut Vec<u8>, p: &Prefix| {
            out.extend_from_slice(&(p.len() as u16).to_be_bytes());
            out.extend_from_slice(p.first_key().as_bytes());
        };
        for p in &self.pending {
            put_prefix(&mut out, p);
        }
        out.extend_from_slice(&(self.retries.len() as u32).to_be_bytes());
        for (p, r) in &self.retries {
            put_prefix(&mut out, p);
            out.extend_from_slice(&r.at.to_be_bytes());
            out.extend_from_slice(&r.since.to_be_bytes());
            match r.unsent {
                Unsent::Nothing => out.push(0),
                Unsent::All => out.push(1),
                Unsent::After(key) => {
                    out.push(2);
                    out.extend_from_slice(key.as_bytes());
                }
            }
            out.extend_from_slice(&(r.keys.len() as u32).to_be_bytes());
            for weak in &r.keys {
                let mh = weak.key.to_bytes();
                out.push(mh.len() as u8);
                out.extend_from_slice(&mh);
                let reached = &weak.reached[..weak.reached.len().min(255)];
                out.push(reached.len() as u8);
                for tag in reached {
                    out.extend_from_slice(&tag.to_be_bytes());
                }
            }
        }
        out
    }

    /// Parses [`SweepState::to_bytes`] (and the older forms, without the retries or the
    /// interval).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProviderError> {
        let mut r = Reader(bytes);
        let (with_interval, with_retries) = match r.take(4)? {
            m if m == MAGIC => (true, true),
            m if m == MAGIC_V2 => (true, false),
            m if m == MAGIC_V1 => (false, false),
            _ => return Err(bad("unknown format")),
        };
        let epoch = r.u64()?;
        let interval = if with_interval { r.u64()? } else { 0 };
        let slice_len = usize::from(r.u16()?);
        if slice_len > 256 {
            return Err(bad("slice length"));
        }
        let progress = Progress::from_bytes(r.take(40)?).ok_or_else(|| bad("progress"))?;
        let mut pending = BTreeSet::new();
        for _ in 0..r.u32()? {
            pending.insert(r.prefix()?);
        }
        let mut retries = BTreeMap::new();
        let n = if with_retries { r.u32()? } else { 0 };
        for _ in 0..n {
            let slice = r.prefix()?;
            let at = r.u64()?;
            let since = r.u64()?;
            let unsent = match r.u8()? {
                0 => Unsent::Nothing,
                1 => Unsent::All,
                2 => Unsent::After(r.key()?),
                _ => return Err(bad("unsent")),
            };
            let mut keys = Vec::new();
            for _ in 0..r.u32()? {
                let len = usize::from(r.u8()?);
                let key = Multihash::from_bytes(r.take(len)?).map_err(|_| bad("multihash"))?;
                let tags = r.u8()?;
                let mut reached = Vec::with_capacity(usize::from(tags));
                for _ in 0..tags {
                    reached.push(r.u64()?);
                }
                keys.push(WeakKey { key, reached });
            }
            let retry = SliceRetry {
                at,
                since,
                keys,
                unsent,
            };
            retries.insert(slice, retry);
        }
        if !r.0.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(SweepState {
            epoch,
            interval,
            slice_len,
            progress,
            pending,
            retries,
        })
    }
}

fn bad(what: &'static str) -> ProviderError {
    ProviderError::CorruptState(what)
}

/// Reads a persisted state, failing on truncation.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ProviderError> {
        if self.0.len() < n {
            return Err(bad("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], ProviderError> {
        self.take(N)?.try_into().map_err(|_| bad("truncated"))
    }

    fn u8(&mut self) -> Result<u8, ProviderError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, ProviderError> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, ProviderError> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, ProviderError> {
        self.array().map(u64::from_be_bytes)
    }

    fn key(&mut self) -> Result<Key, ProviderError> {
        self.array().map(Key::from_bytes)
    }

    fn prefix(&mut self) -> Result<Prefix, ProviderError> {
        let len = usize::from(self.u16()?);
        let key = self.key()?;
        if len > 256 {
            return Err(bad("prefix length"));
        }
        Ok(Prefix::new(&key, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state file that cannot be read or written is an error that keeps the I/O error.
    #[test]
    fn state_file_errors_keep_their_source() {
        let dir = tempfile::tempdir().unwrap();
        // The path is a directory: it can be neither read nor replaced by a file.
        let store = FileStateStore::new(dir.path());
        for err in [store.load().unwrap_err(), store.save(b"x").unwrap_err()] {
            let source = std::error::Error::source(&err);
            assert!(
                source.is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some()),
                "{err}"
            );
            assert!(
                err.to_string().contains(&dir.path().display().to_string()),
                "{err}"
            );
        }
    }

    #[test]
    fn state_round_trips_and_rejects_garbage() {
        let mut s = SweepState::new(dht_test_kit::EPOCH, 22 * 3600, 8);
        s.progress.cycle = 3;
        s.progress.next = "0110".parse::<Prefix>().unwrap().first_key();
        s.pending.insert("0111".parse().unwrap());
        s.pending.insert("1".parse().unwrap());
        s.retries.insert(
            "0010".parse().unwrap(),
            SliceRetry {
                at: 1_700_000_300,
                since: dht_test_kit::EPOCH,
                keys: vec![WeakKey {
                    key: Multihash::wrap(0x12, &[7; 32]).unwrap(),
                    reached: vec![1, u64::MAX],
                }],
                unsent: Unsent::After("00101".parse::<Prefix>().unwrap().first_key()),
            },
        );
        s.retries.insert(
            "11".parse().unwrap(),
            SliceRetry {
                at: 5,
                since: 4,
                keys: Vec::new(),
                unsent: Unsent::All,
            },
        );
        let bytes = s.to_bytes();
        assert_eq!(SweepState::from_bytes(&bytes).unwrap(), s);
        for cut in 0..bytes.len() {
            assert!(SweepState::from_bytes(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(SweepState::from_bytes(&extra).is_err());
        assert!(SweepState::from_bytes(b"XXXX").is_err());
        // The older forms, without the retries (SWP2) or the interval too (SWP1), still read.
        let plain = SweepState {
            retries: BTreeMap::new(),
            ..s.clone()
        };
        let bytes = plain.to_bytes();
        let without_retries = &bytes[4..bytes.len() - 4];
        let v2 = [&b"SWP2"[..], without_retries].concat();
        assert_eq!(SweepState::from_bytes(&v2).unwrap(), plain);
        let v1 = [&b"SWP1"[..], &without_retries[..8], &without_retries[16..]].concat();
        let old = SweepState::from_bytes(&v1).unwrap();
        assert_eq!(old.interval, 0);
        assert_eq!(
            SweepState {
                interval: s.interval,
                ..old
            },
            plain
        );
    }

    #[test]
    fn file_store_replaces_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStateStore::new(dir.path().join("sweep.state"));
        assert_eq!(store.load().unwrap(), None);
        store.save(b"one").unwrap();
        store.save(b"two").unwrap();
        assert_eq!(store.load().unwrap().as_deref(), Some(&b"two"[..]));
    }
}
