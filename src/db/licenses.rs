//! Live application licenses in the database: the provider's latest sample per license
//! (`stagehand.license`) and the seats left of it, net of this farm's own starts since the
//! sample and of the headroom ([`Room`]). The booking guard and the in-memory hint compute
//! the room the same way ([`rooms`]); the guard locks the rows first (`lock_rooms`).
//!
//! A layer names its licenses in `layer_env` (`CUE_LICENSES=hengine,katana`). The starts a
//! sample has not seen are the frames of such layers (of pending jobs) started after its
//! `queried_at`, less the checkout lag — running or not: a frame that started and ended
//! since may have given its seat back, but one refused its seat must not be booked again and
//! again on the same sample. One that stopped before the sample was taken is left out: it
//! held no seat then, and the sample's free seats already say so (frames shorter than the
//! lag would otherwise be charged twice at every turnover). A sample that lists the hosts
//! holding seats of a floating license settles the lag host by host (`Usage::unseen_on`); a
//! counts-only one cannot, and counts every start within the lag. Frames are every
//! writer's (Cuebot's too), so every instance computes the same room.

use std::collections::{BTreeMap, HashMap, HashSet};

use postgres::{Client, GenericClient, Transaction};

use super::DbError;

/// The layer environment key that lists a layer's licenses, comma-separated.
pub const LICENSES_ENV: &str = "CUE_LICENSES";

/// The license names of a `CUE_LICENSES` value: split on commas, trimmed, blanks dropped,
/// sorted and distinct (the order rows are locked in).
pub fn parse_list(value: &str) -> Vec<String> {
    let mut names: Vec<String> = value
        .split(',')
        .map(|n| n.split_whitespace().collect::<String>())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// One license of a provider's sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    /// The license name, as layers spell it in `CUE_LICENSES`.
    pub name: String,
    /// Seats the server has.
    pub total: i64,
    /// Seats free when sampled.
    pub available: i64,
    /// One seat per host, shared by every frame on it.
    pub host_based: bool,
    /// Hosts holding a seat when sampled, once per seat of a floating license; `None` when
    /// the provider reports counts only.
    pub hosts: Option<Vec<String>>,
}

/// A provider's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// When the provider took it, seconds since the Unix epoch.
    pub queried_at: f64,
    /// Its licenses.
    pub pools: Vec<Pool>,
}

/// Stores `sample`, one row per license in name order; a row already holding a newer
/// sample (another instance polled later) is kept.
pub fn store(client: &mut Client, sample: &Sample) -> Result<(), DbError> {
    let mut pools: Vec<&Pool> = sample.pools.iter().collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    let mut tx = client.transaction()?;
    for p in pools {
        tx.execute(
            "INSERT INTO stagehand.license AS l (str_name, int_total, int_available, b_host_based,
                                                  str_hosts, ts_queried, ts_received)
             VALUES ($1, $2, $3, $4, $5, to_timestamp($6), now())
             ON CONFLICT (str_name) DO UPDATE
                SET int_total = excluded.int_total, int_available = excluded.int_available,
                    b_host_based = excluded.b_host_based, str_hosts = excluded.str_hosts,
                    ts_queried = excluded.ts_queried, ts_received = excluded.ts_received
              WHERE excluded.ts_queried >= l.ts_queried",
            &[
                &p.name,
                &p.total,
                &p.available,
                &p.host_based,
                &p.hosts,
                &sample.queried_at,
            ],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// What the room of a license is computed with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LicenseRules {
    /// Seats kept free, per license.
    pub headroom: BTreeMap<String, i64>,
    /// Seats kept free of a license not in `headroom`.
    pub default_headroom: i64,
    /// A sample received longer ago than this (seconds) holds the license's layers.
    pub stale_after_secs: f64,
    /// Starts this long (seconds) before a sample's `queried_at` count as not in it.
    pub checkout_lag_secs: f64,
}

impl LicenseRules {
    fn headroom_of(&self, name: &str) -> i64 {
        self.headroom
            .get(name)
            .copied()
            .unwrap_or(self.default_headroom)
    }
}

/// The seats of one license a booking may still spend.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Room {
    /// The sample is recent enough to book on.
    pub fresh: bool,
    /// One seat per host.
    pub host_based: bool,
    /// Seats left: available − headroom − starts the sample has not seen.
    pub free: i64,
    /// Hosts holding a seat (host-based licenses): the sample's and those running frames
    /// of the license now; a frame there costs no new seat.
    pub seated: HashSet<String>,
    /// Seconds (database clock) until a sample taken then would have seen every start
    /// counted in `free` as unseen: the oldest such start plus the checkout lag (`None`: no
    /// such start). Until then those starts may be counted twice, in the sample and here.
    pub confirm_in: Option<f64>,
    /// Of a counts-only sample: seconds until the newest start counted in `free` as unseen is
    /// older than the lag (`None`: no such start, or the sample lists its hosts). A sample
    /// taken before then would count those starts again on top of its own count.
    pub quiet_in: Option<f64>,
}

