//! DEPENDS: dependency trees on a farm with room to spare — frame-by-frame, layer-on-layer,
//! layer-on-job and job-on-job — completed through the simulator's Cuebot-like completion,
//! which satisfies depends as Cuebot does. Passes when no frame ever runs with a depend left
//! (sampled from the database while it runs: a RUNNING frame with `int_depend_count > 0` or an
//! active `depend` row holding it), no frame started before what it waited for had stopped
//! (`frame.ts_started` against the latest `ts_stopped` of the frames depended on, at the end),
//! and every gated frame ran.

use std::time::Duration;

use super::{Verdict, progress::until_done};
use crate::sim::{
    SimError,
    scenario::{Run, job, layer},
    seed::{DependSpec, DependTarget, FarmSpec, frame_by_frame, seed_depends},
};

/// The shape of one DEPENDS run.
struct Shape {
    hosts: usize,
    cores: u32,
    jobs: usize,
    frames: i32,
    runtime: Duration,
    limit: Duration,
}

impl Shape {
    fn new(full: bool) -> Shape {
        if full {
            Shape {
                hosts: 64,
                cores: 16,
                jobs: 40,
                frames: 20,
                runtime: Duration::from_secs(2),
                limit: Duration::from_secs(240),
            }
        } else {
            Shape {
                hosts: 4,
                cores: 8,
                jobs: 4,
                frames: 4,
                runtime: Duration::from_millis(300),
                limit: Duration::from_secs(90),
            }
        }
    }

    /// Every job is a tree: `sim`, then `render` frame by frame on it, then `comp` on the
    /// whole of `render`.
    fn farm(&self) -> FarmSpec {
        let mut farm = FarmSpec::single(self.hosts, self.cores, 64, 1_000_000);
        farm.jobs = (0..self.jobs)
            .map(|i| {
                let layers = ["sim", "render", "comp"]
                    .iter()
                    .map(|name| layer(name, self.frames as usize, self.runtime))
                    .collect();
                job(0, &format!("tree{i:03}"), 50, layers)
            })
            .collect();
        farm
    }

    /// The trees' depends, and across them: each odd job waits for the job before it, and
    /// every third job's `sim` waits for the job before it.
    fn depends(&self) -> Vec<DependSpec> {
        let mut out = Vec::new();
        for i in 0..self.jobs {
            let name = format!("tree{i:03}");
            out.extend(frame_by_frame(
                (&name, "render"),
                (&name, "sim"),
                1..=self.frames,
            ));
            out.push(DependSpec {
                er: DependTarget::layer(&name, "comp"),
                on: DependTarget::layer(&name, "render"),
            });
            if i == 0 {
                continue;
            }
            let before = format!("tree{:03}", i - 1);
            if i % 2 == 1 {
                out.push(DependSpec {
                    er: DependTarget::job(&name),
                    on: DependTarget::job(&before),
                });
            } else if i % 3 == 0 {
                out.push(DependSpec {
                    er: DependTarget::layer(&name, "sim"),
                    on: DependTarget::job(&before),
                });
            }
        }
        out
    }
}

/// RUNNING frames held by a depend: a count left, or an active `depend` row holding them.
const STARTED_EARLY: &str = "SELECT count(*) FROM frame f
     WHERE f.str_state = 'RUNNING'
       AND (f.int_depend_count > 0 OR EXISTS (
            SELECT 1 FROM depend d WHERE d.b_active AND d.pk_job_depend_er = f.pk_job
               AND (d.pk_frame_depend_er = f.pk_frame
                    OR (d.pk_frame_depend_er IS NULL AND d.pk_layer_depend_er = f.pk_layer)
                    OR (d.pk_frame_depend_er IS NULL AND d.pk_layer_depend_er IS NULL))))";

/// Frames that started before the last frame they waited for stopped (or while it never
/// did), over every depend written.
const OUT_OF_ORDER: &str = "SELECT count(*) FROM depend d
     CROSS JOIN LATERAL (
          SELECT max(o.ts_stopped) AS done, bool_and(o.ts_stopped IS NOT NULL) AS all_done FROM frame o
           WHERE (d.pk_frame_depend_on IS NOT NULL AND o.pk_frame = d.pk_frame_depend_on)
              OR (d.pk_frame_depend_on IS NULL AND d.pk_layer_depend_on IS NOT NULL AND o.pk_layer = d.pk_layer_depend_on)
              OR (d.pk_frame_depend_on IS NULL AND d.pk_layer_depend_on IS NULL AND o.pk_job = d.pk_job_depend_on)) o
     JOIN frame w ON (d.pk_frame_depend_er IS NOT NULL AND w.pk_frame = d.pk_frame_depend_er)
                  OR (d.pk_frame_depend_er IS NULL AND d.pk_layer_depend_er IS NOT NULL AND w.pk_layer = d.pk_layer_depend_er)
                  OR (d.pk_frame_depend_er IS NULL AND d.pk_layer_depend_er IS NULL AND w.pk_job = d.pk_job_depend_er)
    WHERE w.ts_started IS NOT NULL AND (NOT o.all_done OR w.ts_started < o.done)";

/// Runs DEPENDS at full scale (`full`) or at the tests' small scale.
pub fn depends(full: bool) -> Result<Verdict, SimError> {
    let shape = Shape::new(full);
    let depends = shape.depends();
    let mut gated = 0;
    let mut run = Run::start(
        &shape.farm(),
        |c| {
            gated = seed_depends(c, &depends)?;
            Ok(())
        },
        |_| {},
    )?;
    let total: i64 = run
        .client
        .query_one("SELECT count(*) FROM frame", &[])?
        .get(0);
    let (mut samples, mut early) = (0u64, 0i64);
    let (succeeded, secs) = until_done(
        &mut run,
        total,
        shape.limit,
        Duration::from_millis(100),
        |c| {
            samples += 1;
            early += c.query_one(STARTED_EARLY, &[])?.get::<_, i64>(0);
            Ok(())
        },
    )?;
    let out_of_order: i64 = run.client.query_one(OUT_OF_ORDER, &[])?.get(0);
    let gated_ran: i64 = run
        .client
        .query_one(
            "SELECT count(DISTINCT w.pk_frame) FROM depend d
               JOIN frame w ON (d.pk_frame_depend_er IS NOT NULL AND w.pk_frame = d.pk_frame_depend_er)
                            OR (d.pk_frame_depend_er IS NULL AND d.pk_layer_depend_er IS NOT NULL AND w.pk_layer = d.pk_layer_depend_er)
                            OR (d.pk_frame_depend_er IS NULL AND d.pk_layer_depend_er IS NULL AND w.pk_job = d.pk_job_depend_er)
              WHERE w.str_state = 'SUCCEEDED'",
            &[],
        )?
        .get(0);
    let violations = run.finish()?;
    let holds = succeeded == total && early == 0 && out_of_order == 0 && gated_ran as u64 == gated;
    let figure = format!(
        "{} depends, {gated_ran}/{gated} gated frames ran, {early} running early over {samples} samples, \
         {out_of_order} started before their depend stopped; {succeeded}/{total} frames done in {secs:.1}s \
         ({:.1} frames/s)",
        depends.len(),
        succeeded as f64 / secs.max(1e-9),
    );
    Ok(Verdict::judge(
        "DEPENDS",
        holds,
        figure,
        Some("91 frames/s on its own farm and trees (not the same work)"),
        violations,
    ))
}
