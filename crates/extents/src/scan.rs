//! Read-and-scan walker: all-zero blocks are reported as holes.

use crate::zero::is_zero;
use crate::{Extent, ExtentKind, MapError};
use rustix::fd::BorrowedFd;
use rustix::io::{Errno, pread};
use sparsekit_sys::aligned::{AlignedBuf, mem_align};

/// Bytes read per `pread`: large enough to stream, small enough to stay lean.
pub(crate) const SCAN_BUFFER: usize = 1 << 20;

/// Alignment of the buffer and of every read's offset and length: the
/// descriptor may be in O_DIRECT mode (compare and copy set it on theirs),
/// where an unaligned read is EINVAL. A page covers every DIO alignment.
fn align() -> u64 {
    mem_align() as u64
}

#[derive(Debug)]
pub(crate) struct ScanWalker {
    buf: AlignedBuf,
    /// File offset of `buf`'s first byte (aligned).
    buf_off: u64,
    /// Valid bytes in `buf`.
    buf_len: usize,
    block: u64,
}

impl ScanWalker {
    pub(crate) fn new(block: u64) -> Self {
        ScanWalker {
            buf: AlignedBuf::new(SCAN_BUFFER),
            buf_off: 0,
            buf_len: 0,
            block: block.clamp(512, SCAN_BUFFER as u64 / 2),
        }
    }

    /// Makes `at` readable from the buffer; false at end of file.
    fn fill(&mut self, fd: BorrowedFd<'_>, at: u64, end: u64) -> Result<bool, MapError> {
        if at >= self.buf_off && at < self.buf_off + self.buf_len as u64 {
            return Ok(true);
        }
        let align = align();
        let from = at / align * align;
        // End the buffer on a block boundary (so no block is split across
        // reads) that is also aligned for O_DIRECT.
        let step = if self.block.is_power_of_two() {
            self.block.max(align)
        } else {
            align
        };
        let mut want = (end.next_multiple_of(align) - from).min(SCAN_BUFFER as u64);
        let stepped_end = (from + want) / step * step;
        if stepped_end > at {
            want = stepped_end - from;
        }
        // The kernel refuses (EINVAL) a read whose end passes the largest
        // file size, i64::MAX, which is not aligned.
        let want = want.min(i64::MAX as u64 - from) as usize;
        let window = &mut self.buf.as_mut_slice()[..want];
        let mut got = 0;
        while got < want {
            match pread(fd, &mut window[got..], from + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(Errno::INTR) => continue,
                // O_DIRECT after a short read at the end: the next offset is
                // unaligned, and there is nothing more to read anyway.
                Err(Errno::INVAL) if got as u64 % align != 0 => break,
                Err(e) => return Err(MapError::io("pread", from + got as u64, e)),
            }
        }
        self.buf_off = from;
        self.buf_len = got;
        Ok(from + got as u64 > at)
    }

    pub(crate) fn next(
        &mut self,
        fd: BorrowedFd<'_>,
        pos: u64,
        end: u64,
    ) -> Result<Extent, MapError> {
        let mut kind = None;
        let mut run_end = pos;
        while run_end < end {
            if !self.fill(fd, run_end, end)? {
                // Short file (it shrank): what is gone reads as nothing.
                if kind.is_none() {
                    kind = Some(ExtentKind::Hole);
                    run_end = end;
                }
                break;
            }
            let buf_end = self.buf_off + self.buf_len as u64;
            let piece_end = ((run_end / self.block + 1) * self.block)
                .min(buf_end)
                .min(end);
            let lo = (run_end - self.buf_off) as usize;
            let hi = (piece_end - self.buf_off) as usize;
            let k = if is_zero(&self.buf.as_slice()[lo..hi]) {
                ExtentKind::Hole
            } else {
                ExtentKind::Data
            };
            match kind {
                None => kind = Some(k),
                Some(prev) if prev != k => break,
                Some(_) => {}
            }
            run_end = piece_end;
        }
        Ok(Extent::new(pos..run_end, kind.unwrap_or(ExtentKind::Hole)))
    }
}
