//! Holes on a block device by `BLKDISCARD`, used only where this device was
//! seen to zero what it discards.
//!
//! Discard is the cheapest way to clear a range of a thin device (one
//! command, nothing written, the blocks freed), but a device may accept it
//! and keep the data: qemu-nbd's default `--discard=ignore` does, and the
//! kernel stopped promising zeros after discard in Linux 4.12
//! (`discard_zeroes_data` reads 0). So the first discard of a copy is a
//! trial: one granule of the hole is filled with a pattern, written back,
//! discarded and read back; only zeros make discard the hole method. After
//! that every discarded range is checked again at its first and last
//! granule, and a range that does not read zero goes to the next method
//! (the range is never left holding old data). Pieces of a hole smaller
//! than the device's discard granularity, which a device may ignore, are
//! written with zeros instead.

use crate::buffer::Buffer;
use rustix::fd::BorrowedFd;
use rustix::io::Errno;
use sparsekit_sys::blkdev::{QueueLimits, blkdiscard};
use sparsekit_sys::pagecache::{SyncFileRangeFlags, sync_file_range};
use std::ops::Range;

/// What one discard did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Discarded {
    /// The middle reads as zeros (or was empty); the edges still need zeros.
    Done {
        /// The unaligned pieces at either end, for the caller to zero.
        edges: [Range<u64>; 2],
    },
    /// `BLKDISCARD` succeeded but `at` does not read as zeros: this device
    /// keeps discarded data, discard cannot make holes here.
    KeptData {
        /// Where the old data showed.
        at: u64,
    },
}

/// The discard state of one copy's destination.
pub(crate) struct Discarder {
    granule: u64,
    verified: bool,
    buf: Buffer,
}

impl Discarder {
    /// For the device open as `fd`, with logical block size `block`.
    pub(crate) fn new(fd: BorrowedFd<'_>, block: u64) -> Self {
        let limits = QueueLimits::of(fd).unwrap_or_default();
        let granule = granule(block, limits.discard_granularity);
        Discarder {
            granule,
            verified: false,
            buf: Buffer::new(granule as usize),
        }
    }

    /// Discards the granule-aligned middle of `range` (trying the device
    /// first, once) and checks it reads back as zeros.
    ///
    /// # Errors
    /// The failed call, its offset and errno (`EOPNOTSUPP`: no discard).
    pub(crate) fn discard(
        &mut self,
        fd: BorrowedFd<'_>,
        range: Range<u64>,
    ) -> Result<Discarded, (&'static str, u64, Errno)> {
        let (mid, edges) = split(range, self.granule);
        if mid.is_empty() {
            return Ok(Discarded::Done { edges });
        }
        let g = self.granule;
        if !self.verified {
            // The trial: a pattern that must be on the device before the
            // discard (which drops the range's page cache, dirty or not).
            self.buf.as_mut_slice().fill(0xa5);
            write_all(fd, self.buf.as_slice(), mid.start).map_err(|(at, e)| ("pwrite", at, e))?;
            let all = SyncFileRangeFlags::WAIT_BEFORE
                | SyncFileRangeFlags::WRITE
                | SyncFileRangeFlags::WAIT_AFTER;
            sync_file_range(fd, mid.start, g, all)
                .map_err(|e| ("sync_file_range", mid.start, e))?;
            blkdiscard(fd, mid.start, g).map_err(|e| ("ioctl(BLKDISCARD)", mid.start, e))?;
            if !self.reads_zero(fd, mid.start)? {
                return Ok(Discarded::KeptData { at: mid.start });
            }
            self.verified = true;
        }
        blkdiscard(fd, mid.start, mid.end - mid.start)
            .map_err(|e| ("ioctl(BLKDISCARD)", mid.start, e))?;
        for at in [mid.start, mid.end - g] {
            if !self.reads_zero(fd, at)? {
                return Ok(Discarded::KeptData { at });
            }
        }
        Ok(Discarded::Done { edges })
    }

    fn reads_zero(
        &mut self,
        fd: BorrowedFd<'_>,
        at: u64,
    ) -> Result<bool, (&'static str, u64, Errno)> {
        let buf = self.buf.as_mut_slice();
        let mut done = 0;
        while done < buf.len() {
            match rustix::io::pread(fd, &mut buf[done..], at + done as u64) {
                Ok(0) => return Err(("pread", at + done as u64, Errno::NXIO)),
                Ok(n) => done += n,
                Err(Errno::INTR) => {}
                Err(e) => return Err(("pread", at + done as u64, e)),
            }
        }
        Ok(sparsekit_extents::is_zero(buf))
    }
}

/// The discard unit: the device's granularity, at least and a multiple of
/// the logical block, and at least 4 KiB (a page, so O_DIRECT reads align).
fn granule(block: u64, discard_granularity: Option<u64>) -> u64 {
    let block = block.max(512);
    discard_granularity
        .unwrap_or(0)
        .max(4096)
        .next_multiple_of(block)
}

/// `range` split into its granule-aligned middle and the two edges.
fn split(range: Range<u64>, granule: u64) -> (Range<u64>, [Range<u64>; 2]) {
    let start = range.start.next_multiple_of(granule).min(range.end);
    let end = (range.end / granule * granule).max(start);
    (start..end, [range.start..start, end..range.end])
}

fn write_all(fd: BorrowedFd<'_>, buf: &[u8], off: u64) -> Result<(), (u64, Errno)> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsFd;

    #[test]
    fn the_granule_is_block_aligned_and_at_least_a_page() {
        assert_eq!(granule(512, None), 4096);
        assert_eq!(granule(512, Some(0)), 4096);
        assert_eq!(granule(512, Some(65536)), 65536);
        assert_eq!(granule(4096, Some(512)), 4096);
        assert_eq!(granule(8192, Some(4096)), 8192);
    }

    #[test]
    fn split_keeps_whole_granules_and_tiles_the_range() {
        assert_eq!(split(0..8192, 4096), (0..8192, [0..0, 8192..8192]));
        assert_eq!(
            split(100..9000, 4096),
            (4096..8192, [100..4096, 8192..9000])
        );
        // Less than a granule: nothing to discard, all edge.
        assert_eq!(
            split(100..4000, 4096),
            (4000..4000, [100..4000, 4000..4000])
        );
        assert_eq!(
            split(4000..4200, 4096),
            (4096..4096, [4000..4096, 4096..4200])
        );
    }

    #[test]
    fn a_regular_file_refuses_discard_and_keeps_its_data() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(1 << 20).unwrap();
        let mut d = Discarder::new(f.as_fd(), 512);
        assert_eq!(d.granule, 4096);
        let err = d.discard(f.as_fd(), 0..65536).unwrap_err();
        assert_eq!(err.0, "ioctl(BLKDISCARD)");
        assert_eq!(err.2, Errno::NOTTY);
        assert!(!d.verified);
        // A range under one granule needs no call at all.
        assert_eq!(
            d.discard(f.as_fd(), 10..20).unwrap(),
            Discarded::Done {
                edges: [10..20, 20..20]
            }
        );
    }
}
