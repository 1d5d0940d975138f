//! The host index: every eligible host with its free cores, memory, GPUs and GPU memory in
//! one atomic word, sharded in a `DashMap`, with an ordered view per tag for candidate search.
//!
//! **Earmarks.** Taking resources is a compare-and-swap that succeeds only when every
//! dimension fits, so two threads can never both win a host's last cores. An [`Earmark`]
//! (what a placement took in memory, until its batch commits) is an RAII value: dropped
//! without [`Earmark::commit`] it gives its resources back. ("Reservation" is kept for the
//! wide-frame host reservations of `backfill`; the sizing rules are in `sizing`.)
//! There is no global lock on this path: the CAS is per host, and moving a host in the tag
//! views takes that host's position lock and then each of its tags' view locks (always in
//! that order), briefly.
//!
//! **Search.** Each tag view is a `BTreeSet` ordered by (free cores, free memory in GB,
//! host), so a lookup starts at the request's floor and walks only hosts that might fit:
//! O(log n) plus the hosts it skips, bounded by [`MAX_SCAN`]. View positions are hints: the
//! CAS on the live atomics is the authority, so a stale position costs a skip, never a wrong
//! reservation. View locks are held only while copying a batch of keys, never across a map
//! lookup, a callback or a reservation.
//!
//! **Refresh.** The database is the truth; the index follows it. A refresh takes a ticket
//! ([`HostIndex::begin_refresh`]) *before* reading, and applies each host as
//! `free = database idle − live uncommitted reservations`, except for hosts where a booking
//! committed after the ticket (the read may predate that commit): those keep their current
//! value until the next refresh. Reservations add to `pending` before their CAS and leave it
//! after giving back, and commits stamp their sequence before leaving `pending`, so a host
//! never shows more free capacity than the database minus live reservations.

mod slot;
pub(crate) mod strategy;

use std::{
    collections::{BTreeSet, HashSet},
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
};

use dashmap::DashMap;
use parking_lot::RwLock;
use uuid::Uuid;

use slot::Slot;
pub use strategy::{Strategy, Weights};

use crate::model::{Resources, ThreadMode};

/// Most hosts a single search examines per tag before giving up.
pub const MAX_SCAN: usize = 4096;
/// View keys copied per read-lock of a tag view: short enough to keep writers waiting little.
const BATCH: usize = 64;
/// KB per GB: the views bucket free memory by whole GB.
const GB: u64 = 1024 * 1024;

/// A host as read from the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRecord {
    /// `host.pk_host`.
    pub id: Uuid,
    /// `host.str_name`.
    pub name: String,
    /// `host.pk_alloc`.
    pub alloc: Uuid,
    /// `host_stat.str_os`.
    pub os: String,
    /// `host.int_thread_mode`.
    pub thread_mode: ThreadMode,
    /// Its tags.
    pub tags: Vec<String>,
    /// Capacity.
    pub total: Resources,
    /// Idle in the database.
    pub idle: Resources,
}

/// A candidate as the placement callback sees it.
#[derive(Clone, Copy, Debug)]
pub struct HostView<'a> {
    /// `host.pk_host`.
    pub id: Uuid,
    /// `host.str_name`.
    pub name: &'a str,
    /// `host.pk_alloc`.
    pub alloc: Uuid,
    /// `alloc` as text (hyphenated, as `Uuid::to_string` writes it), rendered once per
    /// allocation: use it for string-keyed lookups instead of formatting `alloc` per host.
    pub alloc_key: &'a str,
    /// `host_stat.str_os`.
    pub os: &'a str,
    /// Thread mode.
    pub thread_mode: ThreadMode,
    /// Capacity.
    pub total: Resources,
    /// Free now.
    pub free: Resources,
}

/// A host able to take a request once idle (see [`HostIndex::capable_hosts`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Capable {
    /// `host.pk_host`.
    pub id: Uuid,
    /// `host.str_name`.
    pub name: String,
    /// `host.pk_alloc`.
    pub alloc: Uuid,
    /// Capacity.
    pub total: Resources,
    /// Free now (index view).
    pub free: Resources,
}

/// What a frame needs of a host, for the search.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// Tags to search (any of them), in order of preference.
    pub tags: &'a [String],
    /// The least any host could be asked for (the crate's `sizing::floor`).
    pub floor: Resources,
    /// Required OS; `None` accepts any.
    pub os: Option<&'a str>,
    /// Threadable layers only may use hosts in thread mode ALL.
    pub threadable: bool,
    /// `(n, k)`: with n instances sharing the hosts, prefer those whose id falls in share k;
    /// the others' hosts are used only when none of ours fits (fewer collisions between
    /// instances whose indexes cannot see each other's newest bookings).
    pub share: Option<(u32, u32)>,
}

