//! `refresh_table`, the one refresh of a k-bucket table (the node's maintenance, the
//! simulator's joins), over dht-sim's in-memory network on tokio's paused clock.
#![allow(clippy::unwrap_used)]

use std::{future::Future, sync::Arc, time::Duration};

use dht_proto::{
    PeerId, PeerInfo, Request, Response, batch::ProvideBatch, batch::ProvideBatchResponse,
};
use dht_routing::{
    ClientConfig, DhtClient, DriverConfig, Feature, MAX_REFRESH_CPL, Network, QueryConfig,
    RefreshScope, RpcError, refresh_table,
};
use dht_routing_table::{
    Direction, KBucketConfig, KBucketTable, ManualClock, PeerEvent, RoutingTable,
};
use dht_sim::{NodeNetwork, Sim, SimConfig};
use parking_lot::Mutex;

fn config() -> ClientConfig {
    ClientConfig::default()
        .with_driver(DriverConfig::default().with_request_timeout(Duration::from_secs(2)))
        .with_query(QueryConfig::default().with_stall_timeout(Some(Duration::from_millis(500))))
}

/// A node's view of the network, remembering the key of every FIND_NODE sent.
#[derive(Clone)]
struct Keys {
    inner: NodeNetwork,
    sent: Sent,
}

impl Network for Keys {
    fn send(
        &self,
        peer: &PeerInfo,
        request: Request,
    ) -> impl Future<Output = Result<Option<Response>, RpcError>> + Send {
        if let Request::FindNode { key } = &request {
            self.sent.lock().push(key.clone());
        }
        self.inner.send(peer, request)
    }

    fn supports(&self, peer: &PeerId, feature: Feature) -> bool {
        self.inner.supports(peer, feature)
    }

    fn provide_batch(
        &self,
        peer: &PeerInfo,
        batch: ProvideBatch,
    ) -> impl Future<Output = Result<ProvideBatchResponse, RpcError>> + Send {
        self.inner.provide_batch(peer, batch)
    }
}

/// The FIND_NODE keys a [`Keys`] network sent, in order.
type Sent = Arc<Mutex<Vec<Vec<u8>>>>;

/// Node `i`'s client over a copy of its table on a clock the test moves, and the FIND_NODE
/// keys it sends.
fn refreshing_client(
    sim: &Sim,
    i: usize,
    clock: &ManualClock,
) -> (DhtClient<KBucketTable, Keys>, Sent) {
    let node = sim.node(i).unwrap();
    let table = KBucketTable::new(
        node.key(),
        KBucketConfig::default().with_diversity(None),
        clock.clone(),
    );
    for peer in node.table().closest_peers(&node.key(), node.table().len()) {
        table.update(&peer, PeerEvent::Seen(Direction::Outbound));
    }
    let sent = Arc::new(Mutex::new(Vec::new()));
    let network = Keys {
        inner: sim.network(i),
        sent: sent.clone(),
    };
    let client = DhtClient::new(node.info().clone(), table, network, config());
    (client, sent)
}

#[tokio::test(start_paused = true)]
async fn the_local_key_first_then_each_stale_bucket_once() {
    let sim = Sim::build(SimConfig::default().with_nodes(400).with_seed(61))
        .await
        .unwrap();
    let clock = ManualClock::new(1_000_000);
    let (client, sent) = refreshing_client(&sim, 0, &clock);
    let local = sim.node(0).unwrap().key();
    let own = sim.node(0).unwrap().info().peer_id.to_bytes();

    let all = refresh_table(&client, RefreshScope::All, 7).await;
    let deepest = client.table().max_cpl().unwrap().min(MAX_REFRESH_CPL);
    assert!(
        deepest >= 5,
        "a 400-node network fills buckets 0 to {deepest}"
    );
    assert_eq!(all.buckets, (0..=deepest).collect::<Vec<_>>());
    assert_eq!(all.lookups, deepest + 2);
    assert!(all.stats.successes > 0);
    let keys = sent.lock().clone();
    assert_eq!(keys.first(), Some(&own), "the local key is looked up first");
    // Every bucket's lookup is aimed inside the bucket.
    for cpl in 0..=deepest {
        assert!(
            keys.iter()
                .any(|k| local.common_prefix_len(&dht_proto::Key::hash(k)) == cpl),
            "no lookup aimed at bucket {cpl}"
        );
    }

    // Just refreshed: nothing is stale, only the local key is looked up.
    sent.lock().clear();
    let none = refresh_table(&client, RefreshScope::Stale, 8).await;
    assert!(none.buckets.is_empty(), "{:?}", none.buckets);
    assert_eq!(none.lookups, 1);
    assert!(sent.lock().iter().all(|k| *k == own));

    // A refresh interval later, every bucket is stale again.
    clock.advance(KBucketConfig::default().refresh_interval);
    let stale = refresh_table(&client, RefreshScope::Stale, 9).await;
    assert_eq!(stale.buckets, (0..=deepest).collect::<Vec<_>>());
}
