//! The HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (every thread alive),
//! `/readyz` (database reachable, caches and counters seeded), `/status` (JSON) and `/` (a
//! small self-refreshing page with a dispatch-rate sparkline).
//!
//! GET (and HEAD) only: other methods get 405, unknown paths 404. The server is a small
//! HTTP/1.1 one of our own, on one thread (`http`) that polls non-blocking sockets: tiny_http,
//! used before, starts a thread for every connection it is still reading and never times a
//! reader out, so idle clients on `[http] listen` could pile up threads without limit. Here
//! what a client costs is bounded whatever it does: at most `MAX_CONNECTIONS` are open (a new
//! one closes the oldest, so a flood delays a scrape but cannot shut it out), a client has
//! `READ_TIMEOUT` to send its request head of at most `MAX_HEAD` bytes and `WRITE_TIMEOUT` to
//! take the answer, and each connection carries one request and is then closed
//! (`Connection: close`), so no body is read and no request can hide behind another.
//! Responses are small and built from in-memory state. Keep `[http] listen` internal anyway.

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::{metrics, service::StatusHandle};

/// Most connections open at once; a new one beyond this closes the oldest.
const MAX_CONNECTIONS: usize = 64;
/// How long a client has, from connecting, to send its whole request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client has to take the whole response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long, after the response, the client has to close before we do (see [`State::Closing`]).
const LINGER: Duration = Duration::from_secs(1);
/// Largest request head (request line and headers) read; a longer one is answered 431.
const MAX_HEAD: usize = 8 * 1024;
/// Longest sleep in `poll`, i.e. how soon a stop request is noticed.
const TICK: Duration = Duration::from_millis(200);

/// The running HTTP server; dropping it stops it too.
pub struct HttpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    address: String,
}

impl HttpServer {
    /// Binds `listen` (port 0 picks a free port) and serves on a thread named `http`.
    pub fn start(listen: &str, status: StatusHandle) -> std::io::Result<HttpServer> {
        Self::with_router(listen, move |method, path| route(method, path, &status))
    }

    /// Binds `listen` and answers every request with `router(method, path)`.
    fn with_router(
        listen: &str,
        router: impl Fn(&str, &str) -> Reply + Send + 'static,
    ) -> std::io::Result<HttpServer> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("http".into())
                .spawn(move || serve(&listener, &stop, &router))?
        };
        Ok(HttpServer {
            stop,
            thread: Some(thread),
            address,
        })
    }

    /// The bound address, e.g. `127.0.0.1:9090`.
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// Stops serving (within `TICK`) and joins the thread; open connections are closed.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
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

    /// The bytes on the wire; `head_only` for HEAD (headers as for GET, no body).
    fn encode(&self, head_only: bool) -> Vec<u8> {
        let reason = match self.code {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "",
        };
        let allow = if self.code == 405 {
            "Allow: GET, HEAD\r\n"
        } else {
            ""
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
            self.code,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// The method and path (without query) of a complete request head, or the status to answer
/// a bad one with.
fn request_line(head: &[u8]) -> Result<(&str, &str), u16> {
    if !has_head_end(head) {
        return Err(431);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line).map_err(|_| 400u16)?;
    let mut parts = line.trim_end_matches('\r').split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(target), Some(version), None)
            if !method.is_empty() && target.starts_with('/') && version.starts_with("HTTP/1.") =>
        {
            Ok((method, target.split('?').next().unwrap_or(target)))
        }
        _ => Err(400),
    }
}

/// True when `b` holds the blank line that ends a request head (CRLF, or bare LF).
fn has_head_end(b: &[u8]) -> bool {
    b.windows(4).any(|w| w == b"\r\n\r\n") || b.windows(2).any(|w| w == b"\n\n")
}

/// The response bytes for a request head.
fn answer(head: &[u8], router: &dyn Fn(&str, &str) -> Reply) -> Vec<u8> {
    match request_line(head) {
        Ok((method, path)) => router(method, path).encode(method == "HEAD"),
        Err(code) => Reply::text(code, "bad request").encode(false),
    }
}

/// Where a connection is in its one request.
enum State {
    /// Reading the request head into the buffer.
    Reading(Vec<u8>),
    /// Writing the response, from this offset.
    Writing(Vec<u8>, usize),
    /// Response sent and our side shut down: reading (and dropping) whatever the client still
    /// sends until it closes, because closing with unread input makes the kernel reset the
    /// connection, which can destroy the response before the client has read it.
    Closing,
}

