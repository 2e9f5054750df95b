//! Tests across the translator: expressions in every SQLite spelling, refusals, and every CREATE
//! statement of the shared real databases (Northwind's CHECKs and 17 views in particular).

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::*;

/// Where the shared real databases live, relative to the crate.
const REAL_DBS: &str = "../shared/realdbs";
const NORTHWIND: &str = "northwind__northwind.db";
const ALL_REAL_DBS: &[&str] = &[
    "chinook__Chinook_Sqlite.sqlite",
    "chinook__Chinook_Sqlite_AutoIncrementPKs.sqlite",
    "geopackage__gdal_sample.gpkg",
    NORTHWIND,
    "pgloader__storage.sqlite",
];
const SCHEMA_SQL: &str =
    "SELECT type, name, sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY rowid";

fn tr(sql: &str) -> String {
    translate_expr(sql, false).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn refused(sql: &str) -> String {
    match translate_expr(sql, false) {
        Ok(out) => panic!("{sql} should be refused, got {out}"),
        Err(reason) => reason,
    }
}

#[test]
fn all_four_identifier_quotings_fold_to_one_name() {
    assert_eq!(
        tr("\"UnitPrice\" + [UnitPrice] + `UnitPrice` + UnitPrice"),
        "unitprice + unitprice + unitprice + unitprice"
    );
    assert_eq!(
        translate_expr("[UnitPrice] > 0", true).unwrap(),
        "\"UnitPrice\" > 0"
    );
}

#[test]
fn keywords_as_identifiers_are_quoted() {
    assert_eq!(
        tr("\"order\" > 0 AND [select] <> user AND `from` = \"Table\""),
        "\"order\" > 0 AND \"select\" <> \"user\" AND \"from\" = \"table\""
    );
    assert_eq!(tr("key = 1 and first = last"), "key = 1 AND first = last");
}

#[test]
fn quotes_inside_names_and_unicode_names() {
    assert_eq!(
        tr("\"a \"\"b\"\" c\" = [x\"y]"),
        "\"a \"\"b\"\" c\" = \"x\"\"y\""
    );
    assert_eq!(tr("naïve > Größe"), "\"naïve\" > \"größe\"");
    assert_eq!(tr("\"ÄÖ\" IS NULL"), "\"ÄÖ\" IS NULL");
}

#[test]
fn string_literals_are_kept_verbatim() {
    assert_eq!(
        tr("name <> 'it''s [Name] -- \"x\" /* y */'"),
        "name <> 'it''s [Name] -- \"x\" /* y */'"
    );
    assert_eq!(tr("a = 'x' -- trailing comment"), "a = 'x'");
    assert_eq!(tr("a /* c */ = 1"), "a   = 1");
}

#[test]
fn literals_and_operators() {
    assert_eq!(tr("data = X'0aFF'"), "data = '\\x0aff'::bytea");
    assert_eq!(
        tr("a == 1 AND b != 2 AND c || 'x' <> '' AND d >= 0x10"),
        "a = 1 AND b != 2 AND c || 'x' <> '' AND d >= 16"
    );
    assert_eq!(
        tr("a IS b AND c IS NOT d AND e IS NOT NULL AND f IS NULL"),
        "a IS NOT DISTINCT FROM b AND c IS DISTINCT FROM d AND e IS NOT NULL AND f IS NULL"
    );
    assert_eq!(tr("a IS NOT DISTINCT FROM b"), "a IS NOT DISTINCT FROM b");
    assert_eq!(
        tr("name LIKE 'a%' AND code NOT LIKE '%x'"),
        "name ILIKE 'a%' AND code NOT ILIKE '%x'"
    );
    assert_eq!(
        tr("CASE WHEN a THEN 1 ELSE 2 END"),
        "CASE WHEN a THEN 1 ELSE 2 END"
    );
    assert_eq!(tr("a COLLATE BINARY = 'x'"), "a COLLATE \"C\" = 'x'");
}

#[test]
fn functions_translate() {
    assert_eq!(tr("length(trim(Name)) > 0"), "length(trim(name)) > 0");
    assert_eq!(tr("ifnull(a, 'x')"), "coalesce(a, 'x')");
    assert_eq!(tr("instr(Email, '@') > 1"), "strpos(email, '@') > 1");
    assert_eq!(
        tr("substr(code, 1, 3) = upper(lower(code))"),
        "substr(code, 1, 3) = upper(lower(code))"
    );
    assert_eq!(
        tr("round(price, 2)"),
        "round(CAST(price AS numeric), CAST(2 AS integer))"
    );
    assert_eq!(
        tr("max(a, b)"),
        "CASE WHEN num_nulls(a, b) > 0 THEN NULL ELSE greatest(a, b) END"
    );
    assert_eq!(tr("max(a)"), "max(a)");
    assert_eq!(tr("count(*)"), "count(*)");
    assert_eq!(
        tr("group_concat(DISTINCT name)"),
        "string_agg(DISTINCT CAST(name AS text), ',')"
    );
    assert_eq!(
        tr("CAST(a AS INTEGER) + CAST(b AS VARCHAR(10))"),
        "CAST(trunc(CAST(a AS numeric)) AS bigint) + CAST(b AS text)"
    );
    assert_eq!(
        tr("iif(a > 0, 'pos', 'neg')"),
        "CASE WHEN a > 0 THEN 'pos' ELSE 'neg' END"
    );
}

#[test]
fn dates_translate() {
    assert_eq!(tr("datetime('now')"), "CURRENT_TIMESTAMP");
    assert_eq!(tr("CURRENT_TIMESTAMP"), "CURRENT_TIMESTAMP");
    assert_eq!(tr("date('now')"), "CURRENT_DATE");
    assert_eq!(tr("DATETIME('1997-01-01')"), "'1997-01-01 00:00:00'");
    assert_eq!(tr("date('1997-01-01 10:00')"), "'1997-01-01'");
    assert_eq!(tr("strftime('%Y-%m-%dT%H:%M:%fZ',CURRENT_TIMESTAMP)"),
        "to_char(CURRENT_TIMESTAMP AT TIME ZONE 'UTC', 'YYYY\"-\"MM\"-\"DD\"T\"HH24\":\"MI\":\"SS.MS\"Z\"')");
    assert_eq!(
        tr("strftime('%s','now')"),
        "CAST(floor(extract(epoch FROM CURRENT_TIMESTAMP)) AS bigint)"
    );
    assert!(refused("datetime('now', 'localtime')").contains("modifiers"));
    assert!(refused("date(created_at)").contains("not a constant"));
}

#[test]
fn refusals_name_the_construct() {
    assert!(refused("typeof(a) = 'integer'").contains("typeof()"));
    assert!(refused("name GLOB 'a*'").contains("GLOB"));
    assert!(refused("name REGEXP '^a'").contains("REGEXP"));
    assert!(refused("json_valid(doc)").contains("json_valid()"));
    assert!(refused("doc ->> '$.a' = 1").contains("->>"));
    assert!(refused("my_udf(a)").contains("my_udf()"));
    assert!(refused("a = ?").contains("parameter"));
    assert!(refused("a = :name").contains("parameter"));
    assert!(refused("name COLLATE NOCASE = 'x'").contains("NOCASE"));
    assert!(refused("rowid > 0").contains("rowid"));
    assert!(refused("substr(a, -2)").contains("negative"));
    assert!(refused("random() > 0").contains("random()"));
    assert!(refused("a = 1; DROP TABLE t").contains(";"));
}

#[test]
fn odd_input_never_panics() {
    for sql in [
        "",
        "(",
        ")",
        "((a)",
        "'",
        "[",
        "f(",
        "CAST(",
        "CAST(a)",
        "CAST(a AS",
        "a IS",
        "COLLATE",
        "X'1'",
        "a ->",
        "0xFFFFFFFFFFFFFFFFFF",
        "max()",
        "strftime()",
        "date(1, 2, 3)",
        "f(,)",
        "\u{0}",
    ] {
        let _ = translate_expr(sql, false);
        let _ = parse_create_table(sql);
        let _ = parse_create_index(sql);
        let _ = translate_view(sql, "s", false);
    }
    assert_eq!(tr("0xFFFFFFFFFFFFFFFF"), "-1");
}

/// A read-only connection to a temporary copy of a shared real database.
fn open_real(name: &str) -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().expect("temp dir");
    let from: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(REAL_DBS)
        .join(name);
    let to = dir.path().join(name);
    std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    let conn = Connection::open_with_flags(&to, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open");
    (dir, conn)
}

/// (type, name, sql) of every schema object with SQL, in creation order.
fn schema_rows(conn: &Connection) -> Vec<(String, String, String)> {
    let mut stmt = conn.prepare(SCHEMA_SQL).expect("prepare");
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("query");
    rows.collect::<Result<_, _>>().expect("rows")
}

#[test]
fn every_northwind_check_parses_and_translates() {
    let (_dir, conn) = open_real(NORTHWIND);
    let mut translated = Vec::new();
    for (kind, name, sql) in schema_rows(&conn) {
        if kind != "table" {
            continue;
        }
        for check in parse_create_table(&sql)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .checks
        {
            assert_eq!((&check.name, &check.column), (&None, &None), "{name}");
            translated.push(translate_check(&check, "public", &name, false).unwrap());
        }
    }
    assert_eq!(
        translated,
        [
            "ALTER TABLE public.\"order details\" ADD CHECK (discount>=(0) AND discount<=(1))",
            "ALTER TABLE public.\"order details\" ADD CHECK (quantity>(0))",
            "ALTER TABLE public.\"order details\" ADD CHECK (unitprice>=(0))",
            "ALTER TABLE public.products ADD CHECK (unitprice>=(0))",
            "ALTER TABLE public.products ADD CHECK (reorderlevel>=(0))",
            "ALTER TABLE public.products ADD CHECK (unitsinstock>=(0))",
            "ALTER TABLE public.products ADD CHECK (unitsonorder>=(0))",
        ]
    );
}

#[test]
fn every_northwind_view_translates() {
    let (_dir, conn) = open_real(NORTHWIND);
    let views: Vec<_> = schema_rows(&conn)
        .into_iter()
        .filter(|(kind, _, _)| kind == "view")
        .collect();
    assert_eq!(views.len(), 17);
    for (name, sql) in views.iter().map(|(_, name, sql)| (name, sql)) {
        let pg = translate_view(sql, "nw", false).unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected_head = format!("CREATE VIEW nw.{} AS", quote_pg(&name.to_lowercase()));
        assert!(pg.starts_with(&expected_head), "{pg}");
        assert!(!pg.contains('['), "{name}: brackets left in {pg}");
    }
    let quarterly = &views
        .iter()
        .find(|v| v.1 == "Quarterly Orders")
        .expect("view")
        .2;
    let pg = translate_view(quarterly, "nw", false).unwrap();
    assert!(
        pg.contains(
            "FROM nw.customers \n     JOIN nw.orders ON customers.customerid = orders.customerid"
        ),
        "{pg}"
    );
    assert!(
        pg.contains("BETWEEN '1997-01-01 00:00:00' AND '1997-12-31 00:00:00'"),
        "{pg}"
    );
}

#[test]
fn every_real_table_and_index_parses() {
    for db in ALL_REAL_DBS {
        let (_dir, conn) = open_real(db);
        for (kind, name, sql) in schema_rows(&conn) {
            match kind.as_str() {
                "table" if sql.starts_with("CREATE VIRTUAL") => {
                    let err = parse_create_table(&sql).unwrap_err();
                    assert!(err.contains("virtual table"), "{db} {name}: {err}");
                }
                "table" => {
                    parse_create_table(&sql).unwrap_or_else(|e| panic!("{db} {name}: {e}"));
                }
                "index" => {
                    let index =
                        parse_create_index(&sql).unwrap_or_else(|e| panic!("{db} {name}: {e}"));
                    translate_index(&index, "s", false)
                        .unwrap_or_else(|e| panic!("{db} {name}: {e}"));
                }
                _ => {}
            }
        }
    }
}

proptest::proptest! {
    /// Whatever the text, every entry point returns (Ok or Err) instead of panicking.
    #[test]
    fn never_panics_on_sqlish_text(sql in "[a-zA-Z0-9_ '\"`\\[\\]()*,.;:?@$=<>!|+/%&~xX\n-]{0,60}") {
        let _ = translate_expr(&sql, false);
        let _ = parse_create_table(&format!("CREATE TABLE t ({sql})"));
        let _ = parse_create_index(&format!("CREATE INDEX i ON t ({sql}"));
        let _ = translate_view(&format!("CREATE VIEW v AS SELECT {sql}"), "s", true);
    }

    #[test]
    fn never_panics_on_any_text(sql in proptest::prelude::any::<String>()) {
        let _ = translate_expr(&sql, false);
        let _ = parse_create_table(&sql);
        let _ = translate_view(&sql, "s", false);
    }
}
