//! The sans-IO lookup: [`ClosestPeersQuery`].

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    time::{Duration, Instant},
};

use dht_proto::{Distance, K_VALUE, Key, PeerId, PeerInfo, Prefix};

use crate::MAX_TARGET_PREFIX_BITS;

/// Settings of a [`ClosestPeersQuery`]; `Default` gives the values this crate recommends.
///
/// ```
/// use std::time::Duration;
/// use dht_routing::QueryConfig;
/// let config = QueryConfig::default().with_alpha(3).with_stall_timeout(Some(Duration::from_millis(500)));
/// assert_eq!((config.k, config.alpha, config.beta), (20, 3, 3));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueryConfig {
    /// How many peers the lookup returns, and how many of the closest known peers must have
    /// answered before it ends: Kademlia's k (default [`K_VALUE`], 20). 0 is treated as 1.
    pub k: usize,
    /// The most requests in flight at once, α (default 10, as go-libp2p-kad-dht). Stalled
    /// requests (see [`stall_timeout`](Self::stall_timeout)) do not count. 0 is treated as 1.
    pub alpha: usize,
    /// The convergence width, β (default 3, go-libp2p-kad-dht's resiliency): until the β
    /// closest known peers have all answered, requests go only to the β closest candidates;
    /// once they have, to any of the k closest. Keeps the lookup from spending requests on far
    /// peers that closer answers are about to displace. Clamped to `1..=k`; `β = k` gives the
    /// plain α-parallel walk.
    pub beta: usize,
    /// After this long without an answer a request is *stalled* (default 2 s): it no longer
    /// takes one of the α slots nor a place in the β window, so a slow or silent peer does not
    /// hold the lookup up. Its answer is still used if it comes; it fails only when the driver
    /// reports the failure (the driver's hard per-request timeout). `None` never stalls.
    pub stall_timeout: Option<Duration>,
    /// The local peer, never asked and never returned (default `None`;
    /// [`DhtClient`](crate::DhtClient) sets it).
    pub local_peer: Option<PeerId>,
    /// Closer peers taken from one response; the rest are ignored (default [`K_VALUE`]: what
    /// a server sends). Bounds what one misbehaving peer can add to the lookup.
    pub max_peers_per_response: usize,
    /// The most boundary probes of one lookup (default 3; 0 turns them off). See
    /// [`QueryAction::Probe`].
    pub max_probes: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            k: K_VALUE,
            alpha: 10,
            beta: 3,
            stall_timeout: Some(Duration::from_secs(2)),
            local_peer: None,
            max_peers_per_response: K_VALUE,
            max_probes: 3,
        }
    }
}

impl QueryConfig {
    /// Sets [`QueryConfig::k`].
    #[must_use]
    pub fn with_k(mut self, k: usize) -> Self {
        self.k = k;
        self
    }

    /// Sets [`QueryConfig::alpha`].
    #[must_use]
    pub fn with_alpha(mut self, alpha: usize) -> Self {
        self.alpha = alpha;
        self
    }

    /// Sets [`QueryConfig::beta`].
    #[must_use]
    pub fn with_beta(mut self, beta: usize) -> Self {
        self.beta = beta;
        self
    }

    /// Sets [`QueryConfig::stall_timeout`].
    #[must_use]
    pub fn with_stall_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.stall_timeout = timeout;
        self
    }

    /// Sets [`QueryConfig::local_peer`].
    #[must_use]
    pub fn with_local_peer(mut self, peer: Option<PeerId>) -> Self {
        self.local_peer = peer;
        self
    }

    /// Sets [`QueryConfig::max_peers_per_response`].
    #[must_use]
    pub fn with_max_peers_per_response(mut self, n: usize) -> Self {
        self.max_peers_per_response = n;
        self
    }

    /// Sets [`QueryConfig::max_probes`].
    #[must_use]
    pub fn with_max_probes(mut self, n: usize) -> Self {
        self.max_probes = n;
        self
    }

    fn effective_k(&self) -> usize {
        self.k.max(1)
    }

    fn effective_alpha(&self) -> usize {
        self.alpha.max(1)
    }

    fn effective_beta(&self) -> usize {
        self.beta.clamp(1, self.effective_k())
    }
}

