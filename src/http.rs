//! The HTTP endpoints, on tiny_http: `/metrics` (Prometheus text), `/healthz` (every thread
//! alive), `/readyz` (database reachable, caches and counters seeded), `/status` (JSON) and
//! `/` (a small self-refreshing page with a dispatch-rate sparkline).
//!
//! GET (and HEAD) only: other methods get 405, unknown paths 404. tiny_http has an unfixed
//! request-smuggling issue (CVE-2026-66752), so keep `[http] listen` on an internal address.
//! Requests are answered on one thread with a bounded read: responses are small and built
//! from in-memory state, so a slow client cannot stall the scrape for long.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use serde_json::{Value, json};
use tiny_http::{Header, Method, Request, Response, Server};

use crate::{metrics, service::StatusHandle};

/// The running HTTP server.
pub struct HttpServer {
    server: Arc<Server>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    address: String,
}

impl HttpServer {
    /// Binds `listen` (port 0 picks a free port) and serves on a thread named `http`.
    pub fn start(listen: &str, status: StatusHandle) -> std::io::Result<HttpServer> {
        let server = Server::http(listen).map_err(|e| std::io::Error::other(e.to_string()))?;
        let address = server
            .server_addr()
            .to_ip()
            .map(|a| a.to_string())
            .unwrap_or_else(|| listen.to_owned());
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (server, stop) = (Arc::clone(&server), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("http".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        match server.recv_timeout(Duration::from_millis(200)) {
                            Ok(Some(request)) => handle(request, &status),
                            Ok(None) => {}
                            Err(e) => log::warn!("http: {e}"),
                        }
                    }
                })?
        };
        Ok(HttpServer {
            server,
            stop,
            thread: Some(thread),
            address,
        })
    }

    /// The bound address, e.g. `127.0.0.1:9090`.
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// Stops serving and joins the thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("static header is valid")
}

fn respond(request: Request, code: u16, content_type: &str, body: String) {
    let response = Response::from_string(body)
        .with_status_code(code)
        .with_header(header("Content-Type", content_type));
    if let Err(e) = request.respond(response) {
        log::debug!("http: client went away: {e}");
    }
}

fn handle(request: Request, status: &StatusHandle) {
    let path = request.url().split('?').next().unwrap_or("/").to_owned();
    if !matches!(request.method(), Method::Get | Method::Head) {
        let response = Response::from_string("method not allowed\n")
            .with_status_code(405)
            .with_header(header("Allow", "GET, HEAD"));
        let _ = request.respond(response);
        return;
    }
    match path.as_str() {
        "/metrics" => {
            update_gauges(status);
            respond(
                request,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics::render(),
            )
        }
        "/healthz" => {
            let dead = status.health.dead_threads();
            let body = json!({ "alive": dead.is_empty(), "dead_threads": dead });
            respond(
                request,
                if dead.is_empty() { 200 } else { 503 },
                "application/json",
                body.to_string(),
            )
        }
        "/readyz" => {
            let (ready, reasons) = readiness(status);
            let body = json!({ "ready": ready, "reasons": reasons });
            respond(
                request,
                if ready { 200 } else { 503 },
                "application/json",
                body.to_string(),
            )
        }
        "/status" => respond(
            request,
            200,
            "application/json",
            status_json(status).to_string(),
        ),
        "/" => respond(request, 200, "text/html; charset=utf-8", page(status)),
        _ => respond(
            request,
            404,
            "text/plain; charset=utf-8",
            "not found\n".into(),
        ),
    }
}

/// Whether the service can book, and what stops it if not.
pub fn readiness(status: &StatusHandle) -> (bool, Vec<&'static str>) {
    let h = &status.health;
    let mut reasons = Vec::new();
    if h.stopping.load(Ordering::Acquire) {
        reasons.push("shutting down");
    }
    if !h.db_ok.load(Ordering::Acquire) {
        reasons.push("database unreachable");
    }
    if !status.shared.ledger.is_seeded() {
        reasons.push("cap counters not seeded");
    }
    if !h.clusters_loaded.load(Ordering::Acquire) {
        reasons.push("clusters not loaded");
    }
    if !h.hosts_loaded.load(Ordering::Acquire) {
        reasons.push("host index not loaded");
    }
    (reasons.is_empty(), reasons)
}

fn update_gauges(status: &StatusHandle) {
    let shared = &status.shared;
    let totals = shared.index.totals();
    metrics::INDEX_HOSTS.set(totals.hosts as i64);
    metrics::INDEX_RESERVATIONS.set(totals.reservations);
    metrics::INDEX_FREE_CORES.set(i64::from(totals.free.cores));
    let state = shared.pool.state();
    metrics::DB_POOL
        .with_label_values(&["open"])
        .set(i64::from(state.connections));
    metrics::DB_POOL
        .with_label_values(&["idle"])
        .set(i64::from(state.idle_connections));
    for (reason, frames) in shared.waiting.totals() {
        metrics::WAITING_FRAMES
            .with_label_values(&[reason.label()])
            .set(frames);
    }
}

