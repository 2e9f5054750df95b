//! CREATE VIEW: reads SQLite's statement and writes PostgreSQL's in the target schema, with the
//! SELECT rewritten by the expression rewriter. Table references after FROM and JOIN are
//! qualified with the schema (CTE names are not), so the view does not depend on search_path.

use super::expr::{rewrite, Scope};
use super::lexer::{tokenize, Kind, Token};
use super::names::{quote_pg, target_name};
use super::statement::{split_commas, Cursor};

/// CREATE VIEW name AS select → `CREATE VIEW schema.name AS <translated select>`; Err when the
/// select uses constructs with no translation. (The caller will still try it on PostgreSQL and
/// report PostgreSQL's error: types are not known here, so e.g. `text = 0` passes.)
pub fn translate_view(sql: &str, schema: &str, keep_case: bool) -> Result<String, String> {
    let toks = tokenize(sql)?;
    let mut cursor = Cursor::new(&toks);
    cursor.expect_word("CREATE")?;
    let _temporary = cursor.eat_word("TEMP") || cursor.eat_word("TEMPORARY");
    cursor.expect_word("VIEW")?;
    cursor.skip_if_not_exists()?;
    let name = cursor.object_name()?;
    let columns = match cursor.peek().map(|t| &t.kind) {
        Some(Kind::LParen) => column_list(cursor.paren_group()?, keep_case)?,
        _ => String::new(),
    };
    cursor.expect_word("AS")?;
    let select = without_final_semicolons(cursor.rest());
    if select.is_empty() {
        return Err(format!("the view {name} has no SELECT"));
    }
    let scope = Scope {
        keep_case,
        schema: Some(schema.to_string()),
        ctes: cte_names(select, keep_case),
    };
    Ok(format!(
        "CREATE VIEW {}.{}{columns} AS {}",
        quote_pg(schema),
        quote_pg(&target_name(&name, keep_case)),
        rewrite(select, &scope)?
    ))
}

/// ` (a, b)` for `CREATE VIEW v(a, b)`.
fn column_list(toks: &[Token], keep_case: bool) -> Result<String, String> {
    let names = split_commas(toks)
        .into_iter()
        .map(|part| match part {
            [only] => only
                .name()
                .map(|n| quote_pg(&target_name(n, keep_case)))
                .ok_or_else(|| format!("`{}` is not a view column name", only.text)),
            _ => Err("a view column list entry is not a single name".to_string()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(format!(" ({})", names.join(", ")))
}

fn without_final_semicolons(toks: &[Token]) -> &[Token] {
    let mut end = toks.len();
    while end > 0 && toks[end - 1].kind == Kind::Semi {
        end -= 1;
    }
    &toks[..end]
}

/// Names defined as `name [(columns)] AS (` — CTEs, and harmlessly also named windows.
fn cte_names(toks: &[Token], keep_case: bool) -> Vec<String> {
    let mut names = Vec::new();
    for (i, tok) in toks.iter().enumerate() {
        let Some(name) = tok.name().filter(|_| !matches!(tok.kind, Kind::Str(_))) else {
            continue;
        };
        let mut next = i + 1;
        if toks.get(next).map(|t| &t.kind) == Some(&Kind::LParen) {
            let Ok(close) = super::statement::matching_paren(toks, next) else {
                continue;
            };
            next = close + 1;
        }
        let as_paren = toks.get(next).is_some_and(|t| t.is_word("AS"))
            && toks.get(next + 1).map(|t| &t.kind) == Some(&Kind::LParen);
        if as_paren {
            names.push(target_name(name, keep_case));
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualifies_tables_and_folds_names() {
        let sql = "CREATE VIEW [Current Product List] AS SELECT ProductID, ProductName \
                   FROM Products WHERE Discontinued=0";
        assert_eq!(
            translate_view(sql, "public", false).unwrap(),
            "CREATE VIEW public.\"current product list\" AS SELECT productid, productname \
             FROM public.products WHERE discontinued=0"
        );
    }

    #[test]
    fn joins_subqueries_aliases_and_comma_lists() {
        let sql = "CREATE VIEW v(a, \"B\") AS SELECT x.a AS 'first', y.b FROM main.t1 x, \
                   [t 2] AS y JOIN (SELECT id FROM t3) z ON z.id = x.a WHERE x.a IN \
                   (SELECT a FROM t4) ORDER BY 1;";
        assert_eq!(
            translate_view(sql, "app", false).unwrap(),
            "CREATE VIEW app.v (a, b) AS SELECT x.a AS first, y.b FROM app.t1 x, \
             app.\"t 2\" AS y JOIN (SELECT id FROM app.t3) z ON z.id = x.a WHERE x.a IN \
             (SELECT a FROM app.t4) ORDER BY 1"
        );
    }

    #[test]
    fn ctes_are_not_qualified() {
        let sql = "CREATE VIEW v AS WITH recent(id) AS (SELECT id FROM orders), big AS \
                   (SELECT 1 AS id) SELECT * FROM recent JOIN big USING (id)";
        assert_eq!(
            translate_view(sql, "s", false).unwrap(),
            "CREATE VIEW s.v AS WITH recent(id) AS (SELECT id FROM s.orders), big AS \
             (SELECT 1 AS id) SELECT * FROM recent JOIN big USING (id)"
        );
    }

    #[test]
    fn refusals_are_errors() {
        assert!(translate_view("CREATE VIEW v AS SELECT typeof(a) FROM t", "s", false).is_err());
        assert!(translate_view("CREATE VIEW v AS", "s", false).is_err());
        assert!(translate_view("CREATE TABLE v (a)", "s", false).is_err());
        assert!(translate_view("CREATE VIEW v AS SELECT 1; SELECT 2", "s", false).is_err());
    }
}
