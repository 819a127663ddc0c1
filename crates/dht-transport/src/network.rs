//! dht-routing's [`Network`] over the transport: how a DHT client (a lookup, a provider)
//! sends its requests through a [`TransportHandle`].

use std::time::Duration;

use dht_proto::{
    CodecError, PeerId, PeerInfo, Request, Response,
    batch::{BatchCodecError, ProvideBatch, ProvideBatchResponse},
};
use dht_routing::{Feature, Network, RpcError};

use crate::{TransportError, TransportHandle};

/// dht-routing's [`Network`] over the libp2p transport: each request goes out through
/// [`TransportHandle::request`], which reuses the connection and a stream per peer.
///
/// Batches of the batched provide protocol go out through [`TransportHandle::provide_batch`],
/// to the peers it [`supports`](TransportHandle::supports) (their identify lists the protocol).
///
/// Transport errors map to [`RpcError`] as ([`rpc_error`]): `Timeout` → `Timeout`; `Dial`,
/// `UnsupportedProtocol` → `Unreachable`; `ProvideBatchUnsupported` (a peer that does not
/// take batches, or refused the protocol) → `Unsupported(ProvideBatch)`, which says nothing
/// against the peer; a truncated message (the peer closed the stream before answering) →
/// `NoResponse`; `UnexpectedResponse` → `UnexpectedResponse`; anything else (a connection
/// closed, a stream error) → `Other`.
#[derive(Clone, Debug)]
pub struct TransportNetwork {
    transport: TransportHandle,
}

impl TransportNetwork {
    /// The network over `transport`.
    pub fn new(transport: TransportHandle) -> Self {
        TransportNetwork { transport }
    }

    /// The transport requests go over.
    pub fn transport(&self) -> &TransportHandle {
        &self.transport
    }
}

impl Network for TransportNetwork {
    fn send(
        &self,
        peer: &PeerInfo,
        request: Request,
    ) -> impl Future<Output = Result<Option<Response>, RpcError>> + Send {
        let transport = self.transport.clone();
        let peer = peer.clone();
        async move { transport.request(&peer, request).await.map_err(rpc_error) }
    }

    fn supports(&self, peer: &PeerId, feature: Feature) -> bool {
        self.transport.supports(peer, feature)
    }

    /// All of them to the peer's connection in one command ([`TransportHandle::add_providers`]),
    /// written together where they fit; `parallel` is the transport's own (its streams per
    /// connection), `timeout` its request timeout.
    fn add_providers<'a>(
        &'a self,
        peer: &'a PeerInfo,
        provider: &'a PeerInfo,
        keys: Vec<Vec<u8>>,
        _parallel: usize,
        _timeout: Duration,
    ) -> impl futures::Stream<Item = (usize, Result<(), RpcError>)> + Send + 'a {
        use futures::StreamExt;
        self.transport
            .add_providers(peer, provider, keys)
            .map(|(i, outcome)| (i, outcome.map(|_| ()).map_err(rpc_error)))
    }

    fn provide_batch(
        &self,
        peer: &PeerInfo,
        batch: ProvideBatch,
    ) -> impl Future<Output = Result<ProvideBatchResponse, RpcError>> + Send {
        let transport = self.transport.clone();
        let peer = peer.clone();
        async move {
            transport
                .provide_batch(&peer, batch)
                .await
                .map_err(rpc_error)
        }
    }
}

/// The [`RpcError`] a [`TransportError`] means to the client.
pub fn rpc_error(error: TransportError) -> RpcError {
    match error {
        TransportError::Timeout => RpcError::Timeout,
        // No connection could be made, or the peer does not serve the DHT: the table drops it.
        e @ (TransportError::Dial(_) | TransportError::UnsupportedProtocol) => {
            RpcError::unreachable(e)
        }
        // Not taken by the peer: the caller falls back to ADD_PROVIDER, nothing against it.
        TransportError::ProvideBatchUnsupported(_) => RpcError::Unsupported(Feature::ProvideBatch),
        TransportError::Codec(CodecError::Truncated)
        | TransportError::BatchCodec(BatchCodecError::Truncated) => RpcError::NoResponse,
        TransportError::UnexpectedResponse { sent, got } => RpcError::UnexpectedResponse {
            expected: sent,
            got,
        },
        e => RpcError::other(e),
    }
}

#[cfg(test)]
mod tests {
    use dht_proto::MessageType;

    use super::*;

    #[test]
    fn transport_errors_map_to_rpc_errors() {
        let check = |error: TransportError, expected: fn(&RpcError) -> bool| {
            let shown = format!("{error:?}");
            let got = rpc_error(error);
            assert!(expected(&got), "{shown} mapped to {got:?}");
        };
        check(TransportError::Timeout, |e| matches!(e, RpcError::Timeout));
        check(TransportError::Dial("refused".into()), |e| {
            matches!(e, RpcError::Unreachable(_))
        });
        check(TransportError::UnsupportedProtocol, |e| {
            matches!(e, RpcError::Unreachable(_))
        });
        // Errors on a live connection only count against the peer.
        check(TransportError::ConnectionClosed, |e| {
            matches!(e, RpcError::Other(_))
        });
        check(
            TransportError::Stream(std::io::Error::other("reset")),
            |e| matches!(e, RpcError::Other(_)),
        );
        check(TransportError::Codec(CodecError::Truncated), |e| {
            matches!(e, RpcError::NoResponse)
        });
        check(TransportError::Codec(CodecError::Malformed("x")), |e| {
            matches!(e, RpcError::Other(_))
        });
        check(
            TransportError::UnexpectedResponse {
                sent: MessageType::FindNode,
                got: MessageType::Ping,
            },
            |e| {
                matches!(
                    e,
                    RpcError::UnexpectedResponse {
                        expected: MessageType::FindNode,
                        got: MessageType::Ping
                    }
                )
            },
        );
        check(
            TransportError::ProvideBatchUnsupported("refused in negotiation"),
            |e| matches!(e, RpcError::Unsupported(Feature::ProvideBatch)),
        );
        check(
            TransportError::BatchCodec(BatchCodecError::Truncated),
            |e| matches!(e, RpcError::NoResponse),
        );
        check(TransportError::Shutdown, |e| {
            matches!(e, RpcError::Other(_))
        });
    }

    #[test]
    fn the_transport_error_stays_the_source() {
        let got = rpc_error(TransportError::Stream(std::io::Error::other("reset")));
        let mut chain = Vec::new();
        let mut next: Option<&dyn std::error::Error> = Some(&got);
        while let Some(e) = next {
            chain.push(e.to_string());
            next = e.source();
        }
        assert_eq!(chain.last().map(String::as_str), Some("reset"), "{chain:?}");
        assert!(
            chain.iter().any(|e| e.starts_with("opening a stream")),
            "{chain:?}"
        );
    }
}
