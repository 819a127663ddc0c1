//! Shared test support: peers, stores, handlers, and IPNS / `/pk/` records built by hand
//! (a minimal DAG-CBOR and protobuf encoder, signed with ed25519 keys).
#![allow(dead_code, unreachable_pub, unused_imports)] // Each test binary uses a part of it.

use std::sync::Arc;

use dht_handler::{Handler, HandlerConfig};
use dht_proto::libp2p_identity::Keypair;
use dht_proto::{Key, PeerInfo};
use dht_provider_store::{Config, MemoryStore, ProviderStore, RocksStore, ValueStore};
use dht_routing_table::{FullRoutingTable, ManualClock};

/// A handler over type-erased stores, so one test runs against both store kinds.
pub type TestHandler = Handler<Arc<FullRoutingTable>, Arc<dyn ProviderStore>, Arc<dyn ValueStore>>;

/// Wall-clock time of the tests: 2023-11-14T22:13:20Z.
pub const NOW: u64 = dht_test_kit::EPOCH;

// Deterministic peers, one address each in its own /16.
pub use dht_test_kit::{addr, peer};

/// The two kinds of store every table-driven test runs against.
pub enum StoreKind {
    /// `MemoryStore`.
    Memory,
    /// `RocksStore` in a temporary directory.
    Rocks,
}

/// Stores of one kind (the directory lives as long as the stores).
pub struct Stores {
    pub name: &'static str,
    pub providers: Arc<dyn ProviderStore>,
    pub values: Arc<dyn ValueStore>,
    pub _dir: Option<tempfile::TempDir>,
}

impl Stores {
    pub fn new(kind: &StoreKind) -> Stores {
        match kind {
            StoreKind::Memory => {
                let s = Arc::new(MemoryStore::new());
                Stores {
                    name: "memory",
                    providers: s.clone(),
                    values: s,
                    _dir: None,
                }
            }
            StoreKind::Rocks => {
                let dir = tempfile::tempdir().expect("temp dir");
                let s = Arc::new(
                    RocksStore::open(dir.path(), Config::small().with_sync_writes(false))
                        .expect("open RocksDB"),
                );
                Stores {
                    name: "rocksdb",
                    providers: s.clone(),
                    values: s,
                    _dir: Some(dir),
                }
            }
        }
    }
}

pub const KINDS: [StoreKind; 2] = [StoreKind::Memory, StoreKind::Rocks];

/// The local node of the tests (seed 0) with its address.
pub fn local() -> PeerInfo {
    peer(0)
}

/// A handler for `local()` over a full routing table holding `table_peers` and `stores`.
pub fn handler(stores: &Stores, table_peers: &[PeerInfo], config: HandlerConfig) -> TestHandler {
    let local = local();
    let table = Arc::new(FullRoutingTable::new(
        local.key(),
        Default::default(),
        ManualClock::new(NOW),
    ));
    table.replace_all(table_peers.iter().cloned(), NOW);
    Handler::new(
        local,
        table,
        stores.providers.clone(),
        stores.values.clone(),
        config,
    )
    .expect("valid settings")
}

/// The `n` peers of `peers` closest to `sha256(key)`, brute force.
pub fn brute_closest(peers: &[PeerInfo], key: &[u8], n: usize) -> Vec<PeerInfo> {
    let target = Key::hash(key);
    let mut v: Vec<&PeerInfo> = peers.iter().collect();
    v.sort_by_key(|p| p.key().distance(&target));
    v.into_iter().take(n).cloned().collect()
}

// ---------------------------------------------------------------------------------------
// Records.

/// `/pk/` record of a key pair: key and value.
pub fn pk_record(kp: &Keypair) -> (Vec<u8>, Vec<u8>) {
    let key = [b"/pk/".as_slice(), &kp.public().to_peer_id().to_bytes()].concat();
    (key, kp.public().encode_protobuf())
}

/// The `/ipns/` key of a key pair's name.
pub fn ipns_key(kp: &Keypair) -> Vec<u8> {
    [b"/ipns/".as_slice(), &kp.public().to_peer_id().to_bytes()].concat()
}

/// A CBOR head: major type and argument, in the shortest form (as DAG-CBOR requires).
pub fn cbor_head(major: u8, n: u64) -> Vec<u8> {
    let m = major << 5;
    match n {
        0..=23 => vec![m | n as u8],
        24..=0xff => vec![m | 24, n as u8],
        0x100..=0xffff => [vec![m | 25], (n as u16).to_be_bytes().to_vec()].concat(),
        0x1_0000..=0xffff_ffff => [vec![m | 26], (n as u32).to_be_bytes().to_vec()].concat(),
        _ => [vec![m | 27], n.to_be_bytes().to_vec()].concat(),
    }
}

pub fn cbor_text(s: &str) -> Vec<u8> {
    [cbor_head(3, s.len() as u64), s.as_bytes().to_vec()].concat()
}

pub fn cbor_bytes(b: &[u8]) -> Vec<u8> {
    [cbor_head(2, b.len() as u64), b.to_vec()].concat()
}

pub fn cbor_uint(n: u64) -> Vec<u8> {
    cbor_head(0, n)
}

