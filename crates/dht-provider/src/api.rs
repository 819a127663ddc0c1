//! The provider interface of the seed `provider-interface.md`, in Rust.

use crate::{Multihash, error::ProviderError, stats::ProviderStats};

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