impl Room {
    /// Seats a frame on `host` costs.
    pub fn cost(&self, host: &str) -> i64 {
        if self.host_based && self.seated.contains(host) {
            0
        } else {
            1
        }
    }
}

/// Takes the seats of a frame needing `licenses` on `host` from `rooms`, all or none; false
/// when one of them is unknown, stale or full.
pub fn take_seats(rooms: &mut HashMap<String, Room>, licenses: &[String], host: &str) -> bool {
    let fits = licenses.iter().all(|l| {
        rooms
            .get(l)
            .is_some_and(|r| r.fresh && r.free >= r.cost(host))
    });
    if fits {
        for l in licenses {
            if let Some(r) = rooms.get_mut(l) {
                r.free -= r.cost(host);
                if r.host_based {
                    r.seated.insert(host.to_owned());
                }
            }
        }
    }
    fits
}

/// The rooms of the licenses `names` (every stored license when `None`), unlocked: the hint.
pub fn rooms(
    client: &mut impl GenericClient,
    names: Option<&[&str]>,
    rules: &LicenseRules,
) -> Result<HashMap<String, Room>, DbError> {
    let names: Option<Vec<&str>> = names.map(<[&str]>::to_vec);
    let mut rooms: HashMap<String, Room> = HashMap::new();
    // Per license, the seats per host the sample saw (`None`: counts only).
    let mut sampled: HashMap<String, Option<HashMap<String, i64>>> = HashMap::new();
    for r in client.query(
        "SELECT str_name, int_available, b_host_based, str_hosts,
                extract(epoch FROM now() - ts_received)::float8
           FROM stagehand.license WHERE $1::text[] IS NULL OR str_name = ANY($1)",
        &[&names],
    )? {
        let name: String = r.get(0);
        let seats = r.get::<_, Option<Vec<String>>>(3).map(|hosts| {
            let mut per_host: HashMap<String, i64> = HashMap::new();
            for h in hosts {
                *per_host.entry(h).or_default() += 1;
            }
            per_host
        });
        let room = Room {
            fresh: r.get::<_, f64>(4) <= rules.stale_after_secs,
            host_based: r.get(2),
            free: r.get::<_, i64>(1) - rules.headroom_of(&name),
            seated: seats.iter().flat_map(|s| s.keys().cloned()).collect(),
            confirm_in: None,
            quiet_in: None,
        };
        sampled.insert(name.clone(), seats);
        rooms.insert(name, room);
    }
    for u in usage(client, &names, rules.checkout_lag_secs)? {
        let Some(room) = rooms.get_mut(&u.license) else {
            continue;
        };
        if let Some(c) = u.confirm_in {
            room.confirm_in = Some(room.confirm_in.map_or(c, |r| r.min(c)));
        }
        let seats = sampled.get(&u.license).and_then(Option::as_ref);
        if let (None, Some(q)) = (seats, u.quiet_in) {
            room.quiet_in = Some(room.quiet_in.map_or(q, |r| r.max(q)));
        }
        if !room.host_based {
            room.free -= match seats {
                Some(per_host) => u.unseen_on(per_host.get(&u.host).copied().unwrap_or(0)),
                None => u.since,
            };
            continue;
        }
        let seen = seats.is_some_and(|h| h.contains_key(&u.host));
        if u.since > 0 && !u.seated_before && !seen {
            // A host first seated after the sample: one seat it has not seen.
            room.free -= 1;
        }
        if u.since > 0 || u.running {
            room.seated.insert(u.host);
        }
    }
    Ok(rooms)
}

