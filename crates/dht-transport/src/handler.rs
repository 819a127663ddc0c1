//! The per-connection handler of `/ipfs/kad/1.0.0`: stream reuse, limits, timeouts.
//!
//! Outbound, requests queue on the connection and run on a kad stream each: an idle stream left
//! by an earlier request when there is one (as go-libp2p-kad-dht reuses its stream to a peer),
//! else a new one, up to [`KadConfig::max_outbound_streams`]. A stream goes back to the idle
//! pool after a complete exchange and is dropped after any error or timeout, since its framing
//! state is then unknown. Idle streams are watched: one the peer closes or resets, or one that
//! stays idle for [`KadConfig::stream_idle_timeout`], is dropped. A request whose stream fails
//! with an I/O error or ends early (the peer closed a reused stream while it was idle, or reset
//! a stream beyond its limit) is retried once on another stream, within its deadline, as Go
//! does.
//!
//! Requests without a response (ADD_PROVIDER) queued for one peer share a stream write: the
//! first takes the others queued behind it, up to [`MAX_BATCHED_REQUESTS`] requests and
//! [`MAX_BATCHED_BYTES`] bytes, into one write and one flush, and while such a write is under
//! way the next ones wait for it, so that a sweep's hundreds of records for one peer cost a
//! few writes instead of one per record. The frames on the wire are the same; the remote
//! reads them one by one, as from any reused stream.
//!
//! Inbound, every accepted stream runs a loop: read a request, take one of the node's
//! [`KadConfig::max_inbound_requests`] permits (none left, or the sender's IP holding its
//! [`KadConfig::max_inbound_requests_per_ip`]: reset the stream), hand it to the
//! [`InboundHandler`] (on tokio's blocking pool for record requests, which may wait on a
//! disk, unless [`KadConfig::blocking_record_requests`] is off), write the response, read
//! the next one. The stream is reset on any protocol error (undecodable or oversized
//! message, handler error, write failure) and closed when the peer closes it or it stays
//! idle too long.
//!
//! The batched provide protocol (`/amino-dht-rs/provide-batch/1.0.0`) runs beside it on the
//! same connection, within the same limits: a batch goes out on a stream of its own (opened
//! for it, closed after its answer; counted in [`KadConfig::max_outbound_streams`]), and an
//! inbound batch stream (served only where [`KadConfig::provide_batch`] is on, in server mode,
//! with a handler that serves it) counts in [`KadConfig::max_inbound_streams`] and takes one of
//! the same permits per batch as a kad request does per request. Its batches are read with
//! [`BatchCodec`] (1 MiB, 8,192 keys), handed to [`InboundHandler::provide_batch`] on the
//! blocking pool, and answered; a malformed batch resets the stream, and the stream closes
//! when it idles as a kad stream does.
//!
//! [`KadConfig::max_outbound_streams`]: crate::KadConfig::max_outbound_streams
//! [`KadConfig::max_inbound_streams`]: crate::KadConfig::max_inbound_streams
//! [`KadConfig::provide_batch`]: crate::KadConfig::provide_batch
//! [`KadConfig::max_inbound_requests`]: crate::KadConfig::max_inbound_requests
//! [`KadConfig::max_inbound_requests_per_ip`]: crate::KadConfig::max_inbound_requests_per_ip
//! [`KadConfig::blocking_record_requests`]: crate::KadConfig::blocking_record_requests
//! [`KadConfig::stream_idle_timeout`]: crate::KadConfig::stream_idle_timeout

use std::{
    collections::VecDeque,
    convert::Infallible,
    net::IpAddr,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use dht_proto::{
    Codec, CodecError, MessageType, Multiaddr, PeerId, PeerInfo, Response,
    batch::{BatchCodec, BatchCodecError, ProvideBatchResponse},
};
use futures::{
    AsyncRead, AsyncWriteExt, FutureExt, StreamExt, future::BoxFuture, stream::FuturesUnordered,
};
use libp2p::{
    Stream,
    swarm::{
        ConnectionHandler, ConnectionHandlerEvent, StreamProtocol, StreamUpgradeError,
        SubstreamProtocol, SupportedProtocols,
        handler::{
            ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
            ProtocolsChange,
        },
    },
};
use parking_lot::RwLock;
use tokio::{
    sync::oneshot,
    time::{Instant, Sleep},
};

use super::{
    config::{KadConfig, Mode},
    error::TransportError,
    permits::InboundPermits,
    protocol::{BATCH_PROTOCOL, InboundHandler, KAD_PROTOCOL, KadUpgrade, RemotePeer},
    stats::{Counted, Stats, add, bump},
};

/// The most requests without a response (ADD_PROVIDER) written to a stream together.
pub const MAX_BATCHED_REQUESTS: usize = 256;

/// The most bytes of requests without a response written to a stream together (a single
/// request larger than this is written alone).
pub const MAX_BATCHED_BYTES: usize = 64 * 1024;

/// What one outbound request came to: its response (`None` for one without, once written),
/// or the error.
pub(crate) type Outcome = Result<Option<Response>, TransportError>;

/// Where the outcome of one outbound request goes: to its caller alone, or, for one of
/// several requests sent at once, with its index to the channel they all report to.
#[derive(Debug)]
pub(crate) enum Reply {
    One(oneshot::Sender<Outcome>),
    Indexed(usize, tokio::sync::mpsc::UnboundedSender<(usize, Outcome)>),
}

impl Reply {
    /// Reports `outcome` (nobody may be waiting any more).
    pub(crate) fn send(self, outcome: Outcome) {
        match self {
            Reply::One(tx) => {
                let _ = tx.send(outcome);
            }
            Reply::Indexed(i, tx) => {
                let _ = tx.send((i, outcome));
            }
        }
    }

    /// Whether nobody waits for the outcome any more.
    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Reply::One(tx) => tx.is_closed(),
            Reply::Indexed(_, tx) => tx.is_closed(),
        }
    }
}

