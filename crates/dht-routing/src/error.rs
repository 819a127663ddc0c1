//! The errors of the operations.

use crate::RpcError;

/// Why an operation could not run.
///
/// Finding nothing is not an error: operations return an empty or `None` result with what
/// the search cost.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The routing table holds no peer to start from (the node is not bootstrapped).
    #[error("the routing table holds no peer to start from")]
    NoPeers,
    /// A [`Dht`](crate::Dht) implementation could not reach the network.
    #[error(transparent)]
    Network(#[from] RpcError),
}
