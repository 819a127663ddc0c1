//! Project automation for the amino-dht workspace: `cargo xtask <command>`.
//!
//! Commands:
//! - `setup`: detect and install what a fresh machine lacks (libclang for RocksDB's bindings).
//! - `ci`: setup, fmt check, clippy, tests, docs and tidy; ends with a one-line summary.
//! - `tidy`: the architecture invariants of `docs/architecture.md`, checked.
//! - `fuzz <target> [--seconds N]`: run a cargo-fuzz target, installing cargo-fuzz if missing.
//! - `sim <experiment> [args…]`: the simulator's experiments, built optimised.
//! - `devnet [args…]`: the main job of the README.
//! - `package`: `cargo package` of every publishable crate, its metadata and README checked.
//! - `bench <bench> [args…]`: benchmarks; `bench devnet` compares the sweep with libp2p-kad,
//!   `bench go` with go-libp2p-kad-dht's SweepingProvider.
//! - `interop [test filter…]`: the interop tests against go-libp2p-kad-dht (needs Go).

// A command-line tool: its output is its interface.
#![allow(clippy::print_stdout)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

mod bench;
mod ci;
mod fuzz;
mod interop;
mod package;
mod setup;
mod sim;
mod tidy;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  setup                      install what a fresh machine lacks (libclang, a C++ compiler)
  ci [--no-install]          fmt, clippy, tests, docs, tidy and interop (where Go is
                             installed), as CI runs them
  tidy                       check the architecture invariants of docs/architecture.md
  fuzz <target> [--seconds N]
                             run a fuzz target of crates/*/fuzz (default 60 s)
  sim <experiment> [args...] run the simulator (`cargo xtask sim help` lists experiments)
  devnet [args...]           the README's main job: a local network that provides and finds content
  package                    package every publishable crate and check its metadata and README
  bench <bench> [args...]    benchmarks: `devnet` (the sweep against libp2p-kad on a local
                             network), `go` (the sweep beside go-libp2p-kad-dht's
                             SweepingProvider; needs Go), `criterion` (every criterion
                             bench); `bench help`
  interop [filter...]        build the Go peer of interop/go and run the interop tests
                             against go-libp2p-kad-dht (needs Go)
";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        bail!("no command given");
    };
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    match cmd.as_str() {
        "setup" => setup::ensure(true),
        "ci" => ci::run_all(!rest.contains(&"--no-install")),
        "tidy" => {
            let problems = tidy::check(&workspace_root())?;
            if problems.is_empty() {
                eprintln!("tidy: all invariants hold");
                Ok(())
            } else {
                for p in &problems {
                    eprintln!("tidy: {p}");
                }
                bail!("tidy found {} problem(s)", problems.len())
            }
        }
        "fuzz" => fuzz::run_target(&rest),
        "sim" => sim::run(&rest),
        "devnet" => devnet(&rest),
        "package" => package::ci_step().map(drop),
        "bench" => bench::run(&rest),
        "interop" => {
            setup::ensure(true)?;
            interop::run_tests(&rest)
        }
        "help" | "--help" | "-h" => {
            eprint!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("{USAGE}");
            bail!("unknown command {other:?}")
        }
    }
}

/// The main job: `dht-node devnet`, optimised, after the system set-up.
/// The README's main job: `dht-node devnet`, built as `cargo xtask ci` builds, so that the two
/// share one RocksDB build (its C++ takes most of a fresh machine's first build).
///
/// RocksDB's build script runs bindgen; `cargo build -p dht-node` (and `--release`) build
/// bindgen's dependencies with other profile settings than `cargo test --workspace` does
/// (bitflags, shared with normal crates, is merged with them or not depending on which
/// targets are selected), and then RocksDB's C++ is compiled again. With its test targets
/// selected, the dev build of dht-node makes the same RocksDB unit as ci's clippy, test and
/// doc steps (checked with `cargo +nightly … --unit-graph -Z unstable-options`).
fn devnet(args: &[&str]) -> Result<()> {
    setup::ensure(true)?;
    cargo(&[
        "build",
        "--locked",
        "-p",
        "dht-node",
        "--all-features",
        "--tests",
    ])?;
    let bin = target_dir()
        .join("debug")
        .join(format!("dht-node{}", std::env::consts::EXE_SUFFIX));
    run(Command::new(bin).arg("devnet").args(args))
}

/// The cargo target directory: `CARGO_TARGET_DIR`, else `target` in the workspace root.
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// The workspace root: the parent of this crate's manifest directory as `cargo run` reports it
/// at run time, else the nearest ancestor of the current directory whose `Cargo.toml` declares
/// `[workspace]`.
///
/// Never the compile-time path: one target directory serves several clones (CI reuses a cache
/// outside the clone), and a binary built in one clone must not run its checks in another.
pub(crate) fn workspace_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR")
        && let Some(parent) = Path::new(&dir).parent()
    {
        return parent.to_path_buf();
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    cwd.ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|manifest| manifest.contains("[workspace]"))
        })
        .map(Path::to_path_buf)
        .unwrap_or(cwd)
}

/// The cargo that runs this xtask.
pub(crate) fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// Runs cargo with `args` in the workspace root; fails on a non-zero exit.
pub(crate) fn cargo(args: &[&str]) -> Result<()> {
    run(Command::new(cargo_bin()).args(args))
}

/// Runs a command in the workspace root with inherited output; fails on a non-zero exit.
///
/// The command does not inherit the variables `cargo run` set for xtask itself
/// (`CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`, ...): build scripts such as ring's declare
/// `rerun-if-env-changed` on them, so a cargo started with xtask's values would rebuild ring,
/// noise and everything above them whenever one switches between `cargo xtask …` and plain
/// cargo.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    cmd.current_dir(workspace_root());
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_PKG_")
            || matches!(
                key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_BIN_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "OUT_DIR"
            )
        {
            cmd.env_remove(key);
        }
    }
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
