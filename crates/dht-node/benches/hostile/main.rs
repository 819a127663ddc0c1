//! `cargo xtask bench hostile`: one `dht-node` server on 127.0.0.1 under hostile peers, with
//! honest clients measured throughout.
//!
//! - **The server**: a `dht-node run` process (RocksDB store, default limits, a disk quota
//!   of 64 MiB) started with `--limit-loopback`, so that the per-IP limits apply on one machine: every peer of the
//!   bench connects from an address of its own in 127.0.0.0/8, as peers of the internet do.
//! - **Honest clients**: 8 processes (this binary, `--role honest`), each from its own
//!   address, each sending FIND_NODE, GET_PROVIDERS and ADD_PROVIDER in turn at a steady rate
//!   (`--honest-rate` a second), one new stream per request, for the whole run. Each records
//!   when every request was sent, whether it was answered (ADD_PROVIDER, which has no answer:
//!   written and closed) within 10 s, and how long it took.
//! - **Hostile processes** (this binary, `--role attack`), one phase each, then all at once:
//!   - `connections`: 1,000 connections from 1,000 addresses, held;
//!   - `streams`: every stream they may open, each announcing a 4 MiB request and sending
//!     nothing more, held;
//!   - `add-flood`: ADD_PROVIDER with the largest records the server keeps (16 addresses of
//!     250 bytes) from 10,000 fresh peer ids, from 40 addresses;
//!   - `closer`: the four servers the node bootstrapped from (`--role closer`, in their own
//!     process for the whole run) answer its lookups with 60,000 closer peers (about 3.4 MiB)
//!     while the bench asks the node's Delegated Routing API for providers of random CIDs;
//!   - `malformed`: garbage frames, bodies that do not decode, truncated messages and
//!     oversized length prefixes, on new streams;
//!   - `squat`: 1,000 fresh peer ids from 250 networks announce themselves as providers of
//!     the CID an honest provider announced at the phase's start.
//!
//! Per phase (and the calm baseline before any attack) it prints the share of honest
//! requests answered, their p50 and p99 latency, the server's peak RSS (sampled every 200
//! ms), the growth of its data directory, whether the squatted CID still lists the honest
//! provider, and what the attackers managed. Then the targets of issue 17: honest answered
//! at least 99.9 % in every phase, honest p99 under 10 × the calm p99, peak RSS under 1 GiB,
//! the data directory within the disk quota (64 MiB, `[rocksdb] max-disk-mib`, plus 16 MiB
//! for a memtable being flushed and the files beside the database), no crash. Every loop is bounded in count and time; it stops by itself.
//!
//! Then, when `AMINO_GO_KADPEERS` names the Go peer of `interop/go` (the xtask builds it
//! where Go is installed), the same phases run against one go-libp2p-kad-dht server (records
//! in memory, go-libp2p's default resource manager), and both runs are printed side by side.
//!
//! Run with `cargo xtask bench hostile [--phase-secs S] [--honest-rate R]`.

// A benchmark's output is its interface.
#![allow(clippy::print_stdout)]

#[allow(unused_imports, clippy::unwrap_used)]
#[path = "../../tests/common/mod.rs"]
mod common;

#[allow(clippy::unwrap_used)]
#[path = "../../tests/go_peers/mod.rs"]
mod go_peers;

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use clap::Parser;
use common::RawPeer;
use dht_node::transport::{KadConfig, Mode, TransportConfig};
use dht_proto::pb::varint_bytes;
use dht_proto::{Codec, Multiaddr, PeerId, PeerInfo, Request, Response, cid::Cid};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt, stream::FuturesUnordered};
use rand::{Rng, SeedableRng, rngs::StdRng};

/// The attacks, in the order they run.
/// The ADD_PROVIDER flood comes last of the single attacks: it fills the disk quota, and
/// from then on the server refuses new records of anyone.
const ATTACKS: [&str; 6] = [
    "connections",
    "streams",
    "closer",
    "malformed",
    "squat",
    "add-flood",
];

/// Honest client processes.
const HONEST: u8 = 8;

/// The server's disk quota (`[rocksdb] max-disk-mib`).
const QUOTA_MIB: u64 = 64;

/// How far past the quota the data directory may be seen: a memtable being flushed holds
/// its records twice (log and table) for a moment, and the directory holds the identity,
/// the provider's state and the log besides the database.
const QUOTA_SLACK_MIB: u64 = 16;

/// The longest an honest request may take to count as answered.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// The command line (the parent's, and each child role's).
#[derive(Debug, Parser)]
#[command(about = "One dht-node server under hostile peers, honest clients measured")]
struct Args {
    /// Seconds each phase lasts (the calm baseline, each attack, all at once).
    #[arg(long, default_value_t = 20)]
    phase_secs: u64,
    /// Requests per second of each honest client.
    #[arg(long, default_value_t = 25)]
    honest_rate: u64,
    /// (children) What this process is: `honest`, `attack`, or `closer`.
    #[arg(long, hide = true)]
    role: Option<String>,
    /// (children) The attack to run.
    #[arg(long, hide = true)]
    attack: Option<String>,
    /// (children) The server, a multiaddr ending in /p2p/<peer id>.
    #[arg(long, hide = true)]
    server: Option<String>,
    /// (children) Unix milliseconds at which to stop.
    #[arg(long, hide = true)]
    until_ms: Option<u64>,
    /// (children) A number telling this process's addresses apart.
    #[arg(long, hide = true, default_value_t = 0)]
    index: u8,
    /// (children) A file to write results (honest) or addresses (closer) to.
    #[arg(long, hide = true)]
    out: Option<PathBuf>,
    /// (closer) The file whose existence turns the heavy answers on.
    #[arg(long, hide = true)]
    heavy_flag: Option<PathBuf>,
    /// (squat) The key squatted, hex.
    #[arg(long, hide = true)]
    key: Option<String>,
    // `cargo bench` passes `--bench` to every bench binary.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.role.as_deref() {
        None => runtime.block_on(parent(args)),
        Some("honest") => runtime.block_on(honest(args)),
        Some("attack") => runtime.block_on(attack(args)),
        Some("closer") => runtime.block_on(closer(args)),
        Some(other) => bail!("unknown role {other:?}"),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn until(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms.saturating_sub(unix_ms()))
}

