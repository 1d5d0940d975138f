//! One host's slot: its static description and its free resources in one 128-bit atomic, so
//! a reservation is a single compare-and-swap over every dimension at once.
//!
//! Packing (bits): centicores 0–31, GPUs 32–47, memory KB 48–87, GPU memory KB 88–127.
//! Memory and GPU memory are therefore limited to 2^40 KB (1 PiB) and GPUs to 65,535 per host;
//! larger database values are clamped when a host is loaded.
//!
//! Alongside `free`, `pending` holds the sum of live, uncommitted reservations, and
//! `last_commit` the index sequence number of the last committed one: the refresh protocol in
//! [`super`] uses both to never show more free capacity than the database minus live
//! reservations.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use parking_lot::Mutex;
use portable_atomic::AtomicU128;
use uuid::Uuid;

use super::locality::Warmth;
use crate::ids::{AllocId, HostId};

use crate::model::{Resources, ThreadMode};

/// The largest memory (and GPU memory) value a 40-bit field holds, in KB.
const MEM_MAX: u64 = (1 << 40) - 1;

/// Packs resources into one word, clamping each dimension to its field.
pub(super) fn pack(r: &Resources) -> u128 {
    (r.cores as u128)
        | ((r.gpus.min(0xFFFF) as u128) << 32)
        | ((r.mem_kb.min(MEM_MAX) as u128) << 48)
        | ((r.gpu_mem_kb.min(MEM_MAX) as u128) << 88)
}

/// The inverse of [`pack`].
pub(super) fn unpack(w: u128) -> Resources {
    Resources {
        cores: (w & 0xFFFF_FFFF) as u32,
        gpus: ((w >> 32) & 0xFFFF) as u32,
        mem_kb: ((w >> 48) & MEM_MAX as u128) as u64,
        gpu_mem_kb: ((w >> 88) & MEM_MAX as u128) as u64,
    }
}

/// Clamps a database value into what the packing can hold.
pub(super) fn clamp(r: &Resources) -> Resources {
    unpack(pack(r))
}

/// A host in the index.
pub(super) struct Slot {
    /// `host.pk_host` as a number: the key of the host map and, salted, of the tag views.
    pub(super) id: Uuid,
    /// `host.pk_host` as the database spells it, handed out with every candidate.
    pub(super) host: HostId,
    /// `host.str_name`.
    pub(super) name: Box<str>,
    /// `host.pk_alloc`, one copy shared by every host of the allocation (interned by the
    /// index): a placement callback keys the caps ledger by it without formatting anything.
    pub(super) alloc: AllocId,
    /// `host_stat.str_os`.
    pub(super) os: Box<str>,
    /// `host.int_thread_mode`.
    pub(super) thread_mode: ThreadMode,
    /// Tags, interned.
    pub(super) tags: Box<[Arc<str>]>,
    /// Capacity (clamped to the packing).
    pub(super) total: Resources,
    /// Free resources, packed: the word every reservation CASes.
    free: AtomicU128,
    /// Sum of live uncommitted reservations, packed (see the module doc).
    pending: AtomicU128,
    /// Commit sequence of the last committed reservation, against refresh tickets.
    last_commit: AtomicU64,
    /// The (cores, memory bucket) under which the tag views currently list this slot.
    pub(super) position: Mutex<Option<(u32, u32)>>,
    /// Set (under `position`) when the slot leaves the index; it is never listed again.
    pub(super) removed: AtomicBool,
    /// What was booked here lately, for locality (a hint; see [`super::locality`]).
    pub(super) warmth: Warmth,
}

