//! `ioctl(dst, FICLONERANGE, …)` and `ioctl(src, FIDEDUPERANGE, …)`—the two
//! extent-sharing ioctls rustix does not wrap (it has `ioctl_ficlone`).
//!
//! These are thin: no alignment or file-type checks, no splitting of large
//! requests. `sparsekit-clone` builds the checked API on top.
//!
//! # References
//! - [`ioctl_ficlonerange(2)`](https://man7.org/linux/man-pages/man2/ioctl_ficlonerange.2.html)
//!   (since Linux 4.5)
//! - [`ioctl_fideduperange(2)`](https://man7.org/linux/man-pages/man2/ioctl_fideduperange.2.html)
//!   (since Linux 4.5)
//! - `include/uapi/linux/fs.h`, `fs/remap_range.c`
#![allow(unsafe_code)]

use rustix::fd::{AsFd, AsRawFd, BorrowedFd};
use rustix::io;
use rustix::ioctl::{Setter, Updater, ioctl};

/// `FICLONERANGE` = `_IOW(0x94, 13, struct file_clone_range)`.
const FICLONERANGE: rustix::ioctl::Opcode = 0x4020_940D;
/// `FIDEDUPERANGE` = `_IOWR(0x94, 54, struct file_dedupe_range)`.
const FIDEDUPERANGE: rustix::ioctl::Opcode = 0xC018_9436;

/// `FILE_DEDUPE_RANGE_SAME`: the ranges were equal and are now shared.
pub const FILE_DEDUPE_RANGE_SAME: i32 = 0;
/// `FILE_DEDUPE_RANGE_DIFFERS`: the ranges differ; nothing was changed.
pub const FILE_DEDUPE_RANGE_DIFFERS: i32 = 1;

/// The most destinations one [`fideduperange`] call takes here.
///
/// The kernel copies `struct file_dedupe_range` with its destinations into
/// one kernel allocation; older kernels refuse more than a page (`ENOMEM`),
/// which is 127 destinations with 4 KiB pages. 120 leaves headroom, as
/// duperemove does.
pub const DEDUPE_MAX_DESTINATIONS: usize = 120;

/// `struct file_clone_range`.
#[repr(C)]
#[derive(Debug)]
struct FileCloneRange {
    src_fd: i64,
    src_offset: u64,
    src_length: u64,
    dest_offset: u64,
}

/// `ioctl(dst, FICLONERANGE, {src_fd, src_offset, src_length, dest_offset})`—
/// Makes `dst[dst_offset..]` share `src[src_offset..src_offset+length]`.
///
/// A `length` of 0 means "up to the source's end of file".
///
/// # Errors
/// `EOPNOTSUPP` (no reflink on this filesystem), `EXDEV` (different
/// mounts), `EINVAL` (unaligned range, range past EOF, overlapping ranges in
/// one file, or no support), `EISDIR`, `EBADF` (`dst` not writable or
/// append-only, `src` not readable), `ETXTBSY` (a swap file), `EPERM`
/// (immutable destination).
///
/// # References
/// - [`ioctl_ficlonerange(2)`](https://man7.org/linux/man-pages/man2/ioctl_ficlonerange.2.html)
#[doc(alias = "FICLONERANGE")]
pub fn ficlonerange<S: AsFd, D: AsFd>(
    src: S,
    src_offset: u64,
    length: u64,
    dst: D,
    dst_offset: u64,
) -> io::Result<()> {
    let arg = FileCloneRange {
        src_fd: i64::from(src.as_fd().as_raw_fd()),
        src_offset,
        src_length: length,
        dest_offset: dst_offset,
    };
    // SAFETY: FICLONERANGE reads exactly one `struct file_clone_range`,
    // which `FileCloneRange` mirrors field for field (four 64-bit words),
    // and writes nothing back. `src` stays borrowed, so its fd is open for
    // the duration of the call.
    unsafe { ioctl(dst, Setter::<FICLONERANGE, FileCloneRange>::new(arg)) }
}

/// One destination of a [`fideduperange`] call: `struct file_dedupe_range_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DedupeInfo {
    dest_fd: i64,
    /// In: where in the destination the compared range starts.
    pub dest_offset: u64,
    /// Out: how many bytes are now shared.
    pub bytes_deduped: u64,
    /// Out: [`FILE_DEDUPE_RANGE_SAME`], [`FILE_DEDUPE_RANGE_DIFFERS`], or a
    /// negative errno for this destination alone.
    pub status: i32,
    reserved: u32,
}

