//! The two ends of a copy: [`Source`] reads pieces with its cache policy;
//! [`Dest`] writes them with its own, and makes holes in a destination
//! that may hold old data.

use crate::buffer::Buffer;
use crate::cache::{Residency, SidePolicy, WriteBehind, set_direct};
use crate::error::CopyError;
use crate::interrupt::Interrupt;
use crate::options::{CachePolicy, HoleMethod, SparseMode};
use crate::report::{DestinationKind, Fallback};
use rustix::fd::BorrowedFd;
use rustix::fs::{FallocateFlags, fallocate};
use rustix::io::{Errno, pread, preadv2, pwrite, pwritev2};
use sparsekit_sys::pagecache::RWF_DONTCACHE;
use std::io::{IoSlice, IoSliceMut};
use std::ops::Range;
use std::path::Path;

/// The source: read-only, never modified.
pub(crate) struct Source<'a> {
    pub(crate) fd: BorrowedFd<'a>,
    pub(crate) path: &'a Path,
    pub(crate) size: u64,
    pub(crate) side: SidePolicy,
    /// Pages cached before the copy, which `Drop` leaves alone.
    pub(crate) residency: Residency,
    #[cfg(any(test, feature = "fault-injection"))]
    pub(crate) faults: crate::fault::Faults,
}

