//! The provider of a [`Node`](super::Node): the sweeping one or the per-key one, behind one
//! [`DhtProvider`].

use std::sync::Arc;

use dht_provider::{EitherProvider, LegacyProvider, SweepingProvider};

use super::{NodeClient, SharedStores, TransportNetwork};

/// The provider of a [`Node`](super::Node): keeps the keys in the node's keystore advertised,
/// with the sweeping provider (the default) or the per-key one.
pub type NodeProvider<T> = EitherProvider<
    SweepingProvider<TransportNetwork, Arc<T>, SharedStores>,
    LegacyProvider<Arc<NodeClient<T>>, SharedStores>,
>;
