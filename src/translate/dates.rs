//! SQLite's date and time functions in PostgreSQL. "Now" (`'now'` or `CURRENT_TIMESTAMP`)
//! becomes PostgreSQL's CURRENT_TIMESTAMP / CURRENT_DATE / CURRENT_TIME; a constant date such as
//! `datetime('1997-01-01')` becomes the text SQLite would compute ('1997-01-01 00:00:00'), which
//! compares with both text and timestamp columns; `strftime` with a constant format becomes
//! `to_char` on UTC time. Modifiers ('+1 day', 'localtime', ...) and non-constant arguments are
//! refused: their meaning depends on how the value is stored.

use super::functions::Arg;

/// The date and time functions this module answers for.
pub(super) const FUNCTIONS: &[&str] = &[
    "date",
    "time",
    "datetime",
    "julianday",
    "unixepoch",
    "strftime",
];

/// Seconds since 1970 now, as SQLite's unixepoch() and strftime('%s') give them.
const EPOCH_NOW: &str = "CAST(floor(extract(epoch FROM CURRENT_TIMESTAMP)) AS bigint)";
/// The Julian day number now, as SQLite's julianday('now') gives it.
const JULIAN_NOW: &str = "(extract(epoch FROM CURRENT_TIMESTAMP) / 86400.0 + 2440587.5)";
/// SQLite's "now" is UTC.
const UTC_NOW: &str = "CURRENT_TIMESTAMP AT TIME ZONE 'UTC'";

/// The PostgreSQL SQL for the date/time function `name` (one of `FUNCTIONS`).
pub(super) fn translate(name: &str, args: &[Arg]) -> Result<String, String> {
    if (args.len() > 1 && name != "strftime") || args.len() > 2 {
        return Err(format!(
            "{name}() with modifiers has no PostgreSQL translation"
        ));
    }
    match name {
        "strftime" => strftime(args),
        "unixepoch" | "julianday" => {
            if !args.first().is_none_or(is_now) {
                return Err(format!(
                    "{name}() of a value other than 'now' has no PostgreSQL translation"
                ));
            }
            Ok(if name == "unixepoch" {
                EPOCH_NOW
            } else {
                JULIAN_NOW
            }
            .to_string())
        }
        _ => date_or_time(name, args.first()),
    }
}

/// `'now'` (any case) or the keyword CURRENT_TIMESTAMP.
fn is_now(arg: &Arg) -> bool {
    let now_literal = arg
        .literal
        .as_deref()
        .is_some_and(|v| v.eq_ignore_ascii_case("now"));
    now_literal || arg.word.as_deref() == Some("CURRENT_TIMESTAMP")
}

fn date_or_time(name: &str, arg: Option<&Arg>) -> Result<String, String> {
    if arg.is_none_or(is_now) {
        return Ok(match name {
            "date" => "CURRENT_DATE",
            "time" => "CURRENT_TIME",
            _ => "CURRENT_TIMESTAMP",
        }
        .to_string());
    }
    let value = arg.and_then(|a| a.literal.as_deref()).ok_or_else(|| {
        format!("{name}() of a value that is not a constant has no PostgreSQL translation")
    })?;
    let moment = Moment::parse(value)
        .ok_or_else(|| format!("{name}('{value}') is not a date SQLite reads the same way"))?;
    let text = match name {
        "date" => moment.date(),
        "time" => moment.time(),
        _ => format!("{} {}", moment.date(), moment.time()),
    };
    Ok(format!("'{text}'"))
}

