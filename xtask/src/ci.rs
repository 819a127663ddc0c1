//! `cargo xtask ci`: every check CI runs, in order, with a one-line summary at the end.

use std::{process::Command, time::Instant};

use anyhow::{Result, bail};

use crate::{cargo_bin, interop, package, run, setup, tidy, workspace_root};

/// One named check: `Ok(true)` when it ran and passed, `Ok(false)` when it was skipped.
type Step = Box<dyn Fn() -> Result<bool>>;

/// A step that always runs.
fn always(f: impl Fn() -> Result<()> + 'static) -> Step {
    Box::new(move || f().map(|()| true))
}

/// Runs every step even when an earlier one fails, so one run shows every problem.
pub(crate) fn run_all(install: bool) -> Result<()> {
    setup::ensure(install)?;
    let nextest = Command::new(cargo_bin())
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);

    let mut steps: Vec<(&str, Step)> = vec![
        (
            "fmt",
            always(|| cargo(&["fmt", "--all", "--", "--check"], &[])),
        ),
        (
            "clippy",
            always(|| {
                cargo(
                    &[
                        "clippy",
                        "--workspace",
                        "--all-targets",
                        "--all-features",
                        "--locked",
                        "--",
                        "-D",
                        "warnings",
                    ],
                    &[],
                )
            }),
        ),
    ];
    if nextest {
        steps.push((
            "test",
            always(|| {
                cargo(
                    &[
                        "nextest",
                        "run",
                        "--workspace",
                        "--all-features",
                        "--locked",
                    ],
                    &[],
                )?;
                // nextest does not run doctests.
                cargo(
                    &["test", "--workspace", "--all-features", "--locked", "--doc"],
                    &[],
                )
            }),
        ));
    } else {
        steps.push((
            "test",
            // Every test binary runs even when an earlier one fails, so one run shows every
            // failing test (as nextest does by default).
            always(|| {
                cargo(
                    &[
                        "test",
                        "--workspace",
                        "--all-features",
                        "--locked",
                        "--no-fail-fast",
                    ],
                    &[],
                )
            }),
        ));
    }
    steps.push((
        "doc",
        always(|| {
            cargo(
                &[
                    "doc",
                    "--workspace",
                    "--no-deps",
                    "--all-features",
                    "--locked",
                ],
                &[("RUSTDOCFLAGS", "-Dwarnings")],
            )
        }),
    ));
    steps.push((
        "tidy",
        always(|| {
            let problems = tidy::check(&workspace_root())?;
            for p in &problems {
                eprintln!("tidy: {p}");
            }
            if problems.is_empty() {
                Ok(())
            } else {
                bail!("{} problem(s)", problems.len())
            }
        }),
    ));

    // Every publishable crate packages, with its metadata and a README docs.rs renders.
    steps.push(("package", Box::new(package::ci_step)));
    // Against go-libp2p-kad-dht, where Go is installed (see `interop`).
    steps.push(("interop", Box::new(interop::ci_step)));

    let mut passed = Vec::new();
    let mut skipped = Vec::new();
    let mut failed = Vec::new();
    for (name, step) in &steps {
        eprintln!("==> ci: {name}");
        let start = Instant::now();
        match step() {
            Ok(true) => {
                eprintln!("==> ci: {name} passed in {:.0?}", start.elapsed());
                passed.push(*name);
            }
            Ok(false) => {
                eprintln!("==> ci: {name} SKIPPED");
                skipped.push(*name);
            }
            Err(e) => {
                eprintln!("==> ci: {name} FAILED in {:.0?}: {e:#}", start.elapsed());
                failed.push(*name);
            }
        }
    }
    eprintln!(
        "ci steps passed: [{}]; skipped: [{}]; failed: [{}]",
        passed.join(" "),
        skipped.join(" "),
        failed.join(" ")
    );
    // The plain closing line CI reads.
    println!(
        "ci: {} passed, {} skipped ({}), {} failed",
        passed.len(),
        skipped.len(),
        skipped.join(", "),
        failed.len()
    );
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("ci failed: {}", failed.join(", "))
    }
}

fn cargo(args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let mut cmd = Command::new(cargo_bin());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run(&mut cmd)
}
