//! `cargo xtask bench go`: our sweeping provider beside go-libp2p-kad-dht's SweepingProvider.
//!
//! One run, one network: N go-libp2p-kad-dht v0.42.2 servers on 127.0.0.1 in one Go process
//! (the program of `interop/go`, meshed). The Go servers count, server side, every request
//! they receive from a peer outside their process, by type, with its bytes on the wire, and
//! note which server received which key's provider record from which provider (the record Go
//! stores: its provider is the sender and has an address).
//!
//! Then, one after the other, each provider in its own process, in client mode, joins the
//! network through three of the servers and is given the same number of fresh random keys,
//! 10,000 at a time (what `dht-node provide --file` sends per request):
//!
//! - **ours**: the `dht-node` binary (`run --mode client --store rocksdb --strategy sweep`,
//!   the keys posted to its HTTP API `/api/v1/provide`);
//! - **go**: the Go program in provider mode (`-keystore DIR`): go-libp2p-kad-dht's
//!   `provider.SweepingProvider` with Kubo's `Provide.DHT` defaults (16 workers, 2 dedicated
//!   periodic, 1 dedicated burst, 20 connections per worker), its keystore and state in a
//!   LevelDB datastore on disk, behind Kubo's buffered provider.
//!
//! Both get the reprovide interval `--reprovide-secs` (Kubo's is 22 h) so that each
//! reprovides every key once during the run. A phase ends when the provider itself reports
//! each of the phase's keys done (provided or failed) and no ADD_PROVIDER arrived for 2 s,
//! not at a count of records, since the two providers send different numbers per key
//! (ours adds spare servers). For the provide and for one reprovide cycle
//! the bench prints the keys per second (until the last ADD_PROVIDER reached a server), the
//! provider process's CPU seconds per 1,000 keys (`/proc/<pid>/stat`), the requests the
//! servers received (FIND_NODE, ADD_PROVIDER, …) and their bytes per key, the placement (the
//! share of keys whose record is on at least 19 of their true 20 closest servers, by XOR of
//! SHA-256 of peer ids and keys), and for the whole side the peak RSS (`VmHWM`) and a sample
//! of keys looked up with Go's `FindProviders`; then the ratios ours ÷ Go's.
//!
//! Every wait has a timeout; the processes are killed when the bench ends, also on an error.
//! Run with `cargo xtask bench go [--servers N] [--keys K] [--sample S] [--json PATH]`.

// A benchmark's output is its interface.
#![allow(clippy::print_stdout)]

// Shared by the devnet and Go benches, each of which uses only some of it.
#[allow(dead_code)]
#[path = "../devnet/cpu.rs"]
mod cpu;
#[path = "../devnet/entry.rs"]
mod entry;
#[allow(clippy::unwrap_used)]
#[path = "../../tests/go_peers/mod.rs"]
mod go_peers;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use cpu::{cpu_time_of, peak_rss_of};
use dht_node::{devnet::random_cid, http_client::ApiClient};
use dht_proto::{Key, PeerId, PeerInfo, cid::Cid};
use go_peers::{GoPeers, peer_json};
use rand::{SeedableRng, rngs::StdRng, seq::IndexedRandom};
use serde_json::{Value, json};

/// Records per key: Amino's replication factor.
const K: usize = 20;

/// Keys handed to a provider at once: what `dht-node provide --file` sends per request (its
/// `--batch` default), for both providers alike.
const HANDOVER: usize = 10_000;

/// A key counts as placed when at least this many of its true 20 closest servers hold it.
const PLACED: usize = 19;

