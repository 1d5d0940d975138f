//! What a spec that does not parse reports: the section, its position and byte offset, and
//! what is wrong with it.

use std::fmt;

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
    /// This section takes the set above the given frame limit ([`MAX_FRAMES`](super::MAX_FRAMES)).
    #[error("the frame set would exceed {0} frames")]
    TooManyFrames(usize),
    /// An interleaved section spans more frames than the limit ([`MAX_INTERLEAVED_FRAMES`](super::MAX_INTERLEAVED_FRAMES)).
    #[error("an interleaved range may span at most {0} frames")]
    InterleaveTooLong(usize),
    /// This section takes the set above the section limit ([`MAX_SECTIONS`](super::MAX_SECTIONS)).
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

/// `s` cut to 64 bytes (on a character boundary) with an ellipsis, for error messages.
pub(super) fn clip(s: &str) -> String {
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
