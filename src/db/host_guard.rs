//! The host guard of the booking transaction: the placements of a batch summed per host, the
//! unlocked pre-check that drops hosts another writer has filled, and the guarded decrement
//! that takes each host's total under its row lock.
//!
//! Both statements test one condition, [`HOST_TAKES`] (plus the reservation rule,
//! [`HOLD_BLOCKS`]), so the cheap look and the locked update can only disagree when the host
//! changed in between — and then the locked update is the one that counts.

use std::collections::{BTreeMap, BTreeSet};

use crate::db::session::Tx;

use super::{DbError, booking::Placement, reservations::HOLD_BLOCKS, resources_at};
use crate::model::Resources;

/// Whether host `h` can take the per-host batch row `b` (columns `cores, mem, gpus, gpu_mem,
/// alloc`; `$9` the ping timeout in seconds), capacity and eligibility alike: OPEN, its RQD
/// UP and reporting, still in the allocation charged, and the idle resources there. The same
/// rules the host refresh reads hosts by, re-checked under the row lock.
const HOST_TAKES: &str = "h.str_lock_state = 'OPEN' AND h.pk_alloc = b.alloc
        AND h.int_cores_idle >= b.cores AND h.int_mem_idle >= b.mem
        AND h.int_gpus_idle >= b.gpus AND h.int_gpu_mem_idle >= b.gpu_mem
        AND EXISTS (SELECT 1 FROM host_stat hs WHERE hs.pk_host = h.pk_host AND hs.str_state = 'UP'
                     AND hs.ts_ping > now() - make_interval(secs => $9::float8))";

/// Amounts as four bigint columns (cores, mem, gpus, gpu_mem), one row per item.
pub(super) type Columns = (Vec<i64>, Vec<i64>, Vec<i64>, Vec<i64>);

/// The columns of `items`, for an `unnest` of the amounts.
pub(super) fn amounts(items: impl Iterator<Item = Resources>) -> Columns {
    let mut c = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for a in items {
        c.0.push(i64::from(a.cores));
        c.1.push(a.mem_kb as i64);
        c.2.push(i64::from(a.gpus));
        c.3.push(a.gpu_mem_kb as i64);
    }
    c
}

/// The placements of a batch summed per host, as the columns of the host statements: the
/// amounts, the longest expected run time (unknown if any is) and the reserved frame among
/// them, if one is (its own reservation does not block it). Hosts are sorted by key, the
/// order their rows are locked in.
#[derive(Debug)]
pub(super) struct HostColumns<'a> {
    pub(super) hosts: Vec<&'a str>,
    allocs: Vec<&'a str>,
    amounts: Columns,
    est: Vec<Option<f64>>,
    exempt: Vec<Option<&'a str>>,
}

impl<'a> HostColumns<'a> {
    /// Sums `placements` per host. Placements that disagree on a host's allocation (the
    /// index saw the host move mid-pass) leave it none the guard can match: each was
    /// charged to its own subscription, and the host can be in only one of them.
    pub(super) fn of(placements: impl Iterator<Item = &'a Placement>) -> HostColumns<'a> {
        type Sum<'a> = (Resources, Option<f64>, Option<&'a str>, &'a str);
        let mut per_host: BTreeMap<&'a str, Sum<'a>> = BTreeMap::new();
        for p in placements {
            let (sum, est, exempt, alloc) = per_host.entry(p.host.as_str()).or_insert((
                Resources::ZERO,
                Some(0.0),
                None,
                p.alloc.as_str(),
            ));
            if *alloc != p.alloc.as_str() {
                *alloc = "";
            }
            *sum = sum.saturating_add(&p.amount);
            *est = match (*est, p.est_secs) {
                (Some(a), Some(b)) => Some(a.max(b)),
                _ => None,
            };
            if p.holds_reservation {
                *exempt = Some(p.frame.as_str());
            }
        }
        HostColumns {
            hosts: per_host.keys().copied().collect(),
            allocs: per_host.values().map(|v| v.3).collect(),
            amounts: amounts(per_host.values().map(|v| v.0)),
            est: per_host.values().map(|v| v.1).collect(),
            exempt: per_host.values().map(|v| v.2).collect(),
        }
    }
}

/// The hosts of `c` that no longer have room, and those whose reservation refuses the
/// frames, read without locks; the current idle values of the short ones go to `stale`.
///
/// The `pk_host = ANY($1)` beside the join keeps the read to the batch's hosts on any plan:
/// on its generic plan (the booking's, see `db::session`) PostgreSQL estimated the `unnest`
/// at 10 rows and hashed the whole `host` table for it, 1,225 buffer pages a call on the
/// 1,200-host drain farm against ~80 (issue 14, auto_explain).
pub(super) fn read_short_hosts(
    tx: &mut Tx<'_>,
    c: &HostColumns<'_>,
    ping_timeout_secs: f64,
    stale: &mut Vec<(String, Resources)>,
) -> Result<(BTreeSet<String>, BTreeSet<String>), DbError> {
    let (cores, mem, gpus, gpu_mem) = &c.amounts;
    let rows = tx.query(
        &format!(
            "SELECT h.pk_host, h.int_cores_idle::bigint, h.int_mem_idle::bigint, h.int_gpus_idle::bigint,
                    h.int_gpu_mem_idle::bigint,
                    NOT ({HOST_TAKES})
               FROM host h JOIN unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
                                       $6::float8[], $7::text[], $8::text[])
                    AS b(pk_host, cores, mem, gpus, gpu_mem, est, exempt, alloc) ON h.pk_host = b.pk_host
              WHERE h.pk_host = ANY($1) AND (NOT ({HOST_TAKES}) OR {HOLD_BLOCKS})"
        ),
        &[&c.hosts, cores, mem, gpus, gpu_mem, &c.est, &c.exempt, &c.allocs, &ping_timeout_secs],
    )?;
    let (mut short, mut reserved) = (BTreeSet::new(), BTreeSet::new());
    for r in rows {
        let id: String = r.get(0);
        if r.get::<_, bool>(5) {
            stale.push((id.clone(), resources_at(&r, 1)));
            short.insert(id);
        } else {
            reserved.insert(id);
        }
    }
    Ok((short, reserved))
}

