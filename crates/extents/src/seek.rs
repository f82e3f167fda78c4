//! `lseek(SEEK_DATA)` / `lseek(SEEK_HOLE)` walker: one syscall per extent boundary.

use crate::{Extent, ExtentKind, MapError};
use rustix::fd::BorrowedFd;
use rustix::fs::{SeekFrom, seek};
use rustix::io::Errno;

#[derive(Debug, Default)]
pub(crate) struct SeekWalker {
    /// Where the last SEEK_DATA found data, so the next step starts with
    /// SEEK_HOLE instead of asking again.
    data_at: Option<u64>,
}

impl SeekWalker {
    /// The extent starting at `pos`, clipped to `end`.
    pub(crate) fn next(
        &mut self,
        fd: BorrowedFd<'_>,
        pos: u64,
        end: u64,
    ) -> Result<Extent, MapError> {
        let data = match self.data_at.take() {
            Some(d) if d >= pos => d,
            _ => match seek(fd, SeekFrom::Data(pos)) {
                Ok(d) => d,
                // No data at or after `pos`: the rest is a hole.
                Err(Errno::NXIO) => end,
                Err(e) => return Err(MapError::io("lseek(SEEK_DATA)", pos, e)),
            },
        };
        if data > pos {
            let hole_end = data.min(end);
            if data < end {
                self.data_at = Some(data);
            }
            return Ok(Extent::new(pos..hole_end, ExtentKind::Hole));
        }
        let hole = match seek(fd, SeekFrom::Hole(pos)) {
            Ok(h) => h,
            // The file shrank below `pos` between the two calls.
            Err(Errno::NXIO) => return Ok(Extent::new(pos..end, ExtentKind::Hole)),
            Err(e) => return Err(MapError::io("lseek(SEEK_HOLE)", pos, e)),
        };
        if hole <= pos {
            // Only possible if the file changed under us; never loop.
            return Ok(Extent::new(pos..end, ExtentKind::Hole));
        }
        Ok(Extent::new(pos..hole.min(end), ExtentKind::Data))
    }
}
