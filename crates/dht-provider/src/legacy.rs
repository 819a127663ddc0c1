//! The per-key provider: one DHT walk and one round of ADD_PROVIDER per key, every interval.
//!
//! This is how libp2p-kad's Behaviour and boxo's old provider announce content, and what a
//! provider with many keys cannot afford: a full lookup (about twenty FIND_NODE requests and as
//! many connections) for every key, every 22 hours. It is kept as the migration path for users
//! of the old `Provider`/`Reprovider`/`System` interface, and as the baseline every figure of
//! the sweep is measured against.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use dht_proto::{Key, MessageType, PeerInfo, UnixSecs};
use dht_provider_store::Keystore;
use dht_routing::Dht;
use dht_routing_table::Clock;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::{DhtProvider, Multihash, error::ProviderError, stats::ProviderStats};

/// Settings of a [`LegacyProvider`]; [`LegacyProvider::start`] refuses a zero count or
/// interval ([`validate`](Self::validate)).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct LegacyConfig {
    /// How often every key is reprovided (22 h).
    pub interval: Duration,
    /// Keys provided at once.
    pub parallelism: usize,
    /// Keys read from the keystore per page when reproviding.
    pub scan_page: usize,
}

impl Default for LegacyConfig {
    fn default() -> Self {
        LegacyConfig {
            interval: Duration::from_secs(dht_proto::REPROVIDE_INTERVAL_SECS),
            parallelism: 8,
            scan_page: 4096,
        }
    }
}

impl LegacyConfig {
    crate::error::setters! {
        /// Sets the reprovide interval.
        with_interval => interval: Duration;
        /// Sets how many keys are provided at once.
        with_parallelism => parallelism: usize;
        /// Sets how many keys are read from the keystore per page when reproviding.
        with_scan_page => scan_page: usize;
    }

    /// `Ok` when every setting can work.
    ///
    /// # Errors
    /// [`ProviderError::InvalidConfig`] naming the first setting that is zero (the interval:
    /// under a second).
    pub fn validate(&self) -> Result<(), ProviderError> {
        use crate::error::at_least_one;
        at_least_one("interval", self.interval.as_secs())?;
        at_least_one("parallelism", self.parallelism as u64)?;
        at_least_one("scan_page", self.scan_page as u64)
    }
}

/// The counters of boxo's `ReproviderStats`, plus the requests spent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReproviderStats {
    /// Keys provided by the last reprovide.
    pub total_provides: u64,
    /// When the last reprovide finished.
    pub last_reprovide_at: Option<UnixSecs>,
    /// How long the last reprovide took, in seconds.
    pub last_reprovide_secs: Option<u64>,
}