/// Locks the hosts of `c` in key order and takes each host's total in one guarded update;
/// returns the hosts that had room (and are still OPEN).
pub(super) fn decrement_hosts(
    tx: &mut Tx<'_>,
    c: &HostColumns<'_>,
    ping_timeout_secs: f64,
) -> Result<BTreeSet<String>, DbError> {
    if c.hosts.is_empty() {
        return Ok(BTreeSet::new());
    }
    tx.execute(
        "SELECT 1 FROM host WHERE pk_host = ANY($1) ORDER BY pk_host FOR UPDATE",
        &[&c.hosts],
    )?;
    let (cores, mem, gpus, gpu_mem) = &c.amounts;
    // The reservation rule is checked here, under the host row lock, against the idle values
    // this update consumes: another instance's stale index cannot slip past it.
    let rows = tx.query(
        &format!(
            "UPDATE host h SET int_cores_idle = h.int_cores_idle - b.cores, int_mem_idle = h.int_mem_idle - b.mem,
                    int_gpus_idle = h.int_gpus_idle - b.gpus, int_gpu_mem_idle = h.int_gpu_mem_idle - b.gpu_mem
               FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
                           $6::float8[], $7::text[], $8::text[])
                    AS b(pk_host, cores, mem, gpus, gpu_mem, est, exempt, alloc)
              WHERE h.pk_host = b.pk_host AND {HOST_TAKES} AND NOT {HOLD_BLOCKS}
          RETURNING h.pk_host"
        ),
        &[&c.hosts, cores, mem, gpus, gpu_mem, &c.est, &c.exempt, &c.allocs, &ping_timeout_secs],
    )?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The idle resources of `hosts` now, for the index to correct hosts that lost the guard.
pub(super) fn idle_now(
    tx: &mut Tx<'_>,
    hosts: &[&str],
) -> Result<Vec<(String, Resources)>, DbError> {
    Ok(tx
        .query(
            "SELECT pk_host, int_cores_idle::bigint, int_mem_idle::bigint, int_gpus_idle::bigint, int_gpu_mem_idle::bigint
               FROM host WHERE pk_host = ANY($1)",
            &[&hosts],
        )?
        .iter()
        .map(|r| (r.get(0), resources_at(r, 1)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(frame: &str, host: &str, cores: u32, est: Option<f64>) -> Placement {
        Placement {
            frame: frame.into(),
            version: 0,
            layer: "l".into(),
            job: "j".into(),
            show: "s".into(),
            folder: "f".into(),
            host: host.into(),
            host_name: host.into(),
            alloc: format!("a-{host}").into(),
            proc: format!("p-{frame}").into(),
            amount: Resources {
                cores,
                mem_kb: 10,
                gpus: 0,
                gpu_mem_kb: 0,
            },
            est_secs: est,
            holds_reservation: false,
        }
    }

    #[test]
    fn sums_per_host_in_key_order() {
        let mut wide = placement("f3", "h1", 300, Some(5.0));
        wide.holds_reservation = true;
        let ps = [
            placement("f1", "h2", 100, Some(10.0)),
            placement("f2", "h1", 200, Some(20.0)),
            wide,
        ];
        let c = HostColumns::of(ps.iter());
        assert_eq!(c.hosts, ["h1", "h2"]);
        assert_eq!(c.allocs, ["a-h1", "a-h2"]);
        assert_eq!(c.amounts.0, [500, 100]);
        assert_eq!(c.amounts.1, [20, 10]);
        assert_eq!(c.est, [Some(20.0), Some(10.0)]);
        assert_eq!(c.exempt, [Some("f3"), None]);
    }

    #[test]
    fn placements_that_disagree_on_a_hosts_allocation_leave_it_none() {
        let mut moved = placement("f2", "h1", 100, None);
        moved.alloc = "elsewhere".into();
        let ps = [placement("f1", "h1", 100, None), moved];
        assert_eq!(HostColumns::of(ps.iter()).allocs, [""]);
    }

    #[test]
    fn one_unknown_estimate_makes_the_host_unknown() {
        let ps = [
            placement("f1", "h1", 100, Some(10.0)),
            placement("f2", "h1", 100, None),
            placement("f3", "h1", 100, Some(30.0)),
        ];
        assert_eq!(HostColumns::of(ps.iter()).est, [None]);
    }
}
