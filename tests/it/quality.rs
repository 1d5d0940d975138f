//! Scheduling quality: job order policies.

use stagehand::{config::JobOrder, sim::seed::LayerSpec};

use crate::common::{Farm, job, small_farm};

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

/// Two shows with subscription sizes 20 and 10 cores (bursts both 30, so no cap decides) on
/// one saturated 30-core allocation, frames of ten seconds completing continuously: the split
/// of booked cores converges to 2:1.
#[test]
fn shares_converge_to_the_subscription_sizes() {
    use stagehand::sim::{fake_rqd::RUNTIME_ENV, farm::SimFarm, pg::PgOptions, seed::*};
    use std::time::{Duration, Instant};

    let mut spec = small_farm(30, 1, 8, &[], Vec::new());
    spec.shows = vec![
        ShowSpec {
            name: "big".into(),
            managed: true,
            subs: vec![SubSpec {
                alloc: 0,
                size: 20,
                burst: 30,
            }],
            folder_max_cores: 0,
        },
        ShowSpec {
            name: "small".into(),
            managed: true,
            subs: vec![SubSpec {
                alloc: 0,
                size: 10,
                burst: 30,
            }],
            folder_max_cores: 0,
        },
    ];
    for (show, name) in [(0, "big"), (1, "small")] {
        let mut layer = LayerSpec::simple("l", "1-3000", "general");
        layer.env = vec![(RUNTIME_ENV.into(), "10000".into())];
        let mut j = job(name, vec![layer]);
        j.show = show;
        spec.jobs.push(j);
    }
    let farm = SimFarm::start(&spec, &PgOptions::default(), true, 0).unwrap();
    let mut config = farm.config(false);
    config.hosts.refresh_interval = Duration::from_millis(200);
    config.scheduler.saturated_sleep = Duration::from_millis(200);
    config.accounting.recompute_interval = Duration::from_millis(500);
    let service = stagehand::service::Service::start(config).unwrap();
    let mut client = postgres::Client::connect(&farm.url, postgres::NoTls).unwrap();
    // Let the first, unfair fill (whoever came first) turn over once.
    std::thread::sleep(Duration::from_secs(14));
    let (mut big, mut small) = (0i64, 0i64);
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        for r in client
            .query("SELECT s.str_name, count(*) FROM proc p JOIN show s ON s.pk_show = p.pk_show GROUP BY 1", &[])
            .unwrap()
        {
            match r.get::<_, &str>(0) {
                "big" => big += r.get::<_, i64>(1),
                _ => small += r.get::<_, i64>(1),
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    service.shutdown(Duration::from_secs(10));
    let ratio = big as f64 / small.max(1) as f64;
    println!("fair share: big {big} : small {small} core-samples = {ratio:.2} (sizes 2:1)");
    assert!(
        (1.8..=2.2).contains(&ratio),
        "split {ratio:.2}, expected 2 ± 10 %"
    );
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
