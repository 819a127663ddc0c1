//! The configuration of `dht-node run`: a TOML file, overridden by command-line flags.
//!
//! ```toml
//! data-dir = "/var/lib/dht-node"
//! listen = ["/ip4/0.0.0.0/tcp/4001"]
//! bootstrap = ["/ip4/192.0.2.7/tcp/4001/p2p/12D3KooWKnDdG3iXw9eTFijk3EWSunZcFi54Zka4wmtqtt6rPxc8"]
//! mode = "server"            # or "client"
//! reprovide-interval = "22h" # s, m, h or d
//! workers = 4
//! http = "127.0.0.1:5480"    # Delegated Routing (public), or "off"
//! api = "127.0.0.1:5481"     # management (token and Host checked), or "off"
//! api-hosts = ["dht.example.org"] # names its Host header may carry, besides IPs and localhost
//! api-token-file = "/var/lib/dht-node/api.token" # default: api.token in the data directory
//! strategy = "sweep"         # or "per-key"
//! store = "rocksdb"          # or "memory"
//! table = "kbucket"          # or "full"
//!
//! [rocksdb]                  # RocksDB sizing; defaults depend on the mode (see RocksSizes)
//! block-cache-mib = 64
//! write-buffer-mib = 256
//! provider-cache-mib = 64
//!
//! [kad]                      # the DHT protocols (see KadSettings)
//! provide-batch = true       # serve and send /amino-dht-rs/provide-batch/1.0.0
//! ```
//!
//! Every field is optional; [`RunConfig::merge`] lets flags override the file, and
//! [`RunConfig::resolve`] checks the values and fills in the defaults.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use dht_proto::{Multiaddr, PeerInfo};
use dht_provider_store::Config as StoreConfig;
use serde::{Deserialize, Serialize};

use crate::{
    api::{DEFAULT_API_ADDR, DEFAULT_HTTP_ADDR, TOKEN_FILE},
    builder::{amino_bootstrap_peers, parse_peers},
    transport::Mode,
};

/// The name of the default data directory, under the user's data directory.
pub const DATA_DIR_NAME: &str = "dht-node";

/// The default data directory, absolute: `$XDG_DATA_HOME/dht-node`, else
/// `~/.local/share/dht-node` (`~/Library/Application Support/dht-node` on macOS,
/// `%APPDATA%\dht-node` on Windows); relative to the working directory only when none of
/// these variables is set to an absolute path.
pub fn default_data_dir() -> PathBuf {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let base = if cfg!(windows) {
        absolute("APPDATA")
    } else if cfg!(target_os = "macos") {
        absolute("HOME").map(|h| h.join("Library").join("Application Support"))
    } else {
        absolute("XDG_DATA_HOME")
            .or_else(|| absolute("HOME").map(|h| h.join(".local").join("share")))
    };
    base.unwrap_or_default().join(DATA_DIR_NAME)
}

/// A configuration error: which setting and why.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct ConfigError {
    /// The setting (file key or flag).
    pub setting: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn err(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        reason: reason.into(),
    }
}

/// The settings of `dht-node run`, as the file and the flags give them (all optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RunConfig {
    /// Where the identity, the stores and the provider's state live.
    pub data_dir: Option<PathBuf>,
    /// Multiaddrs to listen on.
    pub listen: Option<Vec<String>>,
    /// Multiaddrs others reach this node at (a public address behind NAT or a proxy),
    /// announced by identify and in the node's own records besides the listen addresses.
    pub external_addrs: Option<Vec<String>>,
    /// Bootstrap peers (multiaddrs ending in `/p2p/<peer id>`); empty for none.
    pub bootstrap: Option<Vec<String>>,
    /// `server` or `client`.
    pub mode: Option<RunMode>,
    /// How often every key is reprovided (`22h`, `30m`, `90s`, `1d`).
    pub reprovide_interval: Option<String>,
    /// Provider workers (sweep) or keys provided at once (per-key).
    pub workers: Option<usize>,
    /// The routing listener's address (Delegated Routing V1), or `off`.
    pub http: Option<String>,
    /// The management listener's address, or `off`.
    pub api: Option<String>,
    /// Host names the management listener's `Host` header may carry, besides IP addresses
    /// and `localhost`.
    pub api_hosts: Option<Vec<String>>,
    /// The file that holds the management API's token (created when missing).
    pub api_token_file: Option<PathBuf>,
    /// `sweep` or `per-key`.
    pub strategy: Option<Strategy>,
    /// `rocksdb` or `memory`.
    pub store: Option<StoreKind>,
    /// `kbucket` or `full`.
    pub table: Option<TableKind>,
    /// RocksDB sizing (the `[rocksdb]` table); unset sizes take the mode's default.
    pub rocksdb: Option<RocksSizes>,
    /// Whether the per-IP limits (connections per IP and per /24 or /48, the request rate
    /// per IP) apply to loopback peers too (default `false`, so that a devnet of nodes on
    /// 127.0.0.1 works; on for a test of hostile peers on one machine).
    pub limit_loopback: Option<bool>,
    /// The DHT protocols' settings (the `[kad]` table).
    pub kad: Option<KadSettings>,
}

