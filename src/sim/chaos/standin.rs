//! The Cuebot stand-in: one thread with its own connection writing the tables the way
//! Cuebot does, beside the stagehand instances. It books the WAITING frames of unmanaged
//! shows on the same hosts (stat rows locked first in `lock_stat_rows` order, limits locked
//! and then counted in a new statement, host row locked, guarded idle decrement, proc insert,
//! frame WAITING→RUNNING under its version guard), respecting every cap so any excess is
//! stagehand's; it completes and fails the frames it booked, and runs the management
//! operations of [`super::admin`] at random.

use std::{
    collections::{BTreeMap, HashMap},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use postgres::Client;
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::invariants::Watch;
use crate::sim::fake_rqd::{RqdHandle, complete_procs};

/// How long after a show stops being managed the stand-in starts booking it: stagehand
/// stops at its next pass, and a pass in flight may still commit.
const UNMANAGED_GRACE: Duration = Duration::from_secs(2);

/// The stand-in's state.
pub(crate) struct StandIn<'a> {
    pub(crate) url: String,
    pub(crate) watch: &'a Watch,
    pub(crate) rqd: &'a RqdHandle,
    pub(crate) rng: StdRng,
    /// Its own procs: (proc, frame, due).
    pub(crate) own: Vec<(String, String, Instant)>,
    /// Shows it books, with the time each stopped being managed.
    pub(crate) unmanaged: HashMap<String, Instant>,
    /// Operations done, by kind.
    pub(crate) actions: BTreeMap<&'static str, u64>,
    /// Flips of `show.b_scheduler_managed` due at set times: (when, pk_show, managed).
    pub(crate) flips: Vec<(Instant, String, bool)>,
}

