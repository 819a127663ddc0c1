//! Which servers each key is sent to, and what explorations showed of the network.
//!
//! A key belongs on its k closest servers that answer. An exploration asks only a few of a
//! region's servers; the others it knows from answers, and some of those may be silent
//! (they accept a connection and never answer). ADD_PROVIDER has no answer, so a record sent
//! to a silent server is lost without a sign, and the key misses one of its true closest.
//! So a key goes to its k closest servers and, when some of them were never heard from, to
//! the next closest as well: as many more as the unheard ones among the k may hold silent
//! servers, judging by the share of FIND_NODE requests that went unanswered lately. In a
//! network where every server answers, that is exactly the k closest.
//!
//! Sans-IO: it takes explorations and keys, and does no I/O.

use std::collections::{BTreeMap, HashSet};

use dht_proto::{Key, PeerId, PeerInfo};

use crate::{
    explore::Exploration,
    state::{PeerTag, peer_tag},
};

/// Requests seen after which older ones count for half (the shares follow the network).
const HALF_LIFE_REQUESTS: f64 = 2000.0;

/// The silent share assumed before any request: one failure in ten requests, weighing as
/// much as ten requests seen.
const PRIOR_FAILED: f64 = 1.0;
/// See [`PRIOR_FAILED`].
const PRIOR_ASKED: f64 = 10.0;

/// What recent explorations showed of the network: the share of FIND_NODE requests left
/// unanswered, and the share of already known servers that answers left out.
#[derive(Clone, Debug, Default)]
pub(crate) struct NetworkQuality {
    asked: f64,
    failed: f64,
    checked: f64,
    left_out: f64,
}

impl NetworkQuality {
    /// Takes what `exploration` saw (nothing for one taken from a complete table).
    pub(crate) fn observe(&mut self, exploration: &Exploration) {
        self.asked += exploration.first_asks as f64;
        self.failed += exploration.failures as f64;
        self.checked += exploration.checked as f64;
        self.left_out += exploration.left_out as f64;
        if self.asked > HALF_LIFE_REQUESTS {
            self.asked /= 2.0;
            self.failed /= 2.0;
            self.checked /= 2.0;
            self.left_out /= 2.0;
        }
    }

    /// The share of servers that do not answer (silent, or losing messages): the share of
    /// FIND_NODE requests to servers not heard from before that went unanswered, leaning
    /// towards a tenth while few were sent (an exploration sends a handful), so that the
    /// first regions get spares too and a network where all answer soon gets none.
    pub(crate) fn silent_share(&self) -> f64 {
        ((self.failed + PRIOR_FAILED) / (self.asked + PRIOR_ASKED)).clamp(0.0, 1.0)
    }

    /// The share of known servers that answers claiming to list all of a prefix left out
    /// (answers that omit peers, or servers whose tables miss them).
    ///
    /// Like [`silent_share`](Self::silent_share) it leans towards a tenth while little was
    /// seen, so that the first explorations do not believe single answers of a network that
    /// leaves peers out (they would take a large prefix for a small one).
    pub(crate) fn omit_share(&self) -> f64 {
        ((self.left_out + PRIOR_FAILED) / (self.checked + PRIOR_ASKED)).clamp(0.0, 1.0)
    }
}

/// How many servers past the k closest a key goes to, when `unheard` of its k closest never
/// answered and a `silent` share of requests goes unanswered: the silent servers expected
/// among the unheard and one and a half standard deviations more, rounded, at most k / 2.
pub(crate) fn spare_servers(unheard: usize, silent: f64, k: usize) -> usize {
    if unheard == 0 || silent <= 0.0 {
        return 0;
    }
    let u = unheard as f64;
    let silent = silent.min(1.0);
    let mean = u * silent;
    let sd = (u * silent * (1.0 - silent)).sqrt();
    ((mean + 1.5 * sd).round() as usize).min(k / 2)
}

/// The servers of an exploration that keys may go to, prepared once for all the keys of a
/// page: their Kademlia keys (a hash of the peer id each) and tags, and whether each was
/// heard from, so that choosing each key's targets hashes and allocates nothing.
struct Targets<'a> {
    servers: Vec<Server<'a>>,
    /// Distances to the servers, reused from key to key.
    by_distance: Vec<(dht_proto::Distance, usize)>,
}

struct Server<'a> {
    info: &'a PeerInfo,
    key: Key,
    tag: PeerTag,
    /// Answered a request, or answers for what it stores (takes batches).
    heard: bool,
}

