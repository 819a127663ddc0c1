#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

use std::{net::IpAddr, sync::Arc};

use dht_proto::{Key, Multiaddr, PeerId, PeerInfo};

pub mod clock;
mod diversity;
mod fullrt;
mod kbucket;

pub use clock::{Clock, ManualClock, SystemClock};
pub use diversity::{DiversityConfig, DiversityFilter, IpGroup, is_local_ip, is_public_ip};
pub use fullrt::{FULLRT_MAX_FAILURES, FullRoutingTable, FullRtConfig};
pub use kbucket::{KBucketConfig, KBucketTable};

/// Which side opened the exchange in which we saw the peer act as a DHT server.
///
/// Only [`Outbound`](Direction::Outbound) admits a peer: sending us a request costs a peer
/// nothing (peer ids are free), answering one of ours shows it serves the DHT at an address
/// we reached. Both tables ignore [`Inbound`](Direction::Inbound) for a peer they do not
/// hold ([`UpdateOutcome::Ignored`]), and use it to refresh a peer they do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The peer sent us a request (and is known to be a DHT server, e.g. through identify).
    /// Refreshes a peer already in the table; never adds one.
    Inbound,
    /// We sent the peer a request and it answered: the peer was *useful*. Adds the peer or
    /// refreshes it.
    Outbound,
}

/// What the node knows first-hand about a connected peer: the IP address its connection
/// comes from, and the listen addresses the peer announced about itself (libp2p identify).
///
/// Tables given an [`AddressBook`] group a peer for their diversity limits by
/// [`remote_ip`](Self::remote_ip) rather than by the addresses it or others claim, and keep
/// only the addresses the peer gave about itself (at most [`MAX_PEER_ADDRS`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The IP address of the peer's connection to us (or ours to it).
    pub remote_ip: IpAddr,
    /// The listen addresses the peer announced about itself; empty until it has.
    pub listen_addrs: Vec<Multiaddr>,
}

/// Where a table learns what the node knows first-hand about its peers (implemented by the
/// node's transport, which sees connections and identify).
pub trait AddressBook: Send + Sync {
    /// What is known of `peer`, or `None` when it is not connected.
    fn observed(&self, peer: &PeerId) -> Option<Observed>;
}

/// The most addresses a table keeps per peer.
pub const MAX_PEER_ADDRS: usize = 8;

/// The peer as a table given `book` stores it, and the IP to group it by.
///
/// Without a book, the peer as given (its addresses capped) and no IP: the table groups it by
/// its addresses. With a book and a connected peer, the addresses it announced about itself,
/// or when it announced none, the given addresses at the IP it is connected from (the only
/// ones a connection vouches for), capped; the IP is the connection's. `None` for a peer
/// the book does not know: nothing first-hand says it is where anyone claims.
pub(crate) fn vouched(
    book: Option<&dyn AddressBook>,
    peer: &PeerInfo,
) -> Option<(PeerInfo, Option<IpAddr>)> {
    let Some(book) = book else {
        let mut peer = peer.clone();
        peer.addrs.truncate(MAX_PEER_ADDRS);
        return Some((peer, None));
    };
    let observed = book.observed(&peer.peer_id)?;
    let mut addrs = if observed.listen_addrs.is_empty() {
        peer.addrs
            .iter()
            .filter(|a| diversity::ips(a).any(|ip| ip == observed.remote_ip))
            .cloned()
            .collect()
    } else {
        observed.listen_addrs
    };
    addrs.truncate(MAX_PEER_ADDRS);
    let mut out = PeerInfo::new(peer.peer_id, addrs);
    out.connection = peer.connection;
    Some((out, Some(observed.remote_ip)))
}

/// Something that happened to a peer, as reported to [`RoutingTable::update`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerEvent {
    /// The peer acted as a DHT server in an exchange: it answered our request
    /// ([`Direction::Outbound`], which may add it), or it sent us one and is known to be a
    /// server ([`Direction::Inbound`], which only refreshes a peer already held).
    Seen(Direction),
    /// A request to the peer failed or timed out on a live connection: it counts, and the
    /// peer is dropped after a few in a row ([`KBucketConfig::max_failures`], 3; the same in
    /// [`FullRoutingTable`]). A slow or briefly overloaded peer is not lost to one timeout.
    Failed,
    /// No connection to the peer could be made (the dial failed): the peer is dropped at
    /// once, as go-libp2p-kad-dht drops a peer it cannot dial.
    Unreachable,
    /// Forget the peer.
    Removed,
}

/// What [`RoutingTable::update`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UpdateOutcome {
    /// The peer was added to the table.
    Inserted,
    /// The peer was already in the table; its record was refreshed.
    Updated,
    /// The peer's bucket is full: it is kept in the replacement cache and will take the place
    /// of a member that fails.
    Pending,
    /// The peer was not added.
    Rejected(RejectReason),
    /// The peer was removed from the table (or from the replacement cache).
    Removed,
    /// The peer is unknown; nothing was done.
    Ignored,
}

/// Why a peer was not added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum RejectReason {
    /// The peer is the local node.
    #[error("the peer is the local node")]
    LocalPeer,
    /// The bucket already holds the most peers of one IP group it may.
    #[error("bucket {bucket} already holds the most peers of IP group {group} it may")]
    BucketDiversity {
        /// The full group.
        group: IpGroup,
        /// The bucket (common prefix length with the local key).
        bucket: usize,
    },
    /// The table already holds the most peers of one IP group it may.
    #[error("the table already holds the most peers of IP group {group} it may")]
    TableDiversity {
        /// The full group.
        group: IpGroup,
    },
    /// The bucket is full, no member may be replaced, and there is no replacement cache.
    #[error("the bucket is full and the table keeps no replacement cache")]
    BucketFull,
    /// The table holds as many peers as it may ([`FullRtConfig::max_peers`]).
    #[error("the table holds as many peers as it may")]
    TableFull,
}

