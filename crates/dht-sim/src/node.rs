//! One simulated node: identity, routing table, stores, handler, behaviour and counters.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use dht_handler::Handler;
use dht_proto::{Key, MessageType, PeerInfo};
use dht_provider_store::MemoryStore;
use dht_routing_table::KBucketTable;
use serde::Serialize;

/// The handler type of a simulated node: its table and one in-memory store for providers and
/// values.
pub type SimHandler = Handler<Arc<KBucketTable>, Arc<MemoryStore>, Arc<MemoryStore>>;

/// How a node acts as a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[non_exhaustive]
pub enum Behaviour {
    /// Answers as the protocol says.
    Honest,
    /// Accepts requests and never answers.
    Silent,
    /// Answers correctly, [`SimConfig::slow_delay`](crate::SimConfig::slow_delay) late.
    Slow,
    /// Answers with k random live peers instead of the closest.
    RandomPeers,
    /// Answers with k live peers from the far half of the keyspace.
    FarPeers,
}

impl Behaviour {
    /// Whether the node answers requests at all (every behaviour but [`Behaviour::Silent`]).
    pub fn answers(self) -> bool {
        self != Behaviour::Silent
    }
}

/// The name [`RpcCounts`] lists batches of the batched provide protocol under, beside the
/// `/ipfs/kad/1.0.0` message types.
pub const PROVIDE_BATCH: &str = "PROVIDE_BATCH";

/// Requests of each type, sent and received, by one node or by all.
#[derive(Debug, Default)]
pub(crate) struct NodeCounters {
    sent: [AtomicU64; 6],
    received: [AtomicU64; 6],
    /// Provider batches sent and received, and the records they carried.
    batches_sent: AtomicU64,
    batch_records_sent: AtomicU64,
    batches_received: AtomicU64,
    batch_records_received: AtomicU64,
    /// Bytes of the provider-record messages sent (see [`RpcCounts::record_bytes`]).
    record_bytes: AtomicU64,
}

fn slot(ty: MessageType) -> usize {
    // The wire values are 0..=5.
    usize::try_from(ty.to_wire()).unwrap_or(0).min(5)
}