/// A ticket taken before a refresh reads the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefreshTicket(u64);

/// Totals for metrics and `/status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    /// Hosts indexed.
    pub hosts: usize,
    /// Live uncommitted reservations.
    pub reservations: i64,
    /// Summed capacity (cores and GPUs may exceed 32 bits only on absurd farms; saturating).
    pub total: Resources,
    /// Summed free resources.
    pub free: Resources,
}

/// A view entry: (free cores, free memory in GB, host id XOR the salt).
type Key = (u32, u32, Uuid);

/// The hosts of one tag, ordered for the search.
#[derive(Default)]
struct TagView {
    /// Ordered by free cores, then memory, then salted id.
    set: RwLock<BTreeSet<Key>>,
}

/// What the index and its reservations share.
#[derive(Default)]
struct Inner {
    /// Every host by id: the authority for free resources.
    hosts: DashMap<Uuid, Arc<Slot>>,
    /// The search views by tag (the key doubles as the interned tag).
    views: DashMap<Arc<str>, Arc<TagView>>,
    /// Allocation ids as text, one copy per allocation (a farm has few; never pruned).
    alloc_keys: DashMap<Uuid, Arc<str>>,
    /// Sequence of committed reservations, for refresh tickets.
    commit_seq: AtomicU64,
    /// Live uncommitted reservations (metrics).
    live: AtomicI64,
    /// XORed into host ids in view keys: hosts with equal free resources are ordered
    /// differently in every process, so several instances packing the same farm prefer
    /// different hosts instead of colliding on the same rows.
    salt: u128,
}

/// The sharded concurrent host index.
#[derive(Default)]
pub struct HostIndex {
    /// Shared with every [`Earmark`], which gives back into it on drop.
    inner: Arc<Inner>,
}

/// The (cores, memory GB) part of a slot's view key, from its free resources now.
fn key_of(slot: &Slot) -> (u32, u32) {
    let free = slot.free();
    (
        free.cores,
        (free.mem_kb / GB).min(u64::from(u32::MAX)) as u32,
    )
}

/// True when a host reporting `host_os` (`host_stat.str_os`, a comma list on hosts that run
/// several, e.g. RQD's docker mode: `centos7,rocky9`) can run a job asking for `job_os`:
/// any entry matches, as in Cuebot's dispatcher.
pub(crate) fn os_matches(host_os: &str, job_os: &str) -> bool {
    host_os.split(',').any(|o| o.trim() == job_os)
}

impl Request<'_> {
    /// The host's OS and thread mode allow this request (capacity aside).
    fn accepts(&self, slot: &Slot) -> bool {
        (slot.thread_mode != ThreadMode::All || self.threadable)
            && self.os.is_none_or(|os| os_matches(&slot.os, os))
    }
}

impl Inner {
    /// The view of `tag`, if any host has it; the map guard is released before returning.
    fn existing_view(&self, tag: &str) -> Option<Arc<TagView>> {
        self.views.get(tag).map(|v| Arc::clone(v.value()))
    }

    /// The view of `tag`, created when the first host with that tag is listed.
    fn view(&self, tag: &Arc<str>) -> Arc<TagView> {
        if let Some(v) = self.views.get(tag) {
            return Arc::clone(v.value());
        }
        Arc::clone(self.views.entry(Arc::clone(tag)).or_default().value())
    }

    /// The shared copy of a tag name, so that 100,000 hosts with one tag hold one string.
    fn intern(&self, tag: &str) -> Arc<str> {
        match self.views.get(tag) {
            Some(e) => Arc::clone(e.key()),
            None => Arc::from(tag),
        }
    }

    /// The shared text of an allocation id (see [`HostView::alloc_key`]).
    fn alloc_key(&self, alloc: Uuid) -> Arc<str> {
        if let Some(k) = self.alloc_keys.get(&alloc) {
            return Arc::clone(k.value());
        }
        let key = self
            .alloc_keys
            .entry(alloc)
            .or_insert_with(|| Arc::from(alloc.to_string()));
        Arc::clone(key.value())
    }

