//! Conversions to and from libp2p-kad's public types (feature `libp2p-kad`).
//!
//! libp2p-kad's record types hold an `Instant` for expiry, which cannot be persisted; the
//! conversions here take or give wall-clock seconds instead.

use std::time::{Duration, Instant};

use libp2p_kad::{KBucketKey, KadPeer, RecordKey};

use crate::{ConnectionType, Key, PeerInfo, ProviderRecord, Record, UnixSecs};

impl From<ConnectionType> for libp2p_kad::ConnectionType {
    fn from(c: ConnectionType) -> Self {
        match c {
            ConnectionType::NotConnected => libp2p_kad::ConnectionType::NotConnected,
            ConnectionType::Connected => libp2p_kad::ConnectionType::Connected,
            ConnectionType::CanConnect => libp2p_kad::ConnectionType::CanConnect,
            ConnectionType::CannotConnect => libp2p_kad::ConnectionType::CannotConnect,
        }
    }
}

impl From<libp2p_kad::ConnectionType> for ConnectionType {
    fn from(c: libp2p_kad::ConnectionType) -> Self {
        match c {
            libp2p_kad::ConnectionType::NotConnected => ConnectionType::NotConnected,
            libp2p_kad::ConnectionType::Connected => ConnectionType::Connected,
            libp2p_kad::ConnectionType::CanConnect => ConnectionType::CanConnect,
            libp2p_kad::ConnectionType::CannotConnect => ConnectionType::CannotConnect,
        }
    }
}

impl From<PeerInfo> for KadPeer {
    fn from(p: PeerInfo) -> Self {
        KadPeer {
            node_id: p.peer_id,
            multiaddrs: p.addrs,
            connection_ty: p.connection.into(),
        }
    }
}

impl From<KadPeer> for PeerInfo {
    fn from(p: KadPeer) -> Self {
        PeerInfo {
            peer_id: p.node_id,
            addrs: p.multiaddrs,
            connection: p.connection_ty.into(),
        }
    }
}

impl From<&RecordKey> for Key {
    /// The Kademlia key of a record key: `sha256` of its bytes, as libp2p-kad computes it.
    fn from(k: &RecordKey) -> Self {
        Key::hash(k.as_ref())
    }
}

impl<T> From<&KBucketKey<T>> for Key {
    fn from(k: &KBucketKey<T>) -> Self {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(k.hashed_bytes());
        Key::from_bytes(bytes)
    }
}

impl From<Record> for libp2p_kad::Record {
    fn from(r: Record) -> Self {
        libp2p_kad::Record {
            key: RecordKey::from(r.key),
            value: r.value,
            publisher: None,
            expires: None,
        }
    }
}

impl From<libp2p_kad::Record> for Record {
    fn from(r: libp2p_kad::Record) -> Self {
        Record::new(r.key.to_vec(), r.value)
    }
}

impl ProviderRecord {
    /// This record as libp2p-kad's, expiring `ttl` after it was received (wall clock `now`).
    pub fn to_kad(&self, now: UnixSecs, ttl: Duration) -> libp2p_kad::ProviderRecord {
        let left = (self.received_at + ttl.as_secs()).saturating_sub(now);
        libp2p_kad::ProviderRecord {
            key: RecordKey::new(&self.key),
            provider: self.provider,
            expires: Some(Instant::now() + Duration::from_secs(left)),
            addresses: self.addrs.clone(),
        }
    }

    /// libp2p-kad's record as ours, received at wall-clock `received_at`.
    pub fn from_kad(r: libp2p_kad::ProviderRecord, received_at: UnixSecs) -> Self {
        ProviderRecord {
            key: r.key.to_vec(),
            provider: r.provider,
            addrs: r.addresses,
            received_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p_identity::PeerId;

    #[test]
    fn kademlia_keys_agree_with_libp2p_kad() {
        let peer = PeerId::random();
        assert_eq!(Key::from(&KBucketKey::from(peer)), Key::from_peer_id(&peer));
        let rk = RecordKey::new(&b"/pk/abc");
        assert_eq!(Key::from(&KBucketKey::new(rk.clone())), Key::from(&rk));
    }

    #[test]
    fn peer_round_trip() {
        let p = PeerInfo {
            peer_id: PeerId::random(),
            addrs: vec!["/ip4/1.2.3.4/tcp/1".parse().unwrap()],
            connection: ConnectionType::CanConnect,
        };
        assert_eq!(PeerInfo::from(KadPeer::from(p.clone())), p);
    }
}