/// The command line as given; [`Cli::check`] turns it into [`Args`].
#[derive(Debug, clap::Parser)]
#[command(
    name = "bench go",
    about = "Our sweeping provider beside go-libp2p-kad-dht's SweepingProvider on Go servers",
    after_help = "Run as `cargo xtask bench go [options]` or \
                  `AMINO_GO_KADPEERS=<kadpeers binary> cargo bench -p dht-node --bench go -- [options]`."
)]
struct Cli {
    /// Go DHT servers (at least 20).
    #[arg(long, default_value_t = 100)]
    servers: usize,
    /// Fresh random keys each provider provides (at least 1).
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    /// Keys of each provider looked up with Go's FindProviders.
    #[arg(long, default_value_t = 200)]
    sample: usize,
    /// Both providers' reprovide interval, at least 10 (longer than a provide, or reprovides
    /// are counted in it).
    #[arg(long, default_value_t = 240)]
    reprovide_secs: u64,
    /// A provide also ends when no ADD_PROVIDER arrived for this many seconds and the
    /// provider has no first provide left.
    #[arg(long, default_value_t = 20)]
    idle_secs: u64,
    /// The most seconds a provide phase may take.
    #[arg(long, default_value_t = 1800)]
    timeout_secs: u64,
    /// Seed of the keys.
    #[arg(long, default_value_t = 0x676f_6265_6e63)]
    seed: u64,
    /// Run one provider only.
    #[arg(long, value_enum)]
    only: Option<Only>,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    // `cargo bench` passes `--bench` to every bench binary.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The providers `--only` picks from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Only {
    /// Our dht-node's sweeping provider.
    Ours,
    /// go-libp2p-kad-dht's SweepingProvider.
    Go,
}

impl Cli {
    fn check(self) -> Result<Args> {
        if self.servers < K {
            bail!("--servers must be at least {K}");
        }
        if self.keys == 0 {
            bail!("--keys must be at least 1");
        }
        if self.reprovide_secs < 10 {
            bail!("--reprovide-secs must be at least 10");
        }
        Ok(Args {
            servers: self.servers,
            keys: self.keys,
            sample: self.sample,
            reprovide: Duration::from_secs(self.reprovide_secs),
            idle: Duration::from_secs(self.idle_secs),
            timeout: Duration::from_secs(self.timeout_secs),
            seed: self.seed,
            ours: self.only != Some(Only::Go),
            go: self.only != Some(Only::Ours),
            json: self.json,
        })
    }
}

/// The settings of a run.
#[derive(Debug, Clone)]
struct Args {
    servers: usize,
    keys: usize,
    sample: usize,
    reprovide: Duration,
    idle: Duration,
    timeout: Duration,
    seed: u64,
    ours: bool,
    go: bool,
    json: Option<PathBuf>,
}

/// What the servers measured over one phase (the provide, or one reprovide cycle).
#[derive(Debug, Clone, Default)]
struct Phase {
    /// From the phase's start to the last ADD_PROVIDER a server received.
    wall: Duration,
    /// The provider process's CPU time over the phase (to the last growth seen).
    cpu: Option<Duration>,
    /// Requests the servers received from the provider, by type.
    messages: BTreeMap<String, u64>,
    /// Their bytes on the wire.
    bytes: u64,
    /// Keys whose record is on at least 19 of their true 20 closest servers.
    placed: usize,
    /// Records held on true closest servers, over keys × 20.
    on_closest: f64,
    /// Why the phase ended.
    ended: &'static str,
}

impl Phase {
    fn count(&self, t: &str) -> u64 {
        self.messages.get(t).copied().unwrap_or(0)
    }

