//! The libp2p transport: TCP + noise + yamux (dialling `/dns*` and `/dnsaddr` addresses through
//! the system's DNS resolver), identify, ping, and `/ipfs/kad/1.0.0` over the
//! [`dht_proto::Codec`] with stream reuse.
//!
//! Two layers:
//!
//! - [`KadBehaviour`], a [`NetworkBehaviour`](libp2p::swarm::NetworkBehaviour) with its own
//!   connection handler, for anyone composing their own swarm. Outbound requests reuse an idle
//!   stream per connection as go-libp2p-kad-dht does (several requests in sequence on one
//!   stream), ADD_PROVIDER is written without waiting for a response, and every request has a
//!   timeout and its own error. Inbound streams (server mode only) are read in a loop, each
//!   request answered by the [`InboundHandler`]; any protocol error resets the stream.
//! - The batched provide protocol (`/amino-dht-rs/provide-batch/1.0.0`,
//!   `docs/specs/provide-batch.md`) beside kad on the same connections: served (and listed
//!   in identify) by a server whose [`InboundHandler`] serves it, sent by
//!   [`TransportHandle::provide_batch`] only to peers whose identify lists it
//!   ([`PeerBook::supports`]); [`KadConfig::provide_batch`] turns both off.
//! - [`spawn`], which runs a ready swarm (kad + identify `ipfs/0.1.0` + ping) on a tokio task
//!   and returns a cloneable [`TransportHandle`] and the [`TransportEvents`] telling which
//!   peers are DHT servers.

mod behaviour;
mod book;
mod config;
mod dns;
mod driver;
mod error;
mod handler;
mod limits;
mod permits;
mod protocol;
mod stats;

pub use behaviour::{KadBehaviour, ResponseFuture};
pub use book::PeerBook;
pub use config::{DEFAULT_MAX_REQUEST_SIZE, KadConfig, Mode, TransportConfig};
pub use driver::{
    IDENTIFY_PROTOCOL_VERSION, TransportEvent, TransportEvents, TransportHandle, spawn,
};
pub use error::TransportError;
pub use handler::{HandlerIn, KadHandler, MAX_BATCHED_BYTES, MAX_BATCHED_REQUESTS, StreamKind};
pub use limits::ConnectionLimits;
pub use protocol::{BatchReply, HandlerError, InboundHandler, KadUpgrade, RemotePeer, handler_fn};
pub use stats::TransportStats;
