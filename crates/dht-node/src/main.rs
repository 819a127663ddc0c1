//! The `dht-node` binary.
//!
//! For now one subcommand, `devnet`: many real nodes on 127.0.0.1 in one process, one of
//! which provides random CIDs that the others then look up.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use dht_node::devnet::{self, DevnetConfig, Strategy};
use indicatif::{ProgressBar, ProgressStyle};

/// An IPFS Amino DHT node.
#[derive(Debug, Parser)]
#[command(name = "dht-node", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Starts N nodes on 127.0.0.1 in this process, provides K random CIDs from one of them,
    /// looks a sample up from the others and prints what it cost.
    Devnet(DevnetArgs),
}

#[derive(Debug, clap::Args)]
struct DevnetArgs {
    /// Nodes to start.
    #[arg(long, default_value_t = 50)]
    nodes: usize,
    /// Random CIDs node 0 provides.
    #[arg(long, default_value_t = 20_000)]
    keys: usize,
    /// Keys looked up afterwards, each from a random other node.
    #[arg(long, default_value_t = 200)]
    sample: usize,
    /// How node 0 provides.
    #[arg(long, value_enum, default_value_t = StrategyArg::Sweep)]
    strategy: StrategyArg,
    /// Seed of the keys, the bootstrap choices and the sample.
    #[arg(long)]
    seed: Option<u64>,
    /// Extra peers (besides node 0) each node bootstraps from.
    #[arg(long, default_value_t = 2)]
    bootstrap_peers: usize,
    /// Most seconds spent on extra self-lookup rounds once every node joined.
    #[arg(long, default_value_t = 10)]
    settle_secs: u64,
    /// Sweep workers (jobs at once).
    #[arg(long)]
    workers: Option<usize>,
    /// ADD_PROVIDER messages in flight to one peer at once (sweep).
    #[arg(long)]
    sends_per_peer: Option<usize>,
    /// Keys provided at once by the per-key strategy.
    #[arg(long)]
    parallelism: Option<usize>,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StrategyArg {
    /// Sweep the keyspace region by region (SweepingProvider).
    Sweep,
    /// One DHT walk per key (LegacyProvider, the baseline).
    PerKey,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    match cli.command {
        Command::Devnet(args) => runtime.block_on(run_devnet(args)),
    }
}

async fn run_devnet(args: DevnetArgs) -> anyhow::Result<()> {
    let mut config = DevnetConfig {
        nodes: args.nodes,
        keys: args.keys,
        sample: args.sample,
        strategy: match args.strategy {
            StrategyArg::Sweep => Strategy::Sweep,
            StrategyArg::PerKey => Strategy::PerKey,
        },
        bootstrap_peers: args.bootstrap_peers,
        settle_timeout: Duration::from_secs(args.settle_secs),
        ..DevnetConfig::default()
    };
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if let Some(workers) = args.workers {
        config.sweep = config.sweep.with_workers(workers);
    }
    if let Some(n) = args.sends_per_peer {
        config.sweep.sends_per_peer = n.max(1);
    }
    if let Some(n) = args.parallelism {
        config.legacy = config.legacy.with_parallelism(n);
    }

    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(config.keys as u64)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "providing {bar:40} {pos}/{len} keys, {per_sec}, {elapsed_precise} (eta {eta})",
        )
        .context("progress bar template")?,
    );
    let started = Instant::now();
    let report = devnet::run(&config, |provided, total| {
        bar.set_length(total);
        bar.set_position(provided);
    })
    .await
    .context("devnet")?;
    bar.finish_and_clear();
    let wall = started.elapsed();

    #[allow(clippy::print_stdout)]
    {
        print!("{report}");
        println!("wall time {:.2} s", wall.as_secs_f64());
    }
    if report.found < report.sampled {
        anyhow::bail!(
            "{} of {} sampled keys were not found",
            report.sampled - report.found,
            report.sampled
        );
    }
    Ok(())
}
