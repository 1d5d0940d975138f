//! The page's sections, top to bottom: header (readiness, rates, sparkline), farm totals,
//! shows, instances, layers, reservations and launch failures, clusters.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write,
};

use super::render::{
    Inputs, cores, duration, escape, memory, name, share, sparkline, table, url_encode,
};
use crate::{
    cluster::feed::ClusterStatus,
    db::status::{LayerRow, StatusRows},
    pipeline::waiting::Reason,
    status::StatusHandle,
};

/// Title, readiness, this instance and its booking rate with the sparkline.
pub(super) fn header(inputs: &Inputs<'_>) -> String {
    let shared = &inputs.status.shared;
    let (booked, rejected, failures) = shared.stats.totals();
    let per_second = shared.stats.per_second(120);
    let peak = per_second.iter().copied().max().unwrap_or(0);
    let (ready, reasons) = &inputs.ready;
    let readiness = if *ready {
        "<span class=\"ok\" id=\"ready\">ready</span>".to_owned()
    } else {
        format!(
            "<span class=\"bad\" id=\"ready\">not ready: {}</span>",
            escape(&reasons.join(", "))
        )
    };
    let instance = inputs
        .status
        .leases
        .as_ref()
        .map(|l| format!(" · instance <b id=\"instance\">{}</b>", escape(l.name())))
        .unwrap_or_default();
    let config = shared.config.load();
    format!(
        "<h1>stagehand</h1><p>{readiness}{instance} · up {}{}</p>\
         <div class=\"tiles\"><span><span class=\"k\">booked</span> <b>{booked}</b> frames</span>\
         <span><span class=\"k\">rate</span> <b>{:.1}</b>/s (10 s) · {:.1}/s (60 s)</span>\
         <span><span class=\"k\">refused by caps or guards</span> <b>{rejected}</b></span>\
         <span><span class=\"k\">failed launches</span> <b>{failures}</b></span></div>\
         <p>{}<br><span class=\"k\">frames booked per second, last 2 minutes (peak {peak})</span></p>",
        duration(shared.stats.uptime_secs() as f64),
        if config.rqd.dry_run {
            " · dry run"
        } else {
            ""
        },
        shared.stats.rate(10),
        shared.stats.rate(60),
        sparkline(&per_second),
    )
}

/// Cores, memory and GPUs busy of total, and the stranded resources; from the database,
/// else from the host index (which cannot tell stranded resources).
pub(super) fn farm(inputs: &Inputs<'_>) -> String {
    let (hosts, total, idle, stranded, source) = match inputs.rows {
        Ok(rows) => (
            rows.farm.hosts,
            rows.farm.total,
            rows.farm.idle,
            Some(&rows.farm),
            "eligible hosts in the database",
        ),
        Err(_) => {
            let t = inputs.status.shared.index.totals();
            (
                t.hosts as i64,
                t.total,
                t.free,
                None,
                "this instance's host index",
            )
        }
    };
    let ratio = |busy: u64, all: u64| {
        if all == 0 {
            0.0
        } else {
            busy as f64 / all as f64
        }
    };
    let busy_cores = total.cores.saturating_sub(idle.cores);
    let busy_mem = total.mem_kb.saturating_sub(idle.mem_kb);
    let busy_gpus = total.gpus.saturating_sub(idle.gpus);
    let (stranded, gpu_bound, stranded_mem) = match stranded {
        Some(f) => (
            cores(f.stranded_cores),
            cores(f.stranded_cores_gpus),
            memory(u64::try_from(f.stranded_mem_kb).unwrap_or(0)),
        ),
        None => ("?".to_owned(), "?".to_owned(), "?".to_owned()),
    };
    format!(
        "<h2>Farm</h2><div class=\"tiles\" id=\"farm\">\
         <span><span class=\"k\">hosts</span> <b>{hosts}</b></span>\
         <span><span class=\"k\">cores busy</span> {}</span>\
         <span><span class=\"k\">memory busy</span> {}</span>\
         <span><span class=\"k\">GPUs busy</span> {}</span>\
         <span><span class=\"k\">stranded cores</span> <b id=\"stranded\">{stranded}</b> \
         <span class=\"k\">(idle, on hosts short of memory)</span> {gpu_bound} \
         <span class=\"k\">(on hosts with no idle GPU)</span></span>\
         <span><span class=\"k\">stranded memory</span> <b id=\"stranded-mem\">{stranded_mem}</b> \
         <span class=\"k\">(on hosts with no idle core)</span></span></div>\
         <p class=\"k\">from {source}</p>",
        share(
            &cores(i64::from(busy_cores)),
            &cores(i64::from(total.cores)),
            ratio(u64::from(busy_cores), u64::from(total.cores))
        ),
        share(
            &memory(busy_mem),
            &memory(total.mem_kb),
            ratio(busy_mem, total.mem_kb)
        ),
        share(
            &busy_gpus.to_string(),
            &total.gpus.to_string(),
            ratio(u64::from(busy_gpus), u64::from(total.gpus))
        ),
    )
}

