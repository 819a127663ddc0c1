//! The `dht-node` binary.
//!
//! - `dht-node run`: the daemon (TOML configuration and flags, the HTTP API, graceful
//!   shutdown on SIGINT/SIGTERM that persists the provider's state);
//! - `dht-node provide|stop|find-providers|find-peer|get|put|stat`: client commands against
//!   a running node's HTTP API;
//! - `dht-node devnet`: many real nodes on 127.0.0.1 in one process, one of which provides
//!   random CIDs that the others then look up.

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use dht_node::{
    api,
    builder::NodeBuilder,
    config::{RunConfig, RunMode, Settings, StoreKind, Strategy, TableKind},
    devnet::{self, DevnetConfig},
    http_client::{ApiClient, ClientError},
    node::{Node, NodeTable},
};
use dht_proto::Multiaddr;
use dht_provider::{LegacyConfig, Multihash, SweepConfig};
use dht_provider_store::Keystore;
use dht_routing_table::KBucketTable;
use indicatif::{ProgressBar, ProgressStyle};
use libp2p::multiaddr::Protocol;

/// An IPFS Amino DHT node.
#[derive(Debug, Parser)]
#[command(name = "dht-node", version, about)]
struct Cli {
    /// The management API of the running node the client commands talk to.
    #[arg(long, global = true, default_value = "http://127.0.0.1:5481")]
    api: String,
    /// The Delegated Routing API of the running node (find-providers, find-peer).
    #[arg(long, global = true, default_value = "http://127.0.0.1:5480")]
    routing: String,
    /// The management API's token file: where `run` keeps it (created when missing) and
    /// what the client commands send (default: api.token in the default data directory;
    /// the client commands take $DHT_NODE_API_TOKEN first).
    #[arg(long, global = true)]
    api_token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of `run`'s flags does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the node until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Starts providing CIDs (arguments, or one per line from --file or stdin).
    Provide(CidArgs),
    /// Stops providing CIDs (arguments, or one per line from --file or stdin).
    Stop(CidArgs),
    /// Finds the providers of a CID.
    FindProviders {
        /// The CID.
        cid: String,
    },
    /// Finds the addresses of a peer.
    FindPeer {
        /// The peer id.
        peer: String,
    },
    /// Gets a value record (`/pk/<peer id>`, `/ipns/<peer id>` or `hex:<key bytes>`) and
    /// writes its value to stdout or --out.
    Get {
        /// The record's key.
        key: String,
        /// Write the value here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Puts a value record read from --file or stdin.
    Put {
        /// The record's key (`/pk/<peer id>`, `/ipns/<peer id>` or `hex:<key bytes>`).
        key: String,
        /// Read the value from this file instead of stdin.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Lists the keys provided, one per line, in keyspace order: base58btc multihashes, or
    /// CIDv1 with --cid.
    Provided(ProvidedArgs),
    /// Shows the provider's state in sections (connectivity, queues, schedule, workers,
    /// timings, operations, network) and its warnings.
    Stat(StatArgs),
    /// Starts N nodes on 127.0.0.1 in this process, provides K random CIDs from one of them,
    /// looks a sample up from the others and prints what it cost.
    Devnet(DevnetArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// A TOML configuration file (flags override it).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where the identity, the stores and the provider's state live.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A multiaddr to listen on (repeat for several).
    #[arg(long = "listen")]
    listen: Vec<String>,
    /// A multiaddr others reach this node at, announced besides the listen addresses (repeat
    /// for several).
    #[arg(long = "external-addr")]
    external_addr: Vec<String>,
    /// A bootstrap peer, a multiaddr ending in /p2p/<peer id> (repeat for several).
    #[arg(long = "bootstrap")]
    bootstrap: Vec<String>,
    /// Bootstrap from nobody (overrides the Amino default and the file).
    #[arg(long, conflicts_with = "bootstrap")]
    no_bootstrap: bool,
    /// A node on a LAN or one machine: loopback and private addresses are dialled and served,
    /// and pass the routing table's diversity filter (implied when listening on one).
    #[arg(long)]
    lan: bool,
    /// Apply the per-IP limits (connections, request rate) to loopback peers too.
    #[arg(long)]
    limit_loopback: bool,
    /// Whether the node serves the DHT.
    #[arg(long, value_enum)]
    mode: Option<RunMode>,
    /// How often every key is reprovided (90s, 30m, 22h, 1d).
    #[arg(long)]
    reprovide_interval: Option<String>,
    /// Provider workers.
    #[arg(long)]
    workers: Option<usize>,
    /// The Delegated Routing API's address (host:port), or off.
    #[arg(long)]
    http: Option<String>,
    /// The management API's address (host:port), or off.
    #[arg(long)]
    api_addr: Option<String>,
    /// A host name the management API's Host header may carry, besides IP addresses and
    /// localhost (repeat for several).
    #[arg(long = "api-host")]
    api_host: Vec<String>,
    /// How the node provides.
    #[arg(long, value_enum)]
    strategy: Option<Strategy>,
    /// Where the stores live.
    #[arg(long, value_enum)]
    store: Option<StoreKind>,
    /// Which routing table the node runs.
    #[arg(long, value_enum)]
    table: Option<TableKind>,
}

impl RunArgs {
    fn flags(&self, api_token_file: Option<PathBuf>) -> RunConfig {
        RunConfig {
            api: self.api_addr.clone(),
            api_hosts: (!self.api_host.is_empty()).then(|| self.api_host.clone()),
            api_token_file,
            data_dir: self.data_dir.clone(),
            listen: (!self.listen.is_empty()).then(|| self.listen.clone()),
            external_addrs: (!self.external_addr.is_empty()).then(|| self.external_addr.clone()),
            bootstrap: if self.no_bootstrap {
                Some(Vec::new())
            } else {
                (!self.bootstrap.is_empty()).then(|| self.bootstrap.clone())
            },
            mode: self.mode,
            reprovide_interval: self.reprovide_interval.clone(),
            workers: self.workers,
            http: self.http.clone(),
            strategy: self.strategy,
            store: self.store,
            table: self.table,
            limit_loopback: self.limit_loopback.then_some(true),
            ..RunConfig::default()
        }
    }
}

#[derive(Debug, clap::Args)]
struct CidArgs {
    /// CIDs.
    cids: Vec<String>,
    /// Read CIDs from this file, one per line ("-" for stdin).
    #[arg(long)]
    file: Option<PathBuf>,
    /// CIDs sent per request.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// (provide) Return once the first provide of each batch finished.
    #[arg(long)]
    wait: bool,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, clap::Args)]
struct ProvidedArgs {
    /// Print CIDv1 (base32) instead of multihashes.
    #[arg(long)]
    cid: bool,
    /// The CIDs' codec (--cid): raw, dag-pb, dag-cbor, dag-json, libp2p-key, or a number
    /// (0x55).
    #[arg(long, default_value = "raw", requires = "cid")]
    codec: String,
}

/// The multicodec code of a codec name (or a decimal or 0x number).
fn codec(name: &str) -> anyhow::Result<u64> {
    Ok(match name {
        "raw" => 0x55,
        "dag-pb" => 0x70,
        "dag-cbor" => 0x71,
        "dag-json" => 0x0129,
        "libp2p-key" => 0x72,
        other => match other.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => other.parse(),
        }
        .with_context(|| {
            format!("{other:?}: a codec is raw, dag-pb, dag-cbor, dag-json, libp2p-key or a number")
        })?,
    })
}

#[derive(Debug, clap::Args)]
struct StatArgs {
    /// JSON (`{"provider":…,"routing_table":…}`), for scripts.
    #[arg(long, conflicts_with = "compact")]
    json: bool,
    /// One line.
    #[arg(long)]
    compact: bool,
    /// Refresh every --interval seconds.
    #[arg(long)]
    watch: bool,
    /// Seconds between two refreshes (--watch).
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// Stop after this many refreshes (--watch; 0: until interrupted).
    #[arg(long, default_value_t = 0)]
    count: u64,
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
    #[arg(long, value_enum, default_value_t = Strategy::Sweep)]
    strategy: Strategy,
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
    /// Share of the servers, 0 to 1, that speak the batched provide protocol (the others
    /// take ADD_PROVIDER only): 0.5 is a mixed devnet.
    #[arg(long, default_value_t = 1.0, value_parser = parse_share)]
    batch_share: f64,
    /// Turn the batched provide protocol off on every node (ADD_PROVIDER only).
    #[arg(long)]
    no_provide_batch: bool,
    /// Hide the progress bar.
    #[arg(long)]
    quiet: bool,
}

/// A share from 0 to 1 (`--batch-share`).
fn parse_share(v: &str) -> Result<f64, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| (0.0..=1.0).contains(s))
        .ok_or_else(|| format!("not a share from 0 to 1: {v:?}"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The daemon says what it does (info); the client commands only what goes wrong.
    let default_level = match cli.command {
        Command::Run(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Devnet(args) => run_devnet(args).await,
            Command::Run(args) => run_node(args, cli.api_token_file).await,
            command => {
                let token = client_token(cli.api_token_file.as_deref())?;
                let api = ApiClient::new(&cli.api)?;
                let api = match token {
                    Some(token) => api.with_token(token),
                    None => api,
                };
                client_command(&api, &ApiClient::new(&cli.routing)?, command).await
            }
        }
    })
}