/// One outbound request, already encoded, on its way to a stream.
#[derive(Debug)]
pub(crate) struct OutboundJob {
    pub(crate) ty: MessageType,
    /// The length-prefixed request.
    pub(crate) frame: Vec<u8>,
    pub(crate) reply: Reply,
    /// Set when the job reaches its connection.
    pub(crate) deadline: Option<Instant>,
    /// Whether the job already failed once on a stream and was retried.
    pub(crate) retried: bool,
}

/// Where the outcome of one outbound batch goes.
pub(crate) type BatchReply = oneshot::Sender<Result<ProvideBatchResponse, TransportError>>;

/// One outbound batch of the batched provide protocol, already encoded.
#[derive(Debug)]
pub(crate) struct BatchJob {
    /// The length-prefixed batch.
    pub(crate) frame: Vec<u8>,
    /// How many keys it carries (its answer must have as many statuses).
    pub(crate) keys: usize,
    pub(crate) reply: BatchReply,
    /// Set when the job reaches its connection.
    pub(crate) deadline: Option<Instant>,
}

/// Which protocol an outbound stream was opened for (opaque).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// `/ipfs/kad/1.0.0`.
    Kad,
    /// `/amino-dht-rs/provide-batch/1.0.0`.
    Batch,
}

/// A message from [`KadBehaviour`](crate::KadBehaviour) to the handler of one
/// connection (opaque).
#[derive(Debug)]
pub struct HandlerIn(pub(crate) HandlerInKind);

#[derive(Debug)]
pub(crate) enum HandlerInKind {
    Request(OutboundJob),
    /// Several requests for the connection at once (ADD_PROVIDER records of one peer).
    Requests(Vec<OutboundJob>),
    Batch(BatchJob),
    SetMode(Mode),
    /// The remote's listen addresses, from identify.
    RemoteAddrs(Vec<Multiaddr>),
}

/// What the handler knows of the remote, shared with its inbound streams.
#[derive(Debug)]
struct Remote {
    peer: PeerId,
    /// The IP address of the connection's remote end.
    ip: Option<IpAddr>,
    addrs: RwLock<Vec<Multiaddr>>,
    is_server: AtomicBool,
}

impl Remote {
    fn snapshot(&self) -> RemotePeer {
        RemotePeer {
            peer: PeerInfo::new(self.peer, self.addrs.read().clone()),
            is_server: self.is_server.load(Ordering::Relaxed),
            remote_ip: self.ip,
        }
    }
}

/// The settings a handler needs, copied from [`KadConfig`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct HandlerConfig {
    /// Writes requests; reads and writes responses.
    pub(crate) codec: Codec,
    /// Reads inbound requests (a smaller limit).
    pub(crate) request_codec: Codec,
    pub(crate) request_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_inbound: usize,
    pub(crate) max_outbound: usize,
    pub(crate) blocking_records: bool,
    /// Whether ADD_PROVIDER and batches go to the blocking pool too (with `blocking_records`).
    pub(crate) blocking_provider_writes: bool,
    /// Reads and writes the batched provide protocol.
    pub(crate) batch_codec: BatchCodec,
    /// Whether inbound batch streams are served (in server mode), i.e. the protocol is on and
    /// the inbound handler serves it.
    pub(crate) serve_batch: bool,
}

impl From<&KadConfig> for HandlerConfig {
    fn from(c: &KadConfig) -> Self {
        HandlerConfig {
            codec: Codec::new(c.max_message_size),
            request_codec: Codec::new(c.max_request_size),
            request_timeout: c.request_timeout,
            idle_timeout: c.stream_idle_timeout,
            max_inbound: c.max_inbound_streams,
            max_outbound: c.max_outbound_streams,
            blocking_records: c.blocking_record_requests,
            blocking_provider_writes: c.blocking_record_requests && c.blocking_provider_writes,
            batch_codec: BatchCodec::default(),
            serve_batch: c.provide_batch,
        }
    }
}

struct IdleStream {
    stream: Stream,
    since: Instant,
    /// Whether the stream already carried a request.
    used: bool,
}

enum OutboundOutcome {
    /// The exchange completed; the stream can carry the next request.
    Reusable(Stream),
    /// The stream was dropped (error or timeout); the reply has been sent.
    Dropped,
    /// The stream failed before an answer: run the jobs again on another stream.
    Retry(Vec<OutboundJob>),
}

/// What one outbound stream carries next: a request with a response, or requests without one
/// (in queue order), written together.
type Work = Vec<OutboundJob>;

