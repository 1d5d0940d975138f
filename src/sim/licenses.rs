//! A fake license server: license pools that the simulated farm's frames check seats out of
//! (through the fake RQD, [`LicenseSeats`]) and that other consumers — artists — draw on
//! too, answering stagehand's provider GET on 127.0.0.1 with the JSON sample.
//!
//! Like a real server it refuses a checkout when no seat is free: the fake RQD then ends the
//! frame at once with [`LICENSE_DENIED_EXIT`]. It records, per pool, every refusal and the
//! most seats ever held, so a scenario can tell whether the scheduler started frames it had
//! no seat for. A host-based pool holds one seat per host, shared by every frame on it.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use serde_json::json;

use super::SimError;

/// The exit status of a frame whose license was refused (one of Cuebot's
/// `dispatcher.layer_delay.rules` statuses for a license shortage).
pub const LICENSE_DENIED_EXIT: i32 = 330;

/// How long a host-based seat stays held after its host's last frame ended (license
/// servers linger; it also covers the moment between a frame's exit and its completion
/// reaching the database, when the scheduler still sees the host seated).
const LINGER: Duration = Duration::from_secs(3);

/// One pool's state.
#[derive(Clone, Debug, Default)]
struct PoolState {
    total: i64,
    host_based: bool,
    /// Seats held by other consumers.
    artists: i64,
    /// The farm's checkouts: proc → host.
    farm: HashMap<String, String>,
    /// Host-based seats whose last frame ended, held until then (a license server's
    /// linger time).
    lingering: HashMap<String, Instant>,
    /// What was refused and the most ever held.
    stats: PoolStats,
}

impl PoolState {
    /// Seats held now.
    fn used(&self) -> i64 {
        self.artists + self.farm_seats()
    }

    /// Seats the farm holds: a host-based pool counts hosts (lingering ones too).
    fn farm_seats(&self) -> i64 {
        if self.host_based {
            self.seated().len() as i64
        } else {
            self.farm.len() as i64
        }
    }

    /// Hosts holding a seat of a host-based pool.
    fn seated(&self) -> HashSet<&str> {
        let now = Instant::now();
        let lingering = self.lingering.iter().filter(|(_, until)| **until > now);
        self.farm
            .values()
            .map(String::as_str)
            .chain(lingering.map(|(h, _)| h.as_str()))
            .collect()
    }

    /// Seats a new frame on `host` takes.
    fn cost(&self, host: &str) -> i64 {
        if self.host_based && self.seated().contains(host) {
            0
        } else {
            1
        }
    }

    /// The frame `proc` gives its seat back; a host-based seat lingers after its host's
    /// last frame.
    fn check_in(&mut self, proc: &str) {
        let Some(host) = self.farm.remove(proc) else {
            return;
        };
        if self.host_based && !self.farm.values().any(|h| *h == host) {
            let now = Instant::now();
            self.lingering.retain(|_, until| *until > now);
            self.lingering.insert(host, now + LINGER);
        }
    }
}

/// What one pool saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Farm checkouts refused for want of a seat.
    pub denials: u64,
    /// Farm checkouts granted.
    pub granted: u64,
    /// The most seats held at once (farm and artists).
    pub peak_used: i64,
    /// Frames that shared a seat already held on their host (host-based pools).
    pub shared: u64,
}

#[derive(Default)]
struct State {
    pools: BTreeMap<String, PoolState>,
    /// Leave `hosts` out of the answer (a counts-only provider).
    counts_only: bool,
    /// At the farm's next checkout of this pool, artists take every free seat first.
    ambush: Option<String>,
}

/// The pools, shared by the HTTP thread, the fake RQD and the scenario.
#[derive(Clone, Default)]
pub struct LicenseSeats(Arc<Mutex<State>>);

impl LicenseSeats {
    /// Adds (or resets) a pool of `total` seats.
    pub fn add_pool(&self, name: &str, total: i64, host_based: bool) {
        self.0.lock().pools.insert(
            name.to_owned(),
            PoolState {
                total,
                host_based,
                ..PoolState::default()
            },
        );
    }

    /// Answers without per-host seats from now on.
    pub fn set_counts_only(&self, counts_only: bool) {
        self.0.lock().counts_only = counts_only;
    }

    /// Other consumers want `seats` of `pool`: they take what is free up to that, or give
    /// back down to it. Returns what they hold now.
    pub fn set_artists(&self, pool: &str, seats: i64) -> i64 {
        let mut state = self.0.lock();
        let Some(p) = state.pools.get_mut(pool) else {
            return 0;
        };
        let room = p.total - p.farm_seats();
        p.artists = seats.clamp(0, room.max(0));
        p.stats.peak_used = p.stats.peak_used.max(p.used());
        p.artists
    }

    /// Artists give every seat of `pool` back now and, just before the farm's next checkout
    /// of it (booked on an answer that showed the seats free), take every free seat again:
    /// that frame, and those booked with it, are refused their licenses.
    pub fn release_then_ambush(&self, pool: &str) {
        let mut state = self.0.lock();
        if let Some(p) = state.pools.get_mut(pool) {
            p.artists = 0;
            state.ambush = Some(pool.to_owned());
        }
    }