/// The token the client commands send: `$DHT_NODE_API_TOKEN`, else the token file's.
fn client_token(file: Option<&Path>) -> anyhow::Result<Option<String>> {
    if let Ok(token) = std::env::var("DHT_NODE_API_TOKEN") {
        return Ok(Some(token.trim().to_owned()));
    }
    let default = dht_node::config::default_data_dir().join(api::TOKEN_FILE);
    let path = file.unwrap_or(&default);
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && file.is_none() => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading the API token {}", path.display())),
    }
}

async fn run_node(args: RunArgs, api_token_file: Option<PathBuf>) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => RunConfig::from_toml(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?,
        )?,
        None => RunConfig::default(),
    };
    let settings = file.merge(args.flags(api_token_file)).resolve()?;
    let mut builder = NodeBuilder::new()
        .data_dir(settings.data_dir.clone())
        .listen_addrs(settings.listen.clone())
        .external_addrs(settings.external_addrs.clone())
        .bootstrap_peers(settings.bootstrap.clone())
        .mode(settings.mode)
        .limit_loopback(settings.limit_loopback)
        .provide_batch(settings.provide_batch);
    if args.lan || settings.listen.iter().any(is_local) {
        builder = builder.allow_local_networks();
    }
    builder = if settings.store == StoreKind::Memory {
        builder.memory_store()
    } else {
        builder.rocks_store(settings.rocksdb.clone())
    };
    builder = if settings.strategy == Strategy::PerKey {
        let mut config = LegacyConfig::default();
        if let Some(interval) = settings.reprovide_interval {
            config = config.with_interval(interval);
        }
        if let Some(n) = settings.workers {
            config = config.with_parallelism(n);
        }
        builder.legacy_provider(config)
    } else {
        let mut config = SweepConfig::default();
        if let Some(interval) = settings.reprovide_interval {
            config = config.with_interval(interval);
        }
        if let Some(n) = settings.workers {
            config = config.with_workers(n);
        }
        builder.sweeping_provider(config)
    };
    match settings.table {
        TableKind::KBucket => serve_node::<KBucketTable>(builder, &settings).await,
        TableKind::Full => serve_node(builder.full_routing_table(), &settings).await,
    }
}