/// The [`ConnectionHandler`] of `/ipfs/kad/1.0.0` for one connection (opaque).
pub struct KadHandler {
    peer: PeerId,
    remote: Arc<Remote>,
    /// The remote's protocols, as identify reports them.
    remote_protocols: SupportedProtocols,
    cfg: HandlerConfig,
    mode: Mode,
    inbound_handler: Arc<dyn InboundHandler>,
    stats: Arc<Stats>,
    /// The node's permits for inbound requests being answered.
    inbound_permits: Arc<InboundPermits>,
    /// Requests waiting for a stream.
    queue: VecDeque<OutboundJob>,
    /// Outbound streams waiting for the next request, most recently used last.
    idle: Vec<IdleStream>,
    /// Outbound streams requested from the connection and not yet negotiated.
    requested: usize,
    /// Exchanges under way, each with whether it carries requests without a response.
    outbound: FuturesUnordered<BoxFuture<'static, (bool, OutboundOutcome)>>,
    /// Whether a write of requests without a response is under way (the next ones wait).
    batch_in_flight: bool,
    inbound: FuturesUnordered<BoxFuture<'static, ()>>,
    /// Batches waiting for a stream of their own.
    batch_queue: VecDeque<BatchJob>,
    /// Batch streams requested from the connection and not yet negotiated.
    batch_requested: usize,
    /// Batch exchanges under way.
    batches: FuturesUnordered<BoxFuture<'static, ()>>,
    /// Wakes the handler at the next idle-stream expiry or queued-request deadline.
    timer: Option<Pin<Box<Sleep>>>,
}

impl KadHandler {
    /// A handler for the connection to `remote` (its listen addresses so far), from `ip`.
    pub(crate) fn new(
        remote: PeerInfo,
        ip: Option<IpAddr>,
        cfg: HandlerConfig,
        mode: Mode,
        inbound_handler: Arc<dyn InboundHandler>,
        stats: Arc<Stats>,
        inbound_permits: Arc<InboundPermits>,
    ) -> Self {
        let peer = remote.peer_id;
        KadHandler {
            peer,
            remote: Arc::new(Remote {
                peer,
                ip,
                addrs: RwLock::new(remote.addrs),
                is_server: AtomicBool::new(false),
            }),
            remote_protocols: SupportedProtocols::default(),
            cfg,
            mode,
            inbound_handler,
            stats,
            inbound_permits,
            queue: VecDeque::new(),
            idle: Vec::new(),
            requested: 0,
            outbound: FuturesUnordered::new(),
            batch_in_flight: false,
            inbound: FuturesUnordered::new(),
            batch_queue: VecDeque::new(),
            batch_requested: 0,
            batches: FuturesUnordered::new(),
            timer: None,
        }
    }

    /// Runs `work` on `stream`.
    fn start(&mut self, work: Work, stream: Stream, used: bool) {
        if used {
            bump(&self.stats.outbound_streams_reused);
        }
        let batch = !work[0].ty.expects_response();
        self.batch_in_flight |= batch;
        self.outbound.push(
            exchange(stream, work, self.cfg.codec, self.stats.clone(), self.peer)
                .map(move |outcome| (batch, outcome))
                .boxed(),
        );
    }

    /// Whether a queued job may start now: one with a response always, one without only when
    /// no write of such jobs is under way.
    fn may_start(&self, job: &OutboundJob) -> bool {
        job.ty.expects_response() || !self.batch_in_flight
    }

    /// How many streams the queued jobs could use now.
    fn demand(&self) -> usize {
        let answered = self
            .queue
            .iter()
            .filter(|j| j.ty.expects_response())
            .count();
        let unanswered = !self.batch_in_flight && answered < self.queue.len();
        answered + usize::from(unanswered)
    }

    /// The next work for a stream: the first queued job that may start and still has a
    /// requester and time left (expired ones are failed), with, if it has no response, the
    /// other jobs without one queued behind it, within the batch limits.
    fn next_work(&mut self, now: Instant) -> Option<Work> {
        let mut work: Work = Vec::new();
        let mut bytes = 0;
        let mut kept = VecDeque::with_capacity(self.queue.len());
        while let Some(job) = self.queue.pop_front() {
            if job.reply.is_closed() {
                continue;
            }
            if job.deadline.is_some_and(|d| d <= now) {
                self.fail(job, TransportError::Timeout);
                continue;
            }
            let joins = match work.first() {
                None => self.may_start(&job),
                Some(first) => {
                    !first.ty.expects_response()
                        && !job.ty.expects_response()
                        && work.len() < MAX_BATCHED_REQUESTS
                        && bytes + job.frame.len() <= MAX_BATCHED_BYTES
                }
            };
            if joins {
                bytes += job.frame.len();
                work.push(job);
                if work[0].ty.expects_response() || work.len() == MAX_BATCHED_REQUESTS {
                    break;
                }
            } else {
                kept.push_back(job);
            }
        }
        kept.extend(self.queue.drain(..));
        self.queue = kept;
        (!work.is_empty()).then_some(work)
    }

    fn fail(&self, job: OutboundJob, error: TransportError) {
        fail(&self.stats, job, error);
    }

    /// A stream is free: give it to the next queued work, or keep it idle.
    fn stream_free(&mut self, stream: Stream, used: bool) {
        match self.next_work(Instant::now()) {
            Some(work) => self.start(work, stream, used),
            None => self.idle.push(IdleStream {
                stream,
                since: Instant::now(),
                used,
            }),
        }
    }

