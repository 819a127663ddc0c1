//! A small devnet on 127.0.0.1 through the same function the `dht-node devnet` command runs.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::Duration;

use dht_node::devnet::{DevnetConfig, ProvideProgress, Strategy, run};

async fn small_devnet(strategy: Strategy) {
    let config = DevnetConfig::default()
        .with_nodes(10)
        .with_keys(500)
        .with_sample(50)
        .with_strategy(strategy)
        .with_settle_timeout(Duration::from_secs(5));
    let progress: Mutex<Vec<ProvideProgress>> = Mutex::new(Vec::new());
    let on_progress = |p| progress.lock().unwrap().push(p);
    let report = tokio::time::timeout(Duration::from_secs(120), run(&config, on_progress))
        .await
        .expect("the devnet finishes within two minutes")
        .expect("the devnet runs");
    eprintln!("{report}");
    assert_eq!(report.nodes, 10);
    assert_eq!(report.sampled, 50);
    assert_eq!(report.found, report.sampled, "every sampled key is found");
    assert_eq!(report.provider.keys_provided, 500);
    assert_eq!(report.provide_error, None);
    // Every other node holds every record: with 10 nodes, each key's 20 closest are all 9
    // (sent as ADD_PROVIDER, or in batches to the nodes that take them).
    let batched = report.provider_transport.outbound_batch_records;
    assert!(report.provider.add_provider_sent + batched >= 500 * 9);
    // Progress is reported as records go out, and ends with the provider's own counts.
    let progress = progress.into_inner().unwrap();
    let last = progress.last().expect("progress was reported");
    assert_eq!(last.keys, 500);
    assert_eq!(last.keys_provided, 500);
    assert_eq!(last.records_expected, 500 * 9);
    assert_eq!(
        last.records_sent,
        report.provider.add_provider_sent
            + report.provider.add_provider_failed
            + report.provider.batch_records_sent
    );
    assert!(
        progress
            .windows(2)
            .all(|w| w[0].records_sent <= w[1].records_sent),
        "records sent never go back"
    );
    assert!(
        report.tables.min >= 5,
        "tables after bootstrap: {:?}",
        report.tables
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_devnet_finds_every_sampled_key() {
    small_devnet(Strategy::Sweep).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_devnet_finds_every_sampled_key() {
    small_devnet(Strategy::PerKey).await;
}

/// A mixed devnet: half the servers speak the batched provide protocol, the others only
/// ADD_PROVIDER. Every sampled key is found, and records went both ways: in batches to the
/// servers that speak it, as ADD_PROVIDER to the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_devnet_provides_both_ways() {
    let config = DevnetConfig::default()
        .with_nodes(12)
        .with_keys(500)
        .with_sample(50)
        .with_batch_share(0.5)
        .with_settle_timeout(Duration::from_secs(5));
    let report = tokio::time::timeout(Duration::from_secs(120), run(&config, |_| {}))
        .await
        .expect("the devnet finishes within two minutes")
        .expect("the devnet runs");
    eprintln!("{report}");
    assert_eq!(report.batch_servers, 5, "every other one of the 11 servers");
    assert!(report.provider_batches);
    assert_eq!(report.sampled, 50);
    assert_eq!(report.found, report.sampled, "every sampled key is found");
    assert_eq!(report.provider.keys_provided, 500);
    assert_eq!(report.provide_error, None);
    // With 12 nodes every key goes to all 11 servers: the 5 that speak the protocol take it
    // in a batch (or as ADD_PROVIDER after a fallback), the 6 others only as ADD_PROVIDER.
    let batched = report.records_batched();
    let plain = report.provider.add_provider_sent;
    assert!(batched > 0, "no record went in a batch");
    assert!(
        batched <= 500 * 5,
        "{batched} batched records for 5 servers"
    );
    assert_eq!(
        report.servers_batch_records, batched,
        "the servers took every batched record"
    );
    assert_eq!(report.provider.batch_records_sent, batched);
    assert!(
        plain >= 500 * 6,
        "{plain} ADD_PROVIDER for 6 servers without batches"
    );
    assert!(
        batched + plain >= 500 * 11,
        "{batched} + {plain} records for 11 servers"
    );
    assert!(report.provide_bytes_sent > 0);
}

/// Settings that cannot work are refused by name before any node starts.
#[tokio::test]
async fn settings_that_cannot_work_are_refused() {
    use dht_node::devnet::DevnetError;
    let refused = |config: DevnetConfig| async move {
        match run(&config, |_| {}).await {
            Err(DevnetError::InvalidConfig { setting, .. }) => setting,
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(_) => panic!("a devnet ran"),
        }
    };
    let small = || {
        DevnetConfig::default()
            .with_nodes(2)
            .with_keys(1)
            .with_sample(1)
    };
    assert_eq!(
        refused(small().with_lookup_parallelism(0)).await,
        "lookup_parallelism"
    );
    assert_eq!(refused(small().with_batch_share(1.5)).await, "batch_share");
    assert!(matches!(
        run(&small().with_nodes(1), |_| {}).await,
        Err(DevnetError::TooFewNodes(1))
    ));
}
