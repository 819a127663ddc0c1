//! The status page (`GET /` on the management listener) of a real `dht-node run` process:
//! over HTTP (200 `text/html` with `?token=`, 401 without), and in headless Chromium
//! (Debian's `chromium`: installed with `apt-get` where missing and we run as root, else
//! the test is skipped with a message, or fails when `CI` is set).
#![allow(clippy::unwrap_used)]

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::process::{NodeProc, cids, eventually};

/// `GET path` on `base` (`http://127.0.0.1:port`) with `std`'s TCP: the status, the
/// `Content-Type` and the body.
fn get(base: &str, path: &str) -> (u16, String, String) {
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

fn token(node: &NodeProc) -> String {
    std::fs::read_to_string(node.dir.join("api.token"))
        .unwrap()
        .trim()
        .to_owned()
}

/// Two nodes; 40 keys provided through the second, which then has a schedule.
async fn providing_node(root: &Path) -> (NodeProc, NodeProc) {
    let a = NodeProc::start(&root.join("a"), &[]);
    let b = NodeProc::start(&root.join("b"), &[&a]);
    eventually(Duration::from_secs(20), "b knows a", || {
        let api = b.api.clone();
        async move {
            api.routing_table()
                .await
                .is_ok_and(|t| t["peers"].as_u64().unwrap_or(0) >= 1)
        }
    })
    .await;
    assert_eq!(b.api.provide(&cids("status", 40), true).await.unwrap(), 40);
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_regions_cursor_queues_and_needs_the_token() {
    let root = tempfile::tempdir().unwrap();
    let (_a, b) = providing_node(root.path()).await;
    let stats = b.api.stats().await.unwrap();
    assert!(stats.regions >= 1, "{stats:?}");
    let base = b.api.base().to_owned();

    let (status, content_type, page) = get(&base, &format!("/?token={}", token(&b)));
    assert_eq!(status, 200, "{page}");
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(page.contains("<meta http-equiv=\"refresh\" content=\"30\">"));
    assert!(!page.contains("<script"), "no JavaScript");
    let cells = page.matches("class=\"region\"").count() as u64;
    assert_eq!(
        cells,
        stats.regions.min(dht_node::status::MAX_CELLS),
        "{page}"
    );
    let next = match stats.next_region.clone().unwrap() {
        bits if bits.is_empty() => "the whole keyspace (prefix ∅)".to_owned(),
        bits => bits,
    };
    assert!(
        page.contains(&format!("next region: {next}")),
        "cursor {next}: {page}"
    );
    // The provider's own times: the 40 new keys were sent, and no region was reprovided
    // in this short run.
    assert!(!stats.region_times.is_empty(), "{stats:?}");
    assert!(
        stats
            .region_times
            .iter()
            .all(|t| t.provided_at.is_some_and(|at| at <= stats.now) && t.reprovided_at.is_none()),
        "{stats:?}"
    );
    assert!(page.contains("new keys sent"), "{page}");
    assert!(page.contains("id=\"legend\""), "{page}");
    assert!(page.contains("id=\"cursor-mark\""), "{page}");
    assert!(
        page.contains(&format!("<th>keys</th><td>{}</td>", stats.keystore_keys)),
        "{page}"
    );
    assert!(page.contains("<th>keys to provide</th>"), "{page}");
    assert!(page.contains("40 keys, 0 failed"), "{page}");

    // Without the token, or with a wrong one, or `?token=` on another path: 401.
    assert_eq!(get(&base, "/").0, 401);
    assert_eq!(get(&base, "/?token=wrong").0, 401);
    assert_eq!(
        get(&base, &format!("/api/v1/stats?token={}", token(&b))).0,
        401
    );
}

/// `chromium`, installed where missing and we run as root; `None` (skip) otherwise, unless
/// `CI` is set.
fn chromium() -> Option<PathBuf> {
    let find = || {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("chromium"))
                .find(|p| p.is_file())
        })
    };
    if let Some(found) = find() {
        return Some(found);
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if root {
        eprintln!(
            "status_page: chromium is missing; installing it with apt-get install -y chromium"
        );
        let ok = Command::new("apt-get")
            .args(["install", "-y", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success());
        if ok && let Some(found) = find() {
            return Some(found);
        }
    }
    let message =
        "status_page: no chromium (and it could not be installed); skipping the browser test";
    assert!(std::env::var_os("CI").is_none(), "{message}");
    eprintln!("{message}");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_renders_the_status_page() {
    let Some(chromium) = chromium() else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let (_a, b) = providing_node(root.path()).await;
    let stats = b.api.stats().await.unwrap();
    let url = format!("{}/?token={}", b.api.base(), token(&b));
    let profile = root.path().join("chromium");
    let run = |extra: &[&str]| {
        let out = Command::new(&chromium)
            .args(["--headless", "--no-sandbox", "--disable-gpu"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "chromium: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let dom = run(&["--dump-dom"]);
    assert!(dom.contains("<h1>dht-node status</h1>"), "{dom}");
    assert!(dom.contains("id=\"band\""), "{dom}");
    assert_eq!(
        dom.matches("class=\"region\"").count() as u64,
        stats.regions.min(dht_node::status::MAX_CELLS),
        "{dom}"
    );
    assert!(dom.contains("id=\"records\""), "{dom}");
    assert!(dom.contains("40 keys, 0 failed"), "{dom}");

    let shot = root.path().join("status-page.png");
    run(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1200,900",
    ]);
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 10_000, "a blank page? {} bytes", png.len());
    // Where asked, keep the screenshot (docs/status-page.png is one).
    if let Some(keep) = std::env::var_os("STATUS_PAGE_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
}
