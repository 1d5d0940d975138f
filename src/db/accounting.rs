//! Accounting SQL: the bulk recompute of Cuebot's resource tables from `proc`, the booked
//! snapshot the counters re-sync to, and the caps.
//!
//! Only rows of scheduler-managed shows are touched, and only rows whose value changed are
//! written (no table-wide churn, no row-by-row loops). Cuebot's verify triggers on
//! `job_resource` and `subscription` fire only when the cap column is unchanged and the usage
//! grows; a recomputed usage may legitimately exceed a cap (an operator lowered it), so the
//! update moves the cap by one in the same statement — the trigger does not fire — and a second
//! statement of the same transaction moves it back. Other sessions never see the moved cap.
//! Rows are locked in key order before they are updated: the booking transaction holds the
//! same cap rows FOR SHARE in key order ([`super::caps`]), so the two cannot deadlock.
//!
//! The row-shaped results ([`Snapshot`], [`Caps`], [`Limits`]) are defined here, where they
//! are read, and re-exported by [`crate::accounting`], which consumes them: `db` depends on
//! nothing above it.

use std::{collections::HashMap, sync::LazyLock};

use postgres::Client;

use super::DbError;
use crate::{
    ids::{AllocId, FolderId, JobId, ShowId},
    model::CoresGpus,
};

/// A cap's limits: `None` for an unlimited dimension.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Centicores.
    pub cores: Option<i64>,
    /// GPUs.
    pub gpus: Option<i64>,
}

impl Limits {
    /// Cuebot's convention: a value ≤ 0 means unlimited.
    pub(crate) fn from_db(cores: i64, gpus: i64) -> Limits {
        Limits {
            cores: (cores > 0).then_some(cores),
            gpus: (gpus > 0).then_some(gpus),
        }
    }
}

/// Booked cores and GPUs per vertex.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Per (show, alloc).
    pub subs: HashMap<(ShowId, AllocId), CoresGpus>,
    /// Per folder.
    pub folders: HashMap<FolderId, CoresGpus>,
    /// Per job.
    pub jobs: HashMap<JobId, CoresGpus>,
}

/// Caps as read from the database.
#[derive(Clone, Debug, Default)]
pub struct Caps {
    /// Burst (centicores) per (show, alloc).
    pub bursts: HashMap<(ShowId, AllocId), i64>,
    /// Subscription size (centicores) per (show, alloc).
    pub sizes: HashMap<(ShowId, AllocId), i64>,
    /// Folder limits.
    pub folders: HashMap<FolderId, Limits>,
    /// Job limits.
    pub jobs: HashMap<JobId, Limits>,
}

/// Rows written per table by one recompute.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// `layer_resource` rows.
    pub layer_resource: u64,
    /// `job_resource` rows.
    pub job_resource: u64,
    /// `folder_resource` rows.
    pub folder_resource: u64,
    /// `point` rows.
    pub point: u64,
    /// `subscription` rows.
    pub subscription: u64,
}

/// The procs of jobs of the managed shows a recompute covers (`$1`, see [`HELD`]), as a
/// `FROM … WHERE` fragment a caller may extend with `AND …`.
const MANAGED_PROCS: &str =
    "proc p JOIN job j ON j.pk_job = p.pk_job JOIN show s ON s.pk_show = j.pk_show
                             WHERE s.b_scheduler_managed AND ($1::text[] IS NULL OR s.pk_show = ANY($1))";

/// The shows a recompute covers (`$1`, NULL for all managed shows): with several instances
/// each rewrites only the rows of the shows it holds, so two never race on the same rows.
const HELD: &str = "($1::text[] IS NULL OR s.pk_show = ANY($1))";

