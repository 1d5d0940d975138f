//! Correctness under adversity (issue 12): each test forces a race or a fault that once broke
//! a guard — another transaction committing between a read and a lock, a lost reply, a
//! resync in the middle of a pass — and checks the database afterwards.

use std::time::Duration;

use stagehand::{
    db::booking::{BookOptions, Compensation, Fence, GuardLoss, Placement, book_batch, compensate},
    sim::{
        fake_rqd::{Behaviour, FakeRqd, FleetOptions},
        seed::{GB, LayerSpec},
    },
};

use crate::common::{
    Farm, book_options, job, placements_for_all_frames, race_two_jobs_behind_lock, small_farm,
    wait_for_lock_waiters,
};

fn options() -> BookOptions {
    book_options()
}

fn one_job_farm(frames: usize) -> Farm {
    let range = format!("1-{frames}");
    let spec = small_farm(
        1,
        8,
        32,
        &[],
        vec![job("j", vec![LayerSpec::simple("l", &range, "general")])],
    );
    Farm::new(&spec, |_| {})
}

fn count(farm: &Farm, sql: &str) -> i64 {
    farm.client().query_one(sql, &[]).unwrap().get(0)
}

fn limited_layer(name: &str, frames: usize) -> LayerSpec {
    let mut l = LayerSpec::simple(name, &format!("1-{frames}"), "general");
    l.limits = vec![0];
    l
}

/// Two batches of different jobs under one limit line up behind a third transaction holding
/// the limit row; once it lets go, each must count what the other committed. With the count
/// taken in the locking statement, both counted on their statement's old snapshot and booked
/// 20 frames under a limit of 12.
#[test]
fn a_layer_limit_holds_when_batches_queue_on_its_lock() {
    let mut spec = small_farm(
        2,
        16,
        64,
        &[],
        vec![
            job("a", vec![limited_layer("la", 10)]),
            job("b", vec![limited_layer("lb", 10)]),
        ],
    );
    spec.limits = vec![("lic".into(), 12)];
    let farm = Farm::new(&spec, |_| {});
    let lock = "SELECT 1 FROM limit_record FOR UPDATE";
    let booked = race_two_jobs_behind_lock(&farm, lock, &options());
    let running = farm.frames_in("RUNNING");
    assert_eq!(booked.iter().sum::<usize>() as i64, running);
    assert_eq!(running, 12, "the limit is full, never above: {booked:?}");
}

/// A host reporting several OSes (RQD's docker mode) takes a job asking for any of them, and
/// RQD is sent the job's OS, not the host's list (which docker mode rejects).
#[test]
fn a_host_reporting_several_oses_runs_a_job_asking_for_one_of_them() {
    let rqd = FakeRqd::start(FleetOptions {
        database_url: None,
        failure_per_mille: 0,
    })
    .unwrap();
    let mut rocky = job("rocky", vec![LayerSpec::simple("l", "1-3", "general")]);
    rocky.os = "rocky9".into();
    let mut spec = small_farm(1, 8, 32, &[], vec![rocky]);
    spec.hosts[0].os = "centos7, rocky9".into();
    let port = rqd.port();
    let farm = Farm::new(&spec, move |c| {
        c.rqd.dry_run = false;
        c.rqd.endpoint = "127.0.0.1:{port}".into();
        c.rqd.port = port;
    });
    assert_eq!(farm.drain(), 3);
    drop(farm.settle_launches());
    let launches = rqd.launches();
    assert_eq!(launches.len(), 3);
    assert!(launches.iter().all(|l| l.os == "rocky9"), "the job's OS");
    rqd.stop();
}

fn launching(farm_frames: usize, rqd: &FakeRqd) -> Farm {
    let range = format!("1-{farm_frames}");
    let spec = small_farm(
        1,
        8,
        32,
        &[],
        vec![job("j", vec![LayerSpec::simple("l", &range, "general")])],
    );
    let port = rqd.port();
    Farm::new(&spec, move |c| {
        c.rqd.dry_run = false;
        c.rqd.endpoint = "127.0.0.1:{port}".into();
        c.rqd.port = port;
        c.rqd.timeout = Duration::from_millis(300);
    })
}

fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..300 {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// RQD starts the frames but answers after the deadline, and refuses the kill: the booking
/// must not be undone (the frame runs), so the frame is never booked a second time. Once RQD
/// confirms a kill, the booking is undone and the frame books again — once. Undoing first
/// and killing best-effort after ran 7–12 frames twice in ~1,050 launches.
#[test]
fn a_launch_that_timed_out_after_rqd_started_it_never_runs_twice() {
    let rqd = FakeRqd::start(FleetOptions {
        database_url: None,
        failure_per_mille: 0,
    })
    .unwrap();
    rqd.set_behaviour(Behaviour::StartSlowly {
        per_mille: 1000,
        delay: Duration::from_millis(1500),
    });
    rqd.set_refuse_kills(true);
    let farm = launching(2, &rqd);
    assert_eq!(farm.pass_all(), 2);
    assert!(
        wait_until(|| !rqd.kills().is_empty() && rqd.kills().len() >= 2),
        "each failed launch is killed"
    );
    // Kills unconfirmed: the frames stay RUNNING with their procs; nothing books them again.
    farm.refresh();
    assert_eq!(farm.pass_all(), 0);
    assert_eq!(farm.frames_in("RUNNING"), 2);
    assert_eq!(count(&farm, "SELECT count(*) FROM proc"), 2);
    // RQD answers again: the kill is confirmed on retry, the bookings are undone.
    rqd.set_refuse_kills(false);
    rqd.set_behaviour(Behaviour::Accept);
    assert!(
        wait_until(|| count(&farm, "SELECT count(*) FROM proc") == 0),
        "undone once RQD confirmed the kill"
    );
    assert_eq!(farm.frames_in("WAITING"), 2);
    farm.refresh();
    assert_eq!(farm.pass_all(), 2);
    let farm = farm.settle_launches();
    assert_eq!(rqd.double_runs(), Vec::new(), "no frame ran twice");
    assert_eq!(rqd.running().len(), 2);
    farm.assert_clean_audit();
    rqd.stop();
}

/// What Cuebot's release of a proc does to the database (`lostProc`, or a retry that found
/// nothing to kill): the host gets the proc's room back, the proc goes, and the frame goes
/// back to WAITING at a new version.
fn cuebot_stops_the_running_frames(farm: &Farm) {
    farm.client()
        .batch_execute(
            "UPDATE host h SET int_cores_idle = h.int_cores_idle + p.int_cores_reserved,
                    int_mem_idle = h.int_mem_idle + p.int_mem_reserved
               FROM proc p WHERE p.pk_host = h.pk_host;
             DELETE FROM proc;
             UPDATE frame SET str_state = 'WAITING', int_exit_status = 500,
                    int_version = int_version + 1
              WHERE str_state = 'RUNNING';",
        )
        .unwrap();
}

/// A one-frame farm launching on a fake RQD that starts every launch 1.5 s late and answers
/// within the deadline (5 s), its frame booked: the launch is on its way.
fn one_frame_started_late() -> (FakeRqd, Farm) {
    let rqd = FakeRqd::start(FleetOptions {
        database_url: None,
        failure_per_mille: 0,
    })
    .unwrap();
    rqd.set_behaviour(Behaviour::StartLate(Duration::from_millis(1500)));
    let port = rqd.port();
    let spec = small_farm(
        1,
        8,
        32,
        &[],
        vec![job("j", vec![LayerSpec::simple("l", "1", "general")])],
    );
    let farm = Farm::new(&spec, move |c| {
        c.rqd.dry_run = false;
        c.rqd.endpoint = "127.0.0.1:{port}".into();
        c.rqd.port = port;
        c.rqd.timeout = Duration::from_secs(5);
    });
    assert_eq!(farm.pass_all(), 1);
    (rqd, farm)
}

/// Cuebot stops a frame (an operator's retry) after its booking committed but before RQD
/// started it: Cuebot's kill finds nothing on RQD, and the launch lands afterwards. The frame
/// must not be booked again until that launch is killed, or it runs twice. Before V006 the
/// next pass booked it again while the first launch was still on its way to RQD.
#[test]
fn a_frame_cuebot_stops_before_its_launch_lands_is_not_booked_again_until_that_launch_is_killed() {
    let (rqd, farm) = one_frame_started_late();
    cuebot_stops_the_running_frames(&farm);
    rqd.set_behaviour(Behaviour::Accept);
    farm.refresh();
    assert_eq!(
        farm.pass_all(),
        0,
        "a frame whose launch is unresolved is not booked again"
    );
    assert!(
        wait_until(|| !rqd.kills().is_empty()),
        "the launch that landed after Cuebot stopped its frame is killed"
    );
    assert!(
        wait_until(|| count(&farm, "SELECT count(*) FROM stagehand.pending_launch") == 0),
        "its row goes once the kill is confirmed"
    );
    assert!(rqd.running().is_empty(), "{:?}", rqd.running());
    farm.refresh();
    assert_eq!(farm.pass_all(), 1, "then the frame books again");
    let farm = farm.settle_launches();
    assert_eq!(rqd.double_runs(), Vec::new(), "no frame ran twice");
    assert_eq!(rqd.running().len(), 1);
    farm.assert_clean_audit();
    rqd.stop();
}

/// As above, but RQD does not answer the kill of the launch that landed late, while Cuebot
/// has released the proc: the launch still runs there, so the frame must not be booked
/// again until a kill is confirmed. The row used to go as soon as the proc was gone, and the
/// next pass booked the frame beside the run still going.
#[test]
fn a_late_launch_whose_proc_cuebot_released_keeps_its_frame_until_rqd_confirms_the_kill() {
    let (rqd, farm) = one_frame_started_late();
    cuebot_stops_the_running_frames(&farm);
    rqd.set_refuse_kills(true);
    rqd.set_behaviour(Behaviour::Accept);
    assert!(
        wait_until(|| rqd.kills().len() >= 2),
        "the late launch is killed, and again after the kill went unanswered"
    );
    assert_eq!(rqd.running().len(), 1, "the late launch runs");
    farm.refresh();
    assert_eq!(
        farm.pass_all(),
        0,
        "not booked again while the late launch may run"
    );
    rqd.set_refuse_kills(false);
    assert!(
        wait_until(|| count(&farm, "SELECT count(*) FROM stagehand.pending_launch") == 0),
        "the row goes once RQD confirms a kill"
    );
    assert!(rqd.running().is_empty());
    farm.refresh();
    assert_eq!(farm.pass_all(), 1);
    let farm = farm.settle_launches();
    assert_eq!(rqd.double_runs(), Vec::new(), "no frame ran twice");
    farm.assert_clean_audit();
    rqd.stop();
}

/// A launch timed out and RQD does not confirm its kill; then Cuebot gives up on the host
/// (DOWN) and releases the proc. Nothing of the booking is left to undo, and no kill will be
/// confirmed there: its pending row must go, or the frame is never booked again (V006). The
/// kill's retries used to stop without deleting it.
#[test]
fn a_pending_row_goes_when_cuebot_gives_up_on_the_host_of_an_unconfirmed_launch() {
    let rqd = FakeRqd::start(FleetOptions {
        database_url: None,
        failure_per_mille: 0,
    })
    .unwrap();
    rqd.set_behaviour(Behaviour::Stall(Duration::from_secs(2)));
    rqd.set_refuse_kills(true);
    let farm = launching(1, &rqd);
    assert_eq!(farm.pass_all(), 1);
    assert!(
        wait_until(|| !rqd.kills().is_empty()),
        "the launch is killed"
    );
    cuebot_stops_the_running_frames(&farm);
    farm.client()
        .batch_execute("UPDATE host_stat SET str_state = 'DOWN'")
        .unwrap();
    assert!(
        wait_until(|| count(&farm, "SELECT count(*) FROM stagehand.pending_launch") == 0),
        "the row goes with the proc"
    );
    rqd.set_refuse_kills(false);
    rqd.set_behaviour(Behaviour::Accept);
    farm.client()
        .batch_execute("UPDATE host_stat SET str_state = 'UP'")
        .unwrap();
    farm.refresh();
    assert_eq!(farm.pass_all(), 1, "the frame books again");
    let farm = farm.settle_launches();
    assert_eq!(rqd.double_runs(), Vec::new());
    farm.assert_clean_audit();
    rqd.stop();
}

fn booked_one(farm: &Farm) -> (Placement, i32) {
    let placements = placements_for_all_frames(&mut farm.client(), &farm.seeded.shows[0]);
    let outcome = book_batch(
        &mut farm.client(),
        &placements[..1],
        &options(),
        None,
        &Default::default(),
    )
    .unwrap();
    let version = *outcome.results[0].as_ref().unwrap();
    (placements[0].clone(), version)
}

/// Cuebot raised the running proc's memory after the booking: undoing gives the host back
/// what the proc holds now, not what was planned, so the host ends exactly idle.
#[test]
fn compensation_gives_back_what_the_proc_holds_now() {
    let farm = one_job_farm(1);
    let (placement, version) = booked_one(&farm);
    farm.client()
        // Cuebot's trigger takes the raise from the host's idle memory.
        .batch_execute(&format!(
            "UPDATE proc SET int_mem_reserved = int_mem_reserved + {GB}"
        ))
        .unwrap();
    let outcome = compensate(&mut farm.client(), &placement, version).unwrap();
    assert_eq!(
        outcome,
        Compensation::Undone(stagehand::model::Resources {
            cores: 100,
            mem_kb: 2 * GB,
            gpus: 0,
            gpu_mem_kb: 0
        })
    );
    assert_eq!(
        count(
            &farm,
            "SELECT count(*) FROM host WHERE int_mem_idle = int_mem"
        ),
        1
    );
    farm.assert_clean_audit();
}

/// The frame moved on (another writer changed it) before the undo: nothing is undone, and a
/// RUNNING frame never loses its proc.
#[test]
fn compensation_of_a_frame_that_moved_on_keeps_its_proc() {
    let farm = one_job_farm(1);
    let (placement, version) = booked_one(&farm);
    farm.client()
        .execute("UPDATE frame SET int_version = int_version + 1", &[])
        .unwrap();
    let outcome = compensate(&mut farm.client(), &placement, version).unwrap();
    assert_eq!(outcome, Compensation::FrameMoved);
    assert_eq!(farm.frames_in("RUNNING"), 1);
    assert_eq!(count(&farm, "SELECT count(*) FROM proc"), 1);
}

/// The host guard re-checks what the host refresh selected hosts by: an RQD gone DOWN, a
/// stale ping, a host moved to another allocation all refuse the booking.
#[test]
fn the_host_guard_refuses_down_silent_and_moved_hosts() {
    let cases = [
        "UPDATE host_stat SET str_state = 'DOWN'",
        "UPDATE host_stat SET ts_ping = now() - interval '10 minutes'",
        "UPDATE host SET pk_alloc = (SELECT pk_alloc FROM alloc WHERE str_name = 'other.alloc')",
    ];
    for sql in cases {
        let farm = one_job_farm(2);
        farm.client()
            .batch_execute(
                "INSERT INTO alloc (pk_alloc, str_name, str_tag, pk_facility)
                 SELECT gen_random_uuid()::text, 'other.alloc', 'other', pk_facility FROM facility LIMIT 1",
            )
            .unwrap();
        let placements = placements_for_all_frames(&mut farm.client(), &farm.seeded.shows[0]);
        farm.client().batch_execute(sql).unwrap();
        let outcome = book_batch(
            &mut farm.client(),
            &placements,
            &options(),
            None,
            &Default::default(),
        )
        .unwrap();
        assert!(
            outcome
                .results
                .iter()
                .all(|r| *r == Err(GuardLoss::HostCapacity)),
            "{sql}: {:?}",
            outcome.results
        );
        assert_eq!(farm.frames_in("RUNNING"), 0, "{sql}");
    }
}

/// The show is handed back to Cuebot while a batch is in flight: the flip waits for the
/// batch or the batch sees the flip — a batch never commits into a show Cuebot now books.
#[test]
fn a_show_handed_back_to_cuebot_mid_batch_gets_no_booking() {
    let farm = one_job_farm(3);
    let show = farm.seeded.shows[0].clone();
    let placements = placements_for_all_frames(&mut farm.client(), &show);
    let mut flipper = farm.client();
    let mut flip = flipper.transaction().unwrap();
    flip.execute(
        "UPDATE show SET b_scheduler_managed = false WHERE pk_show = $1",
        &[&show],
    )
    .unwrap();
    let mut watcher = farm.client();
    let outcome = std::thread::scope(|s| {
        let url = farm.db.url().to_owned();
        let run = s.spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            book_batch(&mut c, &placements, &options(), None, &Default::default()).unwrap()
        });
        assert!(wait_for_lock_waiters(&mut watcher, 1), "the batch waits");
        flip.commit().unwrap();
        run.join().unwrap()
    });
    assert!(
        outcome
            .results
            .iter()
            .all(|r| *r == Err(GuardLoss::Unmanaged)),
        "{:?}",
        outcome.results
    );
    assert_eq!(count(&farm, "SELECT count(*) FROM proc"), 0);
}

