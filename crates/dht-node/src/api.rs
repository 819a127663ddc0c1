//! The node's HTTP API (axum): two listeners, both on 127.0.0.1 by default.
//!
//! The **routing listener** ([`DEFAULT_HTTP_ADDR`], [`routing_router`]) serves Delegated
//! Routing V1 only, as other IPFS routers serve it, and may be exposed to the public:
//!
//! - `GET /routing/v1/providers/{cid}`: the providers of a CID, as
//!   `{"Providers":[{"Schema":"peer","ID":"12D3…","Addrs":["/ip4/…"],"Protocols":[]}]}`, or one
//!   such record per line (`application/x-ndjson`, streamed as the lookup finds them) when
//!   the request's `Accept` header asks for NDJSON. 404 when none is found. The node's own
//!   provider records (held as a DHT server) and itself (when it provides the CID) come
//!   first, then the DHT lookup's.
//! - `GET /routing/v1/peers/{peer-id}`: the addresses of a peer (peer id in base58 or as a
//!   CIDv1 `libp2p-key`), as `{"Peers":[…]}` or NDJSON; 404 when not found.
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
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, Path, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use dht_proto::{PeerId, PeerInfo, Record, cid::Cid};
use dht_provider::{DhtProvider, Multihash, ProviderStats};
use dht_provider_store::{Keystore, ProviderStore};
use dht_routing_table::{Clock, SystemClock};
use futures::{SinkExt, StreamExt, channel::mpsc};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::{
    metrics::Snapshot,
    node::{Node, NodeError, NodeTable},
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

/// The provider's counters as `GET /api/v1/stats` shows them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StatsView {
    /// `"sweep"` or `"per-key"`.
    pub strategy: String,
    /// Keys in the keystore.
    pub keystore_keys: u64,
    /// Keys whose first provide (or reprovide) succeeded since the start.
    pub keys_provided: u64,
    /// Keys whose provide failed since the start.
    pub keys_failed: u64,
    /// Keys waiting for their first provide.
    pub keys_queued: u64,
    /// Regions waiting.
    pub regions_queued: u64,
    /// Workers, and those busy.
    pub workers: usize,
    /// Workers busy.
    pub workers_busy: usize,
    /// Regions explored since the start.
    pub regions_explored: u64,
    /// Records sent in the current cycle.
    pub records_sent_this_cycle: u64,
    /// Records sent in the last complete cycle.
    pub records_sent_last_cycle: u64,
    /// How far the reprovide schedule is behind, in seconds.
    pub behind_schedule_secs: u64,
    /// FIND_NODE requests sent.
    pub find_node_sent: u64,
    /// ADD_PROVIDER messages sent.
    pub add_provider_sent: u64,
    /// ADD_PROVIDER messages that failed.
    pub add_provider_failed: u64,
    /// The reprovide cycle number.
    pub cycle: u64,
    /// Online, disconnected or offline.
    pub connectivity: String,
}

impl StatsView {
    fn of(strategy: &str, keystore_keys: u64, p: &ProviderStats) -> Self {
        StatsView {
            strategy: strategy.into(),
            keystore_keys,
            keys_provided: p.keys_provided,
            keys_failed: p.keys_failed,
            keys_queued: p.keys_queued,
            regions_queued: p.regions_queued,
            workers: p.workers,
            workers_busy: p.workers_busy,
            regions_explored: p.regions_explored,
            records_sent_this_cycle: p.records_sent_this_cycle,
            records_sent_last_cycle: p.records_sent_last_cycle,
            behind_schedule_secs: p.behind_schedule_secs,
            find_node_sent: p.find_node_sent,
            add_provider_sent: p.add_provider_sent,
            add_provider_failed: p.add_provider_failed,
            cycle: p.cycle,
            connectivity: format!("{:?}", p.connectivity).to_lowercase(),
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

/// Lower-case hex of `bytes`.
pub fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of a hex string.
///
/// # Errors
/// [`ApiError::BadRequest`] on an odd length or a non-hex digit.
pub fn hex_decode(text: &str) -> Result<Vec<u8>, ApiError> {
    let bad = || ApiError::BadRequest(format!("{text:?} is not hex"));
    if !text.len().is_multiple_of(2) {
        return Err(bad());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(bad)
        })
        .collect()
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
                let token = hex_encode(&bytes);
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
    if !access.authorized(request.headers()) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            Json(serde_json::json!({ "error": "the management API needs Authorization: Bearer <token> (see api.token in the data directory)" })),
        )
            .into_response();
    }
    next.run(request).await
}

fn wants_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(NDJSON))
}

/// The routes of the routing listener (Delegated Routing V1, public) over `node`.
pub fn routing_router<T: NodeTable>(node: Arc<Node<T>>) -> Router {
    Router::new()
        .route("/routing/v1/providers/{cid}", get(providers::<T>))
        .route("/routing/v1/peers/{peer}", get(peers::<T>))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(node)
}

