//! The invariants the soak samples every 100 ms, each sample one consistent snapshot (a
//! REPEATABLE READ transaction on the sampler's own connection): subscriptions within burst,
//! jobs and folders within their maxima, layer limits within `int_max_value`, host idle
//! values in range and equal to total minus the procs, procs and RUNNING frames paired
//! (beyond one launch deadline), and no frame running twice on the fake RQD.
//!
//! A cap the stand-in changed is checked against `max(cap, usage)`, where usage starts at
//! the usage right after the change and follows it down (its low-water mark in later
//! samples): usage above a lowered cap is legitimate until it has grown again. Which regime
//! judges a sample is decided by its snapshot, not by the clock: a sample whose snapshot
//! does not see the change's transaction is judged as the state before it.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use postgres::{Client, Transaction};

use crate::sim::fake_rqd::RqdHandle;

/// One cap the sampler checks.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Cap {
    /// `subscription.int_burst` (cores), by `pk_subscription`.
    Burst(String),
    /// `job_resource.int_max_cores`, by `pk_job`.
    JobCores(String),
    /// `job_resource.int_max_gpus`, by `pk_job`.
    JobGpus(String),
    /// `folder_resource.int_max_cores`, by `pk_folder`.
    FolderCores(String),
    /// `folder_resource.int_max_gpus`, by `pk_folder`.
    FolderGpus(String),
    /// `limit_record.int_max_value` (RUNNING frames), by `pk_limit_record`.
    Limit(String),
}

impl Cap {
    fn kind(&self) -> &'static str {
        match self {
            Cap::Burst(_) => "subscription above burst",
            Cap::JobCores(_) => "job above max cores",
            Cap::JobGpus(_) => "job above max GPUs",
            Cap::FolderCores(_) => "folder above max cores",
            Cap::FolderGpus(_) => "folder above max GPUs",
            Cap::Limit(_) => "layer limit above max",
        }
    }
}

/// Usage right after the stand-in changed a cap (then its low-water mark).
#[derive(Clone, Copy, Debug)]
struct Baseline {
    usage: i64,
    recorded: Instant,
    why: &'static str,
    /// The changing transaction's id (`txid_current()`).
    xid: i64,
    /// The usage the previous change of this cap still allowed (its low-water mark) when
    /// this one replaced it: what judges a sample taken before this change committed.
    before: Option<i64>,
    /// Usage the change itself brought under the cap (a host moved in with its procs). A
    /// booking planned before the change and committed after it saw neither the change nor
    /// these procs, so for [`IN_FLIGHT`] the cap may be exceeded by this much: the move's
    /// doing, which no booking guard can see coming (Cuebot's own move locks no cap row).
    brought: i64,
}

/// The longest a booking transaction planned before a change may still commit after it.
const IN_FLIGHT: Duration = Duration::from_secs(5);

/// Usage a change brought under caps, by cap.
pub(crate) type Brought = HashMap<Cap, i64>;

/// A sample's snapshot (`txid_current_snapshot()`): which transactions it sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    xmin: i64,
    xmax: i64,
    running: Vec<i64>,
}

impl Snapshot {
    /// Parses `xmin:xmax:xip,xip,...`.
    fn parse(text: &str) -> Option<Snapshot> {
        let mut parts = text.split(':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let running = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?,
        };
        Some(Snapshot {
            xmin,
            xmax,
            running,
        })
    }

    /// True when the committed transaction `xid` is visible in this snapshot.
    fn sees(&self, xid: i64) -> bool {
        xid < self.xmin || (xid < self.xmax && !self.running.contains(&xid))
    }
}

/// A violation with its evidence.
#[derive(Clone, Debug)]
pub struct Violation {
    /// What was violated.
    pub kind: &'static str,
    /// Seconds into the run of the first sample that showed it.
    pub at_secs: f64,
    /// Samples that showed it.
    pub samples: u64,
    /// Which rows, which values.
    pub evidence: String,
}

