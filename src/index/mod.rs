//! The host index: every eligible host with its free cores, memory, GPUs and GPU memory in
//! one atomic word, sharded in a `DashMap`, with an ordered view per tag for candidate search.
//!
//! **Earmarks.** Taking resources is a compare-and-swap that succeeds only when every
//! dimension fits, so two threads can never both win a host's last cores. An [`Earmark`]
//! (what a placement took in memory, until its batch commits) is an RAII value: dropped
//! without `Earmark::commit` it gives its resources back. ("Reservation" is kept for the
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
//!
//! **Locality.** Each slot also remembers the layers and jobs booked on it lately
//! (`locality`): committing an earmark records the frame's, and the search prefers warm
//! hosts among those that fit, within their tier, never over a filter.
//!
//! **Capacity generation.** The index is the one writer of a counter that moves whenever a
//! host gains room (a refresh read more idle, a host joined, an undone booking was credited
//! back); others read it through a [`CapacityView`] — the cluster feed wakes the clusters
//! that slept saturated once it moves past the generation their pass started under.

mod locality;
mod search;
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

pub use locality::{Affinity, Locality, Prefer, Warm};
use slot::Slot;
pub use strategy::{Strategy, Weights};

use crate::{
    ids::{AllocId, HostId},
    model::{Resources, ThreadMode},
};

/// Most hosts a single search examines per tag before giving up.
pub const MAX_SCAN: usize = 4096;
/// View keys copied per read-lock of a tag view: short enough to keep writers waiting little.
const BATCH: usize = 64;
/// KB per GB: the views bucket free memory by whole GB.
const GB: u64 = 1024 * 1024;

/// A host as read from the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRecord {
    /// `host.pk_host`: a UUID (Cuebot's keys are); a host whose key is not is not indexed.
    pub id: HostId,
    /// `host.str_name`.
    pub name: String,
    /// `host.pk_alloc`.
    pub alloc: AllocId,
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
    pub id: &'a HostId,
    /// `host.str_name`.
    pub name: &'a str,
    /// `host.pk_alloc` (one copy per allocation: keying maps by it costs no formatting).
    pub alloc: &'a AllocId,
    /// `host_stat.str_os`.
    pub os: &'a str,
    /// Thread mode.
    pub thread_mode: ThreadMode,
    /// Capacity.
    pub total: Resources,
    /// Free now.
    pub free: Resources,
    /// The host's tags.
    pub tags: &'a [Arc<str>],
}

/// A host able to take a request once idle (see [`HostIndex::capable_hosts`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Capable {
    /// `host.pk_host`.
    pub id: HostId,
    /// `host.str_name`.
    pub name: String,
    /// `host.pk_alloc`.
    pub alloc: AllocId,
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
    /// Locality: warm hosts preferred among those that fit, and the layer and job recorded
    /// on the host when the booking commits. `None`: no preference, nothing recorded.
    pub prefer: Option<Prefer>,
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
    /// Allocation ids, one copy per allocation (a farm has few; never pruned).
    allocs: dashmap::DashSet<AllocId>,
    /// Sequence of committed reservations, for refresh tickets.
    commit_seq: AtomicU64,
    /// Live uncommitted reservations (metrics).
    live: AtomicI64,
    /// Bumped whenever a host's free capacity grows (a refresh read more idle, a booking
    /// was undone, a host joined): the index is the only writer, readers hold a
    /// [`CapacityView`].
    capacity_gen: Arc<AtomicU64>,
    /// XORed into host ids in view keys: hosts with equal free resources are ordered
    /// differently in every process, so several instances packing the same farm prefer
    /// different hosts instead of colliding on the same rows.
    salt: u128,
}

/// A read-only view of the index's capacity generation: the cluster feed wakes clusters that
/// slept saturated once it moves past the generation their pass started under.
#[derive(Clone, Debug)]
pub struct CapacityView(Arc<AtomicU64>);

impl CapacityView {
    /// The generation now; it only grows.
    pub fn generation(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
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
        self.allows(slot.thread_mode, &slot.os)
    }

