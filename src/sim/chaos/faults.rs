//! The faults and their seeded schedule: RQD refusing, timing out after it started the frame
//! (with and without refusing kills), starting launches only after the client's deadline
//! (they waited in its queue), refusing kills, answering slowly; stagehand's database
//! connections terminated (at random, and in the middle of a COMMIT); PostgreSQL restarted;
//! an instance killed with SIGKILL (and replaced), frozen with SIGSTOP (then SIGCONT),
//! sent SIGHUP with a broken and with a valid configuration file.
//!
//! The schedule is drawn from the seed up front — rounds of every kind once, each round in
//! a seeded order, until the window is full — so a seed
//! replays the same faults in the same order with the same parameters; what they hit
//! depends on timing.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use grpcio::RpcStatusCode;
use postgres::Client;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};

use crate::{
    config::Config,
    sim::{
        SimError,
        fake_rqd::{Behaviour, RqdHandle},
        instances::Instance,
        pg::PgCluster,
    },
};

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// RQD refuses every launch for a while.
    RqdRefuse,
    /// RQD starts some launches but answers after the client's deadline.
    RqdTimeout,
    /// The same, while RQD also refuses kills (the compensation's kill fails).
    RqdTimeoutKillsRefused,
    /// RQD holds every launch in its queue past the client's deadline, then starts it: the
    /// kill after the timeout finds nothing (and answers OK) before the frame starts.
    RqdQueued,
    /// RQD refuses kills.
    KillsRefused,
    /// RQD answers every launch late, within the deadline.
    RqdSlow,
    /// `pg_terminate_backend` of one of stagehand's connections.
    TerminateBackend,
    /// `pg_terminate_backend` of a stagehand connection while it runs COMMIT.
    TerminateCommit,
    /// PostgreSQL stopped (immediate) and started again.
    PgRestart,
    /// `kill -9` of an instance, then a replacement started.
    Kill9,
    /// SIGSTOP of an instance, SIGCONT later.
    Pause,
    /// SIGHUP with a broken configuration file (then the file restored).
    SighupBroken,
    /// SIGHUP with a valid configuration file that changes a hot key.
    SighupValid,
}

impl Fault {
    /// Every kind.
    pub const ALL: [Fault; 13] = [
        Fault::RqdRefuse,
        Fault::RqdTimeout,
        Fault::RqdTimeoutKillsRefused,
        Fault::RqdQueued,
        Fault::KillsRefused,
        Fault::RqdSlow,
        Fault::TerminateBackend,
        Fault::TerminateCommit,
        Fault::PgRestart,
        Fault::Kill9,
        Fault::Pause,
        Fault::SighupBroken,
        Fault::SighupValid,
    ];

    /// Its name in the report.
    pub fn label(self) -> &'static str {
        match self {
            Fault::RqdRefuse => "rqd refuses launches",
            Fault::RqdTimeout => "rqd times out after starting",
            Fault::RqdTimeoutKillsRefused => "rqd times out after starting, kills refused",
            Fault::RqdQueued => "rqd starts launches after the deadline",
            Fault::KillsRefused => "rqd refuses kills",
            Fault::RqdSlow => "rqd slow",
            Fault::TerminateBackend => "pg_terminate_backend",
            Fault::TerminateCommit => "pg_terminate_backend during COMMIT",
            Fault::PgRestart => "postgresql restart",
            Fault::Kill9 => "kill -9 + replacement",
            Fault::Pause => "SIGSTOP/SIGCONT",
            Fault::SighupBroken => "SIGHUP broken config",
            Fault::SighupValid => "SIGHUP valid config",
        }
    }
}

/// One scheduled fault: when (from the start of the window), what, for how long.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Planned {
    pub(crate) at: Duration,
    pub(crate) fault: Fault,
    pub(crate) lasting: Duration,
}

/// The schedule for `window`, drawn from `seed`: rounds of every kind once, each round in
/// its own seeded order, until the window is full — so every kind is injected as often as
/// any other (a 10-minute run holds about 30 rounds), and at least once however short the
/// window.
pub(crate) fn schedule(seed: u64, window: Duration) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xFA17_5EED);
    let mut out = Vec::new();
    let mut at = Duration::from_millis(rng.random_range(300..1_000));
    let mut round: Vec<Fault> = Vec::new();
    while !round.is_empty() || out.is_empty() || at < window {
        if round.is_empty() {
            round = Fault::ALL.to_vec();
            round.shuffle(&mut rng);
        }
        let fault = round.pop().unwrap_or(Fault::RqdSlow);
        let lasting = match fault {
            // Sometimes longer than the lease (3 s), so the lease moves while it is frozen.
            Fault::Pause => Duration::from_millis(rng.random_range(1_000..4_500)),
            Fault::PgRestart => Duration::from_millis(rng.random_range(300..1_500)),
            _ => Duration::from_millis(rng.random_range(400..1_600)),
        };
        out.push(Planned { at, fault, lasting });
        // Roughly: the fault, its own overhead, and a gap.
        at += lasting + Duration::from_millis(rng.random_range(200..900));
    }
    out
}

