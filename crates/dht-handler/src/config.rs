//! The handler's limits.

use dht_proto::{InvalidSetting, K_VALUE};

/// The per-peer request rate: a token bucket per sender.
///
/// Time is whole seconds (the `now` given to [`Handler::handle`](crate::Handler::handle)):
/// each second a sender earns `per_second` tokens, up to `burst`; each request spends one.
/// Because the bucket refills once per second, `burst` is raised to at least `per_second`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Tokens earned per second (at least 1).
    pub per_second: u32,
    /// Most tokens a sender can hold: the largest burst (at least `per_second`).
    pub burst: u32,
}

impl RateLimit {
    /// A limit of `per_second` requests per second with bursts of up to `burst`.
    pub const fn new(per_second: u32, burst: u32) -> Self {
        RateLimit { per_second, burst }
    }

    /// Tokens per second, at least 1.
    pub(crate) fn rate(&self) -> u64 {
        u64::from(self.per_second.max(1))
    }

    /// The bucket's capacity, at least the rate.
    pub(crate) fn capacity(&self) -> u64 {
        u64::from(self.burst).max(self.rate())
    }
}

impl Default for RateLimit {
    /// 1,000 requests per second, bursts of 10,000.
    ///
    /// Generous on purpose: a sweeping provider sends one ADD_PROVIDER per key to each of the
    /// region's peers in one burst, thousands of messages to one server.
    fn default() -> Self {
        RateLimit::new(1_000, 10_000)
    }
}

/// The limits of a [`Handler`](crate::Handler).
///
/// `Default` suits a public Amino DHT server; the setters chain:
///
/// ```
/// use dht_handler::{HandlerConfig, RateLimit};
/// let config = HandlerConfig::default()
///     .with_max_value_size(4096)
///     .with_rate_limit(Some(RateLimit::new(100, 1_000)))
///     .with_max_tracked_peers(1_000);
/// assert_eq!(config.max_value_size, 4096);
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerConfig {
    /// Closer peers returned by FIND_NODE, GET_VALUE and GET_PROVIDERS (k, default 20).
    pub closer_peers: usize,
    /// Longest key of ADD_PROVIDER and GET_PROVIDERS (default 80 bytes, as go-libp2p-kad-dht).
    pub max_provider_key_len: usize,
    /// Longest key of FIND_NODE, GET_VALUE and PUT_VALUE (default 256 bytes; go-libp2p-kad-dht
    /// has no limit beyond the message size, but every key it produces — peer ids, `/pk/…`,
    /// `/ipns/…`, multihashes — is shorter than 100 bytes).
    pub max_key_len: usize,
    /// Most providers returned by one GET_PROVIDERS (default 20).
    ///
    /// How many providers are *kept* per key is the store's setting
    /// (`dht_provider_store::Config::max_providers_per_key`, default 20): a new provider of a
    /// full key is refused silently and the established ones are kept, unless it comes from
    /// a network (/24 or /48 of its connection) the key holds no provider of while another
    /// holds several: it then takes the oldest slot of the most crowded one
    /// (`ProviderStore::add_inbound_provider`).
    pub max_providers_returned: usize,
    /// Most addresses of the sender an ADD_PROVIDER may carry (default 128).
    pub max_provider_addrs: usize,
    /// Largest address kept in a provider record, in bytes (default 256: an address with two
    /// WebTransport certificate hashes and a peer id takes about 130). Longer addresses are
    /// dropped, as are those no one could dial (`dht_proto::is_dialable`).
    pub max_provider_addr_bytes: usize,
    /// Most bytes of addresses one provider record keeps (default 4,096); addresses beyond
    /// are dropped, first ones kept. Applied when a record is stored and again when it is
    /// served, so a GET_PROVIDERS answer of `max_providers_returned` records always fits a
    /// message.
    pub max_provider_record_bytes: usize,
    /// Largest PUT_VALUE value (default 10 KiB, the IPNS record size limit; `/pk/` values,
    /// public keys, are smaller).
    pub max_value_size: usize,
    /// The per-peer request rate, or `None` for no limit (default [`RateLimit::default`]).
    pub rate_limit: Option<RateLimit>,
    /// Keys of a batch of the batched provide protocol that one request's token pays for
    /// (default 3, at least 1): a batch of n keys spends `ceil(n / batch_keys_per_request)`
    /// tokens of both rate limits, and its answer's allowance is given in keys (the tokens
    /// times this). A batched record costs the server a fraction of an ADD_PROVIDER (one
    /// message, one validation of the provider and one durable write for the whole batch):
    /// `cargo xtask bench server` measured 0.04 CPU seconds per 10,000 batched records
    /// against 0.11 for ADD_PROVIDER through the grouped writer (senders included), so the
    /// limits, set for the server's work, let a sender that batches send that many more
    /// records. 1 charges a key as a request.
    pub batch_keys_per_request: u32,
    /// How many senders the rate limiter remembers (least recently seen forgotten first;
    /// default 10,000, about 1.5 MB). A forgotten sender starts again with a full bucket.
    pub max_tracked_peers: usize,
    /// The request rate per IP (IPv4 address or IPv6 /56, see [`ip_bucket`](crate::ip_bucket)),
    /// shared by every peer id connecting from it, or `None` for no limit (default 2,000 per
    /// second, bursts of 20,000: twice one peer's, for a few honest peers behind one address).
    /// Fresh peer ids from one IP thus share one budget.
    pub ip_rate_limit: Option<RateLimit>,
    /// How many IPs the per-IP limiter remembers (default 10,000, about 0.8 MB).
    pub max_tracked_ips: usize,
    /// Whether the per-IP rate applies to loopback senders too (default `false`: a devnet runs
    /// every node on 127.0.0.1, and the connection limits exempt loopback alike).
    pub rate_limit_loopback: bool,
    /// Whether answers carry public addresses only (default `false`): loopback, private,
    /// link-local and unspecified IP addresses ([`is_public_addr`](crate::is_public_addr))
    /// learned from others are left out of closer peers and provider records, and a closer
    /// peer left with no address is left out. `dht-node`'s builder turns it on for a node on
    /// the internet and off for a devnet or a LAN.
    pub public_addrs_only: bool,
}

