//! Several stagehand instances on one database: ownership of shows by lease, with fencing.
//!
//! PostgreSQL is the coordinator. Each instance registers in `stagehand.instance` and
//! heartbeats there (database clock); each managed show has a row in `stagehand.show_lease`
//! with its owner and an `int_epoch` that grows with every change of owner. A lease is valid
//! while its owner's heartbeat is younger than `lease_duration`, so renewing every lease is one
//! row update per instance — never an update of the lease rows themselves, which booking
//! transactions lock `FOR SHARE` (renewing those would queue behind every booking and stall
//! the ones after it). Every booking transaction proves, under that lock, that this instance
//! still holds the show at the epoch it planned under and that its own heartbeat is fresh
//! (`db::booking`); a takeover updates the lease row, so it waits for in-flight batches and
//! they for it. An instance paused past its lease therefore commits nothing.
//!
//! Distribution is automatic: every round an instance renews what it holds, claims unowned or
//! expired shows while its share of the waiting work is below the fair share (any show left
//! unowned for a whole round is claimed regardless, so none starves), and sheds its smallest
//! show when it holds clearly more than its share. A show is booked only after a counter
//! re-sync that began after its claim, so the new owner's caps include the old owner's last
//! bookings. Shutdown releases every lease at once.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use serde::Serialize;
use uuid::Uuid;

use crate::{
    accounting::Ledger,
    config::Config,
    db::{self, booking::Fence},
    ids::ShowId,
    metrics,
};

mod board;
mod policy;

pub use board::{LeaseBoard, LeaseView};

/// The least time shutdown gives [`Leases::release_all`], even past its grace: releasing
/// hands the shows on at once instead of after a lease period.
const RELEASE_FLOOR: Duration = Duration::from_secs(1);

/// A show this instance holds.
#[derive(Clone, Debug, Serialize)]
pub struct Held {
    /// `show.pk_show`.
    pub show: String,
    /// The fencing epoch.
    pub epoch: i64,
    /// Waiting frames of the show at the last round.
    pub waiting: i64,
    /// The ledger re-sync count at claim time: bookable once two more re-syncs ran.
    #[serde(skip)]
    claimed_resyncs: u64,
}

/// A peer instance, for `/status`.
#[derive(Clone, Debug, Serialize)]
pub struct Peer {
    /// Instance name.
    pub name: String,
    /// Shows it holds.
    pub shows: i64,
    /// Seconds since its last heartbeat.
    pub heartbeat_age_secs: f64,
}

/// This instance's leases.
pub struct Leases {
    /// This instance's key.
    pub instance: Uuid,
    name: String,
    config: Arc<ArcSwap<Config>>,
    /// The counters whose re-syncs make a newly claimed show bookable.
    ledger: Arc<Ledger>,
    /// Where the fence and the host share are published; this keeper is its only writer.
    board: Arc<LeaseBoard>,
    held: Mutex<HashMap<String, Held>>,
    peers: Mutex<Vec<Peer>>,
    /// Set by [`Leases::release_all`]; a round holds it throughout, so a round either ends
    /// before the release or does not start (a round after it re-registered the instance
    /// and claimed every show back).
    released: Mutex<bool>,
    /// When this instance last shed or claimed a show: shedding waits a few rounds after
    /// either, so shares settle instead of churning (each move costs a counter re-sync).
    last_move: Mutex<Instant>,
}

impl Leases {
    /// Creates the lease keeper with a new instance key; it publishes on `board`.
    pub fn new(
        config: Arc<ArcSwap<Config>>,
        ledger: Arc<Ledger>,
        board: Arc<LeaseBoard>,
    ) -> Arc<Leases> {
        let cfg = config.load();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_owned();
        let name = if cfg.cluster.instance_name.is_empty() {
            format!(
                "{}:{}",
                if host.is_empty() { "localhost" } else { &host },
                std::process::id()
            )
        } else {
            cfg.cluster.instance_name.clone()
        };
        Arc::new(Leases {
            instance: Uuid::new_v4(),
            name,
            config: Arc::clone(&config),
            ledger,
            board,
            held: Mutex::new(HashMap::new()),
            peers: Mutex::new(Vec::new()),
            released: Mutex::new(false),
            last_move: Mutex::new(Instant::now()),
        })
    }

