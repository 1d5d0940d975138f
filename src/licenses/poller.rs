//! The `licenses` thread: asks the provider every `poll_interval` (sooner while a license is
//! out of room on starts its sample may hold already, a little later while the farm is still
//! spending a counts-only sample's seats, see `next_poll`) and stores the sample in the
//! database, and every [`REFRESH`] publishes the rooms the database gives (which count the
//! farm's starts since the sample, every instance's) on the [`LicenseBoard`].
//!
//! A failed call leaves the last sample in place; once it is older than `stale_after` the
//! licenses' layers hold. Several instances all poll; the newest sample wins in the table.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;

use super::{LicenseBoard, fetch, parse, rules};
use crate::{
    config::{Config, LicensesConfig},
    db::{self, licenses::Room},
    metrics,
    worker::{self, Session},
};

/// How often the board is refreshed from the database between provider polls.
pub const REFRESH: Duration = Duration::from_secs(1);

/// The thread's body: runs until `stop`.
pub fn run(config: Arc<ArcSwap<Config>>, board: Arc<LicenseBoard>, stop: Arc<AtomicBool>) {
    let mut poller = Poller {
        session: Session::default(),
        clock: PollClock {
            next_poll: Instant::now(),
            last_poll: None,
        },
    };
    worker::periodic(&stop, || false, || poller.step(&config.load(), &board));
}

struct Poller {
    session: Session,
    clock: PollClock,
}

/// A confirming poll comes at least `poll_interval / CONFIRM_SHARE` after the last poll: at
/// most this many times the configured rate, and only while a license is out of room.
const CONFIRM_SHARE: u32 = 4;

/// What the poll times are computed with.
#[derive(Clone, Copy, Debug)]
struct Pace {
    /// `poll_interval`.
    interval: Duration,
    /// The most a regular poll waits for a ramp to go quiet: the checkout lag, at most the
    /// interval, and at most half of what `stale_after` leaves beyond the interval, so the
    /// wait never lets a sample go stale.
    hold: Duration,
}

impl Pace {
    fn of(config: &LicensesConfig) -> Pace {
        let slack = config.stale_after.saturating_sub(config.poll_interval) / 2;
        Pace {
            interval: config.poll_interval,
            hold: config.checkout_lag.min(config.poll_interval).min(slack),
        }
    }
}

/// The regular poll, held back while the farm is still spending a counts-only sample's
/// free seats: a sample taken in the middle of such a ramp holds some of its starts (those
/// checked out already) and cannot say which, so every start within the checkout lag is
/// counted again on top of it, and the ramp stops short until the lag has passed (Maestro's
/// LICENSE with a counts-only provider: 75 of 128 seats spent, the room read 0 for 2.4 s and
/// the first frames were ending before the rest started). Waiting until the newest start is
/// older than the lag, at most `hold` past the regular time, the next sample holds the whole
/// ramp; meanwhile the last one still has room, which the booking guard spends net of every
/// start since, so no seat is spent twice either way.
fn held_for_ramp(due: Due, rooms: &HashMap<String, Room>) -> Instant {
    let quiet = of_fresh(rooms, true, |r| r.quiet_in, f64::max);
    let Some(secs) = quiet.filter(|s| *s > 0.0) else {
        return due.regular;
    };
    let hold = due.pace.hold;
    let latest = due.last_poll.map_or(due.regular, |l| l + due.pace.interval) + hold;
    due.regular
        .max(due.now + Duration::from_secs_f64(secs.min(hold.as_secs_f64())))
        .min(latest.max(due.regular))
}

/// What a poll time is decided on.
#[derive(Clone, Copy, Debug)]
struct Due {
    /// The regular poll's time.
    regular: Instant,
    /// The last poll's.
    last_poll: Option<Instant>,
    pace: Pace,
    now: Instant,
}

/// `pick` of `field` over the fresh rooms with seats left (`with_seats`) or without.
fn of_fresh(
    rooms: &HashMap<String, Room>,
    with_seats: bool,
    field: impl Fn(&Room) -> Option<f64>,
    pick: fn(f64, f64) -> f64,
) -> Option<f64> {
    rooms
        .values()
        .filter(|r| r.fresh && (r.free > 0) == with_seats)
        .filter_map(field)
        .reduce(pick)
}

