//! Seeding farms in one call: facilities, shows, allocations with tags, subscriptions,
//! folders with `folder_resource`, departments and `point`, hosts with `host_stat` and
//! `host_tag`, jobs with layers, frames, envs and limits — Cuebot-shaped rows, in Cuebot's
//! units (cores ×100, KB).
//!
//! Rows Cuebot's own triggers create on insert (`job_stat`, `job_resource`, `layer_stat`,
//! `layer_resource`, `folder_resource`, histories) are left to those triggers and then
//! updated, as Cuebot's job launcher does; frame counts in `layer_stat`/`job_stat` are set
//! explicitly because Cuebot sets them from Java, not from a trigger. Everything goes in with
//! multi-row `unnest` inserts in one transaction, so a 1,500-host farm seeds in a second.

use postgres::Client;
use uuid::Uuid;

use crate::{
    db::DbError,
    model::{CORE, TagType, ThreadMode},
};

/// KB in one GiB (Cuebot's memory unit is KB).
pub const GB: u64 = 1024 * 1024;

fn key() -> String {
    Uuid::new_v4().to_string()
}

/// An allocation and its tag.
#[derive(Clone, Debug)]
pub struct AllocSpec {
    /// `alloc.str_name` (Cuebot names them `facility.name`).
    pub name: String,
    /// `alloc.str_tag`.
    pub tag: String,
}

/// A show's subscription to an allocation, in cores.
#[derive(Clone, Debug)]
pub struct SubSpec {
    /// Index into [`FarmSpec::allocs`].
    pub alloc: usize,
    /// Size in cores.
    pub size: u32,
    /// Burst in cores.
    pub burst: u32,
}

/// A show.
#[derive(Clone, Debug)]
pub struct ShowSpec {
    /// `show.str_name`.
    pub name: String,
    /// `show.b_scheduler_managed`.
    pub managed: bool,
    /// Subscriptions.
    pub subs: Vec<SubSpec>,
    /// Root folder max cores (≤ 0 unlimited).
    pub folder_max_cores: i32,
}

/// A host.
#[derive(Clone, Debug)]
pub struct HostSpec {
    /// `host.str_name`.
    pub name: String,
    /// Index into [`FarmSpec::allocs`].
    pub alloc: usize,
    /// Whole cores.
    pub cores: u32,
    /// Memory in KB.
    pub mem_kb: u64,
    /// GPUs.
    pub gpus: u32,
    /// GPU memory in KB.
    pub gpu_mem_kb: u64,
    /// `host_stat.str_os`.
    pub os: String,
    /// `host.int_thread_mode`.
    pub thread_mode: ThreadMode,
    /// Extra tags besides the allocation's: (tag, type).
    pub tags: Vec<(String, TagType)>,
}

impl HostSpec {
    /// An open Linux host of `cores` cores and `mem_gb` GB in allocation `alloc`, no GPUs,
    /// `Auto` thread mode, no tags beyond the allocation's.
    pub fn linux(name: String, alloc: usize, cores: u32, mem_gb: u64) -> HostSpec {
        HostSpec {
            name,
            alloc,
            cores,
            mem_kb: mem_gb * GB,
            gpus: 0,
            gpu_mem_kb: 0,
            os: "linux".into(),
            thread_mode: ThreadMode::Auto,
            tags: Vec::new(),
        }
    }
}

/// A layer.
#[derive(Clone, Debug)]
pub struct LayerSpec {
    /// `layer.str_name`.
    pub name: String,
    /// `layer.str_cmd`.
    pub command: String,
    /// `layer.str_range` (OpenCue frame-set syntax).
    pub range: String,
    /// `layer.int_chunk_size`.
    pub chunk: u32,
    /// `layer.int_cores_min` in centicores (0 whole host, < 0 all but N).
    pub cores_min: i64,
    /// `layer.int_cores_max` in centicores (0 unlimited).
    pub cores_max: i64,
    /// `layer.int_mem_min` in KB.
    pub mem_kb: u64,
    /// `layer.int_gpus_min`.
    pub gpus: u32,
    /// `layer.int_gpu_mem_min` in KB.
    pub gpu_mem_kb: u64,
    /// `layer.b_threadable`.
    pub threadable: bool,
    /// `layer.str_tags` (`|`-separated).
    pub tags: String,
    /// `layer.str_services`.
    pub services: String,
    /// `layer_env` rows.
    pub env: Vec<(String, String)>,
    /// Indices into [`FarmSpec::limits`].
    pub limits: Vec<usize>,
    /// Seconds the simulator runs each frame of this layer (mean).
    pub runtime_secs: f64,
}