/// A pass books only under a fence it captured at its start, and only once the show's
/// counters were re-synced after its claim (the may-book check), not whatever the lease
/// thread publishes by the time a batch flushes.
#[test]
fn a_pass_books_nothing_for_a_show_not_yet_bookable_under_its_lease() {
    let farm = one_job_farm(2);
    let show = farm.seeded.shows[0].clone();
    let me = uuid::Uuid::new_v4();
    let mut client = farm.client();
    client
        .execute(
            "INSERT INTO stagehand.instance (pk_instance, str_name, str_host, int_pid)
             VALUES ($1, 'me', 'h', 1)",
            &[&me],
        )
        .unwrap();
    client
        .execute(
            "INSERT INTO stagehand.show_lease (pk_show, pk_instance, int_epoch) VALUES ($1, $2, 1)",
            &[&show, &me],
        )
        .unwrap();
    let resyncs = farm.shared.ledger.resyncs();
    let fence = |after: u64| Fence {
        instance: me,
        lease_secs: 30.0,
        epochs: [(show.as_str().into(), 1)].into_iter().collect(),
        bookable_after: [(show.as_str().into(), after)].into_iter().collect(),
    };
    farm.lease.publish_fence(fence(resyncs + 2));
    assert_eq!(farm.pass_all(), 0, "claimed, counters not re-synced yet");
    farm.lease.publish_fence(fence(resyncs));
    assert_eq!(farm.pass_all(), 2);
}

