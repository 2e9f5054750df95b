//! Date and time values as SQLite applications store them: ISO-8601 text (with or without `T`,
//! fractions, `Z` or an offset, date only), Unix epoch integers (seconds) and Julian-day reals.
//! Everything becomes microseconds since 1970-01-01 UTC (PostgreSQL's resolution); a value that
//! matches no rule, or would lose precision, is an error, never a guess.

/// Seconds from 0001-01-01 to 1970-01-01: the earliest instant accepted.
const MIN_EPOCH_SECONDS: i64 = -62_135_596_800;
/// Seconds from 1970-01-01 to 9999-12-31 23:59:59: the latest instant accepted.
const MAX_EPOCH_SECONDS: i64 = 253_402_300_799;
/// The Julian day number of the Unix epoch.
const JULIAN_UNIX_EPOCH: f64 = 2_440_587.5;

/// A parsed date-time text: microseconds UTC and whether the text carried a time part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedTimestamp {
    pub micros: i64,
    pub date_only: bool,
}

/// Parses ISO-8601 text. `default_offset_seconds` applies to text without `Z` or an offset.
pub fn parse_text(s: &str, default_offset_seconds: i32) -> Result<ParsedTimestamp, String> {
    let b = s.as_bytes();
    let date = parse_date(b).ok_or_else(|| format!("{s:?} is not an ISO-8601 date"))?;
    let days = days_from_civil(date.0, date.1, date.2);
    if b.len() == 10 {
        let micros = (days * 86_400 - i64::from(default_offset_seconds)) * 1_000_000;
        return Ok(ParsedTimestamp {
            micros,
            date_only: true,
        });
    }
    if b[10] != b' ' && b[10] != b'T' && b[10] != b't' {
        return Err(format!("{s:?} has no date/time separator after the date"));
    }
    let (tod_micros, rest) =
        parse_time(&b[11..]).ok_or_else(|| format!("{s:?} has no valid time of day"))?;
    let offset = match rest {
        [] => default_offset_seconds,
        _ => {
            parse_offset(rest).ok_or_else(|| format!("{s:?} has an unreadable time zone offset"))?
        }
    };
    let micros = (days * 86_400 - i64::from(offset)) * 1_000_000 + tod_micros;
    check_range(micros / 1_000_000).map_err(|e| format!("{s:?} {e}"))?;
    Ok(ParsedTimestamp {
        micros,
        date_only: false,
    })
}

/// Parses `YYYY-MM-DD` text only, as days since 1970-01-01.
pub fn parse_date_only(s: &str) -> Result<i32, String> {
    let b = s.as_bytes();
    match (b.len(), parse_date(b)) {
        (10, Some((y, m, d))) => Ok(days_from_civil(y, m, d) as i32),
        _ => Err(format!("{s:?} is not a YYYY-MM-DD date")),
    }
}

/// Unix epoch seconds to microseconds.
pub fn from_epoch_seconds(secs: i64) -> Result<i64, String> {
    check_range(secs).map_err(|e| format!("epoch {secs} {e}"))?;
    Ok(secs * 1_000_000)
}

/// A Julian day number (SQLite's `julianday()`) to microseconds. Rounded to the millisecond
/// exactly as SQLite reads a Julian day (`iJD = (i64)(jd * 86400000.0 + 0.5)`): a double holds a
/// current Julian day only to about 50 µs, so finer digits are noise, and SQLite's own
/// `datetime()` of the value is what the application sees.
pub fn from_julian_day(jd: f64) -> Result<i64, String> {
    if !jd.is_finite() {
        return Err(format!("{jd} is not a Julian day number"));
    }
    let ms = (jd * 86_400_000.0 + 0.5).floor();
    let unix_ms = ms - JULIAN_UNIX_EPOCH * 86_400_000.0;
    let secs = (unix_ms / 1000.0).floor();
    if secs < MIN_EPOCH_SECONDS as f64 || secs > MAX_EPOCH_SECONDS as f64 {
        return Err(format!("Julian day {jd} is outside the years 1 to 9999"));
    }
    Ok(unix_ms as i64 * 1000)
}

fn check_range(secs: i64) -> Result<(), String> {
    if (MIN_EPOCH_SECONDS..=MAX_EPOCH_SECONDS).contains(&secs) {
        Ok(())
    } else {
        Err("is outside the years 1 to 9999".into())
    }
}

fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')))
}

fn parse_date(b: &[u8]) -> Option<(i64, u32, u32)> {
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (
        digits(&b[0..4])?,
        digits(&b[5..7])? as u32,
        digits(&b[8..10])? as u32,
    );
    if y == 0 || !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) {
        return None;
    }
    Some((y, m, d))
}