/// Applies faults to a running soak.
pub(crate) struct Injector<'a> {
    pub(crate) cluster: &'a mut PgCluster,
    pub(crate) rqd: &'a RqdHandle,
    pub(crate) instances: &'a mut Vec<Instance>,
    pub(crate) binary: PathBuf,
    pub(crate) config: Config,
    pub(crate) url: String,
    pub(crate) rng: StdRng,
    /// Faults injected, by kind.
    pub(crate) injected: BTreeMap<&'static str, u64>,
    /// What the faults hit (or missed).
    pub(crate) notes: BTreeMap<String, u64>,
    pub(crate) replacements: usize,
    /// (seconds from `epoch`, fault, seconds it lasted) of every fault applied.
    pub(crate) timeline: Vec<(f64, &'static str, f64)>,
    pub(crate) epoch: Instant,
    client: Option<Client>,
}

impl<'a> Injector<'a> {
    pub(crate) fn new(
        cluster: &'a mut PgCluster,
        rqd: &'a RqdHandle,
        instances: &'a mut Vec<Instance>,
        binary: PathBuf,
        config: Config,
        seed: u64,
    ) -> Injector<'a> {
        let url = cluster.url("stagehand");
        Injector {
            cluster,
            rqd,
            instances,
            binary,
            config,
            url,
            rng: StdRng::seed_from_u64(seed ^ 0x1A7E_C7ED),
            injected: BTreeMap::new(),
            notes: BTreeMap::new(),
            replacements: 0,
            timeline: Vec::new(),
            epoch: Instant::now(),
            client: None,
        }
    }

    fn note(&mut self, what: impl Into<String>) {
        *self.notes.entry(what.into()).or_default() += 1;
    }

    /// Runs the schedule from now; returns when its last fault is over.
    pub(crate) fn run(&mut self, plan: &[Planned]) {
        let start = Instant::now();
        for p in plan {
            std::thread::sleep((start + p.at).saturating_duration_since(Instant::now()));
            *self.injected.entry(p.fault.label()).or_default() += 1;
            let at = self.epoch.elapsed();
            if let Err(e) = self.apply(p.fault, p.lasting) {
                self.note(format!("{}: {e}", p.fault.label()));
            }
            let took = self.epoch.elapsed() - at;
            self.timeline
                .push((at.as_secs_f64(), p.fault.label(), took.as_secs_f64()));
        }
    }

    fn apply(&mut self, fault: Fault, lasting: Duration) -> Result<(), SimError> {
        let timeout = self.config.rqd.timeout;
        match fault {
            Fault::RqdRefuse => {
                let codes = [
                    RpcStatusCode::UNAVAILABLE,
                    RpcStatusCode::INTERNAL,
                    RpcStatusCode::RESOURCE_EXHAUSTED,
                ];
                let code = codes[self.rng.random_range(0..codes.len())];
                self.behave(Behaviour::Refuse(code), false, lasting);
            }
            Fault::RqdTimeout | Fault::RqdTimeoutKillsRefused => {
                let slow = Behaviour::StartSlowly {
                    per_mille: 500,
                    delay: timeout * 3,
                };
                self.behave(slow, fault == Fault::RqdTimeoutKillsRefused, lasting);
            }
            Fault::RqdQueued => {
                // Past the first kill (at the deadline), before the second (two timeouts later).
                let late = Behaviour::StartLate(timeout + timeout / 2);
                self.behave(late, false, lasting);
            }
            Fault::KillsRefused => self.behave(Behaviour::Accept, true, lasting),
            Fault::RqdSlow => {
                let slow = Behaviour::StartSlowly {
                    per_mille: 1000,
                    delay: timeout / 3,
                };
                self.behave(slow, false, lasting);
            }
            Fault::TerminateBackend => self.terminate(false)?,
            Fault::TerminateCommit => self.terminate(true)?,
            Fault::PgRestart => {
                self.client = None;
                self.cluster.stop()?;
                std::thread::sleep(lasting);
                self.cluster.restart()?;
            }
            Fault::Kill9 => self.kill9()?,
            Fault::Pause => {
                let i = self.rng.random_range(0..self.instances.len());
                self.instances[i].signal(libc::SIGSTOP);
                std::thread::sleep(lasting);
                self.instances[i].signal(libc::SIGCONT);
            }
            Fault::SighupBroken | Fault::SighupValid => {
                self.sighup(fault == Fault::SighupValid)?;
                std::thread::sleep(lasting);
            }
        }
        Ok(())
    }

    /// RQD answers with `behaviour` (and refuses kills when asked) for `lasting`.
    fn behave(&mut self, behaviour: Behaviour, refuse_kills: bool, lasting: Duration) {
        self.rqd.set_behaviour(behaviour);
        self.rqd.set_refuse_kills(refuse_kills);
        std::thread::sleep(lasting);
        self.rqd.set_behaviour(Behaviour::Accept);
        self.rqd.set_refuse_kills(false);
    }

    fn admin(&mut self) -> Result<&mut Client, SimError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(Client::connect(&self.url, postgres::NoTls)?);
        }
        self.client
            .as_mut()
            .ok_or_else(|| SimError::Other("no admin connection".into()))
    }

    /// Terminates a stagehand backend: one running COMMIT when `commit` (polling for up to
    /// two seconds, then any busy one), else any.
    fn terminate(&mut self, commit: bool) -> Result<(), SimError> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let c = self.admin()?;
        let mut hit = None;
        while commit && hit.is_none() && Instant::now() < deadline {
            hit = c
                .query_opt(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                      WHERE usename = 'stagehand' AND state = 'active' AND query ILIKE 'commit%' LIMIT 1",
                    &[],
                )?
                .map(|_| "terminated a stagehand backend during COMMIT");
        }
        if hit.is_none() {
            hit = c
                .query_opt(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                      WHERE usename = 'stagehand' AND pid <> pg_backend_pid()
                      ORDER BY state = 'idle', random() LIMIT 1",
                    &[],
                )?
                .map(|_| {
                    if commit {
                        "no COMMIT caught: terminated another stagehand backend"
                    } else {
                        "terminated a stagehand backend"
                    }
                });
        }
        self.note(hit.unwrap_or("no stagehand backend to terminate"));
        Ok(())
    }

    /// `kill -9` of a random instance and a replacement under a new name.
    fn kill9(&mut self) -> Result<(), SimError> {
        let i = self.rng.random_range(0..self.instances.len());
        let victim = self.instances.remove(i);
        victim.kill9();
        self.replace()
    }

    /// Starts one more instance (a replacement).
    pub(crate) fn replace(&mut self) -> Result<(), SimError> {
        self.replacements += 1;
        let name = format!("chaos-r{}", self.replacements);
        let instance = Instance::spawn(&self.binary, &self.config, &name)?;
        // Until it has its signal handlers a SIGHUP would end it: let it come up first.
        if !instance.wait_ready(Duration::from_secs(20)) {
            self.note("a replacement was not ready within 20 s");
        }
        self.instances.push(instance);
        Ok(())
    }

    /// Rewrites a random instance's configuration (broken, or valid with a hot key changed),
    /// sends SIGHUP and, for a broken file, restores the file afterwards.
    fn sighup(&mut self, valid: bool) -> Result<(), SimError> {
        let i = self.rng.random_range(0..self.instances.len());
        let path = self.instances[i].config_path().to_path_buf();
        let text = std::fs::read_to_string(&path).map_err(SimError::Io)?;
        if valid {
            let mut config: Config =
                toml::from_str(&text).map_err(|e| SimError::Other(e.to_string()))?;
            config.scheduler.saturated_sleep =
                Duration::from_millis(self.rng.random_range(300..1_500));
            let new = toml::to_string(&config).map_err(|e| SimError::Other(e.to_string()))?;
            std::fs::write(&path, new).map_err(SimError::Io)?;
            self.instances[i].signal(libc::SIGHUP);
        } else {
            std::fs::write(&path, "[scheduler\nworker_threads = \"many\"\n")
                .map_err(SimError::Io)?;
            self.instances[i].signal(libc::SIGHUP);
            // Let it read the broken file before the good one is back.
            std::thread::sleep(Duration::from_millis(300));
            std::fs::write(&path, text).map_err(SimError::Io)?;
        }
        Ok(())
    }

    /// After the faults: RQD accepts and kills again, every instance runs (SIGCONT), the
    /// dead ones replaced (each a violation: nothing should make stagehand exit).
    pub(crate) fn recover(&mut self) -> Vec<String> {
        self.rqd.set_behaviour(Behaviour::Accept);
        self.rqd.set_refuse_kills(false);
        let mut exited = Vec::new();
        let mut i = 0;
        while i < self.instances.len() {
            self.instances[i].signal(libc::SIGCONT);
            if self.instances[i].alive() {
                i += 1;
            } else {
                exited.push(self.instances.remove(i).name.clone());
            }
        }
        for _ in 0..exited.len() {
            if let Err(e) = self.replace() {
                self.note(format!("replacement failed: {e}"));
            }
        }
        exited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_comes_as_often_as_any_other() {
        let plan = schedule(7, Duration::from_secs(600));
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &plan {
            *counts.entry(p.fault.label()).or_default() += 1;
        }
        assert_eq!(counts.len(), Fault::ALL.len());
        let (min, max) = (counts.values().min(), counts.values().max());
        assert_eq!(min, max, "{counts:?}");
        assert!(*min.unwrap() >= 20, "{counts:?}");
        assert_eq!(
            schedule(7, Duration::from_secs(600)).len(),
            plan.len(),
            "seeded"
        );
    }

    #[test]
    fn a_short_window_still_gets_every_kind_once() {
        let plan = schedule(1, Duration::from_secs(1));
        assert_eq!(plan.len(), Fault::ALL.len());
    }
}
