//! Target names: how a SQLite identifier becomes a PostgreSQL one, and when it needs quotes.
//!
//! SQLite compares identifiers case-insensitively for ASCII letters, so by default the target
//! name folds ASCII letters to lower case (`[Order Details]` → `order details`); with
//! `keep_case` the exact spelling is kept. A name is written bare only when PostgreSQL would read
//! it back unchanged: all-lowercase `[a-z_][a-z0-9_$]*` and not a keyword PostgreSQL's own
//! `quote_ident` quotes (the reserved, type/function-name and column-name keyword categories).

/// Every PostgreSQL keyword that is not "unreserved" (categories R, T and C of
/// `pg_get_keywords()`), across PostgreSQL 13–17, in lower case and sorted for binary search.
/// Quoting one that a given server treats as unreserved is harmless; missing one is not.
const QUOTED_KEYWORDS: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "between",
    "bigint",
    "binary",
    "bit",
    "boolean",
    "both",
    "case",
    "cast",
    "char",
    "character",
    "check",
    "coalesce",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "dec",
    "decimal",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "exists",
    "extract",
    "false",
    "fetch",
    "float",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "greatest",
    "group",
    "grouping",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "inout",
    "int",
    "integer",
    "intersect",
    "interval",
    "into",
    "is",
    "isnull",
    "join",
    "json",
    "json_array",
    "json_arrayagg",
    "json_exists",
    "json_object",
    "json_objectagg",
    "json_query",
    "json_scalar",
    "json_serialize",
    "json_table",
    "json_value",
    "lateral",
    "leading",
    "least",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "merge_action",
    "national",
    "natural",
    "nchar",
    "none",
    "normalize",
    "not",
    "notnull",
    "null",
    "nullif",
    "numeric",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "out",
    "outer",
    "overlaps",
    "overlay",
    "placing",
    "position",
    "precision",
    "primary",
    "real",
    "references",
    "returning",
    "right",
    "row",
    "select",
    "session_user",
    "setof",
    "similar",
    "smallint",
    "some",
    "substring",
    "symmetric",
    "system_user",
    "table",
    "tablesample",
    "then",
    "time",
    "timestamp",
    "to",
    "trailing",
    "treat",
    "trim",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "values",
    "varchar",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
    "xmlattributes",
    "xmlconcat",
    "xmlelement",
    "xmlexists",
    "xmlforest",
    "xmlnamespaces",
    "xmlparse",
    "xmlpi",
    "xmlroot",
    "xmlserialize",
    "xmltable",
];

/// Folds a SQLite identifier to its PostgreSQL name: ASCII letters lower-cased unless keep_case.
/// Non-ASCII letters are kept as they are, as SQLite compares them case-sensitively.
pub fn target_name(sqlite_name: &str, keep_case: bool) -> String {
    if keep_case {
        sqlite_name.to_string()
    } else {
        sqlite_name.to_ascii_lowercase()
    }
}

/// Quotes a PostgreSQL identifier when needed (embedded " doubled).
pub fn quote_pg(name: &str) -> String {
    if is_plain(name) && !is_quoted_keyword(name) {
        name.to_string()
    } else {
        quote_pg_always(name)
    }
}

/// Always quotes.
pub fn quote_pg_always(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Whether PostgreSQL's `quote_ident` would quote `name` because it is a keyword.
pub fn is_quoted_keyword(name: &str) -> bool {
    QUOTED_KEYWORDS.binary_search(&name).is_ok()
}

/// `[a-z_][a-z0-9_$]*`: what PostgreSQL reads back unchanged without quotes.
fn is_plain(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = matches!(chars.next(), Some('a'..='z' | '_'));
    first_ok && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '$'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_list_is_sorted_and_lowercase_for_binary_search() {
        assert!(QUOTED_KEYWORDS.windows(2).all(|w| w[0] < w[1]));
        assert!(QUOTED_KEYWORDS.iter().all(|k| is_plain(k)));
    }

    #[test]
    fn folds_ascii_only_and_keeps_case_on_request() {
        assert_eq!(target_name("Order Details", false), "order details");
        assert_eq!(target_name("ÄbC", false), "Äbc");
        assert_eq!(target_name("CustomerID", true), "CustomerID");
    }

    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(quote_pg("customerid"), "customerid");
        assert_eq!(quote_pg("_x$1"), "_x$1");
        assert_eq!(quote_pg("order details"), "\"order details\"");
        assert_eq!(quote_pg("CustomerID"), "\"CustomerID\"");
        assert_eq!(quote_pg("1abc"), "\"1abc\"");
        assert_eq!(quote_pg("naïve"), "\"naïve\"");
        assert_eq!(quote_pg(""), "\"\"");
        assert_eq!(quote_pg("a \"b\" c"), "\"a \"\"b\"\" c\"");
    }

    #[test]
    fn quotes_reserved_keywords() {
        for word in [
            "user", "order", "select", "table", "between", "analyse", "window",
        ] {
            assert_eq!(quote_pg(word), format!("\"{word}\""), "{word}");
        }
        for word in ["key", "action", "name", "data", "first", "last"] {
            assert_eq!(quote_pg(word), word, "{word}");
        }
        assert_eq!(quote_pg_always("x"), "\"x\"");
    }
}
