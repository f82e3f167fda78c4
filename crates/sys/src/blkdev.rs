//! Block-device ioctls rustix does not wrap: `BLKGETSIZE64`, `BLKZEROOUT`
//! and `BLKDISCARD`; and the device's discard / write-zeroes limits from
//! sysfs ([`QueueLimits`]).
//!
//! # References
//! - `include/uapi/linux/fs.h`, `block/ioctl.c`
//! - [`ioctl(2)`](https://man7.org/linux/man-pages/man2/ioctl.2.html),
//!   [`blkdiscard(8)`](https://man7.org/linux/man-pages/man8/blkdiscard.8.html)
#![allow(unsafe_code)]

use rustix::fd::AsFd;
use rustix::io;
use rustix::ioctl::{Getter, Setter, ioctl};

/// `BLKGETSIZE64` = `_IOR(0x12, 114, size_t)`.
const BLKGETSIZE64: rustix::ioctl::Opcode = 0x8008_1272;
/// `BLKDISCARD` = `_IO(0x12, 119)`; the argument is `uint64_t range[2]`.
const BLKDISCARD: rustix::ioctl::Opcode = 0x1277;
/// `BLKZEROOUT` = `_IO(0x12, 127)`; the argument is `uint64_t range[2]`.
const BLKZEROOUT: rustix::ioctl::Opcode = 0x127f;

/// `ioctl(fd, BLKGETSIZE64, &size)`—The size of a block device in bytes.
///
/// # Errors
/// `ENOTTY` when `fd` is not a block device.
///
/// # References
/// - `block/ioctl.c` (since Linux 2.4.18)
#[doc(alias = "BLKGETSIZE64")]
pub fn blkgetsize64<Fd: AsFd>(fd: Fd) -> io::Result<u64> {
    // SAFETY: BLKGETSIZE64 writes one u64 (`size_t` on 64-bit targets; the
    // kernel's compat handler writes a u64 for 32-bit callers too).
    unsafe { ioctl(fd, Getter::<BLKGETSIZE64, u64>::new()) }
}

/// `ioctl(fd, BLKZEROOUT, {offset, length})`—Makes `offset..offset+length`
/// of a block device read as zeros.
///
/// The kernel uses the device's WRITE ZEROES command where it has one,
/// with `BLKDEV_ZERO_NOUNMAP` (the blocks stay allocated: a loop device
/// uses `FALLOC_FL_ZERO_RANGE` on its backing file), and otherwise writes
/// zero pages itself, so it succeeds on any writable device. To zero and
/// deallocate, `fallocate(PUNCH_HOLE | KEEP_SIZE)` on the device issues
/// WRITE ZEROES with unmapping allowed and no fallback. The page cache of
/// the range is invalidated. `offset` and `length` must be multiples of the logical
/// block size (512 at least).
///
/// # Errors
/// `EINVAL` (unaligned or past the end of the device), `EBADF` (not open
/// for writing), `ENOTTY` (not a block device), `EIO`.
///
/// # References
/// - `block/ioctl.c` `blk_ioctl_zeroout` (since Linux 3.7)
#[doc(alias = "BLKZEROOUT")]
pub fn blkzeroout<Fd: AsFd>(fd: Fd, offset: u64, length: u64) -> io::Result<()> {
    // SAFETY: BLKZEROOUT reads `uint64_t range[2]` (start, length) through
    // the pointer and writes nothing back.
    unsafe { ioctl(fd, Setter::<BLKZEROOUT, [u64; 2]>::new([offset, length])) }
}

/// `ioctl(fd, BLKDISCARD, {offset, length})`—Discards (TRIMs / unmaps)
/// `offset..offset+length` of a block device.
///
/// Discarded blocks need not read as zeros afterwards: the kernel no longer
/// reports whether a device guarantees it (`discard_zeroes_data` reads 0
/// since Linux 4.12), so a copy that needs zeros uses [`blkzeroout`], which
/// deallocates where the device can do so safely.
///
/// # Errors
/// `EOPNOTSUPP` (no discard support), `EINVAL` (unaligned or out of range),
/// `EBADF`, `ENOTTY`.
///
/// # References
/// - `block/ioctl.c` `blk_ioctl_discard` (since Linux 2.6.28)
#[doc(alias = "BLKDISCARD")]
pub fn blkdiscard<Fd: AsFd>(fd: Fd, offset: u64, length: u64) -> io::Result<()> {
    // SAFETY: BLKDISCARD reads `uint64_t range[2]` (start, length) through
    // the pointer and writes nothing back.
    unsafe { ioctl(fd, Setter::<BLKDISCARD, [u64; 2]>::new([offset, length])) }
}

