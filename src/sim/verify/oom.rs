//! OOM: layers whose frames use more memory than they ask, completed through the simulator's
//! Cuebot-like completion: a frame above its RunFrame's hard limit fails with Cuebot's
//! out-of-memory exit (33), and the completion raises its layer's `int_mem_min` to what the
//! frame had reserved plus 2 GB (and turns the layer's memory optimizer off), as Cuebot's
//! `FrameCompleteHandler` does. Passes when every frame that ran out of memory was booked
//! again, each time with at least the raised value (its next run in `frame_history` reserves
//! at least the failed run's reservation plus the increase, and no run of a layer reserves
//! less than the raises of the layer before it started: never a value read before a raise),
//! and every frame finally succeeded.

use std::time::Duration;

use super::{Verdict, progress::until_done};
use crate::sim::{
    SimError,
    fake_rqd::{EXIT_MEMORY_FAILURE, MEM_USED_ENV, MEMORY_INCREASE_KB},
    scenario::{Run, job, layer},
    seed::{FarmSpec, GB, LayerSpec},
};

/// The shape of one OOM run.
struct Shape {
    hosts: usize,
    cores: u32,
    mem_gb: u64,
    jobs: usize,
    frames: usize,
    runtime: Duration,
    limit: Duration,
}

impl Shape {
    /// Run times above 1.34 s keep a frame's runs in distinct seconds of
    /// `frame_history.int_ts_started` (jitter is ±25 %), which orders them.
    fn new(full: bool) -> Shape {
        if full {
            Shape {
                hosts: 64,
                cores: 16,
                mem_gb: 64,
                jobs: 20,
                frames: 20,
                runtime: Duration::from_secs(3),
                limit: Duration::from_secs(300),
            }
        } else {
            Shape {
                hosts: 4,
                cores: 8,
                mem_gb: 32,
                jobs: 2,
                frames: 4,
                runtime: Duration::from_millis(1500),
                limit: Duration::from_secs(90),
            }
        }
    }

    /// A layer asking 2 GB of `frames` that use `used_gb`.
    fn hungry(&self, name: &str, used_gb: u64) -> LayerSpec {
        let mut l = layer(name, self.frames, self.runtime);
        l.mem_kb = 2 * GB;
        l.env
            .push((MEM_USED_ENV.into(), (used_gb * GB).to_string()));
        l
    }

    /// Per job: `fat` uses 5 GB (one failure at 2 GB: hard limit 4 GB), `fatter` 9 GB (two:
    /// 2 GB then 4 GB), `lean` asks 1 GB and reports none.
    fn farm(&self) -> FarmSpec {
        let mut farm = FarmSpec::single(self.hosts, self.cores, self.mem_gb, 1_000_000);
        farm.jobs = (0..self.jobs)
            .map(|i| {
                let layers = vec![
                    self.hungry("fat", 5),
                    self.hungry("fatter", 9),
                    layer("lean", self.frames, self.runtime),
                ];
                job(0, &format!("oom{i:03}"), 50, layers)
            })
            .collect();
        farm
    }
}

/// Runs that ran out of memory; runs of a frame after one that did, and those that reserved
/// less than the failed run plus the increase; runs of a frame sharing a start second
/// (unordered); and runs that reserved less than their layer had been raised to by every
/// failure of the layer stopped a whole second before they started (a value read before a
/// raise: `frame_history` keeps whole seconds, so a raise in the same second is not counted).
const REBOOKINGS: &str = "WITH runs AS (
        SELECT h.pk_frame, h.int_ts_started, h.int_mem_reserved, h.int_exit_status,
               lag(h.int_mem_reserved) OVER w AS prev_mem, lag(h.int_exit_status) OVER w AS prev_exit
          FROM frame_history h WINDOW w AS (PARTITION BY h.pk_frame ORDER BY h.int_ts_started))
     SELECT count(*) FILTER (WHERE int_exit_status = $1::int)::bigint,
            count(*) FILTER (WHERE prev_exit = $1::int)::bigint,
            count(*) FILTER (WHERE prev_exit = $1::int AND int_mem_reserved < prev_mem + $2::bigint)::bigint,
            (SELECT count(*) FROM (SELECT 1 FROM frame_history GROUP BY pk_frame, int_ts_started
                                    HAVING count(*) > 1) t)::bigint,
            (SELECT count(*) FROM frame_history r
              WHERE r.int_mem_reserved < (
                    SELECT max(o.int_mem_reserved) + $2::bigint FROM frame_history o
                     WHERE o.pk_layer = r.pk_layer AND o.int_exit_status = $1::int
                       AND o.int_ts_stopped > 0 AND o.int_ts_stopped < r.int_ts_started))::bigint
       FROM runs";

/// Runs OOM at full scale (`full`) or at the tests' small scale.
pub fn oom(full: bool) -> Result<Verdict, SimError> {
    let shape = Shape::new(full);
    let mut run = Run::start(&shape.farm(), |_| Ok(()), |_| {})?;
    let total: i64 = run
        .client
        .query_one("SELECT count(*) FROM frame", &[])?
        .get(0);
    let (succeeded, secs) = until_done(
        &mut run,
        total,
        shape.limit,
        Duration::from_millis(200),
        |_| Ok(()),
    )?;
    let r = run
        .client
        .query_one(REBOOKINGS, &[&EXIT_MEMORY_FAILURE, &MEMORY_INCREASE_KB])?;
    let (failures, rebooked, stale, unordered, behind): (i64, i64, i64, i64, i64) =
        (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
    let raised: i64 = run
        .client
        .query_one(
            "SELECT count(*) FROM layer WHERE NOT b_optimize AND int_mem_min > $1",
            &[&((2 * GB) as i64)],
        )?
        .get(0);
    let violations = run.finish()?;
    let holds = failures > 0
        && rebooked == failures
        && stale == 0
        && behind == 0
        && unordered == 0
        && succeeded == total;
    let figure = format!(
        "{failures} out-of-memory failures, {rebooked} booked again ({stale} below the raised memory, \
         {behind} runs below their layer's raise), \
         {raised} layers raised; {succeeded}/{total} frames done in {secs:.1}s ({:.1} frames/s){}",
        succeeded as f64 / secs.max(1e-9),
        if unordered > 0 {
            format!(", {unordered} runs unordered")
        } else {
            String::new()
        }
    );
    Ok(Verdict::judge(
        "OOM",
        holds,
        figure,
        Some("88 frames/s on its own farm and layers (not the same work)"),
        violations,
    ))
}
