//! Helpers shared by the integration tests: deterministic keys, peers and records.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use dht_proto::{Key, Multiaddr, PeerId, ProviderRecord, UnixSecs};
use dht_provider_store::Multihash;

/// A fixed wall-clock start.
pub const T0: UnixSecs = dht_test_kit::EPOCH;
/// One hour.
pub const H: u64 = 3600;

pub use dht_test_kit::peer_id;

/// A deterministic address of peer `n`.
pub fn addr(n: u64) -> Multiaddr {
    format!(
        "/ip4/10.{}.{}.{}/tcp/4001",
        (n >> 16) & 255,
        (n >> 8) & 255,
        n & 255
    )
    .parse()
    .expect("valid multiaddr")
}

/// A deterministic sha256 multihash.
pub fn mh(n: u64) -> Multihash {
    let digest = Key::hash(&[b"key".as_slice(), &n.to_be_bytes()].concat());
    Multihash::wrap(0x12, digest.as_bytes()).expect("32-byte digest fits")
}

/// The DHT key (multihash bytes) of key `n`.
pub fn dht_key(n: u64) -> Vec<u8> {
    mh(n).to_bytes()
}

/// Provider record: peer `p` provides key `k`, received at `at`, with one address.
pub fn rec(k: u64, p: u64, at: UnixSecs) -> ProviderRecord {
    ProviderRecord {
        key: dht_key(k),
        provider: peer_id(p),
        addrs: vec![addr(p)],
        received_at: at,
    }
}

/// `(peer, received_at)` of records, for compact assertions.
pub fn summary(records: &[ProviderRecord]) -> Vec<(PeerId, UnixSecs)> {
    records
        .iter()
        .map(|r| (r.provider, r.received_at))
        .collect()
}

// Child processes are the test binary re-executed with an environment variable naming the
// role (`--exact <test name>`); without the variable those tests return at once.

/// The role of a child process.
pub const ROLE: &str = "DHT_PROVIDER_STORE_TEST_ROLE";
/// The database directory of a child process.
pub const DIR: &str = "DHT_PROVIDER_STORE_TEST_DIR";
/// Whether a child syncs its writes (`1`) or not.
pub const SYNC: &str = "DHT_PROVIDER_STORE_TEST_SYNC";

/// Runs test `test_name` of this binary as a child in `role`, on `dir`, stdout piped.
pub fn spawn_child(test_name: &str, role: &str, dir: &Path, sync: bool) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(DIR, dir)
        .env(SYNC, if sync { "1" } else { "0" })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The `n` of an `ack n` line (libtest may print the test name before it on the same line).
pub fn parse_ack(line: &str) -> Option<u64> {
    let at = line.find("ack ")?;
    line.get(at + 4..)?.trim().parse().ok()
}

/// Reads the child's stdout lines on a thread; returns the receiver and the thread.
pub fn lines(child: &mut Child) -> (mpsc::Receiver<String>, std::thread::JoinHandle<()>) {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (rx, t)
}

/// Whether `unshare --user --map-root-user --mount` works here (for [`run_on_tmpfs`]).
pub fn user_namespaces() -> bool {
    Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs test `test_name` of this binary as a child in `role`, in its own user and mount
/// namespaces, with a tmpfs of `size` (a mount option, e.g. `size=24m`) mounted at `dir`;
/// waits for it, checks it succeeded and returns the `N` of the `ok N` it printed last.
pub fn run_on_tmpfs(size: &str, test_name: &str, role: &str, dir: &Path) -> u64 {
    let script = format!("mount -t tmpfs -o {size} tmpfs \"$1\" && shift && exec \"$@\"");
    let out = Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .arg(dir)
        .arg(std::env::current_exe().unwrap())
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(DIR, dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .split("ok ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no result from the child: {stdout}"))
}

/// Batch `i` of a full-disk child: 500 provider records with long addresses.
pub fn filler_batch(i: u64) -> Vec<ProviderRecord> {
    (0..500)
        .map(|j| {
            let mut r = rec(i * 500 + j, j, T0);
            r.addrs = (0..8)
                .map(|a| {
                    format!("/dns4/filler-{i}-{j}-{a}.example.org/tcp/4001")
                        .parse()
                        .unwrap()
                })
                .collect();
            r
        })
        .collect()
}
