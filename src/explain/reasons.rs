//! The reasons that hold back a whole layer, whatever the hosts: the show (managed, held by
//! a live instance), the job (paused, pending), the layer's start-after time, the job's and
//! its folder's caps and the layer's limits; and the per-frame ones (draining, depends, not
//! waiting at all).

use std::collections::HashMap;

use serde_json::json;

use super::{Ctx, LeaseFacts, ShowFacts, SubFacts, Why, cores};
use crate::{
    config::Config,
    db::accounting::Limits,
    db::explain::{DependRow, JobRow, LayerRow, LeaseRow, LimitRow, ReservationRow, SubRow},
    db::licenses::{self, Room},
    model::Resources,
};

/// The show's facts: managed, lease, subscriptions.
pub(super) fn show_facts(
    job: &JobRow,
    lease: Option<LeaseRow>,
    live: i64,
    subs: &[SubRow],
    lease_secs: f64,
) -> ShowFacts {
    ShowFacts {
        id: job.show.clone(),
        name: job.show_name.clone(),
        managed: job.managed,
        active: job.show_active,
        lease: lease.map(|l| LeaseFacts {
            alive: l.instance.is_some() && l.heartbeat_age_secs.is_some_and(|a| a < lease_secs),
            instance: l.instance,
            host: l.host,
            pid: l.pid,
            heartbeat_age_secs: l.heartbeat_age_secs,
            epoch: l.epoch,
        }),
        live_instances: live,
        subscriptions: subs
            .iter()
            .map(|s| SubFacts {
                alloc: s.alloc.clone(),
                alloc_name: s.alloc_name.clone(),
                size: cores(s.size),
                burst: cores(s.burst),
                booked: cores(s.booked),
            })
            .collect(),
    }
}

/// Everything that holds back every WAITING frame of `layer`, most fundamental first; a
/// show stagehand does not manage stops the list (Cuebot books it, by its own rules).
pub(super) fn layer_reasons(
    ctx: &Ctx<'_>,
    layer: &LayerRow,
    limits: &[LimitRow],
    need: &Resources,
) -> Vec<Why> {
    if let Some(why) = not_managed(ctx) {
        return vec![why];
    }
    let mut out = Vec::new();
    out.extend(not_held(ctx));
    let job = ctx.job;
    if job.paused {
        out.push(Why::new(
            "job_paused",
            format!("job {} is paused", job.name),
            json!({}),
        ));
    }
    if job.state != "PENDING" {
        out.push(Why::new(
            "not_pending",
            format!("job {} is {}, not PENDING", job.name, job.state),
            json!({ "state": job.state }),
        ));
    }
    out.extend(start_after(layer));
    out.extend(caps(job, need));
    out.extend(full_limits(layer, limits));
    out.extend(no_license(ctx, layer));
    out
}

/// Per layer, the licenses it names and their rooms (`None`: not reported by the provider).
pub(super) type LayerLicenses = HashMap<String, Vec<(String, Option<Room>)>>;

/// The licenses of `layers` and their rooms as the booking guard computes them; empty with
/// `[licenses]` off (`CUE_LICENSES` is then ignored).
pub(super) fn layer_licenses(
    conn: &mut impl postgres::GenericClient,
    config: &Config,
    layers: &[String],
) -> Result<LayerLicenses, crate::db::DbError> {
    let Some(rules) = crate::licenses::rules(&config.licenses) else {
        return Ok(HashMap::new());
    };
    let ids: Vec<&str> = layers.iter().map(String::as_str).collect();
    let needs = licenses::layer_licenses(conn, &ids)?;
    let mut names: Vec<&str> = needs.values().flatten().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    let rooms = licenses::rooms(conn, Some(&names), &rules)?;
    Ok(needs
        .into_iter()
        .map(|(layer, names)| {
            let with_rooms = names
                .into_iter()
                .map(|n| {
                    let room = rooms.get(&n).cloned();
                    (n, room)
                })
                .collect();
            (layer, with_rooms)
        })
        .collect())
}