/// What a block device's request queue says about discard and write
/// zeroes, from `/sys/dev/block/MAJ:MIN/queue/` (a partition reads its
/// disk's queue). Each field is `None` where the kernel has no such file.
///
/// These are what the kernel will *send*; whether a device keeps its word
/// (does a discarded block read back as zeros?) only a trial can tell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueLimits {
    /// `logical_block_size`: the alignment of every ioctl range.
    pub logical_block_size: Option<u64>,
    /// `discard_granularity`: the unit a device can discard; a smaller or
    /// unaligned piece may be ignored.
    pub discard_granularity: Option<u64>,
    /// `discard_max_bytes`: 0 means no discard (`BLKDISCARD` is
    /// `EOPNOTSUPP`).
    pub discard_max_bytes: Option<u64>,
    /// `discard_zeroes_data`: always 0 since Linux 4.12, kept for older kernels.
    pub discard_zeroes_data: Option<u64>,
    /// `write_zeroes_max_bytes`: 0 means no WRITE ZEROES command, so
    /// `BLKZEROOUT` writes zero pages and `fallocate(PUNCH_HOLE)` fails.
    pub write_zeroes_max_bytes: Option<u64>,
    /// `write_zeroes_unmap_max_bytes` (Linux 6.16): whether WRITE ZEROES
    /// with unmap deallocates.
    pub write_zeroes_unmap_max_bytes: Option<u64>,
}

impl QueueLimits {
    /// The limits of the block device open as `fd`.
    ///
    /// # Errors
    /// `ENOTBLK` when `fd` is not a block device; `ENOENT` when sysfs is
    /// not mounted or has no queue directory for it.
    ///
    /// # References
    /// - `Documentation/ABI/stable/sysfs-block`
    pub fn of<Fd: AsFd>(fd: Fd) -> io::Result<QueueLimits> {
        let st = rustix::fs::fstat(fd)?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::BlockDevice {
            return Err(io::Errno::NOTBLK);
        }
        let (major, minor) = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
        let dev = std::path::PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
        let queue = [dev.join("queue"), dev.join("../queue")]
            .into_iter()
            .find(|q| q.is_dir())
            .ok_or(io::Errno::NOENT)?;
        Ok(QueueLimits::read(&queue))
    }

    /// Reads the limits from a `queue` directory (any directory with such
    /// files, for tests).
    pub fn read(queue: &std::path::Path) -> QueueLimits {
        let get = |name: &str| {
            std::fs::read_to_string(queue.join(name))
                .ok()
                .and_then(|s| s.trim().parse().ok())
        };
        QueueLimits {
            logical_block_size: get("logical_block_size"),
            discard_granularity: get("discard_granularity"),
            discard_max_bytes: get("discard_max_bytes"),
            discard_zeroes_data: get("discard_zeroes_data"),
            write_zeroes_max_bytes: get("write_zeroes_max_bytes"),
            write_zeroes_unmap_max_bytes: get("write_zeroes_unmap_max_bytes"),
        }
    }

    /// `name=value` pairs of the fields present, for reports
    /// (`discard_max_bytes=4294966784, …`).
    pub fn describe(&self) -> String {
        [
            ("logical_block_size", self.logical_block_size),
            ("discard_granularity", self.discard_granularity),
            ("discard_max_bytes", self.discard_max_bytes),
            ("discard_zeroes_data", self.discard_zeroes_data),
            ("write_zeroes_max_bytes", self.write_zeroes_max_bytes),
            (
                "write_zeroes_unmap_max_bytes",
                self.write_zeroes_unmap_max_bytes,
            ),
        ]
        .iter()
        .filter_map(|(n, v)| v.map(|v| format!("{n}={v}")))
        .collect::<Vec<_>>()
        .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_limits_read_what_is_there_and_refuse_a_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("discard_max_bytes"), "4096\n").unwrap();
        std::fs::write(dir.path().join("write_zeroes_max_bytes"), "0\n").unwrap();
        std::fs::write(dir.path().join("discard_granularity"), "garbage\n").unwrap();
        let l = QueueLimits::read(dir.path());
        assert_eq!(l.discard_max_bytes, Some(4096));
        assert_eq!(l.write_zeroes_max_bytes, Some(0));
        assert_eq!(l.discard_granularity, None);
        assert_eq!(l.logical_block_size, None);
        assert_eq!(
            l.describe(),
            "discard_max_bytes=4096, write_zeroes_max_bytes=0"
        );
        let f = tempfile::tempfile().unwrap();
        assert_eq!(QueueLimits::of(&f), Err(io::Errno::NOTBLK));
    }

    #[test]
    fn a_regular_file_is_not_a_block_device() {
        let f = tempfile::tempfile().unwrap();
        assert_eq!(blkgetsize64(&f), Err(io::Errno::NOTTY));
        assert_eq!(blkzeroout(&f, 0, 4096), Err(io::Errno::NOTTY));
        assert_eq!(blkdiscard(&f, 0, 4096), Err(io::Errno::NOTTY));
    }

    #[test]
    fn opcodes_match_the_uapi_header() {
        // _IOR(0x12, 114, size_t): direction read (2) and size 8 in the top bits.
        assert_eq!(BLKGETSIZE64 >> 30, 2);
        assert_eq!((BLKGETSIZE64 >> 16) & 0x3fff, 8);
        assert_eq!(BLKGETSIZE64 & 0xffff, 0x1272);
        assert_eq!(BLKZEROOUT, (0x12 << 8) | 127);
        assert_eq!(BLKDISCARD, (0x12 << 8) | 119);
    }
}
