//! A DHT node: the transport, the server, the routing table and the client, put together.
//!
//! [`Node::start`] takes a keypair and a [`NodeConfig`] and wires:
//!
//! - the [`transport`] (TCP + noise + yamux, identify, ping, `/ipfs/kad/1.0.0`),
//!   whose inbound requests go to a [`dht_handler::Handler`] over the node's routing table and
//!   an in-memory [`MemoryStore`] (provider and value records);
//! - a task that feeds the routing table from the transport's events: a peer that identify
//!   says is a DHT server is added ([`PeerEvent::Seen`]`(`[`Direction::Inbound`]`)`), one
//!   that turned client is removed;
//! - a [`DhtClient`] over the same table and a [`TransportNetwork`], the
//!   [`Network`] adapter over the transport.
//!
//! This is the minimal composition the devnet needs. The full `NodeBuilder` (persistent
//! RocksDB stores, the provider, configuration files, metrics, the HTTP API, periodic bucket
//! refresh) comes later and will replace [`NodeConfig`].
//!
//! ```no_run
//! use dht_node::node::{Node, NodeConfig};
//! use dht_routing_table::RoutingTable;
//! use libp2p::identity::Keypair;
//!
//! # async fn run(bootstrap: Vec<dht_proto::PeerInfo>) -> Result<(), dht_node::node::NodeError> {
//! let node = Node::start(Keypair::generate_ed25519(), NodeConfig::local()).await?;
//! let closest = node.bootstrap(&bootstrap).await?;
//! println!("{} knows {} peers", node.peer_id(), node.table().len());
//! # let _ = closest;
//! node.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::{net::Ipv4Addr, sync::Arc};

use dht_handler::{Handler, HandlerConfig, Sender};
use dht_proto::{CodecError, K_VALUE, Multiaddr, PeerId, PeerInfo, Request, Response};
use dht_provider_store::MemoryStore;
use dht_routing::{ClientConfig, DhtClient, Network, Outcome, RpcError, find_closest_peers};
use dht_routing_table::{
    Clock, Direction, DiversityConfig, KBucketConfig, KBucketTable, PeerEvent, RoutingTable,
    SystemClock,
};
use futures::future::join_all;
use libp2p::{identity::Keypair, multiaddr::Protocol};
use tokio::task::JoinHandle;

use crate::transport::{
    self, HandlerError, RemotePeer, TransportConfig, TransportError, TransportEvent,
    TransportEvents, TransportHandle,
};

/// The routing table of a [`Node`], shared by its server, its client and its event task.
pub type NodeTable = Arc<KBucketTable>;

/// The record stores of a [`Node`] (provider and value records it holds for others).
pub type NodeStore = Arc<MemoryStore>;

/// The server side of a [`Node`].
pub type NodeHandler = Handler<NodeTable, NodeStore, NodeStore>;

/// The client side of a [`Node`]: a [`dht_routing::Dht`] over its table and its transport.
pub type NodeClient = DhtClient<NodeTable, TransportNetwork>;

/// What can go wrong starting or bootstrapping a [`Node`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The transport could not start (or has stopped).
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// A DHT operation could not run (e.g. no peer to start a lookup from).
    #[error("routing: {0}")]
    Routing(#[from] dht_routing::Error),
}

/// Settings of a [`Node`]. A stand-in for the coming `NodeBuilder`.
///
/// ```
/// use dht_node::node::NodeConfig;
/// let config = NodeConfig::local();
/// assert_eq!(config.transport.listen_addrs[0].to_string(), "/ip4/127.0.0.1/tcp/0");
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct NodeConfig {
    /// The transport: listen addresses, timeouts, server or client mode.
    pub transport: TransportConfig,
    /// The routing table (k, replacement cache, IP diversity filter).
    pub table: KBucketConfig,
    /// The client: k, α, β, per-request and per-lookup timeouts.
    pub client: ClientConfig,
    /// The server's limits.
    pub handler: HandlerConfig,
}

impl NodeConfig {
    /// A node for a devnet on one machine: listens on an ephemeral port of 127.0.0.1, and
    /// its routing table's IP diversity filter exempts loopback and private addresses (with
    /// the default filter a table would hold only 3 peers of 127.0.0.0/24).
    pub fn local() -> Self {
        let listen = Multiaddr::empty()
            .with(Protocol::Ip4(Ipv4Addr::LOCALHOST))
            .with(Protocol::Tcp(0));
        NodeConfig {
            transport: TransportConfig::default().listen_addrs(vec![listen]),
            table: KBucketConfig::default()
                .with_diversity(Some(DiversityConfig::default().with_local_network(true))),
            client: ClientConfig::default(),
            handler: HandlerConfig::default(),
        }
    }

    /// Sets [`NodeConfig::transport`].
    #[must_use]
    pub fn with_transport(mut self, transport: TransportConfig) -> Self {
        self.transport = transport;
        self
    }

