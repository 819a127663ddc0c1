//! Where the tables get the time from.
//!
//! The tables never read the system clock themselves. Methods that depend on time have a
//! variant taking `now` explicitly (e.g. [`KBucketTable::update_at`](crate::KBucketTable::update_at));
//! the [`RoutingTable`](crate::RoutingTable) trait's `update` has no `now`, so each table is
//! built with a [`Clock`] and asks it for the time there.
//!
//! Times are wall-clock seconds ([`UnixSecs`]), the unit every seam of the workspace uses, so
//! that a deterministic simulator can drive the tables with virtual time ([`ManualClock`]) and
//! a real node with [`SystemClock`].
//!
//! Why a clock given at construction rather than a `set_now` on the table: every caller of
//! the trait would have to remember to advance the table's time first, and two threads doing
//! so would race; a clock is read at the moment of each update, and a simulator hands the
//! tables the same virtual clock its network uses.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use dht_proto::UnixSecs;

/// A source of wall-clock seconds.
///
/// Implemented by [`SystemClock`], [`ManualClock`] and any `Fn() -> UnixSecs` closure, so a
/// simulator can pass `move || sim_clock.now_secs()`.
pub trait Clock: Send + Sync {
    /// The current time in seconds since the Unix epoch.
    fn now(&self) -> UnixSecs;
}

impl<F> Clock for F
where
    F: Fn() -> UnixSecs + Send + Sync,
{
    fn now(&self) -> UnixSecs {
        self()
    }
}

/// The operating system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixSecs {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// A clock that moves only when told to: for tests and simulations.
///
/// Clones share the same time, so a test keeps one clone and gives the other to a table.
///
/// ```
/// use dht_routing_table::{Clock, ManualClock};
/// let clock = ManualClock::new(100);
/// let shared = clock.clone();
/// clock.advance(5);
/// assert_eq!(shared.now(), 105);
/// ```
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock showing `now`.
    pub fn new(now: UnixSecs) -> Self {
        ManualClock(Arc::new(AtomicU64::new(now)))
    }

    /// Sets the time.
    pub fn set(&self, now: UnixSecs) {
        self.0.store(now, Ordering::Relaxed);
    }

    /// Moves the time forward by `secs`.
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixSecs {
        self.0.load(Ordering::Relaxed)
    }
}
