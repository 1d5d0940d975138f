//! Unit tests of the accounting module.

use super::*;

/// The ids of the tests, by their text.
fn show(s: &str) -> ShowId {
    s.into()
}
fn alloc(a: &str) -> AllocId {
    a.into()
}
fn job(j: &str) -> JobId {
    j.into()
}

fn charge(cores: i64) -> Charge {
    Charge {
        show: "s".into(),
        alloc: "a".into(),
        folder: "f".into(),
        job: "j".into(),
        amount: CoresGpus::new(cores, 0),
    }
}

fn with_gpus(gpus: i64, c: Charge) -> Charge {
    Charge {
        amount: CoresGpus::new(c.amount.cores, gpus),
        ..c
    }
}

fn ledger(burst: i64) -> Arc<Ledger> {
    let l = Ledger::new();
    l.set_burst(&show("s"), &alloc("a"), burst);
    l.mark_seeded();
    l
}

#[test]
fn unseeded_or_unknown_subscription_rejects() {
    let l = Ledger::new();
    l.set_burst(&show("s"), &alloc("a"), 1000);
    assert_eq!(
        l.charge(&charge(100)).err().map(|r| r.cap),
        Some(Cap::Subscription)
    );
    l.mark_seeded();
    assert!(l.charge(&charge(100)).is_ok());
    let other = Charge {
        alloc: "b".into(),
        ..charge(100)
    };
    assert_eq!(
        l.charge(&other).err().map(|r| r.cap),
        Some(Cap::Subscription)
    );
}

#[test]
fn burst_stops_exactly_at_the_limit_and_drop_releases() {
    let l = ledger(300);
    let a = l.charge(&charge(200)).unwrap();
    let b = l.charge(&charge(100)).unwrap();
    assert_eq!(
        l.charge(&charge(100)).err().map(|r| r.cap),
        Some(Cap::Subscription)
    );
    drop(b);
    let c = l.charge(&charge(100)).unwrap();
    a.commit();
    c.commit();
    assert_eq!(l.sub_headroom(&show("s"), &alloc("a")), 0);
}

#[test]
fn job_and_folder_caps() {
    let l = ledger(10_000);
    let _pin = l.set_job_limits(&job("j"), Limits::job(200, 1));
    l.set_folder_limits(&"f".into(), Limits::folder(-1, -1));
    let _a = l.charge(&charge(200)).unwrap();
    assert_eq!(l.charge(&charge(100)).err().map(|r| r.cap), Some(Cap::Job));
    let g = with_gpus(
        2,
        Charge {
            job: "j2".into(),
            ..charge(100)
        },
    );
    let _pin2 = l.set_job_limits(&job("j2"), Limits::job(10_000, 1));
    assert_eq!(l.charge(&g).err().map(|r| r.cap), Some(Cap::JobGpus));
}

/// Cuebot's dispatch reads a job's maxima as caps whatever their value (0 holds the job) and
/// a folder's as caps unless -1: a job at maximum 0 takes nothing, a folder at -1 anything,
/// a folder at 0 nothing. Taken as unlimited (≤ 0, the convention of OpenCue's old Rust
/// scheduler), a job an operator held at maximum 0 was booked without limit.
#[test]
fn a_job_or_folder_at_maximum_zero_takes_nothing() {
    let l = ledger(10_000);
    let _held = l.set_job_limits(&job("j"), Limits::job(0, 0));
    assert_eq!(l.charge(&charge(100)).err().map(|r| r.cap), Some(Cap::Job));
    let other = || Charge {
        job: "j2".into(),
        ..charge(100)
    };
    let _pin = l.set_job_limits(&job("j2"), Limits::job(10_000, 0));
    l.set_folder_limits(&"f".into(), Limits::folder(-1, -1));
    let _fits = l.charge(&other()).unwrap();
    l.set_folder_limits(&"f".into(), Limits::folder(0, -1));
    assert_eq!(l.charge(&other()).err().map(|r| r.cap), Some(Cap::Folder));
}

/// A pass sets a job's cap, then a re-sync runs before the job's first frame is charged: the
/// cap must still hold. The re-sync used to forget every job with nothing booked, its cap
/// with it, and the first charge after that booked with no `int_max_cores` at all.
#[test]
fn a_job_cap_set_for_a_pass_survives_a_resync_before_its_first_charge() {
    let l = ledger(10_000);
    let _pin = l.set_job_limits(&job("j"), Limits::job(400, 0));
    let epoch = l.begin_resync();
    l.resync(epoch, &Snapshot::default());
    assert_eq!(l.job_headroom(&job("j")), Some(400));
    assert_eq!(l.charge(&charge(800)).err().map(|r| r.cap), Some(Cap::Job));
    let _fits = l.charge(&charge(400)).unwrap();
}