/// Rebuilds `int_cores`/`int_gpus` of the five resource tables from `proc`.
///
/// Layer, folder and point rows have no verify trigger and are rewritten by one statement
/// each; job and subscription rows go through [`update_nudging_cap`], each in its own
/// transaction so the moved cap is never visible outside it.
pub fn recompute_tables(client: &mut Client, shows: Option<&[ShowId]>) -> Result<Written, DbError> {
    let layer_resource = client.execute(LAYER_RESOURCE_SQL.as_str(), &[&shows])?;
    let folder_resource = client.execute(FOLDER_RESOURCE_SQL.as_str(), &[&shows])?;
    let point = client.execute(POINT_SQL.as_str(), &[&shows])?;
    // job_resource: verify_job_resources fires WHEN a max is unchanged AND its usage grows.
    let job_resource = update_nudging_cap(client, &JOB_RESOURCE_SQL, RESTORE_JOB_MAX, shows)?;
    // subscription: verify_subscription fires WHEN burst unchanged AND usage grows.
    let subscription = update_nudging_cap(client, &SUBSCRIPTION_SQL, RESTORE_BURST, shows)?;
    Ok(Written {
        layer_resource,
        job_resource,
        folder_resource,
        point,
        subscription,
    })
}

/// Runs `update` (an UPDATE that raises the cap by one on every row whose usage grew,
/// `RETURNING pk, grew`) and then `restore` (`$1` the keys of those rows) in one transaction;
/// returns the rows updated. The cap moves in the same statement as the usage so the verify
/// trigger does not fire on a usage a lowered cap no longer allows, and moves back before the
/// commit, so no other session ever sees it moved.
fn update_nudging_cap(
    client: &mut Client,
    update: &str,
    restore: &str,
    shows: Option<&[ShowId]>,
) -> Result<u64, DbError> {
    let mut tx = client.transaction()?;
    let rows = tx.query(update, &[&shows])?;
    let grew: Vec<String> = rows
        .iter()
        .filter(|r| r.get::<_, bool>(1))
        .map(|r| r.get(0))
        .collect();
    if !grew.is_empty() {
        tx.execute(restore, &[&grew])?;
    }
    tx.commit()?;
    Ok(rows.len() as u64)
}

/// `layer_resource` of unfinished jobs.
static LAYER_RESOURCE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH live AS (SELECT p.pk_layer, sum(p.int_cores_reserved)::bigint AS cores,
                                  sum(p.int_gpus_reserved)::bigint AS gpus
                             FROM {MANAGED_PROCS} GROUP BY p.pk_layer),
                  target AS (SELECT lr.pk_layer_resource AS pk, coalesce(live.cores, 0) AS cores,
                                    coalesce(live.gpus, 0) AS gpus
                               FROM layer_resource lr
                               JOIN job j ON j.pk_job = lr.pk_job
                               JOIN show s ON s.pk_show = j.pk_show
                               LEFT JOIN live ON live.pk_layer = lr.pk_layer
                              WHERE s.b_scheduler_managed AND j.str_state <> 'FINISHED' AND {HELD}
                                AND (lr.int_cores <> coalesce(live.cores, 0) OR lr.int_gpus <> coalesce(live.gpus, 0)))
             UPDATE layer_resource lr SET int_cores = t.cores, int_gpus = t.gpus
               FROM target t WHERE lr.pk_layer_resource = t.pk"
    )
});

/// `folder_resource`, counting only procs of unfinished jobs; rows locked in key order.
static FOLDER_RESOURCE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH live AS (SELECT j.pk_folder, sum(p.int_cores_reserved)::bigint AS cores,
                                  sum(p.int_gpus_reserved)::bigint AS gpus
                             FROM {MANAGED_PROCS} AND j.str_state <> 'FINISHED' GROUP BY j.pk_folder),
                  target AS (SELECT fr.pk_folder_resource AS pk, coalesce(live.cores, 0) AS cores,
                                    coalesce(live.gpus, 0) AS gpus
                               FROM folder_resource fr
                               JOIN folder f ON f.pk_folder = fr.pk_folder
                               JOIN show s ON s.pk_show = f.pk_show
                               LEFT JOIN live ON live.pk_folder = fr.pk_folder
                              WHERE s.b_scheduler_managed AND {HELD}
                                AND (fr.int_cores <> coalesce(live.cores, 0) OR fr.int_gpus <> coalesce(live.gpus, 0))
                              ORDER BY fr.pk_folder_resource FOR UPDATE OF fr)
             UPDATE folder_resource fr SET int_cores = t.cores, int_gpus = t.gpus
               FROM target t WHERE fr.pk_folder_resource = t.pk"
    )
});