    /// Drops idle streams that expired or that the peer closed, reset or wrote to, and fails
    /// queued requests whose deadline passed.
    fn prune(&mut self, cx: &mut Context<'_>, now: Instant) {
        let idle_timeout = self.cfg.idle_timeout;
        let peer = self.peer;
        self.idle.retain_mut(|s| {
            if later(s.since, idle_timeout) <= now {
                tracing::trace!(%peer, "idle outbound kad stream expired");
                return false;
            }
            let mut byte = [0u8; 1];
            match Pin::new(&mut s.stream).poll_read(cx, &mut byte) {
                Poll::Pending => true,
                Poll::Ready(Ok(0)) => {
                    tracing::trace!(%peer, "peer closed an idle outbound kad stream");
                    false
                }
                Poll::Ready(Ok(_)) => {
                    tracing::debug!(%peer, "unsolicited data on an idle outbound kad stream");
                    false
                }
                Poll::Ready(Err(e)) => {
                    tracing::trace!(%peer, error = %e, "idle outbound kad stream failed");
                    false
                }
            }
        });
        let mut kept = VecDeque::with_capacity(self.queue.len());
        while let Some(job) = self.queue.pop_front() {
            if job.reply.is_closed() {
                continue;
            }
            if job.deadline.is_some_and(|d| d <= now) {
                self.fail(job, TransportError::Timeout);
            } else {
                kept.push_back(job);
            }
        }
        self.queue = kept;
        let mut kept = VecDeque::with_capacity(self.batch_queue.len());
        while let Some(job) = self.batch_queue.pop_front() {
            if job.reply.is_closed() {
                continue;
            }
            if job.deadline.is_some_and(|d| d <= now) {
                fail_batch(&self.stats, job, TransportError::Timeout);
            } else {
                kept.push_back(job);
            }
        }
        self.batch_queue = kept;
    }

    fn next_wakeup(&self) -> Option<Instant> {
        let idle = self
            .idle
            .iter()
            .map(|s| later(s.since, self.cfg.idle_timeout));
        let queued = self.queue.iter().filter_map(|j| j.deadline);
        let batches = self.batch_queue.iter().filter_map(|j| j.deadline);
        idle.chain(queued).chain(batches).min()
    }

    /// Every outbound stream of the connection: kad (busy, idle, requested) and batch.
    fn outbound_streams(&self) -> usize {
        self.outbound.len()
            + self.idle.len()
            + self.requested
            + self.batches.len()
            + self.batch_requested
    }

    /// A batch stream was negotiated: run the next queued batch on it.
    fn batch_stream(&mut self, stream: Stream) {
        self.batch_requested = self.batch_requested.saturating_sub(1);
        let now = Instant::now();
        while let Some(job) = self.batch_queue.pop_front() {
            if job.reply.is_closed() {
                continue;
            }
            if job.deadline.is_some_and(|d| d <= now) {
                fail_batch(&self.stats, job, TransportError::Timeout);
                continue;
            }
            self.batches.push(
                batch_exchange(
                    stream,
                    job,
                    self.cfg.batch_codec,
                    self.stats.clone(),
                    self.peer,
                )
                .boxed(),
            );
            return;
        }
        // No batch left for it: the stream is dropped.
    }

    /// Opening a batch stream failed.
    fn on_batch_upgrade_error(&mut self, error: StreamUpgradeError<Infallible>) {
        self.batch_requested = self.batch_requested.saturating_sub(1);
        match error {
            StreamUpgradeError::NegotiationFailed => {
                tracing::debug!(peer = %self.peer, "peer refused the batched provide protocol");
                for job in std::mem::take(&mut self.batch_queue) {
                    bump(&self.stats.outbound_batches_refused);
                    let _ = job.reply.send(Err(TransportError::ProvideBatchUnsupported(
                        "refused in negotiation",
                    )));
                }
            }
            StreamUpgradeError::Timeout => {
                if let Some(job) = self.batch_queue.pop_front() {
                    fail_batch(&self.stats, job, TransportError::Timeout);
                }
            }
            StreamUpgradeError::Io(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "opening a batch stream failed");
                if let Some(job) = self.batch_queue.pop_front() {
                    fail_batch(&self.stats, job, TransportError::Stream(e));
                }
            }
            StreamUpgradeError::Apply(never) => match never {},
        }
    }

    fn on_inbound_stream(&mut self, stream: Stream, protocol: StreamProtocol) {
        let batch = protocol == BATCH_PROTOCOL;
        if self.mode == Mode::Client || (batch && !self.cfg.serve_batch) {
            tracing::debug!(peer = %self.peer, %protocol, "not served (client mode, or the protocol is off): resetting the inbound stream");
            bump(&self.stats.inbound_streams_refused);
            return;
        }
        if self.inbound.len() >= self.cfg.max_inbound {
            tracing::debug!(
                peer = %self.peer,
                limit = self.cfg.max_inbound,
                "too many inbound kad streams on one connection: resetting the new one"
            );
            bump(&self.stats.inbound_streams_refused);
            return;
        }
        if !self.inbound_permits.available(self.remote.ip) {
            tracing::debug!(
                peer = %self.peer,
                ip = ?self.remote.ip,
                "answering as many inbound requests as allowed (in total or from this IP): resetting a new stream"
            );
            bump(&self.stats.inbound_shed);
            return;
        }
        bump(&self.stats.inbound_streams_accepted);
        let (remote, handler, stats, permits) = (
            self.remote.clone(),
            self.inbound_handler.clone(),
            self.stats.clone(),
            self.inbound_permits.clone(),
        );
        let served = if batch {
            serve_batch(stream, remote, handler, self.cfg, stats, permits).boxed()
        } else {
            serve(stream, remote, handler, self.cfg, stats, permits).boxed()
        };
        self.inbound.push(served);
    }

    /// Identify told the remote's protocols: is it a DHT server?
    fn on_remote_protocols(&mut self, change: ProtocolsChange<'_>) {
        if self.remote_protocols.on_protocols_change(change) {
            let server = self.remote_protocols.iter().any(|p| *p == KAD_PROTOCOL);
            self.remote.is_server.store(server, Ordering::Relaxed);
        }
    }

    fn on_dial_upgrade_error(&mut self, error: StreamUpgradeError<Infallible>) {
        self.requested = self.requested.saturating_sub(1);
        let now = Instant::now();
        match error {
            StreamUpgradeError::NegotiationFailed => {
                tracing::debug!(peer = %self.peer, "peer does not support the kad protocol");
                for job in std::mem::take(&mut self.queue) {
                    self.fail(job, TransportError::UnsupportedProtocol);
                }
            }
            StreamUpgradeError::Timeout => {
                for job in self.next_work(now).into_iter().flatten() {
                    self.fail(job, TransportError::Timeout);
                }
            }
            StreamUpgradeError::Io(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "opening a kad stream failed");
                for job in self.next_work(now).into_iter().flatten() {
                    self.fail(job, TransportError::Stream(copy_io_error(&e)));
                }
            }
            StreamUpgradeError::Apply(never) => match never {},
        }
    }
}

