//! Region exploration: learning every DHT server of a keyspace region, so that each key of the
//! region can be sent to its true k closest servers.
//!
//! # Why a region, not a key
//!
//! If a prefix `P` holds at least k servers, then for every key inside `P` the k closest servers
//! all lie inside `P`: a server inside shares at least `len(P)` leading bits with the key, one
//! outside fewer, so the one inside is closer. Knowing *all* servers of such a `P` therefore
//! answers the closest-servers question for every key of `P` at once, exactly. The explorer
//! finds the smallest such `P` around the region to provide (going up while the region holds
//! fewer than k servers) and every server in it.
//!
//! # How it learns a prefix completely
//!
//! It asks a server `r` for the peers closest to a target `t` inside a prefix `Q`. When `r`
//! lies inside `Q`'s parent, all the peers of `Q` that `r` knows sit in `r`'s buckets of
//! common prefix length `len(Q) - 1` and deeper. If `r` returns fewer than k peers of `Q`,
//! those buckets are not full, so (tables being complete where they are not full, which
//! bucket refresh maintains) `r` knows every server of `Q` and told us all of them: `Q` is
//! complete. If it returns k, `Q` holds at least k servers and the explorer splits it into its
//! two halves and learns each. A liar is caught by consistency: an answer that claims
//! completeness but leaves out a server of `Q` we already know is not believed.
//!
//! A prefix that holds 20 to 40 servers costs about three FIND_NODE requests, and the first
//! request of a region goes to the servers found for the region before it, which are already
//! close: this is what makes a sweep cost a small multiple of `servers / k` requests per cycle
//! instead of one full lookup per key.
//!
//! The explorer is sans-IO: it says whom to ask about what, takes answers and failures, and
//! does no I/O and reads no clock.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use dht_proto::{Distance, K_VALUE, Key, PeerId, PeerInfo, Prefix};

/// Settings of a [`RegionExplorer`]. Every count must be at least 1
/// ([`validate`](Self::validate)); the sweep checks them when it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExploreConfig {
    /// Replication: how many closest servers each key goes to (20).
    pub k: usize,
    /// Requests in flight at once.
    pub parallelism: usize,
    /// Upper bound on requests for one region; past it the explorer finishes with what it
    /// knows and reports the result as incomplete.
    pub max_requests: usize,
    /// Answers that must each claim a prefix holds fewer than k servers before it counts as
    /// learned (1). With 1, one answer is believed when it leaves out no server already known
    /// there. Where servers leave peers out of their answers (stale address books), one
    /// answer misses some of a prefix's servers: with 2 or more, the prefix is learned from
    /// the union of that many answers from different servers, and split as soon as the union
    /// holds k.
    pub confirmations: usize,
}

impl Default for ExploreConfig {
    fn default() -> Self {
        ExploreConfig {
            k: K_VALUE,
            parallelism: 4,
            max_requests: 64,
            confirmations: 1,
        }
    }
}

impl ExploreConfig {
    crate::error::setters! {
        /// Sets the replication factor k.
        with_k => k: usize;
        /// Sets how many requests may be in flight at once.
        with_parallelism => parallelism: usize;
        /// Sets the most requests one region may cost.
        with_max_requests => max_requests: usize;
        /// Sets how many answers must agree that a prefix holds fewer than k servers (see
        /// [`confirmations`](Self::confirmations)).
        with_confirmations => confirmations: usize;
    }

    /// `Ok` when every setting can work.
    ///
    /// # Errors
    /// [`ProviderError::InvalidConfig`](crate::ProviderError::InvalidConfig) naming the first
    /// count that is zero.
    pub fn validate(&self) -> Result<(), crate::ProviderError> {
        use crate::error::at_least_one;
        at_least_one("explore.k", self.k as u64)?;
        at_least_one("explore.parallelism", self.parallelism as u64)?;
        at_least_one("explore.max_requests", self.max_requests as u64)?;
        at_least_one("explore.confirmations", self.confirmations as u64)
    }
}

