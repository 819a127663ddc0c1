//! The protocol upgrade of `/ipfs/kad/1.0.0` and the inbound request handler seam.

use std::{convert::Infallible, future::Ready, net::IpAddr, sync::Arc};

use dht_proto::{PROTOCOL_NAME, PeerInfo, Request, Response};
use libp2p::{
    Stream, StreamProtocol,
    core::{InboundUpgrade, OutboundUpgrade, UpgradeInfo},
};

pub(crate) const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new(PROTOCOL_NAME);

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
/// [`KadConfig::blocking_record_requests`]: crate::transport::KadConfig::blocking_record_requests
///
/// Closures implement it; [`handler_fn`] turns one into an `Arc<dyn InboundHandler>` with its
/// argument and return types inferred:
///
/// ```
/// use dht_node::transport::handler_fn;
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

/// The upgrade of a kad stream (opaque): multistream-select on `/ipfs/kad/1.0.0`, then the raw
/// stream.
///
/// When not advertising it offers no protocol, so inbound negotiation fails (the remote sees
/// "protocol not supported") and the protocol is absent from the local protocols identify
/// announces: this is client mode.
#[derive(Clone, Copy, Debug)]
pub struct KadUpgrade {
    pub(crate) advertise: bool,
}

impl UpgradeInfo for KadUpgrade {
    type Info = StreamProtocol;
    type InfoIter = Option<StreamProtocol>;

    fn protocol_info(&self) -> Self::InfoIter {
        self.advertise.then_some(KAD_PROTOCOL)
    }
}

impl InboundUpgrade<Stream> for KadUpgrade {
    type Output = Stream;
    type Error = Infallible;
    type Future = Ready<Result<Stream, Infallible>>;

    fn upgrade_inbound(self, stream: Stream, _: StreamProtocol) -> Self::Future {
        std::future::ready(Ok(stream))
    }
}

impl OutboundUpgrade<Stream> for KadUpgrade {
    type Output = Stream;
    type Error = Infallible;
    type Future = Ready<Result<Stream, Infallible>>;

    fn upgrade_outbound(self, stream: Stream, _: StreamProtocol) -> Self::Future {
        std::future::ready(Ok(stream))
    }
}
