//! [`SimClock`]: wall-clock seconds read from tokio's (paused) clock.

use dht_proto::UnixSecs;
use dht_routing_table::Clock;
use tokio::time::Instant;

/// A [`Clock`] that reads tokio's clock: `start_time` plus the virtual time elapsed since the
/// clock was made. On a paused runtime it moves only when the runtime advances time, so
/// routing tables, handlers and records all age in virtual time.
///
/// Make it inside the runtime that drives the simulation or the test.
#[derive(Clone, Copy, Debug)]
pub struct SimClock {
    origin: Instant,
    start_time: UnixSecs,
}

impl SimClock {
    /// A clock showing `start_time` now.
    pub fn new(start_time: UnixSecs) -> Self {
        SimClock {
            origin: Instant::now(),
            start_time,
        }
    }

    /// Virtual time since the clock was made.
    pub fn elapsed(&self) -> std::time::Duration {
        self.origin.elapsed()
    }
}

impl Clock for SimClock {
    fn now(&self) -> UnixSecs {
        self.start_time
            .saturating_add(self.origin.elapsed().as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_virtual_time() {
        let clock = SimClock::new(1_000);
        assert_eq!(clock.now(), 1_000);
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        assert_eq!(clock.now(), 4_600);
    }
}
