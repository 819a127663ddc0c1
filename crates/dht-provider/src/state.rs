//! The little state a sweep keeps across restarts, and where it is kept.
//!
//! Keys live in the [`Keystore`](dht_provider_store::Keystore). Beside them the sweep needs
//! only: when its cycles started (the epoch), the interval they were walked at (so that a
//! changed interval rescales the schedule), its slice length, how far the current cycle got
//! ([`Progress`]), and which slices hold keys whose first provide has not finished yet. That
//! last set is written *before* `start_providing` acknowledges, so keys added just before a
//! `kill -9` are provided right after the restart rather than at their next reprovide time.

use std::{
    collections::BTreeSet,
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
};

use dht_proto::{Key, Prefix, UnixSecs};
use parking_lot::Mutex;

use crate::{error::ProviderError, schedule::Progress};

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
            Err(e) => Err(ProviderError::State(format!(
                "reading {}: {e}",
                self.path.display()
            ))),
        }
    }

    fn save(&self, blob: &[u8]) -> Result<(), ProviderError> {
        let io = |what: &str, e: std::io::Error| {
            ProviderError::State(format!("{what} {}: {e}", self.path.display()))
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
}

const MAGIC: &[u8; 4] = b"SWP2";
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
        }
    }

    /// The binary form: magic, epoch, interval, slice length, progress, then each pending
    /// prefix as its length (2 bytes) and its 32 bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + 8 + 8 + 2 + 40 + 4 + self.pending.len() * 34);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.interval.to_be_bytes());
        out.extend_from_slice(&(self.slice_len as u16).to_be_bytes());
        out.extend_from_slice(&self.progress.to_bytes());
        out.extend_from_slice(&(self.pending.len() as u32).to_be_bytes());
        for p in &self.pending {
            out.extend_from_slice(&(p.len() as u16).to_be_bytes());
            out.extend_from_slice(p.first_key().as_bytes());
        }
        out
    }

    /// Parses [`SweepState::to_bytes`] (and the older form without the interval).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProviderError> {
        let bad = |why: &str| ProviderError::State(format!("corrupt sweep state: {why}"));
        let mut r = bytes;
        let mut take = |n: usize| -> Result<&[u8], ProviderError> {
            if r.len() < n {
                return Err(bad("truncated"));
            }
            let (head, rest) = r.split_at(n);
            r = rest;
            Ok(head)
        };
        let with_interval = match take(4)? {
            m if m == MAGIC => true,
            m if m == MAGIC_V1 => false,
            _ => return Err(bad("unknown format")),
        };
        let u64_of = |b: &[u8]| b.try_into().map(u64::from_be_bytes).unwrap_or(0);
        let u16_of = |b: &[u8]| b.try_into().map(u16::from_be_bytes).unwrap_or(0);
        let epoch = u64_of(take(8)?);
        let interval = if with_interval { u64_of(take(8)?) } else { 0 };
        let slice_len = usize::from(u16_of(take(2)?));
        let progress = Progress::from_bytes(take(40)?).ok_or_else(|| bad("progress"))?;
        let n = take(4)?
            .try_into()
            .map(u32::from_be_bytes)
            .map_err(|_| bad("count"))?;
        let mut pending = BTreeSet::new();
        for _ in 0..n {
            let len = usize::from(u16_of(take(2)?));
            let key: [u8; 32] = take(32)?.try_into().map_err(|_| bad("prefix"))?;
            if len > 256 || slice_len > 256 {
                return Err(bad("prefix length"));
            }
            pending.insert(Prefix::new(&Key::from_bytes(key), len));
        }
        if !r.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(SweepState {
            epoch,
            interval,
            slice_len,
            progress,
            pending,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_rejects_garbage() {
        let mut s = SweepState::new(1_700_000_000, 22 * 3600, 8);
        s.progress.cycle = 3;
        s.progress.next = "0110".parse::<Prefix>().unwrap().first_key();
        s.pending.insert("0111".parse().unwrap());
        s.pending.insert("1".parse().unwrap());
        let bytes = s.to_bytes();
        assert_eq!(SweepState::from_bytes(&bytes).unwrap(), s);
        for cut in 0..bytes.len() {
            assert!(SweepState::from_bytes(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(SweepState::from_bytes(&extra).is_err());
        assert!(SweepState::from_bytes(b"XXXX").is_err());
        // The older form, without the interval, still reads.
        let mut v1 = b"SWP1".to_vec();
        v1.extend_from_slice(&bytes[4..12]);
        v1.extend_from_slice(&bytes[20..]);
        let old = SweepState::from_bytes(&v1).unwrap();
        assert_eq!(old.interval, 0);
        assert_eq!(
            SweepState {
                interval: s.interval,
                ..old
            },
            s
        );
    }

    #[test]
    fn file_store_replaces_whole() {
        let dir = std::env::temp_dir().join(format!("dht-provider-state-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let store = FileStateStore::new(dir.join("sweep.state"));
        assert_eq!(store.load().unwrap(), None);
        store.save(b"one").unwrap();
        store.save(b"two").unwrap();
        assert_eq!(store.load().unwrap().as_deref(), Some(&b"two"[..]));
        fs::remove_dir_all(&dir).unwrap();
    }
}
