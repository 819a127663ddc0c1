//! The status page, `GET /` on the management listener: one server-rendered HTML page with
//! inline SVG and no script. It shows the keyspace as a band of the schedule's regions, each
//! coloured by how long ago the sweep passed it (estimated from the schedule: the regions in
//! keyspace order, the cursor, the last cycle's length), the cursor, the queues, and the
//! provider records sent per minute over the last hours
//! ([`Health::records_per_minute`](crate::health::Health::records_per_minute)). It reloads
//! itself every 30 seconds.

use std::fmt::Write as _;

use crate::{
    api::StatsView,
    stat::{duration, utc},
};

/// The most cells the band draws; with more regions, each cell covers a run of them.
pub const MAX_CELLS: u64 = 256;

/// `text` with `&`, `<`, `>`, `"` and `'` escaped for HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The index of the region named by `bits` (its prefix, `0`s and `1`s) among `regions`
/// regions of equal prefix length, in keyspace order; `None` if `bits` is not such a prefix.
pub fn region_index(bits: &str, regions: u64) -> Option<u64> {
    if bits.len() > 63 || !bits.bytes().all(|b| b == b'0' || b == b'1') {
        return None;
    }
    let index = if bits.is_empty() {
        0
    } else {
        u64::from_str_radix(bits, 2).ok()?
    };
    (index < regions.max(1)).then_some(index)
}

/// The share of a cycle (in `(0, 1]`) since the sweep passed region `index` of `regions`,
/// the cursor being at `cursor`: the region just behind the cursor was passed last, the one
/// at the cursor a whole cycle ago.
fn cycle_share(index: u64, cursor: u64, regions: u64) -> f64 {
    let behind = (cursor + regions - index % regions) % regions;
    let behind = if behind == 0 { regions } else { behind };
    behind as f64 / regions as f64
}

/// Green (just passed) to red (a whole cycle ago).
fn colour(share: f64) -> String {
    let share = share.clamp(0.0, 1.0);
    let hue = 120.0 * (1.0 - share);
    format!("hsl({hue:.0},70%,45%)")
}

/// The page for `view` (from `GET /api/v1/stats`) and `records_per_minute` (oldest first).
pub fn render(view: &StatsView, records_per_minute: &[(u64, f64)]) -> String {
    let v = view;
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"30\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>dht-node status</title><style>\
         body{{font-family:sans-serif;margin:1.5em;color:#222}}\
         table{{border-collapse:collapse}}td,th{{padding:2px 10px;text-align:left}}\
         th{{color:#555;font-weight:normal}}.warn{{color:#b00;font-weight:bold}}\
         </style></head><body>\n<h1>dht-node status</h1>\n\
         <p id=\"summary\">{} at {} · {} · up {} · cycle {}</p>\n",
        escape(&v.strategy),
        escape(&utc(v.now)),
        escape(&v.connectivity),
        escape(&duration(v.uptime_secs)),
        v.cycle
    );
    if !v.warnings.is_empty() {
        out.push_str("<ul id=\"warnings\">");
        for w in &v.warnings {
            let _ = write!(out, "<li class=\"warn\">{}</li>", escape(&w.to_string()));
        }
        out.push_str("</ul>\n");
    }
    band(&mut out, v);
    queues(&mut out, v);
    series(&mut out, records_per_minute);
    out.push_str("</body></html>\n");
    out
}

fn band(out: &mut String, v: &StatsView) {
    let regions = v.regions;
    let cursor = v
        .next_region
        .as_deref()
        .and_then(|bits| region_index(bits, regions));
    let _ = write!(
        out,
        "<h2>Keyspace</h2>\n<p id=\"cursor\">{} regions (mean prefix length {:.1}); next region: {}{}</p>\n",
        regions,
        v.mean_region_prefix_len,
        escape(match v.next_region.as_deref() {
            None => "none",
            Some("") => "the whole keyspace (prefix ∅)",
            Some(bits) => bits,
        }),
        v.next_region_due
            .map(|due| format!(", due {}", escape(&utc(due))))
            .unwrap_or_default()
    );
    let (width, height) = (1100.0, 60.0);
    let _ = write!(
        out,
        "<svg id=\"band\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" \
         viewBox=\"0 0 {width} {}\">",
        height + 24.0,
        height + 24.0
    );
    if regions == 0 {
        let _ = writeln!(
            out,
            "<rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" fill=\"#ddd\"/>\
             <text x=\"10\" y=\"35\">no schedule (no keys provided)</text></svg>"
        );
        return;
    }
    let cells = regions.min(MAX_CELLS);
    let per_cell = regions.div_ceil(cells);
    let cells = regions.div_ceil(per_cell);
    let cell_w = width / cells as f64;
    let cycle = v.last_cycle_secs;
    for cell in 0..cells {
        let first = cell * per_cell;
        let last = (first + per_cell).min(regions) - 1;
        // The cell's oldest region passed decides its colour; in the first cycle, the
        // regions at and after the cursor were not passed yet (grey).
        let first_cycle = v.cycle <= 1;
        let share = match cursor {
            Some(c) => (first..=last)
                .filter(|&i| !(first_cycle && i >= c))
                .map(|i| cycle_share(i, c, regions))
                .reduce(f64::max),
            None => Some(1.0),
        };
        let (fill, age) = match share {
            Some(share) => (
                colour(share),
                cycle
                    .map(|secs| format!("passed ~{} ago", duration((share * secs as f64) as u64)))
                    .unwrap_or_else(|| format!("passed {:.0}% of a cycle ago", share * 100.0)),
            ),
            None => (
                "#bbb".to_owned(),
                "not passed since the start (first cycle)".to_owned(),
            ),
        };
        let _ = write!(
            out,
            "<rect class=\"region\" x=\"{:.2}\" y=\"0\" width=\"{:.2}\" height=\"{height}\" \
             fill=\"{}\"><title>regions {first}–{last}: {}</title></rect>",
            cell as f64 * cell_w,
            cell_w,
            fill,
            escape(&age)
        );
    }
    if let Some(c) = cursor {
        let x = (c / per_cell) as f64 * cell_w;
        let _ = write!(
            out,
            "<rect id=\"cursor-mark\" x=\"{:.2}\" y=\"0\" width=\"3\" height=\"{}\" fill=\"#000\"/>\
             <text x=\"{:.2}\" y=\"{}\" font-size=\"13\">▲ cursor</text>",
            x,
            height + 6.0,
            (x - 10.0).max(0.0),
            height + 20.0
        );
    }
    out.push_str("</svg>\n<p>Green: the sweep passed it just now; red: a whole cycle ago; grey: not passed since the start (estimated from the schedule: regions in keyspace order, the cursor, the last cycle's length).</p>\n");
}

