//! Terminal formatting shared by the operator's commands: ages, sizes, tables.

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> i64 {
    outpost::store::now_ms()
}

/// A span of seconds in short words: `42s`, `3m 20s`, `2h 5m`, `3d 4h`.
pub fn span(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// How long ago the Unix-ms time `at_ms` was, e.g. `12s ago`.
pub fn ago_ms(at_ms: i64, now_ms: i64) -> String {
    format!("{} ago", span((now_ms - at_ms) / 1000))
}

/// The Unix-ms time `at_ms` as RFC 3339 (UTC, seconds).
pub fn timestamp(at_ms: i64) -> String {
    outpost::domain::rfc3339(at_ms)
}

/// `12s ago (2026-…Z)` for a Unix-ms JSON value; `never` for null or absent.
pub fn when(v: Option<&Value>, now_ms: i64) -> String {
    match v.and_then(Value::as_i64) {
        Some(ms) => format!("{} ({})", ago_ms(ms, now_ms), timestamp(ms)),
        None => "never".into(),
    }
}

/// Unix ms of an RFC 3339 timestamp.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// A byte count in short words: `512 B`, `3.2 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A JSON value as a short string: strings bare, null as `-`, others as JSON.
pub fn plain(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// At most `max` characters of `s`, with `…` when cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// Rows laid out in columns padded to the widest cell; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                l.push_str(cell);
                l.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_and_sizes_read_short() {
        assert_eq!(span(42), "42s");
        assert_eq!(span(200), "3m 20s");
        assert_eq!(span(7500), "2h 5m");
        assert_eq!(span(-5), "0s");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 + 200_000), "3.2 MiB");
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01Z"), Some(1000));
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["id", "state"],
            &[
                vec!["1".into(), "pending".into()],
                vec!["22".into(), "x".into()],
            ],
        );
        assert_eq!(t, "id  state\n1   pending\n22  x\n");
    }
}
