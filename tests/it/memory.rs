//! Memory sized from history (`[memory]`): a layer that asks 8 GB and uses 2 GB books what its
//! frames used plus headroom once it has enough successful frames, so more of its frames fit
//! a host; RQD's limits follow the booked value; a frame that then runs out of memory goes
//! back to at least what the layer asks (the out-of-memory path wins over history).

use std::time::{Duration, Instant};

use stagehand::sim::{
    fake_rqd::MEM_USED_ENV,
    scenario::{Run, job, layer},
    seed::{FarmSpec, GB},
};

use crate::common::timed_scenario;

/// Polls `probe` every 50 ms until it returns `Some`, for at most `limit`.
fn wait_for<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(v) = probe() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn memory_is_booked_from_history_and_an_out_of_memory_frame_goes_back_to_the_ask() {
    let _alone = timed_scenario();
    // Two 16-core, 32 GB hosts: at 8 GB a frame, four frames a host.
    let mut farm = FarmSpec::single(2, 16, 32, 1_000_000);
    let mut render = layer("render", 400, Duration::from_millis(800));
    render.mem_kb = 8 * GB;
    render.env.push((MEM_USED_ENV.into(), (2 * GB).to_string()));
    farm.jobs = vec![job(0, "hist", 50, vec![render])];
    let mut run = Run::start(&farm, |_| Ok(()), |c| c.memory.min_frames = 5).unwrap();

    // History: at most 2 GB used, plus 20 %: 2.4 GB, and more than four frames on a host.
    let booked: i64 = wait_for(Duration::from_secs(60), || {
        run.client
            .query_opt(
                "SELECT int_mem_reserved FROM proc WHERE int_mem_reserved < $1 LIMIT 1",
                &[&((8 * GB) as i64)],
            )
            .unwrap()
            .map(|r| r.get(0))
    })
    .expect("a frame booked from history");
    let ceiling = (2.0 * 1.2 * GB as f64).ceil() as i64;
    assert!(
        (GB as i64 / 2..=ceiling).contains(&booked),
        "booked {booked} KB"
    );
    let crowded = wait_for(Duration::from_secs(30), || {
        let n: i64 = run
            .client
            .query_one(
                "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM proc GROUP BY pk_host) t",
                &[],
            )
            .unwrap()
            .get(0);
        (n > 4).then_some(n)
    });
    assert!(
        crowded.is_some(),
        "more than four 8 GB-asking frames on a host"
    );
    let sized = run.service().shared().sized.snapshot();
    assert_eq!(sized.len(), 1, "{sized:?}");
    assert_eq!(
        (sized[0].asked_kb, sized[0].layer.as_str()),
        (8 * GB, "render")
    );
    assert!(sized[0].booked_kb <= ceiling as u64);
    // RQD's limits follow the booked memory.
    let launches = run.farm.rqd.as_ref().unwrap().launches();
    let small = launches
        .iter()
        .find(|l| l.environment["CUE_MEMORY"].parse::<i64>().unwrap() < (8 * GB) as i64)
        .expect("a launch booked from history");
    let mem: f64 = small.environment["CUE_MEMORY"].parse().unwrap();
    assert_eq!(small.hard_memory_limit, (mem * 2.0).round() as i64);
    assert_eq!(small.soft_memory_limit, (mem * 1.6).round() as i64);

    // The frames now use 6 GB: those booked from history run out of memory, and every frame
    // booked again after that holds at least the 8 GB the layer asks.
    run.client
        .execute(
            "UPDATE layer_env SET str_value = $1 WHERE str_key = $2",
            &[&(6 * GB).to_string(), &MEM_USED_ENV],
        )
        .unwrap();
    let rerun = wait_for(Duration::from_secs(60), || {
        let r = run
            .client
            .query_one(
                "SELECT count(*) FILTER (WHERE int_mem_reserved < $1), count(*) FILTER (WHERE int_mem_reserved >= $1)
                   FROM frame WHERE str_state = 'RUNNING' AND int_exit_status = 33",
                &[&((8 * GB) as i64)],
            )
            .unwrap();
        let (below, at_ask): (i64, i64) = (r.get(0), r.get(1));
        assert_eq!(
            below, 0,
            "a frame that ran out of memory was booked below the ask"
        );
        (at_ask > 0).then_some(at_ask)
    });
    assert!(rerun.is_some(), "a frame that ran out of memory ran again");
    let optimize: bool = run
        .client
        .query_one(
            "SELECT b_optimize FROM layer WHERE str_name = 'render'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!optimize, "the out-of-memory completion turned history off");
    let violations = run.finish().unwrap();
    assert!(violations.is_empty(), "{violations:?}");
}
