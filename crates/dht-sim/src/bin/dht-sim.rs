//! The simulator's command line: `dht-sim lookup --nodes N --lookups M [...]` and
//! `dht-sim provide --servers S --keys N --strategy sweep|per-key|both [...]`.

// A command-line tool: its output is its interface.
#![allow(clippy::print_stdout)]

use std::{process::ExitCode, time::Instant};

use dht_proto::{K_VALUE, MessageType};
use dht_routing::QueryConfig;
use dht_sim::{LookupReport, Sim, SimConfig, TableBuild, TableQuality, provide::peak_rss_bytes};
use serde::Serialize;

const USAGE: &str = "\
usage: dht-sim lookup [options]
       dht-sim provide [options]     (dht-sim provide --help)

Builds a simulated network and runs lookups from random nodes to random keys, checked
against the ground truth (the true k closest live nodes).

options:
  --nodes N            nodes in the network (default 1000)
  --lookups M          lookups to run (default 1000)
  --seed S             seed of every random draw (default 0)
  --json PATH          also write the summary as JSON to PATH
  --build MODE         fast (tables filled directly, default) or realistic (nodes join
                       through bootstrap peers and real lookups)
  --silent F           share of nodes that never answer (default 0)
  --random-peers F     share of nodes answering with random peers (default 0)
  --far-peers F        share of nodes answering with far peers (default 0)
  --slow F             share of nodes answering 3 s late (default 0)
  --loss P             probability that a message is lost (default 0)
  --alpha A            requests in flight per lookup (default 10)
  --beta B             convergence width of the lookup (default 3)
  --k K                peers per lookup (default 20)
";

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

struct Args {
    config: SimConfig,
    lookups: usize,
    k: usize,
    json: Option<String>,
}