/// What a [`ClosestPeersQuery`] wants done next; see [`ClosestPeersQuery::poll`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryAction {
    /// Send the request to this peer now. Poll again: there may be more to send.
    Ask(PeerInfo),
    /// Send this peer, which has already answered, a FIND_NODE for a target inside `region`
    /// (see [`key_in_prefix`](crate::key_in_prefix)), and report the answer or failure as for
    /// `Ask`. Poll again: there may be more to send.
    ///
    /// A *boundary probe*. A server answers with its k closest peers, so the answers of a
    /// lookup reach about k + 1 peers deep; when some of those fail (silent or gone), the
    /// k-th closest live peer may be one no answer mentions. The lookup then asks for the
    /// closest peers to a target in the sibling region at the level of its k-th result:
    /// there, the order of peers by distance is the same as to the lookup's target (on the
    /// 16 bits a target can be chosen on), so the answer lists the next peers in line. Sent
    /// only after a failure among the closest, at most
    /// [`max_probes`](QueryConfig::max_probes) per lookup.
    Probe {
        /// Whom to ask: the closest peer to the region among those that answered.
        peer: PeerInfo,
        /// The region to aim at: the target's first 16 bits with bit `level` flipped.
        region: Prefix,
    },
    /// Nothing to send: wait for an answer or a failure, or until `until` (when an in-flight
    /// request stalls and frees a slot), whichever comes first, then poll again.
    Wait {
        /// When to poll again even if nothing arrives; `None` to wait for an answer or failure.
        until: Option<Instant>,
    },
    /// The lookup is over; [`ClosestPeersQuery::into_result`] has the answer.
    Finished,
}

/// Counters of one lookup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueryStats {
    /// Requests sent (one per peer: no peer is asked twice).
    pub requests: u64,
    /// Requests answered.
    pub successes: u64,
    /// Requests that failed or timed out.
    pub failures: u64,
    /// Requests that stalled (answered late, failed later, or were still in flight at the end).
    pub stalls: u64,
    /// Boundary probes sent (also counted in `requests`); see [`QueryAction::Probe`].
    pub probes: u64,
    /// Peers heard of (seeds and peers learned from answers), the local peer excepted.
    pub peers_seen: u64,
    /// Hops: the seeds are round 1, a peer learned from an answer of round `r` is round
    /// `r + 1`; this is the highest round of a peer asked.
    pub rounds: u32,
}

/// The answer of a [`ClosestPeersQuery`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueryResult {
    /// Up to k peers that answered, closest to the target first.
    pub closest: Vec<PeerInfo>,
    /// Whether Kademlia's termination held: the k closest peers heard of (failed ones left
    /// out) all answered, or, with fewer than k peers reachable, all of them did. `false`
    /// when the lookup was stopped early ([`ClosestPeersQuery::stop`], a lookup timeout).
    pub complete: bool,
    /// What the lookup cost.
    pub stats: QueryStats,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    NotContacted,
    Waiting { sent_at: Instant, stalled: bool },
    Succeeded,
    Failed,
}

#[derive(Clone, Debug)]
struct Candidate {
    peer: PeerInfo,
    state: State,
    round: u32,
}

