//! The node's permits for inbound requests being answered: a bound in total
//! ([`KadConfig::max_inbound_requests`]) and a share per IP
//! ([`KadConfig::max_inbound_requests_per_ip`]), so that one IP holding all it may cannot
//! make another IP's requests shed.
//!
//! [`KadConfig::max_inbound_requests`]: crate::KadConfig::max_inbound_requests
//! [`KadConfig::max_inbound_requests_per_ip`]: crate::KadConfig::max_inbound_requests_per_ip

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use dht_handler::ip_bucket;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The permits of one node, shared by all its connections.
#[derive(Debug)]
pub(crate) struct InboundPermits {
    total: Arc<Semaphore>,
    per_ip: usize,
    /// Whether loopback senders have a share too (else they are bounded by the total only).
    limit_loopback: AtomicBool,
    /// Permits held per IP (IPv4 address or IPv6 /56); only IPs holding one are kept, so at
    /// most as many entries as there are permits.
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One inbound request's permit, given back when dropped.
#[derive(Debug)]
pub(crate) struct InboundPermit {
    _total: OwnedSemaphorePermit,
    ip: Option<IpAddr>,
    permits: Arc<InboundPermits>,
}

impl Drop for InboundPermit {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut held = self.permits.held.lock();
            if let Some(n) = held.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    held.remove(&ip);
                }
            }
        }
    }
}

impl InboundPermits {
    /// `total` permits, at most `per_ip` of them held by one IP.
    pub(crate) fn new(total: usize, per_ip: usize) -> Arc<Self> {
        Arc::new(InboundPermits {
            total: Arc::new(Semaphore::new(total)),
            per_ip: per_ip.max(1),
            limit_loopback: AtomicBool::new(false),
            held: Mutex::new(HashMap::new()),
        })
    }

    /// Whether loopback senders get a share like the others (default: no, as the
    /// connection limits exempt loopback).
    pub(crate) fn set_limit_loopback(&self, on: bool) {
        self.limit_loopback.store(on, Ordering::Relaxed);
    }

    /// The IP a sender from `ip` counts under, if its share is counted.
    fn counted(&self, ip: Option<IpAddr>) -> Option<IpAddr> {
        let loopback = self.limit_loopback.load(Ordering::Relaxed);
        ip.filter(|ip| loopback || !ip.is_loopback()).map(ip_bucket)
    }

    /// Whether a request from `ip` would get a permit now.
    pub(crate) fn available(&self, ip: Option<IpAddr>) -> bool {
        if self.total.available_permits() == 0 {
            return false;
        }
        match self.counted(ip) {
            Some(ip) => self.held.lock().get(&ip).copied().unwrap_or(0) < self.per_ip,
            None => true,
        }
    }

    /// A permit for a request from `ip`: `None` when all are taken or `ip` holds its share.
    pub(crate) fn try_take(self: &Arc<Self>, ip: Option<IpAddr>) -> Option<InboundPermit> {
        let counted = self.counted(ip);
        let mut held = self.held.lock();
        if let Some(ip) = counted
            && held.get(&ip).copied().unwrap_or(0) >= self.per_ip
        {
            return None;
        }
        let total = self.total.clone().try_acquire_owned().ok()?;
        if let Some(ip) = counted {
            *held.entry(ip).or_default() += 1;
        }
        Some(InboundPermit {
            _total: total,
            ip: counted,
            permits: self.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_ip_holds_at_most_its_share_and_gives_it_back() {
        let permits = InboundPermits::new(8, 2);
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "198.51.100.1".parse().expect("ip");
        let first = permits.try_take(Some(a));
        let second = permits.try_take(Some(a));
        assert!(first.is_some() && second.is_some());
        assert!(permits.try_take(Some(a)).is_none());
        assert!(!permits.available(Some(a)));
        assert!(permits.available(Some(b)));
        drop(first);
        assert!(permits.try_take(Some(a)).is_some());
        assert!(permits.held.lock().len() <= 1);
        // Loopback is bounded by the total only, unless asked.
        let lo: IpAddr = "127.0.0.1".parse().expect("ip");
        let many: Vec<_> = (0..5).filter_map(|_| permits.try_take(Some(lo))).collect();
        assert_eq!(many.len(), 5);
        permits.set_limit_loopback(true);
        drop(many);
        let few: Vec<_> = (0..5).filter_map(|_| permits.try_take(Some(lo))).collect();
        assert_eq!(few.len(), 2);
        // The total still bounds everyone.
        let others: Vec<_> = (0..20u8)
            .filter_map(|i| permits.try_take(Some(IpAddr::from([203, 0, 113, i]))))
            .collect();
        assert_eq!(others.len(), 8 - 1 - 2);
    }
}