    /// Moves a slot to the view position of its current free values.
    fn reposition(&self, slot: &Slot) {
        let mut position = slot.position.lock();
        if slot.removed.load(Ordering::Acquire) {
            return;
        }
        let now = key_of(slot);
        if *position == Some(now) {
            return;
        }
        for tag in slot.tags.iter() {
            let view = self.view(tag);
            let mut set = view.set.write();
            let key = Uuid::from_u128(slot.id.as_u128() ^ self.salt);
            if let Some((c, m)) = *position {
                set.remove(&(c, m, key));
            }
            set.insert((now.0, now.1, key));
        }
        *position = Some(now);
    }

    /// Takes a slot out of every view for good (it left the index or was replaced).
    fn unlist(&self, slot: &Slot) {
        let mut position = slot.position.lock();
        slot.removed.store(true, Ordering::Release);
        if let Some((c, m)) = position.take() {
            let key = Uuid::from_u128(slot.id.as_u128() ^ self.salt);
            for tag in slot.tags.iter() {
                self.view(tag).set.write().remove(&(c, m, key));
            }
        }
    }
}

/// Resources earmarked on one host for a placement until its batch commits. Dropped without
/// [`Earmark::commit`], it gives them back.
#[must_use = "dropping an earmark releases it"]
pub struct Earmark {
    /// The index it is counted in.
    inner: Arc<Inner>,
    /// The host; kept alive even if the host leaves the index meanwhile.
    slot: Arc<Slot>,
    /// What was taken.
    amount: Resources,
    /// Committed: dropping it gives nothing back.
    done: bool,
}

impl Earmark {
    /// The host.
    pub(crate) fn host_id(&self) -> Uuid {
        self.slot.id
    }

    /// The host's name.
    pub(crate) fn host_name(&self) -> &str {
        &self.slot.name
    }

    /// The host's allocation.
    pub(crate) fn alloc(&self) -> Uuid {
        self.slot.alloc
    }

    /// What is reserved.
    pub(crate) fn amount(&self) -> Resources {
        self.amount
    }

    /// The booking committed in the database: the resources stay taken (the next refresh
    /// reads them as booked).
    pub(crate) fn commit(mut self) {
        let seq = self.inner.commit_seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.slot.commit(&self.amount, seq);
        self.inner.live.fetch_sub(1, Ordering::AcqRel);
        self.done = true;
    }
}

impl Drop for Earmark {
    fn drop(&mut self) {
        if !self.done {
            self.slot.give_back(&self.amount);
            self.inner.live.fetch_sub(1, Ordering::AcqRel);
            self.inner.reposition(&self.slot);
        }
    }
}

impl HostIndex {
    /// An empty index with a random tie-break order.
    pub fn new() -> HostIndex {
        HostIndex::with_salt(Uuid::new_v4().as_u128())
    }

    /// An empty index with a given tie-break order (0 = by host id; tests).
    pub(crate) fn with_salt(salt: u128) -> HostIndex {
        HostIndex {
            inner: Arc::new(Inner {
                salt,
                ..Inner::default()
            }),
        }
    }

    /// Hosts indexed.
    pub fn len(&self) -> usize {
        self.inner.hosts.len()
    }

    /// True when no host is indexed.
    pub fn is_empty(&self) -> bool {
        self.inner.hosts.is_empty()
    }

    /// The free resources of a host.
    pub fn free(&self, id: &Uuid) -> Option<Resources> {
        self.inner.hosts.get(id).map(|s| s.value().free())
    }

    /// Takes a ticket before reading hosts from the database.
    pub fn begin_refresh(&self) -> RefreshTicket {
        RefreshTicket(self.inner.commit_seq.load(Ordering::SeqCst))
    }

    /// Applies a full read of the eligible hosts: upserts every record, removes every host
    /// not in `records` (locked, down, re-tagged, stale), keeps live reservations.
    pub fn apply_refresh(&self, ticket: RefreshTicket, records: Vec<HostRecord>) {
        let mut seen: HashSet<Uuid> = HashSet::with_capacity(records.len());
        for r in records {
            seen.insert(r.id);
            self.upsert(ticket, r);
        }
        let gone: Vec<Uuid> = self
            .inner
            .hosts
            .iter()
            .filter(|e| !seen.contains(e.key()))
            .map(|e| *e.key())
            .collect();
        for id in gone {
            self.remove(&id);
        }
    }