/// When the provider is asked next: the regular poll (held for a ramp, [`held_for_ramp`]),
/// or sooner a confirming one. A license out of room while it counts starts the sample may
/// already hold (the checkout lag) can be out of room only on paper, counting those frames
/// twice: it is asked again as soon as a sample would hold them all, not at the next regular
/// poll (Maestro's LICENSE at full scale: a ramp that crossed a poll left `nuke` a poll
/// short, and its pool never full).
fn next_poll(due: Due, rooms: &HashMap<String, Room>) -> Instant {
    let interval = due.pace.interval;
    let regular = held_for_ramp(due, rooms);
    let Some(secs) = of_fresh(rooms, false, |r| r.confirm_in, f64::min) else {
        return regular;
    };
    let at = due.now + Duration::from_secs_f64(secs.clamp(0.0, interval.as_secs_f64()));
    let earliest = due
        .last_poll
        .map_or(due.now, |l| l + interval / CONFIRM_SHARE);
    at.max(earliest).min(regular)
}

impl Poller {
    /// One step: the provider if its poll is due, then the board; the wait to the next.
    fn step(&mut self, config: &Config, board: &LicenseBoard) -> Duration {
        let (Some(provider), Some(rules)) = (config.licenses.provider(), rules(&config.licenses))
        else {
            board.publish(HashMap::new());
            return REFRESH;
        };
        let client = match self.session.get(&config.database) {
            Ok(c) => c,
            Err(e) => {
                log::warn!("licenses: database unreachable: {e}");
                self.session.after_error(&e);
                return REFRESH;
            }
        };
        let pace = Pace::of(&config.licenses);
        let now = Instant::now();
        if now >= self.clock.next_poll {
            // The rooms now, not as of the last refresh: a ramp begun since holds the poll.
            if let Ok(rooms) = db::licenses::rooms(client, None, &rules) {
                self.clock.next_poll = held_for_ramp(self.clock.due(pace, now), &rooms);
                if self.clock.next_poll > now {
                    log::debug!(
                        "licenses: poll held {:?} for a ramp on a counts-only sample",
                        self.clock.next_poll - now
                    );
                }
            }
        }
        if now >= self.clock.next_poll {
            self.clock.next_poll = now + config.licenses.poll_interval;
            self.clock.last_poll = Some(now);
            let stored = fetch(&provider, config.licenses.provider_timeout)
                .and_then(|body| parse(&body))
                .map_err(|e| e.to_string())
                .and_then(|sample| db::licenses::store(client, &sample).map_err(|e| e.to_string()));
            let outcome = if let Err(e) = stored {
                log::warn!("licenses: provider {}: {e}", config.licenses.provider);
                "error"
            } else {
                "ok"
            };
            metrics::LICENSE_POLLS.with_label_values(&[outcome]).inc();
        }
        match db::licenses::rooms(client, None, &rules) {
            Ok(rooms) => {
                export(&rooms);
                self.clock.next_poll = next_poll(self.clock.due(pace, Instant::now()), &rooms);
                board.publish(rooms);
            }
            Err(e) => {
                log::warn!("licenses: reading the samples failed: {e}");
                self.session.after_error(&e);
            }
        }
        REFRESH.min(
            self.clock
                .next_poll
                .saturating_duration_since(Instant::now()),
        )
    }
}

/// When the provider was last asked and is to be asked next.
struct PollClock {
    next_poll: Instant,
    last_poll: Option<Instant>,
}

impl PollClock {
    /// What the next poll time is decided on, `now`.
    fn due(&self, pace: Pace, now: Instant) -> Due {
        Due {
            regular: self.next_poll,
            last_poll: self.last_poll,
            pace,
            now,
        }
    }
}

