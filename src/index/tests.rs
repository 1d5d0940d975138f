//! Tests of the host index: strategies, races, the refresh protocol, and a property test of
//! concurrent reserve/release/refresh.

use std::sync::{Arc, Barrier};

use proptest::prelude::{Just, ProptestConfig, prop_assert_eq, prop_oneof, proptest};
use proptest::strategy::Strategy as _;

use super::*;
use crate::model::CORE;

/// The id of test host `n`: a UUID, as the index requires of host keys.
fn hid(n: u128) -> HostId {
    Uuid::from_u128(n).to_string().into()
}

fn rec(n: u128, cores: u32, mem_gb: u64, gpus: u32, tags: &[&str]) -> HostRecord {
    let total = Resources {
        cores: cores * CORE,
        mem_kb: mem_gb * GB,
        gpus,
        gpu_mem_kb: u64::from(gpus) * 8 * GB,
    };
    HostRecord {
        id: hid(n),
        name: format!("host{n}"),
        alloc: "alloc-1000".into(),
        os: "linux".into(),
        thread_mode: ThreadMode::Auto,
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        total,
        idle: total,
    }
}

fn load(index: &HostIndex, records: Vec<HostRecord>) {
    let t = index.begin_refresh();
    index.apply_refresh(t, records);
}

fn cores(n: u32) -> Resources {
    Resources {
        cores: n * CORE,
        mem_kb: GB,
        ..Resources::ZERO
    }
}

fn request<'a>(tags: &'a [String], n: u32) -> Request<'a> {
    Request {
        tags,
        floor: cores(n),
        os: None,
        threadable: true,
        share: None,
        prefer: None,
    }
}

fn exact(n: u32) -> impl FnMut(&HostView<'_>) -> Option<Resources> {
    move |_| Some(cores(n))
}

fn tags(t: &[&str]) -> Vec<String> {
    t.iter().map(|s| (*s).to_owned()).collect()
}

/// True when one core can be placed (and is at once released) for `request`.
fn places_one_core(index: &HostIndex, request: &Request<'_>) -> bool {
    index
        .place(request, &Strategy::default(), exact(1))
        .is_some()
}

#[test]
fn best_fit_picks_the_tightest_and_worst_fit_the_emptiest() {
    let index = HostIndex::with_salt(0);
    load(
        &index,
        vec![
            rec(1, 8, 32, 0, &["a"]),
            rec(2, 4, 32, 0, &["a"]),
            rec(3, 16, 32, 0, &["a"]),
        ],
    );
    let t = tags(&["a"]);
    let best = Strategy::Saturation {
        core_saturation: true,
        memory_saturation: false,
    };
    let worst = Strategy::Saturation {
        core_saturation: false,
        memory_saturation: false,
    };
    let r = index.place(&request(&t, 4), &best, exact(4)).unwrap();
    assert_eq!(r.host_id(), &hid(2));
    drop(r);
    let r = index.place(&request(&t, 4), &worst, exact(4)).unwrap();
    assert_eq!(r.host_id(), &hid(3));
}

#[test]
fn floor_skips_small_hosts_and_tags_select() {
    let index = HostIndex::with_salt(0);
    load(
        &index,
        vec![
            rec(1, 2, 32, 0, &["a"]),
            rec(2, 8, 32, 0, &["b"]),
            rec(3, 8, 2, 0, &["a"]),
        ],
    );
    let t = tags(&["a"]);
    // Host 1 has too few cores, host 3 too little memory, host 2 the wrong tag.
    let big = Request {
        tags: &t,
        floor: Resources {
            cores: 400,
            mem_kb: 4 * GB,
            ..Resources::ZERO
        },
        os: None,
        threadable: true,
        share: None,
        prefer: None,
    };
    assert!(
        index
            .place(&big, &Strategy::default(), |_| Some(big.floor))
            .is_none()
    );
    assert_eq!(
        index
            .place(&request(&tags(&["b"]), 4), &Strategy::default(), exact(4))
            .unwrap()
            .host_id(),
        &hid(2)
    );
}

#[test]
fn scored_keeps_cpu_work_off_gpu_hosts_while_others_fit() {
    let index = HostIndex::with_salt(0);
    load(
        &index,
        vec![rec(1, 16, 64, 4, &["a"]), rec(2, 16, 64, 0, &["a"])],
    );
    let t = tags(&["a"]);
    for strategy in [
        Strategy::Scored {
            max_candidates: 8,
            weights: Weights::default(),
        },
        Strategy::default(),
    ] {
        let r = index.place(&request(&t, 16), &strategy, exact(16)).unwrap();
        assert_eq!(r.host_id(), &hid(2), "{strategy:?}");
        // With the CPU host full, the GPU host still takes CPU work rather than none.
        let r2 = index.place(&request(&t, 16), &strategy, exact(16)).unwrap();
        assert_eq!(r2.host_id(), &hid(1));
    }
}

