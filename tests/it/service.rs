//! Operating stagehand: HTTP endpoints, readiness, reload, shutdown, check-config, systemd.

use std::{
    path::PathBuf,
    process::Command,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use stagehand::{
    accounting::audit::audit,
    config::Config,
    service::Service,
    sim::{
        farm::SimFarm,
        instances::{Instance, http_get, metric_sum},
        pg::{PgCluster, PgOptions},
        seed::{FarmSpec, LayerSpec},
        workload,
    },
};

use crate::common::{job, small_farm, usage_counters};

fn fast(mut c: Config) -> Config {
    c.http.listen = "127.0.0.1:0".into();
    c.hosts.refresh_interval = Duration::from_millis(200);
    c.scheduler.active_scan_interval = Duration::from_millis(200);
    c.accounting.recompute_interval = Duration::from_millis(300);
    c.cluster.lease_renew_interval = Duration::from_millis(200);
    c.cluster.lease_duration = Duration::from_secs(2);
    c.database.transaction_idle_timeout = Duration::from_secs(1);
    c.database.connect_timeout = Duration::from_secs(1);
    c.rqd.dry_run = true;
    c
}

pub(crate) fn wait(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn http(address: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(address).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A private cluster (so stopping it does not disturb other tests) with a seeded farm.
fn private_farm() -> (PgCluster, String) {
    private_farm_of(&["j"])
}

/// [`private_farm`] with one four-frame job per name.
fn private_farm_of(jobs: &[&str]) -> (PgCluster, String) {
    private_farm_with(jobs, |_| {})
}

/// [`private_farm_of`], the farm's spec changed by `tweak` before it is seeded.
fn private_farm_with(jobs: &[&str], tweak: impl FnOnce(&mut FarmSpec)) -> (PgCluster, String) {
    let cluster = PgCluster::start(&PgOptions::default()).unwrap();
    let url = cluster.create_database("svc", None).unwrap();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    stagehand::db::migrate::migrate(&mut client).unwrap();
    let jobs = jobs
        .iter()
        .map(|name| job(name, vec![LayerSpec::simple("l", "1-4", "general")]))
        .collect();
    let mut spec = small_farm(2, 8, 32, &[], jobs);
    tweak(&mut spec);
    stagehand::sim::seed::seed(&mut client, &spec).unwrap();
    (cluster, url)
}

#[test]
fn endpoints_answer_and_readiness_follows_the_database() {
    let (mut cluster, url) = private_farm();
    let mut config = fast(Config::default());
    config.database.url = url;
    let service = Service::start(config).unwrap();
    let addr = service.http_address();
    assert!(
        wait(Duration::from_secs(20), || http_get(&addr, "/readyz")
            .map(|(c, _)| c == 200)
            .unwrap_or(false)),
        "ready"
    );

    // Ready comes before the first booking pass, and `scheduler_frames_dispatched_total` (by
    // show) has no sample until a frame is booked: wait for the farm's 4 frames.
    let mut metrics = String::new();
    let booked = wait(Duration::from_secs(20), || {
        let (code, text) = http_get(&addr, "/metrics").unwrap();
        assert_eq!(code, 200);
        metrics = text;
        metric_sum(&metrics, "stagehand_frames_booked_total") >= 4.0
    });
    assert!(booked, "frames booked");
    for name in [
        "scheduler_frames_dispatched_total",
        "stagehand_frames_booked_total",
        "scheduler_jobs_queried_total",
        "process_resident_memory_bytes",
    ] {
        assert!(metrics.contains(name), "{name} exported");
    }
    let raw = http(&addr, "GET /metrics HTTP/1.0\r\n\r\n");
    assert!(
        raw.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        &raw[..200.min(raw.len())]
    );
    let (code, body) = http_get(&addr, "/healthz").unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["alive"],
        true
    );
    let (code, body) = http_get(&addr, "/status").unwrap();
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        status["dispatch"].is_object()
            && status["hosts"]["indexed"] == 2
            && status["clusters"].is_array(),
        "{status}"
    );
    let (code, page) = http_get(&addr, "/").unwrap();
    assert!(code == 200 && page.contains("<svg") && page.contains("stagehand"));
    let post = http(&addr, "POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n");
    assert!(post.lines().next().unwrap_or("").contains(" 405"), "{post}");
    assert_eq!(http_get(&addr, "/nope").unwrap().0, 404);

    // The database goes away: not ready (and no panic); it comes back: ready again.
    cluster.stop().unwrap();
    assert!(
        wait(Duration::from_secs(30), || http_get(&addr, "/readyz")
            .map(|(c, _)| c == 503)
            .unwrap_or(false)),
        "not ready without a database"
    );
    assert_eq!(http_get(&addr, "/healthz").unwrap().0, 200, "still alive");
    cluster.restart().unwrap();
    assert!(
        wait(Duration::from_secs(30), || http_get(&addr, "/readyz")
            .map(|(c, _)| c == 200)
            .unwrap_or(false)),
        "ready again"
    );
    assert!(service.shutdown(Duration::from_secs(10)));
}

#[test]
fn started_without_a_database_it_runs_and_is_not_ready() {
    let mut config = fast(Config::default());
    config.database.url = "host=127.0.0.1 port=1 user=nobody dbname=none".into();
    let service = Service::start(config).unwrap();
    let addr = service.http_address();
    std::thread::sleep(Duration::from_millis(500));
    let (code, body) = http_get(&addr, "/readyz").unwrap();
    assert_eq!(code, 503);
    assert!(body.contains("database unreachable"), "{body}");
    assert!(service.shutdown(Duration::from_secs(5)));
}

/// Started while PostgreSQL is down, then the database comes up: the first cluster load
/// failed, and its retry waited a whole `cluster_reload_interval` (a minute by default) with
/// nothing booked. It is retried after `error_sleep` now.
#[test]
fn started_before_its_database_it_books_soon_after_the_database_comes_up() {
    let (mut cluster, url) = private_farm();
    cluster.stop().unwrap();
    let mut config = fast(Config::default());
    config.database.url = url;
    config.scheduler.error_sleep = Duration::from_millis(500);
    let service = Service::start(config).unwrap();
    let addr = service.http_address();
    std::thread::sleep(Duration::from_millis(1500));
    cluster.restart().unwrap();
    assert!(
        wait(Duration::from_secs(20), || http_get(&addr, "/readyz")
            .map(|(c, _)| c == 200)
            .unwrap_or(false)),
        "ready well within the reload interval: {:?}",
        http_get(&addr, "/readyz")
    );
    assert!(service.shutdown(Duration::from_secs(10)));
}

/// Stagehand's bookings are not added to Cuebot's usage counters (`subscription`,
/// `job_resource`, `folder_resource`): the recompute writes them for managed shows, every
/// `recompute_interval`. A show handed back to Cuebot kept them as the last round left them,
/// low by every frame booked since, and Cuebot, which trusts them, would book that much past
/// a burst or a maximum. The instance that held the show recounts them when it lets go.
#[test]
fn a_show_handed_back_to_cuebot_gets_its_usage_counters_recounted() {
    let (_cluster, url, service) = four_frames_booked();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .execute("UPDATE show SET b_scheduler_managed = false", &[])
        .unwrap();
    assert!(
        wait(Duration::from_secs(20), || usage_counters(&mut client)
            == (400, 400, 400)),
        "subscription, job and folder counters as the procs: {:?}",
        usage_counters(&mut client)
    );
    assert!(service.shutdown(Duration::from_secs(10)));
}

/// The recount owed at a hand-back is the database's to keep, not the holder's: a show
/// handed back while its holder is dead (here: killed, its heartbeat an hour old) and no
/// other instance runs is recounted by the next instance to start. Kept in the holder's
/// memory, it was never recounted, and Cuebot's counters stayed low by stagehand's frames.
#[test]
fn a_show_handed_back_while_its_holder_is_dead_is_recounted_by_the_next_instance() {
    let (_cluster, url, service) = four_frames_booked();
    assert!(service.shutdown(Duration::from_secs(10)));
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .batch_execute(
            "INSERT INTO stagehand.instance (pk_instance, str_name, str_host, int_pid, ts_heartbeat)
             VALUES ('00000000-0000-0000-0000-00000000dead', 'killed', 'killed', 1,
                     now() - interval '1 hour');
             UPDATE stagehand.show_lease SET pk_instance = '00000000-0000-0000-0000-00000000dead';
             UPDATE show SET b_scheduler_managed = false",
        )
        .unwrap();
    assert_ne!(usage_counters(&mut client), (400, 400, 400), "counters low");
    let service = Service::start(fast_on(&url)).unwrap();
    assert!(
        wait(Duration::from_secs(20), || usage_counters(&mut client)
            == (400, 400, 400)
            && !recount_owed(&mut client)),
        "recounted, and the debt paid: {:?}",
        usage_counters(&mut client)
    );
    assert!(service.shutdown(Duration::from_secs(10)));
}

/// A recount that finds a row locked past its wait (Cuebot dispatching the show it was just
/// handed) leaves the debt in place and pays it once the row is free. It used to count the
/// recount as done and never came back to that row.
#[test]
fn a_recount_owed_past_a_locked_row_is_paid_when_the_row_is_free() {
    let (_cluster, url, service) = four_frames_booked();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut cuebot = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut lock = cuebot.transaction().unwrap();
    lock.batch_execute("SELECT 1 FROM subscription FOR UPDATE")
        .unwrap();
    client
        .execute("UPDATE show SET b_scheduler_managed = false", &[])
        .unwrap();
    assert!(
        wait(Duration::from_secs(20), || usage_counters(&mut client).1
            == 400),
        "the free rows recounted: {:?}",
        usage_counters(&mut client)
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert!(recount_owed(&mut client), "the locked row is still owed");
    assert_ne!(usage_counters(&mut client).0, 400);
    lock.rollback().unwrap();
    assert!(
        wait(Duration::from_secs(20), || usage_counters(&mut client)
            == (400, 400, 400)
            && !recount_owed(&mut client)),
        "recounted once free: {:?}",
        usage_counters(&mut client)
    );
    assert!(service.shutdown(Duration::from_secs(10)));
}

/// A private farm and a service on it that booked its four frames (one core each); the
/// recompute is an hour away, so the usage counters read low by those frames.
fn four_frames_booked() -> (PgCluster, String, Service) {
    let (cluster, url) = private_farm();
    let service = Service::start(fast_on(&url)).unwrap();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    assert!(
        wait(Duration::from_secs(20), || {
            let r = client.query_one(
                "SELECT coalesce(sum(int_cores_reserved), 0)::bigint FROM proc",
                &[],
            );
            r.unwrap().get::<_, i64>(0) == 400
        }),
        "the four frames booked"
    );
    (cluster, url, service)
}

/// [`fast`] on the database `url`, the recompute an hour apart.
fn fast_on(url: &str) -> Config {
    let mut config = fast(Config::default());
    config.database.url = url.to_owned();
    config.accounting.recompute_interval = Duration::from_secs(3600);
    config
}

/// Whether a show still owes Cuebot a recount.
fn recount_owed(c: &mut postgres::Client) -> bool {
    c.query_one(
        "SELECT EXISTS (SELECT 1 FROM stagehand.show_lease WHERE b_recount)",
        &[],
    )
    .unwrap()
    .get(0)
}

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stagehand"))
}

#[test]
fn the_binary_reloads_on_sighup_and_drains_on_sigterm() {
    let spec = workload::steady(0.01, 2, 30);
    let farm = SimFarm::start(&spec, &PgOptions::default(), true, 0).unwrap();
    let config = farm.config(false);
    let instance = Instance::spawn(&binary(), &config, "svc").unwrap();
    assert!(instance.wait_ready(Duration::from_secs(30)));
    let generation = |i: &Instance| -> i64 {
        let (_, body) = http_get(&i.address, "/status").unwrap();
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["config_generation"]
            .as_i64()
            .unwrap()
    };
    let before = generation(&instance);
    // A valid change: the running configuration follows.
    let path = std::env::temp_dir().join(format!(
        "stagehand-svc-{}-{}.toml",
        std::process::id(),
        "svc"
    ));
    let mut changed = config.clone();
    changed.http.listen = instance.address.clone();
    changed.cluster.instance_name = "svc".into();
    changed.scheduler.empty_sleep = Duration::from_secs(7);
    // The instance reads the file it was started with; rewrite that one.
    let own = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.to_string_lossy()
                .contains(&format!("stagehand-{}-svc-", std::process::id()))
        })
        .expect("the instance's config file");
    std::fs::write(&own, toml::to_string(&changed).unwrap()).unwrap();
    instance.signal(libc::SIGHUP);
    assert!(
        wait(Duration::from_secs(10), || generation(&instance)
            == before + 1),
        "valid reload applied"
    );
    // A broken file: still serving, error counted, nothing changed.
    std::fs::write(&own, "[scheduler]\nworker_threads = \"many\"\n").unwrap();
    instance.signal(libc::SIGHUP);
    assert!(wait(Duration::from_secs(10), || metric_sum(
        &instance.metrics(),
        "stagehand_config_reloads_total"
    ) >= 2.0));
    let metrics = instance.metrics();
    assert!(
        metrics.contains("stagehand_config_reloads_total{result=\"error\"} 1"),
        "error counted"
    );
    assert_eq!(
        generation(&instance),
        before + 1,
        "the broken file changed nothing"
    );
    let _ = std::fs::remove_file(&path);
    // Under load, SIGTERM drains and exits 0, leaving the database consistent.
    assert!(wait(Duration::from_secs(20), || metric_sum(
        &instance.metrics(),
        "stagehand_frames_booked_total"
    ) > 0.0));
    assert_eq!(instance.stop(Duration::from_secs(30)), Some(0));
    let mut client = postgres::Client::connect(&farm.url, postgres::NoTls).unwrap();
    let violations = audit(&mut client, None).unwrap();
    assert!(violations.is_empty(), "{violations:?}");
    let released: i64 = client
        .query_one(
            "SELECT count(*) FROM stagehand.show_lease WHERE pk_instance IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(released, 0, "leases handed over at shutdown");
}