/// The DHT protocols' settings (the `[kad]` table of the file).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KadSettings {
    /// Whether the batched provide protocol (`/amino-dht-rs/provide-batch/1.0.0`) is served
    /// (and advertised, in server mode) and sent to the peers that advertise it (default
    /// `true`; see [`NodeBuilder::provide_batch`](crate::builder::NodeBuilder::provide_batch)).
    pub provide_batch: Option<bool>,
}

/// The memory RocksDB may take, in MiB (the `[rocksdb]` table of the file); each unset
/// size takes its mode's default.
///
/// A server stores the provider records and values of the network: its defaults are those
/// of [`StoreConfig::default`] (block cache 64 MiB, memtables 256 MiB, provider cache
/// 64 MiB). A client stores no records, only its own keystore, which the sweep reads one
/// region at a time: its defaults are [`StoreConfig::small`] (block cache 8 MiB, memtables
/// 16 MiB, provider cache 8 MiB).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RocksSizes {
    /// RocksDB's block cache ([`StoreConfig::block_cache_bytes`]).
    pub block_cache_mib: Option<usize>,
    /// RocksDB's memtable budget ([`StoreConfig::write_buffer_bytes`]).
    pub write_buffer_mib: Option<usize>,
    /// The LRU cache of provider lists ([`StoreConfig::cache_bytes`]; 0 turns it off).
    pub provider_cache_mib: Option<usize>,
    /// The disk the database may take before records other peers send are refused
    /// ([`StoreConfig::max_disk_bytes`]); unset for no quota.
    pub max_disk_mib: Option<u64>,
}

impl RocksSizes {
    /// The store configuration for `mode` with these sizes applied.
    ///
    /// # Errors
    /// [`ConfigError`] for a memtable budget under 1 MiB or a size beyond the address space.
    pub fn store_config(&self, mode: Mode) -> Result<StoreConfig, ConfigError> {
        let mib = |setting: &'static str, v: usize| {
            v.checked_mul(1 << 20)
                .ok_or_else(|| err(setting, format!("{v} MiB is out of range")))
        };
        let mut config = match mode {
            Mode::Server => StoreConfig::default(),
            Mode::Client => StoreConfig::small(),
        };
        if let Some(v) = self.block_cache_mib {
            config = config.with_block_cache_bytes(mib("rocksdb.block-cache-mib", v)?);
        }
        if let Some(v) = self.write_buffer_mib {
            if v == 0 {
                return Err(err("rocksdb.write-buffer-mib", "at least 1"));
            }
            config = config.with_write_buffer_bytes(mib("rocksdb.write-buffer-mib", v)?);
        }
        if let Some(v) = self.provider_cache_mib {
            config = config.with_cache_bytes(mib("rocksdb.provider-cache-mib", v)?);
        }
        if let Some(v) = self.max_disk_mib {
            if v == 0 {
                return Err(err("rocksdb.max-disk-mib", "at least 1"));
            }
            let bytes = v
                .checked_mul(1 << 20)
                .ok_or_else(|| err("rocksdb.max-disk-mib", format!("{v} MiB is out of range")))?;
            config = config.with_max_disk_bytes(Some(bytes));
        }
        Ok(config)
    }
}

/// Which routing table the node runs (`table`, `--table`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum TableKind {
    /// k-buckets, refreshed every 10 minutes.
    #[default]
    #[serde(rename = "kbucket")]
    #[cfg_attr(feature = "cli", value(name = "kbucket"))]
    KBucket,
    /// Every server, filled by a crawl every hour.
    Full,
}

/// Whether the node serves the DHT (`mode`, `--mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum RunMode {
    /// A DHT server: answers requests and is admitted to others' tables.
    #[default]
    Server,
    /// A client: asks, never answers.
    Client,
}