    /// Upserts one host read under `ticket`.
    pub(crate) fn upsert(&self, ticket: RefreshTicket, r: HostRecord) {
        let existing = self.inner.hosts.get(&r.id).map(|e| Arc::clone(e.value()));
        if let Some(slot) = &existing {
            if slot.same_shape(&r.name, r.alloc, &r.os, r.thread_mode, &r.tags, &r.total) {
                slot.refresh(&r.idle, ticket.0);
                self.inner.reposition(slot);
                return;
            }
        }
        // New host, or its description changed: a fresh slot. Live reservations of an old
        // slot stay subtracted from the new one until the next refresh (conservative).
        let pending = existing.as_ref().map(|s| s.pending()).unwrap_or_default();
        let tags: Box<[Arc<str>]> = r.tags.iter().map(|t| self.inner.intern(t)).collect();
        let slot = Arc::new(Slot::new(
            r.id,
            &r.name,
            r.alloc,
            self.inner.alloc_key(r.alloc),
            &r.os,
            r.thread_mode,
            tags,
            r.total,
            r.idle.saturating_sub(&pending),
        ));
        if let Some(old) = existing {
            self.inner.unlist(&old);
        }
        self.inner.hosts.insert(r.id, Arc::clone(&slot));
        self.inner.reposition(&slot);
    }

    /// Applies a fresh database read of one host's idle resources (after a booking found it
    /// fuller than the index thought), under the same protocol as a full refresh.
    pub(crate) fn refresh_host(&self, ticket: RefreshTicket, id: &Uuid, idle: Resources) {
        if let Some(slot) = self.inner.hosts.get(id).map(|e| Arc::clone(e.value())) {
            slot.refresh(&idle, ticket.0);
            self.inner.reposition(&slot);
        }
    }

    /// Removes a host (no longer eligible). Its outstanding reservations still drop cleanly.
    pub(crate) fn remove(&self, id: &Uuid) {
        if let Some((_, slot)) = self.inner.hosts.remove(id) {
            self.inner.unlist(&slot);
        }
    }

    /// Gives back capacity after a committed booking was undone in the database.
    pub(crate) fn credit(&self, id: &Uuid, amount: Resources) {
        if let Some(slot) = self.inner.hosts.get(id).map(|e| Arc::clone(e.value())) {
            slot.credit(&amount);
            self.inner.reposition(&slot);
        }
    }

    /// Reserves `amount` on one host, if it fits.
    pub fn reserve_on(&self, id: &Uuid, amount: Resources) -> Option<Earmark> {
        let slot = self.inner.hosts.get(id).map(|e| Arc::clone(e.value()))?;
        self.take(slot, amount)
    }

    /// The reserve step: one CAS on the slot's free word, then the view moves to the new
    /// free values. `None` when another thread took the room first.
    fn take(&self, slot: Arc<Slot>, amount: Resources) -> Option<Earmark> {
        if !slot.try_take(&amount) {
            return None;
        }
        self.inner.live.fetch_add(1, Ordering::AcqRel);
        self.inner.reposition(&slot);
        Some(Earmark {
            inner: Arc::clone(&self.inner),
            slot,
            amount,
            done: false,
        })
    }

    /// Finds a host for `request` under `strategy` and reserves on it what `size` says (the
    /// callback decides the exact amount for a candidate, or vetoes it with `None`).
    ///
    /// Saturation reserves the first fitting host of our share as it is found; scored
    /// gathers up to `max_candidates` of them first. Either way the hosts set aside (other
    /// instances' shares, GPU hosts for non-GPU work) are tried last, best first.
    pub fn place(
        &self,
        request: &Request<'_>,
        strategy: &Strategy,
        mut size: impl FnMut(&HostView<'_>) -> Option<Resources>,
    ) -> Option<Earmark> {
        let mut search = Search::new(request, strategy);
        for tag in request.tags {
            let Some(view) = self.inner.existing_view(tag) else {
                continue;
            };
            if let Some(reservation) = self.scan_tag(&view, &mut search, &mut size) {
                return Some(reservation);
            }
            if search.is_full() {
                break;
            }
        }
        self.take_best(search)
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
            // Keys dropped by the memory filter count as examined too.
            examined += BATCH - batch.len();
            for (_, _, salted) in batch {
                examined += 1;
                let Some(candidate) = self.candidate(search, salted, size) else {
                    continue;
                };
                match search.offer(candidate) {
                    Offer::Kept => {}
                    Offer::Full => return None,
                    Offer::TakeNow(c) => {
                        // Lost the CAS race: keep walking, the next host may fit.
                        if let Some(r) = self.take(c.slot, c.amount) {
                            return Some(r);
                        }
                    }
                }
            }
        }
        None
    }

