//! The PostgreSQL side: connecting as libpq users expect (TLS modes, redacted URLs) and checking
//! that the target can receive the migration.

pub mod apply;
pub mod connect;
pub mod copy_binary;
pub mod copy_out;
pub mod ddl;
pub mod mapping;
pub mod readiness;
pub mod schema_change;
pub mod state;
pub mod verify;
