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

/// The procs of `first` still RUNNING now that RQD neither runs nor will report, with why.
/// RQD first, the database a second later, RQD again: a frame RQD finished just before the
/// first look is gone from the database by the second (its report commits in between), and
/// one whose report failed is pending again by the last look.
fn unaccounted(
    c: &mut Client,
    rqd: &RqdHandle,
    first: &HashMap<String, Running>,
) -> Result<HashMap<String, (Running, &'static str)>, postgres::Error> {
    let alive = |rqd: &RqdHandle| {
        let mut procs = rqd.pending_procs();
        procs.extend(rqd.running().into_values().flatten());
        procs
    };
    let mut alive_procs = alive(rqd);
    std::thread::sleep(Duration::from_secs(1));
    let now = running_managed(c)?;
    alive_procs.extend(alive(rqd));
    let launched = rqd.launched_procs();
    let (refused, unknown) = rqd.refused_and_unknown();
    let mut out = HashMap::new();
    for (proc, running) in now {
        if !first.contains_key(&proc) || alive_procs.contains(&proc) {
            continue;
        }
        let why = if !launched.contains(&proc) {
            "was never launched on RQD"
        } else if refused.contains(&proc) {
            "RQD refused its launch, yet its proc remains"
        } else if unknown.contains(&proc) {
            "RQD ran it to the end, but when it reported the frame done the database had no such \
             proc (the proc appeared later)"
        } else {
            "RQD no longer runs it (killed) and its proc remains"
        };
        out.insert(proc, (running, why));
    }
    Ok(out)
}

/// Checks for stranded frames, re-checking every two seconds for up to `limit` (a launch
/// whose kill RQD has not confirmed keeps its proc until a retry, backed off up to 30 s,
/// gets through); returns how many frames were checked.
pub(crate) fn stranded(
    c: &mut Client,
    watch: &Watch,
    rqd: &RqdHandle,
    deadline: Duration,
    limit: Duration,
) -> Result<usize, postgres::Error> {
    let own = watch.standin_procs.lock().clone();
    let mut first = running_managed(c)?;
    first.retain(|p, _| !own.contains(p));
    let checked = first.len();
    std::thread::sleep(deadline);
    let started = std::time::Instant::now();
    let mut left = unaccounted(c, rqd, &first)?;
    while !left.is_empty() && started.elapsed() < limit {
        std::thread::sleep(Duration::from_secs(2));
        let now = unaccounted(c, rqd, &first)?;
        left.retain(|p, _| now.contains_key(p));
    }
    let history = rqd.frame_history();
    let late = rqd.late_launches();
    for (proc, ((frame, name, host, ago, owner), why)) in &left {
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
                 held by {owner}: {why} (RQD got {launches} launches and {kills} kills of this \
                 frame{late}); still so {:.0}s later, at {:.2}s",
                watch.secs() - ago - started.elapsed().as_secs_f64(),
                started.elapsed().as_secs_f64(),
                watch.secs()
            ),
        );
    }
    stuck_report(c, watch, rqd)?;
    watch.count("nothing stranded (frames checked)", checked as u64);
    Ok(checked)
}

/// A completion report of the fake RQD that has been running for over ten seconds is a
/// lock chain nobody ends: its evidence is what it waits for, and who holds that.
fn stuck_report(c: &mut Client, watch: &Watch, rqd: &RqdHandle) -> Result<(), postgres::Error> {
    let Some((procs, since)) = rqd
        .reporting()
        .filter(|(_, t)| *t > Duration::from_secs(10))
    else {
        return Ok(());
    };
    let mut evidence = format!(
        "RQD's report of {procs} finished frames has waited {:.0}s:",
        since.as_secs_f64()
    );
    for r in c.query(
        "SELECT a.pid, coalesce(a.wait_event_type || '/' || a.wait_event, 'running'), left(a.query, 100),
                coalesce((SELECT string_agg(b.pid || ' ' || b.usename || ' ' || coalesce(b.application_name, '')
                                            || ' ' || coalesce(b.state, '') || ' since '
                                            || round(extract(epoch FROM now() - b.xact_start)::numeric, 1)
                                            || 's: ' || left(b.query, 100), '; ')
                            FROM pg_stat_activity b WHERE b.pid = ANY(pg_blocking_pids(a.pid))), 'nobody')
           FROM pg_stat_activity a WHERE a.application_name = 'fake-rqd-report'",
        &[],
    )? {
        evidence.push_str(&format!(
            " backend {} waits on {} in `{}`, blocked by {}",
            r.get::<_, i32>(0),
            r.get::<_, String>(1),
            r.get::<_, String>(2),
            r.get::<_, String>(3)
        ));
    }
    watch.violate("stuck completion report", "fake-rqd".into(), evidence);
    Ok(())
}