    fn keys_per_sec(&self, keys: usize) -> f64 {
        keys as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    fn cpu_per_1000(&self, keys: usize) -> Option<f64> {
        Some(self.cpu?.as_secs_f64() * 1000.0 / keys.max(1) as f64)
    }

    fn json(&self, keys: usize) -> Value {
        json!({
            "wall_secs": self.wall.as_secs_f64(),
            "cpu_secs": self.cpu.map(|d| d.as_secs_f64()),
            "keys_per_sec": self.keys_per_sec(keys),
            "cpu_secs_per_1000_keys": self.cpu_per_1000(keys),
            "messages": self.messages,
            "bytes": self.bytes,
            "bytes_per_key": self.bytes as f64 / keys.max(1) as f64,
            "placed": self.placed,
            "placement": self.placed as f64 / keys.max(1) as f64,
            "records_on_true_closest": self.on_closest,
            "ended": self.ended,
        })
    }
}

/// One provider's run.
#[derive(Debug, Clone)]
struct Side {
    name: &'static str,
    keys: usize,
    provide: Phase,
    reprovide: Phase,
    peak_rss: Option<u64>,
    sampled: usize,
    found: usize,
    /// The provider's own counters at the end.
    stats: Value,
}

impl Side {
    fn json(&self) -> Value {
        json!({
            "keys": self.keys,
            "provide": self.provide.json(self.keys),
            "reprovide": self.reprovide.json(self.keys),
            "peak_rss_bytes": self.peak_rss,
            "sampled": self.sampled,
            "found": self.found,
            "provider_stats": self.stats,
        })
    }
}

/// A provider process under test.
enum Provider {
    /// The `dht-node` binary, killed when dropped.
    Ours {
        child: Child,
        api: ApiClient,
        peer: PeerId,
        _dir: tempfile::TempDir,
    },
    /// The Go program in provider mode, killed when dropped.
    Go {
        peers: GoPeers,
        peer: PeerId,
        _dir: tempfile::TempDir,
    },
}

impl Drop for Provider {
    fn drop(&mut self) {
        if let Provider::Ours { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Provider {
    fn pid(&self) -> String {
        match self {
            Provider::Ours { child, .. } => child.id().to_string(),
            Provider::Go { peers, .. } => peers.pid().to_string(),
        }
    }

    fn peer(&self) -> PeerId {
        match self {
            Provider::Ours { peer, .. } | Provider::Go { peer, .. } => *peer,
        }
    }

    /// Starts our node in client mode, bootstrapped from `bootstrap`, and waits (at most
    /// 60 s) for its `node.json`.
    async fn start_ours(args: &Args, bootstrap: &[PeerInfo]) -> Result<Provider> {
        let dir = tempfile::tempdir()?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dht-node"));
        cmd.arg("run")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--mode", "client"])
            .args(["--http", "127.0.0.1:0", "--api-addr", "127.0.0.1:0"])
            .args(["--store", "rocksdb"])
            .args(["--strategy", "sweep", "--table", "kbucket"])
            .arg("--reprovide-interval")
            .arg(format!("{}s", args.reprovide.as_secs()));
        for peer in bootstrap {
            let addr = peer.addrs.first().context("a Go server without address")?;
            cmd.arg("--bootstrap")
                .arg(format!("{addr}/p2p/{}", peer.peer_id));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting dht-node")?;
        let info_path = dir.path().join("node.json");
        let mut provider = Provider::Ours {
            child,
            api: ApiClient::new("http://127.0.0.1:1")?,
            peer: PeerId::random(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let info: Value = loop {
            if let Ok(bytes) = std::fs::read(&info_path)
                && let Ok(v) = serde_json::from_slice(&bytes)
            {
                break v;
            }
            if let Provider::Ours { child, .. } = &mut provider
                && let Some(status) = child.try_wait()?
            {
                bail!("dht-node exited: {status}");
            }
            if Instant::now() > deadline {
                bail!("dht-node wrote no node.json within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let api_url = info["api"].as_str().context("node.json without api")?;
        let token_file = info["api_token_file"]
            .as_str()
            .context("node.json without api_token_file")?;
        let token = std::fs::read_to_string(token_file).context("reading the API token")?;
        let id: PeerId = info["peer_id"]
            .as_str()
            .context("node.json without peer_id")?
            .parse()?;
        if let Provider::Ours { api, peer, .. } = &mut provider {
            *api = ApiClient::new(api_url)?
                .with_token(token.trim())
                .with_timeout(Duration::from_secs(300));
            *peer = id;
        }
        Ok(provider)
    }

    /// Starts the Go program in provider mode (one client-mode node, a LevelDB keystore),
    /// connects it to `bootstrap` and refreshes its table.
    async fn start_go(args: &Args, bootstrap: &[PeerInfo]) -> Result<Provider> {
        let dir = tempfile::tempdir()?;
        let keystore = dir.path().join("datastore");
        let reprovide = format!("{}s", args.reprovide.as_secs());
        let keystore = keystore
            .to_str()
            .context("a temporary path that is not UTF-8")?;
        let peers =
            GoPeers::start_args(1, 1, &["-keystore", keystore, "-reprovide", &reprovide]).await;
        let peer = peers.nodes.first().context("no Go node")?.peer_id;
        for p in bootstrap {
            go(
                &peers,
                json!({"cmd": "connect", "node": 0, "peer": peer_json(p)}),
            )
            .await?;
        }
        // Go admits a dialled peer after identify and its check; then a refresh fills the
        // table (it fails while the table is still empty, so it is retried).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let refreshed = go(&peers, json!({"cmd": "refresh", "node": 0, "timeout": 60})).await;
            if refreshed.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("the Go provider's refresh kept failing: {refreshed:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(Provider::Go {
            peers,
            peer,
            _dir: dir,
        })
    }

    /// The number of peers in the provider's routing table.
    async fn table_len(&self) -> Result<usize> {
        Ok(match self {
            Provider::Ours { api, .. } => {
                let t = api.routing_table().await?;
                t["peers"]
                    .as_u64()
                    .or_else(|| t["peers"].as_array().map(|a| a.len() as u64))
                    .unwrap_or(0) as usize
            }
            Provider::Go { peers, .. } => go(peers, json!({"cmd": "routing_table", "node": 0}))
                .await?
                .as_array()
                .map_or(0, Vec::len),
        })
    }

    /// Hands the provider the keys (CIDs), [`HANDOVER`] at a time; returns once it has
    /// accepted them all.
    async fn provide(&self, cids: &[String]) -> Result<()> {
        for chunk in cids.chunks(HANDOVER) {
            match self {
                Provider::Ours { api, .. } => {
                    let accepted = api.provide(chunk, false).await?;
                    if accepted != chunk.len() as u64 {
                        bail!("our node accepted {accepted} of {} keys", chunk.len());
                    }
                }
                Provider::Go { peers, .. } => {
                    go(
                        peers,
                        json!({"cmd": "start_providing", "node": 0, "keys": chunk, "timeout": 300}),
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// The provider's own counters.
    async fn stats(&self) -> Result<Value> {
        Ok(match self {
            Provider::Ours { api, .. } => serde_json::to_value(api.stats().await?)?,
            Provider::Go { peers, .. } => {
                go(peers, json!({"cmd": "sweep_stats", "node": 0})).await?
            }
        })
    }

    /// Keys the provider reports done since it started (provided or failed, first provides
    /// and reprovides alike): ours from `/api/v1/stats`, Go's from `Stats().Operations.Past`.
    async fn keys_done(&self) -> Result<u64> {
        let s = self.stats().await?;
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        Ok(match self {
            Provider::Ours { .. } => n(&s["keys_provided"]) + n(&s["keys_failed"]),
            Provider::Go { .. } => {
                let past = &s["operations"]["past"];
                n(&past["keys_provided"]) + n(&past["keys_failed"])
            }
        })
    }

    /// Whether the provider says it has no first provide left of the `keys` it was given
    /// (reprovides may still run when the interval is shorter than the provide).
    async fn idle(&self, keys: usize) -> Result<bool> {
        let s = self.stats().await?;
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        Ok(match self {
            // Reprovides may keep its workers busy: only first provides count.
            Provider::Ours { .. } => {
                n(&s["keystore_keys"]) >= keys as u64 && n(&s["keys_queued"]) == 0
            }
            Provider::Go { .. } => {
                let q = &s["queues"];
                let o = &s["operations"]["ongoing"];
                n(&s["schedule"]["keys"]) >= keys as u64
                    && n(&q["pending_key_provides"]) == 0
                    && n(&q["pending_region_provides"]) == 0
                    && n(&o["region_provides"]) == 0
                    && n(&o["key_provides"]) == 0
            }
        })
    }
}

/// A Go command, its error as an `anyhow` error.
async fn go(peers: &GoPeers, command: Value) -> Result<Value> {
    let what = command["cmd"].clone();
    peers
        .call(command)
        .await
        .map_err(|e| anyhow::anyhow!("Go command {what}: {e}"))
}

/// Seconds since the Unix epoch, as the Go program writes times.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The servers' inbound counters since their last reset.
#[derive(Debug, Default)]
struct Inbound {
    messages: BTreeMap<String, u64>,
    bytes: u64,
    last_add_provider: f64,
}

async fn inbound(servers: &GoPeers, reset: bool) -> Result<Inbound> {
    let v = go(
        servers,
        json!({"cmd": "inbound", "node": 0, "reset": reset}),
    )
    .await?;
    Ok(Inbound {
        messages: serde_json::from_value(v["messages"].clone())?,
        bytes: v["bytes"].as_u64().unwrap_or(0),
        last_add_provider: v["last_add_provider"].as_f64().unwrap_or(0.0),
    })
}

/// The true closest servers of each key: indices into `servers`, by XOR distance of the
/// SHA-256 of the key's multihash and of the servers' peer ids.
fn true_closest(servers: &[PeerInfo], keys: &[Key]) -> Vec<Vec<usize>> {
    let ids: Vec<Key> = servers
        .iter()
        .map(|s| Key::from_peer_id(&s.peer_id))
        .collect();
    keys.iter()
        .map(|key| {
            let mut order: Vec<usize> = (0..ids.len()).collect();
            order.sort_by_key(|&i| key.distance(&ids[i]));
            order.truncate(K);
            order
        })
        .collect()
}

/// Asks the servers which records of `provider` they hold (then they forget them) and
/// scores them against each key's true closest servers: (keys placed, share of records on
/// true closest servers).
async fn placement(
    servers: &GoPeers,
    provider: PeerId,
    cids: &[String],
    closest: &[Vec<usize>],
) -> Result<(usize, f64)> {
    let held = go(
        servers,
        json!({"cmd": "placement", "node": 0, "peer": {"id": provider.to_string(), "addrs": []},
               "keys": cids, "reset": true, "timeout": 300}),
    )
    .await?;
    let held: Vec<Vec<usize>> = serde_json::from_value(held)?;
    // holders[key] = the set of servers holding it, as a bit set over server indices.
    let words = servers.nodes.len().div_ceil(64);
    let mut holders = vec![0u64; cids.len() * words];
    for (server, keys) in held.iter().enumerate() {
        for &key in keys {
            if key < cids.len() {
                holders[key * words + server / 64] |= 1 << (server % 64);
            }
        }
    }
    let mut placed = 0;
    let mut on_closest = 0usize;
    for (key, best) in closest.iter().enumerate() {
        let n = best
            .iter()
            .filter(|&&s| holders[key * words + s / 64] & (1 << (s % 64)) != 0)
            .count();
        on_closest += n;
        if n >= PLACED {
            placed += 1;
        }
    }
    Ok((
        placed,
        on_closest as f64 / (closest.len() * K).max(1) as f64,
    ))
}

/// How long no ADD_PROVIDER may reach a server, after the provider reported the phase's
/// keys done, before the phase counts as over: the last records of the last region are
/// still on their way when the provider counts its keys.
const SETTLE: Duration = Duration::from_secs(2);

/// Watches the servers' counters until the phase is over, or `limit` passed. It is over once
/// the provider reports every one of the phase's keys done (`keys` more than `done_before`;
/// providing, also no first provide left) and no ADD_PROVIDER arrived for [`SETTLE`]. With
/// `idle` (a provide), also once no ADD_PROVIDER arrived for `idle` and the provider has no
/// first provide left. Returns the counters, the provider process's CPU time when the
/// ADD_PROVIDER count last grew, and why the watch ended.
#[allow(clippy::too_many_arguments)]
async fn watch(
    servers: &GoPeers,
    provider: &Provider,
    args: &Args,
    done_before: u64,
    expected: u64,
    idle: Option<Duration>,
    limit: Duration,
    label: &str,
) -> Result<(Inbound, Option<Duration>, &'static str)> {
    let pid = provider.pid();
    let began = Instant::now();
    let mut seen = 0u64;
    let mut changed = Instant::now();
    let mut cpu_at_change = cpu_time_of(&pid);
    let mut last_print = Instant::now();
    let ended = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = inbound(servers, false).await?;
        let ap = now.messages.get("ADD_PROVIDER").copied().unwrap_or(0);
        if ap != seen {
            seen = ap;
            changed = Instant::now();
            cpu_at_change = cpu_time_of(&pid);
        }
        let done = provider.keys_done().await?.saturating_sub(done_before);
        if last_print.elapsed() >= Duration::from_secs(10) {
            last_print = Instant::now();
            eprintln!(
                "  {label}: {ap} ADD_PROVIDER ({expected} = 20 per key), {} FIND_NODE, {done}/{} keys done ({:.0} s)",
                now.messages.get("FIND_NODE").copied().unwrap_or(0),
                args.keys,
                began.elapsed().as_secs_f64()
            );
        }
        if began.elapsed() >= limit {
            break "time limit";
        }
        let quiet = changed.elapsed();
        let providing = idle.is_some();
        if done >= args.keys as u64
            && quiet >= SETTLE
            && (!providing || provider.idle(args.keys).await?)
        {
            break "every key done";
        }
        if let Some(idle) = idle
            && quiet >= idle
            && provider.idle(args.keys).await?
        {
            break "no more ADD_PROVIDER";
        }
    };
    Ok((inbound(servers, false).await?, cpu_at_change, ended))
}

/// The phase's figures from the counters, its start (Unix seconds) and CPU readings.
fn phase_of(
    totals: Inbound,
    start: f64,
    cpu: (Option<Duration>, Option<Duration>),
    ended: &'static str,
) -> Phase {
    let wall = if totals.last_add_provider > start {
        Duration::from_secs_f64(totals.last_add_provider - start)
    } else {
        Duration::ZERO
    };
    Phase {
        wall,
        cpu: cpu::cpu_between(cpu.0, cpu.1),
        messages: totals.messages,
        bytes: totals.bytes,
        ended,
        ..Phase::default()
    }
}

/// Looks `cids` up with Go's FindProviders from up to 10 of the servers; how many found
/// `provider`.
async fn findable(servers: &GoPeers, provider: PeerId, cids: &[String]) -> Result<usize> {
    let from = servers.nodes.len().min(10);
    let mut found = 0;
    for (i, chunk) in cids.chunks(cids.len().div_ceil(from).max(1)).enumerate() {
        let answer = go(
            servers,
            json!({"cmd": "find_providers", "node": i % from, "keys": chunk, "count": 1,
                   "parallel": 16, "timeout": 120}),
        )
        .await?;
        let lists = answer.as_array().context("find_providers: not a list")?;
        found += lists
            .iter()
            .filter(|list| {
                list.as_array().is_some_and(|l| {
                    l.iter()
                        .any(|p| p["id"].as_str() == Some(provider.to_string().as_str()))
                })
            })
            .count();
    }
    Ok(found)
}

/// Runs one provider: start, join, provide, placement, one reprovide cycle, lookups.
async fn side(name: &'static str, args: &Args, servers: &GoPeers, seed: u64) -> Result<Side> {
    let mut rng = StdRng::seed_from_u64(seed);
    let keys: Vec<_> = (0..args.keys).map(|_| random_cid(&mut rng)).collect();
    let cids: Vec<String> = keys
        .iter()
        .map(|mh| Cid::new_v1(0x55, *mh).to_string())
        .collect();
    let kad_keys: Vec<Key> = keys.iter().map(Key::from_multihash).collect();
    let closest = true_closest(&servers.nodes, &kad_keys);
    let bootstrap: Vec<PeerInfo> = servers
        .nodes
        .choose_multiple(&mut rng, 3)
        .cloned()
        .collect();

    eprintln!("{name}: starting the provider");
    let provider = match name {
        "ours" => Provider::start_ours(args, &bootstrap).await?,
        _ => Provider::start_go(args, &bootstrap).await?,
    };
    // The bench starts once its table stops growing (at most 30 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut table = provider.table_len().await?;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = provider.table_len().await?;
        if now == table && now > 0 {
            break;
        }
        table = now;
    }
    eprintln!(
        "{name}: {table} peers in its table; providing {} keys",
        args.keys
    );
    let pid = provider.pid();
    let expected = (args.keys * K) as u64;

    // The provide: from handing over the keys to the last ADD_PROVIDER.
    inbound(servers, true).await?;
    let cpu_start = cpu_time_of(&pid);
    let start = unix_now();
    let done_before = provider.keys_done().await?;
    provider.provide(&cids).await?;
    let label = format!("{name} provide");
    let (totals, cpu_end, ended) = watch(
        servers,
        &provider,
        args,
        done_before,
        expected,
        Some(args.idle),
        args.timeout,
        &label,
    )
    .await?;
    let mut provide = phase_of(totals, start, (cpu_start, cpu_end), ended);
    (provide.placed, provide.on_closest) =
        placement(servers, provider.peer(), &cids, &closest).await?;
    eprintln!(
        "{name}: provided in {:.1} s ({ended}); placement {:.4}",
        provide.wall.as_secs_f64(),
        provide.placed as f64 / args.keys as f64
    );

    // One reprovide cycle: the interval from now on covers every region once.
    inbound(servers, true).await?;
    let cpu_start = cpu_time_of(&pid);
    let start = unix_now();
    let label = format!("{name} reprovide");
    let done_before = provider.keys_done().await?;
    let (totals, cpu_end, ended) = watch(
        servers,
        &provider,
        args,
        done_before,
        expected,
        None,
        args.reprovide + Duration::from_secs(10),
        &label,
    )
    .await?;
    let mut reprovide = phase_of(totals, start, (cpu_start, cpu_end), ended);
    (reprovide.placed, reprovide.on_closest) =
        placement(servers, provider.peer(), &cids, &closest).await?;
    eprintln!(
        "{name}: reprovide window {:.1} s ({ended}); placement {:.4}",
        reprovide.wall.as_secs_f64(),
        reprovide.placed as f64 / args.keys as f64
    );

    let sample: Vec<String> = cids
        .choose_multiple(&mut rng, args.sample.min(cids.len()))
        .cloned()
        .collect();
    let found = findable(servers, provider.peer(), &sample).await?;
    let stats = provider.stats().await?;
    let peak_rss = peak_rss_of(&pid);
    drop(provider);
    Ok(Side {
        name,
        keys: args.keys,
        provide,
        reprovide,
        peak_rss,
        sampled: sample.len(),
        found,
        stats,
    })
}

fn main() -> Result<()> {
    entry::init_tracing();
    let args = <Cli as clap::Parser>::parse().check()?;
    entry::block_on(bench(args))
}

async fn bench(args: Args) -> Result<()> {
    eprintln!(
        "bench go: {} Go servers; {} keys per provider; reprovide every {} s; sample {}",
        args.servers,
        args.keys,
        args.reprovide.as_secs(),
        args.sample
    );
    let servers = GoPeers::start(args.servers).await;
    let started = Instant::now();
    go(&servers, json!({"cmd": "mesh", "node": 0, "timeout": 600})).await?;
    // Go admits each peer after identify and its check: wait until the tables stop growing.
    let mut total = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut now = 0;
        for i in 0..servers.nodes.len() {
            now += servers.table(i).await.len();
        }
        if now == total {
            break;
        }
        total = now;
    }
    eprintln!(
        "servers meshed in {:.1} s; tables hold {:.1} peers on average",
        started.elapsed().as_secs_f64(),
        total as f64 / servers.nodes.len() as f64
    );
    let ours = if args.ours {
        Some(side("ours", &args, &servers, args.seed).await?)
    } else {
        None
    };
    let go_side = if args.go {
        Some(side("go", &args, &servers, args.seed ^ 0x6f).await?)
    } else {
        None
    };
    drop(servers);
    let sides: Vec<&Side> = ours.iter().chain(go_side.iter()).collect();
    print_table(&args, &sides);
    let ratios = match (&ours, &go_side) {
        (Some(o), Some(g)) => Some(print_ratios(o, g)),
        _ => None,
    };
    if let Some(path) = &args.json {
        let json = json!({
            "servers": args.servers,
            "keys": args.keys,
            "reprovide_secs": args.reprovide.as_secs(),
            "ours": ours.as_ref().map(Side::json),
            "go": go_side.as_ref().map(Side::json),
            "ratios": ratios,
        });
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"))
}

fn print_table(args: &Args, sides: &[&Side]) {
    println!();
    println!(
        "bench go: {} go-libp2p-kad-dht v0.42.2 servers on 127.0.0.1; {} keys per provider; \
         reprovide interval {} s",
        args.servers,
        args.keys,
        args.reprovide.as_secs()
    );
    let row = |label: &str, f: &dyn Fn(&Side) -> String| {
        let cells: String = sides.iter().map(|s| format!("{:>22}", f(s))).collect();
        println!("  {label:<34}{cells}");
    };
    row("", &|s| s.name.to_owned());
    for (title, pick) in [
        ("provide", (|s: &Side| &s.provide) as fn(&Side) -> &Phase),
        ("reprovide (one cycle)", |s: &Side| &s.reprovide),
    ] {
        println!("  {title}:");
        row("  wall to last ADD_PROVIDER (s)", &|s| {
            format!("{:.1}", pick(s).wall.as_secs_f64())
        });
        row("  keys per second", &|s| {
            format!("{:.0}", pick(s).keys_per_sec(s.keys))
        });
        row("  provider CPU (s)", &|s| {
            fmt_opt(pick(s).cpu.map(|d| d.as_secs_f64()), 2)
        });
        row("  CPU s per 1,000 keys", &|s| {
            fmt_opt(pick(s).cpu_per_1000(s.keys), 3)
        });
        let mut types: Vec<String> = Vec::new();
        for s in sides {
            for t in pick(s).messages.keys() {
                if !types.contains(t) {
                    types.push(t.clone());
                }
            }
        }
        for t in &types {
            row(&format!("  {t} received"), &|s| {
                pick(s).count(t).to_string()
            });
        }
        row("  bytes received per key", &|s| {
            format!("{:.0}", pick(s).bytes as f64 / s.keys.max(1) as f64)
        });
        row("  placement (>=19 of true 20)", &|s| {
            format!("{:.4}", pick(s).placed as f64 / s.keys.max(1) as f64)
        });
        row("  records on true 20 closest", &|s| {
            format!("{:.4}", pick(s).on_closest)
        });
        row("  ended", &|s| pick(s).ended.to_owned());
        row("  ADD_PROVIDER / (keys x 20)", &|s| {
            format!(
                "{:.3}",
                pick(s).count("ADD_PROVIDER") as f64 / (s.keys * K).max(1) as f64
            )
        });
    }
    row("records sent, provider's count", &|s| {
        let sent = s.stats["add_provider_sent"]
            .as_u64()
            .or_else(|| s.stats["operations"]["past"]["records_provided"].as_u64());
        sent.map_or_else(|| "n/a".to_owned(), |n| n.to_string())
    });
    row("peak RSS (MiB)", &|s| {
        fmt_opt(s.peak_rss.map(|b| b as f64 / (1 << 20) as f64), 1)
    });
    row("found (Go FindProviders sample)", &|s| {
        format!("{}/{}", s.found, s.sampled)
    });
}

fn print_ratios(ours: &Side, go: &Side) -> Value {
    let ratio = |a: f64, b: f64| if b > 0.0 { Some(a / b) } else { None };
    let per_cpu = |s: &Side| {
        s.provide
            .cpu
            .map(|c| s.keys as f64 / c.as_secs_f64().max(1e-9))
    };
    let keys_per_sec = ratio(
        ours.provide.keys_per_sec(ours.keys),
        go.provide.keys_per_sec(go.keys),
    );
    let keys_per_cpu = match (per_cpu(ours), per_cpu(go)) {
        (Some(o), Some(g)) => ratio(o, g),
        _ => None,
    };
    let reprovide_cpu = match (
        ours.reprovide.cpu_per_1000(ours.keys),
        go.reprovide.cpu_per_1000(go.keys),
    ) {
        (Some(o), Some(g)) => ratio(o, g),
        _ => None,
    };
    let find_node = ratio(
        ours.provide.count("FIND_NODE") as f64,
        go.provide.count("FIND_NODE") as f64,
    );
    let reprovide_find_node = ratio(
        ours.reprovide.count("FIND_NODE") as f64,
        go.reprovide.count("FIND_NODE") as f64,
    );
    let bytes = ratio(ours.provide.bytes as f64, go.provide.bytes as f64);
    let placement = ratio(ours.provide.placed as f64, go.provide.placed as f64);
    let rss = match (ours.peak_rss, go.peak_rss) {
        (Some(o), Some(g)) => ratio(o as f64, g as f64),
        _ => None,
    };
    println!("ratios (ours / Go's):");
    let line = |label: &str, v: Option<f64>| println!("  {label:<40}{:>10}", fmt_opt(v, 3));
    line("keys per second (provide)", keys_per_sec);
    line("keys per CPU-second (provide)", keys_per_cpu);
    line("CPU per 1,000 keys (reprovide)", reprovide_cpu);
    line("FIND_NODE received (provide)", find_node);
    line("FIND_NODE received (reprovide)", reprovide_find_node);
    line("bytes received (provide)", bytes);
    line("keys placed (provide)", placement);
    line("peak RSS", rss);
    let placed = ours.provide.placed as f64 / ours.keys.max(1) as f64;
    let check = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "targets: keys per CPU-second >= 2x Go's: {}; FIND_NODE <= Go's: {}; placement >= Go's \
         and >= 0.99: {}; peak RSS <= half Go's: {}",
        check(keys_per_cpu.is_some_and(|r| r >= 2.0)),
        check(ours.provide.count("FIND_NODE") <= go.provide.count("FIND_NODE")),
        check(ours.provide.placed >= go.provide.placed && placed >= 0.99),
        check(rss.is_some_and(|r| r <= 0.5)),
    );
    json!({
        "keys_per_sec": keys_per_sec,
        "keys_per_cpu_sec": keys_per_cpu,
        "reprovide_cpu_per_key": reprovide_cpu,
        "find_node_provide": find_node,
        "find_node_reprovide": reprovide_find_node,
        "bytes_provide": bytes,
        "placed_provide": placement,
        "peak_rss": rss,
    })
}
