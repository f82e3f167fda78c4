//! [`CopyError`]: why a copy failed, naming the file, the offset and the errno.

use crate::modes::{CachePolicy, DataStrategy, HoleMethod};
use rustix::io::Errno;
use sparsekit_extents::MapError;
use sparsekit_sys::ErrnoName;
use std::path::PathBuf;

/// Shows ` at offset N` when there is one.
struct At(Option<u64>);

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(off) => write!(f, " at offset {off}"),
            None => Ok(()),
        }
    }
}

/// Why a copy failed. Whatever the variant, the source was not modified and
/// no complete-looking destination was left (see the crate docs).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// A syscall on one of the files failed.
    #[error("{}: {op}{}: {}", path.display(), At(*offset), ErrnoName(*errno))]
    Io {
        /// The file (for staged copies: the destination's final name).
        path: PathBuf,
        /// The call, e.g. `"pwrite"`, `"fsync"`, `"fallocate(PUNCH_HOLE)"`.
        op: &'static str,
        /// The file offset, where the call has one.
        offset: Option<u64>,
        /// What the kernel said.
        errno: Errno,
    },
    /// Mapping the source's extents failed.
    #[error("{}: {source}", path.display())]
    Map {
        /// The source.
        path: PathBuf,
        /// The mapper's error.
        source: MapError,
    },
    /// Source and destination are the same file (same device and inode: the
    /// same path, a hard link, a symlink to it, or the same block device).
    #[error("{} and {} are the same file", src.display(), dst.display())]
    SameFile {
        /// The source.
        src: PathBuf,
        /// The destination.
        dst: PathBuf,
    },
    /// The destination block device holds the filesystem the source lives on.
    #[error("{} holds the filesystem of {}; refusing to overwrite it", dst.display(), src.display())]
    DestinationHoldsSource {
        /// The source.
        src: PathBuf,
        /// The destination block device.
        dst: PathBuf,
    },
    /// The source or destination is neither a regular file nor a block device.
    #[error("{}: cannot copy {} a {kind}", path.display(), if *is_source { "from" } else { "to" })]
    NotCopyable {
        /// The offending path.
        path: PathBuf,
        /// Whether it is the source.
        is_source: bool,
        /// `"directory"`, `"fifo"`, `"character device"`, …
        kind: &'static str,
    },
    /// A block-device destination smaller than the source.
    #[error("{}: device has {have} bytes, the source needs {need}", path.display())]
    DestinationTooSmall {
        /// The destination.
        path: PathBuf,
        /// Its size.
        have: u64,
        /// The source's size.
        need: u64,
    },
    /// `ReflinkMode::Always`, but the files cannot share extents.
    #[error("{} -> {}: reflink not possible here: {}", src.display(), dst.display(), ErrnoName(*errno))]
    ReflinkUnsupported {
        /// The source.
        src: PathBuf,
        /// The destination.
        dst: PathBuf,
        /// `EXDEV` (different filesystems), `EOPNOTSUPP` (no reflink here), …
        errno: Errno,
    },
    /// [`CopyOptions::snapshot`](crate::CopyOptions::snapshot), but the
    /// source could not be reflinked into a snapshot (`EOPNOTSUPP` on a
    /// filesystem without reflink such as ext4 or tmpfs, or any other
    /// errno of `FICLONE`). Nothing was created.
    #[error(
        "{}: cannot take a snapshot: FICLONE: {} (--snapshot needs a filesystem that can reflink, such as xfs or btrfs)",
        path.display(),
        ErrnoName(*errno)
    )]
    SnapshotUnsupported {
        /// The source.
        path: PathBuf,
        /// What FICLONE returned.
        errno: Errno,
    },
    /// A forced cache policy does not work for this file.
    #[error("{}: cache policy {policy} not supported here: {}", path.display(), ErrnoName(*errno))]
    CacheUnsupported {
        /// The file whose side refused it.
        path: PathBuf,
        /// The policy asked for.
        policy: CachePolicy,
        /// What the probe returned.
        errno: Errno,
    },
    /// A forced data strategy does not work between these files.
    #[error("{} -> {}: {strategy} not supported here: {}", src.display(), dst.display(), ErrnoName(*errno))]
    StrategyUnsupported {
        /// The source.
        src: PathBuf,
        /// The destination.
        dst: PathBuf,
        /// The strategy asked for.
        strategy: DataStrategy,
        /// What the kernel returned.
        errno: Errno,
    },
    /// A forced hole method does not work on the destination.
    #[error("{}: hole method {method} not supported here: {}", path.display(), ErrnoName(*errno))]
    HoleMethodUnsupported {
        /// The destination.
        path: PathBuf,
        /// The method asked for.
        method: HoleMethod,
        /// What the kernel returned.
        errno: Errno,
    },
    /// Options that contradict each other (e.g. `copy_file_range` with
    /// `ReflinkMode::Never`); nothing was touched.
    #[error("invalid options: {0}")]
    InvalidOptions(&'static str),
    /// The source changed size or modification time while it was copied;
    /// the copy is not a snapshot of any one state of it.
    #[error("{}: source changed during the copy", path.display())]
    SourceChanged {
        /// The source.
        path: PathBuf,
    },
    /// [`verify`](crate::CopyOptions::verify): the destination read back
    /// differs from the source.
    #[error("{}: verification failed: it differs from {} at offset {offset}; {left}", dst.display(), src.display())]
    VerifyMismatch {
        /// The source.
        src: PathBuf,
        /// The destination.
        dst: PathBuf,
        /// The first differing offset.
        offset: u64,
        /// What became of the destination.
        left: VerifyLeft,
    },
    /// [`verify`](crate::CopyOptions::verify) could not read back (the
    /// destination is handled as after a mismatch).
    #[error("{}: verification failed: {source}; {left}", dst.display())]
    Verify {
        /// The destination.
        dst: PathBuf,
        /// Why the comparison failed.
        source: crate::compare::error::CompareError,
        /// What became of the destination.
        left: VerifyLeft,
    },
    /// The [`Interrupt`](crate::Interrupt) was triggered.
    #[error("{}: copy interrupted", path.display())]
    Interrupted {
        /// The destination.
        path: PathBuf,
    },
}

