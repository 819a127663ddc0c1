//! The swarm (TCP + noise + yamux; kad + identify + ping) on a tokio task, and its handle.

use std::{
    collections::{HashMap, HashSet},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use dht_proto::{
    Multiaddr, PeerId, PeerInfo, Request, Response,
    batch::{ProvideBatch, ProvideBatchResponse},
};
use dht_routing::Feature;
use futures::StreamExt;
use libp2p::{
    Swarm, SwarmBuilder, identify,
    identity::Keypair,
    noise, ping,
    swarm::{NetworkBehaviour, SwarmEvent},
    tcp, yamux,
};
use tokio::sync::{mpsc, oneshot};

use super::{
    behaviour::{KadBehaviour, dial_opts},
    book::PeerBook,
    config::{Mode, TransportConfig},
    error::TransportError,
    handler::{Outcome, Reply},
    limits::IpLimits,
    protocol::{InboundHandler, KAD_PROTOCOL},
    stats::{Stats, TransportStats},
};

/// The identify protocol version of the IPFS network.
pub const IDENTIFY_PROTOCOL_VERSION: &str = "ipfs/0.1.0";

/// How many events wait for [`TransportEvents`] before new ones are dropped.
const EVENT_CAPACITY: usize = 4096;
/// How many commands wait for the transport task.
const COMMAND_CAPACITY: usize = 1024;

#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
struct NodeBehaviour {
    // The limits come first: a connection they refuse reaches no other behaviour.
    limits: libp2p::connection_limits::Behaviour,
    ip_limits: IpLimits,
    kad: KadBehaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

/// Something the transport learnt about a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportEvent {
    /// Identify says the peer serves `/ipfs/kad/1.0.0`: a DHT server, which may enter the
    /// routing table. Its addresses are the listen addresses it announced. Repeated on every
    /// identify exchange (each new connection, each identify push).
    PeerIsServer(PeerInfo),
    /// Identify says the peer does not serve `/ipfs/kad/1.0.0` (a DHT client, or a node that
    /// switched to client mode): it must not be in the routing table.
    PeerIsClient(PeerId),
    /// The last connection to the peer closed.
    PeerDisconnected(PeerId),
}

/// The stream of [`TransportEvent`]s of one transport.
///
/// Events are kept in a bounded buffer; when it is full (nobody reads), new events are dropped
/// with a warning rather than slowing the transport down.
#[derive(Debug)]
pub struct TransportEvents(mpsc::Receiver<TransportEvent>);

impl TransportEvents {
    /// The next event; `None` once the transport has stopped.
    pub async fn recv(&mut self) -> Option<TransportEvent> {
        self.0.recv().await
    }
}

impl futures::Stream for TransportEvents {
    type Item = TransportEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TransportEvent>> {
        self.0.poll_recv(cx)
    }
}

#[derive(Debug)]
enum Command {
    Request {
        peer: PeerInfo,
        request: Request,
        reply: oneshot::Sender<Result<Option<Response>, TransportError>>,
    },
    AddProviders {
        peer: PeerInfo,
        provider: PeerInfo,
        keys: Vec<Vec<u8>>,
        reply: mpsc::UnboundedSender<(usize, Outcome)>,
    },
    ProvideBatch {
        peer: PeerInfo,
        batch: ProvideBatch,
        reply: oneshot::Sender<Result<ProvideBatchResponse, TransportError>>,
    },
    Dial {
        peer: PeerInfo,
        reply: oneshot::Sender<Result<(), TransportError>>,
    },
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    ConnectedPeers(oneshot::Sender<Vec<PeerId>>),
    SetMode(Mode),
    Shutdown,
}

/// A cloneable handle on a running transport.
///
/// The transport task stops when [`TransportHandle::shutdown`] is called or every handle is
/// dropped; later calls then fail with [`TransportError::Shutdown`].
#[derive(Clone, Debug)]
pub struct TransportHandle {
    commands: mpsc::Sender<Command>,
    local_peer_id: PeerId,
    stats: Arc<Stats>,
    book: PeerBook,
    /// Upper bound on one `request` call: dial, stream and exchange.
    request_guard: Duration,
    dial_guard: Duration,
    /// Whether batches are sent ([`KadConfig::provide_batch`](crate::KadConfig::provide_batch)).
    provide_batch: bool,
}

impl TransportHandle {
    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// What the transport knows first-hand of connected peers (see [`PeerBook`]).
    pub fn peer_book(&self) -> PeerBook {
        self.book.clone()
    }

    /// Sends `request` to `peer` and waits for its response; `Ok(None)` for ADD_PROVIDER,
    /// which has no response, once it is written.
    ///
    /// Uses an existing connection to the peer, else dials `peer.addrs`. Sequential requests
    /// to one peer reuse one connection and one stream. Bounded in time by the dial timeout
    /// plus the request timeout.
    pub async fn request(
        &self,
        peer: &PeerInfo,
        request: Request,
    ) -> Result<Option<Response>, TransportError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Request {
            peer: peer.clone(),
            request,
            reply,
        })
        .await?;
        match tokio::time::timeout(self.request_guard, rx).await {
            Err(_) => Err(TransportError::Timeout),
            Ok(Err(_)) => Err(TransportError::ConnectionClosed),
            Ok(Ok(result)) => result,
        }
    }

    /// Sends `peer` an ADD_PROVIDER record for each of `keys` (the key of each), with
    /// `provider` as the provider, and yields each key's index with its outcome as it is
    /// known: `Ok(None)` once the record is written. The records go to one connection in
    /// one command, are written together where they fit, and each fails on its own (within
    /// the request timeout). The stream ends when every key has reported, or early, with
    /// the rest unreported, if the transport stops.
    pub fn add_providers(
        &self,
        peer: &PeerInfo,
        provider: &PeerInfo,
        keys: Vec<Vec<u8>>,
    ) -> impl futures::Stream<Item = (usize, Result<Option<Response>, TransportError>)> + Send + 'static
    {
        let (reply, outcomes) = mpsc::unbounded_channel();
        let command = Command::AddProviders {
            peer: peer.clone(),
            provider: provider.clone(),
            keys,
            reply,
        };
        let commands = self.commands.clone();
        // The command goes first; its channel ends once every record has reported (or
        // the command was dropped).
        let sent = futures::stream::once(async move {
            let _ = commands.send(command).await;
        })
        .filter_map(|()| std::future::ready(None));
        sent.chain(futures::stream::unfold(outcomes, |mut rx| async move {
            rx.recv().await.map(|outcome| (outcome, rx))
        }))
    }

    /// Whether `peer` is known to support `feature`: it listed the feature's protocol in its
    /// latest identify (on a connection still open), and this node uses the feature
    /// ([`KadConfig::provide_batch`](crate::KadConfig::provide_batch) for
    /// [`Feature::ProvideBatch`]).
    pub fn supports(&self, peer: &PeerId, feature: Feature) -> bool {
        self.uses(feature) && self.book.supports(peer, feature)
    }

    /// Whether this node uses `feature`: serves and sends the batched provide protocol
    /// ([`KadConfig::provide_batch`](crate::KadConfig::provide_batch)) for
    /// [`Feature::ProvideBatch`].
    pub fn uses(&self, feature: Feature) -> bool {
        match feature {
            Feature::ProvideBatch => self.provide_batch,
            _ => false,
        }
    }

    /// Sends `peer` one batch of the batched provide protocol and waits for its answer,
    /// which says per key whether the record is stored (and durable).
    ///
    /// Sent only to a peer that [`supports`](Self::supports) [`Feature::ProvideBatch`]; to
    /// any other, and when the peer refuses the protocol in negotiation, it fails with
    /// [`TransportError::ProvideBatchUnsupported`] (and a refusing peer is not sent batches
    /// again until its next identify lists the protocol): send the keys as ADD_PROVIDER.
    /// The batch goes on a stream of its own, within the request timeout.
    pub async fn provide_batch(
        &self,
        peer: &PeerInfo,
        batch: ProvideBatch,
    ) -> Result<ProvideBatchResponse, TransportError> {
        if !self.provide_batch {
            return Err(TransportError::ProvideBatchUnsupported(
                "turned off on this node",
            ));
        }
        if !self.book.supports(&peer.peer_id, Feature::ProvideBatch) {
            return Err(TransportError::ProvideBatchUnsupported(
                "not listed in the peer's identify",
            ));
        }
        let (reply, rx) = oneshot::channel();
        self.send(Command::ProvideBatch {
            peer: peer.clone(),
            batch,
            reply,
        })
        .await?;
        let result = match tokio::time::timeout(self.request_guard, rx).await {
            Err(_) => Err(TransportError::Timeout),
            Ok(Err(_)) => Err(TransportError::ConnectionClosed),
            Ok(Ok(result)) => result,
        };
        if let Err(TransportError::ProvideBatchUnsupported(_)) = &result {
            self.book.refused(&peer.peer_id, Feature::ProvideBatch);
        }
        result
    }

    /// Connects to `peer` (if not connected yet) at `peer.addrs`.
    pub async fn dial(&self, peer: &PeerInfo) -> Result<(), TransportError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Dial {
            peer: peer.clone(),
            reply,
        })
        .await?;
        match tokio::time::timeout(self.dial_guard, rx).await {
            Err(_) => Err(TransportError::Timeout),
            Ok(Err(_)) => Err(TransportError::Shutdown),
            Ok(Ok(result)) => result,
        }
    }

    /// The addresses the transport listens on (with the ports actually bound).
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, TransportError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::ListenAddrs(reply)).await?;
        rx.await.map_err(|_| TransportError::Shutdown)
    }

    /// The peers with at least one open connection.
    pub async fn connected_peers(&self) -> Result<Vec<PeerId>, TransportError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::ConnectedPeers(reply)).await?;
        rx.await.map_err(|_| TransportError::Shutdown)
    }

    /// Switches between DHT server and client (identify tells connected peers).
    pub async fn set_mode(&self, mode: Mode) -> Result<(), TransportError> {
        self.send(Command::SetMode(mode)).await
    }

    /// The kad protocol's counters so far.
    pub fn stats(&self) -> TransportStats {
        self.stats.snapshot()
    }

    /// Stops the transport: closes every connection and listener.
    pub async fn shutdown(&self) {
        let _ = self.send(Command::Shutdown).await;
    }

    async fn send(&self, command: Command) -> Result<(), TransportError> {
        self.commands
            .send(command)
            .await
            .map_err(|_| TransportError::Shutdown)
    }
}