/// What the show table says of one show.
#[derive(Default)]
struct ShowLine {
    managed: bool,
    allocs: Vec<String>,
    waiting: i64,
    reasons: BTreeMap<Reason, i64>,
    holder: Option<String>,
}

/// The show lines: subscriptions, waiting frames and the passes' reasons grouped by show,
/// and the instance holding each.
fn show_lines(status: &StatusHandle, rows: &StatusRows) -> BTreeMap<String, ShowLine> {
    let mut lines: BTreeMap<String, ShowLine> = BTreeMap::new();
    for s in &rows.subs {
        let line = lines.entry(s.show.clone()).or_default();
        line.managed = s.managed;
        line.allocs.push(format!(
            "<span title=\"{a}\"><b>{}</b> of {} · burst {} <span class=\"k\">{a}</span></span>",
            cores(s.cores),
            cores(s.size),
            cores(s.burst),
            a = escape(&s.alloc),
        ));
    }
    let mut show_of = std::collections::HashMap::new();
    for w in &rows.waiting {
        lines.entry(w.show.clone()).or_default().waiting += w.waiting;
        show_of.insert(w.layer_id.as_str(), w.show.as_str());
    }
    for (layer, reason, frames) in status.shared.waiting.by_layer() {
        if let Some(show) = show_of.get(layer.as_str()) {
            *lines
                .entry((*show).to_owned())
                .or_default()
                .reasons
                .entry(reason)
                .or_default() += frames;
        }
    }
    for i in &rows.instances {
        for show in &i.shows {
            lines.entry(show.clone()).or_default().holder = Some(i.name.clone());
        }
    }
    lines
}

/// One row per show: booked cores against size and burst per allocation, waiting frames by
/// reason, frames/s.
pub(super) fn shows(inputs: &Inputs<'_>) -> String {
    let Ok(rows) = inputs.rows else {
        return "<h2>Shows</h2><p class=\"k\">(database unreachable)</p>".to_owned();
    };
    let lines = show_lines(inputs.status, rows);
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|(show, l)| {
            let explained: i64 = l.reasons.values().sum();
            let mut reasons: Vec<String> = l
                .reasons
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(r, n)| format!("<span>{} {n}</span>", r.label()))
                .collect();
            if l.waiting > explained {
                let why = if l.managed {
                    "not seen here"
                } else {
                    "Cuebot's"
                };
                reasons.push(format!(
                    "<span class=\"k\">{why} {}</span>",
                    l.waiting - explained
                ));
            }
            vec![
                format!("<b>{}</b>", name(show)),
                if l.managed { "stagehand" } else { "Cuebot" }.to_owned(),
                l.holder.as_deref().map(name).unwrap_or_default(),
                format!("<div class=\"chips\">{}</div>", l.allocs.join("")),
                l.waiting.to_string(),
                format!("<div class=\"chips\">{}</div>", reasons.join("")),
                inputs
                    .rates
                    .get(show)
                    .map_or("–".to_owned(), |r| format!("{r:.1}")),
            ]
        })
        .collect();
    let cols = [
        ("show", "15%", false),
        ("scheduler", "8%", false),
        ("held by", "12%", false),
        ("booked cores of size · burst, per allocation", "30%", false),
        ("waiting", "7%", true),
        ("waiting because", "20%", false),
        ("frames/s", "8%", true),
    ];
    format!(
        "<h2>Shows</h2><div id=\"shows\">{}</div>",
        table(&cols, &rows, "no active show")
    )
}

