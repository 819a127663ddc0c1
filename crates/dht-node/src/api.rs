//! The node's HTTP API (axum): two listeners, both on 127.0.0.1 by default.
//!
//! The **routing listener** ([`DEFAULT_HTTP_ADDR`], [`routing_router`]) serves Delegated
//! Routing V1 only (<https://specs.ipfs.tech/routing/http-routing-v1/>), as boxo's server
//! does, and may be exposed to the public:
//!
//! - `GET /routing/v1/providers/{cid}`: the providers of a CID, as
//!   `{"Providers":[{"Schema":"peer","ID":"12D3…","Addrs":["/ip4/…"],"Protocols":[]}]}`, or one
//!   such record per line (`application/x-ndjson`, streamed as the lookup finds them) when
//!   the request's `Accept` header asks for NDJSON. 200 with an empty list when none is
//!   found. The node's own provider records (held as a DHT server) and itself (when it
//!   provides the CID) come first, then the DHT lookup's.
//! - `GET /routing/v1/peers/{peer-id}`: the addresses of a peer (peer id in base58 or as a
//!   CIDv1 `libp2p-key`), as `{"Peers":[…]}` or NDJSON; an empty list when not found.
//! - `GET /routing/v1/ipns/{name}`: the IPNS record of a name
//!   (`application/vnd.ipfs.ipns-record`); 200 with a text body when there is none.
//!   `PUT` stores a record (validated as the DHT validates it) and puts it on the DHT.
//! - Both lists take `filter-addrs` and `filter-protocols` ([`RecordFilter`]). `Accept`
//!   other than JSON, NDJSON or `*/*` is 406. Answers carry `Cache-Control` (5 minutes with
//!   results, 15 s without) and `Vary: Accept`; CORS allows any origin (on this listener
//!   only). Other `/routing/v1/` requests are 501. Lookups are bounded ([`RoutingLimits`]:
//!   64 at once, 503 beyond; 30 s each).
//!
//! The **management listener** ([`DEFAULT_API_ADDR`], [`management_router`]) serves what
//! changes the node's state or is not Delegated Routing. Every request must carry
//! `Authorization: Bearer <token>` (401 otherwise; [`ManagementAccess`], by default the token
//! in `<data dir>/api.token`, created on first start) and a `Host` header that is an IP
//! address, `localhost` or one of the configured names (403 otherwise), so a web page whose
//! name is rebound to 127.0.0.1 (DNS rebinding) cannot reach it. Binding it to an address
//! other than loopback is logged as a warning.
//!
//! - `POST /api/v1/provide` `{"cids":["bafy…",…],"wait":false,"force":false}`: adds the
//!   CIDs to the keystore (persisted before the answer) and provides them; with `wait`,
//!   answers once the first provide finished. → `{"accepted":N}`.
//! - `POST /api/v1/stop` `{"cids":[…]}`: stops reproviding them. → `{"stopped":N}`.
//! - `GET /api/v1/stats`: the provider's counters and the keystore size.
//! - `GET /api/v1/provided/{cid}`: `{"held":true|false}`, whether the keystore holds it.
//! - `GET /api/v1/provided`: every key provided (ProvideList), one
//!   `{"multihash":"<base58btc>","kad":"<hex Kademlia key>"}` per line (NDJSON), in keyspace
//!   order, streamed: read from the keystore `page` keys at a time (default
//!   [`PROVIDED_PAGE`], at most [`MAX_LIST_PAGE`](dht_provider::MAX_LIST_PAGE)) as the client
//!   reads. `after=<hex Kademlia key>` resumes after a key, `limit=N` stops after N keys. A
//!   store error ends the stream with a line `{"error":"…"}`.
//! - `GET /api/v1/routing-table`: a [`TableSummary`](crate::node::TableSummary).
//! - `GET /api/v1/id`: `{"ID":…,"Addrs":[…]}`.
//! - `GET /api/v1/values/{hex key}`: the value record's value (raw bytes), 404 if none;
//!   `PUT` with the value as the body stores it locally and on the k closest peers (the
//!   Amino validators apply: `/pk/…` and `/ipns/…` keys). → `{"accepted_by":N}`.
//! - `GET /metrics`: the Prometheus text format ([`Metrics`](crate::metrics::Metrics)).

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, Path, Query, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use dht_handler::MAX_IPNS_RECORD_SIZE;
use dht_proto::{Key, PeerId, PeerInfo, Record, cid::Cid};
use dht_provider::{DhtProvider, Multihash, ProviderStats};
use dht_provider_store::{Keystore, ProviderStore, StoreError};
use dht_routing_table::{Clock, SystemClock};
use futures::{SinkExt, StreamExt, channel::mpsc};
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinHandle,
};

use crate::{
    metrics::Snapshot,
    node::{Node, NodeError, NodeTable, on_disk},
};

/// The default address of the routing listener (Delegated Routing V1).
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:5480";

/// The default address of the management listener.
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:5481";

/// The file, under the data directory, that holds the management API's token.
pub const TOKEN_FILE: &str = "api.token";

/// The most providers one `/routing/v1/providers` answer lists.
pub const MAX_PROVIDERS: usize = 100;

/// The largest request body accepted (a provide of about a million CIDs).
pub const MAX_BODY_BYTES: usize = 128 << 20;

const NDJSON: &str = "application/x-ndjson";

/// A peer record of the Delegated Routing V1 API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// Always `"peer"`.
    #[serde(rename = "Schema")]
    pub schema: String,
    /// The peer id, base58.
    #[serde(rename = "ID")]
    pub id: String,
    /// The peer's multiaddrs.
    #[serde(rename = "Addrs", default)]
    pub addrs: Vec<String>,
    /// The transfer protocols the peer is known to speak (empty: a DHT provider record says
    /// nothing about them).
    #[serde(rename = "Protocols", default)]
    pub protocols: Vec<String>,
}

impl PeerRecord {
    /// The record of `peer`.
    pub fn of(peer: &PeerInfo) -> Self {
        PeerRecord {
            schema: "peer".into(),
            id: peer.peer_id.to_string(),
            addrs: peer.addrs.iter().map(ToString::to_string).collect(),
            protocols: Vec::new(),
        }
    }
}

/// The body of `POST /api/v1/provide` and `POST /api/v1/stop`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CidList {
    /// The CIDs (any multibase CIDv0 or CIDv1).
    pub cids: Vec<String>,
    /// Answer once the first provide finished (provide only).
    #[serde(default)]
    pub wait: bool,
    /// Provide the keys already held again too (provide only).
    #[serde(default)]
    pub force: bool,
}

