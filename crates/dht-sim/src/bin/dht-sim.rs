//! The simulator's command line: `dht-sim lookup --nodes N --lookups M [...]`.

// A command-line tool: its output is its interface.
#![allow(clippy::print_stdout)]

use std::{process::ExitCode, time::Instant};

use dht_proto::{K_VALUE, MessageType};
use dht_routing::QueryConfig;
use dht_sim::{LookupReport, Sim, SimConfig, TableBuild, TableQuality};
use serde::Serialize;

const USAGE: &str = "\
usage: dht-sim lookup [options]

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
        fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("{flag}: cannot read {v:?}"))
        }
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

/// Peak resident memory of this process (`VmHWM`), in bytes; 0 where unknown.
fn peak_rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
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
    if let Some(path) = json {
        let written = serde_json::to_string_pretty(&summary)
            .map_err(|e| e.to_string())
            .and_then(|text| std::fs::write(&path, text + "\n").map_err(|e| e.to_string()));
        match written {
            Ok(()) => println!("summary written to {path}"),
            Err(e) => {
                eprintln!("dht-sim: cannot write {path}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
