//! Copy-on-write sharing on Linux: reflink a whole file or a range, or
//! deduplicate equal ranges — and nothing else.
//!
//! Every call here either makes the filesystem share extents or fails; none
//! copies data behind the caller's back. Where sharing is impossible (ext4,
//! tmpfs, two different mounts) the error is [`CloneError::Unsupported`]
//! with the errno the kernel gave, so a caller can fall back to copying
//! (`sparsekit-copy` does, with `reflink = auto`).
//!
//! # Brief overview
//! - [`clone_file`]: `FICLONE`, the whole source into the destination.
//! - [`clone_range`]: `FICLONERANGE`, a block-aligned range.
//! - [`dedupe_range`] / [`dedupe_range_with`]: `FIDEDUPERANGE`, share a
//!   range with many destinations where the data are equal; a
//!   [`DedupeResult`] per destination (bytes shared, differs, or its own
//!   error); requests larger than the kernel takes per call are split.
//! - [`sharing`] / [`shared_bytes`]: FIEMAP's `SHARED` flags, to verify
//!   that sharing really happened.
//! - [`clone_file_to_path`] / [`clone_range_to_path`]: path-level helpers
//!   that create or atomically replace the destination and leave no empty
//!   file behind when the clone fails.
//! - [`CloneError`]: each mistake found before the call (file type, access
//!   mode, range past EOF, misalignment with the alignment needed, overlap,
//!   same file) has its own variant, so `Unsupported` means unsupported.
//!
//! # Example
//! ```
//! use std::io::Write;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let mut src = std::fs::File::create(dir.path().join("base.img"))?;
//! src.write_all(&[7u8; 65536])?;
//! let src = std::fs::File::open(dir.path().join("base.img"))?;
//! let dst = std::fs::File::create(dir.path().join("copy.img"))?;
//!
//! match sparsekit_clone::clone_file(&src, &dst) {
//!     Ok(()) => {
//!         // xfs, btrfs: the destination shares the source's extents.
//!         let shared = sparsekit_clone::shared_bytes(&dst, 0..65536)?;
//!         assert_eq!(shared, 65536);
//!     }
//!     // ext4, tmpfs: nothing was copied; the caller decides what to do.
//!     Err(e) if e.is_unsupported() => assert_eq!(dst.metadata()?.len(), 0),
//!     Err(e) => return Err(e.into()),
//! }
//! # Ok(()) }
//! ```
//!
//! # References
//! - [`ioctl_ficlone(2)`](https://man7.org/linux/man-pages/man2/ioctl_ficlone.2.html),
//!   [`ioctl_fideduperange(2)`](https://man7.org/linux/man-pages/man2/ioctl_fideduperange.2.html)
//!   (both since Linux 4.5)
//! - `fs/remap_range.c` (`generic_remap_checks()`: the alignment and range
//!   rules this crate checks up front)

#![warn(missing_docs)]

mod check;
mod dedupe;
mod error;
mod path;
mod shared;

pub use dedupe::{
    DEDUPE_MAX_CALL_LEN, DedupeOptions, DedupeResult, DedupeStatus, DedupeTarget, dedupe_range,
    dedupe_range_with,
};
pub use error::{CloneError, PathCloneError, Side};
pub use path::{DestinationChange, PathClone, clone_file_to_path, clone_range_to_path};
pub use shared::{Sharing, shared_bytes, sharing};
/// Re-exported: the error of [`sharing`] and [`shared_bytes`].
pub use sparsekit_extents::MapError;
/// Re-exported: the filesystem type in [`PathCloneError::Clone`].
pub use sparsekit_sys::fstype::FsType;

use check::{Access, RangeKind, RangeRequest};
use rustix::fd::AsFd;

