//! `ioctl(fd, FS_IOC_FIEMAP, struct fiemap *)`—Maps a file's logical ranges to
//! its physical extents, in batches.
//!
//! # References
//! - Linux `Documentation/filesystems/fiemap.rst`
//! - `include/uapi/linux/fiemap.h` (since Linux 2.6.28; `SHARED` since 2.6.36)
#![allow(unsafe_code)]

use rustix::fd::AsFd;
use rustix::io;
use rustix::ioctl::{Updater, ioctl};

/// `FS_IOC_FIEMAP` = `_IOWR('f', 11, struct fiemap)`.
const FS_IOC_FIEMAP: rustix::ioctl::Opcode = 0xC020_660B;

/// `FIEMAP_FLAG_SYNC`: write back dirty pages before mapping, so delalloc and
/// dirty-unwritten extents are reported as what the data will be.
pub const FIEMAP_FLAG_SYNC: u32 = 0x1;

/// `fe_flags` bits (`include/uapi/linux/fiemap.h`).
pub mod extent_flags {
    /// Last extent in the file.
    pub const LAST: u32 = 0x1;
    /// Data location unknown.
    pub const UNKNOWN: u32 = 0x2;
    /// Location still pending (delayed allocation); sets UNKNOWN.
    pub const DELALLOC: u32 = 0x4;
    /// Data cannot be read while the filesystem is unmounted (compressed…).
    pub const ENCODED: u32 = 0x8;
    /// Data is encrypted by the filesystem; sets ENCODED.
    pub const DATA_ENCRYPTED: u32 = 0x80;
    /// Extent offsets may not be block aligned.
    pub const NOT_ALIGNED: u32 = 0x100;
    /// Data mixed with metadata (inline); sets NOT_ALIGNED.
    pub const DATA_INLINE: u32 = 0x200;
    /// Multiple files in one block (tail packing); sets NOT_ALIGNED.
    pub const DATA_TAIL: u32 = 0x400;
    /// Space allocated but not written (reads as zeros).
    pub const UNWRITTEN: u32 = 0x800;
    /// File does not natively support extents; result merged for efficiency.
    pub const MERGED: u32 = 0x1000;
    /// Space shared with other files (reflink, dedupe, snapshot).
    pub const SHARED: u32 = 0x2000;
}

/// One `struct fiemap_extent`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FiemapExtent {
    /// Byte offset of the extent in the file.
    pub logical: u64,
    /// Byte offset of the extent on disk.
    pub physical: u64,
    /// Length in bytes.
    pub length: u64,
    reserved64: [u64; 2],
    /// `FIEMAP_EXTENT_*` bits, see [`extent_flags`].
    pub flags: u32,
    reserved: [u32; 3],
}

/// How many extents one FIEMAP call can return with [`FiemapBuffer`]: enough
/// that a fragmented file needs one call per few hundred extents, small
/// enough (28 KiB) to stay in L1/L2.
pub const FIEMAP_BATCH: usize = 512;

#[repr(C)]
struct FiemapRaw {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [FiemapExtent; FIEMAP_BATCH],
}

/// A reusable buffer for [`fiemap`]: the header plus [`FIEMAP_BATCH`] extents.
pub struct FiemapBuffer {
    raw: Box<FiemapRaw>,
}

impl std::fmt::Debug for FiemapBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FiemapBuffer")
            .field("mapped_extents", &self.raw.mapped_extents)
            .finish_non_exhaustive()
    }
}

impl FiemapBuffer {
    /// The extents the last successful [`fiemap`] call returned.
    pub fn extents(&self) -> &[FiemapExtent] {
        let n = (self.raw.mapped_extents as usize).min(FIEMAP_BATCH);
        &self.raw.extents[..n]
    }
}

impl Default for FiemapBuffer {
    fn default() -> Self {
        Self {
            raw: Box::new(FiemapRaw {
                start: 0,
                length: 0,
                flags: 0,
                mapped_extents: 0,
                extent_count: 0,
                reserved: 0,
                extents: [FiemapExtent::default(); FIEMAP_BATCH],
            }),
        }
    }
}

/// `ioctl(fd, FS_IOC_FIEMAP, {fm_start: start, fm_length: length, fm_flags: flags})`—
/// Returns up to [`FIEMAP_BATCH`] extents overlapping `start..start+length`.
///
/// Extents may begin before `start` and end after `start + length`; the
/// caller clips. Fewer than a full batch with no `LAST` flag means the range
/// holds no more extents.
///
/// # Errors
/// `EOPNOTSUPP` (tmpfs, many FUSE and network filesystems), `ENOTTY` (no
/// `fiemap` operation), `EBADR` for unsupported `flags`, `EINVAL` for bad ranges.
///
/// # References
/// - [Documentation/filesystems/fiemap.rst](https://www.kernel.org/doc/html/latest/filesystems/fiemap.html)
#[doc(alias = "FS_IOC_FIEMAP")]
pub fn fiemap<Fd: AsFd>(
    fd: Fd,
    start: u64,
    length: u64,
    flags: u32,
    buf: &mut FiemapBuffer,
) -> io::Result<&[FiemapExtent]> {
    let raw = &mut *buf.raw;
    raw.start = start;
    raw.length = length;
    raw.flags = flags;
    raw.mapped_extents = 0;
    raw.extent_count = FIEMAP_BATCH as u32;
    raw.reserved = 0;
    // SAFETY: `FiemapRaw` is laid out as `struct fiemap` followed by
    // `extent_count` `struct fiemap_extent`s, which is exactly what
    // FS_IOC_FIEMAP reads and writes; the kernel never writes more than
    // `extent_count` extents.
    unsafe { ioctl(fd, Updater::<FS_IOC_FIEMAP, FiemapRaw>::new(raw))? };
    Ok(buf.extents())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_uapi_header() {
        assert_eq!(std::mem::size_of::<FiemapExtent>(), 56);
        assert_eq!(std::mem::offset_of!(FiemapRaw, extents), 32);
    }
}