/// A flag's value as a number, or an error naming the flag.
fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String> {
    v.parse().map_err(|_| format!("{flag}: cannot read {v:?}"))
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut config = SimConfig::default();
    let mut query = QueryConfig::default();
    let (mut lookups, mut k, mut json) = (1000usize, K_VALUE, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--nodes" => config = config.nodes(num(flag, value()?)?),
            "--lookups" => lookups = num(flag, value()?)?,
            "--seed" => config = config.seed(num(flag, value()?)?),
            "--json" => json = Some(value()?),
            "--build" => {
                config = config.build(match value()?.as_str() {
                    "fast" => TableBuild::Fast,
                    "realistic" => TableBuild::Realistic,
                    other => return Err(format!("--build: unknown mode {other:?}")),
                });
            }
            "--silent" => config = config.silent(num(flag, value()?)?),
            "--random-peers" => config = config.random_peers(num(flag, value()?)?),
            "--far-peers" => config = config.far_peers(num(flag, value()?)?),
            "--slow" => config = config.slow(num(flag, value()?)?),
            "--loss" => config = config.loss(num(flag, value()?)?),
            "--alpha" => query = query.with_alpha(num(flag, value()?)?),
            "--beta" => query = query.with_beta(num(flag, value()?)?),
            "--k" => k = num(flag, value()?)?,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    let client = config.client.clone().with_query(query);
    Ok(Args {
        config: config.client(client),
        lookups,
        k,
        json,
    })
}

fn lookup(args: Args) -> Result<Summary, Box<dyn std::error::Error>> {
    let started = Instant::now();
    let config = args.config;
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
                "silent {} random {} far {} slow {}; loss {}",
                s.silent, s.random_peers, s.far_peers, s.slow, s.loss
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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        return ExitCode::FAILURE;
    };
    match cmd.as_str() {
        "lookup" => {}
        "provide" => return provide_cmd::main(rest),
        "help" | "--help" | "-h" => {
            eprint!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprint!("{USAGE}");
            eprintln!("unknown command {other:?}");
            return ExitCode::FAILURE;
        }
    }
    let args = match parse(rest) {
        Ok(args) => args,
        Err(e) => {
            eprint!("{USAGE}");
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let json = args.json.clone();
    let summary = match lookup(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dht-sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    print_table(&summary);
    match json {
        Some(path) => write_json(&path, &summary),
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
        ProviderRecords, Sim, SimConfig, TableBuild,
        provide::{ProvideConfig, ProvideReport, Strategy, peak_rss_bytes, run_provide},
    };
    use serde::Serialize;

    use super::num;

    const USAGE: &str = "\
usage: dht-sim provide [options]

Builds a simulated network, adds one provider node, provides N keys with the sweeping
provider or the per-key baseline, then drops every record and lets one reprovide cycle
pass; measures requests, placement (records on the true 20 closest live servers) and
findability (find_providers from a random node).

options:
  --servers S          servers in the network (default 1000)
  --keys N             keys to provide (default 10000)
  --strategy X         sweep, per-key, or both (one after the other on the same network,
                       compared; default sweep)
  --churn F            share of servers replaced during the reprovide cycle (default 0)
  --seed S             seed of every random draw (default 0)
  --json PATH          also write the report as JSON to PATH
  --keystore K         memory or rocksdb (the default where built with it; a temporary
                       directory)
  --records R          store (servers keep records; default) or count (servers count them
                       only: placement and findability are not measured)
  --preload            write the keys to the keystore before the provider starts (sweep)
  --no-reprovide       stop after the first provide
  --placement-sample N keys whose placement is checked (default 0: every key)
  --findable-sample N  keys looked up with find_providers (default 1000)
  --workers W          the sweep's workers (default 4)
  --interval-hours H   reprovide interval (default 22)
  --build MODE         fast (default) or realistic
  --silent F           share of servers that never answer (default 0)
  --slow F             share of servers answering 3 s late (default 0)
  --loss P             probability that a message is lost (default 0)
";

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

    struct Args {
        sim: SimConfig,
        strategies: Vec<Strategy>,
        config: ProvideConfig,
        json: Option<String>,
        keystore: &'static str,
    }

    fn parse(args: &[String]) -> Result<Args, String> {
        let mut sim = SimConfig::default();
        let mut config = ProvideConfig::default();
        let mut strategies = vec![Strategy::Sweep];
        let mut json = None;
        let mut keystore = if cfg!(feature = "rocksdb") {
            "rocksdb"
        } else {
            "memory"
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag.as_str() {
                "--servers" | "--nodes" => sim = sim.nodes(num(flag, value()?)?),
                "--keys" => config.keys = num(flag, value()?)?,
                "--strategy" => {
                    strategies = match value()?.as_str() {
                        "sweep" => vec![Strategy::Sweep],
                        "per-key" => vec![Strategy::PerKey],
                        "both" => vec![Strategy::Sweep, Strategy::PerKey],
                        other => return Err(format!("--strategy: unknown {other:?}")),
                    }
                }
                "--churn" => config = config.churn(num(flag, value()?)?),
                "--seed" => sim = sim.seed(num(flag, value()?)?),
                "--json" => json = Some(value()?),
                "--keystore" => {
                    keystore = match value()?.as_str() {
                        "memory" => "memory",
                        "rocksdb" if cfg!(feature = "rocksdb") => "rocksdb",
                        "rocksdb" => {
                            return Err("--keystore rocksdb: built without the rocksdb \
                                        feature (cargo xtask sim provide enables it)"
                                .into());
                        }
                        other => return Err(format!("--keystore: unknown {other:?}")),
                    }
                }
                "--records" => {
                    sim = sim.provider_records(match value()?.as_str() {
                        "store" => ProviderRecords::Store,
                        "count" => ProviderRecords::Count,
                        other => return Err(format!("--records: unknown {other:?}")),
                    })
                }
                "--preload" => config = config.preload(true),
                "--no-reprovide" => config = config.reprovide(false),
                "--placement-sample" => config = config.placement_sample(num(flag, value()?)?),
                "--findable-sample" => config = config.findable_sample(num(flag, value()?)?),
                "--workers" => config = config.workers(num(flag, value()?)?),
                "--interval-hours" => {
                    let h: f64 = num(flag, value()?)?;
                    if !(h > 0.0 && h.is_finite()) {
                        return Err(format!("--interval-hours: {h} is not a positive number"));
                    }
                    config = config.interval(Duration::from_secs_f64(h * 3600.0));
                }
                "--build" => {
                    sim = sim.build(match value()?.as_str() {
                        "fast" => TableBuild::Fast,
                        "realistic" => TableBuild::Realistic,
                        other => return Err(format!("--build: unknown mode {other:?}")),
                    });
                }
                "--silent" => sim = sim.silent(num(flag, value()?)?),
                "--slow" => sim = sim.slow(num(flag, value()?)?),
                "--loss" => sim = sim.loss(num(flag, value()?)?),
                "--help" | "-h" => return Err(String::new()),
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        Ok(Args {
            sim,
            strategies,
            config,
            json,
            keystore,
        })
    }

    fn run_one(args: &Args, strategy: Strategy) -> Result<Run, Box<dyn std::error::Error>> {
        let started = Instant::now();
        let mut config = args.config.clone();
        config.strategy = strategy;
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
            let dir = tempfile_dir()?;
            let report = match args.keystore {
                #[cfg(feature = "rocksdb")]
                "rocksdb" => {
                    let store = dht_provider_store::RocksStore::open(
                        dir.join("keystore"),
                        dht_provider_store::Config::default(),
                    )?;
                    run_provide(&sim, store, &config, progress).await?
                }
                _ => {
                    let store = dht_provider_store::MemoryStore::new();
                    run_provide(&sim, store, &config, progress).await?
                }
            };
            let _ = std::fs::remove_dir_all(&dir);
            Ok::<_, Box<dyn std::error::Error>>(report)
        })?;
        Ok(Run {
            report,
            wall_secs: started.elapsed().as_secs_f64(),
            peak_rss_bytes: peak_rss_bytes(),
        })
    }

    /// A fresh directory under the system's temporary directory.
    fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
        let dir = std::env::temp_dir().join(format!(
            "dht-sim-provide-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
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

    pub(super) fn main(rest: &[String]) -> ExitCode {
        let args = match parse(rest) {
            Ok(a) => a,
            Err(e) => {
                eprint!("{USAGE}");
                if e.is_empty() {
                    return ExitCode::SUCCESS;
                }
                eprintln!("{e}");
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
                _ => "store",
            },
            runs,
            find_node_ratio,
            wall_secs: started.elapsed().as_secs_f64(),
            peak_rss_bytes: peak_rss_bytes(),
        };
        print(&out);
        match &args.json {
            Some(path) => super::write_json(path, &out),
            None => ExitCode::SUCCESS,
        }
    }
}
