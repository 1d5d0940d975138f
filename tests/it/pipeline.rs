//! The booking pipeline on real PostgreSQL: one test per rule.

use std::time::Duration;

use stagehand::{
    db::{
        DbError,
        booking::{
            BatchOutcome, BookOptions, GuardLoss, Placement, book_batch, book_batch_prepared,
        },
        session::Session,
    },
    model::{CORE, TagType, ThreadMode},
    sim::{
        fake_rqd::{Behaviour, FakeRqd, FleetOptions},
        seed::{GB, HostSpec, LayerSpec},
    },
};

use crate::common::{Farm, book_options, job, placements_for_all_frames, small_farm};

fn one_layer(layer: LayerSpec) -> Vec<stagehand::sim::seed::JobSpec> {
    vec![job("j", vec![layer])]
}

/// One host of `cores` cores and one job of frames `range`, for the tests that call the
/// booking directly.
fn one_host(cores: u32, range: &str) -> Farm {
    Farm::new(
        &small_farm(
            1,
            cores,
            32,
            &[],
            one_layer(LayerSpec::simple("l", range, "general")),
        ),
        |_| {},
    )
}

#[test]
fn drains_a_small_farm_with_a_clean_audit() {
    let spec = small_farm(
        4,
        8,
        32,
        &[],
        vec![job(
            "j1",
            vec![LayerSpec::simple("render", "1-10", "general")],
        )],
    );
    let farm = Farm::new(&spec, |_| {});
    assert_eq!(farm.drain(), 10);
    assert_eq!(farm.frames_in("RUNNING"), 10);
    farm.assert_clean_audit();
}

#[test]
fn tags_overlap_with_whitespace_and_mismatches_book_nothing() {
    let spec = small_farm(
        1,
        8,
        32,
        &[("fx", TagType::Manual)],
        vec![
            job(
                "match",
                vec![LayerSpec::simple("l", "1-2", "  nothere |  fx ")],
            ),
            job("nomatch", vec![LayerSpec::simple("l", "1-2", "elsewhere")]),
        ],
    );
    let farm = Farm::new(&spec, |_| {});
    assert_eq!(farm.drain(), 2);
    let booked: i64 = farm
        .client()
        .query_one("SELECT count(*) FROM proc p JOIN job j ON j.pk_job = p.pk_job WHERE j.str_name = 'match'", &[])
        .unwrap()
        .get(0);
    assert_eq!(booked, 2);
}

#[test]
fn os_must_match_when_the_job_names_one() {
    let mut rocky = job("rocky", vec![LayerSpec::simple("l", "1-2", "general")]);
    rocky.os = "rocky9".into();
    let spec = small_farm(2, 8, 32, &[], vec![rocky]);
    let farm = Farm::new(&spec, |_| {});
    assert_eq!(farm.drain(), 0, "no host runs rocky9");
    farm.client()
        .execute("UPDATE host_stat SET str_os = 'rocky9'", &[])
        .unwrap();
    farm.refresh();
    assert_eq!(farm.drain(), 2);
}

#[test]
fn each_floor_is_respected() {
    type Tweak = Box<dyn Fn(&mut LayerSpec)>;
    let cases: Vec<(&str, Tweak)> = vec![
        ("cores", Box::new(|l| l.cores_min = i64::from(16 * CORE))),
        ("memory", Box::new(|l| l.mem_kb = 64 * GB)),
        ("gpus", Box::new(|l| l.gpus = 1)),
        ("gpu memory", Box::new(|l| l.gpu_mem_kb = GB)),
    ];
    for (name, grow) in cases {
        let mut layer = LayerSpec::simple("l", "1", "general");
        grow(&mut layer);
        let farm = Farm::new(&small_farm(1, 8, 32, &[], one_layer(layer)), |_| {});
        assert_eq!(farm.drain(), 0, "{name}: no 8-core/32 GB/no-GPU host fits");
    }
}

fn host_in_mode(mode: ThreadMode) -> stagehand::sim::seed::FarmSpec {
    let mut spec = small_farm(1, 16, 64, &[], Vec::new());
    spec.hosts[0].thread_mode = mode;
    spec
}

#[test]
fn thread_modes() {
    // ALL: every idle core to a threadable frame; non-threadable frames refused.
    let mut spec = host_in_mode(ThreadMode::All);
    spec.jobs = one_layer(LayerSpec::simple("l", "1", "general"));
    let farm = Farm::new(&spec, |_| {});
    assert_eq!(farm.drain(), 1);
    let cores: i64 = farm
        .client()
        .query_one("SELECT int_cores_reserved FROM proc", &[])
        .unwrap()
        .get(0);
    assert_eq!(cores, 1600);
    let mut spec = host_in_mode(ThreadMode::All);
    let mut l = LayerSpec::simple("l", "1", "general");
    l.threadable = false;
    spec.jobs = one_layer(l);
    assert_eq!(Farm::new(&spec, |_| {}).drain(), 0);
    // VARIABLE: a one-core request gets two.
    let mut spec = host_in_mode(ThreadMode::Variable);
    spec.jobs = one_layer(LayerSpec::simple("l", "1", "general"));
    let farm = Farm::new(&spec, |_| {});
    farm.drain();
    let cores: i64 = farm
        .client()
        .query_one("SELECT int_cores_reserved FROM proc", &[])
        .unwrap()
        .get(0);
    assert_eq!(cores, 200);
    // AUTO: cores balanced against memory (16 GB on a 16-core/64 GB host = 4 cores).
    let mut spec = host_in_mode(ThreadMode::Auto);
    let mut l = LayerSpec::simple("l", "1", "general");
    l.mem_kb = 16 * GB;
    spec.jobs = one_layer(l);
    let farm = Farm::new(&spec, |_| {});
    farm.drain();
    let cores: i64 = farm
        .client()
        .query_one("SELECT int_cores_reserved FROM proc", &[])
        .unwrap()
        .get(0);
    assert_eq!(cores, 400);
}

