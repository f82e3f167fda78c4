//! The error type of every operation in this crate.

use rustix::io::Errno;
use sparsekit_sys::ErrnoName;

/// Why a clone or dedupe failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CloneError {
    /// The filesystem (or kernel) cannot share extents between these files:
    /// `EOPNOTSUPP`, `EXDEV`, `EINVAL`, `ENOTTY` or `ENOSYS`.
    #[error("extent sharing not supported: {}", ErrnoName(*.errno))]
    Unsupported {
        /// The errno the kernel returned.
        errno: Errno,
    },
    /// Any other failure of the call.
    #[error("clone failed: {}", ErrnoName(*.errno))]
    Os {
        /// The errno the kernel returned.
        errno: Errno,
    },
}

impl CloneError {
    /// Classifies a raw errno from FICLONE / FICLONERANGE / FIDEDUPERANGE.
    pub(crate) fn from_errno(errno: Errno) -> Self {
        if is_unsupported_errno(errno) {
            Self::Unsupported { errno }
        } else {
            Self::Os { errno }
        }
    }

    /// True when the filesystem cannot share extents here, so a caller may
    /// fall back to copying data.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Self::Unsupported { .. })
    }
}

/// The errnos that mean "no sharing possible here" rather than a real failure.
pub(crate) fn is_unsupported_errno(errno: Errno) -> bool {
    matches!(
        errno,
        Errno::OPNOTSUPP | Errno::XDEV | Errno::INVAL | Errno::NOTTY | Errno::NOSYS
    )
}