impl<'a> StandIn<'a> {
    /// A stand-in seeded from `seed`, booking `unmanaged` shows (by `pk_show`).
    pub(crate) fn new(
        url: &str,
        watch: &'a Watch,
        rqd: &'a RqdHandle,
        seed: u64,
        unmanaged: &[String],
    ) -> StandIn<'a> {
        let long_ago = Instant::now() - UNMANAGED_GRACE;
        StandIn {
            url: url.to_owned(),
            watch,
            rqd,
            rng: StdRng::seed_from_u64(seed ^ 0x5747_AD11),
            own: Vec::new(),
            unmanaged: unmanaged.iter().map(|s| (s.clone(), long_ago)).collect(),
            actions: BTreeMap::new(),
            flips: Vec::new(),
        }
    }

    pub(crate) fn did(&mut self, what: &'static str) {
        *self.actions.entry(what).or_default() += 1;
    }

    /// Runs until `stop`; then, until `drained`, only completes its own frames.
    pub(crate) fn run(&mut self, active: &AtomicBool, drained: &AtomicBool) {
        let mut client: Option<Client> = None;
        loop {
            let draining = !active.load(Ordering::Acquire);
            if draining && self.own.is_empty() || drained.load(Ordering::Acquire) {
                break;
            }
            std::thread::sleep(Duration::from_millis(self.rng.random_range(10..40)));
            let c = match client.as_mut().filter(|c| !c.is_closed()) {
                Some(c) => c,
                None => match Client::connect(&self.url, postgres::NoTls) {
                    Ok(c) => client.insert(c),
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    }
                },
            };
            let result = self
                .complete_due(c, draining)
                .and_then(|()| if draining { Ok(()) } else { self.act(c) });
            if let Err(e) = result {
                self.did("error (retried)");
                log::debug!("stand-in: {e}");
                if c.is_closed() || e.code().is_none() {
                    client = None;
                }
            }
        }
    }

    /// One operation, picked at random by weight.
    fn act(&mut self, c: &mut Client) -> Result<(), postgres::Error> {
        if let Some(i) = self
            .flips
            .iter()
            .position(|(at, _, _)| *at <= Instant::now())
        {
            let (_, show, managed) = self.flips[i].clone();
            self.flip(c, &show, managed)?;
            self.flips.remove(i);
            return Ok(());
        }
        // Per mille; about 40 operations a second.
        match self.rng.random_range(0..1000) {
            0..=579 => self.book(c),
            580..=639 => self.kill(c, false),
            640..=679 => self.kill(c, true),
            680..=719 => self.eat_waiting(c),
            720..=759 => self.retry(c),
            760..=839 => self.raise_memory(c),
            840..=879 => self.change_subscription(c),
            880..=904 => self.change_limit(c),
            905..=954 => self.lock_host(c),
            955..=994 => self.move_host(c),
            _ => self.flip_random(c),
        }
    }

    /// Completes (or fails, one in six) its own frames that are due; all of them when
    /// draining.
    fn complete_due(&mut self, c: &mut Client, all: bool) -> Result<(), postgres::Error> {
        let now = Instant::now();
        let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.own)
            .into_iter()
            .partition(|(_, _, at)| all || *at <= now);
        self.own = rest;
        if due.is_empty() {
            return Ok(());
        }
        let items: Vec<(String, String, bool)> = due
            .iter()
            .map(|(p, f, _)| (p.clone(), f.clone(), self.rng.random_range(0..6) == 0))
            .collect();
        match complete_procs(c, &items) {
            Ok(_) => {
                let mut procs = self.watch.standin_procs.lock();
                for (p, _, failed) in &items {
                    procs.remove(p);
                    self.actions
                        .entry(if *failed { "fail" } else { "complete" })
                        .and_modify(|n| *n += 1)
                        .or_insert(1);
                }
                Ok(())
            }
            Err(e) => {
                self.own.extend(due);
                Err(match e {
                    crate::db::DbError::Postgres(e) => e,
                    other => {
                        log::debug!("stand-in completion: {other}");
                        return Ok(());
                    }
                })
            }
        }
    }

    /// The shows it may book now.
    fn bookable(&self) -> Vec<String> {
        self.unmanaged
            .iter()
            .filter(|(_, since)| since.elapsed() >= UNMANAGED_GRACE)
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// A random WAITING frame of `shows` (of 40), with the tags its layer asks for.
    fn pick_frame(
        &mut self,
        c: &mut Client,
        shows: &[String],
    ) -> Result<Option<(Need, Vec<String>)>, postgres::Error> {
        let frames = c.query(
            "SELECT f.pk_frame, coalesce(f.int_version, 0), f.pk_layer, f.pk_job, j.pk_show, j.pk_folder, l.int_cores_min::bigint,
                    l.int_mem_min::bigint, l.int_gpus_min::bigint, l.int_gpu_mem_min::bigint, l.str_tags
               FROM frame f JOIN layer l ON l.pk_layer = f.pk_layer JOIN job j ON j.pk_job = f.pk_job
              WHERE f.str_state = 'WAITING' AND j.str_state = 'PENDING' AND NOT j.b_paused AND j.pk_show = ANY($1)
              LIMIT 40",
            &[&shows],
        )?;
        if frames.is_empty() {
            return Ok(None);
        }
        let f = &frames[self.rng.random_range(0..frames.len())];
        let need = Need {
            frame: f.get(0),
            version: f.get(1),
            layer: f.get(2),
            job: f.get(3),
            show: f.get(4),
            folder: f.get(5),
            amount: [f.get(6), f.get(7), f.get(8), f.get(9)],
        };
        let tags: Vec<String> = f
            .get::<_, String>(10)
            .split('|')
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        Ok(Some((need, tags)))
    }

    /// Books one WAITING frame of an unmanaged show, as Cuebot's dispatcher does.
    fn book(&mut self, c: &mut Client) -> Result<(), postgres::Error> {
        let shows = self.bookable();
        if shows.is_empty() {
            return Ok(());
        }
        let Some((need, tags)) = self.pick_frame(c, &shows)? else {
            return Ok(());
        };
        let host = c.query_opt(
            "SELECT h.pk_host, h.str_name, h.pk_alloc FROM host h
               JOIN subscription s ON s.pk_alloc = h.pk_alloc AND s.pk_show = $1
              WHERE h.str_lock_state = 'OPEN' AND h.int_cores_idle >= $2 AND h.int_mem_idle >= $3
                AND h.int_gpus_idle >= $4 AND h.int_gpu_mem_idle >= $5
                AND EXISTS (SELECT 1 FROM host_tag t WHERE t.pk_host = h.pk_host AND t.str_tag = ANY($6))
              ORDER BY random() LIMIT 1",
            &[
                &need.show,
                &need.amount[0],
                &need.amount[1],
                &need.amount[2],
                &need.amount[3],
                &tags,
            ],
        )?;
        let Some(h) = host else {
            self.did("book: no host");
            return Ok(());
        };
        let (host, name, alloc): (String, String, String) = (h.get(0), h.get(1), h.get(2));
        let proc = uuid::Uuid::new_v4().to_string();
        let outcome = book_one(c, &need, &host, &name, &alloc, &proc)?;
        self.did(outcome);
        if outcome == "book" || outcome == COMMIT_UNKNOWN {
            self.watch.standin_procs.lock().insert(proc.clone());
            let due = Instant::now() + Duration::from_millis(self.rng.random_range(800..3_000));
            self.own.push((proc, need.frame, due));
        }
        Ok(())
    }
}

