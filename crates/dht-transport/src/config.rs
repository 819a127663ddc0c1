//! Settings of the kad protocol and of the transport.

use std::{net::Ipv4Addr, time::Duration};

use dht_proto::{DEFAULT_MAX_MESSAGE_SIZE, Multiaddr};

/// The default [`KadConfig::max_request_size`]: 64 KiB.
pub const DEFAULT_MAX_REQUEST_SIZE: usize = 64 * 1024;
use libp2p::multiaddr::Protocol;

use super::limits::ConnectionLimits;

/// Whether this node serves the DHT to others.
///
/// A server advertises `/ipfs/kad/1.0.0` (identify lists it, so other nodes add it to their
/// routing tables) and answers inbound kad streams. A client does neither: it only sends
/// requests, the remote's protocol negotiation for an inbound kad stream fails, and other
/// nodes never add it to their routing tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Send requests only; refuse inbound kad streams and do not advertise the protocol.
    Client,
    /// Send requests and answer inbound ones (the default).
    #[default]
    Server,
}

/// Settings of the `/ipfs/kad/1.0.0` protocol on each connection ([`KadBehaviour`]).
///
/// `Default` is a server with go-libp2p-kad-dht's limits; the setters chain:
///
/// ```
/// use std::time::Duration;
/// use dht_transport::{KadConfig, Mode};
/// let config = KadConfig::default()
///     .with_mode(Mode::Client)
///     .with_request_timeout(Duration::from_secs(5))
///     .with_max_outbound_streams(8);
/// assert_eq!(config.mode, Mode::Client);
/// ```
///
/// [`KadBehaviour`]: crate::KadBehaviour
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KadConfig {
    /// Server or client (default [`Mode::Server`]).
    pub mode: Mode,
    /// The largest response body read or written and request body written, in bytes
    /// (default 4 MiB, as Go). A larger inbound response resets the stream; a larger
    /// outbound message is refused before it is sent.
    pub max_message_size: usize,
    /// The largest request body read from a peer, in bytes (default
    /// [`DEFAULT_MAX_REQUEST_SIZE`], 64 KiB). Requests are small (a key, one provider
    /// record, a value record of at most 10 KiB for IPNS), so a server need not hold 4 MiB
    /// for each of a peer's streams: an inbound request announcing more resets its stream
    /// as soon as its length prefix is read.
    pub max_request_size: usize,
    /// Time allowed for one outbound request once it reaches its connection: opening (or
    /// reusing) a stream, writing the request and reading the response. Default 10 s
    /// (Go's read timeout and libp2p-kad's substream timeout).
    pub request_timeout: Duration,
    /// How long a stream may wait for its next message before it is closed: an inbound stream
    /// waiting for the next request, and an idle outbound stream kept for reuse. Default 60 s
    /// (Go's `dhtStreamIdleTimeout`).
    pub stream_idle_timeout: Duration,
    /// Most inbound kad streams open at once on one connection (default 32, as libp2p-kad);
    /// further streams are reset.
    pub max_inbound_streams: usize,
    /// Most outbound kad streams (busy or idle) on one connection (default 32); further
    /// requests wait for a stream to become free.
    pub max_outbound_streams: usize,
    /// Most inbound requests being answered at once, over all connections (default 256,
    /// half of tokio's blocking pool). The node sheds load rather than queueing it: a request
    /// read while all are taken resets its stream at once, as does a new inbound stream
    /// (the peer may retry later or ask another node).
    pub max_inbound_requests: usize,
    /// Most of those permits that the senders of one IP (IPv4 address or IPv6 /56) hold at
    /// once (default 64, a quarter): beyond, their new streams and requests are reset, so
    /// one IP holding all its streams cannot make another IP's requests shed. Loopback
    /// senders are bounded by the total only, unless
    /// [`ConnectionLimits::limit_loopback`](crate::ConnectionLimits::limit_loopback)
    /// is set.
    pub max_inbound_requests_per_ip: usize,
    /// Whether requests dial public addresses only (default `false`): loopback, private,
    /// link-local and unspecified IP addresses of a peer
    /// ([`dht_handler::is_public_addr`]) are not dialled, since a node on the internet learns
    /// them from others, where they name someone else's network. Set by `NodeBuilder` for a
    /// node on the internet; [`TransportHandle::dial`] (the bootstrap peers one chose) is not
    /// filtered.
    ///
    /// [`TransportHandle::dial`]: crate::TransportHandle::dial
    pub public_addrs_only: bool,
    /// Whether the [`InboundHandler`] answers record requests (PUT_VALUE, GET_VALUE,
    /// ADD_PROVIDER, GET_PROVIDERS) on tokio's blocking pool (default `true`). Stores that
    /// wait on a disk (an fsync, a read past the caches) need it, or the wait blocks a
    /// runtime worker; for stores in memory it only adds a thread hand-off to each request.
    ///
    /// [`InboundHandler`]: crate::InboundHandler
    pub blocking_record_requests: bool,
    /// Whether provider-record writes (ADD_PROVIDER, and batches of the batched provide
    /// protocol) go to tokio's blocking pool with the other record requests (default `true`;
    /// nothing goes there when [`blocking_record_requests`](Self::blocking_record_requests)
    /// is off). A store that takes them without waiting (dht-provider-store's
    /// `GroupWriter`, which dht-node's `NodeBuilder` puts in front of
    /// RocksDB: an inbound ADD_PROVIDER's record is queued and nobody waits for its commit,
    /// and a batch's answer is a future) needs no thread hand-off for them: off, they are
    /// handled on the stream's task, one context switch fewer per record.
    pub blocking_provider_writes: bool,
    /// Whether the batched provide protocol (`/amino-dht-rs/provide-batch/1.0.0`,
    /// `docs/specs/provide-batch.md`) is on (default `true`): a server whose
    /// [`InboundHandler`] serves it advertises it in identify and answers its streams, and
    /// [`TransportHandle::provide_batch`] sends batches to the peers that advertise it. Off,
    /// the protocol is neither advertised nor served (its streams are refused in
    /// negotiation) nor sent.
    ///
    /// [`InboundHandler`]: crate::InboundHandler
    /// [`TransportHandle::provide_batch`]: crate::TransportHandle::provide_batch
    pub provide_batch: bool,
}