#[test]
fn resync_carries_inflight_and_recent_commits_forward() {
    let l = ledger(10_000);
    let epoch = l.begin_resync();
    let committed = l.charge(&charge(100)).unwrap();
    committed.commit(); // after the epoch bump: maybe missing from the snapshot
    let _inflight = l.charge(&charge(200)).unwrap();
    let mut snap = Snapshot::default();
    snap.subs
        .insert(("s".into(), "a".into()), CoresGpus::new(500, 0));
    l.resync(epoch, &snap);
    // 500 from proc + 200 in flight + 100 committed this epoch.
    assert_eq!(l.booked().subs[&(show("s"), alloc("a"))].cores, 800);
    // Next resync: the commit is now surely in the snapshot; its bucket is cleared.
    let epoch = l.begin_resync();
    snap.subs
        .insert(("s".into(), "a".into()), CoresGpus::new(600, 0));
    l.resync(epoch, &snap);
    assert_eq!(l.booked().subs[&(show("s"), alloc("a"))].cores, 800);
}

/// A re-sync with the subscription's procs summing to `cores`.
fn resync_to(l: &Ledger, cores: i64) {
    let epoch = l.begin_resync();
    let mut snap = Snapshot::default();
    snap.subs
        .insert(("s".into(), "a".into()), CoresGpus::new(cores, 0));
    l.resync(epoch, &snap);
}

fn sub_booked(l: &Ledger) -> i64 {
    l.booked().subs[&(show("s"), alloc("a"))].cores
}

/// 400 booked, 100 of it being undone (truth after the undo: 300), and a re-sync in every
/// order against the undo. Given back after a re-sync whose snapshot already missed the
/// undone proc, the charge was taken off twice: 200. The counter may read high for a
/// while, never low.
#[test]
fn a_release_overlapping_a_resync_never_leaves_the_counter_low() {
    let start = || {
        let l = ledger(10_000);
        l.charge(&charge(400)).unwrap().commit();
        resync_to(&l, 400);
        resync_to(&l, 400);
        l
    };
    // Snapshot read after the undo committed, applied before the release is done.
    let l = start();
    let r = l.begin_release(&charge(100));
    resync_to(&l, 300);
    assert_eq!(sub_booked(&l), 400, "still counted while releasing");
    r.done();
    assert_eq!(sub_booked(&l), 300);
    // Snapshot read before the undo committed (it still has the proc).
    let l = start();
    let r = l.begin_release(&charge(100));
    resync_to(&l, 400);
    r.done();
    assert_eq!(sub_booked(&l), 400, "high until the next re-sync");
    resync_to(&l, 300);
    assert_eq!(sub_booked(&l), 300);
    // No re-sync in between; and an undo that did not happen keeps the charge.
    let l = start();
    l.begin_release(&charge(100)).done();
    assert_eq!(sub_booked(&l), 300);
    drop(l.begin_release(&charge(100)));
    resync_to(&l, 300);
    assert_eq!(sub_booked(&l), 300);
}

#[test]
fn a_show_above_its_size_yields_to_a_hungry_show_below_its_own() {
    let feed = hungry::HungryBoard::new();
    let l = Ledger::with_hungry(feed.view());
    l.set_burst(&show("s"), &alloc("a"), 10_000);
    l.mark_seeded();
    l.set_burst(&show("t"), &alloc("a"), 10_000);
    l.set_caps(&Caps {
        sizes: [
            (("s".into(), "a".into()), 200),
            (("t".into(), "a".into()), 400),
        ]
        .into_iter()
        .collect(),
        ..Caps::default()
    });
    feed.publish(
        [(alloc("a"), vec![show("s"), show("t")])]
            .into_iter()
            .collect(),
    );
    // s is within its size: no yielding.
    assert!(!l.should_yield(&show("s"), &alloc("a"), 200));
    l.charge(&charge(200)).unwrap().commit();
    // s would go past its size while t (below its own) waits: s yields, t does not.
    assert!(l.should_yield(&show("s"), &alloc("a"), 100));
    assert!(!l.should_yield(&show("t"), &alloc("a"), 100));
    // Both past their sizes: the one further ahead (by booked / size) yields.
    l.charge(&Charge {
        show: "t".into(),
        ..charge(400)
    })
    .unwrap()
    .commit();
    assert!(
        l.should_yield(&show("s"), &alloc("a"), 100),
        "s at 300/200 would be further ahead than t at 500/400"
    );
    assert!(
        !l.should_yield(&show("t"), &alloc("a"), 100),
        "t at 500/400 stays behind s"
    );
    // Nobody else hungry: s may use its burst.
    feed.publish([(alloc("a"), vec![show("s")])].into_iter().collect());
    assert!(!l.should_yield(&show("s"), &alloc("a"), 100));
}

