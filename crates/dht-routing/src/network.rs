//! The [`Network`] seam: how the client reaches other peers.

use std::{future::Future, sync::Arc, time::Duration};

use futures::{Stream, StreamExt};

use dht_proto::{
    MessageType, PeerId, PeerInfo, Request, Response, SharedError,
    batch::{BatchError, PROVIDE_BATCH_PROTOCOL, ProvideBatch, ProvideBatchResponse},
};

/// Something a peer may support beyond the requests of `/ipfs/kad/1.0.0`: what
/// [`Network::supports`] answers about a peer, and what a walk for peers with a feature looks
/// for.
///
/// A feature is learned from a peer (the protocols it lists in identify, or what the DHT
/// learned of it), never assumed: a client uses a feature only with peers known to have it,
/// and falls back to plain `/ipfs/kad/1.0.0` with every other peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Feature {
    /// The batched provide protocol (`/amino-dht-rs/provide-batch/1.0.0`,
    /// `docs/specs/provide-batch.md`): [`Network::provide_batch`].
    ProvideBatch,
}

impl Feature {
    /// Every feature.
    pub const ALL: [Feature; 1] = [Feature::ProvideBatch];

    /// The protocol id a peer lists (in identify) when it has this feature.
    pub const fn protocol(self) -> &'static str {
        match self {
            Feature::ProvideBatch => PROVIDE_BATCH_PROTOCOL,
        }
    }

    /// The feature a listed protocol id stands for, if any.
    pub fn from_protocol(protocol: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.protocol() == protocol)
    }
}

/// Why a request to a peer got no usable answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// No answer within the driver's per-request timeout.
    #[error("the request timed out")]
    Timeout,
    /// The peer could not be reached (dial failure, no address, refused protocol): the
    /// routing table drops it at once ([`PeerEvent::Unreachable`]). Errors on a live
    /// connection are [`Other`](Self::Other) or [`NoResponse`](Self::NoResponse), which only
    /// count against it.
    ///
    /// [`PeerEvent::Unreachable`]: dht_routing_table::PeerEvent::Unreachable
    #[error("the peer could not be reached: {0}")]
    Unreachable(#[source] SharedError),
    /// The stream closed before the peer answered a request that expects an answer.
    #[error("the peer sent no response")]
    NoResponse,
    /// The peer answered with a response of another type than the request's.
    #[error("expected a {expected} response, got {got}")]
    UnexpectedResponse {
        /// The request's type.
        expected: MessageType,
        /// The response's type.
        got: MessageType,
    },
    /// The peer does not support what was asked of it (a [`Feature`] it did not advertise,
    /// or one this network does not implement): the caller falls back to plain
    /// `/ipfs/kad/1.0.0` with this peer. Says nothing against the peer.
    #[error("the peer does not support {0:?}")]
    Unsupported(Feature),
    /// The peer refused a whole batch of the batched provide protocol.
    #[error("the peer refused the batch: {0}")]
    BatchRefused(BatchError),
    /// The peer answered a batch with statuses that do not match its keys.
    #[error("the batch answer does not match its keys")]
    BadBatchAnswer,
    /// Anything else (an I/O or decoding error).
    #[error("{0}")]
    Other(#[source] SharedError),
}

impl RpcError {
    /// [`RpcError::Unreachable`], for `why` the peer could not be reached.
    pub fn unreachable(why: impl std::error::Error + Send + Sync + 'static) -> Self {
        RpcError::Unreachable(SharedError::new(why))
    }

    /// [`RpcError::Other`], for `error`.
    pub fn other(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        RpcError::Other(SharedError::new(error))
    }
}

/// Sends requests to peers: the client's only way out.
///
/// One required method. Implemented by dht-transport over libp2p and by dht-sim in memory
/// (the network of this crate's tests). Implementations should reuse a
/// connection and stream for several requests to one peer. They need not apply timeouts:
/// the driver wraps every request in `tokio::time::timeout`, which also works on tokio's
/// paused (virtual) clock.
///
/// # Requests without a response
///
/// ADD_PROVIDER has no response on the wire. [`send`](Self::send) resolves to `Ok(None)`
/// once such a request is written, and to `Ok(Some(response))` for every other type
/// ([`MessageType::expects_response`]). [`request`](Self::request) is the variant for
/// requests that expect a response: it turns `Ok(None)` into [`RpcError::NoResponse`] and a
/// response of the wrong type into [`RpcError::UnexpectedResponse`].
///
/// ```
/// use std::future::Future;
/// use dht_proto::{PeerInfo, Request, Response};
/// use dht_routing::{Network, RpcError};
///
/// /// A network where every peer knows nobody.
/// struct Lonely;
///
/// impl Network for Lonely {
///     fn send(
///         &self,
///         _peer: &PeerInfo,
///         request: Request,
///     ) -> impl Future<Output = Result<Option<Response>, RpcError>> + Send {
///         let response = match request {
///             Request::FindNode { .. } => Some(Response::FindNode { closer_peers: vec![] }),
///             Request::AddProvider { .. } => None,
///             _ => Some(Response::Ping),
///         };
///         std::future::ready(Ok(response))
///     }
/// }
/// ```
pub trait Network: Send + Sync {
    /// Sends `request` to `peer` and waits for its response: `Ok(None)` for a request that
    /// has none (ADD_PROVIDER) once it is written.
    fn send(
        &self,
        peer: &PeerInfo,
        request: Request,
    ) -> impl Future<Output = Result<Option<Response>, RpcError>> + Send;

    /// Sends a request that expects a response, and checks that the response is of the
    /// request's type.
    fn request(
        &self,
        peer: &PeerInfo,
        request: Request,
    ) -> impl Future<Output = Result<Response, RpcError>> + Send {
        let expected = request.message_type();
        let sent = self.send(peer, request);
        async move { check_response(expected, sent.await) }
    }

    /// Whether `peer` is known to support `feature` (for example, it listed the feature's
    /// protocol in identify). By default no peer supports any feature.
    fn supports(&self, peer: &PeerId, feature: Feature) -> bool {
        let _ = (peer, feature);
        false
    }

    /// Sends `peer` an ADD_PROVIDER record for each of `keys` (the key's bytes), with
    /// `provider` as the provider, and yields each key's index with its outcome as it is
    /// known: `Ok(())` once the record is written, or the error. Every key reports once,
    /// each within `timeout` of its sending ([`RpcError::Timeout`] past it).
    ///
    /// The default sends them one by one through [`send`](Self::send), `parallel` at a
    /// time. A transport that can hand them to the peer's connection together (one command,
    /// records written together) does that instead: many records per peer is what a
    /// provider sends.
    fn add_providers<'a>(
        &'a self,
        peer: &'a PeerInfo,
        provider: &'a PeerInfo,
        keys: Vec<Vec<u8>>,
        parallel: usize,
        timeout: Duration,
    ) -> impl Stream<Item = (usize, Result<(), RpcError>)> + Send + 'a {
        futures::stream::iter(keys.into_iter().enumerate())
            .map(move |(i, key)| {
                let sent = self.send(
                    peer,
                    Request::AddProvider {
                        key,
                        providers: vec![provider.clone()],
                    },
                );
                async move {
                    let outcome = match tokio::time::timeout(timeout, sent).await {
                        Ok(Ok(_)) => Ok(()),
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err(RpcError::Timeout),
                    };
                    (i, outcome)
                }
            })
            .buffer_unordered(parallel.max(1))
    }

    /// Sends `peer` one batch of provider records ([`Feature::ProvideBatch`]) and resolves to
    /// the server's answer, which says per key whether the record is stored (and durable).
    ///
    /// Callers send batches only to peers that [`supports`](Self::supports) the feature. The
    /// default, for networks without the protocol, is [`RpcError::Unsupported`]; an
    /// implementation answers the same for a peer that refuses the protocol, so that the
    /// caller falls back to ADD_PROVIDER.
    fn provide_batch(
        &self,
        peer: &PeerInfo,
        batch: ProvideBatch,
    ) -> impl Future<Output = Result<ProvideBatchResponse, RpcError>> + Send {
        let _ = (peer, batch);
        std::future::ready(Err(RpcError::Unsupported(Feature::ProvideBatch)))
    }
}