impl LayerSpec {
    /// A one-core, 1 GB, threadable render layer over `range` with `tags`.
    pub fn simple(name: &str, range: &str, tags: &str) -> LayerSpec {
        LayerSpec {
            name: name.to_owned(),
            command: format!("/shots/bin/render -f #FRAME_START#-#FRAME_END# -l {name}"),
            range: range.to_owned(),
            chunk: 1,
            cores_min: i64::from(CORE),
            cores_max: 0,
            mem_kb: GB,
            gpus: 0,
            gpu_mem_kb: 0,
            threadable: true,
            tags: tags.to_owned(),
            services: "default".to_owned(),
            env: Vec::new(),
            limits: Vec::new(),
            runtime_secs: 5.0,
        }
    }

    /// Sets how long each frame runs, `millis`, both as the simulator's mean and in the
    /// environment the fake RQD reads it from (it never sees the spec).
    pub fn set_runtime_ms(&mut self, millis: u64) {
        self.runtime_secs = millis as f64 / 1000.0;
        self.env.push((
            crate::sim::fake_rqd::RUNTIME_ENV.to_owned(),
            millis.to_string(),
        ));
    }
}

/// A job.
#[derive(Clone, Debug)]
pub struct JobSpec {
    /// Index into [`FarmSpec::shows`].
    pub show: usize,
    /// `job.str_name`.
    pub name: String,
    /// `job_resource.int_priority`.
    pub priority: i32,
    /// `job_resource.int_max_cores` in cores (≤ 0 unlimited).
    pub max_cores: i32,
    /// `job_resource.int_min_cores` in cores.
    pub min_cores: i32,
    /// `job_resource.int_max_gpus` (≤ 0 unlimited).
    pub max_gpus: i32,
    /// `job.str_os` (empty = any).
    pub os: String,
    /// `job_env` rows.
    pub env: Vec<(String, String)>,
    /// Layers in dispatch order.
    pub layers: Vec<LayerSpec>,
}

impl JobSpec {
    /// A job of `layers` in show `show`: no core or GPU cap, a minimum of one core, any OS,
    /// no environment.
    pub fn simple(show: usize, name: String, priority: i32, layers: Vec<LayerSpec>) -> JobSpec {
        JobSpec {
            show,
            name,
            priority,
            max_cores: 0,
            min_cores: 1,
            max_gpus: 0,
            os: String::new(),
            env: Vec::new(),
            layers,
        }
    }
}

/// A whole farm.
#[derive(Clone, Debug, Default)]
pub struct FarmSpec {
    /// `facility.str_name`.
    pub facility: String,
    /// Allocations.
    pub allocs: Vec<AllocSpec>,
    /// Shows.
    pub shows: Vec<ShowSpec>,
    /// Hosts.
    pub hosts: Vec<HostSpec>,
    /// Jobs.
    pub jobs: Vec<JobSpec>,
    /// Limits: (name, max running frames).
    pub limits: Vec<(String, i32)>,
}

impl FarmSpec {
    /// One show on one allocation (tag `general`) of `hosts` equal Linux hosts, subscribed
    /// with size and burst `cores`; no jobs yet.
    pub fn single(hosts: usize, host_cores: u32, host_mem_gb: u64, cores: u32) -> FarmSpec {
        FarmSpec {
            facility: "local".into(),
            allocs: vec![AllocSpec {
                name: "local.general".into(),
                tag: "general".into(),
            }],
            shows: vec![ShowSpec {
                name: "testshow".into(),
                managed: true,
                subs: vec![SubSpec {
                    alloc: 0,
                    size: cores,
                    burst: cores,
                }],
                folder_max_cores: 0,
            }],
            hosts: (0..hosts)
                .map(|i| HostSpec::linux(format!("host{i:03}"), 0, host_cores, host_mem_gb))
                .collect(),
            jobs: Vec::new(),
            limits: Vec::new(),
        }
    }
}

