//! [`collapse_range`] and [`insert_range`]: native, or emulated by moving
//! the data in the safe direction ([`ShiftOptions`] adds a stop flag and a
//! durable journal to the emulation, and resumes it).

use crate::file::{Target, check_range};
use crate::journal::{self, Open, Pending, ShiftJournal};
use crate::mover::{Mover, Plan};
use crate::punch::{fallocate, finish, run_chain};
use crate::{Exclusion, Operation, PunchError, RangeProblem, Report, ShiftStrategy};
use rustix::fd::AsFd;
use rustix::fs::FallocateFlags;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// Bytes moved per `pread`/`pwrite` by [`ShiftStrategy::MoveData`].
pub(crate) const MOVE_CHUNK: u64 = 1 << 20;

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
/// for any `pwrite`: to survive crashes, signals and `SIGKILL`, use
/// [`ShiftOptions`] with a [`ShiftJournal`].
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
    ShiftOptions::new(strategy).collapse(fd, offset, length)
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
    ShiftOptions::new(strategy).insert(fd, offset, length)
}

/// Collapse and insert with the emulation made interruptible and durable:
/// a stop flag checked at every segment boundary, and a [`ShiftJournal`]
/// from which [`resume`](Self::resume) finishes the operation after a
/// stop, an error, a `SIGKILL` or a crash.
///
/// # How the emulation is made durable
/// `MoveData` works in segments along the direction of the move (up from
/// `offset + length` for a collapse, down from the end for an insert).
/// Before a segment's first byte moves, the journal names it and is
/// fsynced; after the segment moved, the file is `fdatasync`ed. When
/// `length` is at least the segment size (8 MiB, or up to 64 MiB for long
/// ranges), no segment's destination overlaps its own unmoved source, so
/// redoing a half-moved segment from the file gives the same bytes. When
/// `length` is shorter, the segment's source (its data extents and their
/// bytes, checksummed) is first written into the journal, so a half-moved
/// segment is finished from there. A collapse truncates and an insert
/// punches its range only after the journal says every segment moved; the
/// journal is removed once the file is fsynced in its final state.
/// Memory is bounded by one segment (8 MiB) when the source is saved, by
/// one 1 MiB chunk otherwise.
///
/// ```no_run
/// use sparsekit_punch::{ShiftJournal, ShiftOptions, ShiftStrategy};
/// use std::sync::{Arc, atomic::AtomicBool};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let path = std::path::Path::new("disk.img");
/// let file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
/// let stop = Arc::new(AtomicBool::new(false)); // set it from a signal handler
/// let options = ShiftOptions::new(ShiftStrategy::Auto)
///     .stop_flag(stop)
///     .journal(ShiftJournal::beside(path).unwrap());
/// options.resume(&file)?; // finish what a killed run left, if anything
/// options.collapse(&file, 1 << 20, 1 << 20)?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ShiftOptions<'g> {
    strategy: ShiftStrategy,
    stop: Option<Arc<AtomicBool>>,
    exclusion: Option<&'g dyn Exclusion>,
    journal: Option<ShiftJournal>,
    chunk: u64,
    segment: Option<u64>,
}

/// What [`ShiftOptions::resume`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resumed {
    /// There was no journal: nothing was unfinished.
    Nothing,
    /// The journal held no complete record (the operation stopped while
    /// creating it, before touching the file); it was removed.
    Discarded,
    /// The recorded operation was finished.
    Finished(Report<ShiftStrategy>),
}

impl std::fmt::Debug for ShiftOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShiftOptions")
            .field("strategy", &self.strategy)
            .field("stop", &self.stop)
            .field("exclusion", &self.exclusion.is_some())
            .field("journal", &self.journal)
            .field("chunk", &self.chunk)
            .field("segment", &self.segment)
            .finish()
    }
}

impl<'g> ShiftOptions<'g> {
    /// `strategy`, no stop flag, no journal: [`collapse_range`] and
    /// [`insert_range`] as they are.
    pub fn new(strategy: ShiftStrategy) -> Self {
        ShiftOptions {
            strategy,
            stop: None,
            exclusion: None,
            journal: None,
            chunk: MOVE_CHUNK,
            segment: None,
        }
    }

