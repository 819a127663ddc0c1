//! `docs/config.md` against the code: every key of [`RunConfig`] has a row and no other key
//! does, every flag the table names is one `dht-node run` takes, every default is what
//! [`RunConfig::resolve`] applies, and the examples parse.
#![allow(clippy::unwrap_used)]

use std::{collections::BTreeSet, process::Command};

use dht_node::config::{RunConfig, default_data_dir, parse_duration};
use dht_provider::{LegacyConfig, SweepConfig};

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/config.md");
    std::fs::read_to_string(path).unwrap()
}

/// The table's rows: key, flag cell, default cell.
fn rows(doc: &str) -> Vec<(String, String, String)> {
    doc.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 4, "a row has 4 cells: {l}");
            (
                cells[0].trim_matches('`').to_owned(),
                cells[1].to_owned(),
                cells[2].to_owned(),
            )
        })
        .collect()
}

/// The ```toml blocks of the page.
fn toml_blocks(doc: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line.trim()) {
            (None, "```toml") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// What a configuration resolves to, comparable.
fn resolved(config: &RunConfig) -> String {
    format!("{:?}", config.resolve().unwrap())
}

#[test]
fn every_key_is_documented_with_its_default() {
    let doc = doc();
    let rows = rows(&doc);
    let documented: BTreeSet<String> = rows.iter().map(|r| r.0.clone()).collect();
    assert_eq!(documented.len(), rows.len(), "a key listed twice");
    let serde_json::Value::Object(fields) = serde_json::to_value(RunConfig::default()).unwrap()
    else {
        panic!("RunConfig serializes as a map");
    };
    let keys: BTreeSet<String> = fields.keys().cloned().collect();
    assert_eq!(
        documented, keys,
        "docs/config.md lists exactly RunConfig's keys"
    );

    let default = resolved(&RunConfig::default());
    for (key, _, cell) in &rows {
        match key.as_str() {
            // Written out below the table.
            "bootstrap" => assert!(cell.contains("Amino bootstrap peers"), "{cell}"),
            "data-dir" => {
                let dir = default_data_dir();
                assert!(dir.is_absolute() && dir.ends_with("dht-node"));
                assert!(
                    cell.contains("dht-node") && cell.contains("XDG_DATA_HOME"),
                    "{cell}"
                );
            }
            "api-token-file" => {
                let settings = RunConfig::default().resolve().unwrap();
                assert_eq!(
                    settings.api_token_file,
                    settings.data_dir.join(dht_node::api::TOKEN_FILE)
                );
                assert!(cell.contains(dht_node::api::TOKEN_FILE), "{cell}");
            }
            // The providers' own defaults (the node leaves them unset).
            "workers" => {
                let sweep = SweepConfig::default().workers;
                let per_key = LegacyConfig::default().parallelism;
                assert_eq!(cell, &format!("`{sweep}` (sweep), `{per_key}` (per-key)"));
            }
            "reprovide-interval" => {
                let value = cell.trim_matches('`').trim_matches('"');
                assert_eq!(
                    parse_duration(value).unwrap(),
                    SweepConfig::default().interval
                );
                assert_eq!(
                    LegacyConfig::default().interval,
                    SweepConfig::default().interval
                );
            }
            _ => {
                // A TOML value: setting it changes nothing.
                let value = cell
                    .strip_prefix('`')
                    .and_then(|c| c.strip_suffix('`'))
                    .unwrap_or_else(|| panic!("{key}: the default is not a `value`: {cell}"));
                let config = RunConfig::from_toml(&format!("{key} = {value}"))
                    .unwrap_or_else(|e| panic!("{key} = {value}: {e}"));
                assert_eq!(
                    resolved(&config),
                    default,
                    "{key}: the default is not {value}"
                );
            }
        }
    }

    // The bootstrap peers below the table are the default ones, and the example is valid.
    let blocks = toml_blocks(&doc);
    assert_eq!(blocks.len(), 2, "the bootstrap list and the example");
    let bootstrap = RunConfig::from_toml(&blocks[0]).unwrap();
    assert!(bootstrap.bootstrap.is_some());
    assert_eq!(resolved(&bootstrap), default);
    let example = RunConfig::from_toml(&blocks[1]).unwrap();
    example.resolve().unwrap();
}

#[test]
fn every_flag_in_the_table_is_a_flag_of_run() {
    let out = Command::new(env!("CARGO_BIN_EXE_dht-node"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let global = Command::new(env!("CARGO_BIN_EXE_dht-node"))
        .arg("--help")
        .output()
        .unwrap();
    let help = help + &String::from_utf8(global.stdout).unwrap();
    for (key, flags, _) in rows(&doc()) {
        // A key set in the file only.
        if flags == "—" {
            continue;
        }
        for flag in flags.split(", ") {
            let flag = flag.trim_matches('`');
            assert!(flag.starts_with("--"), "{key}: {flag}");
            assert!(
                help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                "{key}: {flag} is not a flag of dht-node run:\n{help}"
            );
        }
    }
}

#[test]
fn the_systemd_unit_runs_the_documented_config() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/systemd/dht-node.service"
    ))
    .unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    assert!(
        exec.contains(" run ") && exec.contains("--config /etc/dht-node/config.toml"),
        "{exec}"
    );
    for section in ["[Unit]", "[Service]", "[Install]"] {
        assert!(unit.contains(section), "{section}");
    }
    // The unit's data directory is the one its StateDirectory gives.
    assert!(unit.contains("StateDirectory=dht-node"));
    assert!(exec.contains("--data-dir /var/lib/dht-node"), "{exec}");
    // SIGTERM is how the node saves its state: systemd's default stop signal, kept.
    assert!(!unit.contains("KillSignal=SIGKILL"));
}
