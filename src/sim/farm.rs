//! A simulated farm ready to book: a private PostgreSQL with the schema, a seeded farm, and a
//! fake RQD fleet completing frames. Shared by the demo, the benchmarks and the tests.

use std::time::Duration;

use super::{
    SimError,
    fake_rqd::{FakeRqd, FleetOptions},
    pg::{PgCluster, PgOptions},
    seed::{FarmSpec, Seeded, analyze, seed},
};
use crate::{config::Config, db};

/// Everything a simulated run needs, torn down in order on drop.
pub struct SimFarm {
    /// The fake RQD fleet (stopped first).
    pub rqd: Option<FakeRqd>,
    /// The seeded keys.
    pub seeded: Seeded,
    /// Connection string of the farm's database.
    pub url: String,
    /// The private cluster (dropped last).
    pub cluster: PgCluster,
}

impl SimFarm {
    /// Starts PostgreSQL, applies the schema, seeds `spec` and (when `fleet`) starts the fake
    /// RQD fleet with `failure_per_mille` failing frames.
    pub fn start(
        spec: &FarmSpec,
        pg: &PgOptions,
        fleet: bool,
        failure_per_mille: u32,
    ) -> Result<SimFarm, SimError> {
        let cluster = PgCluster::start(pg)?;
        let url = cluster.create_database("stagehand", None)?;
        let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
        db::migrate::migrate(&mut client)?;
        if cluster.has_pg_stat_statements() {
            client.batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")?;
        }
        // stagehand connects as its own role, so the benchmarks can tell its statements from
        // the harness's own polling.
        client.batch_execute(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'stagehand') THEN
                 CREATE ROLE stagehand LOGIN SUPERUSER;
               END IF;
             END $$",
        )?;
        let seeded = seed(&mut client, spec)?;
        analyze(&mut client)?;
        // The hosts report in now: the seed stamped them at its start, and a large farm
        // seeded on a busy machine can take longer than `[hosts] ping_timeout`.
        client.execute("UPDATE host_stat SET ts_ping = now()", &[])?;
        let rqd = if fleet {
            Some(FakeRqd::start(FleetOptions {
                database_url: Some(url.clone()),
                failure_per_mille,
            })?)
        } else {
            None
        };
        Ok(SimFarm {
            rqd,
            seeded,
            url,
            cluster,
        })
    }

    /// A stagehand configuration for this farm: its database, its fake RQD, and pacing suited
    /// to a simulation (frames last seconds, not hours).
    pub fn config(&self, dry_run: bool) -> Config {
        let mut c = Config::default();
        c.database.url = self.url.replace("user=postgres", "user=stagehand");
        c.database.pool_size = 12;
        c.rqd.dry_run = dry_run || self.rqd.is_none();
        if let Some(rqd) = &self.rqd {
            c.rqd.endpoint = "127.0.0.1:{port}".into();
            c.rqd.port = rqd.port();
        }
        c.rqd.timeout = Duration::from_secs(5);
        c.hosts.refresh_interval = Duration::from_secs(1);
        c.accounting.recompute_interval = Duration::from_secs(2);
        c.accounting.caps_interval = Duration::from_secs(10);
        c.scheduler.empty_sleep = Duration::from_secs(5);
        c.scheduler.saturated_sleep = Duration::from_secs(1);
        c.scheduler.active_scan_interval = Duration::from_millis(500);
        c.scheduler.cluster_reload_interval = Duration::from_secs(10);
        c.cluster.lease_renew_interval = Duration::from_millis(500);
        c.cluster.lease_duration = Duration::from_secs(3);
        c.database.transaction_idle_timeout = Duration::from_secs(1);
        c.http.listen = "127.0.0.1:0".into();
        c.service.shutdown_grace = Duration::from_secs(15);
        c
    }
}

impl Drop for SimFarm {
    fn drop(&mut self) {
        if let Some(rqd) = self.rqd.take() {
            rqd.stop();
        }
    }
}

/// Progress of a farm, read from the database.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Progress {
    /// Frames SUCCEEDED (or EATEN).
    pub done: i64,
    /// Frames RUNNING.
    pub running: i64,
    /// Frames WAITING.
    pub waiting: i64,
    /// Frames DEAD.
    pub dead: i64,
    /// Booked cores / total cores of open hosts.
    pub utilization: f64,
    /// The binding resource's use: each open host counts as busy as its most used resource
    /// (cores, memory or GPUs), weighted by its cores. A host whose memory or GPUs are all
    /// booked is full even with cores idle, so this is the figure a full farm holds near 100 %.
    pub binding: f64,
}

/// How busy a host row is by its most used resource (cores, memory or GPUs), 0–1: what
/// [`Progress::binding`] weighs by cores, and what UTILISATION's split of idle room reads.
pub(crate) const BINDING_USE: &str = "greatest(
                    1 - int_cores_idle::float8 / greatest(int_cores, 1),
                    1 - int_mem_idle::float8 / greatest(int_mem, 1),
                    CASE WHEN int_gpus > 0 THEN 1 - int_gpus_idle::float8 / int_gpus ELSE 0 END)";

/// Reads frame counts and core utilization.
pub(crate) fn progress(client: &mut postgres::Client) -> Result<Progress, postgres::Error> {
    let r = client.query_one(
        "SELECT coalesce(sum(int_succeeded_count + int_eaten_count), 0)::bigint,
                coalesce(sum(int_running_count), 0)::bigint, coalesce(sum(int_waiting_count), 0)::bigint,
                coalesce(sum(int_dead_count), 0)::bigint
           FROM job_stat",
        &[],
    )?;
    let u = client.query_one(
        &format!(
            "SELECT coalesce(sum(int_cores - int_cores_idle), 0)::float8,
                    greatest(coalesce(sum(int_cores), 0), 1)::float8,
                    coalesce(sum(int_cores * {BINDING_USE}), 0)::float8
               FROM host WHERE str_lock_state = 'OPEN'"
        ),
        &[],
    )?;
    Ok(Progress {
        done: r.get(0),
        running: r.get(1),
        waiting: r.get(2),
        dead: r.get(3),
        utilization: u.get::<_, f64>(0) / u.get::<_, f64>(1),
        binding: u.get::<_, f64>(2) / u.get::<_, f64>(1),
    })
}
