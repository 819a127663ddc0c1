//! dht-provider-store on its own, without a node: a RocksDB store of provider records,
//! value records and a keystore, under a directory.
//!
//! `cargo run -p dht-node --example provider_store`.
#![allow(clippy::print_stdout)]

use dht_proto::{PeerId, Prefix, ProviderRecord, Record};
use dht_provider_store::{Config, Keystore, Multihash, ProviderStore, RocksStore, ValueStore};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Removed when dropped, at the end.
    let dir = tempfile::Builder::new()
        .prefix("provider-store-example-")
        .tempdir()?;
    let dir = dir.path();
    let now = 1_700_000_000;
    {
        let store = RocksStore::open(dir, Config::small())?;

        // Provider records this node holds for others.
        let key = Multihash::wrap(0x12, &[1; 32])?.to_bytes();
        let records: Vec<ProviderRecord> = (0..3)
            .map(|_| ProviderRecord {
                key: key.clone(),
                provider: PeerId::random(),
                addrs: vec![
                    "/ip4/192.0.2.1/tcp/4001"
                        .parse()
                        .expect("a valid multiaddr"),
                ],
                received_at: now,
            })
            .collect();
        store.add_providers(&records)?;
        println!(
            "providers held: {}",
            store.providers(&key, 20, now + 60)?.len()
        );

        // Value records.
        store.put_value(&Record::new("/example/key", "value"), now)?;
        let value = store.get_value(b"/example/key", now + 60)?;
        println!(
            "value: {:?}",
            value.map(|(r, _)| String::from_utf8_lossy(&r.value).into_owned())
        );

        // The keystore: the keys this node provides, in Kademlia-key order.
        let keys: Vec<Multihash> = (0..1000u32)
            .map(|i| Multihash::wrap(0x12, &i.to_be_bytes()))
            .collect::<Result<_, _>>()?;
        let added = store.put(&keys)?;
        println!("keystore: {} added, {} held", added.len(), store.count()?);
        let first_half = Prefix::new(&dht_proto::Key::from_bytes([0; 32]), 1);
        println!(
            "keys in the first half of the keyspace: {}",
            store.scan_all(&first_half, 100)?.len()
        );

        // Expiry, 48 h later.
        println!("expired: {}", store.remove_expired(now + 48 * 3600)?);
        store.flush()?;
    }
    // Reopened: everything written is still there.
    let store = RocksStore::open(dir, Config::small())?;
    println!("after reopening: {} keys held", store.count()?);
    Ok(())
}
