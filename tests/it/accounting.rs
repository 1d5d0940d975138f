//! Caps, the bulk recompute and the audit, on real PostgreSQL.

use std::sync::Arc;

use stagehand::{
    accounting::{Cap, Charge, Ledger, audit::audit, recompute},
    db::recompute::{Written, recompute_tables},
    ids::ShowId,
    model::{CORE, CoresGpus, TagType},
    sim::seed::{GB, LayerSpec, ShowSpec, SubSpec},
};

use crate::common::{
    Farm, book_options, book_with, job, placements_for_all_frames, small_farm, usage_counters,
};

/// One 8-core host and one job of four one-core frames.
fn four_frames_on_one_host() -> Farm {
    Farm::new(
        &small_farm(
            1,
            8,
            32,
            &[],
            vec![job("j", vec![LayerSpec::simple("l", "1-4", "general")])],
        ),
        |_| {},
    )
}

fn booked_cores(farm: &Farm, sql_where: &str) -> i64 {
    farm.client()
        .query_one(&format!("SELECT coalesce(sum(p.int_cores_reserved), 0)::bigint FROM proc p JOIN job j ON j.pk_job = p.pk_job {sql_where}"), &[])
        .unwrap()
        .get(0)
}

#[test]
fn subscription_burst_stops_bookings_exactly_at_the_limit() {
    let mut spec = small_farm(
        4,
        8,
        32,
        &[],
        vec![job("j", vec![LayerSpec::simple("l", "1-40", "general")])],
    );
    spec.shows[0].subs = vec![SubSpec {
        alloc: 0,
        size: 8,
        burst: 8,
    }];
    let farm = Farm::new(&spec, |_| {});
    farm.drain();
    assert_eq!(booked_cores(&farm, ""), 8 * i64::from(CORE));
    farm.assert_clean_audit();
}

#[test]
fn folder_and_job_caps_stop_bookings_exactly() {
    let mut spec = small_farm(
        4,
        8,
        32,
        &[],
        vec![job("j", vec![LayerSpec::simple("l", "1-40", "general")])],
    );
    spec.shows[0].folder_max_cores = 5;
    let farm = Farm::new(&spec, |_| {});
    farm.drain();
    assert_eq!(
        booked_cores(&farm, ""),
        5 * i64::from(CORE),
        "folder max cores"
    );

    let mut capped = job("capped", vec![LayerSpec::simple("l", "1-40", "general")]);
    capped.max_cores = 3;
    let farm = Farm::new(&small_farm(4, 8, 32, &[], vec![capped]), |_| {});
    farm.drain();
    assert_eq!(
        booked_cores(&farm, ""),
        3 * i64::from(CORE),
        "job max cores"
    );
    farm.assert_clean_audit();
}

