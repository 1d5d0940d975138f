//! The explanation as text for a terminal: the show and job on top, then per layer its frame
//! counts and its groups of frames with their reasons, the first reason being the answer.

use std::fmt::Write as _;

use super::{Explanation, Group, LayerExplanation, ShowFacts};

/// The text of `e`.
pub(super) fn render(e: &Explanation) -> String {
    let mut out = String::new();
    let job = &e.job;
    let _ = writeln!(
        out,
        "job {} ({}{}), folder {}, {:.2} cores booked of max {:.2}",
        job.name,
        job.state,
        if job.paused { ", paused" } else { "" },
        job.folder,
        job.cores,
        job.max_cores.max(0.0)
    );
    let _ = writeln!(out, "show {}", show_line(&e.show));
    for s in &e.show.subscriptions {
        let _ = writeln!(
            out,
            "  subscription {}: {:.2} cores booked, size {:.2}, burst {:.2}",
            s.alloc_name, s.booked, s.size, s.burst
        );
    }
    if let Some(i) = &e.instance {
        let _ = writeln!(
            out,
            "asked instance {}: {}",
            i.name.as_deref().unwrap_or("(no leases)"),
            match (i.holds_show, i.epoch) {
                (true, Some(epoch)) => format!("holds the show at epoch {epoch}"),
                _ => "does not hold the show".to_owned(),
            }
        );
    }
    for layer in &e.layers {
        layer_text(&mut out, layer);
    }
    out
}

fn show_line(show: &ShowFacts) -> String {
    let managed = if show.managed {
        "managed by stagehand"
    } else {
        "not managed by stagehand (Cuebot books it)"
    };
    let lease = match &show.lease {
        Some(l) => match &l.instance {
            Some(name) => format!(
                "held by instance {name} (host {}, pid {}, heartbeat {:.1} s ago{}, epoch {})",
                l.host.as_deref().unwrap_or("?"),
                l.pid.unwrap_or(0),
                l.heartbeat_age_secs.unwrap_or(f64::NAN),
                if l.alive { "" } else { ", stale" },
                l.epoch
            ),
            None => format!("lease free (epoch {})", l.epoch),
        },
        None => "never leased".to_owned(),
    };
    format!(
        "{}: {managed}; {lease}; {} live instance(s)",
        show.name, show.live_instances
    )
}

fn layer_text(out: &mut String, layer: &LayerExplanation) {
    let counts: Vec<String> = layer
        .frames
        .iter()
        .map(|(state, n)| format!("{n} {}", state.to_lowercase()))
        .collect();
    let _ = writeln!(
        out,
        "\nlayer {} [{}]: {}",
        layer.name,
        layer.tags.join(" | "),
        if counts.is_empty() {
            "no frames".to_owned()
        } else {
            counts.join(", ")
        }
    );
    if layer.groups.is_empty() {
        let _ = writeln!(out, "  nothing is waiting");
    }
    for g in &layer.groups {
        group_text(out, g);
    }
    if let Some(p) = &layer.last_pass {
        let _ = writeln!(
            out,
            "  last pass: {:.1} s ago, left {} frame(s) for {}",
            p.secs_ago, p.frames, p.reason
        );
        let now_bookable = layer
            .groups
            .iter()
            .any(|g| g.reasons.first().is_some_and(|w| w.code == "bookable"));
        if now_bookable {
            let _ = writeln!(
                out,
                "    (the database shows room now that the pass did not: frames ended since, or the host index had not seen it yet)"
            );
        }
    }
    for c in &layer.clusters {
        let _ = writeln!(
            out,
            "  cluster {}: {}, next turn {}",
            c.key,
            c.state,
            if c.next_turn_secs <= 0.0 {
                "now".to_owned()
            } else {
                format!("in {:.1} s", c.next_turn_secs)
            }
        );
    }
}

fn group_text(out: &mut String, g: &Group) {
    let more = if g.frames > g.sample.len() as i64 {
        ", …"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "  {} frame(s) ({}{more}):",
        g.frames,
        g.sample.join(", ")
    );
    for (i, why) in g.reasons.iter().enumerate() {
        let _ = writeln!(
            out,
            "    {} [{}] {}",
            if i == 0 { "because" } else { "and" },
            why.code,
            why.text
        );
    }
}
