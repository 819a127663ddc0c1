//! Peers as the DHT talks about them: an identity, its addresses, and how reachable it is.

pub use libp2p_identity::PeerId;
pub use multiaddr::Multiaddr;

use crate::key::Key;

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