/// A wide-frame reservation whose job is paused, or whose job cap, folder, subscription or
/// layer limit leaves no room for the frame, or whose frame left the room idle well past the
/// shadow time, is dropped at the next refresh instead of idling its host until `max_hold`.
/// The last four were kept (one of the liveness review's findings, 2026-12-08).
#[test]
fn a_reservation_of_a_paused_or_capped_job_is_dropped() {
    for sql in [
        "UPDATE job SET b_paused = true".to_owned(),
        "UPDATE job_resource SET int_max_cores = 400, int_cores = 400".into(),
        "UPDATE folder_resource SET int_max_cores = 400".into(),
        "UPDATE subscription SET int_burst = 400".into(),
        limit_on_every_layer(0),
        "UPDATE stagehand.host_reservation SET ts_shadow = now() - interval '1 minute'".into(),
    ] {
        let farm = one_job_farm(1);
        let mut client = farm.client();
        reserve_for_waiting_frames(&mut client, 800);
        let (_, dropped) = stagehand::db::reservations::load(&mut client).unwrap();
        assert_eq!(dropped, 0, "a live reservation stays");
        client.batch_execute(&sql).unwrap();
        let (holds, dropped) = stagehand::db::reservations::load(&mut client).unwrap();
        assert_eq!((holds.len(), dropped), (0, 1), "{sql}");
    }
}

/// A reservation waits for the room its host frees as it drains, and what runs there counts
/// for the caps too: a job, show or limit that is full only with the host's own frames keeps
/// its reservation (the frame gets that room back), and one that stays full without them
/// loses it. Counted with the host's frames, each case below was dropped and the host went
/// back to the pool while the wide frame waited.
#[test]
fn a_reservation_keeps_the_room_its_own_host_frees() {
    // Two 4-core frames run on the only (8-core) host; the third waits for one of them.
    for (full, over) in [
        (
            "UPDATE job_resource SET int_cores = 800, int_max_cores = 800",
            "UPDATE job_resource SET int_max_cores = 300",
        ),
        (
            "UPDATE subscription SET int_cores = 800, int_burst = 800",
            "UPDATE subscription SET int_burst = 300",
        ),
        (
            limit_on_every_layer(2).as_str(),
            "UPDATE limit_record SET int_max_value = 0",
        ),
    ] {
        let mut layer = LayerSpec::simple("l", "1-3", "general");
        layer.cores_min = 400;
        let farm = Farm::new(
            &small_farm(1, 8, 32, &[], vec![job("j", vec![layer])]),
            |_| {},
        );
        assert_eq!(farm.pass_all(), 2);
        let mut client = farm.client();
        reserve_for_waiting_frames(&mut client, 400);
        client.batch_execute(full).unwrap();
        let (holds, dropped) = stagehand::db::reservations::load(&mut client).unwrap();
        assert_eq!(
            (holds.len(), dropped),
            (1, 0),
            "full only with the host's own frames: {full}"
        );
        client.batch_execute(over).unwrap();
        let (holds, dropped) = stagehand::db::reservations::load(&mut client).unwrap();
        assert_eq!(
            (holds.len(), dropped),
            (0, 1),
            "full even once the host drains: {over}"
        );
    }
}

/// SQL putting one limit of `max` on every layer.
fn limit_on_every_layer(max: i32) -> String {
    format!(
        "INSERT INTO limit_record (pk_limit_record, str_name, int_max_value) VALUES ('lim', 'lim', {max});
         INSERT INTO layer_limit (pk_layer_limit, pk_layer, pk_limit_record)
              SELECT 'll', pk_layer, 'lim' FROM layer"
    )
}

