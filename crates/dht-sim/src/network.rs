//! The in-memory network: [`NodeNetwork`], one node's view of it.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use dht_handler::Sender;
use dht_proto::{
    K_VALUE, Key, MessageType, PeerId, PeerInfo, Request, Response,
    batch::{KeyStatus, ProvideBatch, ProvideBatchResponse},
};
use dht_routing::{Feature, Network, RpcError};
use dht_routing_table::{Direction, PeerEvent};
use rand::{Rng, RngCore, SeedableRng, rngs::SmallRng};
use serde::Serialize;

use crate::{
    Behaviour,
    node::SimNode,
    sim::{SimInner, mix},
};

/// One node's view of the simulated network: requests sent through it come from that node.
///
/// A request goes as follows. To a node that left (or an unknown peer), it fails with
/// [`RpcError::Unreachable`] after [`SimConfig::dial_timeout`](crate::SimConfig::dial_timeout).
/// Otherwise it travels for one draw of the latency, may be lost
/// ([`SimConfig::loss`](crate::SimConfig::loss)), reaches the server's
/// [`Handler`](dht_handler::Handler) (a silent server, or one that left in the meantime,
/// never answers), and the response travels back for another draw, and may be lost. A lost
/// or unanswered request never resolves: the client's timeout fires. A request the handler
/// refuses fails with [`RpcError::NoResponse`] (the stream is closed).
///
/// ADD_PROVIDER has no response: `send` resolves to `Ok(None)` once it is written
/// ([`SimConfig::write_delay`](crate::SimConfig::write_delay), zero by default) and the
/// server handles it one latency later, in a task of its own, so that a provider announcing
/// many keys does not wait a round trip for each.
///
/// With [`SimConfig::omit`](crate::SimConfig::omit), every server leaves each peer of an
/// answer out with that probability.
///
/// Every random draw of a message (latencies, loss, a misbehaving server's peers) comes from
/// the seed, the two ends and the sender's message count, so runs are reproducible.
#[derive(Clone)]
pub struct NodeNetwork {
    pub(crate) sim: Arc<SimInner>,
    pub(crate) me: usize,
}

impl NodeNetwork {
    /// The index of the node sending through this view.
    pub fn node_index(&self) -> usize {
        self.me
    }
}

impl std::fmt::Debug for NodeNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeNetwork")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl Network for NodeNetwork {
    fn send(
        &self,
        peer: &PeerInfo,
        request: Request,
    ) -> impl Future<Output = Result<Option<Response>, RpcError>> + Send {
        let sim = self.sim.clone();
        let me = self.me;
        let to = peer.peer_id;
        async move { deliver(sim, me, to, request).await }
    }

    /// A node speaks the batched provide protocol as
    /// [`SimConfig::provide_batch_share`](crate::SimConfig::provide_batch_share) drew it
    /// (what its identify would list), whether or not it is still alive.
    fn supports(&self, peer: &PeerId, feature: Feature) -> bool {
        feature == Feature::ProvideBatch
            && self
                .sim
                .index_of(peer)
                .and_then(|i| self.sim.node(i))
                .is_some_and(|n| n.provide_batch)
    }

    fn provide_batch(
        &self,
        peer: &PeerInfo,
        batch: ProvideBatch,
    ) -> impl Future<Output = Result<ProvideBatchResponse, RpcError>> + Send {
        let sim = self.sim.clone();
        let me = self.me;
        let to = peer.peer_id;
        async move { deliver_batch(sim, me, to, batch).await }
    }
}

