//! The [`PeerBook`]: what the transport knows first-hand of each connected peer.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

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
///
/// A peer this node dialled by DNS name (`/dns*`, `/dnsaddr`) has a connection whose IP the
/// swarm does not tell; it is known once identify gives its listen addresses, grouped by the
/// IP of the first of them (the name was this node's choice, as an IP it dials would be).
#[derive(Clone, Debug, Default)]
pub struct PeerBook(Arc<RwLock<Known>>);

#[derive(Debug, Default)]
struct Known {
    peers: HashMap<PeerId, Observed>,
    /// Connected peers dialled by name, not yet identified.
    by_name: HashSet<PeerId>,
}

impl PeerBook {
    /// A connection to `peer` from or to `remote` opened; the first one's IP is kept.
    pub(crate) fn connected(&self, peer: PeerId, remote: &Multiaddr) {
        let mut known = self.0.write();
        let Some(ip) = remote_ip(remote) else {
            if !known.peers.contains_key(&peer) {
                known.by_name.insert(peer);
            }
            return;
        };
        known.by_name.remove(&peer);
        known.peers.entry(peer).or_insert_with(|| Observed {
            remote_ip: ip,
            listen_addrs: Vec::new(),
        });
    }

    /// `peer` announced these listen addresses.
    pub(crate) fn announced(&self, peer: PeerId, addrs: &[Multiaddr]) {
        let mut known = self.0.write();
        if let Some(o) = known.peers.get_mut(&peer) {
            o.listen_addrs = addrs.to_vec();
        } else if known.by_name.remove(&peer)
            && let Some(ip) = addrs.iter().find_map(remote_ip)
        {
            known.peers.insert(
                peer,
                Observed {
                    remote_ip: ip,
                    listen_addrs: addrs.to_vec(),
                },
            );
        }
    }

    /// The last connection to `peer` closed.
    pub(crate) fn disconnected(&self, peer: &PeerId) {
        let mut known = self.0.write();
        known.peers.remove(peer);
        known.by_name.remove(peer);
    }

    /// Whether `peer` is connected through a connection dialled by name and not yet
    /// identified.
    pub(crate) fn awaiting_identify(&self, peer: &PeerId) -> bool {
        self.0.read().by_name.contains(peer)
    }
}

impl AddressBook for PeerBook {
    fn observed(&self, peer: &PeerId) -> Option<Observed> {
        self.0.read().peers.get(peer).cloned()
    }
}
