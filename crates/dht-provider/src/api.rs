//! The provider interface of the seed `provider-interface.md`, in Rust.

use dht_proto::{Key, Prefix};
use dht_provider_store::Keystore;
use futures::future::Either;

use crate::{Multihash, error::ProviderError, stats::ProviderStats};

/// The most keys one [`DhtProvider::provide_list`] page holds.
pub const MAX_LIST_PAGE: usize = 10_000;

/// One page of a keystore's keys over the whole keyspace, for `provide_list`.
pub(crate) fn list_page<K: Keystore>(
    keystore: &K,
    after: Option<&Key>,
    limit: usize,
) -> Result<Vec<(Key, Multihash)>, ProviderError> {
    Ok(keystore.scan(&Prefix::ROOT, after, limit.clamp(1, MAX_LIST_PAGE))?)
}

/// Keeps keys advertised on the DHT: provides them, and reprovides them before their
/// records expire, until told to stop.
///
/// Implemented by [`SweepingProvider`](crate::SweepingProvider) (the default) and
/// [`LegacyProvider`](crate::legacy::LegacyProvider) (one walk per key), so a node can take
/// either.
pub trait DhtProvider: Send + Sync {
    /// Ensures `keys` are advertised periodically. Keys not yet held (all keys, with `force`)
    /// are provided now; returns once that first provide succeeded or failed. Dropping the
    /// future never stops the reproviding (the sweep still provides the keys at once; the
    /// per-key baseline at their next reprovide).
    fn start_providing(
        &self,
        force: bool,
        keys: &[Multihash],
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// Like [`start_providing`](Self::start_providing), without waiting for the first provide.
    fn start_providing_async(&self, force: bool, keys: &[Multihash]) -> Result<(), ProviderError>;

    /// Stops reproviding `keys`; their records expire on their own.
    fn stop_providing(&self, keys: &[Multihash]) -> Result<(), ProviderError>;

    /// Provides `keys` once, without reproviding them later.
    fn provide_once(
        &self,
        keys: &[Multihash],
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// ProvideList: the keys provided (held in the keystore) in keyspace order (by Kademlia
    /// key), strictly after `after` when given, at most `limit` of them (capped at
    /// [`MAX_LIST_PAGE`]). Page through every key by passing the last Kademlia key of a page
    /// as the next `after`; nothing but one page is in memory.
    fn provide_list(
        &self,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<(Key, Multihash)>, ProviderError>;

    /// State and counters, as `ipfs provide stat` shows them.
    fn stats(&self) -> ProviderStats;

    /// Persists what must survive and stops the workers.
    fn close(&self) -> impl Future<Output = Result<(), ProviderError>> + Send;
}

/// One of two providers behind one [`DhtProvider`]: what a node that lets its operator choose
/// the strategy holds (dht-node's `NodeProvider`, the simulator's provide experiment).
#[derive(Clone)]
pub enum EitherProvider<S, L> {
    /// The sweeping provider (the default): keys grouped by keyspace region.
    Sweep(S),
    /// The per-key provider: one DHT walk per key.
    PerKey(L),
}

impl<S, L> std::fmt::Debug for EitherProvider<S, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EitherProvider::{}", self.strategy())
    }
}

impl<S, L> EitherProvider<S, L> {
    /// `"sweep"` or `"per-key"`.
    pub fn strategy(&self) -> &'static str {
        match self {
            EitherProvider::Sweep(_) => "sweep",
            EitherProvider::PerKey(_) => "per-key",
        }
    }
}

// The futures are forwarded as they are (`Either`), not awaited in an `async fn`: an async
// body holding `&S` across the await would not be `Send` for every lifetime, which the
// HTTP API's handlers need.
impl<S: DhtProvider, L: DhtProvider> DhtProvider for EitherProvider<S, L> {
    fn start_providing(
        &self,
        force: bool,
        keys: &[Multihash],
    ) -> impl Future<Output = Result<(), ProviderError>> + Send {
        match self {
            EitherProvider::Sweep(p) => Either::Left(p.start_providing(force, keys)),
            EitherProvider::PerKey(p) => Either::Right(p.start_providing(force, keys)),
        }
    }

    fn start_providing_async(&self, force: bool, keys: &[Multihash]) -> Result<(), ProviderError> {
        match self {
            EitherProvider::Sweep(p) => p.start_providing_async(force, keys),
            EitherProvider::PerKey(p) => p.start_providing_async(force, keys),
        }
    }

    fn stop_providing(&self, keys: &[Multihash]) -> Result<(), ProviderError> {
        match self {
            EitherProvider::Sweep(p) => p.stop_providing(keys),
            EitherProvider::PerKey(p) => p.stop_providing(keys),
        }
    }

    fn provide_once(
        &self,
        keys: &[Multihash],
    ) -> impl Future<Output = Result<(), ProviderError>> + Send {
        match self {
            EitherProvider::Sweep(p) => Either::Left(p.provide_once(keys)),
            EitherProvider::PerKey(p) => Either::Right(p.provide_once(keys)),
        }
    }

    fn provide_list(
        &self,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<(Key, Multihash)>, ProviderError> {
        match self {
            EitherProvider::Sweep(p) => p.provide_list(after, limit),
            EitherProvider::PerKey(p) => p.provide_list(after, limit),
        }
    }

    fn stats(&self) -> ProviderStats {
        match self {
            EitherProvider::Sweep(p) => p.stats(),
            EitherProvider::PerKey(p) => p.stats(),
        }
    }

    fn close(&self) -> impl Future<Output = Result<(), ProviderError>> + Send {
        match self {
            EitherProvider::Sweep(p) => Either::Left(p.close()),
            EitherProvider::PerKey(p) => Either::Right(p.close()),
        }
    }
}