#[test]
fn check_config_names_the_bad_key() {
    let dir = std::env::temp_dir();
    let unknown = dir.join(format!("stagehand-cc-unknown-{}.toml", std::process::id()));
    std::fs::write(&unknown, "[scheduler]\nworker_thread = 4\n").unwrap();
    let bad = dir.join(format!("stagehand-cc-bad-{}.toml", std::process::id()));
    std::fs::write(&bad, "[rqd]\ntimeout = \"0s\"\n").unwrap();
    let good = dir.join(format!("stagehand-cc-good-{}.toml", std::process::id()));
    std::fs::write(&good, "").unwrap();
    for (file, key) in [(&unknown, "scheduler.worker_thread"), (&bad, "rqd.timeout")] {
        let out = Command::new(binary())
            .args(["check-config", "--config"])
            .arg(file)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(key), "{stderr}");
    }
    let out = Command::new(binary())
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    let shipped = Command::new(binary())
        .args(["check-config", "--config", "conf/stagehand.toml"])
        .output()
        .unwrap();
    assert!(
        shipped.status.success(),
        "{}",
        String::from_utf8_lossy(&shipped.stderr)
    );
    for f in [unknown, bad, good] {
        let _ = std::fs::remove_file(f);
    }
}

/// `stagehand recount` rewrites a show's usage counters from its procs (for shows handed
/// back while no instance runs) and names a show that does not exist.
#[test]
fn recount_rewrites_a_shows_counters_and_names_an_unknown_show() {
    let (_cluster, url) = private_farm();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .batch_execute(
            "UPDATE subscription SET int_cores = 700; UPDATE folder_resource SET int_cores = 300",
        )
        .unwrap();
    let show: String = client
        .query_one("SELECT str_name FROM show", &[])
        .unwrap()
        .get(0);
    let file = std::env::temp_dir().join(format!("stagehand-recount-{}.toml", std::process::id()));
    std::fs::write(&file, format!("[database]\nurl = \"{url}\"\n")).unwrap();
    let recount = |show: &str| {
        Command::new(binary())
            .args(["recount", "--config"])
            .arg(&file)
            .arg(show)
            .env_remove("STAGEHAND_DATABASE_URL")
            .output()
            .unwrap()
    };
    let out = recount(&show);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sums: (i64, i64) = {
        let r = client
            .query_one(
                "SELECT (SELECT sum(int_cores) FROM subscription)::bigint,
                        (SELECT sum(int_cores) FROM folder_resource)::bigint",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(sums, (0, 0), "no procs: nothing in use");
    let out = recount("no-such-show");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-show"));
    let _ = std::fs::remove_file(file);
}

#[test]
fn the_systemd_unit_verifies() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        println!("skipped: systemd-analyze is not installed here");
        return;
    };
    if !out.status.success() {
        println!("skipped: systemd-analyze does not run here");
        return;
    }
    let dir = std::env::temp_dir().join(format!("stagehand-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = std::fs::read_to_string("conf/stagehand.service")
        .unwrap()
        .replace("/usr/bin/stagehand", binary().to_str().unwrap());
    let path = dir.join("stagehand.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
}

/// Set in the environment of a test run by [`run_alone`].
const ALONE: &str = "STAGEHAND_TEST_ALONE";

/// Runs one test of this binary in a process of its own, so that what it counts of
/// `/proc/self/task` is its own threads, not those of the tests running beside it.
fn run_alone(test: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--include-ignored", "--test-threads=1"])
        .env(ALONE, "1")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} alone:\n{stdout}\n{stderr}"
    );
}

/// True unless this process was started by [`run_alone`].
fn not_alone() -> bool {
    std::env::var_os(ALONE).is_none()
}

/// The names of this process's threads.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect()
}

