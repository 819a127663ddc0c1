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

/// The peer of `seed` as servers on the internet are: [`peer_id`] with a TCP and a QUIC
/// address at an IPv4 address in a /24 of its own (`<1 + (seed >> 16) % 220>.<seed >> 8>.<seed>.7`).
///
/// ```
/// let p = dht_test_kit::internet_peer(258);
/// assert_eq!(p.addrs[0].to_string(), "/ip4/1.1.2.7/tcp/4001");
/// assert_eq!(p.addrs[1].to_string(), "/ip4/1.1.2.7/udp/4001/quic-v1");
/// ```
pub fn internet_peer(seed: u64) -> PeerInfo {
    let ip = format!(
        "{}.{}.{}.7",
        1 + (seed >> 16) % 220,
        (seed >> 8) % 256,
        seed % 256
    );
    let addrs = [
        format!("/ip4/{ip}/tcp/4001"),
        format!("/ip4/{ip}/udp/4001/quic-v1"),
    ]
    .iter()
    .map(|a| a.parse().expect("a valid multiaddr"))
    .collect();
    PeerInfo::new(peer_id(seed), addrs)
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

/// `n` deterministic CIDs (v1, raw) for `seed`, with their multihashes: the sha256 of
/// `"{seed}-{i}"` for the `i`-th.
///
/// ```
/// let cids = dht_test_kit::cids("docs", 2);
/// assert_eq!(cids, dht_test_kit::cids("docs", 2));
/// assert_ne!(cids[0], cids[1]);
/// assert!(cids[0].0.starts_with('b'));
/// ```
pub fn cids(seed: &str, n: usize) -> Vec<(String, Multihash<64>)> {
    (0..n)
        .map(|i| {
            let digest = Key::hash(format!("{seed}-{i}").as_bytes());
            let mh = Multihash::wrap(0x12, digest.as_bytes()).expect("a 32-byte digest fits");
            (dht_proto::cid::Cid::new_v1(0x55, mh).to_string(), mh)
        })
        .collect()
}

/// Polls `check` every 200 ms until it holds, failing the test (a panic naming `what`) once
/// `timeout` has passed.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use std::time::Duration;
/// let mut tries = 0;
/// dht_test_kit::eventually(Duration::from_secs(5), "the third try", || {
///     tries += 1;
///     std::future::ready(tries == 3)
/// })
/// .await;
/// # });
/// ```
pub async fn eventually<F, Fut>(timeout: std::time::Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
