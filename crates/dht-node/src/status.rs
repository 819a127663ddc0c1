//! The status page, `GET /` on the management listener: one server-rendered HTML page with
//! inline SVG and no script. It shows the keyspace as a band of the schedule's regions, each
//! coloured by how long ago the sweep last sent every key of it (the times the provider notes
//! as each region's job ends, [`StatsView::region_times`]), the cursor, the queues, and the
//! provider records sent per minute over the last hours
//! ([`Health::records_per_minute`](crate::health::Health::records_per_minute)). It reloads
//! itself every 30 seconds.

use std::fmt::Write as _;

use dht_proto::Prefix;
use dht_provider::{RegionTime, RegionTimes};

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

/// Green (just passed) to red (a whole interval ago); dark red past that (overdue).
fn colour(share: f64) -> String {
    if share > 1.0 {
        return "hsl(0,70%,28%)".to_owned();
    }
    let hue = 120.0 * (1.0 - share.max(0.0));
    format!("hsl({hue:.0},70%,45%)")
}

/// The fill of a region only given new keys since the start, and of one not passed at all.
const PROVIDED_ONLY: &str = "#90caf9";
const NOT_PASSED: &str = "#bbb";

/// The region `index` of `2^bits` regions in keyspace order.
fn nth_region(index: u64, bits: u32) -> Prefix {
    let text = if bits == 0 {
        String::new()
    } else {
        format!("{index:0width$b}", width = bits as usize)
    };
    text.parse().unwrap_or(Prefix::ROOT)
}

/// The fill and the tooltip of `region` at `now`, from the provider's times.
fn region_look(times: &RegionTimes, region: &Prefix, now: u64, interval: u64) -> (String, String) {
    let ago = |at: u64| duration(now.saturating_sub(at));
    let provided = times.provided_last(region);
    match times.reprovided_since(region) {
        Some(at) => {
            let share = if interval == 0 {
                0.0
            } else {
                now.saturating_sub(at) as f64 / interval as f64
            };
            let mut text = format!("every key sent {} ago", ago(at));
            if let Some(p) = provided.filter(|&p| p > at) {
                let _ = write!(text, "; new keys {} ago", ago(p));
            }
            (colour(share), text)
        }
        None => match provided {
            Some(p) => (
                PROVIDED_ONLY.to_owned(),
                format!(
                    "new keys sent {} ago; not reprovided since the start",
                    ago(p)
                ),
            ),
            None => (
                NOT_PASSED.to_owned(),
                "nothing sent since the start".to_owned(),
            ),
        },
    }
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
    let list: Vec<RegionTime> = v
        .region_times
        .iter()
        .filter_map(|t| {
            Some(RegionTime {
                prefix: t.prefix.parse().ok()?,
                reprovided_at: t.reprovided_at,
                provided_at: t.provided_at,
            })
        })
        .collect();
    let times = RegionTimes::from_list(&list);
    // Regions are 2^n; so are cells, each the region of a shorter prefix.
    let bits = cells.trailing_zeros();
    for cell in 0..cells {
        let first = cell * per_cell;
        let last = (first + per_cell).min(regions) - 1;
        let (fill, text) = region_look(&times, &nth_region(cell, bits), v.now, v.interval_secs);
        let _ = write!(
            out,
            "<rect class=\"region\" x=\"{:.2}\" y=\"0\" width=\"{:.2}\" height=\"{height}\" \
             fill=\"{}\"><title>regions {first}–{last}: {}</title></rect>",
            cell as f64 * cell_w,
            cell_w,
            fill,
            escape(&text)
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
    out.push_str("</svg>\n");
    let _ = writeln!(
        out,
        "<p id=\"legend\">How long ago every key of a region was last sent: green just now, \
         red one interval ({}) ago, dark red longer (overdue); blue: only new keys sent since \
         the start; grey: nothing sent since the start. The times are those the provider noted \
         as each region's job ended.</p>",
        escape(&duration(v.interval_secs))
    );
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
    use crate::api::RegionTimeView;

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
    }

    fn times(prefix: &str, reprovided_at: Option<u64>, provided_at: Option<u64>) -> RegionTimeView {
        RegionTimeView {
            prefix: prefix.into(),
            reprovided_at,
            provided_at,
        }
    }

    /// The band's colours come from the times the provider noted, region by region.
    #[test]
    fn regions_are_coloured_by_their_noted_times() {
        let now = 1_000_000;
        let view = StatsView {
            now,
            regions: 4,
            interval_secs: 4000,
            next_region: Some("10".into()),
            region_times: vec![
                times("00", Some(now - 10), None),
                times("01", Some(now - 5000), Some(now - 60)),
                times("10", None, Some(now - 120)),
            ],
            ..StatsView::default()
        };
        let page = render(&view, &[]);
        let cells: Vec<&str> = page.split("<rect class=\"region\"").skip(1).collect();
        let has = |cell: usize, text: &str| {
            assert!(cells[cell].contains(text), "cell {cell}: {}", cells[cell]);
        };
        assert_eq!(cells.len(), 4);
        has(0, "fill=\"hsl(120,70%,45%)\"");
        has(0, "regions 0–0: every key sent 10s ago<");
        // Older than the interval: overdue.
        has(1, "fill=\"hsl(0,70%,28%)\"");
        has(1, "new keys 1m");
        has(2, &format!("fill=\"{PROVIDED_ONLY}\""));
        has(3, &format!("fill=\"{NOT_PASSED}\""));
        has(3, "nothing sent since the start");
    }
}
