//! The [`PeerBook`]: what the transport knows first-hand of each connected peer.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use dht_proto::{Multiaddr, PeerId};
use dht_routing::Feature;
use dht_routing_table::{AddressBook, Observed};
use parking_lot::RwLock;

use super::limits::remote_ip;

/// The connected peers with the IP address of their first connection and the listen
/// addresses they announced through identify: the [`AddressBook`] the node's routing table
/// groups and addresses its peers by.
///
/// A peer is known while it has a connection, so the book holds at most as many peers as
/// the connection limits allow, and each at most 32 addresses (as
/// [`KadBehaviour::set_peer_addrs`](crate::KadBehaviour::set_peer_addrs) keeps).
///
/// A peer this node dialled by DNS name (`/dns*`, `/dnsaddr`) has a connection whose IP the
/// swarm does not tell; it is known once identify gives its listen addresses, grouped by the
/// IP of the first of them (the name was this node's choice, as an IP it dials would be).
///
/// It also holds the [`Feature`]s each connected peer listed in its latest identify (the
/// protocols of [`Feature::protocol`]), forgotten when its last connection closes.
#[derive(Clone, Debug, Default)]
pub struct PeerBook(Arc<RwLock<Known>>);

#[derive(Debug, Default)]
struct Known {
    peers: HashMap<PeerId, Observed>,
    /// Connected peers dialled by name, not yet identified.
    by_name: HashSet<PeerId>,
    /// The features connected peers listed in their latest identify (only peers with one).
    features: HashMap<PeerId, HashSet<Feature>>,
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

    /// `peer`'s latest identify listed these protocols: its features are those among them.
    pub(crate) fn identified<'a>(
        &self,
        peer: PeerId,
        protocols: impl IntoIterator<Item = &'a str>,
    ) {
        let features: HashSet<Feature> = protocols
            .into_iter()
            .filter_map(Feature::from_protocol)
            .collect();
        let mut known = self.0.write();
        if features.is_empty() {
            known.features.remove(&peer);
        } else {
            known.features.insert(peer, features);
        }
    }

    /// `peer` refused `feature`'s protocol: it is not used with the peer until its next
    /// identify lists it again.
    pub(crate) fn refused(&self, peer: &PeerId, feature: Feature) {
        let mut known = self.0.write();
        if let Some(features) = known.features.get_mut(peer) {
            features.remove(&feature);
            if features.is_empty() {
                known.features.remove(peer);
            }
        }
    }

    /// Whether `peer` listed `feature`'s protocol in its latest identify (and is connected).
    pub fn supports(&self, peer: &PeerId, feature: Feature) -> bool {
        self.0
            .read()
            .features
            .get(peer)
            .is_some_and(|f| f.contains(&feature))
    }

    /// The last connection to `peer` closed.
    pub(crate) fn disconnected(&self, peer: &PeerId) {
        let mut known = self.0.write();
        known.peers.remove(peer);
        known.by_name.remove(peer);
        known.features.remove(peer);
    }

    /// Whether `peer` is connected through a connection dialled by name (`/dns*`,
    /// `/dnsaddr`) and not yet identified: its IP is known once identify tells its listen
    /// addresses.
    pub fn awaiting_identify(&self, peer: &PeerId) -> bool {
        self.0.read().by_name.contains(peer)
    }
}

impl AddressBook for PeerBook {
    fn observed(&self, peer: &PeerId) -> Option<Observed> {
        self.0.read().peers.get(peer).cloned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn features_last_while_connected_and_until_refused() {
        let book = PeerBook::default();
        let peer = PeerId::random();
        let addr: Multiaddr = "/ip4/198.51.100.7/tcp/4001".parse().unwrap();
        let batch = Feature::ProvideBatch;
        book.connected(peer, &addr);
        assert!(!book.supports(&peer, batch));
        book.identified(peer, ["/ipfs/kad/1.0.0", batch.protocol()]);
        assert!(book.supports(&peer, batch));
        // A stream refused: not used until the next identify lists it again.
        book.refused(&peer, batch);
        assert!(!book.supports(&peer, batch));
        book.identified(peer, [batch.protocol()]);
        assert!(book.supports(&peer, batch));
        // An identify that no longer lists it.
        book.identified(peer, ["/ipfs/kad/1.0.0"]);
        assert!(!book.supports(&peer, batch));
        // Forgotten with the last connection, addresses and features alike.
        book.identified(peer, [batch.protocol()]);
        book.disconnected(&peer);
        assert!(!book.supports(&peer, batch));
        assert!(book.observed(&peer).is_none());
    }
}
