//! The schema under `sql/`: the OpenCue-compatible tables, triggers and views of
//! `sql/opencue` behave like Cuebot's (the rows its insert triggers create, the frame
//! counters, the resource guards and their error messages), and every file applies again to
//! a migrated database without error and without changing anything.
//!
//! The fixture is inserted the way Cuebot does it: the rows Cuebot's triggers create
//! (folder_level, folder_resource, job_stat, job_resource, job_usage, job_mem, job_history,
//! layer_stat, layer_resource, layer_usage, layer_mem, layer_history) are adjusted with
//! UPDATE, never inserted; frames go in as SETUP, move to WAITING, and the counters are then
//! set explicitly, as `JobDaoJdbc.activateJob` does.

use postgres::{Client, error::SqlState, types::ToSql};
use uuid::Uuid;

use crate::common;

/// Frames in the fixture's single layer.
const FRAMES: usize = 4;
/// The fixture job's core cap, in centicores.
const JOB_MAX_CORES: i32 = 1000;
/// The fixture subscription's burst, in centicores.
const SUB_BURST: i64 = 1000;

/// A fresh key, the way Cuebot makes them (a random UUID as text).
fn key() -> String {
    Uuid::new_v4().to_string()
}

/// A short unique suffix for names with small VARCHAR limits (alloc and folder names are 36).
fn tag() -> String {
    key()[..8].to_string()
}

/// Keys of the rows inserted by [`insert_fixture`].
#[derive(Debug)]
struct Fixture {
    facility: String,
    dept: String,
    show: String,
    alloc: String,
    subscription: String,
    folder: String,
    point: String,
    host: String,
    host_name: String,
    job: String,
    layer: String,
    frames: Vec<String>,
}

