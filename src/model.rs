//! Vocabulary shared by every stage: resource amounts, thread modes and tag types, in
//! OpenCue's database units.
//!
//! Cores are centicores (100 = one core) and memory and GPU memory are KB, exactly as Cuebot
//! stores them, so values read from or written to PostgreSQL never need converting. Only the
//! RQD environment (`CUE_THREADS`, `CUE_MEMORY`) and log lines convert, at their edge.

use std::fmt;

/// Centicores in one core (`queue.core_multiplier` in OpenCue).
pub const CORE: u32 = 100;

/// An amount of each schedulable resource of a host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Resources {
    /// Cores in centicores.
    pub cores: u32,
    /// Memory in KB.
    pub mem_kb: u64,
    /// Whole GPU units.
    pub gpus: u32,
    /// GPU memory in KB.
    pub gpu_mem_kb: u64,
}

impl Resources {
    /// No resources at all.
    pub const ZERO: Resources = Resources {
        cores: 0,
        mem_kb: 0,
        gpus: 0,
        gpu_mem_kb: 0,
    };

    /// True when every dimension of `need` fits in `self`.
    pub fn fits(&self, need: &Resources) -> bool {
        self.cores >= need.cores
            && self.mem_kb >= need.mem_kb
            && self.gpus >= need.gpus
            && self.gpu_mem_kb >= need.gpu_mem_kb
    }

    /// `self - other`, or `None` when any dimension would go negative.
    pub(crate) fn checked_sub(&self, other: &Resources) -> Option<Resources> {
        Some(Resources {
            cores: self.cores.checked_sub(other.cores)?,
            mem_kb: self.mem_kb.checked_sub(other.mem_kb)?,
            gpus: self.gpus.checked_sub(other.gpus)?,
            gpu_mem_kb: self.gpu_mem_kb.checked_sub(other.gpu_mem_kb)?,
        })
    }

    /// `self - other` with every dimension clamped at zero.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cores: self.cores.saturating_sub(other.cores),
            mem_kb: self.mem_kb.saturating_sub(other.mem_kb),
            gpus: self.gpus.saturating_sub(other.gpus),
            gpu_mem_kb: self.gpu_mem_kb.saturating_sub(other.gpu_mem_kb),
        }
    }

    /// `self + other`, saturating at each type's maximum.
    pub(crate) fn saturating_add(&self, other: &Resources) -> Resources {
        Resources {
            cores: self.cores.saturating_add(other.cores),
            mem_kb: self.mem_kb.saturating_add(other.mem_kb),
            gpus: self.gpus.saturating_add(other.gpus),
            gpu_mem_kb: self.gpu_mem_kb.saturating_add(other.gpu_mem_kb),
        }
    }

    /// The smaller value of each dimension.
    pub fn min(&self, other: &Resources) -> Resources {
        Resources {
            cores: self.cores.min(other.cores),
            mem_kb: self.mem_kb.min(other.mem_kb),
            gpus: self.gpus.min(other.gpus),
            gpu_mem_kb: self.gpu_mem_kb.min(other.gpu_mem_kb),
        }
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.2} cores, {} MB, {} GPUs, {} MB GPU memory",
            f64::from(self.cores) / f64::from(CORE),
            self.mem_kb / 1024,
            self.gpus,
            self.gpu_mem_kb / 1024
        )
    }
}

/// An amount of the two resources caps count: centicores and whole GPUs, as the `int_cores` /
/// `int_gpus` columns of Cuebot's resource tables hold them. Signed: a counter being re-synced
/// or given back may briefly read below what it will settle at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CoresGpus {
    /// Centicores.
    pub cores: i64,
    /// GPUs.
    pub gpus: i64,
}

impl CoresGpus {
    /// Nothing.
    pub const ZERO: CoresGpus = CoresGpus { cores: 0, gpus: 0 };

    /// `cores` centicores and `gpus` GPUs.
    pub const fn new(cores: i64, gpus: i64) -> CoresGpus {
        CoresGpus { cores, gpus }
    }

    /// The cores and GPUs of a host-resource amount.
    pub fn of(r: &Resources) -> CoresGpus {
        CoresGpus::new(i64::from(r.cores), i64::from(r.gpus))
    }

    /// True when both are zero.
    pub fn is_zero(&self) -> bool {
        *self == CoresGpus::ZERO
    }

    /// `self - other`, each clamped at zero (a give-back never takes a counter negative).
    pub fn sub_floor(self, other: CoresGpus) -> CoresGpus {
        CoresGpus::new(
            (self.cores - other.cores).max(0),
            (self.gpus - other.gpus).max(0),
        )
    }
}

impl std::ops::Add for CoresGpus {
    type Output = CoresGpus;
    fn add(self, o: CoresGpus) -> CoresGpus {
        CoresGpus::new(self.cores + o.cores, self.gpus + o.gpus)
    }
}