    /// This instance's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True when this instance may book `show` now: the same rule each pass applies to the
    /// fence it captures ([`Fence::for_pass`]).
    pub(crate) fn may_book(&self, show: &str) -> bool {
        let resyncs = self.ledger.resyncs();
        self.held
            .lock()
            .get(show)
            .map(|h| resyncs >= h.claimed_resyncs + 2)
            .unwrap_or(false)
    }

    /// The shows held (bookable yet or not), for the reads that need only this instance's.
    pub(crate) fn held_shows(&self) -> Vec<ShowId> {
        self.held
            .lock()
            .keys()
            .map(|s| ShowId::from(s.as_str()))
            .collect()
    }

    /// Shows held, for `/status`.
    pub fn held(&self) -> Vec<Held> {
        let mut v: Vec<Held> = self.held.lock().values().cloned().collect();
        v.sort_by(|a, b| a.show.cmp(&b.show));
        v
    }

    /// Peers seen at the last round, for `/status`.
    pub(crate) fn peers(&self) -> Vec<Peer> {
        self.peers.lock().clone()
    }

    /// The body of the `leases` thread: a round every `lease_renew_interval` until `stop`.
    pub fn run(&self, stop: Arc<AtomicBool>) {
        let mut session = crate::worker::Session::default();
        let mut schema_ready = false;
        crate::worker::periodic(
            &stop,
            || false,
            || {
                let cfg = self.config.load_full();
                if let Err(e) = self.step(&mut session, &mut schema_ready, &cfg) {
                    metrics::DB_ERRORS.with_label_values(&[e.kind()]).inc();
                    log::warn!("lease round failed: {e}");
                    session.after_error(&e);
                }
                cfg.cluster.lease_renew_interval
            },
        );
    }

    /// One round on this thread's session: connect, bound lock waits, create stagehand's
    /// schema once, then [`Leases::round`].
    fn step(
        &self,
        session: &mut crate::worker::Session,
        schema_ready: &mut bool,
        cfg: &Config,
    ) -> Result<(), db::DbError> {
        let conn = session.get(&cfg.database)?;
        // A lease row locked by a frozen peer's transaction must not hang this thread:
        // give up after one round and try again at the next.
        let lock_ms = cfg.cluster.lease_renew_interval.as_millis().max(50);
        if let Err(e) = conn.batch_execute(&format!("SET lock_timeout = {lock_ms}")) {
            session.reset();
            return Err(e.into());
        }
        if !*schema_ready {
            // Counted and logged, and tried again next round; not a failed round, which
            // would drop the connection.
            if let Err(e) = db::migrate::prepare_for_run(conn) {
                metrics::DB_ERRORS.with_label_values(&[e.kind()]).inc();
                log::error!("leases: the database is not ready for stagehand: {e}");
                return Ok(());
            }
            *schema_ready = true;
        }
        self.round(conn, cfg)
    }

    /// One lease round: heartbeat, survey, claim, shed, then publish the holdings and the
    /// fence the booking transactions check. None once the leases were released.
    fn round(&self, conn: &mut postgres::Client, cfg: &Config) -> Result<(), db::DbError> {
        let released = self.released.lock();
        if *released {
            return Ok(());
        }
        let lease_secs = cfg.cluster.lease_duration.as_secs_f64();
        let renew_secs = cfg.cluster.lease_renew_interval.as_secs_f64();
        self.heartbeat(conn)?;
        let mut survey = self.survey(conn, lease_secs, renew_secs)?;
        self.release_unmanaged(conn, &mut survey)?;
        let plan = policy::claims(&survey);
        let claimed = self.claim(conn, &plan.shows, lease_secs)?;
        if !claimed.is_empty() {
            *self.last_move.lock() = Instant::now();
        }
        let settled = self.last_move.lock().elapsed() >= cfg.cluster.lease_renew_interval * 3;
        let shed = policy::shed(&survey, &claimed, plan.mine, settled);
        if let Some(show) = &shed {
            conn.execute(
                "UPDATE stagehand.show_lease SET pk_instance = NULL WHERE pk_show = $1 AND pk_instance = $2",
                &[show, &self.instance],
            )?;
            metrics::LEASE_EVENTS.with_label_values(&["shed"]).inc();
            *self.last_move.lock() = Instant::now();
        }
        self.peers_from(conn, lease_secs)?;
        self.publish(survey, claimed, shed.as_deref(), lease_secs);
        self.recount_handed_back(conn, lease_secs);
        Ok(())
    }

