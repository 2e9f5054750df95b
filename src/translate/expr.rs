//! Rewrites SQLite expressions (and, for views, whole SELECTs) into PostgreSQL, token by token:
//! names in every SQLite quoting become target names quoted when needed, literals are carried
//! over (blobs become `bytea`), SQLite-only operators get their PostgreSQL spelling and function
//! calls go through `functions`. Anything with no faithful translation is an `Err` naming it;
//! nothing is dropped silently. Layout (whitespace) is kept; comments are dropped.

use super::functions::{self, Arg};
use super::lexer::{tokenize, Kind, Token};
use super::names::{quote_pg, target_name};
use super::statement::{matching_paren, split_commas};

/// Bare words that are SQL syntax in expressions and SELECTs, never names. Other SQLite
/// keywords may also name columns (`key`, `first`, `row`...) and are read as names; written
/// lower case and unquoted they still read as the keyword in PostgreSQL.
const KEYWORDS: &[&str] = &[
    "ALL",
    "AND",
    "AS",
    "ASC",
    "BETWEEN",
    "BY",
    "CASE",
    "CAST",
    "COLLATE",
    "CROSS",
    "CURRENT_DATE",
    "CURRENT_TIME",
    "CURRENT_TIMESTAMP",
    "DESC",
    "DISTINCT",
    "ELSE",
    "END",
    "ESCAPE",
    "EXCEPT",
    "EXISTS",
    "FALSE",
    "FROM",
    "FULL",
    "GLOB",
    "GROUP",
    "HAVING",
    "IN",
    "INDEXED",
    "INNER",
    "INTERSECT",
    "IS",
    "ISNULL",
    "JOIN",
    "LEFT",
    "LIKE",
    "LIMIT",
    "MATCH",
    "NATURAL",
    "NOT",
    "NOTNULL",
    "NULL",
    "OFFSET",
    "ON",
    "OR",
    "ORDER",
    "OUTER",
    "OVER",
    "RAISE",
    "REGEXP",
    "RIGHT",
    "SELECT",
    "THEN",
    "TRUE",
    "UNION",
    "USING",
    "VALUES",
    "WHEN",
    "WHERE",
    "WINDOW",
    "WITH",
];

/// Words after which the FROM list of the current SELECT has ended.
const FROM_LIST_ENDS: &[&str] = &[
    "WHERE",
    "GROUP",
    "HAVING",
    "ORDER",
    "LIMIT",
    "UNION",
    "EXCEPT",
    "INTERSECT",
    "WINDOW",
];

/// Right operands after which SQLite's `IS` means the same as PostgreSQL's.
const IS_OPERANDS: &[&str] = &["NULL", "TRUE", "FALSE"];

/// How names are written: their case, and (for views) the schema tables are qualified with.
pub(super) struct Scope {
    pub keep_case: bool,
    /// Table names after FROM and JOIN get this schema, unless they name a CTE.
    pub schema: Option<String>,
    /// Folded names of the CTEs (and windows) the SELECT defines.
    pub ctes: Vec<String>,
}

/// Rewrites a SQLite expression (CHECK, DEFAULT, index expression, partial-index WHERE,
/// generated column expression) into PostgreSQL: identifiers in every SQLite spelling ("x",
/// [x], `x`, bare x) become target_name(x) quoted when needed; string literals are kept
/// ('it''s'); blob literals X'ab' → '\xab'::bytea; known functions translated (see
/// `functions`); `==` → `=`; `LIKE` → `ILIKE` (SQLite's LIKE ignores ASCII case); `a IS b` →
/// `a IS NOT DISTINCT FROM b`; `GLOB`/`REGEXP`/`MATCH`, JSON operators, parameters,
/// `COLLATE NOCASE` and unknown functions → Err(reason). Err carries a one-sentence reason naming
/// the construct that has no PostgreSQL translation.
///
/// A double-quoted word is always a name here; SQLite's fallback of reading `"x"` as the string
/// 'x' when no column x exists is not reproduced.
pub fn translate_expr(sql: &str, keep_case: bool) -> Result<String, String> {
    let toks = tokenize(sql)?;
    if toks.is_empty() {
        return Err("the expression is empty".to_string());
    }
    let scope = Scope {
        keep_case,
        schema: None,
        ctes: Vec::new(),
    };
    rewrite(&toks, &scope)
}

