//! The running instance's side of an explanation (`GET /explain`): the database's answer
//! plus what only this process knows — when its last pass left each layer and why (the
//! per-layer reasons behind `stagehand_waiting_frames{reason}`), the turns of the clusters
//! that cover the layer, whether it holds the show, and its own cap counters.
//!
//! It runs on the `http` thread with one pooled connection; the statements are bounded by
//! one job and its hosts (and by `[database] statement_timeout`), so a request costs other
//! endpoints milliseconds, not a pass.

use crate::ids::{AllocId, ShowId};
use serde_json::json;

use super::{ClusterTurn, ExplainError, Explanation, InstanceFacts, LastPass, Target, explain};
use crate::status::StatusHandle;

/// Explains `target` from the database and adds this instance's view.
pub fn explain_here(status: &StatusHandle, target: &Target) -> Result<Explanation, ExplainError> {
    let shared = &status.shared;
    let config = shared.config.load_full();
    let mut conn = shared.pool.get().map_err(crate::db::DbError::from)?;
    let mut explanation = explain(conn.client(), &config, target)?;
    annotate(&mut explanation, status);
    Ok(explanation)
}

/// Adds what this instance knows to `e`.
pub fn annotate(e: &mut Explanation, status: &StatusHandle) {
    let shared = &status.shared;
    let show = e.show.id.clone();
    let held = status
        .leases
        .as_ref()
        .and_then(|l| l.held().into_iter().find(|h| h.show == show));
    let counters = e
        .show
        .subscriptions
        .iter()
        .map(|s| {
            // Typed once per subscription row (the explanation keeps the database's text).
            let (show, alloc) = (ShowId::from(show.as_str()), AllocId::from(s.alloc.as_str()));
            json!({
                "alloc": s.alloc_name,
                "booked": shared.ledger.sub_booked(&show, &alloc) as f64 / 100.0,
                "headroom": shared.ledger.sub_headroom(&show, &alloc) as f64 / 100.0,
            })
        })
        .collect();
    e.instance = Some(InstanceFacts {
        name: status.leases.as_ref().map(|l| l.name().to_owned()),
        holds_show: held.is_some() || status.leases.is_none(),
        epoch: held.map(|h| h.epoch),
        counters,
    });
    let clusters = status.clusters.load();
    for layer in &mut e.layers {
        layer.last_pass = shared
            .waiting
            .layer(&layer.id)
            .map(|(reason, frames, age)| LastPass {
                reason: reason.label().to_owned(),
                frames,
                secs_ago: age.as_secs_f64(),
            });
        layer.clusters = clusters
            .iter()
            .filter(|c| covers(&c.key, &show, &layer.tags))
            .map(|c| ClusterTurn {
                key: c.key.clone(),
                state: c.state.clone(),
                next_turn_secs: c.next_turn_ms as f64 / 1000.0,
            })
            .collect();
    }
}

/// The explanation of the instance whose `[http] listen` is `listen` (an unspecified
/// address means this host), or `None` when it does not answer within two seconds or not
/// with one: the command line then answers from the database alone.
pub fn ask_instance(listen: &str, target: &Target) -> Option<Explanation> {
    use std::io::{Read, Write};
    let mut address: std::net::SocketAddr = listen.parse().ok()?;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let timeout = std::time::Duration::from_secs(2);
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let path = format!(
        "/explain?{}={}",
        target.kind(),
        percent_encode(target.name())
    );
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    let (head, body) = reply.split_once("\r\n\r\n")?;
    let ok = head.split_whitespace().nth(1) == Some("200");
    ok.then(|| serde_json::from_str(body).ok()).flatten()
}

/// `s` with everything but unreserved URL characters `%XX`-encoded.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// True when the cluster `key` (`facility/show/kind/tag,tag…`) is of `show` and books one
/// of `tags`.
fn covers(key: &str, show: &str, tags: &[String]) -> bool {
    let mut parts = key.splitn(4, '/');
    let (_facility, key_show, _kind) = (parts.next(), parts.next(), parts.next());
    key_show == Some(show)
        && parts
            .next()
            .is_some_and(|t| t.split(',').any(|t| tags.iter().any(|l| l == t)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cluster_covers_the_layers_of_its_show_and_tags() {
        let tags = vec!["general".to_owned(), "fx".to_owned()];
        assert!(super::covers("f/s1/alloc/general", "s1", &tags));
        assert!(super::covers("f/s1/manual/a,fx", "s1", &tags));
        assert!(!super::covers("f/s2/alloc/general", "s1", &tags));
        assert!(!super::covers("f/s1/alloc/gpu", "s1", &tags));
    }

    #[test]
    fn names_survive_the_query_string() {
        let name = "show-shot_user/0001-l ä&=";
        let query = format!("frame={}", super::percent_encode(name));
        assert_eq!(
            super::Target::from_query(&query),
            Some(super::Target::Frame(name.to_owned()))
        );
    }
}
