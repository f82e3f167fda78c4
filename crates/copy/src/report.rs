//! What a copy did: [`CopyReport`], and [`Progress`] while it runs.

use crate::modes::{CachePolicy, HoleMethod, Staging};
use sparsekit_extents::Method;
use std::fmt;
use std::time::Duration;

/// How the data reached the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Strategy {
    /// One `FICLONE`: the destination shares all the source's extents.
    Reflink,
    /// `copy_file_range(2)` per data extent.
    CopyFileRange,
    /// The reader/writer pipeline.
    ReadWrite,
    /// Read until end of file, for sources whose size does not describe
    /// their content (procfs, sysfs, … files; an empty file that returns
    /// bytes on read).
    Stream,
}

impl Strategy {
    /// The lowercase name used in JSON and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Reflink => "reflink",
            Strategy::CopyFileRange => "copy_file_range",
            Strategy::ReadWrite => "read_write",
            Strategy::Stream => "stream",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the destination is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum DestinationKind {
    /// A new, empty regular file (staged, or created in place).
    NewFile,
    /// An existing regular file written in place.
    ExistingFile,
    /// A block device.
    BlockDevice,
}

impl DestinationKind {
    /// The lowercase name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::NewFile => "new_file",
            DestinationKind::ExistingFile => "existing_file",
            DestinationKind::BlockDevice => "block_device",
        }
    }
}

/// Something the copy tried and left for the next option, and why: the
/// workspace's one fallback record ([`sparsekit_sys::Fallback`]), whose
/// `strategy` is the step left, e.g. `"reflink"`, `"copy_file_range"`,
/// `"cache dontcache (source)"`, `"staging o_tmpfile"`, `"holes punch"`.
/// With the `serde` feature it serializes as `{"strategy", "errno"}`.
pub type Fallback = sparsekit_sys::Fallback<&'static str>;

/// Page-cache residency of source and destination, in bytes (pages × page
/// size), from `cachestat(2)` (Linux 6.5) or else `mincore(2)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PageCacheUse {
    /// Source bytes cached before the copy started.
    pub source_before: u64,
    /// Source bytes cached after it.
    pub source_after: u64,
    /// Destination bytes cached after it.
    pub destination_after: u64,
}

impl PageCacheUse {
    /// What the copy left in the page cache: the growth of the source's
    /// cached bytes plus the destination's cached bytes.
    pub fn left_by_copy(&self) -> u64 {
        self.source_after.saturating_sub(self.source_before) + self.destination_after
    }
}

/// What a successful copy did.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct CopyReport {
    /// How the data moved.
    pub strategy: Strategy,
    /// Cache policy of the source reads (`None` when no data was read:
    /// reflink, or a source without data).
    pub cache_source: Option<CachePolicy>,
    /// Cache policy of the destination writes (`None` likewise).
    pub cache_destination: Option<CachePolicy>,
    /// How holes were made in a destination that could hold old data
    /// (`None` for a new file, whose holes are simply skipped).
    pub holes: Option<HoleMethod>,
    /// Where the destination was written (never `Auto`).
    pub staging: Staging,
    /// What the destination is.
    pub destination: DestinationKind,
    /// How the source was mapped.
    pub map_method: Method,
    /// Whether the data came from a reflinked snapshot of the source
    /// ([`CopyOptions::snapshot`](crate::CopyOptions::snapshot)).
    pub snapshot: bool,
    /// Source size in bytes (= destination size, for files).
    pub size: u64,
    /// Data bytes written (or shared, for a reflink) to the destination.
    pub bytes_copied: u64,
    /// Source bytes in holes or unwritten extents, not written.
    pub bytes_skipped_as_holes: u64,
    /// Bytes inside data extents found all-zero and left as holes (the
    /// read/write pipeline, unless [`SparseMode::Never`](crate::SparseMode::Never)).
    pub zero_bytes_detected: u64,
    /// Whether all-zero blocks were looked for: true when the data passed
    /// through memory (the read/write pipeline) and the sparse mode is not
    /// `Never`; false for a reflink and for `copy_file_range`, which move
    /// the data without reading it, so written zeros stay data there.
    pub zero_detection: bool,
    /// Bytes of explicit zeros written for holes
    /// ([`SparseMode::Never`](crate::SparseMode::Never), or the last
    /// fallback of hole making).
    pub zero_bytes_written: u64,
    /// Whether the destination was fsynced before success.
    pub synced: bool,
    /// Wall time of the copy, fsync and rename included.
    pub elapsed: Duration,
    /// Cache residency before and after (`None` when neither `cachestat`
    /// nor `mincore` could tell).
    pub page_cache: Option<PageCacheUse>,
    /// Options tried and left, in order.
    pub fallbacks: Vec<Fallback>,
    /// The read-back comparison of [`verify`](crate::CopyOptions::verify)
    /// (always equal in a successful copy's report; `None` when not asked).
    pub verified: Option<crate::compare::report::CompareReport>,
}

impl CopyReport {
    /// Bytes the copy left in the page cache (source growth + destination),
    /// if measured.
    pub fn bytes_left_in_page_cache(&self) -> Option<u64> {
        self.page_cache.map(|p| p.left_by_copy())
    }
}

/// How far a copy is, passed to the [`progress`](crate::CopyOptions::progress) callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Data bytes written so far.
    pub data_done: u64,
    /// Data bytes to write in all (the source's data extents, or its size
    /// when mapping cannot tell cheaply).
    pub data_total: u64,
}