/// A frame to book: its keys, version and amount (cores ×100, KB, GPUs, KB).
struct Need {
    frame: String,
    version: i32,
    layer: String,
    job: String,
    show: String,
    folder: String,
    amount: [i64; 4],
}

/// One booking transaction; returns what happened ("book" when it committed).
fn book_one(
    c: &mut Client,
    n: &Need,
    host: &str,
    host_name: &str,
    alloc: &str,
    proc: &str,
) -> Result<&'static str, postgres::Error> {
    let mut tx = c.transaction()?;
    if let Err(e) = crate::db::booking::lock_stat_rows(&mut tx, &[&n.layer], &[&n.job]) {
        log::debug!("stand-in: {e}");
        return Ok("book: stat lock failed");
    }
    if !limits_have_room(&mut tx, &n.layer)? {
        return Ok("book: limit full");
    }
    if !within_caps(&mut tx, n, alloc)? {
        return Ok("book: at a cap");
    }
    tx.execute("SELECT 1 FROM host WHERE pk_host = $1 FOR UPDATE", &[&host])?;
    let a = &n.amount;
    let took = tx.execute(
        "UPDATE host SET int_cores_idle = int_cores_idle - $2, int_mem_idle = int_mem_idle - $3,
                int_gpus_idle = int_gpus_idle - $4, int_gpu_mem_idle = int_gpu_mem_idle - $5
          WHERE pk_host = $1 AND str_lock_state = 'OPEN' AND int_cores_idle >= $2 AND int_mem_idle >= $3
            AND int_gpus_idle >= $4 AND int_gpu_mem_idle >= $5",
        &[&host, &a[0], &a[1], &a[2], &a[3]],
    )?;
    if took != 1 {
        return Ok("book: host taken");
    }
    let inserted = tx.execute(
        "INSERT INTO proc (pk_proc, pk_host, pk_show, pk_layer, pk_job, pk_frame, int_cores_reserved,
                           int_mem_reserved, int_mem_pre_reserved, int_gpus_reserved, int_gpu_mem_reserved,
                           int_gpu_mem_pre_reserved)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9::bigint, $10, $10)
         ON CONFLICT (pk_frame) DO NOTHING",
        &[&proc, &host, &n.show, &n.layer, &n.job, &n.frame, &a[0], &a[1], &a[2], &a[3]],
    )?;
    if inserted != 1 {
        return Ok("book: frame has a proc");
    }
    let started = tx.execute(
        "UPDATE frame SET str_state = 'RUNNING', str_host = $3, int_cores = $4::bigint, int_mem_reserved = $5,
                int_gpus = $6::bigint, int_gpu_mem_reserved = $7, ts_started = now(), ts_updated = now(),
                ts_stopped = NULL, int_version = coalesce(int_version, 0) + 1, int_retries = int_retries + 1
          WHERE pk_frame = $1 AND str_state = 'WAITING' AND coalesce(int_version, 0) = $2",
        &[&n.frame, &n.version, &host_name, &a[0], &a[1], &a[2], &a[3]],
    )?;
    if started != 1 {
        return Ok("book: frame changed");
    }
    match tx.commit() {
        Ok(()) => Ok("book"),
        // The database went away during COMMIT: the booking may have committed. It is
        // counted as the stand-in's own either way (completing a proc that does not exist
        // does nothing), or a committed one would stay RUNNING with nobody to end it.
        Err(e) if crate::db::booking::outcome_unknown(&e) => Ok(COMMIT_UNKNOWN),
        Err(e) => Err(e),
    }
}

