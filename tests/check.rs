//! `sqlite2pg check` through the library: the real databases in ../shared/realdbs, the target
//! readiness checks against a fresh PostgreSQL database, type misfits and config overrides, and a
//! verified backup taken while the sample app's live writer writes.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use sqlite2pg::check::{
    run_check, CheckOptions, CheckReport, Severity, TableReport, TargetSection,
};
use sqlite2pg::config::{Config, GlobalFlags};
use sqlite2pg::convert::PgType;
use sqlite2pg::sample_app::{generate, GenerateOptions, LiveWriter, WriterOptions};

use crate::support::pg::TestDb;
use crate::support::temp_dir;

/// A copy of one of the shared real databases in a fresh temporary directory.
pub fn real_db(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = temp_dir();
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/realdbs")
        .join(name);
    let to = dir.path().join(name);
    std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    (dir, to)
}

fn config_for(source: &Path, target: Option<String>) -> Config {
    let flags = GlobalFlags {
        source: Some(source.to_path_buf()),
        target,
        ..GlobalFlags::default()
    };
    Config::resolve(&flags).expect("valid config")
}

fn check(source: &Path) -> CheckReport {
    run_check(&config_for(source, None), &CheckOptions::default()).expect("check runs")
}

fn table<'a>(r: &'a CheckReport, name: &str) -> &'a TableReport {
    r.tables
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no table {name}"))
}

fn position(r: &CheckReport, name: &str) -> usize {
    r.order
        .tables
        .iter()
        .position(|t| t == name)
        .unwrap_or_else(|| panic!("{name} not in order"))
}

#[test]
fn northwind_views_and_mixed_integer_real_prices() {
    let (_dir, db) = real_db("northwind__northwind.db");
    let r = check(&db);
    let views = r.objects.iter().filter(|o| o.object.kind == "view").count();
    assert_eq!(views, 17);
    let details = table(&r, "Order Details");
    assert_eq!(details.rows, 2155);
    let price = details
        .profile
        .columns
        .iter()
        .find(|c| c.name == "UnitPrice")
        .unwrap();
    assert_eq!((price.storage.integer, price.storage.real), (943, 1212));
    assert_eq!(price.planned, PgType::Numeric(None));
    assert_eq!(price.misfits, 0);
    assert_eq!(details.profile.key_columns, ["OrderID", "ProductID"]);
    assert!(position(&r, "Orders") < position(&r, "Order Details"));
    assert!(position(&r, "Products") < position(&r, "Order Details"));
    assert_eq!(r.source.journal_mode, "delete");
    assert!(r
        .findings
        .iter()
        .any(|f| f.message.contains("WAL is recommended")));
    assert_eq!(r.exit_code(), 0, "{:#?}", r.findings);
}

#[test]
fn geopackage_virtual_tables_shadow_tables_and_triggers() {
    let (_dir, db) = real_db("geopackage__gdal_sample.gpkg");
    let r = check(&db);
    let count = |kind: &str| r.objects.iter().filter(|o| o.object.kind == kind).count();
    assert_eq!(count("trigger"), 90);
    assert!(count("virtual table") >= 1);
    assert!(count("shadow table") >= 3 * count("virtual table"));
    let rtree = r
        .objects
        .iter()
        .find(|o| o.object.kind == "virtual table")
        .unwrap();
    assert!(rtree.action.contains("PostGIS"), "{}", rtree.action);
    assert!(
        r.tables.iter().all(|t| !t.name.starts_with("rtree_")),
        "shadow tables are not migrated as tables"
    );
    let point = table(&r, "point2d")
        .profile
        .columns
        .iter()
        .find(|c| c.name == "geom")
        .unwrap();
    assert_eq!(
        point.planned,
        PgType::Bytea,
        "POINT holds geometry blobs, not integers"
    );
    assert_eq!(point.misfits, 0);
    let no_key = table(&r, "gpkg_extensions");
    assert_eq!(
        no_key.primary_key,
        sqlite2pg::source::introspect::PrimaryKey::None
    );
    assert_eq!(
        r.exit_code(),
        3,
        "a table without a primary key needs attention"
    );
}

