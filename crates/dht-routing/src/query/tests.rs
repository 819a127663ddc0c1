//! The lookup state machine against scripted networks of synthetic peers, whose answers are
//! computed from a global ground truth.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use rand::{Rng, SeedableRng, rngs::SmallRng};

use super::*;

fn peer(rng: &mut SmallRng) -> PeerInfo {
    PeerInfo::new(dht_test_kit::peer_id(rng.random()), vec![])
}

/// How a scripted peer behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Honest,
    /// Fails every request.
    Failing,
    /// Never answers; the script fails it after `timeout` ticks.
    Silent,
    /// Answers with random peers.
    Random,
}

/// A network of `n` peers; peer `i` knows the peers `knows(i)`.
struct Net {
    peers: Vec<PeerInfo>,
    keys: Vec<Key>,
    kinds: Vec<Kind>,
    knows: Vec<Vec<usize>>,
    index: HashMap<PeerId, usize>,
}

impl Net {
    /// Every peer knows every other (a complete view): answers are the true closest.
    fn complete(n: usize, seed: u64, kind: impl Fn(usize) -> Kind) -> Net {
        Self::partial(n, seed, 1.0, kind)
    }

    /// Every peer knows each other peer with probability `p`, and always its 20 closest.
    fn partial(n: usize, seed: u64, p: f64, kind: impl Fn(usize) -> Kind) -> Net {
        let mut rng = SmallRng::seed_from_u64(seed);
        let peers: Vec<PeerInfo> = (0..n).map(|_| peer(&mut rng)).collect();
        let keys: Vec<Key> = peers.iter().map(PeerInfo::key).collect();
        let knows = (0..n)
            .map(|i| {
                let mut by_distance: Vec<usize> = (0..n).filter(|&j| j != i).collect();
                by_distance.sort_by_key(|&j| keys[i].distance(&keys[j]));
                by_distance
                    .into_iter()
                    .enumerate()
                    .filter(|(rank, _)| *rank < K_VALUE || rng.random_bool(p))
                    .map(|(_, j)| j)
                    .collect()
            })
            .collect();
        let index = peers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.peer_id, i))
            .collect();
        Net {
            kinds: (0..n).map(kind).collect(),
            peers,
            keys,
            knows,
            index,
        }
    }

    /// Peer `i`'s answer: the 20 closest it knows to `target`.
    fn answer(&self, i: usize, target: &Key, rng: &mut SmallRng) -> Vec<PeerInfo> {
        if self.kinds[i] == Kind::Random {
            return (0..K_VALUE)
                .map(|_| self.peers[rng.random_range(0..self.peers.len())].clone())
                .collect();
        }
        let mut known = self.knows[i].clone();
        known.sort_by_key(|&j| target.distance(&self.keys[j]));
        known.truncate(K_VALUE);
        known.into_iter().map(|j| self.peers[j].clone()).collect()
    }

    /// The `k` closest peers to `target` that answer, `except` left out.
    fn truth(&self, target: &Key, k: usize, except: Option<usize>) -> Vec<PeerId> {
        let mut live: Vec<usize> = (0..self.peers.len())
            .filter(|&i| Some(i) != except)
            .filter(|&i| matches!(self.kinds[i], Kind::Honest | Kind::Random))
            .collect();
        live.sort_by_key(|&i| target.distance(&self.keys[i]));
        live.into_iter()
            .take(k)
            .map(|i| self.peers[i].peer_id)
            .collect()
    }

    /// Seeds: what peer `from` knows closest to `target`.
    fn seeds(&self, from: usize, target: &Key, n: usize) -> Vec<PeerInfo> {
        let mut known = self.knows[from].clone();
        known.sort_by_key(|&j| target.distance(&self.keys[j]));
        known.truncate(n);
        known.into_iter().map(|j| self.peers[j].clone()).collect()
    }
}

/// What a run of a query did.
#[derive(Debug, PartialEq, Eq)]
struct Trace {
    /// Every action, in order (for determinism checks).
    actions: Vec<String>,
    asked: Vec<PeerId>,
    probes: usize,
    max_active: usize,
    result: QueryResult,
}

