//! The transport's error type.

use dht_proto::{CodecError, MessageType, Multiaddr, batch::BatchCodecError};

/// What can go wrong starting the transport or sending a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The swarm could not be built (noise key, transport setup).
    #[error("building the swarm: {0}")]
    Setup(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Listening on a configured address failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why: the listener's error, `TimedOut` when no address was bound in time, or
        /// `ConnectionAborted` when the listener closed before it bound one.
        source: std::io::Error,
    },
    /// No connection to the peer could be established: libp2p's `DialError`, as printed.
    ///
    /// A message, not the error itself: libp2p hands a failed dial to the behaviour by
    /// reference, and `DialError` cannot be cloned for every request that waited on it.
    #[error("dial failed: {0}")]
    Dial(String),
    /// The peer does not accept `/ipfs/kad/1.0.0` streams (it is a client, or no DHT node).
    #[error("peer does not support /ipfs/kad/1.0.0")]
    UnsupportedProtocol,
    /// The request did not complete in time (no stream, or no response).
    #[error("request timed out")]
    Timeout,
    /// The connection closed before the request completed.
    #[error("connection closed")]
    ConnectionClosed,
    /// Opening a stream failed.
    #[error("opening a stream: {0}")]
    Stream(#[source] std::io::Error),
    /// Writing the request or reading the response failed: an I/O error, a stream the peer
    /// closed or reset, an oversized or malformed message. The stream is closed.
    #[error("protocol error: {0}")]
    Codec(#[from] CodecError),
    /// The peer does not take the batched provide protocol (`/amino-dht-rs/provide-batch/1.0.0`)
    /// from this node: it did not list it in its latest identify, it refused the stream in
    /// negotiation, or this node is configured not to send batches. Nothing was stored; send
    /// the keys as ADD_PROVIDER. Says nothing against the peer.
    #[error("peer does not take /amino-dht-rs/provide-batch/1.0.0: {0}")]
    ProvideBatchUnsupported(&'static str),
    /// Writing a batch or reading its answer failed (an I/O error, a stream the peer closed
    /// or reset, a malformed answer, or one whose statuses do not match the keys): the batch
    /// counts as not stored. The stream is closed.
    #[error("batch protocol error: {0}")]
    BatchCodec(#[from] BatchCodecError),
    /// The peer answered with a response of another type than the request's.
    #[error("{got} response to a {sent} request")]
    UnexpectedResponse {
        /// The request type.
        sent: MessageType,
        /// The response type.
        got: MessageType,
    },
    /// The transport task has stopped.
    #[error("transport stopped")]
    Shutdown,
}
