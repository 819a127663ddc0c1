//! The explorations a sweep keeps for reuse: one per region, with the time it was learned.
//!
//! Under steady ingest every slice gets new keys all the time, and a provide job that has to
//! explore its slice again waits mostly on that exploration (FIND_NODE timeouts of silent
//! servers, late answers of slow ones). Keeping one exploration per region, rather than the
//! last few, lets a slice provided again soon after reuse its servers. Freshness counts from
//! when the servers were *learned*: a reused exploration keeps that time, so that a region is
//! learned again at least once per freshness, however often it is reused.
//!
//! Sans-IO: every method takes `now`.

use std::collections::BTreeMap;

use dht_proto::{PeerInfo, Prefix, UnixSecs};

use crate::explore::Exploration;

/// Explorations kept at most (one per region): past this, the one learned longest ago goes.
/// A region holds about 2k servers, so at 2^10 regions (some 40,000 servers) this is a few
/// MiB at most, whatever the number of keys.
pub(super) const MAX_EXPLORATIONS: usize = 1024;

/// One exploration per region ([`Exploration::scope`]), each with the time it was learned.
#[derive(Debug, Default)]
pub(super) struct ExplorationCache {
    by_scope: BTreeMap<Prefix, (Exploration, UnixSecs)>,
}

impl ExplorationCache {
    /// Keeps `exploration`, learned at `learned` (not when it was last used), in place of
    /// the one of its region, unless that one was learned later.
    pub(super) fn insert(&mut self, exploration: Exploration, learned: UnixSecs) {
        let scope = exploration.scope;
        if self
            .by_scope
            .get(&scope)
            .is_some_and(|(_, at)| *at > learned)
        {
            return;
        }
        self.by_scope.insert(scope, (exploration, learned));
        while self.by_scope.len() > MAX_EXPLORATIONS {
            let oldest = self
                .by_scope
                .iter()
                .min_by_key(|(scope, (_, at))| (*at, **scope))
                .map(|(scope, _)| *scope);
            match oldest {
                Some(scope) => self.by_scope.remove(&scope),
                None => break,
            };
        }
    }

    /// The entry whose region covers `slice` (the slice's own, or the smallest around it).
    fn covering(&self, slice: &Prefix) -> Option<&(Exploration, UnixSecs)> {
        let mut prefix = Some(*slice);
        while let Some(p) = prefix {
            if let Some(entry) = self.by_scope.get(&p) {
                return Some(entry);
            }
            prefix = p.parent();
        }
        None
    }

    /// A complete exploration covering `slice` learned at most `freshness` seconds before
    /// `now`, with the time it was learned.
    pub(super) fn fresh(
        &self,
        slice: &Prefix,
        now: UnixSecs,
        freshness: u64,
    ) -> Option<(Exploration, UnixSecs)> {
        let mut prefix = Some(*slice);
        while let Some(p) = prefix {
            if let Some((ex, at)) = self.by_scope.get(&p)
                && ex.complete
                && now.saturating_sub(*at) <= freshness
            {
                return Some((ex.clone(), *at));
            }
            prefix = p.parent();
        }
        None
    }

    /// Seeds for exploring `slice` again: the servers of the region last time, however old
    /// (they are close to it, and most are still there); failing that, those of the region
    /// learned last (in a sweep, the one before).
    pub(super) fn seeds(&self, slice: &Prefix) -> Vec<PeerInfo> {
        self.covering(slice)
            .or_else(|| self.latest())
            .map(|(ex, _)| ex.servers.clone())
            .unwrap_or_default()
    }

    /// The entry learned last.
    fn latest(&self) -> Option<&(Exploration, UnixSecs)> {
        self.by_scope.values().max_by_key(|(_, at)| *at)
    }

    /// The servers of the exploration learned last (for a probe while disconnected).
    pub(super) fn latest_servers(&self) -> &[PeerInfo] {
        self.latest().map_or(&[], |(ex, _)| ex.servers.as_slice())
    }

    /// Explorations kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_scope.len()
    }
}

#[cfg(test)]
mod tests {
    use dht_proto::Key;

    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn exploration(scope: &str, servers: usize) -> Exploration {
        crate::size::tests::exploration(scope, servers, true)
    }

    #[test]
    fn one_exploration_per_region_each_fresh_from_when_it_was_learned() {
        let mut cache = ExplorationCache::default();
        // More regions than the 16 explorations the sweep once kept.
        for i in 0u32..64 {
            let mut bytes = [0u8; 32];
            bytes[0] = (i as u8) << 2;
            cache.insert(
                exploration(&Prefix::new(&Key::from_bytes(bytes), 6).to_string(), 20),
                1000 + u64::from(i),
            );
        }
        assert_eq!(cache.len(), 64);
        // The first region's exploration is still there, fresh for 600 s from when it was
        // learned (1000), and it covers the slices inside its region.
        assert!(cache.fresh(&p("000000"), 1600, 600).is_some());
        assert_eq!(
            cache.fresh(&p("0000001"), 1600, 600).map(|(_, at)| at),
            Some(1000)
        );
        assert!(cache.fresh(&p("000000"), 1601, 600).is_none());
        assert!(cache.fresh(&p("00000"), 1000, 600).is_none());
    }

    #[test]
    fn a_reused_exploration_does_not_become_fresh_again() {
        let mut cache = ExplorationCache::default();
        cache.insert(exploration("101", 20), 1000);
        // Reused at 1500, and put back: it keeps the time it was learned.
        let (ex, learned) = cache.fresh(&p("101"), 1500, 600).unwrap();
        cache.insert(ex, learned);
        assert!(cache.fresh(&p("101"), 1700, 600).is_none());
        // A later exploration of the region replaces it; an earlier one does not.
        cache.insert(exploration("101", 21), 1650);
        cache.insert(exploration("101", 22), 1200);
        let (ex, learned) = cache.fresh(&p("101"), 1700, 600).unwrap();
        assert_eq!((ex.servers.len(), learned), (21, 1650));
    }

    #[test]
    fn stale_or_incomplete_explorations_still_seed_their_region() {
        let mut cache = ExplorationCache::default();
        let mut incomplete = exploration("0", 20);
        incomplete.complete = false;
        let servers = incomplete.servers.clone();
        cache.insert(incomplete, 1000);
        cache.insert(exploration("11", 20), 5000);
        assert!(cache.fresh(&p("01"), 1000, 600).is_none());
        assert_eq!(cache.seeds(&p("01")), servers);
        // No exploration of its region: the one learned last.
        assert_eq!(cache.seeds(&p("10")).len(), 20);
        assert_ne!(cache.seeds(&p("10")), servers);
        assert_eq!(cache.latest_servers(), cache.seeds(&p("11")).as_slice());
    }

    #[test]
    fn the_cache_is_bounded_and_drops_what_was_learned_longest_ago() {
        let mut cache = ExplorationCache::default();
        for i in 0..(MAX_EXPLORATIONS as u64 + 10) {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&(i << 40).to_be_bytes());
            let scope = Prefix::new(&Key::from_bytes(bytes), 24).to_string();
            cache.insert(exploration(&scope, 1), i);
        }
        assert_eq!(cache.len(), MAX_EXPLORATIONS);
        assert!(cache.by_scope.values().all(|(_, at)| *at >= 10));
    }
}
