//! Property: arbitrary requests from arbitrary peers never panic, and never leave the stores
//! inconsistent with what was accepted.
//!
//! A model records what the handler accepted. After every request:
//! - every stored provider of a key is a peer whose ADD_PROVIDER for that key was accepted,
//!   with only addresses it announced, at most 20 per key;
//! - every stored value is the last accepted PUT_VALUE of its key, and was valid when stored;
//! - a refused request changed nothing (the model only moves on success);
//! - answers never name the requester or us among the closer peers, and hold at most k.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use common::*;
use dht_handler::{HandlerConfig, NamespacedValidator, RateLimit, Sender, Validator};
use dht_proto::libp2p_identity::Keypair;
use dht_proto::{K_VALUE, Multiaddr, PeerId, PeerInfo, Record, Request, Response};
use proptest::prelude::*;

/// Key pairs whose `/pk/` and `/ipns/` records the strategies draw from.
struct Pool {
    /// (key, value) candidates for PUT_VALUE: valid and invalid records of a few keys.
    values: Vec<(Vec<u8>, Vec<u8>)>,
    /// Keys GET_VALUE asks for.
    value_keys: Vec<Vec<u8>>,
}

static POOL: LazyLock<Pool> = LazyLock::new(|| {
    let kps: Vec<Keypair> = (0..2).map(|_| Keypair::generate_ed25519()).collect();
    let mut values = Vec::new();
    let mut value_keys = Vec::new();
    for (i, kp) in kps.iter().enumerate() {
        let (pk_key, pk_value) = pk_record(kp);
        let ipns = ipns_key(kp);
        values.push((pk_key.clone(), pk_value));
        values.push((pk_key.clone(), pk_record(&kps[(i + 1) % kps.len()]).1));
        // Sequences 1..=3, with EOLs before, inside and after the tested time span.
        for (seq, eol) in [
            (1, "2033-05-18T03:33:20Z"),
            (2, "2023-11-15T10:00:00Z"),
            (3, "2033-05-18T03:33:20Z"),
            (3, "2023-11-14T22:00:00Z"),
        ] {
            values.push((ipns.clone(), ipns_v2(kp, seq, eol)));
        }
        values.push((ipns.clone(), b"not a record".to_vec()));
        value_keys.push(pk_key);
        value_keys.push(ipns);
    }
    values.push((b"/foo/bar".to_vec(), b"x".to_vec()));
    values.push((b"nonamespace".to_vec(), b"x".to_vec()));
    value_keys.push(b"/foo/bar".to_vec());
    Pool { values, value_keys }
});

/// Peers that send requests and appear in provider entries: seeds 500 to 507.
const PEERS: u64 = 8;

fn arb_addrs() -> impl Strategy<Value = Vec<Multiaddr>> {
    prop::collection::vec((0u64..6).prop_map(addr), 0..4)
}

fn arb_entry() -> impl Strategy<Value = PeerInfo> {
    (0..PEERS, arb_addrs()).prop_map(|(i, addrs)| PeerInfo::new(peer(500 + i).peer_id, addrs))
}

/// Provider keys: a few fixed ones (so announcements collide), or arbitrary bytes.
fn arb_provider_key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (0u8..3).prop_map(|i| vec![0x12, 0x20, i]),
        1 => prop::collection::vec(any::<u8>(), 0..90),
    ]
}

fn arb_request() -> impl Strategy<Value = Request> {
    let n_values = POOL.values.len();
    let n_keys = POOL.value_keys.len();
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..300).prop_map(|key| Request::FindNode { key }),
        1 => arb_provider_key().prop_map(|key| Request::GetProviders { key }),
        1 => (arb_provider_key(), prop::collection::vec(arb_entry(), 0..4))
            .prop_map(|(key, providers)| Request::AddProvider { key, providers }),
        3 => (0..n_keys).prop_map(|i| Request::GetValue { key: POOL.value_keys[i].clone() }),
        3 => (0..n_values).prop_map(|i| {
            let (key, value) = POOL.values[i].clone();
            Request::PutValue { record: Record::new(key, value) }
        }),
        1 => (prop::collection::vec(any::<u8>(), 0..300), prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(key, value)| Request::PutValue { record: Record::new(key, value) }),
        1 => prop::collection::vec(any::<u8>(), 0..20).prop_map(|key| Request::GetValue { key }),
        1 => Just(Request::Ping),
    ]
}

/// (sender seed offset, is a server, request, seconds since the previous request).
fn arb_steps(max: usize) -> impl Strategy<Value = Vec<(u64, bool, Request, u64)>> {
    prop::collection::vec(
        (
            0..PEERS,
            any::<bool>(),
            arb_request(),
            prop_oneof![3 => 0u64..5, 1 => 0u64..40_000],
        ),
        1..max,
    )
}

#[derive(Default)]
struct Model {
    /// Provider key → peer → addresses it announced for that key.
    providers: HashMap<Vec<u8>, HashMap<PeerId, HashSet<Multiaddr>>>,
    /// Value key → (value, time received) of the last accepted PUT_VALUE.
    values: HashMap<Vec<u8>, (Vec<u8>, u64)>,
}