/// What the explorer wants done next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExploreAction {
    /// Send `peer` a FIND_NODE whose target lies in `target` (servers hash the request key,
    /// so the key bytes must be a preimage whose `sha256` starts with the prefix), then
    /// report with [`RegionExplorer::on_response`] or [`RegionExplorer::on_failure`].
    Ask {
        /// Whom to ask.
        peer: PeerInfo,
        /// The prefix the FIND_NODE target must lie in.
        target: Prefix,
    },
    /// Nothing to send until an answer arrives.
    Wait,
    /// Finished: call [`RegionExplorer::into_result`].
    Finished,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PeerState {
    Known,
    InFlight,
    Responded,
    Failed,
}

#[derive(Clone, Debug)]
struct Entry {
    peer: PeerInfo,
    state: PeerState,
}

/// Learns every server of the smallest prefix around a region that holds at least k servers.
///
/// ```
/// use dht_proto::{Key, Prefix};
/// use dht_provider::explore::{ExploreAction, ExploreConfig, RegionExplorer};
///
/// let region: Prefix = "0110".parse()?;
/// // No seeds: nothing to ask, so it is done at once, knowing nothing.
/// let mut explorer = RegionExplorer::new(region, None, Vec::new(), ExploreConfig::default());
/// assert_eq!(explorer.poll(), ExploreAction::Finished);
/// let result = explorer.into_result();
/// assert!(result.servers.is_empty() && !result.complete);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RegionExplorer {
    region: Prefix,
    config: ExploreConfig,
    local: Option<PeerId>,
    /// Peers known to be unreachable: never asked, never counted.
    excluded: HashSet<PeerId>,
    /// Every peer heard of, by Kademlia key.
    peers: BTreeMap<Key, Entry>,
    by_id: BTreeMap<PeerId, Key>,
    /// The prefix whose servers must all be known; starts as the region, grows upward.
    scope: Prefix,
    /// Prefixes inside `scope` not yet known to be complete.
    open: BTreeSet<Prefix>,
    /// Prefixes known complete.
    complete: BTreeSet<Prefix>,
    /// Questions asked: (peer, prefix), so none is asked twice.
    asked: HashSet<(PeerId, Prefix)>,
    /// Requests in flight: peer → the prefix asked about.
    in_flight: BTreeMap<PeerId, Prefix>,
    /// Per open prefix, the servers inside its parent that answered it holds fewer than k.
    confirmed: BTreeMap<Prefix, BTreeSet<PeerId>>,
    requests: usize,
    first_asks: usize,
    failures: usize,
    checked: usize,
    left_out: usize,
    exhausted: bool,
}

/// The outcome of exploring a region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exploration {
    /// The region asked for.
    pub region: Prefix,
    /// The prefix whose servers were learned: the region, or the smallest prefix around it
    /// that holds at least k servers.
    pub scope: Prefix,
    /// Every server known inside `scope` that did not fail, in keyspace order.
    pub servers: Vec<PeerInfo>,
    /// The servers of `servers` that answered a request (proven alive).
    pub responded: BTreeSet<PeerId>,
    /// Whether every part of `scope` was learned completely (false when the request budget
    /// ran out or no server could be asked).
    pub complete: bool,
    /// FIND_NODE requests sent.
    pub requests: usize,
    /// Of those, the requests to servers not heard from before in the exploration: the
    /// share of them that failed is the share of servers that do not answer.
    pub first_asks: usize,
    /// Requests that failed or timed out.
    pub failures: usize,
    /// Known servers that answers claiming to list every server of a prefix should have
    /// listed (those the explorer knew there before the answer).
    pub checked: usize,
    /// Of those, the ones the answers left out: `left_out / checked` is the share of peers
    /// the network's answers omit.
    pub left_out: usize,
}

impl Exploration {
    /// The k servers of the exploration closest to `key`, closest first.
    pub fn closest(&self, key: &Key, k: usize) -> Vec<&PeerInfo> {
        closest_of(&self.servers, key, k)
    }
}

