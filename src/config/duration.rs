//! Duration values in config: strings with a unit ("250ms", "10s", "1m 30s"), parsed by
//! humantime, with messages that say how to fix the common mistakes.

use std::time::Duration;

/// The longest duration a config may give: every deadline hivesup computes is "now" plus one
/// of these (or a few added up), and `Instant + Duration` panics on overflow.
pub const MAX: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a config duration; the error text is the part after `key: `.
pub fn parse(text: &str) -> Result<Duration, String> {
    let d = parse_unbounded(text)?;
    if d > MAX {
        return Err(format!(
            "\"{}\" is longer than the maximum of 365 days",
            text.trim()
        ));
    }
    Ok(d)
}

fn parse_unbounded(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("expected a duration like \"10s\", found an empty string".into());
    }
    if trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!("\"{text}\" has no unit, write \"{trimmed}s\""));
    }
    humantime::parse_duration(trimmed).map_err(|e| {
        format!("expected a duration like \"250ms\" or \"10s\", found \"{text}\" ({e})")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let ok = [
            ("250ms", Duration::from_millis(250)),
            ("10s", Duration::from_secs(10)),
            ("1m", Duration::from_secs(60)),
            ("1m 30s", Duration::from_secs(90)),
            ("0s", Duration::ZERO),
            (" 2s ", Duration::from_secs(2)),
        ];
        for (text, want) in ok {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
        assert_eq!(
            parse("30").unwrap_err(),
            "\"30\" has no unit, write \"30s\""
        );
        assert!(parse("").unwrap_err().contains("empty"));
        assert!(
            parse("ten seconds")
                .unwrap_err()
                .contains("found \"ten seconds\"")
        );
        assert!(parse("-1s").is_err());
        assert_eq!(parse("365d"), Ok(MAX));
        // fuzz finding: "500000000000y" was accepted, and the supervisor panicked adding it
        // to an Instant (exit 70)
        assert_eq!(
            parse("500000000000y").unwrap_err(),
            "\"500000000000y\" is longer than the maximum of 365 days"
        );
        assert!(parse("366d").is_err());
    }
}