/// Inserts one of everything, as Cuebot's Java does, up to and including the frames in
/// state SETUP. Companion rows created by Cuebot's triggers are only updated.
fn insert_fixture(client: &mut Client) -> Fixture {
    let t = tag();
    let fx = Fixture {
        facility: key(),
        dept: key(),
        show: key(),
        alloc: key(),
        subscription: key(),
        folder: key(),
        point: key(),
        host: key(),
        host_name: format!("host-{t}"),
        job: key(),
        layer: key(),
        frames: (0..FRAMES).map(|_| key()).collect(),
    };
    run(
        client,
        "facility",
        "INSERT INTO facility (pk_facility, str_name) VALUES ($1, $2)",
        &[&fx.facility, &format!("fac-{t}")],
    );
    run(
        client,
        "dept",
        "INSERT INTO dept (pk_dept, str_name) VALUES ($1, $2)",
        &[&fx.dept, &format!("dept-{t}")],
    );
    run(
        client,
        "show",
        "INSERT INTO show (pk_show, str_name) VALUES ($1, $2)",
        &[&fx.show, &format!("show-{t}")],
    );
    run(
        client,
        "show_stats",
        "INSERT INTO show_stats (pk_show) VALUES ($1)",
        &[&fx.show],
    );
    run(
        client,
        "alloc",
        "INSERT INTO alloc (pk_alloc, pk_facility, str_name, str_tag) VALUES ($1, $2, $3, 'general')",
        &[&fx.alloc, &fx.facility, &format!("fac-{t}.general")],
    );
    run(
        client,
        "subscription",
        &format!(
            "INSERT INTO subscription (pk_subscription, pk_alloc, pk_show, int_size, int_burst)
             VALUES ($1, $2, $3, 500, {SUB_BURST})"
        ),
        &[&fx.subscription, &fx.alloc, &fx.show],
    );
    // A root folder: after_insert_folder creates folder_level and folder_resource.
    run(
        client,
        "folder",
        "INSERT INTO folder (pk_folder, pk_parent_folder, pk_show, pk_dept, str_name) VALUES ($1, NULL, $2, $3, $4)",
        &[&fx.folder, &fx.show, &fx.dept, &format!("show-{t}")],
    );
    run(
        client,
        "folder_resource",
        "UPDATE folder_resource SET int_max_cores = 100000, int_max_gpus = 10 WHERE pk_folder = $1",
        &[&fx.folder],
    );
    run(
        client,
        "point",
        "INSERT INTO point (pk_point, pk_show, pk_dept) VALUES ($1, $2, $3)",
        &[&fx.point, &fx.show, &fx.dept],
    );
    // 8 cores, 16 GB, 2 GPUs with 8 GB (centicores and KB).
    run(
        client,
        "host",
        "INSERT INTO host (pk_host, pk_alloc, str_name, b_nimby, str_lock_state, int_procs,
                           int_cores, int_cores_idle, int_mem, int_mem_idle,
                           int_gpus, int_gpus_idle, int_gpu_mem, int_gpu_mem_idle, str_fqdn, int_thread_mode)
         VALUES ($1, $2, $3, false, 'OPEN', 0, 800, 800, 16777216, 16777216, 2, 2, 8388608, 8388608, $4, 0)",
        &[&fx.host, &fx.alloc, &fx.host_name, &format!("{}.example.com", fx.host_name)],
    );
    run(
        client,
        "host_stat",
        "INSERT INTO host_stat (pk_host_stat, pk_host, int_mem_total, int_mem_free, int_gpu_mem_total,
                                int_gpu_mem_free, str_state, str_os)
         VALUES ($1, $1, 16777216, 16000000, 8388608, 8388608, 'UP', 'linux')",
        &[&fx.host],
    );
    run(
        client,
        "host_tag",
        "INSERT INTO host_tag (pk_host_tag, pk_host, str_tag, str_tag_type) VALUES ($1, $2, 'general', 'ALLOC')",
        &[&key(), &fx.host],
    );
    // after_insert_job creates job_stat, job_resource, job_usage, job_mem and job_history.
    let job_name = format!("show-{t}-sh01-user_job");
    run(
        client,
        "job",
        "INSERT INTO job (pk_job, pk_show, pk_folder, pk_facility, pk_dept, str_name, str_visible_name,
                          str_show, str_shot, str_user, str_state, str_log_dir, str_os, int_uid,
                          b_paused, b_autoeat, int_max_retries)
         VALUES ($1, $2, $3, $4, $5, $6, $6, $7, 'sh01', 'user', 'PENDING', '/tmp/logs', 'linux', 1000,
                 false, false, 3)",
        &[&fx.job, &fx.show, &fx.folder, &fx.facility, &fx.dept, &job_name, &format!("show-{t}")],
    );
    run(
        client,
        "job_resource",
        &format!(
            "UPDATE job_resource SET int_max_cores = {JOB_MAX_CORES}, int_priority = 10 WHERE pk_job = $1"
        ),
        &[&fx.job],
    );
    // after_insert_layer creates layer_stat, layer_resource, layer_usage, layer_mem, layer_history.
    run(
        client,
        "layer",
        "INSERT INTO layer (pk_layer, pk_job, str_name, str_cmd, str_range, int_chunk_size, int_dispatch_order,
                            str_tags, str_type, int_cores_min, int_cores_max, b_threadable, int_mem_min,
                            int_gpus_min, int_gpus_max, int_gpu_mem_min, str_services, int_timeout, int_timeout_llu)
         VALUES ($1, $2, 'render', 'echo #IFRAME#', '1-4', 1, 1, 'general', 'Render', 100, 0, false, 1048576,
                 0, 0, 0, 'default', 0, 0)",
        &[&fx.layer, &fx.job],
    );
    for (i, frame) in fx.frames.iter().enumerate() {
        let number = i as i64 + 1;
        run(
            client,
            "frame",
            "INSERT INTO frame (pk_frame, pk_layer, pk_job, str_name, str_state, int_number,
                                int_dispatch_order, int_layer_order, ts_updated, ts_llu)
             VALUES ($1, $2, $3, $4, 'SETUP', $5, $6, 1, current_timestamp, current_timestamp)",
            &[
                frame,
                &fx.layer,
                &fx.job,
                &format!("{number:04}-render"),
                &number,
                &(number - 1),
            ],
        );
    }
    fx
}

/// One fixture statement; panics with the statement's name on error.
fn run(client: &mut Client, what: &str, sql: &str, params: &[&(dyn ToSql + Sync)]) {
    client
        .execute(sql, params)
        .unwrap_or_else(|e| panic!("fixture: {what}: {e:?}"));
}

/// Cuebot's job activation, first half: SETUP -> WAITING (no trigger counts this).
fn move_setup_to_waiting(client: &mut Client, fx: &Fixture) -> u64 {
    client
        .execute(
            "UPDATE frame SET str_state = 'WAITING' WHERE pk_job = $1 AND str_state = 'SETUP'",
            &[&fx.job],
        )
        .expect("SETUP -> WAITING")
}

