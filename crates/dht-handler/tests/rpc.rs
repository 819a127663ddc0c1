//! Every RPC, table-driven, including each rejection rule, against the in-memory stores and
//! the RocksDB stores. A case is a named list of steps (sender, request, time, expected
//! result); `check` runs it on a fresh handler per store kind.
#![allow(clippy::unwrap_used, clippy::result_large_err)] // handler errors name peers, as the library does

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use dht_handler::{Handler, HandlerConfig, HandlerError, RateLimit, Sender, ValidationError};
use dht_proto::libp2p_identity::Keypair;
use dht_proto::{K_VALUE, Key, MessageType, PeerInfo, Record, Request, Response};
use dht_provider_store::MemoryStore;
use dht_routing_table::{Direction, PeerEvent, RoutingTable, UpdateOutcome};

type Expected = Result<Option<Response>, HandlerError>;

struct Step {
    from: Sender,
    request: Request,
    now: u64,
    expected: Expected,
}

fn step(from: &Sender, request: Request, now: u64, expected: Expected) -> Step {
    Step {
        from: from.clone(),
        request,
        now,
        expected,
    }
}

/// The peers of the routing table: seeds 1 to 40.
fn table_peers() -> Vec<PeerInfo> {
    (1..=40).map(peer).collect()
}

fn srv(seed: u64) -> Sender {
    Sender::server(peer(seed))
}

fn cli(seed: u64) -> Sender {
    Sender::client(peer(seed))
}

/// The k closest of the table's peers and `extra` to `key`, without `exclude`.
fn closest(key: &[u8], extra: &[PeerInfo], exclude: &[&Sender]) -> Vec<PeerInfo> {
    let all: Vec<PeerInfo> = table_peers()
        .into_iter()
        .chain(extra.iter().cloned())
        .filter(|p| exclude.iter().all(|s| s.peer.peer_id != p.peer_id))
        .collect();
    brute_closest(&all, key, K_VALUE)
}

fn check(name: &str, config: HandlerConfig, steps: &[Step]) {
    for kind in &KINDS {
        let stores = Stores::new(kind);
        let h = handler(&stores, &table_peers(), config.clone());
        for (i, s) in steps.iter().enumerate() {
            let got = h.handle(&s.from, s.request.clone(), s.now);
            let at = format!(
                "{name} [{}] step {i} ({})",
                stores.name,
                s.request.message_type()
            );
            match (&got, &s.expected) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{at}"),
                (Err(a), Err(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}"), "{at}"),
                _ => panic!("{at}: got {got:?}, expected {:?}", s.expected),
            }
        }
    }
}

fn find_node(key: &[u8]) -> Request {
    Request::FindNode { key: key.to_vec() }
}

fn found(closer_peers: Vec<PeerInfo>) -> Expected {
    Ok(Some(Response::FindNode { closer_peers }))
}

#[test]
fn find_node_cases() {
    let asker = cli(100);
    let key = b"some target".to_vec();
    let local = local();
    let own_id = local.peer_id.to_bytes();
    let mut own_answer = vec![local.clone()];
    own_answer.extend(
        closest(&own_id, &[], &[&asker])
            .into_iter()
            .take(K_VALUE - 1),
    );
    let in_table = srv(1);
    let newcomer = srv(200);
    let client = cli(201);
    let no_addr = Sender::server(PeerInfo::new(peer(202).peer_id, vec![]));
    let cases: Vec<(&str, Vec<Step>)> = vec![
        (
            "k closest",
            vec![step(
                &asker,
                find_node(&key),
                NOW,
                found(closest(&key, &[], &[])),
            )],
        ),
        (
            "never the requester",
            vec![step(
                &in_table,
                find_node(&in_table.peer.peer_id.to_bytes()),
                NOW,
                found(closest(
                    &in_table.peer.peer_id.to_bytes(),
                    &[],
                    &[&in_table],
                )),
            )],
        ),
        (
            "our own id: ourselves first, as Go",
            vec![step(&asker, find_node(&own_id), NOW, found(own_answer))],
        ),
        (
            "a server sender does not enter the table by sending a request",
            vec![
                step(&newcomer, Request::Ping, NOW, Ok(Some(Response::Ping))),
                step(
                    &asker,
                    find_node(&newcomer.peer.peer_id.to_bytes()),
                    NOW,
                    found(closest(&newcomer.peer.peer_id.to_bytes(), &[], &[])),
                ),
            ],
        ),
        (
            "a client sender does not",
            vec![
                step(&client, Request::Ping, NOW, Ok(Some(Response::Ping))),
                step(
                    &asker,
                    find_node(&client.peer.peer_id.to_bytes()),
                    NOW,
                    found(closest(&client.peer.peer_id.to_bytes(), &[], &[])),
                ),
            ],
        ),
        (
            "peers without addresses are not returned",
            vec![
                step(&no_addr, Request::Ping, NOW, Ok(Some(Response::Ping))),
                step(
                    &asker,
                    find_node(&no_addr.peer.peer_id.to_bytes()),
                    NOW,
                    found(closest(&no_addr.peer.peer_id.to_bytes(), &[], &[])),
                ),
            ],
        ),
        (
            "key of 256 bytes",
            vec![step(
                &asker,
                find_node(&[7; 256]),
                NOW,
                found(closest(&[7; 256], &[], &[])),
            )],
        ),
        (
            "empty key",
            vec![step(
                &asker,
                find_node(b""),
                NOW,
                Err(HandlerError::EmptyKey {
                    rpc: MessageType::FindNode,
                }),
            )],
        ),
        (
            "key of 257 bytes",
            vec![step(
                &asker,
                find_node(&[7; 257]),
                NOW,
                Err(HandlerError::KeyTooLong {
                    rpc: MessageType::FindNode,
                    len: 257,
                    max: 256,
                }),
            )],
        ),
    ];
    for (name, steps) in &cases {
        check(name, HandlerConfig::default(), steps);
    }
    check(
        "k is configurable",
        HandlerConfig::default().with_closer_peers(3),
        &[step(
            &asker,
            find_node(&key),
            NOW,
            found(closest(&key, &[], &[])[..3].to_vec()),
        )],
    );
}