/// Rewrites `toks` (an expression or a SELECT) within `scope`.
pub(super) fn rewrite(toks: &[Token], scope: &Scope) -> Result<String, String> {
    let mut writer = Rewriter {
        toks,
        pos: 0,
        scope,
        out: String::new(),
        depth: 0,
        from_depths: Vec::new(),
        expect_table: false,
    };
    while writer.pos < toks.len() {
        writer.step()?;
    }
    Ok(writer.out.trim().to_string())
}

struct Rewriter<'t, 's> {
    toks: &'t [Token],
    pos: usize,
    scope: &'s Scope,
    out: String,
    /// Parenthesis depth at `pos`.
    depth: usize,
    /// Depths at which a FROM list is open (innermost last).
    from_depths: Vec<usize>,
    /// The next name is a table reference (after FROM, JOIN, or a comma in a FROM list).
    expect_table: bool,
}

impl Rewriter<'_, '_> {
    fn tok(&self) -> &Token {
        &self.toks[self.pos]
    }

    fn kind_at(&self, at: usize) -> Option<&Kind> {
        self.toks.get(at).map(|t| &t.kind)
    }

    fn upper_word_at(&self, at: usize) -> Option<String> {
        let tok = self.toks.get(at)?;
        (tok.kind == Kind::Word).then(|| tok.text.to_ascii_uppercase())
    }

    /// Writes `text` after the current token's leading whitespace and moves past `len` tokens.
    fn emit(&mut self, text: &str, len: usize) {
        self.out.push_str(&self.toks[self.pos].lead);
        self.out.push_str(text);
        self.pos += len;
    }

    fn step(&mut self) -> Result<(), String> {
        let tok = self.tok().clone();
        match &tok.kind {
            Kind::Word => self.word(&tok.text),
            Kind::Quoted(name) if self.kind_at(self.pos + 1) == Some(&Kind::LParen) => {
                self.call(name)
            }
            Kind::Quoted(name) => self.identifier(name),
            Kind::Str(value) => self.string(&tok.text, value),
            Kind::Blob(hex) => {
                self.emit(&format!("'\\x{}'::bytea", hex.to_ascii_lowercase()), 1);
                Ok(())
            }
            Kind::Number => self.number(&tok.text),
            Kind::Op => self.operator(&tok.text),
            Kind::LParen | Kind::RParen | Kind::Comma | Kind::Dot => {
                self.punctuation(&tok.kind);
                self.emit(&tok.text, 1);
                Ok(())
            }
            Kind::Param => Err(format!(
                "the bound parameter {} has no value in schema SQL",
                tok.text
            )),
            Kind::Semi => Err("a `;` ends the statement before the end of the text".to_string()),
        }
    }

    fn punctuation(&mut self, kind: &Kind) {
        match kind {
            Kind::LParen => {
                self.depth += 1;
                self.expect_table = false;
            }
            Kind::RParen => {
                self.depth = self.depth.saturating_sub(1);
                let depth = self.depth;
                self.from_depths.retain(|d| *d <= depth);
            }
            Kind::Comma => self.expect_table = self.from_depths.last() == Some(&self.depth),
            _ => {}
        }
    }

