//! The `licenses` thread: asks the provider every `poll_interval` and stores the sample in
//! the database, and every [`REFRESH`] publishes the rooms the database gives (which count
//! the farm's starts since the sample, every instance's) on the [`LicenseBoard`].
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
    };
    worker::periodic(&stop, || false, || poller.step(&config.load(), &board));
}

struct Poller {
    session: Session,
    next_poll: Instant,
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