/// An iterative Kademlia lookup of the peers closest to a target, as a state machine.
///
/// It does no I/O and reads no clock: it is told the time (`now`) with each input, and it is
/// deterministic for the same inputs. A driver loops:
///
/// 1. [`poll(now)`](Self::poll) until it returns [`QueryAction::Wait`] or
///    [`QueryAction::Finished`], sending the request to each peer of [`QueryAction::Ask`];
/// 2. reports each answer with [`on_response`](Self::on_response) and each failure or
///    timeout with [`on_failure`](Self::on_failure), then polls again.
///
/// [`QueryDriver`](crate::QueryDriver) is such a driver over a [`Network`](crate::Network).
///
/// # Rules
///
/// - Candidates are kept ordered by XOR distance to the target. A peer is asked at most
///   once; the local peer ([`QueryConfig::local_peer`]) never.
/// - **Termination** (Kademlia's): the lookup ends when the k closest candidates that have
///   not failed have all answered (all of them, when fewer than k are reachable).
/// - **Parallelism**: at most α requests in flight, stalled ones not counted.
/// - **Convergence width** (resiliency): until the β closest candidates have all answered,
///   only the β closest live candidates may be asked; then any of the k closest. A lookup
///   thus first walks towards the target along its few best leads, then asks the rest of the
///   k closest in parallel, and never asks a peer that is not among the k closest known.
/// - **Stalls**: a request unanswered for [`QueryConfig::stall_timeout`] frees its α slot and
///   its place in the β window, but still counts for termination: an answer that comes late
///   is used. Hard timeouts are the driver's: it reports them with `on_failure`.
/// - **Boundary probes**: when peers among the closest failed, the lookup may ask an answered
///   peer about a sibling region before it ends ([`QueryAction::Probe`]), to hear of the
///   peers that the failed ones pushed out of every answer.
///
/// ```
/// use std::time::Instant;
/// use dht_proto::{Key, PeerId, PeerInfo};
/// use dht_routing::{ClosestPeersQuery, QueryAction, QueryConfig};
///
/// let seeds: Vec<PeerInfo> = (0..3).map(|_| PeerInfo::new(PeerId::random(), vec![])).collect();
/// let mut query = ClosestPeersQuery::new(Key::hash(b"target"), seeds, QueryConfig::default());
/// let now = Instant::now();
/// let mut asked = Vec::new();
/// while let QueryAction::Ask(peer) = query.poll(now) {
///     asked.push(peer.peer_id);
/// }
/// assert_eq!(asked.len(), 3);
/// for peer in &asked {
///     query.on_response(peer, &[], now); // each knows nobody closer
/// }
/// assert_eq!(query.poll(now), QueryAction::Finished);
/// assert_eq!(query.into_result().closest.len(), 3);
/// ```
#[derive(Clone, Debug)]
pub struct ClosestPeersQuery {
    target: Key,
    config: QueryConfig,
    candidates: BTreeMap<Distance, Candidate>,
    index: HashMap<PeerId, Distance>,
    /// Requests in flight that have not stalled.
    active: usize,
    /// All requests in flight.
    waiting: usize,
    finished: bool,
    complete: bool,
    stats: QueryStats,
    /// Boundary probes in flight: peer and level.
    probing: Vec<(PeerId, usize)>,
    /// Levels probed (or being probed).
    probed: BTreeSet<usize>,
    /// Peers whose probe failed.
    probe_failed: HashSet<PeerId>,
}

impl ClosestPeersQuery {
    /// A lookup of the peers closest to `target`, starting from `seeds` (usually the routing
    /// table's closest peers to the target). The local peer and duplicates are dropped.
    pub fn new(
        target: Key,
        seeds: impl IntoIterator<Item = PeerInfo>,
        config: QueryConfig,
    ) -> Self {
        let mut query = ClosestPeersQuery {
            target,
            config,
            candidates: BTreeMap::new(),
            index: HashMap::new(),
            active: 0,
            waiting: 0,
            finished: false,
            complete: false,
            stats: QueryStats::default(),
            probing: Vec::new(),
            probed: BTreeSet::new(),
            probe_failed: HashSet::new(),
        };
        for seed in seeds {
            query.add_candidate(&seed, 1);
        }
        query
    }

    /// The target of the lookup.
    pub fn target(&self) -> &Key {
        &self.target
    }

    /// The lookup's settings.
    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// What to do next at `now`; see [`QueryAction`]. An `Ask` marks the peer as asked at
    /// `now`: send the request.
    pub fn poll(&mut self, now: Instant) -> QueryAction {
        if self.finished {
            return QueryAction::Finished;
        }
        let next_stall = self.update_stalls(now);
        let (k, beta) = (self.config.effective_k(), self.config.effective_beta());

        // The k closest candidates that have not failed: all answered? The β closest?
        let mut done = true;
        let mut converged = true;
        for (rank, c) in self
            .candidates
            .values()
            .filter(|c| c.state != State::Failed)
            .take(k)
            .enumerate()
        {
            if c.state != State::Succeeded {
                done = false;
                if rank < beta {
                    converged = false;
                    break;
                }
            }
        }
        if done {
            if let Some(probe) = self.next_probe() {
                return probe;
            }
            if !self.probing.is_empty() {
                return QueryAction::Wait { until: None };
            }
            self.complete = true;
            self.finished = true;
            return QueryAction::Finished;
        }

        if self.active < self.config.effective_alpha() {
            let window = if converged { k } else { beta };
            let next = self
                .candidates
                .iter()
                .filter(|(_, c)| {
                    !matches!(
                        c.state,
                        State::Failed | State::Waiting { stalled: true, .. }
                    )
                })
                .take(window)
                .find(|(_, c)| c.state == State::NotContacted)
                .map(|(d, _)| *d);
            if let Some(c) = next.and_then(|d| self.candidates.get_mut(&d)) {
                c.state = State::Waiting {
                    sent_at: now,
                    stalled: false,
                };
                self.active += 1;
                self.waiting += 1;
                self.stats.requests += 1;
                self.stats.rounds = self.stats.rounds.max(c.round);
                return QueryAction::Ask(c.peer.clone());
            }
        }
        if self.waiting == 0 && self.probing.is_empty() {
            // Nothing in flight and nothing askable: cannot happen, but never hang.
            self.finished = true;
            return QueryAction::Finished;
        }
        QueryAction::Wait { until: next_stall }
    }