/// The `k` peers of `peers` closest to `key`, closest first.
pub fn closest_of<'a>(peers: &'a [PeerInfo], key: &Key, k: usize) -> Vec<&'a PeerInfo> {
    let mut by_distance: Vec<(Distance, &PeerInfo)> =
        peers.iter().map(|p| (p.key().distance(key), p)).collect();
    if by_distance.len() > k && k > 0 {
        by_distance.select_nth_unstable_by_key(k - 1, |x| x.0);
    }
    by_distance.truncate(k);
    by_distance.sort_unstable_by_key(|x| x.0);
    by_distance.into_iter().map(|x| x.1).collect()
}

/// The key the explorer asks about when it learns prefix `q`: its middle.
fn target_of(q: &Prefix) -> Key {
    match q.children() {
        Some((_, right)) => right.first_key(),
        None => q.first_key(),
    }
}

impl RegionExplorer {
    /// An explorer of `region`, starting from `seeds` (for a sweep: the servers found for the
    /// region before it; otherwise the routing table's closest peers). `local` is this node,
    /// which is never asked and never counted.
    pub fn new(
        region: Prefix,
        local: Option<PeerId>,
        seeds: impl IntoIterator<Item = PeerInfo>,
        config: ExploreConfig,
    ) -> Self {
        let mut explorer = RegionExplorer {
            region,
            config,
            local,
            excluded: HashSet::new(),
            peers: BTreeMap::new(),
            by_id: BTreeMap::new(),
            scope: region,
            open: BTreeSet::from([region]),
            complete: BTreeSet::new(),
            asked: HashSet::new(),
            in_flight: BTreeMap::new(),
            confirmed: BTreeMap::new(),
            requests: 0,
            first_asks: 0,
            failures: 0,
            checked: 0,
            left_out: 0,
            exhausted: false,
        };
        for seed in seeds {
            explorer.learn(seed);
        }
        explorer
    }

    fn learn(&mut self, peer: PeerInfo) {
        if Some(peer.peer_id) == self.local
            || self.excluded.contains(&peer.peer_id)
            || self.by_id.contains_key(&peer.peer_id)
        {
            return;
        }
        let key = peer.key();
        self.by_id.insert(peer.peer_id, key);
        self.peers.insert(
            key,
            Entry {
                peer,
                state: PeerState::Known,
            },
        );
    }

    /// Marks peers as unreachable (for a sweep: those a send to failed): they are forgotten,
    /// never asked and never counted, so the explorer widens its scope past them when the
    /// region is left with fewer than k reachable servers.
    pub fn exclude(&mut self, peers: impl IntoIterator<Item = PeerId>) {
        for peer in peers {
            if let Some(key) = self.by_id.remove(&peer) {
                self.peers.remove(&key);
            }
            self.excluded.insert(peer);
        }
    }

    /// The servers known inside `q` that have not failed.
    fn live_in(&self, q: &Prefix) -> impl Iterator<Item = (&Key, &Entry)> {
        self.peers
            .range(q.first_key()..=q.last_key())
            .filter(|(_, e)| e.state != PeerState::Failed)
    }

    /// Whom to ask about `q`: the closest known peer to its middle not yet asked about it.
    fn responder_for(&self, q: &Prefix) -> Option<Key> {
        let target = target_of(q);
        self.peers
            .iter()
            .filter(|(_, e)| e.state == PeerState::Known || e.state == PeerState::Responded)
            .filter(|(_, e)| !self.in_flight.contains_key(&e.peer.peer_id))
            .filter(|(_, e)| !self.asked.contains(&(e.peer.peer_id, *q)))
            .min_by_key(|(k, _)| k.distance(&target))
            .map(|(k, _)| *k)
    }

