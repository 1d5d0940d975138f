//! What a pass reads before it matches: its pending jobs (claimed for this booking thread),
//! their caps pinned, their layers with WAITING frames and the environments RQD needs.

use std::collections::{HashMap, HashSet};

use crate::{
    accounting::{CapPin, Limits},
    cluster::{Cluster, feed::PassResult},
    config::Config,
    db::{
        self,
        jobs::{LayerWork, PendingJob},
    },
    ids::{FolderId, JobId, LayerId},
    metrics,
    pipeline::{JobClaim, Shared},
};

/// What a pass read before matching: its jobs (claimed for this booking thread), their caps
/// pinned, their layers with WAITING frames and the environments RQD needs.
pub(super) struct PassInput<'s> {
    pub(super) jobs: Vec<PendingJob>,
    /// The page of jobs filled with candidates left over: a pass beside this one would find
    /// jobs of its own (see `cluster::turn`).
    pub(super) full_page: bool,
    /// Held for their drop, which comes only after the last batch committed (see `matcher::run`):
    /// the job claims of this booking thread and the pins of the jobs' caps.
    _claims: Vec<JobClaim<'s>>,
    _cap_pins: Vec<CapPin>,
    pub(super) layers: Vec<LayerWork>,
    /// Room under each limit of the layers, read unlocked with them (a hint).
    pub(super) limit_rooms: HashMap<String, i64>,
    pub(super) job_env: HashMap<JobId, Vec<(String, String)>>,
    pub(super) layer_env: HashMap<LayerId, Vec<(String, String)>>,
}

/// Reads the pass's jobs, claims them, pins their caps, then reads their layers, frames and
/// environments; `Err` carries the pass's result when there is nothing to match.
pub(super) fn read_pass<'s>(
    shared: &'s Shared,
    conn: &mut db::Conn,
    cluster: &Cluster,
    config: &Config,
) -> Result<Result<PassInput<'s>, PassResult>, db::DbError> {
    let s = &config.scheduler;
    let pending = query_jobs(shared, conn, cluster, config)?;
    // Claim the jobs before reading their frames: whoever held a job committed before letting
    // go of it, so the frames read below are current.
    let found = pending.jobs.len();
    let (jobs, claims, full_page) = claim_page(shared, pending.jobs, s.max_jobs_per_pass as usize);
    if jobs.is_empty() {
        // Work held by another thread is not "no work": the cluster comes back as soon as
        // that thread lets go, instead of sleeping while its frames wait.
        let busy = pending.held_elsewhere > 0 || found > 0;
        return Ok(Err(if busy {
            PassResult::Busy
        } else if pending.only_full {
            // Its jobs wait for room under their caps: that frees as their frames end, which
            // a saturated cluster wakes for (see `cluster::feed`), or as an operator raises a
            // cap — which no pass reads while the job is left out, so the next recompute
            // round re-reads the caps.
            shared.ledger.request_caps();
            PassResult::Saturated
        } else {
            PassResult::NoJobs
        }));
    }
    let cap_pins = pin_caps(shared, conn, &jobs)?;
    let job_ids: Vec<JobId> = jobs.iter().map(|j| j.id.clone()).collect();
    let layers = db::jobs::layers_with_frames(
        conn,
        &job_ids,
        &cluster.tags,
        i64::from(s.frames_per_layer),
        i64::from(config.reservations.min_history),
    )?;
    let limits: std::collections::BTreeSet<&str> = layers
        .iter()
        .flat_map(|l| l.limits.iter().map(|id| id.as_str()))
        .collect();
    let limits: Vec<&str> = limits.into_iter().collect();
    let limit_rooms = db::jobs::limit_rooms(conn, &limits)?;
    let (job_env, layer_env) = if config.rqd.dry_run {
        Default::default()
    } else {
        db::jobs::envs(conn.client(), &job_ids)?
    };
    Ok(Ok(PassInput {
        jobs,
        full_page,
        _claims: claims,
        _cap_pins: cap_pins,
        layers,
        limit_rooms,
        job_env,
        layer_env,
    }))
}

/// Claims the first `page` of `candidates` (in order) that no other booking thread holds;
/// returns them, their claims, and whether the page filled with candidates left over.
fn claim_page(
    shared: &Shared,
    candidates: Vec<PendingJob>,
    page: usize,
) -> (Vec<PendingJob>, Vec<JobClaim<'_>>, bool) {
    let (mut jobs, mut claims) = (Vec::new(), Vec::new());
    let mut rest = candidates.into_iter();
    for job in rest.by_ref() {
        if let Some(claim) = shared.claim_job(&job.id) {
            claims.push(claim);
            jobs.push(job);
            if jobs.len() >= page {
                break;
            }
        }
    }
    (jobs, claims, rest.next().is_some())
}

/// The pass's job query, skipping the jobs other booking threads hold, with the cluster's
/// job hint.
fn query_jobs(
    shared: &Shared,
    conn: &mut db::Conn,
    cluster: &Cluster,
    config: &Config,
) -> Result<db::jobs::Pending, db::DbError> {
    let s = &config.scheduler;
    let started = std::time::Instant::now();
    // A copy: no guard of the set is held across the query.
    let held: HashSet<JobId> = shared.busy_jobs.iter().map(|j| j.key().clone()).collect();
    // Taken out for the query and put back after it: no guard is held across it. A pass of
    // the same cluster running beside this one (see `cluster::turn`) reads without it.
    let mut hint = shared
        .job_hints
        .remove(&cluster.key)
        .map(|(_, h)| h)
        .unwrap_or_default();
    let full = shared.ledger.full();
    let query = db::jobs::JobQuery {
        show: &cluster.show,
        facility: &cluster.facility,
        tags: &cluster.tags,
        order: s.job_order,
        full_jobs: &full.jobs,
        full_folders: &full.folders,
    };
    let limit = i64::from(s.max_jobs_per_pass);
    let pending = db::jobs::pending_jobs(conn.client(), &query, limit, &held, &mut hint)?;
    if !hint.is_empty() {
        shared.job_hints.insert(cluster.key.clone(), hint);
    }
    metrics::JOB_QUERY_SECONDS.observe(started.elapsed().as_secs_f64());
    metrics::JOBS_QUERIED.inc_by(pending.jobs.len() as u64);
    Ok(pending)
}

/// Job and folder caps are read with the pass, so a new job or folder is never unbounded;
/// the pins keep the job caps through any re-sync until the pass has committed.
fn pin_caps(
    shared: &Shared,
    conn: &mut db::Conn,
    jobs: &[PendingJob],
) -> Result<Vec<CapPin>, db::DbError> {
    let pins = jobs
        .iter()
        .map(|job| {
            shared
                .ledger
                .set_job_limits(&job.id, Limits::job(job.max_cores, job.max_gpus))
        })
        .collect();
    let folders: Vec<FolderId> = {
        let set: HashSet<&FolderId> = jobs.iter().map(|j| &j.folder).collect();
        set.into_iter().cloned().collect()
    };
    for (folder, limits) in db::accounting::folder_limits(conn.client(), &folders)? {
        shared.ledger.set_folder_limits(&folder, limits);
    }
    Ok(pins)
}
