//! Lookup experiments: [`Sim::lookup`], [`Sim::run_lookups`] and their [`LookupReport`].

use dht_proto::{Key, MessageType};
use dht_routing::find_closest_peers;
use serde::Serialize;

use crate::{Behaviour, Sim};

/// One lookup against the ground truth.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LookupSample {
    /// The node that looked.
    pub origin: usize,
    /// The nodes found, closest first.
    pub found: Vec<usize>,
    /// The result is the true k closest live nodes (the origin excepted), as a set.
    pub exact: bool,
    /// The result is the true k closest live nodes that answer requests (silent ones left
    /// out: no lookup can return them), as a set. Equal to `exact` without silent nodes.
    pub success: bool,
    /// How many of the true k closest answering nodes were found.
    pub recall: usize,
    /// FIND_NODE requests sent.
    pub find_node_rpcs: u64,
    /// All requests sent.
    pub rpcs: u64,
    /// Hops of the walk.
    pub rounds: u32,
    /// Virtual time the lookup took, in milliseconds.
    pub virtual_ms: u64,
    /// The lookup could not start (the origin knows nobody).
    pub error: bool,
}

/// Lookups summarised: exactness and cost.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct LookupReport {
    /// Live nodes at the end.
    pub nodes: usize,
    /// Lookups run.
    pub lookups: usize,
    /// Peers asked for per lookup (k).
    pub k: usize,
    /// Share of lookups whose result is the true k closest live nodes.
    pub exact_fraction: f64,
    /// Share of lookups whose result is the true k closest live nodes that answer.
    pub success_fraction: f64,
    /// Mean share of the true k closest answering nodes found.
    pub mean_recall: f64,
    /// Lookups that could not start.
    pub errors: usize,
    /// Median FIND_NODE requests per lookup.
    pub find_node_rpcs_median: u64,
    /// 95th percentile of FIND_NODE requests per lookup.
    pub find_node_rpcs_p95: u64,
    /// Mean FIND_NODE requests per lookup.
    pub find_node_rpcs_mean: f64,
    /// Median hops.
    pub rounds_median: u64,
    /// 95th percentile of hops.
    pub rounds_p95: u64,
    /// Median virtual time per lookup, milliseconds.
    pub virtual_ms_median: u64,
    /// 95th percentile of virtual time per lookup, milliseconds.
    pub virtual_ms_p95: u64,
}

/// The `p`-quantile (0..=1) of `values` by the nearest-rank method; 0 for none.
pub fn quantile(values: &[u64], p: f64) -> u64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
        .unwrap_or(0)
}

impl LookupReport {
    /// The summary of `samples`, in a network of `nodes` live nodes, for lookups of `k`.
    pub fn from_samples(nodes: usize, k: usize, samples: &[LookupSample]) -> Self {
        let n = samples.len();
        let share = |f: &dyn Fn(&LookupSample) -> bool| {
            if n == 0 {
                0.0
            } else {
                samples.iter().filter(|s| f(s)).count() as f64 / n as f64
            }
        };
        let find_node: Vec<u64> = samples.iter().map(|s| s.find_node_rpcs).collect();
        let rounds: Vec<u64> = samples.iter().map(|s| u64::from(s.rounds)).collect();
        let ms: Vec<u64> = samples.iter().map(|s| s.virtual_ms).collect();
        let mean = |v: &[u64]| {
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<u64>() as f64 / v.len() as f64
            }
        };
        let recall: f64 = samples
            .iter()
            .map(|s| s.recall as f64 / k.max(1) as f64)
            .sum::<f64>()
            / n.max(1) as f64;
        LookupReport {
            nodes,
            lookups: n,
            k,
            exact_fraction: share(&|s| s.exact),
            success_fraction: share(&|s| s.success),
            mean_recall: recall,
            errors: samples.iter().filter(|s| s.error).count(),
            find_node_rpcs_median: quantile(&find_node, 0.5),
            find_node_rpcs_p95: quantile(&find_node, 0.95),
            find_node_rpcs_mean: mean(&find_node),
            rounds_median: quantile(&rounds, 0.5),
            rounds_p95: quantile(&rounds, 0.95),
            virtual_ms_median: quantile(&ms, 0.5),
            virtual_ms_p95: quantile(&ms, 0.95),
        }
    }
}

fn same_set(a: &[usize], b: &[usize]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

impl Sim {
    /// Node `origin` looks up the `k` peers closest to `key` with its
    /// [`DhtClient`](dht_routing::DhtClient) (`find_closest_peers`), and the result is
    /// compared with the ground truth taken when it ends.
    pub async fn lookup(&self, origin: usize, key: &[u8], k: usize) -> LookupSample {
        let mut sample = LookupSample {
            origin,
            found: Vec::new(),
            exact: false,
            success: false,
            recall: 0,
            find_node_rpcs: 0,
            rpcs: 0,
            rounds: 0,
            virtual_ms: 0,
            error: true,
        };
        let Some(client) = self.client(origin) else {
            return sample;
        };
        let Ok(outcome) = find_closest_peers(&client, key, k).await else {
            return sample;
        };
        sample.error = false;
        sample.found = outcome
            .value
            .iter()
            .filter_map(|p| self.index_of(&p.peer_id))
            .collect();
        let target = Key::hash(key);
        let truth = self.true_closest_by(&target, k, |n| n.index() != origin);
        let answering = self.true_closest_by(&target, k, |n| {
            n.index() != origin && n.behaviour().answers()
        });
        sample.exact = same_set(&sample.found, &truth);
        sample.success = same_set(&sample.found, &answering);
        sample.recall = answering
            .iter()
            .filter(|i| sample.found.contains(i))
            .count();
        sample.find_node_rpcs = outcome.stats.requests_of(MessageType::FindNode);
        sample.rpcs = outcome.stats.total_requests();
        sample.rounds = outcome.stats.rounds;
        sample.virtual_ms = u64::try_from(outcome.stats.elapsed.as_millis()).unwrap_or(u64::MAX);
        sample
    }

    /// Runs `count` lookups one after the other, each from a random live honest node to a
    /// random key ([`Sim::random_key`]), for `k` peers; both drawn from the seed.
    pub async fn run_lookups(&self, count: usize, k: usize) -> LookupReport {
        self.run_lookup_samples(count, k).await.0
    }

    /// [`run_lookups`](Self::run_lookups), with every sample.
    pub async fn run_lookup_samples(
        &self,
        count: usize,
        k: usize,
    ) -> (LookupReport, Vec<LookupSample>) {
        let mut samples = Vec::with_capacity(count);
        for _ in 0..count {
            let Some(origin) = self.random_live_node(|n| n.behaviour() == Behaviour::Honest) else {
                break;
            };
            let key = self.random_key();
            samples.push(self.lookup(origin, &key, k).await);
        }
        let report = LookupReport::from_samples(self.live_count(), k, &samples);
        (report, samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let check = |v: &[u64], p: f64, expected: u64| {
            assert_eq!(quantile(v, p), expected, "{v:?} {p}");
        };
        check(&[], 0.5, 0);
        check(&[7], 0.5, 7);
        check(&[3, 1, 2], 0.5, 2);
        check(&[1, 2, 3, 4], 0.5, 2);
        check(&(1..=100).collect::<Vec<_>>(), 0.95, 95);
        check(&(1..=100).collect::<Vec<_>>(), 1.0, 100);
        check(&(1..=100).collect::<Vec<_>>(), 0.0, 1);
    }
}
