//! The [`PeerBook`]: what the transport knows first-hand of each connected peer.

use std::{collections::HashMap, sync::Arc};

use dht_proto::{Multiaddr, PeerId};
use dht_routing_table::{AddressBook, Observed};
use parking_lot::RwLock;

use super::limits::remote_ip;

/// The connected peers with the IP address of their first connection and the listen
/// addresses they announced through identify: the [`AddressBook`] the node's routing table
/// groups and addresses its peers by.
///
/// A peer is known while it has a connection, so the book holds at most as many peers as
/// the connection limits allow, and each at most 32 addresses (as
/// [`KadBehaviour::set_peer_addrs`](crate::transport::KadBehaviour::set_peer_addrs) keeps).
#[derive(Clone, Debug, Default)]
pub struct PeerBook(Arc<RwLock<HashMap<PeerId, Observed>>>);

impl PeerBook {
    /// A connection to `peer` from or to `remote` opened; the first one's IP is kept.
    pub(crate) fn connected(&self, peer: PeerId, remote: &Multiaddr) {
        let Some(ip) = remote_ip(remote) else {
            return;
        };
        self.0.write().entry(peer).or_insert_with(|| Observed {
            remote_ip: ip,
            listen_addrs: Vec::new(),
        });
    }

    /// `peer` announced these listen addresses.
    pub(crate) fn announced(&self, peer: PeerId, addrs: &[Multiaddr]) {
        if let Some(o) = self.0.write().get_mut(&peer) {
            o.listen_addrs = addrs.to_vec();
        }
    }

    /// The last connection to `peer` closed.
    pub(crate) fn disconnected(&self, peer: &PeerId) {
        self.0.write().remove(peer);
    }
}

impl AddressBook for PeerBook {
    fn observed(&self, peer: &PeerId) -> Option<Observed> {
        self.0.read().get(peer).cloned()
    }
}
