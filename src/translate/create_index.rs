//! CREATE INDEX: reads SQLite's statement (unique, columns or expressions with COLLATE and DESC,
//! partial-index WHERE) and writes PostgreSQL's. SQLite's collations become expressions PostgreSQL
//! indexes can hold: NOCASE → lower(col), RTRIM → rtrim(col), BINARY → COLLATE "C".

use super::expr::translate_expr;
use super::lexer::{tokenize, Kind, Token};
use super::names::{quote_pg, target_name};
use super::statement::{describe, source_text, split_commas, Cursor};

/// A CREATE [UNIQUE] INDEX statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSql {
    pub name: String,
    pub unique: bool,
    pub table: String,
    pub columns: Vec<IndexedColumn>,
    /// The partial-index condition, SQLite text.
    pub where_clause: Option<String>,
}

/// One entry of an index's column list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedColumn {
    /// A bare column name (unquoted, as SQLite spells it) or an expression (SQLite text).
    pub expr: String,
    pub is_column: bool,
    pub collate: Option<String>,
    pub desc: bool,
}

/// Parses `CREATE [UNIQUE] INDEX [IF NOT EXISTS] [schema.]name ON table (columns) [WHERE expr]`.
pub fn parse_create_index(sql: &str) -> Result<IndexSql, String> {
    let toks = tokenize(sql)?;
    let mut cursor = Cursor::new(&toks);
    cursor.expect_word("CREATE")?;
    let unique = cursor.eat_word("UNIQUE");
    cursor.expect_word("INDEX")?;
    cursor.skip_if_not_exists()?;
    let name = cursor.object_name()?;
    cursor.expect_word("ON")?;
    let table = cursor.object_name()?;
    let columns = split_commas(cursor.paren_group()?)
        .into_iter()
        .map(|toks| indexed_column(sql, toks))
        .collect::<Result<Vec<_>, _>>()?;
    if columns.is_empty() {
        return Err(format!("the index {name} has no columns"));
    }
    let where_clause = match cursor.peek() {
        None => None,
        Some(t) if t.is_word("WHERE") && cursor.rest().len() > 1 => {
            Some(source_text(sql, &cursor.rest()[1..]).to_string())
        }
        other => {
            return Err(format!(
                "unexpected {} after the index columns",
                describe(other)
            ))
        }
    };
    Ok(IndexSql {
        name,
        unique,
        table,
        columns,
        where_clause,
    })
}

/// `expr [COLLATE name] [ASC|DESC]`.
fn indexed_column(sql: &str, toks: &[Token]) -> Result<IndexedColumn, String> {
    let mut body = toks;
    let desc = body.last().is_some_and(|t| t.is_word("DESC"));
    if desc || body.last().is_some_and(|t| t.is_word("ASC")) {
        body = &body[..body.len() - 1];
    }
    let mut collate = None;
    if let [rest @ .., keyword, name] = body {
        if keyword.is_word("COLLATE") {
            collate = name.name().map(str::to_string);
            body = rest;
        }
    }
    let (expr, is_column) = match body {
        [] => return Err("an index column is empty".to_string()),
        [only] if matches!(only.kind, Kind::Word | Kind::Quoted(_)) => {
            (only.name().unwrap_or_default().to_string(), true)
        }
        _ => (source_text(sql, body).to_string(), false),
    };
    Ok(IndexedColumn {
        expr,
        is_column,
        collate,
        desc,
    })
}

/// The PostgreSQL CREATE INDEX for it: `CREATE [UNIQUE] INDEX name ON schema.table (cols...)
/// [WHERE ...]`.
///
/// COLLATE NOCASE on a column becomes the expression lower(col): a unique NOCASE index becomes
/// unique on lower(col), which is what NOCASE uniqueness means for ASCII (queries must compare
/// lower(col) to use it). COLLATE RTRIM becomes rtrim(col); COLLATE BINARY becomes
/// COLLATE "C", which orders like BINARY. DESC is kept. Other collations are an Err.
pub fn translate_index(index: &IndexSql, schema: &str, keep_case: bool) -> Result<String, String> {
    let columns = index
        .columns
        .iter()
        .map(|c| index_column_sql(c, keep_case))
        .collect::<Result<Vec<_>, _>>()?;
    let mut sql = format!(
        "CREATE {}INDEX {} ON {}.{} ({})",
        if index.unique { "UNIQUE " } else { "" },
        quote_pg(&target_name(&index.name, keep_case)),
        quote_pg(schema),
        quote_pg(&target_name(&index.table, keep_case)),
        columns.join(", ")
    );
    if let Some(condition) = &index.where_clause {
        sql.push_str(" WHERE ");
        sql.push_str(&translate_expr(condition, keep_case)?);
    }
    Ok(sql)
}

