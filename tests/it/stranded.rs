//! The stranded resources as the status page shows them (the recompute thread exports the
//! same query as `stagehand_stranded_centicores` and `stagehand_stranded_memory_kb`): idle
//! cores on hosts whose memory or GPUs are used up, and idle memory on hosts with no idle core.

use std::time::Duration;

use stagehand::{
    service::Service,
    sim::{farm::SimFarm, instances::http_get, pg::PgOptions, seed::FarmSpec, seed::GB},
};

use crate::service::wait;

#[test]
fn the_page_shows_cores_stranded_by_memory_or_gpus_and_memory_stranded_by_cores() {
    // Four 8-core, 32 GB hosts; the last has two GPUs.
    let mut spec = FarmSpec::single(4, 8, 32, 32);
    spec.hosts[3].gpus = 2;
    spec.hosts[3].gpu_mem_kb = 32 * GB;
    let farm = SimFarm::start(&spec, &PgOptions::default(), false, 0).unwrap();
    let mut client = postgres::Client::connect(&farm.url, postgres::NoTls).unwrap();
    // host000: 6 cores idle, 1 GB of memory (below the 2 GB threshold): 6 cores stranded.
    // host001: no core idle, 20 GB idle: 20 GB stranded. host002: all idle: nothing.
    // host003: 3 cores idle, GPUs all busy: 3 cores stranded by GPUs.
    client
        .batch_execute(&format!(
            "UPDATE host SET int_cores_idle = 600, int_mem_idle = {} WHERE str_name = 'host000';
             UPDATE host SET int_cores_idle = 0, int_mem_idle = {} WHERE str_name = 'host001';
             UPDATE host SET int_cores_idle = 300, int_gpus_idle = 0 WHERE str_name = 'host003';",
            GB,
            20 * GB
        ))
        .unwrap();
    let service = Service::start(farm.config(true)).unwrap();
    let address = service.http_address();
    let mut page = String::new();
    let shown = wait(Duration::from_secs(20), || {
        page = http_get(&address, "/")
            .map(|(_, body)| body)
            .unwrap_or_default();
        page.contains("id=\"stranded\">6<")
    });
    assert!(shown, "{page}");
    assert!(
        page.contains("3 <span class=\"k\">(on hosts with no idle GPU)"),
        "{page}"
    );
    assert!(page.contains("id=\"stranded-mem\">20 GB<"), "{page}");
    service.shutdown(Duration::from_secs(10));
}