/// The threads a `Service` starts (see `service`'s module docs).
fn service_threads() -> Vec<String> {
    let fixed = [
        "cluster-feed",
        "host-refresh",
        "accounting",
        "leases",
        "http",
    ];
    thread_names()
        .into_iter()
        .filter(|n| {
            fixed.contains(&n.as_str()) || n.starts_with("booking-") || n.starts_with("rqd-launch-")
        })
        .collect()
}

fn without_database() -> Config {
    let mut config = fast(Config::default());
    config.database.url = "host=127.0.0.1 port=1 user=nobody dbname=none".into();
    config
}

#[test]
fn a_reload_that_breaks_a_rule_with_the_kept_cold_keys_is_refused() {
    let service = Service::start(without_database()).unwrap();
    let errors = || {
        stagehand::metrics::CONFIG_RELOADS
            .with_label_values(&["error"])
            .get()
    };
    let (errors_before, generation) = (
        errors(),
        service.status().generation.load(Ordering::Acquire),
    );
    // Valid on its own, but the running transaction_idle_timeout (1s, cold, kept) is not
    // shorter than this lease: a paused instance could then block a takeover.
    let mut new = without_database();
    new.database.transaction_idle_timeout = Duration::from_millis(100);
    new.cluster.lease_duration = Duration::from_millis(500);
    new.cluster.lease_renew_interval = Duration::from_millis(200);
    new.scheduler.empty_sleep = Duration::from_secs(9);
    new.validate().unwrap();
    let err = service.reload(new).expect_err("refused").to_string();
    assert!(
        err.starts_with(
            "database.transaction_idle_timeout = 1s: must be shorter than cluster.lease_duration"
        ),
        "{err}"
    );
    let running = service.shared().config.load_full();
    assert_eq!(running.cluster.lease_duration, Duration::from_secs(2));
    assert_eq!(
        running.scheduler.empty_sleep,
        Config::default().scheduler.empty_sleep
    );
    running.validate().unwrap();
    assert_eq!(
        service.status().generation.load(Ordering::Acquire),
        generation
    );
    assert_eq!(errors(), errors_before + 1, "counted as a failed reload");
    assert!(service.shutdown(Duration::from_secs(5)));
}

