//! The stand-in's management operations, as Cuebot performs them: killing and eating
//! frames (through RQD first when the frame runs there), retrying finished frames, raising a
//! running proc's reserved memory (`increaseReservedMemory`: the proc row, then the host's
//! idle memory through Cuebot's `upgrade_proc_memory_usage` trigger, only when the host has
//! it idle), changing subscriptions and limits, locking hosts, moving hosts between
//! allocations and flipping `show.b_scheduler_managed`. Every change to a cap or to what
//! counts against one goes through [`Watch::changing`] so the sampler judges only growth
//! after it.

use std::time::Instant;

use postgres::Client;
use rand::Rng;

use super::{
    invariants::{Brought, Cap},
    standin::StandIn,
};
use crate::db::booking::lock_stat_rows;

/// Memory added by one raise, KB (512 MB).
const RAISE_KB: i64 = 512 * 1024;

fn stat_locked(tx: &mut postgres::Transaction<'_>, layer: &str, job: &str) -> bool {
    lock_stat_rows(tx, &[layer], &[job]).is_ok()
}

/// How [`release_killed`] ended.
enum Released {
    /// Proc deleted, frame stopped, host given back.
    Done,
    /// The frame's stat rows were locked by another writer: nothing done (rolled back).
    StatsBusy,
    /// The proc was released by someone else first.
    AlreadyGone,
}

/// Cuebot's release of a killed proc in one transaction: the proc deleted, its frame set to
/// `state`, the host's idle resources given back.
fn release_killed(
    c: &mut Client,
    proc: &str,
    frame: &str,
    layer: &str,
    job: &str,
    state: &str,
) -> Result<Released, postgres::Error> {
    let mut tx = c.transaction()?;
    if !stat_locked(&mut tx, layer, job) {
        return Ok(Released::StatsBusy);
    }
    let Some(p) = tx.query_opt(
        "DELETE FROM proc WHERE pk_proc = $1 RETURNING pk_host, int_cores_reserved, int_mem_reserved,
                int_gpus_reserved::bigint, int_gpu_mem_reserved",
        &[&proc],
    )?
    else {
        return Ok(Released::AlreadyGone);
    };
    tx.execute(
        "UPDATE frame SET str_state = $2, int_exit_status = 301, ts_stopped = now(), ts_updated = now(),
                int_version = coalesce(int_version, 0) + 1
          WHERE pk_frame = $1 AND str_state = 'RUNNING'",
        &[&frame, &state],
    )?;
    let host: String = p.get(0);
    tx.execute("SELECT 1 FROM host WHERE pk_host = $1 FOR UPDATE", &[&host])?;
    tx.execute(
        "UPDATE host SET int_cores_idle = int_cores_idle + $2, int_mem_idle = int_mem_idle + $3,
                int_gpus_idle = int_gpus_idle + $4, int_gpu_mem_idle = int_gpu_mem_idle + $5
          WHERE pk_host = $1",
        &[
            &host,
            &p.get::<_, i64>(1),
            &p.get::<_, i64>(2),
            &p.get::<_, i64>(3),
            &p.get::<_, i64>(4),
        ],
    )?;
    tx.commit()?;
    Ok(Released::Done)
}

