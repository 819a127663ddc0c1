//! `cargo xtask tidy`: the architecture invariants of `docs/architecture.md`, checked.
//!
//! Package facts come from `cargo metadata`. Transitive dependencies come from `cargo tree -p`,
//! which resolves features for that one crate as a user depending on it alone would get them
//! (`cargo metadata` unifies features across the whole workspace, which would hide a crate
//! that pulls in rocksdb only because a sibling enables it).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::cargo_bin;

/// Crates that must never depend, even transitively, on the listed packages.
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "dht-proto",
        &["tokio", "rocksdb", "librocksdb-sys", "libp2p-swarm"],
    ),
    (
        "dht-routing-table",
        &["tokio", "rocksdb", "librocksdb-sys", "libp2p-swarm"],
    ),
    ("dht-provider-store", &["libp2p-swarm"]),
    (
        "dht-handler",
        &["rocksdb", "librocksdb-sys", "libp2p-swarm"],
    ),
    (
        "dht-routing",
        &["rocksdb", "librocksdb-sys", "libp2p-swarm"],
    ),
    (
        "dht-provider",
        &["rocksdb", "librocksdb-sys", "libp2p-swarm"],
    ),
    ("dht-sim", &["rocksdb", "librocksdb-sys", "libp2p-swarm"]),
    (
        "dht-test-kit",
        &["rocksdb", "librocksdb-sys", "libp2p-swarm"],
    ),
    ("dht-transport", &["rocksdb", "librocksdb-sys"]),
];

/// Packages only one crate may name as a direct dependency.
const SOLE_USER: &[(&str, &str)] = &[("rocksdb", "dht-provider-store")];

/// The sans-IO state machines: they take `now` as an argument and read no clock
/// (docs/architecture.md, "Sans-IO core, async shell").
const STATE_MACHINES: &[&str] = &[
    "crates/dht-routing/src/query.rs",
    "crates/dht-provider/src/explore.rs",
    "crates/dht-provider/src/jobs.rs",
    "crates/dht-provider/src/schedule.rs",
    "crates/dht-provider/src/sweep/assign.rs",
    "crates/dht-provider/src/sweep/batch.rs",
];

/// The files that may implement dht-routing's `Network` (docs/architecture.md,
/// "Invariants"): the trait's own forwarding impls, the libp2p transport and dht-sim's
/// in-memory network (the one network of the tests). Elsewhere a `Network` must be a
/// decorator over dht-sim's: its type holds a [`DECORATED`] field.
const NETWORKS: &[&str] = &[
    "crates/dht-routing/src/network.rs",
    "crates/dht-transport/src/network.rs",
    "crates/dht-sim/src/network.rs",
];

/// The field a decorator over dht-sim's network holds: what it forwards to.
const DECORATED: &str = ": NodeNetwork,";

/// What implementing `Network` looks like in source.
const NETWORK_IMPL: &str = " Network for ";

/// What reading a clock looks like in source.
const CLOCK_READS: &[&str] = &[
    "Instant::now",
    "SystemTime::now",
    "SystemClock",
    "UNIX_EPOCH",
    "time::sleep",
];

/// The directories the code map of docs/architecture.md covers, by the heading it names
/// them with, and the file extension it lists there.
const CODE_MAP: &[(&str, &str, &str)] =
    &[("xtask", "xtask", "rs"), ("interop/go", "interop/go", "go")];

