//! The simulator's command line: `dht-sim lookup --nodes N --lookups M [...]` and
//! `dht-sim provide --servers S --keys N --strategy sweep|per-key|both [...]`;
//! `dht-sim <command> --help` lists every option.

// A command-line tool: its output is its interface.
#![allow(clippy::print_stdout)]

use std::{alloc::System, process::ExitCode, time::Instant};

use cap::Cap;

use clap::{Parser, Subcommand, ValueEnum};
use dht_proto::{K_VALUE, MessageType};
use dht_routing::QueryConfig;
use dht_sim::{LookupReport, Sim, SimConfig, TableBuild, TableQuality, provide::peak_rss_bytes};
use serde::Serialize;

/// Rust's heap, counted: the live bytes are the provider's own memory (above their level
/// when it starts) in `dht-sim provide` and `dht-sim memory`.
#[global_allocator]
static HEAP: Cap<System> = Cap::new(System, usize::MAX);

/// Live bytes of Rust's heap now.
fn heap_bytes() -> u64 {
    HEAP.allocated() as u64
}

/// The JSON summary.
#[derive(Serialize)]
struct Summary {
    nodes: usize,
    lookups: usize,
    k: usize,
    seed: u64,
    build: &'static str,
    silent: f64,
    random_peers: f64,
    far_peers: f64,
    slow: f64,
    loss: f64,
    omit: f64,
    alpha: usize,
    beta: usize,
    exact_fraction: f64,
    success_fraction: f64,
    mean_recall: f64,
    errors: usize,
    find_node_rpcs_median: u64,
    find_node_rpcs_p95: u64,
    find_node_rpcs_mean: f64,
    rounds_median: u64,
    rounds_p95: u64,
    virtual_ms_median: u64,
    virtual_ms_p95: u64,
    table_quality: TableQuality,
    build_wall_secs: f64,
    lookups_wall_secs: f64,
    wall_secs: f64,
    peak_rss_bytes: u64,
    rpcs_sent: std::collections::BTreeMap<String, u64>,
}

fn lookup(args: &LookupArgs) -> Result<Summary, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let config = args.config();
    let runtime = dht_sim::runtime()?;
    let (sim, build_secs, report, lookups_secs) = runtime.block_on(async {
        let sim = Sim::build(config.clone()).await?;
        let build_secs = started.elapsed().as_secs_f64();
        let t = Instant::now();
        let report: LookupReport = sim.run_lookups(args.lookups, args.k).await;
        Ok::<_, dht_sim::SimError>((sim, build_secs, report, t.elapsed().as_secs_f64()))
    })?;
    let quality = sim.table_quality();
    let counts = sim.counts();
    let m = config.misbehaviour;
    Ok(Summary {
        nodes: report.nodes,
        lookups: report.lookups,
        k: report.k,
        seed: config.seed,
        build: match config.build {
            TableBuild::Realistic => "realistic",
            TableBuild::Empty => "empty",
            _ => "fast",
        },
        silent: m.silent,
        random_peers: m.random_peers,
        far_peers: m.far_peers,
        slow: m.slow,
        loss: config.loss,
        omit: config.omit,
        alpha: config.client.query.alpha,
        beta: config.client.query.beta,
        exact_fraction: report.exact_fraction,
        success_fraction: report.success_fraction,
        mean_recall: report.mean_recall,
        errors: report.errors,
        find_node_rpcs_median: report.find_node_rpcs_median,
        find_node_rpcs_p95: report.find_node_rpcs_p95,
        find_node_rpcs_mean: report.find_node_rpcs_mean,
        rounds_median: report.rounds_median,
        rounds_p95: report.rounds_p95,
        virtual_ms_median: report.virtual_ms_median,
        virtual_ms_p95: report.virtual_ms_p95,
        table_quality: quality,
        build_wall_secs: build_secs,
        lookups_wall_secs: lookups_secs,
        wall_secs: started.elapsed().as_secs_f64(),
        peak_rss_bytes: peak_rss_bytes(),
        rpcs_sent: counts.sent,
    })
}