impl Default for KadConfig {
    fn default() -> Self {
        KadConfig {
            mode: Mode::Server,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_request_size: DEFAULT_MAX_REQUEST_SIZE,
            request_timeout: Duration::from_secs(10),
            stream_idle_timeout: Duration::from_secs(60),
            max_inbound_streams: 32,
            max_outbound_streams: 32,
            max_inbound_requests: 256,
            max_inbound_requests_per_ip: 64,
            public_addrs_only: false,
            blocking_record_requests: true,
            blocking_provider_writes: true,
            provide_batch: true,
        }
    }
}

impl KadConfig {
    /// Sets [`KadConfig::mode`].
    #[must_use]
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets [`KadConfig::max_message_size`].
    #[must_use]
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets [`KadConfig::max_request_size`].
    #[must_use]
    pub fn with_max_request_size(mut self, bytes: usize) -> Self {
        self.max_request_size = bytes;
        self
    }

    /// Sets [`KadConfig::request_timeout`].
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets [`KadConfig::stream_idle_timeout`].
    #[must_use]
    pub fn with_stream_idle_timeout(mut self, timeout: Duration) -> Self {
        self.stream_idle_timeout = timeout;
        self
    }

    /// Sets [`KadConfig::max_inbound_streams`].
    #[must_use]
    pub fn with_max_inbound_streams(mut self, n: usize) -> Self {
        self.max_inbound_streams = n;
        self
    }

    /// Sets [`KadConfig::max_outbound_streams`].
    #[must_use]
    pub fn with_max_outbound_streams(mut self, n: usize) -> Self {
        self.max_outbound_streams = n;
        self
    }

    /// Sets [`KadConfig::max_inbound_requests`].
    #[must_use]
    pub fn with_max_inbound_requests(mut self, n: usize) -> Self {
        self.max_inbound_requests = n;
        self
    }

    /// Sets [`KadConfig::max_inbound_requests_per_ip`].
    #[must_use]
    pub fn with_max_inbound_requests_per_ip(mut self, n: usize) -> Self {
        self.max_inbound_requests_per_ip = n;
        self
    }

    /// Sets [`KadConfig::public_addrs_only`].
    #[must_use]
    pub fn with_public_addrs_only(mut self, on: bool) -> Self {
        self.public_addrs_only = on;
        self
    }

    /// Sets [`KadConfig::blocking_record_requests`].
    #[must_use]
    pub fn with_blocking_record_requests(mut self, on: bool) -> Self {
        self.blocking_record_requests = on;
        self
    }

    /// Sets [`KadConfig::blocking_provider_writes`].
    #[must_use]
    pub fn with_blocking_provider_writes(mut self, on: bool) -> Self {
        self.blocking_provider_writes = on;
        self
    }

    /// Sets [`KadConfig::provide_batch`].
    #[must_use]
    pub fn with_provide_batch(mut self, on: bool) -> Self {
        self.provide_batch = on;
        self
    }
}