/// `Ok(Some(response))` of the request's type → `Ok(response)`; anything else an error.
pub(crate) fn check_response(
    expected: MessageType,
    result: Result<Option<Response>, RpcError>,
) -> Result<Response, RpcError> {
    match result? {
        Some(response) if response.message_type() == expected => Ok(response),
        Some(response) => Err(RpcError::UnexpectedResponse {
            expected,
            got: response.message_type(),
        }),
        None => Err(RpcError::NoResponse),
    }
}

macro_rules! forward_network {
    ($($ty:ty),*) => {$(
        impl<T: Network + ?Sized> Network for $ty {
            fn send(
                &self,
                peer: &PeerInfo,
                request: Request,
            ) -> impl Future<Output = Result<Option<Response>, RpcError>> + Send {
                (**self).send(peer, request)
            }

            fn request(
                &self,
                peer: &PeerInfo,
                request: Request,
            ) -> impl Future<Output = Result<Response, RpcError>> + Send {
                (**self).request(peer, request)
            }

            fn supports(&self, peer: &PeerId, feature: Feature) -> bool {
                (**self).supports(peer, feature)
            }

            fn provide_batch(
                &self,
                peer: &PeerInfo,
                batch: ProvideBatch,
            ) -> impl Future<Output = Result<ProvideBatchResponse, RpcError>> + Send {
                (**self).provide_batch(peer, batch)
            }

            fn add_providers<'a>(
                &'a self,
                peer: &'a PeerInfo,
                provider: &'a PeerInfo,
                keys: Vec<Vec<u8>>,
                parallel: usize,
                timeout: Duration,
            ) -> impl Stream<Item = (usize, Result<(), RpcError>)> + Send + 'a {
                (**self).add_providers(peer, provider, keys, parallel, timeout)
            }
        }
    )*};
}

forward_network!(Arc<T>, Box<T>, &T);
