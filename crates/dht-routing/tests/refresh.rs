//! `refresh_table`, the one refresh of a k-bucket table (the node's maintenance, the
//! simulator's joins), over the test network on tokio's paused clock.
#![allow(clippy::unwrap_used)]

mod common;

use std::{future::Future, sync::Arc, time::Duration};

use common::{Handle, TestNet};
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
use parking_lot::Mutex;

fn config() -> ClientConfig {
    ClientConfig::default()
        .with_driver(DriverConfig::default().with_request_timeout(Duration::from_secs(2)))
        .with_query(QueryConfig::default().with_stall_timeout(Some(Duration::from_millis(500))))
}

/// The test network as node `from` sees it, remembering the key of every FIND_NODE sent.
#[derive(Clone)]
struct Keys {
    inner: Handle,
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

/// Node `i`'s client over a table of its own neighbours (a clock it can move), and the
/// FIND_NODE keys it sends.
fn refreshing_client(
    net: &Arc<TestNet>,
    i: usize,
    clock: &ManualClock,
    keep: impl Fn(usize) -> bool,
    config: ClientConfig,
) -> (DhtClient<KBucketTable, Keys>, Sent) {
    let table = KBucketTable::new(
        net.nodes[i].key,
        KBucketConfig::default().with_diversity(None),
        clock.clone(),
    );
    for &j in &net.nodes[i].neighbours {
        let cpl = net.nodes[i].key.common_prefix_len(&net.nodes[j].key);
        if keep(cpl) {
            table.update(&net.nodes[j].info, PeerEvent::Seen(Direction::Outbound));
        }
    }
    let sent = Arc::new(Mutex::new(Vec::new()));
    let network = Keys {
        inner: Handle {
            net: net.clone(),
            from: i,
        },
        sent: sent.clone(),
    };
    let client = DhtClient::new(net.nodes[i].info.clone(), table, network, config);
    (client, sent)
}

#[tokio::test(start_paused = true)]
async fn the_local_key_first_then_each_stale_bucket_once() {
    let net = Arc::new(TestNet::new(400, 61));
    let clock = ManualClock::new(1_000_000);
    let (client, sent) = refreshing_client(&net, 0, &clock, |_| true, config());
    let own = net.nodes[0].info.peer_id.to_bytes();

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
    let local = net.nodes[0].key;
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
