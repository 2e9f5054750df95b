//! Reads back the keys the capture triggers log: `quote()` of each key column joined by `,`.

use crate::change::RawValue;

/// Parses a key logged by the triggers (`quote()` of each key column joined by `,`) back into
/// values: integers, reals (15 significant digits, `%!.20e` or round-trip precision, `Inf`),
/// `'text'` with `''` escapes (bytes kept exactly), `X'…'` blobs and `NULL`.
pub fn parse_key(text: &str) -> Result<Vec<RawValue>, String> {
    parse_key_bytes(text.as_bytes())
}

pub(super) fn parse_key_bytes(text: &[u8]) -> Result<Vec<RawValue>, String> {
    let mut values = Vec::new();
    let mut rest = text;
    loop {
        let (value, after) = parse_literal(rest)?;
        values.push(value);
        match after.split_first() {
            None => return Ok(values),
            Some((b',', tail)) => rest = tail,
            Some((other, _)) => {
                let at = text.len() - after.len();
                return Err(format!(
                    "expected ',' at byte {at}, found {:?}",
                    *other as char
                ));
            }
        }
    }
}

/// One literal at the start of `s`, and what follows it.
fn parse_literal(s: &[u8]) -> Result<(RawValue, &[u8]), String> {
    match s {
        [] => Err("expected a value, found the end".into()),
        [b'\'', body @ ..] => parse_text(body),
        [b'X' | b'x', b'\'', body @ ..] => parse_blob(body),
        _ => {
            let end = s.iter().position(|&b| b == b',').unwrap_or(s.len());
            let (token, rest) = s.split_at(end);
            Ok((parse_bare(token)?, rest))
        }
    }
}

fn parse_text(body: &[u8]) -> Result<(RawValue, &[u8]), String> {
    let mut text = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i] == b'\'' {
            if body.get(i + 1) == Some(&b'\'') {
                text.push(b'\'');
                i += 2;
                continue;
            }
            return Ok((RawValue::Text(text), &body[i + 1..]));
        }
        text.push(body[i]);
        i += 1;
    }
    Err("text literal without its closing quote".into())
}

fn parse_blob(body: &[u8]) -> Result<(RawValue, &[u8]), String> {
    let end = body
        .iter()
        .position(|&b| b == b'\'')
        .ok_or("blob literal without its closing quote")?;
    let hex = &body[..end];
    if hex.len() % 2 != 0 {
        return Err("blob literal with an odd number of hex digits".into());
    }
    let digit = |b: u8| {
        (b as char)
            .to_digit(16)
            .ok_or("blob literal with a non-hex digit")
    };
    let bytes = hex
        .chunks(2)
        .map(|pair| Ok((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
        .collect::<Result<Vec<u8>, &str>>()?;
    Ok((RawValue::Blob(bytes), &body[end + 1..]))
}

fn parse_bare(token: &[u8]) -> Result<RawValue, String> {
    let text = std::str::from_utf8(token).map_err(|_| "a value that is not text".to_string())?;
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if text.eq_ignore_ascii_case("NULL") {
        return Ok(RawValue::Null);
    }
    if unsigned.eq_ignore_ascii_case("Inf") {
        let inf = if text.starts_with('-') {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
        return Ok(RawValue::Real(inf));
    }
    let numeric = unsigned.bytes().next().is_some_and(|b| b.is_ascii_digit())
        && unsigned
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b));
    if !numeric {
        return Err(format!("{text:?} is not a SQL literal"));
    }
    if unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map(RawValue::Integer)
            .map_err(|e| format!("integer {text}: {e}"));
    }
    text.parse()
        .map(RawValue::Real)
        .map_err(|e| format!("real {text}: {e}"))
}
