//! The HTTP endpoints, on tiny_http: `/metrics` (Prometheus text), `/healthz` (every thread
//! alive), `/readyz` (database reachable, caches and counters seeded), `/status` (JSON),
//! `/explain?job=…|layer=…|frame=…` (why frames wait, JSON; see [`crate::explain`]) and `/`
//! (the status page, rendered by [`crate::page`]).
//!
//! GET (and HEAD) only: other methods get 405, unknown paths 404. Responses are small and
//! built from in-memory state, answered one at a time by the `http` thread, except
//! `/explain`, which reads the database (a few statements bounded by one job, but a stalled
//! database holds one for up to a statement timeout): those go to the `http-explain` thread,
//! so a liveness probe or a scrape never waits behind one (more than `SLOW_QUEUE` waiting:
//! 503 at once).
//!
//! tiny_http accepts on a thread of its own and hands each connection to a pool thread (a new
//! one whenever all are busy) that blocks reading requests, and it never times a read out. So
//! we bind the listener ourselves and set `SO_RCVTIMEO` / `SO_SNDTIMEO` on it: Linux copies
//! them into every connection it accepts (a test checks this), so a client that sends nothing
//! for `READ_TIMEOUT` (before a request or between requests of a kept-alive connection) is
//! disconnected and its pool thread ends after tiny_http's 5 s idle time, and a client that
//! does not read holds the `http` thread for at most `WRITE_TIMEOUT` per write. What is NOT
//! bounded: tiny_http has no hook between accept and its pool, so the connections served at
//! once (one thread each) are not capped; the bound is the connections that arrive within one
//! `READ_TIMEOUT`, plus any client that keeps sending a byte at least every `READ_TIMEOUT`
//! (the timeout is per read, not per request). Request heads have no size limit, and tiny_http
//! reads and discards a request's declared body when the request is dropped, allocating the
//! declared `Content-Length` at once: a request declaring more than memory aborts the process
//! (tiny_http 0.12). Keep `[http] listen` on an internal address.
//!
//! The listener's `SO_RCVTIMEO` also makes `accept` time out, and tiny_http ends its accept
//! thread on any accept error. So the `http` thread connects to its own listener every
//! `NUDGE` (tiny_http accepts and drops that connection, and its accept waits afresh), and
//! should the accept thread end anyway (the process was stopped for longer than
//! `READ_TIMEOUT`, the `http` thread was stuck writing, descriptors ran out), it starts a new
//! tiny_http server on the same listening socket, which stays open meanwhile.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crossbeam_channel::{Sender, TrySendError};
use serde_json::{Value, json};
use tiny_http::{Header, Request, Response, Server};

use crate::{explain, metrics, page, status::StatusHandle};

/// How long one read of a client's socket may wait. A scraper sends its request at once, so
/// 5 s is generous, and it is what an idle client can cost: a pool thread for this long.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one write of an answer may wait for a client that does not read. Answers are
/// written by the `http` thread, so this is how long such a client holds up all others; it is
/// longer than `READ_TIMEOUT` because a slow scraper on a busy network still reads, late.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the `http` thread connects to its own listener so that tiny_http's `accept`,
/// which `READ_TIMEOUT` times out too, never waits that long; well under `READ_TIMEOUT`.
const NUDGE: Duration = Duration::from_secs(1);
/// Least time between two restarts of tiny_http (e.g. while descriptors are exhausted).
const RESTART_BACKOFF: Duration = Duration::from_secs(1);
/// Replaced tiny_http servers still drained of the requests their pool threads read.
const MAX_RETIRED: usize = 8;
/// Longest wait for a request, i.e. how soon a stop request is noticed.
const TICK: Duration = Duration::from_millis(200);
/// Requests that read the database (`/explain`) waiting for the `http-explain` thread; the
/// next one is answered 503 at once.
const SLOW_QUEUE: usize = 4;
/// How long stopping waits for an explanation still reading the database before it leaves
/// the `http-explain` thread to finish on its own.
const SLOW_JOIN: Duration = Duration::from_secs(2);

/// What answers a request: `(method, path, query)` to a reply, shared by both threads.
type Router = Arc<dyn Fn(&str, &str, &str) -> Reply + Send + Sync>;

/// The socket timeouts, and how often to nudge `accept` (`None`: never, for tests).
#[derive(Clone, Copy, Debug)]
struct Timeouts {
    read: Duration,
    write: Duration,
    nudge: Option<Duration>,
}

