//! Several stagehand processes on one database: shares, failover and fencing.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use stagehand::{
    accounting::audit::audit,
    db::booking::{BookOptions, Fence, GuardLoss, book_batch},
    sim::{
        bench::{BenchArgs, measure},
        farm::SimFarm,
        instances::{Instance, metric_sum},
        pg::PgOptions,
        workload::{self, Workload},
    },
};

use crate::common::{Farm, job, placements_for_all_frames, small_farm};

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stagehand"))
}

#[test]
fn three_instances_drain_every_frame_exactly_once() {
    let args = BenchArgs {
        workload: Workload::Drain,
        scale: 0.05,
        seed: 5,
        instances: 3,
        per_frame: false,
        duration: Duration::from_secs(40),
        binary: Some(binary()),
        keep: false,
        top_statements: 0,
        no_reservations: false,
        scenario: None,
        with_ceiling: false,
        shows: 0,
        scales: Vec::new(),
        instance_counts: Vec::new(),
        rounds: 1,
        submissions: 50,
    };
    let report = measure(&args).expect("three instances run");
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(
        report.booked as usize, report.seeded,
        "every frame booked exactly once"
    );
    assert!(
        report.per_instance.iter().all(|n| *n > 0),
        "every instance did part of the work: {:?}",
        report.per_instance
    );
}

