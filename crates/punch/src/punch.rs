//! [`punch_hole`] and [`zero_range`], and the strategy chain runner all
//! operations share.

use crate::file::{Target, check_range, is_unsupported};
use crate::report::Strategy;
use crate::{Fallback, Operation, PunchError, PunchStrategy, Report, ZeroStrategy};
use rustix::fd::AsFd;
use rustix::fs::FallocateFlags;
use rustix::io::Errno;
use sparsekit_extents::{ExtentKind, MapOptions};
use std::ops::Range;

/// Zeros written per `pwrite` by the write-zeros fallbacks.
const ZERO_CHUNK: u64 = 1 << 20;

/// `fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)`,
/// with fallbacks—Makes a range read as zeros and frees its whole blocks.
///
/// The partial blocks at the edges of the range are zeroed, the whole blocks
/// inside it ([`Report::whole_blocks`]) deallocated; the file size never
/// changes, and a range reaching past the end of the file is fine.
///
/// `Auto` tries [`PunchStrategy::PunchHole`], then `ZeroRange` (reads as
/// zeros but frees nothing), then `WriteZeros` (writes zeros over the data
/// extents inside the file, leaves holes alone), moving on when a call fails
/// with `EOPNOTSUPP`, `ENOSYS`, `EINVAL`, `ENODEV` or `ENOTTY`; the report
/// says which strategy did the work and why the others were left. A forced
/// strategy that is unsupported fails with [`PunchError::Unsupported`].
///
/// # Errors
/// A zero length, an offset or length above `i64::MAX` or an end that
/// overflows it ([`PunchError::InvalidRange`]); a descriptor that is not a
/// regular file, is read-only, or (for `WriteZeros`) is in append mode;
/// any other errno from the calls. Only [`PunchError::Partial`] means the
/// file was changed.
///
/// # References
/// - [`fallocate(2)`](https://man7.org/linux/man-pages/man2/fallocate.2.html):
///   `FALLOC_FL_PUNCH_HOLE` since Linux 2.6.38 (ext4 3.0, tmpfs 3.5),
///   `FALLOC_FL_ZERO_RANGE` since Linux 3.15.
#[doc(alias = "FALLOC_FL_PUNCH_HOLE")]
#[doc(alias = "fallocate")]
pub fn punch_hole<Fd: AsFd>(
    fd: &Fd,
    offset: u64,
    length: u64,
    strategy: PunchStrategy,
) -> Result<Report<PunchStrategy>, PunchError> {
    let t = Target::open(fd.as_fd(), Operation::Punch, false)?;
    check_range(t.op, offset, length)?;
    let (used, fallbacks, written) = punch_in(&t, offset, length, t.size, strategy)?;
    finish(&t, used, fallbacks, offset, length, written)
}

