//! Warnings an operator must not miss, from the provider's counters: behind schedule, offline
//! (or disconnected), a queue growing faster than it drains, a store error.
//!
//! [`Health::observe`] keeps a small, bounded series of samples (one per
//! [`SAMPLE_EVERY_SECS`], over [`Health::window_secs`]), returns the warnings that hold now,
//! and logs each warning when it starts (`warn`) and when it clears (`info`). The node calls
//! it periodically and on every `GET /api/v1/stats`.

use std::{collections::VecDeque, fmt};

use dht_provider::{Connectivity, ProviderStats};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Seconds between two samples kept.
pub const SAMPLE_EVERY_SECS: u64 = 30;

/// The default window over which a queue must grow to be warned about (10 minutes).
pub const DEFAULT_WINDOW_SECS: u64 = 600;

/// How far behind schedule the provider may be before a warning (5 minutes).
pub const BEHIND_WARN_SECS: u64 = 300;

/// The most samples kept, whatever the window.
const MAX_SAMPLES: usize = 256;

/// The points of the records series kept ([`Health::records_per_minute`]): 2 hours at one
/// per [`SAMPLE_EVERY_SECS`].
pub const SERIES_POINTS: usize = 240;

/// A warning, with what an operator needs to judge it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Warning {
    /// The reprovide schedule (or a retry) is late by `secs` seconds.
    BehindSchedule {
        /// How late.
        secs: u64,
    },
    /// The network does not answer: `disconnected` or `offline`, since `since` (Unix seconds).
    Offline {
        /// `disconnected` or `offline`.
        state: String,
        /// Since when.
        since: u64,
    },
    /// A queue grew over the whole window: `what` went from `from` to `to` in `secs` seconds.
    QueueGrowing {
        /// `keys_queued` or `regions_queued_retry`.
        what: String,
        /// At the window's start.
        from: u64,
        /// Now.
        to: u64,
        /// The window.
        secs: u64,
    },
    /// Store errors (keystore reads, state saves): `new` within the window, `total` since
    /// start.
    StoreError {
        /// Within the window (all of them before a window passed).
        new: u64,
        /// Since start.
        total: u64,
    },
}