/// State shared by the sampler, the stand-in and the orchestrator.
pub(crate) struct Watch {
    started: Instant,
    /// stagehand's `[accounting] caps_interval`: how stale its caps may be.
    caps_interval: Duration,
    baselines: Mutex<HashMap<Cap, Baseline>>,
    violations: Mutex<BTreeMap<(&'static str, String), Violation>>,
    checks: Mutex<BTreeMap<&'static str, u64>>,
    /// Procs the stand-in booked (Cuebot's, not on the fake RQD).
    pub(crate) standin_procs: Mutex<std::collections::HashSet<String>>,
}

impl Watch {
    pub(crate) fn new(caps_interval: Duration) -> Watch {
        Watch {
            started: Instant::now(),
            caps_interval,
            baselines: Mutex::new(HashMap::new()),
            violations: Mutex::new(BTreeMap::new()),
            checks: Mutex::new(BTreeMap::new()),
            standin_procs: Mutex::new(Default::default()),
        }
    }

    /// When the run started (every time in the report counts from here).
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// Seconds since the run started.
    pub(crate) fn secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Runs `change` (which commits a change to caps or to what counts against them, and
    /// says what usage it brought under them) and records the usage of `caps` right after it,
    /// before any sample can judge the new state.
    pub(crate) fn changing<T>(
        &self,
        client: &mut Client,
        why: &'static str,
        caps: Vec<Cap>,
        change: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<(T, Brought), postgres::Error>,
    ) -> Result<T, postgres::Error> {
        let mut baselines = self.baselines.lock();
        // The usage is measured in the changing transaction, after the change took the cap
        // row's lock: bookings that respect the cap are either counted here or wait for the
        // commit and then see the new cap. Measured after the commit instead, frames ending
        // in between made the baseline lower than what samples of that moment saw.
        let mut tx = client.transaction()?;
        let (out, brought) = change(&mut tx)?;
        let mut usages = Vec::with_capacity(caps.len());
        for cap in caps {
            let usage = usage_of(&mut tx, &cap)?;
            usages.push((cap, usage));
        }
        let xid: i64 = tx.query_one("SELECT txid_current()", &[])?.get(0);
        tx.commit()?;
        let recorded = Instant::now();
        for (cap, usage) in usages {
            let before = baselines.get(&cap).map(|b| b.usage);
            let brought = brought.get(&cap).copied().unwrap_or(0);
            baselines.insert(
                cap,
                Baseline {
                    usage,
                    recorded,
                    why,
                    xid,
                    before,
                    brought,
                },
            );
        }
        Ok(out)
    }

    pub(crate) fn count(&self, check: &'static str, n: u64) {
        *self.checks.lock().entry(check).or_default() += n;
    }

    pub(crate) fn violate(&self, kind: &'static str, key: String, evidence: String) {
        let at_secs = self.secs();
        self.violations
            .lock()
            .entry((kind, key))
            .and_modify(|v| v.samples += 1)
            .or_insert(Violation {
                kind,
                at_secs,
                samples: 1,
                evidence,
            });
    }

    pub(crate) fn checks(&self) -> BTreeMap<&'static str, u64> {
        self.checks.lock().clone()
    }

    pub(crate) fn violations(&self) -> Vec<Violation> {
        self.violations.lock().values().cloned().collect()
    }

