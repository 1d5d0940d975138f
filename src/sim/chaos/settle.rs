//! After the faults stop and the run settles: nothing stranded. Every RUNNING frame of a
//! managed show (other than the stand-in's own) must have been launched on the fake RQD and
//! still be running there (or have its completion still to come). Two snapshots one launch
//! deadline apart, so a booking whose launch is in flight is not mistaken for a stranded one.

use std::{collections::HashMap, time::Duration};

use postgres::Client;

use super::invariants::Watch;
use crate::sim::fake_rqd::RqdHandle;

/// A RUNNING frame of a managed show: frame id, frame name, host, seconds since its proc
/// was booked, the show's lease holder.
type Running = (String, String, String, f64, String);

/// proc → its RUNNING frame, for managed shows.
fn running_managed(c: &mut Client) -> Result<HashMap<String, Running>, postgres::Error> {
    Ok(c
        .query(
            "SELECT p.pk_proc, f.pk_frame, f.str_name, coalesce(f.str_host, '?'),
                    extract(epoch FROM now() - p.ts_booked)::float8,
                    coalesce((SELECT i.str_name || ' (epoch ' || l.int_epoch || ')' FROM stagehand.show_lease l
                               JOIN stagehand.instance i ON i.pk_instance = l.pk_instance
                              WHERE l.pk_show = sh.pk_show), 'no instance')
               FROM frame f
               JOIN proc p ON p.pk_frame = f.pk_frame JOIN job j ON j.pk_job = f.pk_job
               JOIN show sh ON sh.pk_show = j.pk_show
              WHERE f.str_state = 'RUNNING' AND sh.b_scheduler_managed",
            &[],
        )?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))))
        .collect())
}

/// Checks for stranded frames; returns how many frames were checked.
pub(crate) fn stranded(
    c: &mut Client,
    watch: &Watch,
    rqd: &RqdHandle,
    deadline: Duration,
) -> Result<usize, postgres::Error> {
    let before = running_managed(c)?;
    std::thread::sleep(deadline);
    // RQD first, the database a second later, RQD again: a frame RQD finished just before the
    // first look is gone from the database by the second (its report commits in between),
    // and one whose report failed is pending again by the last look.
    let alive = |rqd: &RqdHandle| {
        let mut procs = rqd.pending_procs();
        procs.extend(rqd.running().into_values().flatten());
        procs
    };
    let mut alive_procs = alive(rqd);
    std::thread::sleep(Duration::from_secs(1));
    let after = running_managed(c)?;
    alive_procs.extend(alive(rqd));
    let launched = rqd.launched_procs();
    let own = watch.standin_procs.lock().clone();
    let history = rqd.frame_history();
    let late = rqd.late_launches();
    let (refused, unknown) = rqd.refused_and_unknown();
    let checked = after.len();
    for (proc, (frame, name, host, ago, owner)) in &after {
        // Still RUNNING a launch deadline later: its launch has landed, or never will.
        if !before.contains_key(proc) || own.contains(proc) {
            continue;
        }
        let why = if !launched.contains(proc) {
            "was never launched on RQD"
        } else if alive_procs.contains(proc) {
            continue;
        } else if refused.contains(proc) {
            "RQD refused its launch, yet its proc remains"
        } else if unknown.contains(proc) {
            "RQD ran it to the end, but when it reported the frame done the database had no such \
             proc (the proc appeared later)"
        } else {
            "RQD no longer runs it (killed) and its proc remains"
        };
        let (launches, kills) = history.get(frame).copied().unwrap_or_default();
        let late = if late.contains(proc) {
            ", this launch arrived after its deadline"
        } else {
            ""
        };
        watch.violate(
            "stranded frame",
            proc.clone(),
            format!(
                "frame {name} ({frame}) RUNNING on {host} as proc {proc}, booked at {:.1}s, show \
                 held by {owner}, {why} (RQD got {launches} launches and {kills} kills of this \
                 frame{late}), at {:.2}s",
                watch.secs() - ago,
                watch.secs()
            ),
        );
    }
    watch.count("nothing stranded (frames checked)", checked as u64);
    Ok(checked)
}
