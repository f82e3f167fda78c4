//! The two ends of a copy: [`Source`] reads pieces, [`Dest`] writes them
//! and makes holes in a destination that may hold old data. How each side
//! reads or writes under its cache policy is its cache type's business
//! ([`SourceCache`], [`DestCache`] in `cache.rs`); these only loop, clip,
//! count and name errors.

use crate::buffer::Buffer;
use crate::cache::{DestCache, SidePolicy, SourceCache};
use crate::error::CopyError;
use crate::interrupt::Interrupt;
use crate::modes::{HoleMethod, SparseMode};
use crate::report::{DestinationKind, Fallback};
use rustix::fd::BorrowedFd;
use rustix::fs::{FallocateFlags, fallocate};
use rustix::io::Errno;
use std::ops::Range;
use std::path::Path;

/// The source: read-only, never modified.
pub(crate) struct Source<'a> {
    pub(crate) fd: BorrowedFd<'a>,
    pub(crate) path: &'a Path,
    pub(crate) size: u64,
    /// How it reads and what it drops.
    pub(crate) cache: SourceCache,
}

impl Source<'_> {
    /// Fills `buf` from `off`. Bytes past the source's end read as zeros
    /// (a widened O_DIRECT tail); a file that ends earlier than it did when
    /// the copy began is [`CopyError::SourceChanged`].
    pub(crate) fn read_at(&self, buf: &mut [u8], off: u64) -> Result<(), CopyError> {
        let io_err = |at: u64, errno| CopyError::Io {
            path: self.path.to_owned(),
            op: self.cache.read_op(),
            offset: Some(at),
            errno,
        };
        #[cfg(any(test, feature = "fault-injection"))]
        crate::fault::read(off..off + buf.len() as u64).map_err(|e| io_err(off, e))?;
        // The kernel refuses (EINVAL) a read whose end passes i64::MAX, the
        // largest file size: a piece widened for O_DIRECT past the end of
        // such a file is read up to there, and the rest is zeros.
        let readable = (i64::MAX as u64).saturating_sub(off);
        let want = buf
            .len()
            .min(usize::try_from(readable).unwrap_or(usize::MAX));
        let mut done = 0;
        while done < want {
            let at = off + done as u64;
            match self.cache.pread(self.fd, &mut buf[done..want], at) {
                Ok(0) => break,
                Ok(n) => {
                    done += n;
                    // O_DIRECT: after a short read at the end, a read at the
                    // now unaligned offset would be EINVAL, not 0.
                    if off + done as u64 >= self.size {
                        break;
                    }
                }
                Err(Errno::INTR) => continue,
                Err(e) => return Err(io_err(at, e)),
            }
        }
        if done < buf.len() {
            if off + (done as u64) < self.size {
                return Err(CopyError::SourceChanged {
                    path: self.path.to_owned(),
                });
            }
            buf[done..].fill(0);
        }
        self.cache.read_done(self.fd, off..off + done as u64);
        Ok(())
    }
}

/// How holes are made right now (the `Auto` chain advances on the first
/// unsupported errno).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HoleAction {
    Punch,
    ZeroRange,
    ZeroOut,
    WriteZeros,
    Discard,
}

impl HoleAction {
    /// The call that makes the hole, for messages.
    fn call(self) -> &'static str {
        match self {
            HoleAction::Punch => "fallocate(PUNCH_HOLE)",
            HoleAction::ZeroRange => "fallocate(ZERO_RANGE)",
            HoleAction::ZeroOut => "ioctl(BLKZEROOUT)",
            HoleAction::WriteZeros => "pwrite",
            HoleAction::Discard => "ioctl(BLKDISCARD)",
        }
    }

    fn method(self) -> HoleMethod {
        match self {
            HoleAction::Punch => HoleMethod::Punch,
            HoleAction::ZeroRange => HoleMethod::ZeroRange,
            HoleAction::ZeroOut => HoleMethod::ZeroOut,
            HoleAction::WriteZeros => HoleMethod::WriteZeros,
            HoleAction::Discard => HoleMethod::Discard,
        }
    }
}

/// What the writer counted.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counts {
    pub(crate) copied: u64,
    pub(crate) skipped: u64,
    pub(crate) detected: u64,
    pub(crate) zeros_written: u64,
}

