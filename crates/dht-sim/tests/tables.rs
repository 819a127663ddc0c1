//! The fast table build gives the tables (and the lookups) of the realistic one.
#![allow(clippy::unwrap_used)]

use dht_proto::K_VALUE;
use dht_sim::{LookupReport, Sim, SimConfig, TableBuild, TableQuality};

fn measure(build: TableBuild) -> (TableQuality, LookupReport) {
    let config = SimConfig::default()
        .with_nodes(500)
        .with_seed(21)
        .with_build(build);
    dht_sim::runtime().unwrap().block_on(async {
        let sim = Sim::build(config).await.unwrap();
        let quality = sim.table_quality();
        let report = sim.run_lookups(500, K_VALUE).await;
        eprintln!("{build:?}: {quality:?}\n{report:?}");
        (quality, report)
    })
}

#[test]
fn fast_build_matches_realistic_build() {
    let (fast_q, fast_r) = measure(TableBuild::Fast);
    let (real_q, real_r) = measure(TableBuild::Realistic);
    // The fast build holds every peer a bucket can.
    assert!(fast_q.fill > 0.999, "{fast_q:?}");
    assert!(
        (fast_q.fill - real_q.fill).abs() <= 0.02,
        "{fast_q:?} {real_q:?}"
    );
    assert!(
        (fast_q.full_buckets - real_q.full_buckets).abs() <= 0.05,
        "{fast_q:?} {real_q:?}"
    );
    assert!(
        (fast_r.exact_fraction - real_r.exact_fraction).abs() <= 0.02,
        "{fast_r:?} {real_r:?}"
    );
    assert!(fast_r.exact_fraction >= 0.99 && real_r.exact_fraction >= 0.99);
}
