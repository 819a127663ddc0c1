//! The provider's own memory during a run: live bytes of Rust's heap (from a counting global
//! allocator, which a binary installs) above their level when the provider started, plus
//! the memory its keystore holds outside that heap (RocksDB's, from its properties), sampled
//! on a thread of its own while the simulation runs.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use serde::Serialize;

/// The keystore's own memory now, in bytes: its memtables, block cache and table readers
/// (RocksDB's three properties; all 0 for a store whose memory is on Rust's heap).
pub type StoreMemoryFn = Arc<dyn Fn() -> [u64; 3] + Send + Sync>;

/// Where memory is read during a run; each probe is optional.
#[derive(Clone, Default)]
pub struct MemoryProbes {
    /// Live bytes of Rust's heap now (a counting `#[global_allocator]`'s count).
    pub heap_bytes: Option<fn() -> u64>,
    /// The keystore's memory outside Rust's heap.
    pub store_bytes: Option<StoreMemoryFn>,
    /// Called once the preload has written the keys, before the provider starts and memory
    /// is watched: lets the keystore put its bulk writes away (RocksDB: flush the memtables
    /// that hold them), as writes made long before a node's start would be, so that what is
    /// measured is the provider's memory, not the preload's.
    pub after_preload: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl fmt::Debug for MemoryProbes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryProbes")
            .field("heap_bytes", &self.heap_bytes.is_some())
            .field("store_bytes", &self.store_bytes.is_some())
            .field("after_preload", &self.after_preload.is_some())
            .finish()
    }
}

/// The peaks a [`MemoryWatch`] saw, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MemoryPeaks {
    /// Samples taken.
    pub samples: u64,
    /// Live heap bytes when the watch started (the simulated network, before the provider).
    pub heap_at_start_bytes: Option<u64>,
    /// The most live heap bytes above that level.
    pub heap_bytes: Option<u64>,
    /// The most the keystore held outside the heap.
    pub store_bytes: Option<u64>,
    /// The most of the store's memtables.
    pub store_memtables_bytes: Option<u64>,
    /// The most of the store's block cache.
    pub store_block_cache_bytes: Option<u64>,
    /// The most of the store's table readers.
    pub store_table_readers_bytes: Option<u64>,
    /// The most of heap growth and store memory, in one sample: the provider's peak.
    pub total_bytes: Option<u64>,
}

impl MemoryPeaks {
    /// Folds one sample in: `heap` live heap bytes, `store` the store's three parts.
    fn add(&mut self, heap: Option<u64>, store: Option<[u64; 3]>) {
        self.samples += 1;
        let max = |slot: &mut Option<u64>, v: u64| *slot = Some(slot.map_or(v, |m| m.max(v)));
        let grown = heap.map(|h| h.saturating_sub(self.heap_at_start_bytes.unwrap_or(h)));
        if let Some(g) = grown {
            max(&mut self.heap_bytes, g);
        }
        let store_total = store.map(|s| s.iter().sum::<u64>());
        if let Some([memtables, cache, readers]) = store {
            max(&mut self.store_memtables_bytes, memtables);
            max(&mut self.store_block_cache_bytes, cache);
            max(&mut self.store_table_readers_bytes, readers);
        }
        if let Some(s) = store_total {
            max(&mut self.store_bytes, s);
        }
        if grown.is_some() || store_total.is_some() {
            max(
                &mut self.total_bytes,
                grown.unwrap_or(0) + store_total.unwrap_or(0),
            );
        }
    }
}

/// Samples [`MemoryProbes`] on its own thread, every `period` of wall time, until
/// [`MemoryWatch::finish`].
pub struct MemoryWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<MemoryPeaks>>,
}

impl MemoryWatch {
    /// Starts sampling now; the heap's level now is the baseline. Without any probe, no
    /// thread is started and [`MemoryWatch::finish`] gives empty peaks.
    pub fn start(probes: &MemoryProbes, period: Duration) -> MemoryWatch {
        let stop = Arc::new(AtomicBool::new(false));
        if probes.heap_bytes.is_none() && probes.store_bytes.is_none() {
            return MemoryWatch { stop, thread: None };
        }
        let probes = probes.clone();
        let flag = stop.clone();
        let mut peaks = MemoryPeaks {
            heap_at_start_bytes: probes.heap_bytes.map(|f| f()),
            ..MemoryPeaks::default()
        };
        let sample = move |peaks: &mut MemoryPeaks| {
            peaks.add(
                probes.heap_bytes.map(|f| f()),
                probes.store_bytes.as_ref().map(|f| f()),
            );
        };
        let thread = std::thread::Builder::new()
            .name("memory-watch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    sample(&mut peaks);
                    std::thread::sleep(period);
                }
                sample(&mut peaks);
                peaks
            })
            .map_err(|e| tracing::warn!(%e, "cannot start the memory watch"))
            .ok();
        MemoryWatch { stop, thread }
    }

    /// Stops sampling (after one last sample) and returns the peaks.
    pub fn finish(mut self) -> MemoryPeaks {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for MemoryWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    static HEAP: AtomicU64 = AtomicU64::new(1000);

    fn heap() -> u64 {
        HEAP.load(Ordering::Relaxed)
    }

    #[test]
    fn peaks_are_above_the_start_and_summed_per_sample() {
        let store = Arc::new(AtomicU64::new(0));
        let s = store.clone();
        let probes = MemoryProbes {
            heap_bytes: Some(heap),
            store_bytes: Some(Arc::new(move || [s.load(Ordering::Relaxed), 7, 3])),
            after_preload: None,
        };
        let watch = MemoryWatch::start(&probes, Duration::from_millis(1));
        HEAP.store(1500, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
        HEAP.store(1200, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        store.store(100, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
        let peaks = watch.finish();
        assert!(peaks.samples >= 3, "{peaks:?}");
        assert_eq!(peaks.heap_at_start_bytes, Some(1000));
        assert_eq!(peaks.heap_bytes, Some(500));
        assert_eq!(peaks.store_memtables_bytes, Some(100));
        assert_eq!(peaks.store_bytes, Some(110));
        // 500 + 10 in the first samples, 200 + 110 later: never 500 + 110 at once.
        assert_eq!(peaks.total_bytes, Some(510));
    }

    #[test]
    fn without_probes_there_is_nothing() {
        let peaks = MemoryWatch::start(&MemoryProbes::default(), Duration::from_millis(1)).finish();
        assert_eq!(peaks, MemoryPeaks::default());
    }
}
