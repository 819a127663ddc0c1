//! `cargo xtask bench server`: how many provider records one server stores per second.
//!
//! One `dht-node` server in this process, on RocksDB in a temporary directory (the node's
//! default store settings), and `--senders` peers of their own (each its own libp2p
//! transport, its own TCP connection over 127.0.0.1) sending it ADD_PROVIDER messages, each
//! at most `--in-flight` at a time, `--records` in all. A run ends when the server has
//! stored the last record of every sender (read back from its store), so the figure counts
//! records stored, not messages received. The server's per-peer rate limit is off; its other
//! limits are the defaults.
//!
//! Two runs side by side, in this order, on fresh directories: **direct**, each request's
//! record written to RocksDB by its own call (the node before the grouped writer), and
//! **grouped**, the records of concurrent requests committed together by the node's
//! [`GroupWriter`](dht_provider_store::GroupWriter) (`NodeBuilder::group_writes`). It prints records per
//! second, the process's CPU seconds per 10,000 records (server and senders: the machine is
//! shared, say so with the figures) and the ratio grouped ÷ direct.
//!
//! Run with `cargo xtask bench server [--senders N] [--records R] [--in-flight F] [--runs K]`.

// A benchmark's output is its interface.
#![allow(clippy::print_stdout)]

#[allow(dead_code)]
#[path = "../devnet/cpu.rs"]
mod cpu;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use dht_handler::HandlerConfig;
use dht_node::{
    builder::NodeBuilder,
    devnet::random_cid,
    transport::{self, KadConfig, Mode, TransportConfig, TransportHandle},
};
use dht_proto::{Multiaddr, PeerInfo, Request};
use dht_provider_store::{Config as StoreConfig, ProviderStore, UnixSecs};
use futures::{StreamExt, stream::FuturesUnordered};
use libp2p::identity::Keypair;
use rand::{SeedableRng, rngs::StdRng};