    /// Pays the recounts owed to Cuebot for shows handed back to it, whoever held them (see
    /// [`db::recompute::recount_owed`]: their usage counters read low by what stagehand booked
    /// since the last recompute); what is still owed is tried again next round.
    fn recount_handed_back(&self, conn: &mut postgres::Client, lease_secs: f64) {
        match db::recompute::recount_owed(conn, lease_secs) {
            Ok(Some((shows, written))) => {
                // Owed shows are recounted every round until settled: say so when it wrote.
                let level = if written == db::recompute::Written::default() {
                    log::Level::Debug
                } else {
                    log::Level::Info
                };
                log::log!(
                    level,
                    "recounted the usage of shows handed back to Cuebot {shows:?}: {written:?}"
                );
            }
            Ok(None) => {}
            Err(e) => {
                metrics::DB_ERRORS.with_label_values(&[e.kind()]).inc();
                log::warn!("recount of shows handed back to Cuebot failed, next round: {e}");
            }
        }
    }

    /// Registers this instance or renews its heartbeat, which renews every lease it holds,
    /// and forgets instances silent for a day (killed ones never delete their row; every
    /// reader already takes a missing instance for a dead one).
    fn heartbeat(&self, conn: &mut postgres::Client) -> Result<(), db::DbError> {
        conn.execute(
            "WITH gone AS (DELETE FROM stagehand.instance
                            WHERE ts_heartbeat < now() - interval '1 day' AND pk_instance <> $1)
             INSERT INTO stagehand.instance (pk_instance, str_name, str_host, int_pid)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (pk_instance) DO UPDATE SET ts_heartbeat = now()",
            &[
                &self.instance,
                &self.name,
                &self.name,
                &(std::process::id() as i32),
            ],
        )?;
        Ok(())
    }

    /// Reads what the policy needs: the shows held (whatever is gone was taken from us), the
    /// waiting work per managed show, the live instances and the free shows.
    fn survey(
        &self,
        conn: &mut postgres::Client,
        lease_secs: f64,
        renew_secs: f64,
    ) -> Result<policy::Survey, db::DbError> {
        let pairs = |rows: Vec<postgres::Row>| -> HashMap<String, i64> {
            rows.iter().map(|r| (r.get(0), r.get(1))).collect()
        };
        let renewed = pairs(conn.query(
            "SELECT pk_show, int_epoch FROM stagehand.show_lease WHERE pk_instance = $1",
            &[&self.instance],
        )?);
        let waiting = pairs(conn.query(
            "SELECT sh.pk_show, coalesce(sum(js.int_waiting_count), 0)::bigint
               FROM show sh LEFT JOIN job j ON j.pk_show = sh.pk_show AND j.str_state = 'PENDING'
               LEFT JOIN job_stat js ON js.pk_job = j.pk_job
              WHERE sh.b_scheduler_managed AND sh.b_active GROUP BY sh.pk_show",
            &[],
        )?);
        let live_instances: i64 = conn
            .query_one(
                "SELECT count(*) FROM stagehand.instance WHERE ts_heartbeat > now() - make_interval(secs => $1)",
                &[&lease_secs],
            )?
            .get(0);
        let free = conn
            .query(
                "SELECT sh.pk_show,
                        coalesce(i.ts_heartbeat < now() - make_interval(secs => $1::float8 + $2::float8), true)
                          AND coalesce(l.ts_claimed < now() - make_interval(secs => $2), true)
                   FROM show sh
                   LEFT JOIN stagehand.show_lease l ON l.pk_show = sh.pk_show
                   LEFT JOIN stagehand.instance i ON i.pk_instance = l.pk_instance
                  WHERE sh.b_scheduler_managed AND sh.b_active
                    AND (l.pk_instance IS NULL OR i.pk_instance IS NULL
                         OR i.ts_heartbeat < now() - make_interval(secs => $1))",
                &[&lease_secs, &renew_secs],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        Ok(policy::Survey {
            renewed,
            waiting,
            live_instances,
            free,
        })
    }

    /// Lets go at once of held shows handed back to Cuebot (or deactivated): the booking
    /// transactions already refuse them, and holding them would only hide them from the
    /// balance.
    fn release_unmanaged(
        &self,
        conn: &mut postgres::Client,
        survey: &mut policy::Survey,
    ) -> Result<(), db::DbError> {
        let unmanaged: Vec<String> = survey
            .renewed
            .keys()
            .filter(|s| !survey.waiting.contains_key(*s))
            .cloned()
            .collect();
        if unmanaged.is_empty() {
            return Ok(());
        }
        conn.execute(
            "UPDATE stagehand.show_lease SET pk_instance = NULL
              WHERE pk_instance = $1 AND pk_show = ANY($2)",
            &[&self.instance, &unmanaged],
        )?;
        for show in &unmanaged {
            survey.renewed.remove(show);
            log::info!("show {show} is no longer managed by stagehand; lease released");
            metrics::LEASE_EVENTS
                .with_label_values(&["unmanaged"])
                .inc();
        }
        Ok(())
    }

    /// Claims `shows` where they are still free (the condition is re-checked in the
    /// statement: a peer may have claimed one since the survey); returns those won, with
    /// their new epochs.
    fn claim(
        &self,
        conn: &mut postgres::Client,
        shows: &[String],
        lease_secs: f64,
    ) -> Result<HashMap<String, i64>, db::DbError> {
        if shows.is_empty() {
            return Ok(HashMap::new());
        }
        Ok(conn
            .query(
                "INSERT INTO stagehand.show_lease (pk_show, pk_instance, int_epoch, ts_claimed)
                 SELECT s, $1, 1, now() FROM unnest($2::text[]) AS s
                 ON CONFLICT (pk_show) DO UPDATE
                    SET pk_instance = $1, int_epoch = stagehand.show_lease.int_epoch + 1, ts_claimed = now(),
                        b_recount = true
                  WHERE stagehand.show_lease.pk_instance IS NULL
                     OR NOT EXISTS (SELECT 1 FROM stagehand.instance i
                                     WHERE i.pk_instance = stagehand.show_lease.pk_instance
                                       AND i.ts_heartbeat > now() - make_interval(secs => $3))
                 RETURNING pk_show, int_epoch",
                &[&self.instance, &shows, &lease_secs],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }

    /// Publishes the new holdings and the fence. A show keeps its claim-time re-sync count
    /// while its epoch is unchanged; a new or re-won one waits for two re-syncs that began
    /// after its claim, and one is requested now instead of at the recompute interval.
    fn publish(
        &self,
        survey: policy::Survey,
        claimed: HashMap<String, i64>,
        shed: Option<&str>,
        lease_secs: f64,
    ) {
        let resyncs = self.ledger.resyncs();
        let mut held = self.held.lock();
        let mut next: HashMap<String, Held> = HashMap::new();
        for (show, epoch) in survey.renewed.into_iter().chain(claimed) {
            if shed == Some(show.as_str()) {
                continue;
            }
            let claimed_resyncs = match held.get(&show) {
                Some(h) if h.epoch == epoch => h.claimed_resyncs,
                _ => {
                    metrics::LEASE_EVENTS.with_label_values(&["claimed"]).inc();
                    resyncs
                }
            };
            let waiting = survey.waiting.get(&show).copied().unwrap_or(0);
            let h = Held {
                show: show.clone(),
                epoch,
                waiting,
                claimed_resyncs,
            };
            next.insert(show, h);
        }
        for lost in held
            .keys()
            .filter(|s| !next.contains_key(*s) && shed != Some(s.as_str()))
        {
            log::warn!("lease of show {lost} was lost");
            metrics::LEASE_EVENTS.with_label_values(&["lost"]).inc();
        }
        metrics::LEASES_HELD.set(next.len() as i64);
        let target = next.values().map(|h| h.claimed_resyncs + 2).max();
        if let Some(target) = target.filter(|&t| resyncs < t) {
            self.ledger.request_resyncs_until(target);
        }
        // The keeper's own maps are keyed by the text its SQL reads; the fence the pipeline
        // reads is typed (a few shows, once a round).
        let fence = Fence {
            instance: self.instance,
            lease_secs,
            epochs: next
                .iter()
                .map(|(s, h)| (ShowId::from(s.as_str()), h.epoch))
                .collect(),
            bookable_after: next
                .iter()
                .map(|(s, h)| (ShowId::from(s.as_str()), h.claimed_resyncs + 2))
                .collect(),
        };
        *held = next;
        drop(held);
        self.board.publish_fence(fence);
    }

    fn peers_from(&self, conn: &mut postgres::Client, lease_secs: f64) -> Result<(), db::DbError> {
        // This instance's place among the live ones: the host index prefers that share.
        let live: Vec<Uuid> = conn
            .query(
                "SELECT pk_instance FROM stagehand.instance
                  WHERE ts_heartbeat > now() - make_interval(secs => $1) ORDER BY pk_instance",
                &[&lease_secs],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        self.board.publish_host_share(
            live.iter()
                .position(|i| *i == self.instance)
                .map(|k| (live.len() as u32, k as u32)),
        );
        let peers = conn
            .query(
                "SELECT i.str_name, (SELECT count(*) FROM stagehand.show_lease l WHERE l.pk_instance = i.pk_instance),
                        extract(epoch FROM now() - i.ts_heartbeat)::float8
                   FROM stagehand.instance i
                  WHERE i.ts_heartbeat > now() - make_interval(secs => $1) * 4
                  ORDER BY i.str_name",
                &[&lease_secs],
            )?
            .iter()
            .map(|r| Peer { name: r.get(0), shows: r.get(1), heartbeat_age_secs: r.get(2) })
            .collect();
        *self.peers.lock() = peers;
        Ok(())
    }

    /// Hands every show over at once (shutdown) and leaves the registry, by `deadline` (at
    /// least a second past now): a stalled database or network, or a round still running
    /// past it, leaves the leases to expire instead. Waits for a round in progress; no round
    /// runs after it.
    pub(crate) fn release_all(&self, deadline: Instant) {
        let deadline = deadline.max(Instant::now() + RELEASE_FLOOR);
        let Some(mut released) = self.released.try_lock_until(deadline) else {
            log::warn!("a lease round outlived the shutdown grace; the leases will expire");
            return;
        };
        *released = true;
        drop(released);
        // On a thread of its own: no client-side timeout bounds a statement whose answer
        // the network holds, and shutdown must not wait past its deadline.
        let (done, wait) = crossbeam_channel::bounded(1);
        let (database, instance) = (self.config.load().database.clone(), self.instance);
        let spawned = std::thread::Builder::new()
            .name("lease-release".into())
            .spawn(move || {
                let _ = done.send(release_in_db(&database, instance));
            });
        let outcome = spawned.ok().and_then(|thread| {
            let outcome = wait.recv_deadline(deadline).ok();
            if outcome.is_some() {
                let _ = thread.join();
            }
            outcome
        });
        match outcome {
            Some(Ok(n)) => log::info!("released {n} show leases"),
            Some(Err(e)) => log::warn!("could not release show leases (they will expire): {e}"),
            None => log::warn!(
                "releasing the show leases outlived the shutdown grace; they will expire"
            ),
        }
        self.held.lock().clear();
        metrics::LEASES_HELD.set(0);
    }
}

/// Frees `instance`'s leases and removes its registration; returns the leases freed.
fn release_in_db(
    database: &crate::config::DatabaseConfig,
    instance: Uuid,
) -> Result<u64, db::DbError> {
    let mut conn = db::connect(database)?;
    let n = conn.execute(
        "UPDATE stagehand.show_lease SET pk_instance = NULL WHERE pk_instance = $1",
        &[&instance],
    )?;
    conn.execute(
        "DELETE FROM stagehand.instance WHERE pk_instance = $1",
        &[&instance],
    )?;
    Ok(n)
}