#[test]
fn reservations_release_on_drop_and_stay_on_commit() {
    let index = HostIndex::with_salt(0);
    load(&index, vec![rec(1, 8, 32, 0, &["a"])]);
    let id = hid(1);
    let r = index.reserve_on(&id, cores(6)).unwrap();
    assert!(index.reserve_on(&id, cores(4)).is_none());
    assert_eq!(index.totals().reservations, 1);
    drop(r);
    assert_eq!(index.free(&id).unwrap().cores, 800);
    index.reserve_on(&id, cores(6)).unwrap().commit();
    assert_eq!(index.free(&id).unwrap().cores, 200);
    assert_eq!(index.totals().reservations, 0);
}

#[test]
fn two_threads_never_both_win_the_last_cores() {
    for _ in 0..200 {
        let index = Arc::new(HostIndex::with_salt(0));
        load(&index, vec![rec(1, 4, 32, 0, &["a"])]);
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (index, barrier) = (Arc::clone(&index), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    index
                        .reserve_on(&hid(1), cores(4))
                        .map(|r| r.commit())
                        .is_some()
                })
            })
            .collect();
        let wins = handles
            .into_iter()
            .filter(|_| true)
            .map(|h| h.join().unwrap())
            .filter(|w| *w)
            .count();
        assert_eq!(wins, 1);
    }
}

#[test]
fn refresh_keeps_live_reservations_and_skips_hosts_committed_after_the_ticket() {
    let index = HostIndex::with_salt(0);
    load(&index, vec![rec(1, 8, 32, 0, &["a"])]);
    let id = hid(1);
    let live = index.reserve_on(&id, cores(2)).unwrap();
    // The database still says 8 idle: free must be 8 - 2 live.
    load(&index, vec![rec(1, 8, 32, 0, &["a"])]);
    assert_eq!(index.free(&id).unwrap().cores, 600);
    // A ticket, then a commit, then the (stale) read lands: the host keeps its value.
    let ticket = index.begin_refresh();
    live.commit();
    index.apply_refresh(ticket, vec![rec(1, 8, 32, 0, &["a"])]);
    assert_eq!(index.free(&id).unwrap().cores, 600);
    // The next read includes the commit.
    let mut after = rec(1, 8, 32, 0, &["a"]);
    after.idle.cores = 600;
    load(&index, vec![after]);
    assert_eq!(index.free(&id).unwrap().cores, 600);
}

#[test]
fn hosts_leave_when_no_longer_read_and_retags_move_them() {
    let index = HostIndex::with_salt(0);
    load(
        &index,
        vec![rec(1, 8, 32, 0, &["a"]), rec(2, 8, 32, 0, &["a"])],
    );
    load(&index, vec![rec(1, 8, 32, 0, &["b"])]);
    assert_eq!(index.len(), 1);
    assert!(!places_one_core(&index, &request(&tags(&["a"]), 1)));
    assert!(places_one_core(&index, &request(&tags(&["b"]), 1)));
}

#[test]
fn thread_mode_all_and_os_filters() {
    let index = HostIndex::with_salt(0);
    let mut all = rec(1, 8, 32, 0, &["a"]);
    all.thread_mode = ThreadMode::All;
    all.os = "rocky9".into();
    load(&index, vec![all]);
    let t = tags(&["a"]);
    let non_threadable = Request {
        threadable: false,
        ..request(&t, 1)
    };
    assert!(!places_one_core(&index, &non_threadable));
    let wrong_os = Request {
        os: Some("linux"),
        ..request(&t, 1)
    };
    assert!(!places_one_core(&index, &wrong_os));
    let right_os = Request {
        os: Some("rocky9"),
        ..request(&t, 1)
    };
    assert!(places_one_core(&index, &right_os));
}

/// RQD in docker mode reports every OS it can run, comma-separated; Cuebot matches the job's
/// OS against any entry.
#[test]
fn a_host_reporting_several_oses_matches_each_of_them() {
    assert!(super::os_matches("centos7,rocky9", "rocky9"));
    assert!(super::os_matches("centos7, rocky9", "centos7"));
    assert!(super::os_matches("rocky9", "rocky9"));
    assert!(!super::os_matches("centos7,rocky9", "rocky"));
    assert!(!super::os_matches("", "rocky9"));
    let index = HostIndex::with_salt(0);
    let mut host = rec(1, 8, 32, 0, &["a"]);
    host.os = "centos7,rocky9".into();
    load(&index, vec![host]);
    let t = tags(&["a"]);
    let rocky = Request {
        os: Some("rocky9"),
        ..request(&t, 1)
    };
    assert!(places_one_core(&index, &rocky));
}

