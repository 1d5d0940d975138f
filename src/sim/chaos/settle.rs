//! After the faults stop and the run settles: nothing stranded. Every RUNNING frame of a
//! managed show (other than the stand-in's own) must have been launched on the fake RQD and
//! still be running there (or have its completion still to come). Two snapshots one launch
//! deadline apart, so a booking whose launch is in flight is not mistaken for a stranded one.

use std::{collections::HashMap, time::Duration};

use postgres::Client;

use super::invariants::Watch;
use crate::sim::fake_rqd::RqdHandle;

/// proc → (frame id, frame name, host) of RUNNING frames of managed shows.
fn running_managed(
    c: &mut Client,
) -> Result<HashMap<String, (String, String, String)>, postgres::Error> {
    Ok(c.query(
        "SELECT p.pk_proc, f.pk_frame, f.str_name, coalesce(f.str_host, '?') FROM frame f
               JOIN proc p ON p.pk_frame = f.pk_frame JOIN job j ON j.pk_job = f.pk_job
               JOIN show sh ON sh.pk_show = j.pk_show
              WHERE f.str_state = 'RUNNING' AND sh.b_scheduler_managed",
        &[],
    )?
    .iter()
    .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3))))
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
    let after = running_managed(c)?;
    let launched = rqd.launched_procs();
    let running = rqd.running();
    let pending = rqd.pending_procs();
    let own = watch.standin_procs.lock().clone();
    let history = rqd.frame_history();
    let late = rqd.late_launches();
    let checked = after.len();
    for (proc, (frame, name, host)) in &after {
        // Still RUNNING a launch deadline later: its launch has landed, or never will.
        if !before.contains_key(proc) || own.contains(proc) {
            continue;
        }
        let runs = running.get(frame).is_some_and(|p| p.contains(proc));
        let why = if !launched.contains(proc) {
            "was never launched on RQD"
        } else if !runs && !pending.contains(proc) {
            "was launched but RQD no longer runs it (refused, killed or timed out) and its proc remains"
        } else {
            continue;
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
                "frame {name} ({frame}) RUNNING on {host} as proc {proc} {why} (RQD got {launches} \
                 launches and {kills} kills of this frame{late}), at {:.2}s",
                watch.secs()
            ),
        );
    }
    watch.count("nothing stranded (frames checked)", checked as u64);
    Ok(checked)
}
