//! What a CREATE TABLE statement says that SQLite's PRAGMAs do not: CHECK constraints (column-
//! and table-level, with their CONSTRAINT names), generated columns and per-column COLLATE. The
//! statement is walked as top-level comma-separated column definitions and table constraints,
//! skipping balanced parentheses (type sizes, DEFAULT (...), REFERENCES t(...)); expressions are
//! kept as SQLite text for `translate_expr`. Also writes the PostgreSQL clauses for them.

use super::expr::translate_expr;
use super::lexer::{tokenize, Kind, Token};
use super::names::{quote_pg, target_name};
use super::statement::{describe, source_text, split_commas, Cursor};

/// Words that start a table constraint rather than a column definition.
const TABLE_CONSTRAINT_STARTS: &[&str] = &["CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN"];

/// What CREATE TABLE says that PRAGMAs do not: CHECK constraints (column- and table-level, with
/// their CONSTRAINT name if any), generated columns (expression + STORED/VIRTUAL), per-column
/// COLLATE.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableSql {
    pub checks: Vec<Check>,
    pub generated: Vec<Generated>,
    /// (column, collation name), both as SQLite spells them.
    pub collations: Vec<(String, String)>,
}

/// A CHECK constraint; names are SQLite's, unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: Option<String>,
    /// The column it was declared on; None for a table constraint.
    pub column: Option<String>,
    /// SQLite text, untranslated.
    pub expr: String,
}

/// A generated column: `[GENERATED ALWAYS] AS (expr) [STORED|VIRTUAL]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub column: String,
    /// SQLite text, untranslated.
    pub expr: String,
    /// STORED; SQLite's default is VIRTUAL.
    pub stored: bool,
}

/// Parses a CREATE TABLE statement as stored in `sqlite_schema.sql`. Err for virtual tables,
/// `CREATE TABLE ... AS SELECT` and anything that is not a CREATE TABLE.
pub fn parse_create_table(sql: &str) -> Result<TableSql, String> {
    let toks = tokenize(sql)?;
    let body = table_body(&toks)?;
    let mut table = TableSql::default();
    for def in split_commas(body) {
        let first = def.first().ok_or("CREATE TABLE has an empty definition")?;
        let is_constraint = TABLE_CONSTRAINT_STARTS.iter().any(|w| first.is_word(w));
        if is_constraint {
            table_constraint(sql, def, &mut table)?;
        } else {
            column_definition(sql, def, &mut table)?;
        }
    }
    Ok(table)
}

/// The tokens between the parentheses of `CREATE [TEMP] TABLE [IF NOT EXISTS] name (...)`.
fn table_body(toks: &[Token]) -> Result<&[Token], String> {
    let mut cursor = Cursor::new(toks);
    cursor.expect_word("CREATE")?;
    let _temporary = cursor.eat_word("TEMP") || cursor.eat_word("TEMPORARY");
    if cursor.eat_word("VIRTUAL") {
        return Err(
            "a virtual table (CREATE VIRTUAL TABLE ... USING) has no PostgreSQL translation".into(),
        );
    }
    cursor.expect_word("TABLE")?;
    cursor.skip_if_not_exists()?;
    cursor.object_name()?;
    if cursor.peek().is_some_and(|t| t.is_word("AS")) {
        return Err("CREATE TABLE ... AS SELECT has no column definitions to read".into());
    }
    let body = cursor.paren_group()?;
    let trailing_ok = |t: &Token| t.is_word("WITHOUT") || t.is_word("ROWID") || t.is_word("STRICT");
    if let Some(odd) = cursor
        .rest()
        .iter()
        .find(|t| t.kind != Kind::Comma && !trailing_ok(t))
    {
        return Err(format!(
            "unexpected {} after the column list",
            describe(Some(odd))
        ));
    }
    Ok(body)
}