#[test]
fn concurrent_charges_never_exceed_the_burst() {
    let l = ledger(10_000);
    let mut handles = Vec::new();
    for _ in 0..4 {
        let l = Arc::clone(&l);
        handles.push(std::thread::spawn(move || {
            let mut won = 0;
            for _ in 0..1000 {
                if let Ok(t) = l.charge(&charge(100)) {
                    t.commit();
                    won += 1;
                }
            }
            won
        }));
    }
    let won: i64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(won, 100);
}

#[test]
fn refusal_names_the_first_full_cap_and_ignores_unused_dimensions() {
    let tally = |booked: (i64, i64), cores: Option<i64>, gpus: Option<i64>| Tally {
        booked: CoresGpus::new(booked.0, booked.1),
        limits: Some(Limits { cores, gpus }),
        ..Tally::default()
    };
    let sub = tally((0, 0), Some(1000), None);
    let folder = tally((500, 1), Some(500), Some(1));
    let job = tally((500, 1), Some(500), Some(1));
    let gpus = with_gpus(1, charge(0));
    // Folder before job, cores before GPUs.
    let r = refusal(true, &sub, &folder, &job, &charge(100)).map(|r| (r.cap, r.limit));
    assert_eq!(r, Some((Cap::Folder, 500)));
    let r = refusal(true, &sub, &folder, &job, &gpus).map(|r| r.cap);
    assert_eq!(r, Some(Cap::FolderGpus));
    // A charge of 0 in a dimension never refuses there, even over a lowered cap.
    let roomy = tally((0, 0), Some(500), Some(1));
    let gpus_over = tally((0, 5), Some(500), Some(1));
    assert_eq!(refusal(true, &sub, &gpus_over, &roomy, &charge(100)), None);
    assert_eq!(refusal(true, &sub, &roomy, &roomy, &gpus), None);
    // Fail closed: unseeded counters, or a subscription without a burst.
    assert_eq!(
        refusal(false, &sub, &roomy, &roomy, &gpus).map(|r| r.limit),
        Some(-1)
    );
    let unread = Tally::default();
    assert_eq!(
        refusal(true, &unread, &roomy, &roomy, &gpus).map(|r| r.cap),
        Some(Cap::Subscription)
    );
}

#[test]
fn a_wanted_resync_count_asks_for_each_round_until_it_is_reached() {
    let l = ledger(100);
    let round = |l: &Ledger| {
        let epoch = l.begin_resync();
        l.resync(epoch, &Snapshot::default());
    };
    let start = l.resyncs();
    l.request_resyncs_until(start + 2);
    assert!(l.take_resync_request(), "the first round is asked for");
    round(&l);
    assert!(
        l.take_resync_request(),
        "the first round's end asks for the second"
    );
    round(&l);
    assert_eq!(l.resyncs(), start + 2);
    assert!(
        !l.take_resync_request(),
        "nothing more once the count is reached"
    );
    // A round that fails (never completes) asks for nothing: no retry loop on a bad database.
    l.request_resyncs_until(start + 4);
    assert!(l.take_resync_request());
    assert!(!l.take_resync_request());
}

#[test]
fn counters_are_asked_for_once_per_capacity_generation() {
    let l = Ledger::new();
    assert!(!l.take_counters_request());
    l.request_counters(3);
    l.request_counters(3);
    assert!(l.take_counters_request(), "room given back since: asked");
    assert!(!l.take_counters_request(), "taken once");
    l.request_counters(3);
    l.request_counters(2);
    assert!(
        !l.take_counters_request(),
        "no room given back since the last"
    );
    l.request_counters(4);
    assert!(l.take_counters_request());
}
