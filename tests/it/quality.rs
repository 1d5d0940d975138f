//! Scheduling quality: job order, fair share, wide frames and their reservations, why frames
//! wait, and a busy cluster among empty ones.

use stagehand::{config::JobOrder, sim::seed::LayerSpec};

use crate::common::{
    Farm, job, placements_for_all_frames, small_farm, timed_scenario, wait_for_lock_waiters,
};

/// One one-core host; a priority-90 job and a priority-10 job each want it. Returns the name
/// of the job that got it.
fn winner(order: JobOrder) -> String {
    let mut high = job("high", vec![LayerSpec::simple("l", "1-5", "general")]);
    high.priority = 90;
    let mut low = job("low", vec![LayerSpec::simple("l", "1-5", "general")]);
    low.priority = 10;
    low.min_cores = 1;
    high.min_cores = 0;
    let spec = small_farm(1, 1, 32, &[], vec![high, low]);
    let farm = Farm::new(&spec, |c| c.scheduler.job_order = order);
    assert_eq!(farm.pass_all(), 1);
    farm.client()
        .query_one(
            "SELECT j.str_name FROM proc p JOIN job j ON j.pk_job = p.pk_job",
            &[],
        )
        .unwrap()
        .get(0)
}

#[test]
fn priority_order_serves_the_highest_priority() {
    assert_eq!(winner(JobOrder::Priority), "high");
}

#[test]
fn balanced_order_serves_a_starving_low_priority_job() {
    // "low" is below its minimum cores (deficit +100): 10 + 100 > 90.
    assert_eq!(winner(JobOrder::Balanced), "low");
}

#[test]
fn fifo_order_serves_the_oldest_job() {
    // The seeder starts earlier jobs earlier: "high" is older.
    assert_eq!(winner(JobOrder::Fifo), "high");
}

