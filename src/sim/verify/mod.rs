//! Maestro's verification battery (`sandbox/maestro-sim`, `simulate.py --verify`), run in
//! stagehand's own simulator: each scenario seeds a farm, runs stagehand against it with frames
//! completing through the simulator's Cuebot-like completion path, and returns a [`Verdict`]
//! — PASS or FAIL on Maestro's criterion, with the figure it was judged on.
//!
//! `stagehand bench --workload verify` runs the whole [`battery`] at full scale and prints one
//! line per scenario; `--scale` below 1 runs the small shapes the tests use, and
//! `--scenario NAME` runs one. Every scenario also ends with the accounting audit: a scenario
//! whose run leaves violations fails whatever its figure says.

use super::SimError;

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
    vec![("LICENSE", license::license as Scenario)]
}
