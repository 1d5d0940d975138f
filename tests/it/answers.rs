//! Answers from PostgreSQL that are lost or late: a COMMIT whose answer never comes, a
//! COMMIT that lands after the client gave up, a launch claim answered after its budget.
//! Each runs the pipeline's connections through the proxy of `common::proxy`, which does to
//! one statement what a network cut, a slow network or a freeze does.

use std::time::{Duration, Instant};

use stagehand::{
    config::Config,
    db::launches::SweepRule,
    sim::{
        fake_rqd::{Behaviour, FakeRqd, FleetOptions},
        seed::{FarmSpec, LayerSpec},
    },
};

use crate::{
    adversity::{instances, rule},
    common::{Farm, TestDb, job, proxy::CommitCutter, small_farm},
};

/// A proxy in front of the test server.
fn proxy() -> CommitCutter {
    let db = TestDb::new();
    let upstream = db
        .url()
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("port="))
        .map(|p| format!("127.0.0.1:{p}"))
        .unwrap();
    CommitCutter::start(upstream)
}

/// A farm whose pipeline reaches its database through a proxy and launches on `rqd`; `tweak`
/// adjusts the configuration after that.
fn behind_proxy(
    spec: &FarmSpec,
    rqd: &FakeRqd,
    tweak: impl FnOnce(&mut Config),
) -> (CommitCutter, Farm) {
    let cutter = proxy();
    let port = rqd.port();
    let farm = Farm::new(spec, |c| {
        c.database.url = cutter.url(&c.database.url);
        c.rqd.dry_run = false;
        c.rqd.endpoint = "127.0.0.1:{port}".into();
        c.rqd.port = port;
        tweak(c);
    });
    (cutter, farm)
}

fn fake_rqd() -> FakeRqd {
    FakeRqd::start(FleetOptions {
        database_url: None,
        failure_per_mille: 0,
    })
    .unwrap()
}

/// The connection breaks while COMMIT is in flight, after the server committed: the frames
/// are RUNNING with procs. The pass must find that out and launch them — treated as a
/// rollback they stayed RUNNING, never launched, and the counters forgot their cores.
#[test]
fn a_commit_whose_answer_is_lost_is_resolved_and_launched() {
    lost_commit_is_resolved_and_launched(|cutter| cutter.arm());
}

/// The client gives up on its COMMIT before the server has it (a network that delays it, a
/// server slow to commit): a look at the procs right then finds none, yet the COMMIT lands
/// later. Judged a rollback, its frames stayed RUNNING, never launched, their cores no
/// longer charged — room another batch could take past a burst. The transaction's own
/// status, asked until it is no longer in progress, says it committed.
#[test]
fn a_commit_that_lands_after_its_answer_was_lost_is_launched_not_stranded() {
    lost_commit_is_resolved_and_launched(|cutter| cutter.arm_late(Duration::from_millis(700)));
}

/// One pass through a proxy armed by `arm`, then the booking must be launched and charged.
fn lost_commit_is_resolved_and_launched(arm: impl Fn(&CommitCutter)) {
    let rqd = fake_rqd();
    let spec = small_farm(
        1,
        8,
        32,
        &[],
        vec![job("j", vec![LayerSpec::simple("l", "1-2", "general")])],
    );
    let (cutter, farm) = behind_proxy(&spec, &rqd, |_| {});
    arm(&cutter);
    farm.pass_all();
    assert_eq!(cutter.cuts(), 1, "the booking's COMMIT was cut");
    // Past the late COMMIT's landing, so a booking judged a rollback shows as stranded.
    std::thread::sleep(Duration::from_secs(1));
    let farm = farm.settle_launches();
    assert_eq!(farm.frames_in("RUNNING"), 2, "the commit went through");
    assert_eq!(rqd.launches().len(), 2, "and its frames were launched");
    let alloc = &farm.seeded.allocs[0];
    assert_eq!(
        farm.shared.ledger.sub_booked(
            &farm.seeded.shows[0].as_str().into(),
            &alloc.as_str().into()
        ),
        200,
        "the counters kept the committed cores"
    );
    farm.assert_clean_audit();
    rqd.stop();
}

/// The text of a launcher's claim statement (`db::launches::claim`).
const CLAIM: &[u8] = b"SET ts_launch = now()";

/// Two one-frame jobs, `a` and `b`, on one host behind the proxy, launched on `rqd` by one
/// launcher thread: `a` is booked and its launch stalls in RQD for `stall`, so a launch booked
/// next waits in the queue past the claim budget (2 s) and is claimed again before it goes
/// out. Returns the proxy, the farm, `a`'s proc and `b`'s job key; `b` is bookable.
/// (`stall` stays below the launch timeout, 4 s.)
fn first_launch_stalled(rqd: &FakeRqd, stall: Duration) -> (CommitCutter, Farm, String, String) {
    let spec = small_farm(
        1,
        8,
        32,
        &[],
        vec![
            job("a", vec![LayerSpec::simple("l", "1", "general")]),
            job("b", vec![LayerSpec::simple("l", "1", "general")]),
        ],
    );
    let (proxy, farm) = behind_proxy(&spec, rqd, |c| {
        c.rqd.launch_threads = 1;
        c.rqd.timeout = Duration::from_secs(4);
    });
    let job_b = farm.seeded.jobs[1].clone();
    let mut client = farm.client();
    let pause = "UPDATE job SET b_paused = $2 WHERE pk_job = $1";
    client.execute(pause, &[&job_b, &true]).unwrap();
    rqd.set_behaviour(Behaviour::Stall(stall));
    assert_eq!(farm.pass_all(), 1);
    let first = wait_for(|| rqd.launches().first().map(|f| f.resource_id.clone()));
    rqd.set_behaviour(Behaviour::Accept);
    client.execute(pause, &[&job_b, &false]).unwrap();
    (proxy, farm, first, job_b)
}