    /// A host of `thread_mode` running `os` may take this request.
    fn allows(&self, thread_mode: ThreadMode, os: &str) -> bool {
        (thread_mode != ThreadMode::All || self.threadable)
            && self.os.is_none_or(|job_os| os_matches(os, job_os))
    }

    /// True when this request's search could offer `host`: the host has one of its tags,
    /// its OS and thread mode allow it, and its free room covers the floor. For a host
    /// another request's search found.
    pub(crate) fn admits(&self, host: &HostView<'_>) -> bool {
        host.free.fits(&self.floor)
            && self.allows(host.thread_mode, host.os)
            && host
                .tags
                .iter()
                .any(|t| self.tags.iter().any(|r| r.as_str() == &**t))
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

    /// The shared copy of an allocation id, so every host of it holds the same text.
    fn intern_alloc(&self, alloc: &AllocId) -> AllocId {
        if let Some(k) = self.allocs.get(alloc) {
            return k.key().clone();
        }
        self.allocs.insert(alloc.clone());
        alloc.clone()
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
/// `Earmark::commit`, it gives them back.
#[must_use = "dropping an earmark releases it"]
pub struct Earmark {
    /// The index it is counted in.
    inner: Arc<Inner>,
    /// The host; kept alive even if the host leaves the index meanwhile.
    slot: Arc<Slot>,
    /// What was taken.
    amount: Resources,
    /// The request's locality: recorded on the host at commit.
    prefer: Option<Prefer>,
    /// Committed: dropping it gives nothing back.
    done: bool,
}

impl Earmark {
    /// The host.
    pub(crate) fn host_id(&self) -> &HostId {
        &self.slot.host
    }

    /// The host's name.
    pub(crate) fn host_name(&self) -> &str {
        &self.slot.name
    }

    /// The host's allocation.
    pub(crate) fn alloc(&self) -> &AllocId {
        &self.slot.alloc
    }

    /// What is reserved.
    pub(crate) fn amount(&self) -> Resources {
        self.amount
    }

    /// The booking committed in the database: the resources stay taken (the next refresh
    /// reads them as booked) and the frame's layer and job warm the host. Returns how warm
    /// the host was for them before.
    pub(crate) fn commit(mut self) -> Warm {
        let seq = self.inner.commit_seq.fetch_add(1, Ordering::SeqCst) + 1;
        self.slot.commit(&self.amount, seq);
        self.inner.live.fetch_sub(1, Ordering::AcqRel);
        self.done = true;
        let Some(prefer) = self.prefer else {
            return Warm::Cold;
        };
        let warm = self.slot.warmth.warm(&prefer);
        self.slot.warmth.record(&prefer.affinity);
        warm
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

    /// The read-only view of the capacity generation, for whoever waits for room.
    pub fn capacity(&self) -> CapacityView {
        CapacityView(Arc::clone(&self.inner.capacity_gen))
    }

    /// Records that free capacity grew.
    fn capacity_grew(&self) {
        self.inner.capacity_gen.fetch_add(1, Ordering::AcqRel);
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
    pub fn free(&self, id: &HostId) -> Option<Resources> {
        self.slot(id).map(|s| s.free())
    }

    /// The slot of a host, cloned out of the map (no shard guard held by the caller). Host
    /// keys are UUIDs: parsing one reads 36 bytes and allocates nothing.
    fn slot(&self, id: &HostId) -> Option<Arc<Slot>> {
        let key = Uuid::parse_str(id).ok()?;
        self.inner.hosts.get(&key).map(|e| Arc::clone(e.value()))
    }

    /// Takes a ticket before reading hosts from the database.
    pub fn begin_refresh(&self) -> RefreshTicket {
        RefreshTicket(self.inner.commit_seq.load(Ordering::SeqCst))
    }

    /// Applies a full read of the eligible hosts: upserts every record, removes every host
    /// not in `records` (locked, down, re-tagged, stale), keeps live reservations.
    pub fn apply_refresh(&self, ticket: RefreshTicket, records: Vec<HostRecord>) {
        let mut seen: HashSet<Uuid> = HashSet::with_capacity(records.len());
        let mut grew = false;
        for r in records {
            if let Ok(key) = Uuid::parse_str(&r.id) {
                seen.insert(key);
                grew |= self.upsert(ticket, key, r);
            }
        }
        if grew {
            self.capacity_grew();
        }
        let gone: Vec<Uuid> = self
            .inner
            .hosts
            .iter()
            .filter(|e| !seen.contains(e.key()))
            .map(|e| *e.key())
            .collect();
        for key in gone {
            self.remove_key(&key);
        }
    }

    /// Applies a read of the hosts that changed since the last read: upserts those still
    /// eligible, removes those that are not; leaves every other host as it is.
    pub(crate) fn apply_changes(&self, ticket: RefreshTicket, changes: Vec<(HostRecord, bool)>) {
        let mut grew = false;
        for (r, eligible) in changes {
            let Ok(key) = Uuid::parse_str(&r.id) else {
                continue;
            };
            if eligible {
                grew |= self.upsert(ticket, key, r);
            } else {
                self.remove_key(&key);
            }
        }
        if grew {
            self.capacity_grew();
        }
    }

    /// Upserts one host read under `ticket`; `key` is its id parsed. True when the host is
    /// new or has more free room than before.
    fn upsert(&self, ticket: RefreshTicket, key: Uuid, r: HostRecord) -> bool {
        let existing = self.inner.hosts.get(&key).map(|e| Arc::clone(e.value()));
        if let Some(slot) = &existing {
            if slot.same_shape(&r.name, &r.alloc, &r.os, r.thread_mode, &r.tags, &r.total) {
                let before = slot.free();
                slot.refresh(&r.idle, ticket.0);
                self.inner.reposition(slot);
                // Grew when some dimension is now above what it was.
                return !before.fits(&slot.free());
            }
        }
        // New host, or its description changed: a fresh slot. Live reservations of an old
        // slot stay subtracted from the new one until the next refresh (conservative).
        let pending = existing.as_ref().map(|s| s.pending()).unwrap_or_default();
        let tags: Box<[Arc<str>]> = r.tags.iter().map(|t| self.inner.intern(t)).collect();
        let slot = Arc::new(Slot::new(
            key,
            r.id,
            &r.name,
            self.inner.intern_alloc(&r.alloc),
            &r.os,
            r.thread_mode,
            tags,
            r.total,
            r.idle.saturating_sub(&pending),
        ));
        if let Some(old) = existing {
            self.inner.unlist(&old);
        }
        self.inner.hosts.insert(key, Arc::clone(&slot));
        self.inner.reposition(&slot);
        true
    }

    /// Applies a fresh database read of one host's idle resources (after a booking found it
    /// fuller than the index thought), under the same protocol as a full refresh.
    pub(crate) fn refresh_host(&self, ticket: RefreshTicket, id: &HostId, idle: Resources) {
        if let Some(slot) = self.slot(id) {
            slot.refresh(&idle, ticket.0);
            self.inner.reposition(&slot);
        }
    }

    /// Removes a host (no longer eligible). Its outstanding reservations still drop cleanly.
    fn remove_key(&self, key: &Uuid) {
        if let Some((_, slot)) = self.inner.hosts.remove(key) {
            self.inner.unlist(&slot);
        }
    }

    /// Gives back capacity after a committed booking was undone in the database.
    pub(crate) fn credit(&self, id: &HostId, amount: Resources) {
        if let Some(slot) = self.slot(id) {
            slot.credit(&amount);
            self.inner.reposition(&slot);
            self.capacity_grew();
        }
    }

    /// Reserves `amount` on one host, if it fits.
    pub fn reserve_on(&self, id: &HostId, amount: Resources) -> Option<Earmark> {
        let slot = self.slot(id)?;
        self.take(slot, amount, None)
    }

    /// The reserve step: one CAS on the slot's free word, then the view moves to the new
    /// free values. `None` when another thread took the room first.
    fn take(&self, slot: Arc<Slot>, amount: Resources, prefer: Option<Prefer>) -> Option<Earmark> {
        if !slot.try_take(&amount) {
            return None;
        }
        self.inner.live.fetch_add(1, Ordering::AcqRel);
        self.inner.reposition(&slot);
        Some(Earmark {
            inner: Arc::clone(&self.inner),
            slot,
            amount,
            prefer,
            done: false,
        })
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

#[cfg(test)]
mod tests;
