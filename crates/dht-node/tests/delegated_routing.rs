//! The Delegated Routing V1 listener (`dht_node::api::routing_router`) over real HTTP on
//! 127.0.0.1, in front of real nodes in one process: status codes, headers, filters, Accept
//! negotiation, IPNS, CORS, and the bound and timeout of its lookups.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../dht-handler/tests/common/mod.rs"]
#[allow(dead_code, clippy::all)]
mod records;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use dht_node::{
    api::{self, ManagementAccess, RoutingLimits},
    builder::NodeBuilder,
    node::Node,
    transport::KadConfig,
};
use dht_proto::{Request, Response, cid::Cid};
use dht_provider::{DhtProvider, Multihash};
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, StatusCode, header};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use libp2p::identity::Keypair;
use sha2::{Digest, Sha256};

/// Sends one request; returns the status, the headers and the body.
async fn http(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, HeaderMap, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(Bytes::from(body))).unwrap();
    common::within(path, async {
        let response = client.request(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, body)
    })
    .await
}

async fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (StatusCode, HeaderMap, Bytes) {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
    http(addr, Method::GET, path, &headers, Vec::new()).await
}

fn cid(seed: &str) -> (String, Multihash) {
    let mh = Multihash::wrap(0x12, &Sha256::digest(seed.as_bytes())).unwrap();
    (Cid::new_v1(0x55, mh).to_string(), mh)
}

fn cache_control(headers: &HeaderMap) -> &str {
    headers[header::CACHE_CONTROL].to_str().unwrap()
}

/// A provider node and a node that serves the routing API, each in the other's table.
async fn two_nodes() -> (Arc<Node>, Arc<Node>, SocketAddr) {
    let server = NodeBuilder::local().build().await.unwrap();
    let provider = NodeBuilder::local()
        .bootstrap_peers(vec![server.info().clone()])
        .build()
        .await
        .unwrap();
    server
        .bootstrap(std::slice::from_ref(provider.info()))
        .await
        .unwrap();
    let addr = serve_routing(&server).await;
    (provider, server, addr)
}