/// Keys of what was seeded, by spec index.
#[derive(Clone, Debug, Default)]
pub struct Seeded {
    /// `pk_facility`.
    pub facility: String,
    /// `pk_dept`.
    pub dept: String,
    /// `pk_alloc` per alloc.
    pub allocs: Vec<String>,
    /// `pk_show` per show.
    pub shows: Vec<String>,
    /// Root `pk_folder` per show.
    pub folders: Vec<String>,
    /// `pk_host` per host.
    pub hosts: Vec<String>,
    /// `pk_job` per job.
    pub jobs: Vec<String>,
    /// `pk_layer` per job, per layer.
    pub layers: Vec<Vec<String>>,
    /// `pk_limit_record` per limit.
    pub limits: Vec<String>,
    /// Total frames seeded.
    pub frames: usize,
}

/// Inserts a farm in one transaction.
pub fn seed(client: &mut Client, spec: &FarmSpec) -> Result<Seeded, DbError> {
    let mut tx = client.transaction()?;
    let mut out = Seeded {
        facility: key(),
        dept: key(),
        ..Seeded::default()
    };
    let facility_name = if spec.facility.is_empty() {
        "local"
    } else {
        spec.facility.as_str()
    };
    // Facilities and departments are shared by name, so several farms can go in one database.
    out.facility = match tx.query_opt(
        "SELECT pk_facility FROM facility WHERE str_name = $1",
        &[&facility_name],
    )? {
        Some(r) => r.get(0),
        None => {
            tx.execute(
                "INSERT INTO facility (pk_facility, str_name) VALUES ($1, $2)",
                &[&out.facility, &facility_name],
            )?;
            out.facility.clone()
        }
    };
    out.dept = match tx.query_opt("SELECT pk_dept FROM dept WHERE str_name = 'lighting'", &[])? {
        Some(r) => r.get(0),
        None => {
            tx.execute(
                "INSERT INTO dept (pk_dept, str_name, b_default) VALUES ($1, 'lighting', true)",
                &[&out.dept],
            )?;
            out.dept.clone()
        }
    };
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
        let (show, folder) = (key(), key());
        tx.execute(
            "INSERT INTO show (pk_show, str_name, b_scheduler_managed) VALUES ($1, $2, $3)",
            &[&show, &s.name, &s.managed],
        )?;
        tx.execute(
            "INSERT INTO folder (pk_folder, pk_show, str_name, pk_dept) VALUES ($1, $2, $3, $4)",
            &[&folder, &show, &s.name, &out.dept],
        )?;
        tx.execute(
            "UPDATE folder_resource SET int_max_cores = $2 WHERE pk_folder = $1",
            &[
                &folder,
                &(if s.folder_max_cores > 0 {
                    s.folder_max_cores * CORE as i32
                } else {
                    -1
                }),
            ],
        )?;
        tx.execute(
            "INSERT INTO point (pk_point, pk_dept, pk_show) VALUES ($1, $2, $3)",
            &[&key(), &out.dept, &show],
        )?;
        for sub in &s.subs {
            let alloc = out.allocs.get(sub.alloc).ok_or_else(|| {
                DbError::Schema(format!("show {}: no alloc {}", s.name, sub.alloc))
            })?;
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
    }
    seed_hosts(&mut tx, spec, &mut out)?;
    seed_jobs(&mut tx, spec, &mut out)?;
    tx.commit()?;
    Ok(out)
}