fn add(key: &[u8], providers: Vec<PeerInfo>) -> Request {
    Request::AddProvider {
        key: key.to_vec(),
        providers,
    }
}

fn get_providers(key: &[u8]) -> Request {
    Request::GetProviders { key: key.to_vec() }
}

fn providers_answer(key: &[u8], providers: Vec<PeerInfo>, asker: &Sender) -> Expected {
    Ok(Some(Response::GetProviders {
        key: key.to_vec(),
        providers,
        closer_peers: closest(key, &[], &[asker]),
    }))
}

#[test]
fn provider_cases() {
    let key = b"\x12\x20 a sha256 multihash of content".to_vec();
    let asker = cli(100);
    let p = cli(150); // providers may be clients
    let q = srv(151);
    let stranger = peer(152);
    let p_two_addrs = PeerInfo::new(p.peer.peer_id, vec![addr(150), addr(151)]);
    let p_no_addrs = PeerInfo::new(p.peer.peer_id, vec![]);
    let too_many = PeerInfo::new(p.peer.peer_id, (0..129).map(addr).collect());
    let max_addrs = PeerInfo::new(p.peer.peer_id, (0..128).map(addr).collect());
    let none_stored = || providers_answer(&key, vec![], &asker);
    let p_stored = || providers_answer(&key, vec![p.peer.clone()], &asker);
    let cases: Vec<(&str, Vec<Step>)> = vec![
        (
            "no provider",
            vec![step(&asker, get_providers(&key), NOW, none_stored())],
        ),
        (
            "announce, then find",
            vec![
                step(&p, add(&key, vec![p.peer.clone()]), NOW, Ok(None)),
                step(&asker, get_providers(&key), NOW + 1, p_stored()),
            ],
        ),
        (
            "the requester is not among the closer peers",
            vec![step(
                &srv(2),
                get_providers(&key),
                NOW,
                providers_answer(&key, vec![], &srv(2)),
            )],
        ),
        (
            "addresses dropped after 24 h, the record after 48 h",
            vec![
                step(&p, add(&key, vec![p.peer.clone()]), NOW, Ok(None)),
                step(&asker, get_providers(&key), NOW + 24 * 3600 - 1, p_stored()),
                step(
                    &asker,
                    get_providers(&key),
                    NOW + 24 * 3600,
                    providers_answer(&key, vec![p_no_addrs.clone()], &asker),
                ),
                step(&asker, get_providers(&key), NOW + 48 * 3600, none_stored()),
            ],
        ),
        (
            "only the sender's entries count; its addresses merged once",
            vec![
                step(
                    &p,
                    add(
                        &key,
                        vec![
                            stranger.clone(),
                            p.peer.clone(),
                            p_two_addrs.clone(),
                            p_no_addrs.clone(),
                        ],
                    ),
                    NOW,
                    Ok(None),
                ),
                step(
                    &asker,
                    get_providers(&key),
                    NOW,
                    providers_answer(&key, vec![p_two_addrs.clone()], &asker),
                ),
            ],
        ),
        (
            "an entry of another peer only",
            vec![
                step(
                    &p,
                    add(&key, vec![stranger.clone(), q.peer.clone()]),
                    NOW,
                    Err(HandlerError::ProviderNotSender {
                        provider: stranger.peer_id,
                        sender: p.peer.peer_id,
                    }),
                ),
                step(&asker, get_providers(&key), NOW, none_stored()),
            ],
        ),
        (
            "the sender's entry without address",
            vec![
                step(
                    &p,
                    add(&key, vec![p_no_addrs.clone()]),
                    NOW,
                    Err(HandlerError::NoValidProviderEntries),
                ),
                step(&asker, get_providers(&key), NOW, none_stored()),
            ],
        ),
        (
            "no entry",
            vec![step(
                &p,
                add(&key, vec![]),
                NOW,
                Err(HandlerError::NoValidProviderEntries),
            )],
        ),
        (
            "128 addresses",
            vec![
                step(&p, add(&key, vec![max_addrs.clone()]), NOW, Ok(None)),
                step(
                    &asker,
                    get_providers(&key),
                    NOW,
                    providers_answer(&key, vec![max_addrs.clone()], &asker),
                ),
            ],
        ),
        (
            "129 addresses",
            vec![
                step(
                    &p,
                    add(&key, vec![too_many]),
                    NOW,
                    Err(HandlerError::TooManyAddresses { len: 129, max: 128 }),
                ),
                step(&asker, get_providers(&key), NOW, none_stored()),
            ],
        ),
        (
            "ADD_PROVIDER key of 80 and 81 bytes",
            vec![
                step(&p, add(&[1; 80], vec![p.peer.clone()]), NOW, Ok(None)),
                step(
                    &asker,
                    get_providers(&[1; 80]),
                    NOW,
                    providers_answer(&[1; 80], vec![p.peer.clone()], &asker),
                ),
                step(
                    &p,
                    add(&[1; 81], vec![p.peer.clone()]),
                    NOW,
                    Err(HandlerError::KeyTooLong {
                        rpc: MessageType::AddProvider,
                        len: 81,
                        max: 80,
                    }),
                ),
            ],
        ),
        (
            "GET_PROVIDERS key of 81 bytes",
            vec![step(
                &asker,
                get_providers(&[1; 81]),
                NOW,
                Err(HandlerError::KeyTooLong {
                    rpc: MessageType::GetProviders,
                    len: 81,
                    max: 80,
                }),
            )],
        ),
        (
            "empty keys",
            vec![
                step(
                    &p,
                    add(b"", vec![p.peer.clone()]),
                    NOW,
                    Err(HandlerError::EmptyKey {
                        rpc: MessageType::AddProvider,
                    }),
                ),
                step(
                    &asker,
                    get_providers(b""),
                    NOW,
                    Err(HandlerError::EmptyKey {
                        rpc: MessageType::GetProviders,
                    }),
                ),
            ],
        ),
        (
            "at most 20 providers kept per key (the store's cap), the first ones",
            (1000..1025)
                .map(|s| step(&cli(s), add(&key, vec![peer(s)]), NOW, Ok(None)))
                .chain([step(
                    &asker,
                    get_providers(&key),
                    NOW,
                    providers_answer(&key, sorted_by_id((1000..1020).map(peer).collect()), &asker),
                )])
                .collect(),
        ),
    ];
    for (name, steps) in &cases {
        check(name, HandlerConfig::default(), steps);
    }
    check(
        "providers returned per GET_PROVIDERS is configurable",
        HandlerConfig::default().with_max_providers_returned(3),
        &(1000..1010)
            .map(|s| step(&cli(s), add(&key, vec![peer(s)]), NOW, Ok(None)))
            .chain([step(
                &asker,
                get_providers(&key),
                NOW,
                providers_answer(
                    &key,
                    sorted_by_id((1000..1010).map(peer).collect())[..3].to_vec(),
                    &asker,
                ),
            )])
            .collect::<Vec<_>>(),
    );
}