    /// The emulation stops at the next segment boundary once `flag` is set
    /// (a signal handler sets it), failing with [`PunchError::Stopped`]
    /// whose message says how to finish. The native strategy is one call
    /// and is not interrupted.
    pub fn stop_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.stop = Some(flag);
        self
    }

    /// Keep other writers out while data moves: the emulation checks
    /// `guard` (a [`WriteLease`](crate::WriteLease), say) before every
    /// segment and stops with [`PunchError::LeaseBroken`] once it is broken,
    /// at a boundary where the file and the journal agree. Without a guard
    /// a process writing the file while data moves may see its write moved
    /// or overwritten.
    pub fn exclusion(mut self, guard: &'g dyn Exclusion) -> Self {
        self.exclusion = Some(guard);
        self
    }

    /// Record the emulation's progress in `journal`. An operation refuses
    /// to start while `journal` holds an unfinished one
    /// ([`PunchError::JournalPending`]).
    pub fn journal(mut self, journal: ShiftJournal) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Small chunks and segments, so tests cross many boundaries.
    #[cfg(test)]
    pub(crate) fn sizes(mut self, chunk: u64, segment: Option<u64>) -> Self {
        self.chunk = chunk;
        self.segment = segment;
        self
    }

    /// [`collapse_range`] with these options.
    pub fn collapse<Fd: AsFd>(
        &self,
        fd: &Fd,
        offset: u64,
        length: u64,
    ) -> Result<Report<ShiftStrategy>, PunchError> {
        let t = Target::open(fd.as_fd(), Operation::Collapse, false)?;
        let end = check_range(t.op, offset, length)?;
        t.check_aligned(offset, length)?;
        if end >= t.size {
            return Err(t.invalid(offset, length, RangeProblem::ReachesEof { size: t.size }));
        }
        self.run(
            &t,
            offset,
            length,
            ("fallocate(COLLAPSE_RANGE)", FallocateFlags::COLLAPSE_RANGE),
        )
    }

    /// [`insert_range`] with these options.
    pub fn insert<Fd: AsFd>(
        &self,
        fd: &Fd,
        offset: u64,
        length: u64,
    ) -> Result<Report<ShiftStrategy>, PunchError> {
        let t = Target::open(fd.as_fd(), Operation::Insert, false)?;
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
        self.run(
            &t,
            offset,
            length,
            ("fallocate(INSERT_RANGE)", FallocateFlags::INSERT_RANGE),
        )
    }

    fn run(
        &self,
        t: &Target<'_>,
        offset: u64,
        length: u64,
        native: (&'static str, FallocateFlags),
    ) -> Result<Report<ShiftStrategy>, PunchError> {
        if let Some(journal) = &self.journal {
            if let Some(pending) = journal.pending()? {
                return Err(PunchError::JournalPending {
                    op: t.op,
                    path: journal.path().to_owned(),
                    pending,
                });
            }
        }
        let (used, fallbacks, written) = run_chain(t, self.strategy, |s| match s {
            ShiftStrategy::Native => fallocate(t, native, offset, length),
            ShiftStrategy::MoveData => {
                let plan = Plan::new(t, offset, length, self.segment);
                Ok(
                    Mover::new(t, plan, self.chunk, self.stop.as_ref(), self.exclusion)
                        .fresh(self.journal.as_ref())?,
                )
            }
            ShiftStrategy::Auto => unreachable!("chains hold no Auto"),
        })?;
        finish(t, used, fallbacks, offset, length, written)
    }

    /// Finishes the collapse or insert recorded in the journal (see
    /// [`journal`](Self::journal)), on `fd`, which must be the file it was
    /// recorded for (same device and inode, and a size the operation can
    /// have left). The result has exactly the bytes the uninterrupted
    /// operation would have produced; the journal is then removed. The
    /// strategy of these options is not used: the rest is moved as it was
    /// begun.
    ///
    /// # Errors
    /// [`PunchError::InvalidOption`] without a journal;
    /// [`PunchError::JournalMismatch`] when `fd` is another file or its
    /// size does not fit the record (nothing is touched); the errors of the
    /// operation itself, and [`PunchError::Stopped`] — the journal then
    /// stays, and resuming again goes on.
    pub fn resume<Fd: AsFd>(&self, fd: &Fd) -> Result<Resumed, PunchError> {
        let Some(journal) = &self.journal else {
            return Err(PunchError::InvalidOption {
                op: Operation::Collapse,
                what: "resuming needs the journal the operation was recorded in",
            });
        };
        let Some(open) = Open::existing(journal, Operation::Collapse, rustix::fs::OFlags::RDWR)?
        else {
            return Ok(Resumed::Nothing);
        };
        let Some(header) = open.latest()? else {
            drop(open);
            journal::discard(journal, Operation::Collapse)?;
            return Ok(Resumed::Discarded);
        };
        let t = Target::open(fd.as_fd(), header.op, false)?;
        let plan = Plan::from_header(&t, &header, journal)?;
        let written = Mover::new(&t, plan, self.chunk, self.stop.as_ref(), self.exclusion)
            .resume(open, header)?;
        let report = finish(
            &t,
            ShiftStrategy::MoveData,
            Vec::new(),
            header.offset,
            header.length,
            written,
        )?;
        Ok(Resumed::Finished(report))
    }
}

/// [`ShiftJournal::pending`]'s answer, named for messages.
impl std::fmt::Display for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pending::Unstarted => f.write_str("an operation that never started"),
            Pending::Shift {
                op, offset, length, ..
            } => write!(f, "an unfinished {op} (offset {offset}, length {length})"),
        }
    }
}

/// [`collapse_range`] with a chosen chunk size (the model test uses small
/// chunks so moves cross many chunk boundaries).
#[cfg(any(test, feature = "testing"))]
pub(crate) fn collapse_chunked(
    fd: rustix::fd::BorrowedFd<'_>,
    offset: u64,
    length: u64,
    strategy: ShiftStrategy,
    chunk: u64,
) -> Result<Report<ShiftStrategy>, PunchError> {
    ShiftOptions {
        chunk,
        ..ShiftOptions::new(strategy)
    }
    .collapse(&fd, offset, length)
}

/// [`insert_range`] with a chosen chunk size.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn insert_chunked(
    fd: rustix::fd::BorrowedFd<'_>,
    offset: u64,
    length: u64,
    strategy: ShiftStrategy,
    chunk: u64,
) -> Result<Report<ShiftStrategy>, PunchError> {
    ShiftOptions {
        chunk,
        ..ShiftOptions::new(strategy)
    }
    .insert(&fd, offset, length)
}
