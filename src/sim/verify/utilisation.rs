//! UTILISATION: the demo farm under a sustained backlog keeps its binding resource busy.
//!
//! The farm is the demo's (`stagehand demo`): render hosts of two sizes, desktops, hosts tagged
//! for FX sims and 4-GPU hosts, three shows subscribed to every allocation, comp, lighting, FX
//! and GPU jobs. Each host counts as busy as its most used resource (cores, memory or GPUs),
//! weighted by its cores (`sim::farm::Progress::binding`): a host whose GPUs or memory
//! are all booked is full even with cores idle. The scenario passes when, once warm, the farm
//! holds that figure at 95 % or more on average while frames still wait (a farm that ran out of
//! work proves nothing), and the audit is clean.

use std::time::{Duration, Instant};

use super::Verdict;
use crate::sim::{SimError, farm::progress, scenario::Run, workload};

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
    /// Full scale: the demo's own defaults (200 hosts, 300 jobs, its runtimes of 1–25 s), a
    /// minute watched after 20 s of warm-up. Small: 30 hosts and 120 jobs (four per host, so
    /// every kind of host keeps work for the window), 12 s watched after 10 s.
    fn new(full: bool) -> Shape {
        if full {
            Shape {
                hosts: 200,
                jobs: 300,
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
    let backlog = s.min_waiting > 0;
    let figure = format!(
        "binding resource {:.1} % busy on average (lowest sample {:.1} %), cores {:.1} %, \
         {} samples over {} s, at least {} frames waiting throughout",
        mean * 100.0,
        s.min_binding * 100.0,
        s.cores / f64::from(s.n.max(1)) * 100.0,
        s.n,
        shape.window.as_secs(),
        s.min_waiting
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
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(s)
}