    /// The next thing to do.
    pub fn poll(&mut self) -> ExploreAction {
        loop {
            if self.open.is_empty() {
                if self.grow_scope() {
                    continue;
                }
                return if self.in_flight.is_empty() {
                    ExploreAction::Finished
                } else {
                    ExploreAction::Wait
                };
            }
            if self.requests >= self.config.max_requests {
                self.exhausted = true;
                return if self.in_flight.is_empty() {
                    ExploreAction::Finished
                } else {
                    ExploreAction::Wait
                };
            }
            if self.in_flight.len() >= self.config.parallelism {
                return ExploreAction::Wait;
            }
            // The first open prefix (keyspace order) that is not already being asked about
            // and has someone to ask.
            let busy: BTreeSet<Prefix> = self.in_flight.values().copied().collect();
            let mut stuck = Vec::new();
            let mut pick = None;
            for q in self.open.iter().filter(|q| !busy.contains(q)) {
                match self.responder_for(q) {
                    Some(key) => {
                        pick = Some((*q, key));
                        break;
                    }
                    None => stuck.push(*q),
                }
            }
            if let Some((q, key)) = pick {
                let Some(entry) = self.peers.get_mut(&key) else {
                    return ExploreAction::Wait;
                };
                if entry.state == PeerState::Known {
                    entry.state = PeerState::InFlight;
                    self.first_asks += 1;
                }
                let peer = entry.peer.clone();
                self.asked.insert((peer.peer_id, q));
                self.in_flight.insert(peer.peer_id, q);
                self.requests += 1;
                return ExploreAction::Ask { peer, target: q };
            }
            if !self.in_flight.is_empty() {
                return ExploreAction::Wait;
            }
            // Nobody left to ask about the stuck prefixes: accept what is known.
            for q in stuck {
                self.open.remove(&q);
                self.exhausted = true;
            }
        }
    }

    /// Widens the scope to its parent when it holds fewer than k servers; returns whether it
    /// opened something new to learn.
    fn grow_scope(&mut self) -> bool {
        let count = self.live_in(&self.scope.clone()).count();
        if count >= self.config.k {
            return false;
        }
        let (Some(parent), Some(sibling)) = (self.scope.parent(), self.scope.sibling()) else {
            return false;
        };
        self.scope = parent;
        if !self.complete.contains(&sibling) {
            self.open.insert(sibling);
        }
        true
    }

    /// `peer` answered the FIND_NODE it was asked with `closer_peers`.
    pub fn on_response(&mut self, peer: &PeerId, closer_peers: Vec<PeerInfo>) {
        let Some(q) = self.in_flight.remove(peer) else {
            return;
        };
        let Some(responder_key) = self.by_id.get(peer).copied() else {
            return;
        };
        if let Some(e) = self.peers.get_mut(&responder_key) {
            e.state = PeerState::Responded;
        }
        let answer: BTreeSet<PeerId> = closer_peers
            .iter()
            .filter(|p| q.contains(&p.key()))
            .map(|p| p.peer_id)
            .collect();
        // The servers of q known before the answer, which a full answer lists.
        let known_before: Vec<PeerId> = self
            .live_in(&q)
            .map(|(_, e)| e.peer.peer_id)
            .filter(|p| p != peer)
            .collect();
        for p in closer_peers {
            self.learn(p);
        }
        if !self.open.contains(&q) {
            return;
        }
        // Only a responder inside q's parent sees q through non-overlapping buckets.
        let inside_parent = q
            .parent()
            .is_none_or(|parent| parent.contains(&responder_key));
        if !inside_parent {
            return;
        }
        if answer.len() >= self.config.k || self.live_in(&q).count() >= self.config.k {
            // At least k servers inside q (listed, or known with those listed): learn each
            // half. (An answer that leaves peers out may list fewer than k of a large q.)
            self.split(q);
            return;
        }
        let missing = known_before.iter().filter(|p| !answer.contains(p)).count();
        // An answer of k peers may leave out known servers past its k closest; only one
        // that could have listed them all says what answers omit.
        if answer.len() + missing < self.config.k {
            self.checked += known_before.len();
            self.left_out += missing;
        }
        if self.confirmations() > 1 {
            // Answers leave peers out: learn q from the union of several.
            let confirmed = self.confirmed.entry(q).or_default();
            confirmed.insert(*peer);
            if confirmed.len() >= self.confirmations() {
                self.confirmed.remove(&q);
                self.open.remove(&q);
                self.complete.insert(q);
            }
            return;
        }
        // Fewer than k: complete, unless it leaves out a server of q we already know.
        if missing == 0 {
            self.open.remove(&q);
            self.complete.insert(q);
        }
    }

