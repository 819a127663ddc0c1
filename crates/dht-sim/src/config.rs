//! [`SimConfig`]: what network to simulate.

use std::time::Duration;

use dht_handler::HandlerConfig;
use dht_proto::UnixSecs;
use dht_routing::ClientConfig;
use dht_routing_table::KBucketConfig;

use crate::SimError;

/// One-way message latency: every message (a request, or its response) is delayed by a fresh
/// draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Latency {
    /// Always this long.
    Fixed(Duration),
    /// Uniform between `min` and `max` (inclusive, microsecond steps).
    Uniform {
        /// The shortest delay.
        min: Duration,
        /// The longest delay.
        max: Duration,
    },
}

impl Latency {
    /// Uniform between `min_ms` and `max_ms` milliseconds, one way.
    pub fn uniform_ms(min_ms: u64, max_ms: u64) -> Self {
        Latency::Uniform {
            min: Duration::from_millis(min_ms.min(max_ms)),
            max: Duration::from_millis(max_ms.max(min_ms)),
        }
    }

    /// One draw, from a uniform `u64`.
    pub(crate) fn draw(&self, r: u64) -> Duration {
        match *self {
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } => {
                let lo = u64::try_from(min.as_micros()).unwrap_or(u64::MAX);
                let hi = u64::try_from(max.as_micros()).unwrap_or(u64::MAX).max(lo);
                let span = hi - lo;
                let off = if span == u64::MAX { r } else { r % (span + 1) };
                Duration::from_micros(lo + off)
            }
        }
    }
}

impl Default for Latency {
    /// Uniform 10 to 100 ms one way (20 to 200 ms round trip).
    fn default() -> Self {
        Latency::uniform_ms(10, 100)
    }
}

/// Shares of misbehaving nodes (each between 0 and 1; together at most 1). The rest are
/// honest. Which nodes misbehave is drawn from the seed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Misbehaviour {
    /// Nodes that accept requests and never answer (the requester's timeout fires).
    pub silent: f64,
    /// Nodes that answer correctly, [`SimConfig::slow_delay`] late.
    pub slow: f64,
    /// Nodes that answer FIND_NODE, GET_VALUE and GET_PROVIDERS with k random live peers
    /// instead of their closest.
    pub random_peers: f64,
    /// Nodes that answer with k live peers from the far half of the keyspace (first bit of
    /// the target flipped).
    pub far_peers: f64,
}

impl Misbehaviour {
    fn total(&self) -> f64 {
        self.silent + self.slow + self.random_peers + self.far_peers
    }
}

/// How routing tables are filled before experiments run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TableBuild {
    /// Nodes join in waves; each adds a few bootstrap peers and fills its table by real
    /// lookups through its [`DhtClient`](dht_routing::DhtClient) (a self-lookup, then one
    /// lookup per bucket up to CPL 15, as go-libp2p-kad-dht). Servers learn the joiners from
    /// their requests. A final refresh round brings the first joiners up to date.
    Realistic,
    /// Every table filled directly from the sorted list of node keys: for each bucket, up to
    /// k random peers of that bucket's range, what a perfectly refreshed table holds. Fast
    /// for large networks; a test shows it gives the tables (and the lookups) of
    /// [`TableBuild::Realistic`].
    #[default]
    Fast,
    /// Tables are left empty (the caller builds them, e.g. with
    /// [`Sim::join`](crate::Sim::join)).
    Empty,
}

/// Churn: nodes leaving and joining at a rate, as a Poisson process in virtual time. See
/// [`Sim::run_churn`](crate::Sim::run_churn).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Churn {
    /// Share of the initial node count that leaves per hour (e.g. 0.1: with 1,000 nodes,
    /// about 100 leave per hour). A node that leaves answers nothing again.
    pub leave_per_hour: f64,
    /// Share of the initial node count that joins per hour (new identities, joining as
    /// [`TableBuild::Realistic`] does).
    pub join_per_hour: f64,
}

impl Churn {
    /// As many nodes join as leave: `share` of the network per hour each way.
    pub fn per_hour(share: f64) -> Self {
        Churn {
            leave_per_hour: share,
            join_per_hour: share,
        }
    }

    /// Sets [`Churn::leave_per_hour`].
    #[must_use]
    pub fn with_leave_per_hour(mut self, share: f64) -> Self {
        self.leave_per_hour = share;
        self
    }

    /// Sets [`Churn::join_per_hour`].
    #[must_use]
    pub fn with_join_per_hour(mut self, share: f64) -> Self {
        self.join_per_hour = share;
        self
    }
}