/// `ioctl(dst, FICLONE, src)`—Makes `dst` share all of `src`'s extents.
///
/// Afterwards `dst` reads as `src` up to `src`'s size. `dst` is meant to be
/// empty: a longer `dst` keeps its bytes beyond `src`'s size (use
/// [`clone_file_to_path`] to replace a file).
///
/// # Errors
/// - [`CloneError::Unsupported`]: `EOPNOTSUPP` (no reflink on this
///   filesystem: ext4, tmpfs, xfs without `reflink=1`), `EXDEV` (different
///   mounts), `EINVAL`, `ENOTTY`, `ENOSYS`. Nothing was changed.
/// - [`CloneError::NotRegular`], [`CloneError::AccessMode`] (`src` must be
///   readable, `dst` writable and not append-only), [`CloneError::SameFile`],
///   [`CloneError::Misaligned`] (a `src` whose size is not block-aligned
///   onto a longer `dst`): found before the call.
/// - [`CloneError::Os`]: anything else, e.g. `ETXTBSY` (a swap file),
///   `EPERM` (immutable destination), `ENOSPC`.
///
/// # References
/// - [`ioctl_ficlone(2)`](https://man7.org/linux/man-pages/man2/ioctl_ficlone.2.html)
///   (since Linux 4.5; btrfs `BTRFS_IOC_CLONE` since 2.6.29)
#[doc(alias = "FICLONE")]
pub fn clone_file<S: AsFd, D: AsFd>(src: S, dst: D) -> Result<(), CloneError> {
    let (src, dst) = (src.as_fd(), dst.as_fd());
    let src_info = check::inspect(src, Side::Source, Access::Read)?;
    let dst_info = check::inspect(dst, Side::Destination, Access::Write)?;
    if src_info.same_inode(&dst_info) {
        return Err(CloneError::SameFile);
    }
    // Only the one case the kernel refuses with EINVAL needs the block size.
    if dst_info.size > src_info.size {
        check::check_range(&RangeRequest {
            src: src_info,
            src_offset: 0,
            dst: dst_info,
            dst_offset: 0,
            length: src_info.size,
            block: check::block_size(dst)?,
            kind: RangeKind::Clone,
        })?;
    }
    rustix::fs::ioctl_ficlone(dst, src).map_err(|errno| CloneError::from_errno("FICLONE", errno))
}

/// `ioctl(dst, FICLONERANGE, {src, src_offset, length, dst_offset})`—Makes
/// `dst[dst_offset..dst_offset+length]` share `src[src_offset..src_offset+length]`.
///
/// Offsets must be multiples of the destination filesystem's block size
/// (`fstatfs` `f_bsize`), and so must `length` unless the range ends at
/// `src`'s end of file and at or past `dst`'s. A range past `dst`'s end
/// extends it. `length == 0` does nothing (unlike the raw ioctl, where 0
/// means "to the end of the source").
///
/// # Errors
/// As [`clone_file`], plus [`CloneError::PastEof`] (the source range goes
/// past the source's end), [`CloneError::Misaligned`] (naming the side,
/// the value and the alignment needed) and [`CloneError::Overlap`] (both
/// ranges in one file, overlapping).
///
/// # References
/// - [`ioctl_ficlonerange(2)`](https://man7.org/linux/man-pages/man2/ioctl_ficlonerange.2.html)
///   (since Linux 4.5)
#[doc(alias = "FICLONERANGE")]
pub fn clone_range<S: AsFd, D: AsFd>(
    src: S,
    src_offset: u64,
    dst: D,
    dst_offset: u64,
    length: u64,
) -> Result<(), CloneError> {
    let (src, dst) = (src.as_fd(), dst.as_fd());
    let src_info = check::inspect(src, Side::Source, Access::Read)?;
    let dst_info = check::inspect(dst, Side::Destination, Access::Write)?;
    check::check_range(&RangeRequest {
        src: src_info,
        src_offset,
        dst: dst_info,
        dst_offset,
        length,
        block: check::block_size(dst)?,
        kind: RangeKind::Clone,
    })?;
    if length == 0 {
        return Ok(());
    }
    sparsekit_sys::remap::ficlonerange(src, src_offset, length, dst, dst_offset)
        .map_err(|errno| CloneError::from_errno("FICLONERANGE", errno))
}