    fn word(&mut self, text: &str) -> Result<(), String> {
        let upper = text.to_ascii_uppercase();
        let call = self.kind_at(self.pos + 1) == Some(&Kind::LParen);
        if KEYWORDS.contains(&upper.as_str()) || (call && upper == "FILTER") {
            return self.keyword(&upper);
        }
        let names_cte = || {
            let folded = target_name(text, self.scope.keep_case);
            self.scope.ctes.contains(&folded)
        };
        if call && !names_cte() {
            return self.call(text);
        }
        if upper == "ROWID" || upper == "_ROWID_" {
            return Err(format!(
                "SQLite's {text} has no PostgreSQL counterpart; name the key column instead"
            ));
        }
        self.identifier(text)
    }

    fn keyword(&mut self, upper: &str) -> Result<(), String> {
        match upper {
            "GLOB" | "REGEXP" | "MATCH" => Err(format!(
                "the {upper} operator has no PostgreSQL translation"
            )),
            "INDEXED" => Err("INDEXED BY has no PostgreSQL translation".to_string()),
            "RAISE" => Err("RAISE() exists only inside SQLite triggers".to_string()),
            "LIKE" => {
                self.emit("ILIKE", 1);
                Ok(())
            }
            "IS" => {
                self.is_operator();
                Ok(())
            }
            "CAST" => self.cast(),
            "COLLATE" => self.collate(),
            _ => {
                self.track_clause(upper);
                self.emit(upper, 1);
                Ok(())
            }
        }
    }

    /// Follows FROM lists so table references can be schema-qualified.
    fn track_clause(&mut self, upper: &str) {
        match upper {
            "FROM" => {
                if self.from_depths.last() != Some(&self.depth) {
                    self.from_depths.push(self.depth);
                }
                self.expect_table = true;
            }
            "JOIN" => self.expect_table = true,
            _ if FROM_LIST_ENDS.contains(&upper) => {
                if self.from_depths.last() == Some(&self.depth) {
                    self.from_depths.pop();
                }
                self.expect_table = false;
            }
            _ => self.expect_table = false,
        }
    }

    /// SQLite's `a IS b` compares like `IS NOT DISTINCT FROM` for any `b`; PostgreSQL's `IS`
    /// only takes NULL, TRUE and FALSE.
    fn is_operator(&mut self) {
        let next = self.upper_word_at(self.pos + 1);
        let after = self.upper_word_at(self.pos + 2);
        let third = self.upper_word_at(self.pos + 3);
        let operand = |w: &Option<String>| w.as_deref().is_some_and(|w| IS_OPERANDS.contains(&w));
        let (text, len) = match (next.as_deref(), after.as_deref(), third.as_deref()) {
            (Some("NOT"), Some("DISTINCT"), Some("FROM")) => ("IS NOT DISTINCT FROM", 4),
            (Some("DISTINCT"), Some("FROM"), _) => ("IS DISTINCT FROM", 3),
            (Some("NOT"), _, _) if operand(&after) => ("IS NOT", 2),
            (Some("NOT"), _, _) => ("IS DISTINCT FROM", 2),
            _ if operand(&next) => ("IS", 1),
            _ => ("IS NOT DISTINCT FROM", 1),
        };
        self.expect_table = false;
        self.emit(text, len);
    }

    /// `CAST(expr AS type)`: the type by SQLite's affinity rules.
    fn cast(&mut self) -> Result<(), String> {
        let open = self.pos + 1;
        if self.kind_at(open) != Some(&Kind::LParen) {
            return Err("CAST is not followed by (".to_string());
        }
        let close = matching_paren(self.toks, open)?;
        let inner = &self.toks[open + 1..close];
        let as_at = top_level_as(inner).ok_or("CAST(...) has no AS type")?;
        let expr = rewrite(&inner[..as_at], self.scope)?;
        let declared: Vec<&str> = inner[as_at + 1..].iter().map(|t| t.text.as_str()).collect();
        let sql = functions::cast_sql(&expr, &declared.join(" "));
        self.emit(&sql, close + 1 - self.pos);
        Ok(())
    }

