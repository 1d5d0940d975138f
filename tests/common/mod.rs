//! Fixtures shared by the integration tests: a real PostgreSQL server for the whole run and a
//! fresh, migrated database per test.
//!
//! The server is `STAGEHAND_TEST_PG` (a connection string without `dbname`, for a server where
//! databases may be created) when set; otherwise a private cluster started on first use
//! (`stagehand::sim::pg`) and removed when the test process exits. Each [`TestDb`] is a copy
//! of a template that has the whole `sql/` applied, and is dropped with the test.

#![allow(dead_code)]

pub mod proxy;

use std::sync::{
    Mutex, OnceLock,
    atomic::{AtomicU32, Ordering},
};

use stagehand::{
    config::Config,
    db,
    sim::pg::{PgCluster, PgOptions},
};

static CLUSTER: Mutex<Option<PgCluster>> = Mutex::new(None);

static TIMED: Mutex<()> = Mutex::new(());

/// Serializes the scenarios whose outcome is a rate or a time (fair-share convergence, a wide
/// frame's wait): on a two-core machine two of them side by side starve each other's
/// booking threads, which is a fact about the test machine, not about the scheduler.
pub fn timed_scenario() -> std::sync::MutexGuard<'static, ()> {
    TIMED.lock().unwrap_or_else(|e| e.into_inner())
}
static SERVER: OnceLock<String> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);
const TEMPLATE: &str = "stagehand_template";

extern "C" fn stop_cluster() {
    if let Ok(mut cluster) = CLUSTER.lock() {
        drop(cluster.take());
    }
}

/// The server connection string without a database name.
fn server() -> &'static str {
    SERVER.get_or_init(|| {
        let _ = env_logger::builder().is_test(true).try_init();
        let base = match std::env::var("STAGEHAND_TEST_PG") {
            Ok(url) if !url.trim().is_empty() => url,
            _ => {
                let cluster = PgCluster::start(&PgOptions::default())
                    .expect("start a private PostgreSQL cluster");
                let base = format!("host=127.0.0.1 port={} user=postgres", cluster.port());
                *CLUSTER.lock().unwrap() = Some(cluster);
                // SAFETY: registering a plain extern "C" function; it runs once at exit.
                unsafe { libc::atexit(stop_cluster) };
                base
            }
        };
        let mut admin =
            postgres::Client::connect(&format!("{base} dbname=postgres"), postgres::NoTls)
                .expect("connect to the test server");
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)"))
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {TEMPLATE}"))
            .unwrap();
        let mut template =
            postgres::Client::connect(&format!("{base} dbname={TEMPLATE}"), postgres::NoTls)
                .unwrap();
        db::migrate::apply_all(&mut template).expect("apply sql/ to the template database");
        drop(template);
        base
    })
}