fn seed_hosts(
    tx: &mut postgres::Transaction<'_>,
    spec: &FarmSpec,
    out: &mut Seeded,
) -> Result<(), DbError> {
    let mut h = (
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
    );
    let mut stat = (Vec::new(), Vec::new(), Vec::new());
    let mut tags = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for host in &spec.hosts {
        let id = key();
        let alloc = out
            .allocs
            .get(host.alloc)
            .ok_or_else(|| DbError::Schema(format!("host {}: no alloc", host.name)))?;
        h.0.push(id.clone());
        h.1.push(alloc.clone());
        h.2.push(host.name.clone());
        h.3.push(i64::from(host.cores) * i64::from(CORE));
        h.4.push(host.mem_kb as i64);
        h.5.push(i64::from(host.gpus));
        h.6.push(host.gpu_mem_kb as i64);
        h.7.push(host.thread_mode.to_db());
        stat.0.push(key());
        stat.1.push(id.clone());
        stat.2.push(host.os.clone());
        let mut push_tag = |tag: &str, kind: &str| {
            tags.0.push(key());
            tags.1.push(id.clone());
            tags.2.push(tag.to_owned());
            tags.3.push(kind.to_owned());
        };
        push_tag(&spec.allocs[host.alloc].tag, "ALLOC");
        push_tag(&host.name, "HOSTNAME");
        for (tag, kind) in &host.tags {
            push_tag(tag, &kind.label().to_uppercase());
        }
        out.hosts.push(id);
    }
    tx.execute(
        "INSERT INTO host (pk_host, pk_alloc, str_name, str_lock_state, int_cores, int_cores_idle, int_mem, int_mem_idle,
                           int_gpus, int_gpus_idle, int_gpu_mem, int_gpu_mem_idle, int_thread_mode)
         SELECT id, alloc, name, 'OPEN', cores, cores, mem, mem, gpus, gpus, gpu_mem, gpu_mem, mode
           FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::int[])
                AS t(id, alloc, name, cores, mem, gpus, gpu_mem, mode)",
        &[&h.0, &h.1, &h.2, &h.3, &h.4, &h.5, &h.6, &h.7],
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
        &[&tags.0, &tags.1, &tags.2, &tags.3],
    )?;
    Ok(())
}

