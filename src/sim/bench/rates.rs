//! What a dry run's booking rate and PostgreSQL CPU are, measured the same way for `drain`
//! and the `ceiling`, so their ratio compares like with like.
//!
//! Rates come from `proc.ts_booked` (the booking transaction's start), once over the whole
//! window as OpenCue's stress suite measures it, `(n − 1) / (last − first)`, and once over
//! the first 99 % of bookings, which a tail of a few late frames cannot drag down. CPU comes
//! from `/proc`: the postmaster's own and its reaped children's times plus its live
//! children's, so backends that exit during the run still count.

use std::{collections::HashMap, path::Path};

/// Booking rates over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    /// Bookings (procs) counted.
    pub booked: usize,
    /// Seconds from the first booking to the last.
    pub window_secs: f64,
    /// The stress suite's formula, `(n − 1) / (last − first)`.
    pub per_sec: f64,
    /// Frames/s from the first booking to the one at 99 % of them.
    pub first99_per_sec: f64,
}

impl Rates {
    /// The rates of bookings made at `times` (seconds, sorted ascending).
    pub(crate) fn from_times(times: &[f64]) -> Rates {
        let n = times.len();
        if n < 2 {
            return Rates {
                booked: n,
                ..Rates::default()
            };
        }
        let rate = |k: usize| {
            let secs = times[k - 1] - times[0];
            if secs > 0.0 {
                (k - 1) as f64 / secs
            } else {
                0.0
            }
        };
        // The booking at 99 %: rank ⌈0.99 n⌉, at least the second so there is a window.
        let k99 = ((n as f64 * 0.99).ceil() as usize).clamp(2, n);
        Rates {
            booked: n,
            window_secs: times[n - 1] - times[0],
            per_sec: rate(n),
            first99_per_sec: rate(k99),
        }
    }
}

/// The rates of every proc in the database (a dry run keeps them all).
pub(crate) fn proc_rates(client: &mut postgres::Client) -> Result<Rates, postgres::Error> {
    // Seconds since the first booking, not since the epoch: a float8 of epoch seconds keeps
    // barely a microsecond.
    let times: Vec<f64> = client
        .query(
            "SELECT extract(epoch FROM ts_booked - min(ts_booked) OVER ())::float8 FROM proc ORDER BY ts_booked",
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(Rates::from_times(&times))
}

/// CPU ticks and page faults of a PostgreSQL cluster's processes at one moment.
#[derive(Clone, Debug, Default)]
pub(crate) struct PgCpu {
    /// The postmaster's own use and that of its children it has reaped.
    reaped: Use,
    /// The use of each live child (backends, background workers) by pid.
    live: HashMap<u32, Use>,
}

/// What a process used: CPU ticks (user + system), of which in the kernel, and minor page
/// faults (a backend's first touch of each shared-buffer page is one).
#[derive(Clone, Copy, Debug, Default)]
struct Use {
    ticks: u64,
    sys_ticks: u64,
    faults: u64,
}

impl Use {
    fn add(self, o: Use) -> Use {
        Use {
            ticks: self.ticks + o.ticks,
            sys_ticks: self.sys_ticks + o.sys_ticks,
            faults: self.faults + o.faults,
        }
    }
}

/// What a cluster used between two [`PgCpu`] readings.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct PgUse {
    /// CPU seconds, user and system.
    pub(crate) secs: f64,
    /// Of which in the kernel.
    pub(crate) sys_secs: f64,
    /// Minor page faults.
    pub(crate) faults: u64,
}

impl PgCpu {
    /// Reads the cluster whose data directory is `data` (`None` without `/proc` or a
    /// postmaster).
    pub(crate) fn read(data: &Path) -> Option<PgCpu> {
        let pid_file = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
        let postmaster: u32 = pid_file.lines().next()?.trim().parse().ok()?;
        let own = stat_times(postmaster)?;
        let mut cpu = PgCpu {
            reaped: Use {
                ticks: own.utime + own.stime + own.cutime + own.cstime,
                sys_ticks: own.stime + own.cstime,
                faults: own.minflt + own.cminflt,
            },
            live: HashMap::new(),
        };
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some(t) = stat_times(pid).filter(|t| t.ppid == postmaster) {
                let used = Use {
                    ticks: t.utime + t.stime,
                    sys_ticks: t.stime,
                    faults: t.minflt,
                };
                cpu.live.insert(pid, used);
            }
        }
        Some(cpu)
    }

    /// CPU seconds the cluster used from `self` to `later`, less what the backends
    /// `exclude` (the harness's own connections, alive at both readings) used.
    pub(crate) fn secs_until(&self, later: &PgCpu, exclude: &[u32]) -> f64 {
        self.use_until(later, exclude).secs
    }

    /// What the cluster used from `self` to `later`, less the backends `exclude`.
    pub(crate) fn use_until(&self, later: &PgCpu, exclude: &[u32]) -> PgUse {
        let total = |c: &PgCpu| {
            let all = c.live.values().fold(c.reaped, |a, u| a.add(*u));
            let own = exclude
                .iter()
                .filter_map(|p| c.live.get(p))
                .fold(Use::default(), |a, u| a.add(*u));
            Use {
                ticks: all.ticks - own.ticks,
                sys_ticks: all.sys_ticks - own.sys_ticks,
                faults: all.faults - own.faults,
            }
        };
        let (a, b) = (total(self), total(later));
        PgUse {
            secs: ticks_to_secs(b.ticks.saturating_sub(a.ticks)),
            sys_secs: ticks_to_secs(b.sys_ticks.saturating_sub(a.sys_ticks)),
            faults: b.faults.saturating_sub(a.faults),
        }
    }
}

