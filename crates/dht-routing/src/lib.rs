#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod client;
mod crawl;
mod dht;
mod driver;
mod error;
mod network;
mod query;
mod refresh;
mod stats;
mod target;

pub use client::{ClientConfig, DhtClient};
pub use crawl::{CrawlConfig, crawl};
pub use dht::{
    Delivery, Dht, GetValue, MAX_FEATURE_WIDTH, ProviderStream, find_closest_peers,
    find_feature_peers, find_peer, find_providers, generic, get_value, provide, put_value,
};
pub use driver::{DriverConfig, QueryDriver, run_query};
pub use error::Error;
pub use network::{Feature, Network, RpcError};
pub use query::{ClosestPeersQuery, QueryAction, QueryConfig, QueryResult, QueryStats};
pub use refresh::{MAX_REFRESH_CPL, Refresh, RefreshScope, refresh_table};
pub use stats::{OpStats, Outcome, SharedStats};
pub use target::{MAX_TARGET_PREFIX_BITS, find_node_key, key_in_prefix};