/// Cuebot's job activation, second half: the counters the Java code sets explicitly.
fn set_activation_counts(client: &mut Client, fx: &Fixture) {
    let n = FRAMES;
    client
        .batch_execute(&format!(
            "UPDATE layer_stat SET int_waiting_count = {n}, int_total_count = int_total_count + {n}
              WHERE pk_layer = '{layer}';
             UPDATE job_stat SET int_depend_count = 0, int_waiting_count = {n} WHERE pk_job = '{job}';
             UPDATE job SET int_frame_count = {n}, int_layer_count = 1 WHERE pk_job = '{job}';
             UPDATE show_stats SET int_frame_insert_count = int_frame_insert_count + {n},
                                   int_job_insert_count = int_job_insert_count + 1
              WHERE pk_show = '{show}';",
            layer = fx.layer,
            job = fx.job,
            show = fx.show,
        ))
        .expect("activation counters");
}

/// The whole fixture, activated: every frame WAITING and counted.
fn seed(client: &mut Client) -> Fixture {
    let fx = insert_fixture(client);
    assert_eq!(
        move_setup_to_waiting(client, &fx),
        FRAMES as u64,
        "every SETUP frame moves to WAITING"
    );
    set_activation_counts(client, &fx);
    fx
}

/// The per-state frame counters of a layer_stat or job_stat row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StateCounts {
    waiting: i64,
    running: i64,
    dead: i64,
    depend: i64,
    eaten: i64,
    succeeded: i64,
    checkpoint: i64,
}

fn state_counts(client: &mut Client, table: &str, key_column: &str, key: &str) -> StateCounts {
    let row = client
        .query_one(
            &format!(
                "SELECT int_waiting_count, int_running_count, int_dead_count, int_depend_count,
                        int_eaten_count, int_succeeded_count, int_checkpoint_count
                   FROM {table} WHERE {key_column} = $1"
            ),
            &[&key],
        )
        .unwrap_or_else(|e| panic!("read {table} counters: {e:?}"));
    StateCounts {
        waiting: row.get(0),
        running: row.get(1),
        dead: row.get(2),
        depend: row.get(3),
        eaten: row.get(4),
        succeeded: row.get(5),
        checkpoint: row.get(6),
    }
}

fn layer_counts(client: &mut Client, fx: &Fixture) -> StateCounts {
    state_counts(client, "layer_stat", "pk_layer", &fx.layer)
}

fn job_counts(client: &mut Client, fx: &Fixture) -> StateCounts {
    state_counts(client, "job_stat", "pk_job", &fx.job)
}

fn count(client: &mut Client, sql: &str, params: &[&(dyn ToSql + Sync)]) -> i64 {
    client
        .query_one(sql, params)
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .get(0)
}

/// Asserts that a statement failed in a trigger with exactly `expected` (RAISE EXCEPTION).
fn assert_raised(result: Result<u64, postgres::Error>, expected: &str, what: &str) {
    match result {
        Ok(rows) => panic!(
            "{what}: expected the error {expected:?}, but the statement succeeded ({rows} rows)"
        ),
        Err(e) => {
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("{what}: expected a server error, got {e:?}"));
            assert_eq!(db.message(), expected, "{what}: wrong error message");
            assert_eq!(
                db.code(),
                &SqlState::RAISE_EXCEPTION,
                "{what}: wrong SQLSTATE for {:?}",
                db.message()
            );
        }
    }
}

/// Everything the schema defines, as one sorted text: tables, columns, constraints, indexes,
/// triggers, functions (with a hash of their source) and views, in public and stagehand.
fn catalog_snapshot(client: &mut Client) -> String {
    let row = client
        .query_one(
            "SELECT string_agg(x, E'\\n' ORDER BY x) FROM (
                SELECT 'table ' || schemaname || '.' || tablename AS x
                  FROM pg_tables WHERE schemaname IN ('public', 'stagehand')
                UNION ALL
                SELECT 'column ' || table_schema || '.' || table_name || '.' || column_name || ' '
                       || data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '')
                  FROM information_schema.columns WHERE table_schema IN ('public', 'stagehand')
                UNION ALL
                SELECT 'constraint ' || conrelid::regclass::text || '.' || conname || ' '
                       || pg_get_constraintdef(oid)
                  FROM pg_constraint WHERE connamespace IN ('public'::regnamespace, 'stagehand'::regnamespace)
                UNION ALL
                SELECT 'index ' || schemaname || '.' || indexname || ' ' || indexdef
                  FROM pg_indexes WHERE schemaname IN ('public', 'stagehand')
                UNION ALL
                SELECT 'trigger ' || tgrelid::regclass::text || '.' || tgname || ' ' || pg_get_triggerdef(oid)
                  FROM pg_trigger WHERE NOT tgisinternal
                UNION ALL
                SELECT 'function ' || oid::regprocedure::text || ' ' || md5(prosrc)
                  FROM pg_proc WHERE pronamespace = 'public'::regnamespace
                UNION ALL
                SELECT 'view ' || schemaname || '.' || viewname || ' ' || definition
                  FROM pg_views WHERE schemaname IN ('public', 'stagehand')
             ) s",
            &[],
        )
        .expect("catalog snapshot");
    row.get::<_, Option<String>>(0).unwrap_or_default()
}

