//! The license provider: one call (an HTTP GET, or running a script) and the parse of its
//! JSON answer into a [`Sample`].
//!
//! The HTTP client is a minimal HTTP/1.0 GET over `std::net::TcpStream` (no TLS, no
//! redirects, no chunked bodies: an HTTP/1.0 request gets none), enough for a license
//! bridge on the farm's network, with every step under the configured timeout.

use std::{
    io::{Read, Write},
    net::{TcpStream, ToSocketAddrs},
    process::{Command, Stdio},
    time::{Duration, Instant, UNIX_EPOCH},
};

use serde::Deserialize;

use super::LicenseError;
use crate::{
    config::LicenseProvider,
    db::licenses::{Pool, Sample},
};

/// The largest answer read (a provider answering more is broken).
const MAX_ANSWER: u64 = 16 << 20;

/// Asks `provider` for a sample; the answer's body.
pub fn fetch(provider: &LicenseProvider, timeout: Duration) -> Result<String, LicenseError> {
    match provider {
        LicenseProvider::Http(url) => http_get(url, timeout),
        LicenseProvider::Script(path) => run_script(path, timeout),
    }
}

/// `GET url` with HTTP/1.0; the body of a 200 answer.
fn http_get(url: &str, timeout: Duration) -> Result<String, LicenseError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| LicenseError::Answer(format!("not an http:// URL: {url}")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| LicenseError::Answer(format!("{authority} has no address")))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.take(MAX_ANSWER).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| LicenseError::Answer("no HTTP header end".into()))?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(LicenseError::Answer(format!("HTTP status {status:?}")));
    }
    Ok(body.to_owned())
}

/// Runs the executable at `path`; its standard output, if it exits 0 within `timeout`.
fn run_script(path: &str, timeout: Duration) -> Result<String, LicenseError> {
    let mut child = Command::new(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    // Read on a helper thread so a chatty script cannot block on a full pipe.
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| LicenseError::Answer("the provider script has no standard output".into()))?;
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&mut stdout).take(MAX_ANSWER).read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(LicenseError::Answer(format!(
                "{path} took longer than {}",
                humantime::format_duration(timeout)
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(LicenseError::Answer(format!("{path} exited with {status}")));
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[derive(Deserialize)]
struct Answer {
    queried_at: serde_json::Value,
    licenses: Vec<License>,
}

#[derive(Deserialize)]
struct License {
    name: String,
    total: i64,
    available: i64,
    #[serde(default)]
    host_based: bool,
    #[serde(default)]
    hosts: Option<Vec<HostSeats>>,
}

#[derive(Deserialize)]
struct HostSeats {
    host: String,
    #[serde(default = "one")]
    count: i64,
}

fn one() -> i64 {
    1
}

/// The hosts holding seats, one entry per seat of a floating license (a host holding two is
/// listed twice; at most `total` in all) and one per host of a host-based one.
fn seat_list(hosts: Vec<HostSeats>, host_based: bool, total: i64) -> Vec<String> {
    let mut out = Vec::new();
    for h in hosts.into_iter().filter(|h| h.count > 0) {
        let room = (total - out.len() as i64).max(1);
        let n = if host_based { 1 } else { h.count.min(room) };
        out.extend(std::iter::repeat_n(h.host, n as usize));
    }
    out
}

/// Parses a provider's answer: `{queried_at, licenses: [{name, total, available,
/// host_based, hosts: [{host, count}]}]}`, `queried_at` in seconds since the epoch or RFC
/// 3339. A license without `hosts` is counts-only; hosts with no seat are dropped.
pub fn parse(body: &str) -> Result<Sample, LicenseError> {
    let answer: Answer =
        serde_json::from_str(body).map_err(|e| LicenseError::Answer(e.to_string()))?;
    let queried_at = match &answer.queried_at {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => humantime::parse_rfc3339_weak(s)
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64()),
        _ => None,
    }
    .filter(|t| t.is_finite() && *t > 0.0)
    .ok_or_else(|| LicenseError::Answer(format!("bad queried_at {}", answer.queried_at)))?;
    let mut pools = Vec::with_capacity(answer.licenses.len());
    for l in answer.licenses {
        if l.name.is_empty() || l.name.contains(',') || l.total < 0 {
            return Err(LicenseError::Answer(format!(
                "bad license {:?} (total {})",
                l.name, l.total
            )));
        }
        pools.push(Pool {
            available: l.available.clamp(0, l.total),
            total: l.total,
            host_based: l.host_based,
            hosts: l.hosts.map(|hs| seat_list(hs, l.host_based, l.total)),
            name: l.name,
        });
    }
    Ok(Sample { queried_at, pools })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_with_and_without_hosts() {
        let s = parse(
            r#"{"queried_at": 1700000000.5, "licenses": [
                 {"name": "katana", "total": 4, "available": 1, "host_based": true,
                  "hosts": [{"host": "a", "count": 2}, {"host": "b", "count": 0}]},
                 {"name": "hengine", "total": 10, "available": 12}]}"#,
        )
        .unwrap();
        assert_eq!(s.queried_at, 1_700_000_000.5);
        assert_eq!(s.pools[0].hosts, Some(vec!["a".to_owned()]));
        assert!(!s.pools[1].host_based);
        assert_eq!(s.pools[1].hosts, None, "counts only");
        assert_eq!(s.pools[1].available, 10, "never above the total");
    }

    #[test]
    fn a_floating_license_lists_a_host_once_per_seat() {
        let s = parse(
            r#"{"queried_at": 1, "licenses": [
                 {"name": "nuke", "total": 4, "available": 1,
                  "hosts": [{"host": "a", "count": 2}, {"host": "b"}, {"host": "c", "count": 9}]}]}"#,
        )
        .unwrap();
        let hosts = s.pools[0].hosts.clone().unwrap();
        assert_eq!(hosts, ["a", "a", "b", "c"], "a count past the total is cut");
    }

    #[test]
    fn rfc3339_times_parse_and_garbage_is_refused() {
        let s = parse(r#"{"queried_at": "2026-01-01T00:00:00Z", "licenses": []}"#).unwrap();
        assert_eq!(s.queried_at, 1_767_225_600.0);
        assert!(parse(r#"{"queried_at": "soon", "licenses": []}"#).is_err());
        assert!(parse(r#"{"licenses": []}"#).is_err());
        assert!(
            parse(
                r#"{"queried_at": 1, "licenses": [{"name": "a,b", "total": 1, "available": 1}]}"#
            )
            .is_err()
        );
    }

    #[test]
    fn urls_that_are_not_http_are_refused() {
        let e = http_get("ftp://x/", Duration::from_millis(10)).unwrap_err();
        assert!(e.to_string().contains("http://"), "{e}");
    }
}
