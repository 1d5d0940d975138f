//! Accounting SQL: the booked snapshot the counters re-sync to, and the caps. (The recompute
//! of Cuebot's resource tables is [`super::recompute`].)
//!
//! The row-shaped results ([`Snapshot`], [`Caps`], [`Limits`]) are defined here, where they
//! are read, and re-exported by [`crate::accounting`], which consumes them: `db` depends on
//! nothing above it.

use std::collections::HashMap;

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
    /// A job's maxima (`job_resource.int_max_cores`, `int_max_gpus`) as Cuebot's dispatch
    /// reads them: always a cap, so 0 or less leaves no room (an operator holds a job by
    /// setting its maximum cores to 0; Cuebot's own default is 100 cores and 100 GPUs).
    pub(crate) fn job(cores: i64, gpus: i64) -> Limits {
        Limits {
            cores: Some(cores.max(0)),
            gpus: Some(gpus.max(0)),
        }
    }

    /// A folder's maxima (`folder_resource.int_max_cores`, `int_max_gpus`) as Cuebot's
    /// dispatch reads them: -1 (the column's default) is unlimited, anything else a cap, so 0
    /// leaves no room.
    pub(crate) fn folder(cores: i64, gpus: i64) -> Limits {
        let cap = |v: i64| (v != FOLDER_UNLIMITED).then_some(v.max(0));
        Limits {
            cores: cap(cores),
            gpus: cap(gpus),
        }
    }
}

/// `folder_resource.int_max_cores` / `int_max_gpus` of a folder without a cap.
const FOLDER_UNLIMITED: i64 = -1;

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
    /// Show and allocation names per (show, alloc), for the subscription gauge.
    pub names: HashMap<(ShowId, AllocId), (String, String)>,
}

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
        "SELECT sub.pk_show, sub.pk_alloc, sub.int_burst::bigint, sub.int_size::bigint, s.str_name, a.str_name
           FROM subscription sub JOIN show s ON s.pk_show = sub.pk_show JOIN alloc a ON a.pk_alloc = sub.pk_alloc
          WHERE s.b_scheduler_managed",
        &[],
    )? {
        let key: (ShowId, AllocId) = (r.get(0), r.get(1));
        caps.bursts.insert(key.clone(), r.get(2));
        caps.sizes.insert(key.clone(), r.get(3));
        caps.names.insert(key, (r.get(4), r.get(5)));
    }
    for r in client.query(
        "SELECT fr.pk_folder, fr.int_max_cores::bigint, fr.int_max_gpus::bigint FROM folder_resource fr
           JOIN folder f ON f.pk_folder = fr.pk_folder JOIN show s ON s.pk_show = f.pk_show
          WHERE s.b_scheduler_managed",
        &[],
    )? {
        caps.folders.insert(r.get(0), Limits::folder(r.get(1), r.get(2)));
    }
    for r in client.query(
        "SELECT jr.pk_job, jr.int_max_cores::bigint, jr.int_max_gpus::bigint FROM job_resource jr
           JOIN job j ON j.pk_job = jr.pk_job JOIN show s ON s.pk_show = j.pk_show
          WHERE s.b_scheduler_managed AND j.str_state <> 'FINISHED'",
        &[],
    )? {
        caps.jobs.insert(r.get(0), Limits::job(r.get(1), r.get(2)));
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
        .map(|r| (r.get(0), Limits::folder(r.get(1), r.get(2))))
        .collect())
}
