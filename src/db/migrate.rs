//! Schema management: the OpenCue-compatible schema for databases that have none (tests,
//! demo), and stagehand's own schema `stagehand`, applied idempotently.
//!
//! A Cuebot database is never altered: when `public.frame` exists the compatibility files are
//! skipped and only the columns stagehand relies on are checked; stagehand's own tables live
//! in the `stagehand` schema and are tracked in `stagehand.schema_migrations`.

use postgres::{Client, GenericClient, Transaction};

use super::DbError;

/// The OpenCue-compatible schema (Cuebot migrations V1–V47, the subset stagehand touches).
pub(crate) const COMPAT_SCHEMA: &[(&str, &str)] = &[
    (
        "opencue/001_tables.sql",
        include_str!("../../sql/opencue/001_tables.sql"),
    ),
    (
        "opencue/002_functions_triggers.sql",
        include_str!("../../sql/opencue/002_functions_triggers.sql"),
    ),
    (
        "opencue/003_views_indexes.sql",
        include_str!("../../sql/opencue/003_views_indexes.sql"),
    ),
];

/// stagehand's own migrations, in order: (version, name, SQL).
pub(crate) const OWN_MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "stagehand_schema",
        include_str!("../../sql/stagehand/V001__stagehand_schema.sql"),
    ),
    (
        2,
        "host_reservation",
        include_str!("../../sql/stagehand/V002__host_reservation.sql"),
    ),
    (
        3,
        "pending_launch",
        include_str!("../../sql/stagehand/V003__pending_launch.sql"),
    ),
    (
        4,
        "launch_claim",
        include_str!("../../sql/stagehand/V004__launch_claim.sql"),
    ),
    (
        5,
        "license",
        include_str!("../../sql/stagehand/V005__license.sql"),
    ),
    (
        6,
        "pending_launch_frame",
        include_str!("../../sql/stagehand/V006__pending_launch_frame.sql"),
    ),
    (
        7,
        "show_lease_recount",
        include_str!("../../sql/stagehand/V007__show_lease_recount.sql"),
    ),
];

/// Columns that must exist in a Cuebot database, by the migration that added them.
const REQUIRED_COLUMNS: &[(&str, &str, &str)] = &[
    ("show", "b_scheduler_managed", "V45"),
    ("layer", "ts_start_after", "V47"),
    ("job", "str_loki_url", "V34"),
    ("proc", "int_gpu_mem_reserved", "V1"),
];

/// What [`migrate`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// True when the OpenCue-compatible schema was applied (the database had none).
    pub created_compat_schema: bool,
    /// Versions of stagehand's own migrations applied by this call.
    pub applied: Vec<i32>,
}

/// Brings a database up to date: the compatibility schema if it has no Cuebot schema, then
/// stagehand's own migrations that are missing. Running it again changes nothing.
pub fn migrate(client: &mut Client) -> Result<MigrationReport, DbError> {
    let mut report = MigrationReport::default();
    // The look and the files in one transaction under the lock: two migrators starting
    // together do not both apply them, and a crash between two files cannot leave a
    // `public.frame` that makes every later run take the database for Cuebot's.
    let mut tx = locked(client)?;
    if has_table(&mut tx, "public", "frame")? {
        check_cuebot_schema(&mut tx)?;
    } else {
        apply_compat_files(&mut tx)?;
        report.created_compat_schema = true;
    }
    tx.commit()?;
    report.applied = apply_own_migrations(client)?;
    Ok(report)
}

/// A transaction holding the migration lock (transaction-scoped: released at commit, so a
/// crashed migrator never holds it).
fn locked(client: &mut Client) -> Result<Transaction<'_>, DbError> {
    let mut tx = client.transaction()?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('stagehand.migrate'))",
        &[],
    )?;
    Ok(tx)
}

/// Applies every compatibility file, in one transaction under the migration lock. Each is
/// idempotent, so this may run on a database that already has them; never run it on a Cuebot
/// database (it would replace Cuebot's functions).
pub(crate) fn apply_compat_schema(client: &mut Client) -> Result<(), DbError> {
    let mut tx = locked(client)?;
    apply_compat_files(&mut tx)?;
    tx.commit()?;
    Ok(())
}

fn apply_compat_files(tx: &mut Transaction<'_>) -> Result<(), DbError> {
    for (name, sql) in COMPAT_SCHEMA {
        tx.batch_execute(sql)
            .map_err(|e| DbError::Schema(format!("sql/{name}: {}", describe(&e))))?;
    }
    Ok(())
}

/// What `run` does before it books: checks that the database holds a Cuebot schema that
/// stagehand can use (one clear error, not one on every statement after), then applies
/// stagehand's own migrations that are missing.
pub(crate) fn prepare_for_run(client: &mut Client) -> Result<Vec<i32>, DbError> {
    if !has_table(client, "public", "frame")? {
        return Err(DbError::Schema(
            "no OpenCue schema here (public.frame is missing): point [database] url at \
             Cuebot's database, or run `stagehand migrate` on a test database"
                .into(),
        ));
    }
    check_cuebot_schema(client)?;
    apply_own_migrations(client)
}

/// Applies the compatibility schema and stagehand's migrations unconditionally (tests).
pub fn apply_all(client: &mut Client) -> Result<(), DbError> {
    apply_compat_schema(client)?;
    apply_own_migrations(client)?;
    Ok(())
}

/// Applies stagehand's migrations not yet recorded, each in its own transaction, under an
/// advisory lock so instances starting together do not race.
pub(crate) fn apply_own_migrations(client: &mut Client) -> Result<Vec<i32>, DbError> {
    let mut applied = Vec::new();
    let mut tx = locked(client)?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS stagehand;
         CREATE TABLE IF NOT EXISTS stagehand.schema_migrations (
             version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
    )?;
    for (version, name, sql) in OWN_MIGRATIONS {
        let done = tx.query_opt(
            "SELECT 1 FROM stagehand.schema_migrations WHERE version = $1",
            &[version],
        )?;
        if done.is_some() {
            continue;
        }
        tx.batch_execute(sql).map_err(|e| {
            DbError::Schema(format!("migration V{version:03} {name}: {}", describe(&e)))
        })?;
        tx.execute(
            "INSERT INTO stagehand.schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )?;
        applied.push(*version);
    }
    tx.commit()?;
    Ok(applied)
}

/// Fails with a clear message when a Cuebot database predates a column stagehand needs.
pub(crate) fn check_cuebot_schema(client: &mut impl GenericClient) -> Result<(), DbError> {
    for (table, column, migration) in REQUIRED_COLUMNS {
        let found = client.query_opt(
            "SELECT 1 FROM information_schema.columns
              WHERE table_schema = 'public' AND table_name = $1 AND column_name = $2",
            &[table, column],
        )?;
        if found.is_none() {
            return Err(DbError::Schema(format!(
                "{table}.{column} is missing: the Cuebot schema must be at migration {migration} or later"
            )));
        }
    }
    Ok(())
}

fn has_table(client: &mut impl GenericClient, schema: &str, table: &str) -> Result<bool, DbError> {
    let row = client.query_opt(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2",
        &[&schema, &table],
    )?;
    Ok(row.is_some())
}

/// The server's message of a failed statement, which `postgres::Error`'s Display hides.
pub(crate) fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({}): {detail}", db.message(), db.code().code()),
            None => format!("{} ({})", db.message(), db.code().code()),
        },
        None => e.to_string(),
    }
}
