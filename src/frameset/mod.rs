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

use std::fmt::{self, Write as _};

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

/// Where a problem is in a spec: which comma-separated section, and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Zero-based position of the section in the comma-separated list.
    pub index: usize,
    /// Byte offset of the (trimmed) section in the whole spec.
    pub offset: usize,
    /// The trimmed section text, cut to 64 bytes (then ending in `…`).
    pub section: String,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Location {
            index,
            offset,
            section,
        } = self;
        write!(f, "section {index} `{section}` (byte {offset})")
    }
}

/// Why a section of a spec was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SectionError {
    /// Not a frame range form: what was expected, and the byte offset (in the whole spec).
    #[error("unrecognized frame range syntax: {0} at byte {1}")]
    Syntax(&'static str, usize),
    /// A number (its text, cut to 64 bytes, and byte offset) does not fit in an `i32`.
    #[error("number `{0}` at byte {1} does not fit in a 32-bit frame number")]
    Overflow(String, usize),
    /// `a-bx0`, `a-by0` or `a-b:0`.
    #[error("step cannot be zero")]
    ZeroStep,
    /// A step above 1 with an end frame below the start frame.
    #[error("end frame may not be less than start frame when using a positive step")]
    PositiveStepDescending,
    /// A negative step with an end frame at or above the start frame.
    #[error("end frame may not be greater than start frame when using a negative step")]
    NegativeStepAscending,
    /// This section takes the set above the given frame limit ([`MAX_FRAMES`]).
    #[error("the frame set would exceed {0} frames")]
    TooManyFrames(usize),
    /// An interleaved section spans more frames than the limit ([`MAX_INTERLEAVED_FRAMES`]).
    #[error("an interleaved range may span at most {0} frames")]
    InterleaveTooLong(usize),
    /// This section takes the set above the section limit ([`MAX_SECTIONS`]).
    #[error("the frame set would have more than {0} sections")]
    TooManySections(usize),
}

/// Everything that can go wrong parsing a frame spec or cutting a chunk from it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameSetError {
    /// A section of the spec is invalid.
    #[error("{kind} in {loc}")]
    Section {
        /// Which section.
        loc: Location,
        /// What is wrong with it.
        kind: SectionError,
    },
    /// The chunk's first frame is not in the set.
    #[error("frame {0} is not in the frame set")]
    FrameNotInSet(i32),
    /// A chunk was asked for at an index (first value) past the end of the set (length).
    #[error("frame index {0} is not in range 0..{1}")]
    IndexOutOfRange(usize, usize),
    /// A chunk size of 0 was asked for.
    #[error("chunk size must be at least 1")]
    ZeroChunkSize,
}

fn clip(s: &str) -> String {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    if end < s.len() {
        format!("{}…", &s[..end])
    } else {
        s.to_string()
    }
}

/// A run of frames: `Arith(start, step, len)` is `start, start+step, …` (`step` is never 0);
/// `Fill` is an `a-byN` that is not a progression, `Interleave` an `a-b:N`.
#[derive(Debug, Clone)]
enum Section {
    Arith(i32, i64, usize),
    Fill(Fill),
    Interleave(Interleave),
}

/// `a-byN` as complement arithmetic: the frames `start + dir·o` for the offsets `o` in
/// `0..full` that are not multiples of `n` (at least 3: smaller steps are progressions). Each
/// block of `n` offsets keeps `n - 1`, so position and offset convert in O(1).
#[derive(Debug, Clone)]
struct Fill {
    start: i32,
    end: i32,
    dir: i64,
    n: u64,
    full: u64,
}

impl Fill {
    fn len(&self) -> usize {
        (self.full - self.full.div_ceil(self.n)) as usize
    }

    fn get(&self, i: usize) -> i32 {
        let (q, r) = (i as u64 / (self.n - 1), i as u64 % (self.n - 1));
        (self.start as i64 + self.dir * (q * self.n + r + 1) as i64) as i32
    }

    fn index_of(&self, frame: i32) -> Option<usize> {
        let o = (frame as i64 - self.start as i64) * self.dir;
        if o < 0 || o as u64 >= self.full || o as u64 % self.n == 0 {
            return None;
        }
        let (q, r) = (o as u64 / self.n, o as u64 % self.n);
        Some((q * (self.n - 1) + r - 1) as usize)
    }
}