const TICK: Duration = Duration::from_millis(10);

/// Runs `query` over `net`: answers come back in a random order (seeded), one per tick;
/// silent peers fail `timeout` ticks after being asked.
fn run(net: &Net, mut query: ClosestPeersQuery, seed: u64, timeout: u32) -> Trace {
    let mut rng = SmallRng::seed_from_u64(seed);
    let start = Instant::now();
    let mut tick = 0u32;
    let now = |tick: u32| start + TICK * tick;
    // (peer, probe region, tick at which a silent peer's request fails)
    let mut in_flight: Vec<(usize, Option<Prefix>, u32)> = Vec::new();
    let mut trace = Trace {
        actions: Vec::new(),
        asked: Vec::new(),
        probes: 0,
        max_active: 0,
        result: ClosestPeersQuery::new(Key::ZERO, [], QueryConfig::default()).into_result(),
    };
    let mut asked = HashSet::new();
    let alpha = query.config().effective_alpha();
    for _ in 0..100_000 {
        loop {
            match query.poll(now(tick)) {
                QueryAction::Ask(p) => {
                    trace.actions.push(format!("ask {}", p.peer_id));
                    assert!(asked.insert(p.peer_id), "asked {} twice", p.peer_id);
                    assert_ne!(Some(p.peer_id), query.config().local_peer, "asked itself");
                    trace.asked.push(p.peer_id);
                    in_flight.push((net.index[&p.peer_id], None, tick + timeout));
                }
                QueryAction::Probe { peer, region } => {
                    trace
                        .actions
                        .push(format!("probe {} {region}", peer.peer_id));
                    assert!(asked.contains(&peer.peer_id), "probed a peer not asked");
                    trace.probes += 1;
                    in_flight.push((net.index[&peer.peer_id], Some(region), tick + timeout));
                }
                QueryAction::Wait { until } => {
                    trace
                        .actions
                        .push(format!("wait {:?}", until.map(|u| u - start)));
                    break;
                }
                QueryAction::Finished => {
                    trace.actions.push("finished".into());
                    trace.result = query.into_result();
                    return trace;
                }
            }
            assert!(query.active <= alpha, "more than α active requests");
        }
        trace.max_active = trace.max_active.max(query.active);
        tick += 1;
        // Silent peers time out; of the others, a random one answers.
        if let Some(pos) = in_flight
            .iter()
            .position(|(i, _, due)| net.kinds[*i] == Kind::Silent && *due <= tick)
        {
            let (i, _, _) = in_flight.swap_remove(pos);
            assert!(query.on_failure(&net.peers[i].peer_id, now(tick)));
            continue;
        }
        let answering: Vec<usize> = (0..in_flight.len())
            .filter(|&pos| net.kinds[in_flight[pos].0] != Kind::Silent)
            .collect();
        if answering.is_empty() {
            continue;
        }
        let pos = answering[rng.random_range(0..answering.len())];
        let (i, region, _) = in_flight.swap_remove(pos);
        let id = net.peers[i].peer_id;
        if net.kinds[i] == Kind::Failing {
            assert!(query.on_failure(&id, now(tick)));
        } else {
            let target = region.map_or(*query.target(), |r| r.key_with_suffix(query.target()));
            let answer = net.answer(i, &target, &mut rng);
            assert!(query.on_response(&id, &answer, now(tick)));
        }
    }
    panic!("the query did not finish");
}

fn target(seed: u64) -> Key {
    Key::hash(&seed.to_be_bytes())
}

/// The query from peer 0 of `net` for `target`, with `config`, seeded by peer 0's view.
fn query(net: &Net, target: Key, config: QueryConfig) -> ClosestPeersQuery {
    let config = config.with_local_peer(Some(net.peers[0].peer_id));
    let k = config.effective_k();
    ClosestPeersQuery::new(target, net.seeds(0, &target, k), config)
}