fn ip(a: u8, b: u8, c: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, a, b, c))
}

fn server_of(args: &Args) -> Result<PeerInfo> {
    let text = args.server.as_deref().context("--server")?;
    dht_node::builder::parse_peer(text).map_err(|e| anyhow::anyhow!("--server {text}: {e}"))
}

/// A random 34-byte sha2-256 multihash, as content keys are.
fn random_key(rng: &mut impl Rng) -> Vec<u8> {
    dht_node::devnet::random_cid(rng).to_bytes()
}

/// Awaits `fut` for at most `limit`.
async fn bounded<T>(limit: Duration, fut: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(limit, fut).await.ok()
}

// ---------------------------------------------------------------------------------------
// Honest clients.

/// One honest request: when it was sent (Unix ms), whether it was answered, in how long.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
struct Sample {
    sent_ms: u64,
    ok: bool,
    micros: u64,
}

/// Opens a kad stream to `server`, connecting again first if no connection is open (the
/// server closes idle connections, and may close others under attack).
async fn open_stream(peer: &RawPeer, server: &PeerInfo) -> Result<libp2p::Stream, String> {
    match peer.open(server.peer_id).await {
        Ok(stream) => Ok(stream),
        Err(_) => {
            peer.connect(server).await?;
            peer.open(server.peer_id).await
        }
    }
}

/// Sends `request` on a new stream and reads the answer (or, for ADD_PROVIDER, closes it).
async fn one_request(peer: &RawPeer, server: &PeerInfo, request: Request) -> Result<(), String> {
    let codec = Codec::default();
    let mut stream = open_stream(peer, server).await?;
    codec
        .write_request(&mut stream, &request)
        .await
        .map_err(|e| e.to_string())?;
    if request.message_type().expects_response() {
        codec
            .read_response(&mut stream)
            .await
            .map_err(|e| e.to_string())?;
    }
    stream.close().await.map_err(|e| e.to_string())
}