/// One step of a thread in [`concurrent_ops_stay_in_bounds`]: host and cores.
#[derive(Clone, Debug)]
enum Op {
    /// Reserve and keep the reservation (released a few steps later, uncommitted).
    Reserve(u8, u8),
    /// Reserve and commit, as a booking transaction would.
    Commit(u8, u8),
    /// Read the "database" and apply it as a full refresh.
    Refresh,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    prop_oneof![
        (0u8..4, 1u8..6).prop_map(|(h, c)| Op::Reserve(h, c)),
        (0u8..4, 1u8..6).prop_map(|(h, c)| Op::Commit(h, c)),
        Just(Op::Refresh),
    ]
}

/// The "database" of the property test: what committed reservations took, per host.
type Booked = parking_lot::Mutex<[u32; 4]>;

/// The hosts as the database shows them: `base` less what was booked on each.
fn records_after(base: &[HostRecord], booked: &[u32; 4]) -> Vec<HostRecord> {
    base.iter()
        .zip(booked)
        .map(|(r, taken)| {
            let mut r = r.clone();
            r.idle.cores -= taken;
            r
        })
        .collect()
}

/// Applies one [`Op`] of one thread; `held` are that thread's live reservations.
fn apply(op: Op, index: &HostIndex, base: &[HostRecord], booked: &Booked, held: &mut Vec<Earmark>) {
    match op {
        Op::Reserve(h, c) => {
            let id = hid(u128::from(h));
            if let Some(r) = index.reserve_on(&id, cores(u32::from(c))) {
                held.push(r);
            }
        }
        Op::Commit(h, c) => {
            let id = hid(u128::from(h));
            // Commit while holding the "database" lock, as a transaction would.
            let mut db = booked.lock();
            if let Some(r) = index.reserve_on(&id, cores(u32::from(c))) {
                db[h as usize] += u32::from(c) * CORE;
                r.commit();
            }
        }
        Op::Refresh => {
            // The ticket is taken before the read, as the refresher does.
            let ticket = index.begin_refresh();
            let records = records_after(base, &booked.lock());
            index.apply_refresh(ticket, records);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Concurrent reserve/release/refresh never drives a free value out of [0, capacity],
    /// and once every reservation is dropped and the database read again, every host is back
    /// to exactly what the database says.
    #[test]
    fn concurrent_ops_stay_in_bounds(ops in proptest::collection::vec(proptest::collection::vec(op(), 1..40), 3)) {
        let index = Arc::new(HostIndex::with_salt(0));
        let base: Vec<HostRecord> = (0..4).map(|n| rec(n, 8, 32, 0, &["a"])).collect();
        load(&index, base.clone());
        let booked = Arc::new(Booked::default());
        let handles: Vec<_> = ops.into_iter().map(|ops| {
            let (index, base, booked) = (Arc::clone(&index), base.clone(), Arc::clone(&booked));
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for op in ops {
                    apply(op, &index, &base, &booked, &mut held);
                    for h in 0..4u128 {
                        let free = index.free(&hid(h)).unwrap();
                        assert!(free.cores <= 800, "free above capacity: {free:?}");
                    }
                    if held.len() > 3 {
                        drop(held.remove(0));
                    }
                }
            })
        }).collect();
        for h in handles {
            h.join().unwrap();
        }
        let db = *booked.lock();
        load(&index, records_after(&base, &db));
        for (i, taken) in db.iter().enumerate() {
            let free = index.free(&hid(i as u128)).unwrap();
            prop_assert_eq!(free.cores, 800 - taken);
        }
        prop_assert_eq!(index.totals().reservations, 0);
    }
}

#[test]
fn hosts_of_other_shares_are_used_when_none_of_ours_fits() {
    let index = HostIndex::with_salt(0);
    // Ids 1..=3: with n = 3, host 3 is share 0, hosts 1 and 2 are shares 1 and 2.
    load(
        &index,
        vec![
            rec(1, 8, 32, 0, &["a"]),
            rec(2, 8, 32, 0, &["a"]),
            rec(3, 2, 32, 0, &["a"]),
        ],
    );
    let t = tags(&["a"]);
    let req = Request {
        share: Some((3, 0)),
        ..request(&t, 4)
    };
    let r = index
        .place(&req, &Strategy::default(), exact(4))
        .expect("falls back to another share's host");
    assert_ne!(r.host_id(), &hid(3));
    // Our own host is preferred when it fits.
    let small = Request {
        share: Some((3, 0)),
        ..request(&t, 1)
    };
    assert_eq!(
        index
            .place(&small, &Strategy::default(), exact(1))
            .unwrap()
            .host_id(),
        &hid(3)
    );
}