impl ConnectionHandler for KadHandler {
    type FromBehaviour = HandlerIn;
    type ToBehaviour = Infallible;
    type InboundProtocol = KadUpgrade;
    type OutboundProtocol = KadUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = StreamKind;

    fn listen_protocol(&self) -> SubstreamProtocol<KadUpgrade> {
        let server = self.mode == Mode::Server;
        let upgrade = KadUpgrade {
            kad: server,
            batch: server && self.cfg.serve_batch,
        };
        SubstreamProtocol::new(upgrade, ())
    }

    fn connection_keep_alive(&self) -> bool {
        // Idle outbound streams do not keep the connection alive (they are excluded from the
        // swarm's count); requests that are queued, negotiating or in flight do.
        !self.queue.is_empty()
            || !self.outbound.is_empty()
            || self.requested > 0
            || !self.batch_queue.is_empty()
            || !self.batches.is_empty()
            || self.batch_requested > 0
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<KadUpgrade, StreamKind, Infallible>> {
        loop {
            while let Poll::Ready(Some((batch, outcome))) = self.outbound.poll_next_unpin(cx) {
                if batch {
                    self.batch_in_flight = false;
                }
                match outcome {
                    OutboundOutcome::Reusable(stream) => self.stream_free(stream, true),
                    OutboundOutcome::Dropped => {}
                    OutboundOutcome::Retry(jobs) => {
                        for job in jobs.into_iter().rev() {
                            self.queue.push_front(job);
                        }
                    }
                }
            }
            while let Poll::Ready(Some(())) = self.inbound.poll_next_unpin(cx) {}
            while let Poll::Ready(Some(())) = self.batches.poll_next_unpin(cx) {}

            let now = Instant::now();
            self.prune(cx, now);

            let mut started = false;
            while self.demand() > 0 {
                let Some(idle) = self.idle.pop() else { break };
                match self.next_work(now) {
                    Some(work) => {
                        self.start(work, idle.stream, idle.used);
                        started = true;
                    }
                    None => {
                        self.idle.push(idle);
                        break;
                    }
                }
            }
            if started {
                // Poll the new exchanges once, so that they register for wake-ups.
                continue;
            }

            if self.batch_queue.len() > self.batch_requested {
                if self.outbound_streams() >= self.cfg.max_outbound && !self.idle.is_empty() {
                    // An idle kad stream makes room for a batch's.
                    self.idle.remove(0);
                }
                if self.outbound_streams() < self.cfg.max_outbound {
                    self.batch_requested += 1;
                    let protocol = SubstreamProtocol::new(KadUpgrade::BATCH, StreamKind::Batch)
                        .with_timeout(self.cfg.request_timeout);
                    return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                        protocol,
                    });
                }
            }

            if self.demand() > self.requested && self.outbound_streams() < self.cfg.max_outbound {
                self.requested += 1;
                let protocol = SubstreamProtocol::new(KadUpgrade::KAD, StreamKind::Kad)
                    .with_timeout(self.cfg.request_timeout);
                return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest { protocol });
            }

