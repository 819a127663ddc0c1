//! Real `dht-node run` processes: the file-descriptor limit (the soft limit raised to the
//! hard one at start, and a hard limit too small for the defaults shared out so that RocksDB
//! keeps its files, `dht_node::fds`; the limits are set with the shell's `ulimit` before
//! `exec`, so they are the process's own from its start), and `--external-addr`.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Starts `dht-node run` on `dir` with `ulimit` arguments `ulimit` applied first, waits for its
/// `node.json` (at most 30 s) and returns the child.
fn start_under(dir: &Path, ulimit: &str) -> Child {
    start_with(dir, ulimit, &[])
}

/// [`start_under`] with more arguments to `run`.
fn start_with(dir: &Path, ulimit: &str, extra: &[&str]) -> Child {
    std::fs::create_dir_all(dir).unwrap();
    let log = std::fs::File::create(dir.join("node.log")).unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit {ulimit} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_dht-node"))
        .arg("run")
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--http", "127.0.0.1:0"])
        .args(["--api-addr", "127.0.0.1:0", "--no-bootstrap"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.join("node.json").exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("dht-node exited with {status}: {}", read_log(dir));
        }
        assert!(Instant::now() < deadline, "no node.json: {}", read_log(dir));
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn read_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
}

/// The soft and hard "Max open files" of process `pid`.
fn open_files_limit(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut figures = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .map(|f| f.parse::<u64>().unwrap_or(u64::MAX));
    (figures.next().unwrap(), figures.next().unwrap())
}

/// The value of `field=` in `line`, up to the next space.
fn field<'a>(line: &'a str, field: &str) -> &'a str {
    let at = line
        .find(&format!("{field}="))
        .unwrap_or_else(|| panic!("no {field} in {line}"));
    let rest = &line[at + field.len() + 1..];
    rest.split_whitespace().next().unwrap_or_default()
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_soft_limit_is_raised_to_the_hard_one_at_start() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("soft");
    let child = start_under(&dir, "-Sn 256");
    let (soft, hard) = open_files_limit(child.id());
    let log = read_log(&dir);
    stop(child);
    assert_eq!(soft, hard.min(1 << 20), "soft limit not raised; log: {log}");
    let line = log
        .lines()
        .find(|l| l.contains("file descriptors"))
        .unwrap_or_else(|| panic!("figures not logged: {log}"));
    assert_eq!(field(line, "raised_from"), "256", "{line}");
    assert_eq!(field(line, "limit"), soft.to_string(), "{line}");
}

#[test]
fn a_small_hard_limit_keeps_rocksdb_its_share() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("hard");
    let child = start_under(&dir, "-n 600");
    let log = read_log(&dir);
    stop(child);
    let line = log
        .lines()
        .find(|l| l.contains("file descriptors"))
        .unwrap_or_else(|| panic!("figures not logged: {log}"));
    assert!(line.contains("WARN"), "{line}");
    let number = |name| -> u64 {
        let text = field(line, name);
        let digits: String = text.chars().filter(char::is_ascii_digit).collect();
        digits
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text} in {line}"))
    };
    let rocks = number("rocksdb_files");
    let connections =
        number("established") + number("pending_incoming") + number("pending_outgoing");
    let reserve = number("reserve");
    // RocksDB's SST files, 32 more of its own, the connections and the reserve fit in 600.
    assert!(rocks >= 20, "{line}");
    assert!(rocks + 32 + connections + reserve <= 600, "{line}");
    assert!(
        number("established_incoming") <= number("established"),
        "{line}"
    );
}

#[test]
fn external_addresses_given_on_the_command_line_are_announced() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("external");
    let child = start_with(
        &dir,
        "-Sn 4096",
        &[
            "--external-addr",
            "/ip4/198.51.100.7/tcp/4001",
            "--external-addr",
            "/dns4/node.example.org/tcp/4001",
        ],
    );
    let info = std::fs::read_to_string(dir.join("node.json")).unwrap();
    stop(child);
    let json: serde_json::Value = serde_json::from_str(&info).unwrap();
    let addrs: Vec<&str> = json["addrs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    for want in [
        "/ip4/198.51.100.7/tcp/4001",
        "/dns4/node.example.org/tcp/4001",
    ] {
        assert!(
            addrs.iter().any(|a| a.starts_with(want)),
            "{want} not in {addrs:?}"
        );
    }
}