/// The routes of the management listener over `node`, behind `access` (token and `Host`).
pub fn management_router<T: NodeTable>(node: Arc<Node<T>>, access: ManagementAccess) -> Router {
    Router::new()
        .route("/api/v1/provide", post(provide::<T>))
        .route("/api/v1/stop", post(stop::<T>))
        .route("/api/v1/stats", get(stats::<T>))
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
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let served = serve_on(listener, routing_router(node), shutdown)?;
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

/// Runs `find_providers` for `key` in a task; the providers come through the channel, the
/// node's own records first.
fn provider_stream<T: NodeTable>(node: Arc<Node<T>>, key: Multihash) -> mpsc::Receiver<PeerInfo> {
    let (mut tx, rx) = mpsc::channel::<PeerInfo>(16);
    tokio::spawn(async move {
        let bytes = key.to_bytes();
        let mut seen = std::collections::HashSet::new();
        let mut local: Vec<PeerInfo> = Vec::new();
        if node.holds(&key).unwrap_or(false) {
            local.push(node.info().clone());
        }
        match node
            .stores()
            .providers(&bytes, MAX_PROVIDERS, SystemClock.now())
        {
            Ok(records) => local.extend(
                records
                    .into_iter()
                    .map(|r| PeerInfo::new(r.provider, r.addrs)),
            ),
            Err(e) => tracing::warn!(error = %e, "reading local provider records"),
        }
        for peer in local {
            if seen.insert(peer.peer_id) && tx.send(peer).await.is_err() {
                return;
            }
        }
        let mut found = dht_routing::find_providers(&**node.client(), &bytes, MAX_PROVIDERS);
        while let Some(peer) = found.next().await {
            if seen.len() >= MAX_PROVIDERS {
                break;
            }
            if seen.insert(peer.peer_id) && tx.send(peer).await.is_err() {
                break;
            }
        }
        node.metrics().lookup("find_providers", &found.stats());
    });
    rx
}

async fn providers<T: NodeTable>(
    State(node): State<Arc<Node<T>>>,
    Path(cid): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    node.metrics().api_request("providers");
    let key = parse_cid(&cid)?;
    let mut rx = provider_stream(node, key);
    if wants_ndjson(&headers) {
        let Some(first) = rx.next().await else {
            return Err(ApiError::NotFound(format!("no provider of {cid} found")));
        };
        let lines = futures::stream::iter([first])
            .chain(rx)
            .map(|peer| Ok::<_, Infallible>(ndjson_line(&PeerRecord::of(&peer))));
        let mut response = Body::from_stream(lines).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
        Ok(response)
    } else {
        let found: Vec<PeerRecord> = rx.map(|p| PeerRecord::of(&p)).collect().await;
        if found.is_empty() {
            return Err(ApiError::NotFound(format!("no provider of {cid} found")));
        }
        Ok(Json(serde_json::json!({ "Providers": found })).into_response())
    }
}

fn ndjson_line(record: &PeerRecord) -> Bytes {
    let mut line = serde_json::to_vec(record).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

async fn peers<T: NodeTable>(
    State(node): State<Arc<Node<T>>>,
    Path(peer): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    node.metrics().api_request("peers");
    let peer = parse_peer_id(&peer)?;
    let found = if peer == node.peer_id() {
        Some(node.info().clone())
    } else {
        let outcome = dht_routing::find_peer(&**node.client(), peer)
            .await
            .map_err(NodeError::from)?;
        node.metrics().lookup("find_peer", &outcome.stats);
        outcome.value
    };
    let Some(found) = found else {
        return Err(ApiError::NotFound(format!("peer {peer} not found")));
    };
    let record = PeerRecord::of(&found);
    if wants_ndjson(&headers) {
        let mut response = Body::from(ndjson_line(&record)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
        Ok(response)
    } else {
        Ok(Json(serde_json::json!({ "Peers": [record] })).into_response())
    }
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
    if list.wait {
        node.provider().start_providing(list.force, &keys).await?;
    } else {
        node.provider().start_providing_async(list.force, &keys)?;
    }
    Ok(Json(serde_json::json!({ "accepted": keys.len() })))
}

async fn stop<T: NodeTable>(
    State(node): State<Arc<Node<T>>>,
    Json(list): Json<CidList>,
) -> Result<Json<serde_json::Value>, ApiError> {
    node.metrics().api_request("stop");
    let keys = parse_cids(&list)?;
    node.provider().stop_providing(&keys)?;
    Ok(Json(serde_json::json!({ "stopped": keys.len() })))
}

async fn stats<T: NodeTable>(
    State(node): State<Arc<Node<T>>>,
) -> Result<Json<StatsView>, ApiError> {
    node.metrics().api_request("stats");
    let keys = node.stores().count()?;
    Ok(Json(StatsView::of(
        node.provider().strategy(),
        keys,
        &node.provider().stats(),
    )))
}

async fn provided<T: NodeTable>(
    State(node): State<Arc<Node<T>>>,
    Path(cid): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    node.metrics().api_request("provided");
    let key = parse_cid(&cid)?;
    Ok(Json(serde_json::json!({ "held": node.holds(&key)? })))
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
    let snapshot = Snapshot {
        table_peers: node.table().len(),
        keystore_keys: node.stores().count().unwrap_or(0),
        provider: node.provider().stats(),
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

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let bytes = b"/pk/\x00\xff\x10";
        assert_eq!(hex_decode(&hex_encode(bytes)).expect("hex"), bytes.to_vec());
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