impl<'a> Targets<'a> {
    /// The servers of `exploration` that are not `excluded`. Servers in `answering` (those
    /// that take batches, whose answers say what they stored) need no spare: when one
    /// fails, its records go to the next closest then.
    fn new(
        exploration: &'a Exploration,
        excluded: &HashSet<PeerId>,
        answering: &HashSet<PeerId>,
    ) -> Self {
        let servers: Vec<Server<'a>> = exploration
            .servers
            .iter()
            .filter(|p| !excluded.contains(&p.peer_id))
            .map(|info| Server {
                info,
                key: info.key(),
                tag: peer_tag(&info.peer_id),
                heard: exploration.responded.contains(&info.peer_id)
                    || answering.contains(&info.peer_id),
            })
            .collect();
        Targets {
            by_distance: Vec::with_capacity(servers.len()),
            servers,
        }
    }

    /// Puts the servers `key` goes to first in `by_distance`, closest first, and returns how
    /// many: its k closest, and [`spare_servers`] more for those among them never heard
    /// from.
    fn choose(&mut self, key: &Key, k: usize, silent: f64) -> usize {
        self.by_distance.clear();
        self.by_distance.extend(
            self.servers
                .iter()
                .enumerate()
                .map(|(i, s)| (s.key.distance(key), i)),
        );
        let wide = k + k / 2;
        if self.by_distance.len() > wide && wide > 0 {
            self.by_distance
                .select_nth_unstable_by_key(wide - 1, |x| x.0);
        }
        self.by_distance.truncate(wide);
        self.by_distance.sort_unstable_by_key(|x| x.0);
        let unheard = self
            .by_distance
            .iter()
            .take(k)
            .filter(|(_, i)| !self.servers[*i].heard)
            .count();
        (k + spare_servers(unheard, silent, k)).min(self.by_distance.len())
    }

    /// The server at `index` of `by_distance`.
    fn info(&self, index: usize) -> &'a PeerInfo {
        self.servers[index].info
    }
}

