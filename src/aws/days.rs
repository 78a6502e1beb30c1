//! Times as the AWS commands handle them: Unix seconds, and days written `2027-01-13` (UTC).

use anyhow::Result;
use openssl::asn1::{Asn1Time, Asn1TimeRef};

/// Seconds since the Unix epoch of an X.509 time.
pub(crate) fn unix_time(time: &Asn1TimeRef) -> Result<i64> {
    let diff = Asn1Time::from_unix(0)?.diff(time)?;
    Ok(i64::from(diff.days) * 86_400 + i64::from(diff.secs))
}

/// Seconds since the Unix epoch, now.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `2027-01-13` for a Unix time.
pub(crate) fn day(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(|t| format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day()))
        .unwrap_or_else(|_| unix.to_string())
}

/// The start (00:00 UTC, Unix time) of a day written as `2027-01-13`.
pub(crate) fn day_start(text: &str) -> Option<i64> {
    let mut parts = text.splitn(3, '-');
    let (year, month, day) = (parts.next()?, parts.next()?, parts.next()?);
    if year.len() != 4 || month.len() != 2 || day.len() != 2 {
        return None;
    }
    let month = time::Month::try_from(month.parse::<u8>().ok()?).ok()?;
    let date = time::Date::from_calendar_date(year.parse().ok()?, month, day.parse().ok()?).ok()?;
    Some(date.midnight().assume_utc().unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_unix_times() {
        assert_eq!(day(0), "1970-01-01");
        assert_eq!(day(1_798_761_599), "2026-12-31");
        assert_eq!(day_start("2026-12-31"), Some(1_798_675_200));
        for bad in [
            "2026-12-32",
            "2026-13-01",
            "26-12-01",
            "2026-1-01",
            "soon",
            "",
        ] {
            assert_eq!(day_start(bad), None, "{bad}");
        }
        let t = Asn1Time::from_unix(1_798_761_599).unwrap();
        assert_eq!(unix_time(&t).unwrap(), 1_798_761_599);
    }
}