/// Reserves every host for every WAITING frame: `cores` centicores and 1 GB, the shadow a
/// minute ahead, for an hour.
fn reserve_for_waiting_frames(client: &mut postgres::Client, cores: i64) {
    client
        .execute(
            "INSERT INTO stagehand.host_reservation (pk_host, pk_frame, pk_layer, pk_show,
                    int_cores, int_mem, ts_shadow, ts_expires)
             SELECT h.pk_host, f.pk_frame, f.pk_layer, j.pk_show, $1, 1048576,
                    now() + interval '1 minute', now() + interval '1 hour'
               FROM host h, frame f JOIN job j ON j.pk_job = f.pk_job
              WHERE f.str_state = 'WAITING'",
            &[&cores],
        )
        .unwrap();
}

/// A table recompute that fails (here: Cuebot holds a lock past the statement timeout)
/// still re-syncs the counters the caps lean on; it used to skip them with the tables.
#[test]
fn a_failed_table_recompute_still_resyncs_the_counters() {
    let farm = one_job_farm(1);
    let mut locker = farm.client();
    let mut lock = locker.transaction().unwrap();
    // Even its read of stale rows waits (a lock on rows only makes it give up on them).
    lock.batch_execute("LOCK TABLE layer_resource IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let mut client = farm.client();
    client.batch_execute("SET statement_timeout = 300").unwrap();
    let before = farm.shared.ledger.resyncs();
    let result =
        stagehand::accounting::recompute::round(&mut client, &farm.shared.ledger, false, None);
    assert!(result.is_err(), "the table update timed out");
    assert_eq!(
        farm.shared.ledger.resyncs(),
        before + 1,
        "counters re-synced"
    );
    lock.rollback().unwrap();
}

/// A burst lowered in the database binds at once, not when the counters next re-read the
/// caps (`caps_interval`): the booking transaction checks the caps against what committed
/// procs hold. The same for a job's maximum.
#[test]
fn a_lowered_burst_or_job_cap_binds_from_its_commit() {
    for sql in [
        "UPDATE subscription SET int_burst = 200",
        "UPDATE job_resource SET int_max_cores = 200",
    ] {
        let farm = one_job_farm(6);
        farm.client().batch_execute(sql).unwrap();
        // The ledger still holds the old caps: only the database knows.
        farm.pass_all();
        assert_eq!(farm.frames_in("RUNNING"), 2, "{sql}");
        farm.assert_clean_audit();
    }
}

/// An operator moves a job into a folder at its maximum after a pass planned the job's
/// frames: the batch must answer to the new folder. Planned under the old one, it locked and
/// counted that one and filled the new folder past its maximum.
#[test]
fn a_job_moved_into_a_full_folder_after_the_pass_books_nothing_there() {
    let farm = one_job_farm(6);
    let booked = book_planned_before(
        &farm,
        "INSERT INTO folder (pk_folder, pk_show, str_name, pk_dept)
             SELECT 'moved-to', pk_show, 'moved-to', pk_dept FROM folder;
         UPDATE folder_resource SET int_max_cores = 200 WHERE pk_folder = 'moved-to';
         UPDATE job SET pk_folder = 'moved-to'",
    );
    let cores = count(
        &farm,
        "SELECT coalesce(sum(p.int_cores_reserved), 0)::bigint FROM proc p
           JOIN job j ON j.pk_job = p.pk_job WHERE j.pk_folder = 'moved-to'",
    );
    assert!(
        cores <= 200,
        "{cores} centicores in a folder of at most 200"
    );
    assert_eq!(booked, 0, "planned under a folder the job left");
    farm.assert_clean_audit();
}

/// An operator puts a limit on a layer after a pass planned its frames: the batch must
/// count against it. With the layer's limits taken from the pass, the guard never locked
/// or counted the new limit and booked all ten frames under a limit of two.
#[test]
fn a_limit_put_on_a_layer_after_the_pass_binds_its_batch() {
    let mut spec = small_farm(
        1,
        16,
        64,
        &[],
        vec![job("j", vec![LayerSpec::simple("l", "1-10", "general")])],
    );
    spec.limits = vec![("lic".into(), 2)];
    let farm = Farm::new(&spec, |_| {});
    let booked = book_planned_before(
        &farm,
        "INSERT INTO layer_limit (pk_layer_limit, pk_layer, pk_limit_record)
             SELECT 'added', l.pk_layer, r.pk_limit_record FROM layer l, limit_record r",
    );
    assert_eq!(booked, 2, "the new limit's maximum");
    assert_eq!(farm.frames_in("RUNNING"), 2);
}

/// Plans a placement for every frame, lets an operator run `change`, then books the plan in
/// one batch: how many frames it booked.
fn book_planned_before(farm: &Farm, change: &str) -> usize {
    let mut client = farm.client();
    let placements = placements_for_all_frames(&mut client, &farm.seeded.shows[0]);
    client.batch_execute(change).unwrap();
    book_batch(
        &mut client,
        &placements,
        &options(),
        None,
        &Default::default(),
    )
    .unwrap()
    .booked()
}

/// Cuebot releases a finished proc by updating its host, then the show's subscription
/// (`ProcDaoJdbc.procDestroyed`), in one transaction; a booking holds the subscription row
/// shared from its cap guard on and takes its hosts last. When Cuebot starts waiting for the
/// subscription before the booking reaches the host Cuebot holds, Cuebot's wait is the older
/// one and the deadlock detector aborted Cuebot's release (its proc then stays, leaked,
/// until Cuebot's orphan check). The booking gives up on any lock wait well before the
/// detector runs, so the victim is the booking, which the next pass retries.
#[test]
fn cuebots_proc_release_is_not_the_victim_of_a_deadlock_with_a_booking() {
    let farm = one_job_farm(2);
    let mut client = farm.client();
    let placements = placements_for_all_frames(&mut client, &farm.seeded.shows[0]);
    let p = &placements[0];
    let (host, show, alloc, frame) = (
        p.host.to_string(),
        p.show.to_string(),
        p.alloc.to_string(),
        p.frame.to_string(),
    );
    // A frame of the batch is held: the booking will wait there, past its cap guard.
    let mut holder = farm.client();
    let mut hold = holder.transaction().unwrap();
    hold.execute(
        "SELECT 1 FROM frame WHERE pk_frame = $1 FOR UPDATE",
        &[&frame],
    )
    .unwrap();
    // Cuebot's release begins: its host first.
    let mut cuebot = farm.client();
    cuebot.batch_execute("BEGIN").unwrap();
    cuebot
        .execute(
            "UPDATE host SET int_cores_idle = int_cores_idle WHERE pk_host = $1",
            &[&host],
        )
        .unwrap();
    std::thread::scope(|s| {
        let url = farm.db.url().to_owned();
        let booking = s.spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            book_batch(&mut c, &placements, &options(), None, &Default::default())
        });
        assert!(
            wait_for_lock_waiters(&mut client, 1),
            "the booking waits on the frame"
        );
        // Cuebot goes on to the subscription: it waits on the booking's share lock.
        let release = s.spawn(move || {
            cuebot.execute(
                "UPDATE subscription SET int_cores = int_cores WHERE pk_show = $1 AND pk_alloc = $2",
                &[&show, &alloc],
            )?;
            cuebot.batch_execute("COMMIT")
        });
        assert!(
            wait_for_lock_waiters(&mut client, 2),
            "Cuebot waits on the booking"
        );
        // The frame is let go: the booking reaches the host Cuebot holds.
        hold.rollback().unwrap();
        let released = release.join().unwrap();
        assert!(
            released.is_ok(),
            "Cuebot's release was aborted: {released:?}"
        );
        let _ = booking.join().unwrap();
    });
    farm.assert_clean_audit();
}

