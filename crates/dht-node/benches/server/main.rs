//! `cargo xtask bench server`: how many provider records one server stores per second.
//!
//! One `dht-node` server in this process, on RocksDB in a temporary directory (the node's
//! default store settings), and `--senders` peers of their own (each its own libp2p
//! transport, its own TCP connection over 127.0.0.1) sending it ADD_PROVIDER messages, each
//! at most `--in-flight` at a time, `--records` in all. A run ends when the server has
//! stored the last record of every sender (read back from its store), so the figure counts
//! records stored, not messages received; after the timing, every record is read back. The server's per-peer rate limit is off; its other
//! limits are the defaults.
//!
//! Three runs side by side, in this order, on fresh directories: **direct**, each request's
//! record written to RocksDB by its own call (the node before the grouped writer),
//! **grouped**, the records of concurrent requests committed together by the node's
//! [`GroupWriter`](dht_provider_store::GroupWriter) (`NodeBuilder::group_writes`), and
//! **batched**, the same grouped server sent the records as batches of the batched provide
//! protocol (`/amino-dht-rs/provide-batch/1.0.0`, `--batch-keys` keys a batch,
//! `--batch-in-flight` batches at a time per sender; each answered once durable). It prints
//! records per second, the process's CPU seconds per 10,000 records (server and senders: the
//! machine is shared, say so with the figures) and the ratios to direct.
//!
//! Run with `cargo xtask bench server [--senders N] [--records R] [--in-flight F] [--runs K]
//! [--batch-keys B] [--batch-in-flight G]`.

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
use dht_proto::{
    Multiaddr, PeerInfo, Request,
    batch::{BatchError, ProvideBatch},
};
use dht_provider_store::{Config as StoreConfig, ProviderStore, UnixSecs};
use dht_routing::Feature;
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
    /// Keys per batch (batched side).
    #[arg(long, default_value_t = 1000)]
    batch_keys: usize,
    /// Batches each sender has in flight at a time (batched side).
    #[arg(long, default_value_t = 2)]
    batch_in_flight: usize,
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
    /// Batches answered UNAVAILABLE or RATE_LIMITED and sent again.
    retried: usize,
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
    if args.senders == 0
        || args.records < args.senders
        || args.in_flight == 0
        || args.batch_keys == 0
        || args.batch_in_flight == 0
    {
        bail!(
            "--senders, --in-flight, --batch-keys, --batch-in-flight and --records / --senders must be at least 1"
        );
    }
    if args.batch_keys > dht_proto::batch::MAX_BATCH_KEYS {
        bail!(
            "--batch-keys: at most {} (the protocol's limit)",
            dht_proto::batch::MAX_BATCH_KEYS
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(args))
}

async fn bench(args: Args) -> Result<()> {
    println!(
        "server bench: {} senders, {} records per run, {} ADD_PROVIDER in flight per sender, batches of {} keys ({} in flight per sender), {} run(s) per side",
        args.senders,
        args.records,
        args.in_flight,
        args.batch_keys,
        args.batch_in_flight,
        args.runs
    );
    let mut runs: [Vec<Run>; 3] = Default::default();
    for round in 0..args.runs {
        for side in Side::ALL {
            let run = one_run(&args, side, round as u64).await?;
            let again = if run.retried > 0 {
                format!(", {} batches sent again", run.retried)
            } else {
                String::new()
            };
            println!(
                "  run {}: {:<8} {:>9.0} records/s ({:.2} s{again})",
                round + 1,
                side.name(),
                run.per_sec(),
                run.wall.as_secs_f64()
            );
            runs[side as usize].push(run);
        }
    }
    let [d, g, b] = runs.each_ref().map(|r| median(r));
    println!();
    println!(
        "{:<34} {:>12} {:>12} {:>12} {:>16} {:>16}",
        "", "direct", "grouped", "batched", "grouped/direct", "batched/direct"
    );
    let ratio = |x: f64, y: f64| format!("{:.2}x", x / y.max(1e-9));
    println!(
        "{:<34} {:>12.0} {:>12.0} {:>12.0} {:>16} {:>16}",
        "records stored per second (median)",
        d.per_sec(),
        g.per_sec(),
        b.per_sec(),
        ratio(g.per_sec(), d.per_sec()),
        ratio(b.per_sec(), d.per_sec())
    );
    let fmt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
    let cpu_ratio = |x: Option<f64>| match (x, d.cpu_per_10k()) {
        (Some(x), Some(d)) if d > 0.0 => ratio(x, d),
        _ => "-".into(),
    };
    println!(
        "{:<34} {:>12} {:>12} {:>12} {:>16} {:>16}",
        "CPU s per 10,000 records (all)",
        fmt(d.cpu_per_10k()),
        fmt(g.cpu_per_10k()),
        fmt(b.cpu_per_10k()),
        cpu_ratio(g.cpu_per_10k()),
        cpu_ratio(b.cpu_per_10k())
    );
    println!(
        "(one process: the server and its {} senders share the machine's cores)",
        args.senders
    );
    Ok(())
}

/// How the records reach the server's store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// ADD_PROVIDER, each record its own store write.
    Direct = 0,
    /// ADD_PROVIDER, concurrent records committed together (the node's default).
    Grouped = 1,
    /// Batches of the batched provide protocol to the grouped server.
    Batched = 2,
}

impl Side {
    const ALL: [Side; 3] = [Side::Direct, Side::Grouped, Side::Batched];