fn print_table(s: &Summary) {
    let rows: Vec<(&str, String)> = vec![
        ("nodes", s.nodes.to_string()),
        ("lookups", s.lookups.to_string()),
        ("seed", s.seed.to_string()),
        ("tables", s.build.to_string()),
        (
            "misbehaving",
            format!(
                "silent {} random {} far {} slow {}; loss {}; omit {}",
                s.silent, s.random_peers, s.far_peers, s.slow, s.loss, s.omit
            ),
        ),
        (
            "exact (true k closest)",
            format!("{:.2}%", s.exact_fraction * 100.0),
        ),
        (
            "success (k closest answering)",
            format!("{:.2}%", s.success_fraction * 100.0),
        ),
        ("mean recall", format!("{:.4}", s.mean_recall)),
        (
            "FIND_NODE per lookup",
            format!(
                "median {}  p95 {}  mean {:.1}",
                s.find_node_rpcs_median, s.find_node_rpcs_p95, s.find_node_rpcs_mean
            ),
        ),
        (
            "rounds",
            format!("median {}  p95 {}", s.rounds_median, s.rounds_p95),
        ),
        (
            "virtual time per lookup",
            format!(
                "median {} ms  p95 {} ms",
                s.virtual_ms_median, s.virtual_ms_p95
            ),
        ),
        (
            "tables",
            format!(
                "fill {:.4}  full buckets {:.4}  mean size {:.1}",
                s.table_quality.fill, s.table_quality.full_buckets, s.table_quality.mean_len
            ),
        ),
        (
            "wall time",
            format!(
                "{:.1} s (build {:.1} s, lookups {:.1} s)",
                s.wall_secs, s.build_wall_secs, s.lookups_wall_secs
            ),
        ),
        (
            "peak RSS",
            format!("{:.1} MiB", s.peak_rss_bytes as f64 / 1048576.0),
        ),
        (
            "FIND_NODE sent (all)",
            s.rpcs_sent
                .get(MessageType::FindNode.as_str())
                .copied()
                .unwrap_or(0)
                .to_string(),
        ),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:<width$}  {v}");
    }
}

/// The simulator's command line.
#[derive(Parser)]
#[command(
    name = "dht-sim",
    version,
    about = "A deterministic simulator of the IPFS Amino DHT: lookups, or a provider's \
             provide and reprovide cycle, measured against the ground truth."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Builds a simulated network and runs lookups from random nodes to random keys,
    /// checked against the ground truth (the true k closest live nodes).
    Lookup(LookupArgs),
    /// Builds a simulated network, adds one provider node, provides N keys with the
    /// sweeping provider or the per-key baseline, then drops every record and lets one
    /// reprovide cycle pass; measures requests, placement (records on the true 20 closest
    /// live servers) and findability (find_providers from a random node).
    Provide(provide_cmd::ProvideArgs),
    /// The provider's own memory at several key counts, side by side: one
    /// `dht-sim provide --records count --preload` run per count (RocksDB keystore), each
    /// in a process of its own.
    Memory(memory_cmd::MemoryArgs),
}

/// How routing tables are filled.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Build {
    /// Tables filled directly with up to k random peers per bucket.
    Fast,
    /// Nodes join through bootstrap peers and real lookups.
    Realistic,
}

impl Build {
    fn table_build(self) -> TableBuild {
        match self {
            Build::Fast => TableBuild::Fast,
            Build::Realistic => TableBuild::Realistic,
        }
    }
}

/// A share or a probability: a number within 0..=1.
fn share(v: &str) -> Result<f64, String> {
    let f: f64 = v
        .parse()
        .map_err(|_| format!("cannot read {v:?} as a number"))?;
    if (0.0..=1.0).contains(&f) {
        Ok(f)
    } else {
        Err(format!("{f} is not within 0..=1"))
    }
}

/// `dht-sim lookup`'s options.
#[derive(clap::Args)]
struct LookupArgs {
    /// Nodes in the network.
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Lookups to run.
    #[arg(long, default_value_t = 1000)]
    lookups: usize,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the summary as JSON to this path.
    #[arg(long, value_name = "PATH")]
    json: Option<String>,
    /// How routing tables are filled.
    #[arg(long, value_enum, default_value_t = Build::Fast)]
    build: Build,
    /// Share of nodes that never answer.
    #[arg(long, default_value_t = 0.0, value_parser = share, value_name = "F")]
    silent: f64,
    /// Share of nodes answering with random peers.
    #[arg(long, default_value_t = 0.0, value_parser = share, value_name = "F")]
    random_peers: f64,
    /// Share of nodes answering with far peers.
    #[arg(long, default_value_t = 0.0, value_parser = share, value_name = "F")]
    far_peers: f64,
    /// Share of nodes answering 3 s late.
    #[arg(long, default_value_t = 0.0, value_parser = share, value_name = "F")]
    slow: f64,
    /// Probability that a message is lost.
    #[arg(long, default_value_t = 0.0, value_parser = share, value_name = "P")]
    loss: f64,
    /// Share of the peers it knows that every server leaves out of each answer.
    #[arg(long, default_value_t = 0.0, value_parser = share, value_name = "F")]
    omit: f64,
    /// Requests in flight per lookup.
    #[arg(long, default_value_t = QueryConfig::default().alpha)]
    alpha: usize,
    /// Convergence width of the lookup.
    #[arg(long, default_value_t = QueryConfig::default().beta)]
    beta: usize,
    /// Peers per lookup.
    #[arg(long, default_value_t = K_VALUE)]
    k: usize,
}

