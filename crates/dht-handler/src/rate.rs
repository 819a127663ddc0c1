//! A token bucket per peer, or per IP, in a bounded table.

use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::num::NonZeroUsize;

use dht_proto::UnixSecs;
use lru::LruCache;
use parking_lot::Mutex;

use crate::config::RateLimit;

/// Shards of the peer table, so that concurrent requests rarely wait on one lock.
const SHARDS: usize = 16;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: u64,
    last: UnixSecs,
}

/// Token buckets for the most recently seen senders, keyed by `K` (a peer id or an IP): an
/// LRU of bounded size, split in shards. Each entry is the key and 16 bytes, so the table
/// takes at most about `max_keys × (size of K + 64)` bytes (about 1.5 MB for 10,000 peer ids).
///
/// A sender forgotten by the LRU starts again with a full bucket: bounded memory costs a
/// little precision, never correctness for honest peers. Fresh peer ids cost nothing, so a
/// peer that cycles through more ids than the table holds escapes its per-peer limit; the
/// per-IP limiter is what bounds it (every id from one IP shares one bucket).
pub(crate) struct RateLimiter<K> {
    rate: u64,
    capacity: u64,
    hasher: RandomState,
    shards: Box<[Mutex<LruCache<K, Bucket>>]>,
}

/// What the per-IP limiter counts: an IPv4 address, or an IPv6 /56 (a single subscriber's
/// prefix is commonly a /56 to a /64, so one host cannot hop addresses within it).
///
/// ```
/// use dht_handler::ip_bucket;
/// let a = ip_bucket("2001:db8:aa:bb01::1".parse()?);
/// assert_eq!(a, ip_bucket("2001:db8:aa:bbff::2".parse()?));
/// assert_ne!(a, ip_bucket("2001:db8:aa:cc00::1".parse()?));
/// assert_eq!(ip_bucket("192.0.2.1".parse()?), "192.0.2.1".parse::<std::net::IpAddr>()?);
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
pub fn ip_bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << (128 - 56)) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

impl<K: Hash + Eq + Copy> RateLimiter<K> {
    pub(crate) fn new(limit: RateLimit, max_keys: usize) -> Self {
        let per_shard = max_keys.max(1).div_ceil(SHARDS);
        let cap = NonZeroUsize::new(per_shard).unwrap_or(NonZeroUsize::MIN);
        RateLimiter {
            rate: limit.rate(),
            capacity: limit.capacity(),
            hasher: RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(cap)))
                .collect(),
        }
    }

    /// Spends one of `peer`'s tokens at `now`; `false` if it has none left.
    pub(crate) fn allow(&self, peer: &K, now: UnixSecs) -> bool {
        self.spend(peer, 1, now).is_ok()
    }

    /// Spends `n` of `peer`'s tokens at `now` (a batch of `n` requests in one message), all
    /// or none: `Ok` with the tokens left, or `Err` with the tokens it has (fewer than `n`),
    /// nothing spent. `n` of 0 spends nothing and is allowed.
    pub(crate) fn spend(&self, peer: &K, n: u64, now: UnixSecs) -> Result<u64, u64> {
        self.with_bucket(peer, now, |tokens| {
            if *tokens < n {
                Err(*tokens)
            } else {
                *tokens -= n;
                Ok(*tokens)
            }
        })
    }

    /// The tokens `peer` has at `now`, nothing spent.
    pub(crate) fn available(&self, peer: &K, now: UnixSecs) -> u64 {
        self.with_bucket(peer, now, |tokens| *tokens)
    }

    /// Tokens earned a second.
    pub(crate) fn rate(&self) -> u64 {
        self.rate
    }

    /// The most tokens a bucket holds.
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Runs `f` on `peer`'s tokens at `now` (refilled since it was last seen; a peer not
    /// remembered has a full bucket, remembered only if `f` spends from it).
    fn with_bucket<T>(&self, peer: &K, now: UnixSecs, f: impl FnOnce(&mut u64) -> T) -> T {
        let i = (self.hasher.hash_one(peer) as usize) % self.shards.len();
        let Some(shard) = self.shards.get(i) else {
            let mut tokens = self.capacity;
            return f(&mut tokens);
        };
        let mut shard = shard.lock();
        match shard.get_mut(peer) {
            Some(b) => {
                if now > b.last {
                    let earned = (now - b.last).saturating_mul(self.rate);
                    b.tokens = b.tokens.saturating_add(earned).min(self.capacity);
                    b.last = now;
                }
                f(&mut b.tokens)
            }
            None => {
                let mut tokens = self.capacity;
                let out = f(&mut tokens);
                if tokens < self.capacity {
                    shard.put(*peer, Bucket { tokens, last: now });
                }
                out
            }
        }
    }

    /// Number of peers remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dht_proto::PeerId;

    #[test]
    fn bucket_cases() {
        // (rate, burst, [(now, requests, expected allowed)])
        type Step = (UnixSecs, u32, u32);
        fn check(rate: u32, burst: u32, steps: &[Step]) {
            let rl = RateLimiter::<PeerId>::new(RateLimit::new(rate, burst), 100);
            let peer = PeerId::random();
            for &(now, n, expected) in steps {
                let allowed = (0..n).filter(|_| rl.allow(&peer, now)).count() as u32;
                assert_eq!(
                    allowed, expected,
                    "rate {rate} burst {burst} step {now}/{n}"
                );
            }
        }
        // A full bucket is spent, then refills by `rate` per second up to `burst`.
        check(
            2,
            5,
            &[(10, 7, 5), (10, 3, 0), (11, 5, 2), (13, 9, 4), (100, 9, 5)],
        );
        // Burst below rate is raised to the rate.
        check(5, 1, &[(0, 9, 5), (1, 9, 5)]);
        // Rate 0 is read as 1.
        check(0, 3, &[(0, 5, 3), (1, 5, 1), (1, 1, 0), (3, 5, 2)]);
        // Time going backwards earns nothing and breaks nothing.
        check(1, 2, &[(50, 3, 2), (40, 3, 0), (51, 3, 1)]);
    }

    #[test]
    fn peers_are_independent_and_bounded() {
        let rl = RateLimiter::new(RateLimit::new(1, 1), 32);
        let a = PeerId::random();
        let b = PeerId::random();
        assert!(rl.allow(&a, 0));
        assert!(!rl.allow(&a, 0));
        assert!(rl.allow(&b, 0));
        for _ in 0..1000 {
            rl.allow(&PeerId::random(), 0);
        }
        assert!(rl.len() <= 32, "{}", rl.len());
    }
}
