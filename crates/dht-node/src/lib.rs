#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod api;
pub mod builder;
pub mod config;
pub mod devnet;
pub mod fds;
pub mod health;
pub mod http_client;
pub mod metrics;
pub mod node;
pub mod stat;
pub mod status;
/// The libp2p transport of the node: the [`dht_transport`] crate, re-exported so that a
/// node's users reach it by one path.
pub use dht_transport as transport;