/// Row counts of every table the fixture touches.
fn row_counts(client: &mut Client) -> Vec<(&'static str, i64)> {
    const TABLES: &[&str] = &[
        "facility",
        "dept",
        "show",
        "show_stats",
        "alloc",
        "subscription",
        "folder",
        "folder_level",
        "folder_resource",
        "point",
        "host",
        "host_stat",
        "host_tag",
        "job",
        "job_stat",
        "job_resource",
        "job_usage",
        "job_mem",
        "job_history",
        "layer",
        "layer_stat",
        "layer_resource",
        "layer_usage",
        "layer_mem",
        "layer_history",
        "frame",
        "frame_history",
        "proc",
        "stagehand.schema_migrations",
    ];
    let mut counts = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        counts.push((
            *table,
            count(client, &format!("SELECT count(*) FROM {table}"), &[]),
        ));
    }
    counts
}

#[test]
fn applying_the_schema_again_changes_nothing() {
    let db = common::TestDb::new();
    let mut client = db.client();
    let fx = seed(&mut client);

    let catalog_before = catalog_snapshot(&mut client);
    let rows_before = row_counts(&mut client);
    assert!(
        catalog_before.contains("trigger frame.update_frame_status_counts"),
        "the snapshot sees the triggers"
    );
    assert!(
        rows_before
            .iter()
            .filter(|(t, _)| !matches!(*t, "frame_history" | "proc"))
            .all(|(_, n)| *n > 0),
        "the fixture fills every table but frame_history and proc: {rows_before:?}"
    );

    stagehand::db::migrate::apply_all(&mut client)
        .expect("apply_all on an already migrated database");
    // Each stagehand migration is idempotent on its own too, not only through the ledger.
    client
        .batch_execute(include_str!(
            "../../sql/stagehand/V001__stagehand_schema.sql"
        ))
        .expect("V001 applied a second time");
    stagehand::db::migrate::apply_all(&mut client).expect("apply_all a third time");

    let catalog_after = catalog_snapshot(&mut client);
    if catalog_after != catalog_before {
        let before: std::collections::BTreeSet<_> = catalog_before.lines().collect();
        let after: std::collections::BTreeSet<_> = catalog_after.lines().collect();
        panic!(
            "re-applying sql/ changed the catalog:\n  removed: {:#?}\n  added: {:#?}",
            before.difference(&after).collect::<Vec<_>>(),
            after.difference(&before).collect::<Vec<_>>()
        );
    }
    assert_eq!(
        row_counts(&mut client),
        rows_before,
        "re-applying sql/ changed row counts"
    );
    assert_eq!(
        count(
            &mut client,
            "SELECT count(*) FROM stagehand.schema_migrations WHERE version = 1",
            &[]
        ),
        1,
        "V001 is recorded exactly once"
    );
    assert_eq!(
        count(
            &mut client,
            "SELECT count(*) FROM facility WHERE pk_facility = $1",
            &[&fx.facility]
        ),
        1,
        "the seeded facility survives"
    );
    // The triggers still work after being replaced.
    assert_eq!(layer_counts(&mut client, &fx).waiting, FRAMES as i64);
    client
        .execute(
            "UPDATE frame SET str_state = 'RUNNING' WHERE pk_frame = $1",
            &[&fx.frames[0]],
        )
        .expect("WAITING -> RUNNING after re-applying");
    assert_eq!(
        layer_counts(&mut client, &fx).running,
        1,
        "update_frame_status_counts still fires once"
    );
}

