//! Locality: among the hosts that fit a frame, prefer one that runs (or just ran) the frame's
//! layer, then one that runs its job — its textures and caches are warm there.
//!
//! Each host keeps a small record of what was booked on it ([`Warmth`]): the last few layers
//! and jobs, each with the host's booking count at its last frame. A layer's *age* on a host
//! is the number of frames booked there since its last one, so warmth decays with other work
//! landing on the host, not with wall-clock time (Maestro's "foreign frames"), and is gone
//! after `window` of them: `warmth = 1 − age / window`. A host running the layer has age 0
//! right after each of its bookings; a host it vacated cools as other frames replace it.
//!
//! The record is a hint written when a booking commits and read lock-free by the search; it
//! never makes a host fit that does not. The preference comes after every filter (tags, OS,
//! thread mode, sizing, allocation, reservations, subscription) and after the tiers (our
//! share first, GPU hosts last for non-GPU work): see [`super::search`].

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Layers remembered per host: the most recently booked ones.
const LAYER_SLOTS: usize = 8;
/// Jobs remembered per host.
const JOB_SLOTS: usize = 4;
/// Attempts at replacing an entry another thread is replacing too (the record is a hint).
const RETRIES: usize = 4;

/// `[scheduler.locality]`: how strongly placement prefers warm hosts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Locality {
    /// Preference for a host that runs or just ran the frame's layer. Under `scored` it is
    /// subtracted from the stranding score (times the host's warmth, 0…1); under
    /// `saturation` any value above 0 turns the preference on. 0 (with `job_weight` 0)
    /// turns locality off.
    pub weight: f64,
    /// Likewise for a host that runs or just ran another layer of the frame's job.
    pub job_weight: f64,
    /// Frames booked on a host after which it is no longer warm for a layer it ran.
    pub window: u32,
    /// `saturation` only: hosts looked at past the first fit for a warm one. The hosts
    /// skipped on the way cost no sizing; 0 turns the preference off under saturation.
    pub lookahead: usize,
}

impl Default for Locality {
    fn default() -> Self {
        Locality {
            weight: 1.0,
            job_weight: 0.5,
            window: 64,
            lookahead: 256,
        }
    }
}

impl Locality {
    /// No preference (the record is still kept).
    pub const OFF: Locality = Locality {
        weight: 0.0,
        job_weight: 0.0,
        window: 64,
        lookahead: 0,
    };

    /// Checks the values; the message says what is wrong.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if [self.weight, self.job_weight]
            .iter()
            .any(|w| !w.is_finite() || *w < 0.0 || *w > 1e6)
        {
            return Err("weight and job_weight must be between 0 and 1000000".into());
        }
        if self.window == 0 || self.window > 1 << 20 {
            return Err("window must be between 1 and 1048576".into());
        }
        if self.lookahead > super::MAX_SCAN {
            return Err(format!("lookahead must be at most {}", super::MAX_SCAN));
        }
        Ok(())
    }

    /// True when warm hosts are preferred at all.
    pub(crate) fn is_on(&self) -> bool {
        self.weight > 0.0 || self.job_weight > 0.0
    }
}

/// The frame's layer and job, as the fingerprints the hosts' records keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Affinity {
    layer: u32,
    job: u32,
}

impl Affinity {
    /// The affinity of a frame of layer `layer` of job `job` (their ids).
    pub fn of(layer: &str, job: &str) -> Affinity {
        Affinity {
            layer: fingerprint(layer),
            job: fingerprint(job),
        }
    }
}

/// What a request prefers among the hosts that fit: warm hosts for its affinity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prefer {
    /// The frame's layer and job (also recorded on the host when the booking commits).
    pub affinity: Affinity,
    /// How strongly.
    pub locality: Locality,
}

impl Prefer {
    /// The host's warmth for this request: (layer, job), each 0…1.
    pub(super) fn heat(&self, warmth: &Warmth) -> Heat {
        let now = warmth.booked.load(Ordering::Acquire);
        let window = f64::from(self.locality.window);
        let share = |age: Option<u32>| age.map_or(0.0, |a| (1.0 - f64::from(a) / window).max(0.0));
        Heat {
            layer: share(age(&warmth.layers, self.affinity.layer, now)),
            job: share(age(&warmth.jobs, self.affinity.job, now)),
        }
    }

    /// The preference for a host of `heat`, in the scored strategy's units.
    pub(super) fn bonus(&self, heat: Heat) -> f64 {
        self.locality.weight * heat.layer + self.locality.job_weight * heat.job
    }
}

/// A host's warmth for one request: for the layer and for the job, each 0 (cold) … 1.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Heat {
    /// 1 − frames booked on the host since the layer's last / window.
    pub(super) layer: f64,
    /// Likewise for the job.
    pub(super) job: f64,
}

/// How warm the host a frame was booked on was (the label of the locality metric).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Warm {
    /// It runs or just ran the frame's layer.
    Layer,
    /// It runs or just ran another layer of the frame's job.
    Job,
    /// Neither (or the frame had no affinity).
    Cold,
}

impl Warm {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Warm::Layer => "layer",
            Warm::Job => "job",
            Warm::Cold => "cold",
        }
    }
}

