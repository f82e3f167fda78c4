use crate::Method;
use rustix::io::Errno;
use sparsekit_sys::ErrnoName;

/// Why a map could not be made or continued.
///
/// The library works on file descriptors, so errors carry the operation and
/// the offset; callers add the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// A syscall failed.
    #[error("{op} at offset {offset}: {}", ErrnoName(*errno))]
    Io {
        /// The call, e.g. `"lseek(SEEK_DATA)"`.
        op: &'static str,
        /// The file offset it was made at.
        offset: u64,
        /// What the kernel said.
        errno: Errno,
    },
    /// Directories, sockets, pipes and character devices have no extents.
    #[error("not a regular file or block device (it is a {kind})")]
    NotMappable {
        /// `"directory"`, `"fifo"`, …
        kind: &'static str,
    },
    /// A forced method is not available on this file's filesystem.
    #[error("method {method} is not supported here: {}", ErrnoName(*errno))]
    Unsupported {
        /// The method asked for.
        method: Method,
        /// The errno that showed it.
        errno: Errno,
    },
    /// A walker produced an extent that does not continue the map (a bug,
    /// or a kernel answer that contradicts itself); the map stops there.
    #[error("{method} gave an extent that does not continue the map at offset {offset}")]
    Inconsistent {
        /// The method producing the extents.
        method: Method,
        /// Where the map stood.
        offset: u64,
    },
}

impl MapError {
    pub(crate) fn io(op: &'static str, offset: u64, errno: Errno) -> Self {
        MapError::Io { op, offset, errno }
    }

    /// The errno behind the error, if one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            MapError::Io { errno, .. } | MapError::Unsupported { errno, .. } => Some(*errno),
            MapError::NotMappable { .. } | MapError::Inconsistent { .. } => None,
        }
    }
}