#[test]
fn insert_triggers_create_companion_rows_and_nothing_counts_setup_frames() {
    let db = common::TestDb::new();
    let mut client = db.client();
    let fx = insert_fixture(&mut client);

    // Rows created by Cuebot's triggers, keyed by the parent's key.
    for (table, key_column, parent) in [
        ("folder_level", "pk_folder_level", &fx.folder),
        ("folder_resource", "pk_folder_resource", &fx.folder),
        ("job_stat", "pk_job_stat", &fx.job),
        ("job_resource", "pk_job_resource", &fx.job),
        ("job_usage", "pk_job_usage", &fx.job),
        ("job_mem", "pk_job_mem", &fx.job),
        ("job_history", "pk_job", &fx.job),
        ("layer_stat", "pk_layer_stat", &fx.layer),
        ("layer_resource", "pk_layer_resource", &fx.layer),
        ("layer_usage", "pk_layer_usage", &fx.layer),
        ("layer_mem", "pk_layer_mem", &fx.layer),
        ("layer_history", "pk_layer", &fx.layer),
    ] {
        let n = count(
            &mut client,
            &format!("SELECT count(*) FROM {table} WHERE {key_column} = $1"),
            &[parent],
        );
        assert_eq!(
            n, 1,
            "{table}: the insert trigger must create exactly one row keyed by the parent"
        );
    }
    assert_eq!(
        count(
            &mut client,
            "SELECT count(*) FROM point WHERE pk_point = $1 AND pk_dept = $2",
            &[&fx.point, &fx.dept]
        ),
        1,
        "point is inserted explicitly (no trigger creates it)"
    );
    assert_eq!(
        count(
            &mut client,
            "SELECT count(*) FROM folder WHERE pk_folder = $1 AND b_default",
            &[&fx.folder]
        ),
        1,
        "before_insert_folder makes a root folder the default"
    );
    assert_eq!(
        count(
            &mut client,
            "SELECT int_max_cores::bigint FROM job_resource WHERE pk_job = $1",
            &[&fx.job]
        ),
        i64::from(JOB_MAX_CORES),
        "job_resource is adjusted with UPDATE"
    );

    let zero = StateCounts {
        waiting: 0,
        running: 0,
        dead: 0,
        depend: 0,
        eaten: 0,
        succeeded: 0,
        checkpoint: 0,
    };
    assert_eq!(
        layer_counts(&mut client, &fx),
        zero,
        "inserting frames counts nothing"
    );
    assert_eq!(move_setup_to_waiting(&mut client, &fx), FRAMES as u64);
    assert_eq!(
        layer_counts(&mut client, &fx),
        zero,
        "SETUP -> WAITING counts nothing (Cuebot counts in Java)"
    );
    assert_eq!(
        job_counts(&mut client, &fx),
        zero,
        "SETUP -> WAITING counts nothing on job_stat either"
    );
    assert_eq!(
        count(
            &mut client,
            "SELECT count(*) FROM frame WHERE pk_job = $1 AND ts_eligible IS NOT NULL",
            &[&fx.job]
        ),
        FRAMES as i64,
        "SETUP -> WAITING stamps ts_eligible (V42)"
    );

    set_activation_counts(&mut client, &fx);
    assert_eq!(
        layer_counts(&mut client, &fx),
        StateCounts {
            waiting: FRAMES as i64,
            ..zero
        }
    );
    assert_eq!(
        job_counts(&mut client, &fx),
        StateCounts {
            waiting: FRAMES as i64,
            ..zero
        }
    );
    assert_eq!(
        count(
            &mut client,
            "SELECT count(*) FROM vs_waiting WHERE pk_show = $1",
            &[&fx.show]
        ),
        1,
        "an activated show with waiting frames and core headroom is listed by vs_waiting"
    );
}

