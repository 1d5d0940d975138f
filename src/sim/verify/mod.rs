//! Maestro's verification battery (`sandbox/maestro-sim`, `simulate.py --verify`), run in
//! stagehand's own simulator: each scenario seeds a farm, runs stagehand against it with frames
//! completing through the simulator's Cuebot-like completion path, and returns a [`Verdict`]
//! — PASS or FAIL on Maestro's criterion, with the figure it was judged on.
//!
//! `stagehand bench --workload verify` runs the whole [`battery`] at full scale and prints one
//! line per scenario; `--scale` below 1 runs the small shapes the tests use, and
//! `--scenario NAME` runs one. Every scenario also ends with the accounting audit: a scenario
//! whose run leaves violations fails whatever its figure says.

pub mod failover;
pub mod folder;
pub mod limit;
pub mod locality;
pub mod priority;
pub mod reservations;
pub mod starving;
pub mod tagmax;
pub mod tags_gpu;
pub mod utilisation;

use std::time::{Duration, Instant};

use super::{SimError, scenario::Run, seed::FarmSpec};

mod depends;
mod oom;
mod progress;

pub use depends::depends;
pub use oom::oom;

pub mod license;

/// What one scenario of the battery concluded.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// The scenario's name as Maestro's battery spells it (`PRIORITY`, `LIMIT`, …).
    pub name: &'static str,
    /// Whether the criterion held and the audit was clean.
    pub pass: bool,
    /// The figure the criterion was judged on, in words (`ρ = 0.96 over 10 classes`).
    pub figure: String,
    /// Maestro's published figure for the same scenario, where one exists.
    pub maestro: Option<&'static str>,
    /// Accounting-audit violations (any makes the scenario fail).
    pub violations: Vec<String>,
}

impl Verdict {
    /// A verdict that passes when `holds` and `violations` is empty.
    pub fn judge(
        name: &'static str,
        holds: bool,
        figure: String,
        maestro: Option<&'static str>,
        violations: Vec<String>,
    ) -> Verdict {
        Verdict {
            name,
            pass: holds && violations.is_empty(),
            figure,
            maestro,
            violations,
        }
    }
}

/// One scenario: runs at full scale when `full`, else at the tests' small scale.
pub type Scenario = fn(full: bool) -> Result<Verdict, SimError>;

/// The battery in Maestro's order. Each scenario module adds its line here.
pub fn battery() -> Vec<(&'static str, Scenario)> {
    vec![
        ("PRIORITY", priority::verify),
        ("PRIORITY_STARVING", starving::verify),
        ("RESERVATIONS", reservations::verify),
        ("LIMIT", limit::verify),
        ("LICENSE", license::license as Scenario),
        ("FOLDER", folder::verify),
        ("LOCALITY", locality::verify),
        ("DEPENDS", depends as Scenario),
        ("OOM", oom as Scenario),
        ("FAILOVER", failover::failover),
        ("TAGS_GPU", tags_gpu::verify),
        ("TAGMAX", tagmax::tagmax),
        ("UTILISATION", utilisation::utilisation),
    ]
}

/// Runs the battery (or only the scenario named `only`, case-insensitive) and prints one
/// line per scenario as it ends; a scenario that cannot run at all is a FAIL with its error.
/// Returns the verdicts.
pub fn run_battery(full: bool, only: Option<&str>) -> Result<Vec<Verdict>, SimError> {
    let scenarios: Vec<_> = battery()
        .into_iter()
        .filter(|(name, _)| only.is_none_or(|o| o.eq_ignore_ascii_case(name)))
        .collect();
    if scenarios.is_empty() {
        let names: Vec<&str> = battery().iter().map(|(n, _)| *n).collect();
        return Err(SimError::Other(format!(
            "no scenario {:?} in the battery ({})",
            only.unwrap_or_default(),
            names.join(", ")
        )));
    }
    let mut verdicts = Vec::new();
    for (name, scenario) in scenarios {
        let started = Instant::now();
        let verdict = scenario(full).unwrap_or_else(|e| {
            Verdict::judge(name, false, format!("did not run: {e}"), None, Vec::new())
        });
        print_verdict(&verdict, started.elapsed());
        verdicts.push(verdict);
    }
    Ok(verdicts)
}