/// A frame Cuebot requeued under one of its `dispatcher.layer_delay.rules` statuses books
/// again without spending a retry once that status is configured.
#[test]
fn a_configured_layer_delay_status_does_not_spend_a_retry() {
    for (configured, retries) in [(vec![], 1), (vec![330], 0)] {
        let farm = one_job_farm(1);
        farm.client()
            .execute(
                "UPDATE frame SET int_exit_status = 330, int_retries = 0",
                &[],
            )
            .unwrap();
        let placements = placements_for_all_frames(&mut farm.client(), &farm.seeded.shows[0]);
        let options = BookOptions {
            no_retry_exit_statuses: configured,
            ..options()
        };
        book_batch(
            &mut farm.client(),
            &placements,
            &options,
            None,
            &Default::default(),
        )
        .unwrap();
        assert_eq!(
            count(&farm, "SELECT int_retries::bigint FROM frame"),
            retries
        );
    }
}

/// An instance dies (kill -9) between committing a booking and launching it: the holder of
/// the show finds the booking in `stagehand.pending_launch`, has RQD kill the frame, and
/// undoes the booking — before, such frames stayed RUNNING with procs forever.
#[test]
fn a_booking_its_dead_instance_never_launched_is_undone_by_the_next_holder() {
    let rqd = FakeRqd::start(FleetOptions {
        database_url: None,
        failure_per_mille: 0,
    })
    .unwrap();
    let farm = launching(2, &rqd);
    let show = farm.seeded.shows[0].clone();
    let (dead, me) = instances(&farm);
    book_pending(&farm, dead);
    // This instance holds the show now; its launcher sweeps for orphans when idle.
    farm.lease.publish_fence(Fence {
        instance: me,
        lease_secs: 30.0,
        epochs: [(show.as_str().into(), 1)].into_iter().collect(),
        bookable_after: Default::default(),
    });
    assert!(
        wait_until(|| count(&farm, "SELECT count(*) FROM proc") == 0),
        "the orphaned bookings are undone"
    );
    assert_eq!(farm.frames_in("WAITING"), 2);
    assert_eq!(rqd.kills().len(), 2, "RQD was told to kill each first");
    assert_eq!(
        count(&farm, "SELECT count(*) FROM stagehand.pending_launch"),
        0
    );
    farm.assert_clean_audit();
    rqd.stop();
}

/// A launch RQD accepted leaves no pending-launch row behind.
#[test]
fn launched_bookings_leave_no_pending_launch() {
    let rqd = FakeRqd::start(FleetOptions {
        database_url: None,
        failure_per_mille: 0,
    })
    .unwrap();
    let farm = launching(3, &rqd);
    assert_eq!(farm.pass_all(), 3);
    let farm = farm.settle_launches();
    assert_eq!(rqd.launches().len(), 3);
    assert_eq!(
        count(&farm, "SELECT count(*) FROM stagehand.pending_launch"),
        0
    );
    rqd.stop();
}

/// Books every frame of the farm under `owner` (recorded as pending launch, claimed by the
/// booking) and returns the procs, the booking and its claim aged a minute: as an instance
/// frozen since it booked them leaves them.
fn book_pending(farm: &Farm, owner: uuid::Uuid) -> Vec<String> {
    let show = farm.seeded.shows[0].clone();
    let mut client = farm.client();
    let placements = placements_for_all_frames(&mut client, &show);
    let options = BookOptions {
        record_launches: Some(Some(owner)),
        licenses: None,
        ..options()
    };
    let booked = book_batch(
        &mut client,
        &placements,
        &options,
        None,
        &Default::default(),
    )
    .unwrap();
    assert_eq!(booked.booked(), placements.len());
    client
        .execute(
            "UPDATE stagehand.pending_launch
                SET ts_booked = now() - interval '1 minute', ts_launch = ts_launch - interval '1 minute'",
            &[],
        )
        .unwrap();
    placements.into_iter().map(|p| p.proc.to_string()).collect()
}