const TIMEOUTS: Timeouts = Timeouts {
    read: READ_TIMEOUT,
    write: WRITE_TIMEOUT,
    nudge: Some(NUDGE),
};

/// The running HTTP server; dropping it stops it too.
pub struct HttpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    slow_thread: Option<JoinHandle<()>>,
    address: String,
    /// Times tiny_http was started again after its accept thread ended (read by tests).
    #[cfg_attr(not(test), allow(dead_code))]
    restarts: Arc<AtomicUsize>,
}

impl HttpServer {
    /// Binds `listen` (port 0 picks a free port) and serves on a thread named `http`.
    pub fn start(listen: &str, status: StatusHandle) -> std::io::Result<HttpServer> {
        Self::with_router(listen, TIMEOUTS, move |method, path, query| {
            route(method, path, query, &status)
        })
    }

    /// Binds `listen` and answers every request with `router(method, path, query)`.
    fn with_router(
        listen: &str,
        timeouts: Timeouts,
        router: impl Fn(&str, &str, &str) -> Reply + Send + Sync + 'static,
    ) -> std::io::Result<HttpServer> {
        let router: Router = Arc::new(router);
        let listener = TcpListener::bind(listen)?;
        // Before anything is accepted: a connection takes the listener's options when the
        // kernel creates it (handshake done), so only one in the moment since `bind` could
        // miss them.
        set_timeouts(&listener, &timeouts)?;
        let address = listener.local_addr()?.to_string();
        let server = tiny_server(&listener)?;
        let stop = Arc::new(AtomicBool::new(false));
        let restarts = Arc::new(AtomicUsize::new(0));
        let (slow, slow_rx) = crossbeam_channel::bounded::<Request>(SLOW_QUEUE);
        let slow_thread = {
            let router = Arc::clone(&router);
            std::thread::Builder::new()
                .name("http-explain".into())
                .spawn(move || slow_rx.iter().for_each(|r| answer(r, &*router)))?
        };
        let thread = {
            let (stop, restarts) = (Arc::clone(&stop), Arc::clone(&restarts));
            let route = Route { router, slow };
            std::thread::Builder::new()
                .name("http".into())
                .spawn(move || serve(&listener, server, &stop, &restarts, timeouts, &route))?
        };
        Ok(HttpServer {
            stop,
            thread: Some(thread),
            slow_thread: Some(slow_thread),
            address,
            restarts,
        })
    }

    /// The bound address, e.g. `127.0.0.1:9090`.
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// Stops serving (within `TICK`) and joins the thread. tiny_http's accept thread ends at
    /// once; its pool threads when their clients are done or time out, and then stay idle.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            // Its end drops the queue's sender: `http-explain` ends after what it holds.
            let _ = t.join();
        }
        if let Some(t) = self.slow_thread.take() {
            let deadline = Instant::now() + SLOW_JOIN;
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                log::warn!("http: an explanation is still reading the database; not waiting");
            }
        }
    }
}

/// The `http` thread's way to a reply: in-memory answers on the spot, database reads handed
/// to the `http-explain` thread.
struct Route {
    router: Router,
    slow: Sender<Request>,
}

impl Route {
    /// Answers `request`, or queues it for `http-explain` when it reads the database.
    fn dispatch(&self, request: Request) {
        if !request.url().starts_with("/explain") {
            return answer(request, &*self.router);
        }
        match self.slow.try_send(request) {
            Ok(()) => {}
            Err(TrySendError::Full(request)) => respond(
                request,
                Reply::text(503, "busy: other explanations are waiting for the database"),
            ),
            Err(TrySendError::Disconnected(request)) => answer(request, &*self.router),
        }
    }
}

/// Sets `SO_RCVTIMEO` and `SO_SNDTIMEO` on `listener`, for the connections it accepts.
fn set_timeouts(listener: &TcpListener, timeouts: &Timeouts) -> std::io::Result<()> {
    for (option, timeout) in [
        (libc::SO_RCVTIMEO, timeouts.read),
        (libc::SO_SNDTIMEO, timeouts.write),
    ] {
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
        };
        // SAFETY: the descriptor is open (borrowed from `listener`), and the option value is
        // a `timeval` of the length passed that lives across the call.
        let rc = unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&raw const tv).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A tiny_http server accepting on (a duplicate of) `listener`.