/// `fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, offset, length)`,
/// with fallbacks—Makes a range read as zeros and keeps it allocated.
///
/// Only the part of the range inside the file is zeroed: the size never
/// changes and nothing is allocated past the end (truncate first to grow a
/// file). Allocated zeros let later writes into the range succeed without
/// `ENOSPC`; use [`punch_hole`] to free space instead.
///
/// `Auto` tries [`ZeroStrategy::ZeroRange`], then `PunchAndAllocate`
/// (`fallocate(FALLOC_FL_KEEP_SIZE)` to check allocation works, punch,
/// allocate again), then `WriteZeros`
/// (`pwrite` zeros over the whole range), on the same errnos as
/// [`punch_hole`].
///
/// # Errors
/// As [`punch_hole`]. A forced `PunchAndAllocate` whose allocation step
/// fails after the punch returns [`PunchError::Partial`] (the range then
/// reads as zeros but is not allocated).
///
/// # References
/// - [`fallocate(2)`](https://man7.org/linux/man-pages/man2/fallocate.2.html):
///   `FALLOC_FL_ZERO_RANGE` since Linux 3.15 (ext4, xfs; btrfs 5.x; not tmpfs).
#[doc(alias = "FALLOC_FL_ZERO_RANGE")]
pub fn zero_range<Fd: AsFd>(
    fd: &Fd,
    offset: u64,
    length: u64,
    strategy: ZeroStrategy,
) -> Result<Report<ZeroStrategy>, PunchError> {
    let t = Target::open(fd.as_fd(), Operation::Zero, false)?;
    let end = check_range(t.op, offset, length)?;
    let start = offset.min(t.size);
    let len = end.min(t.size) - start;
    let forced = !strategy.is_auto();
    let (used, fallbacks, written) = run_chain(&t, strategy, |s| {
        if len == 0 {
            // Entirely past the end: nothing reads differently, nothing to
            // do. Auto reports the trivial write_zeros (0 bytes) rather than
            // claim a native call it never made.
            return if forced { Ok(0) } else { Err(Failure::Skip) };
        }
        match s {
            ZeroStrategy::ZeroRange => fallocate(&t, ZERO_RANGE, start, len),
            ZeroStrategy::PunchAndAllocate => {
                // Allocating first changes no byte and shows whether the
                // filesystem can allocate at all (block-mapped ext4 files
                // can punch but not allocate), before the punch commits us.
                fallocate(&t, ALLOCATE, start, len)?;
                fallocate(&t, PUNCH, start, len)?;
                match t.fallocate(FallocateFlags::KEEP_SIZE, start, len) {
                    Ok(()) => Ok(0),
                    // The range already reads as zeros; WriteZeros, next in
                    // the chain, allocates it.
                    Err(errno) if is_unsupported(errno) && !forced => Err(Failure::Errno {
                        call: "fallocate(KEEP_SIZE)",
                        offset: start,
                        errno,
                    }),
                    Err(errno) => Err(Failure::Error(
                        t.io("fallocate(KEEP_SIZE)", start, errno).partial(
                            t.op,
                            format!(
                                "bytes {start}..{} read as zeros (their blocks were freed) but are not allocated again",
                                start + len
                            ),
                        ),
                    )),
                }
            }
            ZeroStrategy::WriteZeros => write_zeros(&t, start..start + len, false),
            ZeroStrategy::Auto => unreachable!("chains hold no Auto"),
        }
    })?;
    finish(&t, used, fallbacks, offset, length, written)
}

pub(crate) const PUNCH: (&str, FallocateFlags) = (
    "fallocate(PUNCH_HOLE|KEEP_SIZE)",
    FallocateFlags::PUNCH_HOLE.union(FallocateFlags::KEEP_SIZE),
);
const ALLOCATE: (&str, FallocateFlags) = ("fallocate(KEEP_SIZE)", FallocateFlags::KEEP_SIZE);
const ZERO_RANGE: (&str, FallocateFlags) = (
    "fallocate(ZERO_RANGE|KEEP_SIZE)",
    FallocateFlags::ZERO_RANGE.union(FallocateFlags::KEEP_SIZE),
);

/// One `fallocate` as a chain step: its errno stays a [`Failure::Errno`] so
/// the chain can decide whether to move on.
pub(crate) fn fallocate(
    t: &Target<'_>,
    (call, mode): (&'static str, FallocateFlags),
    offset: u64,
    length: u64,
) -> Result<u64, Failure> {
    t.fallocate(mode, offset, length)
        .map(|()| 0)
        .map_err(|errno| Failure::Errno {
            call,
            offset,
            errno,
        })
}

/// The punch chain on an open target, for [`punch_hole`] and for the holes
/// the data movers leave. `size` is the current file size (the movers change
/// it as they go).
pub(crate) fn punch_in(
    t: &Target<'_>,
    offset: u64,
    length: u64,
    size: u64,
    strategy: PunchStrategy,
) -> Result<(PunchStrategy, Vec<Fallback<PunchStrategy>>, u64), PunchError> {
    let end = offset + length;
    let inside = offset.min(size)..end.min(size);
    let forced = !strategy.is_auto();
    run_chain(t, strategy, |s| match s {
        // The whole range: past the end it frees preallocated blocks too.
        PunchStrategy::PunchHole => fallocate(t, PUNCH, offset, length),
        // ZERO_RANGE|KEEP_SIZE past the end would allocate there.
        PunchStrategy::ZeroRange if inside.is_empty() && forced => Ok(0),
        PunchStrategy::ZeroRange if inside.is_empty() => Err(Failure::Skip),
        PunchStrategy::ZeroRange => {
            fallocate(t, ZERO_RANGE, inside.start, inside.end - inside.start)
        }
        PunchStrategy::WriteZeros => write_zeros(t, inside.clone(), true),
        PunchStrategy::Auto => unreachable!("chains hold no Auto"),
    })
}

/// How one strategy of a chain failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A call failed before the strategy changed anything.
    Errno {
        call: &'static str,
        offset: u64,
        errno: Errno,
    },
    /// A final error (possibly [`PunchError::Partial`]).
    Error(PunchError),
    /// Nothing for this strategy to do here; `Auto` lets the next one
    /// report (no fallback is recorded).
    Skip,
}

