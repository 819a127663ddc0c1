//! The provider interface of the seed `provider-interface.md`, in Rust.

use dht_proto::{Key, Prefix};
use dht_provider_store::Keystore;

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

macro_rules! impl_dht_provider {
    ($ty:ident < $($p:ident : $bound:path),* >) => {
        impl<$($p: $bound + 'static),*> DhtProvider for crate::$ty<$($p),*> {
            fn start_providing(
                &self,
                force: bool,
                keys: &[Multihash],
            ) -> impl Future<Output = Result<(), ProviderError>> + Send {
                crate::$ty::start_providing(self, force, keys)
            }
            fn start_providing_async(&self, force: bool, keys: &[Multihash]) -> Result<(), ProviderError> {
                crate::$ty::start_providing_async(self, force, keys)
            }
            fn stop_providing(&self, keys: &[Multihash]) -> Result<(), ProviderError> {
                crate::$ty::stop_providing(self, keys)
            }
            fn provide_once(&self, keys: &[Multihash]) -> impl Future<Output = Result<(), ProviderError>> + Send {
                crate::$ty::provide_once(self, keys)
            }
            fn provide_list(&self, after: Option<&Key>, limit: usize) -> Result<Vec<(Key, Multihash)>, ProviderError> {
                crate::$ty::provide_list(self, after, limit)
            }
            fn stats(&self) -> ProviderStats {
                crate::$ty::stats(self)
            }
            fn close(&self) -> impl Future<Output = Result<(), ProviderError>> + Send {
                crate::$ty::close(self)
            }
        }
    };
}

impl_dht_provider!(SweepingProvider<N: dht_routing::Network, T: dht_routing_table::RoutingTable, K: dht_provider_store::Keystore>);
impl_dht_provider!(LegacyProvider<D: dht_routing::Dht, K: dht_provider_store::Keystore>);
