//! Which peers enter a node's routing table: the bootstrap peers it dials, and the servers
//! identify reports, each admitted once it has answered a FIND_NODE.

use std::{sync::Arc, time::Duration};

use dht_proto::{K_VALUE, Multiaddr, PeerId, PeerInfo, Request, Response, multiaddr::Protocol};
use dht_routing::Outcome;
use dht_routing_table::{Direction, PeerEvent, RoutingTable};
use futures::future::join_all;
use tokio::sync::Semaphore;

use super::{NodeClient, NodeError};
use crate::transport::{TransportEvent, TransportEvents, TransportHandle};

/// Bootstraps from `peers`: dials them, adds those that answered to `table` (a peer named
/// by DNS once identify has told its addresses), and runs a self-lookup (the k peers closest
/// to `local`), which fills the table with the peers it meets. Used when a node is built,
/// by [`Node::bootstrap`](super::Node::bootstrap), and again whenever the table runs low.
///
/// # Errors
/// [`NodeError::Routing`] when no peer answered, so that there is nobody to look up from.
pub(crate) async fn bootstrap_from<T: RoutingTable + 'static>(
    transport: &TransportHandle,
    table: &Arc<T>,
    client: &NodeClient<T>,
    local: PeerId,
    peers: &[PeerInfo],
) -> Result<Outcome<Vec<PeerInfo>>, NodeError> {
    dial_and_add(transport, &**table, peers).await;
    add_once_identified(transport, &**table, peers).await;
    let key = local.to_bytes();
    Ok(dht_routing::find_closest_peers(client, &key, K_VALUE).await?)
}

/// A peer named by DNS (`/dns*`, `/dnsaddr`) has no address its connection vouches for
/// until identify tells its listen addresses, so the table could not hold it yet: adds
/// such peers again once identify has (waiting at most 5 s for those connected).
async fn add_once_identified<T: RoutingTable + ?Sized>(
    transport: &TransportHandle,
    table: &T,
    peers: &[PeerInfo],
) {
    use dht_routing_table::AddressBook;
    let by_ip =
        |a: &Multiaddr| matches!(a.iter().next(), Some(Protocol::Ip4(_) | Protocol::Ip6(_)));
    let mut waiting: Vec<&PeerInfo> = peers
        .iter()
        .filter(|p| !p.addrs.iter().any(by_ip))
        .collect();
    let book = transport.peer_book();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !waiting.is_empty() {
        waiting.retain(|p| match book.observed(&p.peer_id) {
            Some(seen) if !seen.listen_addrs.is_empty() => {
                table.update(p, PeerEvent::Seen(Direction::Outbound));
                false
            }
            Some(_) => true,
            None => book.awaiting_identify(&p.peer_id),
        });
        if waiting.is_empty() || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Dials `peers` and adds those that answered to `table`; peers that cannot be dialled are
/// logged and skipped.
async fn dial_and_add<T: RoutingTable + ?Sized>(
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
