//! `cargo xtask bench <bench> [args…]`: the workspace's benchmarks, built optimised.
//!
//! - `devnet [--nodes N] [--keys K] [--kad-keys K2] [--json PATH] [...]`: the sweeping
//!   provider on a devnet of N real nodes on 127.0.0.1 against the same network built from
//!   rust-libp2p's libp2p-kad, providing one key at a time, in one run; prints wall time, CPU
//!   time, requests and keys per second of both and their ratio. Runs
//!   `cargo bench -p dht-node --bench devnet -- …`; `cargo xtask bench devnet --help` lists
//!   every option.
//! - `go [--servers N] [--keys K] [--sample S] [--json PATH] [...]`: our sweeping provider
//!   (the `dht-node` binary) beside go-libp2p-kad-dht's SweepingProvider with Kubo's
//!   settings, on one network of N Go servers (`interop/go`), one after the other; prints
//!   keys per second, CPU per 1,000 keys, peak RSS, requests and bytes received by the
//!   servers, placement and findability of both, and the ratios. Builds the Go peer (needs
//!   Go) and runs `cargo bench -p dht-node --bench go -- …`.
//! - `server [--senders N] [--records R] [--in-flight F] [--runs K]`: one RocksDB server
//!   and N senders over TCP sending ADD_PROVIDER; records stored per second with direct
//!   writes beside the grouped writer, and the ratio. Runs
//!   `cargo bench -p dht-node --bench server -- …`.
//! - `hostile [--phase-secs S] [--honest-rate R]`: one `dht-node` server on 127.0.0.1
//!   (RocksDB, `--limit-loopback`) under hostile processes (1,000 connections, held
//!   streams announcing 4 MiB, ADD_PROVIDER floods from 10,000 peer ids, closer-peers-heavy
//!   answers to its lookups, malformed frames, provider squatting), one phase each and then
//!   all at once, with 8 honest client processes measured throughout; prints per phase the
//!   honest share answered, p50/p99, the server's peak RSS and disk growth, and the targets;
//!   then the same against one Go server of `interop/go` (built when Go is installed) and
//!   both side by side. Runs `cargo bench -p dht-node --bench hostile -- …`.
//! - `criterion [args…]`: every criterion benchmark of the workspace (`cargo bench
//!   --workspace --benches`, minus the devnet), arguments passed to criterion.
//!
//! Relative paths (e.g. `--json out.json`) are relative to the workspace root.

use anyhow::{Result, bail};

const USAGE: &str = "\
usage: cargo xtask bench <bench> [options]

benches:
  devnet [--nodes N] [--keys K] [--kad-keys K2] [--kad-parallel P] [--sample S] [--json PATH]
                             the sweep against libp2p-kad's per-key provide on a local
                             network (default 100 nodes, 100,000 sweep keys)
  go [--servers N] [--keys K] [--sample S] [--reprovide-secs R] [--json PATH]
                             our sweep beside go-libp2p-kad-dht's SweepingProvider (Kubo's
                             settings) on a network of Go servers (default 100 servers,
                             100,000 keys each; needs Go)
  server [--senders N] [--records R] [--in-flight F] [--runs K]
                             provider records one RocksDB server stores per second from
                             N senders over TCP, direct writes beside the grouped writer
                             (default 64 senders, 200,000 records)
  hostile [--phase-secs S] [--honest-rate R]
                             one dht-node server under hostile peers, one attack per
                             phase and then all at once, honest clients measured
                             (default 20 s phases, 25 requests/s per honest client)
  criterion [args...]        every criterion benchmark of the workspace
";

/// Runs `cargo xtask bench …` with the arguments after `bench`.
pub(crate) fn run(args: &[&str]) -> Result<()> {
    match args.split_first() {
        Some((&"devnet", rest)) => {
            crate::setup::ensure(true)?;
            let mut all = vec![
                "bench", "--locked", "-p", "dht-node", "--bench", "devnet", "--",
            ];
            all.extend_from_slice(rest);
            crate::cargo(&all)
        }
        Some((&"server", rest)) => {
            crate::setup::ensure(true)?;
            let mut all = vec![
                "bench", "--locked", "-p", "dht-node", "--bench", "server", "--",
            ];
            all.extend_from_slice(rest);
            crate::cargo(&all)
        }
        Some((&"hostile", rest)) => {
            // The same attacks against a Go server too, where Go is installed.
            let go_peer = match crate::interop::go_version() {
                Some(_) => Some(crate::interop::build_go_peer()?),
                None => {
                    eprintln!("==> bench hostile: `go` not found, so no Go server is measured");
                    None
                }
            };
            crate::setup::ensure(true)?;
            let mut cmd = std::process::Command::new(crate::cargo_bin());
            cmd.args([
                "bench", "--locked", "-p", "dht-node", "--bench", "hostile", "--",
            ])
            .args(rest);
            if let Some(binary) = go_peer {
                cmd.env(crate::interop::GO_PEER_ENV, binary);
            }
            crate::run(&mut cmd)
        }
        Some((&"go", rest)) => {
            crate::interop::require_go()?;
            let binary = crate::interop::build_go_peer()?;
            crate::setup::ensure(true)?;
            let mut cmd = std::process::Command::new(crate::cargo_bin());
            cmd.args(["bench", "--locked", "-p", "dht-node", "--bench", "go", "--"])
                .args(rest)
                .env(crate::interop::GO_PEER_ENV, &binary);
            crate::run(&mut cmd)
        }
        Some((&"criterion", rest)) => {
            crate::setup::ensure(true)?;
            let mut all = vec!["bench", "--locked", "--workspace", "--benches"];
            all.extend_from_slice(&["--exclude", "dht-node"]);
            all.push("--");
            all.extend_from_slice(rest);
            crate::cargo(&all)
        }
        Some((&("help" | "--help" | "-h"), _)) | None => {
            eprint!("{USAGE}");
            Ok(())
        }
        Some((other, _)) => {
            eprint!("{USAGE}");
            bail!("unknown bench {other:?}")
        }
    }
}
