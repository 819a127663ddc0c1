//! The provide experiment at small scale: the sweep places every key on its true closest
//! servers, keeps it findable through a reprovide cycle, costs a fraction of the per-key
//! baseline, and resumes after a restart instead of starting over.

use std::{sync::Arc, time::Duration};

use dht_proto::MessageType;
use dht_provider::{
    DhtProvider, MemoryStateStore, StateStore, SweepConfig, SweepParts, SweepingProvider,
};
use dht_provider_store::MemoryStore;
use dht_routing_table::Clock;
use dht_sim::{
    Behaviour, Sim, SimConfig,
    provide::{ProvideConfig, Strategy, key_at, run_provide},
};

fn sim_config(servers: usize, seed: u64) -> SimConfig {
    SimConfig::default().with_nodes(servers).with_seed(seed)
}

#[test]
fn zero_workers_or_sample_keys_are_refused_before_the_run() {
    dht_sim::runtime().unwrap().block_on(async {
        let sim = Sim::build(sim_config(20, 3)).await.unwrap();
        for (config, setting) in [
            (
                ProvideConfig::new(Strategy::Sweep, 10).with_workers(0),
                "workers",
            ),
            (
                ProvideConfig::new(Strategy::Sweep, 10).with_holder_sample_keys(0),
                "holder_sample_keys",
            ),
        ] {
            match run_provide(&sim, MemoryStore::new(), &config, |_| {}).await {
                Err(dht_sim::SimError::Setting(e)) => assert_eq!(e.setting, setting),
                other => panic!("{setting} 0: {other:?}"),
            }
        }
        // A handler setting that cannot work stops the build.
        let zero = dht_handler::HandlerConfig::default().with_closer_peers(0);
        match Sim::build(sim_config(20, 3).with_handler(zero)).await {
            Err(dht_sim::SimError::Setting(e)) => assert_eq!(e.setting, "closer_peers"),
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(_) => panic!("built with closer_peers 0"),
        }
        let zero = dht_routing_table::KBucketConfig::default().with_max_failures(0);
        match Sim::build(sim_config(20, 3).with_table(zero)).await {
            Err(dht_sim::SimError::Setting(e)) => assert_eq!(e.setting, "max_failures"),
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(_) => panic!("built with max_failures 0"),
        }
    });
}

#[test]
fn sweep_places_and_keeps_findable_20000_keys_on_500_servers() {
    dht_sim::runtime().unwrap().block_on(async {
        let sim = Sim::build(sim_config(500, 21)).await.unwrap();
        let config = ProvideConfig::new(Strategy::Sweep, 20_000)
            .with_findable_sample(200)
            .with_churn(0.1);
        let report = run_provide(&sim, MemoryStore::new(), &config, |_| {})
            .await
            .unwrap();
        let provide = &report.provide;
        let reprovide = report.reprovide.as_ref().unwrap();
        eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
        assert_eq!(provide.placement_checked, 20_000);
        assert!(provide.placement_fraction.unwrap() >= 0.99, "{provide:?}");
        assert_eq!(provide.findable_fraction, Some(1.0), "{provide:?}");
        // Records dropped, 10% of servers replaced during the cycle: still found. (Placement
        // is measured against the servers live at the end, so slices reprovided before a
        // server joined miss it until the next cycle: no bound on it here.)
        assert!(reprovide.churn.left > 0 && reprovide.churn.joined > 0);
        assert!(
            reprovide.findable_fraction.unwrap() >= 0.99,
            "{reprovide:?}"
        );
        // Every key went to 20 servers in each phase.
        assert!(provide.add_provider_rpcs >= 20_000 * 20);
        assert!(reprovide.add_provider_rpcs >= 20_000 * 20);
        // A few lookups per region, not one per key.
        assert!(
            reprovide.find_node_rpcs < 2_000,
            "{} FIND_NODE",
            reprovide.find_node_rpcs
        );
    });
}

#[test]
fn sweep_costs_under_a_hundredth_of_the_per_key_baseline() {
    let run = |strategy| {
        dht_sim::runtime().unwrap().block_on(async {
            let sim = Sim::build(sim_config(500, 22)).await.unwrap();
            let config = ProvideConfig::new(strategy, 5_000)
                .with_findable_sample(100)
                .with_reprovide(false);
            run_provide(&sim, MemoryStore::new(), &config, |_| {})
                .await
                .unwrap()
        })
    };
    let sweep = run(Strategy::Sweep);
    let per_key = run(Strategy::PerKey);
    eprintln!(
        "FIND_NODE: sweep {} per-key {}; placement {:?} / {:?}",
        sweep.find_node_rpcs,
        per_key.find_node_rpcs,
        sweep.placement_fraction,
        per_key.placement_fraction
    );
    assert_eq!(per_key.lookups, 5_000);
    assert!(sweep.find_node_rpcs * 100 <= per_key.find_node_rpcs);
    assert!(sweep.placement_fraction.unwrap() >= 0.99);
    assert_eq!(sweep.findable_fraction, Some(1.0));
    assert_eq!(per_key.findable_fraction, Some(1.0));
}

