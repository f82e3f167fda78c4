//! The block-device trials of [`crate::blockdev`]: fill a range with a
//! pattern, make it durable, run one call, read the range back.

use crate::blockdev::ReadBack;
use crate::error::CapsError;
use rustix::fd::OwnedFd;
use rustix::fs::{Advice, FallocateFlags, Mode, OFlags};
use rustix::io::Errno;
use sparsekit_sys::blkdev::{QueueLimits, blkdiscard, blkgetsize64, blkzeroout};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One call that should leave zeros (or, for discard, may).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Discard,
    ZeroOut,
    ZeroRange,
    PunchHole,
}

/// The device under trial and the range the trials overwrite.
pub(crate) struct Device {
    fd: OwnedFd,
    path: PathBuf,
    pub(crate) limits: QueueLimits,
    /// Logical block size.
    pub(crate) block: u64,
    /// `major:minor`.
    pub(crate) rdev: String,
    /// The trial range: whole discard granules, at least 64 KiB.
    pub(crate) range: Range<u64>,
}

impl Device {
    /// Opens `path` exclusively and picks the trial range inside `scratch`.
    pub(crate) fn open(path: &Path, scratch: Range<u64>) -> Result<Device, CapsError> {
        let inspect = |op, errno| CapsError::Inspect {
            path: path.to_owned(),
            op,
            errno,
        };
        // O_EXCL on a block device: refused (EBUSY) while it is mounted or
        // claimed, so the trials never write under a filesystem.
        let fd = rustix::fs::open(
            path,
            OFlags::RDWR | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| inspect("open(O_RDWR | O_EXCL)", e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| inspect("fstat", e))?;
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::BlockDevice {
            return Err(inspect("fstat", Errno::NOTBLK));
        }
        let size = blkgetsize64(&fd).map_err(|e| inspect("ioctl(BLKGETSIZE64)", e))?;
        let limits = QueueLimits::of(&fd).unwrap_or_default();
        let block = limits.logical_block_size.unwrap_or(512).max(512);
        let granule = limits.discard_granularity.unwrap_or(0).max(block);
        let unit = (64u64 << 10).div_ceil(granule) * granule;
        let start = scratch.start.next_multiple_of(unit);
        let end = scratch.end.min(size);
        if start.checked_add(unit).is_none_or(|e| e > end) {
            return Err(CapsError::Scratch {
                path: path.to_owned(),
                op: "trial range (too small or outside the device)",
                offset: scratch.start,
                errno: Errno::INVAL,
            });
        }
        Ok(Device {
            fd,
            path: path.to_owned(),
            limits,
            block,
            rdev: format!(
                "{}:{}",
                rustix::fs::major(st.st_rdev),
                rustix::fs::minor(st.st_rdev)
            ),
            range: start..start + unit,
        })
    }

    fn scratch_err(&self, op: &'static str, offset: u64, errno: Errno) -> CapsError {
        CapsError::Scratch {
            path: self.path.clone(),
            op,
            offset,
            errno,
        }
    }

    /// Writes a pattern over the range, syncs it, runs `op`, reads back.
    /// `Ok(Err(errno))`: `op` was refused.
    pub(crate) fn run(&self, op: Op) -> Result<Result<ReadBack, Errno>, CapsError> {
        let (off, len) = (self.range.start, self.range.end - self.range.start);
        let pattern: Vec<u8> = (0..len)
            .map(|i| (i % 251) as u8 | 1 | ((op as u8) << 4))
            .collect();
        write_all(&self.fd, &pattern, off).map_err(|(at, e)| self.scratch_err("pwrite", at, e))?;
        // The pattern must be on the device before the call: the calls
        // drop the range's page cache, dirty pages included.
        rustix::fs::fsync(&self.fd).map_err(|e| self.scratch_err("fsync", off, e))?;
        let res = match op {
            Op::Discard => blkdiscard(&self.fd, off, len),
            Op::ZeroOut => blkzeroout(&self.fd, off, len),
            Op::ZeroRange => rustix::fs::fallocate(
                &self.fd,
                FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE,
                off,
                len,
            ),
            Op::PunchHole => rustix::fs::fallocate(
                &self.fd,
                FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                off,
                len,
            ),
        };
        if let Err(e) = res {
            return Ok(Err(e));
        }
        // The calls invalidate the page cache of the range; dropping it
        // again costs nothing and makes the read go to the device.
        let _ = rustix::fs::fadvise(
            &self.fd,
            off,
            std::num::NonZeroU64::new(len),
            Advice::DontNeed,
        );
        let mut got = vec![0u8; len as usize];
        read_all(&self.fd, &mut got, off).map_err(|(at, e)| self.scratch_err("pread", at, e))?;
        Ok(Ok(ReadBack::of(&got, &pattern)))
    }
}

fn write_all(fd: &OwnedFd, buf: &[u8], off: u64) -> Result<(), (u64, Errno)> {
    let mut done = 0;
    while done < buf.len() {
        let at = off + done as u64;
        match rustix::io::pwrite(fd, &buf[done..], at) {
            Ok(0) => return Err((at, Errno::NOSPC)),
            Ok(n) => done += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err((at, e)),
        }
    }
    Ok(())
}

fn read_all(fd: &OwnedFd, buf: &mut [u8], off: u64) -> Result<(), (u64, Errno)> {
    let mut done = 0;
    while done < buf.len() {
        let at = off + done as u64;
        match rustix::io::pread(fd, &mut buf[done..], at) {
            Ok(0) => return Err((at, Errno::NXIO)),
            Ok(n) => done += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err((at, e)),
        }
    }
    Ok(())
}