fn tiny_server(listener: &TcpListener) -> std::io::Result<Server> {
    Server::from_listener(listener.try_clone()?, None)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Where to connect to reach `listener` from this host.
fn own_address(listener: &TcpListener) -> Option<SocketAddr> {
    let mut address = listener.local_addr().ok()?;
    match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => address.set_ip(Ipv4Addr::LOCALHOST.into()),
        IpAddr::V6(ip) if ip.is_unspecified() => address.set_ip(Ipv6Addr::LOCALHOST.into()),
        _ => {}
    }
    Some(address)
}

/// The `http` thread: answers requests until `stop`, keeps tiny_http's accept from timing out
/// and starts tiny_http again if its accept thread ends anyway.
fn serve(
    listener: &TcpListener,
    mut server: Server,
    stop: &AtomicBool,
    restarts: &AtomicUsize,
    timeouts: Timeouts,
    route: &Route,
) {
    let own = own_address(listener);
    let mut nudged = Instant::now();
    let mut accept_ended = false;
    let mut restarted: Option<Instant> = None;
    // Servers replaced by a restart: their pool threads may still read requests of
    // connections accepted before it, and would block on them if nobody took them.
    let mut retired: Vec<Server> = Vec::new();
    while !stop.load(Ordering::Acquire) {
        if let (Some(every), Some(own)) = (timeouts.nudge, own) {
            if nudged.elapsed() >= every {
                // Connected and closed at once: tiny_http's reader sees the end at once.
                let _ = TcpStream::connect_timeout(&own, TICK);
                nudged = Instant::now();
            }
        }
        match server.recv_timeout(TICK) {
            Ok(Some(request)) => route.dispatch(request),
            Ok(None) => {}
            Err(e) => {
                // The only error tiny_http reports: its accept thread ended on this one.
                if !accept_ended {
                    log::warn!("http: tiny_http stopped accepting ({e}); starting it again");
                }
                accept_ended = true;
            }
        }
        for old in &retired {
            while let Ok(Some(request)) = old.try_recv() {
                route.dispatch(request);
            }
        }
        if accept_ended && restarted.is_none_or(|t| t.elapsed() >= RESTART_BACKOFF) {
            restarted = Some(Instant::now());
            match tiny_server(listener) {
                Ok(new) => {
                    retired.push(std::mem::replace(&mut server, new));
                    if retired.len() > MAX_RETIRED {
                        retired.remove(0);
                    }
                    restarts.fetch_add(1, Ordering::Relaxed);
                    accept_ended = false;
                }
                Err(e) => log::warn!("http: starting tiny_http again: {e}"),
            }
        }
    }
}

/// An answer to one request.
struct Reply {
    code: u16,
    content_type: &'static str,
    body: String,
}

impl Reply {
    fn new(code: u16, content_type: &'static str, body: String) -> Reply {
        Reply {
            code,
            content_type,
            body,
        }
    }

    fn text(code: u16, body: &str) -> Reply {
        Reply::new(code, "text/plain; charset=utf-8", format!("{body}\n"))
    }
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("static header is valid")
}

/// Answers `request` with `router(method, path, query)`; tiny_http sends only the headers
/// to HEAD.
fn answer(request: Request, router: &dyn Fn(&str, &str, &str) -> Reply) {
    let reply = {
        let (path, query) = request.url().split_once('?').unwrap_or((request.url(), ""));
        router(request.method().as_str(), path, query)
    };
    respond(request, reply);
}

/// Sends `reply` (only its headers to HEAD).
fn respond(request: Request, reply: Reply) {
    let mut response = Response::from_string(reply.body)
        .with_status_code(reply.code)
        .with_header(header("Content-Type", reply.content_type));
    if reply.code == 405 {
        response.add_header(header("Allow", "GET, HEAD"));
    }
    if let Err(e) = request.respond(response) {
        log::debug!("http: client went away: {e}");
    }
}

