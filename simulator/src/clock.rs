//! Virtual time: integer milliseconds since the start of a run, plus the parsers for the
//! durations, sizes and rates a scenario file writes as text ("5s", "2GiB", "100MiB/s").
//!
//! Why integers: the same run must give byte-identical output on any machine, so nothing in a
//! decision may depend on floating-point rounding or on the wall clock.

/// A point or a span of virtual time, in milliseconds.
pub type Ms = u64;

pub const SECOND: Ms = 1_000;
pub const MINUTE: Ms = 60 * SECOND;
pub const HOUR: Ms = 60 * MINUTE;

/// Parses `500ms`, `5s`, `2m`, `1h`, `1d` or `1h30m` (units chained largest first; a bare number
/// is seconds): Berth's one reading of durations, `berth_units`.
pub fn parse_duration(s: &str) -> Result<Ms, String> {
    berth_units::parse_duration_ms(s).map_err(|e| e.to_string())
}

/// Parses `512`, `4KiB`, `100MiB`, `2GiB`, `1TiB`: Berth's one reading of sizes, `berth_units`
/// (binary multiples whatever the spelling: `1GB` = `1GiB`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    berth_units::parse_size(s).map_err(|e| e.to_string())
}

/// Parses a bandwidth `100MiB/s` into bytes per second.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    if !s.trim().ends_with("/s") {
        return Err(format!("`{s}`: expected a bandwidth such as 100MiB/s"));
    }
    berth_units::parse_rate(s).map_err(|e| e.to_string())
}

/// Time to push `bytes` through `bytes_per_sec`, rounded up to the next millisecond.
pub fn transfer_ms(bytes: u64, bytes_per_sec: u64) -> Ms {
    let bps = bytes_per_sec.max(1) as u128;
    ((bytes as u128 * 1_000).div_ceil(bps)) as Ms
}

/// `1h02m03.004s`-style rendering for traces and summaries.
pub fn fmt_ms(t: Ms) -> String {
    let (h, rem) = (t / HOUR, t % HOUR);
    let (m, rem) = (rem / MINUTE, rem % MINUTE);
    let (s, ms) = (rem / SECOND, rem % SECOND);
    if h > 0 {
        format!("{h}h{m:02}m{s:02}.{ms:03}s")
    } else if m > 0 {
        format!("{m}m{s:02}.{ms:03}s")
    } else {
        format!("{s}.{ms:03}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("5s"), Ok(5_000));
        assert_eq!(parse_duration("1h30m"), Ok(90 * MINUTE));
        assert_eq!(parse_duration("1d"), Ok(24 * HOUR));
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("5"), Ok(5_000));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes_and_rates() {
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_rate("100MiB/s"), Ok(100 << 20));
        assert!(parse_rate("100MiB").is_err());
        assert_eq!(transfer_ms(100 << 20, 100 << 20), 1_000);
        assert_eq!(transfer_ms(1, 1_000_000), 1);
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_ms(3_723_004), "1h02m03.004s");
        assert_eq!(fmt_ms(61_500), "1m01.500s");
        assert_eq!(fmt_ms(1_500), "1.500s");
    }
}