/// The errors of this crate.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A common prefix length beyond the last bucket (a key shares at most 255 bits with a
    /// *different* key).
    #[error("common prefix length {0} is out of range; at most 255")]
    CplOutOfRange(usize),
}

/// A routing table: the peers this node knows, and which of them are closest to a key.
///
/// Two required methods and `len`; the rest have defaults. Implementations lock internally so
/// that many readers proceed at once. Implemented by [`KBucketTable`] and
/// [`FullRoutingTable`], and by `Arc<T>`, `Box<T>` and `&T` of any routing table.
pub trait RoutingTable: Send + Sync {
    /// Closest known peers to `key` by XOR distance, closest first, at most `n`.
    fn closest_peers(&self, key: &Key, n: usize) -> Vec<PeerInfo>;

    /// Peer bookkeeping.
    fn update(&self, peer: &PeerInfo, event: PeerEvent) -> UpdateOutcome;

    /// Number of peers in the table.
    fn len(&self) -> usize;

    /// Whether the table holds every DHT server of the network (a [`FullRoutingTable`] that
    /// is fresh), so closest-peer questions can be answered without a network walk.
    fn is_complete(&self) -> bool {
        false
    }

    /// Whether the table holds no peer.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

macro_rules! forward_routing_table {
    ($($ty:ty),*) => {$(
        impl<T: RoutingTable + ?Sized> RoutingTable for $ty {
            fn closest_peers(&self, key: &Key, n: usize) -> Vec<PeerInfo> {
                (**self).closest_peers(key, n)
            }
            fn update(&self, peer: &PeerInfo, event: PeerEvent) -> UpdateOutcome {
                (**self).update(peer, event)
            }
            fn len(&self) -> usize {
                (**self).len()
            }
            fn is_complete(&self) -> bool {
                (**self).is_complete()
            }
            fn is_empty(&self) -> bool {
                (**self).is_empty()
            }
        }
    )*};
}

forward_routing_table!(Arc<T>, Box<T>, &T);

/// A XOR distance as two big-endian 128-bit words. It orders exactly as
/// [`Distance`](dht_proto::Distance) does, but compares in a few instructions instead of a
/// 32-byte `memcmp`, which otherwise dominates the sorting of candidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Xor(u128, u128);

impl Xor {
    fn between(a: &Key, b: &Key) -> Xor {
        let (a0, a1) = words(a);
        let (b0, b1) = words(b);
        Xor(a0 ^ b0, a1 ^ b1)
    }
}

fn words(key: &Key) -> (u128, u128) {
    let bytes = key.as_bytes();
    let mut hi = [0u8; 16];
    let mut lo = [0u8; 16];
    hi.copy_from_slice(&bytes[..16]);
    lo.copy_from_slice(&bytes[16..]);
    (u128::from_be_bytes(hi), u128::from_be_bytes(lo))
}

/// Sorts `(distance, item)` pairs and keeps the `n` closest, closest first, in O(m + n log n).
fn keep_closest<D: Ord + Copy, T>(candidates: &mut Vec<(D, T)>, n: usize) {
    if candidates.len() > n {
        if n == 0 {
            candidates.clear();
            return;
        }
        candidates.select_nth_unstable_by_key(n - 1, |c| c.0);
        candidates.truncate(n);
    }
    candidates.sort_unstable_by_key(|c| c.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_routing_table<T: RoutingTable>() {}

    #[test]
    fn blanket_impls() {
        assert_routing_table::<KBucketTable>();
        assert_routing_table::<Arc<KBucketTable>>();
        assert_routing_table::<&FullRoutingTable>();
        assert_routing_table::<Box<dyn RoutingTable>>();
        assert_routing_table::<Arc<dyn RoutingTable>>();
    }

    #[test]
    fn keep_closest_cases() {
        let check = |input: &[u8], n: usize, expected: &[u8]| {
            let mut v: Vec<_> = input
                .iter()
                .map(|&b| (Xor(u128::from(b) << 120, 0), b))
                .collect();
            keep_closest(&mut v, n);
            let got: Vec<u8> = v.iter().map(|x| x.1).collect();
            assert_eq!(got, expected, "input {input:?} n {n}");
        };
        check(&[], 3, &[]);
        check(&[5, 1, 3], 0, &[]);
        check(&[5, 1, 3], 2, &[1, 3]);
        check(&[5, 1, 3], 3, &[1, 3, 5]);
        check(&[5, 1, 3], 10, &[1, 3, 5]);
        check(&[9, 8, 7, 6, 5, 4, 3, 2, 1, 0], 4, &[0, 1, 2, 3]);
    }

    proptest::proptest! {
        /// `Xor` orders like `Distance`.
        #[test]
        fn xor_orders_like_distance(a: [u8; 32], b: [u8; 32], c: [u8; 32], share in 0..=256usize) {
            let (a, b) = (Key::from_bytes(a), Key::from_bytes(b));
            // Let c share a prefix with a, to reach the low words and equal keys.
            let c = dht_proto::Prefix::new(&a, share).key_with_suffix(&Key::from_bytes(c));
            proptest::prop_assert_eq!(
                Xor::between(&a, &b).cmp(&Xor::between(&a, &c)),
                a.distance(&b).cmp(&a.distance(&c))
            );
        }
    }
}