/// Providers received at the same time are read in peer id byte order.
fn sorted_by_id(mut peers: Vec<PeerInfo>) -> Vec<PeerInfo> {
    peers.sort_by_key(|p| p.peer_id.to_bytes());
    peers
}

fn put(key: &[u8], value: &[u8]) -> Request {
    Request::PutValue {
        record: Record::new(key.to_vec(), value.to_vec()),
    }
}

fn get_value(key: &[u8]) -> Request {
    Request::GetValue { key: key.to_vec() }
}

/// The record as stored at `at` (go-libp2p-kad-dht's `timeReceived` format).
fn stored(key: &[u8], value: &[u8], time_received: &str) -> Record {
    Record {
        key: key.to_vec(),
        value: value.to_vec(),
        time_received: time_received.into(),
    }
}

fn value_answer(key: &[u8], record: Option<Record>, asker: &Sender) -> Expected {
    Ok(Some(Response::GetValue {
        key: key.to_vec(),
        record,
        closer_peers: closest(key, &[], &[asker]),
    }))
}

/// 2023-11-14T22:13:20Z, the formatted `NOW`.
const NOW_RFC3339: &str = "2023-11-14T22:13:20Z";
const LATER_RFC3339: &str = "2023-11-14T22:13:30Z";

#[test]
fn value_cases() {
    let asker = cli(100);
    let putter = cli(101); // a client: not added to the table, so the closer peers stay the table's
    let kp = Keypair::generate_ed25519();
    let (pk_key, pk_value) = pk_record(&kp);
    let (_, other_pk) = pk_record(&Keypair::generate_ed25519());
    let ipns = ipns_key(&kp);
    let eol_soon = "2023-11-14T23:00:00Z"; // NOW + 2,800 s
    let seq1 = ipns_v2(&kp, 1, "2033-05-18T03:33:20Z");
    let seq2 = ipns_v2(&kp, 2, "2033-05-18T03:33:20Z");
    let seq5_soon = ipns_v2(&kp, 5, eol_soon);
    let put_ok = |key: &[u8], value: &[u8], t: &str| {
        Ok(Some(Response::PutValue {
            record: stored(key, value, t),
        }))
    };
    let cases: Vec<(&str, Vec<Step>)> = vec![
        (
            "nothing stored",
            vec![step(
                &asker,
                get_value(&pk_key),
                NOW,
                value_answer(&pk_key, None, &asker),
            )],
        ),
        (
            "/pk/: put, echo, get",
            vec![
                step(
                    &putter,
                    put(&pk_key, &pk_value),
                    NOW,
                    put_ok(&pk_key, &pk_value, NOW_RFC3339),
                ),
                step(
                    &asker,
                    get_value(&pk_key),
                    NOW + 5,
                    value_answer(
                        &pk_key,
                        Some(stored(&pk_key, &pk_value, NOW_RFC3339)),
                        &asker,
                    ),
                ),
            ],
        ),
        (
            "/pk/: a key that is not the value's",
            vec![
                step(
                    &putter,
                    put(&pk_key, &other_pk),
                    NOW,
                    Err(HandlerError::InvalidRecord(ValidationError::KeyMismatch)),
                ),
                step(
                    &asker,
                    get_value(&pk_key),
                    NOW,
                    value_answer(&pk_key, None, &asker),
                ),
            ],
        ),
        (
            "/ipns/: higher sequence replaces",
            vec![
                step(
                    &putter,
                    put(&ipns, &seq1),
                    NOW,
                    put_ok(&ipns, &seq1, NOW_RFC3339),
                ),
                step(
                    &putter,
                    put(&ipns, &seq2),
                    NOW + 10,
                    put_ok(&ipns, &seq2, LATER_RFC3339),
                ),
                step(
                    &asker,
                    get_value(&ipns),
                    NOW + 10,
                    value_answer(&ipns, Some(stored(&ipns, &seq2, LATER_RFC3339)), &asker),
                ),
            ],
        ),
        (
            "/ipns/: lower sequence is refused, the stored one kept",
            vec![
                step(
                    &putter,
                    put(&ipns, &seq2),
                    NOW,
                    put_ok(&ipns, &seq2, NOW_RFC3339),
                ),
                step(
                    &putter,
                    put(&ipns, &seq1),
                    NOW + 10,
                    Err(HandlerError::WorseRecord),
                ),
                step(
                    &asker,
                    get_value(&ipns),
                    NOW + 10,
                    value_answer(&ipns, Some(stored(&ipns, &seq2, NOW_RFC3339)), &asker),
                ),
            ],
        ),
        (
            "/ipns/: the same record again refreshes it",
            vec![
                step(
                    &putter,
                    put(&ipns, &seq1),
                    NOW,
                    put_ok(&ipns, &seq1, NOW_RFC3339),
                ),
                step(
                    &putter,
                    put(&ipns, &seq1),
                    NOW + 10,
                    put_ok(&ipns, &seq1, LATER_RFC3339),
                ),
            ],
        ),
        (
            "/ipns/: re-validated on read, not served past its EOL",
            vec![
                step(
                    &putter,
                    put(&ipns, &seq5_soon),
                    NOW,
                    put_ok(&ipns, &seq5_soon, NOW_RFC3339),
                ),
                step(
                    &asker,
                    get_value(&ipns),
                    NOW + 2800,
                    value_answer(&ipns, Some(stored(&ipns, &seq5_soon, NOW_RFC3339)), &asker),
                ),
                step(
                    &asker,
                    get_value(&ipns),
                    NOW + 2801,
                    value_answer(&ipns, None, &asker),
                ),
                // An expired stored record no longer blocks a lower sequence.
                step(
                    &putter,
                    put(&ipns, &seq1),
                    NOW + 2801,
                    put_ok(&ipns, &seq1, "2023-11-14T23:00:01Z"),
                ),
            ],
        ),
        (
            "/ipns/: expired on arrival",
            vec![step(
                &putter,
                put(&ipns, &seq5_soon),
                NOW + 2801,
                Err(HandlerError::InvalidRecord(ValidationError::Expired)),
            )],
        ),
        (
            "values expire from the store after 48 h",
            vec![
                step(
                    &putter,
                    put(&pk_key, &pk_value),
                    NOW,
                    put_ok(&pk_key, &pk_value, NOW_RFC3339),
                ),
                step(
                    &asker,
                    get_value(&pk_key),
                    NOW + 48 * 3600,
                    value_answer(&pk_key, None, &asker),
                ),
            ],
        ),
        (
            "unknown namespace",
            vec![
                step(
                    &putter,
                    put(b"/foo/bar", b"v"),
                    NOW,
                    Err(HandlerError::UnknownNamespace {
                        namespace: "foo".into(),
                    }),
                ),
                step(
                    &asker,
                    get_value(b"/foo/bar"),
                    NOW,
                    value_answer(b"/foo/bar", None, &asker),
                ),
            ],
        ),
        (
            "no namespace",
            vec![step(
                &putter,
                put(b"foo", b"v"),
                NOW,
                Err(HandlerError::InvalidRecord(ValidationError::NoNamespace)),
            )],
        ),
        (
            "value of 10 KiB + 1",
            vec![step(
                &putter,
                put(&ipns, &vec![0; 10 * 1024 + 1]),
                NOW,
                Err(HandlerError::ValueTooLarge {
                    len: 10 * 1024 + 1,
                    max: 10 * 1024,
                }),
            )],
        ),
        (
            "empty and long keys",
            vec![
                step(
                    &putter,
                    put(b"", &pk_value),
                    NOW,
                    Err(HandlerError::EmptyKey {
                        rpc: MessageType::PutValue,
                    }),
                ),
                step(
                    &asker,
                    get_value(b""),
                    NOW,
                    Err(HandlerError::EmptyKey {
                        rpc: MessageType::GetValue,
                    }),
                ),
                step(
                    &putter,
                    put(&[b'/'; 257], &pk_value),
                    NOW,
                    Err(HandlerError::KeyTooLong {
                        rpc: MessageType::PutValue,
                        len: 257,
                        max: 256,
                    }),
                ),
                step(
                    &asker,
                    get_value(&[b'/'; 257]),
                    NOW,
                    Err(HandlerError::KeyTooLong {
                        rpc: MessageType::GetValue,
                        len: 257,
                        max: 256,
                    }),
                ),
            ],
        ),
    ];
    for (name, steps) in &cases {
        check(name, HandlerConfig::default(), steps);
    }
    check(
        "value size is configurable",
        HandlerConfig::default().with_max_value_size(10),
        &[step(
            &putter,
            put(&pk_key, &pk_value),
            NOW,
            Err(HandlerError::ValueTooLarge {
                len: pk_value.len(),
                max: 10,
            }),
        )],
    );
}

