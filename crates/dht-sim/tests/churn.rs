//! Churn: nodes leave and join while lookups run.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use dht_proto::K_VALUE;
use dht_sim::{Behaviour, Churn, Sim, SimConfig, TableBuild};

#[test]
fn lookups_under_churn() {
    let config = SimConfig::default()
        .with_nodes(500)
        .with_seed(31)
        .with_build(TableBuild::Realistic)
        .with_churn(Churn::per_hour(0.5));
    dht_sim::runtime().unwrap().block_on(async {
        let sim = Sim::build(config).await.unwrap();
        let keeper = 0;
        sim.set_protected(keeper, true);
        let churn = tokio::spawn(sim.clone().run_churn(Duration::from_secs(3600)));
        // Lookups spread over the hour.
        let mut samples = Vec::new();
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_secs(55)).await;
            let origin = sim
                .random_live_node(|n| n.behaviour() == Behaviour::Honest)
                .unwrap();
            samples.push(sim.lookup(origin, &sim.random_key(), K_VALUE).await);
        }
        let report = churn.await.unwrap();
        eprintln!("{report:?} {:?} {:?}", sim.net_stats(), sim.table_quality());
        // About 250 leave and 250 join in an hour.
        assert!(report.left > 150 && report.joined > 150, "{report:?}");
        assert_eq!(sim.len(), 500 + report.joined);
        assert_eq!(sim.live_count(), 500 + report.joined - report.left);
        assert!(sim.node(keeper).unwrap().is_alive());
        assert!(sim.net_stats().unreachable > 0);
        let summary = dht_sim::LookupReport::from_samples(sim.live_count(), K_VALUE, &samples);
        eprintln!("{summary:?}");
        assert!(summary.success_fraction >= 0.9, "{summary:?}");
        // Joiners are in the tables of others.
        let joiner = sim.len() - 1;
        let known = sim
            .live_nodes()
            .into_iter()
            .filter(|&i| {
                sim.node(i)
                    .unwrap()
                    .table()
                    .contains(&sim.node(joiner).unwrap().info().peer_id)
            })
            .count();
        assert!(known > 0);
    });
}

#[test]
fn periodic_refresh_keeps_tables_clean() {
    let measure = |refresh: bool| {
        let config = SimConfig::default()
            .with_nodes(300)
            .with_seed(32)
            .with_churn(Churn::per_hour(0.5));
        dht_sim::runtime().unwrap().block_on(async move {
            let sim = Sim::build(config).await.unwrap();
            let hour = Duration::from_secs(3600);
            let churn = tokio::spawn(sim.clone().run_churn(hour));
            if refresh {
                sim.clone()
                    .run_refresh(hour, Duration::from_secs(600))
                    .await;
            }
            churn.await.unwrap();
            let quality = sim.table_quality();
            let report = sim.run_lookups(100, K_VALUE).await;
            eprintln!("refresh {refresh}: {quality:?}\n{report:?}");
            (quality, report)
        })
    };
    let (stale, _) = measure(false);
    let (fresh, report) = measure(true);
    assert!(
        fresh.dead_share < stale.dead_share / 2.0,
        "{fresh:?} {stale:?}"
    );
    assert!(fresh.fill > stale.fill, "{fresh:?} {stale:?}");
    assert!(report.success_fraction >= 0.95, "{report:?}");
}
