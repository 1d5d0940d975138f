//! Host SQL: the eligible hosts the index is refreshed from.
//!
//! Eligibility (OpenCue's rules): the host is OPEN, its `host_stat` is UP, it pinged within
//! `ping_timeout`, and its allocation is in the facility. Idle memory is the smaller of what
//! Cuebot booked (`host.int_mem_idle`) and what RQD reports free (`host_stat.int_mem_free`),
//! likewise GPU memory.

use std::time::Duration;

use postgres::GenericClient;

use super::{DbError, resources_at};
use crate::{
    ids::{AllocId, FacilityId, HostId},
    model::{Resources, ThreadMode},
};

/// One eligible host as the database has it.
#[derive(Clone, Debug)]
pub(crate) struct HostRow {
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

/// Every eligible host (of one facility when given).
pub(crate) fn eligible_hosts(
    conn: &mut impl GenericClient,
    facility: Option<&FacilityId>,
    ping_timeout: Duration,
) -> Result<Vec<HostRow>, DbError> {
    let timeout_secs = ping_timeout.as_secs_f64();
    let rows = conn.query(
        "SELECT h.pk_host, h.str_name, h.pk_alloc, hs.str_os, h.int_thread_mode::int,
                ARRAY(SELECT ht.str_tag::text FROM host_tag ht WHERE ht.pk_host = h.pk_host),
                h.int_cores::bigint, h.int_mem::bigint, h.int_gpus::bigint, h.int_gpu_mem::bigint,
                h.int_cores_idle::bigint, least(h.int_mem_idle, hs.int_mem_free)::bigint,
                h.int_gpus_idle::bigint, least(h.int_gpu_mem_idle, hs.int_gpu_mem_free)::bigint
           FROM host h
           JOIN host_stat hs ON hs.pk_host = h.pk_host
           JOIN alloc a ON a.pk_alloc = h.pk_alloc
          WHERE h.str_lock_state = 'OPEN' AND hs.str_state = 'UP'
            AND hs.ts_ping > now() - make_interval(secs => $1)
            AND ($2::text IS NULL OR a.pk_facility = $2)",
        &[&timeout_secs, &facility],
    )?;
    Ok(rows
        .iter()
        .map(|r| HostRow {
            id: r.get(0),
            name: r.get(1),
            alloc: r.get(2),
            os: r.get(3),
            thread_mode: ThreadMode::from_db(r.get(4)),
            tags: r.get(5),
            total: resources_at(r, 6),
            idle: resources_at(r, 10),
        })
        .collect())
}