#[test]
fn ping_and_rate_limit_cases() {
    let a = srv(100);
    let b = cli(101);
    let pong = || Ok(Some(Response::Ping));
    let limited = |s: &Sender| {
        Err(HandlerError::RateLimited {
            peer: s.peer.peer_id,
        })
    };
    check(
        "ping",
        HandlerConfig::default(),
        &[step(&a, Request::Ping, NOW, pong())],
    );
    check(
        "2 per second, bursts of 3, per peer",
        HandlerConfig::default().with_rate_limit(Some(RateLimit::new(2, 3))),
        &[
            step(&a, Request::Ping, NOW, pong()),
            step(&a, find_node(b"x"), NOW, found(closest(b"x", &[], &[&a]))),
            step(&a, Request::Ping, NOW, pong()),
            step(&a, Request::Ping, NOW, limited(&a)),
            step(&a, add(b"k", vec![a.peer.clone()]), NOW, limited(&a)),
            step(&b, Request::Ping, NOW, pong()),
            step(&a, Request::Ping, NOW + 1, pong()),
            step(&a, Request::Ping, NOW + 1, pong()),
            step(&a, Request::Ping, NOW + 1, limited(&a)),
            step(&a, Request::Ping, NOW + 60, pong()),
        ],
    );
    check(
        "no limit",
        HandlerConfig::default().with_rate_limit(None),
        &(0..100)
            .map(|_| step(&a, Request::Ping, NOW, pong()))
            .collect::<Vec<_>>(),
    );
}

