//! File descriptors: the soft `RLIMIT_NOFILE` raised to the hard limit at start, and the
//! limit shared out between RocksDB's files, connections and everything else, so that
//! connections never take what RocksDB needs (a RocksDB that cannot open a file fails its
//! writes).
//!
//! [`NodeBuilder::build`](crate::builder::NodeBuilder::build) calls [`raise_soft_limit`] and
//! then [`FdPlan::new`] with the RocksDB [`max_open_files`](dht_provider_store::Config) and the
//! [`ConnectionLimits`] it was given, and uses the plan's figures, which it logs.

use crate::transport::ConnectionLimits;

/// Descriptors kept for everything but RocksDB and libp2p connections: stdio, the listeners,
/// the HTTP APIs and their clients, the runtime's epoll and event descriptors, DNS, the
/// identity and state files.
pub const OTHER_RESERVE: u64 = 128;

/// Descriptors RocksDB holds besides its SST files (`max_open_files` counts SST files only):
/// the WAL, MANIFEST, LOCK, LOG, CURRENT and OPTIONS files, directories, and the files a flush
/// or compaction is writing.
pub const ROCKS_FIXED: u64 = 32;

/// RocksDB raises a `max_open_files` below 20 to 20.
pub const MIN_ROCKS_FILES: i32 = 20;

/// The outbound dials in flight counted when no [`ConnectionLimits::max_pending_outgoing`] is
/// set: libp2p does not bound them, so a plan that has room for them all leaves them unbounded,
/// and one that has not sets this many at most.
pub const ASSUMED_PENDING_OUTGOING: u32 = 256;

/// The highest soft limit asked for: Linux's default `fs.nr_open`, above which `setrlimit`
/// fails even when the hard limit is infinite.
const MAX_SOFT_LIMIT: u64 = 1 << 20;

/// The process's file-descriptor limits, before and after [`raise_soft_limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit found at start.
    pub before: u64,
    /// The soft limit now in force.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (at most 2^20, Linux's default