#[test]
fn frame_state_changes_move_layer_and_job_counters_like_cuebot() {
    let db = common::TestDb::new();
    let mut client = db.client();
    let fx = seed(&mut client);
    let frame = &fx.frames[0];

    let layer0 = layer_counts(&mut client, &fx);
    let job0 = job_counts(&mut client, &fx);
    assert_eq!(
        layer0.waiting, FRAMES as i64,
        "seeded layer has every frame waiting"
    );
    assert_eq!(
        job0.waiting, FRAMES as i64,
        "seeded job has every frame waiting"
    );

    // WAITING -> RUNNING, shaped like the scheduler's UPDATE_FRAME_STARTED.
    let started = client
        .execute(
            "UPDATE frame SET str_state = 'RUNNING', str_host = $2, int_cores = 100, int_mem_reserved = 1048576,
                              int_gpus = 0, int_gpu_mem_reserved = 0, ts_updated = current_timestamp,
                              ts_started = current_timestamp, ts_stopped = NULL, int_version = int_version + 1
              WHERE pk_frame = $1 AND str_state = 'WAITING' AND int_version = 0",
            &[frame, &fx.host_name],
        )
        .expect("WAITING -> RUNNING");
    assert_eq!(started, 1, "the guarded start matches the waiting frame");
    let layer1 = layer_counts(&mut client, &fx);
    let job1 = job_counts(&mut client, &fx);
    assert_eq!(
        layer1,
        StateCounts {
            waiting: layer0.waiting - 1,
            running: layer0.running + 1,
            ..layer0
        },
        "layer_stat after WAITING -> RUNNING: waiting -1, running +1, nothing else"
    );
    assert_eq!(
        job1,
        StateCounts {
            waiting: job0.waiting - 1,
            running: job0.running + 1,
            ..job0
        },
        "job_stat after WAITING -> RUNNING: waiting -1, running +1, nothing else"
    );
    assert_eq!(
        count(
            &mut client,
            "SELECT count(*) FROM layer_stat WHERE pk_layer = $1 AND ts_started IS NOT NULL",
            &[&fx.layer]
        ),
        1,
        "entering RUNNING stamps layer_stat.ts_started (V43)"
    );
    assert_eq!(
        count(
            &mut client,
            "SELECT count(*) FROM frame_history WHERE pk_frame = $1 AND int_ts_stopped = 0 AND pk_alloc = $2",
            &[frame, &fx.alloc]
        ),
        1,
        "frame_history_open opens a row with the host's allocation"
    );

    // RUNNING -> SUCCEEDED.
    client
        .execute(
            "UPDATE frame SET str_state = 'SUCCEEDED', int_exit_status = 0, ts_stopped = current_timestamp,
                              ts_updated = current_timestamp, int_version = int_version + 1
              WHERE pk_frame = $1 AND str_state = 'RUNNING'",
            &[frame],
        )
        .expect("RUNNING -> SUCCEEDED");
    assert_eq!(
        layer_counts(&mut client, &fx),
        StateCounts {
            running: layer1.running - 1,
            succeeded: layer1.succeeded + 1,
            ..layer1
        },
        "layer_stat after RUNNING -> SUCCEEDED: running -1, succeeded +1, nothing else"
    );
    assert_eq!(
        job_counts(&mut client, &fx),
        StateCounts {
            running: job1.running - 1,
            succeeded: job1.succeeded + 1,
            ..job1
        },
        "job_stat after RUNNING -> SUCCEEDED: running -1, succeeded +1, nothing else"
    );
    assert_eq!(
        count(
            &mut client,
            "SELECT count(*) FROM layer_stat WHERE pk_layer = $1 AND ts_stopped IS NOT NULL",
            &[&fx.layer]
        ),
        1,
        "leaving RUNNING stamps layer_stat.ts_stopped (V43)"
    );
    assert_eq!(
        count(
            &mut client,
            "SELECT count(*) FROM frame_history WHERE pk_frame = $1 AND int_ts_stopped > 0",
            &[frame]
        ),
        1,
        "frame_history_open closes the row"
    );

    // An update that keeps the state does not count.
    let layer2 = layer_counts(&mut client, &fx);
    client
        .execute(
            "UPDATE frame SET int_mem_max_used = 42 WHERE pk_frame = $1",
            &[frame],
        )
        .expect("same-state update");
    assert_eq!(
        layer_counts(&mut client, &fx),
        layer2,
        "no state change, no counter change"
    );

    // There is no int_setup_count: moving a frame back into SETUP fails, as in Cuebot.
    let err = client
        .execute(
            "UPDATE frame SET str_state = 'SETUP' WHERE pk_frame = $1",
            &[&fx.frames[1]],
        )
        .expect_err("WAITING -> SETUP must fail for lack of a counter");
    let message = err
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(
        message.contains("int_setup_count"),
        "unexpected error for WAITING -> SETUP: {message:?}"
    );
}