    /// The answers a prefix needs: as configured, and at least 2 once this exploration's own
    /// answers left out more than a twentieth of the servers they should have listed (so
    /// that the first exploration in such a network does not spend its budget asking again
    /// after every answer that leaves one out).
    fn confirmations(&self) -> usize {
        let omitting = self.checked >= 10 && self.left_out * 20 > self.checked;
        if omitting {
            self.config.confirmations.max(2)
        } else {
            self.config.confirmations
        }
    }

    /// `q` holds at least k servers: learn each half instead.
    fn split(&mut self, q: Prefix) {
        self.open.remove(&q);
        self.confirmed.remove(&q);
        if let Some((left, right)) = q.children() {
            self.open.insert(left);
            self.open.insert(right);
        } else {
            self.complete.insert(q);
        }
    }

    /// The request to `peer` failed or timed out.
    pub fn on_failure(&mut self, peer: &PeerId) {
        if self.in_flight.remove(peer).is_none() {
            return;
        }
        self.failures += 1;
        if let Some(key) = self.by_id.get(peer)
            && let Some(e) = self.peers.get_mut(key)
        {
            e.state = PeerState::Failed;
        }
    }

    /// The region being explored.
    pub fn region(&self) -> Prefix {
        self.region
    }

    /// The result; call once [`ExploreAction::Finished`] was returned (earlier, it reports what
    /// is known so far as incomplete).
    pub fn into_result(self) -> Exploration {
        let complete = !self.exhausted && self.open.is_empty() && self.in_flight.is_empty();
        let servers: Vec<PeerInfo> = self
            .live_in(&self.scope)
            .map(|(_, e)| e.peer.clone())
            .collect();
        let responded = self
            .live_in(&self.scope)
            .filter(|(_, e)| e.state == PeerState::Responded)
            .map(|(_, e)| e.peer.peer_id)
            .collect();
        Exploration {
            region: self.region,
            scope: self.scope,
            complete: complete && !servers.is_empty(),
            servers,
            responded,
            requests: self.requests,
            first_asks: self.first_asks,
            failures: self.failures,
            checked: self.checked,
            left_out: self.left_out,
        }
    }
}

/// The servers of `region` as a complete routing table (fullrt) gives them, with no request:
/// every server of the smallest prefix around `region` that holds at least `k` of them,
/// leaving out `excluded` peers and `local`.
///
/// `closest(key, n)` is the table's closest-peers query. Every server inside a prefix is
/// closer to a key of that prefix than any server outside it, so asking for more servers
/// than the prefix holds returns all of them.
pub fn region_from_table(
    region: Prefix,
    k: usize,
    local: Option<PeerId>,
    excluded: &HashSet<PeerId>,
    closest: impl Fn(&Key, usize) -> Vec<PeerInfo>,
) -> Exploration {
    let target = region.first_key();
    let usable = |p: &PeerInfo| Some(p.peer_id) != local && !excluded.contains(&p.peer_id);
    let mut n = 4 * k.max(1) + excluded.len();
    loop {
        let peers = closest(&target, n);
        let mut scope = region;
        let inside = |scope: &Prefix| {
            peers
                .iter()
                .filter(|p| scope.contains(&p.key()) && usable(p))
                .count()
        };
        while inside(&scope) < k
            && let Some(parent) = scope.parent()
        {
            scope = parent;
        }
        // All the table returned lies in the scope: it may hold more; ask for more.
        let all_inside = peers.iter().all(|p| scope.contains(&p.key()));
        if all_inside && peers.len() == n && n < (1 << 20) {
            n *= 2;
            continue;
        }
        let mut servers: Vec<PeerInfo> = peers
            .into_iter()
            .filter(|p| scope.contains(&p.key()) && usable(p))
            .collect();
        servers.sort_by_key(PeerInfo::key);
        return Exploration {
            region,
            scope,
            complete: !servers.is_empty(),
            servers,
            responded: BTreeSet::new(),
            requests: 0,
            first_asks: 0,
            failures: 0,
            checked: 0,
            left_out: 0,
        };
    }
}
