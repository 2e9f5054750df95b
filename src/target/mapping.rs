//! Which target table and columns a source table maps onto, and the PostgreSQL type of each
//! column — read from the target itself, so diff and sync convert the SQLite side to exactly the
//! types the target holds (the plan the snapshot used), and a column PostgreSQL lacks is a schema
//! problem, not a silent skip.

use tokio_postgres::Client;

use crate::convert::PgType;
use crate::error::{Error, Result};
use crate::snapshot::plan::ROWID_COLUMN;
use crate::source::introspect::Table;
use crate::target::ddl::qualified;
use crate::translate::target_name;

const TARGET_COLUMNS: &str = "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attgenerated <> '' FROM pg_attribute a \
     WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";
const TARGET_KEY: &str = "SELECT a.attname::text FROM pg_index i \
     CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
     WHERE i.indrelid = to_regclass($1) AND i.indisprimary ORDER BY k.ord";

#[derive(Debug, Clone)]
pub struct ColumnMap {
    /// The SQLite expression: a quoted column name, or `rowid` for the rowid-fallback key.
    pub source_expr: String,
    /// The SQLite column name (`rowid` for the fallback key), for reports.
    pub source: String,
    pub target: String,
    pub ty: PgType,
    /// Position in the source table's columns; `None` for the rowid-fallback key.
    pub source_index: Option<usize>,
    /// A PostgreSQL generated column: compared, never written.
    pub generated: bool,
}

impl ColumnMap {
    /// This column's value in a captured change of table `table`: from the row image, or the
    /// key itself for the rowid column.
    pub fn value_in<'a>(
        &self,
        table: &str,
        change: &'a crate::change::Change,
        image: &'a [crate::change::RawValue],
    ) -> Result<&'a crate::change::RawValue> {
        match self.source_index {
            Some(i) => image.get(i).ok_or_else(|| Error::Data {
                table: table.to_string(),
                reason: format!(
                    "a captured row image has {} values; column {:?} is number {}",
                    image.len(),
                    self.source,
                    i + 1
                ),
            }),
            None => Ok(&change.key[0]),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TableMap {
    pub source: String,
    pub target: String,
    /// Every compared column, in target order.
    pub columns: Vec<ColumnMap>,
    /// Positions in `columns` of the primary key, in key order.
    pub key: Vec<usize>,
    /// Columns on one side only, one sentence each.
    pub problems: Vec<String>,
}

impl TableMap {
    pub fn types(&self) -> Vec<PgType> {
        self.columns.iter().map(|c| c.ty.clone()).collect()
    }

    pub fn key_is_text(&self, i: usize) -> bool {
        matches!(
            self.columns[self.key[i]].ty,
            PgType::Text | PgType::Varchar(_)
        )
    }
}

/// A type as `format_type` prints it, read back as a [`PgType`].
pub fn parse_format_type(s: &str) -> Option<PgType> {
    let norm = s
        .replace("character varying", "varchar")
        .replace("timestamp with time zone", "timestamptz");
    PgType::parse(&norm).ok()
}

/// Maps `table` onto its target table; `None` when the target has no such table.
pub async fn map_table(
    client: &Client,
    schema: &str,
    table: &Table,
    keep_case: bool,
) -> Result<Option<TableMap>> {
    let target = target_name(&table.name, keep_case);
    let name = qualified(schema, &target);
    let err = |op| {
        let table = Some(table.name.clone());
        move |source| Error::Target { op, table, source }
    };
    let cols = client
        .query(TARGET_COLUMNS, &[&name])
        .await
        .map_err(err("read target columns"))?;
    if cols.is_empty() {
        return Ok(None);
    }
    let key: Vec<String> = client
        .query(TARGET_KEY, &[&name])
        .await
        .map_err(err("read the target key"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut map = TableMap {
        source: table.name.clone(),
        target,
        columns: Vec::new(),
        key: Vec::new(),
        problems: Vec::new(),
    };
    for row in &cols {
        let (col, ty, generated): (String, String, bool) = (row.get(0), row.get(1), row.get(2));
        let source = if col == ROWID_COLUMN {
            Some(("rowid".to_string(), "rowid".to_string(), None))
        } else {
            table
                .columns
                .iter()
                .position(|c| target_name(&c.name, keep_case) == col)
                .map(|i| {
                    (
                        crate::source::quote_ident(&table.columns[i].name),
                        table.columns[i].name.clone(),
                        Some(i),
                    )
                })
        };
        match (source, parse_format_type(&ty)) {
            (Some((source_expr, source, source_index)), Some(ty)) => map.columns.push(ColumnMap {
                source_expr,
                source,
                target: col,
                ty,
                source_index,
                generated,
            }),
            (None, _) => map
                .problems
                .push(format!("target column {col:?} has no source column")),
            (_, None) => map.problems.push(format!(
                "target column {col:?} has type {ty}, which sqlite2pg does not compare"
            )),
        }
    }
    for c in &table.columns {
        if !map.columns.iter().any(|m| m.source == c.name) {
            map.problems.push(format!(
                "source column {:?} is missing in the target",
                c.name
            ));
        }
    }
    map.key = key
        .iter()
        .filter_map(|k| map.columns.iter().position(|c| &c.target == k))
        .collect();
    if map.key.is_empty() || map.key.len() != key.len() {
        map.problems
            .push("the target table has no usable primary key, so rows cannot be matched".into());
    }
    Ok(Some(map))
}
