//! `cargo xtask fuzz <target> [--seconds N]`: runs a cargo-fuzz target.
//!
//! Fuzz targets live in `crates/<crate>/fuzz/fuzz_targets/<target>.rs`. cargo-fuzz needs
//! nightly-only compiler flags; with only the stable toolchain, `RUSTC_BOOTSTRAP=1` enables them.

use std::{path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

use crate::{cargo_bin, run, workspace_root};

pub(crate) fn run_target(args: &[&str]) -> Result<()> {
    let mut target = None;
    let mut seconds: u64 = 60;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--seconds" => {
                seconds = it
                    .next()
                    .context("--seconds needs a number")?
                    .parse()
                    .context("--seconds needs a whole number")?;
            }
            other if target.is_none() && !other.starts_with('-') => target = Some(other),
            other => bail!("unexpected argument {other:?}"),
        }
    }
    let targets = list_targets();
    let Some(target) = target else {
        bail!(
            "usage: cargo xtask fuzz <target> [--seconds N]; targets: {}",
            names(&targets)
        );
    };
    let Some((fuzz_dir, _)) = targets.iter().find(|(_, name)| name == target) else {
        bail!("no fuzz target {target:?}; targets: {}", names(&targets));
    };
    ensure_cargo_fuzz()?;
    eprintln!("fuzz: running {target} for {seconds} s");
    run(Command::new(cargo_bin())
        .env("RUSTC_BOOTSTRAP", "1")
        .arg("fuzz")
        .arg("run")
        .arg("--fuzz-dir")
        .arg(fuzz_dir)
        .arg(target)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1"))
}

fn names(targets: &[(PathBuf, String)]) -> String {
    targets
        .iter()
        .map(|(_, n)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every (fuzz dir, target name) under `crates/*/fuzz/fuzz_targets`.
fn list_targets() -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let Ok(crates) = std::fs::read_dir(workspace_root().join("crates")) else {
        return out;
    };
    for c in crates.flatten() {
        let dir = c.path().join("fuzz");
        if let Ok(files) = std::fs::read_dir(dir.join("fuzz_targets")) {
            for f in files.flatten() {
                let p = f.path();
                if p.extension().is_some_and(|e| e == "rs")
                    && let Some(stem) = p.file_stem()
                {
                    out.push((dir.clone(), stem.to_string_lossy().into_owned()));
                }
            }
        }
    }
    out.sort();
    out
}

fn ensure_cargo_fuzz() -> Result<()> {
    let present = Command::new(cargo_bin())
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !present {
        eprintln!("fuzz: cargo-fuzz is missing; installing it with cargo install");
        run(Command::new(cargo_bin()).args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}
