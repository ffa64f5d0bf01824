//! Durations and sizes as PostgreSQL writes its settings: `"30s"`, `"5min"`, `"500ms"`,
//! a bare number of milliseconds; `"512MB"`, `"4GB"`, a bare number of bytes.

use std::time::Duration;

use serde::Deserialize;

/// A setting as written in the file: a number or a string with a unit.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum Setting {
    Number(u64),
    Text(String),
}

impl Setting {
    pub(super) fn duration(&self) -> Result<Duration, String> {
        match self {
            Setting::Number(ms) => Ok(Duration::from_millis(*ms)),
            Setting::Text(t) => parse_duration(t),
        }
    }

    pub(super) fn bytes(&self) -> Result<usize, String> {
        match self {
            Setting::Number(n) => usize::try_from(*n).map_err(|_| format!("{n} is too large")),
            Setting::Text(t) => parse_bytes(t),
        }
    }
}

/// Split `"30s"` into `(30, "s")`.
fn number_and_unit(text: &str) -> Option<(u64, String)> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let number = text[..digits].parse().ok()?;
    Some((number, text[digits..].trim().to_lowercase()))
}

/// A duration as PostgreSQL reads `statement_timeout`: a number of milliseconds, or a
/// number with a unit (`us`, `ms`, `s`, `min`, `h`, `d`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (n, unit) = number_and_unit(text).ok_or_else(|| {
        format!("invalid value \"{text}\": write a duration such as \"30s\", \"5min\" or \"500ms\"")
    })?;
    Ok(match unit.as_str() {
        "" | "ms" => Duration::from_millis(n),
        "us" => Duration::from_micros(n),
        "s" => Duration::from_secs(n),
        "min" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        _ => {
            return Err(format!(
                "invalid unit \"{unit}\" in \"{text}\": valid units are us, ms, s, min, h and d"
            ));
        }
    })
}

/// A size: a number of bytes, or a number with a unit (`B`, `kB`, `MB`, `GB`, `TB`; powers
/// of 1024, as PostgreSQL counts them).
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let (n, unit) = number_and_unit(text).ok_or_else(|| {
        format!("invalid value \"{text}\": write a size such as \"512MB\" or \"4GB\"")
    })?;
    let shift = match unit.as_str() {
        "" | "b" => 0,
        "kb" => 10,
        "mb" => 20,
        "gb" => 30,
        "tb" => 40,
        _ => {
            return Err(format!(
                "invalid unit \"{unit}\" in \"{text}\": valid units are B, kB, MB, GB and TB"
            ));
        }
    };
    n.checked_mul(1u64 << shift)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("\"{text}\" is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1500"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2 min"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 weeks").is_err());
        assert_eq!(parse_bytes("512MB"), Ok(512 << 20));
        assert_eq!(parse_bytes("4GB"), Ok(4 << 30));
        assert_eq!(parse_bytes("100"), Ok(100));
        assert!(parse_bytes("lots").is_err());
    }
}
