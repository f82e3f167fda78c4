//! Copy-on-write sharing on Linux: reflink a whole file or a range, or
//! deduplicate equal ranges, and nothing else.
//!
//! These calls share extents or fail with [`CloneError::Unsupported`]; they
//! never fall back to copying data. The copy-with-fallback lives in
//! `sparsekit-copy`.

mod error;

pub use error::CloneError;

use rustix::fd::AsFd;

/// `ioctl(dst, FICLONE, src)`—Makes `dst` share all of `src`'s extents.
///
/// # References
/// - [`ioctl_ficlone(2)`](https://man7.org/linux/man-pages/man2/ioctl_ficlone.2.html) (since Linux 4.5)
#[doc(alias = "FICLONE")]
pub fn clone_file<S: AsFd, D: AsFd>(src: S, dst: D) -> Result<(), CloneError> {
    rustix::fs::ioctl_ficlone(dst, src).map_err(CloneError::from_errno)
}
