#![allow(clippy::unwrap_used)]

//! `dht-node run` processes on 127.0.0.1 for the end-to-end tests: each node writes
//! `<data dir>/node.json` (peer id, addresses, the addresses of its Delegated Routing and
//! management listeners) once it runs; its management API is reached with the token of
//! `<data dir>/api.token`.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use dht_node::http_client::ApiClient;

/// A `dht-node run` process.
pub struct NodeProc {
    pub child: Child,
    pub dir: PathBuf,
    /// The management API, with the node's token.
    pub api: ApiClient,
    /// The Delegated Routing API.
    pub routing: ApiClient,
    pub peer_id: String,
    /// Multiaddrs with /p2p/<peer id>.
    pub addrs: Vec<String>,
}

impl NodeProc {
    /// Starts `dht-node run` on `dir`, bootstrapping from `bootstrap`, and waits (at most
    /// 30 s) for its `node.json`.
    pub fn start(dir: &Path, bootstrap: &[&NodeProc]) -> NodeProc {
        NodeProc::start_with(dir, bootstrap, &[])
    }

    /// [`start`](Self::start) with more arguments to `run`.
    pub fn start_with(dir: &Path, bootstrap: &[&NodeProc], extra: &[&str]) -> NodeProc {
        NodeProc::start_logging(dir, bootstrap, extra, Some("info,dht_provider=debug"))
    }

    /// [`start_with`](Self::start_with) with `RUST_LOG` set to `rust_log` (unset: `None`).
    pub fn start_logging(
        dir: &Path,
        bootstrap: &[&NodeProc],
        extra: &[&str],
        rust_log: Option<&str>,
    ) -> NodeProc {
        let addrs: Vec<String> = bootstrap.iter().map(|p| p.addrs[0].clone()).collect();
        NodeProc::start_at(dir, &addrs, extra, rust_log)
    }

    /// [`start_logging`](Self::start_logging) bootstrapping from `bootstrap`, multiaddrs
    /// with `/p2p/<peer id>` (of any node, in a process or not).
    pub fn start_at(
        dir: &Path,
        bootstrap: &[String],
        extra: &[&str],
        rust_log: Option<&str>,
    ) -> NodeProc {
        let info = dir.join("node.json");
        let _ = std::fs::remove_file(&info);
        std::fs::create_dir_all(dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("node.log"))
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dht-node"));
        cmd.arg("run")
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--http", "127.0.0.1:0"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        if let Some(filter) = rust_log {
            cmd.env("RUST_LOG", filter);
        }
        if bootstrap.is_empty() {
            cmd.arg("--no-bootstrap");
        }
        for addr in bootstrap {
            cmd.arg("--bootstrap").arg(addr);
        }
        if !extra.contains(&"--api-addr") {
            cmd.args(["--api-addr", "127.0.0.1:0"]);
        }
        cmd.args(extra);
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let json: serde_json::Value = loop {
            if let Ok(text) = std::fs::read_to_string(&info)
                && let Ok(v) = serde_json::from_str(&text)
            {
                break v;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("dht-node exited with {status}; log: {}", read_log(dir));
            }
            assert!(
                Instant::now() < deadline,
                "no node.json within 30 s; log: {}",
                read_log(dir)
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let token = std::fs::read_to_string(dir.join("api.token")).unwrap();
        let api = ApiClient::new(json["api"].as_str().unwrap())
            .unwrap()
            .with_timeout(Duration::from_secs(30))
            .with_token(token.trim());
        let routing = ApiClient::new(json["http"].as_str().unwrap())
            .unwrap()
            .with_timeout(Duration::from_secs(30));
        NodeProc {
            child,
            dir: dir.to_owned(),
            api,
            routing,
            peer_id: json["peer_id"].as_str().unwrap().to_owned(),
            addrs: json["addrs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect(),
        }
    }

    /// SIGKILL.
    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn read_log(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let start = log.len().saturating_sub(4000);
    log.get(start..).unwrap_or_default().to_owned()
}

/// `n` distinct CIDv1 (raw, sha2-256) made from `seed` ([`dht_test_kit::cids`]).
pub fn cids(seed: &str, n: usize) -> Vec<String> {
    dht_test_kit::cids(seed, n)
        .into_iter()
        .map(|(cid, _)| cid)
        .collect()
}

#[allow(unused_imports)]
pub use dht_test_kit::eventually;
