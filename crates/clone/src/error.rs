//! The error types of this crate.

use rustix::io::Errno;
use sparsekit_sys::ErrnoName;
use sparsekit_sys::fstype::FsType;
use std::fmt;
use std::path::PathBuf;

/// Which file of a clone or dedupe an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The file whose extents are shared out.
    Source,
    /// The file that receives (or is compared against) them.
    Destination,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Destination => "destination",
        })
    }
}

/// Why a clone or dedupe failed.
///
/// The checks this crate makes before calling the kernel (file types,
/// access modes, ranges, alignment, same-file overlap) each have their own
/// variant, so that [`Unsupported`](CloneError::Unsupported) really means
/// "this filesystem cannot share extents here" and a caller may fall back
/// to copying data.
///
/// The library works on file descriptors, so errors carry offsets and the
/// side but no path; [`PathCloneError`] adds the paths.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloneError {
    /// The filesystem (or kernel) cannot share extents between these files:
    /// `EOPNOTSUPP` (no reflink, e.g. ext4, tmpfs), `EXDEV` (different
    /// mounts), `EINVAL` (after this crate's own range checks passed: e.g. a
    /// filesystem without remap support that reports it so), `ENOTTY` or
    /// `ENOSYS` (no such ioctl).
    #[error("extent sharing not supported here: {}", ErrnoName(*.errno))]
    Unsupported {
        /// The errno the kernel returned.
        errno: Errno,
    },
    /// A directory, device, fifo or socket was given where a regular file
    /// is needed.
    #[error("the {side} is not a regular file (it is a {kind})")]
    NotRegular {
        /// Which file.
        side: Side,
        /// `"directory"`, `"block device"`, `"fifo"`, …
        kind: &'static str,
    },
    /// The file descriptor's access mode does not allow the operation: the
    /// source must be open for reading, a clone destination for writing
    /// and not in append mode.
    #[error("the {side} is {found}, but it must be {needed}")]
    AccessMode {
        /// Which file.
        side: Side,
        /// What it is, e.g. `"open for reading only"`.
        found: &'static str,
        /// What it must be, e.g. `"open for writing"`.
        needed: &'static str,
    },
    /// A whole-file clone of a file onto itself.
    #[error("source and destination are the same file")]
    SameFile,
    /// Source and destination ranges overlap within one file.
    #[error(
        "source range {src_offset}..{} and destination range {dst_offset}..{} overlap in the same file",
        src_offset + length, dst_offset + length
    )]
    Overlap {
        /// Start of the source range.
        src_offset: u64,
        /// Start of the destination range.
        dst_offset: u64,
        /// Length of both ranges.
        length: u64,
    },
    /// The range reaches past the end of the file (`size`).
    #[error("{side} range {offset}..{} reaches past the end of the file (size {size})", offset + length)]
    PastEof {
        /// Which file.
        side: Side,
        /// Start of the range.
        offset: u64,
        /// Length of the range.
        length: u64,
        /// The file size.
        size: u64,
    },
    /// An offset or length is not a multiple of the block size the
    /// filesystem shares at.
    #[error(
        "{side} {what} {value} is not a multiple of the filesystem block size {alignment}{}",
        if *what == "length" { " (only a range that ends at the source's end of file, and at or past the destination's, may have an unaligned length)" } else { "" }
    )]
    Misaligned {
        /// Which file.
        side: Side,
        /// `"offset"` or `"length"`.
        what: &'static str,
        /// The offending value.
        value: u64,
        /// The alignment needed, in bytes.
        alignment: u64,
    },
    /// The kernel accepted a dedupe call but made no progress (shared 0
    /// bytes of a non-empty request), so the loop stopped rather than spin.
    #[error("FIDEDUPERANGE made no progress at source offset {src_offset}")]
    NoProgress {
        /// Where the stalled call started in the source.
        src_offset: u64,
    },
    /// Any other failure of a call.
    #[error("{op}: {}", ErrnoName(*.errno))]
    Os {
        /// The call, e.g. `"FICLONE"`, `"fstat"`.
        op: &'static str,
        /// The errno the kernel returned.
        errno: Errno,
    },
}

impl CloneError {
    /// Classifies an errno from FICLONE / FICLONERANGE / FIDEDUPERANGE made
    /// after this crate's checks passed.
    pub(crate) fn from_errno(op: &'static str, errno: Errno) -> Self {
        if is_unsupported_errno(errno) {
            Self::Unsupported { errno }
        } else {
            Self::Os { op, errno }
        }
    }

    /// True when the filesystem cannot share extents here, so a caller may
    /// fall back to copying data.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Self::Unsupported { .. })
    }

    /// The errno behind the error, if the kernel gave one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Self::Unsupported { errno } | Self::Os { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// The errnos that mean "no sharing possible here" rather than a failure:
/// sparsekit's set ([`sparsekit_sys::is_unsupported`]), widened by `EXDEV`,
/// which the remap ioctls answer for two files on different filesystems
/// (or mounts): no sharing is possible between them, and a copy is.
pub(crate) fn is_unsupported_errno(errno: Errno) -> bool {
    sparsekit_sys::is_unsupported(errno) || errno == Errno::XDEV
}

/// Why a path-level clone ([`clone_file_to_path`](crate::clone_file_to_path),
/// [`clone_range_to_path`](crate::clone_range_to_path)) failed. Either way,
/// a destination the call created is gone again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PathCloneError {
    /// Opening, creating, renaming or inspecting a file failed.
    #[error("{}: {op}: {}", path.display(), ErrnoName(*errno))]
    Io {
        /// The file.
        path: PathBuf,
        /// What was done, e.g. `"open"`, `"create"`, `"rename"`.
        op: &'static str,
        /// The errno.
        errno: Errno,
    },
    /// The destination path exists but is not a regular file.
    #[error("{}: not a regular file (it is a {kind})", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// `"directory"`, `"block device"`, …
        kind: &'static str,
    },
    /// The clone itself failed; see [`PathCloneError::clone_error`].
    #[error("{} -> {}: {error}", src.display(), dst.display())]
    Clone {
        /// The source path.
        src: PathBuf,
        /// The destination path.
        dst: PathBuf,
        /// The filesystem the source is on.
        src_fs: FsType,
        /// The filesystem the destination is on.
        dst_fs: FsType,
        /// What went wrong. (Not named `source`: its text is already part
        /// of this error's message.)
        error: CloneError,
    },
}

impl PathCloneError {
    /// The fd-level error, when the clone call itself failed.
    pub fn clone_error(&self) -> Option<&CloneError> {
        match self {
            Self::Clone { error, .. } => Some(error),
            _ => None,
        }
    }

    /// True when the filesystem cannot share extents here.
    pub fn is_unsupported(&self) -> bool {
        self.clone_error().is_some_and(CloneError::is_unsupported)
    }

    pub(crate) fn io(path: &std::path::Path, op: &'static str, e: &std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            op,
            errno: Errno::from_io_error(e).unwrap_or(Errno::IO),
        }
    }
}
