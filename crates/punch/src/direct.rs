//! Dig's reads with `O_DIRECT`: large requests straight from the device,
//! nothing entering the page cache, so no `posix_fadvise` per chunk and no
//! readahead beyond the data extents.
//!
//! `O_DIRECT` is switched on for the caller's open file description with
//! `fcntl(F_SETFL)` rather than by opening the file again: a second open
//! would break (or, before dig starts, forbid) the write lease that keeps
//! other writers out. The flags are restored when the [`DirectMode`] drops.

use crate::file::retry;
use rustix::fd::BorrowedFd;
use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
use rustix::io::{Errno, pread};

/// `O_DIRECT` on a descriptor for as long as this lives.
#[derive(Debug)]
pub(crate) struct DirectMode<'fd> {
    fd: BorrowedFd<'fd>,
    saved: OFlags,
}

impl<'fd> DirectMode<'fd> {
    /// Turns `O_DIRECT` on for `fd`. `EINVAL` means the filesystem has no
    /// direct I/O (tmpfs before Linux 6.6, some FUSE mounts).
    pub(crate) fn enable(fd: BorrowedFd<'fd>) -> Result<Self, Errno> {
        #[cfg(test)]
        faults::enable()?;
        let saved = retry(|| fcntl_getfl(fd))?;
        if !saved.contains(OFlags::DIRECT) {
            retry(|| fcntl_setfl(fd, saved | OFlags::DIRECT))?;
        }
        Ok(DirectMode { fd, saved })
    }

    /// Reads `n` bytes at `offset` (block-aligned) into `buf`, asking for
    /// whole blocks (`buf.len()`, a multiple of the block size, at least
    /// `n`): the end of the file may end a request early, never a
    /// block boundary. `Ok(false)` when the read came back short or the
    /// request was refused (`EINVAL`: an alignment this device does not
    /// take); the caller then reads the chunk through the page cache.
    pub(crate) fn read(&self, buf: &mut [u8], n: usize, offset: u64) -> Result<bool, Errno> {
        #[cfg(test)]
        if faults::read() {
            return Ok(false);
        }
        match retry(|| pread(self.fd, &mut *buf, offset)) {
            Ok(got) => Ok(got >= n),
            Err(Errno::INVAL) => Ok(false),
            Err(errno) => Err(errno),
        }
    }
}

impl Drop for DirectMode<'_> {
    fn drop(&mut self) {
        // Only the status flags change; the access mode is ignored.
        let _ = retry(|| fcntl_setfl(self.fd, self.saved));
    }
}

/// A zeroed buffer whose usable part starts at an `align`-byte boundary,
/// as `O_DIRECT` requires of memory.
#[derive(Debug, Default)]
pub(crate) struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// At least `len` usable bytes aligned to `align` (a power of two).
    pub(crate) fn reserve(&mut self, len: usize, align: usize) {
        if self.len >= len && self.raw.as_ptr().wrapping_add(self.start) as usize % align == 0 {
            return;
        }
        self.raw = vec![0; len + align];
        self.start = self.raw.as_ptr().align_offset(align);
        self.len = len;
    }

    pub(crate) fn as_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// Test switches: refuse `O_DIRECT`, or make direct reads come back
/// unusable, to force dig onto its page-cache path.
#[cfg(test)]
pub(crate) mod faults {
    use rustix::io::Errno;
    use std::cell::Cell;

    thread_local! {
        static REFUSE: Cell<bool> = const { Cell::new(false) };
        static SHORT_READS: Cell<bool> = const { Cell::new(false) };
    }

    /// `fcntl(F_SETFL, O_DIRECT)` fails with `EINVAL` while set.
    pub(crate) fn refuse_direct(on: bool) {
        REFUSE.with(|c| c.set(on));
    }

    /// Every direct read comes back short while set.
    pub(crate) fn short_direct_reads(on: bool) {
        SHORT_READS.with(|c| c.set(on));
    }

    pub(super) fn enable() -> Result<(), Errno> {
        if REFUSE.with(Cell::get) {
            return Err(Errno::INVAL);
        }
        Ok(())
    }

    pub(super) fn read() -> bool {
        SHORT_READS.with(Cell::get)
    }

    /// Turns both off when dropped.
    pub(crate) struct Reset;

    impl Drop for Reset {
        fn drop(&mut self) {
            refuse_direct(false);
            short_direct_reads(false);
        }
    }
}