#[test]
fn chinook_foreign_key_order_and_declared_lengths() {
    let (_dir, db) = real_db("chinook__Chinook_Sqlite.sqlite");
    let r = check(&db);
    for (parent, child) in [
        ("Artist", "Album"),
        ("Album", "Track"),
        ("Genre", "Track"),
        ("MediaType", "Track"),
        ("Track", "InvoiceLine"),
        ("Invoice", "InvoiceLine"),
        ("Customer", "Invoice"),
        ("Employee", "Customer"),
        ("Playlist", "PlaylistTrack"),
        ("Track", "PlaylistTrack"),
    ] {
        assert!(
            position(&r, parent) < position(&r, child),
            "{parent} must come before {child}"
        );
    }
    assert!(
        r.order.cycles.is_empty(),
        "Employee.ReportsTo is a self-reference, not a cycle"
    );
    assert_eq!(r.order.tables.len(), 11);
    let name = table(&r, "Artist")
        .profile
        .columns
        .iter()
        .find(|c| c.name == "Name")
        .unwrap();
    assert_eq!(name.planned, PgType::Varchar(120));
    let total = table(&r, "Invoice")
        .profile
        .columns
        .iter()
        .find(|c| c.name == "Total")
        .unwrap();
    assert_eq!(total.planned, PgType::Numeric(Some((10, 2))));
    let date = table(&r, "Invoice")
        .profile
        .columns
        .iter()
        .find(|c| c.name == "InvoiceDate")
        .unwrap();
    assert_eq!(date.planned, PgType::Timestamptz);
    assert_eq!(r.exit_code(), 0, "{:#?}", r.findings);
}

#[test]
fn chinook_autoincrement_and_pgloader_storage_blob_text() {
    let (_dir, db) = real_db("chinook__Chinook_Sqlite_AutoIncrementPKs.sqlite");
    let r = check(&db);
    assert!(table(&r, "Artist").autoincrement);
    assert_eq!(table(&r, "Track").rows, 3503);

    let (_dir2, db2) = real_db("pgloader__storage.sqlite");
    let r = check(&db2);
    let files = table(&r, "files");
    let data = files
        .profile
        .columns
        .iter()
        .find(|c| c.name == "file_data")
        .unwrap();
    assert!(data.storage.text > 0, "base64 text stored in a BLOB column");
    assert_eq!(data.planned, PgType::Bytea);
    assert_eq!(data.misfits, 0);
    assert!(r.tables.iter().any(|t| t.foreign_keys > 0));
}

#[test]
fn target_readiness_and_same_named_tables() {
    let (_dir, db) = real_db("chinook__Chinook_Sqlite.sqlite");
    let test_db = TestDb::new();
    let config = config_for(&db, Some(test_db.url_string()));
    let r = run_check(&config, &CheckOptions::default()).unwrap();
    let TargetSection::Checked(t) = &r.target else {
        panic!("target not checked: {:?}", r.target)
    };
    assert!(t.version.starts_with("PostgreSQL"));
    assert_eq!(t.server_encoding, "UTF8");
    assert!(t.can_create_tables && t.can_create_schema);
    assert!(t.existing_tables.is_empty());
    assert!(
        !t.target.contains(&password_of(&test_db.url_string())),
        "password must be redacted"
    );
    assert_eq!(r.exit_code(), 0);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = test_db.client().await;
        client
            .batch_execute("CREATE TABLE artist (id int)")
            .await
            .unwrap();
    });
    let r = run_check(&config, &CheckOptions::default()).unwrap();
    let TargetSection::Checked(t) = &r.target else {
        panic!()
    };
    assert_eq!(t.existing_tables, ["artist"]);
    assert_eq!(r.exit_code(), 1);
    assert!(r
        .findings
        .iter()
        .any(|f| f.severity == Severity::Error && f.message.contains("artist")));
}

fn password_of(url: &str) -> String {
    let after = url.split("://").nth(1).unwrap_or("");
    after
        .split('@')
        .next()
        .unwrap_or("")
        .split(':')
        .nth(1)
        .unwrap_or("no-password")
        .to_string()
}