impl DedupeInfo {
    /// A destination `fd` at `dest_offset`, with the outputs cleared.
    pub fn new(fd: BorrowedFd<'_>, dest_offset: u64) -> Self {
        Self {
            dest_fd: i64::from(fd.as_raw_fd()),
            dest_offset,
            ..Self::default()
        }
    }

    /// The destination fd number this entry names.
    pub fn dest_fd(&self) -> i64 {
        self.dest_fd
    }

    /// The status as a result: `Ok(true)` same (shared), `Ok(false)`
    /// differs, `Err(errno)` failed for this destination.
    pub fn outcome(&self) -> Result<bool, io::Errno> {
        match self.status {
            FILE_DEDUPE_RANGE_SAME => Ok(true),
            FILE_DEDUPE_RANGE_DIFFERS => Ok(false),
            s if s < 0 => Err(io::Errno::from_raw_os_error(-s)),
            // Unknown positive status: treat as "not shared", never as success.
            _ => Ok(false),
        }
    }
}

/// `struct file_dedupe_range` followed by room for the destinations.
#[repr(C)]
struct DedupeRaw {
    src_offset: u64,
    src_length: u64,
    dest_count: u16,
    reserved1: u16,
    reserved2: u32,
    info: [DedupeInfo; DEDUPE_MAX_DESTINATIONS],
}

/// `ioctl(src, FIDEDUPERANGE, {src_offset, src_length, dest_count, info[]})`—
/// Compares `src[src_offset..src_offset+length]` with each destination's
/// range and shares the extents where they are equal.
///
/// Each [`DedupeInfo`] gets its own `bytes_deduped` and `status`. The kernel
/// caps one call at 1 GiB (and some filesystems at less, shortening the
/// result), so callers loop; `bytes_deduped` says how far each got.
///
/// # Errors
/// The call as a whole fails with `EOPNOTSUPP` (no remap support on the
/// source's filesystem), `EINVAL` (source not readable, range past EOF),
/// `EISDIR`; per-destination failures land in each `status`. More than
/// [`DEDUPE_MAX_DESTINATIONS`] destinations is `E2BIG` here, before any call.
///
/// # References
/// - [`ioctl_fideduperange(2)`](https://man7.org/linux/man-pages/man2/ioctl_fideduperange.2.html)
#[doc(alias = "FIDEDUPERANGE")]
pub fn fideduperange<S: AsFd>(
    src: S,
    src_offset: u64,
    length: u64,
    destinations: &mut [DedupeInfo],
) -> io::Result<()> {
    let n = destinations.len();
    if n > DEDUPE_MAX_DESTINATIONS {
        return Err(io::Errno::TOOBIG);
    }
    let mut raw = Box::new(DedupeRaw {
        src_offset,
        src_length: length,
        dest_count: n as u16,
        reserved1: 0,
        reserved2: 0,
        info: [DedupeInfo::default(); DEDUPE_MAX_DESTINATIONS],
    });
    raw.info[..n].copy_from_slice(destinations);
    // SAFETY: `DedupeRaw` is `struct file_dedupe_range` followed by an array
    // of `struct file_dedupe_range_info`; the kernel reads and writes back
    // `offsetof(struct file_dedupe_range, info[dest_count])` bytes, and
    // `dest_count` is at most the array's length. The destination fds are
    // only numbers to the kernel: a closed one yields `EBADF` in its status.
    unsafe { ioctl(src, Updater::<FIDEDUPERANGE, DedupeRaw>::new(&mut raw))? };
    destinations.copy_from_slice(&raw.info[..n]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_uapi_header() {
        assert_eq!(std::mem::size_of::<FileCloneRange>(), 32);
        assert_eq!(std::mem::size_of::<DedupeInfo>(), 32);
        assert_eq!(std::mem::offset_of!(DedupeRaw, info), 24);
        // The opcodes carry the header sizes: 32 for file_clone_range, 24
        // for file_dedupe_range (without its flexible array).
        assert_eq!((FICLONERANGE >> 16) & 0x3fff, 32);
        assert_eq!((FIDEDUPERANGE >> 16) & 0x3fff, 24);
    }

    #[test]
    fn status_codes_map_to_outcomes() {
        let mut info = DedupeInfo::default();
        assert_eq!(info.outcome(), Ok(true));
        info.status = FILE_DEDUPE_RANGE_DIFFERS;
        assert_eq!(info.outcome(), Ok(false));
        info.status = -95;
        assert_eq!(info.outcome(), Err(io::Errno::OPNOTSUPP));
    }
}
