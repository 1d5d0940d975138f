//! `stagehand bench --workload ceiling`: how fast this PostgreSQL takes the booking writes
//! alone, on the drain farm, so `drain` can be quoted as a ratio to it (issue 14).
//!
//! Only the guarded writes of a booking run, as stagehand's batch issues them: the frame
//! UPDATE guarded on state and version (WAITING → RUNNING, firing Cuebot's triggers), the
//! host's guarded decrement of idle cores and memory, and the proc INSERT — 50 frames a
//! transaction, each statement one multi-row `unnest`. Everything stagehand decides is done
//! beforehand: a first-fit plan on the seeded hosts' idle resources and tags. Jobs and hosts
//! are split between the connections, so no two ever write the same host or stat row: the
//! figure is the writes' own cost, not lock waits. Each connection count runs on its own copy
//! of the freshly seeded database, so the runs are comparable.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Barrier,
    time::Instant,
};

use postgres::{Client, NoTls, Transaction};

use super::rates::{PgCpu, Rates, proc_rates};
use crate::{
    accounting::audit::audit,
    config::Config,
    model::{Resources, split_tags},
    sim::{
        SimError,
        pg::{Durability, PgCluster, PgOptions},
        seed::{FarmSpec, seed},
    },
    sizing::{LayerShape, floor},
};

/// Frames per transaction.
pub const BATCH: usize = 50;

/// The connection counts a ceiling measures.
pub const CONNECTIONS: [usize; 4] = [1, 2, 3, 4];

/// One ceiling run: `connections` writers on a fresh copy of the seeded farm.
#[derive(Clone, Debug, Default)]
pub struct CeilingRun {
    /// Writer connections (one thread each).
    pub connections: usize,
    /// Frames the plan placed.
    pub planned: usize,
    /// Frames committed.
    pub booked: usize,
    /// Frames of batches rolled back because a guard did not hold (none on a fresh farm).
    pub lost: usize,
    /// Booking rates, from the procs' booking times (each a transaction's start, as for
    /// `drain`).
    pub rates: Rates,
    /// Seconds from the writers' common start to the last commit.
    pub wall_secs: f64,
    /// PostgreSQL CPU milliseconds per booked frame (None without `/proc`).
    pub pg_cpu_ms_per_frame: Option<f64>,
    /// Audit violations after the run.
    pub violations: Vec<String>,
}

/// Every run of a ceiling measurement.
#[derive(Clone, Debug, Default)]
pub struct CeilingReport {
    /// Frames seeded (each run's copy holds them all).
    pub seeded: usize,
    /// One run per connection count.
    pub runs: Vec<CeilingRun>,
}

impl CeilingReport {
    /// The run with the highest `rate`.
    pub fn best(&self, rate: fn(&Rates) -> f64) -> Option<&CeilingRun> {
        self.runs
            .iter()
            .max_by(|a, b| rate(&a.rates).total_cmp(&rate(&b.rates)))
    }

    /// Every run's audit violations, each prefixed with its connection count.
    pub fn violations(&self) -> Vec<String> {
        self.runs
            .iter()
            .flat_map(|r| {
                r.violations
                    .iter()
                    .map(move |v| format!("ceiling, {} connection(s): {v}", r.connections))
            })
            .collect()
    }
}

/// Seeds `spec` once into a private cluster, then runs the ceiling with each of
/// `connections` writers on its own copy of that database.
pub fn measure_ceiling(spec: &FarmSpec, connections: &[usize]) -> Result<CeilingReport, SimError> {
    let cluster = PgCluster::start(&PgOptions {
        durability: Durability::Default,
        keep: false,
        max_connections: 100,
    })?;
    let template = "ceiling_seed";
    let url = cluster.create_database(template, None)?;
    let seeded = {
        let mut client = Client::connect(&url, NoTls)?;
        crate::db::migrate::migrate(&mut client)?;
        let frames = seed(&mut client, spec)?.frames;
        // Statistics as drain's farm has them (copied with the database).
        crate::sim::seed::analyze(&mut client)?;
        frames
        // Dropped here: a database with a session cannot be copied.
    };
    let mut report = CeilingReport {
        seeded,
        runs: Vec::new(),
    };
    for &n in connections {
        let url = cluster.create_database(&format!("ceiling{n}"), Some(template))?;
        report.runs.push(run_once(&cluster, &url, n.max(1))?);
    }
    Ok(report)
}