/// The provider's state and counters as `GET /api/v1/stats` shows them (and `dht-node stat`
/// prints in sections): read from counters kept up to date, never from a keystore scan.
/// Times are Unix seconds; `now` is the node's clock when the answer was made.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StatsView {
    /// The node's clock at the answer (Unix seconds).
    #[serde(default)]
    pub now: u64,
    /// `"sweep"` or `"per-key"`.
    pub strategy: String,
    /// Warnings an operator must not miss ([`Warning`](crate::health::Warning)).
    #[serde(default)]
    pub warnings: Vec<crate::health::Warning>,

    // Connectivity.
    /// Online, disconnected or offline.
    pub connectivity: String,
    /// Since when it holds.
    #[serde(default)]
    pub connectivity_since: u64,

    // Queues.
    /// Keys waiting for their first provide.
    pub keys_queued: u64,
    /// How many of them are held in memory (the others are read back from the keystore).
    #[serde(default)]
    pub keys_queued_in_memory: u64,
    /// How long the oldest of them has waited, in seconds.
    #[serde(default)]
    pub oldest_queued_secs: u64,
    /// Regions waiting: with new keys, or for a retry.
    pub regions_queued: u64,
    /// Regions waiting with new keys.
    #[serde(default)]
    pub regions_queued_provide: u64,
    /// Regions waiting for a retry.
    #[serde(default)]
    pub regions_queued_retry: u64,
    /// How long the oldest retry has waited, in seconds.
    #[serde(default)]
    pub oldest_retry_secs: u64,
    /// Regions of the schedule due for their reprovide, not yet taken.
    #[serde(default)]
    pub regions_due: u64,

    // Schedule.
    /// Keys in the keystore.
    pub keystore_keys: u64,
    /// Regions of the schedule.
    #[serde(default)]
    pub regions: u64,
    /// Mean prefix length of the regions explored.
    #[serde(default)]
    pub mean_region_prefix_len: f64,
    /// The next region of the reprovide walk (its prefix bits).
    #[serde(default)]
    pub next_region: Option<String>,
    /// When it is due.
    #[serde(default)]
    pub next_region_due: Option<u64>,

    // Workers.
    /// Workers.
    pub workers: usize,
    /// Workers busy.
    pub workers_busy: usize,
    /// Workers kept for the schedule.
    #[serde(default)]
    pub workers_reserved: usize,

    // Timings.
    /// When the provider started.
    #[serde(default)]
    pub started_at: u64,
    /// Seconds since then.
    #[serde(default)]
    pub uptime_secs: u64,
    /// When the cycle being walked started.
    #[serde(default)]
    pub cycle_started_at: Option<u64>,
    /// How long the last full cycle took, in seconds.
    #[serde(default)]
    pub last_cycle_secs: Option<u64>,
    /// How far behind schedule, in seconds.
    pub behind_schedule_secs: u64,
    /// The reprovide cycle number.
    pub cycle: u64,

    // Operations.
    /// Keys whose provide (or reprovide) succeeded since the start.
    pub keys_provided: u64,
    /// Keys whose provide failed since the start.
    pub keys_failed: u64,
    /// ADD_PROVIDER messages (records) sent.
    pub add_provider_sent: u64,
    /// ADD_PROVIDER messages that failed.
    pub add_provider_failed: u64,
    /// Records sent in the current cycle.
    pub records_sent_this_cycle: u64,
    /// Records sent in the last complete cycle.
    pub records_sent_last_cycle: u64,
    /// Keys provided per minute since start.
    #[serde(default)]
    pub keys_per_minute: f64,
    /// Mean time of a region job, in seconds.
    #[serde(default)]
    pub mean_region_secs: f64,
    /// FIND_NODE requests sent.
    pub find_node_sent: u64,
    /// Regions explored since the start.
    pub regions_explored: u64,

    // Network.
    /// Peers in the routing table.
    #[serde(default)]
    pub table_peers: u64,
    /// Share of the peers sent to in the last cycle that answered.
    #[serde(default)]
    pub reachable_share: Option<f64>,
    /// Mean servers per region explored.
    #[serde(default)]
    pub mean_servers_per_region: f64,
    /// Mean servers holding each key's record.
    #[serde(default)]
    pub mean_holders_per_key: f64,

    // Errors.
    /// Keystore reads that failed.
    #[serde(default)]
    pub keystore_scan_errors: u64,
    /// Saves of the provider's state that failed.
    #[serde(default)]
    pub state_save_errors: u64,

    // Regions.
    /// The reprovide interval, in seconds (0 if unknown).
    #[serde(default)]
    pub interval_secs: u64,
    /// When each region was last reprovided and last given new keys, as the provider noted
    /// them when its jobs ended (at most [`dht_provider::MAX_REGION_TIMES`]), in keyspace
    /// order.
    #[serde(default)]
    pub region_times: Vec<RegionTimeView>,
}

/// One region's times in [`StatsView::region_times`] ([`dht_provider::RegionTime`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionTimeView {
    /// The region's prefix bits (`0`s and `1`s; empty for the whole keyspace).
    pub prefix: String,
    /// When every key of it was last sent (Unix seconds).
    #[serde(default)]
    pub reprovided_at: Option<u64>,
    /// When its new keys were last sent (Unix seconds).
    #[serde(default)]
    pub provided_at: Option<u64>,
}

impl StatsView {
    /// The view of `p` at `now`, with the keystore's size, the routing table's and the
    /// warnings.
    pub fn of(
        strategy: &str,
        now: u64,
        keystore_keys: u64,
        table_peers: u64,
        p: &ProviderStats,
        warnings: Vec<crate::health::Warning>,
    ) -> Self {
        StatsView {
            now,
            strategy: strategy.into(),
            warnings,
            connectivity: format!("{:?}", p.connectivity).to_lowercase(),
            connectivity_since: p.connectivity_since,
            keys_queued: p.keys_queued,
            keys_queued_in_memory: p.keys_queued_in_memory,
            oldest_queued_secs: p.oldest_queued_secs,
            regions_queued: p.regions_queued,
            regions_queued_provide: p.regions_queued_provide,
            regions_queued_retry: p.regions_queued_retry,
            oldest_retry_secs: p.oldest_retry_secs,
            regions_due: p.regions_due,
            keystore_keys,
            regions: p.slices,
            mean_region_prefix_len: p.average_region_prefix_len,
            next_region: p.next_region.clone(),
            next_region_due: p.next_region_due,
            workers: p.workers,
            workers_busy: p.workers_busy,
            workers_reserved: p.workers_reserved,
            started_at: p.started_at,
            uptime_secs: p.uptime_secs(now),
            cycle_started_at: p.cycle_started_at,
            last_cycle_secs: p.last_cycle_secs,
            behind_schedule_secs: p.behind_schedule_secs,
            cycle: p.cycle,
            keys_provided: p.keys_provided,
            keys_failed: p.keys_failed,
            add_provider_sent: p.add_provider_sent,
            add_provider_failed: p.add_provider_failed,
            records_sent_this_cycle: p.records_sent_this_cycle,
            records_sent_last_cycle: p.records_sent_last_cycle,
            keys_per_minute: p.keys_per_minute(now),
            mean_region_secs: p.mean_region_secs(),
            find_node_sent: p.find_node_sent,
            regions_explored: p.regions_explored,
            table_peers,
            reachable_share: p.reachable_share(),
            mean_servers_per_region: p.mean_servers_per_region(),
            mean_holders_per_key: p.mean_holders_per_key(),
            keystore_scan_errors: p.keystore_scan_errors,
            state_save_errors: p.state_save_errors,
            interval_secs: p.interval_secs,
            region_times: p
                .region_times
                .iter()
                .map(|t| RegionTimeView {
                    prefix: t.prefix.to_string(),
                    reprovided_at: t.reprovided_at,
                    provided_at: t.provided_at,
                })
                .collect(),
        }
    }
}

