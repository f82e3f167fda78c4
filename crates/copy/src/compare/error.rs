//! [`CompareError`]: why a comparison could not finish, naming the file,
//! the offset and the errno.

use crate::modes::CachePolicy;
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

/// Why a comparison could not give an answer. Neither file was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompareError {
    /// A syscall on one of the files failed.
    #[error("{}: {op}{}: {}", path.display(), At(*offset), ErrnoName(*errno))]
    Io {
        /// The file.
        path: PathBuf,
        /// The call, e.g. `"pread"`, `"open"`.
        op: &'static str,
        /// The file offset, where the call has one.
        offset: Option<u64>,
        /// What the kernel said.
        errno: Errno,
    },
    /// Mapping a file's extents failed.
    #[error("{}: {source}", path.display())]
    Map {
        /// The file.
        path: PathBuf,
        /// The mapper's error.
        source: MapError,
    },
    /// Neither a regular file nor a block device.
    #[error("{}: cannot compare a {kind}", path.display())]
    NotComparable {
        /// The offending path.
        path: PathBuf,
        /// `"directory"`, `"fifo"`, `"character device"`, …
        kind: &'static str,
    },
    /// A forced cache policy does not work for this file.
    #[error("{}: cache policy {policy} not supported here: {}", path.display(), ErrnoName(*errno))]
    CacheUnsupported {
        /// The file that refused it.
        path: PathBuf,
        /// The policy asked for.
        policy: CachePolicy,
        /// What the probe returned.
        errno: Errno,
    },
    /// The file changed size or modification time during the comparison:
    /// the answer would describe no single state of it.
    #[error("{}: changed during the comparison", path.display())]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// The [`Interrupt`](crate::Interrupt) was triggered (a signal, a timeout).
    #[error("comparison interrupted after {bytes_compared} bytes")]
    Interrupted {
        /// Bytes of the compared range settled (in file order) before it stopped.
        bytes_compared: u64,
    },
}

impl CompareError {
    /// The errno behind the error, if one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            CompareError::Io { errno, .. } | CompareError::CacheUnsupported { errno, .. } => {
                Some(*errno)
            }
            CompareError::Map { source, .. } => source.errno(),
            _ => None,
        }
    }

    /// Whether the request itself was wrong (a directory, a fifo): a
    /// command line maps this to its usage exit code.
    pub fn is_usage_error(&self) -> bool {
        matches!(self, CompareError::NotComparable { .. })
    }
}
