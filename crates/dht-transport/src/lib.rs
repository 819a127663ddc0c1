#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod behaviour;
mod book;
mod config;
mod dns;
mod driver;
mod error;
mod handler;
mod limits;
mod network;
mod permits;
mod protocol;
mod stats;

pub use behaviour::{KadBehaviour, ResponseFuture};
pub use book::PeerBook;
pub use config::{
    DEFAULT_MAX_REQUEST_SIZE, KadConfig, Mode, TransportConfig, default_listen_addrs,
};
pub use driver::{
    IDENTIFY_PROTOCOL_VERSION, TransportEvent, TransportEvents, TransportHandle, spawn,
};
pub use error::TransportError;
pub use handler::{HandlerIn, KadHandler, MAX_BATCHED_BYTES, MAX_BATCHED_REQUESTS, StreamKind};
pub use limits::ConnectionLimits;
pub use network::{TransportNetwork, rpc_error};
pub use protocol::{BatchReply, HandlerError, InboundHandler, KadUpgrade, RemotePeer, handler_fn};
pub use stats::TransportStats;