/// Settings of the whole transport ([`spawn`](crate::spawn)).
///
/// ```
/// use dht_transport::{KadConfig, Mode, TransportConfig};
/// let config = TransportConfig::default()
///     .with_listen_addrs(vec!["/ip4/127.0.0.1/tcp/0".parse()?])
///     .with_kad(KadConfig::default().with_mode(Mode::Client));
/// assert_eq!(config.kad.mode, Mode::Client);
/// # Ok::<(), libp2p::multiaddr::Error>(())
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// The kad protocol's settings.
    pub kad: KadConfig,
    /// Addresses to listen on: TCP (`/tcp/…`) and QUIC (`/udp/…/quic-v1`). Default
    /// `/ip4/0.0.0.0/tcp/4001` and `/ip4/0.0.0.0/udp/4001/quic-v1`, the IPFS port, as Kubo
    /// listens (most of the network's peers speak QUIC). Use port 0 for an ephemeral port;
    /// [`TransportHandle::listen_addrs`] tells which one was bound.
    ///
    /// [`TransportHandle::listen_addrs`]: crate::TransportHandle::listen_addrs
    pub listen_addrs: Vec<Multiaddr>,
    /// Addresses others can reach this node at, advertised by identify besides the listen
    /// addresses (default none).
    pub external_addrs: Vec<Multiaddr>,
    /// How long a connection with no active stream and no request in flight stays open, so the
    /// next request to the same peer reuses it (default 60 s).
    pub idle_connection_timeout: Duration,
    /// Time allowed to dial a peer: TCP connect, noise and yamux handshakes (default 10 s).
    pub dial_timeout: Duration,
    /// The agent version identify announces (default `dht-node/<crate version>`).
    pub agent_version: String,
    /// Limits on connections: in total, per peer, per IP ([`ConnectionLimits`] gives the
    /// defaults).
    pub limits: ConnectionLimits,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            kad: KadConfig::default(),
            listen_addrs: default_listen_addrs(),
            external_addrs: Vec::new(),
            idle_connection_timeout: Duration::from_secs(60),
            dial_timeout: Duration::from_secs(10),
            agent_version: concat!("dht-node/", env!("CARGO_PKG_VERSION")).to_owned(),
            limits: ConnectionLimits::default(),
        }
    }
}

/// The default listen addresses: `/ip4/0.0.0.0/tcp/4001` and
/// `/ip4/0.0.0.0/udp/4001/quic-v1`, built without a fallible parse.
pub fn default_listen_addrs() -> Vec<Multiaddr> {
    let any = Multiaddr::empty().with(Protocol::Ip4(Ipv4Addr::UNSPECIFIED));
    vec![
        any.clone().with(Protocol::Tcp(4001)),
        any.with(Protocol::Udp(4001)).with(Protocol::QuicV1),
    ]
}

impl TransportConfig {
    /// Sets [`TransportConfig::kad`].
    #[must_use]
    pub fn with_kad(mut self, kad: KadConfig) -> Self {
        self.kad = kad;
        self
    }

    /// Sets [`TransportConfig::listen_addrs`].
    #[must_use]
    pub fn with_listen_addrs(mut self, addrs: Vec<Multiaddr>) -> Self {
        self.listen_addrs = addrs;
        self
    }

    /// Sets [`TransportConfig::external_addrs`].
    #[must_use]
    pub fn with_external_addrs(mut self, addrs: Vec<Multiaddr>) -> Self {
        self.external_addrs = addrs;
        self
    }

    /// Sets [`TransportConfig::idle_connection_timeout`].
    #[must_use]
    pub fn with_idle_connection_timeout(mut self, timeout: Duration) -> Self {
        self.idle_connection_timeout = timeout;
        self
    }

    /// Sets [`TransportConfig::dial_timeout`].
    #[must_use]
    pub fn with_dial_timeout(mut self, timeout: Duration) -> Self {
        self.dial_timeout = timeout;
        self
    }

    /// Sets [`TransportConfig::limits`].
    #[must_use]
    pub fn with_limits(mut self, limits: ConnectionLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Sets [`TransportConfig::agent_version`].
    #[must_use]
    pub fn with_agent_version(mut self, agent: impl Into<String>) -> Self {
        self.agent_version = agent.into();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_listen_addrs_are_the_ipfs_port_over_tcp_and_quic() {
        let want: Vec<Multiaddr> = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
            .iter()
            .map(|a| a.parse().expect("valid"))
            .collect();
        assert_eq!(TransportConfig::default().listen_addrs, want);
    }
}
