//! UTILISATION: the demo farm under a sustained backlog keeps its binding resource busy.
//!
//! The farm is the demo's (`stagehand demo`): render hosts of two sizes, desktops, hosts tagged
//! for FX sims and 4-GPU hosts, three shows subscribed to every allocation, comp, lighting, FX
//! and GPU jobs. Each host counts as busy as its most used resource (cores, memory or GPUs),
//! weighted by its cores (`sim::farm::Progress::binding`): a host whose GPUs or memory
//! are all booked is full even with cores idle. The scenario passes when, once warm, the farm
//! holds that figure at 95 % or more on average while frames still wait, and the audit is clean.
//!
//! A farm that ran out of work proves nothing, and neither does a pool of it: the desktops
//! take only comp and denoise frames, so once those are done they idle however well the rest
//! is booked. The backlog is therefore three times the demo's jobs, and every fourth sample
//! checks that every open host still had a waiting layer its tags allow; a run where some
//! host had none is not a sustained backlog and does not pass. Those samples also split the
//! idle room three ways: where a waiting layer fits (turnover: booking has yet to catch up
//! with a completion), where one is allowed but none fits (packing), and where none is
//! allowed (out of work).

use std::time::{Duration, Instant};

use super::Verdict;
use crate::sim::{
    SimError,
    farm::{BINDING_USE, progress},
    scenario::Run,
    workload,
};

/// The criterion: the binding resource busy at least this share of the window, on average.
pub const MIN_BINDING: f64 = 0.95;

/// The shape of one run.
struct Shape {
    hosts: usize,
    jobs: usize,
    runtime_scale: f64,
    warmup: Duration,
    window: Duration,
}

impl Shape {
    /// Full scale: the demo's farm and runtimes (200 hosts, 1–25 s) with three times its 300
    /// jobs, so every pool keeps work (with 300 the comp and denoise frames, the desktops'
    /// only work, ran out within the window), a minute watched after 20 s of warm-up. Small:
    /// 30 hosts and 120 jobs (four per host), 12 s watched after 10 s.
    fn new(full: bool) -> Shape {
        if full {
            Shape {
                hosts: 200,
                jobs: 900,
                runtime_scale: 1.0,
                warmup: Duration::from_secs(20),
                window: Duration::from_secs(60),
            }
        } else {
            Shape {
                hosts: 30,
                jobs: 120,
                runtime_scale: 1.0,
                warmup: Duration::from_secs(10),
                window: Duration::from_secs(12),
            }
        }
    }
}

/// What the window saw.
#[derive(Default)]
struct Samples {
    n: u32,
    binding: f64,
    cores: f64,
    min_binding: f64,
    min_waiting: i64,
    /// Sums over the split samples of [`Idle`]'s shares, and their count.
    idle: Idle,
    split_n: u32,
    /// Most open hosts without any waiting layer their tags allow, in one split sample.
    max_hosts_without_work: i64,
}

/// Idle binding room, as shares of the farm's open cores (as `Progress::binding` weighs it).
#[derive(Clone, Copy, Debug, Default)]
struct Idle {
    /// On hosts where a waiting layer fits by tags, cores, memory and GPUs.
    turnover: f64,
    /// On hosts where a waiting layer's tags allow it but none fits.
    packing: f64,
    /// On hosts where no waiting layer's tags allow it.
    out_of_work: f64,
}

/// Runs the scenario at full scale or at the tests' small scale.
pub fn utilisation(full: bool) -> Result<Verdict, SimError> {
    let shape = Shape::new(full);
    let spec = workload::demo(shape.hosts, shape.jobs, 2026, shape.runtime_scale);
    let mut run = Run::start(&spec, |_| Ok(()), |_| {})?;
    std::thread::sleep(shape.warmup);
    let s = watch(&mut run.client, shape.window)?;
    let violations = run.finish()?;
    let mean = s.binding / f64::from(s.n.max(1));
    let backlog = s.min_waiting > 0 && s.max_hosts_without_work == 0;
    let split = |share: f64| share / f64::from(s.split_n.max(1)) * 100.0;
    let figure = format!(
        "binding resource {:.1} % busy on average (lowest sample {:.1} %), cores {:.1} %, \
         {} samples over {} s, at least {} frames waiting throughout, hosts without work \
         allowed at most {}; idle room: turnover {:.1} %, packing {:.1} %, out of work {:.1} %",
        mean * 100.0,
        s.min_binding * 100.0,
        s.cores / f64::from(s.n.max(1)) * 100.0,
        s.n,
        shape.window.as_secs(),
        s.min_waiting,
        s.max_hosts_without_work,
        split(s.idle.turnover),
        split(s.idle.packing),
        split(s.idle.out_of_work),
    );
    Ok(Verdict::judge(
        "UTILISATION",
        backlog && mean >= MIN_BINDING,
        figure,
        None,
        violations,
    ))
}