/// What [`book_one`] says when COMMIT lost its answer.
const COMMIT_UNKNOWN: &str = "book: commit answer lost";

/// Every limit of `layer` has room for one more RUNNING frame: its rows locked first, then
/// counted in a new statement — a snapshot taken after the lock, so a writer that held it
/// and committed is counted.
fn limits_have_room(
    tx: &mut postgres::Transaction<'_>,
    layer: &str,
) -> Result<bool, postgres::Error> {
    let limits: Vec<(String, i64)> = tx
        .query(
            "SELECT lr.pk_limit_record, coalesce(lr.int_max_value, 0)::bigint FROM limit_record lr
              WHERE lr.pk_limit_record IN (SELECT pk_limit_record FROM layer_limit WHERE pk_layer = $1)
              ORDER BY lr.pk_limit_record FOR UPDATE",
            &[&layer],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (limit, max) in &limits {
        let running: i64 = tx
            .query_one(
                "SELECT count(*) FROM layer_limit ll JOIN frame f ON f.pk_layer = ll.pk_layer
                  WHERE ll.pk_limit_record = $1 AND f.str_state = 'RUNNING'",
                &[limit],
            )?
            .get(0);
        if running >= *max {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Burst, job and folder maxima with this frame added (a folder's -1 = unlimited).
fn within_caps(
    tx: &mut postgres::Transaction<'_>,
    n: &Need,
    alloc: &str,
) -> Result<bool, postgres::Error> {
    let r = tx.query_one(
        "SELECT coalesce((SELECT s.int_burst::bigint FROM subscription s WHERE s.pk_show = $1 AND s.pk_alloc = $2), 0),
                (SELECT coalesce(sum(p.int_cores_reserved), 0)::bigint FROM proc p JOIN host h ON h.pk_host = p.pk_host
                  WHERE p.pk_show = $1 AND h.pk_alloc = $2),
                (SELECT int_max_cores::bigint FROM job_resource WHERE pk_job = $3),
                (SELECT int_max_gpus::bigint FROM job_resource WHERE pk_job = $3),
                (SELECT coalesce(sum(int_cores_reserved), 0)::bigint FROM proc WHERE pk_job = $3),
                (SELECT coalesce(sum(int_gpus_reserved), 0)::bigint FROM proc WHERE pk_job = $3),
                (SELECT int_max_cores::bigint FROM folder_resource WHERE pk_folder = $4),
                (SELECT int_max_gpus::bigint FROM folder_resource WHERE pk_folder = $4),
                (SELECT coalesce(sum(p.int_cores_reserved), 0)::bigint FROM proc p JOIN job j ON j.pk_job = p.pk_job
                  WHERE j.pk_folder = $4),
                (SELECT coalesce(sum(p.int_gpus_reserved), 0)::bigint FROM proc p JOIN job j ON j.pk_job = p.pk_job
                  WHERE j.pk_folder = $4)",
        &[&n.show, &alloc, &n.job, &n.folder],
    )?;
    let v = |i: usize| r.get::<_, Option<i64>>(i).unwrap_or(0);
    let (cores, gpus) = (n.amount[0], n.amount[2]);
    // As Cuebot's dispatch: a job's maximum always binds, a folder's unless it is -1.
    let fits = |max: i64, used: i64, add: i64| used + add <= max.max(0);
    let fits_folder = |max: i64, used: i64, add: i64| max == -1 || fits(max, used, add);
    Ok(v(1) + cores <= v(0)
        && fits(v(2), v(4), cores)
        && (gpus == 0 || fits(v(3), v(5), gpus))
        && fits_folder(v(6), v(8), cores)
        && (gpus == 0 || fits_folder(v(7), v(9), gpus)))
}