/// The destination: written by one thread at a time.
pub(crate) struct Dest<'a> {
    pub(crate) fd: BorrowedFd<'a>,
    pub(crate) path: &'a Path,
    /// The source's size: nothing is written at or past it.
    pub(crate) size: u64,
    pub(crate) kind: DestinationKind,
    /// Bytes of old content that holes must clear (0 for a new file).
    pub(crate) old_size: u64,
    /// How it writes and what it drops.
    cache: DestCache,
    pub(crate) sparse: SparseMode,
    /// The caller vouches the destination reads as zeros: holes are
    /// skipped instead of punched or zeroed.
    assume_zero: bool,
    pub(crate) counts: Counts,
    pub(crate) fallbacks: Vec<Fallback>,
    /// Logical block size of a block device (BLKZEROOUT alignment).
    pub(crate) block: u64,
    pub(crate) buf_size: usize,
    requested_holes: HoleMethod,
    holes: Vec<HoleAction>,
    hole_proven: bool,
    hole_used: Option<HoleAction>,
    discarder: Option<crate::discard::Discarder>,
    zeros: Option<Buffer>,
    /// Checked between the writes of zeros, whose count follows the size
    /// of holes (2^63 bytes for the largest file), not of data.
    pub(crate) interrupt: Option<Interrupt>,
}

/// How a [`Dest`] is set up: what the destination is and what the copy
/// asked for, fixed for the whole copy.
pub(crate) struct DestSettings {
    /// The source's size: nothing is written at or past it.
    pub(crate) size: u64,
    pub(crate) kind: DestinationKind,
    /// Bytes of old content that holes must clear (0 for a new file).
    pub(crate) old_size: u64,
    pub(crate) sparse: SparseMode,
    pub(crate) holes: HoleMethod,
    /// `--destination-is-zero`: skip holes instead of clearing them.
    pub(crate) assume_zero: bool,
    /// Logical block size of a block device (BLKZEROOUT alignment).
    pub(crate) block: u64,
    pub(crate) buf_size: usize,
    /// Checked between the writes of zeros.
    pub(crate) interrupt: Option<Interrupt>,
}

impl<'a> Dest<'a> {
    /// A writer with the buffered `Keep` policy until
    /// [`set_side`](Dest::set_side) gives it the resolved one.
    pub(crate) fn new(fd: BorrowedFd<'a>, path: &'a Path, settings: DestSettings) -> Self {
        let DestSettings {
            size,
            kind,
            old_size,
            sparse,
            holes,
            assume_zero,
            block,
            buf_size,
            interrupt,
        } = settings;
        let chain = match (holes, kind) {
            // fallocate(PUNCH_HOLE) on a block device is WRITE ZEROES with
            // unmap allowed and no fallback: it deallocates (a loop device
            // punches its backing file) and guarantees zeros, or fails.
            // BLKZEROOUT forbids unmapping, so it comes second. Discard,
            // cheapest of all, goes first, used only once seen to zero
            // (crate::discard).
            (HoleMethod::Auto, DestinationKind::BlockDevice) => {
                vec![
                    HoleAction::Discard,
                    HoleAction::Punch,
                    HoleAction::ZeroOut,
                    HoleAction::WriteZeros,
                ]
            }
            (HoleMethod::Auto, _) => vec![
                HoleAction::Punch,
                HoleAction::ZeroRange,
                HoleAction::WriteZeros,
            ],
            (HoleMethod::Punch, _) => vec![HoleAction::Punch],
            (HoleMethod::ZeroRange, _) => vec![HoleAction::ZeroRange],
            (HoleMethod::ZeroOut, _) => vec![HoleAction::ZeroOut],
            (HoleMethod::WriteZeros, _) => vec![HoleAction::WriteZeros],
            (HoleMethod::Discard, _) => vec![HoleAction::Discard],
        };
        Dest {
            fd,
            path,
            size,
            kind,
            old_size,
            cache: DestCache::new(SidePolicy::KEEP, buf_size),
            sparse,
            assume_zero,
            counts: Counts::default(),
            fallbacks: Vec::new(),
            block: block.max(512),
            buf_size,
            requested_holes: holes,
            holes: chain,
            hole_proven: false,
            hole_used: None,
            discarder: None,
            zeros: None,
            interrupt,
        }
    }

    /// Switches to the resolved cache policy (the destination is first set
    /// up with `Keep`, while its old header is invalidated).
    pub(crate) fn set_cache(&mut self, cache: DestCache) {
        self.cache = cache;
    }

    /// Its cache behaviour (what the report and the final sweep need).
    pub(crate) fn cache(&self) -> &DestCache {
        &self.cache
    }

    /// Makes `range` of an in-place destination read as zeros (hole methods
    /// as configured), whatever the sparse mode.
    pub(crate) fn clear(&mut self, range: Range<u64>) -> Result<(), CopyError> {
        if range.is_empty() {
            Ok(())
        } else {
            self.make_hole(range)
        }
    }

    /// The hole method used so far (`None`: no hole needed making).
    pub(crate) fn hole_method(&self) -> Option<HoleMethod> {
        self.hole_used.map(HoleAction::method)
    }

