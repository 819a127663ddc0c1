//! How many DHT servers the network holds, as the sweep sees it: the figure the slice length
//! is chosen from.
//!
//! Every exploration says something: `n` servers learned in a prefix of `L` bits put the
//! network at about `n × 2^L` servers, exactly so when the prefix was learned completely and
//! at least that many when it was not (a budget ran out). The estimate is the median of the
//! last explorations, and never below the number of servers the routing table holds, which
//! are all known to exist. So a node that started with an empty or tiny table (a failed
//! bootstrap gives a slice length of 0) corrects itself with its first explorations, and the
//! slice length follows a network as it grows from tens to tens of thousands of servers.
//!
//! Sans-IO: it takes explorations and the table's size, and does no I/O.

use std::collections::VecDeque;

use crate::{explore::Exploration, schedule::slice_len_for};

/// Explorations whose estimates are kept (the median of these is used).
const WINDOW: usize = 32;

/// The network size estimate behind the slice length.
#[derive(Clone, Debug, Default)]
pub struct SizeEstimator {
    /// Network sizes implied by the last explorations, oldest first.
    estimates: VecDeque<u64>,
}

impl SizeEstimator {
    /// An estimator that has seen no exploration yet.
    pub fn new() -> Self {
        SizeEstimator::default()
    }

    /// Takes what `exploration` implies about the network size (nothing if it found no
    /// server).
    pub fn observe(&mut self, exploration: &Exploration) {
        if exploration.servers.is_empty() {
            return;
        }
        let bits = exploration.scope.len().min(40);
        let estimate = (exploration.servers.len() as u64).saturating_mul(1u64 << bits);
        self.estimates.push_back(estimate);
        while self.estimates.len() > WINDOW {
            self.estimates.pop_front();
        }
    }

    /// Explorations seen, up to the window's size.
    pub fn samples(&self) -> usize {
        self.estimates.len()
    }

    /// The estimated number of servers: the median of the recent explorations' figures, and
    /// at least `shown`, the servers the routing table shows.
    pub fn servers(&self, shown: u64) -> u64 {
        let mut sorted: Vec<u64> = self.estimates.iter().copied().collect();
        sorted.sort_unstable();
        let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
        median.max(shown)
    }

    /// The slice length for the estimated size (see [`slice_len_for`]).
    pub fn slice_len(&self, shown: u64, k: usize) -> usize {
        slice_len_for(self.servers(shown), k)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeSet;

    use dht_proto::{PeerId, PeerInfo, Prefix};

    use super::*;

    /// An exploration of `scope` with `servers` random servers (for tests).
    pub(crate) fn exploration(scope: &str, servers: usize, complete: bool) -> Exploration {
        let scope: Prefix = scope.parse().unwrap();
        Exploration {
            region: scope,
            scope,
            servers: (0..servers)
                .map(|_| PeerInfo::new(PeerId::random(), Vec::new()))
                .collect(),
            responded: BTreeSet::new(),
            complete,
            requests: 1,
            first_asks: 1,
            failures: 0,
            checked: 0,
            left_out: 0,
        }
    }

    #[test]
    fn never_below_the_table() {
        let est = SizeEstimator::new();
        assert_eq!(est.servers(0), 0);
        assert_eq!(est.slice_len(0, 20), 0);
        assert_eq!(est.servers(300), 300);
        assert_eq!(est.slice_len(300, 20), 2);
    }

    #[test]
    fn incomplete_explorations_count_too() {
        let mut est = SizeEstimator::new();
        // Slice length 0 (a start with a tiny table): the whole keyspace is explored and never
        // completely; what was learned still moves the estimate.
        for _ in 0..3 {
            est.observe(&exploration("", 900, false));
        }
        assert_eq!(est.servers(25), 900);
        assert_eq!(est.slice_len(25, 20), 4);
        // Explorations that found nobody say nothing.
        est.observe(&exploration("", 0, false));
        assert_eq!(est.samples(), 3);
    }

    #[test]
    fn follows_a_growing_network() {
        let mut est = SizeEstimator::new();
        for _ in 0..WINDOW {
            est.observe(&exploration("0", 15, true));
        }
        assert_eq!(est.servers(0), 30);
        // The network grows a thousandfold: within one window the median follows.
        for _ in 0..WINDOW / 2 + 1 {
            est.observe(&exploration("0101010", 30 * 1000 / 128, true));
        }
        assert_eq!(est.servers(0), 29_952);
        assert_eq!(est.slice_len(0, 20), 9);
    }
}
