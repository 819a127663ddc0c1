//! `cargo xtask bench <bench> [args…]`: the workspace's benchmarks, built optimised.
//!
//! - `devnet [--nodes N] [--keys K] [--kad-keys K2] [--json PATH] [...]`: the sweeping
//!   provider on a devnet of N real nodes on 127.0.0.1 against the same network built from
//!   rust-libp2p's libp2p-kad, providing one key at a time, in one run; prints wall time, CPU
//!   time, requests and keys per second of both and their ratio. Runs
//!   `cargo bench -p dht-node --bench devnet -- …`; `cargo xtask bench devnet --help` lists
//!   every option.
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
