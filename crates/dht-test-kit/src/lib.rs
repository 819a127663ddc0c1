#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod clock;
mod validator;

use dht_proto::{Key, Multiaddr, PeerId, PeerInfo, UnixSecs, multihash::Multihash};

pub use clock::SimClock;
pub use validator::{SIM_NAMESPACE, SeqValidator};

/// The wall-clock time tests and simulations start at: 2023-11-14T22:13:20Z.
pub const EPOCH: UnixSecs = 1_700_000_000;

/// A deterministic peer id for `seed`: a sha256 multihash (the digest of the seed's
/// little-endian bytes), so distinct seeds give distinct, well-spread keys.
///
/// ```
/// use dht_test_kit::peer_id;
/// assert_eq!(peer_id(7), peer_id(7));
/// assert_ne!(peer_id(7), peer_id(8));
/// ```
pub fn peer_id(seed: u64) -> PeerId {
    let digest = Key::hash(&seed.to_le_bytes());
    let multihash = Multihash::wrap(0x12, digest.as_bytes()).expect("a 32-byte digest fits");
    PeerId::from_multihash(multihash).expect("a sha256 multihash is a peer id")
}

/// A distinct TCP address for each seed below 65,536, each in a /16 of its own (so that
/// IP-diversity limits never bind): `/ip4/10.<seed / 256>.<seed % 256>.1/tcp/4001`.
///
/// ```
/// assert_eq!(dht_test_kit::addr(258).to_string(), "/ip4/10.1.2.1/tcp/4001");
/// ```
pub fn addr(seed: u64) -> Multiaddr {
    format!("/ip4/10.{}.{}.1/tcp/4001", (seed >> 8) & 0xff, seed & 0xff)
        .parse()
        .expect("a valid multiaddr")
}

/// The peer of `seed`: [`peer_id`] with its one [`addr`].
pub fn peer(seed: u64) -> PeerInfo {
    PeerInfo::new(peer_id(seed), vec![addr(seed)])
}

/// The peer id of `seed` with the given addresses (multiaddr strings).
///
/// # Panics
/// If an address does not parse (a mistake in the test).
pub fn peer_with(seed: u64, addrs: &[&str]) -> PeerInfo {
    let addrs = addrs
        .iter()
        .map(|a| a.parse().unwrap_or_else(|e| panic!("address {a:?}: {e}")))
        .collect();
    PeerInfo::new(peer_id(seed), addrs)
}