/// Each peer's share of `keys`: the indexes of the keys it is to be sent, for the keys'
/// [`Targets`] that neither hold them yet (`stored`, per key) nor refused them (`refused`,
/// per key: a batch answer said FULL or INVALID_KEY).
#[allow(clippy::too_many_arguments)]
pub(crate) fn assign(
    exploration: &Exploration,
    keys: &[Key],
    stored: &[Vec<PeerTag>],
    refused: &[Vec<PeerTag>],
    k: usize,
    silent: f64,
    excluded: &HashSet<PeerId>,
    answering: &HashSet<PeerId>,
) -> BTreeMap<PeerId, (PeerInfo, Vec<usize>)> {
    let mut targets = Targets::new(exploration, excluded, answering);
    let mut per_server: Vec<Vec<usize>> = vec![Vec::new(); targets.servers.len()];
    for (i, key) in keys.iter().enumerate() {
        let held = stored.get(i).map_or(&[][..], Vec::as_slice);
        let refusing = refused.get(i).map_or(&[][..], Vec::as_slice);
        let n = targets.choose(key, k, silent);
        for &(_, server) in &targets.by_distance[..n] {
            let tag = targets.servers[server].tag;
            if !held.contains(&tag) && !refusing.contains(&tag) {
                per_server[server].push(i);
            }
        }
    }
    per_server
        .into_iter()
        .enumerate()
        .filter(|(_, idx)| !idx.is_empty())
        .map(|(server, idx)| {
            let info = targets.info(server);
            (info.peer_id, (info.clone(), idx))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use dht_proto::Prefix;

    use super::*;

    fn exploration(servers: usize, responded: usize) -> Exploration {
        let servers: Vec<PeerInfo> = (0..servers)
            .map(|_| PeerInfo::new(PeerId::random(), Vec::new()))
            .collect();
        Exploration {
            region: Prefix::ROOT,
            scope: Prefix::ROOT,
            responded: servers.iter().take(responded).map(|p| p.peer_id).collect(),
            servers,
            complete: true,
            requests: 3,
            first_asks: 3,
            failures: 0,
            checked: 0,
            left_out: 0,
        }
    }

    /// The servers `key` goes to, closest first.
    fn targets<'a>(
        ex: &'a Exploration,
        key: &Key,
        k: usize,
        silent: f64,
        excluded: &HashSet<PeerId>,
        answering: &HashSet<PeerId>,
    ) -> Vec<&'a PeerInfo> {
        let mut t = Targets::new(ex, excluded, answering);
        let n = t.choose(key, k, silent);
        t.by_distance[..n].iter().map(|x| t.info(x.1)).collect()
    }

    #[test]
    fn every_server_answering_means_exactly_k() {
        let ex = exploration(40, 3);
        let key = Key::hash(b"a key");
        let t = targets(&ex, &key, 20, 0.0, &HashSet::new(), &HashSet::new());
        assert_eq!(t.len(), 20);
        let want: Vec<PeerId> = ex.closest(&key, 20).iter().map(|p| p.peer_id).collect();
        let got: Vec<PeerId> = t.iter().map(|p| p.peer_id).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn unheard_servers_get_spares_in_a_network_with_silent_ones() {
        assert_eq!(spare_servers(0, 0.1, 20), 0);
        assert_eq!(spare_servers(20, 0.0, 20), 0);
        // 20 unheard, a tenth silent: 2 expected, 1.5 sd of 1.34 more.
        assert_eq!(spare_servers(20, 0.1, 20), 4);
        // A network where nearly all answer: none.
        assert_eq!(spare_servers(20, 0.001, 20), 0);
        assert_eq!(spare_servers(20, 0.9, 20), 10);
        let ex = exploration(40, 0);
        let key = Key::hash(b"a key");
        let none = HashSet::new();
        let t = targets(&ex, &key, 20, 0.1, &none, &none);
        assert_eq!(t.len(), 24);
        // Servers that answer for what they store (batches) need no spare either.
        let answering: HashSet<PeerId> = ex.servers.iter().map(|p| p.peer_id).collect();
        assert_eq!(targets(&ex, &key, 20, 0.1, &none, &answering).len(), 20);
        // Servers heard from need no spare.
        let all = exploration(40, 40);
        assert_eq!(targets(&all, &key, 20, 0.1, &none, &none).len(), 20);
        // Excluded servers are never targets.
        let gone: HashSet<PeerId> = ex.closest(&key, 3).iter().map(|p| p.peer_id).collect();
        let t = targets(&ex, &key, 20, 0.1, &gone, &none);
        assert_eq!(t.len(), 24);
        assert!(t.iter().all(|p| !gone.contains(&p.peer_id)));
    }

    #[test]
    fn keys_go_only_where_they_are_not_held() {
        let ex = exploration(30, 30);
        let keys = [Key::hash(b"one"), Key::hash(b"two")];
        let held: Vec<PeerTag> = ex
            .closest(&keys[0], 5)
            .iter()
            .map(|p| peer_tag(&p.peer_id))
            .collect();
        let stored = vec![held, Vec::new()];
        let none = vec![Vec::new(); 2];
        let nobody = HashSet::new();
        let per_peer = assign(&ex, &keys, &stored, &none, 20, 0.0, &nobody, &nobody);
        let sends: usize = per_peer.values().map(|(_, idx)| idx.len()).sum();
        assert_eq!(sends, 15 + 20);
        let to: BTreeSet<usize> = per_peer.values().flat_map(|(_, i)| i.clone()).collect();
        assert_eq!(to, BTreeSet::from([0, 1]));
        // Nor where a batch answer refused them.
        let refusing: Vec<PeerTag> = ex
            .closest(&keys[1], 3)
            .iter()
            .map(|p| peer_tag(&p.peer_id))
            .collect();
        let refused = vec![Vec::new(), refusing];
        let per_peer = assign(&ex, &keys, &stored, &refused, 20, 0.0, &nobody, &nobody);
        let sends: usize = per_peer.values().map(|(_, idx)| idx.len()).sum();
        assert_eq!(sends, 15 + 17);
    }

    #[test]
    fn shares_follow_what_explorations_saw() {
        let mut q = NetworkQuality::default();
        // Before any request: a tenth.
        assert!((q.silent_share() - 0.1).abs() < 1e-9);
        assert!((q.omit_share() - 0.1).abs() < 1e-9);
        let mut ex = exploration(20, 3);
        ex.first_asks = 10;
        ex.failures = 1;
        ex.checked = 50;
        ex.left_out = 10;
        for _ in 0..1000 {
            q.observe(&ex);
        }
        assert!((q.silent_share() - 0.1).abs() < 1e-3);
        assert!((q.omit_share() - 0.2).abs() < 1e-3);
        // A network that stops failing is followed.
        ex.failures = 0;
        ex.left_out = 0;
        for _ in 0..2000 {
            q.observe(&ex);
        }
        assert!(q.silent_share() < 0.01, "{}", q.silent_share());
        assert!(q.omit_share() < 0.01, "{}", q.omit_share());
    }
}
