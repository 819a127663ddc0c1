//! What an operation cost: [`OpStats`], and [`Outcome`], a result with its cost.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::Duration,
};

use dht_proto::{MessageType, PeerId};
use parking_lot::Mutex;

/// What one operation cost.
///
/// Every operation of this crate returns one, also when it found nothing. Counters add up
/// over the operation's phases (e.g. a get-value walk and the puts that correct outdated
/// peers); [`peers_contacted`](Self::peers_contacted) counts distinct peers over all phases.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct OpStats {
    /// Requests sent, by type.
    pub requests: BTreeMap<MessageType, u64>,
    /// Batches of the batched provide protocol sent
    /// ([`Network::provide_batch`](crate::Network::provide_batch); not in
    /// [`requests`](Self::requests), which counts `/ipfs/kad/1.0.0` messages). Their answers
    /// count in [`successes`](Self::successes) and [`failures`](Self::failures).
    pub batches: u64,
    /// Requests answered (for ADD_PROVIDER: written).
    pub successes: u64,
    /// Requests that failed, timeouts included.
    pub failures: u64,
    /// Requests that timed out (also counted in `failures`).
    pub timeouts: u64,
    /// Hops of the longest walk (0 when answered from the routing table, 1 for requests sent
    /// straight to known peers); see [`QueryStats::rounds`](crate::QueryStats::rounds).
    pub rounds: u32,
    /// Wall time the operation took, by tokio's clock (virtual time on a paused clock).
    pub elapsed: Duration,
    contacted: HashSet<PeerId>,
}

impl OpStats {
    /// Requests of type `ty` sent.
    pub fn requests_of(&self, ty: MessageType) -> u64 {
        self.requests.get(&ty).copied().unwrap_or(0)
    }

    /// Requests sent, all types.
    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }

    /// Distinct peers sent at least one request.
    pub fn peers_contacted(&self) -> usize {
        self.contacted.len()
    }

    /// Adds the counters of `other` (another phase of the same operation).
    pub fn merge(&mut self, other: &OpStats) {
        for (ty, n) in &other.requests {
            *self.requests.entry(*ty).or_default() += n;
        }
        self.batches += other.batches;
        self.successes += other.successes;
        self.failures += other.failures;
        self.timeouts += other.timeouts;
        self.rounds = self.rounds.max(other.rounds);
        self.elapsed += other.elapsed;
        self.contacted.extend(other.contacted.iter().copied());
    }

    /// Records a request of type `ty` sent to `peer`.
    pub fn record_request(&mut self, peer: PeerId, ty: MessageType) {
        *self.requests.entry(ty).or_default() += 1;
        self.contacted.insert(peer);
    }

    /// Records a batch of the batched provide protocol sent to `peer`.
    pub fn record_batch(&mut self, peer: PeerId) {
        self.batches += 1;
        self.contacted.insert(peer);
    }

    pub(crate) fn record_result<T, E: IsTimeout>(&mut self, result: &Result<T, E>) {
        match result {
            Ok(_) => self.successes += 1,
            Err(e) => {
                self.failures += 1;
                if e.is_timeout() {
                    self.timeouts += 1;
                }
            }
        }
    }
}

pub(crate) trait IsTimeout {
    fn is_timeout(&self) -> bool;
}

impl IsTimeout for crate::RpcError {
    fn is_timeout(&self) -> bool {
        matches!(self, crate::RpcError::Timeout)
    }
}

/// A result and what it cost.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Outcome<T> {
    /// The result.
    pub value: T,
    /// The cost.
    pub stats: OpStats,
}

impl<T> Outcome<T> {
    /// A result with its cost.
    pub fn new(value: T, stats: OpStats) -> Self {
        Outcome { value, stats }
    }

    /// The same cost with another result.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Outcome<U> {
        Outcome {
            value: f(self.value),
            stats: self.stats,
        }
    }
}

/// [`OpStats`] shared between an operation that is still running (a stream) and its caller.
#[derive(Clone, Debug, Default)]
pub struct SharedStats(Arc<Mutex<OpStats>>);

impl SharedStats {
    /// Empty counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the counters now.
    pub fn snapshot(&self) -> OpStats {
        self.0.lock().clone()
    }

    /// Changes the counters.
    pub fn update<R>(&self, f: impl FnOnce(&mut OpStats) -> R) -> R {
        f(&mut self.0.lock())
    }
}
