//! Walking token lists: a cursor over the head of a CREATE statement (`CREATE [UNIQUE] INDEX
//! [IF NOT EXISTS] name ON ...`), balanced parentheses, top-level comma splits and the source text
//! behind a run of tokens. Shared by the CREATE TABLE, CREATE INDEX and CREATE VIEW parsers and
//! by the expression rewriter; every failure is an `Err` naming what was expected.

use super::lexer::{Kind, Token};

/// A position in a token list, read left to right.
pub(super) struct Cursor<'t> {
    toks: &'t [Token],
    pos: usize,
}

impl<'t> Cursor<'t> {
    pub(super) fn new(toks: &'t [Token]) -> Self {
        Cursor { toks, pos: 0 }
    }

    pub(super) fn peek(&self) -> Option<&'t Token> {
        self.toks.get(self.pos)
    }

    pub(super) fn advance(&mut self, by: usize) {
        self.pos = (self.pos + by).min(self.toks.len());
    }

    /// The tokens not read yet.
    pub(super) fn rest(&self) -> &'t [Token] {
        &self.toks[self.pos..]
    }

    /// Consumes the bare word `word` if it comes next.
    pub(super) fn eat_word(&mut self, word: &str) -> bool {
        let found = self.peek().is_some_and(|t| t.is_word(word));
        if found {
            self.pos += 1;
        }
        found
    }

    /// Consumes the bare word `word` or says what came instead.
    pub(super) fn expect_word(&mut self, word: &str) -> Result<(), String> {
        if self.eat_word(word) {
            Ok(())
        } else {
            Err(format!(
                "expected {word} but found {}",
                describe(self.peek())
            ))
        }
    }

    /// Skips `IF NOT EXISTS` when present.
    pub(super) fn skip_if_not_exists(&mut self) -> Result<(), String> {
        if self.eat_word("IF") {
            self.expect_word("NOT")?;
            self.expect_word("EXISTS")?;
        }
        Ok(())
    }

    /// Reads `[schema.]name` and returns the unquoted name (the schema part is SQLite's, not
    /// the target's, so it is dropped).
    pub(super) fn object_name(&mut self) -> Result<String, String> {
        let mut name = self.one_name()?;
        if self.peek().is_some_and(|t| t.kind == Kind::Dot) {
            self.pos += 1;
            name = self.one_name()?;
        }
        Ok(name)
    }

    fn one_name(&mut self) -> Result<String, String> {
        let name = self
            .peek()
            .and_then(Token::name)
            .ok_or_else(|| format!("expected a name but found {}", describe(self.peek())))?;
        self.pos += 1;
        Ok(name.to_string())
    }

    /// Reads a parenthesised group starting at the cursor; returns the tokens inside it.
    pub(super) fn paren_group(&mut self) -> Result<&'t [Token], String> {
        if self.peek().map(|t| &t.kind) != Some(&Kind::LParen) {
            return Err(format!("expected ( but found {}", describe(self.peek())));
        }
        let close = matching_paren(self.toks, self.pos)?;
        let inner = &self.toks[self.pos + 1..close];
        self.pos = close + 1;
        Ok(inner)
    }
}

/// The index of the `)` closing the `(` at `open`.
pub(super) fn matching_paren(toks: &[Token], open: usize) -> Result<usize, String> {
    let mut depth = 0usize;
    for (i, tok) in toks.iter().enumerate().skip(open) {
        match tok.kind {
            Kind::LParen => depth += 1,
            Kind::RParen => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => {}
        }
    }
    Err("a parenthesis is never closed".to_string())
}

/// Splits at the commas outside any parentheses. An empty input gives no parts.
pub(super) fn split_commas(toks: &[Token]) -> Vec<&[Token]> {
    if toks.is_empty() {
        return Vec::new();
    }
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, tok) in toks.iter().enumerate() {
        match tok.kind {
            Kind::LParen => depth += 1,
            Kind::RParen => depth = depth.saturating_sub(1),
            Kind::Comma if depth == 0 => {
                parts.push(&toks[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&toks[start..]);
    parts
}

/// The source text from the first to the last token, as written (comments included).
pub(super) fn source_text<'s>(sql: &'s str, toks: &[Token]) -> &'s str {
    match (toks.first(), toks.last()) {
        (Some(first), Some(last)) => sql.get(first.start..last.end).unwrap_or(""),
        _ => "",
    }
}

/// A token as an error message shows it.
pub(super) fn describe(tok: Option<&Token>) -> String {
    tok.map_or_else(|| "the end".to_string(), |t| format!("`{}`", t.text))
}