impl Source<'_> {
    /// Fills `buf` from `off`. Bytes past the source's end read as zeros
    /// (a widened O_DIRECT tail); a file that ends earlier than it did when
    /// the copy began is [`CopyError::SourceChanged`].
    pub(crate) fn read_at(&self, buf: &mut [u8], off: u64) -> Result<(), CopyError> {
        let io_err = |at: u64, errno| CopyError::Io {
            path: self.path.to_owned(),
            op: if self.side.policy == CachePolicy::DontCache {
                "preadv2(RWF_DONTCACHE)"
            } else {
                "pread"
            },
            offset: Some(at),
            errno,
        };
        #[cfg(any(test, feature = "fault-injection"))]
        self.faults
            .check_read(off..off + buf.len() as u64)
            .map_err(|e| io_err(off, e))?;
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
            let res = if self.side.policy == CachePolicy::DontCache {
                preadv2(
                    self.fd,
                    &mut [IoSliceMut::new(&mut buf[done..want])],
                    at,
                    RWF_DONTCACHE,
                )
            } else {
                pread(self.fd, &mut buf[done..want], at)
            };
            match res {
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
        if self.side.policy == CachePolicy::Drop {
            self.residency.drop_copied(self.fd, off..off + done as u64);
        }
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
    pub(crate) side: SidePolicy,
    pub(crate) sparse: SparseMode,
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
    direct_on: bool,
    zeros: Option<Buffer>,
    behind: Option<WriteBehind>,
    /// Checked between the writes of zeros, whose count follows the size
    /// of holes (2^63 bytes for the largest file), not of data.
    pub(crate) interrupt: Option<Interrupt>,
    #[cfg(any(test, feature = "fault-injection"))]
    pub(crate) faults: crate::fault::Faults,
}

impl<'a> Dest<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        fd: BorrowedFd<'a>,
        path: &'a Path,
        size: u64,
        kind: DestinationKind,
        old_size: u64,
        side: SidePolicy,
        sparse: SparseMode,
        holes: HoleMethod,
        block: u64,
        buf_size: usize,
    ) -> Self {
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
        let behind = (side.policy == CachePolicy::Drop)
            .then(|| WriteBehind::new((4 * buf_size as u64).max(16 << 20)));
        Dest {
            fd,
            path,
            size,
            kind,
            old_size,
            side,
            sparse,
            counts: Counts::default(),
            fallbacks: Vec::new(),
            block: block.max(512),
            buf_size,
            requested_holes: holes,
            holes: chain,
            hole_proven: false,
            hole_used: None,
            discarder: None,
            direct_on: side.policy == CachePolicy::Direct,
            zeros: None,
            behind,
            interrupt: None,
            #[cfg(any(test, feature = "fault-injection"))]
            faults: crate::fault::Faults::default(),
        }
    }

    /// Switches to the resolved cache policy (the destination is first set
    /// up with `Keep`, while its old header is invalidated).
    pub(crate) fn set_side(&mut self, side: SidePolicy) {
        self.side = side;
        self.direct_on = side.policy == CachePolicy::Direct;
        self.behind = (side.policy == CachePolicy::Drop)
            .then(|| WriteBehind::new((4 * self.buf_size as u64).max(16 << 20)));
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
        self.faults
            .check_write(off..off + buf.len() as u64)
            .map_err(|e| self.io_err("pwrite", off, e))?;
        let mut done = 0;
        while done < buf.len() {
            let at = off + done as u64;
            let rest = &buf[done..];
            let res = match self.side.policy {
                CachePolicy::Direct => {
                    let a = self.side.align;
                    let aligned = at % a == 0
                        && rest.len() as u64 % a == 0
                        && rest.as_ptr() as u64 % a.min(4096) == 0;
                    if aligned != self.direct_on {
                        set_direct(self.fd, aligned)
                            .map_err(|e| self.io_err("fcntl(F_SETFL)", at, e))?;
                        self.direct_on = aligned;
                    }
                    pwrite(self.fd, rest, at)
                }
                CachePolicy::DontCache => {
                    pwritev2(self.fd, &[IoSlice::new(rest)], at, RWF_DONTCACHE)
                }
                _ => pwrite(self.fd, rest, at),
            };
            match res {
                // A zero-byte write for a non-empty buffer: the device is full.
                Ok(0) => return Err(self.io_err("pwrite", at, Errno::NOSPC)),
                Ok(n) => done += n,
                Err(Errno::INTR) => continue,
                Err(e) => {
                    let op = match self.side.policy {
                        CachePolicy::DontCache => "pwritev2(RWF_DONTCACHE)",
                        CachePolicy::Direct if self.direct_on => "pwrite(O_DIRECT)",
                        _ => "pwrite",
                    };
                    return Err(self.io_err(op, at, e));
                }
            }
        }
        if let Some(behind) = &mut self.behind {
            behind
                .written(self.fd, off..off + done as u64)
                .map_err(|(at, e)| CopyError::Io {
                    path: self.path.to_owned(),
                    op: "sync_file_range",
                    offset: Some(at),
                    errno: e,
                })?;
        }
        Ok(done as u64)
    }

    /// Accounts for `range` written by the kernel (`copy_file_range`):
    /// counted as copied, and handed to write-behind under `Drop`.
    pub(crate) fn copied_externally(&mut self, range: Range<u64>) -> Result<(), CopyError> {
        self.counts.copied += range.end - range.start;
        if let Some(behind) = &mut self.behind {
            behind
                .written(self.fd, range)
                .map_err(|(at, e)| CopyError::Io {
                    path: self.path.to_owned(),
                    op: "sync_file_range",
                    offset: Some(at),
                    errno: e,
                })?;
        }
        Ok(())
    }

    /// Applies a range that reads as zeros in the source.
    pub(crate) fn hole(&mut self, off: u64, len: u64, detected: bool) -> Result<(), CopyError> {
        if detected {
            self.counts.detected += len;
        } else {
            self.counts.skipped += len;
        }
        let end = (off + len).min(self.size);
        if self.sparse == SparseMode::Never {
            return self.write_zeros(off..end);
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
            #[cfg(any(test, feature = "fault-injection"))]
            if self.faults.unsupported_holes.contains(&action.method()) {
                if self.requested_holes != HoleMethod::Auto {
                    return Err(CopyError::HoleMethodUnsupported {
                        path: self.path.to_owned(),
                        method: self.requested_holes,
                        errno: Errno::OPNOTSUPP,
                    });
                }
                self.fallbacks.push(Fallback {
                    from: hole_fallback_name(action),
                    errno: Errno::OPNOTSUPP,
                });
                self.holes.remove(0);
                continue;
            }
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
                        self.fallbacks.push(Fallback {
                            from: "holes discard (old data read back)",
                            errno: Errno::OPNOTSUPP,
                        });
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
                HoleAction::Punch => {
                    self.aligned_hole(range.clone(), "fallocate(PUNCH_HOLE)", |fd, o, l| {
                        fallocate(
                            fd,
                            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
                            o,
                            l,
                        )
                    })
                }
                HoleAction::ZeroRange => {
                    self.aligned_hole(range.clone(), "fallocate(ZERO_RANGE)", |fd, o, l| {
                        fallocate(
                            fd,
                            FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE,
                            o,
                            l,
                        )
                    })
                }
                HoleAction::ZeroOut => {
                    self.aligned_hole(range.clone(), "ioctl(BLKZEROOUT)", |fd, o, l| {
                        sparsekit_sys::blkdev::blkzeroout(fd, o, l)
                    })
                }
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
                    self.fallbacks.push(Fallback {
                        from: hole_fallback_name(action),
                        errno: e,
                    });
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
        name: &'static str,
        op: impl Fn(BorrowedFd<'_>, u64, u64) -> rustix::io::Result<()>,
    ) -> Result<(), (&'static str, u64, Errno)> {
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

    /// Waits for write-behind and drops its last windows (`Drop`).
    pub(crate) fn finish(&mut self) -> Result<(), CopyError> {
        if self.side.policy == CachePolicy::Direct && !self.direct_on {
            set_direct(self.fd, true).map_err(|e| self.io_err("fcntl(F_SETFL)", 0, e))?;
            self.direct_on = true;
        }
        if let Some(behind) = &mut self.behind {
            behind.finish(self.fd).map_err(|(at, e)| CopyError::Io {
                path: self.path.to_owned(),
                op: "sync_file_range",
                offset: Some(at),
                errno: e,
            })?;
        }
        Ok(())
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
fn is_unsupported(e: Errno) -> bool {
    matches!(
        e,
        Errno::OPNOTSUPP | Errno::NOSYS | Errno::NOTTY | Errno::INVAL | Errno::NODEV
    )
}