/// Serves `node`'s routing listener on 127.0.0.1 for the rest of the test.
async fn serve_routing(node: &Arc<Node>) -> SocketAddr {
    let (addr, _) = api::serve(
        node.clone(),
        "127.0.0.1:0".parse().unwrap(),
        std::future::pending(),
    )
    .await
    .unwrap();
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_and_peers_answer_as_the_spec_says() {
    let (provider, _server, addr) = two_nodes().await;
    let (text, mh) = cid("dr-provided");
    provider
        .provider()
        .start_providing(false, &[mh])
        .await
        .unwrap();
    let me = provider.peer_id().to_string();
    let path = format!("/routing/v1/providers/{text}");

    // JSON by default, with the cache and CORS headers.
    let (status, headers, body) = get(addr, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert!(
        cache_control(&headers).contains("max-age=300"),
        "{headers:?}"
    );
    assert!(cache_control(&headers).contains("stale-while-revalidate=172800"));
    assert_eq!(headers[header::VARY], "Accept");
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        json["Providers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["ID"] == me.as_str()),
        "{json}"
    );

    // NDJSON when accepted, even beside JSON; JSON for */*; 406 for anything else.
    let (status, headers, body) =
        get(addr, &path, Some("application/json, application/x-ndjson")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/x-ndjson");
    assert_eq!(headers[header::VARY], "Accept");
    let line = body.split(|b| *b == b'\n').next().unwrap();
    let first: serde_json::Value = serde_json::from_slice(line).unwrap();
    assert_eq!(first["Schema"], "peer");
    let (status, headers, _) = get(addr, &path, Some("text/html, */*;q=0.8")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let (status, _, _) = get(addr, &path, Some("text/html")).await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);

    // Nothing found: 200 with an empty list, cached briefly; NDJSON: an empty body.
    let (nobody, _) = cid("dr-nobody");
    let empty = format!("/routing/v1/providers/{nobody}");
    let (status, headers, body) = get(addr, &empty, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({ "Providers": [] })
    );
    assert!(
        cache_control(&headers).contains("max-age=15"),
        "{headers:?}"
    );
    let (status, headers, body) = get(addr, &empty, Some("application/x-ndjson")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    assert!(cache_control(&headers).contains("max-age=15"));

    // filter-addrs and filter-protocols (the provider listens on TCP, lists no protocols).
    let ids = |body: &Bytes| -> Vec<String> {
        let json: serde_json::Value = serde_json::from_slice(body).unwrap();
        json["Providers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["ID"].as_str().unwrap().to_owned())
            .collect()
    };
    for (query, kept) in [
        ("filter-addrs=tcp", true),
        ("filter-addrs=TCP,quic-v1", true),
        ("filter-addrs=!tcp", false),
        ("filter-addrs=quic-v1", false),
        ("filter-protocols=unknown", true),
        ("filter-protocols=transport-bitswap", false),
        (
            "filter-protocols=transport-bitswap,unknown&filter-addrs=ip4",
            true,
        ),
    ] {
        let (status, _, body) = get(addr, &format!("{path}?{query}"), None).await;
        assert_eq!(status, StatusCode::OK, "{query}");
        assert_eq!(ids(&body).contains(&me), kept, "{query}: {:?}", ids(&body));
    }

    // Peers: found, filtered, not found (200, empty).
    let peer_path = format!("/routing/v1/peers/{me}");
    let (status, headers, body) = get(addr, &peer_path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(cache_control(&headers).contains("max-age=300"));
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["Peers"][0]["ID"], me.as_str());
    let (_, _, body) = get(addr, &format!("{peer_path}?filter-addrs=!tcp"), None).await;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({ "Peers": [] })
    );
    let stranger = libp2p::PeerId::random();
    let (status, headers, body) = get(
        addr,
        &format!("/routing/v1/peers/{stranger}"),
        Some("application/x-ndjson"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    assert!(cache_control(&headers).contains("max-age=15"));

    // Not served: 501 under /routing/v1, whatever the method; bad input: 400.
    for (method, path) in [
        (
            Method::GET,
            "/routing/v1/dht/closest/peers/12D3KooWA".to_owned(),
        ),
        (Method::PUT, path.clone()),
        (Method::POST, peer_path.clone()),
    ] {
        let (status, _, _) = http(addr, method.clone(), &path, &[], Vec::new()).await;
        assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{method} {path}");
    }
    let (status, _, _) = get(addr, "/routing/v1/providers/not-a-cid", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // CORS preflight on the routing listener.
    let (status, headers, _) = http(
        addr,
        Method::OPTIONS,
        &path,
        &[
            ("origin", "https://example.org"),
            ("access-control-request-method", "GET"),
        ],
        Vec::new(),
    )
    .await;
    assert!(status.is_success(), "{status}");
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert!(
        headers[header::ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .unwrap()
            .contains("GET")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_management_listener_sends_no_cors_headers() {
    let node = NodeBuilder::local().build().await.unwrap();
    let (addr, _) = api::serve_management(
        node,
        "127.0.0.1:0".parse().unwrap(),
        ManagementAccess::new("secret"),
        std::future::pending(),
    )
    .await
    .unwrap();
    for method in [Method::OPTIONS, Method::GET] {
        let (_, headers, _) = http(
            addr,
            method,
            "/api/v1/stats",
            &[
                ("origin", "https://example.org"),
                ("authorization", "Bearer secret"),
            ],
            Vec::new(),
        )
        .await;
        assert!(
            headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
            "{headers:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipns_records_are_put_validated_and_got() {
    let (provider, _server, addr) = two_nodes().await;
    let other_addr = serve_routing(&provider).await;
    let kp = Keypair::generate_ed25519();
    let name = kp.public().to_peer_id().to_string();
    let path = format!("/routing/v1/ipns/{name}");
    let record = records::ipns_v2(&kp, 1, "2999-01-01T00:00:00Z");
    let ipns = ("content-type", api::IPNS_RECORD);

    // Not there yet: 200 with a text body (IPIP-0513).
    let (status, headers, _) = get(addr, &path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );

    // Refused: another content type, garbage, a record of another name, a too large body.
    let (status, _, _) = http(
        addr,
        Method::PUT,
        &path,
        &[("content-type", "application/json")],
        record.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
    let (status, _, _) = http(addr, Method::PUT, &path, &[ipns], b"garbage".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let other = Keypair::generate_ed25519().public().to_peer_id();
    let (status, _, _) = http(
        addr,
        Method::PUT,
        &format!("/routing/v1/ipns/{other}"),
        &[ipns],
        record.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = http(addr, Method::PUT, &path, &[ipns], vec![0; 20 * 1024]).await;
    assert!(status.is_client_error(), "{status}");

    // Put through one node, got through the other, as the CIDv1 libp2p-key name too.
    let (status, _, body) = http(addr, Method::PUT, &path, &[ipns], record.clone()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let as_cid = Cid::new_v1(
        0x72,
        Multihash::from_bytes(&kp.public().to_peer_id().to_bytes()).unwrap(),
    );
    for path in [path.clone(), format!("/routing/v1/ipns/{as_cid}")] {
        let (status, headers, body) = get(other_addr, &path, Some(api::IPNS_RECORD)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(headers[header::CONTENT_TYPE], api::IPNS_RECORD);
        assert_eq!(headers[header::VARY], "Accept");
        assert_eq!(body.to_vec(), record);
    }
    let (status, _, _) = get(other_addr, &path, Some("application/json")).await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_are_bounded_in_number_and_in_time() {
    // A peer that answers FIND_NODE (so it is admitted) and sits 15 s on GET_PROVIDERS.
    let slow = common::Node::start(
        KadConfig::default(),
        Arc::new(|_, request: &Request| {
            Ok(match request {
                Request::FindNode { .. } => Some(Response::FindNode {
                    closer_peers: Vec::new(),
                }),
                Request::GetProviders { key } => {
                    std::thread::sleep(Duration::from_secs(15));
                    Some(Response::GetProviders {
                        key: key.clone(),
                        providers: Vec::new(),
                        closer_peers: Vec::new(),
                    })
                }
                _ => None,
            })
        }),
    )
    .await;
    let node = NodeBuilder::local().build().await.unwrap();
    node.bootstrap(std::slice::from_ref(&slow.info))
        .await
        .unwrap();
    let limits = RoutingLimits::new(1, Duration::from_secs(1));
    let (addr, _) = api::serve_with(
        node,
        "127.0.0.1:0".parse().unwrap(),
        limits,
        std::future::pending(),
    )
    .await
    .unwrap();

    let (text, _) = cid("dr-slow");
    let path = format!("/routing/v1/providers/{text}");
    let started = Instant::now();
    let first = tokio::spawn({
        let path = path.clone();
        async move { get(addr, &path, None).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The one lookup allowed is running: the next is refused at once.
    let (status, _, _) = get(addr, &path, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // The first ends at its 1 s timeout with what it found (nothing), not after the peer's 15 s
    // (nor the transport's 10 s request timeout).
    let (status, _, body) = first.await.unwrap();
    let took = started.elapsed();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({ "Providers": [] })
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    // Its permit is back.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let slow_lookup = tokio::time::timeout(Duration::from_secs(5), get(addr, &path, None)).await;
    assert_eq!(slow_lookup.unwrap().0, StatusCode::OK);
}