    /// Sets [`NodeConfig::table`].
    #[must_use]
    pub fn with_table(mut self, table: KBucketConfig) -> Self {
        self.table = table;
        self
    }

    /// Sets [`NodeConfig::client`].
    #[must_use]
    pub fn with_client(mut self, client: ClientConfig) -> Self {
        self.client = client;
        self
    }

    /// Sets [`NodeConfig::handler`].
    #[must_use]
    pub fn with_handler(mut self, handler: HandlerConfig) -> Self {
        self.handler = handler;
        self
    }
}

/// dht-routing's [`Network`] over the libp2p transport: each request goes out through
/// [`TransportHandle::request`], which reuses the connection and a stream per peer.
///
/// Transport errors map to [`RpcError`] as: `Timeout` → `Timeout`; `Dial`,
/// `UnsupportedProtocol`, `ConnectionClosed`, `Stream` → `Unreachable`; a truncated message
/// (the peer closed the stream before answering) → `NoResponse`; `UnexpectedResponse` →
/// `UnexpectedResponse`; anything else → `Other`.
#[derive(Clone, Debug)]
pub struct TransportNetwork {
    transport: TransportHandle,
}

impl TransportNetwork {
    /// The network over `transport`.
    pub fn new(transport: TransportHandle) -> Self {
        TransportNetwork { transport }
    }

    /// The transport requests go over.
    pub fn transport(&self) -> &TransportHandle {
        &self.transport
    }
}

impl Network for TransportNetwork {
    fn send(
        &self,
        peer: &PeerInfo,
        request: Request,
    ) -> impl Future<Output = Result<Option<Response>, RpcError>> + Send {
        let transport = self.transport.clone();
        let peer = peer.clone();
        async move { transport.request(&peer, request).await.map_err(rpc_error) }
    }
}

/// The [`RpcError`] a [`TransportError`] means to the client.
pub fn rpc_error(error: TransportError) -> RpcError {
    match error {
        TransportError::Timeout => RpcError::Timeout,
        e @ (TransportError::Dial(_)
        | TransportError::UnsupportedProtocol
        | TransportError::ConnectionClosed
        | TransportError::Stream(_)) => RpcError::Unreachable(e.to_string()),
        TransportError::Codec(CodecError::Truncated) => RpcError::NoResponse,
        TransportError::UnexpectedResponse { sent, got } => RpcError::UnexpectedResponse {
            expected: sent,
            got,
        },
        e => RpcError::Other(e.to_string()),
    }
}

/// A running DHT node: transport, server, routing table, client.
///
/// Dropping it does not stop the transport; call [`shutdown`](Self::shutdown).
#[derive(Debug)]
pub struct Node {
    info: PeerInfo,
    transport: TransportHandle,
    table: NodeTable,
    store: NodeStore,
    handler: Arc<NodeHandler>,
    client: Arc<NodeClient>,
    events: JoinHandle<()>,
}

impl Node {
    /// Starts the transport with `keypair` and wires the server, the routing table and the
    /// client. Returns once the transport listens; the node knows nobody until
    /// [`bootstrap`](Self::bootstrap) or until peers connect to it.
    ///
    /// # Errors
    /// [`NodeError::Transport`] if the swarm cannot be built or a listen address bound.
    pub async fn start(keypair: Keypair, config: NodeConfig) -> Result<Node, NodeError> {
        let peer_id = keypair.public().to_peer_id();
        let local = PeerInfo::new(peer_id, Vec::new());
        let table: NodeTable = Arc::new(KBucketTable::new(local.key(), config.table, SystemClock));
        let store: NodeStore = Arc::new(MemoryStore::new());
        let handler = Arc::new(Handler::new(
            local,
            table.clone(),
            store.clone(),
            store.clone(),
            config.handler,
        ));
        let serving = handler.clone();
        let inbound = transport::handler_fn(move |from: &RemotePeer, request| {
            let sender = Sender {
                peer: from.peer.clone(),
                is_server: from.is_server,
            };
            serving
                .handle(&sender, request, SystemClock.now())
                .map_err(|e| Box::new(e) as HandlerError)
        });
        let (transport, events) = transport::spawn(keypair, config.transport, inbound).await?;
        let addrs = transport.listen_addrs().await?;
        handler.set_local_addrs(addrs.clone());
        let info = PeerInfo::new(peer_id, addrs);
        let events = tokio::spawn(feed_table(events, table.clone()));
        let client = Arc::new(DhtClient::new(
            info.clone(),
            table.clone(),
            TransportNetwork::new(transport.clone()),
            config.client,
        ));
        Ok(Node {
            info,
            transport,
            table,
            store,
            handler,
            client,
            events,
        })
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.info.peer_id
    }

    /// This node as others dial it: its peer id and the addresses it listens on.
    pub fn info(&self) -> &PeerInfo {
        &self.info
    }

