//! What the hosts say about a layer's WAITING frames: each host carrying one of its tags is
//! checked as a pass checks a candidate — eligible (facility, OPEN, UP, pinging, in an
//! allocation the show subscribes to), room (the sizing rules; OS, thread mode, cores,
//! memory, GPUs, GPU memory), GPU hosts' room for GPU frames — then vetoed as a pass vetoes
//! it: a wide-frame reservation that does not admit the frame, the subscription at its burst,
//! or the show yielding to a hungrier one. The answer is the first of: a host fits (bookable),
//! the subscription and reservation vetoes, or no host fits and what the closest ones lack.

use serde_json::json;

use super::{Ctx, ExplainError, Why, cores, gb};
use crate::{
    db::{
        self,
        explain::{HostRow, LayerRow, ReservationRow, RivalRow, SubRow},
    },
    index::os_matches,
    model::{CORE, Resources, ThreadMode},
    sizing::{self, HostShape, LayerShape, Rules},
};

/// Hosts read per layer (the most idle first): an explanation, not a census.
const HOSTS_READ: i64 = 2000;
/// Closest hosts named when none fits.
const CLOSEST: usize = 5;

/// How one host answers the frame.
enum Verdict<'a> {
    /// It lacks these (one sentence each).
    Lacks(Vec<String>),
    /// It takes the frame, this much of it.
    Fits(Resources),
    /// The show's subscription on its allocation would pass its burst.
    Burst(&'a SubRow, Resources),
    /// The show is past its size there and yields to a show further behind its own.
    Yield(&'a SubRow, &'a RivalRow, Resources),
    /// A reservation for another frame does not admit it.
    Reserved(&'a ReservationRow),
}

/// What a pass's checks read besides the host.
struct Checks<'a> {
    ctx: &'a Ctx<'a>,
    layer: &'a LayerRow,
    shape: &'a LayerShape,
    floor: Resources,
    frame: Option<&'a str>,
    holds: &'a [ReservationRow],
    rivals: &'a [RivalRow],
}

