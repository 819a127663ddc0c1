//! The protocol upgrade of `/ipfs/kad/1.0.0` (and of the batched provide protocol beside it)
//! and the inbound request handler seam.

use std::{convert::Infallible, future::Ready, net::IpAddr, sync::Arc};

use dht_proto::{
    PROTOCOL_NAME, PeerInfo, Request, Response,
    batch::{PROVIDE_BATCH_PROTOCOL, ProvideBatch, ProvideBatchResponse},
};
use libp2p::{
    Stream, StreamProtocol,
    core::{InboundUpgrade, OutboundUpgrade, UpgradeInfo},
};

pub(crate) const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new(PROTOCOL_NAME);

/// `/amino-dht-rs/provide-batch/1.0.0` (`docs/specs/provide-batch.md`).
pub(crate) const BATCH_PROTOCOL: StreamProtocol = StreamProtocol::new(PROVIDE_BATCH_PROTOCOL);

/// Who sent an inbound request, as the transport knows the peer.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemotePeer {
    /// The sender's peer id and the listen addresses it announced through identify (empty
    /// until identify has completed on the connection).
    pub peer: PeerInfo,
    /// Whether identify lists `/ipfs/kad/1.0.0` for the sender, i.e. it is a DHT server; only
    /// servers belong in the routing table.
    pub is_server: bool,
    /// The IP address the sender's connection comes from (`None` for a transport without
    /// IP, e.g. in memory).
    pub remote_ip: Option<IpAddr>,
}

/// The error an [`InboundHandler`] returns to refuse a request; the transport logs it and
/// closes the stream, as go-libp2p-kad-dht does.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// The answer to a batch of the batched provide protocol, to come
/// ([`InboundHandler::provide_batch`]).
pub type BatchReply = std::pin::Pin<Box<dyn Future<Output = ProvideBatchResponse> + Send>>;

/// Answers the requests peers send to this node (the server side of the DHT).
///
/// The transport calls it for every decoded request of a stream, in order, and writes back
/// the response it returns; `Ok(None)` writes nothing and keeps reading (as Go does for a
/// handler that returns no message). Responses to ADD_PROVIDER are never written. An error
/// or a panic resets the stream.
///
/// It is synchronous. Record requests (PUT_VALUE, GET_VALUE, ADD_PROVIDER, GET_PROVIDERS)
/// may block: they run on tokio's blocking pool (`spawn_blocking`), so a store that reads its
/// disk or waits for an fsync holds up only the stream it answers, never the connection's
/// task, the swarm or a runtime worker, and concurrent writes to a store with group commit
/// share one fsync. FIND_NODE and PING are answered on the connection's task, without the
/// hand-off to another thread: they must not block (a routing-table lookup in memory). With
/// stores in memory, [`KadConfig::blocking_record_requests`] off answers record requests on
/// the connection's task too. Requests of different streams and connections are served in
/// parallel.
///
/// [`KadConfig::blocking_record_requests`]: crate::KadConfig::blocking_record_requests
///
/// Closures implement it; [`handler_fn`] turns one into an `Arc<dyn InboundHandler>` with its
/// argument and return types inferred:
///
/// ```
/// use dht_transport::handler_fn;
/// use dht_proto::{Request, Response};
/// let handler = handler_fn(|_from, request| {
///     Ok(match request {
///         Request::Ping => Some(Response::Ping),
///         _ => None,
///     })
/// });
/// # let _ = handler;
/// ```
pub trait InboundHandler: Send + Sync + 'static {
    /// Answers `request` from `from`.
    fn handle_request(
        &self,
        from: &RemotePeer,
        request: Request,
    ) -> Result<Option<Response>, HandlerError>;

    /// Whether this handler answers batches of the batched provide protocol
    /// ([`provide_batch`](Self::provide_batch)); the transport serves and advertises the
    /// protocol only when it does (and [`KadConfig::provide_batch`] is on, in server mode).
    /// By default it does not.
    ///
    /// [`KadConfig::provide_batch`]: crate::KadConfig::provide_batch
    fn serves_provide_batch(&self) -> bool {
        false
    }

    /// Takes one batch of the batched provide protocol from `from`: checks it and hands its
    /// records to the store, and returns the answer to come, a future that gives it once
    /// the records it answers as stored are durable. The call runs on tokio's blocking pool
    /// (unless [`KadConfig::blocking_record_requests`] is off), one batch of a stream at a
    /// time, and should not wait for the disk itself: the transport awaits the answer on the
    /// stream's task (for at most the request timeout), so that no thread waits for a
    /// commit. An error (or a panic) resets the stream. By default every batch is refused so
    /// (a handler that does not override it should not say it
    /// [`serves_provide_batch`](Self::serves_provide_batch)).
    ///
    /// [`KadConfig::blocking_record_requests`]: crate::KadConfig::blocking_record_requests
    fn provide_batch(
        &self,
        from: &RemotePeer,
        batch: ProvideBatch,
    ) -> Result<BatchReply, HandlerError> {
        let _ = (from, batch);
        Err("this handler does not serve the batched provide protocol".into())
    }
}

