//! The cap guard of the booking transaction: subscription bursts and job and folder maxima
//! (cores and GPUs) checked against the database, so a cap lowered by an operator or Cuebot
//! binds from the moment it commits, not from the next time the counters re-read the caps.
//!
//! Lock first, then count. The cap rows (`subscription`, `job_resource`, `folder_resource`)
//! are locked FOR SHARE, in key order, so a change of a cap waits for this batch's commit and
//! a batch that waits for a change sees it; then a new statement reads the caps and what
//! committed procs hold under each. Bookings of one job already serialize on its `job_stat`
//! row, so for a job the committed count is the whole truth. A subscription or a folder is
//! shared by several jobs whose batches run side by side, each uncommitted to the others: the
//! caller passes what this instance has charged and not yet committed under each
//! ([`InFlight`], read before the count), and the guard leaves room for the other batches'
//! share of it. With the show fenced to one instance, nothing else books under these caps.
//! The folder is the one the job is in now: a placement planned under a folder its job has
//! since left is refused, not checked against a cap that no longer binds it.

use std::collections::{BTreeSet, HashMap};

use crate::db::session::Tx;

use super::{DbError, accounting::Limits, booking::Placement};
use crate::{
    ids::{AllocId, FolderId, ShowId},
    model::CoresGpus,
};

/// Charged and not yet committed by this instance (every batch in flight, this one included):
/// centicores per (show, alloc) and (centicores, GPUs) per folder.
#[derive(Clone, Debug, Default)]
pub struct InFlight {
    /// Centicores per subscription (show, allocation).
    pub subs: HashMap<(ShowId, AllocId), i64>,
    /// Centicores and GPUs per folder.
    pub folders: HashMap<FolderId, CoresGpus>,
}

/// One cap's room: what may still be booked under it by this batch.
#[derive(Clone, Copy, Debug)]
struct Room {
    cores: Option<i64>,
    gpus: Option<i64>,
}

impl Room {
    /// Whether `cores` and `gpus` fit; GPUs are checked only for a frame that takes some, as
    /// Cuebot's dispatch does (a job at its GPU maximum still runs its CPU layers).
    fn fits(&self, cores: i64, gpus: i64) -> bool {
        self.cores.is_none_or(|c| cores <= c) && (gpus == 0 || self.gpus.is_none_or(|g| gpus <= g))
    }

    fn take(&mut self, cores: i64, gpus: i64) {
        self.cores = self.cores.map(|c| c - cores);
        self.gpus = self.gpus.map(|g| g - gpus);
    }
}

/// The placements of `live` (indices into `placements`, in batch order) that a cap refuses.
pub(super) fn refused(
    tx: &mut Tx<'_>,
    placements: &[Placement],
    live: &[usize],
    inflight: &InFlight,
) -> Result<BTreeSet<usize>, DbError> {
    if live.is_empty() {
        return Ok(BTreeSet::new());
    }
    let mut refused = moved(tx, placements, live)?;
    let live: Vec<usize> = live
        .iter()
        .copied()
        .filter(|i| !refused.contains(i))
        .collect();
    if live.is_empty() {
        return Ok(refused);
    }
    let live = &live[..];
    let keys = Keys::of(placements, live);
    lock(tx, &keys)?;
    let mut rooms = read_rooms(tx, &keys)?;
    let tight = tight_subs(&rooms, placements, live, inflight);
    if !tight.is_empty() {
        exact_subs(tx, &tight, &mut rooms)?;
    }
    subtract_others(&mut rooms, placements, inflight);
    for &i in live {
        let p = &placements[i];
        let (cores, gpus) = (i64::from(p.amount.cores), i64::from(p.amount.gpus));
        let keys = [
            format!("s/{}/{}", p.show, p.alloc),
            format!("j/{}", p.job),
            format!("f/{}", p.folder),
        ];
        if keys
            .iter()
            .all(|k| rooms.get(k).is_none_or(|r| r.fits(cores, gpus)))
        {
            for k in &keys {
                if let Some(r) = rooms.get_mut(k) {
                    r.take(cores, gpus);
                }
            }
        } else {
            refused.insert(i);
        }
    }
    Ok(refused)
}

/// The placements of `live` whose job is no longer in the folder the pass planned it under
/// (an operator moved it since): the folder cap that binds them is one this batch was not
/// going to lock or count, so they wait for a pass that reads the move. A move that commits
/// after this read is ordered after the booking, as if made a moment later.
fn moved(
    tx: &mut Tx<'_>,
    placements: &[Placement],
    live: &[usize],
) -> Result<BTreeSet<usize>, DbError> {
    let jobs: BTreeSet<&str> = live.iter().map(|&i| placements[i].job.as_str()).collect();
    let jobs: Vec<&str> = jobs.into_iter().collect();
    let folders: HashMap<String, String> = tx
        .query(
            "SELECT pk_job, pk_folder FROM job WHERE pk_job = ANY($1)",
            &[&jobs],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(live
        .iter()
        .copied()
        .filter(|&i| {
            let p = &placements[i];
            folders
                .get(p.job.as_str())
                .is_some_and(|f| f != p.folder.as_str())
        })
        .collect())
}

/// The cap keys of a batch, each list sorted.
struct Keys<'a> {
    sub_shows: Vec<&'a str>,
    sub_allocs: Vec<&'a str>,
    jobs: Vec<&'a str>,
    folders: Vec<&'a str>,
}