#[test]
fn verify_host_resources_refuses_negative_idle_values() {
    let db = common::TestDb::new();
    let mut client = db.client();
    let fx = seed(&mut client);

    for (column, message) in [
        ("int_cores_idle", "unable to allocate additional core units"),
        ("int_mem_idle", "unable to allocate additional memory"),
        ("int_gpus_idle", "unable to allocate additional GPU units"),
        (
            "int_gpu_mem_idle",
            "unable to allocate additional GPU memory",
        ),
    ] {
        let result = client.execute(
            &format!("UPDATE host SET {column} = -1 WHERE pk_host = $1"),
            &[&fx.host],
        );
        assert_raised(result, message, &format!("host.{column} = -1"));
    }
    let idle = client
        .query_one(
            "SELECT int_cores_idle, int_mem_idle FROM host WHERE pk_host = $1",
            &[&fx.host],
        )
        .expect("read host");
    assert_eq!(
        (idle.get::<_, i64>(0), idle.get::<_, i64>(1)),
        (800, 16777216),
        "refused updates leave the host as it was"
    );

    // The scheduler's guarded booking update still works down to exactly zero.
    let booked = client
        .execute(
            "UPDATE host SET int_cores_idle = int_cores_idle - 800, int_mem_idle = int_mem_idle - 1048576
              WHERE pk_host = $1 AND int_cores_idle >= 800 AND int_mem_idle >= 1048576",
            &[&fx.host],
        )
        .expect("booking the whole host");
    assert_eq!(booked, 1, "booking every idle core is allowed");
    assert_raised(
        client.execute(
            "UPDATE host SET int_cores_idle = int_cores_idle - 100 WHERE pk_host = $1",
            &[&fx.host],
        ),
        "unable to allocate additional core units",
        "unguarded over-booking",
    );
}

#[test]
fn before_insert_proc_refuses_a_proc_without_cores() {
    let db = common::TestDb::new();
    let mut client = db.client();
    let fx = seed(&mut client);
    let insert = "INSERT INTO proc (pk_proc, pk_host, pk_show, pk_layer, pk_job, pk_frame, int_cores_reserved,
                                    int_mem_reserved, int_mem_pre_reserved, int_mem_used, int_gpus_reserved,
                                    int_gpu_mem_reserved, int_gpu_mem_pre_reserved, int_gpu_mem_used, b_local)
                  VALUES ($1, $2, $3, $4, $5, $6, $7, 1048576, 1048576, 262144, 0, 0, 0, 0, false)
                  ON CONFLICT (pk_frame) DO NOTHING";
    let frame = &fx.frames[0];

    for cores in [0i64, -100] {
        assert_raised(
            client.execute(
                insert,
                &[
                    &key(),
                    &fx.host,
                    &fx.show,
                    &fx.layer,
                    &fx.job,
                    frame,
                    &cores,
                ],
            ),
            "failed to allocate proc, tried to allocate 0 cores",
            &format!("proc with int_cores_reserved = {cores}"),
        );
    }
    assert_eq!(
        count(&mut client, "SELECT count(*) FROM proc", &[]),
        0,
        "refused procs are not inserted"
    );

    let first = client
        .execute(
            insert,
            &[
                &key(),
                &fx.host,
                &fx.show,
                &fx.layer,
                &fx.job,
                frame,
                &100i64,
            ],
        )
        .expect("a proc with cores");
    assert_eq!(first, 1, "a proc with 100 centicores is accepted");
    let second = client
        .execute(
            insert,
            &[
                &key(),
                &fx.host,
                &fx.show,
                &fx.layer,
                &fx.job,
                frame,
                &100i64,
            ],
        )
        .expect("a second proc for the same frame is skipped, not an error");
    assert_eq!(
        second, 0,
        "c_proc_uk (one proc per frame) makes ON CONFLICT (pk_frame) skip the second proc"
    );
}