impl std::ops::AddAssign for CoresGpus {
    fn add_assign(&mut self, o: CoresGpus) {
        *self = *self + o;
    }
}

impl std::ops::Sub for CoresGpus {
    type Output = CoresGpus;
    fn sub(self, o: CoresGpus) -> CoresGpus {
        CoresGpus::new(self.cores - o.cores, self.gpus - o.gpus)
    }
}

impl std::ops::SubAssign for CoresGpus {
    fn sub_assign(&mut self, o: CoresGpus) {
        *self = *self - o;
    }
}

/// `host.int_thread_mode`: how a host hands cores to threadable frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ThreadMode {
    /// 0: cores balanced against memory; all idle cores when memory would be stranded.
    #[default]
    Auto,
    /// 1: every idle core goes to the frame; only threadable layers may use the host.
    All,
    /// 2: at least two cores, otherwise as `Auto`.
    Variable,
}

impl ThreadMode {
    /// Decodes `host.int_thread_mode`; unknown values read as `Auto`, Cuebot's default.
    pub fn from_db(value: i32) -> ThreadMode {
        match value {
            1 => ThreadMode::All,
            2 => ThreadMode::Variable,
            _ => ThreadMode::Auto,
        }
    }

    /// The `host.int_thread_mode` value.
    pub fn to_db(self) -> i32 {
        match self {
            ThreadMode::Auto => 0,
            ThreadMode::All => 1,
            ThreadMode::Variable => 2,
        }
    }
}

/// `host_tag.str_tag_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TagType {
    /// Hand-placed tags; tried first when a layer's tags span several types.
    Manual,
    /// One host's own name.
    Hostname,
    /// Hardware class tags.
    Hardware,
    /// The allocation's tag.
    Alloc,
}

impl TagType {
    /// Decodes `host_tag.str_tag_type`. Matching is case-insensitive so Cuebot's schema
    /// default `'Hardware'` is recognised too (the old scheduler ignored it).
    pub fn from_db(value: &str) -> Option<TagType> {
        match value.to_ascii_uppercase().as_str() {
            "MANUAL" => Some(TagType::Manual),
            "HOSTNAME" => Some(TagType::Hostname),
            "HARDWARE" => Some(TagType::Hardware),
            "ALLOC" => Some(TagType::Alloc),
            _ => None,
        }
    }

    /// The label used in metrics and `/status`.
    pub fn label(self) -> &'static str {
        match self {
            TagType::Manual => "manual",
            TagType::Hostname => "hostname",
            TagType::Hardware => "hardware",
            TagType::Alloc => "alloc",
        }
    }
}

/// Splits a `|`-separated tag string (`layer.str_tags`), tolerating whitespace around and
/// inside names the way OpenCue's SQL does (`REPLACE(str_tags, ' ', '')`), dropping empties.
pub(crate) fn split_tags(tags: &str) -> impl Iterator<Item = String> + '_ {
    tags.split('|')
        .map(|t| t.chars().filter(|c| !c.is_whitespace()).collect::<String>())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_tags_tolerates_whitespace_and_empties() {
        let tags: Vec<String> = split_tags(" general | gpu||lin ux ").collect();
        assert_eq!(tags, vec!["general", "gpu", "linux"]);
        assert_eq!(split_tags("").count(), 0);
    }

    #[test]
    fn resources_arithmetic() {
        let a = Resources {
            cores: 800,
            mem_kb: 1000,
            gpus: 1,
            gpu_mem_kb: 10,
        };
        let b = Resources {
            cores: 100,
            mem_kb: 1000,
            gpus: 0,
            gpu_mem_kb: 0,
        };
        assert!(a.fits(&b));
        assert_eq!(a.checked_sub(&b).unwrap().cores, 700);
        assert_eq!(b.checked_sub(&a), None);
        assert_eq!(
            b.saturating_sub(&a),
            Resources {
                cores: 0,
                ..Resources::ZERO
            }
        );
    }

    #[test]
    fn cores_gpus_arithmetic() {
        let mut a = CoresGpus::new(300, 1);
        a += CoresGpus::new(100, 1);
        assert_eq!(a, CoresGpus::new(400, 2));
        assert_eq!(a - CoresGpus::new(500, 0), CoresGpus::new(-100, 2));
        assert_eq!(a.sub_floor(CoresGpus::new(500, 3)), CoresGpus::ZERO);
        assert!(CoresGpus::ZERO.is_zero());
    }

    #[test]
    fn thread_mode_round_trips() {
        for m in [ThreadMode::Auto, ThreadMode::All, ThreadMode::Variable] {
            assert_eq!(ThreadMode::from_db(m.to_db()), m);
        }
        assert_eq!(TagType::from_db("Hardware"), Some(TagType::Hardware));
        assert_eq!(TagType::from_db("bogus"), None);
    }
}