/// Instances and the shows each holds, by name.
pub(super) fn instances(inputs: &Inputs<'_>) -> String {
    let Ok(rows) = inputs.rows else {
        return "<h2>Instances</h2><p class=\"k\">(database unreachable)</p>".to_owned();
    };
    let me = inputs.status.leases.as_ref().map(|l| l.name().to_owned());
    let lease_secs = inputs
        .status
        .shared
        .config
        .load()
        .cluster
        .lease_duration
        .as_secs_f64();
    let rows: Vec<Vec<String>> = rows
        .instances
        .iter()
        .map(|i| {
            let this = if me.as_deref() == Some(i.name.as_str()) {
                " <span class=\"k\">(this one)</span>"
            } else {
                ""
            };
            let age = duration(i.heartbeat_age);
            let age = if i.heartbeat_age > lease_secs {
                format!("<span class=\"bad\">{age} (stale)</span>")
            } else {
                age
            };
            let shows: Vec<String> = i.shows.iter().map(|s| name(s)).collect();
            vec![
                format!("<b>{}</b>{this}", name(&i.name)),
                name(&i.place),
                age,
                i.shows.len().to_string(),
                collapsed(
                    &format!("instance-{}", url_encode(&i.name)),
                    "shows",
                    &shows,
                    12,
                ),
            ]
        })
        .collect();
    let cols = [
        ("instance", "18%", false),
        ("host:pid", "14%", false),
        ("heartbeat", "9%", false),
        ("shows", "6%", true),
        ("shows held", "53%", false),
    ];
    format!(
        "<h2>Instances</h2><div id=\"instances\">{}</div>",
        table(&cols, &rows, "no instance")
    )
}

/// Chips inline when few, else a `<details>` (identified by `id`, so that it stays open
/// across reloads) whose summary counts them.
fn collapsed(id: &str, what: &str, items: &[String], inline_up_to: usize) -> String {
    let chips = format!(
        "<div class=\"chips\">{}</div>",
        items
            .iter()
            .map(|i| format!("<span>{i}</span>"))
            .collect::<String>()
    );
    if items.len() <= inline_up_to {
        chips
    } else {
        format!(
            "<details id=\"{}\"><summary>{} {what}</summary>{chips}</details>",
            escape(id),
            items.len()
        )
    }
}

/// A layer cell: `show / job / layer`, linked to its explanation.
fn layer_link(l: &LayerRow) -> String {
    let full = format!("{} / {} / {}", l.show, l.job, l.layer);
    format!(
        "<a href=\"/explain?layer={}/{}\" title=\"{}\">{}</a>",
        url_encode(&l.job),
        url_encode(&l.layer),
        escape(&full),
        escape(&full)
    )
}

/// The busiest and the longest-waiting layers, side by side.
pub(super) fn layers(inputs: &Inputs<'_>) -> String {
    let Ok(rows) = inputs.rows else {
        return "<h2>Layers</h2><p class=\"k\">(database unreachable)</p>".to_owned();
    };
    let busiest: Vec<Vec<String>> = rows
        .busiest
        .iter()
        .map(|l| vec![layer_link(l), l.frames.to_string(), cores(l.measure as i64)])
        .collect();
    let longest: Vec<Vec<String>> = rows
        .longest
        .iter()
        .map(|l| vec![layer_link(l), l.frames.to_string(), duration(l.measure)])
        .collect();
    format!(
        "<div class=\"grid\"><div id=\"busiest\"><h2>Busiest layers</h2>{}</div>\
         <div id=\"longest\"><h2>Longest-waiting layers</h2>{}</div></div>",
        table(
            &[
                ("show / job / layer", "70%", false),
                ("running", "15%", true),
                ("cores", "15%", true)
            ],
            &busiest,
            "nothing running"
        ),
        table(
            &[
                ("show / job / layer", "70%", false),
                ("waiting", "15%", true),
                ("oldest", "15%", true)
            ],
            &longest,
            "nothing waiting"
        ),
    )
}