impl From<RunMode> for Mode {
    fn from(mode: RunMode) -> Mode {
        match mode {
            RunMode::Server => Mode::Server,
            RunMode::Client => Mode::Client,
        }
    }
}

/// How the node provides (`strategy`, `--strategy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Sweep the keyspace region by region (`SweepingProvider`): one exploration per region.
    #[default]
    Sweep,
    /// One DHT walk per key (`LegacyProvider`, the baseline).
    PerKey,
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Strategy::Sweep => "sweep",
            Strategy::PerKey => "per-key",
        })
    }
}

/// Where the stores live (`store`, `--store`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum StoreKind {
    /// RocksDB in the data directory.
    #[default]
    Rocksdb,
    /// In memory: gone when the process ends.
    Memory,
}

/// [`RunConfig`] checked, with defaults filled in.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Settings {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Listen addresses.
    pub listen: Vec<Multiaddr>,
    /// External addresses (none by default).
    pub external_addrs: Vec<Multiaddr>,
    /// Bootstrap peers.
    pub bootstrap: Vec<PeerInfo>,
    /// Server or client.
    pub mode: Mode,
    /// The reprovide interval, if set (else the provider's default, 22 h).
    pub reprovide_interval: Option<Duration>,
    /// Workers, if set.
    pub workers: Option<usize>,
    /// The routing listener's address, `None` for off.
    pub http: Option<SocketAddr>,
    /// The management listener's address, `None` for off.
    pub api: Option<SocketAddr>,
    /// Host names allowed on the management listener.
    pub api_hosts: Vec<String>,
    /// The management API's token file.
    pub api_token_file: PathBuf,
    /// How the node provides.
    pub strategy: Strategy,
    /// Where the stores live.
    pub store: StoreKind,
    /// RocksDB's settings (sizes by mode and `[rocksdb]`), when the stores are on RocksDB.
    pub rocksdb: StoreConfig,
    /// The routing table.
    pub table: TableKind,
    /// Whether the per-IP limits apply to loopback peers too ([`RunConfig::limit_loopback`]).
    pub limit_loopback: bool,
    /// Whether the batched provide protocol is on (`[kad] provide-batch`).
    pub provide_batch: bool,
}