/// A routing table that records what it is told.
#[derive(Default)]
struct Recorder {
    seen: AtomicUsize,
    other: AtomicUsize,
}

impl RoutingTable for Recorder {
    fn closest_peers(&self, _key: &Key, _n: usize) -> Vec<PeerInfo> {
        Vec::new()
    }
    fn update(&self, _peer: &PeerInfo, event: PeerEvent) -> UpdateOutcome {
        match event {
            PeerEvent::Seen(Direction::Inbound) => self.seen.fetch_add(1, Ordering::SeqCst),
            _ => self.other.fetch_add(1, Ordering::SeqCst),
        };
        UpdateOutcome::Updated
    }
    fn len(&self) -> usize {
        0
    }
}

#[test]
fn every_request_of_a_server_is_reported_seen_inbound() {
    let store = Arc::new(MemoryStore::new());
    let table = Arc::new(Recorder::default());
    let h = Handler::new(
        local(),
        table.clone(),
        store.clone(),
        store,
        HandlerConfig::default().with_rate_limit(Some(RateLimit::new(1, 7))),
    )
    .expect("valid settings");
    let server = srv(1);
    let requests = [
        Request::Ping,
        find_node(b"k"),
        get_providers(b"k"),
        add(b"k", vec![server.peer.clone()]),
        get_value(b"/pk/k"),
        put(b"/pk/k", b"v"), // refused as invalid: still seen, as Go
        find_node(b""),      // refused: still seen
    ];
    for r in requests {
        let _ = h.handle(&server, r, NOW);
    }
    assert_eq!(table.seen.load(Ordering::SeqCst), 7);
    // A rate-limited request is not reported.
    let _ = h.handle(&server, Request::Ping, NOW);
    assert_eq!(table.seen.load(Ordering::SeqCst), 7);
    // Clients are never reported.
    for _ in 0..3 {
        let _ = h.handle(&cli(2), Request::Ping, NOW);
    }
    assert_eq!(table.seen.load(Ordering::SeqCst), 7);
    assert_eq!(table.other.load(Ordering::SeqCst), 0);
}