impl Slot {
    /// A slot with `idle` free and nothing pending.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        id: Uuid,
        host: HostId,
        name: &str,
        alloc: AllocId,
        os: &str,
        thread_mode: ThreadMode,
        tags: Box<[Arc<str>]>,
        total: Resources,
        idle: Resources,
    ) -> Slot {
        let total = clamp(&total);
        Slot {
            id,
            host,
            name: name.into(),
            alloc,
            os: os.into(),
            thread_mode,
            tags,
            total,
            free: AtomicU128::new(pack(&clamp(&idle).min(&total))),
            pending: AtomicU128::new(0),
            last_commit: AtomicU64::new(0),
            position: Mutex::new(None),
            removed: AtomicBool::new(false),
            warmth: Warmth::default(),
        }
    }

    /// Free resources now.
    pub(super) fn free(&self) -> Resources {
        unpack(self.free.load(Ordering::Acquire))
    }

    /// Live uncommitted reservations.
    pub(super) fn pending(&self) -> Resources {
        unpack(self.pending.load(Ordering::Acquire))
    }

    /// Takes `amount` if every dimension fits; pending grows first so a concurrent refresh
    /// subtracts it even before the free CAS lands (conservative).
    pub(super) fn try_take(&self, amount: &Resources) -> bool {
        add(&self.pending, amount);
        let taken = self
            .free
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                unpack(w).checked_sub(amount).map(|r| pack(&r))
            })
            .is_ok();
        if !taken {
            sub(&self.pending, amount);
        }
        taken
    }

    /// Gives an uncommitted reservation back: free first, pending second, so a refresh in
    /// between under-counts (safe) rather than over-counts.
    pub(super) fn give_back(&self, amount: &Resources) {
        self.credit(amount);
        sub(&self.pending, amount);
    }

    /// Adds capacity back after a committed booking was undone in the database, never past
    /// the host's capacity (a refresh may already have counted it free).
    pub(super) fn credit(&self, amount: &Resources) {
        let total = self.total;
        let _ = self
            .free
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some(pack(&unpack(w).saturating_add(amount).min(&total)))
            });
    }

    /// A reservation committed in the database under commit sequence `seq`: the sequence is
    /// stamped before pending shrinks, so a refresh that reads pending without it also sees
    /// the stamp and keeps its hands off this slot.
    pub(super) fn commit(&self, amount: &Resources, seq: u64) {
        self.last_commit.fetch_max(seq, Ordering::SeqCst);
        sub(&self.pending, amount);
    }

    /// Applies a database read taken under refresh `ticket`: free = idle − pending, unless a
    /// booking committed after the ticket (the read may predate it), in which case the slot
    /// keeps its current value until the next refresh. Returns whether it applied.
    pub(super) fn refresh(&self, idle: &Resources, ticket: u64) -> bool {
        let idle = clamp(idle).min(&self.total);
        self.free
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |_| {
                let pending = unpack(self.pending.load(Ordering::SeqCst));
                if self.last_commit.load(Ordering::SeqCst) > ticket {
                    return None;
                }
                Some(pack(&idle.saturating_sub(&pending)))
            })
            .is_ok()
    }

    /// True when the description (not the free values) differs from `other`.
    pub(super) fn same_shape(
        &self,
        name: &str,
        alloc: &AllocId,
        os: &str,
        mode: ThreadMode,
        tags: &[String],
        total: &Resources,
    ) -> bool {
        &*self.name == name
            && self.alloc == *alloc
            && &*self.os == os
            && self.thread_mode == mode
            && self.total == clamp(total)
            && self.tags.len() == tags.len()
            && self.tags.iter().zip(tags).all(|(a, b)| &**a == b.as_str())
    }
}

/// Adds `amount` to a packed cell (saturating; SeqCst like the refresh that reads it).
fn add(cell: &AtomicU128, amount: &Resources) {
    let _ = cell.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
        Some(pack(&unpack(w).saturating_add(amount)))
    });
}

/// Subtracts `amount` from a packed cell (saturating at zero).
fn sub(cell: &AtomicU128, amount: &Resources) {
    let _ = cell.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |w| {
        Some(pack(&unpack(w).saturating_sub(amount)))
    });
}

#[cfg(test)]
mod tests {
    //! Unit tests of the packing.

    use super::*;

    #[test]
    fn packing_round_trips_and_clamps() {
        let r = Resources {
            cores: 12_800,
            mem_kb: 512 * 1024 * 1024,
            gpus: 8,
            gpu_mem_kb: 80 * 1024 * 1024,
        };
        assert_eq!(unpack(pack(&r)), r);
        let huge = Resources {
            cores: u32::MAX,
            mem_kb: u64::MAX,
            gpus: u32::MAX,
            gpu_mem_kb: u64::MAX,
        };
        let c = clamp(&huge);
        assert_eq!(
            (c.cores, c.gpus, c.mem_kb, c.gpu_mem_kb),
            (u32::MAX, 0xFFFF, MEM_MAX, MEM_MAX)
        );
    }
}