impl<F> InboundHandler for F
where
    F: Fn(&RemotePeer, Request) -> Result<Option<Response>, HandlerError> + Send + Sync + 'static,
{
    fn handle_request(
        &self,
        from: &RemotePeer,
        request: Request,
    ) -> Result<Option<Response>, HandlerError> {
        self(from, request)
    }
}

/// Wraps a closure as a shared [`InboundHandler`].
pub fn handler_fn<F>(f: F) -> Arc<dyn InboundHandler>
where
    F: Fn(&RemotePeer, Request) -> Result<Option<Response>, HandlerError> + Send + Sync + 'static,
{
    Arc::new(f)
}

/// The upgrade of a stream of this node's protocols (opaque): multistream-select on
/// `/ipfs/kad/1.0.0` and, where it is on, `/amino-dht-rs/provide-batch/1.0.0`; then the raw
/// stream and the protocol negotiated.
///
/// Inbound it offers only what the node serves: nothing in client mode, so inbound
/// negotiation fails (the remote sees "protocol not supported") and the protocols are absent
/// from the local protocols identify announces; the batch protocol only where it is served.
#[derive(Clone, Copy, Debug)]
pub struct KadUpgrade {
    pub(crate) kad: bool,
    pub(crate) batch: bool,
}

impl KadUpgrade {
    /// An outbound kad stream.
    pub(crate) const KAD: KadUpgrade = KadUpgrade {
        kad: true,
        batch: false,
    };
    /// An outbound batch stream.
    pub(crate) const BATCH: KadUpgrade = KadUpgrade {
        kad: false,
        batch: true,
    };
}

impl UpgradeInfo for KadUpgrade {
    type Info = StreamProtocol;
    type InfoIter = std::iter::Flatten<std::array::IntoIter<Option<StreamProtocol>, 2>>;

    fn protocol_info(&self) -> Self::InfoIter {
        [
            self.kad.then_some(KAD_PROTOCOL),
            self.batch.then_some(BATCH_PROTOCOL),
        ]
        .into_iter()
        .flatten()
    }
}

impl InboundUpgrade<Stream> for KadUpgrade {
    type Output = (Stream, StreamProtocol);
    type Error = Infallible;
    type Future = Ready<Result<(Stream, StreamProtocol), Infallible>>;

    fn upgrade_inbound(self, stream: Stream, protocol: StreamProtocol) -> Self::Future {
        std::future::ready(Ok((stream, protocol)))
    }
}

impl OutboundUpgrade<Stream> for KadUpgrade {
    type Output = (Stream, StreamProtocol);
    type Error = Infallible;
    type Future = Ready<Result<(Stream, StreamProtocol), Infallible>>;

    fn upgrade_outbound(self, stream: Stream, protocol: StreamProtocol) -> Self::Future {
        std::future::ready(Ok((stream, protocol)))
    }
}
