//! Which peers enter a node's routing table: the bootstrap peers it dials, and the servers
//! identify reports, each admitted once it has answered a FIND_NODE.

use std::sync::Arc;

use dht_proto::{PeerId, PeerInfo, Request, Response};
use dht_routing_table::{Direction, PeerEvent, RoutingTable};
use futures::future::join_all;
use tokio::sync::Semaphore;

use crate::transport::{TransportEvent, TransportEvents, TransportHandle};

/// Dials `peers` and adds those that answered to `table`; peers that cannot be dialled are
/// logged and skipped.
pub(crate) async fn dial_and_add<T: RoutingTable + ?Sized>(
    transport: &TransportHandle,
    table: &T,
    peers: &[PeerInfo],
) {
    let dials = join_all(peers.iter().map(|peer| async move {
        let result = transport.dial(peer).await;
        (peer, result)
    }))
    .await;
    for (peer, result) in dials {
        match result {
            // A configured bootstrap peer is trusted to be a server; identify confirms it
            // shortly (PeerIsServer), and the self-lookup marks it useful.
            Ok(()) => {
                table.update(peer, PeerEvent::Seen(Direction::Outbound));
            }
            Err(e) => tracing::warn!(peer = %peer.peer_id, error = %e, "bootstrap dial failed"),
        }
    }
}

/// Most admission probes (see [`feed_table`]) in flight at once; a server identified while
/// all are busy is probed on its next identify exchange, or found by a lookup.
const MAX_ADMISSION_PROBES: usize = 16;

/// Keeps the routing table in step with what identify says about connected peers.
///
/// Saying it serves the DHT costs a peer nothing, so a server is admitted only once it has
/// answered a FIND_NODE of ours (for our own id, as go-libp2p-kad-dht's lookup check), at
/// most [`MAX_ADMISSION_PROBES`] probes at a time.
pub(super) async fn feed_table<T: RoutingTable + 'static>(
    mut events: TransportEvents,
    table: Arc<T>,
    transport: TransportHandle,
    local: PeerId,
) {
    let probes = Arc::new(Semaphore::new(MAX_ADMISSION_PROBES));
    while let Some(event) = events.recv().await {
        match event {
            TransportEvent::PeerIsServer(peer) => {
                if peer.addrs.is_empty() {
                    continue;
                }
                let Ok(permit) = probes.clone().try_acquire_owned() else {
                    tracing::debug!(peer = %peer.peer_id, "admission probes busy: not probed");
                    continue;
                };
                let (table, transport) = (table.clone(), transport.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let probe = Request::FindNode {
                        key: local.to_bytes(),
                    };
                    match transport.request(&peer, probe).await {
                        Ok(Some(Response::FindNode { .. })) => {
                            table.update(&peer, PeerEvent::Seen(Direction::Outbound));
                        }
                        other => tracing::debug!(
                            peer = %peer.peer_id,
                            answer = ?other.map(|r| r.map(|r| r.message_type())),
                            "server did not answer the admission probe: not added"
                        ),
                    }
                });
            }
            TransportEvent::PeerIsClient(id) => {
                table.update(&PeerInfo::new(id, Vec::new()), PeerEvent::Removed);
            }
            // A closed connection says nothing about whether the peer still serves; failed
            // requests (reported by the client) are what evict peers. Events the transport
            // may add later say nothing the table needs either.
            _ => {}
        }
    }
}
