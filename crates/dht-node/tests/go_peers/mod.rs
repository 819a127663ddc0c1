//! The Go peer of `interop/go` as the tests drive it: one process running N go-libp2p-kad-dht
//! servers, one JSON command per line on its stdin, one JSON answer per line on its stdout.

#![allow(dead_code, unreachable_pub)]

use std::{
    collections::HashSet,
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use dht_node::api::hex_decode;
use dht_proto::{PeerId, PeerInfo, Record};
use serde_json::{Value, json};

/// The variable naming the Go peer's binary (set by `cargo xtask interop`).
pub const GO_PEER_ENV: &str = "AMINO_GO_KADPEERS";

/// How long any one command may take beyond its own timeout before the process is killed.
const GRACE: Duration = Duration::from_secs(15);

/// Go's default timeout of one command (the program's own default is 60 s).
const COMMAND_TIMEOUT_SECS: f64 = 60.0;

type Io = (ChildStdin, BufReader<ChildStdout>);

/// A running Go peer process; killed when dropped.
pub struct GoPeers {
    child: Arc<Mutex<Child>>,
    io: Arc<Mutex<Io>>,
    /// Each Go node: its peer id and listen addresses.
    pub nodes: Vec<PeerInfo>,
}

impl GoPeers {
    /// Starts `n` Go DHT servers and waits (at most 30 s) until they listen.
    pub async fn start(n: usize) -> GoPeers {
        GoPeers::start_with(n, 0).await
    }

    /// Like [`GoPeers::start`], the last `clients` of the `n` nodes in client mode.
    pub async fn start_with(n: usize, clients: usize) -> GoPeers {
        GoPeers::start_args(n, clients, &[]).await
    }

    /// Like [`GoPeers::start_with`], with more command-line flags for the Go program (e.g.
    /// `-keystore DIR`, `-reprovide 2m`).
    pub async fn start_args(n: usize, clients: usize, flags: &[&str]) -> GoPeers {
        let binary = std::env::var_os(GO_PEER_ENV).unwrap_or_else(|| {
            panic!("{GO_PEER_ENV} is not set: run these tests with `cargo xtask interop`")
        });
        let mut child = Command::new(&binary)
            .arg("-n")
            .arg(n.to_string())
            .arg("-clients")
            .arg(clients.to_string())
            .args(flags)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary:?}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut peers = GoPeers {
            child: Arc::new(Mutex::new(child)),
            io: Arc::new(Mutex::new((stdin, stdout))),
            nodes: Vec::new(),
        };
        let ready = peers
            .exchange(None, Duration::from_secs(30))
            .await
            .expect("the Go peer starts");
        peers.nodes = ready["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(parse_peer)
            .collect();
        peers
    }

    /// Sends `command` (without waiting for an answer when `None`) and reads one answer line,
    /// killing the process if none comes within `limit`.
    async fn exchange(&self, command: Option<Value>, limit: Duration) -> Result<Value, String> {
        let io = self.io.clone();
        let work = tokio::task::spawn_blocking(move || -> Result<Value, String> {
            let mut io = io.lock().unwrap();
            if let Some(command) = command {
                let mut line = command.to_string();
                line.push('\n');
                io.0.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
                io.0.flush().map_err(|e| e.to_string())?;
            }
            let mut line = String::new();
            let n = io.1.read_line(&mut line).map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the Go peer exited".to_owned());
            }
            serde_json::from_str(&line).map_err(|e| format!("{e}: {line}"))
        });
        match tokio::time::timeout(limit, work).await {
            Ok(joined) => joined.unwrap(),
            Err(_) => {
                // Unblocks the reader: its pipe closes.
                let _ = self.child.lock().unwrap().kill();
                panic!("the Go peer gave no answer within {limit:?}");
            }
        }
    }

    /// The process id of the Go program.
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }

    /// Runs `command` on the Go side: its result, or Go's error message.
    pub async fn call(&self, command: Value) -> Result<Value, String> {
        let secs = command["timeout"].as_f64().unwrap_or(COMMAND_TIMEOUT_SECS);
        let answer = self
            .exchange(Some(command.clone()), Duration::from_secs_f64(secs) + GRACE)
            .await?;
        if answer["ok"] == json!(true) {
            Ok(answer["result"].clone())
        } else {
            Err(answer["error"].as_str().unwrap_or("?").to_owned())
        }
    }

    /// Runs `command`, failing the test on an error.
    pub async fn ok(&self, command: Value) -> Value {
        match self.call(command.clone()).await {
            Ok(v) => v,
            Err(e) => panic!("Go command {command} failed: {e}"),
        }
    }

    /// The routing table of Go node `i`.
    pub async fn table(&self, i: usize) -> HashSet<PeerId> {
        let table = self.ok(json!({"cmd": "routing_table", "node": i})).await;
        ids(&table).into_iter().collect()
    }

    /// Waits (at most 30 s) until the table of Go node `i`, or of every Go node with `None`,
    /// holds `peer`: Go admits a peer only after identify and its lookup check (a FIND_NODE).
    pub async fn admitted(&self, i: Option<usize>, peer: PeerId) {
        let nodes: Vec<usize> = match i {
            Some(i) => vec![i],
            None => (0..self.nodes.len()).collect(),
        };
        let what = format!("Go nodes {nodes:?} admit {peer}");
        eventually(Duration::from_secs(30), &what, || async {
            for &i in &nodes {
                if !self.table(i).await.contains(&peer) {
                    return false;
                }
            }
            true
        })
        .await;
    }

    /// The routing table of each Go node.
    pub async fn tables(&self) -> Vec<HashSet<PeerId>> {
        let mut out = Vec::new();
        for i in 0..self.nodes.len() {
            out.push(self.table(i).await);
        }
        out
    }
}

impl Drop for GoPeers {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A peer as the Go program writes it: `{"id": …, "addrs": […]}`.
pub fn peer_json(peer: &PeerInfo) -> Value {
    json!({
        "id": peer.peer_id.to_string(),
        "addrs": peer.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })
}

/// The inverse of [`peer_json`].
pub fn parse_peer(v: &Value) -> PeerInfo {
    let id: PeerId = v["id"].as_str().unwrap().parse().unwrap();
    let addrs = v["addrs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap().parse().unwrap())
                .collect()
        })
        .unwrap_or_default();
    PeerInfo::new(id, addrs)
}

/// The peer ids of a list of peer ids or of `{"id": …}` peers.
pub fn ids(v: &Value) -> Vec<PeerId> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    p.as_str()
                        .or_else(|| p["id"].as_str())
                        .unwrap()
                        .parse()
                        .unwrap()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A value record as the Go program writes it: `{"key": hex, "value": hex}`.
pub fn record(v: &Value) -> Record {
    let hex = |field: &str| hex_decode(v[field].as_str().unwrap()).unwrap();
    Record::new(hex("key"), hex("value"))
}

#[allow(unused_imports)]
pub use dht_test_kit::{cids, eventually};