/// Whether a listen address is on loopback or a private network (the routing table then
/// exempts such peers from its IP diversity filter).
fn is_local(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback() || ip.is_private(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

async fn serve_node<T: NodeTable>(
    builder: NodeBuilder<T>,
    settings: &Settings,
) -> anyhow::Result<()> {
    // Both listeners are bound before the node starts (the bootstrap may take a minute):
    // until it runs they answer 503.
    let routing = settings
        .http
        .map(EarlyListener::bind)
        .transpose()
        .context("binding the Delegated Routing API")?;
    let management = match settings.api {
        Some(addr) => {
            if let Some(dir) = settings.api_token_file.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let access = api::ManagementAccess::load_or_create(&settings.api_token_file)
                .with_context(|| {
                    format!(
                        "reading or creating the API token {}",
                        settings.api_token_file.display()
                    )
                })?
                .with_hosts(settings.api_hosts.clone());
            api::warn_if_exposed(addr);
            let early = EarlyListener::bind(addr).context("binding the management API")?;
            Some((early, access))
        }
        None => None,
    };
    let node: Arc<Node<T>> = builder.build().await.context("starting the node")?;
    let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = http_stopped.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let mut tasks = Vec::new();
    let http = match routing {
        Some(early) => {
            let router = api::routing_router(node.clone());
            let (bound, task) = api::serve_on(early.into_listener().await?, router, stopped())?;
            tasks.push(task);
            Some(bound)
        }
        None => None,
    };
    let management = match management {
        Some((early, access)) => {
            let router = api::management_router(node.clone(), access);
            let (bound, task) = api::serve_on(early.into_listener().await?, router, stopped())?;
            tasks.push(task);
            Some(bound)
        }
        None => None,
    };
    let info_path = settings.data_dir.join("node.json");
    let info = serde_json::json!({
        "peer_id": node.peer_id().to_string(),
        "addrs": node.info().addrs.iter().map(|a| format!("{a}/p2p/{}", node.peer_id())).collect::<Vec<_>>(),
        "http": http.map(|a| format!("http://{a}")),
        "api": management.map(|a| format!("http://{a}")),
        "api_token_file": management.map(|_| settings.api_token_file.display().to_string()),
        "pid": std::process::id(),
    });
    write_atomically(&info_path, &serde_json::to_vec_pretty(&info)?)?;
    // The provider's warnings reach the log even when nobody asks for the stats.
    let watched = node.clone();
    let health = tokio::spawn(async move {
        let mut tick =
            tokio::time::interval(Duration::from_secs(dht_node::health::SAMPLE_EVERY_SECS));
        loop {
            tick.tick().await;
            let stats = dht_provider::DhtProvider::stats(watched.provider());
            let now = dht_routing_table::Clock::now(&dht_routing_table::SystemClock);
            watched.metrics().health().observe(now, &stats);
        }
    });
    tracing::info!(
        peer_id = %node.peer_id(),
        addrs = ?node.info().addrs,
        routing_api = ?http,
        management_api = ?management,
        keystore_keys = node.stores().count().unwrap_or(0),
        data_dir = %settings.data_dir.display(),
        info = %info_path.display(),
        "node running"
    );

    wait_for_signal().await?;
    tracing::info!("shutting down");
    health.abort();
    let _ = stop_http.send(true);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let closed = node.close().await;
    let _ = std::fs::remove_file(&info_path);
    closed.context("closing the node")?;
    tracing::info!("provider state saved; stopped");
    Ok(())
}

/// A listener bound before the node starts, answering 503 until
/// [`into_listener`](Self::into_listener) hands its socket to the real API.
struct EarlyListener {
    /// A second handle of the same socket, kept for the real API.
    spare: std::net::TcpListener,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl EarlyListener {
    fn bind(addr: std::net::SocketAddr) -> anyhow::Result<Self> {
        let socket =
            std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        socket.set_nonblocking(true)?;
        let spare = socket.try_clone()?;
        let starting = axum::Router::new().fallback(|| async {
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                [(axum::http::header::RETRY_AFTER, "1")],
                axum::Json(serde_json::json!({ "error": "the node is starting" })),
            )
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (bound, task) = api::serve_on(
            tokio::net::TcpListener::from_std(socket)?,
            starting,
            async {
                let _ = stopped.await;
            },
        )?;
        tracing::info!(addr = %bound, "HTTP listener bound; 503 until the node runs");
        Ok(EarlyListener { spare, stop, task })
    }

    /// Stops the 503 server and returns the socket (connections that arrive meanwhile wait
    /// in its backlog).
    async fn into_listener(self) -> anyhow::Result<tokio::net::TcpListener> {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        Ok(tokio::net::TcpListener::from_std(self.spare)?)
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("SIGINT handler")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.context("SIGINT handler")?;
    Ok(())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The CIDs of the arguments, then of the file (or stdin when neither gives any).
fn read_cids(args: &CidArgs) -> anyhow::Result<Vec<String>> {
    let mut cids = args.cids.clone();
    let text = match &args.file {
        Some(path) if path.as_os_str() == "-" => Some(read_stdin()?),
        Some(path) => Some(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        ),
        None if cids.is_empty() => Some(read_stdin()?),
        None => None,
    };
    if let Some(text) = text {
        cids.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    if cids.is_empty() {
        bail!("no CID given");
    }
    Ok(cids)
}

fn read_stdin() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading stdin")?;
    Ok(text)
}

/// `/pk/<peer id>`, `/ipns/<peer id>` (the peer id's bytes after the namespace) or
/// `hex:<bytes>`.
fn record_key(text: &str) -> anyhow::Result<Vec<u8>> {
    if let Some(hex) = text.strip_prefix("hex:") {
        return Ok(api::hex_decode(hex)?);
    }
    for namespace in ["/pk/", "/ipns/"] {
        if let Some(peer) = text.strip_prefix(namespace) {
            let peer = api::parse_peer_id(peer)?;
            let mut key = namespace.as_bytes().to_vec();
            key.extend(peer.to_bytes());
            return Ok(key);
        }
    }
    bail!("{text:?}: a key is /pk/<peer id>, /ipns/<peer id> or hex:<bytes>")
}

fn progress(total: u64, quiet: bool, what: &str) -> anyhow::Result<ProgressBar> {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:40}} {{pos}}/{{len}} CIDs, {{per_sec}}, {{elapsed_precise}}"
        ))
        .context("progress bar template")?,
    );
    Ok(bar)
}

#[allow(clippy::print_stdout)]
async fn client_command(
    api: &ApiClient,
    routing: &ApiClient,
    command: Command,
) -> anyhow::Result<()> {
    match command {
        Command::Provide(args) => {
            let cids = read_cids(&args)?;
            let bar = progress(cids.len() as u64, args.quiet, "providing")?;
            let mut accepted = 0;
            for batch in cids.chunks(args.batch.max(1)) {
                accepted += api.provide(batch, args.wait).await?;
                bar.inc(batch.len() as u64);
            }
            bar.finish_and_clear();
            println!("{accepted} CIDs accepted");
        }
        Command::Stop(args) => {
            let cids = read_cids(&args)?;
            let bar = progress(cids.len() as u64, args.quiet, "stopping")?;
            let mut stopped = 0;
            for batch in cids.chunks(args.batch.max(1)) {
                stopped += api.stop(batch).await?;
                bar.inc(batch.len() as u64);
            }
            bar.finish_and_clear();
            println!("{stopped} CIDs no longer provided");
        }
        Command::FindProviders { cid } => {
            let providers = routing.find_providers(&cid).await?;
            if providers.is_empty() {
                bail!("no provider of {cid} found");
            }
            for p in providers {
                println!("{} {}", p.id, p.addrs.join(" "));
            }
        }
        Command::FindPeer { peer } => match routing.find_peer(&peer).await? {
            Some(p) => println!("{} {}", p.id, p.addrs.join(" ")),
            None => bail!("peer {peer} not found"),
        },
        Command::Get { key, out } => {
            let Some(value) = api.get_value(&record_key(&key)?).await? else {
                bail!("no record under {key}");
            };
            match out {
                Some(path) => std::fs::write(&path, &value)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => std::io::stdout()
                    .write_all(&value)
                    .context("writing stdout")?,
            }
        }
        Command::Put { key, file } => {
            let value = match file {
                Some(path) => {
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?
                }
                None => {
                    let mut v = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut v)
                        .context("reading stdin")?;
                    v
                }
            };
            let n = api.put_value(&record_key(&key)?, value).await?;
            println!("stored on {n} peers");
        }
        Command::Stat(args) => stat(api, &args).await?,
        Command::Provided(args) => {
            let codec = args.cid.then(|| codec(&args.codec)).transpose()?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            api.provided(|key| {
                let text = match codec {
                    None => key.multihash,
                    Some(codec) => {
                        let bad =
                            |e: Box<dyn std::error::Error + Send + Sync>| ClientError::BadAnswer {
                                what: "multihash",
                                source: e,
                            };
                        let bytes = dht_proto::cid::multibase::Base::Base58Btc
                            .decode(&key.multihash)
                            .map_err(|e| bad(e.into()))?;
                        let mh = Multihash::from_bytes(&bytes).map_err(|e| bad(e.into()))?;
                        dht_proto::cid::Cid::new_v1(codec, mh).to_string()
                    }
                };
                writeln!(out, "{text}").map_err(ClientError::Sink)
            })
            .await?;
            out.flush().context("writing stdout")?;
        }
        Command::Run(_) | Command::Devnet(_) => bail!("not a client command"),
    }
    Ok(())
}