#[test]
fn misfits_widen_by_default_and_quarantine_under_an_override() {
    let dir = temp_dir();
    let db = dir.path().join("dirty.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, at DATETIME, note TEXT, price NUMERIC(5,2));
         INSERT INTO t VALUES (1, 10, '2024-01-01 10:00:00', 'fine', 1.5);
         INSERT INTO t VALUES (2, 'eleven', '2024-01-01T10:00:00Z', 'ok', 2.25);
         INSERT INTO t VALUES (3, 12, 'last tuesday', 'a' || char(0) || 'b', 3.125);
         INSERT INTO t VALUES (4, 13, 1700000000, 'x', 4);",
    )
    .unwrap();
    drop(conn);
    let r = check(&db);
    let col = |name: &str| {
        table(&r, "t")
            .profile
            .columns
            .iter()
            .find(|c| c.name == name)
            .unwrap()
            .clone()
    };
    let n = col("n");
    assert_eq!(
        (n.planned.clone(), n.declared_misfits, n.misfits),
        (PgType::Text, 1, 0)
    );
    assert_eq!(n.declared_examples[0].key, serde_json::json!([2]));
    let at = col("at");
    assert_eq!((at.planned.clone(), at.declared_misfits), (PgType::Text, 1));
    assert_eq!(at.declared_examples[0].key, serde_json::json!([3]));
    let note = col("note");
    assert_eq!(
        (note.planned.clone(), note.misfits),
        (PgType::Text, 1),
        "one NUL does not turn text into bytea"
    );
    assert!(note.examples[0].reason.contains("NUL"));
    let price = col("price");
    assert_eq!(
        price.planned,
        PgType::Numeric(None),
        "3.125 would be rounded by numeric(5,2)"
    );
    assert_eq!(r.exit_code(), 3, "the NUL row needs attention");

    let toml = dir.path().join("sqlite2pg.toml");
    std::fs::write(
        &toml,
        "[columns]\n\"t.at\" = \"timestamptz\"\n\"T.N\" = \"bigint\"\n",
    )
    .unwrap();
    let flags = GlobalFlags {
        source: Some(db.clone()),
        config: Some(toml),
        ..GlobalFlags::default()
    };
    let r = run_check(&Config::resolve(&flags).unwrap(), &CheckOptions::default()).unwrap();
    let at = table(&r, "t")
        .profile
        .columns
        .iter()
        .find(|c| c.name == "at")
        .unwrap();
    assert!(at.overridden);
    assert_eq!((at.planned.clone(), at.misfits), (PgType::Timestamptz, 1));
    let n = table(&r, "t")
        .profile
        .columns
        .iter()
        .find(|c| c.name == "n")
        .unwrap();
    assert_eq!((n.planned.clone(), n.misfits), (PgType::Bigint, 1));
    assert!(r
        .findings
        .iter()
        .any(|f| f.subject == "t.at" && f.severity == Severity::Attention));
}

#[test]
fn hostile_names_are_quoted_everywhere() {
    let dir = temp_dir();
    let db = dir.path().join("hostile.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        r#"CREATE TABLE "select" ("from" INTEGER PRIMARY KEY, "where" TEXT, "a ""quoted"" col" JSON);
           CREATE TABLE "tåble with spaces ✓" ("user" TEXT PRIMARY KEY, "order" INTEGER REFERENCES "select"("from"));
           INSERT INTO "select" VALUES (1, 'it''s', '{"k": "v"}');
           INSERT INTO "tåble with spaces ✓" VALUES ('Robert''); DROP TABLE students;--', 1);"#,
    )
    .unwrap();
    drop(conn);
    let r = check(&db);
    assert_eq!(r.order.tables, ["select", "tåble with spaces ✓"]);
    let quoted = table(&r, "select")
        .profile
        .columns
        .iter()
        .find(|c| c.name == "a \"quoted\" col")
        .unwrap();
    assert_eq!(quoted.planned, PgType::Jsonb);
    assert_eq!(
        table(&r, "tåble with spaces ✓").profile.key_columns,
        ["user"]
    );
    assert_eq!(r.exit_code(), 0);
}

#[test]
fn backup_while_the_live_writer_writes() {
    let dir = temp_dir();
    let db = dir.path().join("app.db");
    generate(
        &db,
        &GenerateOptions {
            scale: 0.002,
            seed: 7,
        },
    )
    .unwrap();
    let writer = LiveWriter::start(
        &db,
        WriterOptions {
            rate_per_sec: 300.0,
            seed: 8,
        },
    )
    .unwrap();
    crate::support::wait_until(
        std::time::Duration::from_secs(10),
        "the writer wrote",
        || writer.stats().transactions > 20,
    );
    let config = config_for(&db, None);
    let r = run_check(
        &config,
        &CheckOptions {
            backup: true,
            tables: None,
        },
    )
    .unwrap();
    let stats = writer.stop().unwrap();
    assert!(stats.transactions > 20);
    let b = r.backup.expect("backup taken");
    assert_eq!(b.integrity, "ok");
    assert!(b.path.starts_with(dir.path().join("app.db.sqlite2pg")));
    let (bytes, hash) = sqlite2pg::source::backup::hash_file(&b.path).unwrap();
    assert_eq!((bytes, hash.clone()), (b.bytes, b.blake3.clone()));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&b.manifest).unwrap()).unwrap();
    assert_eq!(manifest["blake3"], hash);
    let copy = Connection::open(&b.path).unwrap();
    for (t, n) in &b.row_counts {
        let counted: u64 = copy
            .query_row(&format!("SELECT count(*) FROM \"{t}\""), [], |r| r.get(0))
            .unwrap();
        assert_eq!(counted, *n, "{t}");
    }
    let fk: i64 = copy
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(fk, 0, "the backup is one consistent state");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("app.db.sqlite2pg"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "the state directory is private");
}
