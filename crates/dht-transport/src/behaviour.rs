//! The [`NetworkBehaviour`] of `/ipfs/kad/1.0.0`: routes requests to connections, dials peers.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use dht_proto::{MessageType, Multiaddr, PeerId, PeerInfo, Request, Response, batch::ProvideBatch};
use libp2p::{
    core::{Endpoint, transport::PortUse},
    swarm::{
        ConnectionClosed, ConnectionDenied, ConnectionId, DialError, DialFailure, FromSwarm,
        NetworkBehaviour, NotifyHandler, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
        behaviour::ConnectionEstablished,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use tokio::sync::oneshot;

use super::{
    book::PeerBook,
    config::{KadConfig, Mode},
    error::TransportError,
    handler::{
        BatchJob, BatchReply, HandlerConfig, HandlerIn, HandlerInKind, KadHandler, OutboundJob,
        Outcome, Reply,
    },
    permits::InboundPermits,
    protocol::InboundHandler,
    stats::{Stats, TransportStats, bump},
};

/// The `/ipfs/kad/1.0.0` protocol as a [`NetworkBehaviour`], to compose into a swarm.
///
/// Outbound: [`KadBehaviour::send_request`] sends a request to a peer over an existing
/// connection, or dials the peer at the given addresses first; streams are reused (see the
/// [crate documentation](crate)). Inbound (in [`Mode::Server`]): requests go to the
/// [`InboundHandler`] given at construction, from the connection's task (record requests on
/// tokio's blocking pool: see [`InboundHandler`]).
///
/// Its connection handlers use tokio's timers: run the swarm on a tokio runtime with time
/// enabled (`SwarmBuilder::with_tokio`).
///
/// It emits no events. Which peers are DHT servers is learnt from identify, which lists the
/// remote's protocols; [`spawn`](crate::spawn) composes this behaviour with identify
/// and ping and reports it.
pub struct KadBehaviour {
    cfg: HandlerConfig,
    mode: Mode,
    /// Dial public addresses only ([`KadConfig::public_addrs_only`]).
    public_addrs_only: bool,
    inbound_handler: Arc<dyn InboundHandler>,
    stats: Arc<Stats>,
    /// Permits for the inbound requests being answered, shared by every connection.
    inbound_permits: Arc<InboundPermits>,
    /// Established connections per peer, oldest first.
    connections: HashMap<PeerId, Vec<ConnectionId>>,
    /// Listen addresses of connected peers, from identify.
    peer_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// What is known first-hand of connected peers, shared with the routing table.
    book: PeerBook,
    /// Requests and batches waiting for a connection to their peer.
    pending: HashMap<PeerId, Vec<HandlerInKind>>,
    actions: VecDeque<ToSwarm<Infallible, HandlerIn>>,
    waker: Option<Waker>,
}

impl KadBehaviour {
    /// A behaviour with these settings whose inbound requests go to `inbound_handler`.
    ///
    /// The batched provide protocol is served (in server mode) when
    /// [`KadConfig::provide_batch`] is on and `inbound_handler`
    /// [serves it](InboundHandler::serves_provide_batch).
    pub fn new(config: &KadConfig, inbound_handler: Arc<dyn InboundHandler>) -> Self {
        let mut cfg = HandlerConfig::from(config);
        cfg.serve_batch &= inbound_handler.serves_provide_batch();
        KadBehaviour {
            cfg,
            mode: config.mode,
            public_addrs_only: config.public_addrs_only,
            inbound_handler,
            stats: Arc::default(),
            inbound_permits: InboundPermits::new(
                config.max_inbound_requests,
                config.max_inbound_requests_per_ip,
            ),
            connections: HashMap::new(),
            peer_addrs: HashMap::new(),
            book: PeerBook::default(),
            pending: HashMap::new(),
            actions: VecDeque::new(),
            waker: None,
        }
    }

    /// Whether the per-IP share of inbound requests
    /// ([`KadConfig::max_inbound_requests_per_ip`]) applies to loopback senders too (default
    /// `false`); [`spawn`](crate::spawn) sets it from
    /// [`ConnectionLimits::limit_loopback`](crate::ConnectionLimits::limit_loopback).
    pub fn set_limit_loopback(&mut self, on: bool) {
        self.inbound_permits.set_limit_loopback(on);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Switches between server and client on every connection. Identify tells connected
    /// peers (a push), since the advertised protocols change.
    pub fn set_mode(&mut self, mode: Mode) {
        if mode == self.mode {
            return;
        }
        self.mode = mode;
        for (peer, conns) in &self.connections {
            for conn in conns {
                self.actions.push_back(ToSwarm::NotifyHandler {
                    peer_id: *peer,
                    handler: NotifyHandler::One(*conn),
                    event: HandlerIn(HandlerInKind::SetMode(mode)),
                });
            }
        }
        self.wake();
    }

    /// Records the listen addresses a connected peer announced (identify's `listen_addrs`),
    /// which the [`InboundHandler`] then sees in [`RemotePeer::peer`](crate::RemotePeer::peer). Forgotten when the
    /// last connection to the peer closes; ignored for peers not connected. At most 32 are kept.
    ///
    /// [`spawn`](crate::spawn) calls it on every identify exchange; a swarm composed
    /// by hand should too.
    pub fn set_peer_addrs(&mut self, peer: PeerId, mut addrs: Vec<Multiaddr>) {
        let Some(conns) = self.connections.get(&peer) else {
            return;
        };
        addrs.truncate(MAX_PEER_ADDRS);
        for conn in conns {
            self.actions.push_back(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(*conn),
                event: HandlerIn(HandlerInKind::RemoteAddrs(addrs.clone())),
            });
        }
        self.book.announced(peer, &addrs);
        self.peer_addrs.insert(peer, addrs);
        self.wake();
    }

    /// The connected peers' connection IPs and announced addresses, as they change: the
    /// [`AddressBook`](dht_routing_table::AddressBook) to give the routing table.
    pub fn peer_book(&self) -> PeerBook {
        self.book.clone()
    }

    /// The counters so far.
    pub fn stats(&self) -> TransportStats {
        self.stats.snapshot()
    }

    pub(crate) fn stats_handle(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Sends `request` to `peer`: over a connection if there is one, else after dialling
    /// `peer.addrs`. The returned future gives the response (`None` for ADD_PROVIDER, which has
    /// none) or the error; dropping it abandons the request.
    pub fn send_request(&mut self, peer: &PeerInfo, request: Request) -> ResponseFuture {
        let (tx, rx) = oneshot::channel();
        self.send_request_with(peer, &request, Reply::One(tx));
        ResponseFuture(rx)
    }

    pub(crate) fn send_request_with(&mut self, peer: &PeerInfo, request: &Request, reply: Reply) {
        let mut frame = Vec::new();
        if let Err(e) = self.cfg.codec.encode_request(request, &mut frame) {
            bump(&self.stats.outbound_requests_failed);
            reply.send(Err(TransportError::Codec(e)));
            return;
        }
        let job = OutboundJob {
            ty: request.message_type(),
            frame,
            reply,
            deadline: None,
            retried: false,
        };
        self.route(peer, HandlerInKind::Request(job));
    }

    /// Sends `peer` an ADD_PROVIDER record for each of `keys`, with `provider` as the
    /// provider: all handed to one connection at once (and written together where they
    /// fit), each reporting its outcome with its index to `reply`.
    pub(crate) fn send_add_providers_with(
        &mut self,
        peer: &PeerInfo,
        provider: PeerInfo,
        keys: Vec<Vec<u8>>,
        reply: &tokio::sync::mpsc::UnboundedSender<(usize, Outcome)>,
    ) {
        let mut request = Request::AddProvider {
            key: Vec::new(),
            providers: vec![provider],
        };
        let mut jobs = Vec::with_capacity(keys.len());
        let mut frame_len = 0;
        for (i, key) in keys.into_iter().enumerate() {
            if let Request::AddProvider { key: k, .. } = &mut request {
                *k = key;
            }
            let mut frame = Vec::with_capacity(frame_len);
            if let Err(e) = self.cfg.codec.encode_request(&request, &mut frame) {
                bump(&self.stats.outbound_requests_failed);
                let _ = reply.send((i, Err(TransportError::Codec(e))));
                continue;
            }
            frame_len = frame.len();
            jobs.push(OutboundJob {
                ty: MessageType::AddProvider,
                frame,
                reply: Reply::Indexed(i, reply.clone()),
                deadline: None,
                retried: false,
            });
        }
        if !jobs.is_empty() {
            self.route(peer, HandlerInKind::Requests(jobs));
        }
    }

    /// Sends `batch` to `peer` on a batch stream of its own (the caller checked that the peer
    /// advertises the protocol): over a connection if there is one, else after dialling.
    pub(crate) fn send_batch_with(
        &mut self,
        peer: &PeerInfo,
        batch: &ProvideBatch,
        reply: BatchReply,
    ) {
        let mut frame = Vec::new();
        if let Err(e) = self.cfg.batch_codec.encode_request(batch, &mut frame) {
            bump(&self.stats.outbound_batches_failed);
            let _ = reply.send(Err(TransportError::BatchCodec(e)));
            return;
        }
        let job = BatchJob {
            frame,
            keys: batch.keys.len(),
            reply,
            deadline: None,
        };
        self.route(peer, HandlerInKind::Batch(job));
    }

    /// Hands `job` to a connection to `peer`, or keeps it until one is dialled.
    fn route(&mut self, peer: &PeerInfo, job: HandlerInKind) {
        let peer_id = peer.peer_id;
        match self.connections.get(&peer_id).and_then(|c| c.first()) {
            Some(conn) => self.actions.push_back(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(*conn),
                event: HandlerIn(job),
            }),
            None => {
                self.pending.entry(peer_id).or_default().push(job);
                let addrs: Vec<Multiaddr> = if self.public_addrs_only {
                    let public: Vec<Multiaddr> = peer
                        .addrs
                        .iter()
                        .filter(|a| dht_handler::is_public_addr(a))
                        .cloned()
                        .collect();
                    if public.len() < peer.addrs.len() {
                        tracing::trace!(peer = %peer_id, "not dialling its non-public addresses");
                    }
                    public
                } else {
                    peer.addrs.clone()
                };
                self.actions.push_back(ToSwarm::Dial {
                    opts: dial_opts(peer_id, &addrs),
                });
            }
        }
        self.wake();
    }

    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    fn new_handler(&self, peer: PeerId, remote: &Multiaddr) -> KadHandler {
        KadHandler::new(
            PeerInfo::new(
                peer,
                self.peer_addrs.get(&peer).cloned().unwrap_or_default(),
            ),
            super::limits::remote_ip(remote),
            self.cfg,
            self.mode,
            self.inbound_handler.clone(),
            self.stats.clone(),
            self.inbound_permits.clone(),
        )
    }

    fn on_dial_failure(&mut self, peer: PeerId, error: &DialError) {
        if matches!(error, DialError::DialPeerConditionFalse(_)) {
            // Already connected or dialling: the other attempt decides.
            return;
        }
        if self.connections.contains_key(&peer) {
            return;
        }
        let Some(jobs) = self.pending.remove(&peer) else {
            return;
        };
        let reason = error.to_string();
        tracing::debug!(%peer, error = %reason, "dial failed");
        let error = || TransportError::Dial(reason.clone());
        for job in jobs {
            match job {
                HandlerInKind::Request(job) => {
                    bump(&self.stats.outbound_requests_failed);
                    job.reply.send(Err(error()));
                }
                HandlerInKind::Requests(jobs) => {
                    for job in jobs {
                        bump(&self.stats.outbound_requests_failed);
                        job.reply.send(Err(error()));
                    }
                }
                HandlerInKind::Batch(job) => {
                    bump(&self.stats.outbound_batches_failed);
                    let _ = job.reply.send(Err(error()));
                }
                HandlerInKind::SetMode(_) | HandlerInKind::RemoteAddrs(_) => {}
            }
        }
    }
}

/// The most listen addresses kept per peer.
const MAX_PEER_ADDRS: usize = 32;

/// Dial `peer` at `addrs` unless it is already connected or being dialled.
pub(crate) fn dial_opts(peer: PeerId, addrs: &[Multiaddr]) -> DialOpts {
    DialOpts::peer_id(peer)
        .addresses(addrs.to_vec())
        .condition(PeerCondition::DisconnectedAndNotDialing)
        .build()
}

/// The outcome of [`KadBehaviour::send_request`]: the response (`None` for ADD_PROVIDER) or
/// the error.
#[derive(Debug)]
pub struct ResponseFuture(oneshot::Receiver<Result<Option<Response>, TransportError>>);

impl Future for ResponseFuture {
    type Output = Result<Option<Response>, TransportError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(TransportError::ConnectionClosed)))
    }
}