impl From<PunchError> for Failure {
    fn from(e: PunchError) -> Self {
        Failure::Error(e)
    }
}

/// Runs `attempt` for each strategy of `strategy`'s chain until one
/// succeeds, moving on only when a call failed with an "unsupported" errno
/// before changing anything. Returns the strategy used, the fallbacks taken
/// and the bytes the strategy wrote.
pub(crate) fn run_chain<S: Strategy>(
    t: &Target<'_>,
    strategy: S,
    mut attempt: impl FnMut(S) -> Result<u64, Failure>,
) -> Result<(S, Vec<Fallback<S>>, u64), PunchError> {
    let chain = strategy.chain();
    let mut fallbacks = Vec::new();
    for (i, &s) in chain.iter().enumerate() {
        match attempt(s) {
            Ok(written) => return Ok((s, fallbacks, written)),
            Err(Failure::Errno { errno, .. }) if is_unsupported(errno) && i + 1 < chain.len() => {
                fallbacks.push(Fallback::new(s, errno));
            }
            Err(Failure::Errno { errno, .. }) if is_unsupported(errno) => {
                return Err(PunchError::Unsupported {
                    op: t.op,
                    strategy: s.as_str(),
                    errno,
                });
            }
            Err(Failure::Errno {
                call,
                offset,
                errno,
            }) => return Err(t.io(call, offset, errno)),
            Err(Failure::Error(e)) => return Err(e),
            Err(Failure::Skip) if i + 1 < chain.len() => {}
            Err(Failure::Skip) => return Ok((s, fallbacks, 0)),
        }
    }
    unreachable!("strategy chains are never empty")
}

/// Writes zeros over `range` (inside the file), or with `skip_holes` only
/// over its data extents. Returns the bytes written.
pub(crate) fn write_zeros(
    t: &Target<'_>,
    range: Range<u64>,
    skip_holes: bool,
) -> Result<u64, Failure> {
    if range.is_empty() {
        return Ok(0);
    }
    t.require_in_place_writes()?;
    let zeros = vec![0u8; ZERO_CHUNK.min(range.end - range.start) as usize];
    let mut written = 0u64;
    let zero = |r: Range<u64>, written: &mut u64| -> Result<(), PunchError> {
        let mut pos = r.start;
        while pos < r.end {
            let n = (r.end - pos).min(zeros.len() as u64);
            t.write_all(&zeros[..n as usize], pos)
                .map_err(|(e, done)| {
                    *written += done;
                    e
                })?;
            *written += n;
            pos += n;
        }
        Ok(())
    };
    let result = if skip_holes {
        MapOptions::new()
            .range(range.clone())
            .map(&t.fd)
            .map_err(|source| PunchError::Map { op: t.op, source })
            .and_then(|map| {
                for ext in map {
                    let ext = ext.map_err(|source| PunchError::Map { op: t.op, source })?;
                    if ext.kind == ExtentKind::Data {
                        zero(ext.range(), &mut written)?;
                    }
                }
                Ok(())
            })
    } else {
        zero(range.clone(), &mut written)
    };
    match result {
        Ok(()) => Ok(written),
        Err(e) if written == 0 => Err(e.into()),
        Err(e) => {
            let state = format!(
                "part of bytes {}..{} already reads as zeros ({written} bytes written), the rest is unchanged; rerunning finishes it",
                range.start, range.end
            );
            Err(e.partial(t.op, state).into())
        }
    }
}

/// Builds the report once a strategy succeeded.
pub(crate) fn finish<S>(
    t: &Target<'_>,
    strategy: S,
    fallbacks: Vec<Fallback<S>>,
    offset: u64,
    length: u64,
    bytes_written: u64,
) -> Result<Report<S>, PunchError> {
    let (size_after, allocated_after) = t.now()?;
    Ok(Report {
        operation: t.op,
        strategy,
        fallbacks,
        offset,
        length,
        block_size: t.block,
        size_before: t.size,
        size_after,
        allocated_before: t.allocated,
        allocated_after,
        bytes_written,
    })
}
