//! Refreshing a k-bucket table, as go-libp2p-kad-dht's refresh manager does. The node's
//! periodic maintenance and the simulator's joins run this one function.

use std::borrow::Borrow;

use dht_proto::{Key, Prefix};
use dht_routing_table::{KBucketTable, RoutingTable};
use rand::{RngCore, SeedableRng, rngs::SmallRng};

use crate::{DhtClient, MAX_TARGET_PREFIX_BITS, Network, OpStats, key_in_prefix};

/// The deepest bucket (common prefix length with the local key) a refresh looks up with a
/// lookup of its own, as go-libp2p-kad-dht's `maxCplForRefresh`: a FIND_NODE target can be
/// aimed at 16 bits ([`MAX_TARGET_PREFIX_BITS`]); deeper buckets are what the lookup of the
/// local key fills.
pub const MAX_REFRESH_CPL: usize = MAX_TARGET_PREFIX_BITS - 1;

/// Which buckets a [`refresh_table`] looks up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefreshScope {
    /// The buckets not looked up within the table's refresh interval
    /// (`KBucketConfig::refresh_interval`): the periodic refresh.
    #[default]
    Stale,
    /// Every bucket: a node that has just joined.
    All,
}

/// What one [`refresh_table`] did.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Refresh {
    /// Lookups run: the local key's, and one per bucket refreshed.
    pub lookups: usize,
    /// The buckets refreshed, by common prefix length.
    pub buckets: Vec<usize>,
    /// The requests the lookups sent.
    pub stats: OpStats,
}

/// Refreshes `client`'s k-bucket table as go-libp2p-kad-dht does.
///
/// First a lookup of the local peer id, which fills the deepest buckets. Then, from CPL 0 up
/// to the deepest bucket holding a peer (at most [`MAX_REFRESH_CPL`]), each bucket in `scope`
/// is looked up at a random key of its range (drawn from `seed`) and marked refreshed. A
/// failed lookup is counted and the refresh goes on. (Go also stops early after an empty
/// bucket; this refresh does not, so that every stale bucket up to the deepest held is
/// looked up, which small networks with sparse buckets need.)
pub async fn refresh_table<T, N>(
    client: &DhtClient<T, N>,
    scope: RefreshScope,
    seed: u64,
) -> Refresh
where
    T: RoutingTable + Borrow<KBucketTable>,
    N: Network,
{
    let table: &KBucketTable = client.table().borrow();
    let k = client.client_config().query.k;
    let mut report = Refresh::default();
    let own = client.local_peer().peer_id.to_bytes();
    match client.walk_closest_peers(&own, k, Vec::new()).await {
        Ok(outcome) => report.stats.merge(&outcome.stats),
        Err(e) => tracing::debug!(error = %e, "refresh: lookup of the local key"),
    }
    report.lookups += 1;

    let mut rng = SmallRng::seed_from_u64(seed);
    let local = table.local_key();
    let deepest = table.max_cpl().unwrap_or(0).min(MAX_REFRESH_CPL);
    let stale = table.stale_buckets(table.now());
    for cpl in 0..=deepest {
        if scope == RefreshScope::All || stale.contains(&cpl) {
            let flipped = local.with_bit(cpl, !local.bit(cpl));
            let mut fill = [0u8; 32];
            rng.fill_bytes(&mut fill);
            let target = key_in_prefix(&Prefix::new(&flipped, cpl + 1), &Key::from_bytes(fill));
            match client.walk_closest_peers(&target, k, Vec::new()).await {
                Ok(outcome) => report.stats.merge(&outcome.stats),
                Err(e) => tracing::debug!(cpl, error = %e, "refresh: bucket lookup"),
            }
            table.mark_refreshed(cpl, table.now());
            report.lookups += 1;
            report.buckets.push(cpl);
        }
    }
    report
}
