//! Scheduling-quality scenarios on a simulated farm, run in-process: each is a test at small
//! scale (`tests/it/quality.rs`) and `stagehand bench --workload <scenario>` at full scale.
//!
//! - [`wide`]: a whole-host frame submitted into a flood of one-core frames starts within a
//!   stated bound with reservations on, and not at all with them off.
//! - [`share`]: two shows with subscription sizes 2:1 on a saturated allocation converge to a
//!   2:1 split of the cores.
//! - [`stream`]: a priority-10 job beside a stream of priority-90 work keeps booking under
//!   `balanced` (and gets nothing under strict `priority`).
//! - [`gpu`]: a flood of CPU frames leaves room on the GPU hosts for a GPU job that arrives
//!   later.
//!
//! Every run ends with the accounting audit; a scenario that leaves violations fails.

pub mod gpu;
pub mod share;
pub mod stream;
pub mod wide;

use std::time::{Duration, Instant};

use super::{
    SimError,
    fake_rqd::RUNTIME_ENV,
    farm::SimFarm,
    pg::PgOptions,
    seed::{FarmSpec, JobSpec, LayerSpec},
};
use crate::{config::Config, model::CORE, service::Service};

/// A job of show `show` with `priority` and no caps.
pub fn job(show: usize, name: &str, priority: i32, layers: Vec<LayerSpec>) -> JobSpec {
    JobSpec {
        show,
        name: name.into(),
        priority,
        max_cores: 0,
        min_cores: 0,
        max_gpus: 0,
        os: String::new(),
        env: Vec::new(),
        layers,
    }
}

/// A one-core, 1 GB layer of `frames` frames that run `runtime` each (±25 % jitter).
pub fn layer(name: &str, frames: usize, runtime: Duration) -> LayerSpec {
    let mut l = LayerSpec::simple(name, &format!("1-{}", frames.max(1)), "general");
    l.env = vec![(RUNTIME_ENV.into(), runtime.as_millis().to_string())];
    l.runtime_secs = runtime.as_secs_f64();
    l
}

/// Frames that keep `cores` one-core slots busy for `secs` with frames of `runtime`, with
/// half again as many for margin.
pub fn flood_size(cores: f64, secs: f64, runtime: Duration) -> usize {
    (cores * secs / runtime.as_secs_f64() * 1.5).ceil() as usize
}

/// A running scenario: the farm, a client of its database and the service booking it.
pub struct Run {
    /// The simulated farm (dropped last).
    pub farm: SimFarm,
    /// A client of the farm's database.
    pub client: postgres::Client,
    service: Option<Service>,
}

impl Run {
    /// Seeds `spec` with a fake RQD fleet completing frames, lets `before` hold work back
    /// (pause jobs), and starts stagehand with the scenario defaults changed by `tweak`.
    pub fn start(
        spec: &FarmSpec,
        before: impl FnOnce(&mut postgres::Client) -> Result<(), SimError>,
        tweak: impl FnOnce(&mut Config),
    ) -> Result<Run, SimError> {
        let farm = SimFarm::start(spec, &PgOptions::default(), true, 0)?;
        let mut client = postgres::Client::connect(&farm.url, postgres::NoTls)?;
        before(&mut client)?;
        let mut config = farm.config(false);
        config.hosts.refresh_interval = Duration::from_millis(250);
        config.scheduler.saturated_sleep = Duration::from_millis(250);
        config.accounting.recompute_interval = Duration::from_millis(500);
        tweak(&mut config);
        let service = Service::start(config)?;
        Ok(Run {
            farm,
            client,
            service: Some(service),
        })
    }

    /// The service booking the farm.
    pub fn service(&self) -> &Service {
        self.service
            .as_ref()
            .expect("the service runs until the scenario finishes")
    }

    /// Centicores booked on the farm now.
    pub fn busy(&mut self) -> Result<i64, SimError> {
        Ok(self
            .client
            .query_one(
                "SELECT coalesce(sum(int_cores_reserved), 0)::bigint FROM proc",
                &[],
            )?
            .get(0))
    }

    /// Centicores of the whole farm.
    pub fn total(&mut self) -> Result<i64, SimError> {
        Ok(self
            .client
            .query_one("SELECT coalesce(sum(int_cores), 0)::bigint FROM host", &[])?
            .get(0))
    }

    /// Waits (at most `limit`) until `share` of the farm's cores are booked and no host has
    /// `room` cores idle.
    pub fn saturate(&mut self, share: f64, room: u32, limit: Duration) -> Result<(), SimError> {
        let total = self.total()? as f64;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let roomy: i64 = self
                .client
                .query_one(
                    "SELECT count(*) FROM host WHERE int_cores_idle >= $1",
                    &[&i64::from(room * CORE)],
                )?
                .get(0);
            if self.busy()? as f64 >= total * share && roomy == 0 {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Frames of the job named `job` that started (RUNNING or SUCCEEDED).
    pub fn started(&mut self, job: &str) -> Result<i64, SimError> {
        Ok(self
            .client
            .query_one(
                "SELECT count(*) FROM frame f JOIN job j ON j.pk_job = f.pk_job
                  WHERE j.str_name = $1 AND f.str_state IN ('RUNNING', 'SUCCEEDED')",
                &[&job],
            )?
            .get(0))
    }

    /// Un-pauses the job named `job` and makes its frames eligible from now.
    pub fn submit(&mut self, job: &str) -> Result<(), SimError> {
        self.client.execute(
            "UPDATE frame SET ts_updated = now() WHERE pk_job IN (SELECT pk_job FROM job WHERE str_name = $1)",
            &[&job],
        )?;
        self.client.execute(
            "UPDATE job SET b_paused = false WHERE str_name = $1",
            &[&job],
        )?;
        Ok(())
    }

    /// Stops stagehand and audits the database; returns the violations.
    pub fn finish(mut self) -> Result<Vec<String>, SimError> {
        if let Some(service) = self.service.take() {
            service.shutdown(Duration::from_secs(15));
        }
        Ok(crate::accounting::audit::audit(&mut self.client, None)?)
    }
}

/// Pauses the job named `job` (it is submitted later with [`Run::submit`]).
pub fn pause(client: &mut postgres::Client, job: &str) -> Result<(), SimError> {
    client.execute(
        "UPDATE job SET b_paused = true WHERE str_name = $1",
        &[&job],
    )?;
    Ok(())
}

/// Prints audit violations the way `stagehand bench` does.
pub fn print_audit(violations: &[String]) {
    if violations.is_empty() {
        println!("audit           : clean");
    }
    for v in violations {
        println!("audit violation : {v}");
    }
}