            match self.next_wakeup() {
                None => self.timer = None,
                Some(at) => {
                    let timer = self
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                    if timer.deadline() != at {
                        timer.as_mut().reset(at);
                    }
                    if timer.as_mut().poll(cx).is_ready() {
                        continue;
                    }
                }
            }
            return Poll::Pending;
        }
    }

    fn on_behaviour_event(&mut self, event: HandlerIn) {
        match event.0 {
            HandlerInKind::Request(mut job) => {
                job.deadline = Some(later(Instant::now(), self.cfg.request_timeout));
                self.queue.push_back(job);
            }
            HandlerInKind::Requests(jobs) => {
                let deadline = Some(later(Instant::now(), self.cfg.request_timeout));
                self.queue.extend(jobs.into_iter().map(|mut job| {
                    job.deadline = deadline;
                    job
                }));
            }
            HandlerInKind::Batch(mut job) => {
                job.deadline = Some(later(Instant::now(), self.cfg.request_timeout));
                self.batch_queue.push_back(job);
            }
            HandlerInKind::SetMode(mode) => {
                if mode == Mode::Client && self.mode == Mode::Server {
                    // A client serves nobody: reset the inbound streams.
                    self.inbound = FuturesUnordered::new();
                }
                self.mode = mode;
            }
            HandlerInKind::RemoteAddrs(addrs) => *self.remote.addrs.write() = addrs,
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<'_, KadUpgrade, KadUpgrade, (), StreamKind>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: (stream, _),
                info: StreamKind::Batch,
            }) => self.batch_stream(stream),
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: (mut stream, _),
                info: StreamKind::Kad,
            }) => {
                self.requested = self.requested.saturating_sub(1);
                bump(&self.stats.outbound_streams_opened);
                // Keep-alive is decided by `connection_keep_alive`, so that idle pooled
                // streams do not hold the connection open.
                stream.ignore_for_keep_alive();
                self.stream_free(stream, false);
            }
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: (stream, protocol),
                ..
            }) => self.on_inbound_stream(stream, protocol),
            ConnectionEvent::DialUpgradeError(DialUpgradeError {
                error,
                info: StreamKind::Kad,
            }) => self.on_dial_upgrade_error(error),
            ConnectionEvent::DialUpgradeError(DialUpgradeError {
                error,
                info: StreamKind::Batch,
            }) => self.on_batch_upgrade_error(error),
            ConnectionEvent::RemoteProtocolsChange(change) => self.on_remote_protocols(change),
            _ => {}
        }
    }
}

/// `at + d`, or a year from `at` where that overflows (a huge configured timeout).
fn later(at: Instant, d: Duration) -> Instant {
    at.checked_add(d)
        .or_else(|| at.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(at)
}

/// Whether an error may come from the stream rather than the request: the peer closed or
/// reset it (while it was idle, or because it refused a stream beyond its limit).
fn is_stale(e: &CodecError) -> bool {
    matches!(e, CodecError::Io(_) | CodecError::Truncated)
}

/// Writes `work` on `stream`, one write and one flush, and reads the response of a request
/// that has one.
async fn exchange(
    mut stream: Stream,
    work: Work,
    codec: Codec,
    stats: Arc<Stats>,
    peer: PeerId,
) -> OutboundOutcome {
    let ty = work[0].ty;
    let deadline = work.iter().filter_map(|j| j.deadline).min();
    let io = async {
        let mut out = Counted::new(&mut stream, &stats.bytes_sent);
        match work.as_slice() {
            [one] => out.write_all(&one.frame).await?,
            many => {
                let frames: Vec<u8> = many.iter().flat_map(|j| j.frame.iter().copied()).collect();
                out.write_all(&frames).await?;
            }
        }
        out.flush().await?;
        bump(&stats.outbound_writes);
        if !ty.expects_response() {
            return Ok(None);
        }
        codec.read_response(&mut stream).await.map(Some)
    };
    let result = match deadline {
        Some(deadline) => match tokio::time::timeout_at(deadline, io).await {
            Ok(r) => r,
            Err(_) => {
                tracing::debug!(%peer, %ty, requests = work.len(), "kad request timed out");
                for job in work {
                    fail(&stats, job, TransportError::Timeout);
                }
                return OutboundOutcome::Dropped;
            }
        },
        None => io.await,
    };
    let error = match result {
        Ok(None) => {
            for job in work {
                bump(&stats.outbound_requests_ok);
                job.reply.send(Ok(None));
            }
            return OutboundOutcome::Reusable(stream);
        }
        Ok(Some(response)) if response.message_type() == ty => {
            // Work with a response is a single request.
            if let Some(job) = work.into_iter().next() {
                bump(&stats.outbound_requests_ok);
                job.reply.send(Ok(Some(response)));
            }
            return OutboundOutcome::Reusable(stream);
        }
        Ok(Some(response)) => TransportError::UnexpectedResponse {
            sent: ty,
            got: response.message_type(),
        },
        Err(e) if is_stale(&e) && work.iter().any(|j| !j.retried) => {
            tracing::debug!(%peer, %ty, error = %e, requests = work.len(), "kad stream failed; retrying once on another");
            let (again, spent): (Vec<_>, Vec<_>) = work.into_iter().partition(|j| !j.retried);
            for job in spent {
                fail(&stats, job, TransportError::Codec(copy_codec_error(&e)));
            }
            let again = again
                .into_iter()
                .map(|job| OutboundJob {
                    retried: true,
                    ..job
                })
                .collect();
            return OutboundOutcome::Retry(again);
        }
        Err(e) => TransportError::Codec(e),
    };
    tracing::debug!(%peer, %ty, %error, requests = work.len(), "kad request failed");
    let mut jobs = work.into_iter();
    if let Some(first) = jobs.next() {
        for job in jobs {
            fail(&stats, job, copy_error(&error));
        }
        fail(&stats, first, error);
    }
    OutboundOutcome::Dropped
}

/// Fails `job` with `error`, counted.
fn fail(stats: &Stats, job: OutboundJob, error: TransportError) {
    bump(&stats.outbound_requests_failed);
    job.reply.send(Err(error));
}

/// An I/O error like `e` (same kind and message), for each request of a write it failed.
fn copy_io_error(e: &std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), e.to_string())
}