/// Maxima of 0 hold, as Cuebot's dispatch reads them: a job at maximum cores 0 (how an
/// operator holds one) and a folder at 0 get nothing, while a folder at -1 (the column's
/// default) is unlimited and a job at maximum GPUs 0 still runs its CPU layers. Both zeros
/// used to mean "unlimited", and such a job was booked across the farm.
#[test]
fn a_maximum_of_zero_holds_a_job_or_folder() {
    let two_jobs = || {
        vec![
            job("held", vec![LayerSpec::simple("l", "1-4", "general")]),
            job("free", vec![LayerSpec::simple("l", "1-4", "general")]),
        ]
    };
    let farm = Farm::new(&small_farm(1, 8, 32, &[], two_jobs()), |_| {});
    farm.client()
        .batch_execute(
            "UPDATE job_resource jr SET int_max_cores = 0 FROM job j
              WHERE j.pk_job = jr.pk_job AND j.str_name LIKE '%held';
             UPDATE job_resource SET int_max_gpus = 0",
        )
        .unwrap();
    farm.drain();
    let booked =
        |farm: &Farm, name: &str| booked_cores(farm, &format!("WHERE j.str_name LIKE '%{name}'"));
    assert_eq!(booked(&farm, "held"), 0, "job at maximum 0");
    assert_eq!(
        booked(&farm, "free"),
        4 * i64::from(CORE),
        "job at GPU maximum 0"
    );
    farm.assert_clean_audit();

    let farm = Farm::new(&small_farm(1, 8, 32, &[], two_jobs()), |_| {});
    farm.client()
        .batch_execute("UPDATE folder_resource SET int_max_cores = 0")
        .unwrap();
    farm.drain();
    assert_eq!(booked_cores(&farm, ""), 0, "folder at maximum 0");
    farm.client()
        .batch_execute("UPDATE folder_resource SET int_max_cores = -1")
        .unwrap();
    farm.refresh();
    farm.drain();
    assert_eq!(booked_cores(&farm, ""), 8 * i64::from(CORE), "folder at -1");

    // The booking transaction's own guard, past the counters: a batch planned before its
    // job was held at maximum 0 books nothing.
    let farm = Farm::new(&small_farm(1, 8, 32, &[], two_jobs()), |_| {});
    let mut client = farm.client();
    let placements = placements_for_all_frames(&mut client, &farm.seeded.shows[0]);
    client
        .batch_execute("UPDATE job_resource SET int_max_cores = 0")
        .unwrap();
    assert_eq!(
        book_with(&mut client, &placements, &book_options()),
        0,
        "the guard holds it"
    );
}

