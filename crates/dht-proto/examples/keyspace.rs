//! Where content lands in the keyspace, and what announcing it costs on the wire.
//!
//! Makes `--keys N` CIDs, maps them to Kademlia keys, groups them into keyspace regions of
//! `--prefix-len L` bits (the sweeping provider's unit of work), and encodes one ADD_PROVIDER
//! message per key with the codec, as a per-key provider would send it.
//!
//! ```sh
//! cargo run -p dht-proto --example keyspace -- --keys 100000 --prefix-len 9
//! ```

use std::collections::BTreeMap;

use dht_proto::{
    Codec, Key, PeerInfo, Prefix, Request, cid::Cid, libp2p_identity::PeerId, multihash::Multihash,
    provider_key_of_cid,
};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[allow(clippy::print_stdout)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys = arg("--keys", 20_000);
    let prefix_len = arg("--prefix-len", 9).min(256);
    let me = PeerInfo::new(PeerId::random(), vec!["/ip4/127.0.0.1/tcp/4001".parse()?]);
    let codec = Codec::default();

    let mut regions: BTreeMap<Prefix, usize> = BTreeMap::new();
    let mut wire = Vec::new();
    for i in 0..keys {
        let digest = Key::hash(&(i as u64).to_be_bytes());
        let cid = Cid::new_v1(0x55, Multihash::<64>::wrap(0x12, digest.as_bytes())?);
        let key = Key::from_cid(&cid);
        *regions.entry(Prefix::new(&key, prefix_len)).or_default() += 1;
        let req = Request::AddProvider {
            key: provider_key_of_cid(&cid),
            providers: vec![me.clone()],
        };
        codec.encode_request(&req, &mut wire)?;
    }
    let sizes: Vec<usize> = regions.values().copied().collect();
    let max = sizes.iter().max().copied().unwrap_or(0);
    let min = if regions.len() < 1usize << prefix_len.min(63) {
        0
    } else {
        sizes.iter().min().copied().unwrap_or(0)
    };
    println!("keys:                   {keys}");
    println!("region prefix length:   {prefix_len} bits");
    println!("regions holding keys:   {}", regions.len());
    println!(
        "keys per region:        mean {:.1}, min {min}, max {max}",
        keys as f64 / regions.len().max(1) as f64
    );
    println!(
        "ADD_PROVIDER bytes:     {} total, {:.1} per key",
        wire.len(),
        wire.len() as f64 / keys.max(1) as f64
    );
    Ok(())
}
