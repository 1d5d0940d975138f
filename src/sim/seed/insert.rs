//! The inserts of [`seed`](super::seed): shared facility and department, allocations,
//! limits, shows with folders and subscriptions, then hosts and jobs as column vectors for
//! multi-row `unnest` inserts (a row at a time would take minutes for a large farm).

use postgres::{Client, Transaction};

use super::{FarmSpec, LayerSpec, Seeded, ShowSpec, frame_name, key};
use crate::{db::DbError, model::CORE};

/// Inserts a farm in one transaction.
pub fn seed(client: &mut Client, spec: &FarmSpec) -> Result<Seeded, DbError> {
    let mut tx = client.transaction()?;
    let mut out = Seeded::default();
    let facility_name = if spec.facility.is_empty() {
        "local"
    } else {
        spec.facility.as_str()
    };
    out.facility = shared_facility(&mut tx, facility_name)?;
    out.dept = shared_dept(&mut tx)?;
    for a in &spec.allocs {
        let id = key();
        tx.execute(
            "INSERT INTO alloc (pk_alloc, str_name, str_tag, pk_facility) VALUES ($1, $2, $3, $4)",
            &[&id, &a.name, &a.tag, &out.facility],
        )?;
        out.allocs.push(id);
    }
    for (name, max) in &spec.limits {
        let id = key();
        tx.execute(
            "INSERT INTO limit_record (pk_limit_record, str_name, int_max_value) VALUES ($1, $2, $3)",
            &[&id, name, max],
        )?;
        out.limits.push(id);
    }
    for s in &spec.shows {
        seed_show(&mut tx, s, &mut out)?;
    }
    seed_hosts(&mut tx, spec, &mut out)?;
    seed_jobs(&mut tx, spec, &mut out)?;
    tx.commit()?;
    Ok(out)
}

/// Submits `jobs` (their shows: indexes into `spec.shows`) to the farm seeded from `spec` as
/// `seeded`, in one transaction, as Cuebot's job launcher inserts a job: job, layers, WAITING
/// frames, counts. Returns their keys and the database's clock read as the transaction's last
/// statement, right before its COMMIT (a submission is visible no earlier than that).
pub fn submit(
    client: &mut Client,
    spec: &FarmSpec,
    seeded: &Seeded,
    jobs: Vec<super::JobSpec>,
) -> Result<(Vec<String>, String), DbError> {
    let submitted = FarmSpec {
        facility: spec.facility.clone(),
        allocs: Vec::new(),
        shows: spec.shows.clone(),
        hosts: Vec::new(),
        jobs,
        limits: Vec::new(),
    };
    let mut out = Seeded {
        jobs: Vec::new(),
        layers: Vec::new(),
        frames: 0,
        ..seeded.clone()
    };
    let mut tx = client.transaction()?;
    seed_jobs(&mut tx, &submitted, &mut out)?;
    let at: String = tx.query_one("SELECT clock_timestamp()::text", &[])?.get(0);
    tx.commit()?;
    Ok((out.jobs, at))
}

/// Gathers the planner's statistics of the seeded farm, as autovacuum has on a farm that has
/// been running. A database seeded in one transaction has none for up to a minute
/// (`autovacuum_naptime`): the planner takes its tables for nearly empty and may, e.g.,
/// drive a booking's frame UPDATE from the pending jobs through every WAITING frame
/// instead of from the frames it books, which makes every batch cost as much as the farm
/// is large.
pub fn analyze(client: &mut Client) -> Result<(), DbError> {
    client.batch_execute("ANALYZE")?;
    Ok(())
}

// Facilities and departments are shared by name, so several farms can go in one database.

/// The facility named `name`, inserted unless it exists.
fn shared_facility(tx: &mut Transaction<'_>, name: &str) -> Result<String, DbError> {
    let found = tx.query_opt(
        "SELECT pk_facility FROM facility WHERE str_name = $1",
        &[&name],
    )?;
    if let Some(r) = found {
        return Ok(r.get(0));
    }
    let id = key();
    tx.execute(
        "INSERT INTO facility (pk_facility, str_name) VALUES ($1, $2)",
        &[&id, &name],
    )?;
    Ok(id)
}