#[test]
fn finds_the_true_closest() {
    // (peers, knowledge, α, β, k, stall)
    let cases: &[(usize, f64, usize, usize, usize)] = &[
        (30, 1.0, 10, 3, 20),
        (60, 0.3, 10, 3, 20),
        (60, 0.3, 1, 1, 20),
        (60, 0.3, 3, 20, 20),
        (60, 0.1, 10, 20, 20),
        (60, 0.3, 10, 3, 5),
        (10, 1.0, 10, 3, 20),
        (60, 0.2, 10, 3, 1),
    ];
    for (case, &(n, p, alpha, beta, k)) in cases.iter().enumerate() {
        for seed in 0..5 {
            let net = Net::partial(n, seed, p, |_| Kind::Honest);
            let t = target(seed * 100 + case as u64);
            let config = QueryConfig::default()
                .with_alpha(alpha)
                .with_beta(beta)
                .with_k(k);
            let trace = run(&net, query(&net, t, config), seed, 5);
            let got: Vec<PeerId> = trace.result.closest.iter().map(|p| p.peer_id).collect();
            assert_eq!(got, net.truth(&t, k, Some(0)), "case {case} seed {seed}");
            assert!(trace.result.complete, "case {case}");
            assert!(trace.max_active <= alpha, "case {case}");
            assert_eq!(trace.probes, 0, "case {case}: no failure, no probe");
            assert_eq!(trace.result.stats.requests as usize, trace.asked.len());
        }
    }
}

#[test]
fn never_asks_far_peers_when_the_closest_answer() {
    // A complete view: the seeds' answers already hold the true closest. The lookup asks the
    // closest β, then the rest of the k closest: exactly k requests, and one or two rounds.
    let net = Net::complete(200, 1, |_| Kind::Honest);
    let t = target(7);
    let trace = run(&net, query(&net, t, QueryConfig::default()), 1, 5);
    assert_eq!(trace.asked.len(), K_VALUE);
    assert!(trace.result.stats.rounds <= 2);
}

#[test]
fn beta_limits_the_first_requests() {
    // (α, β, requests sent before the first answer)
    let cases = [(10, 3, 3), (10, 1, 1), (10, 20, 10), (2, 3, 2), (10, 0, 1)];
    let net = Net::partial(80, 3, 0.2, |_| Kind::Honest);
    for (alpha, beta, first) in cases {
        let config = QueryConfig::default().with_alpha(alpha).with_beta(beta);
        let mut q = query(&net, target(1), config);
        let now = Instant::now();
        let mut asked = 0;
        while let QueryAction::Ask(_) = q.poll(now) {
            asked += 1;
        }
        assert_eq!(asked, first, "α {alpha} β {beta}");
    }
}

#[test]
fn failures_are_left_out() {
    // Every third peer fails: the result is the true closest among the others.
    let net = Net::partial(90, 4, 0.3, |i| {
        if i % 3 == 1 {
            Kind::Failing
        } else {
            Kind::Honest
        }
    });
    for seed in 0..5 {
        let t = target(seed);
        let trace = run(&net, query(&net, t, QueryConfig::default()), seed, 5);
        let got: Vec<PeerId> = trace.result.closest.iter().map(|p| p.peer_id).collect();
        assert_eq!(got, net.truth(&t, K_VALUE, Some(0)), "seed {seed}");
        assert!(trace.result.stats.failures > 0);
    }
}

#[test]
fn silent_peers_time_out_and_probes_find_the_next_in_line() {
    // A complete view, so every answer lists the same 20 closest (silent ones included):
    // without probes the lookup cannot hear of the peers beyond them.
    let net = Net::complete(300, 5, |i| {
        if i % 5 == 2 {
            Kind::Silent
        } else {
            Kind::Honest
        }
    });
    let (mut probed, mut inexact_without) = (0, 0);
    for seed in 0..10 {
        let t = target(seed);
        let trace = run(&net, query(&net, t, QueryConfig::default()), seed, 30);
        let got: Vec<PeerId> = trace.result.closest.iter().map(|p| p.peer_id).collect();
        assert_eq!(got, net.truth(&t, K_VALUE, Some(0)), "seed {seed}");
        probed += trace.probes;
        assert!(trace.probes <= 3);

        let no_probes = QueryConfig::default().with_max_probes(0);
        let trace = run(&net, query(&net, t, no_probes), seed, 30);
        assert_eq!(trace.probes, 0);
        let got: Vec<PeerId> = trace.result.closest.iter().map(|p| p.peer_id).collect();
        inexact_without += usize::from(got != net.truth(&t, K_VALUE, Some(0)));
    }
    assert!(probed > 0);
    // Regression: without probes, most of these lookups miss some of the closest peers.
    assert!(inexact_without > 5, "{inexact_without}");
}