/// Samples the farm every 250 ms for `window`.
fn watch(client: &mut postgres::Client, window: Duration) -> Result<Samples, SimError> {
    let end = Instant::now() + window;
    let mut s = Samples {
        min_binding: 1.0,
        min_waiting: i64::MAX,
        ..Samples::default()
    };
    while Instant::now() < end {
        let p = progress(client)?;
        s.n += 1;
        s.binding += p.binding;
        s.cores += p.utilization;
        s.min_binding = s.min_binding.min(p.binding);
        s.min_waiting = s.min_waiting.min(p.waiting);
        if s.n % 4 == 1 {
            let (idle, without_work) = idle_split(client)?;
            s.idle.turnover += idle.turnover;
            s.idle.packing += idle.packing;
            s.idle.out_of_work += idle.out_of_work;
            s.split_n += 1;
            s.max_hosts_without_work = s.max_hosts_without_work.max(without_work);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(s)
}

/// One split sample: the idle room three ways ([`Idle`]) and the open hosts that no waiting
/// layer's tags allow. Caps and subscriptions are not looked at; a layer sized from history
/// is taken at the memory it asks.
fn idle_split(client: &mut postgres::Client) -> Result<(Idle, i64), SimError> {
    let sql = format!(
        "WITH idle AS (
            SELECT h.int_cores_idle, h.int_mem_idle, h.int_gpus_idle, h.int_gpu_mem_idle,
                   h.int_cores * (1 - {BINDING_USE}) AS room,
                   ARRAY(SELECT t.str_tag::text FROM host_tag t WHERE t.pk_host = h.pk_host) AS tags
              FROM host h WHERE h.str_lock_state = 'OPEN'),
         waiting AS (
            SELECT l.int_cores_min, l.int_mem_min, l.int_gpus_min, l.int_gpu_mem_min,
                   string_to_array(replace(l.str_tags, ' ', ''), '|') AS tags
              FROM layer l JOIN layer_stat ls ON ls.pk_layer = l.pk_layer
              JOIN job j ON j.pk_job = l.pk_job
             WHERE ls.int_waiting_count > 0 AND j.str_state = 'PENDING' AND NOT j.b_paused),
         judged AS (
            SELECT i.room,
                   EXISTS (SELECT 1 FROM waiting w WHERE w.tags && i.tags) AS allowed,
                   EXISTS (SELECT 1 FROM waiting w
                            WHERE w.tags && i.tags AND w.int_cores_min <= i.int_cores_idle
                              AND w.int_mem_min <= i.int_mem_idle AND w.int_gpus_min <= i.int_gpus_idle
                              AND w.int_gpu_mem_min <= i.int_gpu_mem_idle) AS fits
              FROM idle i)
         SELECT coalesce(sum(room) FILTER (WHERE fits), 0)::float8,
                coalesce(sum(room) FILTER (WHERE allowed AND NOT fits), 0)::float8,
                coalesce(sum(room) FILTER (WHERE NOT allowed), 0)::float8,
                count(*) FILTER (WHERE NOT allowed),
                (SELECT greatest(sum(int_cores), 1)::float8 FROM host WHERE str_lock_state = 'OPEN')
           FROM judged"
    );
    let r = client.query_one(&sql, &[])?;
    let total: f64 = r.get(4);
    let idle = Idle {
        turnover: r.get::<_, f64>(0) / total,
        packing: r.get::<_, f64>(1) / total,
        out_of_work: r.get::<_, f64>(2) / total,
    };
    Ok((idle, r.get(3)))
}