/// What a failed verification left at the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyLeft {
    /// The staged copy was discarded; nothing was created.
    NotCreated,
    /// The staged copy was discarded; the existing destination is as it
    /// was before the copy.
    Unchanged,
    /// The destination was written in place and differs from the source;
    /// it was truncated to zero length so it cannot pass for the copy.
    Truncated,
    /// The block device was written in place and differs from the source;
    /// its first MiB was zeroed so it cannot pass for the copy.
    HeaderZeroed,
}

impl std::fmt::Display for VerifyLeft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VerifyLeft::NotCreated => "the copy was discarded, nothing was created",
            VerifyLeft::Unchanged => {
                "the copy was discarded, the existing destination was left as it was"
            }
            VerifyLeft::Truncated => {
                "the destination was overwritten in place and differs; it was truncated to zero length"
            }
            VerifyLeft::HeaderZeroed => {
                "the device was overwritten in place and differs; its first MiB was zeroed"
            }
        })
    }
}

impl CopyError {
    /// The errno behind the error, if one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            CopyError::Io { errno, .. }
            | CopyError::ReflinkUnsupported { errno, .. }
            | CopyError::SnapshotUnsupported { errno, .. }
            | CopyError::CacheUnsupported { errno, .. }
            | CopyError::StrategyUnsupported { errno, .. }
            | CopyError::HoleMethodUnsupported { errno, .. } => Some(*errno),
            CopyError::Map { source, .. } => source.errno(),
            CopyError::Verify { source, .. } => source.errno(),
            _ => None,
        }
    }

    /// Whether the request itself was wrong (same file, wrong file type,
    /// contradicting options, a device too small), found before anything
    /// was written: a command line maps this to its usage exit code.
    pub fn is_usage_error(&self) -> bool {
        matches!(
            self,
            CopyError::SameFile { .. }
                | CopyError::DestinationHoldsSource { .. }
                | CopyError::NotCopyable { .. }
                | CopyError::DestinationTooSmall { .. }
                | CopyError::InvalidOptions(_)
        )
    }
}