/// Wide-frame reservations (which host, for which frame, until when) and the latest
/// compensated launches, side by side.
pub(super) fn reservations_and_failures(inputs: &Inputs<'_>) -> String {
    let Ok(rows) = inputs.rows else {
        return String::new();
    };
    let held: Vec<Vec<String>> = rows
        .reservations
        .iter()
        .map(|r| {
            let when = if r.shadow_in > 0.0 {
                format!("frees in {}", duration(r.shadow_in))
            } else {
                format!("draining {}", duration(-r.shadow_in))
            };
            let mut need = format!(
                "{} c · {}",
                cores(i64::from(r.need.cores)),
                memory(r.need.mem_kb)
            );
            if r.need.gpus > 0 {
                let _ = write!(need, " · {} GPU", r.need.gpus);
            }
            vec![
                name(&r.host),
                name(&r.frame),
                need,
                when,
                duration(r.expires_in),
            ]
        })
        .collect();
    let failed: Vec<Vec<String>> = rows
        .failures
        .iter()
        .map(|f| {
            vec![
                name(&f.frame),
                name(&f.host),
                format!("{} ago", duration(f.age)),
            ]
        })
        .collect();
    format!(
        "<div class=\"grid\"><div id=\"reservations\"><h2>Wide-frame reservations</h2>{}</div>\
         <div id=\"failures\"><h2>Recent launch failures</h2>{}</div></div>",
        table(
            &[
                ("host", "20%", false),
                ("for frame", "32%", false),
                ("reserved", "18%", false),
                ("shadow", "17%", false),
                ("lapses in", "13%", false)
            ],
            &held,
            "no reservation"
        ),
        table(
            &[
                ("frame (back to WAITING, exit 299)", "56%", false),
                ("host", "26%", false),
                ("when", "18%", true)
            ],
            &failed,
            "none"
        ),
    )
}

/// The feed's clusters per show: allocation clusters with their state, hostname and
/// manual-tag chunks as a count with the list on demand.
pub(super) fn clusters(status: &StatusHandle) -> String {
    let all = status.clusters.load();
    let mut by_show: BTreeMap<&str, Vec<&ClusterStatus>> = BTreeMap::new();
    for c in all.iter() {
        by_show.entry(c.show.as_str()).or_default().push(c);
    }
    let rows: Vec<Vec<String>> = by_show
        .iter()
        .map(|(show, list)| {
            let chip = |c: &&ClusterStatus| -> String {
                let tags = c.key.rsplit('/').next().unwrap_or("");
                let waiting = if c.waiting < 0 {
                    "?".to_owned()
                } else {
                    c.waiting.to_string()
                };
                format!("{}: {} · {waiting} waiting", name(tags), escape(&c.state))
            };
            let (alloc, chunks): (Vec<&ClusterStatus>, Vec<&ClusterStatus>) =
                list.iter().partition(|c| c.kind == "alloc");
            let kinds: BTreeSet<&str> = chunks.iter().map(|c| c.kind).collect();
            let what = kinds.into_iter().collect::<Vec<_>>().join(" / ") + " chunks";
            let chunks: Vec<String> = chunks.iter().map(chip).collect();
            let waiting: i64 = list.iter().map(|c| c.waiting.max(0)).sum();
            vec![
                format!("<b>{}</b>", name(show)),
                list.len().to_string(),
                waiting.to_string(),
                collapsed(
                    "",
                    "",
                    &alloc.iter().map(chip).collect::<Vec<_>>(),
                    usize::MAX,
                ),
                if chunks.is_empty() {
                    String::new()
                } else {
                    collapsed(&format!("clusters-{}", url_encode(show)), &what, &chunks, 0)
                },
            ]
        })
        .collect();
    let cols = [
        ("show", "15%", false),
        ("clusters", "7%", true),
        ("waiting", "7%", true),
        ("allocation clusters", "41%", false),
        ("hostname / manual-tag chunks", "30%", false),
    ];
    format!(
        "<h2>Clusters</h2><div id=\"clusters\">{}</div>",
        table(&cols, &rows, "no cluster loaded yet")
    )
}
