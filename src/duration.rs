//! Durations as the command line and `device.toml` give them: `30d`, `12h`, `90m`, `45s`.

/// `30d`, `12h`, `90m`, `45s` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?}: use a number with s, m, h or d (e.g. 30d)"
            ))
        }
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: use a number with s, m, h or d (e.g. 30d)"))?;
    number
        .checked_mul(factor)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// `duration` as [`parse_duration`] reads it, in the largest unit that divides it (`7d`, `90m`).
pub fn format_duration(duration: std::time::Duration) -> String {
    let secs = duration.as_secs();
    for (unit, factor) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs >= factor && secs % factor == 0 {
            return format!("{}{unit}", secs / factor);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_back() {
        for text in ["7d", "36h", "90m", "45s", "0s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn units() {
        assert_eq!(parse_duration("45").unwrap().as_secs(), 45);
        assert_eq!(parse_duration("90m").unwrap().as_secs(), 5400);
        assert_eq!(parse_duration("6h").unwrap().as_secs(), 21_600);
        assert_eq!(parse_duration("30d").unwrap().as_secs(), 2_592_000);
        assert!(parse_duration("3w").is_err());
        assert!(parse_duration("h").is_err());
    }
}