/// Why an API request failed; the answer is the status and `{"error": "…"}`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request was malformed (a bad CID, peer id, key or body).
    #[error("{0}")]
    BadRequest(String),
    /// Nothing was found.
    #[error("{0}")]
    NotFound(String),
    /// No representation the request accepts (406).
    #[error("{0}")]
    NotAcceptable(String),
    /// Too much in flight already (503).
    #[error("{0}")]
    Busy(String),
    /// The lookup did not finish in time (504).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The node failed to do it.
    #[error("{0}")]
    Node(#[from] NodeError),
    /// The provider refused or failed.
    #[error("provider: {0}")]
    Provider(#[from] dht_provider::ProviderError),
    /// A store failed.
    #[error("store: {0}")]
    Store(#[from] dht_provider_store::StoreError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) | ApiError::Node(NodeError::InvalidRecord(_)) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Node(NodeError::Routing(dht_routing::Error::NoPeers)) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response()
    }
}

/// Parses a CID and returns its multihash (the DHT key of provider records).
///
/// # Errors
/// [`ApiError::BadRequest`] when `text` is not a CID.
pub fn parse_cid(text: &str) -> Result<Multihash, ApiError> {
    let cid = Cid::from_str(text.trim())
        .map_err(|e| ApiError::BadRequest(format!("{text:?} is not a CID: {e}")))?;
    Multihash::wrap(cid.hash().code(), cid.hash().digest())
        .map_err(|e| ApiError::BadRequest(format!("{text:?}: {e}")))
}

/// Parses a peer id, base58 (`12D3…`, `Qm…`) or a CIDv1 (`libp2p-key`, e.g. `k51…`).
///
/// # Errors
/// [`ApiError::BadRequest`] when `text` is neither.
pub fn parse_peer_id(text: &str) -> Result<PeerId, ApiError> {
    let text = text.trim();
    if let Ok(peer) = PeerId::from_str(text) {
        return Ok(peer);
    }
    let cid = Cid::from_str(text)
        .map_err(|_| ApiError::BadRequest(format!("{text:?} is not a peer id")))?;
    PeerId::from_bytes(&cid.hash().to_bytes())
        .map_err(|e| ApiError::BadRequest(format!("{text:?} is not a peer id: {e}")))
}

/// Bytes of a hex string (either case).
///
/// # Errors
/// [`ApiError::BadRequest`] on an odd length or a non-hex digit.
pub fn hex_decode(text: &str) -> Result<Vec<u8>, ApiError> {
    hex::decode(text).map_err(|e| ApiError::BadRequest(format!("{text:?} is not hex: {e}")))
}

/// Who may use the management API: the bearer token every request carries, and the host
/// names (besides IP addresses and `localhost`) its `Host` header may name.
#[derive(Clone)]
pub struct ManagementAccess {
    token: String,
    hosts: Vec<String>,
}

impl std::fmt::Debug for ManagementAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagementAccess")
            .field("token", &"<hidden>")
            .field("hosts", &self.hosts)
            .finish()
    }
}

impl ManagementAccess {
    /// Access with `token`; `Host` may name an IP address or `localhost`.
    pub fn new(token: impl Into<String>) -> Self {
        ManagementAccess {
            token: token.into(),
            hosts: Vec::new(),
        }
    }

    /// Access with the token in `path`, created (32 random bytes, hex, readable by its owner
    /// only) when the file does not exist.
    ///
    /// # Errors
    /// The I/O error when the file cannot be read or written; `InvalidData` when it is empty.
    pub fn load_or_create(path: &std::path::Path) -> std::io::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let token = text.trim();
                if token.is_empty() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{} is empty", path.display()),
                    ));
                }
                Ok(ManagementAccess::new(token))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                rand::Rng::fill(&mut rand::rng(), &mut bytes);
                let token = hex::encode(bytes);
                let tmp = path.with_extension("tmp");
                crate::builder::write_private(&tmp, token.as_bytes())?;
                std::fs::rename(&tmp, path)?;
                tracing::info!(path = %path.display(), "created the management API token");
                Ok(ManagementAccess::new(token))
            }
            Err(e) => Err(e),
        }
    }

    /// The same access, with more host names allowed in `Host` (e.g. the name a reverse
    /// proxy forwards).
    #[must_use]
    pub fn with_hosts(mut self, hosts: impl IntoIterator<Item = String>) -> Self {
        self.hosts
            .extend(hosts.into_iter().map(|h| normal_host(&h).to_owned()));
        self
    }

    /// The token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Whether a `Host` header value names this node: an IP address (a rebound DNS name
    /// never is one), `localhost`, or a configured name.
    pub fn host_allowed(&self, host: &str) -> bool {
        let name = normal_host(host);
        name.eq_ignore_ascii_case("localhost")
            || name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok()
            || self.hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
    }

    /// Whether `headers` carry `Authorization: Bearer <the token>` (compared in constant time).
    pub fn authorized(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| same_bytes(given.trim().as_bytes(), self.token.as_bytes()))
    }

    /// Whether the URI's `query` carries `token=<the token>` (compared in constant time), as a
    /// browser opening the status page can send it.
    pub fn authorized_query(&self, query: Option<&str>) -> bool {
        query.is_some_and(|q| {
            q.split('&')
                .filter_map(|pair| pair.strip_prefix("token="))
                .any(|given| same_bytes(given.as_bytes(), self.token.as_bytes()))
        })
    }
}