/// `[CONSTRAINT name] CHECK (expr)`; other table constraints are what PRAGMAs already report.
fn table_constraint(sql: &str, def: &[Token], table: &mut TableSql) -> Result<(), String> {
    let mut cursor = Cursor::new(def);
    let name = if cursor.eat_word("CONSTRAINT") {
        Some(cursor.object_name()?)
    } else {
        None
    };
    if cursor.eat_word("CHECK") {
        let expr = check_expr(sql, cursor.paren_group()?)?;
        table.checks.push(Check {
            name,
            column: None,
            expr,
        });
    }
    Ok(())
}

fn check_expr(sql: &str, inner: &[Token]) -> Result<String, String> {
    match source_text(sql, inner) {
        "" => Err("CHECK () is empty".to_string()),
        text => Ok(text.to_string()),
    }
}

/// A column definition: its name, then a type and column constraints in any order.
fn column_definition(sql: &str, def: &[Token], table: &mut TableSql) -> Result<(), String> {
    let column = def
        .first()
        .and_then(Token::name)
        .ok_or_else(|| format!("expected a column name but found {}", describe(def.first())))?
        .to_string();
    let mut cursor = Cursor::new(def);
    cursor.advance(1);
    let mut constraint_name = None;
    while let Some(tok) = cursor.peek() {
        let name = constraint_name.take();
        if tok.kind == Kind::LParen {
            cursor.paren_group()?;
        } else if cursor.eat_word("CONSTRAINT") {
            constraint_name = Some(cursor.object_name()?);
        } else if cursor.eat_word("CHECK") {
            let expr = check_expr(sql, cursor.paren_group()?)?;
            let column = Some(column.clone());
            table.checks.push(Check { name, column, expr });
        } else if cursor.eat_word("COLLATE") {
            let collation = cursor.object_name()?;
            table.collations.push((column.clone(), collation));
        } else if cursor.eat_word("AS") {
            table.generated.push(generated(sql, &column, &mut cursor)?);
        } else {
            cursor.advance(1);
        }
    }
    Ok(())
}

/// After `AS`: `(expr) [STORED|VIRTUAL]`.
fn generated(sql: &str, column: &str, cursor: &mut Cursor) -> Result<Generated, String> {
    let inner = cursor.paren_group()?;
    let expr = source_text(sql, inner);
    if expr.is_empty() {
        return Err(format!("the generated column {column} has no expression"));
    }
    let stored = cursor.eat_word("STORED");
    let _virtual = !stored && cursor.eat_word("VIRTUAL");
    Ok(Generated {
        column: column.to_string(),
        expr: expr.to_string(),
        stored,
    })
}

/// `ALTER TABLE schema.table ADD [CONSTRAINT name] CHECK (expr)` for a CHECK of SQLite table
/// `table`, with the expression translated.
pub fn translate_check(
    check: &Check,
    schema: &str,
    table: &str,
    keep_case: bool,
) -> Result<String, String> {
    let expr = translate_expr(&check.expr, keep_case)?;
    let constraint = check.name.as_ref().map_or_else(String::new, |name| {
        format!("CONSTRAINT {} ", quote_pg(&target_name(name, keep_case)))
    });
    Ok(format!(
        "ALTER TABLE {}.{} ADD {constraint}CHECK ({expr})",
        quote_pg(schema),
        quote_pg(&target_name(table, keep_case))
    ))
}