    /// The frame `proc` on `host` checks out a seat of every license of `names`, all or
    /// none; false (and counted as a denial of the pool that refused) when one has no seat
    /// or is unknown.
    pub fn check_out(&self, proc: &str, host: &str, names: &[String]) -> bool {
        let mut state = self.0.lock();
        if let Some(pool) = state.ambush.take_if(|a| names.contains(a)) {
            if let Some(p) = state.pools.get_mut(&pool) {
                p.artists = p.total - p.farm_seats();
            }
        }
        for n in names {
            let Some(p) = state.pools.get_mut(n) else {
                return false;
            };
            if p.used() + p.cost(host) > p.total {
                p.stats.denials += 1;
                return false;
            }
        }
        for n in names {
            if let Some(p) = state.pools.get_mut(n) {
                if p.cost(host) == 0 {
                    p.stats.shared += 1;
                }
                p.farm.insert(proc.to_owned(), host.to_owned());
                p.stats.granted += 1;
                p.stats.peak_used = p.stats.peak_used.max(p.used());
            }
        }
        true
    }

    /// The frame `proc` ended: its seats go back.
    pub fn check_in(&self, proc: &str) {
        for p in self.0.lock().pools.values_mut() {
            p.check_in(proc);
        }
    }

    /// Per pool: seats held now by the farm, by artists, and the total.
    pub fn usage(&self) -> BTreeMap<String, (i64, i64, i64)> {
        self.0
            .lock()
            .pools
            .iter()
            .map(|(n, p)| (n.clone(), (p.farm_seats(), p.artists, p.total)))
            .collect()
    }

    /// Per pool, what it saw.
    pub fn stats(&self) -> BTreeMap<String, PoolStats> {
        self.0
            .lock()
            .pools
            .iter()
            .map(|(n, p)| (n.clone(), p.stats))
            .collect()
    }

    /// The provider's JSON answer now.
    pub fn sample(&self) -> String {
        let state = self.0.lock();
        let licenses: Vec<serde_json::Value> = state
            .pools
            .iter()
            .map(|(name, p)| {
                let mut l = json!({
                    "name": name,
                    "total": p.total,
                    "available": p.total - p.used(),
                    "host_based": p.host_based,
                });
                if !state.counts_only {
                    let mut per_host: BTreeMap<&str, i64> = BTreeMap::new();
                    for h in p.seated() {
                        per_host.insert(h, 0);
                    }
                    for h in p.farm.values() {
                        *per_host.entry(h).or_default() += 1;
                    }
                    // A lingering seat is held by the host (count 1) with no frame on it.
                    per_host.values_mut().for_each(|c| *c = (*c).max(1));
                    l["hosts"] = per_host
                        .into_iter()
                        .map(|(host, count)| json!({ "host": host, "count": count }))
                        .collect();
                }
                l
            })
            .collect();
        json!({ "queried_at": crate::backfill::now_secs(), "licenses": licenses }).to_string()
    }
}

/// The server: [`LicenseSeats`] behind an HTTP GET on 127.0.0.1.
pub struct FakeLicenseServer {
    seats: LicenseSeats,
    url: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeLicenseServer {
    /// Starts serving `seats` on a free port of 127.0.0.1.
    pub fn start(seats: LicenseSeats) -> Result<FakeLicenseServer, SimError> {
        let server = tiny_http::Server::http("127.0.0.1:0")
            .map_err(|e| SimError::Other(format!("fake license server: {e}")))?;
        let port = server
            .server_addr()
            .to_ip()
            .map(|a| a.port())
            .ok_or_else(|| SimError::Other("fake license server has no port".into()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("fake-licenses".into())
            .spawn({
                let (seats, stop) = (seats.clone(), Arc::clone(&stop));
                move || serve(&server, &seats, &stop)
            })
            .map_err(SimError::Io)?;
        Ok(FakeLicenseServer {
            seats,
            url: format!("http://127.0.0.1:{port}/licenses"),
            stop,
            thread: Some(thread),
        })
    }

    /// The provider URL for `[licenses] provider`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The pools.
    pub fn seats(&self) -> &LicenseSeats {
        &self.seats
    }
}

impl Drop for FakeLicenseServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answers every request with the sample until `stop`.
fn serve(server: &tiny_http::Server, seats: &LicenseSeats, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(50)) else {
            continue;
        };
        let header = tiny_http::Header::from_bytes("Content-Type", "application/json")
            .expect("static header");
        let response = tiny_http::Response::from_string(seats.sample()).with_header(header);
        let _ = request.respond(response);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seats_are_refused_when_full_and_shared_on_a_seated_host() {
        let seats = LicenseSeats::default();
        seats.add_pool("n", 2, false);
        seats.add_pool("k", 1, true);
        let (n, k) = (vec!["n".to_owned()], vec!["k".to_owned()]);
        assert_eq!(seats.set_artists("n", 1), 1);
        assert!(seats.check_out("p1", "h1", &n));
        assert!(!seats.check_out("p2", "h1", &n));
        assert!(seats.check_out("p3", "h1", &k));
        assert!(seats.check_out("p4", "h1", &k), "shared on h1");
        assert!(!seats.check_out("p5", "h2", &k));
        seats.check_in("p1");
        assert_eq!(seats.set_artists("n", 5), 2, "artists take only free seats");
        let stats = seats.stats();
        assert_eq!(stats["n"].denials, 1);
        assert_eq!(stats["k"].shared, 1);
        assert_eq!(stats["k"].peak_used, 1);
    }

    #[test]
    fn the_answer_parses_as_a_sample_with_or_without_hosts() {
        let seats = LicenseSeats::default();
        seats.add_pool("k", 3, true);
        seats.check_out("p1", "h1", &["k".to_owned()]);
        let s = crate::licenses::parse(&seats.sample()).unwrap();
        assert_eq!(s.pools[0].available, 2);
        assert_eq!(s.pools[0].hosts, Some(vec!["h1".to_owned()]));
        seats.set_counts_only(true);
        let s = crate::licenses::parse(&seats.sample()).unwrap();
        assert_eq!(s.pools[0].hosts, None);
    }
}
