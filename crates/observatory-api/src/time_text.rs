//! Times as text: RFC 3339 in answers; RFC 3339 or epoch milliseconds in requests.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Parses an RFC 3339 time (`2026-11-22T10:00:00Z`, offsets allowed) or integer
/// milliseconds since the epoch, into milliseconds since the epoch.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.trim().parse::<i64>() {
        return Ok(ms);
    }
    let parsed = OffsetDateTime::parse(text.trim(), &Rfc3339)
        .map_err(|e| format!("`{text}` is neither an RFC 3339 time nor epoch milliseconds ({e})"))?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).map_err(|_| format!("`{text}` is out of range"))
}

/// Formats epoch milliseconds as RFC 3339 in UTC.
pub fn format_time(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// Parses a duration such as `30s`, `5m`, `1h`, `24h`, `7d` into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration like 30s, 5m, 1h, 7d ({e})"))?;
    i64::try_from(duration.as_millis()).map_err(|_| format!("`{text}` is too long"))
}

/// Formats milliseconds as a short duration (`5m`, `1h 30m`, `3d`).
pub fn format_duration_ms(ms: i64) -> String {
    observatory_core::settings::human_ms(ms)
}