impl RunConfig {
    /// Parses a TOML configuration.
    ///
    /// # Errors
    /// [`ConfigError`] on a syntax error or an unknown key.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| err("config file", e.to_string()))
    }

    /// `self` with every setting that `flags` gives replaced by the flag's.
    #[must_use]
    pub fn merge(self, flags: RunConfig) -> RunConfig {
        RunConfig {
            data_dir: flags.data_dir.or(self.data_dir),
            listen: flags.listen.or(self.listen),
            external_addrs: flags.external_addrs.or(self.external_addrs),
            bootstrap: flags.bootstrap.or(self.bootstrap),
            mode: flags.mode.or(self.mode),
            reprovide_interval: flags.reprovide_interval.or(self.reprovide_interval),
            workers: flags.workers.or(self.workers),
            http: flags.http.or(self.http),
            api: flags.api.or(self.api),
            api_hosts: flags.api_hosts.or(self.api_hosts),
            api_token_file: flags.api_token_file.or(self.api_token_file),
            strategy: flags.strategy.or(self.strategy),
            store: flags.store.or(self.store),
            table: flags.table.or(self.table),
            rocksdb: flags.rocksdb.or(self.rocksdb),
            limit_loopback: flags.limit_loopback.or(self.limit_loopback),
            kad: flags.kad.or(self.kad),
        }
    }

    /// Checks every value and fills in the defaults: data directory
    /// [`default_data_dir`], listen on port 4001 over TCP and QUIC
    /// ([`dht_transport::default_listen_addrs`]), the Amino bootstrap peers,
    /// server mode, Delegated Routing on [`DEFAULT_HTTP_ADDR`], management on
    /// [`DEFAULT_API_ADDR`] with the token in [`TOKEN_FILE`] of the data directory, sweep,
    /// RocksDB sized for the mode ([`RocksSizes`]), k-buckets, the batched provide protocol on.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first bad setting.
    pub fn resolve(&self) -> Result<Settings, ConfigError> {
        let listen = match &self.listen {
            Some(addrs) => addrs
                .iter()
                .map(|a| {
                    a.parse::<Multiaddr>()
                        .map_err(|e| err("listen", format!("{a:?}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => dht_transport::default_listen_addrs(),
        };
        let external_addrs = self
            .external_addrs
            .iter()
            .flatten()
            .map(|a| {
                a.parse::<Multiaddr>()
                    .map_err(|e| err("external-addrs", format!("{a:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bootstrap = match &self.bootstrap {
            Some(peers) => {
                parse_peers(peers.iter().map(String::as_str)).map_err(|e| err("bootstrap", e))?
            }
            None => amino_bootstrap_peers(),
        };
        let mode = Mode::from(self.mode.unwrap_or_default());
        let reprovide_interval = self
            .reprovide_interval
            .as_deref()
            .map(|d| parse_duration(d).map_err(|e| err("reprovide-interval", e)))
            .transpose()?;
        if self.workers == Some(0) {
            return Err(err("workers", "at least 1"));
        }
        let http = listener("http", self.http.as_deref(), DEFAULT_HTTP_ADDR)?;
        let api = listener("api", self.api.as_deref(), DEFAULT_API_ADDR)?;
        if api.is_some_and(|a| a.port() != 0) && api == http {
            return Err(err(
                "api",
                "the management and routing listeners need two addresses",
            ));
        }
        let data_dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
        let strategy = self.strategy.unwrap_or_default();
        let store = self.store.unwrap_or_default();
        let table = self.table.unwrap_or_default();
        let rocksdb = self
            .rocksdb
            .clone()
            .unwrap_or_default()
            .store_config(mode)?;
        Ok(Settings {
            limit_loopback: self.limit_loopback.unwrap_or(false),
            rocksdb,
            api_token_file: self
                .api_token_file
                .clone()
                .unwrap_or_else(|| data_dir.join(TOKEN_FILE)),
            api_hosts: self.api_hosts.clone().unwrap_or_default(),
            api,
            data_dir,
            listen,
            external_addrs,
            bootstrap,
            mode,
            reprovide_interval,
            workers: self.workers,
            http,
            strategy,
            store,
            table,
            provide_batch: self
                .kad
                .as_ref()
                .and_then(|k| k.provide_batch)
                .unwrap_or(true),
        })
    }
}

/// A listener's address: `off`, a `host:port`, or the default.
fn listener(
    setting: &'static str,
    value: Option<&str>,
    default: &str,
) -> Result<Option<SocketAddr>, ConfigError> {
    match value.unwrap_or(default) {
        "off" => Ok(None),
        addr => addr
            .parse()
            .map(Some)
            .map_err(|e| err(setting, format!("{addr:?}: {e}"))),
    }
}

/// Parses `90s`, `30m`, `22h`, `1d` (or plain seconds).
///
/// ```
/// use std::time::Duration;
/// assert_eq!(dht_node::config::parse_duration("22h"), Ok(Duration::from_secs(22 * 3600)));
/// assert_eq!(dht_node::config::parse_duration("45"), Ok(Duration::from_secs(45)));
/// assert!(dht_node::config::parse_duration("soon").is_err());
/// ```
///
/// # Errors
/// A message when the text is not a number with an optional unit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 30m, 22h, 1d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: unit s, m, h or d")),
    };
    n.checked_mul(scale)
        .map(Duration::from_secs)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batched_provide_protocol_is_on_unless_the_kad_table_turns_it_off() {
        let on = RunConfig::default().resolve().expect("valid");
        assert!(on.provide_batch);
        let off = RunConfig::from_toml("[kad]\nprovide-batch = false\n").expect("valid TOML");
        assert!(!off.resolve().expect("valid").provide_batch);
        let empty = RunConfig::from_toml("[kad]\n").expect("valid TOML");
        assert!(empty.resolve().expect("valid").provide_batch);
        assert!(RunConfig::from_toml("[kad]\nprovide-batches = false\n").is_err());
    }

    #[test]
    fn file_then_flags() {
        let file = RunConfig::from_toml(
            r#"
            data-dir = "/tmp/x"
            listen = ["/ip4/127.0.0.1/tcp/0"]
            bootstrap = []
            mode = "client"
            reprovide-interval = "1h"
            workers = 3
            http = "off"
            api = "127.0.0.1:7000"
            api-hosts = ["dht.example.org"]
            "#,
        )
        .expect("valid TOML");
        let flags = RunConfig {
            workers: Some(8),
            http: Some("127.0.0.1:0".into()),
            ..RunConfig::default()
        };
        let settings = file.merge(flags).resolve().expect("valid");
        assert_eq!(settings.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(settings.mode, Mode::Client);
        assert!(settings.bootstrap.is_empty());
        assert_eq!(settings.workers, Some(8));
        assert_eq!(settings.reprovide_interval, Some(Duration::from_secs(3600)));
        assert_eq!(settings.http.map(|a| a.port()), Some(0));
        assert_eq!(settings.api.map(|a| a.port()), Some(7000));
        assert_eq!(settings.api_hosts, ["dht.example.org"]);
        assert_eq!(settings.api_token_file, PathBuf::from("/tmp/x/api.token"));
    }

    #[test]
    fn rocksdb_sizes_follow_the_mode_and_the_file() {
        let mib = 1 << 20;
        let server = RunConfig::default().resolve().expect("defaults").rocksdb;
        assert_eq!(server, StoreConfig::default());
        assert_eq!(server.write_buffer_bytes, 256 * mib);
        let client = RunConfig {
            mode: Some(RunMode::Client),
            ..RunConfig::default()
        };
        let small = client.resolve().expect("client").rocksdb;
        assert_eq!(small.block_cache_bytes, 8 * mib);
        assert_eq!(small.write_buffer_bytes, 16 * mib);
        assert_eq!(small.cache_bytes, 8 * mib);

        let file = RunConfig::from_toml(
            r#"
            mode = "client"
            [rocksdb]
            block-cache-mib = 2
            write-buffer-mib = 4
            provider-cache-mib = 0
            "#,
        )
        .expect("valid TOML");
        let set = file
            .merge(RunConfig::default())
            .resolve()
            .expect("valid")
            .rocksdb;
        assert_eq!(set.block_cache_bytes, 2 * mib);
        assert_eq!(set.write_buffer_bytes, 4 * mib);
        assert_eq!(set.cache_bytes, 0);
        assert_eq!(set.max_open_files, small.max_open_files);

        let bad = RunConfig::from_toml("[rocksdb]\nwrite-buffer-mib = 0").expect("TOML");
        assert_eq!(
            bad.resolve().expect_err("refused").setting,
            "rocksdb.write-buffer-mib"
        );
        assert!(RunConfig::from_toml("[rocksdb]\nblock-cache = 1").is_err());
    }

    #[test]
    fn the_default_data_directory_is_absolute() {
        let settings = RunConfig::default().resolve().expect("defaults");
        assert!(
            settings.data_dir.is_absolute(),
            "{}",
            settings.data_dir.display()
        );
        assert!(settings.data_dir.ends_with(DATA_DIR_NAME));
    }

    #[test]
    fn defaults_and_errors() {
        let bad = |c: RunConfig| c.resolve().expect_err("refused").setting;
        let settings = RunConfig::default().resolve().expect("defaults");
        assert_eq!(settings.listen[0].to_string(), "/ip4/0.0.0.0/tcp/4001");
        assert_eq!(
            settings.listen[1].to_string(),
            "/ip4/0.0.0.0/udp/4001/quic-v1"
        );
        assert!(!settings.bootstrap.is_empty());
        assert_eq!(
            settings.http.map(|a| a.to_string()).as_deref(),
            Some(DEFAULT_HTTP_ADDR)
        );
        assert_eq!(
            settings.api.map(|a| a.to_string()).as_deref(),
            Some(DEFAULT_API_ADDR)
        );
        assert_eq!(settings.api_token_file, settings.data_dir.join(TOKEN_FILE));
        assert_eq!(
            bad(RunConfig {
                api: Some(DEFAULT_HTTP_ADDR.into()),
                ..Default::default()
            }),
            "api"
        );
        assert!(RunConfig::from_toml("nonsense = 1").is_err());
        // A value that is none of a setting's choices is refused when the file is read, with
        // the choices named.
        for (line, choices) in [
            ("mode = \"both\"", "`server` or `client`"),
            ("strategy = \"all\"", "`sweep` or `per-key`"),
            ("store = \"disk\"", "`rocksdb` or `memory`"),
            ("table = \"x\"", "`kbucket` or `full`"),
        ] {
            let e = RunConfig::from_toml(line).expect_err(line).to_string();
            assert!(e.contains(choices), "{line}: {e}");
        }
        assert_eq!(
            bad(RunConfig {
                workers: Some(0),
                ..Default::default()
            }),
            "workers"
        );
        assert_eq!(
            bad(RunConfig {
                bootstrap: Some(vec!["/ip4/1.2.3.4/tcp/1".into()]),
                ..Default::default()
            }),
            "bootstrap"
        );
    }
}