impl NetworkBehaviour for KadBehaviour {
    type ConnectionHandler = KadHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.new_handler(peer, remote))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(self.new_handler(peer, addr))
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            }) => {
                self.book.connected(peer_id, endpoint.get_remote_address());
                self.connections
                    .entry(peer_id)
                    .or_default()
                    .push(connection_id);
                for job in self.pending.remove(&peer_id).unwrap_or_default() {
                    self.actions.push_back(ToSwarm::NotifyHandler {
                        peer_id,
                        handler: NotifyHandler::One(connection_id),
                        event: HandlerIn(job),
                    });
                }
                self.wake();
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => {
                if let Some(conns) = self.connections.get_mut(&peer_id) {
                    conns.retain(|c| *c != connection_id);
                    if conns.is_empty() {
                        self.connections.remove(&peer_id);
                        self.peer_addrs.remove(&peer_id);
                        self.book.disconnected(&peer_id);
                    }
                }
            }
            FromSwarm::DialFailure(DialFailure {
                peer_id: Some(peer),
                error,
                ..
            }) => self.on_dial_failure(peer, error),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        if let Some(action) = self.actions.pop_front() {
            return Poll::Ready(action);
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use dht_proto::Codec;

    use super::*;

    #[tokio::test]
    async fn an_oversized_request_fails_before_any_dial() {
        let handler = crate::protocol::handler_fn(|_, _| Ok(None));
        let mut kad = KadBehaviour::new(&KadConfig::default().with_max_message_size(16), handler);
        let peer = PeerInfo::new(PeerId::random(), vec![]);
        let out = kad
            .send_request(&peer, Request::FindNode { key: vec![0; 64] })
            .await;
        assert!(matches!(
            out,
            Err(TransportError::Codec(
                dht_proto::CodecError::Oversized { .. }
            ))
        ));
        assert!(
            kad.actions.is_empty(),
            "no dial for a request that cannot be sent"
        );
        assert_eq!(kad.stats().outbound_requests_failed, 1);
    }

    #[test]
    fn codec_limit_follows_the_config() {
        let handler = crate::protocol::handler_fn(|_, _| Ok(None));
        let kad = KadBehaviour::new(&KadConfig::default(), handler);
        assert_eq!(kad.cfg.codec, Codec::default());
    }
}