impl Default for HandlerConfig {
    fn default() -> Self {
        HandlerConfig {
            closer_peers: K_VALUE,
            max_provider_key_len: 80,
            max_key_len: 256,
            max_providers_returned: K_VALUE,
            max_provider_addrs: 128,
            max_provider_addr_bytes: 256,
            max_provider_record_bytes: 4096,
            max_value_size: 10 * 1024,
            rate_limit: Some(RateLimit::default()),
            batch_keys_per_request: 3,
            max_tracked_peers: 10_000,
            ip_rate_limit: Some(RateLimit::new(2_000, 20_000)),
            max_tracked_ips: 10_000,
            rate_limit_loopback: false,
            public_addrs_only: false,
        }
    }
}

impl HandlerConfig {
    /// `Ok` when every setting can work: `closer_peers`, `batch_keys_per_request`,
    /// `max_tracked_peers`, `max_tracked_ips` and the rate limits' `per_second` above zero.
    ///
    /// # Errors
    /// [`InvalidSetting`] naming the first setting that cannot work.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        InvalidSetting::at_least_one("closer_peers", self.closer_peers as u64)?;
        InvalidSetting::at_least_one(
            "batch_keys_per_request",
            u64::from(self.batch_keys_per_request),
        )?;
        InvalidSetting::at_least_one("max_tracked_peers", self.max_tracked_peers as u64)?;
        InvalidSetting::at_least_one("max_tracked_ips", self.max_tracked_ips as u64)?;
        for (setting, limit) in [
            ("rate_limit.per_second", self.rate_limit),
            ("ip_rate_limit.per_second", self.ip_rate_limit),
        ] {
            if let Some(limit) = limit {
                InvalidSetting::at_least_one(setting, u64::from(limit.per_second))?;
            }
        }
        Ok(())
    }

    /// Sets [`HandlerConfig::closer_peers`].
    #[must_use]
    pub fn with_closer_peers(mut self, n: usize) -> Self {
        self.closer_peers = n;
        self
    }

    /// Sets [`HandlerConfig::max_provider_key_len`].
    #[must_use]
    pub fn with_max_provider_key_len(mut self, n: usize) -> Self {
        self.max_provider_key_len = n;
        self
    }

    /// Sets [`HandlerConfig::max_key_len`].
    #[must_use]
    pub fn with_max_key_len(mut self, n: usize) -> Self {
        self.max_key_len = n;
        self
    }

    /// Sets [`HandlerConfig::max_providers_returned`].
    #[must_use]
    pub fn with_max_providers_returned(mut self, n: usize) -> Self {
        self.max_providers_returned = n;
        self
    }

    /// Sets [`HandlerConfig::max_provider_addrs`].
    #[must_use]
    pub fn with_max_provider_addrs(mut self, n: usize) -> Self {
        self.max_provider_addrs = n;
        self
    }

    /// Sets [`HandlerConfig::max_provider_addr_bytes`].
    #[must_use]
    pub fn with_max_provider_addr_bytes(mut self, n: usize) -> Self {
        self.max_provider_addr_bytes = n;
        self
    }

    /// Sets [`HandlerConfig::max_provider_record_bytes`].
    #[must_use]
    pub fn with_max_provider_record_bytes(mut self, n: usize) -> Self {
        self.max_provider_record_bytes = n;
        self
    }

    /// Sets [`HandlerConfig::max_value_size`].
    #[must_use]
    pub fn with_max_value_size(mut self, n: usize) -> Self {
        self.max_value_size = n;
        self
    }

    /// Sets [`HandlerConfig::rate_limit`].
    #[must_use]
    pub fn with_rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.rate_limit = limit;
        self
    }

    /// Sets [`HandlerConfig::batch_keys_per_request`] (at least 1).
    #[must_use]
    pub fn with_batch_keys_per_request(mut self, n: u32) -> Self {
        self.batch_keys_per_request = n;
        self
    }

    /// Sets [`HandlerConfig::max_tracked_peers`] (at least 1).
    #[must_use]
    pub fn with_max_tracked_peers(mut self, n: usize) -> Self {
        self.max_tracked_peers = n;
        self
    }

    /// Sets [`HandlerConfig::ip_rate_limit`].
    #[must_use]
    pub fn with_ip_rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.ip_rate_limit = limit;
        self
    }

    /// Sets [`HandlerConfig::max_tracked_ips`] (at least 1).
    #[must_use]
    pub fn with_max_tracked_ips(mut self, n: usize) -> Self {
        self.max_tracked_ips = n;
        self
    }

    /// Sets [`HandlerConfig::public_addrs_only`].
    #[must_use]
    pub fn with_public_addrs_only(mut self, on: bool) -> Self {
        self.public_addrs_only = on;
        self
    }

    /// Sets [`HandlerConfig::rate_limit_loopback`].
    #[must_use]
    pub fn with_rate_limit_loopback(mut self, on: bool) -> Self {
        self.rate_limit_loopback = on;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_counts_and_rates_are_refused_by_name() {
        assert_eq!(HandlerConfig::default().validate(), Ok(()));
        let refused = |config: HandlerConfig| match config.validate() {
            Err(e) => e.setting,
            Ok(()) => panic!("taken"),
        };
        let d = HandlerConfig::default;
        assert_eq!(refused(d().with_closer_peers(0)), "closer_peers");
        assert_eq!(
            refused(d().with_batch_keys_per_request(0)),
            "batch_keys_per_request"
        );
        assert_eq!(refused(d().with_max_tracked_peers(0)), "max_tracked_peers");
        assert_eq!(refused(d().with_max_tracked_ips(0)), "max_tracked_ips");
        assert_eq!(
            refused(d().with_rate_limit(Some(RateLimit::new(0, 10)))),
            "rate_limit.per_second"
        );
        assert_eq!(
            refused(d().with_ip_rate_limit(Some(RateLimit::new(0, 10)))),
            "ip_rate_limit.per_second"
        );
        // A value that means something at zero is taken.
        assert_eq!(d().with_max_value_size(0).validate(), Ok(()));
    }
}