#[test]
fn local_addresses_can_change() {
    let stores = Stores::new(&StoreKind::Memory);
    let h = handler(&stores, &table_peers(), HandlerConfig::default());
    let own = local().peer_id.to_bytes();
    let asker = cli(100);
    h.set_local_addrs(vec![]);
    // Without an address of ours, we do not offer ourselves.
    assert_eq!(
        h.handle(&asker, find_node(&own), NOW).ok().flatten(),
        found(closest(&own, &[], &[])).ok().flatten()
    );
    h.set_local_addrs(vec![addr(9999)]);
    let Ok(Some(Response::FindNode { closer_peers })) = h.handle(&asker, find_node(&own), NOW)
    else {
        panic!("FIND_NODE answered");
    };
    assert_eq!(
        closer_peers.first(),
        Some(&PeerInfo::new(local().peer_id, vec![addr(9999)]))
    );
    assert_eq!(closer_peers.len(), K_VALUE);
    // We never offer ourselves to ourselves.
    let me = Sender::server(local());
    let Ok(Some(Response::FindNode { closer_peers })) = h.handle(&me, find_node(&own), NOW) else {
        panic!("FIND_NODE answered");
    };
    assert!(closer_peers.iter().all(|p| p.peer_id != local().peer_id));
}

/// `/dns4/<name of about len bytes>/tcp/4001`, distinct per `i`.
fn dns_addr(i: usize, len: usize) -> dht_proto::Multiaddr {
    let name = format!("{i:04}{}", "a".repeat(len.saturating_sub(12)));
    format!("/dns4/{name}/tcp/4001").parse().unwrap()
}

