//! End-to-end tests with real `dht-node run` processes on 127.0.0.1: each node writes
//! `<data dir>/node.json` (peer id, addresses, the addresses of its Delegated Routing and
//! management listeners) once it runs; the tests talk to the nodes' HTTP APIs with the
//! crate's hyper-based [`ApiClient`], to the management API with the token of
//! `<data dir>/api.token`.
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::process::{NodeProc, cids, eventually, read_log};
use dht_node::http_client::ApiClient;
use dht_proto::cid::Cid;
use hyper::{Method, StatusCode};
use sha2::{Digest, Sha256};

async fn table_len(api: &ApiClient) -> u64 {
    api.routing_table()
        .await
        .map(|t| t["peers"].as_u64().unwrap_or(0))
        .unwrap_or(0)
}

/// Three nodes that know each other.
async fn three_nodes(root: &Path) -> (NodeProc, NodeProc, NodeProc) {
    let a = NodeProc::start(&root.join("a"), &[]);
    let b = NodeProc::start(&root.join("b"), &[&a]);
    let c = NodeProc::start(&root.join("c"), &[&a, &b]);
    for node in [&a, &b, &c] {
        eventually(
            Duration::from_secs(20),
            "every table holds the 2 others",
            || {
                let api = node.api.clone();
                async move { table_len(&api).await >= 2 }
            },
        )
        .await;
    }
    (a, b, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_provide_through_one_and_find_through_another() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, c) = three_nodes(root.path()).await;

    // Provide 50 CIDs through B's API and wait for the first provide.
    let keys = cids("e2e-three", 50);
    assert_eq!(b.api.provide(&keys, true).await.unwrap(), 50);
    let stats = b.api.stats().await.unwrap();
    assert_eq!(stats.keystore_keys, 50);
    assert_eq!(stats.keys_provided, 50, "{stats:?}");
    assert_eq!(stats.strategy, "sweep");

    // Find each through C's Delegated Routing endpoint (NDJSON) and A's (JSON).
    for key in &keys {
        let found = c.routing.find_providers(key).await.unwrap();
        assert!(
            found
                .iter()
                .any(|p| p.id == b.peer_id && !p.addrs.is_empty()),
            "{key}: {found:?}"
        );
        assert!(found.iter().all(|p| p.schema == "peer"));
    }
    let (status, body) = a
        .routing
        .send(
            Method::GET,
            &format!("/routing/v1/providers/{}", keys[0]),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let providers = json["Providers"].as_array().unwrap();
    assert!(providers.iter().any(|p| p["ID"] == b.peer_id.as_str()
        && p["Schema"] == "peer"
        && p["Addrs"].as_array().is_some_and(|a| !a.is_empty())));

    // Unknown CID: 200 with an empty list (as the current spec says); garbage: 400.
    let unknown = &cids("e2e-nobody-provides", 1)[0];
    let (status, body) = c
        .routing
        .send(
            Method::GET,
            &format!("/routing/v1/providers/{unknown}"),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json, serde_json::json!({ "Providers": [] }));
    let (status, _) = c
        .routing
        .send(Method::GET, "/routing/v1/providers/not-a-cid", None, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Find B's addresses through C.
    let peer = c.routing.find_peer(&b.peer_id).await.unwrap().unwrap();
    assert_eq!(peer.id, b.peer_id);
    assert!(!peer.addrs.is_empty());

    // A /pk record put through A is read back through C.
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let public = keypair.public();
    let mut key = b"/pk/".to_vec();
    key.extend(public.to_peer_id().to_bytes());
    let value = public.encode_protobuf();
    assert!(a.api.put_value(&key, value.clone()).await.unwrap() >= 1);
    assert_eq!(c.api.get_value(&key).await.unwrap(), Some(value));
    // An invalid record is refused.
    let err = a.api.put_value(&key, b"not a key".to_vec()).await;
    assert!(err.is_err(), "{err:?}");

    // Metrics count what happened.
    let metrics = b.api.metrics().await.unwrap();
    assert!(metrics.contains("dht_keystore_keys 50"), "{metrics}");
    assert!(
        metrics.contains("dht_provider{field=\"keys_provided\"} 50"),
        "{metrics}"
    );
    let metrics = c.api.metrics().await.unwrap();
    // The provider's records came as ADD_PROVIDER or, since C serves the batched provide
    // protocol (on by default), in batches.
    let batched: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("dht_transport{field=\"inbound_batch_records\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        batched > 0 || metrics.contains("dht_inbound_requests_total{type=\"ADD_PROVIDER\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("dht_lookups_total{kind=\"find_providers\"}"),
        "{metrics}"
    );

    // Stop: the keystore forgets the keys.
    assert_eq!(b.api.stop(&keys[..10]).await.unwrap(), 10);
    assert!(!b.api.holds(&keys[0]).await.unwrap());
    assert!(b.api.holds(&keys[10]).await.unwrap());
    assert_eq!(b.api.stats().await.unwrap().keystore_keys, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_saves_the_provider_state_and_a_restart_keeps_keys_and_identity() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("solo");
    let mut node = NodeProc::start(&dir, &[]);
    let keys = cids("e2e-sigterm", 100);
    assert_eq!(node.api.provide(&keys, false).await.unwrap(), 100);
    let pid = node.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = node.child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "exit {exit}; log: {}", read_log(&dir));
    assert!(!dir.join("node.json").exists(), "node.json is removed");
    assert!(dir.join("provider.state").exists());
    assert!(read_log(&dir).contains("provider state saved"));

    let again = NodeProc::start(&dir, &[]);
    assert_eq!(again.peer_id, node.peer_id, "the identity is persisted");
    assert_eq!(again.api.stats().await.unwrap().keystore_keys, 100);
    for key in &keys[..10] {
        assert!(again.api.holds(key).await.unwrap());
    }
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_large_provide_keeps_acknowledged_keys_and_provides_them() {
    let root = tempfile::tempdir().unwrap();
    let (a, mut b, c) = three_nodes(root.path()).await;
    // Each of the two other nodes is among the 20 closest of every key, so it receives one
    // ADD_PROVIDER per key in one burst; dht-handler's default rate limit allows bursts of
    // 10,000 per sender, so stay under it.
    let total = 8_000;
    let keys = cids("e2e-kill", total);
    // Acknowledged = in B's keystore; the sweep then provides them in the background.
    assert_eq!(b.api.provide(&keys, false).await.unwrap(), total as u64);
    let before = b.api.stats().await.unwrap();
    b.kill_9();
    eprintln!(
        "killed with {} of {total} keys provided, {} queued",
        before.keys_provided, before.keys_queued
    );

    let b_dir = b.dir.clone();
    let b_id = b.peer_id.clone();
    drop(b);
    let b = NodeProc::start(&b_dir, &[&a, &c]);
    assert_eq!(b.peer_id, b_id);
    let after = b.api.stats().await.unwrap();
    assert_eq!(
        after.keystore_keys, total as u64,
        "every acknowledged key is held"
    );
    for key in keys.iter().step_by(997) {
        assert!(b.api.holds(key).await.unwrap(), "{key} held");
    }
    // The keys whose provide had not finished are provided again after the restart (the
    // sweep re-queues the regions it had not finished): B provides every key, and a sample
    // is found through C with B as a provider.
    let finished_before_kill = before.keys_provided == total as u64;
    eventually(
        Duration::from_secs(40),
        "B provides every key again",
        || {
            let api = b.api.clone();
            async move {
                finished_before_kill
                    || api
                        .stats()
                        .await
                        .is_ok_and(|s| s.keys_provided == total as u64)
            }
        },
    )
    .await;
    // ADD_PROVIDER is acknowledged once written: the records reach the servers shortly after.
    let sample: Vec<String> = keys.iter().step_by(799).cloned().collect();
    eventually(
        Duration::from_secs(40),
        "the sample is found through C",
        || {
            let api = c.routing.clone();
            let sample = sample.clone();
            let b_id = b_id.clone();
            async move {
                for key in &sample {
                    match api.find_providers(key).await {
                        Ok(found) if found.iter().any(|p| p.id == b_id) => {}
                        _ => return false,
                    }
                }
                true
            }
        },
    )
    .await;
    let new_addr = b.addrs[0].clone();
    let mut at_new_addr = 0;
    for key in &sample {
        let found = c.routing.find_providers(key).await.unwrap();
        if found
            .iter()
            .any(|p| p.id == b_id && p.addrs.iter().any(|a| new_addr.starts_with(a.as_str())))
        {
            at_new_addr += 1;
        }
    }
    let stats = b.api.stats().await.unwrap();
    eprintln!("after restart: {stats:?}; sample found at the new address: {at_new_addr}");
    if !finished_before_kill {
        assert!(at_new_addr > 0, "re-provided records carry the new address");
    }
}

/// Runs a `dht-node` client command against `node`'s APIs (with its token file); returns
/// its exit success, stdout, stderr.
fn cli(node: &NodeProc, args: &[&str], stdin: Option<&[u8]>) -> (bool, Vec<u8>, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_dht-node"))
        .args(["--api", node.api.base(), "--routing", node.routing.base()])
        .arg("--api-token-file")
        .arg(node.dir.join("api.token"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_work_against_running_nodes() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, _c) = three_nodes(root.path()).await;
    let keys = cids("e2e-cli", 30);

    // provide: 20 from a file, 10 from stdin; --wait returns after the first provide.
    let list = root.path().join("cids.txt");
    std::fs::write(&list, format!("# CIDs\n{}\n", keys[..20].join("\n"))).unwrap();
    let (ok, out, err) = cli(
        &b,
        &[
            "provide",
            "--wait",
            "--quiet",
            "--file",
            list.to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(String::from_utf8_lossy(&out).trim(), "20 CIDs accepted");
    let stdin = keys[20..].join("\n");
    let (ok, out, err) = cli(
        &b,
        &["provide", "--wait", "--quiet"],
        Some(stdin.as_bytes()),
    );
    assert!(ok, "{err}");
    assert_eq!(String::from_utf8_lossy(&out).trim(), "10 CIDs accepted");

    // stat --json: the provider and the routing table.
    let (ok, out, err) = cli(&b, &["stat", "--json"], None);
    assert!(ok, "{err}");
    let stat: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(stat["provider"]["keystore_keys"], 30);
    assert_eq!(stat["routing_table"]["kind"], "kbucket");

    // find-providers through A: B's peer id and address.
    let (ok, out, err) = cli(&a, &["find-providers", &keys[25]], None);
    assert!(ok, "{err}");
    let out = String::from_utf8_lossy(&out).into_owned();
    assert!(
        out.contains(&b.peer_id) && out.contains("/ip4/127.0.0.1/tcp/"),
        "{out}"
    );
    let nobody = &cids("e2e-cli-nobody", 1)[0];
    let (ok, _, err) = cli(&a, &["find-providers", nobody], None);
    assert!(!ok && err.contains("no provider"), "{err}");

    // find-peer through A.
    let (ok, out, err) = cli(&a, &["find-peer", &b.peer_id], None);
    assert!(ok, "{err}");
    assert!(String::from_utf8_lossy(&out).starts_with(&b.peer_id));

    // stop.
    let (ok, out, err) = cli(&b, &["stop", "--quiet", &keys[0], &keys[1]], None);
    assert!(ok, "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out).trim(),
        "2 CIDs no longer provided"
    );
    assert!(!b.api.holds(&keys[0]).await.unwrap());

    // put a /pk record through B (value from stdin), get it through A into a file.
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let peer = keypair.public().to_peer_id().to_string();
    let value = keypair.public().encode_protobuf();
    let key = format!("/pk/{peer}");
    let (ok, out, err) = cli(&b, &["put", &key], Some(&value));
    assert!(ok, "{err}");
    assert!(String::from_utf8_lossy(&out).starts_with("stored on "));
    let got = root.path().join("value.bin");
    let (ok, _, err) = cli(&a, &["get", &key, "--out", got.to_str().unwrap()], None);
    assert!(ok, "{err}");
    assert_eq!(std::fs::read(&got).unwrap(), value);

    // Bad input is a clear error, not a panic.
    let (ok, _, err) = cli(&b, &["provide", "--quiet", "not-a-cid"], None);
    assert!(!ok && err.contains("not a CID"), "{err}");
    let (ok, _, err) = cli(&b, &["get", "/nope/x"], None);
    assert!(!ok && err.contains("a key is"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_selects_the_full_table_the_per_key_provider_and_memory_stores() {
    let root = tempfile::tempdir().unwrap();
    let a = NodeProc::start(&root.path().join("a"), &[]);
    let b = NodeProc::start(&root.path().join("b"), &[&a]);
    let config = root.path().join("c.toml");
    std::fs::write(
        &config,
        r#"
        table = "full"
        strategy = "per-key"
        store = "memory"
        reprovide-interval = "1h"
        workers = 2
        mode = "server"
        "#,
    )
    .unwrap();
    let c = NodeProc::start_with(
        &root.path().join("c"),
        &[&a, &b],
        &["--config", config.to_str().unwrap()],
    );
    eventually(
        Duration::from_secs(20),
        "C's full table is filled by a crawl",
        || {
            let api = c.api.clone();
            async move {
                api.routing_table().await.is_ok_and(|t| {
                    t["kind"] == "full" && t["peers"] == 2 && t["last_filled"].is_u64()
                })
            }
        },
    )
    .await;
    let keys = cids("e2e-config", 10);
    assert_eq!(c.api.provide(&keys, true).await.unwrap(), 10);
    let stats = c.api.stats().await.unwrap();
    assert_eq!(stats.strategy, "per-key");
    assert_eq!(stats.keys_provided, 10);
    for key in &keys {
        let found = a.routing.find_providers(key).await.unwrap();
        assert!(found.iter().any(|p| p.id == c.peer_id), "{key}: {found:?}");
    }
    // Memory stores: nothing under the data directory but the identity and node.json.
    assert!(!root.path().join("c").join("store").exists());
    assert!(root.path().join("c").join("identity.key").exists());

    // A bad configuration file is refused with the setting's name.
    std::fs::write(&config, "table = \"round\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dht-node"))
        .args(["run", "--config", config.to_str().unwrap(), "--http", "off"])
        .arg("--data-dir")
        .arg(root.path().join("bad"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("table"));
}

/// Sends a raw HTTP/1.1 request (so the test chooses the `Host` header) to `base`; returns
/// the status code.
async fn raw_status(base: &str, request: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    text.split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_is_apart_from_routing_and_needs_the_token_and_a_known_host() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("solo");
    let node = NodeProc::start_with(&dir, &[], &["--api-host", "dht.example.org"]);
    let keys = cids("e2e-apart", 2);
    let body = serde_json::to_vec(&serde_json::json!({ "cids": keys })).unwrap();
    let json = Some(("application/json", body.clone()));

    // The public listener serves Delegated Routing only.
    let (status, _) = node
        .routing
        .send(Method::POST, "/api/v1/provide", None, json.clone())
        .await
        .unwrap();
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "provide on the routing listener"
    );
    let (status, _) = node
        .routing
        .send(Method::GET, "/metrics", None, None)
        .await
        .unwrap();
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "metrics on the routing listener"
    );

    // The management listener: no token or a wrong one is 401, and nothing is provided.
    let bare = ApiClient::new(node.api.base()).unwrap();
    for client in [bare.clone(), bare.clone().with_token("0123")] {
        let (status, _) = client
            .send(Method::POST, "/api/v1/provide", None, json.clone())
            .await
            .unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = client
            .send(Method::GET, "/api/v1/stats", None, None)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(node.api.stats().await.unwrap().keystore_keys, 0);

    // The token is in the data directory, readable by its owner only.
    let token = std::fs::read_to_string(dir.join("api.token")).unwrap();
    assert_eq!(token.trim().len(), 64, "32 random bytes, hex");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("api.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "mode {mode:o}");
    }

    // Host: a name other than localhost and the configured ones is refused, token or not
    // (a page whose name was rebound to 127.0.0.1).
    let port = node.api.base().rsplit(':').next().unwrap().to_owned();
    let request = |host: &str| {
        format!(
            "GET /api/v1/stats HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            token.trim()
        )
    };
    for host in [
        format!("evil.example:{port}"),
        "evil.example".into(),
        "localhost.evil.example".into(),
    ] {
        assert_eq!(
            raw_status(node.api.base(), &request(&host)).await,
            403,
            "{host}"
        );
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        "DHT.example.org".into(),
    ] {
        assert_eq!(
            raw_status(node.api.base(), &request(&host)).await,
            200,
            "{host}"
        );
    }

    // With the token, provide works; the client commands send the token file's token.
    assert_eq!(node.api.provide(&keys, false).await.unwrap(), 2);
    let (ok, out, err) = cli(&node, &["stat", "--json"], None);
    assert!(ok, "{err}");
    let stat: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(stat["provider"]["keystore_keys"], 2);
    let mut child = Command::new(env!("CARGO_BIN_EXE_dht-node"))
        .args(["--api", node.api.base(), "stat"])
        .arg("--api-token-file")
        .arg(root.path().join("no-such-token"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(!child.wait().unwrap().success(), "no token file, no stat");
    let _ = child.stderr.take();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_management_api_bound_beyond_loopback_is_logged_as_a_warning() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("exposed");
    let node = NodeProc::start_with(&dir, &[], &["--api-addr", "0.0.0.0:0"]);
    assert!(node.api.base().contains("0.0.0.0"), "{}", node.api.base());
    let log = read_log(&dir);
    assert!(
        log.contains("WARN") && log.contains("management API") && log.contains("beyond loopback"),
        "{log}"
    );
    // Loopback: no such warning.
    let quiet = NodeProc::start(&root.path().join("quiet"), &[]);
    assert!(!read_log(&quiet.dir).contains("beyond loopback"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_logs_where_it_listens_at_info_by_default() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("quiet");
    let first = NodeProc::start_logging(&dir, &[], &[], None);
    assert_eq!(
        first.api.provide(&cids("e2e-log", 3), false).await.unwrap(),
        3
    );
    drop(first);
    let node = NodeProc::start_logging(&dir, &[], &[], None);
    let log = read_log(&dir);
    let running = log
        .lines()
        .rev()
        .find(|l| l.contains("node running"))
        .unwrap_or_else(|| panic!("no 'node running' line: {log}"));
    assert!(running.contains("INFO"), "{running}");
    assert!(
        running.contains(node.routing.base().trim_start_matches("http://")),
        "{running}"
    );
    assert!(
        running.contains(node.api.base().trim_start_matches("http://")),
        "{running}"
    );
    assert!(running.contains("/ip4/127.0.0.1/tcp/"), "{running}");
    assert!(running.contains("keystore_keys=3"), "{running}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_api_answers_while_the_node_bootstraps() {
    // A bootstrap peer that accepts TCP and never speaks: the bootstrap waits for its dial
    // timeout (10 s).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let peer = format!(
        "/ip4/127.0.0.1/tcp/{}/p2p/{}",
        silent_addr.port(),
        libp2p::PeerId::random()
    );
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = free.local_addr().unwrap();
    drop(free);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("slow");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dht-node"))
        .arg("run")
        .arg("--data-dir")
        .arg(&dir)
        .args([
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--api-addr",
            "127.0.0.1:0",
        ])
        .args(["--http", &http.to_string(), "--bootstrap", &peer])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(root.path().join("slow.log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let routing = ApiClient::new(&format!("http://{http}"))
        .unwrap()
        .with_timeout(Duration::from_secs(2));
    let path = format!("/routing/v1/providers/{}", cids("e2e-early", 1)[0]);
    let started = Instant::now();
    let mut answered = None;
    while started.elapsed() < Duration::from_secs(5) {
        if let Ok((status, _)) = routing.send(Method::GET, &path, None, None).await {
            answered = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let still_bootstrapping = !dir.join("node.json").exists();
    let log = std::fs::read_to_string(root.path().join("slow.log")).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    drop(silent);
    assert_eq!(
        answered,
        Some(StatusCode::SERVICE_UNAVAILABLE),
        "the API answers 503 within 5 s of the start; log: {log}"
    );
    assert!(still_bootstrapping, "the node was still bootstrapping");
}

/// `dht-node stat` against a real node that nobody answers: the sections a person reads,
/// `--json` for scripts, `--compact` on one line, `--watch` refreshing (bounded by
/// `--count`), and the warning (disconnected, since when) in the output, the metrics and the
/// node's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_shows_sections_json_compact_watch_and_warns_when_nobody_answers() {
    let root = tempfile::tempdir().unwrap();
    let alone = NodeProc::start(&root.path().join("alone"), &[]);
    let key = &cids("e2e-stat", 1)[0];
    let (ok, _, err) = cli(&alone, &["provide", "--quiet", key], None);
    assert!(ok, "{err}");
    // The first provide finds no server: the provider goes disconnected.
    eventually(
        Duration::from_secs(20),
        "the provider is disconnected",
        || {
            let api = alone.api.clone();
            async move { api.stats().await.is_ok_and(|s| s.connectivity != "online") }
        },
    )
    .await;

    let (ok, out, err) = cli(&alone, &["stat", "--json"], None);
    assert!(ok, "{err}");
    let stat: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let p = &stat["provider"];
    assert_eq!(p["keystore_keys"], 1);
    assert_eq!(p["connectivity"], "disconnected");
    assert!(p["connectivity_since"].as_u64().unwrap() >= p["started_at"].as_u64().unwrap());
    for field in [
        "keys_queued_in_memory",
        "oldest_retry_secs",
        "regions_queued_retry",
        "regions_due",
        "workers_reserved",
        "uptime_secs",
        "keys_per_minute",
        "mean_region_secs",
        "table_peers",
        "mean_holders_per_key",
    ] {
        assert!(!p[field].is_null(), "{field} missing: {p}");
    }
    assert_eq!(p["warnings"][0]["kind"], "offline", "{p}");
    assert_eq!(p["warnings"][0]["state"], "disconnected");

    let (ok, out, err) = cli(&alone, &["stat"], None);
    assert!(ok, "{err}");
    let text = String::from_utf8(out).unwrap();
    eprintln!("{text}");
    let mut at = 0;
    for section in [
        "Connectivity",
        "Queues",
        "Schedule",
        "Workers",
        "Timings",
        "Operations",
        "Network",
        "Warnings",
    ] {
        let found = text[at..]
            .find(&format!("\n{section}"))
            .map(|i| at + i)
            .or_else(|| (at == 0 && text.starts_with(section)).then_some(0));
        let i = found.unwrap_or_else(|| panic!("no section {section} in order: {text}"));
        at = i + 1;
    }
    assert!(text.contains("disconnected, since 20"), "{text}");
    assert!(text.contains("! disconnected since"), "{text}");
    assert!(text.contains("keys              1\n"), "{text}");

    let (ok, out, err) = cli(&alone, &["stat", "--compact"], None);
    assert!(ok, "{err}");
    let line = String::from_utf8(out).unwrap();
    assert_eq!(line.trim_end().lines().count(), 1, "{line}");
    assert!(
        line.contains("disconnected") && line.contains("keys 1 ") && line.contains("WARN offline"),
        "{line}"
    );

    let started = Instant::now();
    let (ok, out, err) = cli(
        &alone,
        &[
            "stat",
            "--compact",
            "--watch",
            "--interval",
            "0.3",
            "--count",
            "3",
        ],
        None,
    );
    assert!(ok, "{err}");
    let lines = String::from_utf8(out).unwrap();
    assert_eq!(lines.lines().count(), 3, "{lines}");
    assert!(started.elapsed() >= Duration::from_millis(600));

    let metrics = alone.api.metrics().await.unwrap();
    for line in [
        "dht_provider_warning{kind=\"offline\"} 1",
        "dht_provider_warning{kind=\"behind_schedule\"} 0",
        "dht_provider{field=\"oldest_retry_secs\"}",
        "dht_provider{field=\"keys_queued_in_memory\"}",
        "dht_provider{field=\"connectivity_online\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} not in {metrics}");
    }
    let log = std::fs::read_to_string(alone.dir.join("node.log")).unwrap();
    assert!(
        log.contains("WARN") && log.contains("provider: disconnected since"),
        "{}",
        read_log(&alone.dir)
    );
}

/// `dht-node provided` lists what `provide` was given: the same set (a clean diff once both
/// are sorted), as base58btc multihashes by default and as the same CIDv1 with `--cid
/// --codec raw`, in keyspace order, streamed from the node's keystore in pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provided_lists_the_keys_given_to_provide() {
    let root = tempfile::tempdir().unwrap();
    let alone = NodeProc::start(&root.path().join("alone"), &[]);
    let given = cids("e2e-provided", 2500);
    let list = root.path().join("pins.txt");
    std::fs::write(&list, given.join("\n")).unwrap();
    let (ok, out, err) = cli(
        &alone,
        &["provide", "--quiet", "--file", list.to_str().unwrap()],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(String::from_utf8_lossy(&out).trim(), "2500 CIDs accepted");

    let (ok, out, err) = cli(&alone, &["provided", "--cid", "--codec", "raw"], None);
    assert!(ok, "{err}");
    let listed: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let (mut a, mut b) = (listed.clone(), given.clone());
    a.sort();
    b.sort();
    assert_eq!(a, b, "the list diffs clean against the pins");

    let (ok, out, err) = cli(&alone, &["provided"], None);
    assert!(ok, "{err}");
    let multihashes: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(multihashes.len(), 2500);
    // sha2-256 multihashes in base58btc are what a CIDv0 shows: `Qm…`.
    let mut kad = Vec::new();
    for (mh, cid) in multihashes.iter().zip(&listed) {
        let v0: Cid = mh.parse().unwrap();
        let v1: Cid = cid.parse().unwrap();
        assert_eq!(v0.hash(), v1.hash(), "same key, same order");
        kad.push(Sha256::digest(v0.hash().to_bytes()).to_vec());
    }
    assert!(kad.windows(2).all(|w| w[0] < w[1]), "keyspace order");

    let (ok, _, err) = cli(&alone, &["provided", "--cid", "--codec", "nope"], None);
    assert!(!ok && err.contains("a codec is"), "{err}");
}

/// Every metric `deploy/grafana/dht-node.json` queries, with the `field`/`kind` label values
/// it selects, and from both sides of a connection.
fn dashboard_metrics() -> Vec<(String, Vec<(String, String)>)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/dht-node.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    exprs.push(
        dashboard["templating"]["list"][1]["definition"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    let mut found = Vec::new();
    for expr in &exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("dht_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(tail.len());
            let name = tail[..end].to_owned();
            let mut labels = Vec::new();
            let after = &tail[end..];
            if let Some(inside) = after.strip_prefix('{') {
                let close = inside.find('}').unwrap();
                for matcher in inside[..close].split(',') {
                    if let Some((label, value)) = matcher.split_once("=\"")
                        && ["field", "kind"].contains(&label.trim())
                    {
                        labels.push((
                            label.trim().to_owned(),
                            value.trim_end_matches('"').to_owned(),
                        ));
                    }
                }
            }
            found.push((name, labels));
            rest = &tail[end..];
        }
    }
    assert!(found.len() > 20, "{found:?}");
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_dashboard_names_only_metrics_a_node_exports() {
    let root = tempfile::tempdir().unwrap();
    let a = NodeProc::start(&root.path().join("a"), &[]);
    let b = NodeProc::start(&root.path().join("b"), &[&a]);
    eventually(Duration::from_secs(20), "b knows a", || {
        let api = b.api.clone();
        async move { table_len(&api).await >= 1 }
    })
    .await;
    let keys = cids("e2e-grafana", 3);
    b.api.provide(&keys, true).await.unwrap();
    // A lookup through the routing API: the lookup and HTTP counters have samples too.
    b.routing.find_providers(&keys[0]).await.unwrap();
    let text = b.api.metrics().await.unwrap();
    for (name, labels) in dashboard_metrics() {
        let exported = text.lines().any(|line| {
            let Some(rest) = line.strip_prefix(name.as_str()) else {
                return false;
            };
            (rest.starts_with('{') || rest.starts_with(' '))
                && labels
                    .iter()
                    .all(|(label, value)| rest.contains(&format!("{label}=\"{value}\"")))
        });
        assert!(
            exported,
            "the dashboard's {name} {labels:?} is not exported:\n{text}"
        );
    }
}
