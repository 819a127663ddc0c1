//! Connection limits: in total and per peer (libp2p's `connection-limits` behaviour), and per
//! remote IP address, which libp2p has no behaviour for ([`IpLimits`]).

use std::{
    collections::HashMap,
    convert::Infallible,
    net::IpAddr,
    task::{Context, Poll},
};

use dht_proto::{Multiaddr, PeerId};
use libp2p::{
    connection_limits,
    core::{Endpoint, transport::PortUse},
    multiaddr::Protocol,
    swarm::{
        ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, ListenFailure,
        NetworkBehaviour, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
    },
};

/// Limits on the connections a node accepts, checked before a connection costs more than its
/// handshake. Only inbound connections count against the per-IP limit; the others count both
/// directions as `connection-limits` does.
///
/// ```
/// use dht_transport::ConnectionLimits;
/// let limits = ConnectionLimits::default().with_max_incoming_per_ip(4);
/// assert_eq!(limits.max_incoming_per_ip, 4);
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most inbound connections in their handshake at once (default 64).
    pub max_pending_incoming: u32,
    /// Most outbound dials in flight at once (default `None`: unbounded, as a provider dials
    /// many peers at once; the file-descriptor plan of
    /// dht-node's `NodeBuilder::build` sets it when the limit
    /// has no room for them). A dial beyond it fails at once.
    pub max_pending_outgoing: Option<u32>,
    /// Most established inbound connections (default 512, half of the common default limit
    /// of 1,024 file descriptors, leaving room for outbound connections and RocksDB's files).
    pub max_established_incoming: u32,
    /// Most established connections, both directions (default 1,024).
    pub max_established_total: u32,
    /// Most established connections with one peer, both directions (default 4: a
    /// simultaneous dial makes two).
    pub max_established_per_peer: u32,
    /// Most inbound connections (in their handshake or established) from one IPv4 address or
    /// one IPv6 /56 (default 8, as go-libp2p's resource manager allows per address).
    pub max_incoming_per_ip: usize,
    /// Whether the per-IP limit applies to loopback addresses too (default `false`: a devnet
    /// runs every node on 127.0.0.1; go-libp2p does not limit loopback either).
    pub limit_loopback: bool,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_pending_incoming: 64,
            max_pending_outgoing: None,
            max_established_incoming: 512,
            max_established_total: 1024,
            max_established_per_peer: 4,
            max_incoming_per_ip: 8,
            limit_loopback: false,
        }
    }
}

impl ConnectionLimits {
    /// Sets [`ConnectionLimits::max_pending_incoming`].
    #[must_use]
    pub fn with_max_pending_incoming(mut self, n: u32) -> Self {
        self.max_pending_incoming = n;
        self
    }

    /// Sets [`ConnectionLimits::max_pending_outgoing`].
    #[must_use]
    pub fn with_max_pending_outgoing(mut self, n: Option<u32>) -> Self {
        self.max_pending_outgoing = n;
        self
    }

    /// Sets [`ConnectionLimits::max_established_incoming`].
    #[must_use]
    pub fn with_max_established_incoming(mut self, n: u32) -> Self {
        self.max_established_incoming = n;
        self
    }

    /// Sets [`ConnectionLimits::max_established_total`].
    #[must_use]
    pub fn with_max_established_total(mut self, n: u32) -> Self {
        self.max_established_total = n;
        self
    }

    /// Sets [`ConnectionLimits::max_established_per_peer`].
    #[must_use]
    pub fn with_max_established_per_peer(mut self, n: u32) -> Self {
        self.max_established_per_peer = n;
        self
    }

    /// Sets [`ConnectionLimits::max_incoming_per_ip`].
    #[must_use]
    pub fn with_max_incoming_per_ip(mut self, n: usize) -> Self {
        self.max_incoming_per_ip = n;
        self
    }

    /// Sets [`ConnectionLimits::limit_loopback`].
    #[must_use]
    pub fn with_limit_loopback(mut self, on: bool) -> Self {
        self.limit_loopback = on;
        self
    }

    /// libp2p's behaviour for the total and per-peer limits.
    pub(crate) fn libp2p_behaviour(&self) -> connection_limits::Behaviour {
        connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_pending_incoming(Some(self.max_pending_incoming))
                .with_max_pending_outgoing(self.max_pending_outgoing)
                .with_max_established_incoming(Some(self.max_established_incoming))
                .with_max_established(Some(self.max_established_total))
                .with_max_established_per_peer(Some(self.max_established_per_peer)),
        )
    }
}