/// A fresh database with the whole schema, dropped at the end of the test.
pub struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    /// Creates the database from the migrated template.
    pub fn new() -> TestDb {
        TestDb::from_template(TEMPLATE)
    }

    /// Creates a database with no schema at all (PostgreSQL's `template0`).
    pub fn empty() -> TestDb {
        TestDb::from_template("template0")
    }

    fn from_template(template: &str) -> TestDb {
        let base = server();
        let name = format!(
            "t_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin =
            postgres::Client::connect(&format!("{base} dbname=postgres"), postgres::NoTls).unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .unwrap();
        TestDb {
            url: format!("{base} dbname={name}"),
            name,
        }
    }

    /// The connection string.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A new connection.
    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).expect("connect to the test database")
    }

    /// A configuration pointing at this database, with test-friendly pacing.
    pub fn config(&self) -> Config {
        let mut config = Config::default();
        config.database.url = self.url.clone();
        config.database.pool_size = 8;
        config.scheduler.worker_threads = 2;
        config.http.listen = "127.0.0.1:0".into();
        config
    }

    /// A pool on this database.
    pub fn pool(&self) -> db::Pool {
        db::pool(&self.config().database).expect("build the pool")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) =
            postgres::Client::connect(&format!("{} dbname=postgres", server()), postgres::NoTls)
        {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// A seeded farm and a pipeline to drive pass by pass, without the service's threads: tests
/// call [`Farm::pass_all`] and look at the database in between.
pub struct Farm {
    /// The database (dropped last).
    pub db: TestDb,
    /// Keys of what was seeded.
    pub seeded: stagehand::sim::seed::Seeded,
    /// The pipeline state.
    pub shared: std::sync::Arc<stagehand::pipeline::Shared>,
    /// The lease board the pipeline reads: a test publishes a fence here as a lease keeper
    /// would.
    pub lease: std::sync::Arc<stagehand::lease::LeaseBoard>,
    launch_tx: crossbeam_channel::Sender<stagehand::pipeline::launch::LaunchTask>,
    launchers: Vec<std::thread::JoinHandle<()>>,
}

impl Farm {
    /// Seeds `spec` into a fresh database and builds a pipeline with the test configuration
    /// (dry run unless `tweak` says otherwise), its host index loaded and its caps seeded.
    pub fn new(spec: &stagehand::sim::seed::FarmSpec, tweak: impl FnOnce(&mut Config)) -> Farm {
        let db = TestDb::new();
        let mut client = db.client();
        let seeded = stagehand::sim::seed::seed(&mut client, spec).expect("seed the farm");
        let mut config = db.config();
        config.rqd.dry_run = true;
        config.rqd.timeout = std::time::Duration::from_millis(500);
        tweak(&mut config);
        let pool = stagehand::db::pool(&config.database).unwrap();
        let launch_threads = config.rqd.launch_threads;
        let lease = stagehand::lease::LeaseBoard::new();
        let shared = std::sync::Arc::new(stagehand::pipeline::Shared::new(
            std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(config)),
            pool,
            stagehand::pipeline::Beside::alone().with_lease(lease.view()),
        ));
        let (launch_tx, launchers) =
            stagehand::pipeline::launch::start(std::sync::Arc::clone(&shared), launch_threads)
                .unwrap();
        let farm = Farm {
            db,
            seeded,
            shared,
            lease,
            launch_tx,
            launchers,
        };
        farm.refresh();
        farm
    }

    /// Re-reads hosts into the index and re-syncs the caps from the database.
    pub fn refresh(&self) {
        stagehand::pipeline::hosts::refresh(&self.shared).expect("host refresh");
        stagehand::pipeline::hosts::refresh_reservations(&self.shared)
            .expect("reservation refresh");
        let mut client = self.db.client();
        stagehand::accounting::recompute::round(&mut client, &self.shared.ledger, true, None)
            .expect("recompute");
    }

    /// The clusters of the farm, as the feed would build them.
    pub fn clusters(&self) -> Vec<stagehand::cluster::Cluster> {
        let config = self.shared.config.load();
        let mut client = self.db.client();
        let rows = stagehand::db::jobs::cluster_tags(&mut client, None).unwrap();
        let subs = stagehand::db::jobs::subscriptions(&mut client).unwrap();
        let options = stagehand::cluster::BuildOptions {
            ignore_tags: config.scheduler.ignore_tags.clone(),
            manual_chunk: config.scheduler.manual_tags_chunk_size,
            hostname_chunk: config.scheduler.hostname_tags_chunk_size,
        };
        stagehand::cluster::build(&rows, &subs, &options)
    }

    /// One pass over every cluster; returns the frames booked.
    pub fn pass_all(&self) -> usize {
        let mut booked = 0;
        for cluster in self.clusters() {
            if let stagehand::cluster::feed::PassResult::Booked(n) =
                stagehand::pipeline::matcher::pass(&self.shared, &cluster, &self.launch_tx)
            {
                booked += n;
            }
        }
        booked
    }

    /// One pass over `cluster`, as a booking thread runs it.
    pub fn pass(
        &self,
        cluster: &stagehand::cluster::Cluster,
    ) -> stagehand::cluster::feed::PassResult {
        stagehand::pipeline::matcher::pass(&self.shared, cluster, &self.launch_tx)
    }

    /// Passes until nothing more books (refreshing hosts and caps between rounds).
    pub fn drain(&self) -> usize {
        let mut total = 0;
        for _ in 0..50 {
            let n = self.pass_all();
            total += n;
            if n == 0 {
                break;
            }
            self.refresh();
        }
        total
    }

    /// Waits until the launch queue is empty and every launch finished (or compensated).
    pub fn settle_launches(mut self) -> Self {
        let (tx, _) = crossbeam_channel::bounded(1);
        drop(std::mem::replace(&mut self.launch_tx, tx));
        for h in self.launchers.drain(..) {
            h.join().unwrap();
        }
        let (launch_tx, launchers) =
            stagehand::pipeline::launch::start(std::sync::Arc::clone(&self.shared), 2).unwrap();
        self.launch_tx = launch_tx;
        self.launchers = launchers;
        self
    }

    /// A connection to the farm's database.
    pub fn client(&self) -> postgres::Client {
        self.db.client()
    }

    /// Count of frames in `state`.
    pub fn frames_in(&self, state: &str) -> i64 {
        self.client()
            .query_one("SELECT count(*) FROM frame WHERE str_state = $1", &[&state])
            .unwrap()
            .get(0)
    }

    /// Runs the accounting audit (with the ledger) and fails the test on any violation.
    pub fn assert_clean_audit(&self) {
        let mut client = self.client();
        let violations = stagehand::accounting::audit::audit(&mut client, None).unwrap();
        assert!(
            violations.is_empty(),
            "audit violations:\n{}",
            violations.join("\n")
        );
    }
}