fn route(method: &str, path: &str, query: &str, status: &StatusHandle) -> Reply {
    if !matches!(method, "GET" | "HEAD") {
        return Reply::text(405, "method not allowed");
    }
    match path {
        "/metrics" => {
            update_gauges(status);
            Reply::new(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                metrics::render(),
            )
        }
        "/healthz" => {
            let dead = status.health.dead_threads();
            let body = json!({ "alive": dead.is_empty(), "dead_threads": dead });
            let code = if dead.is_empty() { 200 } else { 503 };
            Reply::new(code, "application/json", body.to_string())
        }
        "/readyz" => {
            let (ready, reasons) = readiness(status);
            let body = json!({ "ready": ready, "reasons": reasons });
            let code = if ready { 200 } else { 503 };
            Reply::new(code, "application/json", body.to_string())
        }
        "/status" => Reply::new(200, "application/json", status_json(status).to_string()),
        "/" => Reply::new(
            200,
            "text/html; charset=utf-8",
            page::render(status, readiness(status)),
        ),
        "/explain" => explain_reply(query, status),
        _ => Reply::text(404, "not found"),
    }
}

/// `/explain?job=…|layer=…|frame=…`: why its frames wait, as JSON (the database's answer
/// and this instance's view); 400 without a target, 404 when nothing has that name, 503
/// when the database does not answer.
fn explain_reply(query: &str, status: &StatusHandle) -> Reply {
    let Some(target) = explain::Target::from_query(query) else {
        return Reply::text(
            400,
            "use /explain?job=NAME, ?layer=JOB/LAYER or ?frame=JOB/NNNN-LAYER",
        );
    };
    let (code, body) = match explain::instance::explain_here(status, &target) {
        Ok(e) => (200, serde_json::to_value(&e).unwrap_or(Value::Null)),
        Err(e @ explain::ExplainError::NotFound { .. }) => (404, json!({ "error": e.to_string() })),
        Err(e) => (503, json!({ "error": e.to_string() })),
    };
    Reply::new(code, "application/json", body.to_string())
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
    // Layers come and go: only those sized now are exported.
    let sized = shared.sized.snapshot();
    metrics::MEMORY_FROM_HISTORY.reset();
    for l in &sized {
        let kb = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        metrics::MEMORY_FROM_HISTORY
            .with_label_values(&[&l.job, &l.layer, "asked"])
            .set(kb(l.asked_kb));
        metrics::MEMORY_FROM_HISTORY
            .with_label_values(&[&l.job, &l.layer, "booked"])
            .set(kb(l.booked_kb));
    }
    metrics::MEMORY_HISTORY_LAYERS.set(sized.len() as i64);
}

/// The `/status` document.
pub(crate) fn status_json(status: &StatusHandle) -> Value {
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
        "memory_from_history": shared
            .sized
            .snapshot()
            .iter()
            .map(|l| json!({
                "job": l.job,
                "layer": l.layer,
                "asked_kb": l.asked_kb,
                "booked_kb": l.booked_kb,
            }))
            .collect::<Vec<_>>(),
        "clusters": status.clusters.load().as_ref(),
        "leases": leases,
    })
}

#[cfg(test)]
mod tests {
    use std::io::{ErrorKind, Read, Write};

    use super::*;

    /// Short timeouts, so that the tests wait for them.
    const SHORT: Timeouts = Timeouts {
        read: Duration::from_millis(300),
        write: Duration::from_millis(300),
        nudge: Some(Duration::from_millis(50)),
    };

    fn wait_for(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        ok()
    }

    fn request(address: &str, request: &[u8]) -> String {
        let mut s = TcpStream::connect(address).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(request).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    fn echo(timeouts: Timeouts) -> HttpServer {
        HttpServer::with_router("127.0.0.1:0", timeouts, |method, path, _query| {
            match (method, path) {
                ("GET" | "HEAD", "/big") => Reply::new(200, "text/plain", "x".repeat(64 << 20)),
                ("GET" | "HEAD", _) => Reply::text(200, path),
                _ => Reply::text(405, "method not allowed"),
            }
        })
        .unwrap()
    }

    #[test]
    fn accepted_connections_inherit_the_listeners_timeouts() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        set_timeouts(&listener, &TIMEOUTS).unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        // std reads these back with getsockopt(SO_RCVTIMEO / SO_SNDTIMEO).
        assert_eq!(accepted.read_timeout().unwrap(), Some(READ_TIMEOUT));
        assert_eq!(accepted.write_timeout().unwrap(), Some(WRITE_TIMEOUT));
        // And `accept` itself times out, which is why `serve` nudges it.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        set_timeouts(&listener, &SHORT).unwrap();
        let err = listener.accept().expect_err("times out with no client");
        assert_eq!(err.kind(), ErrorKind::WouldBlock, "{err}");
    }

