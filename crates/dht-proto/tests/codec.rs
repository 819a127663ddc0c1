//! Wire-compatibility and robustness tests of the codec.
//!
//! Three independent oracles: byte vectors written by hand from `dht.proto`, prost-derived
//! structs of the same schema, and round trips of random messages.
#![allow(clippy::unwrap_used)]

use dht_proto::{
    Codec, CodecError, ConnectionType, MessageType, Multiaddr, PeerId, PeerInfo, Record, Request,
    Response,
    wire::{decode_request_body, decode_response_body, encode_request_body, encode_response_body},
};
use proptest::prelude::*;

// ---- prost mirror of dht.proto (the schema go-libp2p-kad-dht and rust-libp2p use) ----------

#[allow(unreachable_pub)]
mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Record {
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
        #[prost(string, tag = "5")]
        pub time_received: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Peer {
        #[prost(bytes = "vec", tag = "1")]
        pub id: Vec<u8>,
        #[prost(bytes = "vec", repeated, tag = "2")]
        pub addrs: Vec<Vec<u8>>,
        #[prost(int32, tag = "3")]
        pub connection: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Message {
        #[prost(int32, tag = "1")]
        pub r#type: i32,
        #[prost(int32, tag = "10")]
        pub cluster_level_raw: i32,
        #[prost(bytes = "vec", tag = "2")]
        pub key: Vec<u8>,
        #[prost(message, optional, tag = "3")]
        pub record: Option<Record>,
        #[prost(message, repeated, tag = "8")]
        pub closer_peers: Vec<Peer>,
        #[prost(message, repeated, tag = "9")]
        pub provider_peers: Vec<Peer>,
    }
}

fn pb_peer(p: &PeerInfo) -> pb::Peer {
    pb::Peer {
        id: p.peer_id.to_bytes(),
        addrs: p.addrs.iter().map(|a| a.to_vec()).collect(),
        connection: p.connection.as_i32(),
    }
}

fn pb_record(r: &Record) -> pb::Record {
    pb::Record {
        key: r.key.clone(),
        value: r.value.clone(),
        time_received: r.time_received.clone(),
    }
}

fn pb_message(ty: MessageType) -> pb::Message {
    pb::Message {
        r#type: ty.to_wire() as i32,
        ..Default::default()
    }
}

fn pb_of_request(req: &Request) -> pb::Message {
    let mut m = pb_message(req.message_type());
    match req {
        Request::PutValue { record } => {
            m.key = record.key.clone();
            m.record = Some(pb_record(record));
        }
        Request::GetValue { key } | Request::GetProviders { key } | Request::FindNode { key } => {
            m.key = key.clone()
        }
        Request::AddProvider { key, providers } => {
            m.key = key.clone();
            m.provider_peers = providers.iter().map(pb_peer).collect();
        }
        Request::Ping => {}
    }
    m
}

fn pb_of_response(resp: &Response) -> pb::Message {
    let mut m = pb_message(resp.message_type());
    match resp {
        Response::PutValue { record } => {
            m.key = record.key.clone();
            m.record = Some(pb_record(record));
        }
        Response::GetValue {
            key,
            record,
            closer_peers,
        } => {
            m.key = key.clone();
            m.record = record.as_ref().map(pb_record);
            m.closer_peers = closer_peers.iter().map(pb_peer).collect();
        }
        Response::GetProviders {
            key,
            providers,
            closer_peers,
        } => {
            m.key = key.clone();
            m.closer_peers = closer_peers.iter().map(pb_peer).collect();
            m.provider_peers = providers.iter().map(pb_peer).collect();
        }
        Response::FindNode { closer_peers } => {
            m.closer_peers = closer_peers.iter().map(pb_peer).collect();
        }
        Response::Ping => {}
    }
    m
}

// ---- strategies -----------------------------------------------------------------------------

fn arb_peer_id() -> impl Strategy<Value = PeerId> {
    // Identity multihash of a protobuf-encoded ed25519 public key, as real peer ids are.
    any::<[u8; 32]>().prop_map(|k| {
        let mut b = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
        b.extend_from_slice(&k);
        PeerId::from_bytes(&b).unwrap()
    })
}

fn arb_addr() -> impl Strategy<Value = Multiaddr> {
    (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| {
        format!("/ip4/{}.{}.{}.{}/tcp/{port}", ip[0], ip[1], ip[2], ip[3])
            .parse()
            .unwrap()
    })
}

fn arb_conn() -> impl Strategy<Value = ConnectionType> {
    prop_oneof![
        Just(ConnectionType::NotConnected),
        Just(ConnectionType::Connected),
        Just(ConnectionType::CanConnect),
        Just(ConnectionType::CannotConnect),
    ]
}

fn arb_peer() -> impl Strategy<Value = PeerInfo> {
    (
        arb_peer_id(),
        prop::collection::vec(arb_addr(), 0..4),
        arb_conn(),
    )
        .prop_map(|(peer_id, addrs, connection)| PeerInfo {
            peer_id,
            addrs,
            connection,
        })
}

fn arb_peers() -> impl Strategy<Value = Vec<PeerInfo>> {
    prop::collection::vec(arb_peer(), 0..25)
}

fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..100)
}

