//! The provider of a [`Node`](super::Node): the sweeping one or the per-key one, behind one
//! [`DhtProvider`].

use std::{fmt, sync::Arc};

use dht_provider::{
    DhtProvider, LegacyProvider, Multihash, ProviderError, ProviderStats, SweepingProvider,
};

use super::{NodeClient, NodeTable, SharedStores, TransportNetwork};

/// The provider of a [`Node`](super::Node): keeps the keys in the node's keystore advertised.
pub enum NodeProvider<T: NodeTable> {
    /// The sweeping provider (the default): keys grouped by keyspace region.
    Sweep(SweepingProvider<TransportNetwork, Arc<T>, SharedStores>),
    /// The per-key provider: one DHT walk per key.
    Legacy(LegacyProvider<Arc<NodeClient<T>>, SharedStores>),
}

impl<T: NodeTable> fmt::Debug for NodeProvider<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeProvider::Sweep(_) => "NodeProvider::Sweep",
            NodeProvider::Legacy(_) => "NodeProvider::Legacy",
        })
    }
}

impl<T: NodeTable> NodeProvider<T> {
    /// `"sweep"` or `"per-key"`.
    pub fn strategy(&self) -> &'static str {
        match self {
            NodeProvider::Sweep(_) => "sweep",
            NodeProvider::Legacy(_) => "per-key",
        }
    }
}

impl<T: NodeTable> DhtProvider for NodeProvider<T> {
    async fn start_providing(&self, force: bool, keys: &[Multihash]) -> Result<(), ProviderError> {
        match self {
            NodeProvider::Sweep(p) => p.start_providing(force, keys).await,
            NodeProvider::Legacy(p) => p.start_providing(force, keys).await,
        }
    }

    fn start_providing_async(&self, force: bool, keys: &[Multihash]) -> Result<(), ProviderError> {
        match self {
            NodeProvider::Sweep(p) => p.start_providing_async(force, keys),
            NodeProvider::Legacy(p) => p.start_providing_async(force, keys),
        }
    }

    fn stop_providing(&self, keys: &[Multihash]) -> Result<(), ProviderError> {
        match self {
            NodeProvider::Sweep(p) => p.stop_providing(keys),
            NodeProvider::Legacy(p) => p.stop_providing(keys),
        }
    }

    async fn provide_once(&self, keys: &[Multihash]) -> Result<(), ProviderError> {
        match self {
            NodeProvider::Sweep(p) => p.provide_once(keys).await,
            NodeProvider::Legacy(p) => p.provide_once(keys).await,
        }
    }

    fn provide_list(
        &self,
        after: Option<&dht_proto::Key>,
        limit: usize,
    ) -> Result<Vec<(dht_proto::Key, Multihash)>, ProviderError> {
        match self {
            NodeProvider::Sweep(p) => p.provide_list(after, limit),
            NodeProvider::Legacy(p) => p.provide_list(after, limit),
        }
    }

    fn stats(&self) -> ProviderStats {
        match self {
            NodeProvider::Sweep(p) => p.stats(),
            NodeProvider::Legacy(p) => p.stats(),
        }
    }

    async fn close(&self) -> Result<(), ProviderError> {
        match self {
            NodeProvider::Sweep(p) => p.close().await,
            NodeProvider::Legacy(p) => p.close().await,
        }
    }
}