/// One copy of the allocation id serves every host of the allocation (no formatting or
/// allocation per candidate).
#[test]
fn host_views_carry_the_allocation_as_shared_text() {
    let index = HostIndex::with_salt(0);
    load(
        &index,
        vec![rec(1, 8, 32, 0, &["a"]), rec(2, 8, 32, 0, &["a"])],
    );
    let t = tags(&["a"]);
    let mut seen = Vec::new();
    let none = index.place(&request(&t, 1), &Strategy::default(), |h| {
        assert_eq!(h.alloc, "alloc-1000");
        seen.push(h.alloc.as_ptr());
        None
    });
    assert!(none.is_none());
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0], seen[1], "one shared copy");
}

// ---- locality ----

/// A request for `n` cores of layer `layer` of job `job`, preferring warm hosts as `locality`.
fn warm_request<'a>(
    t: &'a [String],
    n: u32,
    layer: &str,
    job: &str,
    locality: Locality,
) -> Request<'a> {
    Request {
        prefer: Some(Prefer {
            affinity: Affinity::of(layer, job),
            locality,
        }),
        ..request(t, n)
    }
}

/// Books (and commits) one core of `layer`/`job` on host `n`: the host is warm for them.
fn warm_up(index: &HostIndex, t: &[String], n: u128, layer: &str, job: &str) -> Warm {
    let req = warm_request(t, 1, layer, job, Locality::default());
    let host = hid(n);
    index
        .place(&req, &Strategy::default(), |h| {
            (h.id == &host).then(|| cores(1))
        })
        .expect("the host fits")
        .commit()
}

/// Hosts of `cores` (and as many GB) each, numbered from 1, all tagged `a`.
fn hosts(cores: &[u32]) -> (HostIndex, Vec<String>) {
    let index = HostIndex::with_salt(0);
    let records = cores
        .iter()
        .zip(1u128..)
        .map(|(c, n)| rec(n, *c, u64::from(*c), 0, &["a"]))
        .collect();
    load(&index, records);
    (index, tags(&["a"]))
}

fn placed(index: &HostIndex, req: &Request<'_>, strategy: &Strategy) -> HostId {
    index
        .place(req, strategy, exact(1))
        .unwrap()
        .host_id()
        .clone()
}

#[test]
fn saturation_prefers_the_host_warm_for_the_layer_then_the_job() {
    // Best-fit order once warmed: 1 (8 free), 2 (15), 3 (15).
    let (index, t) = hosts(&[8, 16, 16]);
    assert_eq!(warm_up(&index, &t, 2, "M", "J"), Warm::Cold);
    // Warmth is per host: host 3 has run nothing of J yet.
    assert_eq!(warm_up(&index, &t, 3, "L", "J"), Warm::Cold);
    let (sat, on) = (Strategy::default(), Locality::default());
    let want = |layer: &str, job: &str, locality: Locality| {
        placed(&index, &warm_request(&t, 1, layer, job, locality), &sat)
    };
    // The layer's host beats the job's, which beats the tightest cold host.
    assert_eq!(want("L", "J", on), hid(3));
    assert_eq!(want("N", "J", on), hid(2));
    // Off, or for a stranger: plain best fit.
    assert_eq!(want("L", "J", Locality::OFF), hid(1));
    assert_eq!(want("X", "Y", on), hid(1));
    // The commit says how warm the host was.
    assert_eq!(warm_up(&index, &t, 3, "L", "J"), Warm::Layer);
}

#[test]
fn warmth_never_overrides_fit_vetoes_or_tiers() {
    let (index, t) = hosts(&[8, 8, 16]);
    warm_up(&index, &t, 3, "L", "J");
    let req = warm_request(&t, 1, "L", "J", Locality::default());
    let sat = Strategy::default();
    // The warm host lacks the room: the first fit that has it.
    let held = index.reserve_on(&hid(3), cores(10)).unwrap();
    let six = warm_request(&t, 6, "L", "J", Locality::default());
    let r = index.place(&six, &sat, exact(6)).unwrap();
    assert_eq!(r.host_id(), &hid(1));
    drop((r, held));
    // Vetoed by the caller (sizing, a reservation, a subscription): not taken.
    let warm = hid(3);
    let r = index
        .place(&req, &sat, |h| (h.id != &warm).then(|| cores(1)))
        .unwrap();
    assert_eq!(r.host_id(), &hid(1));
    drop(r);
    // Another instance's share: ours first, however warm theirs is (host 3 is share 0 of 3).
    let theirs = Request {
        share: Some((3, 1)),
        ..req
    };
    assert_eq!(placed(&index, &theirs, &sat), hid(1));
}

