//! The HTML sign-off report: one self-contained file (inline CSS, no scripts, no external
//! resources) that a team can attach to a change ticket and read in any browser.

use std::fmt::Write;

use super::report::DiffReport;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}\
h1{font-size:1.4rem}table{border-collapse:collapse;margin:1rem 0}\
th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:right;font-variant-numeric:tabular-nums}\
th{background:#f3f3f3}td.l,th.l{text-align:left}.ok{color:#176f2c;font-weight:600}\
.bad{color:#b00020;font-weight:600}code{font-family:ui-monospace,monospace;word-break:break-all}\
.meta td{text-align:left}";

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

pub fn render_html(r: &DiffReport) -> String {
    let mut out = String::new();
    let (class, verdict) = if r.identical {
        ("ok", "IDENTICAL")
    } else {
        ("bad", "DIFFERENT")
    };
    let _ = write!(out, "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>sqlite2pg diff — {verdict}</title><style>{STYLE}</style></head><body>");
    let _ = write!(
        out,
        "<h1>sqlite2pg diff: <span class=\"{class}\" id=\"verdict\">{verdict}</span></h1>"
    );
    meta(&mut out, r);
    tables(&mut out, r);
    differences(&mut out, r);
    out.push_str("</body></html>\n");
    out
}

fn meta(out: &mut String, r: &DiffReport) {
    let rows = [
        ("generated", r.generated_at.clone()),
        (
            "source",
            format!("{} ({} bytes)", r.source.path, r.source.bytes),
        ),
        (
            "snapshot",
            r.source
                .snapshot_fingerprint
                .clone()
                .unwrap_or_else(|| "-".into()),
        ),
        ("target", format!("{} schema {}", r.target, r.schema)),
        ("fingerprint", r.fingerprint.clone()),
        ("hash", r.hash_version.to_string()),
        (
            "sample",
            r.sample.map_or("every row".into(), |p| {
                format!("{:.1}% of key buckets", p * 100.0)
            }),
        ),
    ];
    out.push_str("<table class=\"meta\">");
    for (k, v) in rows {
        let _ = write!(
            out,
            "<tr><th class=\"l\">{k}</th><td><code>{}</code></td></tr>",
            escape(&v)
        );
    }
    out.push_str("</table>");
}

fn tables(out: &mut String, r: &DiffReport) {
    out.push_str("<h2>Tables</h2><table><tr><th class=\"l\">table</th><th>SQLite rows</th><th>PostgreSQL rows</th><th>identical</th><th>modified</th><th>missing</th><th>extra</th><th>quarantined</th><th class=\"l\">verdict</th><th class=\"l\">notes</th></tr>");
    for t in &r.tables {
        let class = if t.verdict == "identical" {
            "ok"
        } else {
            "bad"
        };
        let mut notes: Vec<String> = t.problems.clone();
        if let Some(c) = &t.changed_since {
            notes.push(format!(
                "changed rows only: {} checked, changed after seq {} (identical at the diff of {})",
                c.checked_rows, c.baseline_seq, c.baseline_at
            ));
        }
        if !t.column_mismatches.is_empty() {
            notes.push(format!(
                "modified columns: {}",
                t.column_mismatches
                    .iter()
                    .map(|(c, n)| format!("{c} ({n})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let _ = write!(
            out,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l {class}\">{}</td><td class=\"l\">{}</td></tr>",
            escape(&t.table), t.source_rows, t.target_rows, t.identical, t.modified, t.missing, t.extra, t.quarantined, t.verdict, escape(&notes.join("; "))
        );
    }
    out.push_str("</table>");
}

fn differences(out: &mut String, r: &DiffReport) {
    if r.differences.is_empty() {
        out.push_str("<p class=\"ok\">No differing rows.</p>");
        return;
    }
    out.push_str("<h2>Differing rows</h2><table id=\"differences\"><tr><th class=\"l\">table</th><th class=\"l\">kind</th><th class=\"l\">key</th><th class=\"l\">column</th><th class=\"l\">SQLite (converted)</th><th class=\"l\">PostgreSQL</th></tr>");
    for d in &r.differences {
        let key = escape(&d.key.join(", "));
        let kind = format!("{:?}", d.kind).to_lowercase();
        if d.columns.is_empty() {
            let note = escape(d.note.as_deref().unwrap_or(""));
            let _ = write!(out, "<tr><td class=\"l\">{}</td><td class=\"l\">{kind}</td><td class=\"l key\"><code>{key}</code></td><td class=\"l\" colspan=\"3\">{note}</td></tr>", escape(&d.table));
        }
        for (i, c) in d.columns.iter().enumerate() {
            let lead = if i == 0 {
                format!("<td class=\"l\" rowspan=\"{}\">{}</td><td class=\"l\" rowspan=\"{0}\">{kind}</td><td class=\"l key\" rowspan=\"{0}\"><code>{key}</code></td>", d.columns.len(), escape(&d.table))
            } else {
                String::new()
            };
            let _ = write!(out, "<tr>{lead}<td class=\"l\">{}</td><td class=\"l\"><code>{}</code></td><td class=\"l\"><code>{}</code></td></tr>", escape(&c.column), escape(&c.source), escape(&c.target));
        }
    }
    out.push_str("</table>");
    if r.partial {
        let _ = write!(out, "<p class=\"bad\">Partial list: more differences exist than the {} shown (--max-differences).</p>", r.max_differences);
    }
}