#[test]
fn provider_records_are_bounded_in_bytes() {
    use dht_proto::multiaddr::Protocol;
    let key = b"\x12\x20 a provider key of some bytes".to_vec();
    for kind in &KINDS {
        let stores = Stores::new(kind);
        let h = handler(&stores, &table_peers(), HandlerConfig::default());
        let asker = cli(99);

        // Addresses no one can dial, or longer than 256 bytes, are dropped.
        let p = srv(50);
        let good = addr(50);
        let sent = vec![
            "/ip4/0.0.0.0/tcp/4001".parse().unwrap(),
            dht_proto::Multiaddr::empty().with(Protocol::Unix("tmp/socket".into())),
            "/memory/7".parse().unwrap(),
            dns_addr(0, 300),
            good.clone(),
            "/ip6/::/tcp/4001".parse().unwrap(),
        ];
        let entry = PeerInfo::new(p.peer.peer_id, sent);
        assert_eq!(h.handle(&p, add(&key, vec![entry]), NOW).unwrap(), None);
        let got = h.handle(&asker, get_providers(&key), NOW).unwrap();
        let Some(Response::GetProviders { providers, .. }) = got else {
            panic!("{got:?}");
        };
        assert_eq!(
            providers,
            vec![PeerInfo::new(p.peer.peer_id, vec![good])],
            "{}",
            stores.name
        );

        // 100 addresses of 200 bytes (20 KB): the first ones within 4,096 bytes are kept.
        let q = srv(51);
        let many: Vec<_> = (0..100).map(|i| dns_addr(i, 200)).collect();
        let each = many[0].as_ref().len();
        let key2 = b"\x12\x20 another provider key .......".to_vec();
        let entry = PeerInfo::new(q.peer.peer_id, many.clone());
        assert_eq!(h.handle(&q, add(&key2, vec![entry]), NOW).unwrap(), None);
        let got = h.handle(&asker, get_providers(&key2), NOW).unwrap();
        let Some(Response::GetProviders { providers, .. }) = got else {
            panic!("{got:?}");
        };
        assert_eq!(providers.len(), 1);
        assert_eq!(
            providers[0].addrs,
            many[..4096 / each].to_vec(),
            "{}",
            stores.name
        );
    }
}

#[test]
fn get_providers_fits_a_message_whatever_the_store_holds() {
    // Records written past the handler (an older version, another writer): 20 providers of
    // 128 addresses of 2,000 bytes, 5 MB in all.
    let key = b"\x12\x20 a censored provider key .....".to_vec();
    for kind in &KINDS {
        let stores = Stores::new(kind);
        let records: Vec<_> = (0..20u64)
            .map(|i| dht_proto::ProviderRecord {
                key: key.clone(),
                provider: peer(200 + i).peer_id,
                addrs: (0..128).map(|j| dns_addr(j, 2000)).collect(),
                received_at: NOW,
            })
            .collect();
        stores.providers.add_providers(&records).unwrap();
        let h = handler(&stores, &table_peers(), HandlerConfig::default());
        let got = h.handle(&cli(99), get_providers(&key), NOW + 1).unwrap();
        let Some(resp @ Response::GetProviders { .. }) = got else {
            panic!("{got:?}");
        };
        let Response::GetProviders { providers, .. } = &resp else {
            unreachable!()
        };
        assert_eq!(providers.len(), 20, "{}", stores.name);
        let mut frame = Vec::new();
        dht_proto::Codec::default()
            .encode_response(&resp, &mut frame)
            .unwrap_or_else(|e| panic!("{}: the answer does not encode: {e}", stores.name));
    }
}

#[test]
fn an_inbound_add_provider_is_not_fsynced() {
    // ADD_PROVIDER has no response: nothing is acknowledged, so nothing waits for a disk
    // flush, even on a store that syncs what it acknowledges.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        dht_provider_store::RocksStore::open(
            dir.path(),
            dht_provider_store::Config::small()
                .with_sync_writes(true)
                .with_statistics(true),
        )
        .unwrap(),
    );
    let stores = Stores {
        name: "rocksdb with fsync",
        providers: store.clone(),
        values: store.clone(),
        _dir: None,
    };
    let h = handler(&stores, &table_peers(), HandlerConfig::default());
    let base = store.wal_syncs().unwrap();
    for i in 0..10 {
        let p = srv(300 + i);
        let key = format!("provider key {i} .................").into_bytes();
        assert_eq!(
            h.handle(&p, add(&key, vec![p.peer.clone()]), NOW).unwrap(),
            None
        );
    }
    assert_eq!(store.wal_syncs(), Some(base));
    // A PUT_VALUE is answered, so it is synced.
    let (key, value) = pk_record(&Keypair::generate_ed25519());
    h.handle(&cli(99), put(&key, &value), NOW).unwrap();
    assert!(store.wal_syncs().unwrap() > base);
}

#[test]
fn squatters_from_one_network_cannot_lock_a_provider_out() {
    // 20 fresh peer ids from one IP take every slot of a key (the cap is 20), re-announcing;
    // an honest provider from another network is still stored and served.
    let squatter_ip: std::net::IpAddr = "198.51.100.7".parse().unwrap();
    let honest_ip: std::net::IpAddr = "203.0.113.9".parse().unwrap();
    let key = b"\x12\x20a CID twenty squatters want....".to_vec();
    for kind in &KINDS {
        let stores = Stores::new(kind);
        let h = handler(&stores, &table_peers(), HandlerConfig::default());
        let squatters: Vec<Sender> = (0..20).map(|i| srv(600 + i).from_ip(squatter_ip)).collect();
        for round in 0..2 {
            for (i, s) in squatters.iter().enumerate() {
                let at = NOW + round * 3600 + i as u64;
                h.handle(s, add(&key, vec![s.peer.clone()]), at).unwrap();
            }
        }
        let honest = srv(700).from_ip(honest_ip);
        h.handle(&honest, add(&key, vec![honest.peer.clone()]), NOW + 7200)
            .unwrap();
        // The squatters keep re-announcing after it.
        for (i, s) in squatters.iter().enumerate() {
            h.handle(s, add(&key, vec![s.peer.clone()]), NOW + 7300 + i as u64)
                .unwrap();
        }
        let Some(Response::GetProviders { providers, .. }) = h
            .handle(
                &cli(99),
                Request::GetProviders { key: key.clone() },
                NOW + 7400,
            )
            .unwrap()
        else {
            panic!("GET_PROVIDERS is answered");
        };
        assert_eq!(providers.len(), 20, "[{}]", stores.name);
        assert!(
            providers.iter().any(|p| p.peer_id == honest.peer.peer_id),
            "[{}] the honest provider is not listed",
            stores.name
        );
    }
}