impl<'a> Keys<'a> {
    fn of(placements: &'a [Placement], live: &[usize]) -> Keys<'a> {
        let subs: BTreeSet<(&str, &str)> = live
            .iter()
            .map(|&i| (placements[i].show.as_str(), placements[i].alloc.as_str()))
            .collect();
        let jobs: BTreeSet<&str> = live.iter().map(|&i| placements[i].job.as_str()).collect();
        let folders: BTreeSet<&str> = live
            .iter()
            .map(|&i| placements[i].folder.as_str())
            .collect();
        Keys {
            sub_shows: subs.iter().map(|s| s.0).collect(),
            sub_allocs: subs.iter().map(|s| s.1).collect(),
            jobs: jobs.into_iter().collect(),
            folders: folders.into_iter().collect(),
        }
    }
}

/// Locks the cap rows FOR SHARE in key order (the recompute updates them in the same order),
/// in one statement: the scalar subqueries of its one row run in order, subscriptions, jobs,
/// folders, each table's rows in key order.
fn lock(tx: &mut Tx<'_>, k: &Keys<'_>) -> Result<(), DbError> {
    tx.execute(
        "WITH s AS (SELECT 1 FROM subscription s
                      JOIN unnest($1::text[], $2::text[]) AS b(show, alloc)
                        ON s.pk_show = b.show AND s.pk_alloc = b.alloc
                     ORDER BY s.pk_subscription FOR SHARE OF s),
              j AS (SELECT 1 FROM job_resource WHERE pk_job = ANY($3)
                     ORDER BY pk_job_resource FOR SHARE),
              f AS (SELECT 1 FROM folder_resource WHERE pk_folder = ANY($4)
                     ORDER BY pk_folder_resource FOR SHARE)
         SELECT (SELECT count(*) FROM s), (SELECT count(*) FROM j), (SELECT count(*) FROM f)",
        &[&k.sub_shows, &k.sub_allocs, &k.jobs, &k.folders],
    )?;
    Ok(())
}

/// Room under every cap of the batch after what committed procs hold (a new statement, so a
/// fresh snapshot after the locks). Unlimited dimensions (a folder's -1) have no room entry;
/// a subscription that does not exist has room 0.
fn read_rooms(tx: &mut Tx<'_>, k: &Keys<'_>) -> Result<HashMap<String, Room>, DbError> {
    let rows = tx.query(
        // A subscription's usage is first bounded by what is in use on its allocation's hosts
        // (int_cores - int_cores_idle, which every writer keeps equal to the host's procs in
        // the same transaction, and which the host guard trusts already): a few hundred host
        // rows instead of every proc of the show. Where the bound leaves too little room the
        // exact count follows ([`exact_subs`]).
        //
        // Each branch is driven by its keys, one lateral sum per key, so its plan does not
        // hang on statistics: the booking runs it on a generic plan (see `db::session`).
        "SELECT 's/' || b.show || '/' || b.alloc, coalesce(s.int_burst, 0)::bigint, -1::bigint,
                coalesce(u.cores, 0)::bigint, 0::bigint
           FROM unnest($1::text[], $2::text[]) AS b(show, alloc)
           LEFT JOIN subscription s ON s.pk_show = b.show AND s.pk_alloc = b.alloc
           LEFT JOIN LATERAL (SELECT sum(greatest(h.int_cores - h.int_cores_idle, 0)) AS cores
                                FROM host h WHERE h.pk_alloc = b.alloc) u ON true
         UNION ALL
         SELECT 'j/' || jr.pk_job, jr.int_max_cores::bigint, jr.int_max_gpus::bigint,
                coalesce(ju.cores, 0)::bigint, coalesce(ju.gpus, 0)::bigint
           FROM unnest($3::text[]) AS k(job)
           JOIN job_resource jr ON jr.pk_job = k.job
           LEFT JOIN LATERAL (SELECT sum(p.int_cores_reserved) AS cores, sum(p.int_gpus_reserved) AS gpus
                                FROM proc p WHERE p.pk_job = jr.pk_job) ju ON true
         UNION ALL
         SELECT 'f/' || fr.pk_folder, fr.int_max_cores::bigint, fr.int_max_gpus::bigint,
                coalesce(fu.cores, 0)::bigint, coalesce(fu.gpus, 0)::bigint
           FROM unnest($4::text[]) AS k(folder)
           JOIN folder_resource fr ON fr.pk_folder = k.folder
           LEFT JOIN LATERAL (SELECT sum(p.int_cores_reserved) AS cores, sum(p.int_gpus_reserved) AS gpus
                                FROM proc p JOIN job j ON j.pk_job = p.pk_job
                               WHERE j.pk_folder = fr.pk_folder) fu ON true
          WHERE fr.int_max_cores <> -1 OR fr.int_max_gpus <> -1",
        &[&k.sub_shows, &k.sub_allocs, &k.jobs, &k.folders],
    )?;
    Ok(rows
        .iter()
        .map(|r| {
            let key: String = r.get(0);
            let (max_cores, max_gpus): (i64, i64) = (r.get(1), r.get(2));
            let (cores, gpus): (i64, i64) = (r.get(3), r.get(4));
            // A burst of 0 means no room; jobs' and folders' maxima as `Limits` reads them.
            let limits = match key.as_bytes().first() {
                Some(b's') => Limits {
                    cores: Some(max_cores),
                    gpus: None,
                },
                Some(b'j') => Limits::job(max_cores, max_gpus),
                _ => Limits::folder(max_cores, max_gpus),
            };
            let room = Room {
                cores: limits.cores.map(|max| max - cores),
                gpus: limits.gpus.map(|max| max - gpus),
            };
            (key, room)
        })
        .collect())
}