/// Settings of a [`Sim`](crate::Sim); `Default` and chainable setters.
///
/// ```
/// use std::time::Duration;
/// use dht_sim::{Latency, SimConfig, TableBuild};
/// let config = SimConfig::default()
///     .with_nodes(500)
///     .with_seed(7)
///     .with_latency(Latency::uniform_ms(5, 50))
///     .with_silent(0.1)
///     .with_build(TableBuild::Realistic);
/// assert_eq!(config.nodes, 500);
/// assert_eq!(config.misbehaviour.silent, 0.1);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SimConfig {
    /// Nodes at the start (default 1,000).
    pub nodes: usize,
    /// The seed of every random choice: identities, behaviours, latencies, losses,
    /// experiments (default 0). The same seed gives the same run.
    pub seed: u64,
    /// One-way latency (default uniform 10..=100 ms).
    pub latency: Latency,
    /// Probability that a message (request or response) is lost; the requester's timeout
    /// fires (default 0).
    pub loss: f64,
    /// Share of the peers it knows that a server leaves out of each answer (FIND_NODE,
    /// GET_VALUE, GET_PROVIDERS), as servers with stale address books do: each peer of an
    /// answer is dropped with this probability (default 0).
    pub omit: f64,
    /// Misbehaving nodes (default none).
    pub misbehaviour: Misbehaviour,
    /// Extra delay of a slow node's answers (default 3 s: past the lookup's 2 s stall
    /// timeout, within its 10 s request timeout).
    pub slow_delay: Duration,
    /// How long a request to a node that left takes to fail (dial timeout; default 5 s).
    pub dial_timeout: Duration,
    /// How long an ADD_PROVIDER takes to be written (it has no response; delivery to the
    /// server follows after the one-way latency). Default zero.
    pub write_delay: Duration,
    /// How tables are built (default [`TableBuild::Fast`]).
    pub build: TableBuild,
    /// Peers a joining node starts from (default 4, random nodes that joined before it).
    pub bootstrap_peers: usize,
    /// Nodes joining at once in [`TableBuild::Realistic`] (default 32).
    pub join_concurrency: usize,
    /// Churn (default none). Applied by [`Sim::run_churn`](crate::Sim::run_churn).
    pub churn: Churn,
    /// Every node's client: k, α, β, timeouts (default [`ClientConfig::default`]).
    pub client: ClientConfig,
    /// Every node's routing table (default: the Amino DHT's, without the IP diversity
    /// filter, since simulated addresses share one /16).
    pub table: KBucketConfig,
    /// Every node's handler (default: Amino DHT limits, no rate limit: the limiter's LRU
    /// would cost memory in every node, and its hash is not seeded).
    pub handler: HandlerConfig,
    /// Wall-clock seconds at virtual time zero (default [`dht_test_kit::EPOCH`]).
    pub start_time: UnixSecs,
    /// What servers do with the ADD_PROVIDER messages they receive (default: store them).
    pub provider_records: ProviderRecords,
    /// Share of the servers that speak the batched provide protocol
    /// (`/amino-dht-rs/provide-batch/1.0.0`): each node, joiners included, does with this
    /// probability, drawn from the seed and its index (default 0: none).
    pub provide_batch_share: f64,
    /// Of the servers that list the batched provide protocol, the share that refuse its
    /// streams all the same (an identify that is out of date, a server set not to take
    /// batches): the sender is told [`RpcError::Unsupported`](dht_routing::RpcError) one
    /// round trip later and falls back to ADD_PROVIDER (default 0: none).
    pub provide_batch_refuse_share: f64,
}

/// What simulated servers do with the provider records (ADD_PROVIDER) they receive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProviderRecords {
    /// Hand them to the node's handler, which stores them: GET_PROVIDERS finds them.
    #[default]
    Store,
    /// Count them on arrival and drop them: a run of millions of keys measures the provider,
    /// not the servers' stores. Nothing is findable.
    Count,
    /// Keep the records of the keys a run checks (its placement, holder and findability
    /// samples, registered with [`Sim::keep_records_of`](crate::Sim::keep_records_of)) and
    /// count the others: a run of millions of keys measures placement and findability on a
    /// sample, and the servers' stores hold only the sample's records.
    Sample,
}

impl ProviderRecords {
    /// Whether servers keep any record (placement and findability can be measured).
    pub fn stores(self) -> bool {
        !matches!(self, ProviderRecords::Count)
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 1_000,
            seed: 0,
            latency: Latency::default(),
            loss: 0.0,
            omit: 0.0,
            misbehaviour: Misbehaviour::default(),
            slow_delay: Duration::from_secs(3),
            dial_timeout: Duration::from_secs(5),
            write_delay: Duration::ZERO,
            build: TableBuild::default(),
            bootstrap_peers: 4,
            join_concurrency: 32,
            churn: Churn::default(),
            client: ClientConfig::default(),
            table: KBucketConfig::default().with_diversity(None),
            handler: HandlerConfig::default().with_rate_limit(None),
            start_time: dht_test_kit::EPOCH,
            provider_records: ProviderRecords::Store,
            provide_batch_share: 0.0,
            provide_batch_refuse_share: 0.0,
        }
    }
}

macro_rules! setter {
    ($(#[$doc:meta] $with:ident => $name:ident: $ty:ty;)*) => {$(
        #[$doc]
        #[must_use]
        pub fn $with(mut self, value: $ty) -> Self {
            self.$name = value;
            self
        }
    )*};
}

