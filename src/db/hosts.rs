//! Host SQL: the eligible hosts the index is refreshed from, in full or (between full reads)
//! only the hosts whose rows changed since the last read.
//!
//! Eligibility (OpenCue's rules): the host is OPEN, its `host_stat` is UP, it pinged within
//! `ping_timeout`, and its allocation is in the facility. Idle memory is the smaller of what
//! Cuebot booked (`host.int_mem_idle`) and what RQD reports free (`host_stat.int_mem_free`),
//! likewise GPU memory.

use std::time::Duration;

use postgres::GenericClient;

use super::{
    DbError, resources_at,
    session::{Cached, Session},
};
use crate::{
    ids::{AllocId, FacilityId, HostId},
    model::{Resources, ThreadMode},
};

/// One eligible host as the database has it.
#[derive(Clone, Debug)]
pub struct HostRow {
    /// `host.pk_host`.
    pub id: HostId,
    /// `host.str_name`.
    pub name: String,
    /// `host.pk_alloc`.
    pub alloc: AllocId,
    /// `host_stat.str_os`.
    pub os: String,
    /// `host.int_thread_mode`.
    pub thread_mode: ThreadMode,
    /// Every tag of the host (`host_tag.str_tag`).
    pub tags: Vec<String>,
    /// Capacity.
    pub total: Resources,
    /// Idle resources.
    pub idle: Resources,
}

/// OpenCue's eligibility of a host, `$1` the ping timeout in seconds.
const ELIGIBLE: &str = "(h.str_lock_state = 'OPEN' AND hs.str_state = 'UP'
    AND hs.ts_ping > now() - make_interval(secs => $1))";

/// A read of hosts restricted by `filter`, `$1` the ping timeout in seconds and `$2` the
/// facility (NULL for all); the last column says whether the host is eligible (the read of
/// changes returns ineligible hosts too, so the index drops them).
fn host_select(filter: &str) -> String {
    format!(
        "SELECT h.pk_host, h.str_name, h.pk_alloc, hs.str_os, h.int_thread_mode::int,
                ARRAY(SELECT ht.str_tag::text FROM host_tag ht WHERE ht.pk_host = h.pk_host),
                h.int_cores::bigint, h.int_mem::bigint, h.int_gpus::bigint, h.int_gpu_mem::bigint,
                h.int_cores_idle::bigint, least(h.int_mem_idle, hs.int_mem_free)::bigint,
                h.int_gpus_idle::bigint, least(h.int_gpu_mem_idle, hs.int_gpu_mem_free)::bigint,
                {ELIGIBLE}
           FROM host h
           JOIN host_stat hs ON hs.pk_host = h.pk_host
           JOIN alloc a ON a.pk_alloc = h.pk_alloc
          WHERE ($2::text IS NULL OR a.pk_facility = $2) AND {filter}"
    )
}

/// Every eligible host (of one facility when given).
pub(crate) fn eligible_hosts(
    conn: &mut impl GenericClient,
    facility: Option<&FacilityId>,
    ping_timeout: Duration,
) -> Result<Vec<HostRow>, DbError> {
    let rows = conn.query(
        &host_select(ELIGIBLE),
        &[&ping_timeout.as_secs_f64(), &facility],
    )?;
    Ok(rows.iter().map(host_row).collect())
}

/// Where a read of the host table stood: the oldest transaction its snapshot did not see
/// (`txid_snapshot_xmin`, 64 bits with the epoch). Every change that read missed was made by
/// a transaction at or past it, so the next read of changes starts there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeMark(i64);

impl ChangeMark {
    /// The 32-bit transaction id a row's `xmin` is compared with.
    fn xid(self) -> i64 {
        self.0 & 0xffff_ffff
    }

    /// The transaction-id epoch (how often the 32-bit ids wrapped).
    fn epoch(self) -> i64 {
        self.0 >> 32
    }
}

/// What a read of changed hosts found.
pub enum Changes {
    /// The hosts (of the facility) whose `host` or `host_stat` row changed since the mark,
    /// each with whether it is still eligible, and the mark for the next read.
    Hosts(Vec<(HostRow, bool)>, ChangeMark),
    /// The 32-bit transaction ids wrapped since the mark: only a full read is sound.
    Wrapped,
}

/// The mark a full read taken now would leave (call it before the full read, so nothing that
/// commits in between is missed; a change seen twice is harmless).
pub fn change_mark(conn: &mut impl GenericClient) -> Result<ChangeMark, DbError> {
    Ok(ChangeMark(conn.query_one(CHANGE_MARK, &[])?.get(0)))
}

/// The statement of [`change_mark`].
const CHANGE_MARK: &str = "SELECT txid_snapshot_xmin(txid_current_snapshot())";

/// The hosts whose rows changed since `mark` — a completion gave room back, a booking took
/// it, a ping or a lock moved — read in one snapshot with the mark for the next read. Cheap
/// next to a full read: one pass over `host` and one over `host_stat` by `xmin`, then the
/// rows of only what changed.
pub fn changed_hosts(
    conn: &mut Session,
    facility: Option<&FacilityId>,
    ping_timeout: Duration,
    mark: ChangeMark,
) -> Result<Changes, DbError> {
    let (client, prepared) = conn.parts();
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    // Prepared and on its generic plan from the first call: this read runs ten times a
    // second per instance, and planning it (0.5 ms) cost more than running it.
    tx.batch_execute("SET LOCAL plan_cache_mode = force_generic_plan")?;
    let mut cached = Cached::new(&mut tx, prepared);
    let next = ChangeMark(cached.query_one(CHANGE_MARK, &[])?.get(0));
    if next.epoch() != mark.epoch() {
        return Ok(Changes::Wrapped);
    }
    // The changed keys come first, from one scan of each table with nothing joined; only
    // their rows are then joined and read (by key). Filtering the joined tables instead made
    // every read a join of the whole farm: 54 ms a call at 12,000 hosts (issue 14's cost by
    // farm size).
    // `age(xmin) <= age(mark)` is `xmin >= mark` within the epoch checked above, without
    // turning every row's `xmin` into text and back (the scans are the whole farm). The
    // mark's age is a subquery, computed once: written inline, a generic plan cast the
    // parameter to text and back for every row (the scans took 2.5 times as long).
    let sql = host_select(
        "h.pk_host = ANY(ARRAY(
             SELECT pk_host FROM host WHERE age(xmin) <= (SELECT age($3::bigint::text::xid))
             UNION SELECT pk_host FROM host_stat
                    WHERE age(xmin) <= (SELECT age($3::bigint::text::xid))))",
    );
    let rows = cached.query(&sql, &[&ping_timeout.as_secs_f64(), &facility, &mark.xid()])?;
    tx.commit()?;
    let hosts = rows.iter().map(|r| (host_row(r), r.get(14))).collect();
    Ok(Changes::Hosts(hosts, next))
}

/// One row of [`host_select`].
fn host_row(r: &postgres::Row) -> HostRow {
    HostRow {
        id: r.get(0),
        name: r.get(1),
        alloc: r.get(2),
        os: r.get(3),
        thread_mode: ThreadMode::from_db(r.get(4)),
        tags: r.get(5),
        total: resources_at(r, 6),
        idle: resources_at(r, 10),
    }
}
