//! [`PunchError`] and the pieces it names.

use crate::Pending;
use rustix::io::Errno;
use sparsekit_extents::MapError;
use sparsekit_sys::ErrnoName;
use std::fmt;
use std::path::PathBuf;

/// The operation an error or report belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// [`punch_hole`](crate::punch_hole).
    Punch,
    /// [`zero_range`](crate::zero_range).
    Zero,
    /// [`collapse_range`](crate::collapse_range).
    Collapse,
    /// [`insert_range`](crate::insert_range).
    Insert,
    /// [`dig_holes`](crate::dig_holes).
    Dig,
}

impl Operation {
    /// Lowercase name, as the CLI subcommand.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Punch => "punch",
            Operation::Zero => "zero",
            Operation::Collapse => "collapse",
            Operation::Insert => "insert",
            Operation::Dig => "dig",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an offset/length pair was refused before anything was touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RangeProblem {
    /// The length is zero.
    Empty,
    /// The offset is above `i64::MAX`: negative as an `off_t`.
    NegativeOffset,
    /// The length is above `i64::MAX`: negative as an `off_t`.
    NegativeLength,
    /// `offset + length` (or, for insert, `size + length`) exceeds `i64::MAX`.
    Overflow,
    /// Collapse and insert need `offset` and `length` to be multiples of the
    /// filesystem block size; nothing is rounded silently.
    Unaligned {
        /// The block size both must be multiples of.
        alignment: u64,
    },
    /// A collapse must leave data after the removed range
    /// (`offset + length < size`), as `FALLOC_FL_COLLAPSE_RANGE` demands;
    /// to cut a file short, truncate it.
    ReachesEof {
        /// The file size.
        size: u64,
    },
    /// An insert must start inside the file (`offset < size`), as
    /// `FALLOC_FL_INSERT_RANGE` demands; to grow a file, truncate it longer.
    AtOrPastEof {
        /// The file size.
        size: u64,
    },
}

impl fmt::Display for RangeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeProblem::Empty => f.write_str("the length is zero"),
            RangeProblem::NegativeOffset => {
                f.write_str("the offset is negative as an off_t (above 2^63 - 1)")
            }
            RangeProblem::NegativeLength => {
                f.write_str("the length is negative as an off_t (above 2^63 - 1)")
            }
            RangeProblem::Overflow => f.write_str("the end of the range overflows 2^63 - 1"),
            RangeProblem::Unaligned { alignment } => write!(
                f,
                "offset and length must be multiples of the filesystem block size, {alignment} bytes"
            ),
            RangeProblem::ReachesEof { size } => write!(
                f,
                "the range reaches the end of the file (size {size}); collapse must leave data after it (truncate to cut the end)"
            ),
            RangeProblem::AtOrPastEof { size } => write!(
                f,
                "the offset is at or past the end of the file (size {size}); insert must start inside the file (truncate to extend)"
            ),
        }
    }
}