/// A one-show farm: `hosts` hosts of `cores` cores / `mem_gb` GB in one allocation tagged
/// `general` (plus `extra_tags`), one subscription with a large burst, and `jobs`.
pub fn small_farm(
    hosts: usize,
    cores: u32,
    mem_gb: u64,
    extra_tags: &[(&str, stagehand::model::TagType)],
    jobs: Vec<stagehand::sim::seed::JobSpec>,
) -> stagehand::sim::seed::FarmSpec {
    let mut farm = stagehand::sim::seed::FarmSpec::single(hosts, cores, mem_gb, 10_000);
    for h in &mut farm.hosts {
        h.tags = extra_tags
            .iter()
            .map(|(t, k)| ((*t).to_owned(), *k))
            .collect();
    }
    farm.jobs = jobs;
    farm
}

/// A job of `layers` in show 0 with priority 100 and no caps.
pub fn job(
    name: &str,
    layers: Vec<stagehand::sim::seed::LayerSpec>,
) -> stagehand::sim::seed::JobSpec {
    stagehand::sim::seed::JobSpec::simple(0, name.into(), 100, layers)
}

/// The keys of a frame to place.
struct FrameKeys {
    frame: String,
    version: i32,
    layer: String,
    job: String,
    folder: String,
}

/// The keys of the host a placement goes on.
struct HostKeys {
    host: String,
    host_name: String,
    alloc: String,
}

/// A placement of one core and 1 GB for `frame` on `host`, charged to `show`, with a new
/// proc key: what the tests that call `book_batch` directly book.
fn one_core_placement(
    frame: FrameKeys,
    show: &str,
    host: HostKeys,
) -> stagehand::db::booking::Placement {
    stagehand::db::booking::Placement {
        frame: frame.frame.into(),
        version: frame.version,
        layer: frame.layer.into(),
        job: frame.job.into(),
        show: show.into(),
        folder: frame.folder.into(),
        host: host.host.into(),
        host_name: host.host_name,
        alloc: host.alloc.into(),
        proc: uuid::Uuid::new_v4().to_string().into(),
        amount: stagehand::model::Resources {
            cores: stagehand::model::CORE,
            mem_kb: stagehand::sim::seed::GB,
            gpus: 0,
            gpu_mem_kb: 0,
        },
        est_secs: None,
        holds_reservation: false,
    }
}

/// One placement per frame of the database (name order), all on the first host, one core and
/// 1 GB each, in `show`: for tests that call `book_batch` directly.
pub fn placements_for_all_frames(
    client: &mut postgres::Client,
    show: &str,
) -> Vec<stagehand::db::booking::Placement> {
    let host = client
        .query_one(
            "SELECT pk_host, str_name, pk_alloc FROM host ORDER BY str_name LIMIT 1",
            &[],
        )
        .unwrap();
    client
        .query(
            "SELECT f.pk_frame, f.pk_layer, f.pk_job, coalesce(f.int_version, 0), j.pk_folder
              FROM frame f JOIN job j ON j.pk_job = f.pk_job ORDER BY f.str_name",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| {
            let frame = FrameKeys {
                frame: r.get(0),
                version: r.get(3),
                layer: r.get(1),
                job: r.get(2),
                folder: r.get(4),
            };
            let host = HostKeys {
                host: host.get(0),
                host_name: host.get(1),
                alloc: host.get(2),
            };
            one_core_placement(frame, show, host)
        })
        .collect()
}

