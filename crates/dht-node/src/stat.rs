//! `dht-node stat` as a person reads it: the [`StatsView`] in sections, as Kubo's
//! `ipfs provide stat --all` has them (connectivity, queues, schedule, workers, timings,
//! operations, network, then the warnings), or on one line ([`compact`]).

use std::fmt::Write as _;

use crate::api::StatsView;

/// `secs` as `1d 2h`, `3h 4m`, `5m 6s` or `7s`.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// Unix seconds as an RFC 3339 UTC time.
pub fn utc(unix: u64) -> String {
    dht_handler::format_rfc3339(unix)
}

/// `at` relative to `now`: `in 5m 6s` or `5m 6s ago`.
fn relative(at: u64, now: u64) -> String {
    if at > now {
        format!("in {}", duration(at - now))
    } else {
        format!("{} ago", duration(now - at))
    }
}

fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

/// The sections of `dht-node stat`: `view` and the routing table's summary (`table`, as
/// `GET /api/v1/routing-table` gives it).
pub fn render(view: &StatsView, table: &serde_json::Value) -> String {
    let v = view;
    let now = v.now;
    let mut out = String::new();
    let mut section = |title: &str, rows: &[(&str, String)]| {
        let _ = writeln!(out, "{title}");
        for (name, value) in rows {
            let _ = writeln!(out, "  {name:<18}{value}");
        }
    };
    section(
        "Connectivity",
        &[(
            "state",
            format!(
                "{}, since {} ({})",
                v.connectivity,
                utc(v.connectivity_since),
                relative(v.connectivity_since, now)
            ),
        )],
    );
    section(
        "Queues",
        &[
            (
                "keys to provide",
                format!(
                    "{} ({} in memory; the oldest waits for {})",
                    v.keys_queued,
                    v.keys_queued_in_memory,
                    duration(v.oldest_queued_secs)
                ),
            ),
            (
                "regions waiting",
                format!(
                    "{} with new keys, {} for a retry (the oldest for {}), {} due for reprovide",
                    v.regions_queued_provide,
                    v.regions_queued_retry,
                    duration(v.oldest_retry_secs),
                    v.regions_due
                ),
            ),
        ],
    );
    let next = match (&v.next_region, v.next_region_due) {
        (Some(region), Some(due)) => format!(
            "{}, due {}",
            if region.is_empty() { "(all)" } else { region },
            relative(due, now)
        ),
        _ => "none".into(),
    };
    section(
        "Schedule",
        &[
            ("keys", v.keystore_keys.to_string()),
            (
                "regions",
                format!(
                    "{} (mean explored prefix length {:.1})",
                    v.regions, v.mean_region_prefix_len
                ),
            ),
            ("next region", next),
        ],
    );
    section(
        "Workers",
        &[(
            "busy",
            format!(
                "{} of {} ({} reserved for the schedule)",
                v.workers_busy, v.workers, v.workers_reserved
            ),
        )],
    );
    section(
        "Timings",
        &[
            ("uptime", duration(v.uptime_secs)),
            (
                "current cycle",
                match v.cycle_started_at {
                    Some(at) => format!("{}, started {}", v.cycle, relative(at, now)),
                    None => v.cycle.to_string(),
                },
            ),
            (
                "last cycle took",
                v.last_cycle_secs
                    .map_or("(none finished yet)".into(), duration),
            ),
            ("behind schedule", duration(v.behind_schedule_secs)),
        ],
    );
    section(
        "Operations",
        &[
            (
                "keys provided",
                format!(
                    "{} ({} failed), {:.1} per minute",
                    v.keys_provided, v.keys_failed, v.keys_per_minute
                ),
            ),
            (
                "records sent",
                format!(
                    "{} ({} failed); {} this cycle, {} in the last",
                    v.add_provider_sent,
                    v.add_provider_failed,
                    v.records_sent_this_cycle,
                    v.records_sent_last_cycle
                ),
            ),
            (
                "regions",
                format!(
                    "{} explored ({} FIND_NODE), {:.2} s per region job",
                    v.regions_explored, v.find_node_sent, v.mean_region_secs
                ),
            ),
        ],
    );
    let table_kind = table["kind"].as_str().unwrap_or("?");
    section(
        "Network",
        &[
            (
                "peers in table",
                format!("{} ({table_kind})", v.table_peers),
            ),
            (
                "reachable",
                v.reachable_share.map_or("(nobody tried yet)".into(), |s| {
                    format!("{} of the peers sent to in the last cycle", percent(s))
                }),
            ),
            (
                "servers/region",
                format!("{:.1} (mean)", v.mean_servers_per_region),
            ),
            (
                "holders/key",
                format!("{:.1} (mean)", v.mean_holders_per_key),
            ),
        ],
    );
    if v.keystore_scan_errors + v.state_save_errors > 0 {
        section(
            "Errors",
            &[(
                "store",
                format!(
                    "{} keystore reads, {} state saves failed",
                    v.keystore_scan_errors, v.state_save_errors
                ),
            )],
        );
    }
    if v.warnings.is_empty() {
        let _ = writeln!(out, "Warnings: none");
    } else {
        let _ = writeln!(out, "Warnings");
        for w in &v.warnings {
            let _ = writeln!(out, "  ! {w}");
        }
    }
    out
}

/// `dht-node stat --compact`: one line.
pub fn compact(view: &StatsView) -> String {
    let v = view;
    let warnings = if v.warnings.is_empty() {
        "ok".to_owned()
    } else {
        let kinds: Vec<&str> = v.warnings.iter().map(|w| w.kind()).collect();
        format!("WARN {}", kinds.join(","))
    };
    format!(
        "{} {} | keys {} queued {} | regions {}+{} waiting {} due | workers {}/{} | behind {} | \
         provided {} failed {} {:.1}/min | peers {} | {warnings}",
        utc(v.now),
        v.connectivity,
        v.keystore_keys,
        v.keys_queued,
        v.regions_queued_provide,
        v.regions_queued_retry,
        v.regions_due,
        v.workers_busy,
        v.workers,
        duration(v.behind_schedule_secs),
        v.keys_provided,
        v.keys_failed,
        v.keys_per_minute,
        v.table_peers,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_a_person_says_them() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(75), "1m 15s");
        assert_eq!(duration(3 * 3600 + 120), "3h 2m");
        assert_eq!(duration(2 * 86_400 + 5 * 3600), "2d 5h");
        assert_eq!(relative(100, 40), "in 1m 0s");
        assert_eq!(relative(40, 100), "1m 0s ago");
        assert_eq!(relative(40, 40), "0s ago");
        assert_eq!(utc(86_400), "1970-01-02T00:00:00Z");
    }
}
