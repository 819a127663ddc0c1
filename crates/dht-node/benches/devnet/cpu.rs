//! A process's CPU time (user + system, all threads), from `/proc/<pid>/stat`, and its peak
//! resident memory, from `/proc/<pid>/status`. The devnet bench reads its own process; the
//! Go bench (`benches/go`) reads the provider processes it starts.

use std::{process::Command, sync::OnceLock, time::Duration};

/// Clock ticks per second of `/proc` times (`getconf CLK_TCK`; 100 on every Linux where
/// `getconf` is missing).
fn ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// User plus system CPU time this process has used so far, or `None` off Linux.
pub(crate) fn process_cpu_time() -> Option<Duration> {
    cpu_time_of("self")
}

/// User plus system CPU time that process `pid` (`"self"` for this one) has used so far,
/// or `None` when it cannot be read (off Linux, or the process is gone).
pub(crate) fn cpu_time_of(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces, in parentheses): the state is
    // field 3, utime field 14, stime field 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = ticks_per_second();
    let total = utime + stime;
    Some(
        Duration::from_secs(total / ticks)
            + Duration::from_nanos((total % ticks) * 1_000_000_000 / ticks),
    )
}

/// The CPU time used between two readings, if both exist.
pub(crate) fn cpu_between(start: Option<Duration>, end: Option<Duration>) -> Option<Duration> {
    Some(end?.saturating_sub(start?))
}

/// The peak resident memory of process `pid` (`VmHWM`), in bytes, or `None` when it cannot be
/// read.
pub(crate) fn peak_rss_of(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