/// Every problem found; empty when all invariants hold.
pub(crate) fn check(root: &Path) -> Result<Vec<String>> {
    let meta = metadata(root)?;
    let packages = meta["packages"]
        .as_array()
        .context("metadata without packages")?;
    let mut problems = Vec::new();
    let names: BTreeSet<String> = packages
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    let unpublished: BTreeSet<String> = packages
        .iter()
        .filter(|p| is_unpublished(p))
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();

    for p in packages {
        let name = p["name"].as_str().unwrap_or("?");
        let manifest = PathBuf::from(p["manifest_path"].as_str().unwrap_or_default());
        let dir = manifest.parent().map(Path::to_path_buf).unwrap_or_default();
        problems.extend(manifest_problems(name, p, &dir, &names, &unpublished));
        for dep in p["dependencies"].as_array().into_iter().flatten() {
            let dep_name = dep["name"].as_str().unwrap_or("?");
            let kind = dep["kind"].as_str();
            for (pkg, sole) in SOLE_USER {
                if dep_name == *pkg && name != *sole && kind.is_none() {
                    problems.push(format!(
                        "{name} depends on {pkg} directly; only {sole} may (docs/architecture.md)"
                    ));
                }
            }
        }
    }

    for (krate, _) in FORBIDDEN {
        if names.contains(*krate) {
            let deps = tree(root, krate)?;
            problems.extend(forbidden_violations(krate, &deps));
        }
    }

    let arch = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap_or_default();
    for name in &names {
        if !arch.contains(&format!("`{name}`")) {
            problems.push(format!(
                "docs/architecture.md does not describe the crate `{name}`"
            ));
        }
    }

    let mut dirs: Vec<(String, PathBuf, &str)> = names
        .iter()
        .filter(|n| n.starts_with("dht-"))
        .map(|n| (n.clone(), root.join("crates").join(n), "rs"))
        .collect();
    dirs.extend(
        CODE_MAP
            .iter()
            .map(|(heading, dir, ext)| ((*heading).to_owned(), root.join(dir), *ext)),
    );
    let mut files = std::collections::BTreeMap::new();
    for (heading, dir, ext) in &dirs {
        files.insert(heading.clone(), files_under(dir, ext)?);
    }
    problems.extend(code_map_problems(&arch, &files));

    for file in STATE_MACHINES {
        let src = std::fs::read_to_string(root.join(file))
            .with_context(|| format!("reading {file}, a state machine of docs/architecture.md"))?;
        problems.extend(clock_reads(file, &src));
    }
    for (heading, dir, ext) in &dirs {
        if *ext != "rs" {
            continue;
        }
        let base = dir.strip_prefix(root).unwrap_or(dir);
        for rel in files.get(heading).into_iter().flatten() {
            let file = base.join(rel).to_string_lossy().replace('\\', "/");
            let src = std::fs::read_to_string(root.join(&file))
                .with_context(|| format!("reading {file}"))?;
            problems.extend(network_impls(&file, &src));
        }
    }
    Ok(problems)
}

/// A `Network` implemented in `file` outside [`NETWORKS`] by a file that decorates no
/// `NodeNetwork`: a second in-memory network.
fn network_impls(file: &str, src: &str) -> Vec<String> {
    if NETWORKS.contains(&file) || src.contains(DECORATED) {
        return Vec::new();
    }
    src.lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.trim_start();
            l.starts_with("impl") && l.contains(NETWORK_IMPL)
        })
        .map(|(i, _)| {
            format!(
                "{file}:{}: implements Network; tests use dht-sim's network (decorate a \
                 `NodeNetwork` rather than write a network)",
                i + 1
            )
        })
        .collect()
}

/// Every file with extension `ext` below `dir`, relative to it (`src/lib.rs`), leaving out
/// build output (`target`) and hidden directories.
fn files_under(dir: &Path, ext: &str) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    stack.push(path);
                }
            } else if path.extension().is_some_and(|e| e == ext) {
                let rel = path.strip_prefix(dir).unwrap_or(&path);
                out.insert(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    Ok(out)
}

/// The code map of `arch` (its `## Code map` section: a `### `name`` heading per crate, a
/// ``- `path`: …`` line per file) against the files that exist, by heading.
fn code_map_problems(
    arch: &str,
    files: &std::collections::BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let mut named: std::collections::BTreeMap<String, BTreeSet<String>> = Default::default();
    let mut section: Option<String> = None;
    let mut in_map = false;
    for line in arch.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            in_map = h.trim() == "Code map";
            section = None;
        } else if let Some(h) = line.strip_prefix("### ").filter(|_| in_map) {
            section = Some(h.trim().trim_matches('`').to_owned());
        } else if let (Some(sec), Some(rest)) = (&section, line.strip_prefix("- `"))
            && let Some((path, _)) = rest.split_once('`')
        {
            named
                .entry(sec.clone())
                .or_default()
                .insert(path.to_owned());
        }
    }
    let mut out = Vec::new();
    for (heading, existing) in files {
        let listed = named.get(heading).cloned().unwrap_or_default();
        for f in existing.difference(&listed) {
            out.push(format!(
                "docs/architecture.md's code map does not name {heading}: {f}"
            ));
        }
        for f in listed.difference(existing) {
            out.push(format!(
                "docs/architecture.md's code map names {heading}: {f}, which does not exist"
            ));
        }
    }
    for heading in named.keys().filter(|h| !files.contains_key(*h)) {
        out.push(format!(
            "docs/architecture.md's code map has a section `{heading}` for no crate"
        ));
    }
    out
}