#[test]
fn verify_subscription_refuses_cores_over_burst_unless_the_burst_changes_too() {
    let db = common::TestDb::new();
    let mut client = db.client();
    let fx = seed(&mut client);
    let sub = &fx.subscription;
    let read = |client: &mut Client| -> (i32, i64) {
        let row = client
            .query_one(
                "SELECT int_cores, int_burst FROM subscription WHERE pk_subscription = $1",
                &[sub],
            )
            .expect("read subscription");
        (row.get(0), row.get(1))
    };

    let up_to_burst = client
        .execute(
            &format!("UPDATE subscription SET int_cores = {SUB_BURST} WHERE pk_subscription = $1"),
            &[sub],
        )
        .expect("cores up to the burst are allowed");
    assert_eq!(up_to_burst, 1);

    assert_raised(
        client.execute(
            &format!(
                "UPDATE subscription SET int_cores = {} WHERE pk_subscription = $1",
                SUB_BURST + 100
            ),
            &[sub],
        ),
        "subscription has exceeded burst size",
        "int_cores above an unchanged burst",
    );
    assert_eq!(
        read(&mut client),
        (SUB_BURST as i32, SUB_BURST),
        "the refused update changed nothing"
    );

    // The bypass idiom (recalculate_subs, stagehand's recompute): move the burst in the same
    // statement, then restore it; neither statement is checked.
    let over = SUB_BURST + 100;
    client
        .execute(
            &format!("UPDATE subscription SET int_cores = {over}, int_burst = {over} WHERE pk_subscription = $1"),
            &[sub],
        )
        .expect("cores above the old burst are allowed when the burst changes in the same statement");
    client
        .execute(
            &format!("UPDATE subscription SET int_burst = {SUB_BURST} WHERE pk_subscription = $1"),
            &[sub],
        )
        .expect("restoring the burst below the cores is allowed (only growing cores is checked)");
    assert_eq!(
        read(&mut client),
        (over as i32, SUB_BURST),
        "the bypass leaves cores over the restored burst"
    );

    // Lowering the cores is never checked, even while over the burst.
    client
        .execute(
            "UPDATE subscription SET int_cores = 0 WHERE pk_subscription = $1",
            &[sub],
        )
        .expect("lowering cores");
}

#[test]
fn verify_job_resources_refuses_cores_over_max_cores() {
    let db = common::TestDb::new();
    let mut client = db.client();
    let fx = seed(&mut client);
    let job = &fx.job;

    client
        .execute(
            &format!("UPDATE job_resource SET int_cores = {JOB_MAX_CORES} WHERE pk_job = $1"),
            &[job],
        )
        .expect("cores up to int_max_cores are allowed");
    assert_raised(
        client.execute(
            &format!(
                "UPDATE job_resource SET int_cores = {} WHERE pk_job = $1",
                JOB_MAX_CORES + 100
            ),
            &[job],
        ),
        "job has exceeded max cores",
        "int_cores above an unchanged int_max_cores",
    );
    // int_max_gpus defaults to 100 on the row after_insert_job creates.
    assert_raised(
        client.execute(
            "UPDATE job_resource SET int_gpus = 101 WHERE pk_job = $1",
            &[job],
        ),
        "job has exceeded max GPU units",
        "int_gpus above an unchanged int_max_gpus",
    );
    let row = client
        .query_one(
            "SELECT int_cores, int_gpus FROM job_resource WHERE pk_job = $1",
            &[job],
        )
        .expect("read job_resource");
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i32>(1)),
        (i64::from(JOB_MAX_CORES), 0),
        "refused updates changed nothing"
    );

    // The bypass idiom: set int_max_cores with int_cores, then restore it.
    let over = JOB_MAX_CORES + 100;
    client
        .execute(
            &format!("UPDATE job_resource SET int_cores = {over}, int_max_cores = {over} WHERE pk_job = $1"),
            &[job],
        )
        .expect("cores above the old max are allowed when the max changes in the same statement");
    client
        .execute(
            &format!("UPDATE job_resource SET int_max_cores = {JOB_MAX_CORES} WHERE pk_job = $1"),
            &[job],
        )
        .expect("restoring the max below the cores is allowed");
}

/// Two migrators on an empty database at once (a test farm, the demo, two instances of a
/// bench): each looked for `public.frame`, found none and applied the files side by side, and
/// one failed on a catalog row the other had just created. They take turns now, and the
/// second finds the schema the first made.
#[test]
fn two_migrations_at_once_on_an_empty_database_both_succeed() {
    let db = common::TestDb::empty();
    let url = db.url().to_owned();
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut client = Client::connect(&url, postgres::NoTls).unwrap();
                stagehand::db::migrate::migrate(&mut client)
            })
        })
        .collect();
    let reports: Vec<_> = runs
        .into_iter()
        .map(|r| r.join().unwrap().expect("both migrations succeed"))
        .collect();
    let created = reports.iter().filter(|r| r.created_compat_schema).count();
    assert_eq!(created, 1, "one applied the files, the other found them");
    let triggers: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.frame'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(triggers > 0, "Cuebot's frame triggers are there");
}
