//! Durations (`90s`, `30m`, `1h30m`) and sizes (`512MiB`, `4GiB`, `1G`) as playbooks
//! write them.

use std::time::Duration;

/// The longest duration a playbook may give (a task's `timeout`, a health `interval`, a
/// model's `load-timeout`, …): 7 days, as for `apply --model-timeout`. The shortest is
/// 1ms: none may be zero.
pub const MAX_DURATION: Duration = Duration::from_secs(MAX_DURATION_SECS);

/// [`MAX_DURATION`] in seconds, for the command line.
pub const MAX_DURATION_SECS: u64 = 7 * 24 * 3600;

/// The largest size a playbook may give (`memory`, a tmpfs `size`, …): 1024 TiB, far
/// above any host, and within what the engine's API takes (an `i64` of bytes).
pub const MAX_SIZE: u64 = 1 << 50;

/// `1h30m` → 90 minutes. Units: `ms`, `s`, `m`, `h`; each part a whole number. A
/// well-formed duration too long for a `Duration` is [`Duration::MAX`], for the checker
/// to call too long.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().unwrap_or(u64::MAX);
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return None,
        };
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// `4GiB` → 4 × 2³⁰ bytes. Binary (`KiB`, `MiB`, `GiB`, or `K`, `M`, `G`) and decimal
/// (`KB`, `MB`, `GB`) units; a bare number is bytes. A well-formed size too large for a
/// `u64` is `u64::MAX`, for the checker to call too large.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits == 0 {
        return None;
    }
    let n: u64 = text[..digits].parse().unwrap_or(u64::MAX);
    let factor: u64 = match text[digits..].trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return None,
    };
    Some(n.saturating_mul(factor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_mins(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        for bad in ["", "10", "m", "1.5h", "10 s", "-1s", "3d"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        for huge in [
            "99999999999999h",
            "99999999999999999999999s",
            "1h18446744073709551615s",
        ] {
            assert!(parse_duration(huge) > Some(MAX_DURATION), "{huge}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4GiB"), Some(4 << 30));
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("1GB"), Some(1_000_000_000));
        assert_eq!(parse_size("100"), Some(100));
        for bad in ["", "GiB", "1.5G", "4 gigs", "-1G"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        for huge in ["99999999999TiB", "99999999999999999999G", "2048TiB"] {
            assert!(parse_size(huge) > Some(MAX_SIZE), "{huge}");
        }
    }
}