/// Under `proportional` one pass shares its room by priority: 100 free cores, two jobs of
/// one-core frames (priorities 70 and 30) with more frames than that each. Strict `priority`
/// gives every core to the first job; `proportional` gives both a share, the higher more.
#[test]
fn proportional_order_shares_a_pass_by_priority() {
    let booked = |order: JobOrder| -> (i64, i64) {
        let layer = || {
            let mut l = LayerSpec::simple("l", "1-150", "general");
            l.threadable = false;
            l
        };
        let mut high = job("high", vec![layer()]);
        high.priority = 70;
        let mut low = job("low", vec![layer()]);
        low.priority = 30;
        let spec = small_farm(10, 10, 32, &[], vec![high, low]);
        let farm = Farm::new(&spec, |c| {
            c.scheduler.job_order = order;
            c.scheduler.frames_per_layer = 150;
        });
        assert_eq!(farm.pass_all(), 100);
        let r = farm
            .client()
            .query_one(
                "SELECT count(*) FILTER (WHERE j.str_name = 'high'),
                        count(*) FILTER (WHERE j.str_name = 'low')
                   FROM proc p JOIN job j ON j.pk_job = p.pk_job",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(booked(JobOrder::Priority), (100, 0));
    let (high, low) = booked(JobOrder::Proportional);
    // Binomial(100, 0.3): 30 expected; below 15 or above 49 has odds below 2e-4.
    assert!(
        (15..50).contains(&low) && high == 100 - low,
        "high {high}, low {low}"
    );
}

/// Two shows with subscription sizes 20 and 10 cores (bursts both 30, so no cap decides) on
/// one saturated 30-core allocation, frames of five seconds completing continuously: the split
/// of booked cores converges to 2:1 (± 10 %).
#[test]
fn shares_converge_to_the_subscription_sizes() {
    use stagehand::sim::scenario::share::{ShareSpec, fair_share, print_share};

    let _alone = timed_scenario();
    let spec = ShareSpec::small();
    let o = fair_share(&spec).unwrap();
    print_share(&spec, &o);
    assert!(
        (1.8..=2.2).contains(&o.ratio),
        "split {:.2}, expected 2 ± 10 %",
        o.ratio
    );
    assert!(o.violations.is_empty(), "{:?}", o.violations);
}

/// A priority-10 job with a minimum of cores beside a stream of priority-90 work that fills
/// the farm: under `balanced` it keeps booking, under strict `priority` it gets nothing.
#[test]
fn a_low_priority_job_keeps_booking_beside_a_high_priority_stream_under_balanced() {
    use stagehand::sim::scenario::stream::{StreamSpec, print_stream, priority_stream};

    let _alone = timed_scenario();
    let spec = StreamSpec::small();
    let balanced = priority_stream(&spec, JobOrder::Balanced).unwrap();
    print_stream(&spec, &balanced);
    assert!(
        balanced.low_frames > 0 && balanced.low_cores >= 1.0,
        "the low job kept booking: {balanced:?}"
    );
    assert!(balanced.violations.is_empty(), "{:?}", balanced.violations);
    let strict = priority_stream(&spec, JobOrder::Priority).unwrap();
    print_stream(&spec, &strict);
    assert_eq!(
        strict.low_frames, 0,
        "strict priority starves it: {strict:?}"
    );
}

/// A flood of CPU frames overflows onto the GPU hosts but leaves room there, so a GPU job
/// arriving later starts every frame at once (within a few booking passes).
#[test]
fn a_gpu_job_arriving_into_a_cpu_flood_starts_at_once() {
    use stagehand::sim::scenario::gpu::{GpuSpec, gpu_flood, print_gpu};

    let _alone = timed_scenario();
    let spec = GpuSpec::small();
    let o = gpu_flood(&spec, 2).unwrap();
    print_gpu(&spec, &o);
    assert!(
        o.cpu_on_gpu_hosts > 0,
        "the flood used the GPU hosts' spare cores"
    );
    let after = o.all_started_after.expect("every GPU frame started");
    assert!(after <= 3.0, "GPU frames started after {after:.1}s");
    assert!(o.violations.is_empty(), "{:?}", o.violations);
}

/// A busy cluster beside 200 empty ones: the empty clusters get no turns at all (the awake
/// gate), so the busy one is served as if it were alone (OpenCue #2315, #2465).
#[test]
fn a_busy_cluster_is_not_kept_waiting_by_two_hundred_empty_ones() {
    use stagehand::sim::{farm::SimFarm, pg::PgOptions};
    use std::time::Duration;

    // 200 hosts, each with its own manual tag: 200 one-tag clusters (chunk size 1) with no work.
    let mut spec = small_farm(
        200,
        4,
        16,
        &[],
        vec![job(
            "busy",
            vec![LayerSpec::simple("l", "1-400", "general")],
        )],
    );
    for (i, h) in spec.hosts.iter_mut().enumerate() {
        h.tags
            .push((format!("idle{i:03}"), stagehand::model::TagType::Manual));
    }
    let farm = SimFarm::start(&spec, &PgOptions::default(), false, 0).unwrap();
    let mut config = farm.config(true);
    config.scheduler.manual_tags_chunk_size = 1;
    config.scheduler.worker_threads = 1;
    let service = stagehand::service::Service::start(config).unwrap();
    let status = service.status();
    let mut client = postgres::Client::connect(&farm.url, postgres::NoTls).unwrap();
    let mut booked = 0i64;
    for _ in 0..200 {
        booked = client
            .query_one("SELECT count(*) FROM proc", &[])
            .unwrap()
            .get(0);
        if booked == 400 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(booked, 400, "the busy cluster drained");
    // The status is published at most every 500 ms.
    std::thread::sleep(Duration::from_millis(600));
    let clusters = status.clusters.load_full();
    let empty: Vec<_> = clusters.iter().filter(|c| c.kind == "manual").collect();
    assert_eq!(empty.len(), 200, "{} manual clusters", empty.len());
    assert!(
        empty.iter().all(|c| c.state == "idle" && c.waiting == 0),
        "no turn for an empty cluster: {:?}",
        empty.iter().find(|c| c.state != "idle")
    );
    service.shutdown(Duration::from_secs(10));
}

/// A whole-host frame submitted into a flood of one-core frames on a saturated farm starts
/// within the stated bound with reservations on, and not at all (within the limit) with them
/// off; the farm stays busy around the reservation and the audit is clean.
#[test]
fn a_wide_frame_in_a_flood_starts_within_the_bound_only_with_reservations() {
    use stagehand::sim::scenario::wide::{WideSpec, print_wide, wide_frame};

    let _alone = timed_scenario();
    let spec = WideSpec::small();
    let on = wide_frame(&spec, true).unwrap();
    print_wide(&spec, &on);
    let started = on.started_after.expect("the wide frame started");
    assert!(
        started <= on.bound,
        "started after {started:.1}s, bound {:.1}s",
        on.bound
    );
    assert!(on.violations.is_empty(), "{:?}", on.violations);

    let off = wide_frame(&spec, false).unwrap();
    print_wide(&spec, &off);
    assert_eq!(
        off.started_after, None,
        "without reservations the flood keeps the wide frame out"
    );
    assert!(off.violations.is_empty(), "{:?}", off.violations);
}

/// Reservation rule in the database: a host reserved for a wide frame refuses a frame of
/// unknown run time that would eat into the reserved room, takes one expected to end before
/// the shadow time, and takes the wide frame itself; booking it drops the reservation.
#[test]
fn the_booking_transaction_enforces_a_reservation() {
    use stagehand::db::booking::{BookOptions, GuardLoss, book_batch};

    let mut wide = LayerSpec::simple("wide", "1", "general");
    wide.cores_min = 800;
    let spec = small_farm(
        1,
        8,
        32,
        &[],
        vec![
            job("small", vec![LayerSpec::simple("l", "1-3", "general")]),
            job("wide", vec![wide]),
        ],
    );
    let farm = Farm::new(&spec, |_| {});
    let mut client = farm.client();
    let show = farm.seeded.shows[0].clone();
    let all = placements_for_all_frames(&mut client, &show);
    let wide_frame = client
        .query_one(
            "SELECT f.pk_frame FROM frame f JOIN layer l ON l.pk_layer = f.pk_layer WHERE l.str_name = 'wide'",
            &[],
        )
        .unwrap()
        .get::<_, String>(0);
    let (mut wide_p, smalls): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|p| p.frame == wide_frame.as_str());
    let mut wide_p = wide_p.remove(0);
    wide_p.amount.cores = 800;
    wide_p.holds_reservation = true;
    // Reserve the host for the wide frame, shadow time 60 s from now.
    client
        .execute(
            "INSERT INTO stagehand.host_reservation (pk_host, pk_frame, pk_layer, pk_show, int_cores, int_mem,
                                                     ts_shadow, ts_expires)
             SELECT $1, $2, $3, $4, 800, 1048576, now() + interval '60 seconds', now() + interval '1 hour'",
            &[&wide_p.host, &wide_p.frame, &wide_p.layer, &show],
        )
        .unwrap();
    let options = BookOptions {
        mem_reserved_min_kb: 0,
        ping_timeout_secs: 3600.0,
        no_retry_exit_statuses: Vec::new(),
        record_launches: None,
        licenses: None,
    };
    // Unknown run time: refused.
    let mut unknown = smalls[0].clone();
    unknown.est_secs = None;
    let out = book_batch(&mut client, &[unknown], &options, None, &Default::default()).unwrap();
    assert_eq!(out.results, vec![Err(GuardLoss::Reserved)]);
    // Expected to end well before the shadow: backfilled.
    let mut short = smalls[1].clone();
    short.est_secs = Some(10.0);
    let out = book_batch(&mut client, &[short], &options, None, &Default::default()).unwrap();
    assert!(out.results[0].is_ok(), "{:?}", out.results);
    // The wide frame itself is never refused by its own reservation (here it does not fit
    // until the backfilled frame ends, so it loses on capacity, not on the reservation).
    let out = book_batch(
        &mut client,
        &[wide_p.clone()],
        &options,
        None,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(out.results, vec![Err(GuardLoss::HostCapacity)]);
    client
        .execute(
            "UPDATE host SET int_cores_idle = int_cores, int_mem_idle = int_mem",
            &[],
        )
        .unwrap();
    client.execute("DELETE FROM proc", &[]).unwrap();
    let out = book_batch(&mut client, &[wide_p], &options, None, &Default::default()).unwrap();
    assert!(out.results[0].is_ok(), "{:?}", out.results);
    let left: i64 = client
        .query_one("SELECT count(*) FROM stagehand.host_reservation", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "booking the wide frame fulfilled its reservation");
}

/// Why is it waiting: frames that fit no host, frames held back by their subscription and
/// by start-after times are counted under their reasons on /status and /metrics.
#[test]
fn waiting_frames_are_counted_by_reason() {
    use stagehand::pipeline::waiting::Reason;

    let mut huge = LayerSpec::simple("huge", "1-3", "general");
    huge.cores_min = 6400;
    let mut later = LayerSpec::simple("later", "1-4", "general");
    later.runtime_secs = 1.0;
    let spec = small_farm(
        1,
        2,
        8,
        &[],
        vec![job("huge", vec![huge]), job("later", vec![later])],
    );
    let farm = Farm::new(&spec, |c| c.reservations.enabled = false);
    let mut client = farm.client();
    client
        .execute(
            "UPDATE layer SET ts_start_after = now() + interval '1 hour' WHERE str_name = 'later'",
            &[],
        )
        .unwrap();
    farm.pass_all();
    farm.refresh();
    let totals = farm.shared.waiting.totals();
    assert_eq!(totals[&Reason::NoHost], 3, "{totals:?}");
    assert_eq!(totals[&Reason::StartAfter], 4, "{totals:?}");
}

/// The whole reservation cycle, pass by pass: a host-wide frame that fits nowhere (narrower
/// frames run everywhere) reserves the host; narrow frames of unknown run time no longer book
/// there (`reserved`) while the wide frame waits (`draining`); once the host frees, the wide
/// frame books and its reservation is gone.
#[test]
fn a_wide_frame_reserves_a_host_drains_it_and_books() {
    use stagehand::pipeline::waiting::Reason;
    use std::time::Duration;

    let mut wide = LayerSpec::simple("wide", "1", "general");
    wide.cores_min = 800;
    let mut narrow = job("narrow", vec![LayerSpec::simple("l", "1-20", "general")]);
    narrow.priority = 50;
    let mut wide_job = job("wide", vec![wide]);
    wide_job.priority = 90;
    let spec = small_farm(1, 8, 32, &[], vec![wide_job, narrow]);
    let farm = Farm::new(&spec, |c| {
        c.reservations.after = Duration::from_millis(1);
    });
    let mut client = farm.client();
    client
        .execute(
            "UPDATE job SET b_paused = true WHERE str_name = 'wide'",
            &[],
        )
        .unwrap();
    assert_eq!(farm.pass_all(), 8, "narrow frames fill the host");
    client
        .execute(
            "UPDATE job SET b_paused = false WHERE str_name = 'wide'",
            &[],
        )
        .unwrap();
    // Two narrow frames end (Cuebot's completion), freeing two cores.
    client
        .batch_execute(
            "WITH gone AS (DELETE FROM proc WHERE pk_proc IN (SELECT pk_proc FROM proc ORDER BY pk_proc LIMIT 2)
                           RETURNING pk_frame, pk_host, int_cores_reserved, int_mem_reserved)
             , f AS (UPDATE frame SET str_state = 'SUCCEEDED' WHERE pk_frame IN (SELECT pk_frame FROM gone))
             UPDATE host h SET int_cores_idle = h.int_cores_idle + (SELECT sum(int_cores_reserved) FROM gone),
                               int_mem_idle = h.int_mem_idle + (SELECT sum(int_mem_reserved) FROM gone)",
        )
        .unwrap();
    farm.refresh();
    assert_eq!(
        farm.pass_all(),
        0,
        "the freed cores stay for the wide frame"
    );
    let reserved: i64 = client
        .query_one("SELECT count(*) FROM stagehand.host_reservation", &[])
        .unwrap()
        .get(0);
    assert_eq!(reserved, 1, "the wide frame reserved the host");
    assert_eq!(farm.pass_all(), 0, "narrow frames do not backfill it");
    let totals = farm.shared.waiting.totals();
    assert_eq!(totals[&Reason::Draining], 1, "{totals:?}");
    assert!(totals[&Reason::Reserved] > 0, "{totals:?}");
    // The rest of the narrow frames end: the host is empty and the wide frame books.
    client
        .batch_execute(
            "UPDATE frame SET str_state = 'SUCCEEDED' WHERE pk_frame IN (SELECT pk_frame FROM proc);
             DELETE FROM proc;
             UPDATE host SET int_cores_idle = int_cores, int_mem_idle = int_mem;",
        )
        .unwrap();
    farm.refresh();
    assert!(farm.pass_all() >= 1);
    let wide_state: String = client
        .query_one(
            "SELECT f.str_state FROM frame f JOIN job j ON j.pk_job = f.pk_job WHERE j.str_name = 'wide'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(wide_state, "RUNNING");
    let left: i64 = client
        .query_one("SELECT count(*) FROM stagehand.host_reservation", &[])
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "booking the wide frame fulfilled the reservation");
}

/// A layer of `cores`-core frames "1-3" tagged `general`.
fn frames_of(name: &str, cores: i64) -> LayerSpec {
    let mut l = LayerSpec::simple(name, "1-3", "general");
    l.cores_min = cores * i64::from(stagehand::model::CORE);
    l
}

/// Runs one priority pass over a farm of `host_cores`-core hosts, jobs `(name, priority,
/// layer)` in that order: every host starts with the idle cores of `idle`; the commit of the
/// job at `held` (its first batch: batch size 1) waits behind a row lock while the hosts
/// take the idle cores of `freed` and are re-read into the index. Returns, per host, the
/// jobs placed on it, sorted.
fn pass_with_room_freed_mid_pass(
    host_cores: u32,
    jobs: Vec<(&str, i32, LayerSpec)>,
    held: usize,
    idle: &[i64],
    freed: &[i64],
) -> Vec<Vec<String>> {
    let jobs = jobs
        .into_iter()
        .map(|(name, priority, layer)| {
            let mut j = job(name, vec![layer]);
            j.priority = priority;
            j
        })
        .collect();
    let spec = small_farm(idle.len(), host_cores, 16, &[], jobs);
    let farm = Farm::new(&spec, |c| {
        c.scheduler.job_order = JobOrder::Priority;
        c.scheduler.batch_size = 1;
    });
    let hosts = &farm.seeded.hosts;
    let mut client = farm.client();
    let set_idle = |client: &mut postgres::Client, cores: &[i64]| {
        for (host, cores) in hosts.iter().zip(cores) {
            client
                .execute(
                    "UPDATE host SET int_cores_idle = $2 WHERE pk_host = $1",
                    &[host, &(cores * 100)],
                )
                .unwrap();
        }
        stagehand::pipeline::hosts::refresh(&farm.shared).unwrap();
    };
    set_idle(&mut client, idle);
    let clusters = farm.clusters();
    let cluster = clusters.first().unwrap();
    let mut blocker = farm.client();
    let mut hold = blocker.transaction().unwrap();
    hold.execute(
        "SELECT 1 FROM frame WHERE pk_job = $1 FOR UPDATE",
        &[&farm.seeded.jobs[held]],
    )
    .unwrap();
    std::thread::scope(|s| {
        let pass = s.spawn(|| farm.pass(cluster));
        assert!(
            wait_for_lock_waiters(&mut client, 1),
            "the held commit waits"
        );
        set_idle(&mut client, freed);
        hold.commit().unwrap();
        pass.join().unwrap();
    });
    hosts
        .iter()
        .map(|host| {
            client
                .query(
                    "SELECT j.str_name FROM proc p JOIN job j ON j.pk_job = p.pk_job
                      WHERE p.pk_host = $1 ORDER BY 1",
                    &[host],
                )
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect()
        })
        .collect()
}

/// Room that appears in the middle of a pass goes to the first job in the pass's order that
/// fits it, not to whichever job the pass has reached. A priority-90 job of two-core frames
/// finds no host with two free cores and stops; a priority-50 job books the last free core,
/// and its commit is held behind a row lock while a second host is freed and re-read into
/// the index; then the priority-10 job, also of two-core frames, comes to the freed host.
/// Before the fix it took it (the stream scenario's rare "1 low frame under strict priority").
#[test]
fn room_freed_during_a_pass_goes_to_the_higher_priority_job_that_stopped_for_it() {
    let yields = stagehand::metrics::ROOM_YIELDS.get();
    let placed = pass_with_room_freed_mid_pass(
        2,
        vec![
            ("high", 90, frames_of("h", 2)),
            ("mid", 50, LayerSpec::simple("m", "1", "general")),
            ("low", 10, frames_of("l", 2)),
        ],
        1,
        &[1, 0],
        &[1, 2],
    );
    assert_eq!(placed, [vec!["mid"], vec!["high"]], "per host");
    assert!(stagehand::metrics::ROOM_YIELDS.get() > yields, "counted");
}

/// Two layers stopped for room, of four-core and two-core frames (priorities 95 and 90);
/// while the pass is held, one host frees two cores and another four. The two-core layer
/// may take only the two, the four go to the four-core layer, the priority-10 job (two-core
/// frames) gets nothing — whichever host its search is offered first.
#[test]
fn room_freed_during_a_pass_goes_to_each_stopped_layer_by_size_and_order() {
    let placed = pass_with_room_freed_mid_pass(
        4,
        vec![
            ("big", 95, frames_of("b", 4)),
            ("high", 90, frames_of("h", 2)),
            ("mid", 50, LayerSpec::simple("m", "1", "general")),
            ("low", 10, frames_of("l", 2)),
        ],
        2,
        &[1, 0, 0],
        &[1, 2, 4],
    );
    assert_eq!(placed, [vec!["mid"], vec!["high"], vec!["big"]], "per host");
}