    fn name(self) -> &'static str {
        match self {
            Side::Direct => "direct",
            Side::Grouped => "grouped",
            Side::Batched => "batched",
        }
    }
}

/// The run of median records per second.
fn median(runs: &[Run]) -> Run {
    let mut sorted = runs.to_vec();
    sorted.sort_by(|a, b| a.per_sec().total_cmp(&b.per_sec()));
    sorted[sorted.len() / 2]
}

async fn one_run(args: &Args, side: Side, seed: u64) -> Result<Run> {
    let dir = tempfile::tempdir()?;
    let node = NodeBuilder::local()
        .data_dir(dir.path())
        .rocks_store(StoreConfig::default())
        .group_writes(side != Side::Direct)
        .handler(HandlerConfig::default().with_rate_limit(None))
        .build()
        .await
        .context("starting the server")?;
    let server = node.info().clone();
    let mut senders = Vec::with_capacity(args.senders);
    for _ in 0..args.senders {
        senders.push(sender(&server, side == Side::Batched).await?);
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
    let to = &server;
    let sends = senders
        .iter()
        .zip(&keys)
        .map(|((handle, me), keys)| async move {
            match side {
                Side::Batched => {
                    send_batches(handle, me, to, keys, args.batch_keys, args.batch_in_flight).await
                }
                Side::Direct | Side::Grouped => {
                    (send_all(handle, me, to, keys, args.in_flight).await, 0)
                }
            }
        });
    let (failed, retried) = futures::future::join_all(sends)
        .await
        .into_iter()
        .fold((0, 0), |(f, r), (f1, r1)| (f + f1, r + r1));
    if failed > 0 {
        bail!(
            "{}: {failed} records could not be sent (or were not answered stored); server: {:?}",
            side.name(),
            node.transport().stats()
        );
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
    // Every record, not only each sender's last, is in the store (a record the server
    // dropped, e.g. with its write queue full, fails the run); not timed.
    let now = unix_now();
    for (keys, (_, me)) in keys.iter().zip(&senders) {
        for key in keys {
            if !stores
                .providers(key, 20, now)?
                .iter()
                .any(|r| r.provider == me.peer_id)
            {
                bail!(
                    "{}: a record the server took is not in its store",
                    side.name()
                );
            }
        }
    }
    let stats = node.transport().stats();
    let received = match side {
        Side::Batched => stats.inbound_batch_stored,
        Side::Direct | Side::Grouped => stats.inbound_requests,
    };
    let records = per_sender * args.senders;
    if received < records as u64 {
        bail!("the server took {received} of {records} records");
    }
    for (handle, _) in &senders {
        handle.shutdown().await;
    }
    node.shutdown().await;
    Ok(Run {
        records,
        wall,
        cpu,
        retried,
    })
}

fn unix_now() -> UnixSecs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A sender: a client-mode transport of its own, connected to `server`, and the provider
/// entry it announces (its peer id and an address); with `batches`, once identify has said
/// that the server takes batches.
async fn sender(server: &PeerInfo, batches: bool) -> Result<(TransportHandle, PeerInfo)> {
    let keypair = Keypair::generate_ed25519();
    let listen: Multiaddr = "/ip4/127.0.0.1/tcp/0".parse()?;
    let config = TransportConfig::default()
        .with_kad(KadConfig::default().with_mode(Mode::Client))
        .with_listen_addrs(vec![listen]);
    let (handle, _events) =
        transport::spawn(keypair, config, transport::handler_fn(|_, _| Ok(None))).await?;
    handle.dial(server).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while batches && !handle.supports(&server.peer_id, Feature::ProvideBatch) {
        if Instant::now() >= deadline {
            bail!("the server did not list the batched provide protocol in identify");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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

/// Sends `keys` to `server` as batches of `batch_keys` of `me`, `in_flight` at a time; a
/// batch refused for now (`UNAVAILABLE`: the server's write queue is full; `RATE_LIMITED`)
/// is sent again 5 ms later, as the spec allows. Returns how many records were not answered
/// stored, and how many batches were sent again.
async fn send_batches(
    handle: &TransportHandle,
    me: &PeerInfo,
    server: &PeerInfo,
    keys: &[Vec<u8>],
    batch_keys: usize,
    in_flight: usize,
) -> (usize, usize) {
    let mut pending = FuturesUnordered::new();
    let (mut failed, mut retried) = (0, 0);
    let mut next = keys.chunks(batch_keys);
    let mut again: Vec<&[Vec<u8>]> = Vec::new();
    loop {
        while pending.len() < in_flight {
            let (chunk, wait) = match again.pop() {
                Some(chunk) => (chunk, Duration::from_millis(5)),
                None => match next.next() {
                    Some(chunk) => (chunk, Duration::ZERO),
                    None => break,
                },
            };
            let batch = ProvideBatch {
                provider: me.clone(),
                keys: chunk.to_vec(),
            };
            pending.push(async move {
                tokio::time::sleep(wait).await;
                (chunk, handle.provide_batch(server, batch).await)
            });
        }
        match pending.next().await {
            Some((chunk, Ok(answer))) => match answer.error {
                Some(BatchError::Unavailable | BatchError::RateLimited) => {
                    retried += 1;
                    again.push(chunk);
                }
                _ => {
                    failed += chunk.len() - answer.statuses.iter().filter(|s| s.is_stored()).count()
                }
            },
            Some((chunk, Err(_))) => failed += chunk.len(),
            None => return (failed, retried),
        }
    }
}
