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

/// This process's resident memory (KB), 0 where `/proc` is not there.
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

/// A seeded farm of [`HOSTS`] idle hosts of 8 to 64 cores, each with 3 of [`TAGS`] tags, and
/// the tag names.
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
                id: Uuid::from_u128(i as u128 + 1).to_string().into(),
                name: format!("host{i:06}"),
                alloc: Uuid::from_u128(1).to_string().into(),
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

/// A frame of `cores` whole cores and 2 GB: what every placement of the benchmark asks for.
fn frame(cores: u32) -> Resources {
    Resources {
        cores: cores * CORE,
        mem_kb: 2 * GB,
        gpus: 0,
        gpu_mem_kb: 0,
    }
}

/// A request for exactly `amount` on hosts with one of `tags`.
fn request(tags: &[String], amount: Resources) -> Request<'_> {
    Request {
        tags,
        floor: amount,
        os: None,
        threadable: true,
        share: None,
        prefer: None,
    }
}

/// Nanoseconds of `n` random placements (each reserved and released at once) on random tags.
fn placement_latencies(index: &HostIndex, tags: &[String], n: usize, seed: u64) -> Vec<u64> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let strategy = Strategy::default();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let tag = [tags[rng.random_range(0..tags.len())].clone()];
        let amount = frame([1u32, 2, 4, 8][rng.random_range(0..4)]);
        let request = request(&tag, amount);
        let t = Instant::now();
        let r = index.place(&request, &strategy, |_| Some(amount));
        drop(r);
        out.push(t.elapsed().as_nanos() as u64);
    }
    out
}

/// The `p` quantile of sorted nanoseconds, in microseconds.
fn percentile(sorted: &[u64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize] as f64 / 1000.0
}

/// Builds the index and prints its memory per host, measured and estimated.
fn build_and_report_memory() -> (HostIndex, Vec<String>) {
    let before = rss_kb();
    let (index, tags) = build();
    let after = rss_kb();
    println!(
        "index: {HOSTS} hosts, {TAGS} tags; memory per host ≈ {:.0} bytes (RSS delta, includes build garbage) / {} bytes (structure estimate)",
        (after.saturating_sub(before) * 1024) as f64 / HOSTS as f64,
        index.approx_bytes_per_host()
    );
    (index, tags)
}

/// Prints p50, p99 and p99.9 of placements made by `threads` threads at once (a barrier
/// starts them together, so the second thread really contends).
fn report_latencies(index: &Arc<HostIndex>, tags: &[String], threads: usize) {
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (index, tags, barrier) = (Arc::clone(index), tags.to_vec(), Arc::clone(&barrier));
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

/// Prints the memory and latency figures, then lets criterion time one placement of each
/// strategy on one tag.
fn bench(c: &mut Criterion) {
    let (index, tags) = build_and_report_memory();
    let index = Arc::new(index);
    for threads in [1usize, 2] {
        report_latencies(&index, &tags, threads);
    }
    let tag = [tags[0].clone()];
    let amount = frame(2);
    let request = request(&tag, amount);
    let strategy = Strategy::default();
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