/// A batch of the batched provide protocol, as a request that expects a response travels
/// (latency, loss, silent and slow servers); a server that does not speak the protocol, or
/// lists it and refuses it, refuses the stream after one latency
/// ([`RpcError::Unsupported`]). The server's side is [`serve_batch`].
async fn deliver_batch(
    sim: Arc<SimInner>,
    from: usize,
    to: PeerId,
    batch: ProvideBatch,
) -> Result<ProvideBatchResponse, RpcError> {
    let Some(sender) = sim.node(from) else {
        return Err(RpcError::other(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the sending node is not in the simulation",
        )));
    };
    let link = match connect(&sim, &sender, &to).await {
        Ok(link) => link,
        Err(e) => {
            sender.counters.batch_sent(batch.keys.len());
            return Err(e);
        }
    };
    let Link {
        target,
        out,
        back,
        lost_out,
        lost_back,
        ..
    } = link;
    if !target.takes_provide_batch() {
        // Negotiation fails: nothing was sent.
        tokio::time::sleep(out + back).await;
        return Err(RpcError::Unsupported(Feature::ProvideBatch));
    }
    sender.counters.batch_sent(batch.keys.len());
    let mut body = Vec::new();
    dht_proto::batch::encode_request_body(&batch, &mut body);
    sender.counters.record_bytes(framed_len(body.len()));
    tokio::time::sleep(out).await;
    if lost_out {
        bump(&sim.net.lost);
        return std::future::pending().await;
    }
    if !target.is_alive() || target.behaviour == Behaviour::Silent {
        bump(&sim.net.unanswered);
        return std::future::pending().await;
    }
    target.counters.batch_received(batch.keys.len());
    let now = dht_routing_table::Clock::now(&sim.clock);
    if sender.behaviour.answers() && !target.table.contains(&sender.info.peer_id) {
        target
            .table
            .update_at(&sender.info, PeerEvent::Seen(Direction::Outbound), now);
    }
    let answer = serve_batch(&sim, &target, &sender, batch, now);
    answer_back(&sim, &target, back, lost_back).await;
    let mut body = Vec::new();
    dht_proto::batch::encode_response_body(&answer, &mut body);
    sender.counters.record_bytes(framed_len(body.len()));
    Ok(answer)
}

/// `target`'s answer to `batch`: the keys whose records servers keep (all of them with
/// [`ProviderRecords::Store`](crate::ProviderRecords::Store), none with `Count`, the sample
/// with `Sample`) go to its handler as a batch of their own, the others are answered
/// `STORED` without being stored. A refusal of the kept keys' batch refuses the whole batch.
fn serve_batch(
    sim: &SimInner,
    target: &SimNode,
    sender: &SimNode,
    batch: ProvideBatch,
    now: dht_proto::UnixSecs,
) -> ProvideBatchResponse {
    let kept: Vec<bool> = batch.keys.iter().map(|k| sim.keeps_records_of(k)).collect();
    if !kept.contains(&true) {
        return ProvideBatchResponse::answered(vec![KeyStatus::Stored; batch.keys.len()]);
    }
    let ProvideBatch { provider, keys } = batch;
    let kept_keys = keys
        .into_iter()
        .zip(&kept)
        .filter_map(|(key, &keep)| keep.then_some(key))
        .collect();
    let sub = ProvideBatch {
        provider,
        keys: kept_keys,
    };
    let answer = target
        .handler
        .provide_batch(&Sender::server(sender.info.clone()), sub, now);
    if answer.error.is_some() {
        return answer;
    }
    let mut statuses = answer.statuses.iter().copied();
    let merged = kept
        .iter()
        .map(|&keep| {
            if keep {
                statuses.next().unwrap_or(KeyStatus::Stored)
            } else {
                KeyStatus::Stored
            }
        })
        .collect();
    ProvideBatchResponse::answered(merged).with_allowance(answer.allowance)
}

/// An answer's way back from `target`: a slow server's delay, then the latency `back`; a
/// lost answer never arrives (this never returns: the client's timeout fires).
async fn answer_back(sim: &SimInner, target: &SimNode, back: Duration, lost: bool) {
    if target.behaviour == Behaviour::Slow {
        tokio::time::sleep(sim.config.slow_delay).await;
    }
    tokio::time::sleep(back).await;
    if lost {
        bump(&sim.net.lost);
        std::future::pending::<()>().await;
    }
}

