//! The reprovide schedule: when each part of the keyspace is due, and how far the sweep got.
//!
//! Every key is reprovided once per interval, at the same offset in every cycle: its position
//! in the keyspace. Key `x` is due `interval × x / 2^256` after the start of a cycle, so the
//! sweep walks the keyspace from `00…0` to `11…1` once per interval, at an even pace, whatever
//! the number of keys or of regions. Work is done in *slices*: keyspace prefixes of a length
//! chosen from the network size, so that a slice holds about one region of servers.
//!
//! The schedule's only state is [`Progress`]: the cycle and the keyspace position up to which
//! that cycle is done. It is a few bytes, persisted after each slice, and after a restart (clean
//! or `kill -9`) the sweep resumes where it stopped: only the slices due since are provided.
//!
//! Sans-IO: every method takes `now` in wall-clock seconds.

use dht_proto::{KEY_BITS, Key, Prefix, UnixSecs};

/// How far the sweep got: in cycle `cycle`, every key before `next` has been reprovided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The cycle being walked (cycle 0 starts at the schedule's epoch).
    pub cycle: u64,
    /// The first key of the cycle not yet reprovided.
    pub next: Key,
}

impl Progress {
    /// Encodes as 40 bytes: the cycle (big-endian) and the key.
    pub fn to_bytes(&self) -> [u8; 40] {
        let mut out = [0u8; 40];
        out[..8].copy_from_slice(&self.cycle.to_be_bytes());
        out[8..].copy_from_slice(self.next.as_bytes());
        out
    }

    /// Decodes [`Progress::to_bytes`]; `None` for anything else.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let cycle = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let next: [u8; 32] = bytes.get(8..40)?.try_into().ok()?;
        (bytes.len() == 40).then_some(Progress {
            cycle,
            next: Key::from_bytes(next),
        })
    }
}

/// The timing of a sweep: an epoch, an interval, and the slice length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    epoch: UnixSecs,
    interval: u64,
    slice_len: usize,
}

impl Schedule {
    /// A schedule whose cycle 0 starts at `epoch`, one cycle per `interval` seconds, walking
    /// slices of `slice_len` bits.
    ///
    /// # Panics
    /// If `interval` is 0 or `slice_len > 256`.
    pub fn new(epoch: UnixSecs, interval: u64, slice_len: usize) -> Self {
        assert!(interval > 0, "the reprovide interval must be positive");
        assert!(slice_len <= KEY_BITS, "slice length beyond 256 bits");
        Schedule {
            epoch,
            interval,
            slice_len,
        }
    }

    /// When cycle 0 started.
    pub fn epoch(&self) -> UnixSecs {
        self.epoch
    }

    /// The reprovide interval, in seconds.
    pub fn interval(&self) -> u64 {
        self.interval
    }

    /// The slice length, in bits.
    pub fn slice_len(&self) -> usize {
        self.slice_len
    }

    /// The same schedule with another slice length (when the network size estimate changes);
    /// offsets of keys do not move, so progress stays valid.
    pub fn with_slice_len(mut self, slice_len: usize) -> Self {
        self.slice_len = slice_len.min(KEY_BITS);
        self
    }

    /// The schedule for a new `interval`, and `progress` renumbered in it, when the operator
    /// changes the interval.
    ///
    /// Keeping the epoch would move every key's due time by the change times the number of
    /// cycles since the epoch: days, after a few months. Instead the walk goes on from where
    /// it is, `|new − old|` earlier than the old schedule would have taken the next key, and
    /// at the new pace from there. Then no key waits longer than the shorter of the two
    /// intervals after its last provide (keys already waiting longer, when shortening, are due
    /// at once).
    ///
    /// # Panics
    /// If `interval` is 0.
    pub fn with_interval(&self, progress: &Progress, interval: u64) -> (Schedule, Progress) {
        assert!(interval > 0, "the reprovide interval must be positive");
        let next_due = self.due_time(progress.cycle, &progress.next);
        let change = self.interval.abs_diff(interval);
        let anchor = next_due.saturating_sub(change);
        let unscaled = Schedule { interval, ..*self };
        let offset = unscaled.offset_of(&progress.next);
        let before = anchor.saturating_sub(offset);
        let cycle = progress.cycle.min(before / interval);
        let schedule = Schedule {
            epoch: before - cycle * interval,
            ..unscaled
        };
        (
            schedule,
            Progress {
                cycle,
                next: progress.next,
            },
        )
    }

