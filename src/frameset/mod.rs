//! OpenCue frame ranges: parsing, lookup and chunking, compatible with Cuebot's
//! `FrameRange`/`FrameSet` (Java) and the OpenCue Rust scheduler's `frame_set.rs`.
//!
//! A spec is a comma-separated list of sections; each section is trimmed and is one of:
//!
//! | form      | meaning                                        | example → frames               |
//! |-----------|------------------------------------------------|--------------------------------|
//! | `N`       | one frame (may be negative)                    | `-3` → -3                      |
//! | `a-b`     | every frame, counting down when `b < a`        | `3-1` → 3,2,1                  |
//! | `a-bxN`   | every Nth frame; `N < 0` counts down           | `10-1x-2` → 10,8,6,4,2         |
//! | `a-byN`   | the frames of `a-b` that `a-bxN` leaves out    | `1-10y3` → 2,3,5,6,8,9         |
//! | `a-b:N`   | interleaved: step N, N/2, … 1, first seen wins | `1-10:5` → 1,6,3,5,7,9,2,4,8,10|
//!
//! Trailing empty sections are ignored (`1-5,`), as Cuebot's `String.split` does.
//! Validation follows Cuebot: step 0 is an error; a step above 1 with `b < a` is an error; a
//! negative step with `b >= a` is an error. A step of exactly 1 with `b < a` is *not* an error
//! and yields no frames (`10-1x1` is empty), as in Cuebot. Frames repeated across sections are
//! kept, in order, as Cuebot does; [`FrameSet::index_of`] finds the first occurrence.
//!
//! Limits, so that no input costs more than its size plus a bounded amount: a set holds at most
//! [`MAX_FRAMES`] frames in at most [`MAX_SECTIONS`] sections, and an interleaved section spans
//! at most [`MAX_INTERLEAVED_FRAMES`] frames; past a limit, parsing fails. Plain, stepped and
//! inverse-stepped sections are stored as arithmetic whatever their span (`1-100000000y1` is
//! empty and parses in O(1), `1-15000000y3` is 10 million frames in a few bytes), so each
//! costs O(1) to parse, to look a frame up in and to index. Interleaved sections (`a-b:N`,
//! `|N| > 1`) are the one form stored frame by frame, as two tables of offsets (order and
//! position), so parsing them is O(span) and lookups are O(1). A lookup by frame
//! ([`FrameSet::index_of`], [`FrameSet::chunk`]) walks the sections; one by position
//! ([`FrameSet::get`], [`FrameSet::chunk_at`]) is O(log sections). Every failure is a
//! [`FrameSetError`] naming the offending section, its position in the list and its byte
//! offset; nothing here panics.
//!
//! Chunks ([`FrameSet::chunk`]) reproduce Cuebot's `getChunk` + `framesToFrameRanges`
//! (fileseq-style run compression) byte for byte, except where Cuebot's output would describe
//! different frames than the chunk holds; then a correct compression is used instead.

mod chunk;
mod error;
mod section;

use std::fmt::{self, Write as _};

#[cfg(test)]
use chunk::cuebot_frames_to_ranges;
pub use chunk::{Chunk, frame_number_from_name, frames_to_spec};
use error::clip;
pub use error::{FrameSetError, Location, SectionError};
use section::{Fill, Interleave, Section, arith_len, parse_section};

/// Largest number of frames a [`FrameSet`] may contain; larger sets are rejected when parsed.
pub const MAX_FRAMES: usize = 10_000_000;

/// Largest span (frames from start to end) of one interleaved section with a step other than
/// ±1. Interleaves are stored frame by frame (8 bytes a frame), so this bounds their memory
/// (8 MB) and parse time; no render layer comes near it.
pub const MAX_INTERLEAVED_FRAMES: usize = 1_000_000;

/// Most sections a [`FrameSet`] may have once sections that continue each other are merged
/// (`1,2,3` is one). Looking a frame up walks the sections, so this bounds it; Cuebot's
/// `layer.str_range` (4000 characters) holds at most 2000.
pub const MAX_SECTIONS: usize = 10_000;

/// Spec printed for a set with no frames (e.g. parsed from `1-5y1`); it parses back to no frames.
pub const EMPTY_SPEC: &str = "0-0y1";

/// An ordered list of frame numbers parsed from an OpenCue frame spec (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct FrameSet {
    sections: Vec<Section>,
    /// Index of each section's first frame.
    offsets: Vec<usize>,
    len: usize,
}