    /// The host behind a view key as a candidate: not seen before in this search, still
    /// indexed, fitting the floor, OS and thread mode, and not vetoed by `size`. The view
    /// handed to `size` borrows the slot's name and OS: nothing is copied per host.
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
        let view = HostView {
            id,
            name: &slot.name,
            alloc: slot.alloc,
            alloc_key: &slot.alloc_key,
            os: &slot.os,
            thread_mode: slot.thread_mode,
            total: slot.total,
            free,
        };
        let amount = size(&view)?;
        let score = search
            .scored
            .map(|(_, w)| strategy::score(&free, &amount, &w))
            .unwrap_or(0.0);
        Some(Candidate {
            score,
            slot,
            amount,
        })
    }

    /// Reserves on the best gathered candidate that still fits: ours first, then other
    /// instances' shares, then GPU hosts for non-GPU work, each tier by score (stable, so
    /// saturation keeps the order the hosts were found in).
    fn take_best(&self, search: Search<'_, '_>) -> Option<Earmark> {
        let Search {
            scored,
            mut ours,
            mut others,
            mut gpu_hosts,
            ..
        } = search;
        ours.sort_by(|a, b| a.score.total_cmp(&b.score));
        if scored.is_some() {
            others.sort_by(|a, b| a.score.total_cmp(&b.score));
        }
        gpu_hosts.sort_by(|a, b| a.score.total_cmp(&b.score));
        ours.into_iter()
            .chain(others)
            .chain(gpu_hosts)
            .find_map(|c| self.take(c.slot, c.amount))
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
                    id,
                    name: slot.name.to_string(),
                    alloc: slot.alloc,
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

    /// Capacity, free resources and reservations of the whole index.
    pub(crate) fn totals(&self) -> Totals {
        let mut t = Totals {
            reservations: self.inner.live.load(Ordering::Acquire),
            ..Totals::default()
        };
        for e in self.inner.hosts.iter() {
            t.hosts += 1;
            t.total = t.total.saturating_add(&e.value().total);
            t.free = t.free.saturating_add(&e.value().free());
        }
        t
    }

    /// Bytes held per host, estimated from the structures' sizes (for the benchmark).
    pub fn approx_bytes_per_host(&self) -> usize {
        let hosts = self.inner.hosts.len().max(1);
        let mut bytes = 0usize;
        for e in self.inner.hosts.iter() {
            let s = e.value();
            bytes +=
                std::mem::size_of::<Slot>() + s.name.len() + s.os.len() + s.tags.len() * 16 + 16;
            // DashMap entry + Arc header; each tag-view entry (key + B-tree overhead ≈ 2×).
            bytes += std::mem::size_of::<(Uuid, Arc<Slot>)>()
                + 16
                + s.tags.len() * 2 * std::mem::size_of::<Key>();
        }
        bytes / hosts
    }
}

/// A fitting host, the amount the caller would take on it, and its score (lower is better;
/// always 0 under saturation).
struct Candidate {
    /// Stranding score (see [`strategy::score`]).
    score: f64,
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
}

impl<'r, 'a> Search<'r, 'a> {
    /// An empty search for `request` under `strategy`.
    fn new(request: &'r Request<'a>, strategy: &'r Strategy) -> Self {
        let scored = match strategy {
            Strategy::Scored {
                max_candidates,
                weights,
            } => Some((*max_candidates, *weights)),
            Strategy::Saturation { .. } => None,
        };
        Search {
            request,
            strategy,
            mem_floor: (request.floor.mem_kb / GB) as u32,
            scored,
            seen: HashSet::new(),
            ours: Vec::new(),
            others: Vec::new(),
            gpu_hosts: Vec::new(),
        }
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
            return Offer::TakeNow(candidate);
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
/// least `min_cores` free and `mem_floor` GB, and the last key scanned (the next cursor).
/// The view's read lock is held only for the copy.
fn next_batch(
    view: &TagView,
    strategy: &Strategy,
    min_cores: u32,
    mem_floor: u32,
    cursor: Option<Key>,
) -> (Vec<Key>, Option<Key>) {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    let set = view.set.read();
    let scanned: Vec<Key> = if strategy.cores_ascending() {
        let start = match cursor {
            Some(c) => Excluded(c),
            None => Included((min_cores, 0, Uuid::nil())),
        };
        set.range((start, Unbounded)).take(BATCH).copied().collect()
    } else {
        let end = match cursor {
            Some(c) => Excluded(c),
            None => Unbounded,
        };
        set.range((Included((min_cores, 0, Uuid::nil())), end))
            .rev()
            .take(BATCH)
            .copied()
            .collect()
    };
    drop(set);
    let last = scanned.last().copied();
    let mut out: Vec<Key> = scanned.into_iter().filter(|k| k.1 >= mem_floor).collect();
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

#[cfg(test)]
mod tests;
