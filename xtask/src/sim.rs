//! `cargo xtask sim <experiment> [args…]`: runs the simulator (crates/dht-sim), optimised.
//!
//! - `lookup --nodes N --lookups M [--seed S] [--json PATH] [...]`: lookups from random
//!   nodes to random keys in a simulated network, checked against the ground truth; prints a
//!   table and writes a JSON summary. `cargo xtask sim lookup --help` lists every option.
//!
//! - `provide --servers S --keys N --strategy sweep|per-key|both [--churn F] [--seed X]
//!   [--json PATH] [--plot DIR] [...]`: one provider node provides N keys, then reprovides
//!   them for one cycle; requests, placement and findability, sweep beside per-key; with
//!   `--plot DIR`, SVG plots of the run (holders, requests per minute, behind schedule,
//!   memory); with `--batch-share F`, that share of the servers speaks the batched provide
//!   protocol and gets its records in batches. Built with the
//!   simulator's `rocksdb` feature, so the provider's keystore is RocksDB as in a node.
//!
//! - `memory [--servers S] [--keys N,N,...]`: the provider's own peak memory at each key
//!   count (`provide --records count --preload`, RocksDB keystore), one process per count,
//!   printed side by side.
//!
//! The simulator is its own binary (`dht-sim`), built with `--release`, so xtask stays light.
//! Relative paths (e.g. `--json out.json`) are relative to the workspace root.

use anyhow::{Result, bail};

const USAGE: &str = "\
usage: cargo xtask sim <experiment> [options]

experiments:
  lookup --nodes N --lookups M [--seed S] [--json PATH] [--build fast|realistic]
         [--silent F] [--random-peers F] [--far-peers F] [--slow F] [--loss P]
         [--omit F] [--alpha A] [--beta B] [--k K]
                             lookups in a simulated network, against the ground truth
  provide --servers S --keys N --strategy sweep|per-key|both [--churn F] [--seed X]
          [--json PATH] [--keystore rocksdb|memory] [--records store|count|sample] [--preload]
          [--no-reprovide] [--placement-sample N] [--findable-sample N]
          [--build fast|realistic] [--silent F] [--slow F] [--loss P] [--omit F]
          [--ingest R] [--workers W] [--interval-hours H] [--plot DIR]
          [--batch-share F]
                             a provide and a reprovide cycle from one node, measured
                             (`cargo xtask sim provide --help` lists every option)
  memory [--servers S] [--keys N,N,...] [--seed X] [--json PATH] [-- PROVIDE OPTIONS]
                             the provider's own peak memory (heap and RocksDB) at each key
                             count (default 3 M, 10 M, 30 M on 10,000 servers), side by side
";

/// Runs `cargo xtask sim …` with the arguments after `sim`.
pub(crate) fn run(args: &[&str]) -> Result<()> {
    match args.split_first() {
        Some((&"lookup", rest)) => simulator(&[], "lookup", rest),
        Some((&experiment @ ("provide" | "memory"), rest)) => {
            // RocksDB is the provider's keystore: its build needs libclang.
            crate::setup::ensure(true)?;
            simulator(&["--features", "rocksdb"], experiment, rest)
        }
        Some((&("help" | "--help" | "-h"), _)) => {
            eprint!("{USAGE}");
            Ok(())
        }
        Some((other, _)) => {
            eprint!("{USAGE}");
            bail!("unknown sim experiment {other:?}")
        }
        None => {
            eprint!("{USAGE}");
            bail!("no sim experiment given")
        }
    }
}

/// `cargo run --release` of the `dht-sim` binary with `features`, running `experiment`.
fn simulator(features: &[&str], experiment: &str, rest: &[&str]) -> Result<()> {
    let mut all = vec!["run", "--release", "--locked", "-p", "dht-sim"];
    all.extend_from_slice(features);
    all.extend_from_slice(&["--bin", "dht-sim", "--", experiment]);
    all.extend_from_slice(rest);
    crate::cargo(&all)
}