#[test]
fn a_restarted_sweep_resumes_instead_of_starting_over() {
    dht_sim::runtime().unwrap().block_on(async {
        let sim = Sim::build(sim_config(500, 23)).await.unwrap();
        let me = sim.add_node(Behaviour::Honest).unwrap();
        sim.join(me, &[0, 1, 2, 3]).await;
        let node = sim.node(me).unwrap();
        let keystore = Arc::new(MemoryStore::new());
        let state = MemoryStateStore::default();
        let clock: Arc<dyn Clock> = Arc::new(sim.clock());
        let interval = Duration::from_secs(8 * 3600);
        let start = || {
            let parts = SweepParts {
                local: node.info().clone(),
                network: sim.network(me),
                table: node.table().clone(),
                keystore: keystore.clone(),
                state: Box::new(state.clone()) as Box<dyn StateStore>,
                clock: clock.clone(),
            };
            SweepingProvider::start(parts, SweepConfig::default().with_interval(interval)).unwrap()
        };
        let sent = || node.counts().sent_of(MessageType::AddProvider);
        let keys: Vec<_> = (0..10_000).map(|i| key_at(23, i)).collect();

        let provider = start();
        provider.start_providing(false, &keys).await.unwrap();
        tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
        provider.close().await.unwrap();
        drop(provider);

        // Down for an hour, then back: only the slices due since the stop are provided.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let before = sent();
        let provider = start();
        tokio::time::sleep(Duration::from_secs(120)).await;
        let resent = sent() - before;
        let slices = provider.stats().slices;
        eprintln!("after restart: {resent} ADD_PROVIDER, {slices} slices");
        assert!(slices >= 4, "{slices}");
        // An hour of an 8-hour cycle is an eighth of the records, plus one slice in progress.
        let full = 10_000 * 20;
        assert!(resent > 0, "nothing was due?");
        assert!(resent <= full / 8 + 2 * full / slices, "{resent} of {full}");
        assert_eq!(provider.stats().behind_schedule_secs, 0);
        provider.close().await.unwrap();
    });
}

/// The sweep in a network that misbehaves, at small scale: a tenth of the servers silent, a
/// tenth answering 3 s late, 1% of messages lost, a tenth of the servers replaced during the
/// cycle. Every key stays findable and on most of its true closest answering servers.
#[test]
fn sweep_keeps_keys_findable_when_servers_are_silent_slow_and_lossy() {
    dht_sim::runtime().unwrap().block_on(async {
        let sim = Sim::build(
            sim_config(500, 23)
                .with_silent(0.1)
                .with_slow(0.1)
                .with_loss(0.01),
        )
        .await
        .unwrap();
        let config = ProvideConfig::new(Strategy::Sweep, 5_000)
            .with_findable_sample(200)
            .with_churn(0.1);
        let report = run_provide(&sim, MemoryStore::new(), &config, |_| {})
            .await
            .unwrap();
        eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
        let provide = &report.provide;
        let reprovide = report.reprovide.as_ref().unwrap();
        assert!(provide.findable_fraction.unwrap() >= 0.99, "{provide:?}");
        assert!(
            reprovide.findable_fraction.unwrap() >= 0.99,
            "{reprovide:?}"
        );
        // The targets at 10,000 servers are a mean of 17 and a 5th percentile of 12;
        // this small network (seed 23) shows 17.9 / 15 after the provide, 17.0 / 14 after
        // the cycle with churn.
        for phase in [provide, reprovide] {
            assert!(phase.mean_holders.unwrap() >= 16.5, "{phase:?}");
            assert!(phase.p5_holders.unwrap() >= 12, "{phase:?}");
            assert!(phase.records_per_key >= 20.0, "{phase:?}");
        }
        // The walk keeps up with its schedule (sampled every 10 minutes of the cycle).
        assert!(
            report.max_behind_secs.unwrap() < 3_600,
            "{:?}",
            report.max_behind_secs
        );
    });
}