    fn io_err(&self, op: &'static str, at: u64, errno: Errno) -> CopyError {
        CopyError::Io {
            path: self.path.to_owned(),
            op,
            offset: Some(at),
            errno,
        }
    }

    /// Writes source data `buf` at `off` (clipped at the source's end).
    pub(crate) fn write_data(&mut self, buf: &[u8], off: u64) -> Result<(), CopyError> {
        let n = self.write_at(buf, off)?;
        self.counts.copied += n;
        Ok(())
    }

    /// Writes `buf` at `off`, never past the source's size, with the side's
    /// policy; unaligned pieces under O_DIRECT go buffered. Returns the
    /// bytes written.
    fn write_at(&mut self, buf: &[u8], off: u64) -> Result<u64, CopyError> {
        if off >= self.size {
            return Ok(0);
        }
        let buf = &buf[..(self.size - off).min(buf.len() as u64) as usize];
        #[cfg(any(test, feature = "fault-injection"))]
        crate::fault::write(off..off + buf.len() as u64)
            .map_err(|e| self.io_err("pwrite", off, e))?;
        let mut done = 0;
        while done < buf.len() {
            let at = off + done as u64;
            match self.cache.pwrite(self.fd, &buf[done..], at) {
                // A zero-byte write for a non-empty buffer: the device is full.
                Ok(0) => return Err(self.io_err("pwrite", at, Errno::NOSPC)),
                Ok(n) => done += n,
                Err((_, _, Errno::INTR)) => continue,
                Err((op, at, e)) => return Err(self.io_err(op, at, e)),
            }
        }
        self.cache
            .written(self.fd, off..off + done as u64)
            .map_err(|(op, at, e)| self.io_err(op, at, e))?;
        Ok(done as u64)
    }

    /// Accounts for `range` written by the kernel (`copy_file_range`):
    /// counted as copied, and handed to write-behind under `Drop`.
    pub(crate) fn copied_externally(&mut self, range: Range<u64>) -> Result<(), CopyError> {
        self.counts.copied += range.end - range.start;
        self.cache
            .written(self.fd, range)
            .map_err(|(op, at, e)| self.io_err(op, at, e))?;
        Ok(())
    }

    /// Applies a range that reads as zeros in the source.
    pub(crate) fn hole(&mut self, off: u64, len: u64, detected: bool) -> Result<(), CopyError> {
        // A detected hole widened for O_DIRECT runs past the end: not counted.
        let end = (off + len).min(self.size);
        let counted = end.saturating_sub(off);
        if detected {
            self.counts.detected += counted;
        } else {
            self.counts.skipped += counted;
        }
        if self.sparse == SparseMode::Never {
            return self.write_zeros(off..end);
        }
        if self.assume_zero {
            // Already zeros, on the caller's word: nothing to clear.
            return Ok(());
        }
        let end = match self.kind {
            DestinationKind::NewFile => return Ok(()),
            // Past the old end the file was extended with a hole already.
            DestinationKind::ExistingFile => end.min(self.old_size),
            DestinationKind::BlockDevice => end,
        };
        if off < end {
            self.make_hole(off..end)
        } else {
            Ok(())
        }
    }

    /// Writes zeros over `range` (counted as zeros written).
    pub(crate) fn write_zeros(&mut self, range: Range<u64>) -> Result<(), CopyError> {
        let zeros = self
            .zeros
            .take()
            .unwrap_or_else(|| Buffer::new(self.buf_size));
        let mut pos = range.start;
        let res = (|| {
            while pos < range.end {
                if self.interrupt.as_ref().is_some_and(Interrupt::is_triggered) {
                    return Err(CopyError::Interrupted {
                        path: self.path.to_owned(),
                    });
                }
                let n = (range.end - pos).min(zeros.len() as u64) as usize;
                let written = self.write_at(&zeros.as_slice()[..n], pos)?;
                self.counts.zeros_written += written;
                pos += n as u64;
            }
            Ok(())
        })();
        self.zeros = Some(zeros);
        res
    }