/// The lines of a state machine's source that read a clock (comments aside).
fn clock_reads(file: &str, src: &str) -> Vec<String> {
    src.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .filter_map(|(i, l)| {
            CLOCK_READS.iter().find(|c| l.contains(**c)).map(|c| {
                format!(
                    "{file}:{}: a state machine reads a clock ({c}); take `now` as an argument",
                    i + 1
                )
            })
        })
        .collect()
}

/// The forbidden packages among `deps` (the transitive normal dependencies of `krate`).
fn forbidden_violations(krate: &str, deps: &BTreeSet<String>) -> Vec<String> {
    FORBIDDEN
        .iter()
        .filter(|(k, _)| *k == krate)
        .flat_map(|(_, banned)| banned.iter())
        .filter(|b| deps.contains(**b))
        .map(|b| format!("{krate} depends on {b}, which docs/architecture.md forbids"))
        .collect()
}

fn is_unpublished(p: &Value) -> bool {
    p["publish"].as_array().is_some_and(Vec::is_empty)
}

fn manifest_problems(
    name: &str,
    p: &Value,
    dir: &Path,
    workspace: &BTreeSet<String>,
    unpublished: &BTreeSet<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    let toml = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap_or_default();
    if !toml.contains("[lints]") || !toml.contains("workspace = true") {
        out.push(format!(
            "{name}: Cargo.toml lacks `[lints] workspace = true`"
        ));
    }
    if is_unpublished(p) {
        return out;
    }
    if !dir.join("README.md").is_file() {
        out.push(format!("{name}: no README.md"));
    }
    for field in ["description", "license", "repository"] {
        if p[field].as_str().is_none_or(str::is_empty) {
            out.push(format!("{name}: Cargo.toml lacks `{field}`"));
        }
    }
    let lib = dir.join("src/lib.rs");
    if lib.is_file() {
        let src = std::fs::read_to_string(&lib).unwrap_or_default();
        if !src.contains("#![deny(missing_docs)]") {
            out.push(format!("{name}: src/lib.rs lacks #![deny(missing_docs)]"));
        }
        if !src.contains("#![doc = include_str!(\"../README.md\")]") {
            out.push(format!(
                "{name}: src/lib.rs does not take its crate docs from README.md"
            ));
        }
    }
    for dep in p["dependencies"].as_array().into_iter().flatten() {
        let dep_name = dep["name"].as_str().unwrap_or("?");
        let dev = dep["kind"].as_str() == Some("dev");
        if !workspace.contains(dep_name) || dev {
            continue;
        }
        if unpublished.contains(dep_name) {
            out.push(format!(
                "{name} (published) depends on {dep_name}, which is not published"
            ));
        } else if dep["req"].as_str() == Some("*") {
            out.push(format!(
                "{name} depends on {dep_name} without a version; it could not be published"
            ));
        }
    }
    out
}