impl Warning {
    /// The warning's kind, as in its JSON (`behind_schedule`, `offline`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Warning::BehindSchedule { .. } => "behind_schedule",
            Warning::Offline { .. } => "offline",
            Warning::QueueGrowing { .. } => "queue_growing",
            Warning::StoreError { .. } => "store_error",
        }
    }

    /// What identifies the warning across samples (its kind, and the queue's name).
    fn identity(&self) -> String {
        match self {
            Warning::QueueGrowing { what, .. } => format!("queue_growing:{what}"),
            other => other.kind().to_owned(),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::BehindSchedule { secs } => {
                write!(f, "behind schedule by {}", crate::stat::duration(*secs))
            }
            Warning::Offline { state, since } => {
                write!(
                    f,
                    "{state} since {} (the network does not answer)",
                    crate::stat::utc(*since)
                )
            }
            Warning::QueueGrowing {
                what,
                from,
                to,
                secs,
            } => write!(
                f,
                "{what} grows faster than it drains: {from} → {to} in {}",
                crate::stat::duration(*secs)
            ),
            Warning::StoreError { new, total } => {
                write!(
                    f,
                    "store errors: {new} recently, {total} since start (see the log)"
                )
            }
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    at: u64,
    keys_queued: u64,
    regions_retry: u64,
    store_errors: u64,
}

impl Sample {
    fn of(now: u64, stats: &ProviderStats) -> Self {
        Sample {
            at: now,
            keys_queued: stats.keys_queued,
            regions_retry: stats.regions_queued_retry,
            store_errors: stats.keystore_scan_errors + stats.state_save_errors,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    samples: VecDeque<Sample>,
    /// `(Unix seconds, provider records sent since start)`, oldest first, at most
    /// [`SERIES_POINTS`].
    records: VecDeque<(u64, u64)>,
    /// The identities of the warnings that held at the last observation.
    active: Vec<String>,
}

/// The provider's warnings over a short, bounded history; see the [module](self).
#[derive(Debug)]
pub struct Health {
    window: u64,
    state: Mutex<State>,
}

impl Default for Health {
    fn default() -> Self {
        Health::new(DEFAULT_WINDOW_SECS)
    }
}

impl Health {
    /// Warnings judged over `window_secs` seconds (at least a sample's spacing).
    pub fn new(window_secs: u64) -> Self {
        Health {
            window: window_secs.max(SAMPLE_EVERY_SECS),
            state: Mutex::new(State::default()),
        }
    }

    /// The window over which queues and store errors are judged, in seconds.
    pub fn window_secs(&self) -> u64 {
        self.window
    }

    /// Takes `stats` at `now` (Unix seconds) as a sample (unless one was taken less than
    /// [`SAMPLE_EVERY_SECS`] ago), returns the warnings that hold, and logs those that
    /// started or cleared since the last call.
    pub fn observe(&self, now: u64, stats: &ProviderStats) -> Vec<Warning> {
        let mut state = self.state.lock();
        let sample = Sample::of(now, stats);
        let take = state
            .samples
            .back()
            .is_none_or(|last| now >= last.at.saturating_add(SAMPLE_EVERY_SECS) || now < last.at);
        if take {
            state.samples.push_back(sample);
            state.records.push_back((now, stats.add_provider_sent));
            while state.records.len() > SERIES_POINTS {
                state.records.pop_front();
            }
        }
        let oldest_kept = now.saturating_sub(self.window.saturating_mul(2));
        while state.samples.len() > MAX_SAMPLES
            || state.samples.front().is_some_and(|s| s.at < oldest_kept)
        {
            state.samples.pop_front();
        }
        let warnings = self.judge(&state.samples, sample, stats);
        let now_active: Vec<String> = warnings.iter().map(Warning::identity).collect();
        for w in &warnings {
            if !state.active.contains(&w.identity()) {
                tracing::warn!(kind = w.kind(), "provider: {w}");
            }
        }
        for old in &state.active {
            if !now_active.contains(old) {
                tracing::info!(kind = %old, "provider: warning cleared");
            }
        }
        state.active = now_active;
        warnings
    }

    /// Provider records sent per minute over the last hours (at most [`SERIES_POINTS`] − 1
    /// points, oldest first): `(Unix seconds at the end of a step, records per minute in it)`.
    pub fn records_per_minute(&self) -> Vec<(u64, f64)> {
        let state = self.state.lock();
        let points: Vec<(u64, u64)> = state.records.iter().copied().collect();
        points
            .windows(2)
            .filter(|w| w[1].0 > w[0].0)
            .map(|w| {
                let secs = (w[1].0 - w[0].0) as f64;
                (w[1].0, w[1].1.saturating_sub(w[0].1) as f64 * 60.0 / secs)
            })
            .collect()
    }

    fn judge(
        &self,
        samples: &VecDeque<Sample>,
        now: Sample,
        stats: &ProviderStats,
    ) -> Vec<Warning> {
        let mut out = Vec::new();
        if stats.behind_schedule_secs >= BEHIND_WARN_SECS {
            out.push(Warning::BehindSchedule {
                secs: stats.behind_schedule_secs,
            });
        }
        if stats.connectivity != Connectivity::Online {
            out.push(Warning::Offline {
                state: format!("{:?}", stats.connectivity).to_lowercase(),
                since: stats.connectivity_since,
            });
        }
        // The samples of the window, oldest first; the window must be mostly covered.
        let start = now.at.saturating_sub(self.window);
        let window: Vec<&Sample> = samples.iter().filter(|s| s.at >= start).collect();
        let covered = window
            .first()
            .is_some_and(|first| now.at.saturating_sub(first.at) >= self.window / 2)
            && window.len() >= 3;
        if covered {
            for (what, value) in [
                (
                    "keys_queued",
                    (|s: &Sample| s.keys_queued) as fn(&Sample) -> u64,
                ),
                ("regions_queued_retry", |s: &Sample| s.regions_retry),
            ] {
                let values: Vec<u64> = window.iter().map(|s| value(s)).collect();
                let rising = values.windows(2).all(|w| w[0] <= w[1]);
                let (from, to) = (values[0], value(&now));
                if rising && to > from && to >= values[values.len() - 1] {
                    out.push(Warning::QueueGrowing {
                        what: what.into(),
                        from,
                        to,
                        secs: now.at.saturating_sub(window[0].at),
                    });
                }
            }
        }
        let before = samples
            .iter()
            .rev()
            .find(|s| s.at <= start)
            .map_or(0, |s| s.store_errors);
        let new = now.store_errors.saturating_sub(before);
        if new > 0 {
            out.push(Warning::StoreError {
                new,
                total: now.store_errors,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(keys_queued: u64) -> ProviderStats {
        ProviderStats {
            keys_queued,
            ..ProviderStats::default()
        }
    }

    #[test]
    fn records_per_minute_is_a_bounded_series_of_rates() {
        let health = Health::new(600);
        assert!(health.records_per_minute().is_empty());
        for i in 0..(SERIES_POINTS as u64 + 50) {
            let s = ProviderStats {
                add_provider_sent: i * 20,
                ..ProviderStats::default()
            };
            health.observe(1000 + i * 30, &s);
            // Within the spacing: no new point.
            health.observe(1000 + i * 30 + 1, &s);
        }
        let series = health.records_per_minute();
        assert_eq!(series.len(), SERIES_POINTS - 1);
        assert!(series.iter().all(|&(_, rate)| rate == 40.0), "{series:?}");
        assert_eq!(
            series.last().unwrap().0,
            1000 + (SERIES_POINTS as u64 + 49) * 30
        );
    }

    #[test]
    fn a_healthy_provider_has_no_warning() {
        let health = Health::new(600);
        for i in 0..40 {
            assert!(health.observe(1000 + i * 30, &stats(5)).is_empty());
        }
    }

    #[test]
    fn behind_offline_and_store_errors_are_warned_at_once() {
        let health = Health::new(600);
        let s = ProviderStats {
            behind_schedule_secs: 3600,
            connectivity: Connectivity::Offline,
            connectivity_since: 500,
            keystore_scan_errors: 2,
            ..ProviderStats::default()
        };
        let w = health.observe(1000, &s);
        let kinds: Vec<&str> = w.iter().map(Warning::kind).collect();
        assert_eq!(kinds, ["behind_schedule", "offline", "store_error"]);
        assert_eq!(w[2], Warning::StoreError { new: 2, total: 2 });
        assert!(w[1].to_string().contains("offline since"), "{}", w[1]);
    }

    #[test]
    fn store_errors_are_warned_while_they_are_recent() {
        let health = Health::new(600);
        let mut s = ProviderStats {
            state_save_errors: 1,
            ..ProviderStats::default()
        };
        assert_eq!(health.observe(1000, &s).len(), 1);
        // No new error for longer than the window: the warning clears.
        for t in (1030..=1700).step_by(30) {
            health.observe(t, &s);
        }
        assert!(health.observe(1730, &s).is_empty());
        s.state_save_errors = 3;
        assert_eq!(
            health.observe(1760, &s),
            [Warning::StoreError { new: 2, total: 3 }]
        );
    }

    #[test]
    fn a_queue_growing_over_the_window_is_warned_and_one_draining_is_not() {
        let health = Health::new(600);
        let mut warned = Vec::new();
        for i in 0..=20u64 {
            warned = health.observe(1000 + i * 30, &stats(100 + i * 50));
        }
        assert!(
            matches!(&warned[..], [Warning::QueueGrowing { what, from, to, .. }]
                if what == "keys_queued" && *from < *to && *to == 1100),
            "{warned:?}"
        );
        // Once it drains, the warning clears.
        let health = Health::new(600);
        for i in 0..=20u64 {
            let queued = if i % 4 == 3 { 0 } else { 100 + i * 50 };
            warned = health.observe(1000 + i * 30, &stats(queued));
        }
        assert!(warned.is_empty(), "{warned:?}");
    }

    #[test]
    fn the_series_stays_bounded() {
        let health = Health::new(600);
        for i in 0..10_000u64 {
            health.observe(i * 30, &stats(i));
        }
        assert!(health.state.lock().samples.len() <= 2 * 600 / 30 + 1);
    }
}