#[test]
fn a_failed_start_leaves_no_threads() {
    run_alone("service::alone_a_failed_start_leaves_no_threads");
}

#[test]
#[ignore = "run in a process of its own by a_failed_start_leaves_no_threads"]
fn alone_a_failed_start_leaves_no_threads() {
    if not_alone() {
        return;
    }
    assert_eq!(service_threads(), Vec::<String>::new());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = without_database();
    config.http.listen = taken.local_addr().unwrap().to_string();
    let err = Service::start(config).err().expect("the address is taken");
    assert!(err.to_string().contains("listening on"), "{err}");
    // Joined threads leave /proc a moment after join returns; wait for that, no longer.
    let gone = wait(Duration::from_secs(5), || service_threads().is_empty());
    assert!(gone, "left running: {:?}", service_threads());
}

#[test]
fn idle_connections_cannot_flood_http() {
    run_alone("service::alone_idle_connections_cannot_flood_http");
}

#[test]
#[ignore = "run in a process of its own by idle_connections_cannot_flood_http"]
fn alone_idle_connections_cannot_flood_http() {
    if not_alone() {
        return;
    }
    let service = Service::start(without_database()).unwrap();
    let addr = service.http_address();
    assert_eq!(http_get(&addr, "/healthz").unwrap().0, 200);
    let before = thread_names().len();
    // 200 clients connect and never send a byte. tiny_http does not cap connections: each
    // takes a pool thread, blocked reading it, until the read timeout (5 s) drops it.
    let idle: Vec<std::net::TcpStream> = (0..200)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    let (code, body) = http_get(&addr, "/healthz").expect("served despite the idle clients");
    assert_eq!(code, 200, "{body}");
    let during = thread_names().len();
    assert!(
        during > before + 100,
        "a thread per idle client: {before} → {during}"
    );
    // A client that never sends its request is closed by the server, not read forever.
    let mut last = idle.last().unwrap();
    last.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let n = std::io::Read::read(&mut last, &mut [0u8; 512]).expect("closed by the server");
    assert_eq!(n, 0, "closed without an answer");
    // Their threads end (tiny_http ends a pool thread idle for 5 s) while the clients still
    // hold their sockets.
    let back = wait(Duration::from_secs(60), || {
        thread_names().len() <= before + 2
    });
    let after = thread_names().len();
    assert!(back, "threads {before} → {during} → {after}");
    // And it still serves: tiny_http's accept, which the same timeout applies to, goes on.
    assert_eq!(http_get(&addr, "/healthz").unwrap().0, 200);
    drop(idle);
    assert!(service.shutdown(Duration::from_secs(5)));
}