    /// The offset of `key` in a cycle, in seconds: `interval × key / 2^256`.
    pub fn offset_of(&self, key: &Key) -> u64 {
        let mut top = [0u8; 8];
        top.copy_from_slice(&key.as_bytes()[..8]);
        ((u128::from(self.interval) * u128::from(u64::from_be_bytes(top))) >> 64) as u64
    }

    /// When `key` is due in cycle `cycle`.
    pub fn due_time(&self, cycle: u64, key: &Key) -> UnixSecs {
        self.epoch
            .saturating_add(cycle.saturating_mul(self.interval))
            .saturating_add(self.offset_of(key))
    }

    /// The cycle running at `now` (0 before the epoch).
    pub fn cycle_at(&self, now: UnixSecs) -> u64 {
        now.saturating_sub(self.epoch) / self.interval
    }

    /// The slice that starts at `start`: the prefix of at least `slice_len` bits whose first
    /// key is `start` (longer only when `start` is not on a slice boundary).
    pub fn slice_at(&self, start: &Key) -> Prefix {
        let bits = start.as_bytes();
        let trailing_zeros = bits
            .iter()
            .rev()
            .position(|b| *b != 0)
            .map_or(KEY_BITS, |i| i * 8 + bits[31 - i].trailing_zeros() as usize);
        let len = self.slice_len.max(KEY_BITS - trailing_zeros);
        Prefix::new(start, len)
    }

    /// The slice of the keyspace that `key` falls in.
    pub fn slice_of(&self, key: &Key) -> Prefix {
        Prefix::new(key, self.slice_len)
    }

    /// The next slice to walk after `progress`, and when it is due; `None` when the schedule is
    /// ahead of `now` (nothing due yet). A sweep more than one cycle behind first skips ahead
    /// to one cycle before `now`: every key is then due once, not once per missed cycle.
    pub fn next_due(&self, progress: &mut Progress, now: UnixSecs) -> Option<(Prefix, UnixSecs)> {
        let current = self.cycle_at(now);
        if progress.cycle + 1 < current {
            // Resume one cycle back, just after the slice running now: from there to the
            // slice running now, every key is due once.
            let running = key_at_offset(self, now.saturating_sub(self.epoch) % self.interval);
            *progress = Progress {
                cycle: current - 1,
                next: running,
            };
            self.complete(progress, &self.slice_of(&running));
        }
        let slice = self.slice_at(&progress.next);
        let due = self.due_time(progress.cycle, &slice.first_key());
        (due <= now).then_some((slice, due))
    }

    /// Whether `slice` is due at `now` in the walk after `progress` and not yet taken: its
    /// reprovide is on its way (a slice's new keys can wait for it).
    pub fn is_due(&self, progress: &Progress, slice: &Prefix, now: UnixSecs) -> bool {
        let first = slice.first_key();
        first >= progress.next && self.due_time(progress.cycle, &first) <= now
    }

    /// The time the slice after `progress` is due (for sleeping until then).
    pub fn next_due_time(&self, progress: &Progress) -> UnixSecs {
        self.due_time(progress.cycle, &self.slice_at(&progress.next).first_key())
    }

    /// How far behind schedule the sweep is at `now`, in seconds (0 when on time).
    pub fn lag(&self, progress: &Progress, now: UnixSecs) -> u64 {
        now.saturating_sub(self.next_due_time(progress))
    }

    /// The slices due at `now` after `progress`: how far behind the walk is, in slices (at
    /// most the number of slices; never a scan).
    pub fn slices_due(&self, progress: &Progress, now: UnixSecs) -> u64 {
        let lag = self.lag(progress, now);
        if lag == 0 {
            return 0;
        }
        let slices = 1u64 << self.slice_len.min(63);
        let per_slice = (self.interval / slices).max(1);
        (lag / per_slice + 1).min(slices)
    }

    /// Marks `slice` done: progress moves past its last key, into the next cycle after the
    /// last slice.
    pub fn complete(&self, progress: &mut Progress, slice: &Prefix) {
        match key_after(&slice.last_key()) {
            Some(next) => progress.next = next,
            None => {
                progress.cycle += 1;
                progress.next = Key::ZERO;
            }
        }
    }
}