/// Announces blocks to the network (boxo's `Provider`).
pub trait Provider {
    /// Keeps `key` in the reprovide set and, with `announce`, provides it now.
    fn provide(
        &self,
        key: &Multihash,
        announce: bool,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;
}

/// Re-announces blocks to the network (boxo's `Reprovider`).
pub trait Reprovider {
    /// Provides every key of the reprovide set now; if a reprovide is already running, waits
    /// for it to finish rather than starting another.
    fn reprovide(&self) -> impl Future<Output = Result<(), ProviderError>> + Send;
}

/// The provide system as a whole (boxo's `System`).
pub trait System: Provider + Reprovider {
    /// Stops the periodic reprovide.
    fn close(&self) -> impl Future<Output = Result<(), ProviderError>> + Send;
    /// The reprovider's counters.
    fn stat(&self) -> Result<ReproviderStats, ProviderError>;
}

/// Which reprovide runs started and finished: a run starts only if none is running.
#[derive(Debug, Default)]
struct Runs {
    running: bool,
    started: u64,
    finished: u64,
}

#[derive(Debug, Default)]
struct Counters {
    find_node: AtomicU64,
    add_provider: AtomicU64,
    add_provider_failed: AtomicU64,
    keys_provided: AtomicU64,
    keys_failed: AtomicU64,
}

struct Inner<D, K> {
    dht: D,
    keystore: K,
    local: PeerInfo,
    clock: Arc<dyn Clock>,
    config: LegacyConfig,
    counters: Counters,
    last: Mutex<ReproviderStats>,
    runs: Mutex<Runs>,
    /// Woken when a reprovide run finishes.
    run_done: Notify,
    closed: AtomicBool,
    wake: Notify,
}

/// Provides each key with its own DHT walk, and reprovides them all every interval.
pub struct LegacyProvider<D, K> {
    inner: Arc<Inner<D, K>>,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl<D, K> Clone for LegacyProvider<D, K> {
    fn clone(&self) -> Self {
        LegacyProvider {
            inner: self.inner.clone(),
            task: self.task.clone(),
        }
    }
}

impl<D, K> LegacyProvider<D, K>
where
    D: Dht + 'static,
    K: Keystore + 'static,
{
    /// Starts the periodic reprovide (the first one an interval from now).
    ///
    /// # Errors
    /// [`ProviderError::InvalidConfig`] when a setting cannot work
    /// ([`LegacyConfig::validate`]); nothing is started.
    pub fn start(
        dht: D,
        keystore: K,
        local: PeerInfo,
        clock: Arc<dyn Clock>,
        config: LegacyConfig,
    ) -> Result<Self, ProviderError> {
        config.validate()?;
        let inner = Arc::new(Inner {
            dht,
            keystore,
            local,
            clock,
            config,
            counters: Counters::default(),
            last: Mutex::new(ReproviderStats::default()),
            runs: Mutex::new(Runs::default()),
            run_done: Notify::new(),
            closed: AtomicBool::new(false),
            wake: Notify::new(),
        });
        let looping = inner.clone();
        let task = tokio::spawn(async move {
            loop {
                let closed = looping.wake.notified();
                tokio::select! {
                    () = closed => {}
                    () = tokio::time::sleep(looping.config.interval) => {}
                }
                if looping.closed.load(Ordering::Acquire) {
                    break;
                }
                if let Err(e) = looping.reprovide_unless_running().await {
                    tracing::warn!(error = %e, "reprovide failed");
                }
            }
        });
        Ok(LegacyProvider {
            inner,
            task: Arc::new(Mutex::new(Some(task))),
        })
    }
}

impl<D, K> DhtProvider for LegacyProvider<D, K>
where
    D: Dht + 'static,
    K: Keystore + 'static,
{
    /// Adds `keys` to the keystore (on the blocking pool: the write waits for the disk) and
    /// provides each (with `force`, also those already held); returns once every first
    /// provide succeeded or failed.
    async fn start_providing(&self, force: bool, keys: &[Multihash]) -> Result<(), ProviderError> {
        let inner = self.inner.clone();
        let keys = keys.to_vec();
        let todo = crate::error::off_async(move || {
            let new = inner.keystore.put(&keys)?;
            Ok(if force { keys } else { new })
        })
        .await?;
        self.inner.provide_many(&todo).await
    }

    /// Like [`start_providing`](Self::start_providing), without waiting.
    fn start_providing_async(&self, force: bool, keys: &[Multihash]) -> Result<(), ProviderError> {
        let new = self.inner.keystore.put(keys)?;
        let todo = if force { keys.to_vec() } else { new };
        let inner = self.inner.clone();
        tokio::spawn(async move {
            if let Err(e) = inner.provide_many(&todo).await {
                tracing::debug!(error = %e, "first provide failed for some keys");
            }
        });
        Ok(())
    }

    /// Removes `keys` from the keystore.
    fn stop_providing(&self, keys: &[Multihash]) -> Result<(), ProviderError> {
        self.inner.keystore.delete(keys)?;
        Ok(())
    }

    /// Provides `keys` once, without keeping them.
    async fn provide_once(&self, keys: &[Multihash]) -> Result<(), ProviderError> {
        self.inner.provide_many(keys).await
    }

    /// The keys provided, in keyspace order; see [`DhtProvider::provide_list`](crate::DhtProvider::provide_list).
    fn provide_list(
        &self,
        after: Option<&dht_proto::Key>,
        limit: usize,
    ) -> Result<Vec<(dht_proto::Key, Multihash)>, ProviderError> {
        crate::api::list_page(&self.inner.keystore, after, limit)
    }

    /// Counters in the sweep's terms, for side-by-side reports.
    fn stats(&self) -> ProviderStats {
        let c = &self.inner.counters;
        let last = self.inner.last.lock().clone();
        ProviderStats {
            keys: self.inner.keystore.count().ok(),
            workers: self.inner.config.parallelism,
            records_sent_last_cycle: c.add_provider.load(Ordering::Relaxed),
            last_cycle_secs: last.last_reprovide_secs,
            find_node_sent: c.find_node.load(Ordering::Relaxed),
            add_provider_sent: c.add_provider.load(Ordering::Relaxed),
            add_provider_failed: c.add_provider_failed.load(Ordering::Relaxed),
            keys_provided: c.keys_provided.load(Ordering::Relaxed),
            keys_failed: c.keys_failed.load(Ordering::Relaxed),
            ..ProviderStats::default()
        }
    }

    /// Stops the periodic reprovide.
    async fn close(&self) -> Result<(), ProviderError> {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.wake.notify_waiters();
        let task = self.task.lock().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        Ok(())
    }
}

impl<D, K> Inner<D, K>
where
    D: Dht + 'static,
    K: Keystore + 'static,
{
    /// One walk and one ADD_PROVIDER round for `key`; whether any server took it.
    async fn provide_one(&self, key: &Multihash) -> bool {
        let bytes = key.to_bytes();
        match dht_routing::provide(&self.dht, &bytes, self.local.clone()).await {
            Ok(outcome) => {
                let s = &outcome.stats;
                self.counters
                    .find_node
                    .fetch_add(s.requests_of(MessageType::FindNode), Ordering::Relaxed);
                self.counters
                    .add_provider
                    .fetch_add(s.requests_of(MessageType::AddProvider), Ordering::Relaxed);
                self.counters
                    .add_provider_failed
                    .fetch_add(outcome.value.failed.len() as u64, Ordering::Relaxed);
                !outcome.value.succeeded.is_empty()
            }
            Err(e) => {
                tracing::debug!(key = %Key::from_multihash(key), error = %e, "provide failed");
                false
            }
        }
    }

    async fn provide_many(&self, keys: &[Multihash]) -> Result<(), ProviderError> {
        let results: Vec<(Multihash, bool)> = futures::stream::iter(keys.iter().copied())
            .map(|k| async move {
                let ok = self.provide_one(&k).await;
                (k, ok)
            })
            .buffer_unordered(self.config.parallelism)
            .collect()
            .await;
        let failed: Vec<Multihash> = results.iter().filter(|r| !r.1).map(|r| r.0).collect();
        self.counters
            .keys_provided
            .fetch_add((results.len() - failed.len()) as u64, Ordering::Relaxed);
        self.counters
            .keys_failed
            .fetch_add(failed.len() as u64, Ordering::Relaxed);
        if failed.is_empty() {
            Ok(())
        } else {
            Err(ProviderError::ProvideFailed { failed })
        }
    }

    /// Runs [`reprovide_all`](Self::reprovide_all) if no run is under way; otherwise waits
    /// until the running one finishes.
    async fn reprovide_unless_running(&self) -> Result<(), ProviderError> {
        let joined = {
            let mut runs = self.runs.lock();
            if runs.running {
                Some(runs.started)
            } else {
                runs.running = true;
                runs.started += 1;
                None
            }
        };
        if let Some(run) = joined {
            loop {
                let done = self.run_done.notified();
                if self.runs.lock().finished >= run {
                    return Ok(());
                }
                done.await;
            }
        }
        // Marks the run finished even if this call is dropped half-way.
        struct Finish<'a>(&'a Mutex<Runs>, &'a Notify);
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                {
                    let mut runs = self.0.lock();
                    runs.running = false;
                    runs.finished = runs.started;
                }
                self.1.notify_waiters();
            }
        }
        let _finish = Finish(&self.runs, &self.run_done);
        self.reprovide_all().await
    }