fn queues(out: &mut String, v: &StatsView) {
    let rows: [(&str, String); 9] = [
        ("keys", v.keystore_keys.to_string()),
        (
            "keys to provide",
            format!(
                "{} (the oldest waits for {})",
                v.keys_queued,
                duration(v.oldest_queued_secs)
            ),
        ),
        (
            "regions with new keys",
            v.regions_queued_provide.to_string(),
        ),
        (
            "regions for a retry",
            format!(
                "{} (the oldest for {})",
                v.regions_queued_retry,
                duration(v.oldest_retry_secs)
            ),
        ),
        ("regions due", v.regions_due.to_string()),
        (
            "workers",
            format!(
                "{} busy of {} ({} kept for the schedule)",
                v.workers_busy, v.workers, v.workers_reserved
            ),
        ),
        ("behind schedule", duration(v.behind_schedule_secs)),
        (
            "provided",
            format!(
                "{} keys, {} failed, {:.1} keys/min",
                v.keys_provided, v.keys_failed, v.keys_per_minute
            ),
        ),
        (
            "records sent",
            format!(
                "{} ({} failed); this cycle {}",
                v.add_provider_sent, v.add_provider_failed, v.records_sent_this_cycle
            ),
        ),
    ];
    out.push_str("<h2>Queues</h2>\n<table id=\"queues\">");
    for (name, value) in rows {
        let _ = write!(
            out,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(name),
            escape(&value)
        );
    }
    out.push_str("</table>\n");
}

fn series(out: &mut String, points: &[(u64, f64)]) {
    let (width, height) = (1100.0, 160.0);
    out.push_str("<h2>Records per minute</h2>\n");
    let _ = write!(
        out,
        "<svg id=\"records\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" \
         viewBox=\"0 0 {width} {}\"><rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" \
         fill=\"#f4f4f4\"/>",
        height + 20.0,
        height + 20.0
    );
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        out.push_str("<text x=\"10\" y=\"80\">no samples yet (one every 30 s)</text></svg>\n");
        return;
    };
    let max = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1.0);
    let span = (last.0.saturating_sub(first.0)).max(1) as f64;
    let mut line = String::new();
    for (at, rate) in points {
        let x = (at.saturating_sub(first.0)) as f64 / span * width;
        let y = height - rate / max * (height - 10.0);
        let _ = write!(line, "{x:.1},{y:.1} ");
    }
    let _ = writeln!(
        out,
        "<polyline fill=\"none\" stroke=\"#1565c0\" stroke-width=\"2\" points=\"{}\"/>\
         <text x=\"4\" y=\"14\" font-size=\"12\">max {max:.0}/min</text>\
         <text x=\"4\" y=\"{}\" font-size=\"12\">{}</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"end\">{}</text></svg>",
        line.trim_end(),
        height + 16.0,
        escape(&utc(first.0)),
        width,
        height + 16.0,
        escape(&utc(last.0))
    );
    let _ = writeln!(
        out,
        "<p id=\"records-now\">{} points; last {:.1} records/min</p>",
        points.len(),
        last.1
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn regions_index_and_age_around_the_cursor() {
        assert_eq!(region_index("0110", 16), Some(6));
        assert_eq!(region_index("", 1), Some(0));
        assert_eq!(region_index("2", 16), None);
        assert_eq!(region_index("10000", 16), None);
        // Just behind the cursor: passed last; at the cursor: a cycle ago.
        assert_eq!(cycle_share(5, 6, 16), 1.0 / 16.0);
        assert_eq!(cycle_share(6, 6, 16), 1.0);
        assert_eq!(cycle_share(7, 6, 16), 15.0 / 16.0);
    }
}