    fn make_hole(&mut self, range: Range<u64>) -> Result<(), CopyError> {
        loop {
            let action = *self
                .holes
                .first()
                .expect("the hole chain ends with a method that cannot be unsupported");
            let res = match action {
                HoleAction::Discard => match self.discard_hole(range.clone()) {
                    Ok(Some(at)) => {
                        // Accepted but not zeroed: the range goes to the
                        // next method, and discard is never tried again.
                        if self.requested_holes != HoleMethod::Auto {
                            return Err(CopyError::DiscardKeepsData {
                                path: self.path.to_owned(),
                                offset: at,
                            });
                        }
                        self.fallbacks.push(Fallback::new(
                            "holes discard (old data read back)",
                            Errno::OPNOTSUPP,
                        ));
                        self.holes.remove(0);
                        continue;
                    }
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                },
                HoleAction::WriteZeros => {
                    return self
                        .write_zeros(range)
                        .map(|()| self.hole_used = Some(action));
                }
                HoleAction::Punch => self.aligned_hole(range.clone(), action, |fd, o, l| {
                    fallocate(
                        fd,
                        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                        o,
                        l,
                    )
                }),
                HoleAction::ZeroRange => self.aligned_hole(range.clone(), action, |fd, o, l| {
                    fallocate(
                        fd,
                        FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE,
                        o,
                        l,
                    )
                }),
                HoleAction::ZeroOut => self.aligned_hole(range.clone(), action, |fd, o, l| {
                    sparsekit_sys::blkdev::blkzeroout(fd, o, l)
                }),
            };
            match res {
                Ok(()) => {
                    self.hole_proven = true;
                    self.hole_used = Some(action);
                    return Ok(());
                }
                Err((_, _, e)) if !self.hole_proven && is_unsupported(e) => {
                    if self.requested_holes != HoleMethod::Auto {
                        return Err(CopyError::HoleMethodUnsupported {
                            path: self.path.to_owned(),
                            method: self.requested_holes,
                            errno: e,
                        });
                    }
                    self.fallbacks
                        .push(Fallback::new(hole_fallback_name(action), e));
                    self.holes.remove(0);
                }
                Err((op, at, e)) => return Err(self.io_err(op, at, e)),
            }
        }
    }

    /// Discards `range` (see [`crate::discard`]) and zeros its edges;
    /// `Ok(Some(at))` when the device kept the data at `at`.
    fn discard_hole(
        &mut self,
        range: Range<u64>,
    ) -> Result<Option<u64>, (&'static str, u64, Errno)> {
        let d = self
            .discarder
            .get_or_insert_with(|| crate::discard::Discarder::new(self.fd, self.block));
        match d.discard(self.fd, range)? {
            crate::discard::Discarded::KeptData { at } => Ok(Some(at)),
            crate::discard::Discarded::Done { edges } => {
                for edge in edges.into_iter().filter(|e| !e.is_empty()) {
                    self.write_zeros(edge.clone())
                        .map_err(|e| ("pwrite", edge.start, e.errno().unwrap_or(Errno::IO)))?;
                }
                Ok(None)
            }
        }
    }

    /// Runs `op` over the part of `range` aligned to the device's logical
    /// block (block devices need it; files take any range) and writes zeros
    /// over the unaligned edges.
    fn aligned_hole(
        &mut self,
        range: Range<u64>,
        action: HoleAction,
        op: impl Fn(BorrowedFd<'_>, u64, u64) -> rustix::io::Result<()>,
    ) -> Result<(), (&'static str, u64, Errno)> {
        let name = action.call();
        #[cfg(any(test, feature = "fault-injection"))]
        crate::fault::hole(action.method()).map_err(|e| (name, range.start, e))?;
        let (mid, edges) = if self.kind == DestinationKind::BlockDevice {
            let start = range.start.next_multiple_of(self.block).min(range.end);
            let end = (range.end / self.block * self.block).max(start);
            (start..end, [range.start..start, end..range.end])
        } else {
            (
                range.clone(),
                [range.start..range.start, range.end..range.end],
            )
        };
        if !mid.is_empty() {
            op(self.fd, mid.start, mid.end - mid.start).map_err(|e| (name, mid.start, e))?;
        }
        for edge in edges {
            if !edge.is_empty() {
                self.write_zeros(edge.clone())
                    .map_err(|e| ("pwrite", edge.start, e.errno().unwrap_or(Errno::IO)))?;
            }
        }
        Ok(())
    }

    /// Before a sync: waits for write-behind and drops its last windows
    /// (`Drop`), O_DIRECT back on (`Direct`).
    pub(crate) fn finish(&mut self) -> Result<(), CopyError> {
        self.cache
            .finish(self.fd)
            .map_err(|(op, at, e)| self.io_err(op, at, e))
    }
}

fn hole_fallback_name(action: HoleAction) -> &'static str {
    match action {
        HoleAction::Punch => "holes punch",
        HoleAction::ZeroRange => "holes zero_range",
        HoleAction::ZeroOut => "holes zero_out",
        HoleAction::WriteZeros => "holes",
        HoleAction::Discard => "holes discard",
    }
}

/// Errnos that mean "this way of making holes does not exist here".
///
/// The workspace's set ([`sparsekit_sys::is_unsupported`]) widened by
/// `ENODEV`: `fallocate(2)` answers it for a file whose filesystem cannot
/// take the mode at all, and `BLKZEROOUT` for a device without the command.
fn is_unsupported(e: Errno) -> bool {
    sparsekit_sys::is_unsupported(e) || e == Errno::NODEV
}