impl SimConfig {
    setter! {
        /// Sets [`SimConfig::nodes`].
        with_nodes => nodes: usize;
        /// Sets [`SimConfig::seed`].
        with_seed => seed: u64;
        /// Sets [`SimConfig::latency`].
        with_latency => latency: Latency;
        /// Sets [`SimConfig::loss`].
        with_loss => loss: f64;
        /// Sets [`SimConfig::omit`].
        with_omit => omit: f64;
        /// Sets [`SimConfig::misbehaviour`].
        with_misbehaviour => misbehaviour: Misbehaviour;
        /// Sets [`SimConfig::slow_delay`].
        with_slow_delay => slow_delay: Duration;
        /// Sets [`SimConfig::dial_timeout`].
        with_dial_timeout => dial_timeout: Duration;
        /// Sets [`SimConfig::write_delay`].
        with_write_delay => write_delay: Duration;
        /// Sets [`SimConfig::build`].
        with_build => build: TableBuild;
        /// Sets [`SimConfig::bootstrap_peers`].
        with_bootstrap_peers => bootstrap_peers: usize;
        /// Sets [`SimConfig::join_concurrency`].
        with_join_concurrency => join_concurrency: usize;
        /// Sets [`SimConfig::churn`].
        with_churn => churn: Churn;
        /// Sets [`SimConfig::client`].
        with_client => client: ClientConfig;
        /// Sets [`SimConfig::table`].
        with_table => table: KBucketConfig;
        /// Sets [`SimConfig::handler`].
        with_handler => handler: HandlerConfig;
        /// Sets [`SimConfig::start_time`].
        with_start_time => start_time: UnixSecs;
        /// Sets [`SimConfig::provider_records`].
        with_provider_records => provider_records: ProviderRecords;
        /// Sets [`SimConfig::provide_batch_share`].
        with_provide_batch_share => provide_batch_share: f64;
        /// Sets [`SimConfig::provide_batch_refuse_share`].
        with_provide_batch_refuse_share => provide_batch_refuse_share: f64;
    }

    /// Sets [`Misbehaviour::silent`].
    #[must_use]
    pub fn with_silent(mut self, share: f64) -> Self {
        self.misbehaviour.silent = share;
        self
    }

    /// Sets [`Misbehaviour::slow`].
    #[must_use]
    pub fn with_slow(mut self, share: f64) -> Self {
        self.misbehaviour.slow = share;
        self
    }

    /// Sets [`Misbehaviour::random_peers`].
    #[must_use]
    pub fn with_random_peers(mut self, share: f64) -> Self {
        self.misbehaviour.random_peers = share;
        self
    }

    /// Sets [`Misbehaviour::far_peers`].
    #[must_use]
    pub fn with_far_peers(mut self, share: f64) -> Self {
        self.misbehaviour.far_peers = share;
        self
    }

    /// Checks that shares and probabilities are within `0..=1`, and that the nodes' handler,
    /// client and table settings can work.
    pub(crate) fn validate(&self) -> Result<(), SimError> {
        self.handler.validate()?;
        self.client.validate()?;
        self.table.validate()?;
        let m = &self.misbehaviour;
        let shares = [
            ("loss", self.loss),
            ("omit", self.omit),
            ("provide_batch_share", self.provide_batch_share),
            (
                "provide_batch_refuse_share",
                self.provide_batch_refuse_share,
            ),
            ("silent", m.silent),
            ("slow", m.slow),
            ("random_peers", m.random_peers),
            ("far_peers", m.far_peers),
            ("misbehaviour total", m.total()),
        ];
        for (name, v) in shares {
            if !(0.0..=1.0).contains(&v) {
                return Err(SimError::Config(format!(
                    "{name} = {v} is not within 0..=1"
                )));
            }
        }
        let c = &self.churn;
        if !(c.leave_per_hour >= 0.0 && c.join_per_hour >= 0.0) {
            return Err(SimError::Config("churn rates must not be negative".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_draws_stay_in_range() {
        let check = |l: Latency, r: u64, expected_ms: u64| {
            assert_eq!(l.draw(r), Duration::from_millis(expected_ms), "{l:?} {r}");
        };
        let u = Latency::uniform_ms(10, 100);
        check(u, 0, 10);
        check(u, 90_000, 100);
        check(u, 90_001, 10);
        check(Latency::uniform_ms(100, 10), 0, 10);
        check(Latency::Fixed(Duration::from_millis(7)), 12345, 7);
        check(Latency::uniform_ms(0, 0), u64::MAX, 0);
    }

    #[test]
    fn shares_are_checked() {
        assert!(
            SimConfig::default()
                .with_silent(0.5)
                .with_random_peers(0.5)
                .validate()
                .is_ok()
        );
        assert!(
            SimConfig::default()
                .with_silent(0.6)
                .with_random_peers(0.5)
                .validate()
                .is_err()
        );
        assert!(SimConfig::default().with_loss(-0.1).validate().is_err());
        assert!(SimConfig::default().with_omit(1.5).validate().is_err());
        assert!(SimConfig::default().with_loss(f64::NAN).validate().is_err());
    }
}
