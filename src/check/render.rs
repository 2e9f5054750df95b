//! The human-readable form of a [`CheckReport`]: sections in the order an operator reads them,
//! findings last so they are on screen when the command ends.

use std::fmt::Write;

use super::{CheckReport, Severity, TableReport, TargetSection};
use crate::source::profile::{ColumnProfile, StorageCounts};

/// Renders the report as plain text (no colour, so it pastes into tickets).
pub fn render_text(r: &CheckReport) -> String {
    let mut out = String::new();
    source_section(&mut out, r);
    tables_section(&mut out, r);
    objects_section(&mut out, r);
    target_section(&mut out, r);
    backup_section(&mut out, r);
    findings_section(&mut out, r);
    out
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

fn source_section(out: &mut String, r: &CheckReport) {
    let s = &r.source;
    let _ = writeln!(out, "SOURCE  {}", s.path.display());
    let wal = s
        .wal_bytes
        .map(|w| format!(" (+ WAL {})", mb(w)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  file          {}{wal}; {} pages of {} bytes, {} free",
        mb(s.file_bytes),
        s.page_count,
        s.page_size,
        s.freelist_pages
    );
    let _ = writeln!(
        out,
        "  SQLite        written by {}, read with {}; encoding {}",
        s.written_by_sqlite, s.library_sqlite, s.encoding
    );
    let _ = writeln!(
        out,
        "  journal mode  {}{}",
        s.journal_mode,
        if s.journal_mode == "wal" {
            ""
        } else {
            "  (WAL recommended, see findings)"
        }
    );
    let _ = writeln!(out, "  integrity     {}", s.integrity.join("; "));
    let _ = writeln!(
        out,
        "  foreign keys  {} violation(s)",
        s.foreign_key_violations
    );
    out.push('\n');
}

fn tables_section(out: &mut String, r: &CheckReport) {
    let _ = writeln!(out, "TABLES  in migration order (parents first)");
    let ordered = r
        .order
        .tables
        .iter()
        .filter_map(|n| r.tables.iter().find(|t| &t.name == n));
    for t in ordered {
        table_block(out, t);
    }
    for cycle in &r.order.cycles {
        let _ = writeln!(out, "  foreign-key cycle: {}", cycle.join(" → "));
    }
    out.push('\n');
}

fn table_block(out: &mut String, t: &TableReport) {
    let key = t.profile.key_columns.join(", ");
    let flags = [(t.autoincrement, "AUTOINCREMENT"), (t.strict, "STRICT")]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, f)| *f)
        .collect::<Vec<_>>()
        .join(" ");
    let _ = writeln!(
        out,
        "  {}  {} rows  key: {} ({key}) {flags}  {} FK, {} index(es)",
        t.name,
        t.rows,
        t.primary_key.label(),
        t.foreign_keys,
        t.indexes
    );
    for c in &t.profile.columns {
        column_line(out, c);
    }
}

fn storage_text(s: &StorageCounts) -> String {
    let parts = [
        ("integer", s.integer),
        ("real", s.real),
        ("text", s.text),
        ("blob", s.blob),
        ("null", s.null),
    ];
    let listed: Vec<String> = parts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    if listed.is_empty() {
        "empty".into()
    } else {
        listed.join(", ")
    }
}

fn column_line(out: &mut String, c: &ColumnProfile) {
    let declared = if c.declared_type.is_empty() {
        "(none)"
    } else {
        &c.declared_type
    };
    let _ = writeln!(
        out,
        "    {:<24} {:<16} → {:<18} {}",
        c.name,
        declared,
        c.planned.sql(),
        storage_text(&c.storage)
    );
    if c.declared_misfits > 0 || c.misfits > 0 || c.overridden {
        let _ = writeln!(out, "      {}", c.reason);
    }
    let examples = if c.misfits > 0 {
        &c.examples
    } else {
        &c.declared_examples
    };
    for e in examples
        .iter()
        .filter(|_| c.declared_misfits > 0 || c.misfits > 0)
    {
        let _ = writeln!(out, "      key {} = {}: {}", e.key, e.value, e.reason);
    }
}

fn objects_section(out: &mut String, r: &CheckReport) {
    if r.objects.is_empty() {
        return;
    }
    let _ = writeln!(out, "OBJECTS that do not migrate as plain tables");
    for o in &r.objects {
        let _ = writeln!(
            out,
            "  {:<14} {:<32} {}",
            o.object.kind, o.object.name, o.action
        );
    }
    out.push('\n');
}

fn target_section(out: &mut String, r: &CheckReport) {
    match &r.target {
        TargetSection::NotChecked { reason } => {
            let _ = writeln!(out, "TARGET  not checked: {reason}");
        }
        TargetSection::Checked(t) => {
            let _ = writeln!(out, "TARGET  {}", t.target);
            let _ = writeln!(out, "  server        {}", t.version);
            let _ = writeln!(
                out,
                "  database      {} (encoding {}), user {}",
                t.database, t.server_encoding, t.user
            );
            let _ = writeln!(
                out,
                "  schema        {} ({}), can create tables: {}, can create schemas: {}",
                t.schema,
                if t.schema_exists {
                    "exists"
                } else {
                    "will be created"
                },
                yes_no(t.can_create_tables),
                yes_no(t.can_create_schema)
            );
            let existing = if t.existing_tables.is_empty() {
                "none".to_string()
            } else {
                t.existing_tables.join(", ")
            };
            let _ = writeln!(out, "  same-named tables already there: {existing}");
        }
    }
    out.push('\n');
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "NO"
    }
}

fn backup_section(out: &mut String, r: &CheckReport) {
    if let Some(b) = &r.backup {
        let _ = writeln!(out, "BACKUP  {}", b.path.display());
        let _ = writeln!(
            out,
            "  {} , integrity {}, blake3 {}, {:.1} s",
            mb(b.bytes),
            b.integrity,
            b.blake3,
            b.seconds
        );
        let _ = writeln!(out, "  manifest {}", b.manifest.display());
        out.push('\n');
    }
}

fn findings_section(out: &mut String, r: &CheckReport) {
    let _ = writeln!(out, "FINDINGS");
    if r.findings.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for f in &r.findings {
        let label = match f.severity {
            Severity::Error => "ERROR",
            Severity::Attention => "ATTENTION",
            Severity::Warning => "warning",
            Severity::Info => "info",
        };
        let _ = writeln!(out, "  {label:<9} {}: {}", f.subject, f.message);
    }
    let verdict = match r.exit_code() {
        0 => "ready to migrate",
        3 => "the data needs attention before migrating (exit code 3)",
        _ => "cannot migrate until the errors above are fixed (exit code 1)",
    };
    let _ = writeln!(out, "\nVERDICT: {verdict}");
}