async fn honest(args: Args) -> Result<()> {
    let server = server_of(&args)?;
    let stop = until(args.until_ms.context("--until-ms")?);
    let out = args.out.clone().context("--out")?;
    let me_ip = ip(0, 0, 10 + args.index);
    let peer = Arc::new(RawPeer::start_from(me_ip));
    let mut connected = false;
    for _ in 0..50 {
        if let Some(Ok(())) = bounded(Duration::from_secs(5), peer.connect(&server)).await {
            connected = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !connected {
        bail!("honest client {} could not connect", args.index);
    }
    let me = PeerInfo::new(
        peer.peer_id,
        vec![format!("/ip4/{me_ip}/tcp/4001").parse()?],
    );
    let mut rng = StdRng::seed_from_u64(u64::from(args.index));
    let period = Duration::from_micros(1_000_000 / args.honest_rate.max(1));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending = FuturesUnordered::new();
    let mut samples = Vec::new();
    let mut turn = 0u64;
    while Instant::now() < stop {
        tokio::select! {
            _ = ticker.tick() => {
                let key = random_key(&mut rng);
                let request = match turn % 3 {
                    0 => Request::FindNode { key },
                    1 => Request::GetProviders { key },
                    _ => Request::AddProvider { key, providers: vec![me.clone()] },
                };
                turn += 1;
                let peer = peer.clone();
                let target = server.clone();
                pending.push(async move {
                    let sent_ms = unix_ms();
                    let started = Instant::now();
                    let ok = matches!(
                        bounded(ANSWER_WITHIN, one_request(&peer, &target, request)).await,
                        Some(Ok(()))
                    );
                    Sample {
                        sent_ms,
                        ok,
                        micros: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                    }
                });
            }
            Some(sample) = pending.next(), if !pending.is_empty() => samples.push(sample),
        }
    }
    while let Some(Some(sample)) = bounded(ANSWER_WITHIN * 2, pending.next()).await {
        samples.push(sample);
    }
    std::fs::write(&out, serde_json::to_vec(&samples)?)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The closer-peers servers.

async fn closer(args: Args) -> Result<()> {
    let out = args.out.clone().context("--out")?;
    let flag = args.heavy_flag.clone().context("--heavy-flag")?;
    let stop = until(args.until_ms.context("--until-ms")?);
    // 60,000 peers of one address each: about 3.4 MiB, under the 4 MiB message limit.
    let heavy: Arc<Vec<PeerInfo>> = Arc::new(
        (0..60_000u32)
            .map(|i| {
                let [_, _, b, c] = i.to_be_bytes();
                let addr: Multiaddr = format!("/ip4/127.90.{b}.{c}/tcp/1")
                    .parse()
                    .unwrap_or_else(|_| Multiaddr::empty());
                PeerInfo::new(PeerId::random(), vec![addr])
            })
            .collect(),
    );
    let served = Arc::new(AtomicU64::new(0));
    let mut nodes = Vec::new();
    for _ in 0..4 {
        let (heavy, flag, served) = (heavy.clone(), flag.clone(), served.clone());
        let answer: Arc<common::Answer> = Arc::new(move |_, request: &Request| {
            let on = flag.exists();
            let peers = || {
                if on {
                    served.fetch_add(1, Ordering::Relaxed);
                    heavy.as_ref().clone()
                } else {
                    Vec::new()
                }
            };
            Ok(match request {
                Request::FindNode { .. } => Some(Response::FindNode {
                    closer_peers: peers(),
                }),
                Request::GetProviders { key } => Some(Response::GetProviders {
                    key: key.clone(),
                    providers: Vec::new(),
                    closer_peers: peers(),
                }),
                Request::GetValue { key } => Some(Response::GetValue {
                    key: key.clone(),
                    record: None,
                    closer_peers: peers(),
                }),
                Request::PutValue { record } => Some(Response::PutValue {
                    record: record.clone(),
                }),
                Request::Ping => Some(Response::Ping),
                Request::AddProvider { .. } => None,
            })
        });
        let config =
            TransportConfig::default().with_kad(KadConfig::default().with_mode(Mode::Server));
        nodes.push(common::Node::start_with(config, answer).await);
    }
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}/p2p/{}", n.info.addrs[0], n.info.peer_id))
        .collect();
    std::fs::write(&out, addrs.join("\n"))?;
    // A line a second (the parent keeps the last one it reads when it stops this process).
    while Instant::now() < stop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        println!(
            "{} answers with 60,000 closer peers sent",
            served.load(Ordering::Relaxed)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Attacks.

async fn attack(args: Args) -> Result<()> {
    let server = server_of(&args)?;
    let stop = until(args.until_ms.context("--until-ms")?);
    let report = match args.attack.as_deref().context("--attack")? {
        "connections" => connections(&server, stop, args.index).await,
        "streams" => streams(&server, stop, args.index).await,
        "add-flood" => add_flood(&server, stop, args.index).await,
        "malformed" => malformed(&server, stop, args.index).await,
        "squat" => {
            let key = hex::decode(args.key.as_deref().context("--key")?)?;
            squat(&server, stop, args.index, &key).await
        }
        other => bail!("unknown attack {other:?}"),
    };
    println!("{report}");
    Ok(())
}

/// 1,000 connections from 1,000 addresses (four /24s), held until `stop`.
async fn connections(server: &PeerInfo, stop: Instant, base: u8) -> String {
    let peers: Vec<RawPeer> = (0..1000u32)
        .map(|i| RawPeer::start_from(ip(10 + base, (i / 250) as u8, (i % 250) as u8 + 1)))
        .collect();
    let mut opened = 0usize;
    let mut tries = FuturesUnordered::new();
    let mut next = peers.iter();
    loop {
        while tries.len() < 64 && Instant::now() < stop {
            let Some(p) = next.next() else { break };
            tries.push(bounded(Duration::from_secs(5), p.connect(server)));
        }
        match tries.next().await {
            Some(Some(Ok(()))) => opened += 1,
            Some(_) => {}
            None => break,
        }
    }
    tokio::time::sleep_until(stop.into()).await;
    let counts = futures::future::join_all(
        peers
            .iter()
            .map(|p| bounded(Duration::from_secs(2), p.open_connections())),
    )
    .await;
    let held: usize = counts.into_iter().flatten().sum();
    format!("opened {opened} of 1000 connections; {held} still open at the end")
}

/// From 16 addresses, 4 connections each, as many streams as they may open, each announcing
/// a 4 MiB request; held until `stop`.
async fn streams(server: &PeerInfo, stop: Instant, base: u8) -> String {
    let peers: Vec<RawPeer> = (0..16u8)
        .map(|i| RawPeer::start_from(ip(20 + base, 0, i + 1)))
        .collect();
    let announce = varint_bytes(4 * 1024 * 1024);
    let mut held = Vec::new();
    let mut refused = 0usize;
    for p in &peers {
        for _ in 0..4 {
            let _ = bounded(Duration::from_secs(5), p.connect(server)).await;
        }
        for _ in 0..200 {
            if Instant::now() >= stop {
                break;
            }
            let Some(Ok(mut s)) = bounded(Duration::from_secs(2), p.open(server.peer_id)).await
            else {
                refused += 1;
                continue;
            };
            match bounded(Duration::from_secs(2), s.write_all(&announce)).await {
                Some(Ok(())) => {
                    let _ = bounded(Duration::from_secs(1), s.flush()).await;
                    held.push(s);
                }
                _ => refused += 1,
            }
        }
    }
    let opened = held.len();
    tokio::time::sleep_until(stop.into()).await;
    // How many the server has closed meanwhile (a read sees the end or an error).
    let mut closed = 0usize;
    for s in &mut held {
        let mut byte = [0u8; 1];
        if let Some(r) = bounded(Duration::from_millis(5), s.read(&mut byte)).await
            && !matches!(r, Ok(n) if n > 0)
        {
            closed += 1;
        }
    }
    format!(
        "opened {opened} streams announcing 4 MiB ({refused} refused); the server closed {closed} of them by the end"
    )
}

/// The largest provider record the server keeps: 16 DNS addresses of 250 bytes (4,000 of
/// the 4,096 bytes a record may hold; 256 bytes per address).
fn largest_addrs(rng: &mut impl Rng) -> Vec<Multiaddr> {
    (0..16)
        .filter_map(|_| {
            let name: String = (0..230)
                .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
                .collect();
            format!("/dns4/{name}.example.org/tcp/4001").parse().ok()
        })
        .collect()
}

/// ADD_PROVIDER floods from 10,000 fresh peer ids, 32 at a time, from 40 addresses.
async fn add_flood(server: &PeerInfo, stop: Instant, base: u8) -> String {
    let sent = Arc::new(AtomicU64::new(0));
    let ids = Arc::new(AtomicU64::new(0));
    let mut running = FuturesUnordered::new();
    let mut started = 0u32;
    let mut rng = StdRng::seed_from_u64(17);
    while started < 10_000 && Instant::now() < stop {
        while running.len() < 32 && started < 10_000 {
            let source = ip(30 + base, 0, (started % 40) as u8 + 1);
            let addrs = largest_addrs(&mut rng);
            let keys: Vec<Vec<u8>> = (0..5).map(|_| random_key(&mut rng)).collect();
            let (server, sent, ids) = (server.clone(), sent.clone(), ids.clone());
            running.push(async move {
                let peer = RawPeer::start_from(source);
                if !matches!(
                    bounded(Duration::from_secs(5), peer.connect(&server)).await,
                    Some(Ok(()))
                ) {
                    return;
                }
                ids.fetch_add(1, Ordering::Relaxed);
                let me = PeerInfo::new(peer.peer_id, addrs);
                for key in keys {
                    let request = Request::AddProvider {
                        key,
                        providers: vec![me.clone()],
                    };
                    if let Some(Ok(())) =
                        bounded(Duration::from_secs(5), one_request(&peer, &server, request)).await
                    {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            started += 1;
        }
        if bounded(
            stop.saturating_duration_since(Instant::now()),
            running.next(),
        )
        .await
        .is_none()
        {
            break;
        }
    }
    while let Some(Some(())) = bounded(Duration::from_secs(6), running.next()).await {}
    format!(
        "{} peer ids connected of {started} started; {} ADD_PROVIDER of ~4 KiB records written",
        ids.load(Ordering::Relaxed),
        sent.load(Ordering::Relaxed)
    )
}

/// Malformed frames on new streams, from 8 addresses, until `stop`.
async fn malformed(server: &PeerInfo, stop: Instant, base: u8) -> String {
    let peers: Vec<RawPeer> = (0..8u8)
        .map(|i| RawPeer::start_from(ip(40 + base, 0, i + 1)))
        .collect();
    for p in &peers {
        let _ = bounded(Duration::from_secs(5), p.connect(server)).await;
    }
    let mut rng = StdRng::seed_from_u64(23);
    let (mut sent, mut kinds) = (0u64, [0u64; 5]);
    let mut turn = 0usize;
    while Instant::now() < stop {
        let kind = turn % 5;
        let frame: Vec<u8> = match kind {
            // Random bytes.
            0 => (0..rng.random_range(1..512))
                .map(|_| rng.random())
                .collect(),
            // A length prefix and a body of random bytes (not a message).
            1 => {
                let body: Vec<u8> = (0..200).map(|_| rng.random()).collect();
                [varint_bytes(200), body].concat()
            }
            // A length prefix past every limit (and an unterminated varint after it).
            2 => [varint_bytes(u64::MAX >> 1), vec![0xff; 12]].concat(),
            // A valid FIND_NODE cut in half.
            3 => {
                let mut buf = Vec::new();
                let _ = Codec::default().encode_request(
                    &Request::FindNode {
                        key: random_key(&mut rng),
                    },
                    &mut buf,
                );
                buf.truncate(buf.len() / 2);
                buf
            }
            // A message type that does not exist, and a key field of the wrong wire type.
            _ => vec![0x04, 0x08, 0x63, 0x10, 0x01],
        };
        turn += 1;
        let p = &peers[turn % peers.len()];
        let Some(Ok(mut s)) = bounded(Duration::from_secs(2), p.open(server.peer_id)).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if let Some(Ok(())) = bounded(Duration::from_secs(2), s.write_all(&frame)).await {
            sent += 1;
            kinds[kind] += 1;
        }
        let _ = bounded(Duration::from_millis(200), s.close()).await;
    }
    format!("{sent} malformed frames sent (by kind: {kinds:?})")
}

/// 1,000 fresh peer ids from 250 networks announce themselves as providers of `key`,
/// again and again until `stop`.
async fn squat(server: &PeerInfo, stop: Instant, base: u8, key: &[u8]) -> String {
    let sent = Arc::new(AtomicU64::new(0));
    let mut running = FuturesUnordered::new();
    for net in 0..250u32 {
        let (server, sent, key) = (server.clone(), sent.clone(), key.to_vec());
        running.push(async move {
            let source = ip(50 + base, net as u8, 1);
            let peers: Vec<RawPeer> = (0..4).map(|_| RawPeer::start_from(source)).collect();
            for p in &peers {
                let _ = bounded(Duration::from_secs(5), p.connect(&server)).await;
            }
            while Instant::now() < stop {
                for p in &peers {
                    let me = PeerInfo::new(
                        p.peer_id,
                        vec![
                            format!("/ip4/{source}/tcp/4001")
                                .parse()
                                .unwrap_or_else(|_| Multiaddr::empty()),
                        ],
                    );
                    let request = Request::AddProvider {
                        key: key.clone(),
                        providers: vec![me],
                    };
                    if let Some(Ok(())) =
                        bounded(Duration::from_secs(5), one_request(p, &server, request)).await
                    {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }
    while let Some(Some(())) = bounded(
        stop.saturating_duration_since(Instant::now()) + Duration::from_secs(6),
        running.next(),
    )
    .await
    {}
    format!(
        "{} squatting ADD_PROVIDER written by 1000 peer ids",
        sent.load(Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------------------
// The parent: the server, the phases, the table.

/// A child process of this binary, killed when dropped.
struct ChildProc(Child);

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_role(role: &str, extra: &[String]) -> Result<ChildProc> {
    let exe = std::env::current_exe()?;
    let child = Command::new(exe)
        .arg("--role")
        .arg(role)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting a {role} process"))?;
    Ok(ChildProc(child))
}

/// Waits for `child` until `deadline`, killing it then; returns what it printed.
fn finish(mut child: ChildProc, deadline: Instant) -> String {
    while Instant::now() < deadline {
        match child.0.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(_) => break,
        }
    }
    let _ = child.0.kill();
    let status = child.0.wait();
    let mut text = String::new();
    if let Some(mut out) = child.0.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut out, &mut text);
    }
    match status {
        Ok(s) if s.success() => text.trim().to_owned(),
        Ok(s) => format!("{} (the process ended with {s})", text.trim()),
        Err(e) => format!("{} (waiting for the process: {e})", text.trim()),
    }
}

fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// One phase's figures.
#[derive(Debug, Default)]
struct Phase {
    name: String,
    start_ms: u64,
    end_ms: u64,
    peak_rss: u64,
    disk_growth: i64,
    disk_end: u64,
    honest_listed: Option<bool>,
    reports: Vec<String>,
}

/// Announces `peer` (from `source`) as a provider of `key` and returns whether a
/// GET_PROVIDERS from `asker` lists it.
async fn announce_honest(peer: &RawPeer, source: IpAddr, server: &PeerInfo, key: &[u8]) {
    let me = PeerInfo::new(
        peer.peer_id,
        vec![
            format!("/ip4/{source}/tcp/4001")
                .parse()
                .unwrap_or_else(|_| Multiaddr::empty()),
        ],
    );
    let request = Request::AddProvider {
        key: key.to_vec(),
        providers: vec![me],
    };
    let _ = bounded(Duration::from_secs(5), one_request(peer, server, request)).await;
}

async fn lists(asker: &RawPeer, server: &PeerInfo, key: &[u8], provider: PeerId) -> Option<bool> {
    let codec = Codec::default();
    let ask = async {
        let mut s = open_stream(asker, server).await.ok()?;
        codec
            .write_request(&mut s, &Request::GetProviders { key: key.to_vec() })
            .await
            .ok()?;
        match codec.read_response(&mut s).await.ok()? {
            Response::GetProviders { providers, .. } => {
                Some(providers.iter().any(|p| p.peer_id == provider))
            }
            _ => None,
        }
    };
    bounded(Duration::from_secs(10), ask).await.flatten()
}

/// The server under attack: a `dht-node run` process, or one Go DHT server of `interop/go`.
enum Server {
    Ours(Box<common::process::NodeProc>),
    Go(go_peers::GoPeers),
}

impl Server {
    /// Starts the server, bootstrapping from `bootstrap` (multiaddrs with /p2p), its data
    /// directory (ours) under `dir`.
    async fn start(go: bool, dir: &Path, bootstrap: &[String]) -> Result<Server> {
        if !go {
            let config = dir.join("node.toml");
            std::fs::write(&config, format!("[rocksdb]\nmax-disk-mib = {QUOTA_MIB}\n"))?;
            let config_arg = config.display().to_string();
            return Ok(Server::Ours(Box::new(common::process::NodeProc::start_at(
                &dir.join("node"),
                bootstrap,
                &["--limit-loopback", "--config", &config_arg],
                Some("warn"),
            ))));
        }
        // go-libp2p's default resource manager, as an internet-facing Go node runs it.
        let go = go_peers::GoPeers::start_args(1, 0, &["-default-limits"]).await;
        for addr in bootstrap {
            let peer = dht_node::builder::parse_peer(addr)
                .map_err(|e| anyhow::anyhow!("a closer-peers server {addr}: {e}"))?;
            go.call(serde_json::json!({"cmd": "connect", "node": 0, "peer": go_peers::peer_json(&peer)}))
                .await
                .map_err(|e| anyhow::anyhow!("the Go server cannot reach {addr}: {e}"))?;
        }
        let _ = go
            .call(serde_json::json!({"cmd": "refresh", "node": 0, "timeout": 20}))
            .await;
        Ok(Server::Go(go))
    }

    fn pid(&self) -> u32 {
        match self {
            Server::Ours(node) => node.child.id(),
            Server::Go(go) => go.pid(),
        }
    }

    /// Its address, a multiaddr ending in /p2p/<peer id>.
    fn addr(&self) -> String {
        match self {
            Server::Ours(node) => node.addrs[0].clone(),
            Server::Go(go) => format!("{}/p2p/{}", go.nodes[0].addrs[0], go.nodes[0].peer_id),
        }
    }

    /// Looks up providers of `cid` through the server (ours: its Delegated Routing API);
    /// whether an answer came within 15 s.
    async fn find_providers(&self, cid: &str) -> bool {
        match self {
            Server::Ours(node) => matches!(
                bounded(Duration::from_secs(15), node.routing.find_providers(cid)).await,
                Some(Ok(_))
            ),
            Server::Go(go) => go
                .call(serde_json::json!({"cmd": "find_providers", "node": 0, "keys": [cid], "timeout": 15}))
                .await
                .is_ok(),
        }
    }

    /// How many peers its routing table holds.
    async fn table_peers(&self) -> Option<u64> {
        match self {
            Server::Ours(node) => bounded(Duration::from_secs(10), node.api.routing_table())
                .await
                .and_then(Result::ok)
                .and_then(|t| t["peers"].as_u64()),
            Server::Go(go) => go
                .call(serde_json::json!({"cmd": "routing_table", "node": 0, "timeout": 10}))
                .await
                .ok()
                .and_then(|t| t.as_array().map(|a| a.len() as u64)),
        }
    }

    /// How it ended, if it has.
    fn exited(&mut self) -> Option<String> {
        match self {
            Server::Ours(node) => match node.child.try_wait() {
                Ok(Some(status)) => Some(status.to_string()),
                _ => None,
            },
            // (an exited process that is not waited for has no VmRSS line)
            Server::Go(go) => rss_of(go.pid()).is_none().then(|| "gone".to_owned()),
        }
    }

    /// The bytes of its data directory (the Go server keeps everything in memory).
    fn disk(&self) -> u64 {
        match self {
            Server::Ours(node) => dht_provider_store::dir_bytes(&node.dir),
            Server::Go(_) => 0,
        }
    }
}

/// What one server's run measured.
struct Run {
    title: String,
    phases: Vec<Phase>,
    samples: Vec<Sample>,
    hwm_kib: Option<u64>,
    crashed: Option<String>,
    closer_report: String,
    /// Whether the data directory is measured against the quota.
    on_disk: bool,
}

async fn parent(args: Args) -> Result<()> {
    let ours = measure(&args, false).await?;
    let ours_rows = print_table(&ours);
    if std::env::var_os(go_peers::GO_PEER_ENV).is_none() {
        println!(
            "\nno Go server measured: {} is not set (`cargo xtask bench hostile` builds the Go peer when Go is installed)",
            go_peers::GO_PEER_ENV
        );
        return Ok(());
    }
    let go = measure(&args, true).await?;
    let go_rows = print_table(&go);
    println!("\nside by side (honest answered, p99 ms, peak RSS MiB):");
    println!(
        "{:<12} {:>10} {:>8} {:>8}   {:>10} {:>8} {:>8}",
        "phase", "dht-node", "p99", "RSS", "Go", "p99", "RSS"
    );
    for (a, b) in ours_rows.iter().zip(&go_rows) {
        println!(
            "{:<12} {:>9.2}% {:>8} {:>8.0}   {:>9.2}% {:>8} {:>8.0}",
            a.name,
            a.share * 100.0,
            a.p99,
            a.rss_mib,
            b.share * 100.0,
            b.p99,
            b.rss_mib
        );
    }
    Ok(())
}

/// Runs the calm baseline, each attack and all at once against one server.
async fn measure(args: &Args, go: bool) -> Result<Run> {
    let phase = Duration::from_secs(args.phase_secs.max(5));
    let gap = Duration::from_secs(3);
    let phases: Vec<&str> = std::iter::once("calm")
        .chain(ATTACKS)
        .chain(std::iter::once("all"))
        .collect();
    let total = (phase + gap) * (phases.len() as u32) + Duration::from_secs(10);
    let dir = tempfile::tempdir()?;
    let end_ms = unix_ms() + u64::try_from(total.as_millis())? + 30_000;
    let title = if go {
        "go-libp2p-kad-dht v0.42.2 server (in memory, go-libp2p's default resource manager)"
    } else {
        "dht-node server (RocksDB, default limits, --limit-loopback)"
    };
    println!(
        "\nhostile bench, {title}: {} phases of {} s, {HONEST} honest clients at {} requests/s each",
        phases.len(),
        phase.as_secs(),
        args.honest_rate
    );

    // The closer-peers servers first: the node bootstraps from them.
    let heavy_flag = dir.path().join("closer.on");
    let closer_addrs = dir.path().join("closer.addrs");
    let closer = spawn_role(
        "closer",
        &[
            "--until-ms".into(),
            end_ms.to_string(),
            "--out".into(),
            closer_addrs.display().to_string(),
            "--heavy-flag".into(),
            heavy_flag.display().to_string(),
        ],
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let bootstrap: Vec<String> = loop {
        if let Ok(text) = std::fs::read_to_string(&closer_addrs)
            && text.lines().count() == 4
        {
            break text.lines().map(str::to_owned).collect();
        }
        if Instant::now() > deadline {
            bail!("the closer-peers servers did not start within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let mut node = Server::start(go, dir.path(), &bootstrap).await?;
    let pid = node.pid();
    let server_addr = node.addr();
    let server = dht_node::builder::parse_peer(&server_addr)
        .map_err(|e| anyhow::anyhow!("the server's address {server_addr}: {e}"))?;

    let honest_stop = unix_ms() + u64::try_from(total.as_millis())?;
    let mut honest_procs = Vec::new();
    for i in 0..HONEST {
        let out = dir.path().join(format!("honest-{i}.json"));
        let child = spawn_role(
            "honest",
            &[
                "--server".into(),
                server_addr.clone(),
                "--until-ms".into(),
                honest_stop.to_string(),
                "--index".into(),
                i.to_string(),
                "--out".into(),
                out.display().to_string(),
                "--honest-rate".into(),
                args.honest_rate.to_string(),
            ],
        )?;
        honest_procs.push((child, out));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let honest_provider_ip = ip(0, 0, 60);
    let honest_provider = RawPeer::start_from(honest_provider_ip);
    let asker = RawPeer::start_from(ip(0, 0, 61));
    for p in [&honest_provider, &asker] {
        bounded(Duration::from_secs(10), p.connect(&server))
            .await
            .context("the squat checkers' connect timed out")?
            .map_err(|e| anyhow::anyhow!("the squat checkers could not connect: {e}"))?;
    }
    let mut rng = StdRng::seed_from_u64(5);
    let squat_key = random_key(&mut rng);

    let mut results: Vec<Phase> = Vec::new();
    let mut announced = false;
    let mut crashed = None;
    for name in &phases {
        let start_ms = unix_ms();
        let stop_ms = start_ms + u64::try_from(phase.as_millis())?;
        let disk0 = node.disk();
        let attacks: Vec<&str> = match *name {
            "calm" => vec![],
            "all" => ATTACKS.to_vec(),
            one => vec![one],
        };
        // Announced once, in the first phase with squatters; later phases see whether they
        // displaced it.
        if attacks.contains(&"squat") && !announced {
            announce_honest(&honest_provider, honest_provider_ip, &server, &squat_key).await;
            announced = true;
        }
        let mut attackers = Vec::new();
        for (i, a) in attacks.iter().enumerate() {
            if *a == "closer" {
                std::fs::write(&heavy_flag, b"on")?;
                continue;
            }
            attackers.push(spawn_role(
                "attack",
                &[
                    "--attack".into(),
                    (*a).to_owned(),
                    "--server".into(),
                    server_addr.clone(),
                    "--until-ms".into(),
                    stop_ms.to_string(),
                    "--index".into(),
                    i.to_string(),
                    "--key".into(),
                    hex::encode(&squat_key),
                ],
            )?);
        }
        // The server's own lookups while the closer-peers servers answer heavily.
        let lookups = async {
            if !attacks.contains(&"closer") {
                return None;
            }
            let mut rng = StdRng::seed_from_u64(9);
            let (mut asked, mut answered) = (0u64, 0u64);
            while unix_ms() < stop_ms {
                let cid = Cid::new_v1(0x55, dht_node::devnet::random_cid(&mut rng)).to_string();
                asked += 1;
                if node.find_providers(&cid).await {
                    answered += 1;
                }
            }
            Some(format!(
                "the server's own lookups: {answered} of {asked} answered"
            ))
        };
        let sample_rss = async {
            let mut peak = 0u64;
            let stop = until(stop_ms);
            while Instant::now() < stop {
                peak = peak.max(rss_of(pid).unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            peak
        };
        let (lookups, mut peak) = futures::join!(lookups, sample_rss);
        let _ = std::fs::remove_file(&heavy_flag);
        let mut reports: Vec<String> = lookups.into_iter().collect();
        let wait = Instant::now() + Duration::from_secs(20);
        for a in attackers {
            let report = tokio::task::spawn_blocking(move || finish(a, wait)).await?;
            if !report.is_empty() {
                reports.push(report);
            }
        }
        peak = peak.max(rss_of(pid).unwrap_or(0));
        let honest_listed = if attacks.contains(&"squat") {
            lists(&asker, &server, &squat_key, honest_provider.peer_id).await
        } else {
            None
        };
        // The closer-peers attack reaches the server only through the servers its routing
        // table holds (the four it bootstrapped from).
        reports.push(match node.table_peers().await {
            Some(n) => format!("the server's routing table holds {n} of the 4 servers at the end"),
            None => "the server's routing table could not be read".to_owned(),
        });
        let end_ms = unix_ms();
        let disk_end = node.disk();
        results.push(Phase {
            name: (*name).to_owned(),
            start_ms,
            end_ms: stop_ms,
            peak_rss: peak,
            disk_growth: i64::try_from(disk_end).unwrap_or(0) - i64::try_from(disk0).unwrap_or(0),
            disk_end,
            honest_listed,
            reports,
        });
        println!(
            "  {name} done ({:.1} s)",
            (end_ms - start_ms) as f64 / 1000.0
        );
        if let Some(status) = node.exited() {
            crashed = Some(format!("the server exited during {name}: {status}"));
            break;
        }
        tokio::time::sleep(gap).await;
    }
    let hwm_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        });

    // The honest clients stop by themselves at `honest_stop`.
    let mut samples: Vec<Sample> = Vec::new();
    let wait = Instant::now() + total + Duration::from_secs(60);
    for (child, out) in honest_procs {
        let _ = tokio::task::spawn_blocking(move || finish(child, wait)).await;
        match std::fs::read(&out) {
            Ok(bytes) => samples.extend(serde_json::from_slice::<Vec<Sample>>(&bytes)?),
            Err(e) => println!(
                "  an honest client left no results ({}): {e}",
                out.display()
            ),
        }
    }
    let closer_report = tokio::task::spawn_blocking(move || finish(closer, Instant::now()))
        .await
        .unwrap_or_default()
        .lines()
        .rev()
        .find(|l| l.contains("answers"))
        .unwrap_or("no report")
        .to_owned();
    if let Server::Ours(mut node) = node {
        node.kill_9();
    }
    Ok(Run {
        title: title.to_owned(),
        phases: results,
        samples,
        hwm_kib,
        crashed,
        closer_report,
        on_disk: !go,
    })
}

fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied()
}

/// One phase of a run, for the side-by-side table.
struct Row {
    name: String,
    share: f64,
    p99: String,
    rss_mib: f64,
}

/// Prints a run's table and whether it met the targets; returns its rows.
fn print_table(run: &Run) -> Vec<Row> {
    let Run {
        title,
        phases,
        samples,
        hwm_kib,
        crashed,
        closer_report,
        on_disk,
    } = run;
    let (hwm_kib, crashed) = (*hwm_kib, crashed.as_deref());
    let mut rows = Vec::new();
    let ms = |us: Option<u64>| us.map_or("-".to_owned(), |u| format!("{:.1}", u as f64 / 1000.0));
    println!();
    println!("{title}");
    println!(
        "{:<12} {:>9} {:>10} {:>9} {:>9} {:>10} {:>11} {:>7}",
        "phase", "honest", "answered", "p50 ms", "p99 ms", "peak RSS", "disk", "squat"
    );
    let mut calm_p99 = None;
    let mut failures = Vec::new();
    for p in phases {
        let mine: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.sent_ms >= p.start_ms && s.sent_ms < p.end_ms)
            .collect();
        let ok = mine.iter().filter(|s| s.ok).count();
        let mut lat: Vec<u64> = mine.iter().filter(|s| s.ok).map(|s| s.micros).collect();
        lat.sort_unstable();
        let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
        let share = ok as f64 / mine.len().max(1) as f64;
        if p.name == "calm" {
            calm_p99 = p99;
        }
        println!(
            "{:<12} {:>9} {:>9.2}% {:>9} {:>9} {:>7.0} MiB {:>7.1} MiB {:>7}",
            p.name,
            mine.len(),
            share * 100.0,
            ms(p50),
            ms(p99),
            p.peak_rss as f64 / f64::from(1 << 20),
            p.disk_growth as f64 / f64::from(1 << 20),
            match p.honest_listed {
                Some(true) => "listed",
                Some(false) => "LOST",
                None => "-",
            }
        );
        for r in &p.reports {
            println!("{:<12}   {r}", "");
        }
        rows.push(Row {
            name: p.name.clone(),
            share,
            p99: ms(p99),
            rss_mib: p.peak_rss as f64 / f64::from(1 << 20),
        });
        if mine.is_empty() {
            failures.push(format!("{}: no honest request measured", p.name));
        }
        if share < 0.999 {
            failures.push(format!(
                "{}: honest answered {:.2}% < 99.9%",
                p.name,
                share * 100.0
            ));
        }
        if let (Some(calm), Some(p99)) = (calm_p99, p99)
            && p99 > calm.saturating_mul(10)
        {
            failures.push(format!(
                "{}: honest p99 {} ms over 10x the calm p99 ({} ms)",
                p.name,
                ms(Some(p99)),
                ms(Some(calm))
            ));
        }
        if p.peak_rss >= 1 << 30 {
            failures.push(format!("{}: peak RSS 1 GiB or more", p.name));
        }
        if *on_disk && p.disk_end > (QUOTA_MIB + QUOTA_SLACK_MIB) << 20 {
            failures.push(format!(
                "{}: the data directory takes {:.1} MiB, over the {QUOTA_MIB} MiB quota",
                p.name,
                p.disk_end as f64 / f64::from(1 << 20)
            ));
        }
        if p.honest_listed == Some(false) {
            failures.push(format!(
                "{}: the honest provider is no longer listed",
                p.name
            ));
        }
    }
    if !closer_report.is_empty() {
        println!("closer-peers servers: {closer_report}");
    }
    if let Some(kib) = hwm_kib {
        println!(
            "the server's peak RSS over the run (VmHWM): {:.0} MiB",
            kib as f64 / 1024.0
        );
    }
    if let Some(last) = phases.last().filter(|_| *on_disk) {
        println!(
            "disk quota {QUOTA_MIB} MiB ([rocksdb] max-disk-mib): the data directory took {:.1} MiB at the end",
            last.disk_end as f64 / f64::from(1 << 20)
        );
    }
    if let Some(c) = crashed {
        failures.push(c.to_owned());
    }
    println!();
    if failures.is_empty() {
        println!(
            "targets: all met (honest >= 99.9 %, p99 < 10x calm, RSS < 1 GiB, squat listed, no crash)"
        );
    } else {
        println!("targets missed:");
        for f in &failures {
            println!("  - {f}");
        }
    }
    rows
}
