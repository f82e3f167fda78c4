//! Read-and-scan walker: all-zero blocks are reported as holes.

use crate::zero::is_zero;
use crate::{Extent, ExtentKind, MapError};
use rustix::fd::BorrowedFd;
use rustix::io::{Errno, pread};

/// Bytes read per `pread`: large enough to stream, small enough to stay lean.
pub(crate) const SCAN_BUFFER: usize = 1 << 20;

#[derive(Debug)]
pub(crate) struct ScanWalker {
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_off: u64,
    /// Valid bytes in `buf`.
    buf_len: usize,
    block: u64,
}

impl ScanWalker {
    pub(crate) fn new(block: u64) -> Self {
        ScanWalker {
            buf: vec![0; SCAN_BUFFER],
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
        // End the buffer on a block boundary so no block is split across reads.
        let mut want = (end - at).min(SCAN_BUFFER as u64);
        let aligned_end = (at + want) / self.block * self.block;
        if at + want < end && aligned_end > at {
            want = aligned_end - at;
        }
        let want = want as usize;
        let mut got = 0;
        while got < want {
            match pread(fd, &mut self.buf[got..want], at + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(MapError::io("pread", at + got as u64, e)),
            }
        }
        self.buf_off = at;
        self.buf_len = got;
        Ok(got > 0)
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
            let k = if is_zero(&self.buf[lo..hi]) {
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
