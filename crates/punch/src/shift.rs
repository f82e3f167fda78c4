//! [`collapse_range`] and [`insert_range`]: native, or emulated by moving
//! the data in the safe direction.

use crate::file::{Target, align_down, align_up, check_range};
use crate::punch::{fallocate, finish, punch_in, run_chain};
use crate::{Operation, PunchError, PunchStrategy, RangeProblem, Report, ShiftStrategy};
use rustix::fd::{AsFd, BorrowedFd};
use rustix::fs::{FallocateFlags, ftruncate};
use sparsekit_extents::{Extent, ExtentKind, MapOptions};

/// Bytes moved per `pread`/`pwrite` by [`ShiftStrategy::MoveData`].
pub(crate) const MOVE_CHUNK: u64 = 1 << 20;
/// How much of the file an emulated insert maps at a time (it walks
/// backwards, and the extent map only walks forwards).
const INSERT_WINDOW: u64 = 64 << 20;

/// `fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, offset, length)`, with a
/// fallback—Removes a range and shifts the rest of the file down.
///
/// Afterwards bytes `offset..size - length` hold what
/// `offset + length..size` held, and the file is `length` bytes shorter.
/// `offset` and `length` must be multiples of the filesystem block size
/// ([`Report::block_size`]), and the range must end before the end of the
/// file (to cut a file short, truncate it).
///
/// `Auto` tries [`ShiftStrategy::Native`], then `MoveData` when the call
/// fails with `EOPNOTSUPP`, `ENOSYS`, `EINVAL` (btrfs, tmpfs, ext4 without
/// extents, xfs realtime files with larger extents…).
///
/// # Emulation and interruption
/// `MoveData` walks the extents after the range in ascending order, copies
/// each data extent down by `length` in chunks of at most 1 MiB (reading a
/// chunk before writing it, so a write never lands on bytes not yet read),
/// punches the destination of each hole (so holes stay holes and data is
/// never inflated), then truncates. It is not atomic: if it stops after
/// moving the source up to offset `p`, the file keeps its old size, bytes
/// below `p - length` hold the collapsed content and bytes from
/// `p - length` on still hold the old content; `collapse_range(p - length,
/// length)` then finishes the job, and the [`PunchError::Partial`] message
/// says so with the numbers. A crash may lose writes not yet on disk, as
/// for any `pwrite`.
///
/// # Errors
/// [`RangeProblem::Unaligned`] (naming the alignment; nothing is rounded),
/// [`RangeProblem::ReachesEof`], the bad-input errors of
/// [`punch_hole`](crate::punch_hole), and any errno from the calls.
///
/// # References
/// - [`fallocate(2)`](https://man7.org/linux/man-pages/man2/fallocate.2.html):
///   `FALLOC_FL_COLLAPSE_RANGE` since Linux 3.15 (ext4, xfs; not btrfs, tmpfs).
#[doc(alias = "FALLOC_FL_COLLAPSE_RANGE")]
pub fn collapse_range<Fd: AsFd>(
    fd: &Fd,
    offset: u64,
    length: u64,
    strategy: ShiftStrategy,
) -> Result<Report<ShiftStrategy>, PunchError> {
    collapse_chunked(fd.as_fd(), offset, length, strategy, MOVE_CHUNK)
}

/// `fallocate(fd, FALLOC_FL_INSERT_RANGE, offset, length)`, with a
/// fallback—Inserts a hole and shifts the rest of the file up.
///
/// Afterwards bytes `offset..offset + length` are a hole, bytes from
/// `offset + length` on hold what `offset..size` held, and the file is
/// `length` bytes longer. `offset` and `length` must be multiples of the
/// filesystem block size and `offset` must be inside the file (to grow a
/// file at its end, truncate it).
///
/// `Auto` tries [`ShiftStrategy::Native`], then `MoveData`, as
/// [`collapse_range`].
///
/// # Emulation and interruption
/// `MoveData` first extends the file by `length`, then walks the extents
/// from `offset` to the old end in descending order (mapping 64 MiB windows
/// from the end), copies each data extent up by `length` in chunks of at
/// most 1 MiB, highest chunk first, punches the destination of each hole,
/// and finally punches `offset..offset + length`. If it stops after moving
/// the source down to offset `q`, the file already has its new size, bytes
/// from `q + length` on hold their final content and bytes below
/// `q + length` still hold the old content; the [`PunchError::Partial`]
/// message says what is left to move.
///
/// # Errors
/// [`RangeProblem::Unaligned`], [`RangeProblem::AtOrPastEof`],
/// [`RangeProblem::Overflow`] when the new size would exceed `i64::MAX`,
/// `EFBIG` beyond the filesystem's maximum file size, and the errors of
/// [`collapse_range`].
///
/// # References
/// - [`fallocate(2)`](https://man7.org/linux/man-pages/man2/fallocate.2.html):
///   `FALLOC_FL_INSERT_RANGE` since Linux 4.1 (ext4, xfs; not btrfs, tmpfs).
#[doc(alias = "FALLOC_FL_INSERT_RANGE")]
pub fn insert_range<Fd: AsFd>(
    fd: &Fd,
    offset: u64,
    length: u64,
    strategy: ShiftStrategy,
) -> Result<Report<ShiftStrategy>, PunchError> {
    insert_chunked(fd.as_fd(), offset, length, strategy, MOVE_CHUNK)
}

