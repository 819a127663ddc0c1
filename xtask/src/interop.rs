//! `cargo xtask interop`: the interoperability tests against go-libp2p-kad-dht.
//!
//! Builds the Go peer of `interop/go` (`go build`, cached by Go's own build cache) into
//! `<target dir>/interop/kadpeers` and runs `cargo test -p dht-node --test go_interop` with
//! [`GO_PEER_ENV`] naming it. The tests are `#[ignore]`d in a plain `cargo test`, since
//! they need that binary; this command runs them with `--ignored`.
//!
//! Without Go on the `PATH` the command stops with a message naming what to install.
//! `cargo xtask ci` runs the same step where Go is present and says that it skipped it where
//! Go is absent, unless [`REQUIRE_GO_ENV`] is set to `1` (as `.ci/run` does), which turns the
//! skip into a failure.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{cargo_bin, run, target_dir, workspace_root};

/// The variable through which the tests find the Go peer's binary.
pub(crate) const GO_PEER_ENV: &str = "AMINO_GO_KADPEERS";

/// Set to `1`, a missing Go toolchain fails `cargo xtask ci` instead of skipping the step.
pub(crate) const REQUIRE_GO_ENV: &str = "AMINO_REQUIRE_GO";

/// What to install when `go` is missing.
const INSTALL_GO: &str = "The interop tests need Go (1.25.7 or newer, as interop/go/go.mod says; \
     an older Go 1.21+ fetches that toolchain itself) on the PATH: install it from \
     https://go.dev/dl/, e.g. `curl -sSfL https://go.dev/dl/go1.25.7.linux-amd64.tar.gz | \
     sudo tar -C /usr/local -xz` and add /usr/local/go/bin to PATH";

/// The version line of `go version`, or `None` when `go` cannot be run.
pub(crate) fn go_version() -> Option<String> {
    let out = Command::new("go").arg("version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether the CI run must fail rather than skip when Go is missing.
pub(crate) fn go_required() -> bool {
    std::env::var(REQUIRE_GO_ENV).is_ok_and(|v| v == "1")
}

/// Builds the Go peer; returns the path of its binary.
pub(crate) fn build_go_peer() -> Result<PathBuf> {
    let out = target_dir().join("interop").join("kadpeers");
    let src: &Path = &workspace_root().join("interop").join("go");
    eprintln!(
        "==> interop: go build {} -> {}",
        src.display(),
        out.display()
    );
    // `run` starts commands in the workspace root; `-C` moves go into the module.
    run(Command::new("go")
        .arg("-C")
        .arg(src)
        .args(["build", "-mod=readonly", "-o"])
        .arg(&out)
        .arg("."))
    .context("building the Go peer of interop/go")?;
    Ok(out)
}

/// Fails with what to install when `go` is missing; prints its version otherwise.
pub(crate) fn require_go() -> Result<()> {
    let Some(version) = go_version() else {
        bail!("`go` not found. {INSTALL_GO}");
    };
    eprintln!("==> interop: {version}");
    Ok(())
}

/// `cargo xtask interop [test filter…]`: builds the Go peer and runs the interop tests.
///
/// Arguments are passed to the test binary after `--ignored` (e.g. a test name filter).
pub(crate) fn run_tests(args: &[&str]) -> Result<()> {
    require_go()?;
    let binary = build_go_peer()?;
    let mut cmd = Command::new(cargo_bin());
    cmd.args([
        "test",
        "--locked",
        "-p",
        "dht-node",
        "--test",
        "go_interop",
        "--",
        "--ignored",
    ])
    .args(args)
    .env(GO_PEER_ENV, &binary);
    run(&mut cmd)
}

/// The `interop` step of `cargo xtask ci`: [`run_tests`] where Go is present (`Ok(true)`);
/// where it is absent, a plain skip message and `Ok(false)`, or an error when
/// [`go_required`].
pub(crate) fn ci_step() -> Result<bool> {
    if go_version().is_none() {
        if go_required() {
            bail!("{REQUIRE_GO_ENV}=1 and `go` not found. {INSTALL_GO}");
        }
        eprintln!("==> ci: interop SKIPPED: `go` not found; {INSTALL_GO}");
        return Ok(false);
    }
    run_tests(&[])?;
    Ok(true)
}