/// `HH:MM[:SS[.fraction]]` followed by what is left (the offset part).
fn parse_time(b: &[u8]) -> Option<(i64, &[u8])> {
    if b.len() < 5 || b[2] != b':' {
        return None;
    }
    let (h, m) = (digits(&b[0..2])?, digits(&b[3..5])?);
    let (mut s, mut frac_micros, mut rest) = (0, 0, &b[5..]);
    if rest.first() == Some(&b':') {
        s = digits(rest.get(1..3)?)?;
        rest = &rest[3..];
        if rest.first() == Some(&b'.') {
            let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            let frac = &rest[1..1 + n];
            if n == 0 || frac.iter().skip(6).any(|&c| c != b'0') {
                return None; // empty fraction, or sub-microsecond digits that would be lost
            }
            let mut padded = [b'0'; 6];
            padded[..n.min(6)].copy_from_slice(&frac[..n.min(6)]);
            frac_micros = digits(&padded)?;
            rest = &rest[1 + n..];
        }
    }
    if h > 23 || m > 59 || s > 59 {
        return None;
    }
    Some(((h * 3600 + m * 60 + s) * 1_000_000 + frac_micros, rest))
}

/// `Z`, `+HH:MM`, `-HHMM` or `+HH`, as seconds east of UTC.
fn parse_offset(b: &[u8]) -> Option<i32> {
    if b == b"Z" || b == b"z" {
        return Some(0);
    }
    let sign = match b.first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let body = &b[1..];
    let (h, m) = match body.len() {
        2 => (digits(body)?, 0),
        4 => (digits(&body[..2])?, digits(&body[2..])?),
        5 if body[2] == b':' => (digits(&body[..2])?, digits(&body[3..])?),
        _ => return None,
    };
    if h > 15 || m > 59 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60) as i32)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (inverse of [`days_from_civil`]).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `YYYY-MM-DD` of a day count since 1970-01-01.
pub fn format_date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// ISO-8601 UTC text (`YYYY-MM-DD HH:MM:SS[.ffffff]+00`) of microseconds since 1970-01-01.
pub fn format_timestamp(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let tod = secs.rem_euclid(86_400);
    let date = format_date(secs.div_euclid(86_400));
    let time = format!("{:02}:{:02}:{:02}", tod / 3600, tod / 60 % 60, tod % 60);
    if frac == 0 {
        format!("{date} {time}+00")
    } else {
        format!("{date} {time}.{frac:06}+00")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(s: &str) -> i64 {
        parse_text(s, 0).unwrap().micros
    }

    #[test]
    fn iso_variants_agree() {
        let base = micros("2024-03-01 12:34:56");
        assert_eq!(base, 1_709_296_496_000_000);
        assert_eq!(micros("2024-03-01T12:34:56"), base);
        assert_eq!(micros("2024-03-01T12:34:56Z"), base);
        assert_eq!(micros("2024-03-01T14:34:56+02:00"), base);
        assert_eq!(micros("2024-03-01T14:34:56+0200"), base);
        assert_eq!(micros("2024-03-01T10:34:56-02"), base);
        assert_eq!(micros("2024-03-01 12:34:56.5"), base + 500_000);
        assert_eq!(micros("2024-03-01 12:34:56.123456"), base + 123_456);
        assert_eq!(micros("2024-03-01 12:34:56.123456000"), base + 123_456);
        assert_eq!(micros("2024-03-01 12:34"), base - 56_000_000);
        assert!(parse_text("2024-03-01", 0).unwrap().date_only);
    }

    #[test]
    fn garbage_and_lossy_values_are_refused() {
        for bad in [
            "",
            "yesterday",
            "2024-02-30",
            "2024-13-01",
            "2024-03-01 25:00:00",
            "2024-03-01X12:00",
            "2024-03-01 12:34:56.1234567",
            "2024-03-01 12:34:56+25:00",
            "0000-01-01",
        ] {
            assert!(parse_text(bad, 0).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn default_offset_applies_only_without_an_explicit_one() {
        assert_eq!(
            parse_text("2024-03-01 12:00:00", 3600).unwrap().micros,
            micros("2024-03-01 11:00:00")
        );
        assert_eq!(
            parse_text("2024-03-01 12:00:00Z", 3600).unwrap().micros,
            micros("2024-03-01 12:00:00")
        );
    }

    #[test]
    fn epoch_and_julian_day() {
        assert_eq!(from_epoch_seconds(0).unwrap(), 0);
        assert!(from_epoch_seconds(MAX_EPOCH_SECONDS + 1).is_err());
        assert_eq!(from_julian_day(2_440_587.5).unwrap(), 0);
        assert!(
            (from_julian_day(2_460_371.024_259_259_3).unwrap() - 1_709_296_496_000_000).abs() < 100
        );
        assert_eq!(parse_date_only("1970-01-02").unwrap(), 1);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        for days in [-719_162, -1, 0, 59, 11_017, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(
            format_timestamp(micros("2024-03-01 12:34:56.5")),
            "2024-03-01 12:34:56.500000+00"
        );
        assert_eq!(format_timestamp(-1), "1969-12-31 23:59:59.999999+00");
    }
}