#[test]
fn stalled_requests_free_their_slot() {
    let net = Net::complete(50, 6, |_| Kind::Honest);
    let stall = Duration::from_millis(100);
    let config = QueryConfig::default()
        .with_alpha(1)
        .with_stall_timeout(Some(stall));
    let mut q = query(&net, target(3), config);
    let t0 = Instant::now();
    let QueryAction::Ask(first) = q.poll(t0) else {
        panic!("expected a request")
    };
    // α = 1: nothing more until the first stalls.
    assert_eq!(
        q.poll(t0),
        QueryAction::Wait {
            until: Some(t0 + stall)
        }
    );
    assert_eq!(
        q.poll(t0 + stall / 2),
        QueryAction::Wait {
            until: Some(t0 + stall)
        }
    );
    let QueryAction::Ask(second) = q.poll(t0 + stall) else {
        panic!("expected a request once the first stalled")
    };
    assert_ne!(first, second);
    assert_eq!(q.stats().stalls, 1);
    assert_eq!(q.in_flight(), 2);
    // The stalled peer's late answer still counts.
    assert!(q.on_response(&first.peer_id, &[], t0 + stall * 3));
    assert_eq!(q.closest_answered(20), vec![first]);
}

#[test]
fn without_stall_timeout_a_slow_peer_keeps_its_slot() {
    let net = Net::complete(50, 6, |_| Kind::Honest);
    let config = QueryConfig::default()
        .with_alpha(1)
        .with_stall_timeout(None);
    let mut q = query(&net, target(3), config);
    let t0 = Instant::now();
    assert!(matches!(q.poll(t0), QueryAction::Ask(_)));
    assert_eq!(
        q.poll(t0 + Duration::from_secs(3600)),
        QueryAction::Wait { until: None }
    );
}

#[test]
fn inputs_for_unknown_or_finished_requests_are_ignored() {
    let net = Net::complete(30, 7, |_| Kind::Honest);
    let mut q = query(&net, target(4), QueryConfig::default());
    let now = Instant::now();
    let QueryAction::Ask(p) = q.poll(now) else {
        panic!("expected a request")
    };
    let stranger = net.peers[29].peer_id;
    assert!(!q.on_response(&stranger, &[], now));
    assert!(!q.on_failure(&stranger, now));
    assert!(q.is_waiting_for(&p.peer_id));
    assert!(q.on_response(&p.peer_id, &[], now));
    assert!(!q.on_response(&p.peer_id, &[], now), "a second answer");
    assert!(!q.on_failure(&p.peer_id, now), "a failure after the answer");
    assert_eq!(q.stats().successes, 1);
}

#[test]
fn local_peer_and_duplicates_are_dropped() {
    let net = Net::complete(30, 8, |_| Kind::Honest);
    let me = net.peers[0].clone();
    let mut seeds = net.seeds(0, &target(5), 5);
    seeds.push(me.clone());
    seeds.push(seeds[0].clone());
    let config = QueryConfig::default().with_local_peer(Some(me.peer_id));
    let mut q = ClosestPeersQuery::new(target(5), seeds, config);
    assert_eq!(q.stats().peers_seen, 5);
    let now = Instant::now();
    let QueryAction::Ask(p) = q.poll(now) else {
        panic!("expected a request")
    };
    // An answer listing the local peer and known peers adds nothing new but them.
    let answer = vec![me.clone(), p.clone(), net.peers[1].clone()];
    q.on_response(&p.peer_id, &answer, now);
    assert_eq!(
        q.stats().peers_seen,
        5 + u64::from(!net.seeds(0, &target(5), 5).contains(&net.peers[1]))
    );
}

