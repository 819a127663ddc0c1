//! Helpers shared by the integration tests: deterministic keys, peers and records.
#![allow(dead_code, unreachable_pub)]

use dht_proto::{Key, Multiaddr, PeerId, ProviderRecord, UnixSecs};
use dht_provider_store::Multihash;

/// A fixed wall-clock start.
pub const T0: UnixSecs = 1_700_000_000;
/// One hour.
pub const H: u64 = 3600;

/// A deterministic peer id (a sha256 multihash).
pub fn peer(n: u64) -> PeerId {
    let digest = Key::hash(&[b"peer".as_slice(), &n.to_be_bytes()].concat());
    let mh = Multihash::wrap(0x12, digest.as_bytes()).expect("32-byte digest fits");
    PeerId::from_multihash(mh).expect("sha256 multihash is a valid peer id")
}

/// A deterministic address of peer `n`.
pub fn addr(n: u64) -> Multiaddr {
    format!(
        "/ip4/10.{}.{}.{}/tcp/4001",
        (n >> 16) & 255,
        (n >> 8) & 255,
        n & 255
    )
    .parse()
    .expect("valid multiaddr")
}

/// A deterministic sha256 multihash.
pub fn mh(n: u64) -> Multihash {
    let digest = Key::hash(&[b"key".as_slice(), &n.to_be_bytes()].concat());
    Multihash::wrap(0x12, digest.as_bytes()).expect("32-byte digest fits")
}

/// The DHT key (multihash bytes) of key `n`.
pub fn dht_key(n: u64) -> Vec<u8> {
    mh(n).to_bytes()
}

/// Provider record: peer `p` provides key `k`, received at `at`, with one address.
pub fn rec(k: u64, p: u64, at: UnixSecs) -> ProviderRecord {
    ProviderRecord {
        key: dht_key(k),
        provider: peer(p),
        addrs: vec![addr(p)],
        received_at: at,
    }
}

/// `(peer, received_at)` of records, for compact assertions.
pub fn summary(records: &[ProviderRecord]) -> Vec<(PeerId, UnixSecs)> {
    records
        .iter()
        .map(|r| (r.provider, r.received_at))
        .collect()
}