/// A job that becomes bookable (submitted, or here unpaused) while its cluster sleeps is
/// booked at once: the new-work probe brings the active scan forward, so its first frame does
/// not wait for `active_scan_interval` (an hour here) or the cluster's empty sleep.
#[test]
fn a_job_unpaused_while_its_cluster_sleeps_is_booked_without_waiting_for_the_scan() {
    unpaused_job_books_at_once(false);
}

/// The same after every stagehand session was ended (an administrator, a pooler restart):
/// the connections the feed's probe and the host refresher keep between their reads are
/// given up after the error, and the next read takes a new one.
#[test]
fn the_probe_books_an_unpaused_job_after_its_kept_session_was_terminated() {
    unpaused_job_books_at_once(true);
}

fn unpaused_job_books_at_once(terminate_sessions: bool) {
    let (cluster, url) = private_farm_of(&["first", "late"]);
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .execute(
            "UPDATE job SET b_paused = true WHERE str_name LIKE '%late'",
            &[],
        )
        .unwrap();
    let mut config = fast(Config::default());
    config.database.url = url;
    config.scheduler.active_scan_interval = Duration::from_secs(3600);
    config.scheduler.empty_sleep = Duration::from_secs(3600);
    config.scheduler.new_work_probe_interval = Duration::from_millis(100);
    let service = Service::start(config).unwrap();
    let running = |client: &mut postgres::Client, job: &str| -> i64 {
        client
            .query_one(
                "SELECT count(*) FROM frame f JOIN job j ON j.pk_job = f.pk_job
                  WHERE j.str_name LIKE '%' || $1 AND f.str_state = 'RUNNING'",
                &[&job],
            )
            .unwrap()
            .get(0)
    };
    assert!(
        wait(Duration::from_secs(20), || running(&mut client, "first")
            == 4),
        "the first job books"
    );
    // Let its cluster find nothing more and fall asleep for the hour.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        running(&mut client, "late"),
        0,
        "a paused job is not booked"
    );
    if terminate_sessions {
        let ended: i64 = client
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
                  WHERE datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(
            ended >= 2,
            "the probe's and the refresher's sessions ended ({ended})"
        );
    }
    client
        .execute(
            "UPDATE job SET b_paused = false WHERE str_name LIKE '%late'",
            &[],
        )
        .unwrap();
    assert!(
        wait(Duration::from_secs(20), || running(&mut client, "late")
            == 4),
        "the unpaused job books long before the next scan"
    );
    assert!(service.shutdown(Duration::from_secs(5)));
    drop(cluster);
}