/// `dht-node stat`: once, or every `--interval` with `--watch` (`--count` times).
#[allow(clippy::print_stdout)]
async fn stat(api: &ApiClient, args: &StatArgs) -> anyhow::Result<()> {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let interval = Duration::from_secs_f64(args.interval.clamp(0.1, 86_400.0));
    let mut shown = 0u64;
    loop {
        let stats = api.stats().await?;
        let table = api.routing_table().await?;
        let text = if args.json {
            serde_json::to_string_pretty(&serde_json::json!({
                "provider": stats,
                "routing_table": table,
            }))?
        } else if args.compact {
            dht_node::stat::compact(&stats)
        } else {
            dht_node::stat::render(&stats, &table)
        };
        if args.watch && terminal && !args.compact {
            // Clear the screen and go home, as `watch` does.
            print!("\x1b[2J\x1b[H");
        }
        println!("{}", text.trim_end());
        std::io::stdout().flush().context("writing stdout")?;
        shown += 1;
        if !args.watch || (args.count > 0 && shown >= args.count) {
            return Ok(());
        }
        tokio::time::sleep(interval).await;
    }
}

async fn run_devnet(args: DevnetArgs) -> anyhow::Result<()> {
    let mut config = DevnetConfig::default()
        .with_nodes(args.nodes)
        .with_keys(args.keys)
        .with_sample(args.sample)
        .with_strategy(args.strategy)
        .with_bootstrap_peers(args.bootstrap_peers)
        .with_settle_timeout(Duration::from_secs(args.settle_secs));
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if let Some(workers) = args.workers {
        config.sweep = config.sweep.with_workers(workers);
    }
    if let Some(n) = args.sends_per_peer {
        config.sweep = config.sweep.with_sends_per_peer(n);
    }
    if let Some(n) = args.parallelism {
        config.legacy = config.legacy.with_parallelism(n);
    }
    config.batch_share = args.batch_share;
    if args.no_provide_batch {
        config.node = config.node.provide_batch(false);
    }

    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "providing {bar:40} {pos}/{len} records, {per_sec}, {msg}, {elapsed_precise} (eta {eta})",
        )
        .context("progress bar template")?,
    );
    let started = Instant::now();
    let report = devnet::run(&config, |p| {
        bar.set_length(p.records_expected);
        bar.set_position(p.records_sent);
        bar.set_message(format!("{}/{} keys", p.keys_provided, p.keys));
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
