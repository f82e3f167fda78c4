//! FS_IOC_FIEMAP walker: one ioctl per [`FIEMAP_BATCH`] extents.

use crate::{Extent, ExtentFlags, ExtentKind, MapError};
use rustix::fd::BorrowedFd;
use rustix::io::Errno;
use sparsekit_sys::fiemap::{FIEMAP_BATCH, FIEMAP_FLAG_SYNC, FiemapBuffer, extent_flags, fiemap};

#[derive(Debug)]
pub(crate) struct FiemapWalker {
    buf: FiemapBuffer,
    /// Next unread extent of the current batch.
    idx: usize,
    /// The kernel has no extents past the current batch (LAST seen or a
    /// short batch).
    exhausted: bool,
    flags: u32,
}

impl FiemapWalker {
    /// Makes the first FIEMAP call, so an unsupported filesystem shows at once.
    pub(crate) fn start(fd: BorrowedFd<'_>, pos: u64, end: u64, sync: bool) -> Result<Self, Errno> {
        let mut w = FiemapWalker {
            buf: FiemapBuffer::default(),
            idx: 0,
            exhausted: false,
            flags: if sync { FIEMAP_FLAG_SYNC } else { 0 },
        };
        // A zero-length request is EINVAL on some filesystems; ask for one byte.
        w.fetch(fd, pos, end.max(pos + 1))?;
        Ok(w)
    }

    fn fetch(&mut self, fd: BorrowedFd<'_>, pos: u64, end: u64) -> Result<(), Errno> {
        let got = fiemap(fd, pos, end - pos, self.flags, &mut self.buf)?;
        self.exhausted = got.len() < FIEMAP_BATCH
            || got
                .last()
                .is_some_and(|e| e.flags & extent_flags::LAST != 0);
        self.idx = 0;
        Ok(())
    }

    pub(crate) fn next(
        &mut self,
        fd: BorrowedFd<'_>,
        pos: u64,
        end: u64,
    ) -> Result<Extent, MapError> {
        loop {
            if let Some(e) = self.buf.extents().get(self.idx) {
                let e_end = e.logical.saturating_add(e.length);
                if e_end <= pos {
                    self.idx += 1;
                    continue;
                }
                if e.logical > pos {
                    return Ok(Extent::new(pos..e.logical.min(end), ExtentKind::Hole));
                }
                let kind = if e.flags & extent_flags::UNWRITTEN != 0 {
                    ExtentKind::Unwritten
                } else {
                    ExtentKind::Data
                };
                let mut ext = Extent::new(pos..e_end.min(end), kind);
                ext.flags = ExtentFlags::from_bits_truncate(e.flags);
                if e_end <= end {
                    self.idx += 1;
                }
                return Ok(ext);
            }
            if self.exhausted {
                return Ok(Extent::new(pos..end, ExtentKind::Hole));
            }
            self.fetch(fd, pos, end)
                .map_err(|e| MapError::io("ioctl(FS_IOC_FIEMAP)", pos, e))?;
        }
    }
}