    /// Judges one cap in a sample taken from `sample_start` on `snapshot`; `what` names the
    /// rows.
    fn judge(
        &self,
        cap: Cap,
        (max, usage): (i64, i64),
        (sample_start, snapshot): (Instant, &Snapshot),
        what: String,
    ) {
        self.count(cap.kind(), 1);
        let mut baselines = self.baselines.lock();
        let allowed = match baselines.get_mut(&cap) {
            // Only a snapshot that sees the change may lower its mark.
            Some(b) if snapshot.sees(b.xid) => {
                b.usage = b.usage.min(usage);
                let in_flight = sample_start.saturating_duration_since(b.recorded) < IN_FLIGHT;
                let brought = if in_flight { b.brought } else { 0 };
                max.max(b.usage).max(max + brought)
            }
            // A snapshot from before the change's commit shows the cap and usage as they
            // were then, which the previous change's mark judges.
            Some(b) => max.max(b.before.unwrap_or(max)),
            None => max,
        };
        if usage > allowed {
            let changed = baselines
                .get(&cap)
                .map(|b| {
                    let ago = sample_start.saturating_duration_since(b.recorded);
                    let lag = if ago < self.caps_interval {
                        "within"
                    } else {
                        "beyond"
                    };
                    let seen = if snapshot.sees(b.xid) {
                        "seen by this snapshot".to_owned()
                    } else {
                        format!(
                            "not yet seen by this snapshot; mark before it {:?}",
                            b.before
                        )
                    };
                    format!(
                        " (the stand-in's last change to it: {} {:.1}s before, {lag} \
                         caps_interval {:?}, {seen}; usage then / low-water since {})",
                        b.why,
                        ago.as_secs_f64(),
                        self.caps_interval,
                        b.usage
                    )
                })
                .unwrap_or_else(|| " (never changed by the stand-in)".into());
            drop(baselines);
            let evidence = format!(
                "{what}: usage {usage} > max {max}{changed} at {:.2}s",
                self.secs()
            );
            let key = format!("{cap:?}");
            self.violate(cap.kind(), key, evidence);
        }
    }
}

/// The current usage of `cap` (cores ×100, GPUs, or RUNNING frames).
pub(crate) fn usage_of(
    client: &mut impl postgres::GenericClient,
    cap: &Cap,
) -> Result<i64, postgres::Error> {
    let (sql, key) = match cap {
        Cap::Burst(k) => (
            "SELECT coalesce(sum(p.int_cores_reserved), 0)::bigint FROM subscription s
               JOIN host h ON h.pk_alloc = s.pk_alloc
               JOIN proc p ON p.pk_host = h.pk_host AND p.pk_show = s.pk_show AND NOT p.b_local
              WHERE s.pk_subscription = $1",
            k,
        ),
        Cap::JobCores(k) => (
            "SELECT coalesce(sum(int_cores_reserved), 0)::bigint FROM proc WHERE pk_job = $1",
            k,
        ),
        Cap::JobGpus(k) => (
            "SELECT coalesce(sum(int_gpus_reserved), 0)::bigint FROM proc WHERE pk_job = $1",
            k,
        ),
        Cap::FolderCores(k) => (
            "SELECT coalesce(sum(p.int_cores_reserved), 0)::bigint FROM proc p
               JOIN job j ON j.pk_job = p.pk_job WHERE j.pk_folder = $1",
            k,
        ),
        Cap::FolderGpus(k) => (
            "SELECT coalesce(sum(p.int_gpus_reserved), 0)::bigint FROM proc p
               JOIN job j ON j.pk_job = p.pk_job WHERE j.pk_folder = $1",
            k,
        ),
        Cap::Limit(k) => (
            "SELECT count(*)::bigint FROM layer_limit ll
               JOIN frame f ON f.pk_layer = ll.pk_layer AND f.str_state = 'RUNNING'
              WHERE ll.pk_limit_record = $1",
            k,
        ),
    };
    Ok(client.query_one(sql, &[key])?.get(0))
}

/// A cap's sample: (cap, max, usage, what it is).
type CapSample = (Cap, i64, i64, String);

/// Caps of managed shows: (cap, max, usage, rows) for subscriptions, jobs and folders.
fn caps_sample(tx: &mut Transaction<'_>) -> Result<Vec<CapSample>, postgres::Error> {
    let mut out = Vec::new();
    subscription_caps(tx, &mut out)?;
    job_caps(tx, &mut out)?;
    folder_caps(tx, &mut out)?;
    limit_caps(tx, &mut out)?;
    Ok(out)
}

/// Bursts of managed shows' subscriptions.
fn subscription_caps(
    tx: &mut Transaction<'_>,
    out: &mut Vec<CapSample>,
) -> Result<(), postgres::Error> {
    for r in tx.query(
        "SELECT s.pk_subscription, sh.str_name || '/' || a.str_name, s.int_burst::bigint,
                coalesce((SELECT sum(p.int_cores_reserved) FROM proc p JOIN host h ON h.pk_host = p.pk_host
                           WHERE p.pk_show = s.pk_show AND h.pk_alloc = s.pk_alloc AND NOT p.b_local), 0)::bigint
           FROM subscription s JOIN show sh ON sh.pk_show = s.pk_show JOIN alloc a ON a.pk_alloc = s.pk_alloc
          WHERE sh.b_scheduler_managed",
        &[],
    )? {
        let what = format!("subscription {} (cores x100)", r.get::<_, String>(1));
        out.push((Cap::Burst(r.get(0)), r.get(2), r.get(3), what));
    }
    Ok(())
}

/// Core and GPU caps of managed shows' jobs.
fn job_caps(tx: &mut Transaction<'_>, out: &mut Vec<CapSample>) -> Result<(), postgres::Error> {
    for r in tx.query(
        "SELECT j.pk_job, j.str_name, jr.int_max_cores::bigint, jr.int_max_gpus::bigint,
                coalesce(sum(p.int_cores_reserved), 0)::bigint, coalesce(sum(p.int_gpus_reserved), 0)::bigint
           FROM job j JOIN show sh ON sh.pk_show = j.pk_show JOIN job_resource jr ON jr.pk_job = j.pk_job
           LEFT JOIN proc p ON p.pk_job = j.pk_job
          WHERE sh.b_scheduler_managed
          GROUP BY j.pk_job, j.str_name, jr.int_max_cores, jr.int_max_gpus",
        &[],
    )? {
        // Every job maximum is a cap, 0 or less a cap of 0 (see `db::accounting::Limits`).
        let (id, name): (String, String) = (r.get(0), r.get(1));
        let (cores, gpus) = (r.get::<_, i64>(2).max(0), r.get::<_, i64>(3).max(0));
        let what = format!("job {name} cores x100");
        out.push((Cap::JobCores(id.clone()), cores, r.get(4), what));
        out.push((Cap::JobGpus(id), gpus, r.get(5), format!("job {name} GPUs")));
    }
    Ok(())
}

/// Core and GPU caps of managed shows' folders.
fn folder_caps(tx: &mut Transaction<'_>, out: &mut Vec<CapSample>) -> Result<(), postgres::Error> {
    for r in tx.query(
        "SELECT f.pk_folder, f.str_name, fr.int_max_cores::bigint, fr.int_max_gpus::bigint,
                coalesce(sum(p.int_cores_reserved), 0)::bigint, coalesce(sum(p.int_gpus_reserved), 0)::bigint
           FROM folder f JOIN show sh ON sh.pk_show = f.pk_show JOIN folder_resource fr ON fr.pk_folder = f.pk_folder
           LEFT JOIN job j ON j.pk_folder = f.pk_folder LEFT JOIN proc p ON p.pk_job = j.pk_job
          WHERE sh.b_scheduler_managed AND (fr.int_max_cores <> -1 OR fr.int_max_gpus <> -1)
          GROUP BY f.pk_folder, f.str_name, fr.int_max_cores, fr.int_max_gpus",
        &[],
    )? {
        // -1 is no cap, anything else a cap, below 0 one of 0 (see `db::accounting::Limits`).
        let (id, name): (String, String) = (r.get(0), r.get(1));
        let (cores, gpus): (i64, i64) = (r.get(2), r.get(3));
        if cores != -1 {
            let what = format!("folder {name} cores x100");
            out.push((Cap::FolderCores(id.clone()), cores.max(0), r.get(4), what));
        }
        if gpus != -1 {
            let what = format!("folder {name} GPUs");
            out.push((Cap::FolderGpus(id), gpus.max(0), r.get(5), what));
        }
    }
    Ok(())
}

/// Layer limits (of every show: a limit is shared).
fn limit_caps(tx: &mut Transaction<'_>, out: &mut Vec<CapSample>) -> Result<(), postgres::Error> {
    for r in tx.query(
        "SELECT lr.pk_limit_record, lr.str_name, coalesce(lr.int_max_value, 0)::bigint,
                (SELECT count(*) FROM layer_limit ll JOIN frame f ON f.pk_layer = ll.pk_layer
                  WHERE ll.pk_limit_record = lr.pk_limit_record AND f.str_state = 'RUNNING')::bigint
           FROM limit_record lr",
        &[],
    )? {
        let what = format!(
            "limit {} (RUNNING frames of its layers)",
            r.get::<_, String>(1)
        );
        out.push((Cap::Limit(r.get(0)), r.get(2), r.get(3), what));
    }
    Ok(())
}

/// Hosts whose idle values leave [0, total] or differ from total minus their procs.
fn bad_hosts(tx: &mut Transaction<'_>) -> Result<(u64, Vec<(String, String)>), postgres::Error> {
    let hosts: i64 = tx.query_one("SELECT count(*) FROM host", &[])?.get(0);
    let rows = tx.query(
        "SELECT h.str_name,
                format('cores %s idle %s procs %s; mem %s idle %s procs %s; gpus %s idle %s procs %s; gpu_mem %s idle %s procs %s',
                       h.int_cores, h.int_cores_idle, coalesce(sum(p.int_cores_reserved), 0),
                       h.int_mem, h.int_mem_idle, coalesce(sum(p.int_mem_reserved), 0),
                       h.int_gpus, h.int_gpus_idle, coalesce(sum(p.int_gpus_reserved), 0),
                       h.int_gpu_mem, h.int_gpu_mem_idle, coalesce(sum(p.int_gpu_mem_reserved), 0))
           FROM host h LEFT JOIN proc p ON p.pk_host = h.pk_host
          GROUP BY h.pk_host
         HAVING h.int_cores_idle NOT BETWEEN 0 AND h.int_cores OR h.int_mem_idle NOT BETWEEN 0 AND h.int_mem
             OR h.int_gpus_idle NOT BETWEEN 0 AND h.int_gpus OR h.int_gpu_mem_idle NOT BETWEEN 0 AND h.int_gpu_mem
             OR h.int_cores - h.int_cores_idle <> coalesce(sum(p.int_cores_reserved), 0)
             OR h.int_mem - h.int_mem_idle <> coalesce(sum(p.int_mem_reserved), 0)
             OR h.int_gpus - h.int_gpus_idle <> coalesce(sum(p.int_gpus_reserved), 0)
             OR h.int_gpu_mem - h.int_gpu_mem_idle <> coalesce(sum(p.int_gpu_mem_reserved), 0)",
        &[],
    )?;
    Ok((
        hosts as u64,
        rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
    ))
}

/// Procs without a RUNNING frame and RUNNING frames without a proc: (key, description).
fn unpaired(tx: &mut Transaction<'_>) -> Result<Vec<(String, String)>, postgres::Error> {
    let rows = tx.query(
        "SELECT 'proc ' || p.pk_proc, 'proc ' || p.pk_proc || ' of frame ' || coalesce(f.str_name, p.pk_frame, '?')
                || ' which is ' || coalesce(f.str_state, 'gone')
           FROM proc p LEFT JOIN frame f ON f.pk_frame = p.pk_frame
          WHERE f.pk_frame IS NULL OR f.str_state <> 'RUNNING'
         UNION ALL
         SELECT 'frame ' || f.pk_frame, 'frame ' || f.str_name || ' (' || f.pk_frame || ') RUNNING on '
                || coalesce(f.str_host, '?') || ' without a proc'
           FROM frame f
          WHERE f.str_state = 'RUNNING' AND NOT EXISTS (SELECT 1 FROM proc p WHERE p.pk_frame = f.pk_frame)",
        &[],
    )?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The sampler: one snapshot per `period`, until `stop`; returns (samples, failed samples).
pub(crate) fn sample_loop(
    url: &str,
    watch: &Watch,
    rqd: &RqdHandle,
    deadline: Duration,
    period: Duration,
    stop: &std::sync::atomic::AtomicBool,
) -> (u64, u64) {
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut client: Option<Client> = None;
    let mut unpaired_since: HashMap<String, Instant> = HashMap::new();
    let mut doubles_seen = 0usize;
    let mut next = Instant::now();
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        next += period;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        doubles_seen = check_double_runs(watch, rqd, doubles_seen);
        let c = match client.as_mut().filter(|c| !c.is_closed()) {
            Some(c) => c,
            None => match Client::connect(url, postgres::NoTls) {
                Ok(c) => client.insert(c),
                Err(_) => {
                    failed += 1;
                    continue;
                }
            },
        };
        match sample(c, watch, deadline, &mut unpaired_since) {
            Ok(()) => ok += 1,
            Err(_) => {
                failed += 1;
                client = None;
            }
        }
    }
    check_double_runs(watch, rqd, doubles_seen);
    (ok, failed)
}

fn check_double_runs(watch: &Watch, rqd: &RqdHandle, seen: usize) -> usize {
    let doubles = rqd.double_runs();
    watch.count("frame running twice", 1);
    let late = if doubles.len() > seen {
        rqd.late_launches()
    } else {
        Default::default()
    };
    for d in doubles.iter().skip(seen) {
        let mut how = if d.running == d.launched {
            "the same proc launched again while it ran (a retried launch RQD had started)"
        } else {
            "a second proc launched while the first still ran"
        }
        .to_owned();
        for (role, p) in [("first", &d.running), ("second", &d.launched)] {
            if late.contains(p) {
                how.push_str(&format!(
                    "; the {role} launch reached RQD after the client's deadline (it had given up)"
                ));
            }
        }
        watch.violate(
            "frame running twice",
            format!("{}/{}", d.frame, d.launched),
            format!(
                "frame {} running as proc {}, launched again as proc {}: {how}, seen at {:.2}s",
                d.frame,
                d.running,
                d.launched,
                watch.secs()
            ),
        );
    }
    doubles.len()
}

fn sample(
    client: &mut Client,
    watch: &Watch,
    deadline: Duration,
    unpaired_since: &mut HashMap<String, Instant>,
) -> Result<(), postgres::Error> {
    let start = Instant::now();
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    // The first statement fixes the transaction's snapshot; this one reports it.
    let text: String = tx
        .query_one("SELECT txid_current_snapshot()::text", &[])?
        .get(0);
    let snapshot = Snapshot::parse(&text).unwrap_or_else(|| panic!("snapshot {text:?}"));
    let caps = caps_sample(&mut tx)?;
    let (hosts, bad) = bad_hosts(&mut tx)?;
    let pairs = unpaired(&mut tx)?;
    tx.commit()?;
    for (cap, max, usage, what) in caps {
        watch.judge(cap, (max, usage), (start, &snapshot), what);
    }
    watch.count("host idle in range and = total - procs", hosts);
    for (host, detail) in bad {
        let evidence = format!("host {host}: {detail} at {:.2}s", watch.secs());
        watch.violate("host ledger", host, evidence);
    }
    watch.count("procs and RUNNING frames paired", 1);
    let now = Instant::now();
    let present: std::collections::HashSet<&String> = pairs.iter().map(|(k, _)| k).collect();
    unpaired_since.retain(|k, _| present.contains(k));
    for (key, what) in pairs {
        let first = *unpaired_since.entry(key.clone()).or_insert(now);
        if now.duration_since(first) > deadline {
            let evidence = format!(
                "{what}, for {:.1}s (deadline {:.1}s) at {:.2}s",
                now.duration_since(first).as_secs_f64(),
                deadline.as_secs_f64(),
                watch.secs()
            );
            watch.violate("proc and RUNNING frame unpaired", key, evidence);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(xmin: i64, xmax: i64, running: &[i64]) -> Snapshot {
        Snapshot {
            xmin,
            xmax,
            running: running.to_vec(),
        }
    }

    #[test]
    fn snapshots_parse_and_see_what_committed_before_them() {
        assert_eq!(Snapshot::parse("10:20:"), Some(snapshot(10, 20, &[])));
        let s = Snapshot::parse("10:20:12,15").unwrap();
        assert_eq!(s, snapshot(10, 20, &[12, 15]));
        assert!(s.sees(9) && s.sees(13) && s.sees(19));
        assert!(!s.sees(12) && !s.sees(15) && !s.sees(20) && !s.sees(30));
        assert_eq!(Snapshot::parse("garbage"), None);
    }

    fn baseline(usage: i64, xid: i64, before: Option<i64>) -> Baseline {
        Baseline {
            usage,
            recorded: Instant::now(),
            why: "limit int_max_value set",
            xid,
            before,
            brought: 0,
        }
    }

    /// Seed 5's one violation: a limit lowered earlier (usage legitimately above it, its
    /// mark at 29) is "changed" to the same max while two frames end; the sample whose
    /// snapshot predates that change still shows 29, and must be judged by the mark it was
    /// taken under, not by the new baseline of 27.
    #[test]
    fn a_sample_taken_before_a_change_is_judged_by_the_mark_before_it() {
        let watch = Watch::new(Duration::from_secs(10));
        let cap = Cap::Limit("license_a".into());
        watch
            .baselines
            .lock()
            .insert(cap.clone(), baseline(27, 200, Some(29)));
        let start = Instant::now();
        let before = snapshot(150, 160, &[]);
        watch.judge(cap.clone(), (25, 29), (start, &before), "limit".into());
        assert!(watch.violations().is_empty());
        // Nor does it lower the new mark.
        assert_eq!(watch.baselines.lock()[&cap].usage, 27);
        let after = snapshot(201, 210, &[]);
        watch.judge(cap.clone(), (25, 28), (start, &after), "limit".into());
        assert_eq!(watch.violations().len(), 1, "{:?}", watch.violations());
        let still_running = snapshot(180, 210, &[200]);
        watch.judge(cap, (25, 29), (start, &still_running), "limit".into());
        assert_eq!(watch.violations()[0].samples, 1);
    }

    #[test]
    fn usage_above_a_lowered_cap_is_allowed_until_it_grows_again() {
        let watch = Watch::new(Duration::from_secs(10));
        let cap = Cap::Limit("l".into());
        watch
            .baselines
            .lock()
            .insert(cap.clone(), baseline(30, 100, None));
        let seen = snapshot(101, 101, &[]);
        let start = Instant::now();
        watch.judge(cap.clone(), (20, 30), (start, &seen), "limit".into());
        watch.judge(cap.clone(), (20, 26), (start, &seen), "limit".into());
        assert!(watch.violations().is_empty());
        watch.judge(cap, (20, 27), (start, &seen), "limit".into());
        assert_eq!(watch.violations().len(), 1);
    }

    /// Seed 6's one violation: a host moved into an allocation with 2 cores of a show's procs
    /// while a booking planned before the move (which saw neither) was in flight; together
    /// they took the subscription 200 over its burst. That much is the move's doing, for as
    /// long as a booking planned before it may still commit; beyond either it is a violation.
    #[test]
    fn a_host_move_may_exceed_a_burst_by_what_it_brought_while_bookings_are_in_flight() {
        let watch = Watch::new(Duration::from_secs(10));
        let cap = Cap::Burst("m2/lite".into());
        let mut moved = baseline(4500, 100, None);
        moved.brought = 200;
        watch.baselines.lock().insert(cap.clone(), moved);
        let seen = snapshot(101, 101, &[]);
        let now = Instant::now();
        watch.judge(cap.clone(), (6800, 7000), (now, &seen), "burst".into());
        assert!(watch.violations().is_empty());
        watch.judge(cap.clone(), (6800, 7001), (now, &seen), "burst".into());
        assert_eq!(watch.violations().len(), 1);
        let later = now + IN_FLIGHT + Duration::from_millis(1);
        watch.judge(cap, (6800, 6900), (later, &seen), "burst".into());
        assert_eq!(watch.violations()[0].samples, 2);
    }
}