/// A folder maximum raised while every job of its show is left out of the passes as full
/// (the ledger's caps say so) is seen at once, not at the next caps read (an hour here): a
/// pass that found only full jobs asks for the caps again.
#[test]
fn a_folder_maximum_raised_while_every_job_was_left_out_as_full_is_seen_at_once() {
    let (cluster, url) = private_farm_with(&["a", "b"], |spec| spec.shows[0].folder_max_cores = 2);
    let mut config = fast(Config::default());
    config.database.url = url.clone();
    config.accounting.caps_interval = Duration::from_secs(3600);
    config.scheduler.saturated_sleep = Duration::from_millis(300);
    let service = Service::start(config).unwrap();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let running = |c: &mut postgres::Client| -> i64 {
        c.query_one(
            "SELECT count(*) FROM frame WHERE str_state = 'RUNNING'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    assert!(
        wait(Duration::from_secs(20), || running(&mut client) == 2),
        "the folder's two cores booked"
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(running(&mut client), 2, "and no more");
    client
        .execute("UPDATE folder_resource SET int_max_cores = -1", &[])
        .unwrap();
    assert!(
        wait(Duration::from_secs(10), || running(&mut client) == 8),
        "the rest booked long before the next caps read: {} running",
        running(&mut client)
    );
    assert!(service.shutdown(Duration::from_secs(5)));
    drop(cluster);
}

/// Shutdown with launches queued behind a slow RQD: launching stops before the grace ends
/// and what is still queued is undone in the time left, so nothing committed is left
/// RUNNING with a proc and no process. Launching until the very end of the grace left the
/// queue for the process's exit to drop.
#[test]
fn shutdown_undoes_what_it_had_no_time_to_launch() {
    use stagehand::sim::fake_rqd::{Behaviour, FakeRqd, FleetOptions};
    let rqd = FakeRqd::start(FleetOptions {
        database_url: None,
        failure_per_mille: 0,
    })
    .unwrap();
    // The first launch answers after three quarters of the grace (4 s): launching has
    // stopped by then, and the queued four are undone in the last second.
    rqd.set_behaviour(Behaviour::Stall(Duration::from_millis(3400)));
    let spec = small_farm(
        1,
        8,
        32,
        &[],
        vec![job("j", vec![LayerSpec::simple("l", "1-5", "general")])],
    );
    let farm = crate::common::Farm::new(&spec, |_| {});
    let mut config = fast(farm.db.config());
    config.rqd.dry_run = false;
    config.rqd.endpoint = format!("127.0.0.1:{}", rqd.port());
    config.rqd.port = rqd.port();
    config.rqd.timeout = Duration::from_secs(5);
    config.rqd.launch_threads = 1;
    let service = Service::start(config).unwrap();
    assert!(wait(Duration::from_secs(20), || rqd.launch_count() >= 1));
    service.shutdown(Duration::from_secs(4));
    let mut client = farm.client();
    let count = |client: &mut postgres::Client, sql: &str| -> i64 {
        client.query_one(sql, &[]).unwrap().get(0)
    };
    let procs = count(&mut client, "SELECT count(*) FROM proc");
    assert_eq!(
        procs as usize,
        rqd.launch_count(),
        "every proc left is a frame RQD was given"
    );
    assert_eq!(
        count(&mut client, "SELECT count(*) FROM stagehand.pending_launch"),
        0
    );
    assert_eq!(
        count(
            &mut client,
            "SELECT count(*) FROM frame WHERE str_state = 'WAITING'"
        ),
        5 - procs
    );
    rqd.stop();
}