/// The default department `lighting`, inserted unless it exists.
fn shared_dept(tx: &mut Transaction<'_>) -> Result<String, DbError> {
    let found = tx.query_opt("SELECT pk_dept FROM dept WHERE str_name = 'lighting'", &[])?;
    if let Some(r) = found {
        return Ok(r.get(0));
    }
    let id = key();
    tx.execute(
        "INSERT INTO dept (pk_dept, str_name, b_default) VALUES ($1, 'lighting', true)",
        &[&id],
    )?;
    Ok(id)
}

/// A show with its root folder (and its cap), its `point` and its subscriptions.
fn seed_show(tx: &mut Transaction<'_>, s: &ShowSpec, out: &mut Seeded) -> Result<(), DbError> {
    let (show, folder) = (key(), key());
    tx.execute(
        "INSERT INTO show (pk_show, str_name, b_scheduler_managed) VALUES ($1, $2, $3)",
        &[&show, &s.name, &s.managed],
    )?;
    tx.execute(
        "INSERT INTO folder (pk_folder, pk_show, str_name, pk_dept) VALUES ($1, $2, $3, $4)",
        &[&folder, &show, &s.name, &out.dept],
    )?;
    let max_cores = if s.folder_max_cores > 0 {
        s.folder_max_cores * CORE as i32
    } else {
        -1
    };
    tx.execute(
        "UPDATE folder_resource SET int_max_cores = $2 WHERE pk_folder = $1",
        &[&folder, &max_cores],
    )?;
    tx.execute(
        "INSERT INTO point (pk_point, pk_dept, pk_show) VALUES ($1, $2, $3)",
        &[&key(), &out.dept, &show],
    )?;
    for sub in &s.subs {
        let alloc = out
            .allocs
            .get(sub.alloc)
            .ok_or_else(|| DbError::Schema(format!("show {}: no alloc {}", s.name, sub.alloc)))?;
        tx.execute(
            "INSERT INTO subscription (pk_subscription, pk_alloc, pk_show, int_size, int_burst)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &key(),
                alloc,
                &show,
                &(i64::from(sub.size) * i64::from(CORE)),
                &(i64::from(sub.burst) * i64::from(CORE)),
            ],
        )?;
    }
    out.shows.push(show);
    out.folders.push(folder);
    Ok(())
}

/// The `host` rows of a farm, a column each, for one `unnest` insert.
#[derive(Default)]
struct HostRows {
    id: Vec<String>,
    alloc: Vec<String>,
    name: Vec<String>,
    cores: Vec<i64>,
    mem: Vec<i64>,
    gpus: Vec<i64>,
    gpu_mem: Vec<i64>,
    mode: Vec<i32>,
}

/// The `host_tag` rows of a farm, a column each.
#[derive(Default)]
struct TagRows {
    id: Vec<String>,
    host: Vec<String>,
    tag: Vec<String>,
    kind: Vec<String>,
}

impl TagRows {
    fn push(&mut self, host: &str, tag: &str, kind: &str) {
        self.id.push(key());
        self.host.push(host.to_owned());
        self.tag.push(tag.to_owned());
        self.kind.push(kind.to_owned());
    }
}