/// `point` (department per show).
static POINT_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH live AS (SELECT j.pk_dept, j.pk_show, sum(p.int_cores_reserved)::bigint AS cores,
                                  sum(p.int_gpus_reserved)::bigint AS gpus
                             FROM {MANAGED_PROCS} GROUP BY j.pk_dept, j.pk_show),
                  target AS (SELECT pt.pk_point AS pk, coalesce(live.cores, 0) AS cores, coalesce(live.gpus, 0) AS gpus
                               FROM point pt
                               JOIN show s ON s.pk_show = pt.pk_show
                               LEFT JOIN live ON live.pk_dept = pt.pk_dept AND live.pk_show = pt.pk_show
                              WHERE s.b_scheduler_managed AND {HELD}
                                AND (pt.int_cores <> coalesce(live.cores, 0) OR pt.int_gpus <> coalesce(live.gpus, 0)))
             UPDATE point pt SET int_cores = t.cores, int_gpus = t.gpus
               FROM target t WHERE pt.pk_point = t.pk"
    )
});

/// `job_resource` of unfinished jobs, the maxima nudged where the usage grows; rows locked
/// in key order.
static JOB_RESOURCE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH live AS (SELECT p.pk_job, sum(p.int_cores_reserved)::bigint AS cores,
                                  sum(p.int_gpus_reserved)::bigint AS gpus
                             FROM {MANAGED_PROCS} GROUP BY p.pk_job),
                  target AS (SELECT jr.pk_job_resource AS pk, coalesce(live.cores, 0) AS cores,
                                    coalesce(live.gpus, 0) AS gpus,
                                    (coalesce(live.cores, 0) > jr.int_cores OR coalesce(live.gpus, 0) > jr.int_gpus) AS grew
                               FROM job_resource jr
                               JOIN job j ON j.pk_job = jr.pk_job
                               JOIN show s ON s.pk_show = j.pk_show
                               LEFT JOIN live ON live.pk_job = jr.pk_job
                              WHERE s.b_scheduler_managed AND j.str_state <> 'FINISHED' AND {HELD}
                                AND (jr.int_cores <> coalesce(live.cores, 0) OR jr.int_gpus <> coalesce(live.gpus, 0))
                              ORDER BY jr.pk_job_resource FOR UPDATE OF jr)
             UPDATE job_resource jr
                SET int_cores = t.cores, int_gpus = t.gpus,
                    int_max_cores = CASE WHEN t.grew THEN jr.int_max_cores + 1 ELSE jr.int_max_cores END,
                    int_max_gpus = CASE WHEN t.grew THEN jr.int_max_gpus + 1 ELSE jr.int_max_gpus END
               FROM target t WHERE jr.pk_job_resource = t.pk
           RETURNING jr.pk_job_resource, t.grew"
    )
});

/// Moves the maxima [`JOB_RESOURCE_SQL`] nudged back.
const RESTORE_JOB_MAX: &str =
    "UPDATE job_resource SET int_max_cores = int_max_cores - 1, int_max_gpus = int_max_gpus - 1
              WHERE pk_job_resource = ANY($1)";

/// `subscription` (procs on hosts of its allocation, not local), the burst nudged where the
/// cores grow; rows locked in key order.
static SUBSCRIPTION_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH live AS (SELECT j.pk_show, h.pk_alloc, sum(p.int_cores_reserved)::bigint AS cores,
                              sum(p.int_gpus_reserved)::bigint AS gpus
                         FROM proc p JOIN host h ON h.pk_host = p.pk_host JOIN job j ON j.pk_job = p.pk_job
                         JOIN show s ON s.pk_show = j.pk_show
                        WHERE s.b_scheduler_managed AND NOT p.b_local AND {HELD}
                        GROUP BY j.pk_show, h.pk_alloc),
              target AS (SELECT sub.pk_subscription AS pk, coalesce(live.cores, 0) AS cores,
                                coalesce(live.gpus, 0) AS gpus, coalesce(live.cores, 0) > sub.int_cores AS grew
                           FROM subscription sub
                           JOIN show s ON s.pk_show = sub.pk_show
                           LEFT JOIN live ON live.pk_show = sub.pk_show AND live.pk_alloc = sub.pk_alloc
                          WHERE s.b_scheduler_managed AND {HELD}
                            AND (sub.int_cores <> coalesce(live.cores, 0) OR sub.int_gpus <> coalesce(live.gpus, 0))
                          ORDER BY sub.pk_subscription FOR UPDATE OF sub)
         UPDATE subscription sub
            SET int_cores = t.cores, int_gpus = t.gpus,
                int_burst = CASE WHEN t.grew THEN sub.int_burst + 1 ELSE sub.int_burst END
           FROM target t WHERE sub.pk_subscription = t.pk
       RETURNING sub.pk_subscription, t.grew"
    )
});