/// A constant date and time as SQLite reads `YYYY-MM-DD[( |T)HH:MM[:SS[.fff]]][Z]`.
#[derive(Debug, PartialEq, Eq)]
struct Moment {
    year: u32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl Moment {
    fn parse(text: &str) -> Option<Moment> {
        let text = text.trim();
        let text = text.strip_suffix(['Z', 'z']).unwrap_or(text);
        let (date, time) = match text.get(10..) {
            Some("") => (text, None),
            Some(rest) if rest.starts_with([' ', 'T', 't']) => (text.get(..10)?, rest.get(1..)),
            _ => return None,
        };
        let [year, month, day] = fields::<3>(date, '-', &[4, 2, 2])?;
        let (hour, minute, second) = match time {
            Some(time) => parse_time(time)?,
            None => (0, 0, 0),
        };
        let valid = (1..=12).contains(&month) && day >= 1 && day <= days_in(year, month);
        valid.then_some(Moment {
            year,
            month,
            day,
            hour,
            minute,
            second,
        })
    }

    fn date(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    fn time(&self) -> String {
        format!("{:02}:{:02}:{:02}", self.hour, self.minute, self.second)
    }
}

/// `HH:MM[:SS[.fff]]`; fractions are dropped, as datetime() drops them.
fn parse_time(time: &str) -> Option<(u32, u32, u32)> {
    let whole = time.split_once('.').map_or(time, |(whole, fraction)| {
        if fraction.bytes().all(|b| b.is_ascii_digit()) {
            whole
        } else {
            ""
        }
    });
    let (hour, minute, second) = if whole.len() == 5 {
        let [h, m] = fields::<2>(whole, ':', &[2, 2])?;
        (h, m, 0)
    } else {
        let [h, m, s] = fields::<3>(whole, ':', &[2, 2, 2])?;
        (h, m, s)
    };
    (hour < 24 && minute < 60 && second < 60).then_some((hour, minute, second))
}

/// Splits `text` at `separator` into exactly N all-digit fields of the given widths.
fn fields<const N: usize>(text: &str, separator: char, widths: &[usize; N]) -> Option<[u32; N]> {
    let parts: Vec<&str> = text.split(separator).collect();
    if parts.len() != N {
        return None;
    }
    let mut out = [0u32; N];
    for ((slot, part), width) in out.iter_mut().zip(&parts).zip(widths) {
        if part.len() != *width || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = part.parse().ok()?;
    }
    Some(out)
}

fn days_in(year: u32, month: u32) -> u32 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `strftime(format, 'now')` → `to_char(<now in UTC>, pattern)`; `'%s'` → seconds since 1970.
fn strftime(args: &[Arg]) -> Result<String, String> {
    let format = args
        .first()
        .and_then(|a| a.literal.as_deref())
        .ok_or("strftime() with a format that is not a constant has no PostgreSQL translation")?;
    if !args.get(1).is_some_and(is_now) {
        return Err(
            "strftime() of a value other than 'now' has no PostgreSQL translation".to_string(),
        );
    }
    if format == "%s" {
        return Ok(EPOCH_NOW.to_string());
    }
    let pattern = to_char_pattern(format)?;
    Ok(format!(
        "to_char({UTC_NOW}, '{}')",
        pattern.replace('\'', "''")
    ))
}

/// SQLite strftime conversions → to_char patterns; literal text goes in double quotes.
fn to_char_pattern(format: &str) -> Result<String, String> {
    let mut pattern = String::new();
    let mut literal = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            if c == '"' || c == '\\' {
                return Err(format!(
                    "the strftime format '{format}' has a quote or backslash"
                ));
            }
            literal.push(c);
            continue;
        }
        let spec = chars.next().unwrap_or('%');
        if spec == '%' {
            literal.push('%');
            continue;
        }
        flush_literal(&mut pattern, &mut literal);
        pattern.push_str(
            conversion(spec)
                .ok_or_else(|| format!("strftime's %{spec} has no PostgreSQL translation"))?,
        );
    }
    flush_literal(&mut pattern, &mut literal);
    Ok(pattern)
}

fn flush_literal(pattern: &mut String, literal: &mut String) {
    if !literal.is_empty() {
        pattern.push('"');
        pattern.push_str(literal);
        pattern.push('"');
        literal.clear();
    }
}

fn conversion(spec: char) -> Option<&'static str> {
    Some(match spec {
        'Y' => "YYYY",
        'm' => "MM",
        'd' => "DD",
        'H' => "HH24",
        'M' => "MI",
        'S' => "SS",
        'f' => "SS.MS",
        'j' => "DDD",
        'F' => "YYYY-MM-DD",
        'T' => "HH24:MI:SS",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_constant_dates_like_sqlite() {
        let m = Moment::parse("1997-01-01").unwrap();
        assert_eq!(
            (m.date(), m.time()),
            ("1997-01-01".into(), "00:00:00".into())
        );
        let m = Moment::parse("2013-10-07T08:23:19.120Z").unwrap();
        assert_eq!(m.time(), "08:23:19");
        assert_eq!(
            Moment::parse("2024-02-29 10:30").unwrap().time(),
            "10:30:00"
        );
        for bad in [
            "2023-02-29",
            "1997-13-01",
            "97-01-01",
            "1997-01-01 25:00",
            "now",
            "",
        ] {
            assert_eq!(Moment::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn strftime_patterns_quote_literal_text() {
        assert_eq!(
            to_char_pattern("%Y-%m-%dT%H:%M:%fZ").unwrap(),
            "YYYY\"-\"MM\"-\"DD\"T\"HH24\":\"MI\":\"SS.MS\"Z\""
        );
        assert!(to_char_pattern("%w").is_err());
    }
}
