//! What a comparison found: [`CompareReport`].

use crate::modes::CachePolicy;
use sparsekit_extents::Method;
/// The copy's [`Fallback`](crate::Fallback), named from sys so this module
/// stays below the copy's report (which holds a [`CompareReport`]).
type Fallback = sparsekit_sys::Fallback<&'static str>;
use std::fmt;
use std::time::Duration;

/// One of the two files compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Which {
    /// The first file.
    A,
    /// The second file.
    B,
}

impl Which {
    /// `"a"` or `"b"`, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Which::A => "a",
            Which::B => "b",
        }
    }
}

impl fmt::Display for Which {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A byte range whose content differs. It starts and ends on a differing
/// byte; runs of fewer than [`MERGE_GAP`](crate::compare::MERGE_GAP) equal
/// bytes inside it do not split it (random data agrees on one byte in 256).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Difference {
    /// First differing byte.
    pub offset: u64,
    /// Up to and including the last differing byte of the run.
    pub length: u64,
}

impl Difference {
    /// One past the last differing byte.
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// A range that one file allocates (data or unwritten extents) and the
/// other leaves as a hole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct AllocationDifference {
    /// Byte offset.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// The file that allocates the range.
    pub allocated_in: Which,
}

/// The allocation comparison ([`CompareOptions::allocation`](crate::compare::CompareOptions::allocation)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct AllocationReport {
    /// Ranges allocated on one side only, in file order, up to the limit.
    pub differences: Vec<AllocationDifference>,
    /// More ranges exist than were listed.
    pub truncated: bool,
    /// Bytes of the common range allocated in A only.
    pub only_a: u64,
    /// Bytes of the common range allocated in B only.
    pub only_b: u64,
    /// The regular files whose allocation no inquiry could see: neither
    /// SEEK_HOLE nor FIEMAP showed their holes (NFSv3), so they were mapped
    /// by `scan` (zeros, not allocation) or taken as all data. With any,
    /// the ranges above say nothing of allocation and [`equal`](Self::equal)
    /// is false: unknown is not equal.
    pub unobserved: Vec<Which>,
}

impl AllocationReport {
    /// Whether both files are known to allocate the same ranges.
    pub fn equal(&self) -> bool {
        self.unobserved.is_empty() && self.only_a == 0 && self.only_b == 0
    }
}

/// How one side was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct SideReport {
    /// Size in bytes (a block device's capacity).
    pub size: u64,
    /// `st_blocks × 512` (0 for a block device).
    pub allocated: u64,
    /// How its extents were mapped.
    pub map_method: Method,
    /// The cache policy of its reads (never `Auto`).
    pub cache: CachePolicy,
    /// Bytes read from it (holes inside a read request included).
    pub bytes_read: u64,
    /// Of those, bytes read through the page cache although the policy is
    /// `Direct`: requests over many small extents, for which readahead is
    /// faster (their pages are dropped afterwards).
    pub bytes_read_buffered: u64,
}

/// What a comparison found, and how.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct CompareReport {
    /// The first file.
    pub a: SideReport,
    /// The second file.
    pub b: SideReport,
    /// Whether the first `min(size)` bytes read the same. Compared up to
    /// the first difference only when the limit is 0.
    pub content_equal: bool,
    /// The first offset where the files differ: the first differing byte,
    /// or, when the common part is equal but the sizes differ, the end of
    /// the shorter file.
    pub first_difference: Option<u64>,
    /// Differing ranges of the common part, in file order, up to the limit.
    pub differences: Vec<Difference>,
    /// More differing ranges exist than were listed (the comparison
    /// stopped once it knew).
    pub differences_truncated: bool,
    /// The allocation comparison, when asked for.
    pub allocation: Option<AllocationReport>,
    /// `min(size)`: the range compared.
    pub bytes_compared: u64,
    /// Bytes of that range neither side read (holes or unwritten in both).
    pub bytes_skipped: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Options tried and left, in order (`"cache direct (a)"`, …).
    pub fallbacks: Vec<Fallback>,
}

impl CompareReport {
    /// Same size and same content (and, when compared, same allocation).
    pub fn equal(&self) -> bool {
        self.sizes_equal()
            && self.content_equal
            && self.allocation.as_ref().is_none_or(AllocationReport::equal)
    }

    /// Whether the two sizes are equal.
    pub fn sizes_equal(&self) -> bool {
        self.a.size == self.b.size
    }

    /// Bytes read from both sides together.
    pub fn bytes_read(&self) -> u64 {
        self.a.bytes_read + self.b.bytes_read
    }
}