impl FrameSet {
    /// Parses a spec such as `1-100x2, 200, 300-310:4`; errors name the section and its offset.
    pub fn parse(spec: &str) -> Result<FrameSet, FrameSetError> {
        Self::parse_limited(spec, MAX_FRAMES, MAX_SECTIONS)
    }

    fn parse_limited(
        spec: &str,
        limit: usize,
        max_sections: usize,
    ) -> Result<FrameSet, FrameSetError> {
        let (mut set, mut base) = (FrameSet::default(), 0);
        // Like Java's `String.split`, trailing empty sections are dropped: Cuebot accepts `1-5,`.
        let spec = spec.trim_end_matches(|c: char| c == ',' || c.is_whitespace());
        for (index, raw) in spec.split(',').enumerate() {
            let text = raw.trim();
            let offset = base + (raw.len() - raw.trim_start().len());
            base += raw.len() + 1;
            let section = |kind| {
                let loc = Location {
                    index,
                    offset,
                    section: clip(text),
                };
                FrameSetError::Section { loc, kind }
            };
            let shift = |kind| match kind {
                SectionError::Syntax(what, at) => SectionError::Syntax(what, offset + at),
                SectionError::Overflow(n, at) => SectionError::Overflow(n, offset + at),
                kind => kind,
            };
            let parsed = parse_section(text).map_err(|e| section(shift(e)))?;
            set.push_parsed(parsed, limit).map_err(section)?;
            if set.sections.len() > max_sections {
                return Err(section(SectionError::TooManySections(max_sections)));
            }
        }
        Ok(set)
    }

    /// Validates the step as Cuebot does, checks the limits, then stores the section. The
    /// limits are checked on what the section would cost before anything is built.
    fn push_parsed(
        &mut self,
        parsed: (i32, i32, i32, u8),
        limit: usize,
    ) -> Result<(), SectionError> {
        let (start, end, step, op) = parsed;
        let (dir, step) = (step.signum() as i64, step as i64);
        if matches!(op, b'x' | b'y' | b':') {
            if step == 0 {
                return Err(SectionError::ZeroStep);
            } else if step > 1 && end < start {
                return Err(SectionError::PositiveStepDescending);
            } else if step < 0 && end >= start {
                return Err(SectionError::NegativeStepAscending);
            }
        }
        let (full, stepped) = (arith_len(start, end, dir), arith_len(start, end, step));
        let adds = match op {
            b'y' => full - stepped,
            b':' => full,
            _ => stepped,
        };
        if adds > (limit - self.len) as u64 {
            return Err(SectionError::TooManyFrames(limit));
        }
        let n = step.unsigned_abs();
        match op {
            b'y' => self.push_fill(start, end, dir, n, full),
            b':' if n > 1 && full > MAX_INTERLEAVED_FRAMES as u64 => {
                Err(SectionError::InterleaveTooLong(MAX_INTERLEAVED_FRAMES))
            }
            b':' if n > 1 => {
                let spec = format!("{start}-{end}:{step}");
                let il = Interleave::new(spec, start, dir, full as usize, n);
                self.push_interleave(il);
                Ok(())
            }
            // `a-b:1` and `a-b:-1` are plain ranges.
            b':' => {
                self.push(Section::Arith(start, dir, full as usize));
                Ok(())
            }
            _ => {
                self.push(Section::Arith(start, step, stepped as usize));
                Ok(())
            }
        }
    }

    /// Stores `a-byN` (`n = |N|`) in O(1), as a progression where it is one.
    fn push_fill(
        &mut self,
        start: i32,
        end: i32,
        dir: i64,
        n: u64,
        full: u64,
    ) -> Result<(), SectionError> {
        let fill = Fill {
            start,
            end,
            dir,
            n,
            full,
        };
        let (first, len) = ((start as i64 + dir) as i32, fill.len());
        if len == 0 {
            return Ok(());
        } else if n == 2 {
            self.push(Section::Arith(first, 2 * dir, len));
        } else if full <= n + 1 {
            // Offsets 1.. up to the first multiple of n: one run.
            self.push(Section::Arith(first, dir, len));
        } else {
            self.push(Section::Fill(fill));
        }
        Ok(())
    }