/// Prints a verdict as one line (and its audit violations beneath it).
pub fn print_verdict(v: &Verdict, took: Duration) {
    let maestro = v
        .maestro
        .map(|m| format!("  [Maestro: {m}]"))
        .unwrap_or_default();
    println!(
        "{:<4} {:<18} {}{maestro}  ({:.0}s)",
        if v.pass { "PASS" } else { "FAIL" },
        v.name,
        v.figure,
        took.as_secs_f64()
    );
    for violation in &v.violations {
        println!("     audit violation: {violation}");
    }
}

/// Spearman's rank correlation of `x` and `y`, ties ranked by their average rank (as
/// Maestro's watcher computes it); 1.0 for fewer than two points.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    if n < 2 {
        return 1.0;
    }
    let (rx, ry) = (ranks(&x[..n]), ranks(&y[..n]));
    let d2: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - b).powi(2)).sum();
    let n = n as f64;
    1.0 - 6.0 * d2 / (n * (n * n - 1.0))
}

/// The rank of each value of `v` (0-based), ties sharing their average rank.
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|a, b| v[*a].total_cmp(&v[*b]));
    let mut ranks = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        for k in &order[i..=j] {
            ranks[*k] = (i + j) as f64 / 2.0;
        }
        i = j + 1;
    }
    ranks
}

/// What sampling a capped count saw: its highest value, and how often it sat at the cap
/// (and within `near` of it) from the first sample that reached `cap - near` on.
#[derive(Clone, Debug, Default)]
pub struct CapWatch {
    /// Samples taken.
    pub samples: usize,
    /// The highest value of any sample.
    pub max: i64,
    /// Samples counted for the shares below (from the first at `cap - near` or above).
    pub saturated: usize,
    /// Of those, samples exactly at the cap.
    pub at_cap: usize,
    /// Of those, samples within `near` of the cap.
    pub near_cap: usize,
    /// Mean value over the counted samples.
    pub mean: f64,
}

impl CapWatch {
    /// Samples `sql` (one row, one bigint) every `every` for `window`.
    pub fn sample(
        run: &mut Run,
        sql: &str,
        cap: i64,
        near: i64,
        every: Duration,
        window: Duration,
    ) -> Result<CapWatch, SimError> {
        let started = Instant::now();
        let mut w = CapWatch::default();
        let mut sum = 0i64;
        while started.elapsed() < window {
            std::thread::sleep(every);
            let v: i64 = run.client.query_one(sql, &[])?.get(0);
            w.samples += 1;
            w.max = w.max.max(v);
            if w.saturated == 0 && v < cap - near {
                continue;
            }
            w.saturated += 1;
            sum += v;
            w.at_cap += usize::from(v == cap);
            w.near_cap += usize::from(v >= cap - near);
        }
        w.mean = sum as f64 / w.saturated.max(1) as f64;
        Ok(w)
    }

    /// Seeds `farm`, starts stagehand on it (scenario defaults) and samples `sql` every
    /// 50 ms for `window` against `cap`; returns what it saw and the audit's violations.
    pub fn run(
        farm: &FarmSpec,
        sql: &str,
        cap: i64,
        near: i64,
        window: Duration,
    ) -> Result<(CapWatch, Vec<String>), SimError> {
        let mut run = Run::start(farm, |_| Ok(()), |_| {})?;
        let watch = CapWatch::sample(&mut run, sql, cap, near, Duration::from_millis(50), window)?;
        Ok((watch, run.finish()?))
    }

    /// Share of the counted samples exactly at the cap.
    pub fn at_cap_share(&self) -> f64 {
        self.at_cap as f64 / self.saturated.max(1) as f64
    }

    /// Share of the counted samples within `near` of the cap.
    pub fn near_cap_share(&self) -> f64 {
        self.near_cap as f64 / self.saturated.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_ranks_ties_by_their_average() {
        let p: Vec<f64> = (1..=10).map(f64::from).collect();
        assert!((spearman(&p, &p) - 1.0).abs() < 1e-12);
        let reversed: Vec<f64> = p.iter().rev().copied().collect();
        assert!((spearman(&p, &reversed) + 1.0).abs() < 1e-12);
        // Strict priority: nine classes at zero, the top one with everything (Maestro's
        // watcher gives 0.636 for this).
        let mut strict = vec![0.0; 10];
        strict[9] = 500.0;
        assert!((spearman(&p, &strict) - 0.6364).abs() < 1e-3);
    }
}