    /// The next boundary probe, if one is due: the termination holds, some peers closer than
    /// the k-th result failed, and a level between the k-th result and the result `f` places
    /// before it (`f` the number of such failures), or below it when there are fewer than k
    /// results, has not been probed.
    fn next_probe(&mut self) -> Option<QueryAction> {
        let attempts = self.stats.probes as usize;
        if attempts >= self.config.max_probes {
            return None;
        }
        let k = self.config.effective_k();
        let mut results: Vec<Distance> = Vec::with_capacity(k);
        let mut failed = 0;
        for (d, c) in &self.candidates {
            match c.state {
                State::Failed => failed += 1,
                _ => {
                    results.push(*d);
                    if results.len() == k {
                        break;
                    }
                }
            }
        }
        let last = results.last()?;
        if failed == 0 {
            return None;
        }
        // The peers no answer reached would rank among the last `failed` results: they lie
        // in the sibling regions at the levels of those results, or, when there are fewer
        // than k results, anywhere beyond the last.
        let low = last.leading_zeros();
        let high = results
            .get(results.len().saturating_sub(1 + failed))
            .map_or(low, Distance::leading_zeros);
        let below = if results.len() < k { low } else { 0 };
        let level = (low..=high)
            .chain((0..below).rev())
            .filter(|l| *l < MAX_TARGET_PREFIX_BITS)
            .find(|l| !self.probed.contains(l))?;
        // The peer closest to the sibling region: distances to it have bit `level` flipped.
        let peer = self
            .candidates
            .iter()
            .filter(|(_, c)| c.state == State::Succeeded)
            .filter(|(_, c)| {
                !self.probe_failed.contains(&c.peer.peer_id)
                    && !self.probing.iter().any(|(p, _)| *p == c.peer.peer_id)
            })
            .min_by_key(|(d, _)| flip(d, level))
            .map(|(_, c)| c.peer.clone())?;
        let target = self.target.with_bit(level, !self.target.bit(level));
        let region = Prefix::new(&target, MAX_TARGET_PREFIX_BITS);
        self.probed.insert(level);
        self.probing.push((peer.peer_id, level));
        self.stats.probes += 1;
        self.stats.requests += 1;
        Some(QueryAction::Probe { peer, region })
    }

    /// Marks the requests in flight since `stall_timeout` as stalled; returns the next time
    /// one will stall.
    fn update_stalls(&mut self, now: Instant) -> Option<Instant> {
        let stall = self.config.stall_timeout?;
        if self.active == 0 {
            return None;
        }
        let mut next: Option<Instant> = None;
        for c in self.candidates.values_mut() {
            if let State::Waiting {
                sent_at,
                stalled: false,
            } = c.state
            {
                match sent_at.checked_add(stall) {
                    Some(deadline) if deadline > now => {
                        next = Some(next.map_or(deadline, |n| n.min(deadline)));
                    }
                    Some(_) => {
                        c.state = State::Waiting {
                            sent_at,
                            stalled: true,
                        };
                        self.active -= 1;
                        self.stats.stalls += 1;
                    }
                    None => {} // Never stalls.
                }
            }
        }
        next
    }

    /// `peer` answered, listing `closer_peers` (only the first
    /// [`max_peers_per_response`](QueryConfig::max_peers_per_response) are used). Returns
    /// `false`, changing nothing, if no request to `peer` is in flight.
    pub fn on_response(&mut self, peer: &PeerId, closer_peers: &[PeerInfo], now: Instant) -> bool {
        let _ = now; // Part of the interface: inputs carry the time, whether used or not.
        if let Some(i) = self.probing.iter().position(|(p, _)| p == peer) {
            self.probing.swap_remove(i);
            self.stats.successes += 1;
            let round = self
                .index
                .get(peer)
                .and_then(|d| self.candidates.get(d))
                .map_or(1, |c| c.round.saturating_add(1));
            if !self.finished {
                for p in closer_peers.iter().take(self.config.max_peers_per_response) {
                    self.add_candidate(p, round);
                }
            }
            return true;
        }
        let Some(round) = self.end_waiting(peer, State::Succeeded) else {
            return false;
        };
        let round = round.saturating_add(1);
        self.stats.successes += 1;
        if !self.finished {
            for p in closer_peers.iter().take(self.config.max_peers_per_response) {
                self.add_candidate(p, round);
            }
        }
        true
    }