/// The frames of one license on one host.
struct Usage {
    license: String,
    host: String,
    /// Started after the sample's `queried_at` (less the lag) and not stopped before it:
    /// maybe not in the sample.
    since: i64,
    /// Some running frame started before: the host was seated when sampled.
    seated_before: bool,
    /// Some frame runs there now.
    running: bool,
    /// Seconds until the oldest of the `since` starts is older than the lag.
    confirm_in: Option<f64>,
    /// Seconds until the newest of them is.
    quiet_in: Option<f64>,
    /// Of `since`, those started after the sample: it cannot hold them.
    after: i64,
    /// Frames started before the sample less the lag and running when it was taken: it
    /// holds their seats.
    held: i64,
}

impl Usage {
    /// The starts of a floating license on this host the sample did not see, given the seats
    /// it saw there: those after it, and of those within the lag before it, all but what the
    /// host's seats leave beyond the frames it surely held. Exact when every seat on a render
    /// host is a frame's; a seat an artist holds on the host itself would read as a start
    /// seen, and a frame that ended after the sample and started again since as one run.
    fn unseen_on(&self, seats: i64) -> i64 {
        let window = self.since - self.after;
        let seen = window.min((seats - self.held).max(0));
        self.since - seen
    }
}

/// The frames of licensed layers of pending jobs that run now, started since the sample
/// (less the lag) or stopped since it, per (license, host).
fn usage(
    client: &mut impl GenericClient,
    names: &Option<Vec<&str>>,
    lag_secs: f64,
) -> Result<Vec<Usage>, DbError> {
    let rows = client.query(
        "WITH lic AS (
             SELECT DISTINCT le.pk_layer, n.name
               FROM job j
               JOIN layer_env le ON le.pk_job = j.pk_job AND le.str_key = 'CUE_LICENSES'
              CROSS JOIN LATERAL unnest(string_to_array(replace(le.str_value, ' ', ''), ',')) AS n(name)
              WHERE j.str_state = 'PENDING' AND ($1::text[] IS NULL OR n.name = ANY($1)))
         SELECT lic.name, coalesce(f.str_host, ''),
                count(*) FILTER (WHERE w.unseen)::bigint,
                coalesce(bool_or(f.str_state = 'RUNNING' AND NOT w.recent), false),
                coalesce(bool_or(f.str_state = 'RUNNING'), false),
                extract(epoch FROM min(f.ts_started) FILTER (WHERE w.unseen)
                                   + make_interval(secs => $2) - now())::float8,
                count(*) FILTER (WHERE f.ts_started > s.ts_queried)::bigint,
                count(*) FILTER (WHERE NOT w.recent
                                   AND (f.str_state = 'RUNNING' OR f.ts_stopped > s.ts_queried))::bigint,
                extract(epoch FROM max(f.ts_started) FILTER (WHERE w.unseen)
                                   + make_interval(secs => $2) - now())::float8
           FROM lic
           JOIN stagehand.license s ON s.str_name = lic.name
           JOIN frame f ON f.pk_layer = lic.pk_layer
          CROSS JOIN LATERAL (
                SELECT f.ts_started > s.ts_queried - make_interval(secs => $2) AS recent,
                       -- A frame that stopped before the sample holds no seat in it or now.
                       f.ts_started > s.ts_queried - make_interval(secs => $2)
                         AND NOT coalesce(f.ts_stopped >= f.ts_started
                                          AND f.ts_stopped <= s.ts_queried, false) AS unseen) w
          WHERE f.str_state = 'RUNNING' OR f.ts_started > s.ts_queried - make_interval(secs => $2)
             OR f.ts_stopped > s.ts_queried
          GROUP BY 1, 2",
        &[names, &lag_secs],
    )?;
    Ok(rows
        .iter()
        .map(|r| Usage {
            license: r.get(0),
            host: r.get(1),
            since: r.get(2),
            seated_before: r.get(3),
            running: r.get(4),
            confirm_in: r.get(5),
            after: r.get(6),
            held: r.get(7),
            quiet_in: r.get(8),
        })
        .collect())
}