/// `a-b:N` with `|N| > 1`: every offset of `0..span` from `start` (direction `dir`) once, in
/// interleaved order. `order` maps position to offset and `position` offset to position, so
/// both lookups are O(1); their size is bounded by [`MAX_INTERLEAVED_FRAMES`].
#[derive(Debug, Clone)]
struct Interleave {
    spec: String,
    start: i32,
    dir: i64,
    order: Vec<u32>,
    position: Vec<u32>,
}

impl Interleave {
    /// Cuebot's `getInterleavedRange`: steps `|step|`, `|step|/2`, … 1, first seen wins.
    fn new(spec: String, start: i32, dir: i64, span: usize, step: u64) -> Interleave {
        let (mut order, mut position) = (Vec::with_capacity(span), vec![u32::MAX; span]);
        let mut s = step;
        while s > 0 {
            for o in (0..span).step_by(s as usize) {
                if position[o] == u32::MAX {
                    position[o] = order.len() as u32;
                    order.push(o as u32);
                }
            }
            s /= 2;
        }
        Interleave {
            spec,
            start,
            dir,
            order,
            position,
        }
    }

    fn at(&self, offset: u32) -> i32 {
        (self.start as i64 + self.dir * offset as i64) as i32
    }

    fn index_of(&self, frame: i32) -> Option<usize> {
        let o = (frame as i64 - self.start as i64) * self.dir;
        let o = usize::try_from(o).ok()?;
        self.position.get(o).map(|&p| p as usize)
    }
}

impl Section {
    fn len(&self) -> usize {
        match self {
            Section::Arith(_, _, len) => *len,
            Section::Fill(fill) => fill.len(),
            Section::Interleave(il) => il.order.len(),
        }
    }

    fn get(&self, i: usize) -> i32 {
        match self {
            Section::Arith(start, step, _) => (*start as i64 + i as i64 * step) as i32,
            Section::Fill(fill) => fill.get(i),
            Section::Interleave(il) => il.at(il.order[i]),
        }
    }

    fn index_of(&self, frame: i32) -> Option<usize> {
        match self {
            Section::Arith(start, step, len) => {
                let d = frame as i64 - *start as i64;
                let q = d / step;
                (d % step == 0 && q >= 0 && (q as u64) < *len as u64).then_some(q as usize)
            }
            Section::Fill(fill) => fill.index_of(frame),
            Section::Interleave(il) => il.index_of(frame),
        }
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Section::Fill(ref fill) => {
                let step = fill.dir * fill.n as i64;
                write!(f, "{}-{}y{step}", fill.start, fill.end)
            }
            Section::Interleave(ref il) => f.write_str(&il.spec),
            Section::Arith(start, _, 1) => write!(f, "{start}"),
            Section::Arith(start, step, len) => match (step.abs(), len, self.get(len - 1)) {
                (1, _, last) => write!(f, "{start}-{last}"),
                (_, 2, last) => write!(f, "{start},{last}"),
                (_, _, last) => write!(f, "{start}-{last}x{step}"),
            },
        }
    }
}

/// Number of frames in `start, start+step, …` that stay within `end` (0 if it points away).
fn arith_len(start: i32, end: i32, step: i64) -> u64 {
    let span = end as i64 - start as i64;
    match span.signum() * step.signum() {
        _ if span == 0 => 1,
        1 => (span / step) as u64 + 1,
        _ => 0,
    }
}

/// Reads `-?[0-9]+` at byte `p` of `text`; returns the value and the byte after it.
fn number(text: &str, mut p: usize, what: &'static str) -> Result<(i32, usize), SectionError> {
    let (b, from) = (text.as_bytes(), p);
    p += usize::from(b.get(p) == Some(&b'-'));
    let digits = p;
    while p < b.len() && b[p].is_ascii_digit() {
        p += 1;
    }
    if p == digits {
        return Err(SectionError::Syntax(what, p));
    }
    let overflow = || SectionError::Overflow(clip(&text[from..p]), from);
    text[from..p]
        .parse()
        .map(|v| (v, p))
        .map_err(|_| overflow())
}

/// Splits a trimmed section into `(start, end, step, op)`; `op` is 0 for `N`, `-` for `a-b`,
/// else `x`, `y` or `:`. Byte offsets in errors are relative to the section.
fn parse_section(text: &str) -> Result<(i32, i32, i32, u8), SectionError> {
    let b = text.as_bytes();
    let (start, p) = number(text, 0, "expected a frame number")?;
    match b.get(p) {
        None => return Ok((start, start, 1, 0)),
        Some(b'-') => {}
        Some(_) => {
            return Err(SectionError::Syntax(
                "expected `-` after the start frame",
                p,
            ));
        }
    }
    let (end, p) = number(text, p + 1, "expected an end frame")?;
    let op = match b.get(p) {
        None => return Ok((start, end, if end < start { -1 } else { 1 }, b'-')),
        Some(op @ (b'x' | b'y' | b':')) => *op,
        Some(_) => return Err(SectionError::Syntax("expected `x`, `y` or `:`", p)),
    };
    match number(text, p + 1, "expected a step")? {
        (step, q) if q == b.len() => Ok((start, end, step, op)),
        (_, q) => Err(SectionError::Syntax("expected the end of the section", q)),
    }
}

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