fn seed_hosts(tx: &mut Transaction<'_>, spec: &FarmSpec, out: &mut Seeded) -> Result<(), DbError> {
    let mut h = HostRows::default();
    // host_stat: (pk_host_stat, pk_host, str_os).
    let mut stat = (Vec::new(), Vec::new(), Vec::new());
    let mut tags = TagRows::default();
    for host in &spec.hosts {
        let id = key();
        let alloc = out
            .allocs
            .get(host.alloc)
            .ok_or_else(|| DbError::Schema(format!("host {}: no alloc", host.name)))?;
        h.id.push(id.clone());
        h.alloc.push(alloc.clone());
        h.name.push(host.name.clone());
        h.cores.push(i64::from(host.cores) * i64::from(CORE));
        h.mem.push(host.mem_kb as i64);
        h.gpus.push(i64::from(host.gpus));
        h.gpu_mem.push(host.gpu_mem_kb as i64);
        h.mode.push(host.thread_mode.to_db());
        stat.0.push(key());
        stat.1.push(id.clone());
        stat.2.push(host.os.clone());
        tags.push(&id, &spec.allocs[host.alloc].tag, "ALLOC");
        tags.push(&id, &host.name, "HOSTNAME");
        for (tag, kind) in &host.tags {
            tags.push(&id, tag, &kind.label().to_uppercase());
        }
        out.hosts.push(id);
    }
    insert_hosts(tx, &h, &stat, &tags)
}

/// Inserts the hosts, their `host_stat` rows and their tags.
fn insert_hosts(
    tx: &mut Transaction<'_>,
    h: &HostRows,
    stat: &(Vec<String>, Vec<String>, Vec<String>),
    tags: &TagRows,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO host (pk_host, pk_alloc, str_name, str_lock_state, int_cores, int_cores_idle, int_mem, int_mem_idle,
                           int_gpus, int_gpus_idle, int_gpu_mem, int_gpu_mem_idle, int_thread_mode)
         SELECT id, alloc, name, 'OPEN', cores, cores, mem, mem, gpus, gpus, gpu_mem, gpu_mem, mode
           FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::int[])
                AS t(id, alloc, name, cores, mem, gpus, gpu_mem, mode)",
        &[&h.id, &h.alloc, &h.name, &h.cores, &h.mem, &h.gpus, &h.gpu_mem, &h.mode],
    )?;
    tx.execute(
        "INSERT INTO host_stat (pk_host_stat, pk_host, int_mem_total, int_mem_free, int_gpu_mem_total, int_gpu_mem_free,
                                str_os, str_state, ts_ping)
         SELECT s.id, s.host, h.int_mem, h.int_mem, h.int_gpu_mem, h.int_gpu_mem, s.os, 'UP', now()
           FROM unnest($1::text[], $2::text[], $3::text[]) AS s(id, host, os) JOIN host h ON h.pk_host = s.host",
        &[&stat.0, &stat.1, &stat.2],
    )?;
    tx.execute(
        "INSERT INTO host_tag (pk_host_tag, pk_host, str_tag, str_tag_type)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])",
        &[&tags.id, &tags.host, &tags.tag, &tags.kind],
    )?;
    Ok(())
}

/// The `frame` rows of a farm, a column each, for batched `unnest` inserts. Cuebot's order
/// columns: `dispatch_order` is the frame's position in its layer, `layer_order` the
/// layer's dispatch order.
#[derive(Default)]
struct FrameRows {
    id: Vec<String>,
    layer: Vec<String>,
    job: Vec<String>,
    name: Vec<String>,
    number: Vec<i64>,
    dispatch_order: Vec<i32>,
    layer_order: Vec<i64>,
}

/// What the counts in `layer_stat`, `job_stat` and `job` are set to once the frames are in.
#[derive(Default)]
struct Totals {
    /// (pk_layer, frames).
    layers: Vec<(String, i64)>,
    /// (pk_job, frames, layers).
    jobs: Vec<(String, i64, i32)>,
}

fn seed_jobs(tx: &mut Transaction<'_>, spec: &FarmSpec, out: &mut Seeded) -> Result<(), DbError> {
    let mut frames = FrameRows::default();
    let mut totals = Totals::default();
    for (jn, job) in spec.jobs.iter().enumerate() {
        let id = insert_job(tx, spec, jn, out)?;
        let mut layer_ids = Vec::new();
        let mut job_frames = 0i64;
        for (ln, layer) in job.layers.iter().enumerate() {
            let lid = insert_layer(tx, &id, ln, layer, &out.limits)?;
            let n = layer_frames(&mut frames, &id, &lid, ln, layer)?;
            totals.layers.push((lid.clone(), n));
            job_frames += n;
            layer_ids.push(lid);
        }
        totals
            .jobs
            .push((id.clone(), job_frames, job.layers.len() as i32));
        out.jobs.push(id);
        out.layers.push(layer_ids);
    }
    out.frames = frames.id.len();
    insert_frames(tx, &frames)?;
    set_counts(tx, totals)
}