fn metadata(root: &Path) -> Result<Value> {
    let out = Command::new(cargo_bin())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()
        .context("could not run cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The names of every package `krate` depends on at run time, with its default features only.
fn tree(root: &Path, krate: &str) -> Result<BTreeSet<String>> {
    let out = Command::new(cargo_bin())
        .args([
            "tree", "-p", krate, "-e", "normal", "--prefix", "none", "--format", "{p}",
        ])
        .current_dir(root)
        .output()
        .context("could not run cargo tree")?;
    if !out.status.success() {
        bail!(
            "cargo tree -p {krate} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace_root;

    /// The invariants hold for the workspace as it is.
    #[test]
    fn workspace_is_tidy() {
        let problems = check(&workspace_root()).unwrap();
        assert!(problems.is_empty(), "{problems:#?}");
    }

    /// The check fails when a forbidden dependency appears in a crate's tree.
    #[test]
    fn forbidden_dependency_is_caught() {
        let root = workspace_root();
        let mut deps = tree(&root, "dht-proto").unwrap();
        assert!(deps.contains("dht-proto") && deps.contains("multihash"));
        assert!(forbidden_violations("dht-proto", &deps).is_empty());
        deps.insert("rocksdb".to_owned());
        deps.insert("libp2p-swarm".to_owned());
        let found = forbidden_violations("dht-proto", &deps);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].contains("dht-proto depends on rocksdb"),
            "{found:?}"
        );
    }

    /// A published crate naming an internal dependency without a version is reported.
    #[test]
    fn unversioned_internal_dependency_is_caught() {
        let p: Value = serde_json::json!({
            "name": "dht-x", "description": "d", "license": "MIT", "repository": "r",
            "publish": null,
            "dependencies": [
                {"name": "dht-proto", "kind": null, "req": "*"},
                {"name": "dht-sim", "kind": null, "req": "*"},
                {"name": "dht-sim", "kind": "dev", "req": "*"}
            ]
        });
        let ws: BTreeSet<String> = ["dht-proto", "dht-sim"].map(String::from).into();
        let unpublished: BTreeSet<String> = ["dht-sim".to_owned()].into();
        let dir = workspace_root().join("crates/dht-proto");
        let found = manifest_problems("dht-x", &p, &dir, &ws, &unpublished);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("without a version"));
        assert!(found[1].contains("not published"));
    }

    /// A network written outside dht-sim is reported; one in a doc example, in the listed
    /// files or decorating dht-sim's network is not.
    #[test]
    fn a_second_network_is_caught() {
        let src = "struct Fake;\nimpl Network for Fake {\n}\n/// # impl Network for Doc {}\n";
        let decorator = "struct Lossy {\n    inner: NodeNetwork,\n}\nimpl Network for Lossy {\n}\n";
        assert!(network_impls("crates/dht-x/tests/lossy.rs", decorator).is_empty());
        let found = network_impls("crates/dht-x/tests/fake.rs", src);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("crates/dht-x/tests/fake.rs:2:"),
            "{found:?}"
        );
        assert!(network_impls("crates/dht-sim/src/network.rs", src).is_empty());
    }

    /// A file the code map leaves out, and one it names that is gone, are both reported.
    #[test]
    fn code_map_gaps_are_caught() {
        let arch = "## Crates\n### `dht-x`\n- `src/old.rs`: not in the map\n\
                    ## Code map\n\n### `dht-x`\n\n- `src/lib.rs`: root.\n- `src/gone.rs`: old.\n\
                    ## Invariants\n- `src/main.rs`: not in the map either\n";
        let files = [(
            "dht-x".to_owned(),
            ["src/lib.rs", "src/new.rs"].map(String::from).into(),
        )]
        .into();
        let found = code_map_problems(arch, &files);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].contains("does not name dht-x: src/new.rs"),
            "{found:?}"
        );
        assert!(
            found[1].contains("src/gone.rs, which does not exist"),
            "{found:?}"
        );
    }

    /// A clock read in a state machine is reported; one in a comment is not.
    #[test]
    fn clock_read_in_a_state_machine_is_caught() {
        let src = "// Instant::now is not read here\nfn f() { let t = Instant::now(); }\n";
        let found = clock_reads("q.rs", src);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("q.rs:2:"), "{found:?}");
    }
}
