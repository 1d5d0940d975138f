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