/// Plans, writes with `n` connections, and measures one copy of the farm.
fn run_once(cluster: &PgCluster, url: &str, n: usize) -> Result<CeilingRun, SimError> {
    let mut client = Client::connect(url, NoTls)?;
    let shares = plan(&read_hosts(&mut client)?, &read_frames(&mut client)?, n);
    let writers = shares
        .iter()
        .map(|_| Client::connect(url, NoTls))
        .collect::<Result<Vec<_>, _>>()?;
    let data = cluster.dir().join("data");
    let before = PgCpu::read(&data);
    let mem_used_kb = Config::default().scheduler.mem_reserved_min_kb as i64;
    let started = Instant::now();
    let (booked, lost) = write_all(writers, &shares, mem_used_kb)?;
    let wall_secs = started.elapsed().as_secs_f64();
    let cpu_secs = PgCpu::read(&data)
        .zip(before)
        .map(|(after, before)| before.secs_until(&after, &[]));
    Ok(CeilingRun {
        connections: n,
        planned: shares.iter().map(Vec::len).sum(),
        booked,
        lost,
        rates: proc_rates(&mut client)?,
        wall_secs,
        pg_cpu_ms_per_frame: cpu_secs
            .filter(|_| booked > 0)
            .map(|s| s * 1000.0 / booked as f64),
        violations: audit(&mut client, None)?,
    })
}

/// A seeded host as the plan sees it.
#[derive(Clone, Debug)]
pub(crate) struct PlanHost {
    /// `host.pk_host`.
    pub id: String,
    /// `host.str_name`.
    pub name: String,
    /// Idle resources.
    pub idle: Resources,
    /// Every tag of the host (`host_tag.str_tag`).
    pub tags: Vec<String>,
}

/// A WAITING frame as the plan sees it.
#[derive(Clone, Debug)]
pub(crate) struct PlanFrame {
    /// `frame.pk_frame`.
    pub id: String,
    /// `frame.int_version`.
    pub version: i32,
    /// `frame.pk_layer`.
    pub layer: String,
    /// `frame.pk_job`.
    pub job: String,
    /// `job.pk_show`.
    pub show: String,
    /// What it takes: its layer's floor (minimum cores and memory).
    pub amount: Resources,
    /// Its layer's tags.
    pub tags: Vec<String>,
}

/// A frame placed on a host.
#[derive(Clone, Debug)]
pub(crate) struct Planned {
    /// The frame.
    pub frame: PlanFrame,
    /// `host.pk_host`.
    pub host: String,
    /// `host.str_name`.
    pub host_name: String,
}

/// The open hosts in name order, with their idle resources and tags.
fn read_hosts(client: &mut Client) -> Result<Vec<PlanHost>, postgres::Error> {
    let rows = client.query(
        "SELECT h.pk_host, h.str_name, h.int_cores_idle::bigint, h.int_mem_idle::bigint, h.int_gpus_idle::bigint,
                h.int_gpu_mem_idle::bigint, array_agg(t.str_tag::text ORDER BY t.str_tag)
           FROM host h JOIN host_tag t ON t.pk_host = h.pk_host
          WHERE h.str_lock_state = 'OPEN'
          GROUP BY h.pk_host ORDER BY h.str_name",
        &[],
    )?;
    let v = |r: &postgres::Row, i: usize| r.get::<_, i64>(i).max(0) as u64;
    Ok(rows
        .iter()
        .map(|r| PlanHost {
            id: r.get(0),
            name: r.get(1),
            idle: Resources {
                cores: v(r, 2) as u32,
                mem_kb: v(r, 3),
                gpus: v(r, 4) as u32,
                gpu_mem_kb: v(r, 5),
            },
            tags: r.get(6),
        })
        .collect())
}