fn seed_jobs(
    tx: &mut postgres::Transaction<'_>,
    spec: &FarmSpec,
    out: &mut Seeded,
) -> Result<(), DbError> {
    // Cuebot's frame order columns: int_dispatch_order is the frame's position in its layer,
    // int_layer_order the layer's dispatch order.
    let mut frames = (
        Vec::<String>::new(),
        Vec::<String>::new(),
        Vec::<String>::new(),
        Vec::<String>::new(),
        Vec::<i64>::new(),
        Vec::<i32>::new(),
        Vec::<i64>::new(),
    );
    let mut layer_totals: Vec<(String, i64)> = Vec::new();
    let mut job_totals: Vec<(String, i64, i32)> = Vec::new();
    for (jn, job) in spec.jobs.iter().enumerate() {
        let id = key();
        let show = out
            .shows
            .get(job.show)
            .ok_or_else(|| DbError::Schema(format!("job {}: no show", job.name)))?
            .clone();
        let folder = out.folders[job.show].clone();
        let show_name = &spec.shows[job.show].name;
        let os: Option<&str> = if job.os.is_empty() {
            None
        } else {
            Some(job.os.as_str())
        };
        tx.execute(
            "INSERT INTO job (pk_job, pk_folder, pk_show, str_name, str_visible_name, str_shot, str_user, str_state,
                              str_log_dir, int_uid, pk_facility, pk_dept, str_show, str_os, ts_started)
             VALUES ($1, $2, $3, $4, $4, 'sh010', 'artist', 'PENDING', '/shots/logs', 1000, $5, $6, $7, $8,
                     now() - make_interval(secs => $9))",
            &[&id, &folder, &show, &job.name, &out.facility, &out.dept, show_name, &os, &((spec.jobs.len() - jn) as f64)],
        )?;
        tx.execute(
            "UPDATE job_resource SET int_priority = $2, int_max_cores = $3, int_min_cores = $4, int_max_gpus = $5 WHERE pk_job = $1",
            &[
                &id,
                &job.priority,
                &(if job.max_cores > 0 { job.max_cores * CORE as i32 } else { -1 }),
                &(job.min_cores * CORE as i32),
                &(if job.max_gpus > 0 { job.max_gpus } else { -1 }),
            ],
        )?;
        for (k, v) in &job.env {
            tx.execute("INSERT INTO job_env (pk_job_env, pk_job, str_key, str_value) VALUES ($1, $2, $3, $4)", &[&key(), &id, k, v])?;
        }
        let mut layer_ids = Vec::new();
        let mut job_frames = 0i64;
        for (ln, layer) in job.layers.iter().enumerate() {
            let lid = key();
            tx.execute(
                "INSERT INTO layer (pk_layer, pk_job, str_name, str_cmd, str_range, int_chunk_size, int_dispatch_order,
                                    int_cores_min, int_cores_max, int_mem_min, int_gpus_min, int_gpu_mem_min,
                                    b_threadable, str_tags, str_services, str_type)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 'Render')",
                &[
                    &lid,
                    &id,
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
                    &[&key(), &lid, &id, k, v],
                )?;
            }
            for l in &layer.limits {
                let limit = out.limits.get(*l).ok_or_else(|| {
                    DbError::Schema(format!("layer {}: no limit {l}", layer.name))
                })?;
                tx.execute(
                    "INSERT INTO layer_limit (pk_layer_limit, pk_layer, pk_limit_record) VALUES ($1, $2, $3)",
                    &[&key(), &lid, limit],
                )?;
            }
            // One frame per chunk start, as Cuebot creates them.
            let set = crate::frameset::FrameSet::parse(&layer.range)
                .map_err(|e| DbError::Schema(format!("layer {}: {e}", layer.name)))?;
            let chunk = layer.chunk.max(1) as usize;
            let mut n = 0i64;
            for (i, number) in set.iter().enumerate().step_by(chunk) {
                frames.0.push(key());
                frames.1.push(lid.clone());
                frames.2.push(id.clone());
                frames.3.push(frame_name(number, &layer.name));
                frames.4.push(i64::from(number));
                frames.5.push(i as i32);
                frames.6.push(ln as i64);
                n += 1;
            }
            layer_totals.push((lid.clone(), n));
            job_frames += n;
            layer_ids.push(lid);
        }
        job_totals.push((id.clone(), job_frames, job.layers.len() as i32));
        out.jobs.push(id);
        out.layers.push(layer_ids);
    }
    out.frames = frames.0.len();
    for start in (0..frames.0.len()).step_by(10_000) {
        let end = (start + 10_000).min(frames.0.len());
        tx.execute(
            "INSERT INTO frame (pk_frame, pk_layer, pk_job, str_name, str_state, int_number, int_dispatch_order,
                                int_layer_order, int_version, ts_updated)
             SELECT id, layer, job, name, 'WAITING', number, dispatch_order, layer_order, 1, now()
               FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::int[], $7::bigint[])
                    AS t(id, layer, job, name, number, dispatch_order, layer_order)",
            &[
                &&frames.0[start..end],
                &&frames.1[start..end],
                &&frames.2[start..end],
                &&frames.3[start..end],
                &&frames.4[start..end],
                &&frames.5[start..end],
                &&frames.6[start..end],
            ],
        )?;
    }
    let (ids, counts): (Vec<String>, Vec<i64>) = layer_totals.into_iter().unzip();
    tx.execute(
        "UPDATE layer_stat ls SET int_total_count = t.n, int_waiting_count = t.n
           FROM unnest($1::text[], $2::bigint[]) AS t(id, n) WHERE ls.pk_layer = t.id",
        &[&ids, &counts],
    )?;
    let ids: Vec<&String> = job_totals.iter().map(|j| &j.0).collect();
    let counts: Vec<i64> = job_totals.iter().map(|j| j.1).collect();
    let layers: Vec<i32> = job_totals.iter().map(|j| j.2).collect();
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

/// Cuebot's frame name: the zero-padded frame number and the layer name, `0001-render`.
pub fn frame_name(number: i32, layer: &str) -> String {
    format!("{number:04}-{layer}")
}