    fn collate(&mut self) -> Result<(), String> {
        let name = self
            .toks
            .get(self.pos + 1)
            .and_then(Token::name)
            .ok_or("COLLATE is not followed by a collation name")?;
        if name.eq_ignore_ascii_case("BINARY") {
            self.emit("COLLATE \"C\"", 2);
            return Ok(());
        }
        Err(format!(
            "COLLATE {name} inside an expression has no PostgreSQL translation"
        ))
    }

    fn call(&mut self, name: &str) -> Result<(), String> {
        let open = self.pos + 1;
        let close = matching_paren(self.toks, open)?;
        let args = split_commas(&self.toks[open + 1..close])
            .into_iter()
            .map(|arg| self.arg(arg))
            .collect::<Result<Vec<_>, _>>()?;
        let sql = functions::translate_call(&name.to_ascii_lowercase(), &args)?;
        self.expect_table = false;
        self.emit(&sql, close + 1 - self.pos);
        Ok(())
    }

    fn arg(&self, toks: &[Token]) -> Result<Arg, String> {
        let first = toks.first().ok_or("a function argument is empty")?;
        let single = (toks.len() == 1).then_some(first);
        Ok(Arg {
            sql: rewrite(toks, self.scope)?,
            literal: single.and_then(|t| match &t.kind {
                Kind::Str(value) => Some(value.clone()),
                _ => None,
            }),
            word: single
                .filter(|t| t.kind == Kind::Word)
                .map(|t| t.text.to_ascii_uppercase()),
            distinct: first.is_word("DISTINCT"),
        })
    }

    fn identifier(&mut self, name: &str) -> Result<(), String> {
        let qualified = self.kind_at(self.pos + 1) == Some(&Kind::Dot);
        let folded = target_name(name, self.scope.keep_case);
        let table_schema = self.scope.schema.as_deref().filter(|_| self.expect_table);
        self.expect_table = false;
        let text = match table_schema {
            // `main.t`: SQLite's own schema name stands for the target schema.
            Some(schema) if qualified && name.eq_ignore_ascii_case("main") => quote_pg(schema),
            Some(schema) if !qualified && !self.scope.ctes.contains(&folded) => {
                format!("{}.{}", quote_pg(schema), quote_pg(&folded))
            }
            _ => quote_pg(&folded),
        };
        self.emit(&text, 1);
        Ok(())
    }

    /// A string literal is kept, except after AS where SQLite reads it as an alias.
    fn string(&mut self, text: &str, value: &str) -> Result<(), String> {
        let after_as = self.pos > 0 && self.toks[self.pos - 1].is_word("AS");
        if after_as {
            return self.identifier(value);
        }
        self.emit(text, 1);
        Ok(())
    }

    fn number(&mut self, text: &str) -> Result<(), String> {
        let digits = text.replace('_', "");
        let hex = digits
            .strip_prefix("0x")
            .or_else(|| digits.strip_prefix("0X"));
        let sql = match hex {
            // SQLite reads a hex literal as a 64-bit two's complement integer.
            Some(hex) => u64::from_str_radix(hex, 16)
                .map(|v| (v as i64).to_string())
                .map_err(|_| format!("the hex literal {text} does not fit in 64 bits"))?,
            None => digits,
        };
        self.emit(&sql, 1);
        Ok(())
    }

    fn operator(&mut self, op: &str) -> Result<(), String> {
        let sql = match op {
            "==" => "=",
            "->" | "->>" => {
                return Err(format!(
                    "the JSON operator {op} has no PostgreSQL translation on text columns"
                ))
            }
            other => other,
        };
        self.emit(sql, 1);
        Ok(())
    }
}

/// The index of the last `AS` outside parentheses.
fn top_level_as(toks: &[Token]) -> Option<usize> {
    let mut depth = 0usize;
    let mut found = None;
    for (i, tok) in toks.iter().enumerate() {
        match tok.kind {
            Kind::LParen => depth += 1,
            Kind::RParen => depth = depth.saturating_sub(1),
            _ if depth == 0 && tok.is_word("AS") => found = Some(i),
            _ => {}
        }
    }
    found
}
