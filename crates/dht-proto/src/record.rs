//! The records the DHT stores: value records and provider records.

use libp2p_identity::PeerId;
use multiaddr::Multiaddr;

use crate::key::Key;

/// Wall-clock time in whole seconds since the Unix epoch.
///
/// Stores persist times, so records carry wall-clock seconds, never `Instant`.
pub type UnixSecs = u64;

/// How long a provider record is valid after it was received (48 hours, as go-libp2p-kad-dht).
pub const PROVIDER_RECORD_TTL_SECS: u64 = 48 * 3600;
/// How long a provider's addresses are kept beside its record (24 hours).
pub const PROVIDER_ADDR_TTL_SECS: u64 = 24 * 3600;
/// How long a value record is kept after it was received (48 hours).
pub const VALUE_RECORD_TTL_SECS: u64 = 48 * 3600;
/// The interval at which a provider re-announces its records (22 hours).
pub const REPROVIDE_INTERVAL_SECS: u64 = 22 * 3600;
/// The replication parameter k: records go to the k closest servers, lookups return k peers.
pub const K_VALUE: usize = 20;

/// A value record, as carried by PUT_VALUE and GET_VALUE (`dht.proto`'s `Record`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// The record's DHT key, e.g. `/pk/<multihash>` or `/ipns/<peer id bytes>`.
    pub key: Vec<u8>,
    /// The record's value, opaque to the DHT and checked by a validator.
    pub value: Vec<u8>,
    /// When the record was received, as an RFC 3339 string (empty when unset).
    pub time_received: String,
}

impl Record {
    /// A record with no receive time.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Record {
            key: key.into(),
            value: value.into(),
            time_received: String::new(),
        }
    }
}

/// A provider record: `provider` announced that it can serve the content of `key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderRecord {
    /// The DHT key: for content, the multihash bytes of the CID.
    pub key: Vec<u8>,
    /// Who provides it.
    pub provider: PeerId,
    /// Where the provider can be reached; dropped after [`PROVIDER_ADDR_TTL_SECS`].
    pub addrs: Vec<Multiaddr>,
    /// When this node received the record.
    pub received_at: UnixSecs,
}

impl ProviderRecord {
    /// The Kademlia key of the record, `sha256(key)`.
    pub fn kad_key(&self) -> Key {
        Key::hash(&self.key)
    }

    /// Whether the record has expired at `now`.
    pub fn is_expired(&self, now: UnixSecs) -> bool {
        now >= self.received_at.saturating_add(PROVIDER_RECORD_TTL_SECS)
    }

    /// Whether the provider's addresses have expired at `now` (the record itself may still be valid).
    pub fn addrs_expired(&self, now: UnixSecs) -> bool {
        now >= self.received_at.saturating_add(PROVIDER_ADDR_TTL_SECS)
    }
}

/// The DHT key under which a CID's providers are stored: the bytes of its multihash.
pub fn provider_key_of_cid(cid: &cid::Cid) -> Vec<u8> {
    cid.hash().to_bytes()
}
