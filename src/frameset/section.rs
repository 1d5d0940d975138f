//! The sections of a frame set: the three stored forms (arithmetic, inverse-stepped fill,
//! interleave) with their O(1) position and offset arithmetic, and the parser of one
//! section's text.

use std::fmt;

use super::error::{SectionError, clip};

/// A run of frames: `Arith(start, step, len)` is `start, start+step, …` (`step` is never 0);
/// `Fill` is an `a-byN` that is not a progression, `Interleave` an `a-b:N`.
#[derive(Debug, Clone)]
pub(super) enum Section {
    Arith(i32, i64, usize),
    Fill(Fill),
    Interleave(Interleave),
}

/// `a-byN` as complement arithmetic: the frames `start + dir·o` for the offsets `o` in
/// `0..full` that are not multiples of `n` (at least 3: smaller steps are progressions). Each
/// block of `n` offsets keeps `n - 1`, so position and offset convert in O(1).
#[derive(Debug, Clone)]
pub(super) struct Fill {
    pub(super) start: i32,
    pub(super) end: i32,
    pub(super) dir: i64,
    pub(super) n: u64,
    pub(super) full: u64,
}

impl Fill {
    pub(super) fn len(&self) -> usize {
        (self.full - self.full.div_ceil(self.n)) as usize
    }

    pub(super) fn get(&self, i: usize) -> i32 {
        let (q, r) = (i as u64 / (self.n - 1), i as u64 % (self.n - 1));
        (self.start as i64 + self.dir * (q * self.n + r + 1) as i64) as i32
    }

    pub(super) fn index_of(&self, frame: i32) -> Option<usize> {
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
/// both lookups are O(1); their size is bounded by [`MAX_INTERLEAVED_FRAMES`](super::MAX_INTERLEAVED_FRAMES).
#[derive(Debug, Clone)]
pub(super) struct Interleave {
    pub(super) spec: String,
    pub(super) start: i32,
    pub(super) dir: i64,
    pub(super) order: Vec<u32>,
    pub(super) position: Vec<u32>,
}

impl Interleave {
    /// Cuebot's `getInterleavedRange`: steps `|step|`, `|step|/2`, … 1, first seen wins.
    pub(super) fn new(spec: String, start: i32, dir: i64, span: usize, step: u64) -> Interleave {
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

    pub(super) fn at(&self, offset: u32) -> i32 {
        (self.start as i64 + self.dir * offset as i64) as i32
    }

    pub(super) fn index_of(&self, frame: i32) -> Option<usize> {
        let o = (frame as i64 - self.start as i64) * self.dir;
        let o = usize::try_from(o).ok()?;
        self.position.get(o).map(|&p| p as usize)
    }
}

impl Section {
    pub(super) fn len(&self) -> usize {
        match self {
            Section::Arith(_, _, len) => *len,
            Section::Fill(fill) => fill.len(),
            Section::Interleave(il) => il.order.len(),
        }
    }

    pub(super) fn get(&self, i: usize) -> i32 {
        match self {
            Section::Arith(start, step, _) => (*start as i64 + i as i64 * step) as i32,
            Section::Fill(fill) => fill.get(i),
            Section::Interleave(il) => il.at(il.order[i]),
        }
    }

    pub(super) fn index_of(&self, frame: i32) -> Option<usize> {
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
pub(super) fn arith_len(start: i32, end: i32, step: i64) -> u64 {
    let span = end as i64 - start as i64;
    match span.signum() * step.signum() {
        _ if span == 0 => 1,
        1 => (span / step) as u64 + 1,
        _ => 0,
    }
}

/// Reads `-?[0-9]+` at byte `p` of `text`; returns the value and the byte after it.
pub(super) fn number(
    text: &str,
    mut p: usize,
    what: &'static str,
) -> Result<(i32, usize), SectionError> {
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
pub(super) fn parse_section(text: &str) -> Result<(i32, i32, i32, u8), SectionError> {
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