    /// Stores an interleave, as a progression where its order happens to be one (`1-2:5`).
    fn push_interleave(&mut self, il: Interleave) {
        let o = &il.order;
        let d = o.get(1).map_or(1, |b| *b as i64 - o[0] as i64);
        if o.windows(2).all(|w| w[1] as i64 - w[0] as i64 == d) {
            let first = o.first().map_or(il.start, |&f| il.at(f));
            self.push(Section::Arith(first, d * il.dir, o.len()));
        } else {
            self.push(Section::Interleave(il));
        }
    }

    /// Appends a section, extending the previous progression when this one continues it.
    fn push(&mut self, sec: Section) {
        let n = sec.len();
        if n == 0 {
            return;
        }
        if let (Some(Section::Arith(a, s, m)), Section::Arith(b, t, k)) =
            (self.sections.last_mut(), &sec)
        {
            let next = if *m == 1 { *b as i64 - *a as i64 } else { *s };
            if next != 0 && *b as i64 == *a as i64 + *m as i64 * next && (*k == 1 || *t == next) {
                (*s, *m, self.len) = (next, *m + k, self.len + n);
                return;
            }
        }
        self.offsets.push(self.len);
        self.len += n;
        self.sections.push(sec);
    }

    /// Number of frames, counting repeats.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the set holds no frames (e.g. `1-5y1`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The frame at position `idx`, or `None` past the end. O(log sections).
    pub fn get(&self, idx: usize) -> Option<i32> {
        self.iter_from(idx).next()
    }

    /// Position of the first occurrence of `frame`, like Cuebot's `FrameSet.index`.
    /// O(1) per section, so O([`MAX_SECTIONS`]) at most.
    pub fn index_of(&self, frame: i32) -> Option<usize> {
        let mut found = self.sections.iter().zip(&self.offsets);
        found.find_map(|(s, o)| s.index_of(frame).map(|i| o + i))
    }

    /// Iterates over the frames in order.
    pub fn iter(&self) -> impl Iterator<Item = i32> + '_ {
        self.iter_from(0)
    }

    /// Iterates from position `idx` without walking the sections' frames before it.
    fn iter_from(&self, idx: usize) -> impl Iterator<Item = i32> + '_ {
        let sec = self
            .offsets
            .partition_point(|&o| o <= idx)
            .saturating_sub(1);
        let skip = idx.saturating_sub(self.offsets.get(sec).copied().unwrap_or(0));
        self.sections[sec..]
            .iter()
            .enumerate()
            .flat_map(move |(k, s)| {
                let from = if k == 0 { skip } else { 0 };
                (from..s.len()).map(move |i| s.get(i))
            })
    }

    /// A compact spec that parses back to the same frames, e.g. `1,2,3,7,9` → `1-3,7-9x2`.
    /// An empty set prints [`EMPTY_SPEC`].
    pub fn to_spec(&self) -> String {
        self.to_string()
    }

    /// The chunk that starts at `frame` (its first occurrence) and holds up to `chunk_size`
    /// frames, as Cuebot's dispatcher builds it for RQD. O(sections + chunk size).
    pub fn chunk(&self, frame: i32, chunk_size: u32) -> Result<Chunk, FrameSetError> {
        let idx = self
            .index_of(frame)
            .ok_or(FrameSetError::FrameNotInSet(frame))?;
        self.chunk_at(idx, chunk_size)
    }

    /// The chunk that starts at position `index`; Cuebot's `getChunk(startFrameIndex, chunkSize)`.
    pub fn chunk_at(&self, index: usize, chunk_size: u32) -> Result<Chunk, FrameSetError> {
        if index >= self.len {
            return Err(FrameSetError::IndexOutOfRange(index, self.len));
        } else if chunk_size == 0 {
            return Err(FrameSetError::ZeroChunkSize);
        }
        let frames: Vec<i32> = self.iter_from(index).take(chunk_size as usize).collect();
        let (start, end) = (frames[0], frames[frames.len() - 1]);
        Ok(Chunk {
            spec: frames_to_spec(&frames),
            frames,
            start,
            end,
        })
    }
}

impl PartialEq for FrameSet {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl Eq for FrameSet {}

impl fmt::Display for FrameSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.sections.is_empty() {
            return f.write_str(EMPTY_SPEC);
        }
        for (i, s) in self.sections.iter().enumerate() {
            if i > 0 {
                f.write_char(',')?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