/// The subscriptions whose bounded room is less than what this instance wants under them
/// (this batch and the other batches in flight): those need the exact count.
fn tight_subs<'p>(
    rooms: &HashMap<String, Room>,
    placements: &'p [Placement],
    live: &[usize],
    inflight: &InFlight,
) -> Vec<(&'p str, &'p str)> {
    let mut own: HashMap<(&ShowId, &AllocId), i64> = HashMap::new();
    for &i in live {
        let p = &placements[i];
        *own.entry((&p.show, &p.alloc)).or_default() += i64::from(p.amount.cores);
    }
    let mut tight: Vec<(&str, &str)> = own
        .into_iter()
        .filter(|((show, alloc), own)| {
            let all = inflight
                .subs
                .get(&((*show).clone(), (*alloc).clone()))
                .copied()
                .unwrap_or(*own)
                .max(*own);
            let room = rooms
                .get(&format!("s/{show}/{alloc}"))
                .and_then(|r| r.cores);
            room.is_some_and(|room| room < all)
        })
        .map(|((show, alloc), _)| (show.as_str(), alloc.as_str()))
        .collect();
    tight.sort_unstable();
    tight
}

/// Replaces the bounded room of `subs` by the exact one: the burst less what the show's
/// committed procs on the allocation's hosts hold (local dispatch does not count).
fn exact_subs(
    tx: &mut Tx<'_>,
    subs: &[(&str, &str)],
    rooms: &mut HashMap<String, Room>,
) -> Result<(), DbError> {
    let shows: Vec<&str> = subs.iter().map(|s| s.0).collect();
    let allocs: Vec<&str> = subs.iter().map(|s| s.1).collect();
    let rows = tx.query(
        "SELECT b.show, b.alloc, coalesce(s.int_burst, 0)::bigint,
                coalesce((SELECT sum(p.int_cores_reserved) FROM proc p JOIN host h ON h.pk_host = p.pk_host
                           WHERE p.pk_show = b.show AND h.pk_alloc = b.alloc AND NOT p.b_local), 0)::bigint
           FROM unnest($1::text[], $2::text[]) AS b(show, alloc)
           LEFT JOIN subscription s ON s.pk_show = b.show AND s.pk_alloc = b.alloc",
        &[&shows, &allocs],
    )?;
    for r in &rows {
        let (show, alloc): (String, String) = (r.get(0), r.get(1));
        let (burst, used): (i64, i64) = (r.get(2), r.get(3));
        if let Some(room) = rooms.get_mut(&format!("s/{show}/{alloc}")) {
            room.cores = Some(burst - used);
        }
    }
    Ok(())
}

/// Leaves room for the other batches in flight under shared caps: what this instance has
/// charged and not committed, less this batch's own charges.
fn subtract_others(
    rooms: &mut HashMap<String, Room>,
    placements: &[Placement],
    inflight: &InFlight,
) {
    let mut own_subs: HashMap<(&ShowId, &AllocId), i64> = HashMap::new();
    let mut own_folders: HashMap<&FolderId, CoresGpus> = HashMap::new();
    for p in placements {
        *own_subs.entry((&p.show, &p.alloc)).or_default() += i64::from(p.amount.cores);
        let f = own_folders.entry(&p.folder).or_default();
        f.cores += i64::from(p.amount.cores);
        f.gpus += i64::from(p.amount.gpus);
    }
    for ((show, alloc), own) in own_subs {
        let all = inflight
            .subs
            .get(&(show.clone(), alloc.clone()))
            .copied()
            .unwrap_or(own);
        if let Some(r) = rooms.get_mut(&format!("s/{show}/{alloc}")) {
            r.cores = r.cores.map(|c| c - (all - own).max(0));
        }
    }
    for (folder, own) in own_folders {
        let all = inflight.folders.get(folder).copied().unwrap_or(own);
        if let Some(r) = rooms.get_mut(&format!("f/{folder}")) {
            r.cores = r.cores.map(|c| c - (all.cores - own.cores).max(0));
            r.gpus = r.gpus.map(|g| g - (all.gpus - own.gpus).max(0));
        }
    }
}
