//! The lease keeper's policy, apart from its SQL so it can be tested without PostgreSQL:
//! which free shows to claim and which held show to shed, given what a round read.

use std::collections::HashMap;

/// What one lease round read of the database.
#[derive(Debug, Default)]
pub(crate) struct Survey {
    /// Shows this instance holds after its heartbeat, with their epochs.
    pub(crate) renewed: HashMap<String, i64>,
    /// Waiting frames per managed, active show.
    pub(crate) waiting: HashMap<String, i64>,
    /// Instances whose heartbeat is within the lease.
    pub(crate) live_instances: i64,
    /// Shows nobody validly holds, and whether each has been so for a whole round.
    pub(crate) free: Vec<(String, bool)>,
}

impl Survey {
    fn waiting_of(&self, show: &str) -> i64 {
        self.waiting.get(show).copied().unwrap_or(0)
    }

    /// The fair share of waiting frames per live instance.
    pub(crate) fn fair(&self) -> f64 {
        let total: i64 = self.waiting.values().sum();
        total as f64 / self.live_instances.max(1) as f64
    }

    /// Waiting frames of the shows held now.
    fn mine(&self) -> i64 {
        self.renewed.keys().map(|s| self.waiting_of(s)).sum()
    }
}

/// The shows to claim, biggest first, and the waiting work held once they are claimed.
#[derive(Debug, PartialEq)]
pub(crate) struct Claims {
    /// Shows to claim, in order.
    pub(crate) shows: Vec<String>,
    /// Waiting frames of what is held plus what is claimed.
    pub(crate) mine: i64,
}

/// Claims free shows, biggest first, while this instance is under the fair share; a show
/// left unowned a whole round (`stale`) is claimed regardless so none waits for a perfect
/// balance, and a lone instance (or one holding nothing) claims everything free.
pub(crate) fn claims(survey: &Survey) -> Claims {
    let fair = survey.fair();
    let mut mine = survey.mine();
    let mut candidates: Vec<(&str, bool, i64)> = survey
        .free
        .iter()
        .map(|(s, stale)| (s.as_str(), *stale, survey.waiting_of(s)))
        .collect();
    candidates.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(b.0)));
    let mut shows = Vec::new();
    for (show, stale, w) in candidates {
        if stale || survey.renewed.is_empty() || (mine as f64) < fair || survey.live_instances <= 1
        {
            shows.push(show.to_owned());
            mine += w;
        }
    }
    Claims { shows, mine }
}

/// The show to shed: the smallest one with work whose loss keeps this instance at 75 % of
/// the fair share, and only while it holds clearly more than its share (25 % above, a
/// hysteresis), holds more than one show, other instances are live and the last move has
/// `settled` (each move costs a counter re-sync, so shares settle instead of churning).
pub(crate) fn shed(
    survey: &Survey,
    claimed: &HashMap<String, i64>,
    mine: i64,
    settled: bool,
) -> Option<String> {
    let fair = survey.fair();
    let held = survey.renewed.len() + claimed.len();
    if survey.live_instances <= 1 || !settled || held <= 1 || (mine as f64) <= fair * 1.25 + 1.0 {
        return None;
    }
    let mut owned: Vec<(&String, i64)> = survey
        .renewed
        .keys()
        .chain(claimed.keys())
        .map(|s| (s, survey.waiting_of(s)))
        .collect();
    owned.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(b.0)));
    owned
        .into_iter()
        .find(|(_, w)| *w > 0 && (mine - w) as f64 >= fair * 0.75)
        .map(|(s, _)| s.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn survey(held: &[&str], waiting: &[(&str, i64)], live: i64, free: &[(&str, bool)]) -> Survey {
        Survey {
            renewed: held.iter().map(|s| (s.to_string(), 1)).collect(),
            waiting: waiting.iter().map(|(s, w)| (s.to_string(), *w)).collect(),
            live_instances: live,
            free: free.iter().map(|(s, st)| (s.to_string(), *st)).collect(),
        }
    }

    #[test]
    fn a_lone_instance_claims_every_free_show_biggest_first() {
        let s = survey(
            &[],
            &[("a", 5), ("b", 50)],
            1,
            &[("a", false), ("b", false)],
        );
        assert_eq!(claims(&s).shows, vec!["b".to_owned(), "a".to_owned()]);
    }

    #[test]
    fn claims_stop_at_the_fair_share_but_not_for_a_stale_show() {
        // Two instances, 100 waiting: fair share 50; this one holds 60 already.
        let s = survey(
            &["held"],
            &[("held", 60), ("x", 30), ("y", 10)],
            2,
            &[("x", false), ("y", true)],
        );
        let c = claims(&s);
        assert_eq!(
            c.shows,
            vec!["y".to_owned()],
            "only the show unowned a whole round"
        );
        assert_eq!(c.mine, 70);
    }

    #[test]
    fn an_instance_above_its_share_sheds_its_smallest_show_with_work() {
        let s = survey(
            &["big", "small", "idle"],
            &[("big", 60), ("small", 20), ("idle", 0), ("other", 0)],
            2,
            &[],
        );
        // Fair 40, holds 80 > 51: shedding "small" keeps 60 >= 30.
        assert_eq!(
            shed(&s, &HashMap::new(), 80, true),
            Some("small".to_owned())
        );
        assert_eq!(
            shed(&s, &HashMap::new(), 80, false),
            None,
            "not before settling"
        );
        let alone = Survey {
            live_instances: 1,
            ..s
        };
        assert_eq!(shed(&alone, &HashMap::new(), 80, true), None);
    }

    #[test]
    fn no_shed_within_the_hysteresis() {
        let s = survey(&["a", "b"], &[("a", 30), ("b", 25), ("c", 45)], 2, &[]);
        // Fair 50, holds 55 <= 63.5.
        assert_eq!(shed(&s, &HashMap::new(), 55, true), None);
    }
}