pub(crate) fn instances(farm: &Farm) -> (uuid::Uuid, uuid::Uuid) {
    let (frozen, me) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    farm.client()
        .execute(
            "INSERT INTO stagehand.instance (pk_instance, str_name, str_host, int_pid, ts_heartbeat)
             VALUES ($1, 'frozen', 'h', 1, now() - interval '1 hour'), ($2, 'me', 'h', 2, now())",
            &[&frozen, &me],
        )
        .unwrap();
    (frozen, me)
}

pub(crate) fn rule(me: uuid::Uuid) -> stagehand::db::launches::SweepRule {
    stagehand::db::launches::SweepRule {
        me: Some(me),
        min_age_secs: 1.0,
        claim_age_secs: 5.0,
        lease_secs: 30.0,
        limit: 1000,
    }
}

/// Soak finding 5: an instance frozen (SIGSTOP) past its lease looks dead; the show's new
/// holder takes its pending bookings over, and when the frozen one wakes its launcher must
/// find them taken and not launch them (before V004 it launched frames that had been undone
/// and booked again: they ran twice). A launcher claim, in turn, keeps sweepers off the row
/// until the claim is older than a launch can take.
#[test]
fn a_frozen_instance_does_not_launch_what_a_sweeper_took_over() {
    use stagehand::db::launches;
    let farm = one_job_farm(4);
    let (frozen, me) = instances(&farm);
    let procs = book_pending(&farm, frozen);
    let show = farm.seeded.shows[0].clone();
    let keys: Vec<&str> = procs.iter().map(String::as_str).collect();
    let mut client = farm.client();
    // The frozen launcher claimed the first two right before freezing.
    assert_eq!(launches::claim(&mut client, &keys[..2]).unwrap().len(), 2);
    let taken = launches::sweep(&mut client, &[show.as_str().into()], &rule(me)).unwrap();
    let mut taken: Vec<String> = taken.into_iter().map(|o| o.proc.to_string()).collect();
    taken.sort();
    let mut rest = procs[2..].to_vec();
    rest.sort();
    assert_eq!(taken, rest, "claimed rows are left to their launcher");
    // It wakes: the rows it had not claimed are no longer its to launch.
    assert_eq!(launches::claim(&mut client, &keys).unwrap().len(), 2);
    // Its claims age past what a launch can take (it froze again): now they are swept.
    client
        .execute(
            "UPDATE stagehand.pending_launch SET ts_launch = now() - interval '1 minute'
              WHERE ts_launch IS NOT NULL",
            &[],
        )
        .unwrap();
    let taken = launches::sweep(&mut client, &[show.as_str().into()], &rule(me)).unwrap();
    assert_eq!(
        taken.len(),
        4,
        "the old claims, and the sweeper's own unresolved rows"
    );
    assert!(launches::claim(&mut client, &keys).unwrap().is_empty());
}

/// A row this instance swept and could not resolve yet (RQD did not confirm the kill) stays
/// its own to resolve after it handed the show on: its successor leaves a live instance's
/// rows alone, and the sweep used to look only at the shows held.
#[test]
fn a_row_an_instance_swept_stays_its_to_resolve_after_the_show_moved_on() {
    use stagehand::db::launches;
    let farm = one_job_farm(2);
    let (frozen, me) = instances(&farm);
    let _procs = book_pending(&farm, frozen);
    let show = farm.seeded.shows[0].clone();
    let mut client = farm.client();
    let taken = launches::sweep(&mut client, &[show.as_str().into()], &rule(me)).unwrap();
    assert_eq!(taken.len(), 2);
    // The kills went unconfirmed; the show moved to another instance.
    let again = launches::sweep(&mut client, &[], &rule(me)).unwrap();
    assert_eq!(again.len(), 2, "still this instance's to resolve");
}

/// A dead instance's bookings of a show handed back to Cuebot: no instance holds the show
/// any more, so any instance resolves them (they used to stay RUNNING with procs).
#[test]
fn a_dead_instances_rows_of_a_show_handed_back_to_cuebot_are_swept() {
    use stagehand::db::launches;
    let farm = one_job_farm(2);
    let (frozen, me) = instances(&farm);
    let _procs = book_pending(&farm, frozen);
    let mut client = farm.client();
    assert!(
        launches::sweep(&mut client, &[], &rule(me))
            .unwrap()
            .is_empty()
    );
    client
        .batch_execute("UPDATE show SET b_scheduler_managed = false")
        .unwrap();
    let taken = launches::sweep(&mut client, &[], &rule(me)).unwrap();
    assert_eq!(
        taken.len(),
        2,
        "no instance holds the show: any may resolve them"
    );
}

/// A booking writes its pending row already claimed, so its launcher needs no claim statement
/// while the claim is young — and a sweeper that takes its instance for dead (a heartbeat
/// missed for a lease, an instance frozen right after the commit) still leaves the row until
/// that claim is older than a launch can take.
#[test]
fn a_booking_claims_its_pending_rows_in_its_own_transaction() {
    use stagehand::db::launches;
    let farm = one_job_farm(2);
    let (frozen, me) = instances(&farm);
    let _procs = book_pending(&farm, frozen);
    let show = farm.seeded.shows[0].clone();
    let mut client = farm.client();
    client
        .execute(
            "UPDATE stagehand.pending_launch SET ts_launch = now() - interval '1 second'",
            &[],
        )
        .unwrap();
    let unclaimed = count(
        &farm,
        "SELECT count(*) FROM stagehand.pending_launch WHERE ts_launch IS NULL",
    );
    assert_eq!(unclaimed, 0, "every row is written claimed");
    let taken = launches::sweep(&mut client, &[show.as_str().into()], &rule(me)).unwrap();
    assert!(taken.is_empty(), "a young booking claim keeps sweepers off");
    client
        .execute(
            "UPDATE stagehand.pending_launch SET ts_launch = now() - interval '1 minute'",
            &[],
        )
        .unwrap();
    let taken = launches::sweep(&mut client, &[show.as_str().into()], &rule(me)).unwrap();
    assert_eq!(taken.len(), 2, "an old one does not");
}