/// Job `jn` of the spec with its `job_resource` settings and its environment; returns its key.
fn insert_job(
    tx: &mut Transaction<'_>,
    spec: &FarmSpec,
    jn: usize,
    out: &Seeded,
) -> Result<String, DbError> {
    let job = &spec.jobs[jn];
    let id = key();
    let show = out
        .shows
        .get(job.show)
        .ok_or_else(|| DbError::Schema(format!("job {}: no show", job.name)))?;
    let folder = &out.folders[job.show];
    let show_name = &spec.shows[job.show].name;
    let os: Option<&str> = if job.os.is_empty() {
        None
    } else {
        Some(job.os.as_str())
    };
    // Earlier jobs started earlier: one second apart, the last one now.
    let age = (spec.jobs.len() - jn) as f64;
    tx.execute(
        "INSERT INTO job (pk_job, pk_folder, pk_show, str_name, str_visible_name, str_shot, str_user, str_state,
                          str_log_dir, int_uid, pk_facility, pk_dept, str_show, str_os, ts_started)
         VALUES ($1, $2, $3, $4, $4, 'sh010', 'artist', 'PENDING', '/shots/logs', 1000, $5, $6, $7, $8,
                 now() - make_interval(secs => $9))",
        &[&id, folder, show, &job.name, &out.facility, &out.dept, show_name, &os, &age],
    )?;
    tx.execute(
        "UPDATE job_resource SET int_priority = $2, int_max_cores = $3, int_min_cores = $4, int_max_gpus = $5 WHERE pk_job = $1",
        &[
            &id,
            &job.priority,
            &(if job.max_cores > 0 { job.max_cores * CORE as i32 } else { super::UNCAPPED_JOB_CORES }),
            &(job.min_cores * CORE as i32),
            &(if job.max_gpus > 0 { job.max_gpus } else { super::UNCAPPED_JOB_GPUS }),
        ],
    )?;
    for (k, v) in &job.env {
        tx.execute(
            "INSERT INTO job_env (pk_job_env, pk_job, str_key, str_value) VALUES ($1, $2, $3, $4)",
            &[&key(), &id, k, v],
        )?;
    }
    Ok(id)
}

/// Layer `ln` of job `job` with its environment and limits (`limits`: the seeded limit
/// keys); returns its key.
fn insert_layer(
    tx: &mut Transaction<'_>,
    job: &str,
    ln: usize,
    layer: &LayerSpec,
    limits: &[String],
) -> Result<String, DbError> {
    let lid = key();
    tx.execute(
        "INSERT INTO layer (pk_layer, pk_job, str_name, str_cmd, str_range, int_chunk_size, int_dispatch_order,
                            int_cores_min, int_cores_max, int_mem_min, int_gpus_min, int_gpu_mem_min,
                            b_threadable, str_tags, str_services, str_type)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 'Render')",
        &[
            &lid,
            &job,
            &layer.name,
            &layer.command,
            &layer.range,
            &i64::from(layer.chunk.max(1)),
            &(ln as i64),
            &layer.cores_min,
            &(layer.cores_max as i32),
            &(layer.mem_kb as i64),
            &i64::from(layer.gpus),
            &(layer.gpu_mem_kb as i64),
            &layer.threadable,
            &layer.tags,
            &layer.services,
        ],
    )?;
    for (k, v) in &layer.env {
        tx.execute(
            "INSERT INTO layer_env (pk_layer_env, pk_layer, pk_job, str_key, str_value) VALUES ($1, $2, $3, $4, $5)",
            &[&key(), &lid, &job, k, v],
        )?;
    }
    for l in &layer.limits {
        let limit = limits
            .get(*l)
            .ok_or_else(|| DbError::Schema(format!("layer {}: no limit {l}", layer.name)))?;
        tx.execute(
            "INSERT INTO layer_limit (pk_layer_limit, pk_layer, pk_limit_record) VALUES ($1, $2, $3)",
            &[&key(), &lid, limit],
        )?;
    }
    Ok(lid)
}