    #[test]
    fn routes_methods_and_head() {
        let server = echo(SHORT);
        let addr = server.address();
        let get = request(&addr, b"GET /a?b=1 HTTP/1.0\r\n\r\n");
        assert!(get.starts_with("HTTP/1.0 200 OK\r\n"), "{get}");
        assert!(
            get.contains("\r\nContent-Type: text/plain; charset=utf-8\r\n"),
            "{get}"
        );
        assert!(get.ends_with("\r\n\r\n/a\n"), "{get}");
        let head = request(&addr, b"HEAD /h HTTP/1.0\r\n\r\n");
        assert!(
            head.contains("\r\nContent-Length: 3\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        let post = request(&addr, b"POST /a HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
        assert!(post.starts_with("HTTP/1.0 405 "), "{post}");
        assert!(post.contains("\r\nAllow: GET, HEAD\r\n"), "{post}");
        assert!(request(&addr, b"garbage\r\n\r\n").starts_with("HTTP/1.1 400 "));
        server.stop();
    }

    #[test]
    fn a_silent_client_is_disconnected() {
        let server = echo(SHORT);
        let mut silent = TcpStream::connect(server.address()).unwrap();
        silent
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let n = silent.read(&mut [0u8; 64]).expect("closed by the server");
        assert_eq!(n, 0, "closed without an answer");
        server.stop();
    }

    #[test]
    fn a_client_that_does_not_read_holds_the_others_up_for_a_write_timeout_only() {
        let server = echo(SHORT);
        let addr = server.address();
        // 64 MB is far more than the socket buffers take: the write blocks until it times out.
        let mut deaf = TcpStream::connect(&addr).unwrap();
        deaf.write_all(b"GET /big HTTP/1.0\r\n\r\n").unwrap();
        let reply = request(&addr, b"GET /next HTTP/1.0\r\n\r\n");
        assert!(reply.ends_with("\r\n\r\n/next\n"), "{reply}");
        drop(deaf);
        server.stop();
    }

    /// An explanation stuck on the database (here: until the test lets it go) must not hold
    /// up a liveness probe: before `http-explain`, `/healthz` waited behind it.
    #[test]
    fn a_slow_explanation_does_not_hold_up_health() {
        let (release, held) = crossbeam_channel::bounded::<()>(0);
        let server = HttpServer::with_router("127.0.0.1:0", SHORT, move |_, path, _| {
            if path == "/explain" {
                let _ = held.recv_timeout(Duration::from_secs(20));
            }
            Reply::text(200, path)
        })
        .unwrap();
        let addr = server.address();
        let slow = {
            let addr = addr.clone();
            std::thread::spawn(move || request(&addr, b"GET /explain?job=j HTTP/1.0\r\n\r\n"))
        };
        std::thread::sleep(Duration::from_millis(200));
        let mut probe = TcpStream::connect(&addr).unwrap();
        probe
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        probe.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
        let mut answer = String::new();
        probe
            .read_to_string(&mut answer)
            .expect("answered while the explanation waits");
        assert!(answer.ends_with("/healthz\n"), "{answer}");
        release.send(()).unwrap();
        assert!(slow.join().unwrap().ends_with("/explain\n"));
        server.stop();
    }

    #[test]
    fn it_serves_after_an_idle_spell_and_restarts_tiny_http_if_accept_ends() {
        // Nudged: accept never waits a whole read timeout, so idling does not stop it.
        let nudged = echo(SHORT);
        std::thread::sleep(SHORT.read * 4);
        let reply = request(&nudged.address(), b"GET /after HTTP/1.0\r\n\r\n");
        assert!(reply.ends_with("\r\n\r\n/after\n"), "{reply}");
        nudged.stop();
        // Not nudged: tiny_http's accept times out and its accept thread ends; the `http`
        // thread starts tiny_http again on the same listening socket.
        let bare = echo(Timeouts {
            nudge: None,
            ..SHORT
        });
        let restarted = wait_for(Duration::from_secs(30), || {
            bare.restarts.load(Ordering::Relaxed) > 0
        });
        assert!(restarted, "tiny_http restarted after its accept timed out");
        let reply = request(&bare.address(), b"GET /again HTTP/1.0\r\n\r\n");
        assert!(reply.ends_with("\r\n\r\n/again\n"), "{reply}");
        bare.stop();
    }
}
