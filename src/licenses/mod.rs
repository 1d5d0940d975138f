//! Live application licenses (`[licenses]`): a layer names the licenses its frames need in
//! its environment (`CUE_LICENSES=hengine,katana`) and books only while a fresh sample of the
//! provider leaves a seat free.
//!
//! - [`poller`] (thread `licenses`) asks the provider every `poll_interval`, off the booking
//!   path, stores the sample in `stagehand.license` and, every second, publishes the rooms
//!   the database gives ([`crate::db::licenses::rooms`]) on the [`LicenseBoard`].
//! - A booking pass takes its [`PassSeats`] from the board: a hint that stops a layer whose
//!   licenses have no seat (`no_license`) before it costs a batch.
//! - The booking transaction decides ([`crate::db::booking`]): license rows locked, starts
//!   since the sample counted after the lock, seats taken in batch order.
//!
//! A license the provider does not report, or whose sample is older than `stale_after`, holds
//! its layers: they never run blind. Exit statuses in `denied_exit_statuses` (the
//! application was refused its seat anyway, e.g. an artist took it between two polls) are
//! requeued WAITING by the completion path without spending a retry.

pub mod poller;
mod provider;

use std::{collections::HashMap, sync::Arc};

use arc_swap::ArcSwap;

pub use provider::{fetch, parse};

use crate::{
    config::LicensesConfig,
    db::licenses::{LicenseRules, Room, take_seats},
};

/// Why a provider call failed.
#[derive(Debug, thiserror::Error)]
pub enum LicenseError {
    /// Connecting, reading, or running the script failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The provider answered something that is not a sample.
    #[error("{0}")]
    Answer(String),
}

/// The rules the rooms are computed with; `None` when no provider is configured (then
/// `CUE_LICENSES` is ignored).
pub fn rules(config: &LicensesConfig) -> Option<LicenseRules> {
    config.provider()?;
    Some(LicenseRules {
        headroom: config
            .headroom
            .iter()
            .map(|(name, seats)| (name.clone(), i64::from(*seats)))
            .collect(),
        default_headroom: i64::from(config.default_headroom),
        stale_after_secs: config.stale_after.as_secs_f64(),
        checkout_lag_secs: config.checkout_lag.as_secs_f64(),
    })
}

/// The rooms of every license as the poller last read them from the database. The poller
/// is its only writer; booking passes read it.
#[derive(Default)]
pub struct LicenseBoard {
    rooms: ArcSwap<HashMap<String, Room>>,
}

impl LicenseBoard {
    /// Replaces the rooms.
    pub fn publish(&self, rooms: HashMap<String, Room>) {
        self.rooms.store(Arc::new(rooms));
    }

    /// The rooms as last published.
    pub fn snapshot(&self) -> Arc<HashMap<String, Room>> {
        self.rooms.load_full()
    }

    /// A pass's own copy, taken when the pass first meets a licensed layer.
    pub fn pass(&self) -> PassSeats<'_> {
        PassSeats {
            board: self,
            rooms: None,
        }
    }
}

/// The seats one booking pass may still spend: the board's rooms less what the pass has
/// planned. A hint only; the booking transaction re-checks.
pub struct PassSeats<'b> {
    board: &'b LicenseBoard,
    rooms: Option<HashMap<String, Room>>,
}

impl PassSeats<'_> {
    fn rooms(&mut self) -> &mut HashMap<String, Room> {
        let board = self.board;
        self.rooms
            .get_or_insert_with(|| board.snapshot().as_ref().clone())
    }

    /// False when some license of `licenses` cannot take another frame anywhere: unknown,
    /// stale, or without a free seat (a host-based one with no seated host either).
    pub fn may_admit(&mut self, licenses: &[String]) -> bool {
        let rooms = self.rooms();
        licenses.iter().all(|l| {
            rooms
                .get(l)
                .is_some_and(|r| r.fresh && (r.free > 0 || (r.host_based && !r.seated.is_empty())))
        })
    }

    /// Whether a frame needing `licenses` could take its seats on `host` now (a host-based
    /// seat is free there when the host is seated): the candidate filter that packs such
    /// frames onto seated hosts once the free seats are gone. True before
    /// [`PassSeats::may_admit`] has read the board.
    pub fn fits_on(&self, licenses: &[String], host: &str) -> bool {
        self.rooms.as_ref().is_none_or(|rooms| {
            licenses.iter().all(|l| {
                rooms
                    .get(l)
                    .is_some_and(|r| r.fresh && r.free >= r.cost(host))
            })
        })
    }

    /// Takes the seats of a frame on `host`, all or none; false when one is missing.
    pub fn take(&mut self, licenses: &[String], host: &str) -> bool {
        take_seats(self.rooms(), licenses, host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_spends_its_own_copy_of_the_board() {
        let board = LicenseBoard::default();
        let room = |free, host_based: bool, seated: &[&str]| Room {
            fresh: true,
            host_based,
            free,
            seated: seated.iter().map(|s| (*s).to_owned()).collect(),
            confirm_in: None,
            quiet_in: None,
        };
        board.publish(HashMap::from([
            ("a".to_owned(), room(1, false, &[])),
            ("k".to_owned(), room(0, true, &["h1"])),
        ]));
        let (a, k) = (vec!["a".to_owned()], vec!["k".to_owned()]);
        let mut pass = board.pass();
        assert!(pass.may_admit(&a) && pass.take(&a, "h1"));
        assert!(!pass.may_admit(&a), "the pass spent the seat");
        assert!(pass.may_admit(&k), "a seated host may still share");
        assert!(pass.fits_on(&k, "h1") && !pass.fits_on(&k, "h2"));
        assert!(pass.take(&k, "h1") && !pass.take(&k, "h2"));
        assert!(!pass.may_admit(&["unknown".to_owned()]));
        assert_eq!(board.snapshot()["a"].free, 1, "the board is untouched");
    }

    #[test]
    fn no_provider_no_rules() {
        let mut config = LicensesConfig::default();
        assert!(rules(&config).is_none());
        config.provider = "/usr/local/bin/licenses".into();
        config.headroom.insert("katana".into(), 2);
        let r = rules(&config).unwrap();
        assert_eq!(r.headroom["katana"], 2);
        assert_eq!(r.stale_after_secs, 300.0);
    }
}