/// Each license of the layer that has no seat for another frame: unknown to the provider,
/// stale, or spent (a host-based one may still share a seated host: said, not refused).
fn no_license(ctx: &Ctx<'_>, layer: &LayerRow) -> Vec<Why> {
    let Some(needs) = ctx.licenses.get(&layer.id) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, room) in needs {
        let text = match room {
            None => format!("license {name} is not reported by the provider: its layers hold"),
            Some(r) if !r.fresh => format!(
                "license {name} has no fresh sample (older than stale_after): its layers hold"
            ),
            Some(r) if r.free <= 0 && r.host_based && !r.seated.is_empty() => format!(
                "license {name} has no free seat; frames may still share the {} seated hosts",
                r.seated.len()
            ),
            Some(r) if r.free <= 0 => format!(
                "license {name} has no free seat ({} after headroom and this farm's starts since the sample)",
                r.free
            ),
            Some(_) => continue,
        };
        let free = room.as_ref().map(|r| r.free);
        let fresh = room.as_ref().map(|r| r.fresh);
        out.push(Why::new(
            "no_license",
            text,
            json!({ "license": name, "free": free, "fresh": fresh }),
        ));
    }
    out
}

fn not_managed(ctx: &Ctx<'_>) -> Option<Why> {
    let show = ctx.show;
    if !show.managed {
        return Some(Why::new(
            "not_managed",
            format!(
                "show {} is not managed by stagehand (show.b_scheduler_managed is false): Cuebot books it",
                show.name
            ),
            json!({ "show": show.name }),
        ));
    }
    (!show.active).then(|| {
        Why::new(
            "not_managed",
            format!("show {} is inactive (show.b_active is false)", show.name),
            json!({ "show": show.name, "active": false }),
        )
    })
}

/// No live instance holds the show's lease: nothing books it until one does.
fn not_held(ctx: &Ctx<'_>) -> Option<Why> {
    let show = ctx.show;
    let lease_secs = ctx.config.cluster.lease_duration.as_secs_f64();
    if show.live_instances == 0 {
        return Some(Why::new(
            "not_held",
            format!(
                "no stagehand instance is running (none heartbeat within lease_duration, {lease_secs:.0} s)"
            ),
            json!({ "live_instances": 0 }),
        ));
    }
    match &show.lease {
        Some(l) if l.alive => None,
        Some(LeaseFacts {
            instance: Some(name),
            heartbeat_age_secs,
            ..
        }) => Some(Why::new(
            "not_held",
            format!(
                "show {} is held by instance {name}, whose heartbeat is {:.0} s old: the lease moves to a live instance after lease_duration ({lease_secs:.0} s)",
                show.name,
                heartbeat_age_secs.unwrap_or(f64::INFINITY)
            ),
            json!({ "instance": name, "heartbeat_age_secs": heartbeat_age_secs }),
        )),
        _ => Some(Why::new(
            "not_held",
            format!(
                "no instance holds show {} yet ({} running): a lease is taken within a lease round",
                show.name, show.live_instances
            ),
            json!({ "live_instances": show.live_instances }),
        )),
    }
}

fn start_after(layer: &LayerRow) -> Option<Why> {
    let secs = layer.start_after_in_secs.filter(|s| *s > 0.0)?;
    let when = layer.start_after.clone().unwrap_or_default();
    let because = layer
        .start_after_reason
        .as_deref()
        .filter(|r| !r.is_empty())
        .map(|r| format!(" ({r})"))
        .unwrap_or_default();
    Some(Why::new(
        "start_after",
        format!(
            "layer {} starts after {when}, in {secs:.0} s{because}",
            layer.name
        ),
        json!({ "start_after": when, "in_secs": secs, "reason": layer.start_after_reason }),
    ))
}