/// The IP an address starts with.
pub(crate) fn remote_ip(addr: &Multiaddr) -> Option<IpAddr> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    }
}

/// The group an IP counts in: the IPv4 address, or the IPv6 /56 (as the handler's per-IP
/// rate limit counts it).
fn group_of(ip: IpAddr) -> IpAddr {
    dht_handler::ip_bucket(ip)
}

/// The group an inbound connection's IP counts in (see [`group_of`]).
#[cfg(test)]
fn ip_group(addr: &Multiaddr) -> Option<IpAddr> {
    remote_ip(addr).map(group_of)
}

/// The per-IP limit on inbound connections (pending and established).
#[derive(Debug)]
pub(crate) struct IpLimits {
    max: usize,
    limit_loopback: bool,
    /// The group of every inbound connection counted, by connection.
    groups: HashMap<ConnectionId, IpAddr>,
    /// How many inbound connections each group has.
    counts: HashMap<IpAddr, usize>,
}

/// An inbound connection was refused: its IP has as many connections as allowed.
#[derive(Debug, thiserror::Error)]
#[error("{ip} already has {limit} inbound connections")]
pub(crate) struct IpLimitExceeded {
    ip: IpAddr,
    limit: usize,
}

impl IpLimits {
    pub(crate) fn new(limits: &ConnectionLimits) -> Self {
        IpLimits {
            max: limits.max_incoming_per_ip,
            limit_loopback: limits.limit_loopback,
            groups: HashMap::new(),
            counts: HashMap::new(),
        }
    }

    fn forget(&mut self, id: ConnectionId) {
        if let Some(ip) = self.groups.remove(&id)
            && let Some(n) = self.counts.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(&ip);
            }
        }
    }
}

impl NetworkBehaviour for IpLimits {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = remote_ip(remote) else {
            return Ok(());
        };
        // Before grouping: the /56 of `::1` is `::`, which is not loopback.
        if ip.is_loopback() && !self.limit_loopback {
            return Ok(());
        }
        let ip = group_of(ip);
        let n = self.counts.entry(ip).or_default();
        if *n >= self.max {
            tracing::debug!(%ip, limit = self.max, "inbound connection refused: per-IP limit");
            return Err(ConnectionDenied::new(IpLimitExceeded {
                ip,
                limit: self.max,
            }));
        }
        *n += 1;
        self.groups.insert(id, ip);
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        _id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        _remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        // Counted since its handshake began; released when it closes.
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.forget(connection_id)
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_groups_by_56_bits() {
        let a: Multiaddr = "/ip6/2001:db8:aa:bb01::1/tcp/1".parse().expect("valid");
        let b: Multiaddr = "/ip6/2001:db8:aa:bbff::2/tcp/1".parse().expect("valid");
        let c: Multiaddr = "/ip6/2001:db8:aa:cc00::1/tcp/1".parse().expect("valid");
        assert_eq!(ip_group(&a), ip_group(&b));
        assert_ne!(ip_group(&a), ip_group(&c));
        let v4: Multiaddr = "/ip4/192.0.2.1/tcp/1".parse().expect("valid");
        assert_eq!(ip_group(&v4), Some("192.0.2.1".parse().expect("ip")));
    }

    #[test]
    fn loopback_is_exempt_over_ipv6_as_over_ipv4() {
        let limits = ConnectionLimits {
            max_incoming_per_ip: 1,
            ..ConnectionLimits::default()
        };
        let mut ips = IpLimits::new(&limits);
        let local: Multiaddr = "/ip6/::1/tcp/4001".parse().expect("valid");
        for remote in ["/ip6/::1/tcp/5000", "/ip4/127.0.0.1/tcp/5000"] {
            let remote: Multiaddr = remote.parse().expect("valid");
            for _ in 0..3 {
                let id = ConnectionId::new_unchecked(ips.groups.len() + 100);
                assert!(
                    ips.handle_pending_inbound_connection(id, &local, &remote)
                        .is_ok(),
                    "{remote} was limited"
                );
            }
        }
        // A public IPv6 address is limited.
        let remote: Multiaddr = "/ip6/2001:db8::1/tcp/5000".parse().expect("valid");
        let first = ConnectionId::new_unchecked(1);
        let second = ConnectionId::new_unchecked(2);
        assert!(
            ips.handle_pending_inbound_connection(first, &local, &remote)
                .is_ok()
        );
        assert!(
            ips.handle_pending_inbound_connection(second, &local, &remote)
                .is_err()
        );
    }
}