/// `fs.nr_open`) and tells the limits. `None` where the platform has no such limit or it cannot
/// be read; a failure to raise it is logged and the old limit kept.
pub fn raise_soft_limit() -> Option<FdLimit> {
    #[cfg(unix)]
    {
        let (before, hard) = match rlimit::Resource::NOFILE.get() {
            Ok(limits) => limits,
            Err(error) => {
                tracing::warn!(%error, "cannot read the file-descriptor limit");
                return None;
            }
        };
        let soft = match rlimit::increase_nofile_limit(hard.min(MAX_SOFT_LIMIT)) {
            Ok(soft) => soft.max(before),
            Err(error) => {
                tracing::warn!(%error, before, hard, "cannot raise the file-descriptor limit");
                before
            }
        };
        Some(FdLimit { before, soft, hard })
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// How a file-descriptor limit is shared out: RocksDB's SST files, the connections (established
/// and in their handshake, both directions), and [`OTHER_RESERVE`] (plus [`ROCKS_FIXED`] when
/// RocksDB is used).
///
/// When the limit has room for what was asked, the figures are those asked for (with an
/// unbounded number of outbound dials, as libp2p has). When it has not, RocksDB keeps a quarter
/// of what is left after the reserves (no more than it asked for, at least
/// [`MIN_ROCKS_FILES`]) and the connections are shrunk to the rest: an eighth of it for
/// inbound handshakes, an eighth for outbound dials, the rest established, at most half of
/// those inbound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdPlan {
    /// The limit shared out.
    pub limit: u64,
    /// RocksDB's `max_open_files` (`None` without RocksDB).
    pub rocks_files: Option<i32>,
    /// The connection limits.
    pub connections: ConnectionLimits,
    /// Whether the limit was too small for what was asked, so that figures were lowered.
    pub shrunk: bool,
}

impl FdPlan {
    /// Shares out `limit` between RocksDB asking for `rocks_files` SST files (`None`: no
    /// RocksDB; `-1`: as many as there are) and connections limited by `connections`.
    pub fn new(limit: u64, rocks_files: Option<i32>, connections: &ConnectionLimits) -> FdPlan {
        let reserve = OTHER_RESERVE
            + if rocks_files.is_some() {
                ROCKS_FIXED
            } else {
                0
            };
        let usable = limit.saturating_sub(reserve);
        let conns_wanted = connection_fds(connections);
        let rocks_wanted = match rocks_files {
            None => 0,
            // Unbounded: whatever the connections leave, and at least a quarter.
            Some(n) if n < 0 => usable.saturating_sub(conns_wanted).max(usable / 4),
            Some(n) => u64::try_from(n).unwrap_or(0),
        };
        if rocks_wanted + conns_wanted <= usable {
            return FdPlan {
                limit,
                rocks_files: rocks_files.map(|n| if n < 0 { to_i32(rocks_wanted) } else { n }),
                connections: connections.clone(),
                shrunk: false,
            };
        }
        let rocks = rocks_files.map(|_| {
            let floor = u64::try_from(MIN_ROCKS_FILES).unwrap_or(20);
            rocks_wanted.min(usable / 4).max(floor)
        });
        let for_conns = usable.saturating_sub(rocks.unwrap_or(0));
        FdPlan {
            limit,
            rocks_files: rocks.map(to_i32),
            connections: shrink(connections, for_conns),
            shrunk: true,
        }
    }

    /// The descriptors the plan may use at most: the reserves, RocksDB's files and every
    /// connection it allows.
    pub fn total(&self) -> u64 {
        let rocks = self
            .rocks_files
            .map_or(0, |n| ROCKS_FIXED + u64::try_from(n).unwrap_or(0));
        OTHER_RESERVE + rocks + connection_fds(&self.connections)
    }

    /// Logs the figures: at info, or as a warning when they had to be lowered.
    pub fn log(&self, limit: Option<FdLimit>) {
        let (before, hard) = limit.map_or((self.limit, self.limit), |l| (l.before, l.hard));
        let c = &self.connections;
        macro_rules! emit {
            ($level:ident, $message:literal) => {
                tracing::$level!(
                    limit = self.limit,
                    raised_from = before,
                    hard,
                    rocksdb_files = ?self.rocks_files,
                    established = c.max_established_total,
                    established_incoming = c.max_established_incoming,
                    pending_incoming = c.max_pending_incoming,
                    pending_outgoing = ?c.max_pending_outgoing,
                    reserve = OTHER_RESERVE,
                    $message
                )
            };
        }
        if self.shrunk {
            emit!(
                warn,
                "file descriptors: the limit is too small for the configured connections and RocksDB files; both lowered"
            );
        } else {
            emit!(info, "file descriptors");
        }
    }
}

fn to_i32(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The descriptors the connections that `limits` allow may hold at once.
fn connection_fds(limits: &ConnectionLimits) -> u64 {
    u64::from(limits.max_established_total)
        + u64::from(limits.max_pending_incoming)
        + u64::from(
            limits
                .max_pending_outgoing
                .unwrap_or(ASSUMED_PENDING_OUTGOING),
        )
}

/// `limits` lowered to hold at most `fds` descriptors (each figure at least 1).
fn shrink(limits: &ConnectionLimits, fds: u64) -> ConnectionLimits {
    let fds = u32::try_from(fds).unwrap_or(u32::MAX).max(4);
    let pending_in = limits.max_pending_incoming.min(fds / 8).max(1);
    let pending_out = limits
        .max_pending_outgoing
        .unwrap_or(ASSUMED_PENDING_OUTGOING)
        .min(fds / 8)
        .max(1);
    let established = limits
        .max_established_total
        .min(fds - pending_in - pending_out)
        .max(1);
    limits
        .clone()
        .with_max_pending_incoming(pending_in)
        .with_max_pending_outgoing(Some(pending_out))
        .with_max_established_total(established)
        .with_max_established_incoming(limits.max_established_incoming.min(established / 2).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_roomy_limit_keeps_what_was_asked() {
        let limits = ConnectionLimits::default();
        let plan = FdPlan::new(20_000, Some(512), &limits);
        assert!(!plan.shrunk);
        assert_eq!(plan.rocks_files, Some(512));
        assert_eq!(plan.connections, limits);
        assert!(plan.total() <= 20_000);
    }

    #[test]
    fn a_small_limit_keeps_rocksdb_its_share_and_shrinks_connections() {
        let limits = ConnectionLimits::default();
        for limit in [300_u64, 600, 1024, 2000] {
            let plan = FdPlan::new(limit, Some(512), &limits);
            assert!(plan.shrunk, "{limit}");
            assert!(
                plan.total() <= limit,
                "{limit}: {plan:?} uses {}",
                plan.total()
            );
            let rocks = plan.rocks_files.unwrap_or(0);
            assert!(rocks >= MIN_ROCKS_FILES, "{limit}: {rocks}");
            let c = &plan.connections;
            assert!(c.max_pending_outgoing.is_some(), "dials bounded at {limit}");
            assert!(c.max_established_incoming <= c.max_established_total);
            assert!(c.max_established_total <= limits.max_established_total);
        }
        // 1024, a common default: RocksDB keeps a quarter of what the reserves leave.
        let plan = FdPlan::new(1024, Some(512), &limits);
        assert_eq!(plan.rocks_files, Some(216));
    }

    #[test]
    fn unbounded_rocksdb_files_are_bounded_by_the_plan() {
        let plan = FdPlan::new(4096, Some(-1), &ConnectionLimits::default());
        let rocks = plan.rocks_files.unwrap_or(-1);
        assert!(rocks > 0, "{plan:?}");
        assert!(plan.total() <= 4096, "{plan:?}");
    }

    #[test]
    fn without_rocksdb_connections_get_all_but_the_reserve() {
        let plan = FdPlan::new(1024, None, &ConnectionLimits::default());
        assert_eq!(plan.rocks_files, None);
        assert!(plan.total() <= 1024);
        assert!(plan.connections.max_established_total >= 600, "{plan:?}");
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        // The process's own limit: raising is idempotent, and never lowers it.
        let Some(limit) = raise_soft_limit() else {
            return;
        };
        assert!(limit.soft >= limit.before);
        assert_eq!(limit.soft, limit.hard.min(MAX_SOFT_LIMIT).max(limit.before));
    }
}