/// A DAG-CBOR map of already-encoded values, keys sorted as DAG-CBOR requires (by length,
/// then bytewise).
pub fn cbor_map(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut sorted: Vec<&(&str, Vec<u8>)> = entries.iter().collect();
    sorted.sort_by(|a, b| (a.0.len(), a.0.as_bytes()).cmp(&(b.0.len(), b.0.as_bytes())));
    let mut out = cbor_head(5, entries.len() as u64);
    for (k, v) in sorted {
        out.extend(cbor_text(k));
        out.extend_from_slice(v);
    }
    out
}

/// The signed fields of an IPNS record.
#[derive(Clone, Debug)]
pub struct IpnsFields {
    pub value: Vec<u8>,
    pub validity: Vec<u8>,
    pub validity_type: u64,
    pub sequence: u64,
    pub ttl: u64,
}

impl IpnsFields {
    /// A record pointing at `/ipfs/bafkqaddwgevxmmraojswg33smq`, valid until `eol`.
    pub fn new(sequence: u64, eol: &str) -> Self {
        IpnsFields {
            value: b"/ipfs/bafkqaddwgevxmmraojswg33smq".to_vec(),
            validity: eol.as_bytes().to_vec(),
            validity_type: 0,
            sequence,
            ttl: 3_600_000_000_000,
        }
    }

    /// The DAG-CBOR `data` document, with `extra` fields (already-encoded values).
    pub fn data(&self, extra: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut entries = vec![
            ("Value", cbor_bytes(&self.value)),
            ("Validity", cbor_bytes(&self.validity)),
            ("ValidityType", cbor_uint(self.validity_type)),
            ("Sequence", cbor_uint(self.sequence)),
            ("TTL", cbor_uint(self.ttl)),
        ];
        entries.extend(extra.iter().cloned());
        cbor_map(&entries)
    }
}

/// Protobuf encoding of one field.
pub fn pb_bytes(field: u64, b: &[u8]) -> Vec<u8> {
    let mut out = varint(field << 3 | 2);
    out.extend(varint(b.len() as u64));
    out.extend_from_slice(b);
    out
}

pub fn pb_varint(field: u64, v: u64) -> Vec<u8> {
    [varint(field << 3), varint(v)].concat()
}

pub use dht_proto::pb::varint_bytes as varint;

/// How to assemble an `IpnsEntry`.
#[derive(Clone, Debug, Default)]
pub struct IpnsOptions {
    /// Also write the legacy V1 fields (copies of the signed ones) and a V1 signature.
    pub v1: bool,
    /// Legacy V1 fields that differ from the signed ones (implies `v1`).
    pub v1_fields: Option<IpnsFields>,
    /// Leave out `signatureV2`.
    pub no_signature_v2: bool,
    /// Leave out `data`.
    pub no_data: bool,
    /// Write this `pubKey` (protobuf public key bytes).
    pub pub_key: Option<Vec<u8>>,
    /// Sign `data` with this key pair instead of the record's own.
    pub signer: Option<Keypair>,
    /// Use these bytes as `data` (signed as given) instead of encoding the fields.
    pub raw_data: Option<Vec<u8>>,
    /// Extra fields in `data`.
    pub extra: Vec<(&'static str, Vec<u8>)>,
}

/// An `IpnsEntry` for `fields`, signed by `kp` (or `opts.signer`).
pub fn ipns_record(kp: &Keypair, fields: &IpnsFields, opts: &IpnsOptions) -> Vec<u8> {
    let data = opts
        .raw_data
        .clone()
        .unwrap_or_else(|| fields.data(&opts.extra));
    let signer = opts.signer.as_ref().unwrap_or(kp);
    let sig_v2 = signer
        .sign(&[b"ipns-signature:".as_slice(), &data].concat())
        .expect("ed25519 signs");
    let mut out = Vec::new();
    if opts.v1 || opts.v1_fields.is_some() {
        let v1 = opts.v1_fields.as_ref().unwrap_or(fields);
        let sig_v1 = signer
            .sign(&[v1.value.as_slice(), &v1.validity, b"EOL"].concat())
            .expect("ed25519 signs");
        out.extend(pb_bytes(1, &v1.value));
        out.extend(pb_bytes(2, &sig_v1));
        out.extend(pb_varint(3, v1.validity_type));
        out.extend(pb_bytes(4, &v1.validity));
        out.extend(pb_varint(5, v1.sequence));
        out.extend(pb_varint(6, v1.ttl));
    }
    if let Some(pk) = &opts.pub_key {
        out.extend(pb_bytes(7, pk));
    }
    if !opts.no_signature_v2 {
        out.extend(pb_bytes(8, &sig_v2));
    }
    if !opts.no_data {
        out.extend(pb_bytes(9, &data));
    }
    out
}

/// A V2-only IPNS record of `kp` with sequence `seq`, valid until `eol`.
pub fn ipns_v2(kp: &Keypair, seq: u64, eol: &str) -> Vec<u8> {
    ipns_record(kp, &IpnsFields::new(seq, eol), &IpnsOptions::default())
}