    /// The transport.
    pub fn transport(&self) -> &TransportHandle {
        &self.transport
    }

    /// A [`Network`] over this node's transport.
    pub fn network(&self) -> TransportNetwork {
        TransportNetwork::new(self.transport.clone())
    }

    /// The routing table.
    pub fn table(&self) -> &NodeTable {
        &self.table
    }

    /// The provider and value records this node holds for others.
    pub fn store(&self) -> &NodeStore {
        &self.store
    }

    /// The server.
    pub fn handler(&self) -> &Arc<NodeHandler> {
        &self.handler
    }

    /// The client: pass it (or `&**client`) to dht-routing's operations.
    pub fn client(&self) -> &Arc<NodeClient> {
        &self.client
    }

    /// Dials `peers`, adds those that answered the dial to the routing table, and runs a
    /// self-lookup (the k peers closest to this node's own peer id), which fills the table
    /// with the peers it meets. Returns the self-lookup's result and cost.
    ///
    /// Peers that cannot be dialled are skipped (logged); with an empty table the lookup
    /// fails with [`dht_routing::Error::NoPeers`].
    ///
    /// # Errors
    /// [`NodeError::Routing`] when no peer is known to start the lookup from.
    pub async fn bootstrap(&self, peers: &[PeerInfo]) -> Result<Outcome<Vec<PeerInfo>>, NodeError> {
        let dials = join_all(peers.iter().map(|peer| async move {
            let result = self.transport.dial(peer).await;
            (peer, result)
        }))
        .await;
        for (peer, result) in dials {
            match result {
                // A configured bootstrap peer is trusted to be a server; identify confirms
                // it shortly (PeerIsServer), and the self-lookup marks it useful.
                Ok(()) => {
                    self.table
                        .update(peer, PeerEvent::Seen(Direction::Outbound));
                }
                Err(e) => tracing::warn!(peer = %peer.peer_id, error = %e, "bootstrap dial failed"),
            }
        }
        self.self_lookup().await
    }

    /// Looks up the k peers closest to this node's own peer id: how a node makes itself
    /// known to its neighbours and learns them.
    ///
    /// # Errors
    /// [`NodeError::Routing`] when the routing table is empty.
    pub async fn self_lookup(&self) -> Result<Outcome<Vec<PeerInfo>>, NodeError> {
        let key = self.info.peer_id.to_bytes();
        Ok(find_closest_peers(&*self.client, &key, K_VALUE).await?)
    }

    /// Stops the transport (every connection and listener) and the table's event task.
    pub async fn shutdown(&self) {
        self.transport.shutdown().await;
        self.events.abort();
    }
}

/// Keeps the routing table in step with what identify says about connected peers.
async fn feed_table(mut events: TransportEvents, table: NodeTable) {
    while let Some(event) = events.recv().await {
        match event {
            TransportEvent::PeerIsServer(peer) => {
                if !peer.addrs.is_empty() {
                    table.update(&peer, PeerEvent::Seen(Direction::Inbound));
                }
            }
            TransportEvent::PeerIsClient(id) => {
                table.update(&PeerInfo::new(id, Vec::new()), PeerEvent::Removed);
            }
            // A closed connection says nothing about whether the peer still serves; failed
            // requests (reported by the client) are what evict peers.
            TransportEvent::PeerDisconnected(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_errors_map_to_rpc_errors() {
        use dht_proto::MessageType;
        let check = |error: TransportError, expected: fn(&RpcError) -> bool| {
            let shown = format!("{error:?}");
            let got = rpc_error(error);
            assert!(expected(&got), "{shown} mapped to {got:?}");
        };
        check(TransportError::Timeout, |e| matches!(e, RpcError::Timeout));
        check(TransportError::Dial("refused".into()), |e| {
            matches!(e, RpcError::Unreachable(_))
        });
        check(TransportError::UnsupportedProtocol, |e| {
            matches!(e, RpcError::Unreachable(_))
        });
        check(TransportError::ConnectionClosed, |e| {
            matches!(e, RpcError::Unreachable(_))
        });
        check(
            TransportError::Stream(std::io::Error::other("reset")),
            |e| matches!(e, RpcError::Unreachable(_)),
        );
        check(TransportError::Codec(CodecError::Truncated), |e| {
            matches!(e, RpcError::NoResponse)
        });
        check(TransportError::Codec(CodecError::Malformed("x")), |e| {
            matches!(e, RpcError::Other(_))
        });
        check(
            TransportError::UnexpectedResponse {
                sent: MessageType::FindNode,
                got: MessageType::Ping,
            },
            |e| {
                matches!(
                    e,
                    RpcError::UnexpectedResponse {
                        expected: MessageType::FindNode,
                        got: MessageType::Ping
                    }
                )
            },
        );
        check(TransportError::Shutdown, |e| {
            matches!(e, RpcError::Other(_))
        });
    }
}
