//! Peers as the DHT talks about them: an identity, its addresses, and how reachable it is.

pub use libp2p_identity::PeerId;
pub use multiaddr::Multiaddr;

use multiaddr::Protocol;

use crate::key::Key;

/// Whether another peer could dial `addr`: it starts with an IP address that is not
/// unspecified (`0.0.0.0`, `::`) or with a DNS name (`/dns`, `/dns4`, `/dns6`, `/dnsaddr`), and
/// holds no `/unix` or `/memory` part, which only the local machine or process can reach.
///
/// ```
/// use dht_proto::is_dialable;
/// assert!(is_dialable(&"/ip4/192.0.2.1/tcp/4001".parse()?));
/// assert!(is_dialable(&"/dnsaddr/bootstrap.libp2p.io".parse()?));
/// assert!(!is_dialable(&"/ip4/0.0.0.0/tcp/4001".parse()?));
/// assert!(!is_dialable(&"/unix/tmp%2Fsocket".parse()?));
/// assert!(!is_dialable(&"/memory/1".parse()?));
/// # Ok::<(), dht_proto::multiaddr::Error>(())
/// ```
pub fn is_dialable(addr: &Multiaddr) -> bool {
    let mut parts = addr.iter();
    let first_ok = match parts.next() {
        Some(Protocol::Ip4(ip)) => !ip.is_unspecified(),
        Some(Protocol::Ip6(ip)) => !ip.is_unspecified(),
        Some(Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) | Protocol::Dnsaddr(_)) => {
            true
        }
        _ => false,
    };
    first_ok && parts.all(|p| !matches!(p, Protocol::Unix(_) | Protocol::Memory(_)))
}

/// The addresses of `addrs` worth keeping for a peer, within byte bounds: the dialable ones
/// (see [`is_dialable`]) of at most `max_addr_bytes` bytes each, first ones first, without
/// duplicates, while their total stays within `max_total_bytes`.
///
/// ```
/// use dht_proto::{Multiaddr, bound_addrs};
/// let a: Multiaddr = "/ip4/192.0.2.1/tcp/4001".parse()?; // 8 bytes
/// let local: Multiaddr = "/ip4/0.0.0.0/tcp/4001".parse()?;
/// let b: Multiaddr = "/ip4/192.0.2.2/tcp/4001".parse()?;
/// let kept = bound_addrs(vec![a.clone(), local, a.clone(), b.clone()], 64, 16);
/// assert_eq!(kept, vec![a, b]);
/// # Ok::<(), dht_proto::multiaddr::Error>(())
/// ```
pub fn bound_addrs(
    addrs: impl IntoIterator<Item = Multiaddr>,
    max_addr_bytes: usize,
    max_total_bytes: usize,
) -> Vec<Multiaddr> {
    let mut kept: Vec<Multiaddr> = Vec::new();
    let mut total = 0usize;
    for a in addrs {
        let len = a.as_ref().len();
        if len > max_addr_bytes || !is_dialable(&a) || kept.contains(&a) {
            continue;
        }
        if total + len > max_total_bytes {
            continue;
        }
        total += len;
        kept.push(a);
    }
    kept
}

/// How the sender of a message sees its connection to a peer (`dht.proto`'s `ConnectionType`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ConnectionType {
    /// Not connected, no extra information (the default, and what Go sends).
    #[default]
    NotConnected = 0,
    /// Currently connected.
    Connected = 1,
    /// Recently connected.
    CanConnect = 2,
    /// Recently failed to connect.
    CannotConnect = 3,
}

impl ConnectionType {
    /// The wire value of this connection type.
    pub const fn as_i32(self) -> i32 {
        self as i32
    }

    /// The connection type of a wire value; unknown values read as [`ConnectionType::NotConnected`],
    /// which is what a proto3 reader of an open enum treats them as.
    pub const fn from_i32(v: i32) -> Self {
        match v {
            1 => ConnectionType::Connected,
            2 => ConnectionType::CanConnect,
            3 => ConnectionType::CannotConnect,
            _ => ConnectionType::NotConnected,
        }
    }
}

/// A peer with the addresses it can be reached at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's identity.
    pub peer_id: PeerId,
    /// Where the peer can be dialled.
    pub addrs: Vec<Multiaddr>,
    /// How the sender sees its connection to the peer.
    pub connection: ConnectionType,
}

impl PeerInfo {
    /// A peer with these addresses and no connection information.
    pub fn new(peer_id: PeerId, addrs: Vec<Multiaddr>) -> Self {
        PeerInfo {
            peer_id,
            addrs,
            connection: ConnectionType::NotConnected,
        }
    }

    /// The peer's Kademlia key, `sha256(peer id bytes)`.
    ///
    /// This hashes on every call; hot paths keep the key beside the peer.
    pub fn key(&self) -> Key {
        Key::from_peer_id(&self.peer_id)
    }
}