/// Keys arriving every second during the cycle are each provided within minutes, and the
/// walk does not fall behind its schedule.
#[test]
fn ingested_keys_are_provided_within_minutes() {
    dht_sim::runtime().unwrap().block_on(async {
        let sim = Sim::build(sim_config(300, 24)).await.unwrap();
        let config = ProvideConfig::new(Strategy::Sweep, 2_000)
            .with_findable_sample(50)
            .with_interval(Duration::from_secs(3_600))
            .with_ingest(2);
        let report = run_provide(&sim, MemoryStore::new(), &config, |_| {})
            .await
            .unwrap();
        eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
        // Two keys a second for the hour of the cycle.
        assert_eq!(report.ingested_keys, 2 * 3_600);
        assert_eq!(report.ingest_failed_keys, 0);
        assert_eq!(report.ingest_late_keys, 0);
        let longest = report.ingest_max_first_provide_secs.unwrap();
        assert!(longest > 0.0 && longest < 600.0, "{longest} s");
        assert!(report.max_behind_secs.unwrap() < 600);
        // The cycle sent the ingested keys too.
        let reprovide = report.reprovide.as_ref().unwrap();
        assert!(reprovide.add_provider_rpcs >= (2_000 + 2 * 3_600) * 20);
    });
}

/// The targets at 10,000 servers, at small scale: 500 servers with realistic
/// tables, a tenth silent, a tenth slow, 1% of messages lost, a fifth of every answer's
/// peers omitted, a tenth of the servers replaced during the cycle. At every sample of the
/// cycle a key's true 20 closest hold its record 17 times on average, the 5th percentile
/// at least 12 times, and the keys are findable.
///
/// Before the sweep sent spares for silent servers and explorations confirmed prefixes
/// under `omit`, this failed: the cycle's samples fell to a mean of 12.3 and a p5 of 0.
#[test]
fn small_scale_targets_in_a_network_that_misbehaves() {
    dht_sim::runtime().unwrap().block_on(async {
        let config = sim_config(500, 25)
            .with_build(dht_sim::TableBuild::Realistic)
            .with_silent(0.1)
            .with_slow(0.1)
            .with_loss(0.01)
            .with_omit(0.2);
        let sim = Sim::build(config).await.unwrap();
        let config = ProvideConfig::new(Strategy::Sweep, 5_000)
            .with_findable_sample(1_000)
            .with_churn(0.1);
        let report = run_provide(&sim, MemoryStore::new(), &config, |_| {})
            .await
            .unwrap();
        eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
        let reprovide = report.reprovide.as_ref().unwrap();
        assert!(reprovide.holder_samples.len() >= 8, "{reprovide:?}");
        assert!(reprovide.min_mean_holders.unwrap() >= 17.0, "{reprovide:?}");
        assert!(reprovide.min_p5_holders.unwrap() >= 12, "{reprovide:?}");
        for phase in [&report.provide, reprovide] {
            assert!(phase.findable_fraction.unwrap() >= 0.999, "{phase:?}");
        }
        assert!(report.max_behind_secs.unwrap() < 3_600);
    });
}

