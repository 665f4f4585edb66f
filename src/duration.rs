//! Durations as operators type them.
//!
//! The environment variables kept from the older fleet (`HEARTBEAT_TIMEOUT_SECONDS`
//! and friends) hold plain seconds, decimals allowed; flags also accept
//! `500ms`, `5s`, `10m`. One parser serves both, since clap feeds an env var
//! through the same value parser as its flag.

use std::time::Duration;

/// Parses `"300"`, `"0.25"` (seconds) or a humantime duration such as `"500ms"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return Err(format!("`{s}` is not a non-negative number of seconds"));
        }
        return Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is neither seconds nor a duration like 500ms, 5s, 10m: {e}"))
}

/// Formats a duration for logs and tables, short and readable (`1m 3s`).
pub fn format_short(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s:02}s"),
        _ => format!("{h}h{m:02}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_units() {
        assert_eq!(parse_duration("300").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("NaN").is_err());
    }

    #[test]
    fn short_format() {
        assert_eq!(format_short(Duration::from_millis(250)), "250ms");
        assert_eq!(format_short(Duration::from_secs(5)), "5s");
        assert_eq!(format_short(Duration::from_secs(63)), "1m03s");
        assert_eq!(format_short(Duration::from_secs(3 * 3600 + 120)), "3h02m");
    }
}
