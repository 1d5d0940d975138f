//! Real `stagehand run` processes against a simulated farm: spawned with a generated config
//! file, observed over their HTTP endpoints, stopped with SIGTERM, killed, paused. Used by the
//! benchmarks and the multi-instance tests.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::SimError;
use crate::config::Config;

/// One running stagehand process.
pub struct Instance {
    child: Child,
    /// Its HTTP address.
    pub address: String,
    /// Its instance name.
    pub name: String,
    config_path: PathBuf,
}

fn free_port() -> Result<u16, SimError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(SimError::Io)?;
    Ok(l.local_addr().map_err(SimError::Io)?.port())
}

/// GET over loopback: (status, body).
pub fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    let mut stream =
        TcpStream::connect_timeout(&address.parse().ok()?, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((code, body))
}

/// Sums the samples of a metric (every label set) in Prometheus text.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        // The name must end there: a space before the value, or the labels' brace.
        .filter(|l| {
            l.starts_with(name)
                && l.as_bytes()
                    .get(name.len())
                    .is_some_and(|b| b" {".contains(b))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Cumulative bucket counts of histogram `name` in a Prometheus text exposition, as
/// (upper bound, count) in bound order; `+Inf` is `f64::INFINITY`. Add several instances'
/// buckets up with [`quantile_bound`].
pub fn histogram_buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut out: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The smallest bucket bound under which at least share `q` of the observations fall, over
/// the buckets of several expositions added up (`None`: no observation).
pub fn quantile_bound(buckets: &[Vec<(f64, f64)>], q: f64) -> Option<f64> {
    let mut bounds: Vec<f64> = buckets.iter().flatten().map(|b| b.0).collect();
    bounds.sort_by(f64::total_cmp);
    bounds.dedup();
    let count_at = |le: f64| -> f64 {
        buckets
            .iter()
            .filter_map(|bs| bs.iter().find(|b| b.0 == le).map(|b| b.1))
            .sum()
    };
    let total = count_at(f64::INFINITY);
    if total <= 0.0 {
        return None;
    }
    bounds.into_iter().find(|&le| count_at(le) >= q * total)
}

impl Instance {
    /// Writes `config` (with a free HTTP port and the name `name`) and starts `binary run`.
    pub fn spawn(binary: &Path, config: &Config, name: &str) -> Result<Instance, SimError> {
        let mut config = config.clone();
        let port = free_port()?;
        config.http.listen = format!("127.0.0.1:{port}");
        config.cluster.instance_name = name.to_owned();
        let text = toml::to_string(&config).map_err(|e| SimError::Other(e.to_string()))?;
        let config_path = std::env::temp_dir().join(format!(
            "stagehand-{}-{name}-{port}.toml",
            std::process::id()
        ));
        std::fs::write(&config_path, text).map_err(SimError::Io)?;
        let child = Command::new(binary)
            .args(["run", "--config"])
            .arg(&config_path)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .map_err(SimError::Io)?;
        Ok(Instance {
            child,
            address: format!("127.0.0.1:{port}"),
            name: name.to_owned(),
            config_path,
        })
    }

    /// The configuration file it runs with (rewrite it and send SIGHUP to reload).
    pub(crate) fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// True while the process has not exited.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `/readyz` answers 200 (or `limit` passes).
    pub fn wait_ready(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if http_get(&self.address, "/readyz")
                .map(|(c, _)| c == 200)
                .unwrap_or(false)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The instance's `/metrics` text (empty when unreachable).
    pub fn metrics(&self) -> String {
        http_get(&self.address, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// Peak resident memory so far, MiB.
    pub(crate) fn peak_rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            })
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the pid of our own, not yet reaped, child.
        unsafe { libc::kill(self.pid() as i32, signal) };
    }

    /// SIGTERM, then waits up to `grace` for the exit status (SIGKILL after that).
    pub fn stop(mut self, grace: Duration) -> Option<i32> {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    /// SIGKILL: the process dies without releasing anything.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.config_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_summed_buckets() {
        let a = "# HELP x\nx_bucket{le=\"0.01\"} 50\nx_bucket{le=\"0.05\"} 98\nx_bucket{le=\"+Inf\"} 100\nx_sum 1\n";
        let b = "x_bucket{le=\"0.01\"} 0\nx_bucket{le=\"0.05\"} 0\nx_bucket{le=\"+Inf\"} 100\n";
        let (a, b) = (histogram_buckets(a, "x"), histogram_buckets(b, "x"));
        assert_eq!(a, [(0.01, 50.0), (0.05, 98.0), (f64::INFINITY, 100.0)]);
        assert_eq!(quantile_bound(std::slice::from_ref(&a), 0.5), Some(0.01));
        assert_eq!(
            quantile_bound(std::slice::from_ref(&a), 0.99),
            Some(f64::INFINITY)
        );
        // Together: 200 observations, 50 under 10 ms, 98 under 50 ms.
        assert_eq!(quantile_bound(&[a.clone(), b.clone()], 0.25), Some(0.01));
        assert_eq!(quantile_bound(&[a, b], 0.49), Some(0.05));
        assert_eq!(quantile_bound(&[], 0.5), None);
    }
}