/// What was booked on one host lately: per entry, a fingerprint (high 32 bits) and the
/// host's booking count at its last frame (low 32 bits); 0 is an empty entry.
#[derive(Default)]
pub(super) struct Warmth {
    /// Frames booked on the host (wrapping).
    booked: AtomicU32,
    /// The most recently booked layers.
    layers: [AtomicU64; LAYER_SLOTS],
    /// The most recently booked jobs.
    jobs: [AtomicU64; JOB_SLOTS],
}

impl Warmth {
    /// A frame of `affinity` was booked here: its layer and job are now the freshest.
    pub(super) fn record(&self, affinity: &Affinity) {
        let seq = self.booked.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
        put(&self.layers, affinity.layer, seq);
        put(&self.jobs, affinity.job, seq);
    }

    /// How warm this host is for `prefer` before a frame of it is recorded.
    pub(super) fn warm(&self, prefer: &Prefer) -> Warm {
        let heat = prefer.heat(self);
        if heat.layer > 0.0 {
            Warm::Layer
        } else if heat.job > 0.0 {
            Warm::Job
        } else {
            Warm::Cold
        }
    }
}

/// FNV-1a of `s`, never 0 (0 marks an empty entry).
fn fingerprint(s: &str) -> u32 {
    let h = s.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    h.max(1)
}

fn entry(fp: u32, seq: u32) -> u64 {
    (u64::from(fp) << 32) | u64::from(seq)
}

/// Frames booked since `fp`'s last one (its freshest entry), if it is remembered.
fn age(table: &[AtomicU64], fp: u32, now: u32) -> Option<u32> {
    table
        .iter()
        .map(|cell| cell.load(Ordering::Acquire))
        .filter(|v| (v >> 32) as u32 == fp)
        .map(|v| now.wrapping_sub(v as u32))
        .min()
}

/// Stamps `fp` with booking count `seq`: its entry if it has one, else the stalest entry.
/// Racing writers may both insert one fingerprint (the freshest wins at lookup) or lose an
/// entry to each other: a hint, not a ledger.
fn put(table: &[AtomicU64], fp: u32, seq: u32) {
    let new = entry(fp, seq);
    for _ in 0..RETRIES {
        let mut victim: Option<(usize, u64, u32)> = None;
        for (i, cell) in table.iter().enumerate() {
            let v = cell.load(Ordering::Acquire);
            if (v >> 32) as u32 == fp {
                // Keep the fresher stamp if another thread got here with a later one.
                let _ = cell.fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                    let fresher =
                        (cur >> 32) as u32 != fp || (seq.wrapping_sub(cur as u32) as i32) > 0;
                    fresher.then_some(new)
                });
                return;
            }
            let staleness = if v == 0 {
                u32::MAX
            } else {
                seq.wrapping_sub(v as u32)
            };
            if victim.is_none_or(|(_, _, s)| staleness > s) {
                victim = Some((i, v, staleness));
            }
        }
        let Some((i, old, _)) = victim else {
            return;
        };
        if table[i]
            .compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    //! Unit tests of the per-host record.

    use super::*;

    fn prefer(layer: &str, job: &str) -> Prefer {
        Prefer {
            affinity: Affinity::of(layer, job),
            locality: Locality {
                window: 4,
                ..Locality::default()
            },
        }
    }

    #[test]
    fn warmth_decays_with_other_frames_booked_on_the_host() {
        let w = Warmth::default();
        let p = prefer("l1", "j1");
        assert_eq!(w.warm(&p), Warm::Cold);
        w.record(&p.affinity);
        assert_eq!(p.heat(&w).layer, 1.0);
        // Another layer of the same job: the layer cools, the job stays hot.
        w.record(&Affinity::of("l2", "j1"));
        let h = p.heat(&w);
        assert_eq!((h.layer, h.job), (0.75, 1.0));
        for n in 0..4 {
            w.record(&Affinity::of(&format!("x{n}"), "j2"));
        }
        assert_eq!(w.warm(&p), Warm::Cold);
        assert_eq!(w.warm(&prefer("x3", "j9")), Warm::Layer);
        assert_eq!(w.warm(&prefer("l9", "j2")), Warm::Job);
    }

    #[test]
    fn the_stalest_layer_makes_room() {
        let w = Warmth::default();
        for n in 0..LAYER_SLOTS + 1 {
            w.record(&Affinity::of(&format!("l{n}"), "j"));
        }
        let p = |n: usize| Prefer {
            affinity: Affinity::of(&format!("l{n}"), "j"),
            locality: Locality::default(),
        };
        assert_eq!(p(0).heat(&w).layer, 0.0);
        assert!(p(1).heat(&w).layer > 0.0);
        assert_eq!(p(LAYER_SLOTS).heat(&w).layer, 1.0);
    }

    #[test]
    fn validation_names_the_bad_value() {
        assert!(Locality::default().validate().is_ok());
        assert!(Locality::OFF.validate().is_ok());
        for bad in [
            Locality {
                weight: -1.0,
                ..Locality::default()
            },
            Locality {
                job_weight: f64::NAN,
                ..Locality::default()
            },
            Locality {
                window: 0,
                ..Locality::default()
            },
            Locality {
                lookahead: usize::MAX,
                ..Locality::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