/// [`collapse_range`] with a chosen chunk size (the model test uses small
/// chunks so moves cross many chunk boundaries).
pub(crate) fn collapse_chunked(
    fd: BorrowedFd<'_>,
    offset: u64,
    length: u64,
    strategy: ShiftStrategy,
    chunk: u64,
) -> Result<Report<ShiftStrategy>, PunchError> {
    let t = Target::open(fd, Operation::Collapse, false)?;
    let end = check_range(t.op, offset, length)?;
    t.check_aligned(offset, length)?;
    if end >= t.size {
        return Err(t.invalid(offset, length, RangeProblem::ReachesEof { size: t.size }));
    }
    let chunk = align_down(chunk, t.block).max(t.block);
    let (used, fallbacks, written) = run_chain(&t, strategy, |s| match s {
        ShiftStrategy::Native => fallocate(
            &t,
            ("fallocate(COLLAPSE_RANGE)", FallocateFlags::COLLAPSE_RANGE),
            offset,
            length,
        ),
        ShiftStrategy::MoveData => Ok(Mover::new(&t, chunk).collapse(offset, length)?),
        ShiftStrategy::Auto => unreachable!("chains hold no Auto"),
    })?;
    finish(&t, used, fallbacks, offset, length, written)
}

/// [`insert_range`] with a chosen chunk size.
pub(crate) fn insert_chunked(
    fd: BorrowedFd<'_>,
    offset: u64,
    length: u64,
    strategy: ShiftStrategy,
    chunk: u64,
) -> Result<Report<ShiftStrategy>, PunchError> {
    let t = Target::open(fd, Operation::Insert, false)?;
    check_range(t.op, offset, length)?;
    t.check_aligned(offset, length)?;
    if offset >= t.size {
        return Err(t.invalid(offset, length, RangeProblem::AtOrPastEof { size: t.size }));
    }
    if t.size
        .checked_add(length)
        .is_none_or(|s| s > i64::MAX as u64)
    {
        return Err(t.invalid(offset, length, RangeProblem::Overflow));
    }
    let chunk = align_down(chunk, t.block).max(t.block);
    let (used, fallbacks, written) = run_chain(&t, strategy, |s| match s {
        ShiftStrategy::Native => fallocate(
            &t,
            ("fallocate(INSERT_RANGE)", FallocateFlags::INSERT_RANGE),
            offset,
            length,
        ),
        ShiftStrategy::MoveData => Ok(Mover::new(&t, chunk).insert(offset, length)?),
        ShiftStrategy::Auto => unreachable!("chains hold no Auto"),
    })?;
    finish(&t, used, fallbacks, offset, length, written)
}

/// The data mover behind [`ShiftStrategy::MoveData`].
struct Mover<'a, 'fd> {
    t: &'a Target<'fd>,
    chunk: u64,
    buf: Vec<u8>,
    written: u64,
    changed: bool,
}

impl<'a, 'fd> Mover<'a, 'fd> {
    fn new(t: &'a Target<'fd>, chunk: u64) -> Self {
        Mover {
            t,
            chunk,
            buf: Vec::new(),
            written: 0,
            changed: false,
        }
    }

    fn map_err(&self, source: sparsekit_extents::MapError) -> PunchError {
        PunchError::Map {
            op: self.t.op,
            source,
        }
    }

    /// Copies `src..src + len` to `dst` in chunks whose offsets stay
    /// block-aligned (except at the end of the file): ascending when moving
    /// down, descending when moving up. `progress` is told the lowest (up)
    /// or highest (down) source offset fully moved after each chunk.
    fn copy(&mut self, src: u64, dst: u64, len: u64, progress: &mut u64) -> Result<(), PunchError> {
        let want = self.chunk.min(len) as usize;
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        let down = dst < src;
        let (mut lo, mut hi) = (src, src + len);
        while lo < hi {
            let (from, to) = if down {
                (lo, (lo + self.chunk).min(hi))
            } else {
                (
                    align_up(hi.saturating_sub(self.chunk), self.t.block).max(lo),
                    hi,
                )
            };
            let n = (to - from) as usize;
            self.t.read_exact(&mut self.buf[..n], from)?;
            let at = dst + (from - src);
            let result = self.t.write_all(&self.buf[..n], at);
            if let Err((e, done)) = result {
                self.written += done;
                self.changed |= done > 0;
                return Err(e);
            }
            self.changed = true;
            self.written += n as u64;
            if down {
                lo = to;
                *progress = to;
            } else {
                hi = from;
                *progress = from;
            }
        }
        Ok(())
    }