#[test]
fn fresh_peer_ids_from_one_ip_share_one_rate_budget() {
    let config = HandlerConfig::default()
        .with_rate_limit(Some(RateLimit::new(1, 5)))
        .with_ip_rate_limit(Some(RateLimit::new(1, 8)));
    let one_ip: std::net::IpAddr = "198.51.100.7".parse().unwrap();
    // Another address of the same IPv6 /56 counts as the same IP.
    let v6: std::net::IpAddr = "2001:db8:aa:bb01::1".parse().unwrap();
    let v6_same: std::net::IpAddr = "2001:db8:aa:bbff::2".parse().unwrap();
    for kind in &KINDS {
        let stores = Stores::new(kind);
        let h = handler(&stores, &table_peers(), config.clone());
        // 20 fresh ids, 1 request each: each is within its own budget, the IP's runs out.
        let allowed = (0..20)
            .filter(|i| {
                let s = cli(800 + i).from_ip(one_ip);
                h.handle(&s, find_node(b"k"), NOW).is_ok()
            })
            .count();
        assert_eq!(allowed, 8, "[{}]", stores.name);
        let refused = h.handle(&cli(900).from_ip(one_ip), find_node(b"k"), NOW);
        assert!(
            matches!(refused, Err(HandlerError::IpRateLimited { ip }) if ip == one_ip),
            "{refused:?}"
        );
        // Another IP has its own budget; a second later the first earns one more token.
        assert!(
            h.handle(&cli(901).from_ip(v6), find_node(b"k"), NOW)
                .is_ok()
        );
        assert!(
            h.handle(&cli(902).from_ip(one_ip), find_node(b"k"), NOW + 1)
                .is_ok()
        );
        let six = (0..10)
            .filter(|i| {
                let s = cli(910 + i).from_ip(v6_same);
                h.handle(&s, find_node(b"k"), NOW).is_ok()
            })
            .count();
        assert_eq!(six, 7, "[{}] the /56 shares one budget", stores.name);
        // Loopback is exempt unless asked; senders without an IP are limited per peer only.
        let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let from_lo = (0..20)
            .filter(|i| {
                let s = cli(950 + i).from_ip(lo);
                h.handle(&s, find_node(b"k"), NOW).is_ok()
            })
            .count();
        assert_eq!(from_lo, 20, "[{}]", stores.name);
    }
    let stores = Stores::new(&KINDS[0]);
    let h = handler(
        &stores,
        &table_peers(),
        config.with_rate_limit_loopback(true),
    );
    let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let from_lo = (0..20)
        .filter(|i| {
            h.handle(&cli(950 + i).from_ip(lo), find_node(b"k"), NOW)
                .is_ok()
        })
        .count();
    assert_eq!(from_lo, 8);
}

#[test]
fn answers_carry_public_addresses_only_when_asked() {
    // The table's peers are all at 10.x addresses (private).
    for kind in &KINDS {
        let stores = Stores::new(kind);
        let lan = handler(&stores, &table_peers(), HandlerConfig::default());
        let Some(Response::FindNode { closer_peers }) =
            lan.handle(&cli(99), find_node(b"k"), NOW).unwrap()
        else {
            panic!("FIND_NODE is answered");
        };
        assert_eq!(closer_peers.len(), K_VALUE, "[{}]", stores.name);
        let stores = Stores::new(kind);
        let wan = handler(
            &stores,
            &table_peers(),
            HandlerConfig::default().with_public_addrs_only(true),
        );
        let Some(Response::FindNode { closer_peers }) =
            wan.handle(&cli(99), find_node(b"k"), NOW).unwrap()
        else {
            panic!("FIND_NODE is answered");
        };
        assert!(
            closer_peers.is_empty(),
            "[{}] {closer_peers:?}",
            stores.name
        );
    }
}
