//! SQLite functions and CAST types in PostgreSQL: which calls carry over by name, which are
//! renamed (`ifnull` → `coalesce`, `instr` → `strpos`), which are rewritten to keep SQLite's
//! result (`round`, scalar `max`/`min`, `group_concat`, `total`, `iif`), and which are refused
//! because PostgreSQL has nothing that behaves the same (`typeof`, `json_*`, `glob`, `random`,
//! ...). Date and time functions live in `dates`.

use super::dates;

/// One translated argument of a call, with what some translations need to look at.
pub(super) struct Arg {
    /// The argument as PostgreSQL SQL.
    pub sql: String,
    /// The value, when the argument is a single string literal.
    pub literal: Option<String>,
    /// The upper-cased word, when the argument is a single bare word (`CURRENT_TIMESTAMP`).
    pub word: Option<String>,
    /// Whether the argument starts with DISTINCT (aggregates).
    pub distinct: bool,
}

/// Functions PostgreSQL has under the same name with the same meaning for SQLite's inputs.
const SAME_NAME: &[&str] = &[
    "abs",
    "acos",
    "asin",
    "atan",
    "atan2",
    "avg",
    "ceil",
    "ceiling",
    "coalesce",
    "cos",
    "count",
    "cume_dist",
    "degrees",
    "dense_rank",
    "exp",
    "first_value",
    "floor",
    "lag",
    "last_value",
    "lead",
    "length",
    "ln",
    "log10",
    "lower",
    "ltrim",
    "mod",
    "nth_value",
    "ntile",
    "nullif",
    "percent_rank",
    "pi",
    "power",
    "radians",
    "rank",
    "replace",
    "row_number",
    "rtrim",
    "sign",
    "sin",
    "sqrt",
    "sum",
    "tan",
    "trim",
    "upper",
];

/// SQLite name → PostgreSQL name, same arguments and meaning.
const RENAMED: &[(&str, &str)] = &[
    ("ifnull", "coalesce"),
    ("instr", "strpos"),
    ("pow", "power"),
    ("substr", "substr"),
    ("substring", "substr"),
    ("unicode", "ascii"),
];

/// Functions with no PostgreSQL counterpart that behaves the same, with why.
const REFUSED: &[(&str, &str)] = &[
    (
        "typeof",
        "PostgreSQL columns have one type, so there is no per-value storage class",
    ),
    ("glob", "PostgreSQL has no GLOB pattern matching"),
    (
        "like",
        "the function form of LIKE takes its arguments in reverse order",
    ),
    (
        "regexp",
        "SQLite's regexp() is an application-defined function",
    ),
    (
        "random",
        "it returns a 64-bit integer in SQLite but a float in PostgreSQL",
    ),
    ("randomblob", "PostgreSQL core has no random bytes function"),
    (
        "hex",
        "its result depends on the storage class of the value",
    ),
    (
        "quote",
        "its result depends on the storage class of the value",
    ),
    (
        "printf",
        "SQLite's format strings differ from PostgreSQL's format()",
    ),
    (
        "format",
        "SQLite's format strings differ from PostgreSQL's format()",
    ),
    (
        "zeroblob",
        "PostgreSQL core has no zero-filled bytea constructor",
    ),
    ("last_insert_rowid", "it reports SQLite connection state"),
    ("changes", "it reports SQLite connection state"),
    ("total_changes", "it reports SQLite connection state"),
];

/// The PostgreSQL SQL for calling the SQLite function `name` (lower case) with `args`.
pub(super) fn translate_call(name: &str, args: &[Arg]) -> Result<String, String> {
    if SAME_NAME.contains(&name) {
        return Ok(call(name, args));
    }
    if let Some((_, pg)) = RENAMED.iter().find(|(sqlite, _)| *sqlite == name) {
        check_substr(name, args)?;
        return Ok(call(pg, args));
    }
    if let Some((_, why)) = REFUSED.iter().find(|(sqlite, _)| *sqlite == name) {
        return Err(format!("{name}() has no PostgreSQL translation: {why}"));
    }
    if name.starts_with("json") {
        return Err(format!(
            "the JSON function {name}() has no PostgreSQL translation on text columns"
        ));
    }
    rewritten(name, args)
}