/// The rooms of `names` (sorted) with their rows locked until commit, for the booking guard.
///
/// Lock first, then count in new statements: in READ COMMITTED a statement's snapshot is
/// taken before its lock wait, so a count in the locking statement would miss the starts of
/// the batch that held the lock before us.
pub(crate) fn lock_rooms(
    tx: &mut Transaction<'_>,
    names: &[&str],
    rules: &LicenseRules,
) -> Result<HashMap<String, Room>, DbError> {
    tx.execute(
        "SELECT 1 FROM stagehand.license WHERE str_name = ANY($1) ORDER BY str_name FOR UPDATE",
        &[&names],
    )?;
    rooms(tx, Some(names), rules)
}

/// The licenses each of `layers` needs (layers without `CUE_LICENSES` are left out).
pub(crate) fn layer_licenses(
    client: &mut impl GenericClient,
    layers: &[&str],
) -> Result<HashMap<String, Vec<String>>, DbError> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for r in client.query(
        "SELECT pk_layer, str_value FROM layer_env
          WHERE pk_layer = ANY($1) AND str_key = 'CUE_LICENSES' AND str_value IS NOT NULL",
        &[&layers],
    )? {
        let names = out.entry(r.get(0)).or_default();
        names.extend(parse_list(r.get(1)));
        names.sort();
        names.dedup();
    }
    out.retain(|_, names| !names.is_empty());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(free: i64, host_based: bool, seated: &[&str]) -> Room {
        Room {
            fresh: true,
            host_based,
            free,
            seated: seated.iter().map(|h| (*h).to_owned()).collect(),
            confirm_in: None,
            quiet_in: None,
        }
    }

    #[test]
    fn license_lists_are_trimmed_sorted_and_distinct() {
        assert_eq!(
            parse_list(" katana, hengine ,,katana"),
            ["hengine", "katana"]
        );
        assert!(parse_list(" , ").is_empty());
    }

    #[test]
    fn a_frame_takes_every_seat_it_needs_or_none() {
        let mut rooms = HashMap::from([
            ("a".to_owned(), room(1, false, &[])),
            ("b".to_owned(), room(0, false, &[])),
        ]);
        let ab = ["a".to_owned(), "b".to_owned()];
        assert!(!take_seats(&mut rooms, &ab, "h1"));
        assert_eq!(rooms["a"].free, 1, "refused frames take nothing");
        assert!(take_seats(&mut rooms, &ab[..1], "h1"));
        assert!(!take_seats(&mut rooms, &ab[..1], "h2"));
        assert!(!take_seats(&mut rooms, &["c".to_owned()], "h1"), "unknown");
    }

    #[test]
    fn host_based_seats_are_shared_on_a_seated_host() {
        let mut rooms = HashMap::from([("k".to_owned(), room(1, true, &["old"]))]);
        let k = ["k".to_owned()];
        assert!(take_seats(&mut rooms, &k, "old"), "seated in the sample");
        assert!(take_seats(&mut rooms, &k, "h1"), "the last seat");
        assert!(take_seats(&mut rooms, &k, "h1"), "h1 is seated now");
        assert!(!take_seats(&mut rooms, &k, "h2"));
        assert_eq!(rooms["k"].free, 0);
    }

    #[test]
    fn a_floating_sample_with_hosts_counts_only_the_starts_it_cannot_hold() {
        let usage = |since, after, held| Usage {
            license: "nuke".into(),
            host: "h".into(),
            since,
            seated_before: held > 0,
            running: true,
            confirm_in: None,
            quiet_in: None,
            after,
            held,
        };
        // 3 starts within the lag before the sample, 1 after; 2 older frames held seats.
        let u = usage(4, 1, 2);
        assert_eq!(
            u.unseen_on(5),
            1,
            "5 seats: the 3 were seen, the one after was not"
        );
        assert_eq!(
            u.unseen_on(3),
            3,
            "1 seat beyond the held: 2 of the 3 unseen"
        );
        assert_eq!(u.unseen_on(0), 4, "no seat there: none seen");
        assert_eq!(
            u.unseen_on(9),
            1,
            "never more seen than started within the lag"
        );
        assert_eq!(
            usage(2, 2, 0).unseen_on(4),
            2,
            "starts after the sample never seen"
        );
    }

    #[test]
    fn stale_rooms_refuse() {
        let mut stale = room(5, false, &[]);
        stale.fresh = false;
        let mut rooms = HashMap::from([("s".to_owned(), stale)]);
        assert!(!take_seats(&mut rooms, &["s".to_owned()], "h"));
    }
}