/// A layer whose start time has not come is no work: not for the passes, and not for the
/// active-work scan either, whose count keeps clusters awake and makes shows hungry for fair
/// share (a delayed layer counted there kept its show hungry for hours with nothing to book).
#[test]
fn start_after_holds_a_layer_back() {
    let farm = one_host(8, "1-2");
    let pool = farm.db.pool();
    let general_waiting = || -> i64 {
        let mut session = pool.get().unwrap();
        stagehand::db::jobs::active_tags(&mut session)
            .unwrap()
            .into_iter()
            .filter(|((_, _, tag), _)| tag == "general")
            .map(|(_, work)| work.waiting)
            .sum()
    };
    assert_eq!(general_waiting(), 2);
    farm.client()
        .execute(
            "UPDATE layer SET ts_start_after = now() + interval '1 hour'",
            &[],
        )
        .unwrap();
    assert_eq!(general_waiting(), 0, "a delayed layer is no active work");
    assert_eq!(farm.drain(), 0);
    farm.client()
        .execute(
            "UPDATE layer SET ts_start_after = now() - interval '1 second'",
            &[],
        )
        .unwrap();
    assert_eq!(general_waiting(), 2, "its time came");
    assert_eq!(farm.drain(), 2);
}

#[test]
fn priority_and_dispatch_order() {
    let mut low = job("low", vec![LayerSpec::simple("l", "1-3", "general")]);
    low.priority = 1;
    let mut high = job("high", vec![LayerSpec::simple("l", "1-3", "general")]);
    high.priority = 500;
    // One one-core host: one frame per pass.
    let farm = Farm::new(&small_farm(1, 1, 32, &[], vec![low, high]), |_| {});
    assert_eq!(farm.pass_all(), 1);
    let (name, frame): (String, String) = {
        let r = farm
            .client()
            .query_one("SELECT j.str_name, f.str_name FROM proc p JOIN job j ON j.pk_job = p.pk_job JOIN frame f ON f.pk_frame = p.pk_frame", &[])
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(name, "high");
    assert_eq!(frame, "0001-l", "frames book in dispatch order");
}

/// `n` jobs of priority 500 whose only layer is tagged for no host of the farm.
fn high_jobs_with_no_work_here(n: usize) -> Vec<stagehand::sim::seed::JobSpec> {
    (0..n)
        .map(|i| {
            let mut j = job(
                &format!("other{i:03}"),
                vec![LayerSpec::simple("l", "1", "elsewhere")],
            );
            j.priority = 500;
            j
        })
        .collect()
}

/// The pass's job query looks at the show's first jobs in order (four per job it takes)
/// and, when those have no work the cluster's tags allow, asks from the other side (the
/// waiting layers): a low-priority job behind 120 higher ones with nothing for this cluster
/// is still found in the first pass.
#[test]
fn a_job_behind_many_without_work_for_the_cluster_is_found() {
    let mut jobs = high_jobs_with_no_work_here(120);
    let mut late = job("late", vec![LayerSpec::simple("l", "1-2", "general")]);
    late.priority = 1;
    jobs.push(late);
    let farm = Farm::new(&small_farm(1, 8, 32, &[], jobs), |_| {});
    assert_eq!(farm.pass_all(), 2);
    assert_eq!(procs_of(&farm, "late"), 2);
}

/// The show's first job in order is at its maximum cores and books nothing more; the pass
/// must not spend its page on it while a later job waits with the host free. The pass took
/// the capped job again and again (its page here is one job; 20 by default, and 20 capped
/// jobs at the head of a show held back every job behind them).
#[test]
fn a_job_at_its_maximum_does_not_hold_back_the_jobs_behind_it() {
    let mut capped = job("capped", vec![LayerSpec::simple("l", "1-5", "general")]);
    capped.priority = 500;
    capped.max_cores = 1;
    let late = job("late", vec![LayerSpec::simple("l", "1", "general")]);
    let farm = Farm::new(&small_farm(1, 8, 32, &[], vec![capped, late]), |c| {
        c.scheduler.max_jobs_per_pass = 1;
    });
    assert_eq!(farm.drain(), 2);
    let booked = |name: &str| procs_of(&farm, name);
    assert_eq!((booked("capped"), booked("late")), (1, 1));
    farm.assert_clean_audit();
}

/// A layer whose limit is full must not take the host in the pass: its frames lose at the
/// batch's limit guard, and a lower job that could have used the room got none, pass after
/// pass. Before the pass counted the limits' room, the low job stayed WAITING.
#[test]
fn a_layer_at_its_limit_leaves_the_room_to_the_jobs_after_it() {
    let mut limited = LayerSpec::simple("l", "1-10", "general");
    limited.limits = vec![0];
    let mut high = job("high", vec![limited]);
    high.priority = 500;
    let low = job("low", vec![LayerSpec::simple("l", "1", "general")]);
    let mut spec = small_farm(1, 4, 32, &[], vec![high, low]);
    spec.limits = vec![("lic".into(), 1)];
    let farm = Farm::new(&spec, |_| {});
    assert_eq!(farm.drain(), 2);
    let booked = |name: &str| procs_of(&farm, name);
    assert_eq!((booked("high"), booked("low")), (1, 1));
    farm.assert_clean_audit();
}

/// Every job of the show is in a folder at its maximum: the pass leaves them out and says
/// `Saturated` (room under the cap frees as frames end, and a saturated cluster wakes for
/// that), not `NoJobs`, which sleeps until new work is counted.
#[test]
fn a_pass_whose_jobs_are_all_at_their_folders_maximum_is_saturated() {
    let jobs = vec![
        job("a", vec![LayerSpec::simple("l", "1-3", "general")]),
        job("b", vec![LayerSpec::simple("l", "1-3", "general")]),
    ];
    let mut spec = small_farm(1, 8, 32, &[], jobs);
    spec.shows[0].folder_max_cores = 2;
    let farm = Farm::new(&spec, |_| {});
    assert_eq!(farm.drain(), 2);
    let cluster = farm
        .clusters()
        .into_iter()
        .find(|c| c.tags.iter().any(|t| t == "general"))
        .unwrap();
    assert_eq!(
        farm.pass(&cluster),
        stagehand::cluster::feed::PassResult::Saturated
    );
    farm.assert_clean_audit();
}

/// Late in a drain the show's first jobs have no work left and the pass reads from the
/// waiting layers' side; the jobs that read finds beyond its own pass are kept as the
/// cluster's hint, so the next passes take them in order without reading the layers again.
#[test]
fn passes_after_a_layer_side_read_take_the_next_jobs_in_order() {
    let mut jobs = high_jobs_with_no_work_here(60);
    for (name, priority) in [("late_a", 30), ("late_b", 20), ("late_c", 10)] {
        let mut late = job(name, vec![LayerSpec::simple("l", "1", "general")]);
        late.priority = priority;
        jobs.push(late);
    }
    let farm = Farm::new(&small_farm(1, 8, 32, &[], jobs), |c| {
        c.scheduler.max_jobs_per_pass = 1;
    });
    let cluster = farm
        .clusters()
        .into_iter()
        .find(|c| c.tags.iter().any(|t| t == "general"))
        .unwrap();
    let booked = |name: &str| procs_of(&farm, name);
    for (pass, name) in ["late_a", "late_b", "late_c"].into_iter().enumerate() {
        assert_eq!(
            farm.pass(&cluster),
            stagehand::cluster::feed::PassResult::Booked(1)
        );
        assert_eq!(booked(name), 1, "pass {pass} books {name}");
    }
    farm.assert_clean_audit();
}

/// Work whose job another booking thread holds is not "no work": the pass says `Busy` (the
/// feed gives the cluster its next turn 20 ms later) instead of `NoJobs` (30 s asleep) or
/// `Saturated` (3 s), and a job behind the held ones is taken in its place.
#[test]
fn a_cluster_whose_jobs_are_held_elsewhere_is_busy_not_asleep() {
    use stagehand::{cluster::feed::PassResult, ids::JobId};
    let mut jobs = vec![job("first", vec![LayerSpec::simple("l", "1-2", "general")])];
    jobs[0].priority = 500;
    let farm = Farm::new(&small_farm(1, 8, 32, &[], jobs), |_| {});
    let first: JobId = farm
        .client()
        .query_one("SELECT pk_job FROM job WHERE str_name = 'first'", &[])
        .unwrap()
        .get(0);
    let cluster = farm.clusters().into_iter().next().unwrap();
    farm.shared.busy_jobs.insert(first.clone());
    let result = farm.pass(&cluster);
    assert_eq!(result, PassResult::Busy);
    farm.shared.busy_jobs.remove(&first);
    assert_eq!(farm.pass(&cluster), PassResult::Booked(2));
}

/// A job behind a held one is booked in the same pass: the held job does not take a slot of
/// `max_jobs_per_pass`.
#[test]
fn a_held_job_does_not_take_a_slot_of_the_pass() {
    use stagehand::{cluster::feed::PassResult, ids::JobId};
    let mut held = job("held", vec![LayerSpec::simple("l", "1-2", "general")]);
    held.priority = 500;
    let next = job("next", vec![LayerSpec::simple("l", "1-3", "general")]);
    let farm = Farm::new(&small_farm(1, 8, 32, &[], vec![held, next]), |c| {
        c.scheduler.max_jobs_per_pass = 1;
    });
    let id: JobId = farm
        .client()
        .query_one("SELECT pk_job FROM job WHERE str_name = 'held'", &[])
        .unwrap()
        .get(0);
    farm.shared.busy_jobs.insert(id);
    let cluster = farm.clusters().into_iter().next().unwrap();
    assert_eq!(farm.pass(&cluster), PassResult::Booked(3));
    farm.assert_clean_audit();
}

/// With spare connections and nothing else committing, a batch of many jobs is split by job
/// and committed side by side; every frame books once and the audit stays clean.
#[test]
fn a_batch_split_over_spare_connections_books_every_frame_once() {
    let jobs: Vec<_> = (0..8)
        .map(|i| {
            job(
                &format!("j{i}"),
                vec![LayerSpec::simple("l", "1-40", "general")],
            )
        })
        .collect();
    let farm = Farm::new(&small_farm(40, 16, 64, &[], jobs), |c| {
        c.scheduler.batch_size = 320;
        c.scheduler.batches_in_flight = 4;
        c.scheduler.max_jobs_per_pass = 8;
    });
    let parts_before = stagehand::metrics::BATCH_PARTS.get_sample_count();
    assert_eq!(farm.drain(), 320);
    assert!(stagehand::metrics::BATCH_PARTS.get_sample_count() > parts_before);
    assert_eq!(farm.frames_in("RUNNING"), 320);
    farm.assert_clean_audit();
}

#[test]
fn a_frame_stolen_mid_batch_drops_alone() {
    let farm = one_host(8, "1-2");
    let placements = placements_for_all_frames(&mut farm.client(), &farm.seeded.shows[0]);
    // Another writer (Cuebot, another scheduler) changes the first frame after we read it.
    farm.client()
        .execute(
            "UPDATE frame SET int_version = int_version + 1 WHERE pk_frame = $1",
            &[&placements[0].frame],
        )
        .unwrap();
    let outcome = book_batch(
        &mut farm.client(),
        &placements,
        &BookOptions {
            mem_reserved_min_kb: 0,
            ping_timeout_secs: 3600.0,
            no_retry_exit_statuses: Vec::new(),
            record_launches: None,
            licenses: None,
        },
        None,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(outcome.results[0], Err(GuardLoss::Frame));
    assert!(outcome.results[1].is_ok());
    farm.assert_clean_audit();
}

/// A pooled session prepares the booking's statements once and keeps them, and the booking
/// runs them on generic plans from the first batch: the frame and host guards must hold on
/// those plans.
#[test]
fn a_pooled_session_keeps_the_booking_prepared_and_every_guard() {
    let farm = one_host(16, "1-12");
    let placements = placements_for_all_frames(&mut farm.client(), &farm.seeded.shows[0]);
    let host = placements[0].host.to_string();
    let pool = farm.db.pool();
    let mut conn = pool.get().unwrap();
    let mut kept = Vec::new();
    for (i, p) in placements.iter().enumerate() {
        let mut other = farm.client();
        let idle: i64 = other
            .query_one(
                "SELECT int_cores_idle::bigint FROM host WHERE pk_host = $1",
                &[&host],
            )
            .unwrap()
            .get(0);
        match i {
            // Another writer moves the frame on after the pass read it.
            8 => other.execute(
                "UPDATE frame SET int_version = int_version + 1 WHERE pk_frame = $1",
                &[&p.frame],
            ),
            // Another writer fills the host (given back below).
            10 => other.execute(
                "UPDATE host SET int_cores_idle = 0 WHERE pk_host = $1",
                &[&host],
            ),
            _ => Ok(0),
        }
        .unwrap();
        let (outcome, n) = book_on(&mut conn, p);
        let outcome = outcome.unwrap();
        kept.push(n);
        let want = match i {
            8 => Err(GuardLoss::Frame),
            10 => Err(GuardLoss::HostCapacity),
            _ => Ok(1),
        };
        assert_eq!(outcome.results[0].map(|_| 1), want, "batch {i}");
        if i == 10 {
            other
                .execute(
                    "UPDATE host SET int_cores_idle = $2 WHERE pk_host = $1",
                    &[&host, &idle],
                )
                .unwrap();
        }
    }
    assert!(kept[0] > 0, "the first batch prepared its statements");
    assert!(
        kept.iter().all(|&n| n == kept[0]),
        "kept and reused: {kept:?}"
    );
    let plans = conn
        .query_one(
            "SELECT sum(generic_plans)::bigint, sum(custom_plans)::bigint FROM pg_prepared_statements",
            &[],
        )
        .unwrap();
    let (generic, custom): (i64, i64) = (plans.get(0), plans.get(1));
    assert!(
        generic > 0 && custom == 0,
        "generic {generic}, custom {custom}"
    );
    assert_eq!(farm.frames_in("RUNNING"), 10);
    assert_eq!(farm.frames_in("WAITING"), 2);
    farm.assert_clean_audit();
}

/// A server that dropped the connection's prepared statements (`DISCARD ALL`, a pooler):
/// the batch that finds out fails whole, and the next one prepares them again.
#[test]
fn a_session_whose_statements_the_server_dropped_prepares_them_again() {
    let farm = one_host(8, "1-2");
    let placements = placements_for_all_frames(&mut farm.client(), &farm.seeded.shows[0]);
    let pool = farm.db.pool();
    let mut conn = pool.get().unwrap();
    let (first, kept) = book_on(&mut conn, &placements[0]);
    assert_eq!(first.unwrap().booked(), 1);
    assert!(kept > 0);
    conn.batch_execute("DEALLOCATE ALL").unwrap();
    let (lost, kept) = book_on(&mut conn, &placements[1]);
    assert!(lost.is_err(), "the statements were gone");
    assert_eq!(kept, 0, "and are forgotten");
    assert_eq!(book_on(&mut conn, &placements[1]).0.unwrap().booked(), 1);
    assert_eq!(farm.frames_in("RUNNING"), 2);
    farm.assert_clean_audit();
}

/// Books `p` alone on a pooled session; returns the outcome and the statements kept.
fn book_on(session: &mut Session, p: &Placement) -> (Result<BatchOutcome, DbError>, usize) {
    let (client, prepared) = session.parts();
    let outcome = book_batch_prepared(
        client,
        prepared,
        std::slice::from_ref(p),
        &book_options(),
        None,
        &Default::default(),
    );
    (outcome, prepared.len())
}

/// `[database] prepared_statements = false` (a pooler in transaction mode): the booking
/// works and nothing stays prepared between transactions.
#[test]
fn a_pool_without_prepared_statements_keeps_none() {
    let farm = one_host(8, "1-2");
    let placements = placements_for_all_frames(&mut farm.client(), &farm.seeded.shows[0]);
    let mut config = farm.db.config();
    config.database.prepared_statements = false;
    let pool = stagehand::db::pool(&config.database).unwrap();
    let mut conn = pool.get().unwrap();
    let (client, prepared) = conn.parts();
    let outcome = book_batch_prepared(
        client,
        prepared,
        &placements,
        &book_options(),
        None,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(outcome.booked(), 2);
    assert!(prepared.is_empty());
    farm.assert_clean_audit();
}

#[test]
fn a_job_paused_after_the_pass_read_it_starts_no_frame() {
    let farm = one_host(8, "1-2");
    // The pass read the job as pending and unpaused; the user pauses it before the commit.
    let placements = placements_for_all_frames(&mut farm.client(), &farm.seeded.shows[0]);
    farm.client()
        .execute("UPDATE job SET b_paused = true", &[])
        .unwrap();
    let outcome = book_batch(
        &mut farm.client(),
        &placements,
        &BookOptions {
            mem_reserved_min_kb: 0,
            ping_timeout_secs: 3600.0,
            no_retry_exit_statuses: Vec::new(),
            record_launches: None,
            licenses: None,
        },
        None,
        &Default::default(),
    )
    .unwrap();
    assert!(
        outcome.results.iter().all(|r| *r == Err(GuardLoss::Frame)),
        "{:?}",
        outcome.results
    );
    assert_eq!(farm.frames_in("WAITING"), 2);
    farm.assert_clean_audit();
}

#[test]
fn a_host_exhausted_by_another_writer_is_never_overbooked() {
    let farm = one_host(8, "1-8");
    // The index believes the host is idle; another writer books it all.
    farm.client()
        .execute("UPDATE host SET int_cores_idle = 0", &[])
        .unwrap();
    assert_eq!(farm.pass_all(), 0);
    let idle: i64 = farm
        .client()
        .query_one("SELECT int_cores_idle FROM host", &[])
        .unwrap()
        .get(0);
    assert_eq!(idle, 0);
    assert_eq!(farm.frames_in("WAITING"), 8);
    let metrics = stagehand::metrics::render();
    assert!(
        metrics.contains("stagehand_guard_losses_total{kind=\"host_capacity\"}"),
        "loss counted"
    );
}

fn launching_farm(layer: LayerSpec, rqd: &FakeRqd) -> Farm {
    let mut j = job("launchjob", vec![layer]);
    j.env = vec![
        ("SHARED".into(), "job".into()),
        ("JOB_ONLY".into(), "1".into()),
    ];
    let port = rqd.port();
    Farm::new(&small_farm(1, 8, 32, &[], vec![j]), move |c| {
        c.rqd.dry_run = false;
        c.rqd.endpoint = "127.0.0.1:{port}".into();
        c.rqd.port = port;
        c.rqd.timeout = Duration::from_millis(300);
    })
}

#[test]
fn launches_carry_the_chunk_tokens_and_the_merged_environment() {
    let rqd = FakeRqd::start(FleetOptions {
        database_url: None,
        failure_per_mille: 0,
    })
    .unwrap();
    let mut layer = LayerSpec::simple("comp", "1-10", "general");
    layer.chunk = 5;
    layer.command =
        "run #FRAME_START# #FRAME_END# #FRAMESPEC# #ZFRAME# #LAYER# #JOB# #FRAME#".into();
    layer.env = vec![("SHARED".into(), "layer".into())];
    let farm = launching_farm(layer, &rqd).settle_launches();
    assert_eq!(farm.drain(), 2, "two chunks of five");
    let farm = farm.settle_launches();
    let mut launches = rqd.launches();
    launches.sort_by(|a, b| a.frame_name.cmp(&b.frame_name));
    assert_eq!(launches.len(), 2);
    assert_eq!(
        launches[0].command,
        "run 1 5 1-5 0001 comp launchjob 0001-comp"
    );
    assert_eq!(
        launches[1].command,
        "run 6 10 6-10 0006 comp launchjob 0006-comp"
    );
    let env = &launches[0].environment;
    assert_eq!(env["SHARED"], "layer", "layer env overrides job env");
    assert_eq!(env["JOB_ONLY"], "1");
    assert_eq!(env["CUE_CHUNK"], "5");
    assert_eq!(launches[0].num_cores, 100);
    farm.assert_clean_audit();
    rqd.stop();
}

fn assert_compensated(farm: &Farm) {
    let mut client = farm.client();
    let procs: i64 = client
        .query_one("SELECT count(*) FROM proc", &[])
        .unwrap()
        .get(0);
    assert_eq!(procs, 0, "no proc left");
    let rows = client
        .query("SELECT str_state, int_exit_status FROM frame", &[])
        .unwrap();
    for r in rows {
        assert_eq!(
            (r.get::<_, String>(0), r.get::<_, i64>(1)),
            ("WAITING".to_owned(), 299)
        );
    }
    let (idle, total): (i64, i64) = {
        let r = client
            .query_one("SELECT int_cores_idle, int_cores FROM host", &[])
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(idle, total, "host idle restored");
    farm.assert_clean_audit();
}

#[test]
fn rqd_refusing_is_compensated() {
    let rqd = FakeRqd::start(FleetOptions {
        database_url: None,
        failure_per_mille: 0,
    })
    .unwrap();
    rqd.set_behaviour(Behaviour::Refuse(grpcio::RpcStatusCode::INVALID_ARGUMENT));
    let farm = launching_farm(LayerSpec::simple("l", "1-2", "general"), &rqd);
    assert_eq!(farm.pass_all(), 2);
    let farm = farm.settle_launches();
    assert_compensated(&farm);
    assert_eq!(rqd.kills().len(), 2, "a best-effort kill per failed launch");
    rqd.stop();
}

#[test]
fn rqd_timing_out_is_compensated() {
    let rqd = FakeRqd::start(FleetOptions {
        database_url: None,
        failure_per_mille: 0,
    })
    .unwrap();
    rqd.set_behaviour(Behaviour::Stall(Duration::from_secs(2)));
    let farm = launching_farm(LayerSpec::simple("l", "1", "general"), &rqd);
    assert_eq!(farm.pass_all(), 1);
    let farm = farm.settle_launches();
    assert_compensated(&farm);
    rqd.stop();
}

/// A launch that times out while it waits in RQD's own request queue: the kill sent after
/// the timeout finds no frame and RQD answers "OK", then the frame starts. Undone on that
/// answer, the booking left a frame running on RQD with no proc (free to be booked again:
/// twice at once). The second kill, two timeouts later, finds it running.
#[test]
fn a_launch_that_starts_after_its_kill_was_answered_is_killed_again() {
    let rqd = FakeRqd::start(FleetOptions {
        database_url: None,
        failure_per_mille: 0,
    })
    .unwrap();
    // The client's deadline is 300 ms (`launching_farm`): the kill answers at about that.
    rqd.set_behaviour(Behaviour::StartLate(Duration::from_millis(450)));
    let farm = launching_farm(LayerSpec::simple("l", "1", "general"), &rqd);
    assert_eq!(farm.pass_all(), 1);
    let farm = farm.settle_launches();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        rqd.running().is_empty(),
        "nothing runs on RQD once the booking is undone: {:?}",
        rqd.running()
    );
    assert_eq!(rqd.kills().len(), 2, "killed again two timeouts later");
    assert_compensated(&farm);
    rqd.stop();
}

#[test]
fn dry_run_books_without_calling_rqd() {
    let rqd = FakeRqd::start(FleetOptions {
        database_url: None,
        failure_per_mille: 0,
    })
    .unwrap();
    let port = rqd.port();
    let farm = Farm::new(
        &small_farm(
            1,
            8,
            32,
            &[],
            one_layer(LayerSpec::simple("l", "1-3", "general")),
        ),
        move |c| {
            c.rqd.dry_run = true;
            c.rqd.endpoint = "127.0.0.1:{port}".into();
            c.rqd.port = port;
        },
    );
    assert_eq!(farm.drain(), 3);
    let farm = farm.settle_launches();
    assert_eq!(rqd.launch_count(), 0);
    assert_eq!(farm.frames_in("RUNNING"), 3);
    rqd.stop();
}

#[test]
fn a_managed_flip_is_picked_up() {
    let farm = one_host(8, "1-2");
    farm.client()
        .execute("UPDATE show SET b_scheduler_managed = false", &[])
        .unwrap();
    assert!(farm.clusters().is_empty());
    assert_eq!(farm.drain(), 0);
    farm.client()
        .execute("UPDATE show SET b_scheduler_managed = true", &[])
        .unwrap();
    farm.refresh();
    assert_eq!(farm.drain(), 2);
}

#[test]
fn cpu_work_leaves_gpu_hosts_free_while_others_fit() {
    let mut spec = small_farm(
        1,
        8,
        32,
        &[],
        one_layer(LayerSpec::simple("l", "1-8", "general")),
    );
    spec.hosts.push(HostSpec {
        name: "gpu01".into(),
        gpus: 2,
        gpu_mem_kb: 16 * GB,
        ..spec.hosts[0].clone()
    });
    let farm = Farm::new(&spec, |_| {});
    assert_eq!(farm.drain(), 8);
    let on_gpu: i64 = farm
        .client()
        .query_one(
            "SELECT count(*) FROM proc p JOIN host h ON h.pk_host = p.pk_host WHERE h.int_gpus > 0",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(on_gpu, 0, "eight one-core frames fit the CPU host");
}

/// A flood of CPU frames overflows onto the GPU host but leaves room there for each idle GPU,
/// so a GPU job arriving later books at once; with no room kept it would wait.
#[test]
fn a_cpu_flood_leaves_gpu_hosts_room_for_gpu_work_arriving_later() {
    for (per_gpu_cores, gpu_frames_booked) in [(2, 2), (0, 0)] {
        let mut gpu_layer = LayerSpec::simple("g", "1-2", "general");
        gpu_layer.gpus = 1;
        gpu_layer.cores_min = 200;
        gpu_layer.mem_kb = 4 * GB;
        let gpu_job = crate::common::job("gpu", vec![gpu_layer]);
        let mut spec = small_farm(
            1,
            8,
            64,
            &[],
            vec![
                crate::common::job("flood", vec![LayerSpec::simple("l", "1-40", "general")]),
                gpu_job,
            ],
        );
        spec.hosts.push(HostSpec {
            name: "gpu01".into(),
            gpus: 2,
            gpu_mem_kb: 16 * GB,
            ..spec.hosts[0].clone()
        });
        let farm = Farm::new(&spec, |c| {
            c.scheduler.gpu_host_cores_per_gpu = per_gpu_cores
        });
        let mut client = farm.client();
        client
            .execute("UPDATE job SET b_paused = true WHERE str_name = 'gpu'", &[])
            .unwrap();
        farm.drain();
        let on_gpu_host: i64 = client
            .query_one(
                "SELECT coalesce(sum(p.int_cores_reserved), 0)::bigint FROM proc p JOIN host h ON h.pk_host = p.pk_host WHERE h.int_gpus > 0",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(
            on_gpu_host,
            800 - i64::from(per_gpu_cores) * 2 * 100,
            "the flood overflows onto the GPU host up to the kept room"
        );
        client
            .execute(
                "UPDATE job SET b_paused = false WHERE str_name = 'gpu'",
                &[],
            )
            .unwrap();
        farm.pass_all();
        let gpu_running: i64 = client
            .query_one(
                "SELECT count(*) FROM proc p JOIN job j ON j.pk_job = p.pk_job WHERE j.str_name = 'gpu'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(
            gpu_running, gpu_frames_booked,
            "room kept: {per_gpu_cores} cores per GPU"
        );
    }
}

#[test]
fn a_malformed_range_is_skipped_and_the_rest_books() {
    let rqd = FakeRqd::start(FleetOptions {
        database_url: None,
        failure_per_mille: 0,
    })
    .unwrap();
    let farm = launching_farm(LayerSpec::simple("good", "1-2", "general"), &rqd);
    farm.client()
        .execute(
            "UPDATE layer SET str_range = '1-x' WHERE str_name = 'good'",
            &[],
        )
        .unwrap();
    assert_eq!(
        farm.pass_all(),
        0,
        "a layer RQD could not be told about books nothing"
    );
    assert_eq!(farm.frames_in("WAITING"), 2);
    assert!(
        stagehand::metrics::render().contains("stagehand_bad_input_total{kind=\"frame_range\"}")
    );
    farm.client()
        .execute("UPDATE layer SET str_range = '1-2'", &[])
        .unwrap();
    assert_eq!(farm.pass_all(), 2);
    rqd.stop();
}

/// Room a completion gives back (Cuebot deletes the proc and restores the host's idle
/// columns) is booked from the read of changed hosts, long before the next full host read.
/// The read of changes returns exactly the hosts whose `host` or `host_stat` row changed
/// since the mark, and nothing once it moved past them. (The refresher falls back to full
/// reads when this read fails, so the service tests alone would not see it broken.)
#[test]
fn the_read_of_changes_returns_the_hosts_changed_since_the_mark() {
    use stagehand::db::hosts::{Changes, change_mark, changed_hosts};

    let farm = Farm::new(
        &small_farm(
            3,
            8,
            32,
            &[],
            one_layer(LayerSpec::simple("l", "1", "general")),
        ),
        |_| {},
    );
    let mut client = farm.client();
    let hosts: Vec<String> = client
        .query("SELECT pk_host FROM host ORDER BY str_name", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let ping = Duration::from_secs(3600);
    // The read of changes runs on a pooled session (its statements stay prepared).
    let pool = farm.db.pool();
    let mut session = pool.get().unwrap();
    let mut changed = |mark| match changed_hosts(&mut session, None, ping, mark).unwrap() {
        Changes::Hosts(rows, next) => {
            let mut ids: Vec<String> = rows.into_iter().map(|(h, _)| h.id.to_string()).collect();
            ids.sort();
            (ids, next)
        }
        Changes::Wrapped => panic!("no wrap in a test"),
    };
    // The mark stays behind transactions still running anywhere in the server (here other
    // tests'): wait for one past every row of this farm.
    let mark = (0..500)
        .find_map(|_| {
            let mark = change_mark(&mut client).unwrap();
            let quiet = changed(mark).0.is_empty();
            (!quiet).then(|| std::thread::sleep(Duration::from_millis(20)));
            quiet.then_some(mark)
        })
        .expect("the mark passes the seeding");
    client
        .execute(
            "UPDATE host SET int_cores_idle = int_cores_idle WHERE pk_host = $1",
            &[&hosts[0]],
        )
        .unwrap();
    client
        .execute(
            "UPDATE host_stat SET ts_ping = now() WHERE pk_host = $1",
            &[&hosts[2]],
        )
        .unwrap();
    let (ids, next) = changed(mark);
    let mut want = vec![hosts[0].clone(), hosts[2].clone()];
    want.sort();
    assert_eq!(ids, want);
    // For the same reason a change may be seen twice, which is harmless; a host that never
    // changed is not.
    let (again, _) = changed(next);
    assert!(
        again.iter().all(|h| want.contains(h)),
        "only what changed: {again:?}"
    );
    // Both of its statements stay prepared with the session; dropped by the server, they are
    // forgotten by the read that finds out and prepared again by the next.
    assert_eq!(session.parts().1.len(), 2);
    session.batch_execute("DEALLOCATE ALL").unwrap();
    assert!(changed_hosts(&mut session, None, ping, next).is_err());
    assert_eq!(session.parts().1.len(), 0);
    assert!(changed_hosts(&mut session, None, ping, next).is_ok());
    assert_eq!(session.parts().1.len(), 2);
}

#[test]
fn room_a_completion_gives_back_is_booked_before_the_next_full_host_read() {
    use stagehand::sim::{farm::SimFarm, pg::PgOptions};

    let spec = small_farm(
        1,
        4,
        16,
        &[],
        one_layer(LayerSpec::simple("l", "1-8", "general")),
    );
    let farm = SimFarm::start(&spec, &PgOptions::default(), false, 0).unwrap();
    let mut config = farm.config(true);
    config.hosts.refresh_interval = Duration::from_secs(3600);
    config.hosts.changes_interval = Duration::from_millis(100);
    let service = stagehand::service::Service::start(config).unwrap();
    let mut client = postgres::Client::connect(&farm.url, postgres::NoTls).unwrap();
    let count = |client: &mut postgres::Client, state: &str| -> i64 {
        client
            .query_one("SELECT count(*) FROM frame WHERE str_state = $1", &[&state])
            .unwrap()
            .get(0)
    };
    let wait_running = |client: &mut postgres::Client| {
        (0..300).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            count(client, "RUNNING") == 4
        })
    };
    assert!(wait_running(&mut client), "the host filled");
    complete_two(&mut client);
    assert!(
        wait_running(&mut client),
        "the room given back was booked without a full host read"
    );
    assert_eq!(count(&mut client, "SUCCEEDED"), 2);
    service.shutdown(Duration::from_secs(10));
}

/// Completes two running frames as Cuebot does: proc deleted, frame SUCCEEDED, the host's
/// idle cores and memory given back, in one transaction.
fn complete_two(client: &mut postgres::Client) {
    let mut tx = client.transaction().unwrap();
    let gone = tx
        .query(
            "DELETE FROM proc WHERE pk_proc IN (SELECT pk_proc FROM proc ORDER BY pk_proc LIMIT 2)
             RETURNING pk_host, pk_frame, int_cores_reserved, int_mem_reserved",
            &[],
        )
        .unwrap();
    for r in &gone {
        let (host, frame): (String, String) = (r.get(0), r.get(1));
        let (cores, mem): (i64, i64) = (r.get(2), r.get(3));
        tx.execute(
            "UPDATE frame SET str_state = 'SUCCEEDED', int_version = int_version + 1,
                    ts_stopped = now() WHERE pk_frame = $1",
            &[&frame],
        )
        .unwrap();
        tx.execute(
            "UPDATE host SET int_cores_idle = int_cores_idle + $2, int_mem_idle = int_mem_idle + $3
              WHERE pk_host = $1",
            &[&host, &cores, &mem],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// The procs of the job named `name`.
fn procs_of(farm: &Farm, name: &str) -> i64 {
    farm.client()
        .query_one(
            "SELECT count(*) FROM proc p JOIN job j ON j.pk_job = p.pk_job WHERE j.str_name = $1",
            &[&name],
        )
        .unwrap()
        .get(0)
}