/// Calls whose PostgreSQL form is a different expression.
fn rewritten(name: &str, args: &[Arg]) -> Result<String, String> {
    match (name, args) {
        ("round", [x]) => Ok(format!("round(CAST({} AS numeric))", x.sql)),
        ("round", [x, digits]) => Ok(format!(
            "round(CAST({} AS numeric), CAST({} AS integer))",
            x.sql, digits.sql
        )),
        ("max" | "min", [_]) => Ok(call(name, args)),
        ("max", [_, _, ..]) => Ok(null_if_any_null("greatest", args)),
        ("min", [_, _, ..]) => Ok(null_if_any_null("least", args)),
        ("total", [x]) => Ok(format!("coalesce(sum({}), 0.0)", x.sql)),
        ("group_concat" | "string_agg", [x]) => Ok(group_concat(x, "','")),
        ("group_concat" | "string_agg", [x, sep]) => Ok(group_concat(x, &sep.sql)),
        ("iif", [cond, then, other]) => Ok(format!(
            "CASE WHEN {} THEN {} ELSE {} END",
            cond.sql, then.sql, other.sql
        )),
        ("likely" | "unlikely", [x]) | ("likelihood", [x, _]) => Ok(x.sql.clone()),
        ("char", _) => Ok(chars(args)),
        ("log", [x]) => Ok(format!("log({})", x.sql)),
        ("log", [base, x]) => Ok(format!(
            "log(CAST({} AS numeric), CAST({} AS numeric))",
            base.sql, x.sql
        )),
        ("log2", [x]) => Ok(format!("log(2, CAST({} AS numeric))", x.sql)),
        _ if dates::FUNCTIONS.contains(&name) => dates::translate(name, args),
        _ if is_known(name) => Err(format!(
            "{name}() is called with {} arguments, which has no PostgreSQL translation",
            args.len()
        )),
        _ => Err(format!(
            "the SQLite function {name}() has no PostgreSQL translation"
        )),
    }
}

fn is_known(name: &str) -> bool {
    const REWRITTEN: &[&str] = &[
        "round",
        "max",
        "min",
        "total",
        "group_concat",
        "string_agg",
        "iif",
        "likely",
        "unlikely",
        "likelihood",
        "log",
        "log2",
    ];
    REWRITTEN.contains(&name)
}

/// SQLite's substr() counts a negative start from the end of the string; PostgreSQL's does not.
fn check_substr(name: &str, args: &[Arg]) -> Result<(), String> {
    let negative = args
        .get(1)
        .is_some_and(|a| a.sql.trim_start().starts_with('-'));
    if name.starts_with("substr") && negative {
        return Err(format!(
            "{name}() with a negative start counts from the end only in SQLite"
        ));
    }
    Ok(())
}

fn call(name: &str, args: &[Arg]) -> String {
    let list: Vec<&str> = args.iter().map(|a| a.sql.as_str()).collect();
    format!("{name}({})", list.join(", "))
}

/// SQLite's multi-argument max()/min() return NULL when any argument is NULL;
/// greatest()/least() skip NULLs, so the NULL case is spelled out.
fn null_if_any_null(pg: &str, args: &[Arg]) -> String {
    let list: Vec<&str> = args.iter().map(|a| a.sql.as_str()).collect();
    let list = list.join(", ");
    format!("CASE WHEN num_nulls({list}) > 0 THEN NULL ELSE {pg}({list}) END")
}

fn group_concat(x: &Arg, separator: &str) -> String {
    match x.sql.strip_prefix("DISTINCT") {
        Some(value) if x.distinct => format!(
            "string_agg(DISTINCT CAST({} AS text), {separator})",
            value.trim()
        ),
        _ => format!("string_agg(CAST({} AS text), {separator})", x.sql),
    }
}

/// `char(a, b)` → `chr(a) || chr(b)`; `char()` is the empty string.
fn chars(args: &[Arg]) -> String {
    if args.is_empty() {
        return "''".to_string();
    }
    let parts: Vec<String> = args.iter().map(|a| format!("chr({})", a.sql)).collect();
    format!("({})", parts.join(" || "))
}

/// `CAST(expr AS declared)` with the declared type read by SQLite's affinity rules. INTEGER
/// truncates toward zero in SQLite but rounds in PostgreSQL, so it goes through trunc().
pub(super) fn cast_sql(expr: &str, declared: &str) -> String {
    let upper = declared.to_ascii_uppercase();
    let pg = if upper.contains("INT") {
        return format!("CAST(trunc(CAST({expr} AS numeric)) AS bigint)");
    } else if ["CHAR", "CLOB", "TEXT"].iter().any(|t| upper.contains(t)) {
        "text"
    } else if upper.contains("BLOB") || upper.trim().is_empty() {
        "bytea"
    } else if ["REAL", "FLOA", "DOUB"].iter().any(|t| upper.contains(t)) {
        "double precision"
    } else {
        "numeric"
    };
    format!("CAST({expr} AS {pg})")
}