/// The hosts' reasons for the layer's WAITING frames (`frame`: for that one).
pub(super) fn host_reasons(
    conn: &mut impl postgres::GenericClient,
    ctx: &Ctx<'_>,
    layer: &LayerRow,
    shape: &LayerShape,
    frame: Option<&str>,
) -> Result<Vec<Why>, ExplainError> {
    let (tagged, hosts) = db::explain::hosts_with_tags(conn, &layer.tags, HOSTS_READ)?;
    if tagged == 0 {
        return Ok(vec![Why::new(
            "no_host",
            format!(
                "no host carries any of its tags ({})",
                layer.tags.join(" | ")
            ),
            json!({ "tags": layer.tags, "hosts_with_tags": 0 }),
        )]);
    }
    let ids: Vec<String> = hosts.iter().map(|h| h.id.clone()).collect();
    let holds = db::explain::reservations(conn, &ids, "")?;
    let allocs: Vec<String> = ctx.subs.iter().map(|s| s.alloc.clone()).collect();
    let rivals = db::explain::rivals(conn, &ctx.job.show, &allocs)?;
    let checks = Checks {
        ctx,
        layer,
        shape,
        floor: sizing::floor(shape),
        frame,
        holds: &holds,
        rivals: &rivals,
    };
    let verdicts: Vec<(&HostRow, Verdict<'_>)> =
        hosts.iter().map(|h| (h, checks.verdict(h))).collect();
    Ok(summarize(&checks, tagged, &verdicts))
}

impl Checks<'_> {
    /// One host, as a pass's candidate search, sizing and vetoes see it.
    fn verdict(&self, host: &HostRow) -> Verdict<'_> {
        let sub = self.ctx.subs.iter().find(|s| s.alloc == host.alloc);
        let mut lacks = self.ineligible(host, sub.is_some());
        lacks.extend(self.room(host));
        if !lacks.is_empty() {
            return Verdict::Lacks(lacks);
        }
        let s = &self.ctx.config.scheduler;
        let on = HostShape {
            thread_mode: host.thread_mode,
            total: host.total,
            free: host.idle,
        };
        let rules = Rules {
            memory_stranded_threshold_kb: s.memory_stranded_threshold_kb,
        };
        let amount = match sizing::amount_for(self.shape, &on, None, &rules) {
            Ok(amount) => amount,
            Err(refusal) => return Verdict::Lacks(vec![refusal.to_string()]),
        };
        let gpu_room = Resources {
            cores: s.gpu_host_cores_per_gpu.saturating_mul(CORE),
            mem_kb: s.gpu_host_mem_per_gpu_kb,
            ..Resources::ZERO
        };
        if !sizing::leaves_gpu_room(&host.idle, &amount, &gpu_room) {
            return Verdict::Lacks(vec!["keeps its room for GPU frames".to_owned()]);
        }
        if let Some(hold) = self.blocking_hold(host, &amount) {
            return Verdict::Reserved(hold);
        }
        // A host outside the show's subscriptions was listed as lacking one above.
        match sub {
            Some(sub) => self.subscription(sub, amount),
            None => Verdict::Lacks(vec!["no subscription".into()]),
        }
    }

    /// Why the host is not a candidate at all.
    fn ineligible(&self, host: &HostRow, subscribed: bool) -> Vec<String> {
        let mut lacks = Vec::new();
        if host.facility != self.ctx.job.facility {
            lacks.push("is in another facility".to_owned());
        }
        if host.lock_state != "OPEN" {
            lacks.push(format!("is {}", host.lock_state));
        }
        match host.state.as_deref() {
            Some("UP") => {}
            state => lacks.push(format!(
                "is {}",
                state.unwrap_or("unreported (no host_stat)")
            )),
        }
        let timeout = self.ctx.config.hosts.ping_timeout.as_secs_f64();
        if host.ping_age_secs > timeout {
            lacks.push(format!(
                "last pinged {:.0} s ago (ping_timeout {timeout:.0} s)",
                host.ping_age_secs
            ));
        }
        if !subscribed {
            lacks.push(format!(
                "is in an allocation show {} has no subscription to",
                self.ctx.show.name
            ));
        }
        lacks
    }

    /// What the host lacks of the room the frame needs, dimension by dimension.
    fn room(&self, host: &HostRow) -> Vec<String> {
        let mut lacks = Vec::new();
        let os = self.ctx.job.os.trim();
        if !os.is_empty() && !os_matches(&host.os, os) {
            lacks.push(format!("runs {}, the job needs {os}", host.os));
        }
        if host.thread_mode == ThreadMode::All && !self.shape.threadable {
            lacks.push("is in thread mode ALL, which takes threadable layers only".to_owned());
        }
        let (need, idle, total) = (self.floor, host.idle, host.total);
        let dims = [
            (
                "cores",
                u64::from(need.cores),
                u64::from(idle.cores),
                u64::from(total.cores),
            ),
            ("memory", need.mem_kb, idle.mem_kb, total.mem_kb),
            (
                "GPUs",
                u64::from(need.gpus),
                u64::from(idle.gpus),
                u64::from(total.gpus),
            ),
            (
                "GPU memory",
                need.gpu_mem_kb,
                idle.gpu_mem_kb,
                total.gpu_mem_kb,
            ),
        ];
        for (what, need, idle, total) in dims {
            if need > idle {
                let show = |v: u64| match what {
                    "cores" => format!("{:.2}", v as f64 / f64::from(CORE)),
                    "memory" | "GPU memory" => gb(v),
                    _ => v.to_string(),
                };
                lacks.push(format!(
                    "{what}: {} idle of {}, needs {}",
                    show(idle),
                    show(total),
                    show(need)
                ));
            }
        }
        lacks
    }

    /// A live reservation on the host, for another frame, that does not admit this one:
    /// the same rule as [`crate::backfill::Hold::admits`].
    fn blocking_hold(&self, host: &HostRow, amount: &Resources) -> Option<&ReservationRow> {
        let hold = self.holds.iter().find(|r| r.host == host.id)?;
        let own = self.frame.is_some_and(|f| f == hold.frame);
        let leaves_room = host.idle.saturating_sub(amount).fits(&hold.need);
        let ends_before = self
            .layer
            .est_secs
            .is_some_and(|est| est <= hold.shadow_in_secs);
        (!own && !leaves_room && !ends_before).then_some(hold)
    }

    /// The subscription's burst and the fair-share rule, on what procs hold now.
    fn subscription<'s>(&'s self, sub: &'s SubRow, amount: Resources) -> Verdict<'s> {
        let add = i64::from(amount.cores);
        if sub.booked + add > sub.burst {
            return Verdict::Burst(sub, amount);
        }
        if sub.booked + add <= sub.size {
            return Verdict::Fits(amount);
        }
        let share = |booked: i64, size: i64| {
            if size > 0 {
                (booked + add) as f64 / size as f64
            } else {
                f64::INFINITY
            }
        };
        let mine = share(sub.booked, sub.size);
        match self
            .rivals
            .iter()
            .find(|r| r.alloc == sub.alloc && share(r.booked, r.size) < mine)
        {
            Some(rival) => Verdict::Yield(sub, rival, amount),
            None => Verdict::Fits(amount),
        }
    }
}

/// The verdicts as reasons: a host that fits, else the vetoes, else what the closest lack.
fn summarize(checks: &Checks<'_>, tagged: i64, verdicts: &[(&HostRow, Verdict<'_>)]) -> Vec<Why> {
    if let Some((host, Verdict::Fits(amount))) =
        verdicts.iter().find(|(_, v)| matches!(v, Verdict::Fits(_)))
    {
        return vec![Why::new(
            "bookable",
            format!(
                "nothing in the database holds it back and host {} fits it now ({:.2} cores, {}): a coming pass should book it, unless jobs ahead of it take the room first (a pass takes the first [scheduler] max_jobs_per_pass jobs of the show)",
                host.name,
                cores(i64::from(amount.cores)),
                gb(amount.mem_kb)
            ),
            json!({ "host": host.name, "cores": cores(i64::from(amount.cores)), "mem_kb": amount.mem_kb }),
        )];
    }
    let mut out = subscription_reasons(checks, verdicts);
    out.extend(reserved_reason(verdicts));
    if out.is_empty() {
        out.push(no_host(checks, tagged, verdicts));
    }
    out
}