/// The column clause `GENERATED ALWAYS AS (expr) STORED`. PostgreSQL before 18 has no VIRTUAL
/// generated columns, so a VIRTUAL one is stored too: same values, computed on write.
pub fn translate_generated(generated: &Generated, keep_case: bool) -> Result<String, String> {
    let expr = translate_expr(&generated.expr, keep_case)?;
    Ok(format!("GENERATED ALWAYS AS ({expr}) STORED"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: Option<&str>, column: Option<&str>, expr: &str) -> Check {
        Check {
            name: name.map(str::to_string),
            column: column.map(str::to_string),
            expr: expr.to_string(),
        }
    }

    #[test]
    fn column_and_table_checks_with_names_and_nested_parens() {
        let sql = "CREATE TABLE t (a INTEGER CONSTRAINT pos CHECK (a > (0)) NOT NULL, \
                   \"b c\" NUMERIC(10, 2) CHECK ((\"b c\" >= 0) AND (\"b c\" < (abs(a) + 1))), \
                   CONSTRAINT [a vs b] CHECK (a <> \"b c\"), CHECK (length('x, y)') > 0))";
        let parsed = parse_create_table(sql).unwrap();
        assert_eq!(
            parsed.checks,
            [
                check(Some("pos"), Some("a"), "a > (0)"),
                check(
                    None,
                    Some("b c"),
                    "(\"b c\" >= 0) AND (\"b c\" < (abs(a) + 1))"
                ),
                check(Some("a vs b"), None, "a <> \"b c\""),
                check(None, None, "length('x, y)') > 0"),
            ]
        );
    }

    #[test]
    fn constraint_name_only_applies_to_the_check_it_precedes() {
        let sql = "CREATE TABLE t (a INT CONSTRAINT nn NOT NULL CHECK (a > 0))";
        let parsed = parse_create_table(sql).unwrap();
        assert_eq!(parsed.checks, [check(None, Some("a"), "a > 0")]);
    }

    #[test]
    fn generated_columns_stored_and_virtual() {
        let sql = "CREATE TABLE t (a INT, b INT GENERATED ALWAYS AS (a * 2) STORED, \
                   c TEXT AS (upper(d)) VIRTUAL, e AS ((a + 1)), d TEXT)";
        let parsed = parse_create_table(sql).unwrap();
        let got: Vec<_> = parsed
            .generated
            .iter()
            .map(|g| (g.column.as_str(), g.expr.as_str(), g.stored))
            .collect();
        assert_eq!(
            got,
            [
                ("b", "a * 2", true),
                ("c", "upper(d)", false),
                ("e", "(a + 1)", false)
            ]
        );
    }

    #[test]
    fn collations_per_column_and_keywords_as_names() {
        let sql = "CREATE TABLE IF NOT EXISTS main.\"user\" (\"order\" TEXT COLLATE NOCASE, \
                   [select] TEXT DEFAULT 'x' COLLATE \"BINARY\", `from` TEXT COLLATE RTRIM \
                   REFERENCES other(x) ON DELETE CASCADE, naïve TEXT) WITHOUT ROWID, STRICT";
        let parsed = parse_create_table(sql).unwrap();
        let pairs: Vec<_> = parsed
            .collations
            .iter()
            .map(|(c, n)| (c.as_str(), n.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [("order", "NOCASE"), ("select", "BINARY"), ("from", "RTRIM")]
        );
    }

    #[test]
    fn refuses_what_is_not_a_plain_table() {
        for sql in [
            "CREATE VIRTUAL TABLE r USING rtree(id, minx, maxx)",
            "CREATE TABLE t AS SELECT 1",
            "CREATE INDEX i ON t(a)",
            "CREATE TABLE t (a, )",
            "CREATE TABLE t (a CHECK ())",
            "CREATE TABLE t (a INT",
            "CREATE TABLE t (a INT) garbage",
            "",
        ] {
            assert!(parse_create_table(sql).is_err(), "{sql}");
        }
    }

    #[test]
    fn writes_check_and_generated_clauses() {
        let named = check(
            Some("Price Positive"),
            Some("UnitPrice"),
            "[UnitPrice]>=(0)",
        );
        assert_eq!(
            translate_check(&named, "app", "Order Details", false).unwrap(),
            "ALTER TABLE app.\"order details\" ADD CONSTRAINT \"price positive\" \
             CHECK (unitprice>=(0))"
        );
        let generated = Generated {
            column: "b".into(),
            expr: "a == 1".into(),
            stored: false,
        };
        assert_eq!(
            translate_generated(&generated, false).unwrap(),
            "GENERATED ALWAYS AS (a = 1) STORED"
        );
    }
}