#[test]
fn ends_at_once_without_seeds_and_when_told() {
    let mut q = ClosestPeersQuery::new(target(1), [], QueryConfig::default());
    assert_eq!(q.poll(Instant::now()), QueryAction::Finished);
    let r = q.into_result();
    assert!(r.closest.is_empty());

    let net = Net::complete(30, 9, |_| Kind::Honest);
    let mut q = query(&net, target(2), QueryConfig::default());
    let now = Instant::now();
    let QueryAction::Ask(p) = q.poll(now) else {
        panic!("expected a request")
    };
    q.stop();
    assert_eq!(q.poll(now), QueryAction::Finished);
    // A late answer is recorded but adds no candidates.
    assert!(q.on_response(&p.peer_id, &net.peers, now));
    let r = q.into_result();
    assert_eq!(r.closest, vec![p]);
    assert!(!r.complete);
}

#[test]
fn answers_are_capped() {
    let net = Net::complete(100, 10, |_| Kind::Honest);
    let config = QueryConfig::default()
        .with_max_peers_per_response(5)
        .with_k(1);
    let mut q = ClosestPeersQuery::new(target(1), vec![net.peers[1].clone()], config);
    let now = Instant::now();
    let QueryAction::Ask(p) = q.poll(now) else {
        panic!("expected a request")
    };
    q.on_response(&p.peer_id, &net.peers[2..], now);
    assert_eq!(q.stats().peers_seen, 6);
}

#[test]
fn deterministic() {
    let net = Net::partial(120, 11, 0.2, |i| match i % 10 {
        1 => Kind::Silent,
        2 => Kind::Random,
        _ => Kind::Honest,
    });
    let t = target(9);
    let a = run(&net, query(&net, t, QueryConfig::default()), 3, 20);
    let b = run(&net, query(&net, t, QueryConfig::default()), 3, 20);
    assert_eq!(a, b);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x1ab5),
        ..ProptestConfig::default()
    })]

    /// For random networks, settings and answer orders, the lookup ends, asks no peer twice
    /// (checked by `run`), never has more than α requests active, and returns answered peers
    /// only, closest first.
    #[test]
    fn terminates_and_never_asks_twice(
        seed in any::<u64>(),
        n in 2usize..120,
        p in 0.0f64..1.0,
        alpha in 1usize..12,
        beta in 0usize..25,
        k in 1usize..25,
        misbehaving in 0u8..4,
    ) {
        let net = Net::partial(n, seed, p, |i| match (i as u8) % 8 {
            1 if misbehaving >= 1 => Kind::Silent,
            2 if misbehaving >= 2 => Kind::Random,
            3 if misbehaving >= 3 => Kind::Failing,
            _ => Kind::Honest,
        });
        let t = target(seed);
        let config = QueryConfig::default().with_alpha(alpha).with_beta(beta).with_k(k);
        let trace = run(&net, query(&net, t, config), seed, 7);
        prop_assert!(trace.max_active <= alpha);
        prop_assert!(trace.result.closest.len() <= k);
        let answered: HashSet<PeerId> = trace.asked.iter().copied().collect();
        let mut last = None;
        for p in &trace.result.closest {
            prop_assert!(answered.contains(&p.peer_id));
            prop_assert!(matches!(net.kinds[net.index[&p.peer_id]], Kind::Honest | Kind::Random));
            let d = t.distance(&p.key());
            prop_assert!(last < Some(d));
            last = Some(d);
        }
        // Answers hold 20 peers: beyond that the truth may be out of reach.
        if misbehaving == 0 && k <= K_VALUE {
            let got: Vec<PeerId> = trace.result.closest.iter().map(|p| p.peer_id).collect();
            prop_assert_eq!(got, net.truth(&t, k, Some(0)));
        }
    }
}
