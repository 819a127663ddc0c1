//! `cargo xtask ci`'s `package` step: every publishable crate packages (path dependencies
//! carry versions), has the metadata crates.io and docs.rs show, and a README that renders
//! there (no links to files of the repository, which neither site has).

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::{cargo_bin, run, workspace_root};

/// The metadata every published crate carries.
const REQUIRED: [&str; 6] = [
    "description",
    "license",
    "repository",
    "readme",
    "keywords",
    "categories",
];

/// Packages every publishable crate (`cargo package --no-verify`: a verifying build would
/// compile RocksDB once more, from the packaged copy), then checks their metadata and READMEs.
pub(crate) fn ci_step() -> Result<bool> {
    let root = workspace_root();
    let crates = publishable(&root)?;
    let mut args = vec!["package", "--no-verify", "--locked", "--allow-dirty"];
    for (name, _) in &crates {
        args.extend(["-p", name.as_str()]);
    }
    run(std::process::Command::new(cargo_bin()).args(&args))?;
    let problems: Vec<String> = crates
        .iter()
        .flat_map(|(name, package)| problems(name, package))
        .collect();
    for p in &problems {
        eprintln!("package: {p}");
    }
    if problems.is_empty() {
        Ok(true)
    } else {
        bail!("{} problem(s)", problems.len())
    }
}

/// The workspace's crates that may be published, with their `cargo metadata`.
fn publishable(root: &Path) -> Result<Vec<(String, serde_json::Value)>> {
    let out = std::process::Command::new(cargo_bin())
        .args(["metadata", "--format-version", "1", "--no-deps", "--locked"])
        .current_dir(root)
        .output()
        .context("cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        // `publish = false` is an empty list of registries.
        .filter(|p| p["publish"].as_array().is_none_or(|r| !r.is_empty()))
        .map(|p| (p["name"].as_str().unwrap_or_default().to_owned(), p.clone()))
        .collect())
}

/// What `package` lacks to be published.
fn problems(name: &str, package: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for field in REQUIRED {
        let value = &package[field];
        let empty = value.is_null()
            || value.as_str().is_some_and(str::is_empty)
            || value.as_array().is_some_and(Vec::is_empty);
        if empty {
            out.push(format!("{name}: no {field} in Cargo.toml"));
        }
    }
    // A dev-dependency without a version (dht-test-kit, unpublished) is dropped from the
    // published manifest by cargo; any other would break the published crate.
    for dep in package["dependencies"].as_array().into_iter().flatten() {
        let dev = dep["kind"].as_str() == Some("dev");
        if dep["path"].is_string() && dep["req"].as_str() == Some("*") && !dev {
            out.push(format!(
                "{name}: the path dependency {} has no version",
                dep["name"].as_str().unwrap_or("?")
            ));
        }
    }
    let manifest = package["manifest_path"].as_str().map(Path::new);
    if let (Some(dir), Some(readme)) = (manifest.and_then(Path::parent), package["readme"].as_str())
    {
        match std::fs::read_to_string(dir.join(readme)) {
            Ok(text) => out.extend(
                file_links(&text)
                    .into_iter()
                    .map(|l| format!("{name}: {readme} links to {l}, a repository file docs.rs does not have; link its URL")),
            ),
            Err(e) => out.push(format!("{name}: reading {readme}: {e}")),
        }
    }
    out
}

/// Markdown links of `text` to relative files (`](../x.md)`, `](docs/y)`): not URLs,
/// anchors, or rustdoc paths (`](crate::Type)`).
fn file_links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        let tail = &rest[at + 2..];
        let end = tail.find(')').unwrap_or(tail.len());
        let target = &tail[..end];
        let url =
            target.contains("://") || target.starts_with('#') || target.starts_with("mailto:");
        let rustdoc = !target.contains('/') && !target.contains('.') || target.contains("::");
        if !url && !rustdoc {
            links.push(target.to_owned());
        }
        rest = &tail[end..];
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_links_are_found_and_urls_and_rustdoc_paths_are_not() {
        let text = "[a](../../README.md) [b](https://x.org/y.md) [c](#part) \
                    [d](dht_routing_table::RoutingTable) [e](docs/config.md) [f](Self)";
        assert_eq!(file_links(text), ["../../README.md", "docs/config.md"]);
    }

    #[test]
    fn missing_metadata_and_versionless_path_dependencies_are_problems() {
        let package = serde_json::json!({
            "description": "x", "license": "MIT", "repository": "https://x",
            "readme": null, "keywords": [], "categories": ["network-programming"],
            "dependencies": [
                {"name": "dht-proto", "path": "/p", "req": "*"},
                {"name": "dht-test-kit", "path": "/k", "req": "*", "kind": "dev"},
            ],
        });
        let found = problems("demo", &package);
        assert_eq!(
            found,
            [
                "demo: no readme in Cargo.toml",
                "demo: no keywords in Cargo.toml",
                "demo: the path dependency dht-proto has no version",
            ]
        );
    }
}