#[test]
fn job_gpu_cap_stops_bookings_exactly() {
    let mut layer = LayerSpec::simple("g", "1-10", "general");
    layer.gpus = 1;
    layer.gpu_mem_kb = GB;
    let mut j = job("gpus", vec![layer]);
    j.max_gpus = 2;
    let mut spec = small_farm(2, 8, 32, &[], vec![j]);
    for h in &mut spec.hosts {
        h.gpus = 4;
        h.gpu_mem_kb = 32 * GB;
    }
    let farm = Farm::new(&spec, |_| {});
    farm.drain();
    let gpus: i64 = farm
        .client()
        .query_one(
            "SELECT coalesce(sum(int_gpus_reserved), 0)::bigint FROM proc",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(gpus, 2);
}

#[test]
fn every_limit_of_a_layer_must_have_room() {
    let mut spec = small_farm(2, 8, 32, &[], Vec::new());
    spec.limits = vec![("full".into(), 0), ("roomy".into(), 100)];
    let mut both = LayerSpec::simple("both", "1-4", "general");
    both.limits = vec![0, 1];
    let mut roomy = LayerSpec::simple("roomy", "1-4", "general");
    roomy.limits = vec![1];
    spec.jobs = vec![job("both", vec![both]), job("roomy", vec![roomy])];
    let farm = Farm::new(&spec, |_| {});
    farm.drain();
    assert_eq!(
        booked_cores(&farm, "WHERE j.str_name = 'both'"),
        0,
        "one full limit blocks the layer"
    );
    assert_eq!(
        booked_cores(&farm, "WHERE j.str_name = 'roomy'"),
        4 * i64::from(CORE)
    );
}

#[test]
fn an_unseeded_ledger_rejects() {
    let ledger = Ledger::new();
    ledger.set_burst(&"s".into(), &"a".into(), 1000);
    let charge = Charge {
        show: "s".into(),
        alloc: "a".into(),
        folder: "f".into(),
        job: "j".into(),
        amount: CoresGpus::new(100, 0),
    };
    assert_eq!(
        ledger.charge(&charge).err().map(|r| r.cap),
        Some(Cap::Subscription)
    );
}

#[test]
fn concurrent_passes_never_exceed_a_cap() {
    let mut spec = small_farm(8, 8, 32, &[("m", TagType::Manual)], Vec::new());
    // Two clusters (alloc tag, manual tag) over the same jobs, passes from two threads.
    spec.jobs = (0..6)
        .map(|i| {
            job(
                &format!("j{i}"),
                vec![LayerSpec::simple("l", "1-20", "general | m")],
            )
        })
        .collect();
    spec.shows[0].subs = vec![SubSpec {
        alloc: 0,
        size: 13,
        burst: 13,
    }];
    let farm = Arc::new(Farm::new(&spec, |_| {}));
    for _ in 0..3 {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let farm = Arc::clone(&farm);
                std::thread::spawn(move || farm.pass_all())
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        farm.refresh();
    }
    assert_eq!(booked_cores(&farm, ""), 13 * i64::from(CORE));
    farm.assert_clean_audit();
}

/// Releases every proc the way Cuebot does when frames finish.
fn finish_all(farm: &Farm) {
    farm.client()
        .batch_execute(
            "UPDATE frame SET str_state = 'SUCCEEDED', int_version = int_version + 1 WHERE str_state = 'RUNNING';
             UPDATE host h SET int_cores_idle = h.int_cores, int_mem_idle = h.int_mem;
             DELETE FROM proc;",
        )
        .unwrap();
}

#[test]
fn recompute_after_releases_frees_the_counters_and_writes_only_changed_rows() {
    let mut spec = small_farm(
        2,
        8,
        32,
        &[],
        vec![job("j", vec![LayerSpec::simple("l", "1-40", "general")])],
    );
    spec.shows[0].subs = vec![SubSpec {
        alloc: 0,
        size: 4,
        burst: 4,
    }];
    let farm = Farm::new(&spec, |_| {});
    assert_eq!(farm.drain(), 4);
    let mut client = farm.client();
    // Usage is current after the drain's own recomputes: nothing to write.
    assert_eq!(
        recompute_tables(&mut client, None).unwrap(),
        Written::default(),
        "no churn: unchanged rows are not written"
    );
    finish_all(&farm);
    // An instance rewrites only the rows of the shows it holds.
    assert_eq!(
        recompute_tables(&mut client, Some(&[])).unwrap(),
        Written::default(),
        "a show held by another instance is left to it"
    );
    // The releases changed usage: exactly the changed rows are written, once.
    let held = [ShowId::from(farm.seeded.shows[0].as_str())];
    let after = recompute_tables(&mut client, Some(&held)).unwrap();
    assert_eq!(
        (
            after.subscription,
            after.job_resource,
            after.layer_resource,
            after.folder_resource,
            after.point
        ),
        (1, 1, 1, 1, 1)
    );
    recompute::round(&mut client, &farm.shared.ledger, true, None).unwrap();
    let booked = farm.shared.ledger.booked();
    assert!(
        booked.subs.values().all(CoresGpus::is_zero),
        "counters freed: {:?}",
        booked.subs
    );
    let written = recompute_tables(&mut client, None).unwrap();
    assert_eq!(written, Written::default());
    let sub_cores: i64 = client
        .query_one("SELECT sum(int_cores)::bigint FROM subscription", &[])
        .unwrap()
        .get(0);
    assert_eq!(sub_cores, 0);
    // Booking resumes up to the burst again.
    farm.refresh();
    assert_eq!(farm.drain(), 4);
    farm.assert_clean_audit();
}

/// Cuebot releases a proc and takes it off `layer_resource` in one transaction; the recompute
/// reaches the row while that transaction holds it. Counted in the statement that waited for
/// it (the statement's snapshot still had the proc), the recompute wrote the proc back: the
/// counter read 100 with no proc left. Locked first and counted after, it is exact (or, when
/// its wait runs out, left as Cuebot wrote it for the next round).
#[test]
fn a_recompute_does_not_undo_cuebots_release_committed_under_it() {
    let spec = small_farm(
        1,
        8,
        32,
        &[],
        vec![job("j", vec![LayerSpec::simple("l", "1", "general")])],
    );
    let farm = Farm::new(&spec, |_| {});
    assert_eq!(farm.drain(), 1);
    let mut client = farm.client();
    client
        .batch_execute("UPDATE layer_resource SET int_cores = 999")
        .unwrap();
    let mut cuebot = farm.client();
    let mut release = cuebot.transaction().unwrap();
    release
        .batch_execute(
            "UPDATE layer_resource lr SET int_cores = lr.int_cores - p.int_cores_reserved
               FROM proc p WHERE p.pk_layer = lr.pk_layer;
             DELETE FROM proc",
        )
        .unwrap();
    let mut recompute_client = farm.client();
    let recompute =
        std::thread::spawn(move || recompute_tables(&mut recompute_client, None).unwrap());
    // The recompute queues behind the release (the old statement waited for it to the end;
    // the lock-first path waits a bounded while, and may have given up already).
    crate::common::wait_for_lock_waiters(&mut client, 1);
    release.commit().unwrap();
    recompute.join().unwrap();
    let cores: i64 = client
        .query_one("SELECT int_cores::bigint FROM layer_resource", &[])
        .unwrap()
        .get(0);
    assert!(
        cores == 0 || cores == 899,
        "exact (0), or Cuebot's value left for the next round (899); not the proc written back: {cores}"
    );
}

#[test]
fn verify_triggers_keep_their_caps_through_a_recompute() {
    let farm = four_frames_on_one_host();
    assert_eq!(farm.drain(), 4);
    let mut client = farm.client();
    // An operator lowers the job's cap below what is booked, and the burst too.
    client
        .execute("UPDATE job_resource SET int_max_cores = 100", &[])
        .unwrap();
    client
        .execute("UPDATE subscription SET int_burst = 200", &[])
        .unwrap();
    recompute_tables(&mut client, None).expect("the recompute goes past the verify triggers");
    let (max, cores): (i32, i64) = {
        let r = client
            .query_one("SELECT int_max_cores, int_cores FROM job_resource", &[])
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((max, cores), (100, 400), "cap intact, usage recomputed");
    let (burst, sub_cores): (i64, i32) = {
        let r = client
            .query_one("SELECT int_burst, int_cores FROM subscription", &[])
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((burst, sub_cores), (200, 400));
}

#[test]
fn the_audit_finds_a_planted_violation() {
    let farm = four_frames_on_one_host();
    farm.drain();
    farm.assert_clean_audit();
    let mut client = farm.client();
    client
        .execute("UPDATE host SET int_cores_idle = int_cores_idle + 100", &[])
        .unwrap();
    let violations = audit(&mut client, None).unwrap();
    assert!(
        violations.iter().any(|v| v.starts_with("host ledger")),
        "{violations:?}"
    );
}

#[test]
fn saturation_workload_ends_at_exactly_the_bursts() {
    let mut spec = stagehand::sim::workload::saturation(0.1, 9);
    // Keep the shape (bursts far below demand) at a test's size.
    spec.shows = vec![ShowSpec {
        name: "saturation".into(),
        managed: true,
        subs: (0..3)
            .map(|a| SubSpec {
                alloc: a,
                size: 30,
                burst: 30,
            })
            .collect(),
        folder_max_cores: 0,
    }];
    let farm = Farm::new(&spec, |_| {});
    farm.drain();
    let rows = farm
        .client()
        .query(
            "SELECT s.int_burst::bigint, coalesce(sum(p.int_cores_reserved), 0)::bigint FROM subscription s
               LEFT JOIN host h ON h.pk_alloc = s.pk_alloc LEFT JOIN proc p ON p.pk_host = h.pk_host
              GROUP BY s.pk_subscription, s.int_burst",
            &[],
        )
        .unwrap();
    for r in rows {
        assert_eq!(
            r.get::<_, i64>(1),
            r.get::<_, i64>(0),
            "subscription booked exactly to its burst"
        );
    }
    farm.assert_clean_audit();
}

/// Two jobs of four one-core frames each on two hosts, drained: both jobs hold procs, so
/// both have a `job_resource` row the recompute writes.
fn two_jobs_booked() -> Farm {
    let spec = small_farm(
        2,
        8,
        32,
        &[],
        vec![
            job("a", vec![LayerSpec::simple("l", "1-4", "general")]),
            job("b", vec![LayerSpec::simple("l", "1-4", "general")]),
        ],
    );
    let farm = Farm::new(&spec, |_| {});
    assert!(farm.drain() >= 2);
    farm
}

/// A booking holds its cap rows FOR SHARE until it commits, and during a fill the bookings of
/// several threads overlap on the same rows. The recompute must never hold one cap row while
/// it waits for another, or every booking of the rows it holds queues behind it: here a
/// booking in flight holds the second job's row; the recompute must still write the first
/// job's row at once (and leave it free for the next booking), give up on the held one within
/// its budget, and write that one on the next round, after the booking committed.
#[test]
fn a_recompute_never_holds_a_cap_row_while_it_waits_for_another() {
    let farm = two_jobs_booked();
    let mut client = farm.client();
    let keys: Vec<String> = client
        .query(
            "SELECT jr.pk_job_resource FROM job_resource jr
              WHERE EXISTS (SELECT 1 FROM proc p WHERE p.pk_job = jr.pk_job)
              ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(keys.len(), 2, "both jobs booked");
    client
        .execute("UPDATE job_resource SET int_cores = 0", &[])
        .unwrap();
    // A booking in flight: the second row (in key order) share-locked, not committed.
    let mut booking = farm.client();
    let mut in_flight = booking.transaction().unwrap();
    in_flight
        .execute(
            "SELECT 1 FROM job_resource WHERE pk_job_resource = $1 FOR SHARE",
            &[&keys[1]],
        )
        .unwrap();
    let mut recompute_client = farm.client();
    let recompute = std::thread::spawn(move || recompute_tables(&mut recompute_client, None));
    let written = recompute.join().unwrap().unwrap();
    assert_eq!(
        written.job_resource, 1,
        "the free row written, the held one left"
    );
    // Another booking takes the first row at once: the recompute holds nothing.
    let mut next = farm.client();
    let mut tx = next.transaction().unwrap();
    tx.batch_execute("SET LOCAL lock_timeout = 1000").unwrap();
    tx.execute(
        "SELECT 1 FROM job_resource WHERE pk_job_resource = $1 FOR SHARE",
        &[&keys[0]],
    )
    .expect("the first row is free once the recompute returned");
    tx.commit().unwrap();
    in_flight.commit().unwrap();
    let written = recompute_tables(&mut client, None).unwrap();
    assert_eq!(
        written.job_resource, 1,
        "the row held before is written now"
    );
    let stale: i64 = client
        .query_one(
            "SELECT count(*) FROM job_resource jr WHERE jr.int_cores <>
                (SELECT coalesce(sum(p.int_cores_reserved), 0) FROM proc p WHERE p.pk_job = jr.pk_job)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(stale, 0, "every job's usage exact");
}

/// A show at its burst on a farm whose frames complete (Cuebot gives the cores back in the
/// database only, so the counters learn it by a re-sync): with the recompute an hour away,
/// the frames after the first wave still book, because a pass that finds the subscription
/// full by its counter asks for a re-sync of the counters alone. The burst holds throughout.
#[test]
fn a_show_at_its_burst_books_again_as_its_frames_complete() {
    use stagehand::sim::{
        scenario::{Run, job, layer},
        seed::FarmSpec,
    };
    use std::time::Duration;
    // 8 cores of hosts, a burst of 4: the show is at its burst with room on the hosts.
    let mut spec = FarmSpec::single(2, 4, 16, 4);
    let frames = 24;
    spec.jobs = vec![job(
        0,
        "wave",
        50,
        vec![layer("l", frames, Duration::from_millis(300))],
    )];
    let mut run = Run::start(
        &spec,
        |_| Ok(()),
        |c| c.accounting.recompute_interval = Duration::from_secs(3600),
    )
    .unwrap();
    let mut peak = 0;
    let done = crate::service::wait(Duration::from_secs(60), || {
        peak = peak.max(run.busy().unwrap());
        let left: i64 = run
            .client
            .query_one(
                "SELECT count(*) FROM frame WHERE str_state <> 'SUCCEEDED'",
                &[],
            )
            .unwrap()
            .get(0);
        left == 0
    });
    assert!(done, "every frame ran, a burst-full wave after another");
    assert!(peak <= 4 * i64::from(CORE), "the burst held: {peak}");
    let violations = run.finish().unwrap();
    assert!(violations.is_empty(), "{violations:?}");
}

/// Bookings that overlap keep a cap row share-locked without a gap: each joins the row's
/// lock before the last one commits. A lock timeout bounds each wait of the recompute for
/// that row, not the relay of waits, so the recompute waited as long as the relay lasted
/// (1.7 s a call at 10× the drain farm) and the counters re-syncs that passes ask for waited
/// behind it. It must give up on the row within its budget, while the relay still runs.
#[test]
fn a_recompute_gives_up_on_a_row_a_relay_of_bookings_keeps_locked() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let farm = two_jobs_booked();
    let mut client = farm.client();
    let held: String = client
        .query_one(
            "SELECT jr.pk_job_resource FROM job_resource jr
              WHERE EXISTS (SELECT 1 FROM proc p WHERE p.pk_job = jr.pk_job) ORDER BY 1 LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    client
        .execute("UPDATE job_resource SET int_cores = 0", &[])
        .unwrap();
    // The relay: two sessions take turns, each locking the row before the other commits.
    let relay_done = Arc::new(AtomicBool::new(false));
    let mut sessions = [farm.client(), farm.client()];
    let key = held.clone();
    let done = Arc::clone(&relay_done);
    let relay = std::thread::spawn(move || {
        let [a, b] = &mut sessions;
        let lock = "SELECT 1 FROM job_resource WHERE pk_job_resource = $1 FOR SHARE";
        a.batch_execute("BEGIN").unwrap();
        a.execute(lock, &[&key]).unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(6);
        let mut turn = 0;
        while std::time::Instant::now() < until {
            let (holder, next) = if turn % 2 == 0 {
                (&mut *a, &mut *b)
            } else {
                (&mut *b, &mut *a)
            };
            next.batch_execute("BEGIN").unwrap();
            next.execute(lock, &[&key]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(30));
            holder.batch_execute("COMMIT").unwrap();
            std::thread::sleep(std::time::Duration::from_millis(30));
            turn += 1;
        }
        let last = if turn % 2 == 0 { a } else { b };
        last.batch_execute("COMMIT").unwrap();
        done.store(true, Ordering::SeqCst);
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    let written = recompute_tables(&mut client, None).unwrap();
    assert!(
        !relay_done.load(Ordering::SeqCst),
        "the recompute returned only when the relay ended"
    );
    assert_eq!(
        written.job_resource, 1,
        "the free row written, the relayed one left"
    );
    relay.join().unwrap();
    let written = recompute_tables(&mut client, None).unwrap();
    assert_eq!(
        written.job_resource, 1,
        "the row is written once the relay ended"
    );
}

/// A show handed back to Cuebot with a launch still unresolved owes its recount until that
/// launch is settled: an undo after the recount takes off a proc the recount counted, and
/// Cuebot's counters would read high by it for good (a job at a small maximum never ran
/// again). So the debt is paid only by a recount that began with no launch unresolved.
#[test]
fn a_recount_owed_at_a_hand_back_waits_for_the_shows_unresolved_launches() {
    let farm = four_frames_on_one_host();
    assert_eq!(farm.pass_all(), 4);
    let mut client = farm.client();
    client
        .batch_execute(
            "INSERT INTO stagehand.show_lease (pk_show) SELECT pk_show FROM show;
             INSERT INTO stagehand.pending_launch (pk_proc, pk_frame, pk_show, int_version)
                  SELECT pk_proc, pk_frame, pk_show, 1 FROM proc;
             UPDATE show SET b_scheduler_managed = false",
        )
        .unwrap();
    let owed = |c: &mut postgres::Client| -> bool {
        c.query_one("SELECT b_recount FROM stagehand.show_lease", &[])
            .unwrap()
            .get(0)
    };
    let pay = |c: &mut postgres::Client| stagehand::db::recompute::recount_owed(c, 15.0).unwrap();
    assert!(pay(&mut client).is_some());
    assert_eq!(usage_counters(&mut client), (400, 400, 400));
    assert!(owed(&mut client), "four launches unresolved: still owed");
    // One launch failed and was undone; the others were confirmed.
    client
        .batch_execute(
            "DELETE FROM proc WHERE pk_proc = (SELECT min(pk_proc) FROM proc);
             DELETE FROM stagehand.pending_launch",
        )
        .unwrap();
    assert!(pay(&mut client).is_some());
    assert_eq!(usage_counters(&mut client), (300, 300, 300));
    assert!(!owed(&mut client), "paid");
    assert!(pay(&mut client).is_none(), "nothing owed");
}

/// A killed job's procs stay in its folder's usage until they are released, as Cuebot counts
/// them (it takes each released proc off the folder whatever its job's state) and as the
/// booking's folder guard does. Left out by the recompute, they were taken off twice once
/// Cuebot released them, and a show handed back read low for good.
#[test]
fn the_folder_usage_counts_the_procs_of_a_finished_job_until_they_go() {
    let farm = four_frames_on_one_host();
    assert_eq!(farm.pass_all(), 4);
    let mut client = farm.client();
    client
        .batch_execute("UPDATE job SET str_state = 'FINISHED'")
        .unwrap();
    recompute_tables(&mut client, None).unwrap();
    let folder: i64 = client
        .query_one("SELECT sum(int_cores)::bigint FROM folder_resource", &[])
        .unwrap()
        .get(0);
    assert_eq!(folder, 400);
}

/// A recount that finds one show's row locked keeps that show's debt only: the other show
/// handed back with it is paid. Counted for all owed shows together, one locked row (Cuebot
/// dispatching the show it was just handed) kept every show's debt and its recount running.
#[test]
fn a_locked_row_keeps_only_its_own_shows_recount_debt() {
    let mut spec = small_farm(
        2,
        8,
        32,
        &[],
        vec![job("a", vec![LayerSpec::simple("l", "1-2", "general")])],
    );
    let mut second = spec.shows[0].clone();
    second.name = "other".into();
    spec.shows.push(second);
    let mut b = job("b", vec![LayerSpec::simple("l", "1-2", "general")]);
    b.show = 1;
    spec.jobs.push(b);
    let farm = Farm::new(&spec, |_| {});
    assert_eq!(farm.pass_all(), 4);
    let mut client = farm.client();
    client
        .batch_execute(
            "INSERT INTO stagehand.show_lease (pk_show) SELECT pk_show FROM show;
             UPDATE show SET b_scheduler_managed = false",
        )
        .unwrap();
    let mut cuebot = farm.client();
    let mut lock = cuebot.transaction().unwrap();
    lock.batch_execute(
        "SELECT 1 FROM subscription s JOIN show sh ON sh.pk_show = s.pk_show
          WHERE sh.str_name = 'other' FOR UPDATE",
    )
    .unwrap();
    stagehand::db::recompute::recount_owed(&mut client, 15.0).unwrap();
    let owed: Vec<String> = client
        .query(
            "SELECT sh.str_name FROM stagehand.show_lease l JOIN show sh ON sh.pk_show = l.pk_show
              WHERE l.b_recount",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        owed,
        vec!["other".to_owned()],
        "only the locked show still owes"
    );
    lock.rollback().unwrap();
}