/// The claim and the take race on one row: the launcher's claim holds the row lock,
/// uncommitted, while the sweep's statement starts (its snapshot sees no claim) and queues on
/// the lock. Once the claim commits the sweep must re-check the row and leave it; taking it
/// on the statement's snapshot would let both win — the frame launched and undone.
#[test]
fn a_sweep_queued_behind_a_launch_claim_leaves_the_row() {
    use stagehand::db::launches;
    let farm = one_job_farm(2);
    let (frozen, me) = instances(&farm);
    let procs = book_pending(&farm, frozen);
    let show = farm.seeded.shows[0].clone();
    let mut launcher = farm.client();
    let mut claim = launcher.transaction().unwrap();
    assert_eq!(
        launches::claim(&mut claim, &[procs[0].as_str()])
            .unwrap()
            .len(),
        1
    );
    let swept = std::thread::scope(|s| {
        let sweeper = s.spawn(|| {
            let mut c = farm.client();
            launches::sweep(&mut c, &[show.as_str().into()], &rule(me)).unwrap()
        });
        assert!(
            wait_for_lock_waiters(&mut farm.client(), 1),
            "the sweep waits"
        );
        claim.commit().unwrap();
        sweeper.join().unwrap()
    });
    let swept: Vec<String> = swept.into_iter().map(|o| o.proc.to_string()).collect();
    assert_eq!(
        swept,
        vec![procs[1].clone()],
        "only the unclaimed row is taken"
    );
}

/// Two live instances sweep a dead one's row at once (every instance sweeps the rows of shows
/// handed back to Cuebot): the one queued behind the other's take must find the row taken by
/// a live instance and leave it. Its re-check looked only at the claim's age, which a take
/// leaves unchanged, so both took the row, and both killed and undid the frame — the later
/// one possibly killing a run Cuebot had started on that host since.
#[test]
fn two_sweepers_never_take_the_same_row() {
    use stagehand::db::launches;
    let farm = one_job_farm(1);
    let (frozen, me) = instances(&farm);
    let other = uuid::Uuid::new_v4();
    farm.client()
        .execute(
            "INSERT INTO stagehand.instance (pk_instance, str_name, str_host, int_pid)
             VALUES ($1, 'other', 'h', 3)",
            &[&other],
        )
        .unwrap();
    let _procs = book_pending(&farm, frozen);
    let show = farm.seeded.shows[0].clone();
    let mut locker = farm.client();
    let mut lock = locker.transaction().unwrap();
    lock.batch_execute("SELECT 1 FROM stagehand.pending_launch FOR UPDATE")
        .unwrap();
    let taken = std::thread::scope(|s| {
        let sweepers: Vec<_> = [me, other]
            .into_iter()
            .map(|who| {
                let show = &show;
                let farm = &farm;
                s.spawn(move || {
                    let mut c = farm.client();
                    launches::sweep(&mut c, &[show.as_str().into()], &rule(who))
                        .unwrap()
                        .len()
                })
            })
            .collect();
        assert!(
            wait_for_lock_waiters(&mut farm.client(), 2),
            "both sweeps wait"
        );
        lock.rollback().unwrap();
        sweepers
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum::<usize>()
    });
    assert_eq!(taken, 1, "one sweeper took the row");
}

/// A sweeper that looks dead itself (frozen past its lease, its launcher thread awake before
/// its heartbeat) takes nothing: another sweeper queued behind its take would have taken it
/// for dead too and taken the row a second time.
#[test]
fn a_sweeper_that_looks_dead_takes_nothing() {
    use stagehand::db::launches;
    let farm = one_job_farm(1);
    let (frozen, me) = instances(&farm);
    let _procs = book_pending(&farm, frozen);
    let show = farm.seeded.shows[0].clone();
    let mut client = farm.client();
    let shows = [show.as_str().into()];
    let taken = launches::sweep(&mut client, &shows, &rule(frozen)).unwrap();
    assert!(taken.is_empty(), "a frozen sweeper takes nothing");
    let taken = launches::sweep(&mut client, &shows, &rule(me)).unwrap();
    assert_eq!(taken.len(), 1, "a live one takes the row");
}

/// The burst check first bounds a subscription's usage by what is busy on its allocation's
/// hosts, whichever show it belongs to; where that bound leaves too little room it counts
/// the show's own procs. Here another writer keeps one host busy: the bound (8 cores) says
/// the 2-core burst is full, the exact count (0) says it is empty, and 2 frames book.
#[test]
fn a_burst_bound_by_other_shows_busy_hosts_falls_back_to_the_exact_count() {
    let spec = small_farm(
        2,
        8,
        32,
        &[],
        vec![job("j", vec![LayerSpec::simple("l", "1-6", "general")])],
    );
    let farm = Farm::new(&spec, |_| {});
    farm.client()
        .batch_execute(
            "UPDATE subscription SET int_burst = 200;
             UPDATE host SET int_cores_idle = 0
              WHERE pk_host = (SELECT pk_host FROM host ORDER BY str_name LIMIT 1)",
        )
        .unwrap();
    farm.refresh();
    farm.pass_all();
    assert_eq!(farm.frames_in("RUNNING"), 2);
}