fn arb_record() -> impl Strategy<Value = Record> {
    (arb_bytes(), arb_bytes(), "[ -~]{0,30}").prop_map(|(key, value, time_received)| Record {
        key,
        value,
        time_received,
    })
}

fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        arb_record().prop_map(|record| Request::PutValue { record }),
        arb_bytes().prop_map(|key| Request::GetValue { key }),
        (arb_bytes(), arb_peers())
            .prop_map(|(key, providers)| Request::AddProvider { key, providers }),
        arb_bytes().prop_map(|key| Request::GetProviders { key }),
        arb_bytes().prop_map(|key| Request::FindNode { key }),
        Just(Request::Ping),
    ]
}

fn arb_response() -> impl Strategy<Value = Response> {
    prop_oneof![
        arb_record().prop_map(|record| Response::PutValue { record }),
        (arb_bytes(), prop::option::of(arb_record()), arb_peers()).prop_map(
            |(key, record, closer_peers)| Response::GetValue {
                key,
                record,
                closer_peers
            }
        ),
        (arb_bytes(), arb_peers(), arb_peers()).prop_map(|(key, providers, closer_peers)| {
            Response::GetProviders {
                key,
                providers,
                closer_peers,
            }
        }),
        arb_peers().prop_map(|closer_peers| Response::FindNode { closer_peers }),
        Just(Response::Ping),
    ]
}

fn body_of_request(req: &Request) -> Vec<u8> {
    let mut b = Vec::new();
    encode_request_body(req, &mut b);
    b
}

fn body_of_response(resp: &Response) -> Vec<u8> {
    let mut b = Vec::new();
    encode_response_body(resp, &mut b);
    b
}

proptest! {
    #[test]
    fn request_round_trip(req in arb_request()) {
        let codec = Codec::default();
        let mut buf = Vec::new();
        codec.encode_request(&req, &mut buf).unwrap();
        let (back, used) = codec.decode_request(&buf).unwrap().unwrap();
        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(back, req);
    }

    #[test]
    fn response_round_trip(resp in arb_response()) {
        let codec = Codec::default();
        let mut buf = Vec::new();
        codec.encode_response(&resp, &mut buf).unwrap();
        let (back, used) = codec.decode_response(&buf).unwrap().unwrap();
        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(back, resp);
    }

    #[test]
    fn requests_are_byte_identical_to_prost(req in arb_request()) {
        use prost::Message as _;
        let ours = body_of_request(&req);
        let theirs = pb_of_request(&req).encode_to_vec();
        prop_assert_eq!(&ours, &theirs);
        prop_assert_eq!(pb::Message::decode(ours.as_slice()).unwrap(), pb_of_request(&req));
        prop_assert_eq!(decode_request_body(&theirs).unwrap(), req);
    }

    #[test]
    fn responses_are_byte_identical_to_prost(resp in arb_response()) {
        use prost::Message as _;
        let ours = body_of_response(&resp);
        let theirs = pb_of_response(&resp).encode_to_vec();
        prop_assert_eq!(&ours, &theirs);
        prop_assert_eq!(decode_response_body(&theirs).unwrap(), resp);
    }

    #[test]
    fn decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let codec = Codec::new(1024);
        let _ = codec.decode_request(&bytes);
        let _ = codec.decode_response(&bytes);
        let _ = decode_request_body(&bytes);
        let _ = decode_response_body(&bytes);
    }

    #[test]
    fn frames_split_anywhere_decode_once_whole(req in arb_request(), cut in any::<prop::sample::Index>()) {
        let codec = Codec::default();
        let mut buf = Vec::new();
        codec.encode_request(&req, &mut buf).unwrap();
        let cut = cut.index(buf.len());
        prop_assert!(codec.decode_request(&buf[..cut]).unwrap().is_none());
    }
}