/// Adds the frames of a layer to `frames`: one per chunk start, as Cuebot creates them.
/// Returns how many.
fn layer_frames(
    frames: &mut FrameRows,
    job: &str,
    lid: &str,
    ln: usize,
    layer: &LayerSpec,
) -> Result<i64, DbError> {
    let set = crate::frameset::FrameSet::parse(&layer.range)
        .map_err(|e| DbError::Schema(format!("layer {}: {e}", layer.name)))?;
    let chunk = layer.chunk.max(1) as usize;
    let mut n = 0i64;
    for (i, number) in set.iter().enumerate().step_by(chunk) {
        frames.id.push(key());
        frames.layer.push(lid.to_owned());
        frames.job.push(job.to_owned());
        frames.name.push(frame_name(number, &layer.name));
        frames.number.push(i64::from(number));
        frames.dispatch_order.push(i as i32);
        frames.layer_order.push(ln as i64);
        n += 1;
    }
    Ok(n)
}

/// Inserts the frames, 10,000 a statement.
fn insert_frames(tx: &mut Transaction<'_>, frames: &FrameRows) -> Result<(), DbError> {
    for start in (0..frames.id.len()).step_by(10_000) {
        let end = (start + 10_000).min(frames.id.len());
        tx.execute(
            "INSERT INTO frame (pk_frame, pk_layer, pk_job, str_name, str_state, int_number, int_dispatch_order,
                                int_layer_order, int_version, ts_updated)
             SELECT id, layer, job, name, 'WAITING', number, dispatch_order, layer_order, 1, now()
               FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::int[], $7::bigint[])
                    AS t(id, layer, job, name, number, dispatch_order, layer_order)",
            &[
                &&frames.id[start..end],
                &&frames.layer[start..end],
                &&frames.job[start..end],
                &&frames.name[start..end],
                &&frames.number[start..end],
                &&frames.dispatch_order[start..end],
                &&frames.layer_order[start..end],
            ],
        )?;
    }
    Ok(())
}

/// Sets the frame counts Cuebot sets from Java: `layer_stat`, `job_stat` and `job`.
fn set_counts(tx: &mut Transaction<'_>, totals: Totals) -> Result<(), DbError> {
    let (ids, counts): (Vec<String>, Vec<i64>) = totals.layers.into_iter().unzip();
    tx.execute(
        "UPDATE layer_stat ls SET int_total_count = t.n, int_waiting_count = t.n
           FROM unnest($1::text[], $2::bigint[]) AS t(id, n) WHERE ls.pk_layer = t.id",
        &[&ids, &counts],
    )?;
    let ids: Vec<&String> = totals.jobs.iter().map(|j| &j.0).collect();
    let counts: Vec<i64> = totals.jobs.iter().map(|j| j.1).collect();
    let layers: Vec<i32> = totals.jobs.iter().map(|j| j.2).collect();
    tx.execute(
        "UPDATE job_stat js SET int_waiting_count = t.n FROM unnest($1::text[], $2::bigint[]) AS t(id, n) WHERE js.pk_job = t.id",
        &[&ids, &counts],
    )?;
    tx.execute(
        "UPDATE job j SET int_frame_count = t.n, int_layer_count = t.l
           FROM unnest($1::text[], $2::bigint[], $3::int[]) AS t(id, n, l) WHERE j.pk_job = t.id",
        &[&ids, &counts, &layers],
    )?;
    Ok(())
}
