//! [`CapsError`]: the directory could not be probed at all.

use rustix::io::Errno;
use sparsekit_sys::ErrnoName;
use std::path::PathBuf;

/// Why no report could be made.
///
/// A capability the filesystem lacks is never an error: it is a
/// [`Cell`](crate::Cell) saying `unsupported`. These are the failures that
/// stop every trial: the directory cannot be opened or is not a directory,
/// no scratch file can be made in it (read-only filesystem, no
/// permission, full), or writing the trial data fails.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CapsError {
    /// The directory (or its filesystem) could not be inspected.
    #[error("{}: {op}: {}", path.display(), ErrnoName(*errno))]
    Inspect {
        /// The directory.
        path: PathBuf,
        /// The call that failed (`"open"`, `"fstatfs"`, …).
        op: &'static str,
        /// The errno.
        errno: Errno,
    },
    /// The path is not a directory (caps probes the filesystem of a
    /// directory; [`Caps::for_path`](crate::Caps::for_path) takes files too).
    #[error("{}: not a directory", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// No scratch file could be created or written in the directory.
    #[error("{}: cannot run trials: {op} at offset {offset}: {}", path.display(), ErrnoName(*errno))]
    Scratch {
        /// The directory.
        path: PathBuf,
        /// The call that failed (`"open(O_TMPFILE)"`, `"pwrite"`, …).
        op: &'static str,
        /// The file offset involved (0 when none).
        offset: u64,
        /// The errno.
        errno: Errno,
    },
    /// The second directory for cross-filesystem trials is unusable.
    #[error("second directory {}: {op}: {}", path.display(), ErrnoName(*errno))]
    CrossDir {
        /// The second directory.
        path: PathBuf,
        /// The call that failed.
        op: &'static str,
        /// The errno.
        errno: Errno,
    },
}

impl CapsError {
    /// The errno behind the error, if any.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            CapsError::Inspect { errno, .. }
            | CapsError::Scratch { errno, .. }
            | CapsError::CrossDir { errno, .. } => Some(*errno),
            CapsError::NotADirectory { .. } => Some(Errno::NOTDIR),
        }
    }
}
