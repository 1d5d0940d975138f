//! Candidate search and placement on the [`HostIndex`]: walk the tag views from the request's
//! floor, offer each fitting host to the caller's sizing callback, keep the best (or the
//! first, under saturation) and take it with one CAS; hosts set aside (other instances'
//! shares, GPU hosts for non-GPU work) are tried last. Locality ([`super::locality`]) only
//! reorders hosts that passed every filter, within their tier: a bonus off the score under
//! `scored`, a bounded look-ahead past the first fit for a warm host under `saturation`.

use std::{collections::HashSet, sync::Arc};

use uuid::Uuid;

use super::{
    BATCH, Capable, Earmark, GB, HostIndex, HostView, Key, MAX_SCAN, Request, Slot, Strategy,
    TagView, Weights, locality::Heat, strategy,
};
use crate::model::Resources;

impl HostIndex {
    /// Finds a host for `request` under `strategy` and reserves on it what `size` says (the
    /// callback decides the exact amount for a candidate, or vetoes it with `None`).
    ///
    /// Saturation reserves the first fitting host of our share as it is found (with locality
    /// on: the first whose latest booking was of the frame's layer, else the warmest within
    /// `lookahead` hosts past the first fit, else that first fit); scored gathers up to `max_candidates` of them first, warm hosts scoring better.
    /// Either way the hosts set aside (other instances' shares, GPU hosts for non-GPU work)
    /// are tried last, best first.
    pub fn place(
        &self,
        request: &Request<'_>,
        strategy: &Strategy,
        mut size: impl FnMut(&HostView<'_>) -> Option<Resources>,
    ) -> Option<Earmark> {
        let (placed, skipped) = self.search(Search::new(request, strategy, true), &mut size);
        if placed.is_some() || skipped == 0 {
            return placed;
        }
        // The look-ahead skipped hosts and then lost every race for what it kept: search
        // again as plain first fit, so a frame never misses a host that fits.
        self.search(Search::new(request, strategy, false), &mut size)
            .0
    }

    /// Runs one search over the request's tags; also returns how many fitting-looking hosts
    /// the locality look-ahead skipped unsized.
    fn search(
        &self,
        mut search: Search<'_, '_>,
        size: &mut impl FnMut(&HostView<'_>) -> Option<Resources>,
    ) -> (Option<Earmark>, usize) {
        let tags = search.request.tags;
        for tag in tags {
            let Some(view) = self.inner.existing_view(tag) else {
                continue;
            };
            if let Some(reservation) = self.scan_tag(&view, &mut search, size) {
                return (Some(reservation), search.skipped);
            }
            if search.is_full() {
                break;
            }
        }
        let skipped = search.skipped;
        (self.take_best(search), skipped)
    }

    /// Walks one tag's view from the request's floor, at most [`MAX_SCAN`] entries, offering
    /// each new fitting host to `search`. Returns the reservation when saturation took a host;
    /// `None` when the view is exhausted or the scored search has all the candidates it wants.
    fn scan_tag(
        &self,
        view: &TagView,
        search: &mut Search<'_, '_>,
        size: &mut impl FnMut(&HostView<'_>) -> Option<Resources>,
    ) -> Option<Earmark> {
        let floor_cores = search.request.floor.cores;
        let mut examined = 0;
        let mut cursor: Option<Key> = None;
        while examined < MAX_SCAN {
            let (batch, last) =
                next_batch(view, search.strategy, floor_cores, search.mem_floor, cursor);
            let last = last?;
            cursor = Some(last);
            for (_, _, salted) in batch {
                examined += 1;
                let prefer = search.request.prefer;
                if let Some(c) = search.lookahead_over() {
                    // Lost the race for it: plain first fit from here on.
                    if let Some(r) = self.take(c.slot, c.amount, prefer) {
                        return Some(r);
                    }
                }
                let Some(candidate) = self.candidate(search, salted, size) else {
                    continue;
                };
                match search.offer(candidate) {
                    Offer::Kept => {}
                    Offer::Full => return None,
                    Offer::TakeNow(c) => {
                        // Lost the CAS race: keep walking, the next host may fit.
                        if let Some(r) = self.take(c.slot, c.amount, prefer) {
                            return Some(r);
                        }
                    }
                }
            }
        }
        None
    }

    /// The host behind a view key as a candidate: not seen before in this search, still
    /// indexed, fitting the floor, OS and thread mode, not skipped by the locality look-ahead
    /// and not vetoed by `size`. The view handed to `size` borrows the slot's name and OS,
    /// and the host's warmth is read from its atomics: nothing is copied per host.
    fn candidate(
        &self,
        search: &mut Search<'_, '_>,
        salted: Uuid,
        size: &mut impl FnMut(&HostView<'_>) -> Option<Resources>,
    ) -> Option<Candidate> {
        let id = Uuid::from_u128(salted.as_u128() ^ self.inner.salt);
        // A host listed under several of the request's tags is judged once.
        if !search.seen.insert(id) {
            return None;
        }
        let slot = self.inner.hosts.get(&id).map(|e| Arc::clone(e.value()))?;
        let free = slot.free();
        if !free.fits(&search.request.floor) || !search.request.accepts(&slot) {
            return None;
        }
        let (heat, bonus) = search.warmth_of(&slot);
        if search.skips(bonus) {
            search.skipped += 1;
            return None;
        }
        let view = HostView {
            id: &slot.host,
            name: &slot.name,
            alloc: &slot.alloc,
            os: &slot.os,
            thread_mode: slot.thread_mode,
            total: slot.total,
            free,
            tags: &slot.tags,
        };
        let amount = size(&view)?;
        let score = search
            .scored
            .map(|(_, w)| strategy::score(&free, &amount, &w))
            .unwrap_or(0.0);
        Some(Candidate {
            score: score - bonus,
            bonus,
            hot: heat.layer >= 1.0,
            slot,
            amount,
        })
    }

    /// Reserves on the best gathered candidate that still fits: ours first, then other
    /// instances' shares, then GPU hosts for non-GPU work, each tier by score (stable, so
    /// saturation keeps the order the hosts were found in, the look-ahead's fallback first).
    fn take_best(&self, search: Search<'_, '_>) -> Option<Earmark> {
        let Search {
            request,
            scored,
            mut ours,
            mut others,
            mut gpu_hosts,
            lookahead,
            ..
        } = search;
        ours.sort_by(|a, b| a.score.total_cmp(&b.score));
        if scored.is_some() {
            others.sort_by(|a, b| a.score.total_cmp(&b.score));
        }
        gpu_hosts.sort_by(|a, b| a.score.total_cmp(&b.score));
        let fallback = lookahead.and_then(|l| l.fallback);
        fallback
            .into_iter()
            .chain(ours)
            .chain(others)
            .chain(gpu_hosts)
            .find_map(|c| self.take(c.slot, c.amount, request.prefer))
    }

    /// Hosts that could take `request` if they were idle (their capacity fits the floor; tags,
    /// OS and thread mode match), fullest-free first, at most `limit`. Used only to choose a
    /// host to reserve for a wide frame, so it may walk up to `limit × 64` view entries.
    pub(crate) fn capable_hosts(&self, request: &Request<'_>, limit: usize) -> Vec<Capable> {
        let floor = request.floor;
        let mut seen: HashSet<Uuid> = HashSet::new();
        let mut out: Vec<Capable> = Vec::new();
        for tag in request.tags {
            let Some(view) = self.inner.existing_view(tag) else {
                continue;
            };
            // Copy the keys, then release the view lock before touching the host map.
            let keys: Vec<Key> = view
                .set
                .read()
                .iter()
                .rev()
                .take(limit.saturating_mul(64))
                .copied()
                .collect();
            for (_, _, salted) in keys {
                let id = Uuid::from_u128(salted.as_u128() ^ self.inner.salt);
                if !seen.insert(id) {
                    continue;
                }
                let Some(slot) = self.inner.hosts.get(&id).map(|e| Arc::clone(e.value())) else {
                    continue;
                };
                if !slot.total.fits(&floor) || !request.accepts(&slot) {
                    continue;
                }
                out.push(Capable {
                    id: slot.host.clone(),
                    name: slot.name.to_string(),
                    alloc: slot.alloc.clone(),
                    total: slot.total,
                    free: slot.free(),
                });
                if out.len() >= limit {
                    return out;
                }
            }
        }
        out
    }
}

/// A fitting host, the amount the caller would take on it, and its score (lower is better).
struct Candidate {
    /// Stranding score (see [`strategy::score`]; 0 under saturation) less the locality bonus.
    score: f64,
    /// The locality bonus (0 for a cold host or without locality).
    bonus: f64,
    /// The frame's layer was the last thing booked on the host (it most likely runs there).
    hot: bool,
    /// The host.
    slot: Arc<Slot>,
    /// What the caller's `size` would take on it.
    amount: Resources,
}

/// What [`Search::offer`] did with a candidate.
enum Offer {
    /// Saturation: reserve on it now (first fit).
    TakeNow(Candidate),
    /// Kept for later (scored, or set aside as a last resort).
    Kept,
    /// Kept, and the scored search now has all the candidates it wants.
    Full,
}

/// The state of one [`HostIndex::place`]: the request, the hosts already judged, and the
/// candidates gathered in three tiers of preference.
struct Search<'r, 'a> {
    /// What is asked.
    request: &'r Request<'a>,
    /// How hosts are ordered and chosen.
    strategy: &'r Strategy,
    /// The request's memory floor in the views' GB buckets.
    mem_floor: u32,
    /// `(max_candidates, weights)` of the scored strategy; `None` under saturation.
    scored: Option<(usize, Weights)>,
    /// Hosts already judged (a host with several of the request's tags is met again).
    seen: HashSet<Uuid>,
    /// Hosts of our share (scored only: saturation takes them at once).
    ours: Vec<Candidate>,
    /// Hosts of other instances' shares, used only when none of ours fits.
    others: Vec<Candidate>,
    /// GPU hosts for non-GPU work, used only when nothing else fits (GPU protection).
    gpu_hosts: Vec<Candidate>,
    /// Saturation with locality on: the look-ahead past the first fit for a warm host.
    lookahead: Option<Lookahead>,
    /// Hosts the look-ahead passed over without sizing them.
    skipped: usize,
}

/// Saturation's locality look-ahead: the best host of our share found so far (the first fit,
/// or a warmer one) and how many hosts were looked at since the first fit. A host whose
/// latest booking was of the frame's layer ends it at once (best fit meets it first when a
/// layer fills a host, so a cold fill pays nothing for the look-ahead).
struct Lookahead {
    /// Taken when the look-ahead ends (or the walk does) without a host warm for the layer.
    fallback: Option<Candidate>,
    /// View entries looked at since the first fallback.
    since: usize,
    /// How many to look at.
    limit: usize,
}

impl<'r, 'a> Search<'r, 'a> {
    /// An empty search for `request` under `strategy`; saturation looks ahead for warm hosts
    /// only when `look_ahead` (and the request's locality is on).
    fn new(request: &'r Request<'a>, strategy: &'r Strategy, look_ahead: bool) -> Self {
        let scored = match strategy {
            Strategy::Scored {
                max_candidates,
                weights,
            } => Some((*max_candidates, *weights)),
            Strategy::Saturation { .. } => None,
        };
        let lookahead = request
            .prefer
            .map(|p| p.locality)
            .filter(|l| look_ahead && scored.is_none() && l.is_on() && l.lookahead > 0)
            .map(|l| Lookahead {
                fallback: None,
                since: 0,
                limit: l.lookahead,
            });
        Search {
            request,
            strategy,
            mem_floor: (request.floor.mem_kb / GB) as u32,
            scored,
            seen: HashSet::new(),
            ours: Vec::new(),
            others: Vec::new(),
            gpu_hosts: Vec::new(),
            lookahead,
            skipped: 0,
        }
    }

    /// The host's warmth for the request and the bonus it earns (zero with locality off).
    fn warmth_of(&self, slot: &Slot) -> (Heat, f64) {
        match self.request.prefer.filter(|p| p.locality.is_on()) {
            Some(p) => {
                let heat = p.heat(&slot.warmth);
                (heat, p.bonus(heat))
            }
            None => (Heat::default(), 0.0),
        }
    }

    /// True when the look-ahead passes over a host of this bonus without sizing it: it
    /// already holds a fallback at least as warm.
    fn skips(&self, bonus: f64) -> bool {
        self.lookahead
            .as_ref()
            .and_then(|l| l.fallback.as_ref())
            .is_some_and(|f| bonus <= f.bonus)
    }

    /// Counts one more view entry for the look-ahead; when it has seen enough past its
    /// fallback, it ends (plain first fit from here) and hands the fallback back to take.
    fn lookahead_over(&mut self) -> Option<Candidate> {
        let l = self.lookahead.as_mut()?;
        // Counting starts at the first fit.
        l.fallback.as_ref()?;
        l.since += 1;
        if l.since <= l.limit {
            return None;
        }
        self.lookahead.take().and_then(|l| l.fallback)
    }

    /// True when the scored search has gathered `max_candidates` of our hosts.
    fn is_full(&self) -> bool {
        self.scored
            .map(|(max, _)| self.ours.len() >= max)
            .unwrap_or(false)
    }

    /// Sorts a candidate into its tier, or hands it back to be reserved at once.
    fn offer(&mut self, candidate: Candidate) -> Offer {
        if candidate.amount.gpus == 0 && candidate.slot.total.gpus > 0 {
            self.gpu_hosts.push(candidate);
            return Offer::Kept;
        }
        if let Some((n, k)) = self.request.share.filter(|(n, _)| *n > 1) {
            if (candidate.slot.id.as_u128() % u128::from(n)) as u32 != k {
                if self.others.len() < MAX_SCAN {
                    self.others.push(candidate);
                }
                return Offer::Kept;
            }
        }
        let Some((max, _)) = self.scored else {
            return match &mut self.lookahead {
                Some(l) if !candidate.hot => {
                    // Warmer than the fallback (colder hosts are skipped before sizing).
                    l.fallback = Some(candidate);
                    Offer::Kept
                }
                _ => Offer::TakeNow(candidate),
            };
        };
        self.ours.push(candidate);
        if self.ours.len() >= max {
            Offer::Full
        } else {
            Offer::Kept
        }
    }
}

/// The next keys at or past `cursor` in the strategy's order, restricted to hosts with at
/// least `min_cores` free and `mem_floor` GB, and the last key taken (the next cursor).
/// The view's read lock is held only for the copy.
///
/// Hosts below the memory floor are stepped over, not read: within one free-cores value the
/// keys are in memory order, so the walk seeks past that value's low-memory keys. Read and
/// dropped, they counted against [`MAX_SCAN`], and on a busy farm of thousands of hosts with
/// a core or two and little memory free a frame asking for memory gave up before it reached
/// the hosts that had it.
fn next_batch(
    view: &TagView,
    strategy: &Strategy,
    min_cores: u32,
    mem_floor: u32,
    cursor: Option<Key>,
) -> (Vec<Key>, Option<Key>) {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    let set = view.set.read();
    let mut out: Vec<Key> = Vec::with_capacity(BATCH);
    if strategy.cores_ascending() {
        let mut start = match cursor {
            Some(c) => Excluded(c),
            None => Included((min_cores, 0, Uuid::nil())),
        };
        'seek: loop {
            for k in set.range((start, Unbounded)) {
                if k.1 < mem_floor {
                    // The first key of this cores value with the memory asked for.
                    start = Included((k.0, mem_floor, Uuid::nil()));
                    continue 'seek;
                }
                out.push(*k);
                if out.len() >= BATCH {
                    break;
                }
            }
            break;
        }
    } else {
        let mut end = match cursor {
            Some(c) => Excluded(c),
            None => Unbounded,
        };
        'seek: loop {
            for k in set
                .range((Included((min_cores, 0, Uuid::nil())), end))
                .rev()
            {
                if k.1 < mem_floor {
                    // The rest of this cores value has less memory still: on to the next.
                    end = Excluded((k.0, 0, Uuid::nil()));
                    continue 'seek;
                }
                out.push(*k);
                if out.len() >= BATCH {
                    break;
                }
            }
            break;
        }
    }
    drop(set);
    let last = out.last().copied();
    // Cores order comes from the view; the memory axis reorders hosts with equal cores.
    let (cores_up, mem_up) = (strategy.cores_ascending(), strategy.memory_ascending());
    out.sort_by(|a, b| {
        let c = if cores_up {
            a.0.cmp(&b.0)
        } else {
            b.0.cmp(&a.0)
        };
        let m = if mem_up { a.1.cmp(&b.1) } else { b.1.cmp(&a.1) };
        c.then(m).then(a.2.cmp(&b.2))
    });
    (out, last)
}