fn run(kind: &StoreKind, steps: &[(u64, bool, Request, u64)], rate: Option<RateLimit>) {
    let stores = Stores::new(kind);
    let table: Vec<PeerInfo> = (1..=30).map(peer).collect();
    let h = handler(
        &stores,
        &table,
        HandlerConfig::default().with_rate_limit(rate),
    );
    let local = local().peer_id;
    let validator = NamespacedValidator::new();
    let mut model = Model::default();
    let mut now = NOW;
    for (i, (who, is_server, request, dt)) in steps.iter().enumerate() {
        now += dt;
        let from = Sender {
            peer: peer(500 + who),
            is_server: *is_server,
            remote_ip: None,
        };
        let result = h.handle(&from, request.clone(), now);
        let at = format!("step {i}: {request:?} -> {result:?}");

        // The answer's shape.
        match (&result, request) {
            (Ok(None), Request::AddProvider { key, providers }) => {
                let announced = model.providers.entry(key.clone()).or_default();
                let addrs = announced.entry(from.peer.peer_id).or_default();
                for p in providers.iter().filter(|p| p.peer_id == from.peer.peer_id) {
                    addrs.extend(p.addrs.iter().cloned());
                }
                assert!(!addrs.is_empty(), "{at}");
            }
            (Ok(Some(Response::PutValue { record })), Request::PutValue { record: sent }) => {
                assert_eq!(
                    (&record.key, &record.value),
                    (&sent.key, &sent.value),
                    "{at}"
                );
                assert_eq!(
                    validator.validate(&sent.key, &sent.value, now),
                    Ok(()),
                    "{at}"
                );
                model
                    .values
                    .insert(sent.key.clone(), (sent.value.clone(), now));
            }
            (
                Ok(Some(Response::GetValue { key, record, .. })),
                Request::GetValue { key: asked },
            ) => {
                assert_eq!(key, asked, "{at}");
                if let Some(r) = record {
                    assert_eq!(validator.validate(key, &r.value, now), Ok(()), "{at}");
                    assert_eq!(model.values.get(key).map(|v| &v.0), Some(&r.value), "{at}");
                }
            }
            (Ok(Some(Response::GetProviders { providers, .. })), Request::GetProviders { key }) => {
                assert!(providers.len() <= K_VALUE, "{at}");
                for p in providers {
                    let announced = model.providers.get(key).and_then(|m| m.get(&p.peer_id));
                    assert!(announced.is_some(), "{at}");
                }
            }
            (Ok(Some(Response::FindNode { .. })), Request::FindNode { .. }) => {}
            (Ok(Some(Response::Ping)), Request::Ping) => {}
            (Ok(got), _) => panic!("{at}: answer {got:?} does not fit the request"),
            (Err(_), _) => {}
        }
        if let Ok(Some(resp)) = &result {
            let closer = resp.closer_peers();
            assert!(closer.len() <= K_VALUE, "{at}");
            let own_id_asked =
                matches!(request, Request::FindNode { key } if *key == local.to_bytes());
            for p in closer {
                assert_ne!(p.peer_id, from.peer.peer_id, "{at}: the requester");
                assert!(own_id_asked || p.peer_id != local, "{at}: ourselves");
                assert!(!p.addrs.is_empty(), "{at}: a peer without address");
            }
        }

        // The stores agree with the model.
        for (key, announced) in &model.providers {
            let stored = stores
                .providers
                .providers(key, 1000, now)
                .expect("store reads");
            assert!(stored.len() <= 20, "{at}");
            for r in &stored {
                let addrs = announced.get(&r.provider);
                assert!(
                    addrs.is_some(),
                    "{at}: provider {} never announced",
                    r.provider
                );
                let addrs = addrs.into_iter().flatten().collect::<HashSet<_>>();
                assert!(
                    r.addrs.iter().all(|a| addrs.contains(a)),
                    "{at}: address never announced"
                );
            }
        }
        for key in POOL.value_keys.iter().chain(model.values.keys()) {
            let stored = stores.values.get_value(key, now).expect("store reads");
            match (stored, model.values.get(key)) {
                (None, _) => {}
                (Some((r, at_t)), Some((value, t))) => {
                    assert_eq!((&r.value, at_t), (value, *t), "{at}");
                    assert_eq!(validator.validate(key, value, *t), Ok(()), "{at}");
                }
                (Some(r), None) => panic!("{at}: value stored without an accepted PUT: {r:?}"),
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn memory_store_stays_consistent(steps in arb_steps(40)) {
        run(&StoreKind::Memory, &steps, None);
    }

    #[test]
    fn memory_store_with_a_tight_rate_limit(steps in arb_steps(40)) {
        run(&StoreKind::Memory, &steps, Some(RateLimit::new(1, 2)));
    }
}

proptest! {
    // RocksDB opens a database per case: fewer cases.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn rocks_store_stays_consistent(steps in arb_steps(60)) {
        run(&StoreKind::Rocks, &steps, None);
    }
}