    /// The request to `peer` failed or timed out: the peer is dropped from the lookup.
    /// Returns `false`, changing nothing, if no request to `peer` is in flight.
    pub fn on_failure(&mut self, peer: &PeerId, now: Instant) -> bool {
        let _ = now;
        if let Some(i) = self.probing.iter().position(|(p, _)| p == peer) {
            let (_, level) = self.probing.swap_remove(i);
            self.probed.remove(&level);
            self.probe_failed.insert(*peer);
            self.stats.failures += 1;
            return true;
        }
        if self.end_waiting(peer, State::Failed).is_none() {
            return false;
        }
        self.stats.failures += 1;
        true
    }

    /// Ends the request in flight to `peer` in `state`: its candidate's round, or `None`
    /// (nothing changed) when no request to `peer` is in flight.
    fn end_waiting(&mut self, peer: &PeerId, state: State) -> Option<u32> {
        let c = self
            .index
            .get(peer)
            .and_then(|d| self.candidates.get_mut(d))?;
        let State::Waiting { stalled, .. } = c.state else {
            return None;
        };
        c.state = state;
        let round = c.round;
        self.end_request(stalled);
        Some(round)
    }

    fn end_request(&mut self, stalled: bool) {
        self.waiting = self.waiting.saturating_sub(1);
        if !stalled {
            self.active = self.active.saturating_sub(1);
        }
    }

    fn add_candidate(&mut self, peer: &PeerInfo, round: u32) {
        if self.config.local_peer == Some(peer.peer_id) {
            return;
        }
        if let Some(c) = self
            .index
            .get(&peer.peer_id)
            .and_then(|d| self.candidates.get_mut(d))
        {
            c.round = c.round.min(round);
            if c.state == State::NotContacted && c.peer.addrs.is_empty() {
                c.peer.addrs.clone_from(&peer.addrs);
            }
            return;
        }
        let distance = self.target.distance(&peer.key());
        self.index.insert(peer.peer_id, distance);
        self.candidates.insert(
            distance,
            Candidate {
                peer: peer.clone(),
                state: State::NotContacted,
                round,
            },
        );
        self.stats.peers_seen += 1;
    }

    /// Stops the lookup now (e.g. the operation found what it looked for). Later polls
    /// return [`QueryAction::Finished`]; answers still in flight are still recorded if
    /// reported, but add no candidates.
    pub fn stop(&mut self) {
        self.finished = true;
    }

    /// Whether the lookup is over.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Requests in flight (stalled ones and probes included).
    pub fn in_flight(&self) -> usize {
        self.waiting + self.probing.len()
    }

    /// Whether a request to `peer` is in flight.
    pub fn is_waiting_for(&self, peer: &PeerId) -> bool {
        self.probing.iter().any(|(p, _)| p == peer)
            || self
                .index
                .get(peer)
                .and_then(|d| self.candidates.get(d))
                .is_some_and(|c| matches!(c.state, State::Waiting { .. }))
    }

    /// The counters so far.
    pub fn stats(&self) -> &QueryStats {
        &self.stats
    }

    /// The up to `n` closest peers that have answered so far, closest first.
    pub fn closest_answered(&self, n: usize) -> Vec<PeerInfo> {
        self.candidates
            .values()
            .filter(|c| c.state == State::Succeeded)
            .take(n)
            .map(|c| c.peer.clone())
            .collect()
    }

    /// The answer: the k closest peers that answered, closest first.
    pub fn into_result(self) -> QueryResult {
        let k = self.config.effective_k();
        QueryResult {
            closest: self.closest_answered(k),
            complete: self.complete,
            stats: self.stats,
        }
    }
}

/// `d` with bit `i` flipped: the distance to the target with bit `i` flipped.
fn flip(d: &Distance, i: usize) -> Distance {
    let mut bytes = *d.as_bytes();
    if let Some(b) = bytes.get_mut(i / 8) {
        *b ^= 0x80 >> (i % 8);
    }
    Distance::from_bytes(bytes)
}

#[cfg(test)]
mod tests;