/// Starts the transport on the current tokio runtime (time and I/O enabled): builds the swarm (TCP + noise + yamux;
/// kad, identify with protocol version `ipfs/0.1.0`, ping), listens on the configured addresses
/// and spawns the task that drives it.
///
/// Returns once every listener is bound, so [`TransportHandle::listen_addrs`] gives the real
/// ports at once. Inbound kad requests go to `inbound_handler` (in server mode).
pub async fn spawn(
    keypair: Keypair,
    config: TransportConfig,
    inbound_handler: Arc<dyn InboundHandler>,
) -> Result<(TransportHandle, TransportEvents), TransportError> {
    let mut kad = KadBehaviour::new(&config.kad, inbound_handler);
    kad.set_limit_loopback(config.limits.limit_loopback);
    let stats = kad.stats_handle();
    let book = kad.peer_book();
    let identify_config =
        identify::Config::new(IDENTIFY_PROTOCOL_VERSION.to_owned(), keypair.public())
            .with_agent_version(config.agent_version.clone());
    let dns_config =
        super::dns::resolver_config(std::path::Path::new(super::dns::SYSTEM_RESOLV_CONF));
    let mut swarm = SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| TransportError::Setup(Box::new(e)))?
        // QUIC beside TCP (`/udp/…/quic-v1`), as Kubo: most of the network's peers speak it.
        .with_quic()
        // `/dns`, `/dns4`, `/dns6` and `/dnsaddr` addresses are resolved with the system's
        // resolver configuration (as Kubo does): five of the six Amino bootstrap peers are
        // `/dnsaddr`. Without one, public resolvers (see `dns`).
        .with_dns_config(dns_config.0, dns_config.1)
        .with_behaviour(|_| NodeBehaviour {
            limits: config.limits.libp2p_behaviour(),
            ip_limits: IpLimits::new(&config.limits),
            kad,
            identify: identify::Behaviour::new(identify_config),
            ping: ping::Behaviour::default(),
        })
        .map_err(|e| TransportError::Setup(Box::new(e)))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_connection_timeout))
        .with_connection_timeout(config.dial_timeout)
        .build();

    let mut listeners = HashMap::new();
    for addr in &config.listen_addrs {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| TransportError::Listen {
                addr: addr.clone(),
                source: std::io::Error::other(e),
            })?;
        listeners.insert(id, addr.clone());
    }
    wait_for_listeners(&mut swarm, listeners).await?;
    for addr in &config.external_addrs {
        swarm.add_external_address(addr.clone());
    }

    let local_peer_id = *swarm.local_peer_id();
    let (commands, command_rx) = mpsc::channel(COMMAND_CAPACITY);
    let (events_tx, events_rx) = mpsc::channel(EVENT_CAPACITY);
    let driver = Driver {
        swarm,
        commands: command_rx,
        events: events_tx,
        dial_waiters: HashMap::new(),
    };
    tokio::spawn(driver.run());
    tracing::info!(peer = %local_peer_id, "transport started");
    let handle = TransportHandle {
        commands,
        local_peer_id,
        stats,
        book,
        request_guard: config
            .dial_timeout
            .saturating_add(config.kad.request_timeout)
            .saturating_add(GUARD_SLACK),
        dial_guard: config.dial_timeout.saturating_add(GUARD_SLACK),
        provide_batch: config.kad.provide_batch,
    };
    Ok((handle, TransportEvents(events_rx)))
}