/// The `/status` document.
pub fn status_json(status: &StatusHandle) -> Value {
    let shared = &status.shared;
    let config = shared.config.load();
    let totals = shared.index.totals();
    let (booked, rejected, launch_failures) = shared.stats.totals();
    let (ready, reasons) = readiness(status);
    let leases = status
        .leases
        .as_ref()
        .map(|l| json!({ "instance": l.name(), "held": l.held(), "peers": l.peers() }));
    json!({
        "ready": ready,
        "not_ready_because": reasons,
        "uptime_secs": shared.stats.uptime_secs(),
        "config_generation": status.generation.load(Ordering::Acquire),
        "dry_run": config.rqd.dry_run,
        "placement": format!("{:?}", config.scheduler.placement),
        "dispatch": {
            "frames_booked": booked,
            "rejected": rejected,
            "launch_failures": launch_failures,
            "frames_per_second_10s": shared.stats.rate(10),
            "frames_per_second_60s": shared.stats.rate(60),
            "per_second_last_120s": shared.stats.per_second(120),
        },
        "hosts": {
            "indexed": totals.hosts,
            "reservations": totals.reservations,
            "total_cores": f64::from(totals.total.cores) / 100.0,
            "free_cores": f64::from(totals.free.cores) / 100.0,
            "total_gpus": totals.total.gpus,
            "free_gpus": totals.free.gpus,
        },
        "waiting_frames_by_reason": shared
            .waiting
            .totals()
            .into_iter()
            .map(|(reason, frames)| (reason.label(), frames))
            .collect::<std::collections::BTreeMap<_, _>>(),
        "wide_frame_reservations": shared.holds.snapshot().status(),
        "clusters": status.clusters.load().as_ref(),
        "leases": leases,
    })
}

fn sparkline(values: &[u32]) -> String {
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let (w, h) = (480.0, 60.0);
    let step = if values.len() > 1 {
        w / (values.len() - 1) as f64
    } else {
        w
    };
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 * step,
                h - f64::from(*v) / max * (h - 4.0) - 2.0
            )
        })
        .collect();
    format!(
        "<svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"frames booked per second\">\
         <polyline fill=\"none\" stroke=\"#2a7\" stroke-width=\"2\" points=\"{}\"/></svg>",
        points.join(" ")
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(status: &StatusHandle) -> String {
    let doc = status_json(status);
    let shared = &status.shared;
    let per_second = shared.stats.per_second(120);
    let peak = per_second.iter().copied().max().unwrap_or(0);
    let mut rows = String::new();
    for c in status.clusters.load().iter().take(200) {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&c.show),
            c.kind,
            escape(c.key.rsplit('/').next().unwrap_or("")),
            escape(&c.state),
            if c.waiting < 0 {
                "?".to_owned()
            } else {
                c.waiting.to_string()
            },
            if c.next_turn_ms == 0 {
                "now".to_owned()
            } else {
                format!("{:.1}s", c.next_turn_ms as f64 / 1000.0)
            },
        ));
    }
    let hosts = &doc["hosts"];
    let dispatch = &doc["dispatch"];
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">\
         <title>stagehand</title><style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}\
         table{{border-collapse:collapse}}td,th{{padding:2px 10px;border-bottom:1px solid #ddd;text-align:left}}\
         .k{{color:#666}} .bad{{color:#b30}} .ok{{color:#2a7}}</style></head><body>\
         <h1>stagehand</h1>\
         <p class=\"{}\">{}</p>\
         <p><span class=\"k\">booked</span> {} frames &nbsp; <span class=\"k\">rate</span> {:.1}/s (10 s), {:.1}/s (60 s) \
         &nbsp; <span class=\"k\">rejected</span> {} &nbsp; <span class=\"k\">failed launches</span> {}</p>\
         <p>{}<br><span class=\"k\">frames booked per second, last 2 minutes (peak {})</span></p>\
         <p><span class=\"k\">hosts</span> {} &nbsp; <span class=\"k\">cores</span> {} free of {} \
         &nbsp; <span class=\"k\">GPUs</span> {} free of {} &nbsp; <span class=\"k\">reservations</span> {}</p>\
         <h2>Clusters</h2><table><tr><th>show</th><th>type</th><th>tags</th><th>state</th><th>waiting</th><th>next turn</th></tr>{}</table>\
         <p class=\"k\">config generation {} · <a href=\"/status\">/status</a> · <a href=\"/metrics\">/metrics</a></p>\
         </body></html>",
        if doc["ready"].as_bool().unwrap_or(false) {
            "ok"
        } else {
            "bad"
        },
        if doc["ready"].as_bool().unwrap_or(false) {
            "ready".to_owned()
        } else {
            format!(
                "not ready: {}",
                escape(&doc["not_ready_because"].to_string())
            )
        },
        dispatch["frames_booked"],
        dispatch["frames_per_second_10s"].as_f64().unwrap_or(0.0),
        dispatch["frames_per_second_60s"].as_f64().unwrap_or(0.0),
        dispatch["rejected"],
        dispatch["launch_failures"],
        sparkline(&per_second),
        peak,
        hosts["indexed"],
        hosts["free_cores"],
        hosts["total_cores"],
        hosts["free_gpus"],
        hosts["total_gpus"],
        hosts["reservations"],
        rows,
        doc["config_generation"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_scales_to_the_peak() {
        let svg = sparkline(&[0, 5, 10]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("polyline"));
        assert_eq!(escape("<a&b>"), "&lt;a&amp;b&gt;");
    }
}