/// The command line.
#[derive(Debug, Parser)]
#[command(about = "Provider records one server stores per second, direct writes beside grouped")]
struct Args {
    /// Peers sending ADD_PROVIDER, each over its own connection.
    #[arg(long, default_value_t = 64)]
    senders: usize,
    /// Records sent in all, per run.
    #[arg(long, default_value_t = 200_000)]
    records: usize,
    /// ADD_PROVIDER messages each sender has queued at a time.
    #[arg(long, default_value_t = 32)]
    in_flight: usize,
    /// Runs of each side (alternating); medians are printed.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    // `cargo bench` passes `--bench` to every bench binary.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One run's figures.
#[derive(Clone, Copy, Debug)]
struct Run {
    records: usize,
    wall: Duration,
    cpu: Option<Duration>,
}

impl Run {
    fn per_sec(&self) -> f64 {
        self.records as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn cpu_per_10k(&self) -> Option<f64> {
        self.cpu
            .map(|c| c.as_secs_f64() * 10_000.0 / self.records.max(1) as f64)
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.senders == 0 || args.records < args.senders || args.in_flight == 0 {
        bail!("--senders, --in-flight and --records / --senders must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(args))
}

async fn bench(args: Args) -> Result<()> {
    println!(
        "server bench: {} senders, {} ADD_PROVIDER records per run, {} in flight per sender, {} run(s) per side",
        args.senders, args.records, args.in_flight, args.runs
    );
    let mut direct = Vec::new();
    let mut grouped = Vec::new();
    for round in 0..args.runs {
        for group in [false, true] {
            let run = one_run(&args, group, round as u64).await?;
            println!(
                "  run {}: {:<8} {:>9.0} records/s ({:.2} s)",
                round + 1,
                side_name(group),
                run.per_sec(),
                run.wall.as_secs_f64()
            );
            if group {
                grouped.push(run);
            } else {
                direct.push(run);
            }
        }
    }
    let (d, g) = (median(&direct), median(&grouped));
    println!();
    println!(
        "{:<34} {:>12} {:>12} {:>8}",
        "", "direct", "grouped", "ratio"
    );
    println!(
        "{:<34} {:>12.0} {:>12.0} {:>7.2}x",
        "records stored per second (median)",
        d.per_sec(),
        g.per_sec(),
        g.per_sec() / d.per_sec().max(1e-9)
    );
    let fmt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
    let cpu_ratio = match (d.cpu_per_10k(), g.cpu_per_10k()) {
        (Some(d), Some(g)) if d > 0.0 => format!("{:.2}x", g / d),
        _ => "-".into(),
    };
    println!(
        "{:<34} {:>12} {:>12} {:>8}",
        "CPU s per 10,000 records (all)",
        fmt(d.cpu_per_10k()),
        fmt(g.cpu_per_10k()),
        cpu_ratio
    );
    println!(
        "(one process: the server and its {} senders share the machine's cores)",
        args.senders
    );
    Ok(())
}

fn side_name(group: bool) -> &'static str {
    if group { "grouped" } else { "direct" }
}

/// The run of median records per second.
fn median(runs: &[Run]) -> Run {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.per_sec().total_cmp(&b.per_sec()));
    sorted[sorted.len() / 2]
}

async fn one_run(args: &Args, group: bool, seed: u64) -> Result<Run> {
    let dir = tempfile::tempdir()?;
    let node = NodeBuilder::local()
        .data_dir(dir.path())
        .rocks_store(StoreConfig::default())
        .group_writes(group)
        .handler(HandlerConfig::default().rate_limit(None))
        .build()
        .await
        .context("starting the server")?;
    let server = node.info().clone();
    let mut senders = Vec::with_capacity(args.senders);
    for _ in 0..args.senders {
        senders.push(sender(&server).await?);
    }
    let per_sender = args.records / args.senders;
    let mut rng = StdRng::seed_from_u64(seed);
    let keys: Vec<Vec<Vec<u8>>> = (0..args.senders)
        .map(|_| {
            (0..per_sender)
                .map(|_| random_cid(&mut rng).to_bytes())
                .collect()
        })
        .collect();

    let cpu_start = cpu::process_cpu_time();
    let started = Instant::now();
    let sends = senders
        .iter()
        .zip(&keys)
        .map(|((handle, me), keys)| send_all(handle, me, &server, keys, args.in_flight));
    let failed: usize = futures::future::join_all(sends).await.into_iter().sum();
    if failed > 0 {
        bail!("{failed} ADD_PROVIDER messages could not be sent");
    }
    // Over once the last record of every sender reads back from the server's store.
    let stores = node.stores().clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    for (keys, (_, me)) in keys.iter().zip(&senders) {
        let last = keys.last().context("no keys")?;
        loop {
            let now = unix_now();
            let held = stores
                .providers(last, 20, now)?
                .iter()
                .any(|r| r.provider == me.peer_id);
            if held {
                break;
            }
            if Instant::now() >= deadline {
                bail!("the server did not store the last record of a sender within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let wall = started.elapsed();
    let cpu = cpu::cpu_between(cpu_start, cpu::process_cpu_time());
    let received = node.transport().stats().inbound_requests;
    let records = per_sender * args.senders;
    if received < records as u64 {
        bail!("the server took {received} of {records} requests");
    }
    for (handle, _) in &senders {
        handle.shutdown().await;
    }
    node.shutdown().await;
    Ok(Run { records, wall, cpu })
}

fn unix_now() -> UnixSecs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A sender: a client-mode transport of its own, connected to `server`, and the provider
/// entry it announces (its peer id and an address).
async fn sender(server: &PeerInfo) -> Result<(TransportHandle, PeerInfo)> {
    let keypair = Keypair::generate_ed25519();
    let listen: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse()?;
    let config = TransportConfig::default()
        .kad(KadConfig::default().mode(Mode::Client))
        .listen_addrs(vec![listen]);
    let (handle, _events) =
        transport::spawn(keypair, config, transport::handler_fn(|_, _| Ok(None))).await?;
    handle.dial(server).await?;
    let addrs = handle.listen_addrs().await?;
    let me = PeerInfo::new(handle.local_peer_id(), addrs);
    Ok((handle, me))
}

/// Sends an ADD_PROVIDER of `me` for each of `keys` to `server`, `in_flight` at a time;
/// returns how many failed.
async fn send_all(
    handle: &TransportHandle,
    me: &PeerInfo,
    server: &PeerInfo,
    keys: &[Vec<u8>],
    in_flight: usize,
) -> usize {
    let mut pending = FuturesUnordered::new();
    let mut failed = 0;
    let mut next = keys.iter();
    loop {
        while pending.len() < in_flight {
            let Some(key) = next.next() else { break };
            let request = Request::AddProvider {
                key: key.clone(),
                providers: vec![me.clone()],
            };
            pending.push(handle.request(server, request));
        }
        match pending.next().await {
            Some(Ok(_)) => {}
            Some(Err(_)) => failed += 1,
            None => return failed,
        }
    }
}