/// Why an operation failed.
///
/// The library works on file descriptors, so errors carry the call and the
/// offset; callers add the path. Variants other than [`Partial`] guarantee
/// that the file was not changed.
///
/// [`Partial`]: PunchError::Partial
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PunchError {
    /// The offset/length pair is invalid for this operation; nothing was touched.
    #[error("{op}: invalid range (offset {offset}, length {length}): {problem}")]
    InvalidRange {
        /// The operation.
        op: Operation,
        /// The offset asked for.
        offset: u64,
        /// The length asked for.
        length: u64,
        /// What is wrong with it.
        problem: RangeProblem,
    },
    /// An option of [`DigOptions`](crate::DigOptions) cannot work.
    #[error("{op}: {what}")]
    InvalidOption {
        /// The operation.
        op: Operation,
        /// What is wrong.
        what: &'static str,
    },
    /// Only regular files can be reshaped.
    #[error("{op}: not a regular file (it is a {kind})")]
    NotRegular {
        /// The operation.
        op: Operation,
        /// `"directory"`, `"block device"`, …
        kind: &'static str,
    },
    /// The descriptor was opened `O_RDONLY` (or `O_PATH`).
    #[error("{op}: the file is open read-only; it needs a descriptor opened for writing")]
    ReadOnly {
        /// The operation.
        op: Operation,
    },
    /// The descriptor was opened `O_WRONLY` but the strategy reads the file
    /// (moving data, digging).
    #[error(
        "{op}: the file is open write-only; it needs a descriptor opened for reading and writing"
    )]
    WriteOnly {
        /// The operation.
        op: Operation,
    },
    /// The descriptor was opened `O_APPEND`: every `pwrite` would append, so
    /// the fallbacks that write in place would corrupt the file.
    #[error("{op}: the file is open with O_APPEND; writes in place would append instead")]
    AppendOnly {
        /// The operation.
        op: Operation,
    },
    /// A forced strategy is not available on this file's filesystem; nothing
    /// was touched.
    #[error("{op}: strategy {strategy} is not supported here: {}", ErrnoName(*errno))]
    Unsupported {
        /// The operation.
        op: Operation,
        /// The strategy's name (see the strategy enums' `as_str`).
        strategy: &'static str,
        /// The errno that showed it.
        errno: Errno,
    },
    /// A system call failed before the file was changed.
    #[error("{op}: {call} at offset {offset}: {}", ErrnoName(*errno))]
    Io {
        /// The operation.
        op: Operation,
        /// The call, e.g. `"fallocate(PUNCH_HOLE|KEEP_SIZE)"`.
        call: &'static str,
        /// The file offset it was made at.
        offset: u64,
        /// What the kernel said.
        errno: Errno,
    },
    /// The file ended before an offset the operation had mapped: another
    /// process truncated it meanwhile.
    #[error("{op}: the file shrank while being changed (end of file at offset {offset})")]
    FileShrank {
        /// The operation.
        op: Operation,
        /// Where the read found the end of the file.
        offset: u64,
    },
    /// Mapping the file's extents failed.
    #[error("{op}: mapping extents: {source}")]
    Map {
        /// The operation.
        op: Operation,
        /// The extent mapper's error.
        #[source]
        source: MapError,
    },
    /// Another process opened (or truncated) the file while the operation
    /// held a [`WriteLease`](crate::WriteLease) on it: the operation stopped
    /// before its next write at `offset` and released the lease, so nothing
    /// the other process writes is lost. `state` says what was done before.
    #[error("{op}: {broken}; stopped before offset {offset}: {state}")]
    LeaseBroken {
        /// The operation.
        op: Operation,
        /// Where the next write would have gone; every write made was below it.
        offset: u64,
        /// Who broke the lease, and when.
        broken: crate::Broken,
        /// What the file holds now and how to finish.
        state: String,
        /// Whether anything was written before the break.
        changed: bool,
    },
    /// The stop flag of [`ShiftOptions`](crate::ShiftOptions) was set: the
    /// emulation stopped at a segment boundary; `state` says what the file
    /// holds and how to finish (with a journal: resume from it).
    #[error("{op} stopped at a segment boundary: {state}")]
    Stopped {
        /// The operation.
        op: Operation,
        /// Whether the file was changed before it stopped.
        changed: bool,
        /// The state the file was left in.
        state: String,
    },
    /// Creating, reading, updating or removing the journal of
    /// [`ShiftOptions`](crate::ShiftOptions) failed.
    #[error("{op}: journal {}: {call}: {}", path.display(), ErrnoName(*errno))]
    Journal {
        /// The operation.
        op: Operation,
        /// The journal's path.
        path: PathBuf,
        /// The call that failed.
        call: &'static str,
        /// What the kernel said.
        errno: Errno,
    },
    /// The journal records an unfinished operation: resume it first (the
    /// file was not touched).
    #[error("{op}: the journal {} records {pending}; resume it before anything else changes the file", path.display())]
    JournalPending {
        /// The operation refused.
        op: Operation,
        /// The journal's path.
        path: PathBuf,
        /// What it records.
        pending: Pending,
    },
    /// The journal does not fit this file (another file, or a size the
    /// recorded operation cannot have left); nothing was touched.
    #[error("{op}: the journal {} does not fit this file: {what}", path.display())]
    JournalMismatch {
        /// The recorded operation.
        op: Operation,
        /// The journal's path.
        path: PathBuf,
        /// What does not fit.
        what: String,
    },
    /// A multi-step strategy failed after it had changed the file; `state`
    /// says exactly what the file holds now and how to finish.
    #[error("{op} stopped part-way: {source}; {state}")]
    Partial {
        /// The operation.
        op: Operation,
        /// The state the file was left in.
        state: String,
        /// What stopped it.
        #[source]
        source: Box<PunchError>,
    },
}

impl PunchError {
    /// The errno behind the error, if one (looking through [`PunchError::Partial`]).
    pub fn errno(&self) -> Option<Errno> {
        match self {
            PunchError::Unsupported { errno, .. }
            | PunchError::Io { errno, .. }
            | PunchError::Journal { errno, .. } => Some(*errno),
            PunchError::Map { source, .. } => source.errno(),
            PunchError::Partial { source, .. } => source.errno(),
            PunchError::LeaseBroken { broken, .. } => match broken.by {
                crate::Breaker::Unknown(errno) => Some(errno),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether the file may have been changed before the error
    /// ([`PunchError::Partial`], or [`PunchError::Stopped`] after a change);
    /// every other error leaves it untouched.
    pub fn changed_file(&self) -> bool {
        matches!(
            self,
            PunchError::Partial { .. }
                | PunchError::LeaseBroken { changed: true, .. }
                | PunchError::Stopped { changed: true, .. }
        )
    }

    /// Whether the caller's input was at fault (a bad range or option, or
    /// the wrong kind of file or descriptor), as opposed to the filesystem.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            PunchError::InvalidRange { .. }
                | PunchError::InvalidOption { .. }
                | PunchError::NotRegular { .. }
                | PunchError::ReadOnly { .. }
                | PunchError::WriteOnly { .. }
                | PunchError::AppendOnly { .. }
        )
    }

    pub(crate) fn partial(self, op: Operation, state: String) -> PunchError {
        PunchError::Partial {
            op,
            state,
            source: Box::new(self),
        }
    }
}