/// Added to the handle's time bounds so that the inner timeouts, which give precise errors,
/// fire first.
const GUARD_SLACK: Duration = Duration::from_secs(1);

/// How long `spawn` waits for the listeners to bind.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

async fn wait_for_listeners(
    swarm: &mut Swarm<NodeBehaviour>,
    mut waiting: HashMap<libp2p::core::transport::ListenerId, Multiaddr>,
) -> Result<(), TransportError> {
    let wait = async {
        while !waiting.is_empty() {
            match swarm.select_next_some().await {
                SwarmEvent::NewListenAddr {
                    listener_id,
                    address,
                } => {
                    tracing::info!(%address, "listening");
                    waiting.remove(&listener_id);
                }
                SwarmEvent::ListenerClosed {
                    listener_id,
                    reason,
                    ..
                } => {
                    if let Some(addr) = waiting.remove(&listener_id) {
                        let source = reason.err().unwrap_or_else(|| {
                            std::io::Error::new(
                                std::io::ErrorKind::ConnectionAborted,
                                "the listener closed",
                            )
                        });
                        return Err(TransportError::Listen { addr, source });
                    }
                }
                SwarmEvent::ListenerError { listener_id, error } => {
                    if let Some(addr) = waiting.remove(&listener_id) {
                        return Err(TransportError::Listen {
                            addr,
                            source: error,
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(())
    };
    let result = tokio::time::timeout(LISTEN_TIMEOUT, wait).await;
    result.unwrap_or_else(|_| {
        Err(TransportError::Listen {
            addr: waiting
                .into_values()
                .next()
                .unwrap_or_else(Multiaddr::empty),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "no address bound in time"),
        })
    })
}

struct Driver {
    swarm: Swarm<NodeBehaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<TransportEvent>,
    dial_waiters: HashMap<PeerId, Vec<oneshot::Sender<Result<(), TransportError>>>>,
}

impl Driver {
    async fn run(mut self) {
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    None | Some(Command::Shutdown) => break,
                    Some(command) => self.on_command(command),
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
            }
        }
        tracing::info!(peer = %self.swarm.local_peer_id(), "transport stopped");
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Request {
                peer,
                request,
                reply,
            } => {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .send_request_with(&peer, &request, Reply::One(reply))
            }
            Command::AddProviders {
                peer,
                provider,
                keys,
                reply,
            } => self
                .swarm
                .behaviour_mut()
                .kad
                .send_add_providers_with(&peer, provider, keys, &reply),
            Command::ProvideBatch { peer, batch, reply } => self
                .swarm
                .behaviour_mut()
                .kad
                .send_batch_with(&peer, &batch, reply),
            Command::Dial { peer, reply } => self.dial(peer, reply),
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::ConnectedPeers(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::SetMode(mode) => self.swarm.behaviour_mut().kad.set_mode(mode),
            Command::Shutdown => {}
        }
    }

    fn dial(&mut self, peer: PeerInfo, reply: oneshot::Sender<Result<(), TransportError>>) {
        if self.swarm.is_connected(&peer.peer_id) {
            let _ = reply.send(Ok(()));
            return;
        }
        match self.swarm.dial(dial_opts(peer.peer_id, &peer.addrs)) {
            Ok(()) => {}
            // Already dialling: wait for that attempt.
            Err(libp2p::swarm::DialError::DialPeerConditionFalse(_)) => {}
            Err(e) => {
                let _ = reply.send(Err(TransportError::Dial(e.to_string())));
                return;
            }
        }
        self.dial_waiters
            .entry(peer.peer_id)
            .or_default()
            .push(reply);
    }

    fn emit(&self, event: TransportEvent) {
        if let Err(e) = self.events.try_send(event) {
            match e {
                mpsc::error::TrySendError::Full(event) => {
                    tracing::warn!(?event, "transport event buffer full: event dropped");
                }
                mpsc::error::TrySendError::Closed(_) => {}
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<NodeBehaviourEvent>) {
        match event {
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                for waiter in self.dial_waiters.remove(&peer_id).unwrap_or_default() {
                    let _ = waiter.send(Ok(()));
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                error,
                ..
            } if !self.swarm.is_connected(&peer) => {
                let reason = error.to_string();
                for waiter in self.dial_waiters.remove(&peer).unwrap_or_default() {
                    let _ = waiter.send(Err(TransportError::Dial(reason.clone())));
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => self.emit(TransportEvent::PeerDisconnected(peer_id)),
            SwarmEvent::Behaviour(NodeBehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                let server = info.protocols.contains(&KAD_PROTOCOL);
                tracing::debug!(
                    peer = %peer_id,
                    server,
                    agent = %info.agent_version,
                    "identified peer"
                );
                self.swarm
                    .behaviour()
                    .kad
                    .peer_book()
                    .identified(peer_id, info.protocols.iter().map(|p| p.as_ref()));
                let addrs = dedup(info.listen_addrs);
                self.swarm
                    .behaviour_mut()
                    .kad
                    .set_peer_addrs(peer_id, addrs.clone());
                let event = if server {
                    TransportEvent::PeerIsServer(PeerInfo::new(peer_id, addrs))
                } else {
                    TransportEvent::PeerIsClient(peer_id)
                };
                self.emit(event);
            }
            SwarmEvent::Behaviour(NodeBehaviourEvent::Ping(ping::Event {
                peer,
                result: Err(error),
                ..
            })) => tracing::trace!(%peer, %error, "ping failed"),
            SwarmEvent::NewListenAddr { address, .. } => tracing::info!(%address, "listening"),
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!(%error, "listener error")
            }
            _ => {}
        }
    }
}

fn dedup(addrs: Vec<Multiaddr>) -> Vec<Multiaddr> {
    let mut seen = HashSet::new();
    addrs
        .into_iter()
        .filter(|a| seen.insert(a.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dht-routing's `Network` needs `Send` futures and a `Send + Sync` implementor.
    #[allow(dead_code)]
    fn handle_futures_are_send(handle: &TransportHandle, peer: &PeerInfo) {
        fn is_send<T: Send>(_: &T) {}
        fn is_send_sync_clone<T: Send + Sync + Clone>(_: &T) {}
        is_send_sync_clone(handle);
        is_send(&handle.request(peer, Request::Ping));
        is_send(&handle.dial(peer));
        is_send(&handle.provide_batch(
            peer,
            ProvideBatch {
                provider: peer.clone(),
                keys: Vec::new(),
            },
        ));
    }

    #[test]
    fn duplicate_addresses_are_dropped_in_order() {
        let a: Multiaddr = "/ip4/1.2.3.4/tcp/1".parse().expect("valid");
        let b: Multiaddr = "/ip4/1.2.3.4/tcp/2".parse().expect("valid");
        let got = dedup(vec![a.clone(), b.clone(), a.clone(), b.clone()]);
        assert_eq!(got, vec![a, b]);
    }
}