impl LookupArgs {
    fn config(&self) -> SimConfig {
        let config = SimConfig::default()
            .with_nodes(self.nodes)
            .with_seed(self.seed)
            .with_build(self.build.table_build())
            .with_silent(self.silent)
            .with_random_peers(self.random_peers)
            .with_far_peers(self.far_peers)
            .with_slow(self.slow)
            .with_loss(self.loss)
            .with_omit(self.omit);
        let query = QueryConfig::default()
            .with_alpha(self.alpha)
            .with_beta(self.beta);
        let client = config.client.clone().with_query(query);
        config.with_client(client)
    }
}

fn main() -> ExitCode {
    let args = match Cli::parse().command {
        Command::Provide(args) => return provide_cmd::main(args),
        Command::Memory(args) => return memory_cmd::main(&args),
        Command::Lookup(args) => args,
    };
    let summary = match lookup(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dht-sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    print_table(&summary);
    match &args.json {
        Some(path) => write_json(path, &summary),
        None => ExitCode::SUCCESS,
    }
}

/// Writes `value` as pretty JSON to `path` and says so; fails the command if it cannot.
fn write_json(path: &str, value: &impl Serialize) -> ExitCode {
    let written = serde_json::to_string_pretty(value)
        .map_err(|e| e.to_string())
        .and_then(|text| std::fs::write(path, text + "\n").map_err(|e| e.to_string()));
    match written {
        Ok(()) => {
            println!("written to {path}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dht-sim: cannot write {path}: {e}");
            ExitCode::FAILURE
        }
    }
}

mod provide_cmd {
    //! `dht-sim provide`: the sweep and the per-key baseline on the same simulated network.

    use std::{process::ExitCode, time::Duration, time::Instant};

    use dht_sim::{
        ProviderRecords, Sim, SimConfig,
        provide::{ProvideConfig, ProvideReport, Strategy, peak_rss_bytes, run_provide},
    };
    use serde::Serialize;

    use clap::ValueEnum;

    #[derive(Serialize)]
    struct Output {
        seed: u64,
        keystore: &'static str,
        records: &'static str,
        runs: Vec<Run>,
        /// sweep / per-key, when both ran.
        #[serde(skip_serializing_if = "Option::is_none")]
        find_node_ratio: Option<f64>,
        wall_secs: f64,
        peak_rss_bytes: u64,
    }

    #[derive(Serialize)]
    struct Run {
        #[serde(flatten)]
        report: ProvideReport,
        wall_secs: f64,
        peak_rss_bytes: u64,
    }

    /// Which provider announces the keys.
    #[derive(Clone, Copy, Debug, ValueEnum)]
    pub(super) enum StrategyArg {
        /// The sweeping provider.
        Sweep,
        /// The per-key baseline.
        PerKey,
        /// Both, one after the other on the same network, compared.
        Both,
    }

    /// The provider's keystore.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
    pub(super) enum KeystoreArg {
        /// In memory.
        Memory,
        /// RocksDB in a temporary directory (needs the `rocksdb` feature).
        Rocksdb,
    }

    impl KeystoreArg {
        fn as_str(self) -> &'static str {
            match self {
                KeystoreArg::Memory => "memory",
                KeystoreArg::Rocksdb => "rocksdb",
            }
        }
    }

    impl std::fmt::Display for KeystoreArg {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.as_str())
        }
    }

    /// What servers do with the provider records.
    #[derive(Clone, Copy, Debug, ValueEnum)]
    pub(super) enum RecordsArg {
        /// Servers keep records.
        Store,
        /// Servers count them only: placement and findability are not measured.
        Count,
        /// Servers keep the records of the keys checked (`--placement-sample`, the holder
        /// samples, `--findable-sample`) and count the others: placement and findability
        /// of millions of keys, measured on a sample.
        Sample,
    }

    /// `dht-sim provide`'s options.
    #[derive(clap::Args)]
    pub(super) struct ProvideArgs {
        /// Servers in the network.
        #[arg(long, alias = "nodes", default_value_t = 1000)]
        servers: usize,
        /// Keys to provide.
        #[arg(long, default_value_t = 10_000)]
        keys: u64,
        /// The provider (both: one after the other on the same network, compared).
        #[arg(long, value_enum, default_value_t = StrategyArg::Sweep)]
        strategy: StrategyArg,
        /// Share of servers replaced during the reprovide cycle.
        #[arg(long, default_value_t = 0.0, value_parser = super::share, value_name = "F")]
        churn: f64,
        /// Seed of every random draw.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Also write the report as JSON to this path.
        #[arg(long, value_name = "PATH")]
        json: Option<String>,
        /// The provider's keystore (RocksDB is the default where built with it).
        #[arg(long, value_enum, default_value_t = default_keystore())]
        keystore: KeystoreArg,
        /// What servers do with the records they receive.
        #[arg(long, value_enum, default_value_t = RecordsArg::Store)]
        records: RecordsArg,
        /// Write the keys to the keystore before the provider starts (sweep).
        #[arg(long)]
        preload: bool,
        /// Stop after the first provide.
        #[arg(long)]
        no_reprovide: bool,
        /// Keys whose placement is checked (0: every key).
        #[arg(long, default_value_t = 0, value_name = "N")]
        placement_sample: usize,
        /// Keys looked up with find_providers.
        #[arg(long, default_value_t = 1000, value_name = "N")]
        findable_sample: usize,
        /// The sweep's workers.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Reprovide interval, in hours.
        #[arg(long, default_value_t = 22.0, value_parser = positive_hours, value_name = "H")]
        interval_hours: f64,
        /// How routing tables are filled.
        #[arg(long, value_enum, default_value_t = super::Build::Fast)]
        build: super::Build,
        /// Share of servers that never answer.
        #[arg(long, default_value_t = 0.0, value_parser = super::share, value_name = "F")]
        silent: f64,
        /// Share of servers answering 3 s late.
        #[arg(long, default_value_t = 0.0, value_parser = super::share, value_name = "F")]
        slow: f64,
        /// Probability that a message is lost.
        #[arg(long, default_value_t = 0.0, value_parser = super::share, value_name = "P")]
        loss: f64,
        /// Share of the peers it knows that every server leaves out of each answer.
        #[arg(long, default_value_t = 0.0, value_parser = super::share, value_name = "F")]
        omit: f64,
        /// New keys per second arriving during the reprovide cycle, on top of --keys (sweep).
        #[arg(long, default_value_t = 0, value_name = "R")]
        ingest: u64,
        /// Share of the servers that speak the batched provide protocol
        /// (/amino-dht-rs/provide-batch/1.0.0): the sweep sends them batches, the others
        /// ADD_PROVIDER.
        #[arg(long, default_value_t = 0.0, value_parser = super::share, value_name = "F")]
        batch_share: f64,
        /// Write SVG plots of the run into this directory: record holders over the cycle,
        /// requests per minute by type, behind schedule, memory (one subdirectory per
        /// strategy with `--strategy both`).
        #[arg(long, value_name = "DIR")]
        plot: Option<String>,
    }

    fn default_keystore() -> KeystoreArg {
        if cfg!(feature = "rocksdb") {
            KeystoreArg::Rocksdb
        } else {
            KeystoreArg::Memory
        }
    }

    fn positive_hours(v: &str) -> Result<f64, String> {
        let h: f64 = v
            .parse()
            .map_err(|_| format!("cannot read {v:?} as a number"))?;
        if h > 0.0 && h.is_finite() {
            Ok(h)
        } else {
            Err(format!("{h} is not a positive number of hours"))
        }
    }

    /// What to run, from the options.
    struct Args {
        sim: SimConfig,
        strategies: Vec<Strategy>,
        config: ProvideConfig,
        json: Option<String>,
        plot: Option<String>,
        keystore: &'static str,
    }

    impl ProvideArgs {
        fn resolve(self) -> Result<Args, String> {
            if self.keystore == KeystoreArg::Rocksdb && !cfg!(feature = "rocksdb") {
                return Err("--keystore rocksdb: built without the rocksdb feature \
                            (cargo xtask sim provide enables it)"
                    .into());
            }
            let sim = SimConfig::default()
                .with_nodes(self.servers)
                .with_seed(self.seed)
                .with_build(self.build.table_build())
                .with_silent(self.silent)
                .with_slow(self.slow)
                .with_loss(self.loss)
                .with_omit(self.omit)
                .with_provide_batch_share(self.batch_share)
                .with_provider_records(match self.records {
                    RecordsArg::Store => ProviderRecords::Store,
                    RecordsArg::Count => ProviderRecords::Count,
                    RecordsArg::Sample => ProviderRecords::Sample,
                });
            let mut config = ProvideConfig::default()
                .with_churn(self.churn)
                .with_preload(self.preload)
                .with_reprovide(!self.no_reprovide)
                .with_placement_sample(self.placement_sample)
                .with_findable_sample(self.findable_sample)
                .with_workers(self.workers)
                .with_ingest(self.ingest)
                .with_timeline(self.plot.is_some())
                .with_interval(Duration::from_secs_f64(self.interval_hours * 3600.0));
            config.keys = self.keys;
            let strategies = match self.strategy {
                StrategyArg::Sweep => vec![Strategy::Sweep],
                StrategyArg::PerKey => vec![Strategy::PerKey],
                StrategyArg::Both => vec![Strategy::Sweep, Strategy::PerKey],
            };
            Ok(Args {
                sim,
                strategies,
                config,
                json: self.json,
                plot: self.plot,
                keystore: self.keystore.as_str(),
            })
        }
    }

    fn run_one(args: &Args, strategy: Strategy) -> Result<Run, Box<dyn std::error::Error>> {
        let started = Instant::now();
        let mut config = args.config.clone();
        config.strategy = strategy;
        config.memory.heap_bytes = Some(super::heap_bytes);
        let runtime = dht_sim::runtime()?;
        let progress = |phase: &str| {
            eprintln!(
                "[{:>7.1} s] {}: {phase}",
                started.elapsed().as_secs_f64(),
                strategy.as_str()
            );
        };
        let report = runtime.block_on(async {
            progress("building the network");
            let sim = Sim::build(args.sim.clone()).await?;
            // Removed when dropped, also on an error.
            let dir = tempfile::Builder::new()
                .prefix("dht-sim-provide-")
                .tempdir()?;
            let report = match args.keystore {
                #[cfg(feature = "rocksdb")]
                "rocksdb" => {
                    let store = std::sync::Arc::new(dht_provider_store::RocksStore::open(
                        dir.path().join("keystore"),
                        dht_provider_store::Config::default(),
                    )?);
                    let flushed = store.clone();
                    config.memory.after_preload = Some(std::sync::Arc::new(move || {
                        if let Err(e) = flushed.flush() {
                            tracing::warn!(error = %e, "flushing the preloaded keystore failed");
                        }
                    }));
                    let probe = store.clone();
                    config.memory.store_bytes = Some(std::sync::Arc::new(move || {
                        probe.rocksdb_memory().map_or([0; 3], |m| {
                            [
                                m.memtables_bytes,
                                m.block_cache_bytes,
                                m.table_readers_bytes,
                            ]
                        })
                    }));
                    run_provide(&sim, store, &config, progress).await?
                }
                _ => {
                    let store = dht_provider_store::MemoryStore::new();
                    run_provide(&sim, store, &config, progress).await?
                }
            };
            drop(dir);
            Ok::<_, Box<dyn std::error::Error>>(report)
        })?;
        Ok(Run {
            report,
            wall_secs: started.elapsed().as_secs_f64(),
            peak_rss_bytes: peak_rss_bytes(),
        })
    }

    fn opt(v: Option<f64>) -> String {
        v.map_or("-".into(), |f| format!("{f:.4}"))
    }

    fn print(out: &Output) {
        let mut rows: Vec<(String, Vec<String>)> = Vec::new();
        let runs = &out.runs;
        let col = |f: &dyn Fn(&Run) -> String| runs.iter().map(f).collect::<Vec<_>>();
        rows.push(("strategy".into(), col(&|r| r.report.strategy.to_string())));
        rows.push(("servers".into(), col(&|r| r.report.servers.to_string())));
        rows.push(("keys".into(), col(&|r| r.report.keys.to_string())));
        rows.push(("churn".into(), col(&|r| r.report.churn.to_string())));
        rows.push((
            "batch share".into(),
            col(&|r| r.report.provide_batch_share.to_string()),
        ));
        for (name, phase) in [("provide", false), ("reprovide", true)] {
            let get = |r: &Run| {
                if phase {
                    r.report.reprovide.clone()
                } else {
                    Some(r.report.provide.clone())
                }
            };
            if runs.iter().all(|r| get(r).is_none()) {
                continue;
            }
            let f = |g: fn(&dht_sim::provide::PhaseReport) -> String| {
                runs.iter()
                    .map(|r| get(r).as_ref().map_or("-".into(), g))
                    .collect::<Vec<_>>()
            };
            rows.push((
                format!("{name}: FIND_NODE"),
                f(|p| p.find_node_rpcs.to_string()),
            ));
            rows.push((
                format!("{name}: ADD_PROVIDER"),
                f(|p| p.add_provider_rpcs.to_string()),
            ));
            rows.push((
                format!("{name}: provide batches"),
                f(|p| p.provide_batches.to_string()),
            ));
            rows.push((
                format!("{name}: records in batches"),
                f(|p| p.batch_records.to_string()),
            ));
            rows.push((
                format!("{name}: record messages per key"),
                f(|p| format!("{:.3}", p.record_messages_per_key)),
            ));
            rows.push((
                format!("{name}: record bytes per key"),
                f(|p| format!("{:.1}", p.record_bytes_per_key)),
            ));
            rows.push((format!("{name}: lookups"), f(|p| p.lookups.to_string())));
            rows.push((
                format!("{name}: peers contacted"),
                f(|p| p.distinct_peers_contacted.to_string()),
            ));
            rows.push((
                format!("{name}: placement >=19/20"),
                f(|p| opt(p.placement_fraction)),
            ));
            rows.push((
                format!("{name}: placement 20/20"),
                f(|p| opt(p.exact_placement_fraction)),
            ));
            rows.push((format!("{name}: mean holders"), f(|p| opt(p.mean_holders))));
            rows.push((
                format!("{name}: records per key"),
                f(|p| format!("{:.2}", p.records_per_key)),
            ));
            rows.push((
                format!("{name}: p5 holders"),
                f(|p| p.p5_holders.map_or("-".into(), |n| n.to_string())),
            ));
            rows.push((format!("{name}: findable"), f(|p| opt(p.findable_fraction))));
            rows.push((
                format!("{name}: keys failed"),
                f(|p| p.keys_failed.to_string()),
            ));
            rows.push((
                format!("{name}: virtual time"),
                f(|p| format!("{:.0} s", p.virtual_secs)),
            ));
            rows.push((
                format!("{name}: wall time"),
                f(|p| format!("{:.1} s", p.wall_secs)),
            ));
            rows.push((
                format!("{name}: churn left/joined"),
                f(|p| format!("{}/{}", p.churn.left, p.churn.joined)),
            ));
        }
        rows.push((
            "max behind schedule".into(),
            col(&|r| {
                r.report
                    .max_behind_secs
                    .map_or("-".into(), |s| format!("{s} s"))
            }),
        ));
        if runs.iter().any(|r| r.report.ingested_keys > 0) {
            rows.push((
                "ingested keys".into(),
                col(&|r| r.report.ingested_keys.to_string()),
            ));
            rows.push((
                "ingest: longest first provide".into(),
                col(&|r| {
                    r.report
                        .ingest_max_first_provide_secs
                        .map_or("-".into(), |s| format!("{s:.0} s"))
                }),
            ));
            rows.push((
                "ingest: keys over 10 min".into(),
                col(&|r| r.report.ingest_late_keys.to_string()),
            ));
            rows.push((
                "ingest: keys failed".into(),
                col(&|r| r.report.ingest_failed_keys.to_string()),
            ));
        }
        rows.push(("slices".into(), col(&|r| r.report.slices.to_string())));
        rows.push((
            "mean region prefix".into(),
            col(&|r| format!("{:.2}", r.report.average_region_prefix_len)),
        ));
        rows.push((
            "wall time".into(),
            col(&|r| format!("{:.1} s", r.wall_secs)),
        ));
        rows.push((
            "RSS at provider start".into(),
            col(&|r| {
                format!(
                    "{:.1} MiB",
                    r.report.rss_before_provider_bytes as f64 / 1048576.0
                )
            }),
        ));
        let mib =
            |b: Option<u64>| b.map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0));
        rows.push((
            "provider memory peak".into(),
            col(&|r| mib(r.report.provider_memory.total_bytes)),
        ));
        rows.push((
            "  heap above its start".into(),
            col(&|r| mib(r.report.provider_memory.heap_bytes)),
        ));
        rows.push((
            "  RocksDB".into(),
            col(&|r| mib(r.report.provider_memory.store_bytes)),
        ));
        rows.push((
            "    memtables (most)".into(),
            col(&|r| mib(r.report.provider_memory.store_memtables_bytes)),
        ));
        rows.push((
            "    block cache (most)".into(),
            col(&|r| mib(r.report.provider_memory.store_block_cache_bytes)),
        ));
        rows.push((
            "    table readers (most)".into(),
            col(&|r| mib(r.report.provider_memory.store_table_readers_bytes)),
        ));
        rows.push((
            "network heap (at start)".into(),
            col(&|r| mib(r.report.provider_memory.heap_at_start_bytes)),
        ));
        rows.push((
            "peak RSS (process)".into(),
            col(&|r| format!("{:.1} MiB", r.peak_rss_bytes as f64 / 1048576.0)),
        ));
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, vs) in rows {
            let cells: Vec<String> = vs.iter().map(|v| format!("{v:>14}")).collect();
            println!("{k:<width$}  {}", cells.join(" "));
        }
        if let Some(ratio) = out.find_node_ratio {
            println!(
                "sweep FIND_NODE / per-key FIND_NODE: {:.5} ({:.3}%)",
                ratio,
                ratio * 100.0
            );
        }
    }

    pub(super) fn main(args: ProvideArgs) -> ExitCode {
        let args = match args.resolve() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("dht-sim provide: {e}");
                return ExitCode::FAILURE;
            }
        };
        let started = Instant::now();
        let mut runs = Vec::new();
        for &s in &args.strategies {
            match run_one(&args, s) {
                Ok(r) => runs.push(r),
                Err(e) => {
                    eprintln!("dht-sim provide: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let fin = |s: &str| {
            runs.iter()
                .find(|r| r.report.strategy == s)
                .map(|r| r.report.find_node_rpcs as f64)
        };
        let find_node_ratio = match (fin("sweep"), fin("per-key")) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let out = Output {
            seed: args.sim.seed,
            keystore: args.keystore,
            records: match args.sim.provider_records {
                ProviderRecords::Count => "count",
                ProviderRecords::Sample => "sample",
                _ => "store",
            },
            runs,
            find_node_ratio,
            wall_secs: started.elapsed().as_secs_f64(),
            peak_rss_bytes: peak_rss_bytes(),
        };
        print(&out);
        if let Some(dir) = &args.plot {
            for run in &out.runs {
                let mut dir = std::path::PathBuf::from(dir);
                if out.runs.len() > 1 {
                    dir.push(run.report.strategy);
                }
                match dht_sim::plot::write_plots(&run.report, &dir) {
                    Ok(_) => println!("plots written to {}", dir.display()),
                    Err(e) => {
                        eprintln!("dht-sim provide: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
        }
        match &args.json {
            Some(path) => super::write_json(path, &out),
            None => ExitCode::SUCCESS,
        }
    }
}

mod memory_cmd {
    //! `dht-sim memory`: `dht-sim provide` at several key counts, the provider's memory side
    //! by side.

    use std::{
        os::fd::AsFd,
        process::{Command, ExitCode, Stdio},
    };

    use serde::Serialize;
    use serde_json::Value;

    /// `dht-sim memory`'s options.
    #[derive(clap::Args)]
    pub(super) struct MemoryArgs {
        /// Servers in the network.
        #[arg(long, default_value_t = 10_000)]
        servers: usize,
        /// Key counts, one run each (comma-separated).
        #[arg(
            long,
            value_delimiter = ',',
            default_values_t = [3_000_000u64, 10_000_000, 30_000_000]
        )]
        keys: Vec<u64>,
        /// Seed of every random draw.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Also write the table as JSON to this path.
        #[arg(long, value_name = "PATH")]
        json: Option<String>,
        /// Further options of every `dht-sim provide` run (after `--`).
        #[arg(last = true)]
        provide: Vec<String>,
    }

    /// One key count's figures, in bytes.
    #[derive(Serialize)]
    struct Row {
        keys: u64,
        /// The most of heap growth plus RocksDB's memory, in one sample.
        provider_peak_bytes: u64,
        provider_heap_bytes: u64,
        rocksdb_bytes: u64,
        rocksdb_memtables_bytes: u64,
        rocksdb_block_cache_bytes: u64,
        rocksdb_table_readers_bytes: u64,
        network_heap_bytes: u64,
        /// Peak RSS of the process minus its RSS when the provider started.
        rss_growth_bytes: u64,
        samples: u64,
        wall_secs: f64,
    }

    #[derive(Serialize)]
    struct Table {
        servers: usize,
        seed: u64,
        rows: Vec<Row>,
        /// The largest key count's provider peak over the smallest's.
        largest_over_smallest: Option<f64>,
    }

    /// Runs `dht-sim provide` for `keys` in a child process; reads its JSON report.
    fn run(args: &MemoryArgs, keys: u64) -> Result<Row, String> {
        // Removed with its directory when the run is read (or fails).
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let json = dir.path().join(format!("memory-{keys}.json"));
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        // The child's table goes to stderr: stdout is the table of all runs.
        let stdout = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map_err(|e| e.to_string())?;
        let status = Command::new(exe)
            .args([
                "provide",
                "--records",
                "count",
                "--preload",
                "--keystore",
                "rocksdb",
            ])
            .args(["--servers", &args.servers.to_string()])
            .args(["--keys", &keys.to_string()])
            .args(["--seed", &args.seed.to_string()])
            .arg("--json")
            .arg(&json)
            .args(&args.provide)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .status()
            .map_err(|e| e.to_string())?;
        let text = std::fs::read_to_string(&json);
        if !status.success() {
            return Err(format!("the run of {keys} keys failed: {status}"));
        }
        let report: Value =
            serde_json::from_str(&text.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        let run = &report["runs"][0];
        let mem = &run["provider_memory"];
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        Ok(Row {
            keys,
            provider_peak_bytes: n(&mem["total_bytes"]),
            provider_heap_bytes: n(&mem["heap_bytes"]),
            rocksdb_bytes: n(&mem["store_bytes"]),
            rocksdb_memtables_bytes: n(&mem["store_memtables_bytes"]),
            rocksdb_block_cache_bytes: n(&mem["store_block_cache_bytes"]),
            rocksdb_table_readers_bytes: n(&mem["store_table_readers_bytes"]),
            network_heap_bytes: n(&mem["heap_at_start_bytes"]),
            rss_growth_bytes: n(&run["peak_rss_bytes"])
                .saturating_sub(n(&run["rss_before_provider_bytes"])),
            samples: n(&mem["samples"]),
            wall_secs: run["wall_secs"].as_f64().unwrap_or(0.0),
        })
    }

    fn print(table: &Table) {
        let mib = |b: u64| format!("{:.1} MiB", b as f64 / 1048576.0);
        type Field = fn(&Row) -> u64;
        let rows: [(&str, Field); 9] = [
            ("provider peak (heap + RocksDB)", |r| r.provider_peak_bytes),
            ("  heap above its start", |r| r.provider_heap_bytes),
            ("  RocksDB", |r| r.rocksdb_bytes),
            ("    memtables", |r| r.rocksdb_memtables_bytes),
            ("    block cache", |r| r.rocksdb_block_cache_bytes),
            ("    table readers", |r| r.rocksdb_table_readers_bytes),
            ("network heap (provider start)", |r| r.network_heap_bytes),
            ("RSS growth (upper bound)", |r| r.rss_growth_bytes),
            ("memory samples", |r| r.samples),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let cells = |f: &dyn Fn(&Row) -> String| {
            table
                .rows
                .iter()
                .map(|r| format!("{:>14}", f(r)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!("{:<width$}  {}", "keys", cells(&|r| r.keys.to_string()));
        for (name, get) in rows {
            let text = if name == "memory samples" {
                cells(&|r| get(r).to_string())
            } else {
                cells(&|r| mib(get(r)))
            };
            println!("{name:<width$}  {text}");
        }
        println!(
            "{:<width$}  {}",
            "wall time",
            cells(&|r| format!("{:.1} s", r.wall_secs))
        );
        if let Some(ratio) = table.largest_over_smallest {
            println!("largest / smallest provider peak: {ratio:.3}");
        }
    }

    pub(super) fn main(args: &MemoryArgs) -> ExitCode {
        if !cfg!(feature = "rocksdb") {
            eprintln!(
                "dht-sim memory: built without the rocksdb feature (cargo xtask sim memory \
                 enables it)"
            );
            return ExitCode::FAILURE;
        }
        let mut rows = Vec::new();
        for &keys in &args.keys {
            match run(args, keys) {
                Ok(row) => rows.push(row),
                Err(e) => {
                    eprintln!("dht-sim memory: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let peak = |r: Option<&Row>| r.map(|r| r.provider_peak_bytes as f64);
        let by_keys = |f: fn(&Row, &Row) -> std::cmp::Ordering| rows.iter().max_by(|a, b| f(a, b));
        let largest = peak(by_keys(|a, b| a.keys.cmp(&b.keys)));
        let smallest = peak(by_keys(|a, b| b.keys.cmp(&a.keys)));
        let largest_over_smallest = match (largest, smallest) {
            (Some(l), Some(s)) if s > 0.0 && rows.len() > 1 => Some(l / s),
            _ => None,
        };
        let table = Table {
            servers: args.servers,
            seed: args.seed,
            rows,
            largest_over_smallest,
        };
        print(&table);
        match &args.json {
            Some(path) => super::write_json(path, &table),
            None => ExitCode::SUCCESS,
        }
    }
}