/// The WAITING frames of managed shows, in the order a priority scheduler takes them.
fn read_frames(client: &mut Client) -> Result<Vec<PlanFrame>, postgres::Error> {
    let rows = client.query(
        "SELECT f.pk_frame, coalesce(f.int_version, 0)::int, f.pk_layer, f.pk_job, j.pk_show,
                l.int_cores_min::int, l.int_cores_max::int, l.int_mem_min::bigint, l.int_gpus_min::int,
                l.int_gpu_mem_min::bigint, l.b_threadable, l.str_tags
           FROM frame f JOIN layer l ON l.pk_layer = f.pk_layer JOIN job j ON j.pk_job = f.pk_job
           JOIN job_resource jr ON jr.pk_job = j.pk_job JOIN show s ON s.pk_show = j.pk_show
          WHERE f.str_state = 'WAITING' AND s.b_scheduler_managed
          ORDER BY jr.int_priority DESC, j.ts_started, j.pk_job, f.int_layer_order, f.int_dispatch_order",
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| {
            let shape = LayerShape {
                cores_min: r.get(5),
                cores_max: r.get(6),
                mem_min_kb: r.get::<_, i64>(7).max(0) as u64,
                gpus_min: r.get::<_, i32>(8).max(0) as u32,
                gpu_mem_min_kb: r.get::<_, i64>(9).max(0) as u64,
                threadable: r.get(10),
                selfish: false,
            };
            PlanFrame {
                id: r.get(0),
                version: r.get(1),
                layer: r.get(2),
                job: r.get(3),
                show: r.get(4),
                amount: floor(&shape),
                tags: split_tags(r.get(11)).collect(),
            }
        })
        .collect())
}

/// First fit of `frames` (in order) on `hosts`, split into `n` shares: jobs go to the
/// connections in turn as they first appear, the hosts in `n` contiguous runs of their
/// order (not `i mod n`: the seeded farms deal allocations out by `i mod 3`, so three
/// connections would each get one allocation), and a frame goes to the first host of its
/// job's share that has a tag of its layer and the room. Frames that fit nowhere in their
/// share are left out.
pub(crate) fn plan(hosts: &[PlanHost], frames: &[PlanFrame], n: usize) -> Vec<Vec<Planned>> {
    let n = n.max(1);
    let mut idle: Vec<Resources> = hosts.iter().map(|h| h.idle).collect();
    let mut share_of_job: HashMap<&str, usize> = HashMap::new();
    let mut shares = vec![Vec::new(); n];
    for f in frames {
        let next = share_of_job.len() % n;
        let share = *share_of_job.entry(f.job.as_str()).or_insert(next);
        let tagged = |h: &PlanHost| f.tags.iter().any(|t| h.tags.contains(t));
        let run = share * hosts.len() / n..(share + 1) * hosts.len() / n;
        let fit = run
            .into_iter()
            .find(|&i| idle[i].fits(&f.amount) && tagged(&hosts[i]));
        if let Some(i) = fit {
            idle[i] = idle[i].saturating_sub(&f.amount);
            shares[share].push(Planned {
                frame: f.clone(),
                host: hosts[i].id.clone(),
                host_name: hosts[i].name.clone(),
            });
        }
    }
    shares
}

/// Writes every share on its own connection, all starting together; returns the frames
/// booked and lost.
fn write_all(
    writers: Vec<Client>,
    shares: &[Vec<Planned>],
    mem_used_kb: i64,
) -> Result<(usize, usize), SimError> {
    let start = Barrier::new(writers.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = writers
            .into_iter()
            .zip(shares)
            .map(|(mut client, share)| {
                let start = &start;
                s.spawn(move || -> Result<(usize, usize), SimError> {
                    start.wait();
                    let (mut booked, mut lost) = (0, 0);
                    for batch in share.chunks(BATCH) {
                        if book(&mut client, batch, mem_used_kb)? {
                            booked += batch.len();
                        } else {
                            lost += batch.len();
                        }
                    }
                    Ok((booked, lost))
                })
            })
            .collect();
        let mut total = (0, 0);
        for h in handles {
            let (b, l) = h.join().expect("a ceiling writer panicked")?;
            total = (total.0 + b, total.1 + l);
        }
        Ok(total)
    })
}