/// Shows held per instance name.
fn holdings(client: &mut postgres::Client) -> Vec<(String, String)> {
    client
        .query(
            "SELECT i.str_name, l.pk_show FROM stagehand.show_lease l
               JOIN stagehand.instance i ON i.pk_instance = l.pk_instance",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn wait_for(limit: Duration, mut ok: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ok() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn two_instances(farm: &SimFarm, binary: &Path) -> (Instance, Instance, stagehand::config::Config) {
    let mut config = farm.config(false);
    config.cluster.lease_duration = Duration::from_secs(2);
    config.database.transaction_idle_timeout = Duration::from_secs(1);
    config.cluster.lease_renew_interval = Duration::from_millis(200);
    let a = Instance::spawn(binary, &config, "a").unwrap();
    let b = Instance::spawn(binary, &config, "b").unwrap();
    assert!(
        a.wait_ready(Duration::from_secs(30)) && b.wait_ready(Duration::from_secs(30)),
        "instances ready"
    );
    (a, b, config)
}

#[test]
fn killed_instance_shows_move_to_the_survivor_within_a_lease_period() {
    let spec = workload::steady(0.02, 3, 60);
    let farm = SimFarm::start(&spec, &PgOptions::default(), true, 0).unwrap();
    let mut client = postgres::Client::connect(&farm.url, postgres::NoTls).unwrap();
    let (a, b, config) = two_instances(&farm, &binary());
    let both = wait_for(Duration::from_secs(30), || {
        let h = holdings(&mut client);
        h.iter().any(|(i, _)| i == "a") && h.iter().any(|(i, _)| i == "b")
    });
    assert!(
        both.is_some(),
        "both instances hold shows: {:?}",
        holdings(&mut client)
    );
    let b_shows: HashSet<String> = holdings(&mut client)
        .into_iter()
        .filter(|(i, _)| i == "b")
        .map(|(_, s)| s)
        .collect();
    let killed_at = Instant::now();
    b.kill9();
    let moved = wait_for(Duration::from_secs(30), || {
        let h = holdings(&mut client);
        b_shows
            .iter()
            .all(|s| h.iter().any(|(i, hs)| i == "a" && hs == s))
    });
    let bound = config.cluster.lease_duration + config.cluster.lease_renew_interval * 2;
    let moved =
        moved.unwrap_or_else(|| panic!("b's shows never moved: {:?}", holdings(&mut client)));
    println!(
        "failover: b's shows owned by a {:.2}s after kill -9 (lease {:?})",
        moved.as_secs_f64(),
        config.cluster.lease_duration
    );
    // Generous: one lease period plus one round, plus slack for a loaded 2-core machine.
    assert!(
        moved <= bound + Duration::from_secs(5),
        "failover took {moved:?}, bound {bound:?}"
    );
    // And a books them: some proc of b's shows booked after the kill.
    let since = killed_at.elapsed().as_secs_f64();
    let rebooked = wait_for(Duration::from_secs(30), || {
        let shows: Vec<&String> = b_shows.iter().collect();
        client
            .query_one(
                "SELECT count(*) FROM proc WHERE pk_show = ANY($1) AND ts_booked > now() - make_interval(secs => $2)",
                &[&shows, &since],
            )
            .map(|r| r.get::<_, i64>(0) > 0)
            .unwrap_or(false)
    });
    assert!(
        rebooked.is_some(),
        "the survivor books the failed instance's shows"
    );
    assert_eq!(a.stop(Duration::from_secs(30)), Some(0));
    let violations = audit(&mut client, None).unwrap();
    assert!(violations.is_empty(), "{violations:?}");
}

#[test]
fn a_paused_instance_commits_nothing_after_its_lease_moved() {
    let spec = workload::steady(0.02, 4, 60);
    let farm = SimFarm::start(&spec, &PgOptions::default(), true, 0).unwrap();
    let mut client = postgres::Client::connect(&farm.url, postgres::NoTls).unwrap();
    let (a, b, config) = two_instances(&farm, &binary());
    wait_for(Duration::from_secs(30), || {
        holdings(&mut client).iter().any(|(i, _)| i == "b")
    })
    .expect("b holds shows");
    let b_shows: HashSet<String> = holdings(&mut client)
        .into_iter()
        .filter(|(i, _)| i == "b")
        .map(|(_, s)| s)
        .collect();
    b.signal(libc::SIGSTOP);
    let moved = wait_for(Duration::from_secs(30), || {
        let h = holdings(&mut client);
        b_shows
            .iter()
            .all(|s| h.iter().any(|(i, hs)| i == "a" && hs == s))
    });
    assert!(moved.is_some(), "a took b's shows while b was stopped");
    let procs_of_b_before: i64 = client
        .query_one("SELECT count(*) FROM proc p JOIN frame f ON f.pk_frame = p.pk_frame WHERE f.str_host IS NOT NULL", &[])
        .unwrap()
        .get(0);
    b.signal(libc::SIGCONT);
    std::thread::sleep(config.cluster.lease_renew_interval * 5);
    let fenced = metric_sum(&b.metrics(), "stagehand_fencing_rejections_total");
    println!(
        "fence: b's batches rejected after SIGCONT: {fenced} (procs before resume: {procs_of_b_before})"
    );
    // Whatever b had in flight, nothing is double-booked: one proc per frame, every RUNNING
    // frame has its proc, hosts balance, caps hold.
    assert_eq!(b.stop(Duration::from_secs(30)), Some(0));
    assert_eq!(a.stop(Duration::from_secs(30)), Some(0));
    let violations = audit(&mut client, None).unwrap();
    assert!(violations.is_empty(), "{violations:?}");
}

#[test]
fn a_batch_planned_under_an_old_epoch_is_rejected_whole() {
    let spec = small_farm(
        2,
        8,
        32,
        &[],
        vec![job(
            "j",
            vec![stagehand::sim::seed::LayerSpec::simple(
                "l", "1-2", "general",
            )],
        )],
    );
    let farm = Farm::new(&spec, |_| {});
    let mut client = farm.client();
    let show = farm.seeded.shows[0].clone();
    let me = uuid::Uuid::new_v4();
    client
        .execute(
            "INSERT INTO stagehand.instance (pk_instance, str_name, str_host, int_pid) VALUES ($1, 'me', 'h', 1)",
            &[&me],
        )
        .unwrap();
    // The lease moved on: epoch 2 now, while the batch was planned under epoch 1.
    client
        .execute(
            "INSERT INTO stagehand.show_lease (pk_show, pk_instance, int_epoch) VALUES ($1, $2, 2)",
            &[&show, &me],
        )
        .unwrap();
    let placements = placements_for_all_frames(&mut client, &show);
    let fence = Fence {
        instance: me,
        lease_secs: 30.0,
        epochs: [(show.as_str().into(), 1)].into_iter().collect(),
        bookable_after: Default::default(),
    };
    let outcome = book_batch(
        &mut client,
        &placements,
        &BookOptions {
            mem_reserved_min_kb: 0,
            ping_timeout_secs: 3600.0,
            no_retry_exit_statuses: Vec::new(),
            record_launches: None,
            licenses: None,
        },
        Some(&fence),
        &Default::default(),
    )
    .unwrap();
    assert!(
        outcome.results.iter().all(|r| *r == Err(GuardLoss::Fence)),
        "{:?}",
        outcome.results
    );
    let procs: i64 = client
        .query_one("SELECT count(*) FROM proc", &[])
        .unwrap()
        .get(0);
    assert_eq!(procs, 0, "nothing committed");
    // Under the current epoch the same batch commits.
    let fence = Fence {
        epochs: [(show.as_str().into(), 2)].into_iter().collect(),
        ..fence
    };
    let outcome = book_batch(
        &mut client,
        &placements,
        &BookOptions {
            mem_reserved_min_kb: 0,
            ping_timeout_secs: 3600.0,
            no_retry_exit_statuses: Vec::new(),
            record_launches: None,
            licenses: None,
        },
        Some(&fence),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(outcome.booked(), placements.len());
}

#[test]
fn a_frozen_transaction_loses_its_lease_locks_after_the_idle_timeout() {
    let spec = small_farm(1, 8, 32, &[], vec![]);
    let farm = Farm::new(&spec, |_| {});
    let mut config = farm.db.config();
    config.database.transaction_idle_timeout = Duration::from_millis(300);
    let show = farm.seeded.shows[0].clone();
    let mut admin = farm.client();
    admin
        .execute(
            "INSERT INTO stagehand.show_lease (pk_show, pk_instance, int_epoch) VALUES ($1, NULL, 1)",
            &[&show],
        )
        .unwrap();
    // A stagehand connection that stops talking inside a transaction holding the lease row,
    // as a SIGSTOPped booker does.
    let mut frozen = stagehand::db::connect(&config.database).unwrap();
    let mut tx = frozen.transaction().unwrap();
    tx.query(
        "SELECT 1 FROM stagehand.show_lease WHERE pk_show = $1 FOR SHARE",
        &[&show],
    )
    .unwrap();
    // A takeover waits at most for the idle timeout, then goes through.
    admin.batch_execute("SET lock_timeout = 5000").unwrap();
    let start = Instant::now();
    admin
        .execute(
            "UPDATE stagehand.show_lease SET int_epoch = int_epoch + 1 WHERE pk_show = $1",
            &[&show],
        )
        .expect("the server ended the idle transaction and released its locks");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(tx.commit().is_err(), "the frozen session was terminated");
}

/// Shutdown hands every show over at once and leaves the registry. A lease round running
/// while the leases were released re-registered the instance and claimed the shows back, so
/// the next instance waited out a whole lease for them. Rounds every 10 ms, the shutdown at
/// varying moments of them.
#[test]
fn shutdown_leaves_no_lease_and_no_registration_behind() {
    let spec = small_farm(1, 8, 32, &[], vec![]);
    let farm = Farm::new(&spec, |_| {});
    let mut config = farm.db.config();
    config.cluster.lease_renew_interval = Duration::from_millis(10);
    let mut admin = farm.client();
    let count = |admin: &mut postgres::Client, sql: &str| -> i64 {
        admin.query_one(sql, &[]).unwrap().get(0)
    };
    for cycle in 0..20u64 {
        let service = stagehand::service::Service::start(config.clone()).unwrap();
        let held = crate::service::wait(Duration::from_secs(10), || {
            count(
                &mut admin,
                "SELECT count(*) FROM stagehand.show_lease WHERE pk_instance IS NOT NULL",
            ) > 0
        });
        assert!(held, "cycle {cycle}: the show was never claimed");
        std::thread::sleep(Duration::from_millis(cycle % 7 * 3));
        service.shutdown(Duration::from_secs(5));
        let left = (
            count(
                &mut admin,
                "SELECT count(*) FROM stagehand.show_lease WHERE pk_instance IS NOT NULL",
            ),
            count(&mut admin, "SELECT count(*) FROM stagehand.instance"),
        );
        assert_eq!(
            left,
            (0, 0),
            "cycle {cycle}: leases held, instances registered"
        );
    }
}

/// A killed instance never deletes its registration; the live ones forget it after a day of
/// silence (every reader already takes a missing instance for a dead one).
#[test]
fn an_instance_silent_for_a_day_is_forgotten() {
    let spec = small_farm(1, 8, 32, &[], vec![]);
    let farm = Farm::new(&spec, |_| {});
    let mut admin = farm.client();
    admin
        .execute(
            "INSERT INTO stagehand.instance (pk_instance, str_name, str_host, int_pid, ts_heartbeat)
             VALUES (gen_random_uuid(), 'killed', 'h', 1, now() - interval '2 days'),
                    (gen_random_uuid(), 'recent', 'h', 2, now() - interval '1 hour')",
            &[],
        )
        .unwrap();
    let service = stagehand::service::Service::start(farm.db.config()).unwrap();
    let names = |admin: &mut postgres::Client| -> Vec<String> {
        admin
            .query(
                "SELECT str_name FROM stagehand.instance ORDER BY ts_heartbeat",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let forgotten = crate::service::wait(Duration::from_secs(10), || {
        names(&mut admin).len() == 2 && !names(&mut admin).contains(&"killed".to_owned())
    });
    assert!(forgotten, "{:?}", names(&mut admin));
    assert!(service.shutdown(Duration::from_secs(5)));
}
