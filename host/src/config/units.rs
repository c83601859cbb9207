//! Sizes and durations as people write them on a command line (and, later,
//! in a config file): `64KiB`, `16M`, `500ms`, `2m 30s`, or `unlimited`.
//!
//! Sizes have one meaning: every unit is a power of 1024 (`K` and `KiB` are
//! both 1024 bytes). The ambiguous SI spellings (`KB`, `MB`, `GB`) are
//! refused rather than guessed. Durations are parsed by `humantime`.

use std::time::Duration;

/// Parses a size such as `4096`, `64K`, `64KiB`, `16MiB` or `1G`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("`{text}` is not a size (examples: 4096, 64KiB, 16MiB, 1GiB)"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "kb" | "mb" | "gb" => {
            return Err(format!("`{text}` is ambiguous: sizes are binary, write KiB, MiB or GiB (1024-based)"))
        }
        _ => return Err(format!("`{text}` has an unknown unit (use B, KiB, MiB or GiB)")),
    };
    n.checked_mul(1 << shift).ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses a positive duration such as `500ms`, `1s`, `2m` or `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("`{text}` needs a unit: ms, s, m or h"));
    }
    let d = humantime::parse_duration(t)
        .map_err(|e| format!("`{text}` is not a duration ({e}; examples: 500ms, 1s, 2m)"))?;
    if d.is_zero() {
        return Err(format!("`{text}` is zero; give a positive duration"));
    }
    Ok(d)
}

/// A limit that may be switched off with `unlimited` (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaybeLimit<T>(pub Option<T>);

fn is_unlimited(text: &str) -> bool {
    matches!(text.trim(), "unlimited" | "none")
}

/// Parses a size, or `unlimited`.
pub fn parse_optional_size(text: &str) -> Result<MaybeLimit<u64>, String> {
    if is_unlimited(text) {
        return Ok(MaybeLimit(None));
    }
    parse_size(text).map(|n| MaybeLimit(Some(n)))
}

/// Parses a count, or `unlimited`.
pub fn parse_optional_count(text: &str) -> Result<MaybeLimit<u64>, String> {
    if is_unlimited(text) {
        return Ok(MaybeLimit(None));
    }
    let n = text.trim().parse().map_err(|_| format!("`{text}` is not a number (or `unlimited`)"))?;
    Ok(MaybeLimit(Some(n)))
}

/// Parses a duration, or `unlimited`.
pub fn parse_optional_duration(text: &str) -> Result<MaybeLimit<Duration>, String> {
    if is_unlimited(text) {
        return Ok(MaybeLimit(None));
    }
    parse_duration(text).map(|d| MaybeLimit(Some(d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_binary() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("64KiB"), parse_size("64k"));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("64KB").unwrap_err().contains("ambiguous"));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
        assert_eq!(parse_optional_size("unlimited"), Ok(MaybeLimit(None)));
        assert_eq!(parse_optional_count("unlimited"), Ok(MaybeLimit(None)));
        assert_eq!(parse_optional_count("10"), Ok(MaybeLimit(Some(10))));
        assert!(parse_optional_count("10K").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("10").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("0s").unwrap_err().contains("zero"));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_optional_duration("unlimited"), Ok(MaybeLimit(None)));
    }
}