/// The job and folder caps a frame needing `need` would pass. The folder is checked as the
/// ledger does, on the cores and GPUs the folder's jobs hold now.
fn caps(job: &JobRow, need: &Resources) -> Vec<Why> {
    let jobs = Limits::job(job.max_cores, job.max_gpus);
    let folders = Limits::folder(job.folder_max_cores, job.folder_max_gpus);
    let checks = [
        ("job", "cores", job.cores, jobs.cores, i64::from(need.cores)),
        ("job", "GPUs", job.gpus, jobs.gpus, i64::from(need.gpus)),
        (
            "folder",
            "cores",
            job.folder_cores,
            folders.cores,
            i64::from(need.cores),
        ),
        (
            "folder",
            "GPUs",
            job.folder_gpus,
            folders.gpus,
            i64::from(need.gpus),
        ),
    ];
    let owner = |cap: &str| match cap {
        "job" => format!("job {}", job.name),
        _ => format!("folder {}", job.folder_name),
    };
    checks
        .into_iter()
        .filter_map(|(cap, what, held, max, add)| Some((cap, what, held, max?, add)))
        .filter(|&(_, _, held, max, add)| add > 0 && held + add > max)
        .map(|(cap, what, held, max, add)| {
            let (held_s, max_s, add_s) = if what == "cores" {
                (
                    format!("{:.2}", cores(held)),
                    format!("{:.2}", cores(max)),
                    format!("{:.2}", cores(add)),
                )
            } else {
                (held.to_string(), max.to_string(), add.to_string())
            };
            Why::new(
                "job_cap",
                format!(
                    "{} is at its max {what}: {held_s} of {max_s} booked, the next frame needs {add_s}",
                    owner(cap)
                ),
                json!({ "cap": cap, "resource": what, "booked": held, "max": max, "needs": add }),
            )
        })
        .collect()
}

/// The layer's limits with no room: the booking guard refuses a frame unless every limit
/// of its layer has `running < max`.
fn full_limits(layer: &LayerRow, limits: &[LimitRow]) -> Vec<Why> {
    limits
        .iter()
        .filter(|l| l.layer == layer.id && l.running >= l.max)
        .map(|l| {
            Why::new(
                "limit",
                format!(
                    "limit {} is full: {} of {} running",
                    l.name, l.running, l.max
                ),
                json!({ "limit": l.name, "running": l.running, "max": l.max }),
            )
        })
        .collect()
}

/// The frame holds reservation `r`: its host drains for it.
pub(super) fn draining(r: &ReservationRow) -> Why {
    Why::new(
        "draining",
        format!(
            "host {} is reserved for it and draining: room expected at {} ({:.0} s), the reservation lapses at {} ({:.0} s)",
            r.host_name, r.shadow, r.shadow_in_secs, r.expires, r.expires_in_secs
        ),
        json!({
            "host": r.host_name,
            "shadow": r.shadow,
            "shadow_in_secs": r.shadow_in_secs,
            "expires": r.expires,
            "expires_in_secs": r.expires_in_secs,
            "cores": cores(i64::from(r.need.cores)),
            "mem_kb": r.need.mem_kb,
        }),
    )
}

/// DEPEND frames: what they wait on.
pub(super) fn depends(on: &[DependRow]) -> Why {
    let list: Vec<String> = on.iter().map(|d| format!("{} {}", d.kind, d.on)).collect();
    let text = if list.is_empty() {
        "its dependencies are not satisfied (no active depend row names it: Cuebot will update it)"
            .to_owned()
    } else {
        format!("its dependencies are not satisfied: {}", list.join(", "))
    };
    Why::new(
        "depends",
        text,
        json!({ "depends": on.iter().map(|d| json!({ "type": d.kind, "on": d.on })).collect::<Vec<_>>() }),
    )
}

/// A frame that is not WAITING or DEPEND is not waiting at all.
pub(super) fn not_waiting(state: &str, host: Option<&str>) -> Why {
    let on = match (state, host) {
        ("RUNNING", Some(h)) => format!(" on {h}"),
        _ => String::new(),
    };
    Why::new(
        "not_waiting",
        format!("the frame is {state}{on}, not waiting"),
        json!({ "state": state, "host": host }),
    )
}