/// A launcher renews a claim that waited past its budget; the renewal runs at once, but its
/// answer comes late (a freeze, a slow network), and meanwhile a sweeper, seeing the claim
/// old and the instance silent, takes the row over to kill and undo it. Launching on that
/// late answer would run a frame the sweeper is undoing. The renewal must be judged by when
/// it was sent, and renewed again: then the sweeper's mark is seen and nothing is launched.
#[test]
fn a_launch_claim_answered_after_its_budget_is_renewed_before_launching() {
    let rqd = fake_rqd();
    let (proxy, farm, first, _) = first_launch_stalled(&rqd, Duration::from_millis(2600));
    let (_, me) = instances(&farm);
    let mut client = farm.client();
    // That claim is answered after the budget too, and so is its renewal.
    proxy.hold_answers(
        CLAIM,
        &[Duration::from_millis(2300), Duration::from_millis(2500)],
    );
    assert_eq!(farm.pass_all(), 1);
    wait_for(|| (proxy.held() == 2).then_some(()));
    // The renewal ran; while its answer is on the way, the claim looks old to a sweeper.
    client
        .execute(
            "UPDATE stagehand.pending_launch SET ts_launch = ts_launch - interval '1 minute'
              WHERE pk_proc <> $1",
            &[&first],
        )
        .unwrap();
    let show = farm.seeded.shows[0].clone();
    // (A claim age past the first launch's, whose row waits for its launcher's next flush.)
    let rule = SweepRule {
        claim_age_secs: 30.0,
        ..rule(me)
    };
    let taken = stagehand::db::launches::sweep(&mut client, &[show.as_str().into()], &rule);
    assert_eq!(
        taken.unwrap().len(),
        1,
        "the sweeper took the second booking over"
    );
    let farm = farm.settle_launches();
    let launched: Vec<String> = rqd.launches().into_iter().map(|f| f.resource_id).collect();
    assert_eq!(
        launched,
        vec![first],
        "a frame the sweeper took is not launched on a late answer"
    );
    drop(farm);
    rqd.stop();
}

/// A launch that waited past its claim budget behind a slow RQD is claimed again right before
/// it goes out; a frame Cuebot stopped meanwhile is not launched then, and its booking is
/// undone (the undo finds the frame moved and forgets the pending row). It used to go out,
/// and of a show handed back Cuebot could be running that frame already.
#[test]
fn a_frame_stopped_while_its_launch_waited_is_not_launched() {
    let rqd = fake_rqd();
    // 3.5 s: b, booked right after, must still wait past its claim budget (2 s) once a's
    // launch returns, with room for a slow machine between the two.
    let (_proxy, farm, first, job_b) = first_launch_stalled(&rqd, Duration::from_millis(3500));
    let mut client = farm.client();
    assert_eq!(farm.pass_all(), 1);
    // Cuebot stops b's frame (an operator's retry) while its launch waits.
    client
        .execute(
            "UPDATE frame SET str_state = 'WAITING', int_version = int_version + 1 WHERE pk_job = $1",
            &[&job_b],
        )
        .unwrap();
    let farm = farm.settle_launches();
    let launched: Vec<String> = rqd.launches().into_iter().map(|f| f.resource_id).collect();
    assert_eq!(launched, vec![first], "the stopped frame is not launched");
    let pending: i64 = farm
        .client()
        .query_one("SELECT count(*) FROM stagehand.pending_launch", &[])
        .unwrap()
        .get(0);
    assert_eq!(pending, 0, "nothing left pending");
    drop(farm);
    rqd.stop();
}

/// Shutdown hands the shows on by releasing their leases. The release's answer held by the
/// network (the statement ran, its reply never came) kept shutdown waiting past its grace,
/// as long as the network held it: no client-side timeout bounds a statement. It is waited
/// for until the grace's end now, and the rest is left to the leases' expiry.
#[test]
fn shutdown_does_not_wait_past_its_grace_for_the_release_of_its_leases() {
    let cutter = proxy();
    let db = TestDb::new();
    let spec = small_farm(1, 8, 32, &[], vec![]);
    stagehand::sim::seed::seed(&mut db.client(), &spec).unwrap();
    let mut config = db.config();
    config.database.url = cutter.url(&config.database.url);
    config.cluster.lease_renew_interval = Duration::from_millis(100);
    let service = stagehand::service::Service::start(config).unwrap();
    let mut client = db.client();
    wait_for(|| {
        let held: i64 = client
            .query_one(
                "SELECT count(*) FROM stagehand.show_lease WHERE pk_instance IS NOT NULL",
                &[],
            )
            .unwrap()
            .get(0);
        (held > 0).then_some(())
    });
    cutter.hold_answers(
        b"SET pk_instance = NULL WHERE pk_instance = $1",
        &[Duration::from_secs(60)],
    );
    let started = Instant::now();
    service.shutdown(Duration::from_secs(2));
    let took = started.elapsed();
    assert_eq!(cutter.held(), 1, "the release's answer was held");
    // The grace, a floor of a second for the release, and room for a busy machine; the
    // answer is held for a minute.
    assert!(took < Duration::from_secs(20), "shutdown took {took:?}");
}

/// Polls `f` every 20 ms until it gives a value (at most 20 s).
fn wait_for<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting");
        std::thread::sleep(Duration::from_millis(20));
    }
}