/// One client connection and its deadline for the current [`State`].
struct Conn {
    stream: TcpStream,
    state: State,
    opened: Instant,
    deadline: Instant,
}

/// Outcome of doing what a non-blocking socket allows.
enum Io {
    /// Wait for the socket to be ready again.
    Pending,
    /// This step is finished.
    Done,
    /// The client is gone or broke the connection.
    Gone,
}

impl Conn {
    fn new(stream: TcpStream, now: Instant) -> Conn {
        Conn {
            stream,
            state: State::Reading(Vec::new()),
            opened: now,
            deadline: now + READ_TIMEOUT,
        }
    }

    fn events(&self) -> libc::c_short {
        match self.state {
            State::Writing(..) => libc::POLLOUT,
            State::Reading(_) | State::Closing => libc::POLLIN,
        }
    }

    /// Moves the connection on as far as its socket allows; false once it is finished.
    fn advance(&mut self, router: &dyn Fn(&str, &str) -> Reply) -> bool {
        loop {
            let io = match &mut self.state {
                State::Reading(buf) => read_head(&mut self.stream, buf),
                State::Writing(out, pos) => write_out(&mut self.stream, out, pos),
                State::Closing => drain(&mut self.stream),
            };
            match (io, &self.state) {
                (Io::Pending, _) => return true,
                (Io::Gone, _) | (Io::Done, State::Closing) => return false,
                (Io::Done, State::Reading(buf)) => {
                    self.state = State::Writing(answer(buf, router), 0);
                    self.deadline = Instant::now() + WRITE_TIMEOUT;
                }
                (Io::Done, State::Writing(..)) => {
                    let _ = self.stream.shutdown(Shutdown::Write);
                    self.state = State::Closing;
                    self.deadline = Instant::now() + LINGER;
                }
            }
        }
    }

    /// Called at the deadline: a client still sending its request is told so (best effort).
    fn expire(mut self) {
        if matches!(self.state, State::Reading(_)) {
            let _ = self
                .stream
                .write(&Reply::text(408, "request timeout").encode(false));
        }
    }
}

/// Reads what is available; done when the head is complete or too large for `MAX_HEAD`.
fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Io {
    let mut chunk = [0u8; 2048];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Io::Gone,
            Ok(n) => {
                let from = buf.len().saturating_sub(3);
                buf.extend_from_slice(&chunk[..n]);
                if has_head_end(&buf[from..]) || buf.len() >= MAX_HEAD {
                    return Io::Done;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Io::Pending,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Io::Gone,
        }
    }
}

/// Writes what the socket takes of `out[*pos..]`.
fn write_out(stream: &mut TcpStream, out: &[u8], pos: &mut usize) -> Io {
    while *pos < out.len() {
        match stream.write(&out[*pos..]) {
            Ok(0) => return Io::Gone,
            Ok(n) => *pos += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Io::Pending,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Io::Gone,
        }
    }
    Io::Done
}

/// Reads and drops input until the client closes.
fn drain(stream: &mut TcpStream) -> Io {
    let mut chunk = [0u8; 2048];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Io::Done,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Io::Pending,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Io::Gone,
        }
    }
}

fn pollfd(fd: std::os::fd::RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// The server loop: one `poll` over the listener and every connection, until `stop`.
fn serve(listener: &TcpListener, stop: &AtomicBool, router: &dyn Fn(&str, &str) -> Reply) {
    let mut conns: Vec<Conn> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    while !stop.load(Ordering::Acquire) {
        fds.clear();
        fds.push(pollfd(listener.as_raw_fd(), libc::POLLIN));
        fds.extend(
            conns
                .iter()
                .map(|c| pollfd(c.stream.as_raw_fd(), c.events())),
        );
        let now = Instant::now();
        let next = conns.iter().map(|c| c.deadline).min().unwrap_or(now + TICK);
        let wait = next.saturating_duration_since(now).min(TICK).as_millis() as libc::c_int + 1;
        // SAFETY: `fds` is an initialised array of `fds.len()` pollfd structs that outlives
        // the call; poll only writes their `revents`.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                log::warn!("http: poll: {e}");
                std::thread::sleep(TICK);
            }
            continue;
        }
        let now = Instant::now();
        // Backwards, so that `swap_remove` only moves connections already seen.
        for i in (0..conns.len()).rev() {
            let woke = fds[i + 1].revents != 0;
            if woke && !conns[i].advance(router) {
                conns.swap_remove(i);
            } else if now >= conns[i].deadline {
                conns.swap_remove(i).expire();
            }
        }
        if fds[0].revents != 0 {
            accept(listener, &mut conns, now);
        }
    }
}