impl StandIn<'_> {
    /// Kills a running frame (back to WAITING, or EATEN when `eat`): through the fake RQD
    /// first when stagehand launched it there, and only once RQD has killed it.
    pub(crate) fn kill(&mut self, c: &mut Client, eat: bool) -> Result<(), postgres::Error> {
        let rows = c.query(
            "SELECT p.pk_proc, p.pk_frame, p.pk_layer, p.pk_job FROM proc p
               JOIN frame f ON f.pk_frame = p.pk_frame WHERE f.str_state = 'RUNNING'
              ORDER BY random() LIMIT 1",
            &[],
        )?;
        let Some(r) = rows.first() else {
            return Ok(());
        };
        let (proc, frame, layer, job): (String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let own = self.watch.standin_procs.lock().contains(&proc);
        if !own {
            // A frame stagehand booked whose launch has not reached RQD yet is killed all the
            // same, as Cuebot's `killAndConfirmDead` does: RQD answers OK to a kill of a frame
            // it does not know, and the launch may land afterwards.
            let running = self.rqd.running();
            if !running.get(&frame).is_some_and(|p| p.contains(&proc)) {
                self.did("kill: before RQD started it");
            }
            if !self.rqd.kill_frame(&frame, "Cuebot stand-in: kill") {
                self.did("kill: refused by RQD");
                return Ok(());
            }
        }
        let state = if eat { "EATEN" } else { "WAITING" };
        match release_killed(c, &proc, &frame, &layer, &job, state)? {
            Released::Done => {}
            Released::StatsBusy => return Ok(()),
            Released::AlreadyGone => {
                self.did("kill: already released");
                return Ok(());
            }
        }
        if own {
            self.watch.standin_procs.lock().remove(&proc);
            self.own.retain(|(p, _, _)| *p != proc);
        }
        self.did(if eat { "eat running" } else { "kill" });
        Ok(())
    }

    /// Eats a WAITING frame (of a managed show half of the time: a race with the bookers).
    pub(crate) fn eat_waiting(&mut self, c: &mut Client) -> Result<(), postgres::Error> {
        let managed = self.rng.random_bool(0.5);
        let rows = c.query(
            "SELECT f.pk_frame, f.pk_layer, f.pk_job FROM frame f JOIN job j ON j.pk_job = f.pk_job
               JOIN show sh ON sh.pk_show = j.pk_show
              WHERE f.str_state = 'WAITING' AND sh.b_scheduler_managed = $1
              LIMIT 20",
            &[&managed],
        )?;
        if rows.is_empty() {
            return Ok(());
        }
        let r = &rows[self.rng.random_range(0..rows.len())];
        let (frame, layer, job): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        let mut tx = c.transaction()?;
        if !stat_locked(&mut tx, &layer, &job) {
            return Ok(());
        }
        let n = tx.execute(
            "UPDATE frame SET str_state = 'EATEN', ts_updated = now(), int_version = coalesce(int_version, 0) + 1
              WHERE pk_frame = $1 AND str_state = 'WAITING'",
            &[&frame],
        )?;
        tx.commit()?;
        self.did(if n == 1 {
            "eat waiting"
        } else {
            "eat: lost race"
        });
        Ok(())
    }

    /// Retries a DEAD, EATEN or SUCCEEDED frame of a pending job (back to WAITING).
    pub(crate) fn retry(&mut self, c: &mut Client) -> Result<(), postgres::Error> {
        let rows = c.query(
            "SELECT f.pk_frame, f.pk_layer, f.pk_job, f.str_state FROM frame f JOIN job j ON j.pk_job = f.pk_job
              WHERE j.str_state = 'PENDING' AND f.str_state IN ('DEAD', 'EATEN', 'SUCCEEDED')
              LIMIT 20",
            &[],
        )?;
        if rows.is_empty() {
            return Ok(());
        }
        let r = &rows[self.rng.random_range(0..rows.len())];
        let (frame, layer, job, state): (String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let mut tx = c.transaction()?;
        if !stat_locked(&mut tx, &layer, &job) {
            return Ok(());
        }
        let n = tx.execute(
            "UPDATE frame SET str_state = 'WAITING', ts_updated = now(), int_version = coalesce(int_version, 0) + 1
              WHERE pk_frame = $1 AND str_state = $2",
            &[&frame, &state],
        )?;
        tx.commit()?;
        self.did(if n == 1 { "retry" } else { "retry: lost race" });
        Ok(())
    }

    /// Raises a running proc's reserved memory when its host has that much idle. Cuebot
    /// raises only what RQD reports running: the stand-in's own procs, or procs the fake RQD
    /// runs (whatever stagehand believes about their launch).
    pub(crate) fn raise_memory(&mut self, c: &mut Client) -> Result<(), postgres::Error> {
        let rows = c.query(
            "SELECT p.pk_proc, p.pk_host, coalesce(p.pk_frame, '') FROM proc p ORDER BY random() LIMIT 1",
            &[],
        )?;
        let Some(r) = rows.first() else {
            return Ok(());
        };
        let (proc, host, frame): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        let reported = self.watch.standin_procs.lock().contains(&proc)
            || self
                .rqd
                .running()
                .get(&frame)
                .is_some_and(|p| p.contains(&proc));
        if !reported {
            self.did("raise memory: not running on RQD");
            return Ok(());
        }
        let mut tx = c.transaction()?;
        // Proc before host: the order of the completion and compensation paths.
        if tx
            .query_opt("SELECT 1 FROM proc WHERE pk_proc = $1 FOR UPDATE", &[&proc])?
            .is_none()
        {
            return Ok(());
        }
        let idle: i64 = tx
            .query_one(
                "SELECT int_mem_idle FROM host WHERE pk_host = $1 FOR UPDATE",
                &[&host],
            )?
            .get(0);
        if idle < RAISE_KB {
            self.did("raise memory: host full");
            return Ok(());
        }
        tx.execute(
            "UPDATE proc SET int_mem_reserved = int_mem_reserved + $2 WHERE pk_proc = $1",
            &[&proc, &RAISE_KB],
        )?;
        tx.commit()?;
        self.did("raise memory");
        Ok(())
    }

    /// New size and burst (15–80 % of the allocation) for a random subscription.
    pub(crate) fn change_subscription(&mut self, c: &mut Client) -> Result<(), postgres::Error> {
        let rows = c.query(
            "SELECT s.pk_subscription,
                    (SELECT coalesce(sum(h.int_cores), 0)::bigint FROM host h WHERE h.pk_alloc = s.pk_alloc)
               FROM subscription s ORDER BY s.pk_subscription",
            &[],
        )?;
        if rows.is_empty() {
            return Ok(());
        }
        let r = &rows[self.rng.random_range(0..rows.len())];
        let (sub, total): (String, i64) = (r.get(0), r.get(1));
        let burst = (total * self.rng.random_range(15..=80) / 100 / 100).max(1) * 100;
        let size = (burst / 200).max(1) * 100;
        self.watch.changing(
            c,
            "subscription size/burst set",
            vec![Cap::Burst(sub.clone())],
            |c| {
                c.execute(
                "UPDATE subscription SET int_size = $2, int_burst = $3 WHERE pk_subscription = $1",
                &[&sub, &size, &burst],
            )
            .map(|n| (n, Brought::new()))
            },
        )?;
        self.did("change subscription");
        Ok(())
    }

    /// A new `int_max_value` for a random limit (half to one and a half times the current).
    pub(crate) fn change_limit(&mut self, c: &mut Client) -> Result<(), postgres::Error> {
        let rows = c.query(
            "SELECT pk_limit_record, coalesce(int_max_value, 0) FROM limit_record ORDER BY pk_limit_record",
            &[],
        )?;
        if rows.is_empty() {
            return Ok(());
        }
        let r = &rows[self.rng.random_range(0..rows.len())];
        let (limit, current): (String, i32) = (r.get(0), r.get(1));
        let half = (current / 2).max(1);
        let max = (current + self.rng.random_range(-half..=half)).clamp(2, 60);
        self.watch.changing(
            c,
            "limit int_max_value set",
            vec![Cap::Limit(limit.clone())],
            |c| {
                c.execute(
                    "UPDATE limit_record SET int_max_value = $2 WHERE pk_limit_record = $1",
                    &[&limit, &max],
                )
                .map(|n| (n, Brought::new()))
            },
        )?;
        self.did("change limit");
        Ok(())
    }

    /// Locks an open host (while fewer than a sixth are locked) or unlocks a locked one.
    pub(crate) fn lock_host(&mut self, c: &mut Client) -> Result<(), postgres::Error> {
        let r = c.query_one(
            "SELECT count(*) FILTER (WHERE str_lock_state <> 'OPEN'), count(*) FROM host",
            &[],
        )?;
        let (locked, hosts): (i64, i64) = (r.get(0), r.get(1));
        let lock = locked < hosts / 6 && (locked == 0 || self.rng.random_bool(0.6));
        let (from, to) = if lock {
            ("OPEN", "LOCKED")
        } else {
            ("LOCKED", "OPEN")
        };
        let n = c.execute(
            "UPDATE host SET str_lock_state = $2
              WHERE pk_host = (SELECT pk_host FROM host WHERE str_lock_state = $1 ORDER BY random() LIMIT 1)",
            &[&from, &to],
        )?;
        if n == 1 {
            self.did(if lock { "lock host" } else { "unlock host" });
        }
        Ok(())
    }

    /// Moves a random host to another allocation (its ALLOC tag follows, as in Cuebot's
    /// `updateHostSetAllocation`); its procs now count against the new allocation.
    pub(crate) fn move_host(&mut self, c: &mut Client) -> Result<(), postgres::Error> {
        let host: String = c
            .query_one("SELECT pk_host FROM host ORDER BY random() LIMIT 1", &[])?
            .get(0);
        let allocs = c.query(
            "SELECT a.pk_alloc, a.str_tag FROM alloc a
              WHERE a.pk_alloc <> (SELECT pk_alloc FROM host WHERE pk_host = $1) ORDER BY a.pk_alloc",
            &[&host],
        )?;
        if allocs.is_empty() {
            return Ok(());
        }
        let a = &allocs[self.rng.random_range(0..allocs.len())];
        let (alloc, tag): (String, String) = (a.get(0), a.get(1));
        let caps = c
            .query(
                "SELECT pk_subscription FROM subscription WHERE pk_alloc = $1",
                &[&alloc],
            )?
            .iter()
            .map(|r| Cap::Burst(r.get(0)))
            .collect();
        self.watch.changing(c, "host moved into its allocation", caps, |c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "UPDATE host SET pk_alloc = $2 WHERE pk_host = $1",
                &[&host, &alloc],
            )?;
            // What the host's procs add to each subscription of its new allocation (read after
            // the update took the host's row, so no booking on it commits in between).
            let brought: Brought = tx
                .query(
                    "SELECT s.pk_subscription, sum(p.int_cores_reserved)::bigint
                       FROM proc p JOIN subscription s ON s.pk_show = p.pk_show AND s.pk_alloc = $2
                      WHERE p.pk_host = $1 AND NOT p.b_local GROUP BY s.pk_subscription",
                    &[&host, &alloc],
                )?
                .iter()
                .map(|r| (Cap::Burst(r.get(0)), r.get(1)))
                .collect();
            tx.execute(
                "DELETE FROM host_tag WHERE pk_host = $1 AND upper(str_tag_type) = 'ALLOC'",
                &[&host],
            )?;
            tx.execute(
                "INSERT INTO host_tag (pk_host_tag, pk_host, str_tag, str_tag_type) VALUES ($1, $2, $3, 'ALLOC')",
                &[&uuid::Uuid::new_v4().to_string(), &host, &tag],
            )?;
            tx.commit().map(|()| ((), brought))
        })?;
        self.did("move host");
        Ok(())
    }

    /// Flips a random show.
    pub(crate) fn flip_random(&mut self, c: &mut Client) -> Result<(), postgres::Error> {
        let r = c.query_one(
            "SELECT pk_show, b_scheduler_managed FROM show ORDER BY random() LIMIT 1",
            &[],
        )?;
        let (show, managed): (String, bool) = (r.get(0), r.get(1));
        self.flip(c, &show, !managed)
    }

    /// Sets `show.b_scheduler_managed`: the stand-in stops booking a show it hands to
    /// stagehand at once, and starts on one it takes back after a grace period.
    pub(crate) fn flip(
        &mut self,
        c: &mut Client,
        show: &str,
        managed: bool,
    ) -> Result<(), postgres::Error> {
        const FLIP: &str = "UPDATE show SET b_scheduler_managed = $2 WHERE pk_show = $1";
        if !managed {
            c.execute(FLIP, &[&show, &managed])?;
            self.unmanaged.insert(show.to_owned(), Instant::now());
            self.did("flip to unmanaged");
            return Ok(());
        }
        // Its procs booked while unmanaged count against its caps from now on.
        self.unmanaged.remove(show);
        let mut caps: Vec<Cap> = Vec::new();
        for r in c.query(
            "SELECT 's', pk_subscription FROM subscription WHERE pk_show = $1
             UNION ALL SELECT 'j', pk_job FROM job WHERE pk_show = $1
             UNION ALL SELECT 'f', pk_folder FROM folder WHERE pk_show = $1",
            &[&show],
        )? {
            let (kind, key): (&str, String) = (r.get(0), r.get(1));
            match kind {
                "s" => caps.push(Cap::Burst(key)),
                "j" => caps.extend([Cap::JobCores(key.clone()), Cap::JobGpus(key)]),
                _ => caps.extend([Cap::FolderCores(key.clone()), Cap::FolderGpus(key)]),
            }
        }
        self.watch
            .changing(c, "show flipped to managed", caps, |tx| {
                tx.execute(FLIP, &[&show, &managed])
                    .map(|n| (n, Brought::new()))
            })?;
        self.did("flip to managed");
        Ok(())
    }
}
