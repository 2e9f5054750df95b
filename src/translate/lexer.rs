//! A SQLite-aware lexer: splits schema SQL into tokens the way SQLite's own tokenizer does, so the
//! translators never mistake a string literal, a comment or a quoted name for SQL. It owns the
//! four identifier quotings (`"x"`, `[x]`, `` `x` ``, bare `x`), string literals with `''`
//! escapes, blob literals `X'..'`, numbers, parameters and operators. Comments are dropped (a
//! `/* */` block does not nest in SQLite but does in PostgreSQL, so copying one is unsafe); the
//! whitespace before each token is kept so rewritten SQL keeps its layout.

/// What a token is. Text that must be rewritten (names, literals) carries its decoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A bare word: a keyword, a function name or an unquoted identifier.
    Word,
    /// A quoted identifier (`"x"`, `[x]`, `` `x` ``) with its unquoted name.
    Quoted(String),
    /// A string literal with its value (`''` undone).
    Str(String),
    /// A blob literal `X'..'` with its hex digits.
    Blob(String),
    /// A numeric literal.
    Number,
    /// A bound parameter: `?`, `?1`, `:name`, `@name`, `$name`.
    Param,
    /// An operator such as `==`, `||`, `<=`, `*`.
    Op,
    LParen,
    RParen,
    Comma,
    Dot,
    Semi,
}

/// One token: its kind, its exact source text and where it sits in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub kind: Kind,
    /// The token as written.
    pub text: String,
    /// Byte offset of the first byte in the input.
    pub start: usize,
    /// Byte offset just past the last byte.
    pub end: usize,
    /// The whitespace before the token; a dropped comment counts as one space.
    pub lead: String,
}

impl Token {
    /// Whether this is the bare word `word` (ASCII case-insensitive).
    pub fn is_word(&self, word: &str) -> bool {
        self.kind == Kind::Word && self.text.eq_ignore_ascii_case(word)
    }

    /// The identifier this token names: a bare word, a quoted name or (as SQLite allows in names)
    /// a string literal.
    pub fn name(&self) -> Option<&str> {
        match &self.kind {
            Kind::Word => Some(&self.text),
            Kind::Quoted(name) | Kind::Str(name) => Some(name),
            _ => None,
        }
    }
}

/// Two-character operators, longest match first.
const OPERATORS_2: &[&str] = &["||", "==", "!=", "<>", "<=", ">=", "<<", ">>", "->"];
/// Single-character operators.
const OPERATORS_1: &str = "=<>+-*/%&|~";

/// Splits `sql` into tokens. Err names the first thing SQLite itself would not accept.
pub fn tokenize(sql: &str) -> Result<Vec<Token>, String> {
    let mut lexer = Lexer {
        sql,
        bytes: sql.as_bytes(),
        pos: 0,
    };
    let mut tokens = Vec::new();
    loop {
        let lead = lexer.skip_trivia()?;
        if lexer.pos >= lexer.bytes.len() {
            return Ok(tokens);
        }
        let start = lexer.pos;
        let kind = lexer.next_kind()?;
        tokens.push(Token {
            kind,
            text: sql[start..lexer.pos].to_string(),
            start,
            end: lexer.pos,
            lead,
        });
    }
}

