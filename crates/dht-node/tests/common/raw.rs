//! A hostile peer for tests: a bare libp2p swarm (TCP + noise + yamux) that opens connections
//! and raw `/ipfs/kad/1.0.0` streams (or streams of another protocol), on which the test writes
//! whatever bytes it likes.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    net::IpAddr,
    task::{Context, Poll},
};

use dht_proto::{PROTOCOL_NAME, PeerId, PeerInfo};
use futures::StreamExt;
use libp2p::{
    Multiaddr, Stream, StreamProtocol, Swarm, SwarmBuilder, Transport,
    core::{
        Endpoint,
        transport::PortUse,
        upgrade::{DeniedUpgrade, ReadyUpgrade, Version},
    },
    identity::Keypair,
    noise,
    swarm::{
        ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
        NetworkBehaviour, NotifyHandler, SubstreamProtocol, SwarmEvent, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm,
        dial_opts::{DialOpts, PeerCondition},
        handler::{ConnectionEvent, DialUpgradeError, FullyNegotiatedOutbound},
    },
    tcp, yamux,
};
use tokio::sync::{mpsc, oneshot};

use super::within;

type StreamReply = oneshot::Sender<Result<Stream, String>>;

/// A stream to open: its protocol and where it goes.
type StreamAsk = (StreamProtocol, StreamReply);

/// Opens streams on one connection and hands them out, in the order asked.
#[derive(Default)]
struct RawHandler {
    to_open: VecDeque<StreamAsk>,
    opening: VecDeque<StreamReply>,
}

impl ConnectionHandler for RawHandler {
    type FromBehaviour = StreamAsk;
    type ToBehaviour = Infallible;
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<DeniedUpgrade> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        true
    }

    fn poll(
        &mut self,
        _: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<ReadyUpgrade<StreamProtocol>, (), Infallible>> {
        match self.to_open.pop_front() {
            Some((protocol, reply)) => {
                self.opening.push_back(reply);
                Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                    protocol: SubstreamProtocol::new(ReadyUpgrade::new(protocol), ()),
                })
            }
            None => Poll::Pending,
        }
    }

    fn on_behaviour_event(&mut self, ask: StreamAsk) {
        self.to_open.push_back(ask);
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<'_, DeniedUpgrade, ReadyUpgrade<StreamProtocol>, (), ()>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                ..
            }) => {
                if let Some(reply) = self.opening.pop_front() {
                    let _ = reply.send(Ok(stream));
                }
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => {
                if let Some(reply) = self.opening.pop_front() {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            _ => {}
        }
    }
}

#[derive(Default)]
struct RawBehaviour {
    actions: VecDeque<ToSwarm<Infallible, StreamAsk>>,
}

impl NetworkBehaviour for RawBehaviour {
    type ConnectionHandler = RawHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(RawHandler::default())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(RawHandler::default())
    }

    fn on_swarm_event(&mut self, _: FromSwarm<'_>) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        match self.actions.pop_front() {
            Some(action) => Poll::Ready(action),
            None => Poll::Pending,
        }
    }
}

enum Command {
    Connect(PeerInfo, oneshot::Sender<Result<(), String>>),
    Open(PeerId, StreamProtocol, StreamReply),
    OpenConnections(oneshot::Sender<usize>),
}

/// A peer with its own identity that does nothing by itself: each [`RawPeer::connect`] opens
/// one more connection (even to a peer it is connected to already), each [`RawPeer::open`]
/// one more kad stream. Stops when dropped.
pub struct RawPeer {
    commands: mpsc::UnboundedSender<Command>,
    /// Its peer id.
    pub peer_id: PeerId,
}

impl RawPeer {
    /// Starts a hostile peer with a fresh identity, dialling over TCP or QUIC.
    pub fn start() -> RawPeer {
        let swarm = SwarmBuilder::with_existing_identity(Keypair::generate_ed25519())
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .expect("tcp transport")
            .with_quic()
            .with_behaviour(|_| RawBehaviour::default())
            .expect("behaviour")
            .build();
        RawPeer::run(swarm)
    }