    /// Makes `offset..offset + length` a hole (or zeros where the
    /// filesystem cannot punch) in a file now `size` bytes long.
    fn hole(&mut self, offset: u64, length: u64, size: u64) -> Result<(), PunchError> {
        match punch_in(self.t, offset, length, size, PunchStrategy::Auto) {
            Ok((_, _, written)) => {
                self.changed = true;
                self.written += written;
                Ok(())
            }
            Err(e) => {
                self.changed |= e.changed_file();
                Err(e)
            }
        }
    }

    fn collapse(mut self, offset: u64, length: u64) -> Result<u64, PunchError> {
        self.t.require_in_place_writes()?;
        self.t.require_readable()?;
        let size = self.t.size;
        let mut done = offset + length;
        let result = self.collapse_steps(offset, length, &mut done);
        match result {
            Ok(()) => Ok(self.written),
            Err(e) if !self.changed => Err(e),
            Err(e) => {
                let state = if done >= size {
                    format!(
                        "all data is in place but the file keeps its old size {size}; truncating it to {} finishes the collapse",
                        size - length
                    )
                } else {
                    format!(
                        "the file keeps its size {size}; bytes below {} hold the collapsed content and bytes from {} on still hold the old content; collapsing offset {} length {length} finishes the job",
                        done - length,
                        done - length,
                        done - length
                    )
                };
                Err(e.partial(self.t.op, state))
            }
        }
    }

    fn collapse_steps(
        &mut self,
        offset: u64,
        length: u64,
        done: &mut u64,
    ) -> Result<(), PunchError> {
        let size = self.t.size;
        let fd = self.t.fd;
        let map = MapOptions::new()
            .range(offset + length..size)
            .map(&fd)
            .map_err(|e| self.map_err(e))?;
        // Destinations lie below their sources and at most up to the end of
        // the current extent, so the lazy map never sees a changed region.
        for ext in map {
            let ext = ext.map_err(|e| self.map_err(e))?;
            match ext.kind {
                ExtentKind::Data => self.copy(ext.offset, ext.offset - length, ext.length, done)?,
                ExtentKind::Hole | ExtentKind::Unwritten => {
                    self.hole(ext.offset - length, ext.length, size)?;
                    *done = ext.end();
                }
            }
        }
        *done = size;
        retry_truncate(self.t, size - length)
    }

    fn insert(mut self, offset: u64, length: u64) -> Result<u64, PunchError> {
        self.t.require_in_place_writes()?;
        self.t.require_readable()?;
        let size = self.t.size;
        let new_size = size + length;
        // Nothing has changed if this fails (EFBIG past the filesystem's limit).
        retry_truncate(self.t, new_size)?;
        let mut done = size;
        let result = self.insert_steps(offset, length, &mut done);
        match result {
            Ok(()) => Ok(self.written),
            // Nothing moved yet: shrinking back undoes the extension.
            Err(e) if !self.changed && retry_truncate(self.t, size).is_ok() => Err(e),
            Err(e) => {
                let state = if done <= offset {
                    format!(
                        "all data is in place at its new offset (the file is {new_size} bytes); punching offset {offset} length {length} finishes the insert"
                    )
                } else {
                    format!(
                        "the file is already {new_size} bytes long; bytes from {} on hold their final content and bytes below it still hold the old content; moving bytes {offset}..{done} up by {length} and punching offset {offset} length {length} finish the insert",
                        done + length
                    )
                };
                Err(e.partial(self.t.op, state))
            }
        }
    }

    fn insert_steps(&mut self, offset: u64, length: u64, done: &mut u64) -> Result<(), PunchError> {
        let new_size = self.t.size + length;
        let fd = self.t.fd;
        let mut hi = self.t.size;
        let mut window: Vec<Extent> = Vec::new();
        while hi > offset {
            let lo = align_down(hi.saturating_sub(INSERT_WINDOW), self.t.block).max(offset);
            // Everything changed so far lies at or above `hi + length`, so
            // this window's map describes untouched source.
            window.clear();
            let map = MapOptions::new()
                .range(lo..hi)
                .map(&fd)
                .map_err(|e| self.map_err(e))?;
            for ext in map {
                window.push(ext.map_err(|e| self.map_err(e))?);
            }
            for ext in window.iter().rev() {
                match ext.kind {
                    ExtentKind::Data => {
                        self.copy(ext.offset, ext.offset + length, ext.length, done)?
                    }
                    ExtentKind::Hole | ExtentKind::Unwritten => {
                        self.hole(ext.offset + length, ext.length, new_size)?;
                        *done = ext.offset;
                    }
                }
            }
            hi = lo;
        }
        *done = offset;
        self.hole(offset, length, new_size)
    }
}

fn retry_truncate(t: &Target<'_>, size: u64) -> Result<(), PunchError> {
    crate::file::retry(|| ftruncate(t.fd, size)).map_err(|errno| t.io("ftruncate", size, errno))
}
