//! Chunks of a frame set and the compression of frame lists back into specs, as Cuebot's
//! `getChunk` and `framesToFrameRanges` produce them; and frame numbers from frame names.

use std::fmt::Write as _;

use super::FrameSet;

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
pub(super) fn cuebot_frames_to_ranges(frames: &[i32]) -> String {
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