struct Lexer<'a> {
    sql: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl Lexer<'_> {
    fn peek(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    /// Skips whitespace and comments; returns the whitespace to keep before the next token.
    fn skip_trivia(&mut self) -> Result<String, String> {
        let mut lead = String::new();
        while let Some(b) = self.peek(0) {
            if b.is_ascii_whitespace() {
                lead.push(char::from(b));
                self.pos += 1;
            } else if b == b'-' && self.peek(1) == Some(b'-') {
                self.pos = self.find_from(self.pos, "\n").unwrap_or(self.bytes.len());
                lead.push(' ');
            } else if b == b'/' && self.peek(1) == Some(b'*') {
                // SQLite accepts a block comment left open at the end of the input.
                self.pos = self
                    .find_from(self.pos + 2, "*/")
                    .map_or(self.bytes.len(), |at| at + 2);
                lead.push(' ');
            } else {
                break;
            }
        }
        Ok(lead)
    }

    fn find_from(&self, from: usize, needle: &str) -> Option<usize> {
        self.sql.get(from..)?.find(needle).map(|at| at + from)
    }

    fn next_kind(&mut self) -> Result<Kind, String> {
        let b = self.bytes[self.pos];
        match b {
            b'\'' => self.quoted(b'\'').map(Kind::Str),
            b'"' => self.quoted(b'"').map(Kind::Quoted),
            b'`' => self.quoted(b'`').map(Kind::Quoted),
            b'[' => self.bracketed().map(Kind::Quoted),
            b'x' | b'X' if self.peek(1) == Some(b'\'') => self.blob(),
            b'0'..=b'9' => Ok(self.number()),
            b'.' if self.peek(1).is_some_and(|c| c.is_ascii_digit()) => Ok(self.number()),
            b'?' | b':' | b'@' | b'$' => self.param(),
            b'(' => Ok(self.single(Kind::LParen)),
            b')' => Ok(self.single(Kind::RParen)),
            b',' => Ok(self.single(Kind::Comma)),
            b'.' => Ok(self.single(Kind::Dot)),
            b';' => Ok(self.single(Kind::Semi)),
            _ if is_ident_start(b) => Ok(self.word()),
            _ => self.operator(),
        }
    }

    fn single(&mut self, kind: Kind) -> Kind {
        self.pos += 1;
        kind
    }

    /// A run quoted by `quote` where a doubled quote stands for one; returns the value.
    fn quoted(&mut self, quote: u8) -> Result<String, String> {
        let open = self.pos;
        let mut value = Vec::new();
        self.pos += 1;
        while let Some(b) = self.peek(0) {
            self.pos += 1;
            if b != quote {
                value.push(b);
            } else if self.peek(0) == Some(quote) {
                value.push(quote);
                self.pos += 1;
            } else {
                return String::from_utf8(value).map_err(|e| e.to_string());
            }
        }
        Err(format!(
            "a quoted text starting at byte {open} (`{}`) is never closed",
            char::from(quote)
        ))
    }

    /// `[name]`: no escapes, ends at the first `]`.
    fn bracketed(&mut self) -> Result<String, String> {
        let open = self.pos;
        let close = self
            .find_from(open + 1, "]")
            .ok_or_else(|| format!("a [bracketed] name starting at byte {open} is never closed"))?;
        self.pos = close + 1;
        Ok(self.sql[open + 1..close].to_string())
    }

    fn blob(&mut self) -> Result<Kind, String> {
        let open = self.pos;
        self.pos += 1;
        let hex = self.quoted(b'\'')?;
        let even = hex.len() % 2 == 0;
        if !even || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!(
                "the blob literal at byte {open} is not an even number of hex digits"
            ));
        }
        Ok(Kind::Blob(hex))
    }

    fn number(&mut self) -> Kind {
        let hex = self.peek(0) == Some(b'0') && matches!(self.peek(1), Some(b'x' | b'X'));
        if hex {
            self.pos += 2;
            self.eat_while(|c| c.is_ascii_hexdigit() || c == b'_');
            return Kind::Number;
        }
        self.eat_while(|c| c.is_ascii_digit() || c == b'_');
        if self.peek(0) == Some(b'.') {
            self.pos += 1;
            self.eat_while(|c| c.is_ascii_digit() || c == b'_');
        }
        let exp_digit = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_digit());
        if matches!(self.peek(0), Some(b'e' | b'E')) {
            let signed = matches!(self.peek(1), Some(b'+' | b'-'));
            if exp_digit(self.peek(1)) || (signed && exp_digit(self.peek(2))) {
                self.pos += if signed { 2 } else { 1 };
                self.eat_while(|c| c.is_ascii_digit());
            }
        }
        Kind::Number
    }

    fn param(&mut self) -> Result<Kind, String> {
        let sigil = self.bytes[self.pos];
        self.pos += 1;
        let before = self.pos;
        self.eat_while(is_ident_char);
        if sigil != b'?' && self.pos == before {
            return Err(format!(
                "`{}` at byte {} starts nothing SQLite knows",
                char::from(sigil),
                before - 1
            ));
        }
        Ok(Kind::Param)
    }

    fn word(&mut self) -> Kind {
        self.eat_while(is_ident_char);
        Kind::Word
    }

    fn operator(&mut self) -> Result<Kind, String> {
        let rest = &self.bytes[self.pos..];
        if rest.starts_with(b"->>") {
            self.pos += 3;
            return Ok(Kind::Op);
        }
        if let Some(op) = OPERATORS_2
            .iter()
            .find(|op| rest.starts_with(op.as_bytes()))
        {
            self.pos += op.len();
            return Ok(Kind::Op);
        }
        let b = rest[0];
        if OPERATORS_1.as_bytes().contains(&b) {
            self.pos += 1;
            return Ok(Kind::Op);
        }
        let shown = self.sql[self.pos..].chars().next().unwrap_or('?');
        Err(format!(
            "unexpected character `{shown}` at byte {}",
            self.pos
        ))
    }

    fn eat_while(&mut self, keep: impl Fn(u8) -> bool) {
        while self.peek(0).is_some_and(&keep) {
            self.pos += 1;
        }
    }
}

/// SQLite: letters, `_` and every non-ASCII byte may start an identifier.
fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_char(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(sql: &str) -> Vec<Kind> {
        tokenize(sql).unwrap().into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn reads_all_four_identifier_quotings() {
        let names: Vec<_> = tokenize(r#""a ""b"" c" [x y] `p``q` bare"#)
            .unwrap()
            .iter()
            .map(|t| t.name().unwrap().to_string())
            .collect();
        assert_eq!(names, ["a \"b\" c", "x y", "p`q", "bare"]);
    }

    #[test]
    fn strings_hide_what_looks_like_sql() {
        let toks = tokenize("'it''s -- not /* a */ [comment]' || x").unwrap();
        assert_eq!(
            toks[0].kind,
            Kind::Str("it's -- not /* a */ [comment]".into())
        );
        assert_eq!(toks.len(), 3);
    }

    #[test]
    fn comments_become_a_space() {
        let toks = tokenize("a -- line\n/* block */b /* open").unwrap();
        assert_eq!(toks.len(), 2);
        assert_eq!(toks[1].lead, "  \n ");
    }

    #[test]
    fn numbers_blobs_params_and_operators() {
        assert_eq!(
            kinds("1 .5 2.5e-3 0xFF X'aB' ? :n >= == || ->>"),
            [
                Kind::Number,
                Kind::Number,
                Kind::Number,
                Kind::Number,
                Kind::Blob("aB".into()),
                Kind::Param,
                Kind::Param,
                Kind::Op,
                Kind::Op,
                Kind::Op,
                Kind::Op,
            ]
        );
    }

    #[test]
    fn unicode_words_are_identifiers() {
        let toks = tokenize("naïve_größe > 0").unwrap();
        assert_eq!(toks[0].text, "naïve_größe");
        assert_eq!(toks[0].kind, Kind::Word);
    }

    #[test]
    fn odd_input_is_an_error_not_a_panic() {
        for sql in [
            "'open", "\"open", "[open", "X'abc'", "X'zz'", "a # b", ": x", "`",
        ] {
            assert!(tokenize(sql).is_err(), "{sql}");
        }
    }
}
