//! What a request meets on the simulated network, behaviour by behaviour.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use dht_proto::{K_VALUE, Key, Request, Response};
use dht_routing::{Network, RpcError};
use dht_routing_table::RoutingTable;
use dht_sim::{Behaviour, Latency, Sim, SimConfig};
use tokio::time::Instant;

/// What node 0 gets when it sends FIND_NODE to a node of each behaviour.
#[derive(Debug, PartialEq)]
enum Seen {
    /// The server's own closest peers, after this long.
    Closest(Duration),
    /// Peers other than the closest (random), none in the target's half.
    NotClosest { far_half_only: bool },
    /// No answer within a minute.
    Nothing,
    /// Failed, after this long.
    Failed(RpcError, Duration),
}

#[test]
fn behaviours_on_the_wire() {
    let latency = Duration::from_millis(50);
    let config = SimConfig::default()
        .with_nodes(200)
        .with_seed(41)
        .with_latency(Latency::Fixed(latency))
        .with_silent(0.1)
        .with_slow(0.1)
        .with_random_peers(0.1)
        .with_far_peers(0.1);
    dht_sim::runtime().unwrap().block_on(async {
        let sim = Sim::build(config.clone()).await.unwrap();
        let key = sim.random_key();
        let target = Key::hash(&key);
        let ask = |to: usize| {
            let sim = sim.clone();
            let key = key.clone();
            async move {
                let peer = sim.node(to).unwrap().info().clone();
                let started = Instant::now();
                let request = Request::FindNode { key: key.clone() };
                let network = sim.network(0);
                let sent = network.send(&peer, request);
                let Ok(result) = tokio::time::timeout(Duration::from_secs(60), sent).await else {
                    return Seen::Nothing;
                };
                let elapsed = started.elapsed();
                let peers = match result {
                    Ok(Some(Response::FindNode { closer_peers })) => closer_peers,
                    Ok(other) => panic!("unexpected {other:?}"),
                    Err(e) => return Seen::Failed(e, elapsed),
                };
                // What an honest server answers: its closest, without the requester.
                let mut closest = sim
                    .node(to)
                    .unwrap()
                    .table()
                    .closest_peers(&target, K_VALUE + 2);
                closest.retain(|p| p.peer_id != sim.node(0).unwrap().info().peer_id);
                closest.truncate(K_VALUE);
                if peers == closest {
                    Seen::Closest(elapsed)
                } else {
                    assert_eq!(peers.len(), K_VALUE);
                    let far_half_only = peers.iter().all(|p| p.key().bit(0) != target.bit(0));
                    Seen::NotClosest { far_half_only }
                }
            }
        };
        let first = |b: Behaviour| {
            sim.live_nodes()
                .into_iter()
                .find(|&i| i != 0 && sim.node(i).unwrap().behaviour() == b)
                .unwrap()
        };
        let round_trip = 2 * latency;
        let cases = [
            (Behaviour::Honest, Seen::Closest(round_trip)),
            (
                Behaviour::Slow,
                Seen::Closest(round_trip + config.slow_delay),
            ),
            (Behaviour::Silent, Seen::Nothing),
            (
                Behaviour::FarPeers,
                Seen::NotClosest {
                    far_half_only: true,
                },
            ),
        ];
        for (behaviour, expected) in cases {
            assert_eq!(ask(first(behaviour)).await, expected, "{behaviour:?}");
        }
        // Random peers: not the closest, from both halves (with 20 of 200 peers, all from
        // one half happens once in half a million).
        assert_eq!(
            ask(first(Behaviour::RandomPeers)).await,
            Seen::NotClosest {
                far_half_only: false
            }
        );
        // A node that left: refused after the dial timeout.
        let gone = first(Behaviour::Honest);
        assert!(sim.kill(gone));
        assert_eq!(
            ask(gone).await,
            Seen::Failed(
                RpcError::unreachable(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
                config.dial_timeout
            )
        );
        // ADD_PROVIDER resolves at once and arrives one latency later.
        let server = first(Behaviour::Slow);
        let me = sim.node(0).unwrap().info().clone();
        let add = Request::AddProvider {
            key: key.clone(),
            providers: vec![me],
        };
        let started = Instant::now();
        let peer = sim.node(server).unwrap().info().clone();
        assert_eq!(sim.network(0).send(&peer, add).await, Ok(None));
        assert_eq!(started.elapsed(), Duration::ZERO);
        let held = |sim: &Sim| {
            use dht_provider_store::ProviderStore;
            sim.node(server)
                .unwrap()
                .store()
                .providers(&key, 20, sim.now())
                .unwrap()
                .len()
        };
        assert_eq!(held(&sim), 0);
        tokio::time::sleep(latency).await;
        tokio::task::yield_now().await;
        assert_eq!(held(&sim), 1);
        // Every request is counted, as sent by node 0 and received by those that answered.
        let counts = sim.node(0).unwrap().counts();
        assert_eq!(counts.sent_of(dht_proto::MessageType::FindNode), 6);
        assert_eq!(counts.sent_of(dht_proto::MessageType::AddProvider), 1);
        assert_eq!(sim.net_stats().unreachable, 1);
        assert_eq!(sim.net_stats().unanswered, 1);
    });
}

/// With `omit`, every server leaves about that share of its peers out of each answer; the
/// peers it does give are still from its closest.
#[test]
fn servers_omit_a_share_of_their_peers() {
    let answered = |omit: f64| {
        let config = SimConfig::default()
            .with_nodes(200)
            .with_seed(43)
            .with_omit(omit);
        dht_sim::runtime().unwrap().block_on(async {
            let sim = Sim::build(config).await.unwrap();
            let network = sim.network(0);
            let (mut given, mut asked) = (0usize, 0usize);
            for to in 1..101 {
                let key = sim.random_key();
                let peer = sim.node(to).unwrap().info().clone();
                let closest: Vec<_> = sim
                    .node(to)
                    .unwrap()
                    .table()
                    .closest_peers(&Key::hash(&key), K_VALUE + 1)
                    .into_iter()
                    .map(|p| p.peer_id)
                    .collect();
                match network.send(&peer, Request::FindNode { key }).await {
                    Ok(Some(Response::FindNode { closer_peers })) => {
                        assert!(closer_peers.iter().all(|p| closest.contains(&p.peer_id)));
                        given += closer_peers.len();
                    }
                    other => panic!("unexpected {other:?}"),
                }
                asked += 1;
            }
            given as f64 / asked as f64
        })
    };
    let all = answered(0.0);
    let some = answered(0.2);
    assert!(all >= 19.0, "{all} peers per answer");
    assert!(
        (0.7..0.9).contains(&(some / all)),
        "{some} of {all} peers per answer with omit 0.2"
    );
}
