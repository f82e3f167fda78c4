//! The `copy_file_range` strategy: the kernel moves each data extent (and
//! may share extents on xfs and btrfs, or offload to an NFS server); holes
//! go through the same [`Dest::hole`] as the pipeline's.

use crate::endpoint::{Dest, Source};
use crate::error::CopyError;
use crate::interrupt::Interrupt;
use crate::options::ProgressFn;
use crate::plan::{Piece, Planner};
use crate::report::Progress;
use rustix::fs::copy_file_range;
use rustix::io::Errno;

/// Bytes per call: big enough that the syscall cost vanishes, small enough
/// that an interrupt or progress report is never far away.
const CHUNK: u64 = 64 << 20;

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Done,
    /// The very first call said `copy_file_range` does not work between
    /// these files, before any byte was copied: fall back.
    Unsupported(Errno),
}

pub(crate) struct CopyFileRange<'p> {
    pub(crate) progress: Option<&'p ProgressFn>,
    pub(crate) data_total: u64,
    pub(crate) interrupt: Option<&'p Interrupt>,
}

impl CopyFileRange<'_> {
    /// `copied_any` persists across passes: once a byte moved, errors are
    /// errors.
    pub(crate) fn run(
        &self,
        mut planner: Planner<'_>,
        src: &Source<'_>,
        dst: &mut Dest<'_>,
        copied_any: &mut bool,
        data_done: &mut u64,
    ) -> Result<Outcome, CopyError> {
        while let Some(job) = planner.next_job() {
            let job = job.map_err(|e| CopyError::Map {
                path: src.path.to_owned(),
                source: e,
            })?;
            for piece in job.pieces {
                match piece {
                    Piece::Hole { off, len, detected } => dst.hole(off, len, detected)?,
                    Piece::Data { off, len, .. } => {
                        if let Outcome::Unsupported(e) =
                            self.copy(src, dst, off, off + len, copied_any, data_done)?
                        {
                            return Ok(Outcome::Unsupported(e));
                        }
                    }
                }
            }
        }
        Ok(Outcome::Done)
    }

    fn copy(
        &self,
        src: &Source<'_>,
        dst: &mut Dest<'_>,
        start: u64,
        end: u64,
        copied_any: &mut bool,
        data_done: &mut u64,
    ) -> Result<Outcome, CopyError> {
        let end = end.min(src.size);
        let mut pos = start;
        while pos < end {
            if self.interrupt.is_some_and(Interrupt::is_triggered) {
                return Err(CopyError::Interrupted {
                    path: dst.path.to_owned(),
                });
            }
            let want = (end - pos).min(CHUNK);
            let io_err = |errno| CopyError::Io {
                path: dst.path.to_owned(),
                op: "copy_file_range",
                offset: Some(pos),
                errno,
            };
            #[cfg(any(test, feature = "fault-injection"))]
            crate::fault::write(pos..pos + want).map_err(io_err)?;
            let (mut off_in, mut off_out) = (pos, pos);
            match copy_file_range(
                src.fd,
                Some(&mut off_in),
                dst.fd,
                Some(&mut off_out),
                want as usize,
            ) {
                // Nothing at a place the map says holds data: procfs-like
                // files before any progress, a shrunk source after.
                Ok(0) if !*copied_any => return Ok(Outcome::Unsupported(Errno::OPNOTSUPP)),
                Ok(0) => {
                    return Err(CopyError::SourceChanged {
                        path: src.path.to_owned(),
                    });
                }
                Ok(n) => {
                    *copied_any = true;
                    dst.copied_externally(pos..pos + n as u64)?;
                    src.cache.read_done(src.fd, pos..pos + n as u64);
                    pos += n as u64;
                    *data_done += n as u64;
                    if let Some(progress) = self.progress {
                        progress(&Progress {
                            data_done: (*data_done).min(self.data_total),
                            data_total: self.data_total,
                        });
                    }
                }
                Err(Errno::INTR) => {}
                // The workspace's "unsupported" set, widened by EXDEV: no
                // copy_file_range between these two filesystems (kernels
                // before 5.3, and again from 5.19 across superblocks).
                Err(e)
                    if !*copied_any && (sparsekit_sys::is_unsupported(e) || e == Errno::XDEV) =>
                {
                    return Ok(Outcome::Unsupported(e));
                }
                // KERNEL-NOTES: EOVERFLOW may come mid-copy; move this chunk
                // by read/write and carry on.
                Err(Errno::OVERFLOW) => {
                    let mut buf = crate::buffer::Buffer::new(want as usize);
                    src.read_at(buf.as_mut_slice(), pos)?;
                    dst.write_data(buf.as_slice(), pos)?;
                    *copied_any = true;
                    pos += want;
                    *data_done += want;
                }
                Err(e) => return Err(io_err(e)),
            }
        }
        Ok(Outcome::Done)
    }
}
