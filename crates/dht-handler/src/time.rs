//! RFC 3339 timestamps: IPNS validity (parsed) and a record's `timeReceived` (formatted).

use dht_proto::UnixSecs;

/// Nanoseconds since the Unix epoch (negative before 1970).
pub(crate) type UnixNanos = i128;

const NANOS: i128 = 1_000_000_000;

/// Days from 1970-01-01 to the proleptic Gregorian date `y-m-d` (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count from 1970-01-01 (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Parses exactly `n` ASCII digits at the start of `s`.
fn digits(s: &[u8], n: usize) -> Option<(u32, &[u8])> {
    if s.len() < n {
        return None;
    }
    let (head, rest) = s.split_at(n);
    let mut v = 0u32;
    for &c in head {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some((v, rest))
}

fn expect(s: &[u8], c: u8) -> Option<&[u8]> {
    match s.split_first() {
        Some((&x, rest)) if x == c => Some(rest),
        _ => None,
    }
}

/// Parses an RFC 3339 timestamp as Go's `time.Parse(time.RFC3339Nano, …)` does:
/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`; fractions beyond nanoseconds are truncated.
pub(crate) fn parse_rfc3339(s: &[u8]) -> Option<UnixNanos> {
    let (year, s) = digits(s, 4)?;
    let s = expect(s, b'-')?;
    let (month, s) = digits(s, 2)?;
    let s = expect(s, b'-')?;
    let (day, s) = digits(s, 2)?;
    let s = expect(s, b'T')?;
    let (hour, s) = digits(s, 2)?;
    let s = expect(s, b':')?;
    let (minute, s) = digits(s, 2)?;
    let s = expect(s, b':')?;
    let (second, mut s) = digits(s, 2)?;
    let year = i64::from(year);
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut nanos: i128 = 0;
    if let Some((&sep, rest)) = s.split_first()
        && (sep == b'.' || sep == b',')
    {
        let n = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        let (frac, rest) = rest.split_at(n);
        let mut scale = NANOS / 10;
        for &c in frac.iter().take(9) {
            nanos += i128::from(c - b'0') * scale;
            scale /= 10;
        }
        s = rest;
    }
    let offset_secs: i64 = match s.split_first() {
        Some((b'Z', [])) => 0,
        Some((&sign, rest)) if sign == b'+' || sign == b'-' => {
            let (oh, rest) = digits(rest, 2)?;
            let rest = expect(rest, b':')?;
            let (om, rest) = digits(rest, 2)?;
            if !rest.is_empty() || oh > 23 || om > 59 {
                return None;
            }
            let off = i64::from(oh) * 3600 + i64::from(om) * 60;
            if sign == b'-' { -off } else { off }
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * 86_400
        + i64::from(hour) * 3600
        + i64::from(minute) * 60
        + i64::from(second)
        - offset_secs;
    Some(i128::from(secs) * NANOS + nanos)
}

/// `now` as an RFC 3339 UTC timestamp with whole seconds (`2006-01-02T15:04:05Z`), as
/// go-libp2p-kad-dht writes a record's `timeReceived`.
pub fn format_rfc3339(now: UnixSecs) -> String {
    let days = i64::try_from(now / 86_400).unwrap_or(i64::MAX / 2);
    let rem = now % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Whether a validity end (`eol`) has passed at `now`: Go's `time.Now().After(eol)`.
pub(crate) fn is_after(now: UnixSecs, eol: UnixNanos) -> bool {
    i128::from(now) * NANOS > eol
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_cases() {
        let check = |s: &str, expected: Option<i128>| {
            assert_eq!(parse_rfc3339(s.as_bytes()), expected, "{s}");
        };
        check("1970-01-01T00:00:00Z", Some(0));
        check("1970-01-01T00:00:00.000000001Z", Some(1));
        check("1970-01-01T00:00:01.5Z", Some(1_500_000_000));
        check("1970-01-01T00:00:01,25Z", Some(1_250_000_000));
        check("1970-01-01T00:00:00.1234567899999Z", Some(123_456_789));
        check("2001-09-09T01:46:40Z", Some(1_000_000_000 * NANOS));
        check("2001-09-09T03:46:40+02:00", Some(1_000_000_000 * NANOS));
        check("2001-09-08T23:46:40-02:00", Some(1_000_000_000 * NANOS));
        check("2024-02-29T00:00:00Z", Some(1_709_164_800 * NANOS));
        check("1969-12-31T23:59:59Z", Some(-NANOS));
        check("0001-01-01T00:00:00Z", Some(-62_135_596_800 * NANOS));
        check(
            "9999-12-31T23:59:59.999999999Z",
            Some(253_402_300_799 * NANOS + 999_999_999),
        );
        // Rejected, as Go rejects them.
        for bad in [
            "",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-00-01T00:00:00Z",
            "2024-01-00T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:60:00Z",
            "2024-01-01T00:00:60Z",
            "2024-01-01 00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00Zx",
            "2024-01-01T00:00:00+0100",
            "2024-01-01T00:00:00+24:00",
            "24-01-01T00:00:00Z",
            "2024-1-01T00:00:00Z",
            "+024-01-01T00:00:00Z",
        ] {
            check(bad, None);
        }
    }

    #[test]
    fn format_cases() {
        let check = |now: UnixSecs, expected: &str| assert_eq!(format_rfc3339(now), expected);
        check(0, "1970-01-01T00:00:00Z");
        check(1_000_000_000, "2001-09-09T01:46:40Z");
        check(1_709_164_800 + 86_399, "2024-02-29T23:59:59Z");
        check(1_700_000_000, "2023-11-14T22:13:20Z");
    }

    #[test]
    fn round_trip_every_day_for_a_thousand_years() {
        for day in (-200_000i64..200_000).step_by(7) {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
            assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
        }
    }

    #[test]
    fn after() {
        assert!(!is_after(10, 10 * NANOS));
        assert!(is_after(10, 10 * NANOS - 1));
        assert!(!is_after(10, 10 * NANOS + 1));
    }
}