/// Moves the bursts [`SUBSCRIPTION_SQL`] nudged back.
const RESTORE_BURST: &str =
    "UPDATE subscription SET int_burst = int_burst - 1 WHERE pk_subscription = ANY($1)";

/// Booked centicores and GPUs per subscription, folder and job of managed shows, from `proc`.
pub(crate) fn booked_snapshot(client: &mut Client) -> Result<Snapshot, DbError> {
    let rows = client.query(
        "SELECT j.pk_show, h.pk_alloc, j.pk_folder, p.pk_job,
                sum(p.int_cores_reserved)::bigint, sum(p.int_gpus_reserved)::bigint
           FROM proc p JOIN host h ON h.pk_host = p.pk_host JOIN job j ON j.pk_job = p.pk_job
           JOIN show s ON s.pk_show = j.pk_show
          WHERE s.b_scheduler_managed AND NOT p.b_local
          GROUP BY 1, 2, 3, 4",
        &[],
    )?;
    let mut snap = Snapshot::default();
    for r in rows {
        let (show, alloc, folder, job): (ShowId, AllocId, FolderId, JobId) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let amount = CoresGpus::new(r.get(4), r.get(5));
        *snap.subs.entry((show, alloc)).or_default() += amount;
        *snap.folders.entry(folder).or_default() += amount;
        *snap.jobs.entry(job).or_default() += amount;
    }
    Ok(snap)
}

/// Subscription bursts, folder caps and caps of unfinished jobs of managed shows.
pub fn caps(client: &mut Client) -> Result<Caps, DbError> {
    let mut caps = Caps::default();
    for r in client.query(
        "SELECT sub.pk_show, sub.pk_alloc, sub.int_burst::bigint, sub.int_size::bigint FROM subscription sub
           JOIN show s ON s.pk_show = sub.pk_show WHERE s.b_scheduler_managed",
        &[],
    )? {
        caps.bursts.insert((r.get(0), r.get(1)), r.get(2));
        caps.sizes.insert((r.get(0), r.get(1)), r.get(3));
    }
    for r in client.query(
        "SELECT fr.pk_folder, fr.int_max_cores::bigint, fr.int_max_gpus::bigint FROM folder_resource fr
           JOIN folder f ON f.pk_folder = fr.pk_folder JOIN show s ON s.pk_show = f.pk_show
          WHERE s.b_scheduler_managed",
        &[],
    )? {
        caps.folders.insert(r.get(0), Limits::from_db(r.get(1), r.get(2)));
    }
    for r in client.query(
        "SELECT jr.pk_job, jr.int_max_cores::bigint, jr.int_max_gpus::bigint FROM job_resource jr
           JOIN job j ON j.pk_job = jr.pk_job JOIN show s ON s.pk_show = j.pk_show
          WHERE s.b_scheduler_managed AND j.str_state <> 'FINISHED'",
        &[],
    )? {
        caps.jobs
            .insert(r.get(0), Limits::from_db(r.get(1), r.get(2)));
    }
    Ok(caps)
}

/// Folder caps of the given folders (read with each pass, so new folders are never unbounded).
pub(crate) fn folder_limits(
    client: &mut impl postgres::GenericClient,
    folders: &[FolderId],
) -> Result<HashMap<FolderId, Limits>, DbError> {
    Ok(client
        .query(
            "SELECT pk_folder, int_max_cores::bigint, int_max_gpus::bigint FROM folder_resource WHERE pk_folder = ANY($1)",
            &[&folders],
        )?
        .iter()
        .map(|r| (r.get(0), Limits::from_db(r.get(1), r.get(2))))
        .collect())
}
