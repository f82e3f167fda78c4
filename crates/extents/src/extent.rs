//! The extent type every method produces.

use std::fmt;
use std::ops::Range;

/// What a range of a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum ExtentKind {
    /// Bytes that must be read: written data (possibly all zeros).
    Data,
    /// No storage behind the range: it reads as zeros.
    Hole,
    /// Storage allocated but never written (`fallocate` preallocation): it
    /// reads as zeros. Only FIEMAP can tell this from a hole.
    Unwritten,
}

impl ExtentKind {
    /// Whether reading the range can return anything but zeros.
    pub fn needs_reading(self) -> bool {
        self == ExtentKind::Data
    }

    /// The lowercase name used by the CLI and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            ExtentKind::Data => "data",
            ExtentKind::Hole => "hole",
            ExtentKind::Unwritten => "unwritten",
        }
    }
}

impl fmt::Display for ExtentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

bitflags::bitflags! {
    /// What FIEMAP said about an extent beyond its kind. Methods other than
    /// FIEMAP leave these empty.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
    pub struct ExtentFlags: u32 {
        /// The last extent of the file (`FIEMAP_EXTENT_LAST`).
        const LAST = sparsekit_sys::fiemap::extent_flags::LAST;
        /// Location unknown (`FIEMAP_EXTENT_UNKNOWN`).
        const UNKNOWN = sparsekit_sys::fiemap::extent_flags::UNKNOWN;
        /// Delayed allocation, not yet on disk (`FIEMAP_EXTENT_DELALLOC`).
        const DELALLOC = sparsekit_sys::fiemap::extent_flags::DELALLOC;
        /// Stored encoded, e.g. compressed (`FIEMAP_EXTENT_ENCODED`).
        const ENCODED = sparsekit_sys::fiemap::extent_flags::ENCODED;
        /// Encrypted by the filesystem (`FIEMAP_EXTENT_DATA_ENCRYPTED`).
        const ENCRYPTED = sparsekit_sys::fiemap::extent_flags::DATA_ENCRYPTED;
        /// Not block aligned (`FIEMAP_EXTENT_NOT_ALIGNED`).
        const NOT_ALIGNED = sparsekit_sys::fiemap::extent_flags::NOT_ALIGNED;
        /// Stored inline with metadata (`FIEMAP_EXTENT_DATA_INLINE`).
        const INLINE = sparsekit_sys::fiemap::extent_flags::DATA_INLINE;
        /// Tail-packed (`FIEMAP_EXTENT_DATA_TAIL`).
        const TAIL = sparsekit_sys::fiemap::extent_flags::DATA_TAIL;
        /// Merged from block maps (`FIEMAP_EXTENT_MERGED`).
        const MERGED = sparsekit_sys::fiemap::extent_flags::MERGED;
        /// Shared with another file: reflinked, deduped or snapshotted (`FIEMAP_EXTENT_SHARED`).
        const SHARED = sparsekit_sys::fiemap::extent_flags::SHARED;
    }
}

impl ExtentFlags {
    /// Lowercase flag names, in bit order, for display and JSON.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        const NAMES: &[(ExtentFlags, &str)] = &[
            (ExtentFlags::LAST, "last"),
            (ExtentFlags::UNKNOWN, "unknown"),
            (ExtentFlags::DELALLOC, "delalloc"),
            (ExtentFlags::ENCODED, "encoded"),
            (ExtentFlags::ENCRYPTED, "encrypted"),
            (ExtentFlags::NOT_ALIGNED, "not_aligned"),
            (ExtentFlags::INLINE, "inline"),
            (ExtentFlags::TAIL, "tail"),
            (ExtentFlags::MERGED, "merged"),
            (ExtentFlags::SHARED, "shared"),
        ];
        NAMES
            .iter()
            .filter(move |(f, _)| self.contains(*f))
            .map(|(_, n)| *n)
    }
}

/// A contiguous byte range of a file and what it holds.
///
/// An [`ExtentMap`](crate::ExtentMap) yields extents in ascending order that
/// cover the mapped range exactly: no gaps, no overlaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Extent {
    /// Byte offset in the file.
    pub offset: u64,
    /// Length in bytes, never zero.
    pub length: u64,
    /// Data, hole or unwritten.
    pub kind: ExtentKind,
    /// FIEMAP flags (empty for other methods).
    pub flags: ExtentFlags,
}

impl Extent {
    /// An extent of `kind` over `range` with no flags.
    pub fn new(range: Range<u64>, kind: ExtentKind) -> Self {
        debug_assert!(range.start < range.end, "empty extent {range:?}");
        Extent {
            offset: range.start,
            length: range.end - range.start,
            kind,
            flags: ExtentFlags::empty(),
        }
    }

    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }

    /// `offset..end()`.
    pub fn range(&self) -> Range<u64> {
        self.offset..self.end()
    }

    /// Whether FIEMAP marked it shared (reflinked, deduped, snapshotted).
    pub fn is_shared(&self) -> bool {
        self.flags.contains(ExtentFlags::SHARED)
    }
}