/// A mixed network: half the servers speak the batched provide protocol. The sweep sends them
/// their records in batches and the others ADD_PROVIDER, in the same slices: every key is
/// placed and findable (also after a reprovide cycle with the first records dropped), records
/// went both ways, and the provider sent far fewer messages than on the same network where no
/// server speaks it; where all do, no ADD_PROVIDER at all.
#[test]
fn mixed_network_batches_to_the_servers_that_speak_it() {
    let keys = 3_000;
    let run = |share: f64| {
        dht_sim::runtime().unwrap().block_on(async {
            let sim = Sim::build(sim_config(300, 31).with_provide_batch_share(share))
                .await
                .unwrap();
            let speaking = sim
                .live_nodes()
                .into_iter()
                .filter(|&i| sim.node(i).is_some_and(|n| n.speaks_provide_batch()))
                .count();
            let config = ProvideConfig::new(Strategy::Sweep, keys)
                .with_findable_sample(200)
                .with_interval(Duration::from_secs(3600));
            let report = run_provide(&sim, MemoryStore::new(), &config, |_| {})
                .await
                .unwrap();
            let received = sim.counts().batch_records_received;
            (report, speaking, received)
        })
    };
    let (plain, plain_speaking, _) = run(0.0);
    let (mixed, mixed_speaking, mixed_received) = run(0.5);
    let (all, all_speaking, _) = run(1.0);
    let messages = |p: &dht_sim::provide::PhaseReport| p.add_provider_rpcs + p.provide_batches;
    for (name, r) in [("plain", &plain), ("mixed", &mixed), ("all", &all)] {
        let p = &r.provide;
        eprintln!(
            "{name}: {} ADD_PROVIDER, {} batches of {} records, {:.2} record messages and \
             {:.0} bytes per key, placement {:?}, findable {:?} / after the cycle {:?}",
            p.add_provider_rpcs,
            p.provide_batches,
            p.batch_records,
            p.record_messages_per_key,
            p.record_bytes_per_key,
            p.placement_fraction,
            p.findable_fraction,
            r.findable_fraction
        );
    }
    assert_eq!((plain_speaking, all_speaking), (0, 300));
    assert!((120..=180).contains(&mixed_speaking), "{mixed_speaking}");
    for r in [&plain, &mixed, &all] {
        assert!(
            r.provide.placement_fraction.unwrap() >= 0.99,
            "{:?}",
            r.provide
        );
        assert_eq!(r.provide.findable_fraction, Some(1.0), "{:?}", r.provide);
        let cycle = r.reprovide.as_ref().unwrap();
        assert!(cycle.placement_fraction.unwrap() >= 0.99, "{cycle:?}");
        assert_eq!(cycle.findable_fraction, Some(1.0), "{cycle:?}");
    }
    let p = &mixed.provide;
    // Records went both ways, about half each.
    let records = p.add_provider_rpcs + p.batch_records;
    assert!(records >= keys * 20, "{records}");
    assert!(p.batch_records * 10 >= records * 3, "{p:?}");
    assert!(p.add_provider_rpcs * 10 >= records * 3, "{p:?}");
    // Every record sent in a batch reached its server (no loss here).
    let batched = mixed.batch_records;
    assert_eq!(mixed_received, batched);
    // Fewer messages than all-plain; all-batch sends no ADD_PROVIDER.
    assert_eq!(plain.provide.provide_batches, 0);
    assert!(messages(p) * 10 < messages(&plain.provide) * 7, "{p:?}");
    assert_eq!(all.provide.add_provider_rpcs, 0);
    // And fewer bytes: the provider's id and addresses once per batch, not once per record.
    let bytes = |r: &dht_sim::provide::ProvideReport| r.provide.record_bytes_per_key;
    assert!(
        bytes(&mixed) < bytes(&plain) * 0.8,
        "{} vs {}",
        bytes(&mixed),
        bytes(&plain)
    );
    assert!(
        bytes(&all) < bytes(&plain) * 0.5,
        "{} vs {}",
        bytes(&all),
        bytes(&plain)
    );
    assert!(
        messages(&all.provide) * 10 < messages(&plain.provide),
        "{:?}",
        all.provide
    );
}

/// Servers that keep only the sampled keys' records (`ProviderRecords::Sample`) give the
/// placement and findability a run that keeps every record gives for the same keys (here
/// with a tenth of the servers silent, so that placement is not trivially whole), and
/// their stores hold the sample's records only: a run of millions of keys measures them
/// with the memory of a sample.
#[test]
fn servers_that_keep_the_sample_only_measure_it_as_servers_that_keep_everything() {
    use dht_provider_store::ProviderStore;
    let run = |records: dht_sim::ProviderRecords| {
        dht_sim::runtime().unwrap().block_on(async {
            let network = sim_config(300, 31)
                .with_silent(0.1)
                .with_provider_records(records);
            let sim = Sim::build(network).await.unwrap();
            let config = ProvideConfig::new(Strategy::Sweep, 10_000)
                .with_placement_sample(500)
                .with_holder_sample_keys(250)
                .with_findable_sample(100)
                .with_reprovide(false);
            let report = run_provide(&sim, MemoryStore::new(), &config, |_| {})
                .await
                .unwrap();
            let held: u64 = (0..sim.len())
                .filter_map(|i| sim.node(i))
                .map(|n| n.store().remove_expired(u64::MAX).unwrap())
                .sum();
            (report.provide, held)
        })
    };
    let (all, all_held) = run(dht_sim::ProviderRecords::Store);
    let (sample, sample_held) = run(dht_sim::ProviderRecords::Sample);
    eprintln!("store: {all:?}, {all_held} records held");
    eprintln!("sample: {sample:?}, {sample_held} records held");
    assert_eq!(sample.placement_checked, 500);
    assert_eq!(sample.findable_checked, 100);
    assert_eq!(sample.findable_fraction, Some(1.0));
    let (a, s) = (all.mean_holders.unwrap(), sample.mean_holders.unwrap());
    assert!((a - s).abs() <= 0.2, "mean holders {a} against {s}");
    let (a, s) = (
        all.placement_fraction.unwrap(),
        sample.placement_fraction.unwrap(),
    );
    assert!((a - s).abs() <= 0.03, "placement {a} against {s}");
    // Every key's records against the sample's: 500 placement keys (the holder and
    // findable samples are among them), some 21 records each.
    assert!(all_held >= 10_000 * 20, "{all_held}");
    assert!(
        (500 * 20..=500 * 31).contains(&sample_held),
        "{sample_held}"
    );
}
