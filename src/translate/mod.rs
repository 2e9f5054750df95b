//! Turning SQLite schema SQL into PostgreSQL SQL: target names (ASCII case folded, quoted only
//! when needed), expressions (CHECK, DEFAULT, index expressions, partial-index WHERE, generated
//! columns), CREATE TABLE details the PRAGMAs do not report, CREATE INDEX and CREATE VIEW.
//!
//! Everything here is a pure function over SQL text, built on a SQLite-aware lexer. What has no
//! faithful PostgreSQL form is refused with an `Err` whose text names the construct, so the
//! caller can report it instead of creating something that behaves differently. Types are not
//! known here: an expression that translates may still be rejected by PostgreSQL (e.g. a text
//! column compared with a number), and the caller reports PostgreSQL's error.

mod create_index;
mod create_table;
mod dates;
mod expr;
mod functions;
mod lexer;
mod names;
mod statement;
mod view;

#[cfg(test)]
mod tests;

pub use create_index::{parse_create_index, translate_index, IndexSql, IndexedColumn};
pub use create_table::{
    parse_create_table, translate_check, translate_generated, Check, Generated, TableSql,
};
pub use expr::translate_expr;
pub use names::{is_quoted_keyword, quote_pg, quote_pg_always, target_name};
pub use view::translate_view;
