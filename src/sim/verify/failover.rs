//! FAILOVER: the instance holding the shows is killed mid-run; the others take its shows over,
//! book at least [`MIN_BOOKED`] new frames of them in the second half, and take a job
//! submitted after the kill.
//!
//! Three real `stagehand run` processes share a farm whose frames complete through the
//! simulator's Cuebot-like completion path (`workload::steady`). Halfway through, the one
//! holding the most shows is killed with SIGKILL (no hand-over, its leases simply stop being
//! renewed); a paused job of one of its shows is then submitted. The scenario passes when the
//! frames of the killed instance's shows started after the kill number at least
//! [`MIN_BOOKED`], the submitted job books, and the audit is clean: whatever the dead instance
//! had booked but not launched is resolved by its successor, not leaked.

use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use super::Verdict;
use crate::{
    accounting::audit::audit,
    sim::{
        SimError,
        farm::SimFarm,
        instances::Instance,
        pg::PgOptions,
        scenario::{job, layer, pause},
        workload,
    },
};

/// The criterion (Maestro's): frames the survivors book in the second half.
pub const MIN_BOOKED: i64 = 100;

/// The jobs submitted after the kill (one per show, paused until then) start with this name.
const LATE_JOB: &str = "failover-late";

/// Runs the scenario with the `stagehand` binary at `binary`, at full scale (60 s, the
/// steady farm's 388 hosts) or at the tests' small scale (24 s, a tenth of it).
pub fn failover_with(binary: &Path, full: bool) -> Result<Verdict, SimError> {
    let (scale, half) = if full { (1.0, 30) } else { (0.1, 12) };
    let mut spec = workload::steady(scale, 11, 2 * half);
    let late: Vec<String> = (0..spec.shows.len())
        .map(|s| format!("{LATE_JOB}-{s}"))
        .collect();
    for (show, name) in late.iter().enumerate() {
        let mut frames = layer("late", 20, Duration::from_secs(2));
        frames.tags = "alloc0".into();
        spec.jobs.push(job(show, name, 100, vec![frames]));
    }
    let farm = SimFarm::start(&spec, &PgOptions::default(), true, 0)?;
    let mut client = postgres::Client::connect(&farm.url, postgres::NoTls)?;
    for name in &late {
        pause(&mut client, name)?;
    }
    let config = farm.config(false);
    let mut instances = ["a", "b", "c"]
        .iter()
        .map(|name| Instance::spawn(binary, &config, name))
        .collect::<Result<Vec<_>, _>>()?;
    if !instances
        .iter()
        .all(|i| i.wait_ready(Duration::from_secs(60)))
    {
        return Err(SimError::Other("an instance never became ready".into()));
    }
    std::thread::sleep(Duration::from_secs(half));
    let (victim, shows) = busiest_holder(&mut client)?;
    let killed = instances
        .iter()
        .position(|i| i.name == victim)
        .ok_or_else(|| SimError::Other(format!("no instance named {victim}")))?;
    let kill_at: std::time::SystemTime = client.query_one("SELECT now()", &[])?.get(0);
    instances.swap_remove(killed).kill9();
    let killed_at = Instant::now();
    client.execute(
        "UPDATE job SET b_paused = false WHERE str_name LIKE $1 AND pk_show = ANY($2)",
        &[&format!("{LATE_JOB}-%"), &shows],
    )?;
    std::thread::sleep(Duration::from_secs(half));
    let booked = started_since(&mut client, &shows, kill_at)?;
    let late_frames = late_started(&mut client)?;
    for i in instances {
        i.stop(Duration::from_secs(20));
    }
    let violations = audit(&mut client, None)?;
    let figure = format!(
        "killed {victim} (held {} of the shows); survivors started {booked} frames of its shows \
         in the {:.0} s after the kill, and {late_frames} frames of the jobs submitted after it",
        shows.len(),
        killed_at.elapsed().as_secs_f64()
    );
    Ok(Verdict::judge(
        "FAILOVER",
        booked >= MIN_BOOKED && late_frames > 0,
        figure,
        Some("the standby books ≥ 100 new frames and takes submissions"),
        violations,
    ))
}

/// Runs the scenario with this process's own binary (`stagehand bench --workload verify`).
pub fn failover(full: bool) -> Result<Verdict, SimError> {
    let binary = std::env::current_exe().map_err(SimError::Io)?;
    failover_with(&binary, full)
}

/// The live instance holding the most shows, and those shows.
fn busiest_holder(client: &mut postgres::Client) -> Result<(String, Vec<String>), SimError> {
    let mut held: HashMap<String, Vec<String>> = HashMap::new();
    for r in client.query(
        "SELECT i.str_name, l.pk_show FROM stagehand.show_lease l
           JOIN stagehand.instance i ON i.pk_instance = l.pk_instance
          ORDER BY l.pk_show",
        &[],
    )? {
        held.entry(r.get(0)).or_default().push(r.get(1));
    }
    held.into_iter()
        .max_by_key(|(name, shows)| (shows.len(), std::cmp::Reverse(name.clone())))
        .ok_or_else(|| SimError::Other("no instance holds a show".into()))
}

/// Frames of `shows` started at or after `since` (running or done since).
fn started_since(
    client: &mut postgres::Client,
    shows: &[String],
    since: std::time::SystemTime,
) -> Result<i64, SimError> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM frame f JOIN job j ON j.pk_job = f.pk_job
              WHERE j.pk_show = ANY($1) AND f.ts_started >= $2",
            &[&shows, &since],
        )?
        .get(0))
}

/// Frames of the jobs submitted after the kill that started.
fn late_started(client: &mut postgres::Client) -> Result<i64, SimError> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM frame f JOIN job j ON j.pk_job = f.pk_job
              WHERE j.str_name LIKE $1 AND NOT j.b_paused AND f.ts_started IS NOT NULL",
            &[&format!("{LATE_JOB}-%")],
        )?
        .get(0))
}