/// A key whose offset in the cycle is about `offset` (its top 64 bits exact).
fn key_at_offset(schedule: &Schedule, offset: u64) -> Key {
    let top =
        ((u128::from(offset) << 64) / u128::from(schedule.interval)).min(u128::from(u64::MAX));
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&(top as u64).to_be_bytes());
    Key::from_bytes(bytes)
}

/// `key + 1`, or `None` past the last key.
fn key_after(key: &Key) -> Option<Key> {
    let mut bytes = *key.as_bytes();
    for b in bytes.iter_mut().rev() {
        if *b == 0xff {
            *b = 0;
        } else {
            *b += 1;
            return Some(Key::from_bytes(bytes));
        }
    }
    None
}

/// The slice length for a network of about `servers` DHT servers: slices of about `2k`
/// servers each (`floor(log2(servers / 2k))`, at least 0).
pub fn slice_len_for(servers: u64, k: usize) -> usize {
    let per = (2 * k as u64).max(1);
    let slices = (servers / per).max(1);
    (63 - slices.leading_zeros()) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn offsets_spread_over_the_interval() {
        let s = Schedule::new(1000, 22 * H, 3);
        assert_eq!(s.offset_of(&Key::ZERO), 0);
        assert_eq!(s.offset_of(&p("1").first_key()), 11 * H);
        assert_eq!(s.offset_of(&p("01").first_key()), 11 * H / 2);
        assert!(s.offset_of(&Key::MAX) < 22 * H);
        assert_eq!(s.due_time(2, &p("1").first_key()), 1000 + 44 * H + 11 * H);
    }

    #[test]
    fn slices_at_boundaries_and_off_them() {
        let s = Schedule::new(0, 22 * H, 3);
        assert_eq!(s.slice_at(&Key::ZERO), p("000"));
        assert_eq!(s.slice_at(&p("101").first_key()), p("101"));
        // Off a boundary (after the slice length changed): a longer prefix starting there.
        assert_eq!(s.slice_at(&p("10101").first_key()), p("10101"));
        assert_eq!(s.slice_of(&p("10101").first_key()), p("101"));
    }

    #[test]
    fn walks_a_cycle_in_order_then_wraps() {
        let s = Schedule::new(0, 8 * H, 2);
        let mut progress = Progress {
            cycle: 0,
            next: Key::ZERO,
        };
        let mut walked = Vec::new();
        // At the end of cycle 0 every slice of cycle 0 is due, in keyspace order.
        let now = 8 * H - 1;
        while let Some((slice, due)) = s.next_due(&mut progress, now) {
            assert!(due <= now);
            walked.push(slice.to_string());
            s.complete(&mut progress, &slice);
        }
        assert_eq!(walked, ["00", "01", "10", "11"]);
        assert_eq!(progress.cycle, 1);
        assert_eq!(progress.next, Key::ZERO);
        assert_eq!(s.next_due_time(&progress), 8 * H);
        assert_eq!(s.lag(&progress, now), 0);
    }

    #[test]
    fn slices_due_count_what_the_walk_has_left_behind() {
        let s = Schedule::new(0, 8 * H, 3);
        let progress = Progress {
            cycle: 5,
            next: p("011").first_key(),
        };
        let due = s.due_time(5, &p("011").first_key());
        // On time, then one slice due, then three, and never more than there are.
        assert_eq!(s.slices_due(&progress, due - 1), 0);
        assert_eq!(s.slices_due(&progress, due), 0);
        assert_eq!(s.slices_due(&progress, due + 1), 1);
        assert_eq!(s.slices_due(&progress, due + 2 * H + 1), 3);
        assert_eq!(s.slices_due(&progress, due + 80 * H), 8);
    }

    #[test]
    fn only_due_slices_after_a_restart() {
        let s = Schedule::new(0, 8 * H, 3);
        // Progress persisted in cycle 5 after slice "010"; restart at the time "101" is due.
        let mut progress = Progress {
            cycle: 5,
            next: p("011").first_key(),
        };
        let now = s.due_time(5, &p("101").first_key());
        let mut walked = Vec::new();
        while let Some((slice, _)) = s.next_due(&mut progress, now) {
            walked.push(slice.to_string());
            s.complete(&mut progress, &slice);
        }
        assert_eq!(walked, ["011", "100", "101"]);
        assert_eq!(s.lag(&progress, now), 0);
    }

    #[test]
    fn far_behind_catches_up_each_key_once() {
        let s = Schedule::new(0, 8 * H, 2);
        let mut progress = Progress {
            cycle: 1,
            next: p("01").first_key(),
        };
        // Ten cycles later, a quarter into cycle 11: every slice is due exactly once.
        let now = 11 * 8 * H + 2 * H + 1;
        assert!(s.lag(&progress, now) > 8 * H);
        let mut walked = Vec::new();
        while let Some((slice, _)) = s.next_due(&mut progress, now) {
            walked.push(slice.to_string());
            s.complete(&mut progress, &slice);
        }
        assert_eq!(walked, ["10", "11", "00", "01"]);
        assert_eq!(progress.cycle, 11);
        assert_eq!(progress.next, p("10").first_key());
    }

    /// The time `key` was last provided, on time, before `progress`'s next key was due.
    fn last_provide(s: &Schedule, progress: &Progress, key: &Key) -> UnixSecs {
        if key < &progress.next {
            s.due_time(progress.cycle, key)
        } else {
            s.due_time(progress.cycle - 1, key)
        }
    }

    /// When `key` is next due after `progress`.
    fn next_due(s: &Schedule, progress: &Progress, key: &Key) -> UnixSecs {
        if key < &progress.next {
            s.due_time(progress.cycle + 1, key)
        } else {
            s.due_time(progress.cycle, key)
        }
    }

    #[test]
    fn an_interval_change_makes_no_key_wait_longer_than_the_shorter_interval() {
        for (old, new) in [
            (22 * H, 24 * H),
            (24 * H, 22 * H),
            (22 * H, 2 * H),
            (H, 48 * H),
        ] {
            // Running for 200 cycles, a third into the current one.
            let epoch = dht_test_kit::EPOCH;
            let s = Schedule::new(epoch, old, 6);
            let progress = Progress {
                cycle: 200,
                next: p("010101").first_key(),
            };
            let (t, moved) = s.with_interval(&progress, new);
            assert_eq!(t.interval(), new);
            assert_eq!(moved.next, progress.next);
            let shorter = old.min(new);
            for i in 0u32..64 {
                let mut bytes = [0u8; 32];
                bytes[0] = (i as u8) << 2;
                bytes[1] = 0x55;
                let key = Key::from_bytes(bytes);
                // Due before its last provide (a much shorter interval): due at once.
                let wait =
                    next_due(&t, &moved, &key).saturating_sub(last_provide(&s, &progress, &key));
                assert!(wait <= shorter + 1, "{old} -> {new}: key {i} waits {wait}");
            }
            // The walk goes on near where it was: the next key is due no later than before.
            let due = t.due_time(moved.cycle, &moved.next);
            assert!(due <= s.due_time(progress.cycle, &progress.next));
            assert!(due + old.abs_diff(new) + 1 >= s.due_time(progress.cycle, &progress.next));
        }
    }

    #[test]
    fn due_slices_are_those_the_walk_has_not_taken() {
        let s = Schedule::new(0, 8 * H, 3);
        let progress = Progress {
            cycle: 2,
            next: p("011").first_key(),
        };
        // In cycle 2, at the time "101" is due: "011", "100" and "101" are due.
        let now = s.due_time(2, &p("101").first_key());
        let due: Vec<String> = (0u8..8)
            .map(|i| Prefix::new(&Key::from_bytes([i << 5; 32]), 3))
            .filter(|slice| s.is_due(&progress, slice, now))
            .map(|slice| slice.to_string())
            .collect();
        assert_eq!(due, ["011", "100", "101"]);
    }

    #[test]
    fn progress_bytes_round_trip() {
        let progress = Progress {
            cycle: 42,
            next: p("1011").first_key(),
        };
        assert_eq!(Progress::from_bytes(&progress.to_bytes()), Some(progress));
        assert_eq!(Progress::from_bytes(&[0; 39]), None);
        assert_eq!(Progress::from_bytes(&[0; 41]), None);
    }

    #[test]
    fn slice_length_from_network_size() {
        for (servers, len) in [(0, 0), (39, 0), (40, 0), (80, 1), (10_000, 7), (25_000, 9)] {
            assert_eq!(slice_len_for(servers, 20), len, "{servers}");
        }
    }
}