/// The bytes of a message of `body` bytes with its unsigned-varint length prefix.
fn framed_len(body: usize) -> usize {
    let mut prefix = 1;
    let mut v = body >> 7;
    while v > 0 {
        prefix += 1;
        v >>= 7;
    }
    prefix + body
}

/// What happened to messages on the network, beyond the per-type request counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct NetStats {
    /// Messages (requests or responses) lost.
    pub lost: u64,
    /// Requests to nodes that left or never existed (failed after the dial timeout).
    pub unreachable: u64,
    /// Requests that reached a server that did not answer (silent, or left meanwhile).
    pub unanswered: u64,
    /// Requests the server's handler refused (the stream is closed).
    pub refused: u64,
}

#[derive(Debug, Default)]
pub(crate) struct NetCounters {
    lost: AtomicU64,
    unreachable: AtomicU64,
    unanswered: AtomicU64,
    refused: AtomicU64,
}

impl NetCounters {
    pub(crate) fn snapshot(&self) -> NetStats {
        NetStats {
            lost: self.lost.load(Ordering::Relaxed),
            unreachable: self.unreachable.load(Ordering::Relaxed),
            unanswered: self.unanswered.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A message's way to a live server: the server, and the message's draws (from the seed, the
/// two ends and the sender's message count).
struct Link {
    target: Arc<SimNode>,
    /// The rest of the message's draws (a misbehaving server's peers, omissions).
    rng: SmallRng,
    out: Duration,
    back: Duration,
    lost_out: bool,
    lost_back: bool,
}

/// Reaches `to` from `sender`: noted among its contacts (while tracked); a node that left, or
/// an unknown peer, fails with [`RpcError::Unreachable`] after the dial timeout.
async fn connect(sim: &SimInner, sender: &SimNode, to: &PeerId) -> Result<Link, RpcError> {
    let config = &sim.config;
    let seq = sender.seq.fetch_add(1, Ordering::Relaxed);
    let target = sim.index_of(to).and_then(|i| sim.node(i));
    if let (Some(t), Some(contacts)) = (&target, sender.contacts.lock().as_mut()) {
        contacts.insert(t.index);
    }
    let Some(target) = target.filter(|t| t.is_alive()) else {
        bump(&sim.net.unreachable);
        tokio::time::sleep(config.dial_timeout).await;
        return Err(RpcError::unreachable(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
    };
    let mut rng = SmallRng::seed_from_u64(mix(&[
        config.seed,
        sender.index as u64,
        target.index as u64,
        seq,
    ]));
    let out = config.latency.draw(rng.next_u64());
    let back = config.latency.draw(rng.next_u64());
    let lost_out = rng.random::<f64>() < config.loss;
    let lost_back = rng.random::<f64>() < config.loss;
    Ok(Link {
        target,
        rng,
        out,
        back,
        lost_out,
        lost_back,
    })
}

async fn deliver(
    sim: Arc<SimInner>,
    from: usize,
    to: PeerId,
    request: Request,
) -> Result<Option<Response>, RpcError> {
    let config = &sim.config;
    let ty = request.message_type();
    let Some(sender) = sim.node(from) else {
        return Err(RpcError::other(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the sending node is not in the simulation",
        )));
    };
    sender.counters.sent(ty);
    if ty == MessageType::AddProvider {
        let mut body = Vec::new();
        dht_proto::wire::encode_request_body(&request, &mut body);
        sender.counters.record_bytes(framed_len(body.len()));
    }
    let Link {
        target,
        mut rng,
        out,
        back,
        lost_out,
        lost_back,
    } = connect(&sim, &sender, &to).await?;

    if !ty.expects_response() {
        // Written to the stream; the server handles it one latency later.
        if lost_out {
            bump(&sim.net.lost);
        } else if !sim.keeps_records_of(request.key()) {
            // Counted on arrival, never stored: no task, no record.
            if target.behaviour.answers() {
                target.counters.received(ty);
            } else {
                bump(&sim.net.unanswered);
            }
        } else {
            let sim = sim.clone();
            let from = sender.info.clone();
            let answers = sender.behaviour.answers();
            tokio::spawn(async move {
                tokio::time::sleep(out).await;
                let _ = serve(&sim, &target, (from, answers), request, &mut rng);
            });
        }
        if !config.write_delay.is_zero() {
            tokio::time::sleep(config.write_delay).await;
        }
        return Ok(None);
    }

    tokio::time::sleep(out).await;
    if lost_out {
        bump(&sim.net.lost);
        return std::future::pending().await;
    }
    let from = (sender.info.clone(), sender.behaviour.answers());
    let Some(result) = serve(&sim, &target, from, request, &mut rng) else {
        return std::future::pending().await;
    };
    answer_back(&sim, &target, back, lost_back).await;
    result
}

/// The server's side: `None` if it does not answer at all. `from` is the sender, and whether
/// it answers requests.
fn serve(
    sim: &SimInner,
    target: &SimNode,
    (from, from_answers): (PeerInfo, bool),
    request: Request,
    rng: &mut SmallRng,
) -> Option<Result<Option<Response>, RpcError>> {
    if !target.is_alive() || target.behaviour == Behaviour::Silent {
        bump(&sim.net.unanswered);
        return None;
    }
    let ty = request.message_type();
    target.counters.received(ty);
    let target_key = match &request {
        Request::FindNode { key } | Request::GetValue { key } | Request::GetProviders { key } => {
            Some(Key::hash(key))
        }
        _ => None,
    };
    let now = dht_routing_table::Clock::now(&sim.clock);
    // A request admits nobody to the table; a node probes a new server first and admits it
    // if it answers (dht-node's admission probe). Modelled without the probe's messages.
    if from_answers && !target.table.contains(&from.peer_id) {
        target
            .table
            .update_at(&from, PeerEvent::Seen(Direction::Outbound), now);
    }
    let answer = match target.handler.handle(&Sender::server(from), request, now) {
        Ok(answer) => answer,
        Err(err) => {
            tracing::trace!(%err, rpc = %ty, "request refused");
            bump(&sim.net.refused);
            return Some(Err(RpcError::NoResponse));
        }
    };
    let answer = match (target.behaviour, target_key, answer) {
        (Behaviour::RandomPeers, Some(_), Some(response)) => Some(replace_peers(
            response,
            sim.random_live_peers(rng, K_VALUE, None),
        )),
        (Behaviour::FarPeers, Some(key), Some(response)) => Some(replace_peers(
            response,
            sim.random_live_peers(rng, K_VALUE, Some(&key)),
        )),
        (_, _, answer) => answer,
    };
    let answer = match answer {
        Some(response) if sim.config.omit > 0.0 && target_key.is_some() => {
            Some(omit_peers(response, sim.config.omit, rng))
        }
        answer => answer,
    };
    Some(Ok(answer))
}

/// `response` with each of its closer peers left out with probability `share`.
fn omit_peers(response: Response, share: f64, rng: &mut SmallRng) -> Response {
    let mut keep = |mut peers: Vec<PeerInfo>| {
        peers.retain(|_| rng.random::<f64>() >= share);
        peers
    };
    match response {
        Response::FindNode { closer_peers } => Response::FindNode {
            closer_peers: keep(closer_peers),
        },
        Response::GetValue {
            key,
            record,
            closer_peers,
        } => Response::GetValue {
            key,
            record,
            closer_peers: keep(closer_peers),
        },
        Response::GetProviders {
            key,
            providers,
            closer_peers,
        } => Response::GetProviders {
            key,
            providers,
            closer_peers: keep(closer_peers),
        },
        other => other,
    }
}

fn replace_peers(response: Response, peers: Vec<PeerInfo>) -> Response {
    match response {
        Response::FindNode { .. } => Response::FindNode {
            closer_peers: peers,
        },
        Response::GetValue { key, record, .. } => Response::GetValue {
            key,
            record,
            closer_peers: peers,
        },
        Response::GetProviders { key, providers, .. } => Response::GetProviders {
            key,
            providers,
            closer_peers: peers,
        },
        other => other,
    }
}