/// One reason per allocation whose subscription vetoed a host that has the room.
fn subscription_reasons(checks: &Checks<'_>, verdicts: &[(&HostRow, Verdict<'_>)]) -> Vec<Why> {
    let show = &checks.ctx.show.name;
    let mut out: Vec<Why> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for (_, verdict) in verdicts {
        let (sub, why) = match verdict {
            Verdict::Burst(sub, amount) => (
                sub,
                Why::new(
                    "subscription",
                    format!(
                        "show {show} is at its burst on {}: {:.2} of {:.2} cores booked, the frame needs {:.2}",
                        sub.alloc_name,
                        cores(sub.booked),
                        cores(sub.burst),
                        cores(i64::from(amount.cores))
                    ),
                    json!({ "alloc": sub.alloc_name, "booked": cores(sub.booked), "size": cores(sub.size),
                        "burst": cores(sub.burst), "needs": cores(i64::from(amount.cores)) }),
                ),
            ),
            Verdict::Yield(sub, rival, amount) => (
                sub,
                Why::new(
                    "subscription",
                    format!(
                        "show {show} is past its size on {} ({:.2} booked, size {:.2}, burst {:.2}) and yields to show {}, further behind its own ({:.2} booked of size {:.2})",
                        sub.alloc_name,
                        cores(sub.booked),
                        cores(sub.size),
                        cores(sub.burst),
                        rival.show_name,
                        cores(rival.booked),
                        cores(rival.size)
                    ),
                    json!({ "alloc": sub.alloc_name, "booked": cores(sub.booked), "size": cores(sub.size),
                        "burst": cores(sub.burst), "needs": cores(i64::from(amount.cores)),
                        "yields_to": { "show": rival.show_name, "booked": cores(rival.booked), "size": cores(rival.size) } }),
                ),
            ),
            _ => continue,
        };
        if !seen.contains(&sub.alloc.as_str()) {
            seen.push(&sub.alloc);
            out.push(why);
        }
    }
    out
}

/// The reservations that vetoed hosts with the room.
fn reserved_reason(verdicts: &[(&HostRow, Verdict<'_>)]) -> Option<Why> {
    let holds: Vec<&ReservationRow> = verdicts
        .iter()
        .filter_map(|(_, v)| match v {
            Verdict::Reserved(r) => Some(*r),
            _ => None,
        })
        .collect();
    let first = holds.first()?;
    Some(Why::new(
        "reserved",
        format!(
            "the {} host(s) with room are reserved for wide frames, e.g. {} for {} until {} (room expected at {}); only frames expected to end before then may backfill",
            holds.len(),
            first.host_name,
            first.frame_name,
            first.expires,
            first.shadow
        ),
        json!({ "reservations": holds.iter().map(|r| json!({
            "host": r.host_name, "frame": r.frame_name, "expires": r.expires,
            "expires_in_secs": r.expires_in_secs, "shadow": r.shadow,
        })).collect::<Vec<_>>() }),
    ))
}

/// No host fits: how many carry the tags, how many are eligible, what the closest lack.
fn no_host(checks: &Checks<'_>, tagged: i64, verdicts: &[(&HostRow, Verdict<'_>)]) -> Why {
    let mut lacking: Vec<(&HostRow, &Vec<String>)> = verdicts
        .iter()
        .filter_map(|(h, v)| match v {
            Verdict::Lacks(l) => Some((*h, l)),
            _ => None,
        })
        .collect();
    // Closest: fewest things missing, then the most idle cores (the read order).
    lacking.sort_by_key(|(_, l)| l.len());
    let closest: Vec<_> = lacking.iter().take(CLOSEST).collect();
    let need = checks.floor;
    let lines: Vec<String> = closest
        .iter()
        .map(|(h, l)| format!("{}: {}", h.name, l.join("; ")))
        .collect();
    Why::new(
        "no_host",
        format!(
            "no host fits {:.2} cores, {}{}{}: {tagged} host(s) carry its tags ({}); closest: {}",
            cores(i64::from(need.cores)),
            gb(need.mem_kb),
            if need.gpus > 0 {
                format!(", {} GPU(s)", need.gpus)
            } else {
                String::new()
            },
            if need.gpu_mem_kb > 0 {
                format!(", {} GPU memory", gb(need.gpu_mem_kb))
            } else {
                String::new()
            },
            checks.layer.tags.join(" | "),
            lines.join(" — ")
        ),
        json!({
            "hosts_with_tags": tagged,
            "needs": { "cores": cores(i64::from(need.cores)), "mem_kb": need.mem_kb,
                       "gpus": need.gpus, "gpu_mem_kb": need.gpu_mem_kb },
            "closest": closest.iter().map(|(h, l)| json!({ "host": h.name, "lacks": l })).collect::<Vec<_>>(),
        }),
    )
}