/// One chunk of a layer's frames: what RQD runs for one dispatched frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The chunk's frames, in set order.
    pub frames: Vec<i32>,
    /// Compact spec of `frames` (`#FRAMESPEC#`), e.g. `1-10`, `1-9x2`, `1,3,7`.
    pub spec: String,
    /// First frame (`#FRAME_START#`, `#IFRAME#`).
    pub start: i32,
    /// Last frame (`#FRAME_END#`).
    pub end: i32,
}

/// Writes one run the way Cuebot's `buildFrangePart` does.
fn part(out: &mut String, start: i64, end: i64, step: i64) {
    if !out.is_empty() {
        out.push(',');
    }
    let _ = match (start == end, step) {
        (true, _) => write!(out, "{start}"),
        (false, 1) => write!(out, "{start}-{end}"),
        _ => write!(out, "{start}-{end}x{step}"),
    };
}

/// Cuebot's `FrameSet.framesToFrameRanges`, statement for statement (differences in `i64`).
fn cuebot_frames_to_ranges(frames: &[i32]) -> String {
    let mut out = String::new();
    let Some((&first, rest)) = frames.split_first() else {
        return out;
    };
    let (mut count, mut step) = (1u32, 0i64);
    let (mut start, mut last, mut cur) = (first as i64, first as i64, first as i64);
    for &f in rest {
        cur = f as i64;
        if step == 0 {
            step = cur - start;
        }
        if step == cur - last {
            last = cur;
            count += 1;
        } else if count == 2 && step != 1 {
            part(&mut out, start, start, 0);
            (step, start, last) = (0, last, cur);
        } else {
            part(&mut out, start, last, step);
            (step, start, last, count) = (0, cur, cur, 1);
        }
    }
    if count == 2 && step != 1 {
        part(&mut out, start, start, 0);
        part(&mut out, cur, cur, 0);
    } else {
        part(&mut out, start, cur, step);
    }
    out
}

/// Greedy run compression that is always exact (used when Cuebot's would not be).
fn exact_frames_to_ranges(frames: &[i32]) -> String {
    let (mut out, mut i) = (String::new(), 0);
    while i < frames.len() {
        let a = frames[i] as i64;
        let s = frames.get(i + 1).map_or(0, |&b| b as i64 - a);
        let mut j = i + 1;
        if s != 0 {
            j += 1;
            while j < frames.len() && frames[j] as i64 - frames[j - 1] as i64 == s {
                j += 1;
            }
            if j - i == 2 && s != 1 {
                j = i + 1;
            }
        }
        part(&mut out, a, frames[j - 1] as i64, s);
        i = j;
    }
    out
}

/// Compresses a list of frames into a spec, exactly as Cuebot's `framesToFrameRanges`
/// (`1,2,3,5,7,9` → `1-3,5-9x2`), except that whenever Cuebot's output would not parse back
/// to exactly `frames` (it mishandles some unordered or repeated frames, e.g. `0,2,5,3`),
/// an exact compression is returned instead. Costs O(frames). Empty input gives `""`.
pub fn frames_to_spec(frames: &[i32]) -> String {
    let spec = cuebot_frames_to_ranges(frames);
    match FrameSet::parse_limited(&spec, frames.len(), frames.len()) {
        Ok(set) if set.iter().eq(frames.iter().copied()) => spec,
        _ => exact_frames_to_ranges(frames),
    }
}

/// The frame number of a Cuebot frame name `NNNN-layer` (`String.format("%04d-%s")`), e.g.
/// `0001-render` → 1. Negative frames are named with the sign inside the padding
/// (`-005-render` → -5); Cuebot and the old Rust scheduler both fail on those, this does not.
pub fn frame_number_from_name(name: &str) -> Option<i32> {
    let b = name.as_bytes();
    let digits = usize::from(b.first() == Some(&b'-'));
    let end = digits
        + b[digits..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
    if end == digits || b.get(end) != Some(&b'-') {
        return None;
    }
    name[..end].parse().ok()
}

#[cfg(test)]
mod tests;