/// Takes the pending connections, closing the oldest ones beyond `MAX_CONNECTIONS`.
fn accept(listener: &TcpListener, conns: &mut Vec<Conn>, now: Instant) {
    for _ in 0..MAX_CONNECTIONS {
        match listener.accept() {
            Ok((stream, _)) => {
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                if conns.len() >= MAX_CONNECTIONS {
                    let oldest = (0..conns.len()).min_by_key(|&i| conns[i].opened);
                    if let Some(i) = oldest {
                        conns.swap_remove(i);
                    }
                }
                conns.push(Conn::new(stream, now));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                ) => {}
            Err(e) => {
                // E.g. out of file descriptors: the listener stays readable, so back off
                // rather than spin.
                log::warn!("http: accept: {e}");
                std::thread::sleep(TICK);
                return;
            }
        }
    }
}

fn route(method: &str, path: &str, status: &StatusHandle) -> Reply {
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
        "/" => Reply::new(200, "text/html; charset=utf-8", page(status)),
        _ => Reply::text(404, "not found"),
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

    /// A request head and what `request_line` makes of it.
    type Case = (&'static str, Result<(&'static str, &'static str), u16>);

    #[test]
    fn request_lines() {
        #[rustfmt::skip]
        let cases: &[Case] = &[
            ("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", Ok(("GET", "/metrics"))),
            ("HEAD /status?pretty=1 HTTP/1.0\r\n\r\n", Ok(("HEAD", "/status"))),
            ("GET / HTTP/1.0\n\n", Ok(("GET", "/"))),
            ("POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\n", Ok(("POST", "/metrics"))),
            ("GET /metrics HTTP/1.1\r\nHost: x\r\n", Err(431)),
            ("garbage\r\n\r\n", Err(400)), ("GET /a HTTP/2\r\n\r\n", Err(400)),
            ("GET  /a HTTP/1.1\r\n\r\n", Err(400)), ("GET a HTTP/1.1\r\n\r\n", Err(400)),
        ];
        for (head, want) in cases {
            assert_eq!(request_line(head.as_bytes()), *want, "{head:?}");
        }
        let head = Reply::text(200, "ok").encode(true);
        let head = String::from_utf8(head).unwrap();
        assert!(
            head.ends_with("Content-Length: 3\r\nConnection: close\r\n\r\n"),
            "{head}"
        );
        let allow = String::from_utf8(Reply::text(405, "no").encode(false)).unwrap();
        assert!(allow.contains("\r\nAllow: GET, HEAD\r\n") && allow.ends_with("no\n"));
    }

    fn get(address: &str, request: &[u8]) -> String {
        let mut s = TcpStream::connect(address).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(request).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn idle_clients_neither_shut_others_out_nor_pile_up() {
        let server =
            HttpServer::with_router("127.0.0.1:0", |_, path| Reply::text(200, path)).unwrap();
        let addr = server.address();
        let mut idle: Vec<TcpStream> = (0..200)
            .map(|_| TcpStream::connect(&addr).unwrap())
            .collect();
        let reply = get(&addr, b"GET /through HTTP/1.0\r\n\r\n");
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n") && reply.ends_with("\r\n\r\n/through\n"));
        // Only the newest MAX_CONNECTIONS stay open: the first idle client has been closed.
        let oldest = &mut idle[0];
        oldest
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        assert_eq!(
            oldest.read(&mut [0u8; 16]).unwrap(),
            0,
            "closed by the server"
        );
        let big = [b"GET /x HTTP/1.1\r\nX: ".as_slice(), &[b'a'; MAX_HEAD]].concat();
        assert!(get(&addr, &big).starts_with("HTTP/1.1 431 "));
        let head = get(&addr, b"HEAD /h HTTP/1.1\r\n\r\n");
        assert!(
            head.ends_with("Content-Length: 3\r\nConnection: close\r\n\r\n"),
            "{head}"
        );
        server.stop();
    }

    #[test]
    fn sparkline_scales_to_the_peak() {
        let svg = sparkline(&[0, 5, 10]);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("polyline"));
        assert_eq!(escape("<a&b>"), "&lt;a&amp;b&gt;");
    }
}
