//! The errors of the handler.

use dht_proto::{MessageType, PeerId};
use dht_provider_store::StoreError;

use dht_proto::ValidationError;

/// Why a request was refused.
///
/// Every variant except [`HandlerError::Store`] is the requester's doing (a malformed,
/// oversized or forbidden request, or too many of them); the transport answers all of them
/// by closing the stream, as go-libp2p-kad-dht does when its handler returns an error.
/// Nothing was stored when `handle` returns an error.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The request's key is empty (every RPC but PING needs one).
    #[error("{rpc} request with an empty key")]
    EmptyKey {
        /// The RPC.
        rpc: MessageType,
    },
    /// The request's key is longer than the configured limit.
    #[error("{rpc} key of {len} bytes is longer than the limit of {max}")]
    KeyTooLong {
        /// The RPC.
        rpc: MessageType,
        /// The key's length.
        len: usize,
        /// The limit ([`HandlerConfig`](crate::HandlerConfig)).
        max: usize,
    },
    /// An ADD_PROVIDER whose entries name only other peers than the sender: a peer may only
    /// announce itself.
    #[error("ADD_PROVIDER from {sender} announces only other peers (first: {provider})")]
    ProviderNotSender {
        /// The first provider entry that is not the sender.
        provider: PeerId,
        /// The sender.
        sender: PeerId,
    },
    /// An ADD_PROVIDER with no entry of the sender that carries an address (no entry at all,
    /// or only entries without addresses).
    #[error("ADD_PROVIDER carries no provider entry of the sender with an address")]
    NoValidProviderEntries,
    /// An ADD_PROVIDER whose entries of the sender carry more addresses than the limit.
    #[error("ADD_PROVIDER carries {len} addresses of the sender; at most {max} are accepted")]
    TooManyAddresses {
        /// Addresses in the sender's entries (counted until the limit was passed).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A PUT_VALUE whose value is larger than the configured limit.
    #[error("value of {len} bytes is larger than the limit of {max}")]
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A PUT_VALUE in a namespace no validator is registered for (only `/pk/` and `/ipns/`
    /// by default).
    #[error("no validator for record namespace {namespace:?}")]
    UnknownNamespace {
        /// The namespace (lossily decoded as UTF-8).
        namespace: String,
    },
    /// A PUT_VALUE whose record the namespace's validator rejects.
    #[error("invalid record: {0}")]
    InvalidRecord(#[source] ValidationError),
    /// A PUT_VALUE whose record is valid but worse than the one stored (an older IPNS
    /// sequence number, say): the stored record is kept.
    #[error("the stored record is newer than the one offered")]
    WorseRecord,
    /// The sender exceeded its request rate.
    #[error("peer {peer} exceeded its request rate")]
    RateLimited {
        /// The sender.
        peer: PeerId,
    },
    /// The sender's IP (its IPv4 address or IPv6 /56) exceeded its request rate, which all
    /// peer ids connecting from it share.
    #[error("{ip} exceeded its request rate")]
    IpRateLimited {
        /// The IP (IPv6: the /56), as counted.
        ip: std::net::IpAddr,
    },
    /// The store failed; not the requester's fault.
    #[error("store error: {0}")]
    Store(#[from] StoreError),
}

impl HandlerError {
    /// Whether the requester caused the error (everything except a store failure).
    pub fn is_peer_fault(&self) -> bool {
        !matches!(self, HandlerError::Store(_))
    }
}

impl From<ValidationError> for HandlerError {
    fn from(e: ValidationError) -> Self {
        match e {
            ValidationError::UnknownNamespace(namespace) => {
                HandlerError::UnknownNamespace { namespace }
            }
            other => HandlerError::InvalidRecord(other),
        }
    }
}