/// A codec error like `e`, for each request of a write it failed.
fn copy_codec_error(e: &CodecError) -> CodecError {
    match e {
        CodecError::Io(io) => CodecError::Io(copy_io_error(io)),
        CodecError::Truncated => CodecError::Truncated,
        other => CodecError::Io(std::io::Error::other(other.to_string())),
    }
}

/// A transport error like `e`, for each request of a write it failed.
fn copy_error(e: &TransportError) -> TransportError {
    match e {
        TransportError::Codec(c) => TransportError::Codec(copy_codec_error(c)),
        TransportError::UnexpectedResponse { sent, got } => TransportError::UnexpectedResponse {
            sent: *sent,
            got: *got,
        },
        TransportError::Timeout => TransportError::Timeout,
        other => TransportError::Codec(CodecError::Io(std::io::Error::other(other.to_string()))),
    }
}

/// Whether requests of type `ty` read or write records (PUT_VALUE, GET_VALUE, ADD_PROVIDER,
/// GET_PROVIDERS), which a store may keep on disk; FIND_NODE and PING are answered from the
/// routing table, in memory.
fn touches_records(ty: MessageType) -> bool {
    !matches!(ty, MessageType::FindNode | MessageType::Ping)
}

/// Serves the requests of one inbound stream until it ends, errs or idles out.
async fn serve(
    mut stream: Stream,
    remote: Arc<Remote>,
    handler: Arc<dyn InboundHandler>,
    cfg: HandlerConfig,
    stats: Arc<Stats>,
    permits: Arc<InboundPermits>,
) {
    let peer = remote.peer;
    loop {
        let request = match tokio::time::timeout(
            cfg.idle_timeout,
            cfg.request_codec.read_request(&mut stream),
        )
        .await
        {
            Err(_) => {
                tracing::trace!(%peer, "inbound kad stream idle: closing");
                break;
            }
            Ok(Ok(None)) => break,
            Ok(Ok(Some(request))) => request,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "bad inbound kad message: resetting the stream");
                bump(&stats.inbound_stream_errors);
                return;
            }
        };
        // Held until the response is written.
        let Some(_permit) = permits.try_take(remote.ip) else {
            tracing::debug!(%peer, ip = ?remote.ip, "answering as many inbound requests as allowed (in total or from this IP): resetting the stream");
            bump(&stats.inbound_shed);
            return;
        };
        bump(&stats.inbound_requests);
        let ty = request.message_type();
        let from = remote.snapshot();
        let serving = handler.clone();
        let blocking = if ty == MessageType::AddProvider {
            // Without the connection's IP (a peer dialled by DNS name) the handler stores the
            // record as its own (`add_providers_unsynced`), which waits for a commit: that
            // one goes to the blocking pool still.
            cfg.blocking_provider_writes || (cfg.blocking_records && remote.ip.is_none())
        } else {
            cfg.blocking_records && touches_records(ty)
        };
        let answer = call_handler(blocking, move || serving.handle_request(&from, request)).await;
        let response = match answer {
            Ok(Ok(Some(response))) if ty.expects_response() => response,
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => {
                tracing::debug!(%peer, %ty, error = %e, "inbound kad request refused: resetting the stream");
                bump(&stats.inbound_stream_errors);
                return;
            }
            Err(panicked) => return handler_failed(&stats, peer, &ty, panicked),
        };
        let mut out = Counted::new(&mut stream, &stats.bytes_sent);
        let write = cfg.codec.write_response(&mut out, &response);
        if !answered(write, cfg.request_timeout, &stats, peer, &ty).await {
            return;
        }
    }
    let _ = tokio::time::timeout(cfg.request_timeout, stream.close()).await;
}

/// Runs `work`, a call of the [`InboundHandler`], on tokio's blocking pool when `blocking`
/// (a store may wait on its disk, a read or an fsync: there the wait holds up this stream
/// only, never the connection's task or a runtime worker, and concurrent writes can share
/// one fsync), else right here. `Err(true)` when it panicked, `Err(false)` when the runtime
/// is shutting down.
async fn call_handler<R: Send + 'static>(
    blocking: bool,
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, bool> {
    if blocking {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| e.is_panic())
    } else {
        std::panic::catch_unwind(AssertUnwindSafe(work)).map_err(|_| true)
    }
}

/// Logs and counts a handler call that gave no answer ([`call_handler`]'s `Err`): the
/// stream is reset.
fn handler_failed(stats: &Stats, peer: PeerId, what: &dyn std::fmt::Display, panicked: bool) {
    if panicked {
        tracing::error!(%peer, %what, "inbound handler panicked: resetting the stream");
    } else {
        tracing::debug!(%peer, %what, "runtime shutting down: resetting the stream");
    }
    bump(&stats.inbound_stream_errors);
}

/// Waits for `write` (an answer to `what`) at most `timeout`: whether it was written; if not,
/// the failure is logged and counted, and the stream is to be reset.
async fn answered<E: std::fmt::Display>(
    write: impl Future<Output = Result<(), E>>,
    timeout: Duration,
    stats: &Stats,
    peer: PeerId,
    what: &(dyn std::fmt::Display + Sync),
) -> bool {
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => return true,
        Ok(Err(e)) => {
            tracing::debug!(%peer, %what, error = %e, "writing an answer failed: resetting the stream");
        }
        Err(_) => {
            tracing::debug!(%peer, %what, "writing an answer timed out: resetting the stream");
        }
    }
    bump(&stats.inbound_stream_errors);
    false
}