/// CPU seconds (user + system, every thread) the live process `pid` has used so far
/// (`None`: gone, or no `/proc`).
pub(crate) fn process_cpu_secs(pid: u32) -> Option<f64> {
    stat_times(pid).map(|t| ticks_to_secs(t.utime + t.stime))
}

/// Clock ticks as seconds.
fn ticks_to_secs(ticks: u64) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / if hz > 0 { hz as f64 } else { 100.0 }
}

/// The fields of `/proc/<pid>/stat` the CPU reading needs.
struct StatTimes {
    ppid: u32,
    minflt: u64,
    cminflt: u64,
    utime: u64,
    stime: u64,
    cutime: u64,
    cstime: u64,
}

/// Reads `/proc/<pid>/stat` (`None`: gone, or unreadable).
fn stat_times(pid: u32) -> Option<StatTimes> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// Parses a `/proc/<pid>/stat` line. The command name may hold spaces and parentheses, so
/// fields are counted from the last `)`: state is field 3, ppid 4, minflt 10, cminflt 11,
/// utime 14 … cstime 17.
fn parse_stat(stat: &str) -> Option<StatTimes> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let at = |field: usize| -> Option<u64> { fields.get(field - 3)?.parse().ok() };
    Some(StatTimes {
        ppid: at(4)? as u32,
        minflt: at(10)?,
        cminflt: at(11)?,
        utime: at(14)?,
        stime: at(15)?,
        cutime: at(16)?,
        cstime: at(17)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_tail_lowers_the_stress_formula_not_the_first_99_percent() {
        // 100 bookings: 99 in the first second, the last one 9 s later.
        let mut times: Vec<f64> = (0..99).map(|i| f64::from(i) / 98.0).collect();
        times.push(10.0);
        let r = Rates::from_times(&times);
        assert_eq!(r.booked, 100);
        assert!((r.window_secs - 10.0).abs() < 1e-9);
        assert!((r.per_sec - 9.9).abs() < 1e-9, "{r:?}");
        assert!((r.first99_per_sec - 98.0).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn too_few_bookings_have_no_rate() {
        assert_eq!(Rates::from_times(&[]).per_sec, 0.0);
        let one = Rates::from_times(&[3.0]);
        assert_eq!((one.booked, one.first99_per_sec), (1, 0.0));
        assert_eq!(Rates::from_times(&[1.0, 1.0]).per_sec, 0.0);
    }

    #[test]
    fn stat_fields_count_from_the_last_parenthesis() {
        let line = "4242 (postgres: a (b) c) S 17 4242 4242 0 -1 4194560 1 2 3 4 \
                    150 25 7 8 20 0 1 0 100 0 0";
        let t = parse_stat(line).expect("parses");
        assert_eq!(
            (
                t.ppid, t.minflt, t.cminflt, t.utime, t.stime, t.cutime, t.cstime
            ),
            (17, 1, 2, 150, 25, 7, 8)
        );
        assert!(parse_stat("garbage").is_none());
    }

    /// A process's use: `ticks` of CPU, a tenth of them in the kernel, twice as many faults.
    fn used(ticks: u64) -> Use {
        Use {
            ticks,
            sys_ticks: ticks / 10,
            faults: ticks * 2,
        }
    }

    #[test]
    fn the_excluded_backend_does_not_count() {
        let before = PgCpu {
            reaped: used(10),
            live: HashMap::from([(1, used(5)), (2, used(100))]),
        };
        let after = PgCpu {
            reaped: used(30),
            live: HashMap::from([(1, used(25)), (2, used(900))]),
        };
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert!((before.secs_until(&after, &[2]) - 40.0 / hz).abs() < 1e-9);
        assert!((before.secs_until(&after, &[]) - 840.0 / hz).abs() < 1e-9);
        assert!((before.secs_until(&after, &[1, 2]) - 20.0 / hz).abs() < 1e-9);
        let all = before.use_until(&after, &[]);
        assert_eq!(all.faults, 1680);
        assert!((all.sys_secs - 84.0 / hz).abs() < 1e-9);
    }
}