    /// Starts a peer with a fresh identity whose connections come from `source` (see
    /// [`BoundTcp`](super::bound::BoundTcp)).
    pub fn start_from(source: IpAddr) -> RawPeer {
        let swarm = SwarmBuilder::with_existing_identity(Keypair::generate_ed25519())
            .with_tokio()
            .with_other_transport(|key| {
                super::bound::BoundTcp { source }
                    .upgrade(Version::V1)
                    .authenticate(noise::Config::new(key).expect("noise keys"))
                    .multiplex(yamux::Config::default())
            })
            .expect("bound tcp transport")
            .with_behaviour(|_| RawBehaviour::default())
            .expect("behaviour")
            .build();
        RawPeer::run(swarm)
    }

    fn run(mut swarm: Swarm<RawBehaviour>) -> RawPeer {
        let peer_id = *swarm.local_peer_id();
        let (commands, mut rx) = mpsc::unbounded_channel::<Command>();
        tokio::spawn(async move {
            let mut dialling: HashMap<ConnectionId, oneshot::Sender<Result<(), String>>> =
                HashMap::new();
            let mut open = 0usize;
            loop {
                tokio::select! {
                    command = rx.recv() => match command {
                        None => break,
                        Some(Command::Connect(peer, reply)) => {
                            let opts = DialOpts::peer_id(peer.peer_id)
                                .addresses(peer.addrs)
                                .condition(PeerCondition::Always)
                                .build();
                            let id = opts.connection_id();
                            match swarm.dial(opts) {
                                Ok(()) => {
                                    dialling.insert(id, reply);
                                }
                                Err(e) => {
                                    let _ = reply.send(Err(e.to_string()));
                                }
                            }
                        }
                        Some(Command::Open(peer, protocol, reply)) => {
                            swarm.behaviour_mut().actions.push_back(ToSwarm::NotifyHandler {
                                peer_id: peer,
                                handler: NotifyHandler::Any,
                                event: (protocol, reply),
                            });
                        }
                        Some(Command::OpenConnections(reply)) => {
                            let _ = reply.send(open);
                        }
                    },
                    event = swarm.select_next_some() => match event {
                        SwarmEvent::ConnectionEstablished { connection_id, .. } => {
                            open += 1;
                            if let Some(reply) = dialling.remove(&connection_id) {
                                let _ = reply.send(Ok(()));
                            }
                        }
                        SwarmEvent::ConnectionClosed { .. } => open -= 1,
                        SwarmEvent::OutgoingConnectionError { connection_id, error, .. } => {
                            if let Some(reply) = dialling.remove(&connection_id) {
                                let _ = reply.send(Err(error.to_string()));
                            }
                        }
                        _ => {}
                    },
                }
            }
        });
        RawPeer { commands, peer_id }
    }

    /// Opens one more connection to `peer`: `Err` when the dial or its handshake fails.
    pub async fn connect(&self, peer: &PeerInfo) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        let _ = self.commands.send(Command::Connect(peer.clone(), reply));
        within("raw connect", rx).await.expect("raw peer running")
    }

    /// Opens a kad stream to `peer` on one of the open connections (`Err` when none is).
    pub async fn open(&self, peer: PeerId) -> Result<Stream, String> {
        self.open_protocol(peer, PROTOCOL_NAME).await
    }

    /// Opens a stream of `protocol` to `peer` on one of the open connections: `Err` when
    /// the peer refuses the protocol in negotiation.
    pub async fn open_protocol(
        &self,
        peer: PeerId,
        protocol: &'static str,
    ) -> Result<Stream, String> {
        let (reply, rx) = oneshot::channel();
        let _ = self
            .commands
            .send(Command::Open(peer, StreamProtocol::new(protocol), reply));
        // The swarm drops the request (and its reply) when no connection to `peer` is open.
        within("raw stream", rx)
            .await
            .unwrap_or_else(|_| Err(format!("no connection to {peer} is open")))
    }

    /// How many connections are open now.
    pub async fn open_connections(&self) -> usize {
        let (reply, rx) = oneshot::channel();
        let _ = self.commands.send(Command::OpenConnections(reply));
        within("raw connections", rx)
            .await
            .expect("raw peer running")
    }
}