/// Fails `job` with `error`, counted.
fn fail_batch(stats: &Stats, job: BatchJob, error: TransportError) {
    bump(&stats.outbound_batches_failed);
    let _ = job.reply.send(Err(error));
}

/// Writes one batch on its own `stream`, reads and checks its answer, closes the stream.
async fn batch_exchange(
    mut stream: Stream,
    job: BatchJob,
    codec: BatchCodec,
    stats: Arc<Stats>,
    peer: PeerId,
) {
    let io = async {
        let mut out = Counted::new(&mut stream, &stats.bytes_sent);
        out.write_all(&job.frame).await?;
        out.flush().await?;
        codec.read_response(&mut stream).await
    };
    let result = match job.deadline {
        Some(deadline) => match tokio::time::timeout_at(deadline, io).await {
            Ok(r) => r.map_err(TransportError::BatchCodec),
            Err(_) => Err(TransportError::Timeout),
        },
        None => io.await.map_err(TransportError::BatchCodec),
    };
    let response = match result {
        Ok(response) if response.answers(job.keys) => response,
        Ok(response) => {
            tracing::debug!(%peer, keys = job.keys, statuses = response.statuses.len(), "batch answer does not match its keys: resetting the stream");
            let malformed =
                BatchCodecError::Malformed("the answer's statuses do not match the keys");
            return fail_batch(&stats, job, TransportError::BatchCodec(malformed));
        }
        Err(error) => {
            tracing::debug!(%peer, keys = job.keys, %error, "batch failed");
            return fail_batch(&stats, job, error);
        }
    };
    bump(&stats.outbound_batches);
    add(&stats.outbound_batch_records, job.keys);
    add(
        &stats.outbound_batch_stored,
        response.statuses.iter().filter(|s| s.is_stored()).count(),
    );
    let _ = job.reply.send(Ok(response));
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, stream.close()).await;
}

/// How long closing a batch stream after its answer may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves the batches of one inbound batch stream until it ends, errs or idles out.
async fn serve_batch(
    mut stream: Stream,
    remote: Arc<Remote>,
    handler: Arc<dyn InboundHandler>,
    cfg: HandlerConfig,
    stats: Arc<Stats>,
    permits: Arc<InboundPermits>,
) {
    let peer = remote.peer;
    loop {
        let batch =
            match tokio::time::timeout(cfg.idle_timeout, cfg.batch_codec.read_request(&mut stream))
                .await
            {
                Err(_) => {
                    tracing::trace!(%peer, "inbound batch stream idle: closing");
                    break;
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(batch))) => batch,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "bad inbound batch: resetting the stream");
                    bump(&stats.inbound_stream_errors);
                    // (An I/O error is the stream's, e.g. a reset between batches.)
                    if !matches!(e, BatchCodecError::Io(_)) {
                        bump(&stats.inbound_batches_refused);
                    }
                    return;
                }
            };
        // Held until the answer is written.
        let Some(_permit) = permits.try_take(remote.ip) else {
            tracing::debug!(%peer, ip = ?remote.ip, "answering as many inbound requests as allowed (in total or from this IP): resetting the batch stream");
            bump(&stats.inbound_shed);
            return;
        };
        let keys = batch.keys.len();
        bump(&stats.inbound_batches);
        add(&stats.inbound_batch_records, keys);
        let from = remote.snapshot();
        // The handler checks the batch and hands its records to the store (on tokio's
        // blocking pool unless the store takes them without waiting,
        // `blocking_provider_writes`); the answer comes once they are durable, awaited here,
        // with no thread waiting for the commit.
        let serving = handler.clone();
        let answer = call_handler(cfg.blocking_provider_writes, move || {
            serving.provide_batch(&from, batch)
        })
        .await;
        let answer = match answer {
            Ok(Ok(reply)) => match tokio::time::timeout(cfg.request_timeout, reply).await {
                Ok(response) => Ok(Ok(response)),
                Err(_) => {
                    tracing::debug!(%peer, keys, "the store did not write an inbound batch in time: resetting the stream");
                    bump(&stats.inbound_stream_errors);
                    return;
                }
            },
            Ok(Err(e)) => Ok(Err(e)),
            Err(panicked) => Err(panicked),
        };
        let response = match answer {
            Ok(Ok(response)) if response.answers(keys) => response,
            Ok(Ok(response)) => {
                tracing::error!(%peer, keys, statuses = response.statuses.len(), "the handler's batch answer does not match its keys: resetting the stream");
                bump(&stats.inbound_stream_errors);
                return;
            }
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "inbound batch refused: resetting the stream");
                bump(&stats.inbound_stream_errors);
                bump(&stats.inbound_batches_refused);
                return;
            }
            Err(panicked) => return handler_failed(&stats, peer, &"provide batch", panicked),
        };
        match response.error {
            Some(error) => {
                tracing::debug!(%peer, keys, %error, "inbound batch refused");
                bump(&stats.inbound_batches_refused);
            }
            None => add(
                &stats.inbound_batch_stored,
                response.statuses.iter().filter(|s| s.is_stored()).count(),
            ),
        }
        let mut out = Counted::new(&mut stream, &stats.bytes_sent);
        let write = cfg.batch_codec.write_response(&mut out, &response);
        if !answered(write, cfg.request_timeout, &stats, peer, &"provide batch").await {
            return;
        }
    }
    let _ = tokio::time::timeout(cfg.request_timeout, stream.close()).await;
}
