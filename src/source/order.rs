//! The migration order: tables sorted so every table comes after the tables its foreign keys
//! point to (parents first). Self-references never block a table. Cycles cannot be ordered: their
//! tables are reported and placed last, and their foreign keys must be created after the load
//! (which sqlite2pg does for every foreign key anyway).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::introspect::Schema;

#[derive(Debug, Clone, Serialize, Default)]
pub struct MigrationOrder {
    /// Every table, parents before children; tables on a cycle come last, by name.
    pub tables: Vec<String>,
    /// Each cycle as the list of its tables.
    pub cycles: Vec<Vec<String>>,
    /// Foreign keys naming a table that does not exist: `(child, missing parent)`.
    pub dangling: Vec<(String, String)>,
}

/// Orders the schema's tables by foreign-key dependency (Kahn's algorithm, ties by name so the
/// order is stable from run to run).
pub fn migration_order(schema: &Schema) -> MigrationOrder {
    let canonical: BTreeMap<String, String> = schema
        .tables
        .iter()
        .map(|t| (t.name.to_ascii_lowercase(), t.name.clone()))
        .collect();
    let mut parents: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut dangling = Vec::new();
    for table in &schema.tables {
        let entry = parents.entry(table.name.clone()).or_default();
        for fk in &table.foreign_keys {
            match canonical.get(&fk.parent_table.to_ascii_lowercase()) {
                Some(parent) if parent != &table.name => {
                    entry.insert(parent.clone());
                }
                Some(_) => {}
                None => dangling.push((table.name.clone(), fk.parent_table.clone())),
            }
        }
    }
    let mut order = Vec::new();
    let mut remaining = parents.clone();
    loop {
        let ready: Vec<String> = remaining
            .iter()
            .filter(|(_, ps)| ps.iter().all(|p| !remaining.contains_key(p)))
            .map(|(t, _)| t.clone())
            .collect();
        if ready.is_empty() {
            break;
        }
        for t in ready {
            remaining.remove(&t);
            order.push(t);
        }
    }
    let cycles = find_cycles(&remaining);
    order.extend(remaining.keys().cloned());
    MigrationOrder {
        tables: order,
        cycles,
        dangling,
    }
}

/// Groups the tables left after the topological sort into strongly connected components that
/// really are cycles (tables that only depend on a cycle are not themselves on it).
fn find_cycles(remaining: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let reach = |start: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start.clone()];
        while let Some(t) = stack.pop() {
            for p in remaining.get(&t).into_iter().flatten() {
                if remaining.contains_key(p) && seen.insert(p.clone()) {
                    stack.push(p.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> =
        remaining.keys().map(|t| (t, reach(t))).collect();
    let mut cycles: Vec<Vec<String>> = Vec::new();
    let mut placed = BTreeSet::new();
    for (t, r) in &reachable {
        if placed.contains(*t) || !r.contains(*t) {
            continue;
        }
        let cycle: Vec<String> = r
            .iter()
            .filter(|o| reachable.get(o).is_some_and(|ro| ro.contains(*t)))
            .cloned()
            .collect();
        placed.extend(cycle.iter().cloned());
        cycles.push(cycle);
    }
    cycles
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::introspect::{ForeignKey, PrimaryKey, Table};

    fn table(name: &str, parents: &[&str]) -> Table {
        Table {
            name: name.into(),
            columns: vec![],
            primary_key: PrimaryKey::None,
            strict: false,
            autoincrement: false,
            foreign_keys: parents
                .iter()
                .map(|p| ForeignKey {
                    columns: vec!["x".into()],
                    parent_table: p.to_string(),
                    parent_columns: vec![],
                    on_update: "NO ACTION".into(),
                    on_delete: "NO ACTION".into(),
                })
                .collect(),
            indexes: vec![],
            sql: String::new(),
        }
    }

    #[test]
    fn parents_come_first_and_self_references_do_not_block() {
        let schema = Schema {
            tables: vec![
                table("job_history", &["jobs"]),
                table("jobs", &["users"]),
                table("users", &["users"]),
            ],
            others: vec![],
        };
        let order = migration_order(&schema);
        assert_eq!(order.tables, ["users", "jobs", "job_history"]);
        assert!(order.cycles.is_empty());
    }

    #[test]
    fn cycles_are_reported_and_their_dependents_are_not_called_cycles() {
        let schema = Schema {
            tables: vec![
                table("a", &["b"]),
                table("b", &["a"]),
                table("c", &["a"]),
                table("d", &[]),
                table("e", &["ghost"]),
            ],
            others: vec![],
        };
        let order = migration_order(&schema);
        assert_eq!(order.cycles, vec![vec!["a".to_string(), "b".to_string()]]);
        assert_eq!(order.tables.len(), 5);
        assert_eq!(&order.tables[..2], ["d", "e"]);
        assert_eq!(order.dangling, vec![("e".to_string(), "ghost".to_string())]);
    }
}