/// The columns of a batch's frames, for the `unnest` of each statement.
struct Columns<'a> {
    frames: Vec<&'a str>,
    cores: Vec<i64>,
    mem: Vec<i64>,
}

impl<'a> Columns<'a> {
    fn of(batch: &'a [Planned]) -> Columns<'a> {
        Columns {
            frames: batch.iter().map(|p| p.frame.id.as_str()).collect(),
            cores: batch
                .iter()
                .map(|p| i64::from(p.frame.amount.cores))
                .collect(),
            mem: batch.iter().map(|p| p.frame.amount.mem_kb as i64).collect(),
        }
    }
}

/// One batch in one transaction: frames (state and version guard), hosts (idle guard, the
/// batch's sum per host), procs — stagehand's order. False, and rolled back, if any guard
/// did not hold.
fn book(client: &mut Client, batch: &[Planned], mem_used_kb: i64) -> Result<bool, SimError> {
    let mut tx = client.transaction()?;
    let c = Columns::of(batch);
    if !start_frames(&mut tx, batch, &c)? || !take_hosts(&mut tx, batch, &c)? {
        tx.rollback()?;
        return Ok(false);
    }
    insert_procs(&mut tx, batch, &c, mem_used_kb)?;
    tx.commit()?;
    Ok(true)
}

/// WAITING → RUNNING at the version read, firing Cuebot's frame triggers; true if every
/// frame moved.
fn start_frames(
    tx: &mut Transaction<'_>,
    batch: &[Planned],
    c: &Columns<'_>,
) -> Result<bool, postgres::Error> {
    let versions: Vec<i32> = batch.iter().map(|p| p.frame.version).collect();
    let host_names: Vec<&str> = batch.iter().map(|p| p.host_name.as_str()).collect();
    let started = tx.execute(
        "UPDATE frame f
            SET str_state = 'RUNNING', str_host = b.host, int_cores = b.cores, int_mem_reserved = b.mem,
                int_gpus = 0, int_gpu_mem_reserved = 0, ts_updated = now(), ts_started = now(),
                ts_stopped = NULL, int_version = coalesce(f.int_version, 0) + 1
           FROM unnest($1::text[], $2::int[], $3::text[], $4::bigint[], $5::bigint[])
                AS b(pk_frame, version, host, cores, mem)
          WHERE f.pk_frame = b.pk_frame AND f.str_state = 'WAITING' AND coalesce(f.int_version, 0) = b.version",
        &[&c.frames, &versions, &host_names, &c.cores, &c.mem],
    )?;
    Ok(started as usize == batch.len())
}

/// The guarded decrement of each host by its frames' sum, hosts in key order; true if
/// every host had the room.
fn take_hosts(
    tx: &mut Transaction<'_>,
    batch: &[Planned],
    c: &Columns<'_>,
) -> Result<bool, postgres::Error> {
    let mut per_host: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for (p, (cores, mem)) in batch.iter().zip(c.cores.iter().zip(&c.mem)) {
        let sum = per_host.entry(p.host.as_str()).or_default();
        *sum = (sum.0 + cores, sum.1 + mem);
    }
    let hosts: Vec<&str> = per_host.keys().copied().collect();
    let (cores, mem): (Vec<i64>, Vec<i64>) = per_host.values().copied().unzip();
    let taken = tx.execute(
        "UPDATE host h SET int_cores_idle = h.int_cores_idle - b.cores, int_mem_idle = h.int_mem_idle - b.mem
           FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS b(pk_host, cores, mem)
          WHERE h.pk_host = b.pk_host AND h.int_cores_idle >= b.cores AND h.int_mem_idle >= b.mem",
        &[&hosts, &cores, &mem],
    )?;
    Ok(taken as usize == hosts.len())
}

/// A proc per frame, as Cuebot counts a booking.
fn insert_procs(
    tx: &mut Transaction<'_>,
    batch: &[Planned],
    c: &Columns<'_>,
    mem_used_kb: i64,
) -> Result<(), postgres::Error> {
    let col = |f: fn(&Planned) -> &str| -> Vec<&str> { batch.iter().map(f).collect() };
    let procs: Vec<String> = batch
        .iter()
        .map(|_| uuid::Uuid::new_v4().to_string())
        .collect();
    tx.execute(
        "INSERT INTO proc (pk_proc, pk_host, pk_show, pk_layer, pk_job, pk_frame, int_cores_reserved,
                           int_mem_reserved, int_mem_pre_reserved, int_mem_used, int_gpus_reserved,
                           int_gpu_mem_reserved, int_gpu_mem_pre_reserved, int_gpu_mem_used, b_local)
         SELECT b.pk_proc, b.pk_host, b.pk_show, b.pk_layer, b.pk_job, b.pk_frame, b.cores, b.mem, b.mem,
                $9, 0, 0, 0, 0, false
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                       $7::bigint[], $8::bigint[])
                AS b(pk_proc, pk_host, pk_show, pk_layer, pk_job, pk_frame, cores, mem)",
        &[
            &procs,
            &col(|p| &p.host),
            &col(|p| &p.frame.show),
            &col(|p| &p.frame.layer),
            &col(|p| &p.frame.job),
            &c.frames,
            &c.cores,
            &c.mem,
            &mem_used_kb,
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(i: usize, cores: u32, tags: &[&str]) -> PlanHost {
        PlanHost {
            id: format!("h{i}"),
            name: format!("host{i}"),
            idle: Resources {
                cores: cores * 100,
                mem_kb: 1000,
                gpus: 0,
                gpu_mem_kb: 0,
            },
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    fn frame(i: usize, job: &str, cores: u32, tags: &[&str]) -> PlanFrame {
        PlanFrame {
            id: format!("f{i}"),
            version: 1,
            layer: format!("{job}-l"),
            job: job.into(),
            show: "s".into(),
            amount: Resources {
                cores: cores * 100,
                mem_kb: 100,
                gpus: 0,
                gpu_mem_kb: 0,
            },
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    #[test]
    fn shares_never_share_a_host_or_a_job_and_respect_room_and_tags() {
        let hosts: Vec<PlanHost> = (0..6)
            .map(|i| host(i, 4, if i % 2 == 0 { &["a"] } else { &["a", "b"] }))
            .collect();
        let frames: Vec<PlanFrame> = (0..30)
            .map(|i| {
                let tags: &[&str] = if i % 3 == 0 { &["b"] } else { &["a"] };
                frame(i, &format!("j{}", i % 5), 1 + (i % 2) as u32, tags)
            })
            .collect();
        let shares = plan(&hosts, &frames, 2);
        let mut host_share = HashMap::new();
        let mut job_share = HashMap::new();
        let mut used: HashMap<&str, u32> = HashMap::new();
        for (s, share) in shares.iter().enumerate() {
            for p in share {
                assert_eq!(*host_share.entry(p.host.as_str()).or_insert(s), s);
                assert_eq!(*job_share.entry(p.frame.job.as_str()).or_insert(s), s);
                *used.entry(p.host.as_str()).or_default() += p.frame.amount.cores;
                let h = hosts
                    .iter()
                    .find(|h| h.id == p.host)
                    .expect("a seeded host");
                assert!(p.frame.tags.iter().any(|t| h.tags.contains(t)), "{p:?}");
            }
        }
        assert!(used.values().all(|&c| c <= 400), "{used:?}");
        assert!(shares.iter().all(|s| !s.is_empty()));
    }

    #[test]
    fn first_fit_fills_hosts_in_order_and_leaves_out_what_fits_nowhere() {
        let hosts = [host(0, 2, &["a"]), host(1, 8, &["a"])];
        let frames = [
            frame(0, "j", 2, &["a"]),
            frame(1, "j", 2, &["a"]),
            frame(2, "j", 16, &["a"]),
            frame(3, "j", 1, &["c"]),
        ];
        let shares = plan(&hosts, &frames, 1);
        let placed: Vec<(&str, &str)> = shares[0]
            .iter()
            .map(|p| (p.frame.id.as_str(), p.host.as_str()))
            .collect();
        assert_eq!(placed, [("f0", "h0"), ("f1", "h1")]);
    }
}
