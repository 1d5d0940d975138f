//! The `licenses` thread: asks the provider every `poll_interval` (sooner while a license is
//! out of room on starts its sample may hold already, see `next_poll`) and stores the
//! sample in the database, and every [`REFRESH`] publishes the rooms the database gives
//! (which count the farm's starts since the sample, every instance's) on the
//! [`LicenseBoard`].
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
    config::Config,
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
        next_poll: Instant::now(),
        last_poll: None,
    };
    worker::periodic(&stop, || false, || poller.step(&config.load(), &board));
}

struct Poller {
    session: Session,
    next_poll: Instant,
    last_poll: Option<Instant>,
}

/// A confirming poll comes at least `poll_interval / CONFIRM_SHARE` after the last poll: at
/// most this many times the configured rate, and only while a license is out of room.
const CONFIRM_SHARE: u32 = 4;

/// When the provider is asked next: the regular poll, or sooner a confirming one. A license
/// out of room while it counts starts the sample may already hold (the checkout lag) can be
/// out of room only on paper, counting those frames twice: it is asked again as soon as a
/// sample would hold them all, not at the next regular poll (Maestro's LICENSE at full scale:
/// a ramp that crossed a poll left `nuke` a poll short, and its pool never full).
fn next_poll(
    regular: Instant,
    last_poll: Option<Instant>,
    interval: Duration,
    rooms: &HashMap<String, Room>,
    now: Instant,
) -> Instant {
    let confirm = rooms
        .values()
        .filter(|r| r.fresh && r.free <= 0)
        .filter_map(|r| r.confirm_in)
        .reduce(f64::min);
    let Some(secs) = confirm else {
        return regular;
    };
    let at = now + Duration::from_secs_f64(secs.clamp(0.0, interval.as_secs_f64()));
    let earliest = last_poll.map_or(now, |l| l + interval / CONFIRM_SHARE);
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
        let now = Instant::now();
        if now >= self.next_poll {
            self.next_poll = now + config.licenses.poll_interval;
            self.last_poll = Some(now);
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
                self.next_poll = next_poll(
                    self.next_poll,
                    self.last_poll,
                    config.licenses.poll_interval,
                    &rooms,
                    Instant::now(),
                );
                board.publish(rooms);
            }
            Err(e) => {
                log::warn!("licenses: reading the samples failed: {e}");
                self.session.after_error(&e);
            }
        }
        REFRESH.min(self.next_poll.saturating_duration_since(Instant::now()))
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
        let at = |r: Room, last: Option<Instant>| next_poll(regular, last, every, &rooms(r), now);
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
}