    /// Every key of the keystore, page by page, each with its own walk.
    async fn reprovide_all(&self) -> Result<(), ProviderError> {
        let started = self.clock.now();
        let mut after: Option<Key> = None;
        let mut total = 0u64;
        loop {
            let page = self.keystore.scan(
                &dht_proto::Prefix::ROOT,
                after.as_ref(),
                self.config.scan_page,
            )?;
            let Some((last, _)) = page.last() else { break };
            after = Some(*last);
            let keys: Vec<Multihash> = page.iter().map(|(_, mh)| *mh).collect();
            total += keys.len() as u64;
            // Failures are counted; they are tried again next interval.
            let _ = self.provide_many(&keys).await;
            if keys.len() < self.config.scan_page {
                break;
            }
        }
        let now = self.clock.now();
        *self.last.lock() = ReproviderStats {
            total_provides: total,
            last_reprovide_at: Some(now),
            last_reprovide_secs: Some(now.saturating_sub(started)),
        };
        Ok(())
    }
}

impl<D, K> Provider for LegacyProvider<D, K>
where
    D: Dht + 'static,
    K: Keystore + 'static,
{
    async fn provide(&self, key: &Multihash, announce: bool) -> Result<(), ProviderError> {
        self.inner.keystore.put(std::slice::from_ref(key))?;
        if announce {
            self.inner.provide_many(std::slice::from_ref(key)).await?;
        }
        Ok(())
    }
}

impl<D, K> Reprovider for LegacyProvider<D, K>
where
    D: Dht + 'static,
    K: Keystore + 'static,
{
    /// Starts a reprovide unless one is running, as boxo's reprovider does; while one runs,
    /// waits for it to finish instead of starting another.
    async fn reprovide(&self) -> Result<(), ProviderError> {
        self.inner.reprovide_unless_running().await
    }
}

impl<D, K> System for LegacyProvider<D, K>
where
    D: Dht + 'static,
    K: Keystore + 'static,
{
    async fn close(&self) -> Result<(), ProviderError> {
        DhtProvider::close(self).await
    }

    fn stat(&self) -> Result<ReproviderStats, ProviderError> {
        Ok(self.inner.last.lock().clone())
    }
}