fn index_column_sql(column: &IndexedColumn, keep_case: bool) -> Result<String, String> {
    let base = if column.is_column {
        quote_pg(&target_name(&column.expr, keep_case))
    } else {
        format!("({})", translate_expr(&column.expr, keep_case)?)
    };
    let collation = column.collate.as_deref().map(str::to_ascii_uppercase);
    let mut sql = match collation.as_deref() {
        None => base,
        Some("NOCASE") => format!("lower({base})"),
        Some("RTRIM") => format!("rtrim({base})"),
        Some("BINARY") => format!("{base} COLLATE \"C\""),
        Some(_) => {
            return Err(format!(
                "the collation {} on index column {} has no PostgreSQL translation",
                column.collate.as_deref().unwrap_or_default(),
                column.expr
            ))
        }
    };
    if column.desc {
        sql.push_str(" DESC");
    }
    Ok(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(sql: &str) -> Result<String, String> {
        translate_index(&parse_create_index(sql)?, "app", false)
    }

    #[test]
    fn plain_index_from_chinook() {
        assert_eq!(
            translate("CREATE INDEX [IFK_AlbumArtistId] ON [Album] ([ArtistId])").unwrap(),
            "CREATE INDEX ifk_albumartistid ON app.album (artistid)"
        );
    }

    #[test]
    fn unique_nocase_desc_and_partial() {
        let sql = "CREATE UNIQUE INDEX IF NOT EXISTS main.\"Users By Mail\" ON \"user\" \
                   (email COLLATE NOCASE, `order` DESC, [Name] COLLATE BINARY ASC) \
                   WHERE deleted_at IS NULL AND kind == 'a''b'";
        let parsed = parse_create_index(sql).unwrap();
        assert!(parsed.unique);
        assert_eq!(parsed.table, "user");
        assert_eq!(parsed.columns[0].collate.as_deref(), Some("NOCASE"));
        assert!(parsed.columns[1].desc && parsed.columns[1].is_column);
        assert_eq!(
            translate_index(&parsed, "app", false).unwrap(),
            "CREATE UNIQUE INDEX \"users by mail\" ON app.\"user\" (lower(email), \
             \"order\" DESC, name COLLATE \"C\") WHERE deleted_at IS NULL AND kind = 'a''b'"
        );
    }

    #[test]
    fn expression_index() {
        let sql =
            "CREATE INDEX i ON t (lower(name), (a + b) DESC, substr(code, 1, 3) COLLATE NOCASE)";
        let parsed = parse_create_index(sql).unwrap();
        assert_eq!(parsed.columns[0].expr, "lower(name)");
        assert!(!parsed.columns[0].is_column);
        assert_eq!(
            translate_index(&parsed, "s", false).unwrap(),
            "CREATE INDEX i ON s.t ((lower(name)), ((a + b)) DESC, lower((substr(code, 1, 3))))"
        );
    }

    #[test]
    fn keep_case_keeps_names() {
        let parsed = parse_create_index("CREATE INDEX Ix ON Tab (Col)").unwrap();
        assert_eq!(
            translate_index(&parsed, "App", true).unwrap(),
            "CREATE INDEX \"Ix\" ON \"App\".\"Tab\" (\"Col\")"
        );
    }

    #[test]
    fn refusals_are_errors() {
        assert!(translate("CREATE INDEX i ON t (a COLLATE de_DE)").is_err());
        assert!(translate("CREATE INDEX i ON t (a) WHERE b GLOB 'x*'").is_err());
        for bad in [
            "CREATE INDEX i ON t ()",
            "CREATE INDEX i ON t (a) WHERE",
            "CREATE INDEX i t (a)",
        ] {
            assert!(parse_create_index(bad).is_err(), "{bad}");
        }
    }
}