/// A host without its port and trailing dot (`[::1]:5481` → `[::1]`, `a.b.:80` → `a.b`).
fn normal_host(host: &str) -> &str {
    let host = host.trim();
    let name = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    name.trim_end_matches('.')
}

fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn guard(
    State(access): State<Arc<ManagementAccess>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    if !host.is_some_and(|h| access.host_allowed(h)) {
        tracing::warn!(host = ?host, path = %request.uri().path(), "management API: refused an unknown Host (DNS rebinding?)");
        return (
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({ "error": "unknown Host" })),
        )
            .into_response();
    }
    // The status page (`GET /`) also takes the token as `?token=`, for a browser.
    let by_query = request.uri().path() == "/"
        && request.method() == axum::http::Method::GET
        && access.authorized_query(request.uri().query());
    if !by_query && !access.authorized(request.headers()) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(serde_json::json!({ "error": "the management API needs Authorization: Bearer <token> (see api.token in the data directory)" })),
        )
            .into_response();
    }
    next.run(request).await
}

/// The bounds of the routing listener's lookups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoutingLimits {
    /// Lookups (providers, peers, IPNS) in flight at once; more are answered 503 at once.
    pub max_lookups: usize,
    /// The longest one lookup runs: a providers answer ends with what was found by then, a
    /// peer or IPNS lookup answers "none found", an IPNS put 504.
    pub timeout: Duration,
}

impl Default for RoutingLimits {
    /// 64 lookups, 30 s each (boxo's server's default timeout).
    fn default() -> Self {
        RoutingLimits {
            max_lookups: 64,
            timeout: Duration::from_secs(30),
        }
    }
}

impl RoutingLimits {
    /// Limits of `max_lookups` lookups in flight, each of at most `timeout`.
    pub fn new(max_lookups: usize, timeout: Duration) -> Self {
        RoutingLimits {
            max_lookups,
            timeout,
        }
    }

    /// Sets [`RoutingLimits::max_lookups`].
    #[must_use]
    pub fn with_max_lookups(mut self, n: usize) -> Self {
        self.max_lookups = n;
        self
    }

    /// Sets [`RoutingLimits::timeout`].
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

struct RoutingState<T: NodeTable> {
    node: Arc<Node<T>>,
    lookups: Arc<Semaphore>,
    limits: RoutingLimits,
}

impl<T: NodeTable> Clone for RoutingState<T> {
    fn clone(&self) -> Self {
        RoutingState {
            node: self.node.clone(),
            lookups: self.lookups.clone(),
            limits: self.limits,
        }
    }
}

/// The routes of the routing listener (Delegated Routing V1, public) over `node`, with the
/// default [`RoutingLimits`].
pub fn routing_router<T: NodeTable>(node: Arc<Node<T>>) -> Router {
    routing_router_with(node, RoutingLimits::default())
}

/// The routes of the routing listener over `node`: providers, peers and IPNS (`GET`, `PUT`),
/// 501 for the rest of `/routing/v1/`, CORS for any origin.
pub fn routing_router_with<T: NodeTable>(node: Arc<Node<T>>, limits: RoutingLimits) -> Router {
    let state = RoutingState {
        node,
        lookups: Arc::new(Semaphore::new(limits.max_lookups)),
        limits,
    };
    Router::new()
        .route(
            "/routing/v1/providers/{cid}",
            get(providers::<T>).fallback(not_served),
        )
        .route(
            "/routing/v1/peers/{peer}",
            get(peers::<T>).fallback(not_served),
        )
        .route(
            "/routing/v1/ipns/{name}",
            get(get_ipns::<T>).put(put_ipns::<T>).fallback(not_served),
        )
        .fallback(not_served)
        .layer(DefaultBodyLimit::max(MAX_IPNS_RECORD_SIZE))
        .with_state(state)
        .layer(middleware::from_fn(cors))
}

/// The routes of the management listener over `node`, behind `access` (token and `Host`).
pub fn management_router<T: NodeTable>(node: Arc<Node<T>>, access: ManagementAccess) -> Router {
    Router::new()
        .route("/", get(status_page::<T>))
        .route("/api/v1/provide", post(provide::<T>))
        .route("/api/v1/stop", post(stop::<T>))
        .route("/api/v1/stats", get(stats::<T>))
        .route("/api/v1/provided", get(provided_list::<T>))
        .route("/api/v1/provided/{cid}", get(provided::<T>))
        .route("/api/v1/routing-table", get(routing_table::<T>))
        .route("/api/v1/id", get(id::<T>))
        .route(
            "/api/v1/values/{key}",
            get(get_value::<T>).put(put_value::<T>),
        )
        .route("/metrics", get(metrics::<T>))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(node)
        .layer(middleware::from_fn_with_state(Arc::new(access), guard))
}

/// Serves `router` on `listener` until `shutdown` resolves; returns the bound address and
/// the server's task.
///
/// # Errors
/// The I/O error when the listener's address cannot be read.
pub fn serve_on(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, JoinHandle<std::io::Result<()>>)> {
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
    });
    Ok((local, task))
}

/// Serves the routing listener of `node` on `addr` until `shutdown` resolves; returns the
/// bound address (useful with port 0) and the server's task.
///
/// # Errors
/// The I/O error when `addr` cannot be bound.
pub async fn serve<T: NodeTable>(
    node: Arc<Node<T>>,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, JoinHandle<std::io::Result<()>>)> {
    serve_with(node, addr, RoutingLimits::default(), shutdown).await
}

/// [`serve`] with other [`RoutingLimits`].
///
/// # Errors
/// The I/O error when `addr` cannot be bound.
pub async fn serve_with<T: NodeTable>(
    node: Arc<Node<T>>,
    addr: SocketAddr,
    limits: RoutingLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let served = serve_on(listener, routing_router_with(node, limits), shutdown)?;
    tracing::info!(addr = %served.0, "Delegated Routing API listening");
    Ok(served)
}

/// Serves the management listener of `node` on `addr`, behind `access`, until `shutdown`
/// resolves; warns when `addr` is not a loopback address.
///
/// # Errors
/// The I/O error when `addr` cannot be bound.
pub async fn serve_management<T: NodeTable>(
    node: Arc<Node<T>>,
    addr: SocketAddr,
    access: ManagementAccess,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    warn_if_exposed(addr);
    let served = serve_on(listener, management_router(node, access), shutdown)?;
    tracing::info!(addr = %served.0, "management API listening");
    Ok(served)
}

/// Logs a warning when the management API is bound beyond loopback.
pub fn warn_if_exposed(addr: SocketAddr) {
    if !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "the management API (provide, stop, put) listens beyond loopback: whoever reaches it \
             with the token can change what this node provides and stores, and the token crosses \
             the network in clear (plain HTTP); bind it to 127.0.0.1 or put TLS in front"
        );
    }
}