#[test]
fn cpu_work_stays_off_a_warm_gpu_host_while_others_fit() {
    let index = HostIndex::with_salt(0);
    load(
        &index,
        vec![rec(1, 8, 32, 0, &["a"]), rec(2, 16, 32, 2, &["a"])],
    );
    let t = tags(&["a"]);
    warm_up(&index, &t, 2, "L", "J");
    let req = warm_request(&t, 1, "L", "J", Locality::default());
    assert_eq!(placed(&index, &req, &Strategy::default()), hid(1));
}

#[test]
fn scored_takes_the_warmth_off_the_score() {
    // One GB per core everywhere: a one-core, one-GB frame strands nothing on any host.
    let (index, t) = hosts(&[8, 8, 16]);
    warm_up(&index, &t, 3, "L", "J");
    let scored = Strategy::Scored {
        max_candidates: 8,
        weights: Weights::default(),
    };
    // The warm host wins by its bonus alone.
    let on = warm_request(&t, 1, "L", "J", Locality::default());
    assert_eq!(placed(&index, &on, &scored), hid(3));
    let off = warm_request(&t, 1, "L", "J", Locality::OFF);
    assert_ne!(placed(&index, &off, &scored), hid(3));
}

#[test]
fn the_look_ahead_ends_at_its_limit() {
    let (index, t) = hosts(&[8, 8, 8, 16]);
    warm_up(&index, &t, 4, "L", "J");
    let short = Locality {
        lookahead: 1,
        ..Locality::default()
    };
    let sat = Strategy::default();
    assert_eq!(
        placed(&index, &warm_request(&t, 1, "L", "J", short), &sat),
        hid(1)
    );
    let long = Locality {
        lookahead: 3,
        ..short
    };
    assert_eq!(
        placed(&index, &warm_request(&t, 1, "L", "J", long), &sat),
        hid(4)
    );
}

/// The look-ahead keeps its first fit unreserved while it looks on; when another thread
/// takes that host meanwhile, the frame still gets a host (a plain first-fit search again).
#[test]
fn a_fallback_lost_to_another_thread_is_not_a_lost_frame() {
    let (index, t) = hosts(&[8, 8, 16]);
    warm_up(&index, &t, 3, "L", "J");
    let req = warm_request(&t, 1, "L", "J", Locality::default());
    let (first, warm) = (hid(1), hid(3));
    let mut stolen = Vec::new();
    let r = index
        .place(&req, &Strategy::default(), |h| {
            if h.id == &warm {
                // While host 3 is sized, another thread takes all of host 1; host 3 is vetoed.
                stolen.extend(index.reserve_on(&first, cores(8)));
                return None;
            }
            Some(cores(1))
        })
        .expect("host 2 fits");
    assert_eq!(stolen.len(), 1);
    assert_eq!(r.host_id(), &hid(2));
}

/// More than [`MAX_SCAN`] hosts of one tag with cores but little memory free, ahead in the
/// search's cores order of one host with room: a frame asking for memory is placed there,
/// under either order. The hosts below its memory floor used to count against the search's
/// limit, and it gave up with a host to spare.
#[test]
fn hosts_below_the_memory_floor_do_not_use_up_the_search() {
    let worst_fit = Strategy::Saturation {
        core_saturation: false,
        memory_saturation: false,
    };
    // Best fit walks from few free cores up; worst fit from many down.
    for (strategy, small_cores, big_cores) in [(Strategy::default(), 1, 8), (worst_fit, 8, 2)] {
        let index = HostIndex::with_salt(0);
        let mut hosts: Vec<HostRecord> = (0..MAX_SCAN as u128 + 100)
            .map(|n| rec(n, small_cores, 1, 0, &["t"]))
            .collect();
        hosts.push(rec(1_000_000, big_cores, 32, 0, &["t"]));
        load(&index, hosts);
        let t = tags(&["t"]);
        let mut req = request(&t, 1);
        req.floor.mem_kb = 16 * GB;
        let big = |_: &HostView<'_>| {
            Some(Resources {
                cores: CORE,
                mem_kb: 16 * GB,
                ..Resources::ZERO
            })
        };
        let placed = index
            .place(&req, &strategy, big)
            .expect("the host with room");
        assert_eq!(placed.host_id(), &hid(1_000_000), "{strategy:?}");
    }
}
