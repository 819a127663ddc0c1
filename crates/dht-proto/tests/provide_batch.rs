//! The batched provide protocol's codec (`docs/specs/provide-batch.md`): the spec's vectors in
//! both directions, prost-derived structs of the spec's schema as a second oracle, and the
//! refusal cases of the spec's limits.
#![allow(clippy::unwrap_used)]

use dht_proto::batch::{
    Allowance, BatchCodec, BatchCodecError, BatchError, KeyStatus, MAX_BATCH_KEY_LEN,
    MAX_BATCH_KEYS, MAX_BATCH_MESSAGE_SIZE, ProvideBatch, ProvideBatchResponse,
    encode_request_body, encode_response_body, run_prefix,
};
use dht_proto::{Multiaddr, PeerId, PeerInfo};
use proptest::prelude::*;

#[allow(unreachable_pub)]
mod pb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Peer {
        #[prost(bytes = "vec", tag = "1")]
        pub id: Vec<u8>,
        #[prost(bytes = "vec", repeated, tag = "2")]
        pub addrs: Vec<Vec<u8>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ProvideBatch {
        #[prost(message, optional, tag = "1")]
        pub provider: Option<Peer>,
        #[prost(bytes = "vec", repeated, tag = "2")]
        pub keys: Vec<Vec<u8>>,
        #[prost(message, repeated, tag = "3")]
        pub runs: Vec<KeyRun>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyRun {
        #[prost(bytes = "vec", tag = "1")]
        pub prefix: Vec<u8>,
        #[prost(uint32, tag = "2")]
        pub suffix_len: u32,
        #[prost(bytes = "vec", tag = "3")]
        pub suffixes: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ProvideBatchResponse {
        #[prost(int32, repeated, packed = "true", tag = "1")]
        pub statuses: Vec<i32>,
        #[prost(int32, tag = "2")]
        pub error: i32,
        #[prost(message, optional, tag = "3")]
        pub allowance: Option<Allowance>,
        #[prost(uint32, tag = "4")]
        pub stored_first: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Allowance {
        #[prost(uint32, tag = "1")]
        pub keys: u32,
        #[prost(uint32, tag = "2")]
        pub per_second: u32,
        #[prost(uint32, tag = "3")]
        pub burst: u32,
    }
}

/// The spec's peer id: the sha2-256 multihash of 32 bytes 0x01.
const PEER_HEX: &str = "12200101010101010101010101010101010101010101010101010101010101010101";
/// `/ip4/127.0.0.1/tcp/4001`.
const ADDR_HEX: &str = "047f000001060fa1";

fn spec_peer() -> PeerInfo {
    PeerInfo::new(
        PeerId::from_bytes(&hex::decode(PEER_HEX).unwrap()).unwrap(),
        vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
    )
}

/// The spec's vectors: (name, body hex, framed hex).
fn request_vector() -> (ProvideBatch, &'static str, &'static str) {
    (
        ProvideBatch {
            provider: spec_peer(),
            keys: vec![b"k1".to_vec(), b"k2".to_vec()],
        },
        "0a2e0a22122001010101010101010101010101010101010101010101010101010101010101011208047f000001060fa112026b3112026b32",
        "380a2e0a22122001010101010101010101010101010101010101010101010101010101010101011208047f000001060fa112026b3112026b32",
    )
}

/// The spec's vector 1b: keys of one length sharing a prefix, packed as one run.
fn run_vector() -> (ProvideBatch, &'static str, &'static str) {
    (
        ProvideBatch {
            provider: spec_peer(),
            keys: vec![
                b"k01".to_vec(),
                b"k02".to_vec(),
                b"k03".to_vec(),
                b"k04".to_vec(),
            ],
        },
        "0a2e0a22122001010101010101010101010101010101010101010101010101010101010101011208047f000001060fa11a0c0a026b3010011a0431323334",
        "3e0a2e0a22122001010101010101010101010101010101010101010101010101010101010101011208047f000001060fa11a0c0a026b3010011a0431323334",
    )
}

fn response_vectors() -> Vec<(ProvideBatchResponse, &'static str, &'static str)> {
    vec![
        (
            ProvideBatchResponse::answered(vec![
                KeyStatus::Stored,
                KeyStatus::Full,
                KeyStatus::Stored,
            ]),
            "0a0201002001",
            "060a0201002001",
        ),
        (
            ProvideBatchResponse::answered(vec![KeyStatus::Stored; 3]),
            "2003",
            "022003",
        ),
        (
            ProvideBatchResponse::answered(vec![KeyStatus::Stored; 2]).with_allowance(Some(
                Allowance {
                    keys: 998,
                    per_second: 1000,
                    burst: 10_000,
                },
            )),
            "1a0908e60710e80718904e2002",
            "0d1a0908e60710e80718904e2002",
        ),
        (
            ProvideBatchResponse::refused(BatchError::RateLimited).with_allowance(Some(
                Allowance {
                    keys: 0,
                    per_second: 1000,
                    burst: 10_000,
                },
            )),
            "10031a0610e80718904e",
            "0a10031a0610e80718904e",
        ),
        (
            ProvideBatchResponse::refused(BatchError::ProviderNotSender),
            "1001",
            "021001",
        ),
        (
            ProvideBatchResponse::refused(BatchError::Unavailable),
            "1004",
            "021004",
        ),
    ]
}

#[test]
fn the_spec_vectors_hold_the_spec_peer_and_address() {
    assert_eq!(
        spec_peer().addrs[0].to_vec(),
        hex::decode(ADDR_HEX).unwrap()
    );
    let (batch, body, _) = request_vector();
    assert!(body.contains(PEER_HEX) && body.contains(ADDR_HEX));
    assert_eq!(batch.keys.len(), 2);
}

#[test]
fn request_vector_both_ways() {
    for (batch, body, framed) in [request_vector(), run_vector()] {
        request_vector_holds(batch, body, framed);
    }
}

fn request_vector_holds(batch: ProvideBatch, body: &str, framed: &str) {
    let codec = BatchCodec::default();
    let mut ours = Vec::new();
    encode_request_body(&batch, &mut ours);
    assert_eq!(hex::encode(&ours), body);
    let mut frame = Vec::new();
    codec.encode_request(&batch, &mut frame).unwrap();
    assert_eq!(hex::encode(&frame), framed);

    let bytes = hex::decode(framed).unwrap();
    let (decoded, used) = codec.decode_request(&bytes).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!(decoded, batch);
    assert_eq!(
        codec
            .decode_request_body(&hex::decode(body).unwrap())
            .unwrap(),
        batch
    );
}

#[test]
fn response_vectors_both_ways() {
    let codec = BatchCodec::default();
    for (resp, body, framed) in response_vectors() {
        let mut ours = Vec::new();
        encode_response_body(&resp, &mut ours);
        assert_eq!(hex::encode(&ours), body, "{resp:?}");
        let mut frame = Vec::new();
        codec.encode_response(&resp, &mut frame).unwrap();
        assert_eq!(hex::encode(&frame), framed, "{resp:?}");
        let bytes = hex::decode(framed).unwrap();
        let (decoded, used) = codec.decode_response(&bytes).unwrap().unwrap();
        assert_eq!((decoded, used), (resp, bytes.len()));
    }
}

#[test]
fn unpacked_statuses_and_unknown_values_decode() {
    let codec = BatchCodec::default();
    // Statuses unpacked (one varint field each), an unknown status 9, an unknown field 7.
    let resp = codec
        .decode_response_body(&hex::decode("080008020809380a").unwrap())
        .unwrap();
    assert_eq!(
        resp.statuses,
        vec![
            KeyStatus::Stored,
            KeyStatus::InvalidKey,
            KeyStatus::Unknown(9)
        ]
    );
    assert!(!resp.statuses[2].is_stored());
    assert_eq!(resp.error, None);
    // An unknown batch error.
    let resp = codec
        .decode_response_body(&hex::decode("1063").unwrap())
        .unwrap();
    assert_eq!(resp.error, Some(BatchError::Unknown(99)));
    assert!(resp.answers(5));
    assert!(!ProvideBatchResponse::default().answers(1));
}

fn batch_of(keys: Vec<Vec<u8>>) -> ProvideBatch {
    ProvideBatch {
        provider: spec_peer(),
        keys,
    }
}

fn body(batch: &ProvideBatch) -> Vec<u8> {
    let mut b = Vec::new();
    encode_request_body(batch, &mut b);
    b
}

#[test]
fn too_many_keys_are_refused_both_ways() {
    let codec = BatchCodec::default();
    let keys: Vec<Vec<u8>> = (0..=MAX_BATCH_KEYS as u32)
        .map(|i| i.to_be_bytes().to_vec())
        .collect();
    let over = batch_of(keys.clone());
    assert!(matches!(
        codec.decode_request_body(&body(&over)),
        Err(BatchCodecError::TooManyKeys { len, max }) if len == MAX_BATCH_KEYS + 1 && max == MAX_BATCH_KEYS
    ));
    assert!(matches!(
        codec.encode_request(&over, &mut Vec::new()),
        Err(BatchCodecError::TooManyKeys { .. })
    ));
    // Exactly the limit is taken.
    let full = batch_of(keys[..MAX_BATCH_KEYS].to_vec());
    assert_eq!(codec.decode_request_body(&body(&full)).unwrap(), full);
    // A server taking fewer refuses beyond its own limit.
    let small = BatchCodec::default().with_max_keys(10);
    assert!(matches!(
        small.decode_request_body(&body(&batch_of(keys[..11].to_vec()))),
        Err(BatchCodecError::TooManyKeys { len: 11, max: 10 })
    ));
    // An answer with more statuses than the limit.
    let mut statuses = Vec::new();
    encode_response_body(
        &ProvideBatchResponse::answered(vec![KeyStatus::Stored; 11]),
        &mut statuses,
    );
    assert!(matches!(
        small.decode_response_body(&statuses),
        Err(BatchCodecError::TooManyKeys { .. })
    ));
}

/// Runs that break the limits are malformed, as listed keys are.
#[test]
fn bad_runs_are_refused() {
    let codec = BatchCodec::default();
    let peer = "0a2e0a22122001010101010101010101010101010101010101010101010101010101010101011208047f000001060fa1";
    let decode = |run: &str| {
        let len = hex::decode(run).unwrap().len();
        codec.decode_request_body(&hex::decode(format!("{peer}1a{len:02x}{run}")).unwrap())
    };
    // The vector's run decodes.
    assert_eq!(decode("0a026b3010011a0431323334").unwrap().keys.len(), 4);
    // No suffix length, a suffix length of 0, suffixes not a whole number of keys.
    for run in [
        "0a026b301a0431323334",
        "0a026b3010001a0431323334",
        "0a026b3010031a0431323334",
    ] {
        assert!(
            matches!(decode(run), Err(BatchCodecError::Malformed(_))),
            "{run}: {:?}",
            decode(run)
        );
    }
    // A key over 80 bytes: a prefix of 2 and a suffix length of 79.
    let suffixes = "00".repeat(79);
    let run = format!("0a026b30104f1a4f{suffixes}");
    assert!(matches!(
        decode(&run),
        Err(BatchCodecError::KeyTooLong { len: 81, .. })
    ));
    // Listed keys and a run together: one batch, in wire order.
    let both = format!("{peer}12026b311a0c0a026b3010011a0431323334");
    let batch = codec
        .decode_request_body(&hex::decode(both).unwrap())
        .unwrap();
    assert_eq!(
        batch.keys,
        vec![
            b"k1".to_vec(),
            b"k01".to_vec(),
            b"k02".to_vec(),
            b"k03".to_vec(),
            b"k04".to_vec()
        ]
    );
}

#[test]
fn oversize_frames_are_refused_from_the_prefix() {
    let codec = BatchCodec::default();
    let mut prefix = Vec::new();
    // A varint of MAX + 1, and nothing after it: refused before the body arrives.
    let mut v = MAX_BATCH_MESSAGE_SIZE as u64 + 1;
    while v >= 0x80 {
        prefix.push((v as u8) | 0x80);
        v >>= 7;
    }
    prefix.push(v as u8);
    assert_eq!(hex::encode(&prefix), "818040", "the spec's vector");
    assert!(matches!(
        codec.decode_request(&prefix),
        Err(BatchCodecError::Oversized { .. })
    ));
    assert!(matches!(
        codec.decode_response(&prefix),
        Err(BatchCodecError::Oversized { .. })
    ));
    let mut io = futures::io::Cursor::new(prefix);
    assert!(matches!(
        futures::executor::block_on(codec.read_request(&mut io)),
        Err(BatchCodecError::Oversized { .. })
    ));
    // The encoder refuses a body over the limit: 8,192 keys of 80 bytes, and an address list
    // of 8,000 addresses make more than 1 MiB.
    let mut big = batch_of(
        (0..MAX_BATCH_KEYS as u32)
            .map(|i| {
                let mut k = vec![7u8; MAX_BATCH_KEY_LEN];
                k[..4].copy_from_slice(&i.to_be_bytes());
                k
            })
            .collect(),
    );
    let addr: Multiaddr = "/dns4/a-rather-long-host-name-of-the-provider.example.org/tcp/4001"
        .parse()
        .unwrap();
    big.provider.addrs = vec![addr; 8000];
    assert!(body(&big).len() > MAX_BATCH_MESSAGE_SIZE);
    assert!(matches!(
        codec.encode_request(&big, &mut Vec::new()),
        Err(BatchCodecError::Oversized { .. })
    ));
}

#[test]
fn bad_keys_and_providers_are_refused() {
    let codec = BatchCodec::default();
    let long = batch_of(vec![b"ok".to_vec(), vec![1u8; MAX_BATCH_KEY_LEN + 1]]);
    assert!(matches!(
        codec.decode_request_body(&body(&long)),
        Err(BatchCodecError::KeyTooLong { len: 81, max: 80 })
    ));
    assert!(matches!(
        codec.encode_request(&long, &mut Vec::new()),
        Err(BatchCodecError::KeyTooLong { .. })
    ));
    let longest = batch_of(vec![vec![1u8; MAX_BATCH_KEY_LEN]]);
    assert_eq!(codec.decode_request_body(&body(&longest)).unwrap(), longest);
    assert!(matches!(
        codec.decode_request_body(&body(&batch_of(vec![Vec::new()]))),
        Err(BatchCodecError::EmptyKey)
    ));
    assert!(matches!(
        codec.decode_request_body(&body(&batch_of(Vec::new()))),
        Err(BatchCodecError::NoKeys)
    ));
    // Keys without a provider field; a provider whose id does not parse.
    assert!(matches!(
        codec.decode_request_body(&hex::decode("12026b31").unwrap()),
        Err(BatchCodecError::NoProvider)
    ));
    assert!(matches!(
        codec.decode_request_body(&hex::decode("0a040a02ffff12026b31").unwrap()),
        Err(BatchCodecError::NoProvider)
    ));
    // Wrong wire types.
    assert!(matches!(
        codec.decode_request_body(&hex::decode("1001").unwrap()),
        Err(BatchCodecError::Malformed(_))
    ));
    assert!(matches!(
        codec.decode_response_body(&hex::decode("0d00000000").unwrap()),
        Err(BatchCodecError::Malformed(_))
    ));
}

#[test]
fn truncated_input_is_refused() {
    let codec = BatchCodec::default();
    let (_, body_hex, framed) = request_vector();
    let framed = hex::decode(framed).unwrap();
    // A frame not yet whole: wait for more.
    for cut in 0..framed.len() {
        assert!(
            codec.decode_request(&framed[..cut]).unwrap().is_none(),
            "{cut}"
        );
    }
    // A body cut inside a field.
    let body = hex::decode(body_hex).unwrap();
    for cut in [1, 3, 20, body.len() - 1] {
        assert!(
            matches!(
                codec.decode_request_body(&body[..cut]),
                Err(BatchCodecError::Truncated)
            ),
            "{cut}"
        );
    }
    // A stream that ends inside a frame.
    let mut io = futures::io::Cursor::new(framed[..framed.len() - 3].to_vec());
    assert!(matches!(
        futures::executor::block_on(codec.read_request(&mut io)),
        Err(BatchCodecError::Truncated)
    ));
    let mut empty = futures::io::Cursor::new(Vec::new());
    assert!(
        futures::executor::block_on(codec.read_request(&mut empty))
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        futures::executor::block_on(codec.read_response(&mut empty)),
        Err(BatchCodecError::Truncated)
    ));
}

#[test]
fn a_stream_carries_batches_and_answers_in_sequence() {
    let codec = BatchCodec::default();
    let (batch, _, _) = request_vector();
    let mut io = futures::io::Cursor::new(Vec::new());
    futures::executor::block_on(async {
        codec.write_request(&mut io, &batch).await.unwrap();
        codec.write_request(&mut io, &batch).await.unwrap();
        io.set_position(0);
        assert_eq!(
            codec.read_request(&mut io).await.unwrap(),
            Some(batch.clone())
        );
        assert_eq!(codec.read_request(&mut io).await.unwrap(), Some(batch));
        assert_eq!(codec.read_request(&mut io).await.unwrap(), None);
    });
}

fn arb_peer() -> impl Strategy<Value = PeerInfo> {
    (
        prop::collection::vec(any::<u8>(), 32),
        prop::collection::vec((any::<[u8; 4]>(), any::<u16>()), 0..4),
    )
        .prop_map(|(digest, addrs)| {
            let mut id = vec![0x12, 0x20];
            id.extend(digest);
            PeerInfo::new(
                PeerId::from_bytes(&id).unwrap(),
                addrs
                    .into_iter()
                    .map(|(ip, port)| {
                        format!("/ip4/{}.{}.{}.{}/tcp/{port}", ip[0], ip[1], ip[2], ip[3])
                            .parse()
                            .unwrap()
                    })
                    .collect(),
            )
        })
}

fn arb_batch() -> impl Strategy<Value = ProvideBatch> {
    // Keys of any lengths (listed), and multihash-like keys of one length (packed as a run,
    // or listed when a run would not be shorter).
    let any_keys = prop::collection::vec(
        prop::collection::vec(any::<u8>(), 1..=MAX_BATCH_KEY_LEN),
        1..40,
    );
    let one_length = (2usize..=MAX_BATCH_KEY_LEN, 1usize..40, any::<[u8; 2]>()).prop_flat_map(
        |(len, n, head)| {
            prop::collection::vec(prop::collection::vec(any::<u8>(), len - 2), n).prop_map(
                move |tails| {
                    tails
                        .into_iter()
                        .map(|t| head.iter().copied().chain(t).collect::<Vec<u8>>())
                        .collect::<Vec<_>>()
                },
            )
        },
    );
    (arb_peer(), prop_oneof![any_keys, one_length])
        .prop_map(|(provider, keys)| ProvideBatch { provider, keys })
}

fn arb_allowance() -> impl Strategy<Value = Option<Allowance>> {
    prop::option::of((any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
        |(keys, per_second, burst)| Allowance {
            keys: if keys % 3 == 0 { 0 } else { keys },
            per_second,
            burst,
        },
    ))
}

fn arb_response() -> impl Strategy<Value = ProvideBatchResponse> {
    prop_oneof![
        (prop::collection::vec(0u64..4, 0..300), arb_allowance()).prop_map(|(s, a)| {
            ProvideBatchResponse::answered(s.into_iter().map(KeyStatus::from_wire).collect())
                .with_allowance(a)
        }),
        (1u64..6, arb_allowance()).prop_map(|(e, a)| {
            ProvideBatchResponse::refused(BatchError::from_wire(e).unwrap()).with_allowance(a)
        }),
    ]
}

proptest! {
    #[test]
    fn batches_are_byte_identical_to_prost(batch in arb_batch()) {
        use prost::Message as _;
        let ours = body(&batch);
        let provider = Some(pb::Peer {
            id: batch.provider.peer_id.to_bytes(),
            addrs: batch.provider.addrs.iter().map(|a| a.to_vec()).collect(),
        });
        let theirs = match run_prefix(&batch.keys) {
            None => pb::ProvideBatch { provider, keys: batch.keys.clone(), runs: Vec::new() },
            Some(p) => pb::ProvideBatch {
                provider,
                keys: Vec::new(),
                runs: vec![pb::KeyRun {
                    prefix: batch.keys[0][..p].to_vec(),
                    suffix_len: (batch.keys[0].len() - p) as u32,
                    suffixes: batch.keys.iter().flat_map(|k| k[p..].to_vec()).collect(),
                }],
            },
        };
        prop_assert_eq!(&ours, &theirs.encode_to_vec());
        prop_assert_eq!(BatchCodec::default().decode_request_body(&ours).unwrap(), batch);
    }

    #[test]
    fn answers_are_byte_identical_to_prost(resp in arb_response()) {
        use prost::Message as _;
        let mut ours = Vec::new();
        encode_response_body(&resp, &mut ours);
        let first = resp.statuses.iter().take_while(|s| s.is_stored()).count();
        let theirs = pb::ProvideBatchResponse {
            stored_first: first as u32,
            statuses: resp.statuses[first..].iter().map(|s| s.to_wire() as i32).collect(),
            error: resp.error.map_or(0, |e| e.to_wire() as i32),
            allowance: resp.allowance.map(|a| pb::Allowance {
                keys: a.keys,
                per_second: a.per_second,
                burst: a.burst,
            }),
        };
        prop_assert_eq!(&ours, &theirs.encode_to_vec());
        prop_assert_eq!(BatchCodec::default().decode_response_body(&ours).unwrap(), resp);
    }

    #[test]
    fn decoding_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let codec = BatchCodec::default().with_max_keys(16);
        let _ = codec.decode_request(&bytes);
        let _ = codec.decode_response(&bytes);
        let _ = codec.decode_request_body(&bytes);
        let _ = codec.decode_response_body(&bytes);
    }
}