// ---- byte vectors derived by hand from dht.proto ---------------------------------------------

/// A fixed peer id: identity multihash (0x00, length 0x24) of the protobuf-encoded ed25519
/// public key (`08 01 12 20` + 32 bytes of 0x01).
fn fixed_peer() -> (PeerId, Vec<u8>) {
    let mut id = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
    id.extend_from_slice(&[0x01; 32]);
    (PeerId::from_bytes(&id).unwrap(), id)
}

fn hex(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

#[test]
fn hand_derived_request_vectors() {
    let (peer, id) = fixed_peer();
    let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
    // /ip4 (0x04) 127.0.0.1, /tcp (0x06) port 4001 = 0x0fa1.
    let addr_bytes = hex("04 7f000001 06 0fa1");
    assert_eq!(addr.to_vec(), addr_bytes);

    let mut peer_body = vec![0x0a, 0x26]; // field 1 (id), LEN 38
    peer_body.extend_from_slice(&id);
    peer_body.extend_from_slice(&[0x12, 0x08]); // field 2 (addrs), LEN 8
    peer_body.extend_from_slice(&addr_bytes);
    let mut add_provider = hex("08 02 12 03 6b6579"); // type=ADD_PROVIDER, key="key"
    add_provider.push(0x4a); // field 9 (providerPeers), LEN
    add_provider.push(peer_body.len() as u8);
    add_provider.extend_from_slice(&peer_body);

    let cases: Vec<(Request, Vec<u8>)> = vec![
        (Request::Ping, hex("08 05")),
        (
            Request::FindNode {
                key: b"hello".to_vec(),
            },
            hex("08 04 12 05 68656c6c6f"),
        ),
        (
            Request::GetProviders { key: vec![0xaa] },
            hex("08 03 12 01 aa"),
        ),
        (
            Request::GetValue { key: vec![1, 2] },
            hex("08 01 12 02 0102"),
        ),
        // PUT_VALUE is type 0: proto3 omits it. key, then record{key, value}.
        (
            Request::PutValue {
                record: Record::new(b"k".to_vec(), b"v".to_vec()),
            },
            hex("12 01 6b 1a 06 0a016b 120176"),
        ),
        (
            Request::AddProvider {
                key: b"key".to_vec(),
                providers: vec![PeerInfo::new(peer, vec![addr])],
            },
            add_provider,
        ),
    ];
    for (req, bytes) in cases {
        assert_eq!(body_of_request(&req), bytes, "{req:?}");
        assert_eq!(decode_request_body(&bytes).unwrap(), req);
        // And framed: one varint length byte in front.
        let mut framed = Vec::new();
        Codec::default().encode_request(&req, &mut framed).unwrap();
        assert_eq!(framed[0] as usize, bytes.len());
        assert_eq!(&framed[1..], &bytes[..]);
    }
}

#[test]
fn hand_derived_response_vectors() {
    let (peer, id) = fixed_peer();
    let mut closer = vec![0x42, 0x2a, 0x0a, 0x26]; // field 8, LEN 42; id LEN 38
    closer.extend_from_slice(&id);
    closer.extend_from_slice(&[0x18, 0x01]); // connection = CONNECTED
    let mut find_node = hex("08 04");
    find_node.extend_from_slice(&closer);
    let resp = Response::FindNode {
        closer_peers: vec![PeerInfo {
            peer_id: peer,
            addrs: vec![],
            connection: ConnectionType::Connected,
        }],
    };
    assert_eq!(body_of_response(&resp), find_node);
    assert_eq!(decode_response_body(&find_node).unwrap(), resp);

    let resp = Response::GetValue {
        key: b"k".to_vec(),
        record: Some(Record {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            time_received: "t".to_string(),
        }),
        closer_peers: vec![],
    };
    let bytes = hex("08 01 12 01 6b 1a 09 0a016b 120176 2a0174");
    assert_eq!(body_of_response(&resp), bytes);
    assert_eq!(decode_response_body(&bytes).unwrap(), resp);
}

#[test]
fn unknown_fields_are_skipped() {
    // type=FIND_NODE, an unknown varint field 7, an unknown fixed64 field 6, an unknown fixed32
    // field 11, clusterLevelRaw=3, key="a".
    let bytes = hex("08 04 38 96 01 31 0102030405060708 5d 01020304 50 03 12 01 61");
    assert_eq!(
        decode_request_body(&bytes).unwrap(),
        Request::FindNode { key: b"a".to_vec() }
    );
}

#[test]
fn invalid_peers_and_addresses_are_dropped() {
    let (peer, id) = fixed_peer();
    // Peer 1: a valid id, one garbage address, one valid address. Peer 2: garbage id.
    let mut body = hex("08 04");
    let mut p1 = vec![0x0a, 0x26];
    p1.extend_from_slice(&id);
    p1.extend_from_slice(&hex("12 02 ffff 12 08 047f000001060fa1"));
    body.push(0x42);
    body.push(p1.len() as u8);
    body.extend_from_slice(&p1);
    body.extend_from_slice(&hex("42 04 0a 02 ffff"));
    let resp = decode_response_body(&body).unwrap();
    assert_eq!(
        resp,
        Response::FindNode {
            closer_peers: vec![PeerInfo::new(
                peer,
                vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()]
            )]
        }
    );
}