impl NodeCounters {
    pub(crate) fn sent(&self, ty: MessageType) {
        if let Some(c) = self.sent.get(slot(ty)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn received(&self, ty: MessageType) {
        if let Some(c) = self.received.get(slot(ty)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A provider batch of `records` records sent.
    pub(crate) fn batch_sent(&self, records: usize) {
        self.batches_sent.fetch_add(1, Ordering::Relaxed);
        self.batch_records_sent
            .fetch_add(records as u64, Ordering::Relaxed);
    }

    /// `n` bytes of a message carrying provider records (or answering a batch of them).
    pub(crate) fn record_bytes(&self, n: usize) {
        self.record_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A provider batch of `records` records received by a live server.
    pub(crate) fn batch_received(&self, records: usize) {
        self.batches_received.fetch_add(1, Ordering::Relaxed);
        self.batch_records_received
            .fetch_add(records as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> RpcCounts {
        let read = |a: &[AtomicU64; 6]| {
            MessageType::ALL
                .iter()
                .map(|&ty| {
                    let n = a.get(slot(ty)).map_or(0, |c| c.load(Ordering::Relaxed));
                    (ty.as_str().to_string(), n)
                })
                .filter(|(_, n)| *n > 0)
                .collect()
        };
        let with_batches = |mut map: std::collections::BTreeMap<String, u64>, n: &AtomicU64| {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                map.insert(PROVIDE_BATCH.to_string(), n);
            }
            map
        };
        RpcCounts {
            sent: with_batches(read(&self.sent), &self.batches_sent),
            received: with_batches(read(&self.received), &self.batches_received),
            batch_records_sent: self.batch_records_sent.load(Ordering::Relaxed),
            batch_records_received: self.batch_records_received.load(Ordering::Relaxed),
            record_bytes: self.record_bytes.load(Ordering::Relaxed),
        }
    }
}

/// Requests by type (`FIND_NODE`, …, and [`PROVIDE_BATCH`] for batches of the batched
/// provide protocol), as sent by clients and as received by handlers.
///
/// A request is *sent* when a client hands it to the network and *received* when it reaches
/// a live server's handler (lost requests and requests to nodes that left are sent, not
/// received; a batch to a server that does not speak the protocol is neither). Types with a
/// count of zero are left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RpcCounts {
    /// Requests sent, by type name.
    pub sent: std::collections::BTreeMap<String, u64>,
    /// Requests received, by type name.
    pub received: std::collections::BTreeMap<String, u64>,
    /// Provider records sent in batches (each ADD_PROVIDER is one record).
    pub batch_records_sent: u64,
    /// Provider records received in batches.
    pub batch_records_received: u64,
    /// Bytes of the messages that carry provider records, as the sender writes them (protobuf
    /// body and length prefix, without libp2p's stream framing): ADD_PROVIDER and batch
    /// requests sent, and the batch answers received back.
    pub record_bytes: u64,
}

impl RpcCounts {
    /// Requests of type `ty` sent.
    pub fn sent_of(&self, ty: MessageType) -> u64 {
        self.sent.get(ty.as_str()).copied().unwrap_or(0)
    }

    /// Requests of type `ty` received.
    pub fn received_of(&self, ty: MessageType) -> u64 {
        self.received.get(ty.as_str()).copied().unwrap_or(0)
    }

    /// Provider batches sent.
    pub fn batches_sent(&self) -> u64 {
        self.sent.get(PROVIDE_BATCH).copied().unwrap_or(0)
    }

    /// Provider batches received.
    pub fn batches_received(&self) -> u64 {
        self.received.get(PROVIDE_BATCH).copied().unwrap_or(0)
    }

    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &RpcCounts) {
        self.batch_records_sent += other.batch_records_sent;
        self.batch_records_received += other.batch_records_received;
        self.record_bytes += other.record_bytes;
        for (ty, n) in &other.sent {
            *self.sent.entry(ty.clone()).or_default() += n;
        }
        for (ty, n) in &other.received {
            *self.received.entry(ty.clone()).or_default() += n;
        }
    }
}

/// A simulated DHT server and client.
///
/// The table is shared by the handler (which adds peers that send requests) and the node's
/// [`DhtClient`](dht_routing::DhtClient) (which adds peers that answer and drops those that
/// fail); the store holds the provider and value records others put here.
pub struct SimNode {
    pub(crate) index: usize,
    pub(crate) info: PeerInfo,
    pub(crate) key: Key,
    pub(crate) behaviour: Behaviour,
    /// Speaks the batched provide protocol (lists it in identify) as a server.
    pub(crate) provide_batch: bool,
    /// Lists the batched provide protocol but refuses its streams.
    pub(crate) refuses_batches: bool,
    pub(crate) table: Arc<KBucketTable>,
    pub(crate) store: Arc<MemoryStore>,
    pub(crate) handler: SimHandler,
    pub(crate) alive: AtomicBool,
    /// Never chosen to leave by churn.
    pub(crate) protected: AtomicBool,
    pub(crate) counters: NodeCounters,
    /// Messages sent so far: with the seed and the two ends, it seeds each message's draws.
    pub(crate) seq: AtomicU64,
    /// The distinct nodes this node sent requests to, while tracked
    /// ([`Sim::track_contacts`](crate::Sim::track_contacts)).
    pub(crate) contacts: parking_lot::Mutex<Option<std::collections::HashSet<usize>>>,
}

impl SimNode {
    /// The node's index in the simulation (stable: nodes are never renumbered).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The node's peer id and address.
    pub fn info(&self) -> &PeerInfo {
        &self.info
    }

    /// The node's Kademlia key.
    pub fn key(&self) -> Key {
        self.key
    }

    /// How the node acts as a server.
    pub fn behaviour(&self) -> Behaviour {
        self.behaviour
    }

    /// Whether the node speaks the batched provide protocol as a server
    /// ([`SimConfig::provide_batch_share`](crate::SimConfig::provide_batch_share)).
    pub fn speaks_provide_batch(&self) -> bool {
        self.provide_batch
    }

    /// Whether the node takes batches of the batched provide protocol: it lists the
    /// protocol and does not refuse it
    /// ([`SimConfig::provide_batch_refuse_share`](crate::SimConfig::provide_batch_refuse_share)).
    pub fn takes_provide_batch(&self) -> bool {
        self.provide_batch && !self.refuses_batches
    }

    /// The node's routing table.
    pub fn table(&self) -> &Arc<KBucketTable> {
        &self.table
    }

    /// The node's provider and value store.
    pub fn store(&self) -> &Arc<MemoryStore> {
        &self.store
    }

    /// The node's request handler.
    pub fn handler(&self) -> &SimHandler {
        &self.handler
    }

    /// Whether the node is in the network (it has not left).
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    /// The requests this node sent and received, by type.
    pub fn counts(&self) -> RpcCounts {
        self.counters.snapshot()
    }
}

impl std::fmt::Debug for SimNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimNode")
            .field("index", &self.index)
            .field("peer", &self.info.peer_id)
            .field("behaviour", &self.behaviour)
            .field("alive", &self.is_alive())
            .field(
                "table_len",
                &dht_routing_table::RoutingTable::len(&*self.table),
            )
            .finish_non_exhaustive()
    }
}
