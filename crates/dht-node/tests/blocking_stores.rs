//! A store that waits on its disk must not stall the node's runtime: the node runs its store
//! calls on tokio's blocking pool, so a slow read holds up the one request that needs it and
//! nothing else. A real node on 127.0.0.1, its HTTP API over real TCP, on a single-threaded
//! runtime where any store call made inline would stop every other task for its whole length.
#![allow(clippy::unwrap_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use dht_node::{
    api::{self, ManagementAccess},
    builder::NodeBuilder,
    devnet::random_cid,
    http_client::ApiClient,
};
use dht_proto::cid::Cid;
use dht_provider_store::{
    Key, Keystore, MemoryStore, Multihash, Prefix, ProviderRecord, ProviderStore, Record,
    StoreError, UnixSecs, ValueStore,
};

/// How long each slow store call takes.
const DELAY: Duration = Duration::from_millis(1500);

/// A [`MemoryStore`] whose value reads and writes and keystore count and delete take
/// [`DELAY`], as a disk under load would (the keystore's scans, which the provider makes in
/// the background, stay fast).
#[derive(Debug, Default)]
struct SlowStore(MemoryStore);

fn wait() {
    std::thread::sleep(DELAY);
}

impl ProviderStore for SlowStore {
    fn add_providers(&self, batch: &[ProviderRecord]) -> Result<(), StoreError> {
        self.0.add_providers(batch)
    }

    fn providers(
        &self,
        key: &[u8],
        limit: usize,
        now: UnixSecs,
    ) -> Result<Vec<ProviderRecord>, StoreError> {
        self.0.providers(key, limit, now)
    }

    fn remove_expired(&self, now: UnixSecs) -> Result<u64, StoreError> {
        wait();
        self.0.remove_expired(now)
    }
}

impl ValueStore for SlowStore {
    fn put_value(&self, record: &Record, received_at: UnixSecs) -> Result<(), StoreError> {
        wait();
        self.0.put_value(record, received_at)
    }

    fn get_value(
        &self,
        key: &[u8],
        now: UnixSecs,
    ) -> Result<Option<(Record, UnixSecs)>, StoreError> {
        wait();
        self.0.get_value(key, now)
    }

    fn remove_expired_values(&self, now: UnixSecs) -> Result<u64, StoreError> {
        wait();
        self.0.remove_expired_values(now)
    }
}

impl Keystore for SlowStore {
    fn put(&self, keys: &[Multihash]) -> Result<Vec<Multihash>, StoreError> {
        self.0.put(keys)
    }

    fn delete(&self, keys: &[Multihash]) -> Result<u64, StoreError> {
        wait();
        self.0.delete(keys)
    }

    fn count(&self) -> Result<u64, StoreError> {
        wait();
        self.0.count()
    }

    fn scan(
        &self,
        prefix: &Prefix,
        start_after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<(Key, Multihash)>, StoreError> {
        self.0.scan(prefix, start_after, limit)
    }
}

/// Records the longest time the runtime took to run a task that wakes every 10 ms.
fn watch_stalls() -> Arc<AtomicU64> {
    let longest = Arc::new(AtomicU64::new(0));
    let seen = longest.clone();
    tokio::spawn(async move {
        let tick = Duration::from_millis(10);
        loop {
            let before = Instant::now();
            tokio::time::sleep(tick).await;
            let late = before.elapsed().saturating_sub(tick).as_millis();
            seen.fetch_max(u64::try_from(late).unwrap_or(u64::MAX), Ordering::Relaxed);
        }
    });
    longest
}

#[tokio::test(flavor = "current_thread")]
async fn slow_store_calls_leave_the_runtime_free() {
    let node = NodeBuilder::local()
        .stores(Arc::new(SlowStore::default()))
        .build()
        .await
        .unwrap();
    let (addr, _server) = api::serve_management(
        node.clone(),
        "127.0.0.1:0".parse().unwrap(),
        ManagementAccess::new("secret"),
        std::future::pending(),
    )
    .await
    .unwrap();
    let api = ApiClient::new(&format!("http://{addr}"))
        .unwrap()
        .with_token("secret");
    let stalls = watch_stalls();
    // Let the node's own start-up work settle before measuring.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stalls.store(0, Ordering::Relaxed);

    // Each call waits on the store once (or twice); the runtime must keep ticking meanwhile.
    let started = Instant::now();
    let stats = api.stats().await.unwrap();
    assert_eq!(stats.keystore_keys, 0);
    let metrics = api.metrics().await.unwrap();
    assert!(metrics.contains("keystore_keys"), "{metrics}");
    let cid = Cid::new_v1(0x55, random_cid(&mut rand::rng())).to_string();
    assert_eq!(api.stop(&[cid]).await.unwrap(), 1);
    // No peer to ask: the local store is read, then the lookup fails.
    let got = node.get_value(b"/pk/unknown").await;
    assert!(got.is_err(), "{got:?}");
    let waited = started.elapsed();
    assert!(
        waited >= DELAY * 4,
        "the slow store was not called: {waited:?}"
    );

    let longest = Duration::from_millis(stalls.load(Ordering::Relaxed));
    println!("longest runtime stall {longest:?} over {waited:?} of slow store calls");
    assert!(
        longest < DELAY / 3,
        "a runtime worker stalled {longest:?} while the store was slow"
    );
    node.shutdown().await;
}