// ---- decode errors, one row each -------------------------------------------------------------

#[derive(Debug)]
enum Expect {
    Oversized,
    Truncated,
    UnknownType(u64),
    Unexpected(MessageType),
    Malformed(&'static str),
}

fn check_error(got: CodecError, want: &Expect, case: &str) {
    let ok = match (&got, want) {
        (CodecError::Oversized { .. }, Expect::Oversized) => true,
        (CodecError::Truncated, Expect::Truncated) => true,
        (CodecError::UnknownType(a), Expect::UnknownType(b)) => a == b,
        (CodecError::UnexpectedType(a), Expect::Unexpected(b)) => a == b,
        (CodecError::Malformed(a), Expect::Malformed(b)) => a.contains(b),
        _ => false,
    };
    assert!(ok, "{case}: expected {want:?}, got {got:?}");
}

#[test]
fn body_decode_errors() {
    let cases: &[(&str, &str, Expect)] = &[
        ("type 6 is no message type", "08 06", Expect::UnknownType(6)),
        (
            "huge type",
            "08 ffffffff0f",
            Expect::UnknownType(0xffff_ffff),
        ),
        (
            "key length past the end",
            "08 04 12 05 6869",
            Expect::Truncated,
        ),
        ("varint cut short", "08 84", Expect::Truncated),
        ("tag cut short", "08 04 92", Expect::Truncated),
        ("fixed64 cut short", "08 04 31 0102", Expect::Truncated),
        ("record cut short", "1a 05 0a 01", Expect::Truncated),
        (
            "varint of 11 bytes",
            "08 ffffffffffffffffffff01",
            Expect::Malformed("varint"),
        ),
        (
            "varint overflowing 64 bits",
            "08 ffffffffffffffffff7f",
            Expect::Malformed("overflows"),
        ),
        (
            "field number 0",
            "00 01",
            Expect::Malformed("field number 0"),
        ),
        (
            "type sent as bytes",
            "0a 01 04",
            Expect::Malformed("wire type"),
        ),
        (
            "key sent as varint",
            "08 04 10 05",
            Expect::Malformed("wire type"),
        ),
        (
            "start-group wire type",
            "08 04 3b",
            Expect::Malformed("wire type"),
        ),
        (
            "timeReceived not UTF-8",
            "12 01 6b 1a 06 0a016b 2a01ff",
            Expect::Malformed("UTF-8"),
        ),
        (
            "PUT_VALUE without a record",
            "12 01 6b",
            Expect::Malformed("without a record"),
        ),
        (
            "PUT_VALUE with a record for another key",
            "12 01 6b 1a 03 0a016a",
            Expect::Malformed("differs"),
        ),
    ];
    for (case, bytes, want) in cases {
        let err = decode_request_body(&hex(bytes)).expect_err(case);
        check_error(err, want, case);
    }

    let err = decode_response_body(&hex("08 02 12 01 6b")).unwrap_err();
    check_error(
        err,
        &Expect::Unexpected(MessageType::AddProvider),
        "ADD_PROVIDER response",
    );
    let err = decode_response_body(&hex("")).unwrap_err();
    check_error(
        err,
        &Expect::Malformed("without a record"),
        "empty body is a PUT_VALUE without record",
    );
}

#[test]
fn frame_decode_errors() {
    let codec = Codec::new(16);
    // A length prefix above the limit fails before any body byte arrives.
    check_error(
        codec.decode_request(&hex("11")).unwrap_err(),
        &Expect::Oversized,
        "17 > 16",
    );
    check_error(
        codec.decode_request(&hex("ffffffff0f")).unwrap_err(),
        &Expect::Oversized,
        "4 GiB prefix",
    );
    // Incomplete frames are not errors: more bytes may come.
    assert!(codec.decode_request(&hex("")).unwrap().is_none());
    assert!(codec.decode_request(&hex("80")).unwrap().is_none());
    assert!(codec.decode_request(&hex("02 08")).unwrap().is_none());
    // Encoding refuses to produce an oversized frame.
    let big = Request::FindNode { key: vec![0; 17] };
    check_error(
        codec.encode_request(&big, &mut Vec::new()).unwrap_err(),
        &Expect::Oversized,
        "encode oversized",
    );
}

#[test]
fn stream_reads_several_frames_then_clean_eof() {
    futures::executor::block_on(async {
        let codec = Codec::default();
        let reqs = [
            Request::Ping,
            Request::FindNode { key: vec![1; 40] },
            Request::GetProviders { key: vec![2; 34] },
        ];
        let mut wire = Vec::new();
        for r in &reqs {
            codec.write_request(&mut wire, r).await.unwrap();
        }
        let mut io = futures::io::Cursor::new(wire);
        for r in &reqs {
            assert_eq!(codec.read_request(&mut io).await.unwrap().as_ref(), Some(r));
        }
        assert!(codec.read_request(&mut io).await.unwrap().is_none());
    });
}

#[test]
fn stream_errors() {
    futures::executor::block_on(async {
        let codec = Codec::new(8);
        let read = |bytes: &'static str| {
            let mut io = futures::io::Cursor::new(hex(bytes));
            async move { codec.read_request(&mut io).await }
        };
        check_error(read("09").await.unwrap_err(), &Expect::Oversized, "prefix");
        check_error(
            read("05 0804").await.unwrap_err(),
            &Expect::Truncated,
            "body",
        );
        check_error(
            read("85").await.unwrap_err(),
            &Expect::Truncated,
            "prefix cut",
        );
        check_error(
            read("01 08").await.unwrap_err(),
            &Expect::Truncated,
            "field cut",
        );
        let mut io = futures::io::Cursor::new(Vec::new());
        check_error(
            codec.read_response(&mut io).await.unwrap_err(),
            &Expect::Truncated,
            "response expected",
        );
    });
}
