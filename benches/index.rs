//! Host index benchmark: 100,000 hosts and 1,000 tags. Measures candidate search + reserve
//! (+ release) per placement, p50 and p99 with 1 and 2 threads, and memory per host.
//!
//! `cargo bench --bench index` (criterion prints the mean; the percentiles and memory are
//! printed before it).

use std::{
    sync::{Arc, Barrier},
    time::Instant,
};

use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng, rngs::SmallRng};
use stagehand::{
    index::{HostIndex, HostRecord, Request, Strategy},
    model::{CORE, Resources, ThreadMode},
};
use uuid::Uuid;

const HOSTS: usize = 100_000;
const TAGS: usize = 1_000;
const GB: u64 = 1024 * 1024;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn build() -> (HostIndex, Vec<String>) {
    let mut rng = SmallRng::seed_from_u64(7);
    let tags: Vec<String> = (0..TAGS).map(|i| format!("tag{i:04}")).collect();
    let records: Vec<HostRecord> = (0..HOSTS)
        .map(|i| {
            let cores = [8u32, 16, 32, 64][rng.random_range(0..4)] * CORE;
            let total = Resources {
                cores,
                mem_kb: u64::from(cores / CORE) * 4 * GB,
                gpus: 0,
                gpu_mem_kb: 0,
            };
            let host_tags = (0..3)
                .map(|_| tags[rng.random_range(0..TAGS)].clone())
                .collect();
            HostRecord {
                id: Uuid::from_u128(i as u128 + 1),
                name: format!("host{i:06}"),
                alloc: Uuid::from_u128(1),
                os: "linux".into(),
                thread_mode: ThreadMode::Auto,
                tags: host_tags,
                total,
                idle: total,
            }
        })
        .collect();
    let index = HostIndex::new();
    let ticket = index.begin_refresh();
    index.apply_refresh(ticket, records);
    (index, tags)
}

fn placement_latencies(index: &HostIndex, tags: &[String], n: usize, seed: u64) -> Vec<u64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let strategy = Strategy::default();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let tag = [tags[rng.random_range(0..tags.len())].clone()];
        let amount = Resources {
            cores: [1u32, 2, 4, 8][rng.random_range(0..4)] * CORE,
            mem_kb: 2 * GB,
            gpus: 0,
            gpu_mem_kb: 0,
        };
        let request = Request {
            tags: &tag,
            floor: amount,
            os: None,
            threadable: true,
            share: None,
        };
        let t = Instant::now();
        let r = index.place(&request, &strategy, |_| Some(amount));
        drop(r);
        out.push(t.elapsed().as_nanos() as u64);
    }
    out
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0
}

fn bench(c: &mut Criterion) {
    let before = rss_kb();
    let (index, tags) = build();
    let after = rss_kb();
    println!(
        "index: {HOSTS} hosts, {TAGS} tags; memory per host ≈ {:.0} bytes (RSS delta, includes build garbage) / {} bytes (structure estimate)",
        (after.saturating_sub(before) * 1024) as f64 / HOSTS as f64,
        index.approx_bytes_per_host()
    );
    let index = Arc::new(index);
    for threads in [1usize, 2] {
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (index, tags, barrier) =
                    (Arc::clone(&index), tags.clone(), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    placement_latencies(&index, &tags, 200_000, t as u64)
                })
            })
            .collect();
        let mut all: Vec<u64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort_unstable();
        println!(
            "index: search + reserve + release, {threads} thread(s): p50 {:.2} µs, p99 {:.2} µs, p99.9 {:.2} µs ({} placements)",
            percentile(&all, 0.5),
            percentile(&all, 0.99),
            percentile(&all, 0.999),
            all.len()
        );
    }
    let strategy = Strategy::default();
    let tag = [tags[0].clone()];
    let amount = Resources {
        cores: 2 * CORE,
        mem_kb: 2 * GB,
        gpus: 0,
        gpu_mem_kb: 0,
    };
    let request = Request {
        tags: &tag,
        floor: amount,
        os: None,
        threadable: true,
        share: None,
    };
    c.bench_function("place+release (100k hosts, 1k tags)", |b| {
        b.iter(|| drop(index.place(&request, &strategy, |_| Some(amount))))
    });
    let scored = Strategy::Scored {
        max_candidates: 32,
        weights: Default::default(),
    };
    c.bench_function("place+release scored/32 (100k hosts, 1k tags)", |b| {
        b.iter(|| drop(index.place(&request, &scored, |_| Some(amount))))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