/// The free seats per license as a gauge.
fn export(rooms: &HashMap<String, Room>) {
    for (name, room) in rooms {
        let free = if room.fresh { room.free } else { -1 };
        metrics::LICENSE_FREE.with_label_values(&[name]).set(free);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(free: i64, confirm_in: Option<f64>) -> Room {
        Room {
            fresh: true,
            free,
            confirm_in,
            ..Room::default()
        }
    }

    #[test]
    fn a_license_out_of_room_on_unseen_starts_is_asked_again_once_a_sample_holds_them() {
        let now = Instant::now();
        let every = Duration::from_secs(8);
        let regular = now + every;
        let rooms = |r: Room| HashMap::from([("a".to_owned(), r)]);
        let pace = Pace {
            interval: every,
            hold: Duration::from_secs(2),
        };
        let at = |r: Room, last_poll: Option<Instant>| {
            let due = Due {
                regular,
                last_poll,
                pace,
                now,
            };
            next_poll(due, &rooms(r))
        };
        // With room, or with nothing counted twice, the regular poll.
        assert_eq!(at(room(3, Some(1.0)), None), regular);
        assert_eq!(at(room(0, None), None), regular);
        // Out of room: when the oldest unseen start is older than the lag.
        assert_eq!(
            at(room(0, Some(3.0)), Some(now)),
            now + Duration::from_secs(3)
        );
        // Never sooner than a quarter of the interval after the last poll…
        assert_eq!(at(room(-2, Some(0.5)), Some(now)), now + every / 4);
        assert_eq!(at(room(-2, Some(-1.0)), None), now, "due already");
        // …nor later than the regular poll.
        assert_eq!(at(room(0, Some(60.0)), Some(now)), regular);
        let mut stale = room(0, Some(1.0));
        stale.fresh = false;
        assert_eq!(
            at(stale, Some(now)),
            regular,
            "a stale sample waits its poll"
        );
    }

    #[test]
    fn a_ramp_on_a_counts_only_sample_holds_the_regular_poll_until_it_is_quiet() {
        let now = Instant::now();
        let every = Duration::from_secs(8);
        let last = Some(now - every);
        let pace = Pace {
            interval: every,
            hold: Duration::from_secs(2),
        };
        let ramp = |free: i64, quiet: Option<f64>| {
            let mut r = room(free, quiet.map(|_| 0.1));
            r.quiet_in = quiet;
            HashMap::from([("a".to_owned(), r)])
        };
        let due = |at: Instant| Due {
            regular: at,
            last_poll: last,
            pace,
            now: at,
        };
        let held = |rooms: HashMap<String, Room>| held_for_ramp(due(now), &rooms);
        // Starts within the lag while seats are left: until the newest is older than it.
        assert_eq!(held(ramp(5, Some(1.5))), now + Duration::from_millis(1500));
        // At most `hold` past the regular time, however long the ramp goes on.
        assert_eq!(held(ramp(5, Some(9.0))), now + Duration::from_secs(2));
        let limit = now + Duration::from_secs(2);
        assert_eq!(
            held_for_ramp(due(limit), &ramp(5, Some(1.0))),
            limit,
            "a poll held to its limit is not held again"
        );
        // No ramp, a quiet one, or no seat left (then a confirming poll may come sooner).
        assert_eq!(held(ramp(5, None)), now);
        assert_eq!(held(ramp(5, Some(-0.5))), now);
        assert_eq!(held(ramp(0, Some(1.5))), now);
        assert_eq!(next_poll(due(now), &ramp(0, Some(1.5))), now);
    }

    #[test]
    fn the_hold_never_lets_a_sample_go_stale() {
        let config = |stale_s: u64| LicensesConfig {
            poll_interval: Duration::from_secs(20),
            checkout_lag: Duration::from_secs(10),
            stale_after: Duration::from_secs(stale_s),
            ..LicensesConfig::default()
        };
        assert_eq!(Pace::of(&config(300)).hold, Duration::from_secs(10));
        assert_eq!(Pace::of(&config(26)).hold, Duration::from_secs(3));
        assert_eq!(Pace::of(&config(20)).hold, Duration::ZERO);
    }
}