/// One placement per WAITING frame of job `job` (name order) on host `host`, each one core
/// and 1 GB, charged to `show`: for tests that race `book_batch`.
pub fn placements_of_job(
    client: &mut postgres::Client,
    show: &str,
    job: &str,
    host: &str,
) -> Vec<stagehand::db::booking::Placement> {
    let row = client
        .query_one(
            "SELECT str_name, pk_alloc FROM host WHERE pk_host = $1",
            &[&host],
        )
        .unwrap();
    let (host_name, alloc): (String, String) = (row.get(0), row.get(1));
    client
        .query(
            "SELECT f.pk_frame, f.pk_layer, coalesce(f.int_version, 0),
                    (SELECT j.pk_folder FROM job j WHERE j.pk_job = f.pk_job)
               FROM frame f WHERE f.pk_job = $1 AND f.str_state = 'WAITING' ORDER BY f.str_name",
            &[&job],
        )
        .unwrap()
        .iter()
        .map(|r| {
            let frame = FrameKeys {
                frame: r.get(0),
                version: r.get(2),
                layer: r.get(1),
                job: job.to_owned(),
                folder: r.get(3),
            };
            let host = HostKeys {
                host: host.to_owned(),
                host_name: host_name.clone(),
                alloc: alloc.clone(),
            };
            one_core_placement(frame, show, host)
        })
        .collect()
}

/// Waits (up to 20 s) until `n` backends of the database wait on a lock; false if they never
/// do. Used to line writers up behind a held lock, so a race is forced instead of hoped for.
pub fn wait_for_lock_waiters(client: &mut postgres::Client, n: i64) -> bool {
    for _ in 0..400 {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .unwrap()
            .get(0);
        if waiting >= n {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

/// Books the first two jobs' frames, job `i` on host `i`, one batch and thread each, lined
/// up behind a transaction holding the rows `lock_sql` locks: once it commits, they race.
/// Returns what each booked.
pub fn race_two_jobs_behind_lock(
    farm: &Farm,
    lock_sql: &str,
    options: &stagehand::db::booking::BookOptions,
) -> Vec<usize> {
    let (show, jobs, hosts) = (&farm.seeded.shows[0], &farm.seeded.jobs, &farm.seeded.hosts);
    let mut client = farm.client();
    let batches = [
        placements_of_job(&mut client, show, &jobs[0], &hosts[0]),
        placements_of_job(&mut client, show, &jobs[1], &hosts[1]),
    ];
    let mut blocker = farm.client();
    let mut hold = blocker.transaction().unwrap();
    hold.execute(lock_sql, &[]).unwrap();
    std::thread::scope(|s| {
        let runs: Vec<_> = batches
            .iter()
            .map(|placements| {
                let (url, options) = (farm.db.url().to_owned(), options.clone());
                s.spawn(move || {
                    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
                    book_with(&mut c, placements, &options)
                })
            })
            .collect();
        let n = batches.len() as i64;
        assert!(wait_for_lock_waiters(&mut client, n), "every batch waits");
        hold.commit().unwrap();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    })
}

/// Books `placements` in one unfenced batch with `options`; returns how many were booked.
pub fn book_with(
    client: &mut postgres::Client,
    placements: &[stagehand::db::booking::Placement],
    options: &stagehand::db::booking::BookOptions,
) -> usize {
    stagehand::db::booking::book_batch(client, placements, options, None, &Default::default())
        .unwrap()
        .booked()
}

/// Booking options of a single unfenced booker that records no launches, licenses off.
pub fn book_options() -> stagehand::db::booking::BookOptions {
    stagehand::db::booking::BookOptions {
        mem_reserved_min_kb: 0,
        ping_timeout_secs: 60.0,
        no_retry_exit_statuses: Vec::new(),
        record_launches: None,
        licenses: None,
    }
}

/// The subscription, job and folder usage counters (centicores), each summed over the farm.
pub fn usage_counters(c: &mut postgres::Client) -> (i64, i64, i64) {
    let r = c
        .query_one(
            "SELECT (SELECT sum(int_cores) FROM subscription)::bigint,
                    (SELECT sum(int_cores) FROM job_resource)::bigint,
                    (SELECT sum(int_cores) FROM folder_resource)::bigint",
            &[],
        )
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}
