//! Helpers shared by the transport tests: nodes on 127.0.0.1 with a recording handler.

#![allow(dead_code, unreachable_pub)]

mod bound;
pub mod process;
mod raw;

#[allow(unused_imports)]
pub use raw::RawPeer;

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use dht_node::transport::{
    HandlerError, KadConfig, RemotePeer, TransportConfig, TransportEvent, TransportEvents,
    TransportHandle, handler_fn, spawn,
};
use dht_proto::{Multiaddr, PeerId, PeerInfo, Request, Response};
use libp2p::identity::Keypair;

/// Every test step is bounded by this.
pub const STEP: Duration = Duration::from_secs(20);

/// Awaits `fut`, failing the test if it takes longer than [`STEP`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

pub type Answer = dyn Fn(PeerId, &Request) -> Result<Option<Response>, HandlerError> + Send + Sync;

/// A running node and what its handler saw.
pub struct Node {
    pub handle: TransportHandle,
    pub events: TransportEvents,
    pub info: PeerInfo,
    pub seen: Arc<Mutex<Vec<(PeerId, Request)>>>,
    /// The sender of each request in `seen`, as the transport described it.
    pub senders: Arc<Mutex<Vec<RemotePeer>>>,
}

impl Node {
    /// A node on 127.0.0.1 whose handler records each request and answers with `answer`.
    pub async fn start(kad: KadConfig, answer: Arc<Answer>) -> Node {
        Node::start_with(TransportConfig::default().with_kad(kad), answer).await
    }

    /// Like [`Node::start`] with more settings; the listen address is replaced by 127.0.0.1.
    pub async fn start_with(config: TransportConfig, answer: Arc<Answer>) -> Node {
        Node::start_listening(config, answer, vec![loopback()]).await
    }

    /// Like [`Node::start_with`], listening on `listen` (127.0.0.1 addresses).
    pub async fn start_listening(
        config: TransportConfig,
        answer: Arc<Answer>,
        listen: Vec<Multiaddr>,
    ) -> Node {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let senders = Arc::new(Mutex::new(Vec::new()));
        let (log, log_senders) = (seen.clone(), senders.clone());
        let handler = handler_fn(move |from, request| {
            let peer = from.peer.peer_id;
            let out = answer(peer, &request);
            log.lock().expect("lock").push((peer, request));
            log_senders.lock().expect("lock").push(from.clone());
            out
        });
        let config = config.with_listen_addrs(listen);
        let (handle, events) = within("spawn", spawn(Keypair::generate_ed25519(), config, handler))
            .await
            .expect("transport starts");
        let addrs = handle.listen_addrs().await.expect("listen addrs");
        assert!(!addrs.is_empty());
        let info = PeerInfo::new(handle.local_peer_id(), addrs);
        Node {
            handle,
            events,
            info,
            seen,
            senders,
        }
    }

    /// A node with the default settings that answers like [`default_answer`].
    pub async fn server() -> Node {
        Node::start(KadConfig::default(), Arc::new(default_answer)).await
    }

    pub fn seen(&self) -> Vec<(PeerId, Request)> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn senders(&self) -> Vec<RemotePeer> {
        self.senders.lock().expect("lock").clone()
    }

    /// Waits for an event `pick` accepts.
    pub async fn event<T>(&mut self, mut pick: impl FnMut(TransportEvent) -> Option<T>) -> T {
        within("transport event", async {
            loop {
                let event = self.events.recv().await.expect("transport running");
                if let Some(v) = pick(event) {
                    return v;
                }
            }
        })
        .await
    }
}

pub fn loopback() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")
}

/// A peer that nobody runs, at an address where nothing listens.
pub fn unreachable_peer() -> PeerInfo {
    PeerInfo::new(
        PeerId::random(),
        vec!["/ip4/127.0.0.1/tcp/1".parse().expect("valid multiaddr")],
    )
}

/// The peers [`default_answer`] returns for FIND_NODE.
pub fn some_peers(n: usize) -> Vec<PeerInfo> {
    (0..n).map(|_| unreachable_peer()).collect()
}

/// Answers every request with a plausible response of its type; FIND_NODE returns three fixed
/// peers derived from the key length so the caller can check them.
pub fn default_answer(_: PeerId, request: &Request) -> Result<Option<Response>, HandlerError> {
    Ok(match request {
        Request::FindNode { .. } => Some(Response::FindNode {
            closer_peers: fixed_peers(),
        }),
        Request::GetProviders { key } => Some(Response::GetProviders {
            key: key.clone(),
            providers: Vec::new(),
            closer_peers: Vec::new(),
        }),
        Request::GetValue { key } => Some(Response::GetValue {
            key: key.clone(),
            record: None,
            closer_peers: Vec::new(),
        }),
        Request::PutValue { record } => Some(Response::PutValue {
            record: record.clone(),
        }),
        Request::Ping => Some(Response::Ping),
        Request::AddProvider { .. } => None,
    })
}

/// Three peers with deterministic ids (from fixed ed25519 seeds).
pub fn fixed_peers() -> Vec<PeerInfo> {
    (1u8..=3)
        .map(|i| {
            let kp = Keypair::ed25519_from_bytes([i; 32]).expect("valid seed");
            PeerInfo::new(
                kp.public().to_peer_id(),
                vec![format!("/ip4/10.0.0.{i}/tcp/4001").parse().expect("valid")],
            )
        })
        .collect()
}