/// Runs `find_providers` for `key` in a task, holding `permit` until it ends and stopping at
/// `deadline`; the records that pass `filter` come through the channel, the node's own
/// records first, at most [`MAX_PROVIDERS`].
fn provider_stream<T: NodeTable>(
    node: Arc<Node<T>>,
    key: Multihash,
    filter: RecordFilter,
    deadline: tokio::time::Instant,
    permit: OwnedSemaphorePermit,
) -> mpsc::Receiver<PeerRecord> {
    let (mut tx, rx) = mpsc::channel::<PeerRecord>(16);
    tokio::spawn(async move {
        let _permit = permit;
        let bytes = key.to_bytes();
        let mut seen = std::collections::HashSet::new();
        let mut sent = 0;
        let mut local: Vec<PeerInfo> = Vec::new();
        let (reader, read_key) = (node.clone(), bytes.clone());
        let held = on_disk(move || {
            let own = reader.holds(&key).unwrap_or(false);
            let records = reader
                .stores()
                .providers(&read_key, MAX_PROVIDERS, SystemClock.now());
            (own, records)
        })
        .await;
        match held {
            Ok((own, records)) => {
                if own {
                    local.push(node.info().clone());
                }
                match records {
                    Ok(records) => local.extend(
                        records
                            .into_iter()
                            .map(|r| PeerInfo::new(r.provider, r.addrs)),
                    ),
                    Err(e) => tracing::warn!(error = %e, "reading local provider records"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading local provider records"),
        }
        for peer in local {
            if !seen.insert(peer.peer_id) {
                continue;
            }
            if let Some(record) = filter.apply(PeerRecord::of(&peer)) {
                if tx.send(record).await.is_err() {
                    return;
                }
                sent += 1;
            }
        }
        let mut found = dht_routing::find_providers(&**node.client(), &bytes, MAX_PROVIDERS);
        while sent < MAX_PROVIDERS {
            let Ok(Some(peer)) = tokio::time::timeout_at(deadline, found.next()).await else {
                break;
            };
            if !seen.insert(peer.peer_id) {
                continue;
            }
            if let Some(record) = filter.apply(PeerRecord::of(&peer)) {
                if tx.send(record).await.is_err() {
                    break;
                }
                sent += 1;
            }
        }
        node.metrics().lookup("find_providers", &found.stats());
    });
    rx
}

/// The `filter-addrs` and `filter-protocols` query parameters of Delegated Routing
/// (IPIP-484), comma-separated and case-insensitive.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct FilterQuery {
    /// Multiaddr protocol names to keep (`tcp`, `quic-v1`), `!name` to drop, `unknown` to keep
    /// peers without addresses.
    #[serde(rename = "filter-addrs")]
    pub filter_addrs: Option<String>,
    /// Transfer protocols to keep (`transport-bitswap`), `unknown` for peers that list none.
    #[serde(rename = "filter-protocols")]
    pub filter_protocols: Option<String>,
}

/// The filters of a [`FilterQuery`], applied to each record before the answer's cap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordFilter {
    addrs: Vec<String>,
    protocols: Vec<String>,
}

fn filter_list(text: Option<&str>) -> Vec<String> {
    text.map(|t| {
        t.split(',')
            .map(|f| f.trim().to_ascii_lowercase())
            .filter(|f| !f.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

impl RecordFilter {
    /// The filters of `query`.
    pub fn of(query: &FilterQuery) -> Self {
        RecordFilter {
            addrs: filter_list(query.filter_addrs.as_deref()),
            protocols: filter_list(query.filter_protocols.as_deref()),
        }
    }

    /// `record` with only the addresses the filters keep, or `None` when the filters drop it:
    /// its protocols match none of `filter-protocols` (`unknown` matches a record that lists
    /// none), or `filter-addrs` leaves it no address (`unknown` keeps a record that had none).
    pub fn apply(&self, mut record: PeerRecord) -> Option<PeerRecord> {
        if !self.protocols.is_empty() {
            let allowed = self.protocols.iter().any(|f| {
                (f == "unknown" && record.protocols.is_empty())
                    || record.protocols.iter().any(|p| p.eq_ignore_ascii_case(f))
            });
            if !allowed {
                return None;
            }
        }
        if self.addrs.is_empty()
            || (record.addrs.is_empty() && self.addrs.iter().any(|f| f == "unknown"))
        {
            return Some(record);
        }
        let (drop, keep): (Vec<&str>, Vec<&str>) = self
            .addrs
            .iter()
            .map(String::as_str)
            .filter(|f| *f != "unknown")
            .partition(|f| f.starts_with('!'));
        let drop: Vec<&str> = drop.iter().map(|f| &f[1..]).collect();
        record.addrs.retain(|addr| {
            let Ok(addr) = addr.parse::<dht_proto::Multiaddr>() else {
                return false;
            };
            let has = |names: &[&str]| addr.iter().any(|p| names.contains(&p.tag()));
            !has(&drop) && (keep.is_empty() || has(&keep))
        });
        (!record.addrs.is_empty()).then_some(record)
    }
}

/// Which representation a Delegated Routing answer takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Media {
    Json,
    Ndjson,
}

/// Accept negotiation as other Delegated Routing servers do it: no `Accept` is JSON;
/// NDJSON when accepted, else JSON when `application/json`, `application/*` or `*/*` is;
/// 406 otherwise.
fn negotiate(headers: &HeaderMap) -> Result<Media, ApiError> {
    let mut values = headers.get_all(header::ACCEPT).iter().peekable();
    if values.peek().is_none() {
        return Ok(Media::Json);
    }
    let (mut json, mut ndjson) = (false, false);
    for value in values {
        let text = value.to_str().unwrap_or_default();
        for item in text.split(',') {
            let media = item.split(';').next().unwrap_or_default().trim();
            if media.eq_ignore_ascii_case(NDJSON) {
                ndjson = true;
            } else if ["application/json", "application/*", "*/*"]
                .iter()
                .any(|m| media.eq_ignore_ascii_case(m))
            {
                json = true;
            }
        }
    }
    match (ndjson, json) {
        (true, _) => Ok(Media::Ndjson),
        (false, true) => Ok(Media::Json),
        _ => Err(ApiError::NotAcceptable(format!(
            "Accept: {NDJSON} or application/json"
        ))),
    }
}

/// How long a Delegated Routing answer with results may be cached, as other routers say
/// (5 minutes; stale for 48 h, the records' lifetime).
const MAX_AGE_FOUND: u64 = 300;
/// How long an answer without results may be cached (15 s).
const MAX_AGE_NOT_FOUND: u64 = 15;
const MAX_STALE: u64 = 48 * 3600;

/// Sets `Cache-Control` (by whether anything was found) and `Vary: Accept`.
fn cache_headers(response: &mut Response, found: bool) {
    let max_age = if found {
        MAX_AGE_FOUND
    } else {
        MAX_AGE_NOT_FOUND
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&format!(
        "public, max-age={max_age}, stale-while-revalidate={MAX_STALE}, stale-if-error={MAX_STALE}"
    )) {
        headers.insert(header::CACHE_CONTROL, value);
    }
    headers.append(header::VARY, HeaderValue::from_static("Accept"));
}

/// The records as JSON (`{"<field>":[…]}`) or NDJSON, with the cache headers.
fn records_response(field: &str, media: Media, records: &[PeerRecord]) -> Response {
    let mut response = match media {
        Media::Json => Json(serde_json::json!({ field: records })).into_response(),
        Media::Ndjson => {
            let body: Vec<u8> = records
                .iter()
                .flat_map(|r| ndjson_line(r).to_vec())
                .collect();
            ([(header::CONTENT_TYPE, NDJSON)], body).into_response()
        }
    };
    cache_headers(&mut response, !records.is_empty());
    response
}

fn lookup_permit<T: NodeTable>(state: &RoutingState<T>) -> Result<OwnedSemaphorePermit, ApiError> {
    state
        .lookups
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Busy("too many lookups in flight; retry later".into()))
}

async fn providers<T: NodeTable>(
    State(state): State<RoutingState<T>>,
    Path(cid): Path<String>,
    Query(query): Query<FilterQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.node.metrics().api_request("providers");
    let media = negotiate(&headers)?;
    let key = parse_cid(&cid)?;
    let permit = lookup_permit(&state)?;
    let deadline = tokio::time::Instant::now() + state.limits.timeout;
    let mut rx = provider_stream(
        state.node.clone(),
        key,
        RecordFilter::of(&query),
        deadline,
        permit,
    );
    if media == Media::Ndjson {
        // Streamed as the lookup finds them; the headers go out with the first record.
        let Some(first) = rx.next().await else {
            return Ok(records_response("Providers", media, &[]));
        };
        let lines = futures::stream::iter([first])
            .chain(rx)
            .map(|record| Ok::<_, Infallible>(ndjson_line(&record)));
        let mut response = Body::from_stream(lines).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
        cache_headers(&mut response, true);
        Ok(response)
    } else {
        let found: Vec<PeerRecord> = rx.collect().await;
        Ok(records_response("Providers", media, &found))
    }
}

fn ndjson_line(record: &PeerRecord) -> Bytes {
    let mut line = serde_json::to_vec(record).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

async fn peers<T: NodeTable>(
    State(state): State<RoutingState<T>>,
    Path(peer): Path<String>,
    Query(query): Query<FilterQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let node = &state.node;
    node.metrics().api_request("peers");
    let media = negotiate(&headers)?;
    let peer = parse_peer_id(&peer)?;
    let found = if peer == node.peer_id() {
        Some(node.info().clone())
    } else {
        let _permit = lookup_permit(&state)?;
        match tokio::time::timeout(
            state.limits.timeout,
            dht_routing::find_peer(&**node.client(), peer),
        )
        .await
        {
            Ok(outcome) => {
                let outcome = outcome.map_err(NodeError::from)?;
                node.metrics().lookup("find_peer", &outcome.stats);
                outcome.value
            }
            Err(_) => None,
        }
    };
    let records: Vec<PeerRecord> = found
        .and_then(|p| RecordFilter::of(&query).apply(PeerRecord::of(&p)))
        .into_iter()
        .collect();
    Ok(records_response("Peers", media, &records))
}

/// The content type of IPNS records.
pub const IPNS_RECORD: &str = "application/vnd.ipfs.ipns-record";

/// The DHT key of an IPNS name (a CIDv1 `libp2p-key` or a peer id): `/ipns/<peer id bytes>`.
///
/// # Errors
/// [`ApiError::BadRequest`] when `name` is not a peer id.
pub fn ipns_key(name: &str) -> Result<Vec<u8>, ApiError> {
    let peer = parse_peer_id(name)?;
    let mut key = b"/ipns/".to_vec();
    key.extend(peer.to_bytes());
    Ok(key)
}

async fn get_ipns<T: NodeTable>(
    State(state): State<RoutingState<T>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let node = &state.node;
    node.metrics().api_request("get_ipns");
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    if !(accept.is_empty() || accept.contains("*/*") || accept.contains(IPNS_RECORD)) {
        return Err(ApiError::NotAcceptable(format!("Accept: {IPNS_RECORD}")));
    }
    let key = ipns_key(&name)?;
    let _permit = lookup_permit(&state)?;
    let found = match tokio::time::timeout(state.limits.timeout, node.get_value(&key)).await {
        Ok(found) => found?,
        Err(_) => None,
    };
    let Some(record) = found else {
        // No record is a 200 with a text body (IPIP-0513), cached briefly.
        let mut response = (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "no IPNS record found\n",
        )
            .into_response();
        cache_headers(&mut response, false);
        return Ok(response);
    };
    // The record's TTL and validity are not read here, so caches must revalidate.
    let mut response = (
        [
            (header::CONTENT_TYPE, IPNS_RECORD),
            (header::CACHE_CONTROL, "public, no-cache"),
        ],
        record.value,
    )
        .into_response();
    response
        .headers_mut()
        .append(header::VARY, HeaderValue::from_static("Accept"));
    Ok(response)
}

async fn put_ipns<T: NodeTable>(
    State(state): State<RoutingState<T>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let node = &state.node;
    node.metrics().api_request("put_ipns");
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type.contains(IPNS_RECORD) {
        return Err(ApiError::NotAcceptable(format!(
            "Content-Type: {IPNS_RECORD}"
        )));
    }
    let key = ipns_key(&name)?;
    let _permit = lookup_permit(&state)?;
    let record = Record::new(key, body.to_vec());
    match tokio::time::timeout(state.limits.timeout, node.put_value(record)).await {
        Ok(put) => put?,
        Err(_) => return Err(ApiError::Timeout(state.limits.timeout)),
    };
    Ok(StatusCode::OK.into_response())
}

/// What the routing listener does not serve: 501 under `/routing/v1/`, 404 elsewhere.
async fn not_served(request: Request) -> Response {
    let path = request.uri().path();
    let (status, message) = if path.starts_with("/routing/v1/") {
        (
            StatusCode::NOT_IMPLEMENTED,
            format!("{} {path} is not served", request.method()),
        )
    } else {
        (StatusCode::NOT_FOUND, format!("{path}: no such endpoint"))
    };
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// CORS on the routing listener: any origin may read it (`OPTIONS` preflights answered).
async fn cors(request: Request, next: Next) -> Response {
    let mut response = if request.method() == axum::http::Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, PUT, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Accept, Content-Type"),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    response
}

fn parse_cids(list: &CidList) -> Result<Vec<Multihash>, ApiError> {
    list.cids.iter().map(|c| parse_cid(c)).collect()
}

async fn provide<T: NodeTable>(
    State(node): State<Arc<Node<T>>>,
    Json(list): Json<CidList>,
) -> Result<Json<serde_json::Value>, ApiError> {
    node.metrics().api_request("provide");
    let keys = parse_cids(&list)?;
    let accepted = keys.len();
    if list.wait {
        node.provider().start_providing(list.force, &keys).await?;
    } else {
        // It writes the keys to the keystore.
        let force = list.force;
        on_disk(move || node.provider().start_providing_async(force, &keys)).await??;
    }
    Ok(Json(serde_json::json!({ "accepted": accepted })))
}

async fn stop<T: NodeTable>(
    State(node): State<Arc<Node<T>>>,
    Json(list): Json<CidList>,
) -> Result<Json<serde_json::Value>, ApiError> {
    node.metrics().api_request("stop");
    let keys = parse_cids(&list)?;
    let stopped = keys.len();
    // It deletes the keys from the keystore.
    on_disk(move || node.provider().stop_providing(&keys)).await??;
    Ok(Json(serde_json::json!({ "stopped": stopped })))
}

async fn stats<T: NodeTable>(
    State(node): State<Arc<Node<T>>>,
) -> Result<Json<StatsView>, ApiError> {
    node.metrics().api_request("stats");
    Ok(Json(stats_view(&node).await?))
}

/// The status page ([`crate::status`]).
async fn status_page<T: NodeTable>(State(node): State<Arc<Node<T>>>) -> Result<Response, ApiError> {
    node.metrics().api_request("status");
    let view = stats_view(&node).await?;
    let page = crate::status::render(&view, &node.metrics().health().records_per_minute());
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        page,
    )
        .into_response())
}

/// The keystore's size and the provider's counters, read off the runtime's workers (both
/// read the keystore).
async fn keys_and_provider_stats<T: NodeTable>(
    node: &Arc<Node<T>>,
) -> Result<(Result<u64, StoreError>, ProviderStats), StoreError> {
    let node = node.clone();
    on_disk(move || (node.stores().count(), node.provider().stats())).await
}

async fn stats_view<T: NodeTable>(node: &Arc<Node<T>>) -> Result<StatsView, ApiError> {
    let (keys, provider) = keys_and_provider_stats(node).await?;
    let keys = keys?;
    let now = SystemClock.now();
    let warnings = node.metrics().health().observe(now, &provider);
    Ok(StatsView::of(
        node.provider().strategy(),
        now,
        keys,
        node.table().len() as u64,
        &provider,
        warnings,
    ))
}

async fn provided<T: NodeTable>(
    State(node): State<Arc<Node<T>>>,
    Path(cid): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    node.metrics().api_request("provided");
    let key = parse_cid(&cid)?;
    let held = on_disk(move || node.holds(&key)).await??;
    Ok(Json(serde_json::json!({ "held": held })))
}

/// The keys `GET /api/v1/provided` reads from the keystore at a time, by default.
pub const PROVIDED_PAGE: usize = 1000;

/// The query of `GET /api/v1/provided`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ProvidedQuery {
    /// Start strictly after this Kademlia key (hex, 32 bytes).
    pub after: Option<String>,
    /// Stop after this many keys.
    pub limit: Option<u64>,
    /// Keys read from the keystore at a time.
    pub page: Option<usize>,
}

/// One line of `GET /api/v1/provided`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvidedKey {
    /// The multihash, base58btc (as a CIDv0 shows a sha2-256 one).
    pub multihash: String,
    /// Its Kademlia key (sha256 of the multihash bytes), hex: pass the last one as `after`
    /// to resume.
    pub kad: String,
}

impl ProvidedKey {
    /// The line of `key` (`kad` its Kademlia key).
    pub fn of(kad: &Key, key: &Multihash) -> Self {
        ProvidedKey {
            multihash: dht_proto::cid::multibase::Base::Base58Btc.encode(key.to_bytes()),
            kad: hex::encode(kad.as_bytes()),
        }
    }
}

/// The keys a page source gives (`list(after, page)`: the keys strictly after `after`, at
/// most `page`), as NDJSON chunks, one page per chunk, each page read (on a blocking
/// thread) only when the one before was taken: whatever the number of keys, one page is
/// in memory. Stops after `limit` keys; a failed read ends with an `{"error":…}` line.
pub fn provided_lines<F>(
    list: F,
    after: Option<Key>,
    page: usize,
    limit: Option<u64>,
) -> impl futures::Stream<Item = Bytes> + Send + 'static
where
    F: Fn(Option<Key>, usize) -> Result<Vec<(Key, Multihash)>, ApiError> + Send + Sync + 'static,
{
    let page = page.clamp(1, dht_provider::MAX_LIST_PAGE);
    let list = Arc::new(list);
    let left = limit.unwrap_or(u64::MAX);
    futures::stream::unfold(Some((after, left)), move |cursor| {
        let list = list.clone();
        async move {
            let (after, left) = cursor?;
            if left == 0 {
                return None;
            }
            let want = usize::try_from(left).unwrap_or(usize::MAX).min(page);
            let read = tokio::task::spawn_blocking(move || list(after, want)).await;
            let keys = match read {
                Ok(Ok(keys)) => keys,
                Ok(Err(e)) => return Some((error_line(&e.to_string()), None)),
                Err(e) => return Some((error_line(&e.to_string()), None)),
            };
            let mut chunk = Vec::with_capacity(keys.len() * 120);
            for (kad, key) in &keys {
                chunk.extend(serde_json::to_vec(&ProvidedKey::of(kad, key)).unwrap_or_default());
                chunk.push(b'\n');
            }
            let next = (keys.len() == want)
                .then(|| {
                    keys.last()
                        .map(|(kad, _)| (Some(*kad), left - keys.len() as u64))
                })
                .flatten();
            if keys.is_empty() {
                return None;
            }
            Some((Bytes::from(chunk), next))
        }
    })
}

fn error_line(message: &str) -> Bytes {
    let mut line = serde_json::to_vec(&serde_json::json!({ "error": message })).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

async fn provided_list<T: NodeTable>(
    State(node): State<Arc<Node<T>>>,
    Query(query): Query<ProvidedQuery>,
) -> Result<Response, ApiError> {
    node.metrics().api_request("provided_list");
    let after = query
        .after
        .as_deref()
        .map(|hex| {
            let bytes = hex_decode(hex)?;
            let bytes: [u8; 32] = bytes
                .try_into()
                .map_err(|_| ApiError::BadRequest("after: a Kademlia key is 32 bytes".into()))?;
            Ok::<_, ApiError>(Key::from_bytes(bytes))
        })
        .transpose()?;
    let lines = provided_lines(
        move |after, page| {
            node.provider()
                .provide_list(after.as_ref(), page)
                .map_err(ApiError::from)
        },
        after,
        query.page.unwrap_or(PROVIDED_PAGE),
        query.limit,
    );
    let body = Body::from_stream(lines.map(Ok::<_, Infallible>));
    Ok(([(header::CONTENT_TYPE, NDJSON)], body).into_response())
}

async fn routing_table<T: NodeTable>(State(node): State<Arc<Node<T>>>) -> Response {
    node.metrics().api_request("routing_table");
    Json(node.table().summary()).into_response()
}

async fn id<T: NodeTable>(State(node): State<Arc<Node<T>>>) -> Response {
    node.metrics().api_request("id");
    let info = node.info();
    Json(serde_json::json!({
        "ID": info.peer_id.to_string(),
        "Addrs": info.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn get_value<T: NodeTable>(
    State(node): State<Arc<Node<T>>>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    node.metrics().api_request("get_value");
    let key = hex_decode(&key)?;
    match node.get_value(&key).await? {
        Some(record) => Ok((
            [(header::CONTENT_TYPE, "application/octet-stream")],
            record.value,
        )
            .into_response()),
        None => Err(ApiError::NotFound("no value record found".into())),
    }
}

async fn put_value<T: NodeTable>(
    State(node): State<Arc<Node<T>>>,
    Path(key): Path<String>,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    node.metrics().api_request("put_value");
    let key = hex_decode(&key)?;
    let record = Record::new(key, body.to_vec());
    let accepted = node.put_value(record).await?;
    Ok(Json(serde_json::json!({ "accepted_by": accepted.len() })))
}

async fn metrics<T: NodeTable>(State(node): State<Arc<Node<T>>>) -> Response {
    let Ok((keys, provider)) = keys_and_provider_stats(&node).await else {
        return ApiError::Store(StoreError::Closed).into_response();
    };
    let snapshot = Snapshot {
        table_peers: node.table().len(),
        keystore_keys: keys.unwrap_or(0),
        provider,
        transport: node.transport().stats(),
    };
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        node.metrics().encode(&snapshot),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The listing reads a page only when the one before was taken, never more than the
    /// page size at a time, and stops at the limit.
    #[tokio::test]
    async fn provided_lines_read_one_page_at_a_time_as_the_client_reads() {
        use dht_provider_store::{Keystore, MemoryStore};
        let store = Arc::new(MemoryStore::new());
        let keys: Vec<Multihash> = (0..5000u32)
            .map(|i| {
                Multihash::wrap(0x12, &dht_proto::Key::hash(&i.to_be_bytes()).as_bytes()[..])
                    .expect("mh")
            })
            .collect();
        store.put(&keys).expect("put");
        let reads = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let source = |store: Arc<MemoryStore>, reads: Arc<parking_lot::Mutex<Vec<usize>>>| {
            move |after: Option<Key>, page: usize| {
                reads.lock().push(page);
                Ok(store.scan(&dht_proto::Prefix::ROOT, after.as_ref(), page)?)
            }
        };
        let mut lines = Box::pin(provided_lines(
            source(store.clone(), reads.clone()),
            None,
            700,
            None,
        ));
        let first = lines.next().await.expect("a page");
        assert_eq!(first.iter().filter(|b| **b == b'\n').count(), 700);
        assert_eq!(*reads.lock(), [700], "only the first page was read");
        let mut all: Vec<ProvidedKey> = first
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("line"))
            .collect();
        while let Some(chunk) = lines.next().await {
            assert!(chunk.iter().filter(|b| **b == b'\n').count() <= 700);
            all.extend(
                chunk
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(|l| serde_json::from_slice::<ProvidedKey>(l).expect("line")),
            );
        }
        assert_eq!(all.len(), 5000);
        assert!(reads.lock().iter().all(|p| *p == 700));
        assert_eq!(reads.lock().len(), 5000usize.div_ceil(700));
        assert!(
            all.windows(2).all(|w| w[0].kad < w[1].kad),
            "keyspace order"
        );

        // A limit stops the reads; `after` resumes.
        reads.lock().clear();
        let resumed: Vec<Bytes> = provided_lines(
            source(store.clone(), reads.clone()),
            Some(Key::from_bytes(
                hex_decode(&all[99].kad)
                    .expect("hex")
                    .try_into()
                    .expect("32"),
            )),
            700,
            Some(10),
        )
        .collect()
        .await;
        assert_eq!(*reads.lock(), [10]);
        let text = String::from_utf8(resumed.concat()).expect("utf8");
        assert!(
            text.starts_with(&format!("{{\"multihash\":\"{}\"", all[100].multihash)),
            "{text}"
        );
        assert_eq!(text.lines().count(), 10);
    }

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let bytes = b"/pk/\x00\xff\x10";
        assert_eq!(
            hex_decode(&hex::encode(bytes)).expect("hex"),
            bytes.to_vec()
        );
        assert!(hex_decode("abc").is_err());
        assert!(hex_decode("zz").is_err());
        assert!(hex_decode("é0").is_err());
    }

    #[test]
    fn cids_and_peer_ids_parse() {
        let v0 = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";
        let key = parse_cid(v0).expect("CIDv0");
        assert_eq!(key.code(), 0x12);
        let v1 = Cid::new_v1(0x55, Multihash::wrap(0x12, &[7; 32]).expect("mh"));
        assert_eq!(
            parse_cid(&v1.to_string()).expect("CIDv1").digest(),
            &[7; 32]
        );
        assert!(matches!(parse_cid("nope"), Err(ApiError::BadRequest(_))));
        let peer = PeerId::random();
        assert_eq!(parse_peer_id(&peer.to_string()).expect("base58"), peer);
        let as_cid = Cid::new_v1(0x72, Multihash::from_bytes(&peer.to_bytes()).expect("mh"));
        assert_eq!(parse_peer_id(&as_cid.to_string()).expect("cid"), peer);
        assert!(parse_peer_id("bafy-not").is_err());
    }
}
