//! The page-cache side of a copy: choosing each side's policy by probing,
//! remembering which source pages were cached before, dropping what the
//! copy brought in, and measuring what is left.

use crate::buffer::{Buffer, mem_align};
use crate::error::CopyError;
use crate::interrupt::Interrupt;
use crate::modes::CachePolicy;
use crate::report::Fallback;
use rustix::fd::BorrowedFd;
use rustix::fs::{Advice, AtFlags, FileType, OFlags, StatxFlags, fadvise, fstat, statx};
use rustix::io::{Errno, pread, preadv2, pwrite, pwritev2};
use sparsekit_extents::{ExtentKind, MapOptions};
use sparsekit_sys::consts::STATX_DIO_READ_ALIGN;
use sparsekit_sys::pagecache::{
    RWF_DONTCACHE, SyncFileRangeFlags, cachestat, mincore_file, page_size, sync_file_range,
};
use std::collections::VecDeque;
use std::io::{IoSlice, IoSliceMut};
use std::num::NonZeroU64;
use std::ops::Range;
use std::path::Path;

/// Which file a policy is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Source,
    Destination,
}

/// A side's resolved policy: never `Auto`; `align` is the O_DIRECT offset
/// and length alignment (1 for the buffered policies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SidePolicy {
    pub(crate) policy: CachePolicy,
    pub(crate) align: u64,
}

impl SidePolicy {
    pub(crate) const KEEP: SidePolicy = SidePolicy {
        policy: CachePolicy::Keep,
        align: 1,
    };
    pub(crate) const DROP: SidePolicy = SidePolicy {
        policy: CachePolicy::Drop,
        align: 1,
    };
}

/// What a resolved cache policy does: the one place that maps a policy to
/// syscalls and to what is dropped when. [`SourceCache`] and
/// [`DestCache`] act on it; nothing else in the crate matches on a
/// [`CachePolicy`] to decide how to read, write or drop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Behaviour {
    /// `preadv2`/`pwritev2` with `RWF_DONTCACHE`.
    pub(crate) dontcache: bool,
    /// `O_DIRECT` on the descriptor (aligned pieces; the rest buffered).
    pub(crate) direct: bool,
    /// Source: drop the pages of each range read, except those cached
    /// before the copy.
    pub(crate) drop_each_read: bool,
    /// Destination: `sync_file_range` write-behind, dropping each window
    /// once written back.
    pub(crate) write_behind: bool,
    /// Source, after the copy: drop every page not cached before it
    /// (readahead into holes, which neither the flag nor the per-read drop
    /// covers).
    pub(crate) sweep: bool,
    /// Source, after the copy: buffered again, and the pages cached before
    /// it read back where they were evicted.
    pub(crate) rewarm: bool,
    /// Destination, after the final sync: drop all its pages.
    pub(crate) drop_written: bool,
}

impl Behaviour {
    /// `Auto` does nothing until it is resolved, like `Keep`.
    pub(crate) const fn of(policy: CachePolicy) -> Behaviour {
        let none = Behaviour {
            dontcache: false,
            direct: false,
            drop_each_read: false,
            write_behind: false,
            sweep: false,
            rewarm: false,
            drop_written: false,
        };
        match policy {
            CachePolicy::Auto | CachePolicy::Keep => none,
            CachePolicy::Drop => Behaviour {
                drop_each_read: true,
                write_behind: true,
                sweep: true,
                rewarm: true,
                drop_written: true,
                ..none
            },
            CachePolicy::Direct => Behaviour {
                direct: true,
                rewarm: true,
                drop_written: true,
                ..none
            },
            CachePolicy::DontCache => Behaviour {
                dontcache: true,
                sweep: true,
                rewarm: true,
                drop_written: true,
                ..none
            },
        }
    }

    /// Whether the policy's I/O is plain buffered I/O, which the kernel's
    /// own copy (`copy_file_range`, a splice through the page cache) can
    /// honour.
    pub(crate) const fn buffered(self) -> bool {
        !self.direct && !self.dontcache
    }
}

/// The source side's cache behaviour: how it reads, and what it leaves in
/// the page cache. Built from the resolved policy and the residency taken
/// before the first read.
#[derive(Debug)]
pub(crate) struct SourceCache {
    side: SidePolicy,
    does: Behaviour,
    /// Pages cached before the copy: they stay.
    hot: Residency,
}

impl SourceCache {
    pub(crate) fn new(side: SidePolicy, hot: Residency) -> SourceCache {
        SourceCache {
            side,
            does: Behaviour::of(side.policy),
            hot,
        }
    }

    pub(crate) fn policy(&self) -> CachePolicy {
        self.side.policy
    }

    /// The syscall [`pread`](Self::pread) makes, for messages.
    pub(crate) fn read_op(&self) -> &'static str {
        if self.does.dontcache {
            "preadv2(RWF_DONTCACHE)"
        } else {
            "pread"
        }
    }

    /// One read of `buf` at `at`.
    pub(crate) fn pread(
        &self,
        fd: BorrowedFd<'_>,
        buf: &mut [u8],
        at: u64,
    ) -> Result<usize, Errno> {
        if self.does.dontcache {
            preadv2(fd, &mut [IoSliceMut::new(buf)], at, RWF_DONTCACHE)
        } else {
            pread(fd, buf, at)
        }
    }

    /// `range` was read (by us or by the kernel's copy).
    pub(crate) fn read_done(&self, fd: BorrowedFd<'_>, range: Range<u64>) {
        if self.does.drop_each_read {
            self.hot.drop_copied(fd, range);
        }
    }

    /// After the copy: the source's page cache as it was (see
    /// [`Behaviour::sweep`] and [`Behaviour::rewarm`]). `read_buffered`: some
    /// of it was read through a buffered second descriptor, whose pages go
    /// too.
    pub(crate) fn sweep(
        &self,
        fd: BorrowedFd<'_>,
        size: u64,
        read_buffered: bool,
    ) -> Result<(), Errno> {
        if self.does.sweep || read_buffered {
            self.hot.drop_copied(fd, 0..size);
        }
        if self.does.rewarm {
            // Buffered reads from here on: the pages go to the cache.
            set_direct(fd, false)?;
            self.hot.rewarm(fd);
        }
        Ok(())
    }
}

/// The destination side's cache behaviour: how it writes, write-behind,
/// and what it drops after the final sync.
#[derive(Debug)]
pub(crate) struct DestCache {
    side: SidePolicy,
    does: Behaviour,
    /// Whether O_DIRECT is on right now (unaligned pieces go buffered).
    direct_on: bool,
    behind: Option<WriteBehind>,
}

/// A failed destination call: the syscall's name, the offset, the errno.
pub(crate) type DestFailure = (&'static str, u64, Errno);

impl DestCache {
    /// `buf_size`: the write-behind window is four requests, at least 16 MiB.
    pub(crate) fn new(side: SidePolicy, buf_size: usize) -> DestCache {
        let does = Behaviour::of(side.policy);
        DestCache {
            side,
            does,
            direct_on: does.direct,
            behind: does
                .write_behind
                .then(|| WriteBehind::new((4 * buf_size as u64).max(16 << 20))),
        }
    }

    pub(crate) fn policy(&self) -> CachePolicy {
        self.side.policy
    }

    /// One write of `buf` at `at`. Under O_DIRECT a piece that is not
    /// aligned (offset, length, memory) goes buffered, the flag switched
    /// per piece.
    pub(crate) fn pwrite(
        &mut self,
        fd: BorrowedFd<'_>,
        buf: &[u8],
        at: u64,
    ) -> Result<usize, DestFailure> {
        if self.does.direct {
            let a = self.side.align;
            let aligned =
                at % a == 0 && buf.len() as u64 % a == 0 && buf.as_ptr() as u64 % a.min(4096) == 0;
            if aligned != self.direct_on {
                set_direct(fd, aligned).map_err(|e| ("fcntl(F_SETFL)", at, e))?;
                self.direct_on = aligned;
            }
        }
        let res = if self.does.dontcache {
            pwritev2(fd, &[IoSlice::new(buf)], at, RWF_DONTCACHE)
        } else {
            pwrite(fd, buf, at)
        };
        res.map_err(|e| (self.write_op(), at, e))
    }

    fn write_op(&self) -> &'static str {
        if self.does.dontcache {
            "pwritev2(RWF_DONTCACHE)"
        } else if self.direct_on {
            "pwrite(O_DIRECT)"
        } else {
            "pwrite"
        }
    }

    /// `range` was written (by us or by the kernel's copy).
    pub(crate) fn written(
        &mut self,
        fd: BorrowedFd<'_>,
        range: Range<u64>,
    ) -> Result<(), DestFailure> {
        match &mut self.behind {
            Some(behind) => behind
                .written(fd, range)
                .map_err(|(at, e)| ("sync_file_range", at, e)),
            None => Ok(()),
        }
    }

    /// Before a sync: O_DIRECT back on, write-behind waited for.
    pub(crate) fn finish(&mut self, fd: BorrowedFd<'_>) -> Result<(), DestFailure> {
        if self.does.direct && !self.direct_on {
            set_direct(fd, true).map_err(|e| ("fcntl(F_SETFL)", 0, e))?;
            self.direct_on = true;
        }
        match &mut self.behind {
            Some(behind) => behind
                .finish(fd)
                .map_err(|(at, e)| ("sync_file_range", at, e)),
            None => Ok(()),
        }
    }

    /// After the final sync: every page of `0..size` was written by this
    /// copy, so all go (this also catches an O_DIRECT write that a
    /// filesystem did buffered, as btrfs may for checksummed files).
    pub(crate) fn synced(&self, fd: BorrowedFd<'_>, size: u64) {
        if self.does.drop_written {
            drop_all(fd, 0..size);
        }
    }
}

/// The probe writes of the destination side go at offset 0: a new file is
/// truncated back to 0 afterwards, an in-place destination has its first MiB
/// invalidated anyway and rewritten last.
pub(crate) fn resolve(
    requested: CachePolicy,
    side: Side,
    fd: BorrowedFd<'_>,
    path: &Path,
    size: u64,
    fallbacks: &mut Vec<Fallback>,
) -> Result<SidePolicy, CopyError> {
    let chain: &[CachePolicy] = match requested {
        // Direct first: in the bench (ext4 loop -> xfs loop, 6.18) it beat
        // RWF_DONTCACHE by about 10 % (source side most), and it never
        // evicts another process's cached pages either.
        CachePolicy::Auto => &[
            CachePolicy::Direct,
            CachePolicy::DontCache,
            CachePolicy::Drop,
            CachePolicy::Keep,
        ],
        CachePolicy::Keep => &[CachePolicy::Keep],
        CachePolicy::Drop => &[CachePolicy::Drop],
        CachePolicy::Direct => &[CachePolicy::Direct],
        CachePolicy::DontCache => &[CachePolicy::DontCache],
    };
    for &policy in chain {
        #[cfg(any(test, feature = "fault-injection"))]
        if let Err(errno) = crate::fault::cache(policy) {
            fallbacks_or_fail(requested, policy, side, path, errno, fallbacks)?;
            continue;
        }
        let probe = match policy {
            CachePolicy::DontCache => probe_dontcache(side, fd).map(|()| 1),
            CachePolicy::Direct => probe_direct(side, fd).and_then(|align| {
                direct_reaches_the_end(side, size, align).inspect_err(|_| {
                    let _ = set_direct(fd, false);
                })
            }),
            // Buffered I/O, fadvise and sync_file_range work on anything
            // that can be read and written.
            _ => Ok(1),
        };
        match probe {
            Ok(align) => return Ok(SidePolicy { policy, align }),
            Err(Probe::Unsupported(errno)) => {
                fallbacks_or_fail(requested, policy, side, path, errno, fallbacks)?;
            }
            Err(Probe::Failed(op, errno)) => {
                return Err(CopyError::Io {
                    path: path.to_owned(),
                    op,
                    offset: Some(0),
                    errno,
                });
            }
        }
    }
    unreachable!("Keep always resolves")
}

/// An unsupported `policy`: the next one under `Auto`, a failure when it
/// was asked for.
fn fallbacks_or_fail(
    requested: CachePolicy,
    policy: CachePolicy,
    side: Side,
    path: &Path,
    errno: Errno,
    fallbacks: &mut Vec<Fallback>,
) -> Result<(), CopyError> {
    if requested != CachePolicy::Auto {
        return Err(CopyError::CacheUnsupported {
            path: path.to_owned(),
            policy,
            errno,
        });
    }
    fallbacks.push(Fallback::new(fallback_name(policy, side), errno));
    Ok(())
}

fn fallback_name(policy: CachePolicy, side: Side) -> &'static str {
    match (policy, side) {
        (CachePolicy::DontCache, Side::Source) => "cache dontcache (source)",
        (CachePolicy::DontCache, Side::Destination) => "cache dontcache (destination)",
        (CachePolicy::Direct, Side::Source) => "cache direct (source)",
        (CachePolicy::Direct, Side::Destination) => "cache direct (destination)",
        (_, Side::Source) => "cache drop (source)",
        (_, Side::Destination) => "cache drop (destination)",
    }
}

enum Probe {
    Unsupported(Errno),
    Failed(&'static str, Errno),
}

/// One small RWF_DONTCACHE read (source) or write of zeros (destination) at
/// offset 0. The flag is checked before any data moves, so `EOPNOTSUPP`
/// means nothing happened.
fn probe_dontcache(side: Side, fd: BorrowedFd<'_>) -> Result<(), Probe> {
    let mut buf = Buffer::new(512);
    let res = match side {
        Side::Source => preadv2(
            fd,
            &mut [IoSliceMut::new(buf.as_mut_slice())],
            0,
            RWF_DONTCACHE,
        ),
        Side::Destination => pwritev2(fd, &[IoSlice::new(buf.as_slice())], 0, RWF_DONTCACHE),
    };
    match res {
        Ok(_) => Ok(()),
        // Kernels before 6.14 reject unknown RWF bits with EOPNOTSUPP too.
        // Narrower than sparsekit_sys::is_unsupported on purpose: EINVAL
        // from a 512-byte read or write at offset 0 is a real failure of
        // this file (a preadv2 that knows the flag checks nothing else),
        // and ENOTTY is no answer a read gives.
        Err(e @ (Errno::OPNOTSUPP | Errno::NOSYS)) => Err(Probe::Unsupported(e)),
        Err(e) => Err(Probe::Failed(
            if side == Side::Source {
                "preadv2(RWF_DONTCACHE)"
            } else {
                "pwritev2(RWF_DONTCACHE)"
            },
            e,
        )),
    }
}

/// O_DIRECT reads whole aligned blocks, and the kernel refuses (EINVAL) a
/// read whose end passes `i64::MAX`: the last block of a file that ends
/// within one alignment of 2^63 cannot be read that way, so such a source
/// is read buffered (writes are clipped at the size and go buffered at an
/// unaligned end anyway).
fn direct_reaches_the_end(side: Side, size: u64, align: u64) -> Result<u64, Probe> {
    if side == Side::Source && size.next_multiple_of(align) > i64::MAX as u64 {
        Err(Probe::Unsupported(Errno::INVAL))
    } else {
        Ok(align)
    }
}

/// Turns O_DIRECT on for `fd` and proves it with one aligned I/O at offset
/// 0. On failure O_DIRECT is turned off again. Returns the alignment.
fn probe_direct(side: Side, fd: BorrowedFd<'_>) -> Result<u64, Probe> {
    let align = direct_alignment(side, fd)?;
    // Narrower than sparsekit_sys::is_unsupported on purpose: only the two
    // answers open(2) documents for a filesystem without O_DIRECT.
    set_direct(fd, true).map_err(|e| match e {
        Errno::INVAL | Errno::OPNOTSUPP => Probe::Unsupported(e),
        e => Probe::Failed("fcntl(F_SETFL, O_DIRECT)", e),
    })?;
    let mut buf = Buffer::new(align as usize);
    let res = match side {
        Side::Source => pread(fd, buf.as_mut_slice(), 0).map(drop),
        Side::Destination => pwrite(fd, buf.as_slice(), 0).map(drop),
    };
    match res {
        Ok(()) => Ok(align),
        Err(e) => {
            let _ = set_direct(fd, false);
            Err(match e {
                // EINVAL: the alignment is not what the filesystem wants,
                // or it accepts the flag but not the I/O.
                Errno::INVAL | Errno::OPNOTSUPP => Probe::Unsupported(e),
                e => Probe::Failed(
                    if side == Side::Source {
                        "pread(O_DIRECT)"
                    } else {
                        "pwrite(O_DIRECT)"
                    },
                    e,
                ),
            })
        }
    }
}

/// The O_DIRECT offset alignment: `statx` `STATX_DIOALIGN` (Linux 6.1) and,
/// for reads, `STATX_DIO_READ_ALIGN` (6.16); where the filesystem does not
/// report them, the logical block size of a block device or `st_blksize`
/// of a file (the probe I/O then confirms it).
fn direct_alignment(side: Side, fd: BorrowedFd<'_>) -> Result<u64, Probe> {
    let mut mask = StatxFlags::DIOALIGN;
    if side == Side::Source {
        mask |= STATX_DIO_READ_ALIGN;
    }
    let stx = statx(fd, "", AtFlags::EMPTY_PATH, mask).ok();
    if let Some(stx) =
        stx.filter(|s| StatxFlags::from_bits_retain(s.stx_mask).contains(StatxFlags::DIOALIGN))
    {
        if stx.stx_dio_offset_align == 0 || stx.stx_dio_mem_align as usize > mem_align() {
            // statx(2): zero means O_DIRECT is not supported on this file.
            return Err(Probe::Unsupported(Errno::INVAL));
        }
        let read_align = StatxFlags::from_bits_retain(stx.stx_mask)
            .contains(STATX_DIO_READ_ALIGN)
            .then_some(stx.stx_dio_read_offset_align)
            .filter(|&a| a != 0);
        return Ok(u64::from(match side {
            Side::Source => read_align.unwrap_or(stx.stx_dio_offset_align),
            Side::Destination => stx.stx_dio_offset_align,
        }));
    }
    let st = fstat(fd).map_err(|e| Probe::Failed("fstat", e))?;
    if FileType::from_raw_mode(st.st_mode) == FileType::BlockDevice {
        let lbs =
            rustix::fs::ioctl_blksszget(fd).map_err(|e| Probe::Failed("ioctl(BLKSSZGET)", e))?;
        return Ok(u64::from(lbs.max(512)));
    }
    Ok((st.st_blksize as u64).max(512))
}

/// Sets or clears O_DIRECT on an open file description (`F_SETFL`).
pub(crate) fn set_direct(fd: BorrowedFd<'_>, on: bool) -> Result<(), Errno> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    let want = if on {
        flags | OFlags::DIRECT
    } else {
        flags - OFlags::DIRECT
    };
    if want != flags {
        rustix::fs::fcntl_setfl(fd, want)?;
    }
    Ok(())
}

/// Which source pages were cached before the copy: those must stay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Residency {
    /// Sorted, disjoint, page-aligned byte ranges that were cached.
    Known(Vec<Range<u64>>),
    /// Neither cachestat nor mincore could tell: drop nothing.
    Unknown,
}

/// Whether `cachestat` cannot see `fd`'s pages although they are cached.
/// overlayfs keeps the page cache on the underlying (upper or lower) inode,
/// so cachestat on an overlay fd reports nothing, while mincore (the mapping
/// is the real file's) sees the pages; the bench observes this as
/// `cachestat: degraded` on overlay. There, only mincore is trusted.
fn cachestat_is_blind(fd: BorrowedFd<'_>) -> bool {
    sparsekit_sys::fstype::FsType::of(fd).is_ok_and(|t| t.name() == Some("overlayfs"))
}

/// The largest range mincore looks at in one call (one mapping, one byte
/// of vector per page: 256 KiB for a GiB of 4 KiB pages).
const WINDOW: u64 = 1 << 30;

/// How many parts a range that cachestat finds cached is split into
/// before looking again: each level costs at most this many calls, and
/// 2^63 bytes take 9 levels down to [`WINDOW`].
const FAN_OUT: u64 = 16;

/// Where cachestat cannot be used (overlayfs, kernels before 6.5), mincore
/// looks at the whole file up to this apparent size (64 calls), and only
/// at the data extents of larger files: a sparse file of 8 EiB must not
/// cost 2^33 calls. Pages cached in the holes of such a file are then not
/// known to have been cached before, so the copy may drop them: a loss of
/// cache warmth, never of data.
const MINCORE_WHOLE_FILE: u64 = 64 << 30;

/// Why a residency walk stopped early.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The interrupt flag was set.
    Interrupted,
    /// Neither cachestat nor mincore could tell.
    Unknown,
}

fn check(interrupt: Option<&Interrupt>) -> Result<(), Stop> {
    if interrupt.is_some_and(Interrupt::is_triggered) {
        Err(Stop::Interrupted)
    } else {
        Ok(())
    }
}

/// Calls `each` with the ranges of `0..size` that may hold cached pages,
/// page-aligned at the start and at most [`WINDOW`] long, in file order.
///
/// With cachestat the cost follows the cached pages, not the apparent
/// size: one call over the whole file, and only ranges that hold cached
/// pages are split ([`FAN_OUT`] ways) and asked again, down to
/// [`WINDOW`]; a range cached in full is passed on as it is. Without it
/// (or where it is blind), see [`MINCORE_WHOLE_FILE`].
fn cached_ranges(
    fd: BorrowedFd<'_>,
    size: u64,
    interrupt: Option<&Interrupt>,
    mut each: impl FnMut(Range<u64>, bool) -> Result<(), Stop>,
) -> Result<(), Stop> {
    let page = page_size() as u64;
    if size == 0 {
        return Ok(());
    }
    if !cachestat_is_blind(fd) && cachestat(fd, 0, 0).is_ok() {
        // Ranges still to look at, the next one last, and whether mincore
        // may be asked about them: mmap refuses the last pages below 2^63
        // (EOVERFLOW), where cachestat alone splits down to single pages.
        let mut todo = vec![(0..size, true)];
        while let Some((r, mincore_ok)) = todo.pop() {
            check(interrupt)?;
            let len = r.end - r.start;
            let pages = (r.end.next_multiple_of(page) - r.start) / page;
            match cachestat(fd, r.start, len) {
                Ok(cs) if cs.nr_cache == 0 => {}
                Ok(cs) if cs.nr_cache >= pages => each(r, true)?,
                Ok(_) if len <= WINDOW && mincore_ok => match each(r.clone(), false) {
                    Err(Stop::Unknown) => todo.push((r, false)),
                    other => other?,
                },
                Ok(_) => {
                    let least = if mincore_ok { WINDOW } else { page };
                    let part = (len / FAN_OUT).max(least).next_multiple_of(page);
                    let mut parts = Vec::with_capacity(FAN_OUT as usize + 1);
                    let mut at = r.start;
                    while at < r.end {
                        let to = (at + part).min(r.end);
                        parts.push((at..to, mincore_ok));
                        at = to;
                    }
                    todo.extend(parts.into_iter().rev());
                }
                // It worked for the whole file a moment ago: look closer.
                Err(_) => each(r, false)?,
            }
        }
        return Ok(());
    }
    let mut windows = |r: Range<u64>| -> Result<(), Stop> {
        let mut at = r.start / page * page;
        while at < r.end {
            check(interrupt)?;
            let to = (at + WINDOW).min(r.end);
            each(at..to, false)?;
            at = to;
        }
        Ok(())
    };
    if size <= MINCORE_WHOLE_FILE {
        return windows(0..size);
    }
    let map = MapOptions::new()
        .sync(false)
        .map(&fd)
        .map_err(|_| Stop::Unknown)?;
    for ext in map {
        check(interrupt)?;
        let ext = ext.map_err(|_| Stop::Unknown)?;
        if ext.kind == ExtentKind::Data {
            windows(ext.range())?;
        }
    }
    Ok(())
}

/// Residency of the pages of `r` (page-aligned start) by mincore, as calls
/// of `page_run` with each cached page's offset.
fn mincore_pages(
    fd: BorrowedFd<'_>,
    r: Range<u64>,
    vec: &mut Vec<u8>,
    mut page_run: impl FnMut(u64),
) -> Result<(), Stop> {
    let page = page_size() as u64;
    let mapped = (r.end - r.start).next_multiple_of(page) as usize;
    vec.resize(mapped / page as usize, 0);
    mincore_file(fd, r.start, mapped, vec).map_err(|_| Stop::Unknown)?;
    for (i, &b) in vec.iter().enumerate() {
        if b & 1 == 1 {
            page_run(r.start + i as u64 * page);
        }
    }
    Ok(())
}

impl Residency {
    /// Which pages of `fd` are cached now; the work follows the cached
    /// pages (see [`cached_ranges`]) and stops when `interrupt` is set.
    pub(crate) fn snapshot(
        fd: BorrowedFd<'_>,
        size: u64,
        interrupt: Option<&Interrupt>,
    ) -> Result<Residency, Stop> {
        let page = page_size() as u64;
        let mut runs: Vec<Range<u64>> = Vec::new();
        let mut add = |from: u64, to: u64| match runs.last_mut() {
            Some(r) if r.end == from => r.end = to,
            _ => runs.push(from..to),
        };
        let mut vec = Vec::new();
        let res = cached_ranges(fd, size, interrupt, |r, all| {
            if all {
                add(r.start, r.end.next_multiple_of(page));
                Ok(())
            } else {
                mincore_pages(fd, r, &mut vec, |p| add(p, p + page))
            }
        });
        match res {
            Ok(()) => Ok(Residency::Known(runs)),
            Err(Stop::Unknown) => Ok(Residency::Unknown),
            Err(Stop::Interrupted) => Err(Stop::Interrupted),
        }
    }

    /// Drops the source's cached pages in `range`, except those that were
    /// cached before the copy. Page-rounded outwards: a partial page at an
    /// edge was read by this copy too (unless it was cached before, in
    /// which case it is one of the kept runs).
    pub(crate) fn drop_copied(&self, fd: BorrowedFd<'_>, range: Range<u64>) {
        let Residency::Known(runs) = self else { return };
        let page = page_size() as u64;
        let mut pos = range.start / page * page;
        let end = range.end.next_multiple_of(page);
        // First kept run that ends after `pos`.
        let mut i = runs.partition_point(|r| r.end <= pos);
        while pos < end {
            match runs.get(i) {
                Some(r) if r.start < end => {
                    if r.start > pos {
                        dont_need(fd, pos..r.start);
                    }
                    pos = pos.max(r.end);
                    i += 1;
                }
                _ => {
                    dont_need(fd, pos..end);
                    break;
                }
            }
        }
    }
}

impl Residency {
    /// Reads back (buffered) the pages that were cached before the copy
    /// and are not any more, so another process's hot data is hot again
    /// even where the kernel evicted it (observed: O_DIRECT reads of
    /// compressed btrfs files). Returns the bytes read back.
    pub(crate) fn rewarm(&self, fd: BorrowedFd<'_>) -> u64 {
        let Residency::Known(runs) = self else {
            return 0;
        };
        let page = page_size();
        let mut vec = Vec::new();
        let mut buf = vec![0u8; page];
        let mut total = 0;
        for run in runs {
            let len = (run.end - run.start) as usize;
            vec.resize(len.div_ceil(page), 0);
            if mincore_file(fd, run.start, len, &mut vec).is_err() {
                continue;
            }
            for (i, _) in vec.iter().enumerate().filter(|(_, b)| *b & 1 == 0) {
                let at = run.start + (i * page) as u64;
                if pread(fd, &mut buf, at).is_ok() {
                    total += page as u64;
                }
            }
        }
        total
    }
}

fn dont_need(fd: BorrowedFd<'_>, range: Range<u64>) {
    // Advice: failure only means pages stay cached, which the report shows.
    let _ = fadvise(
        fd,
        range.start,
        NonZeroU64::new(range.end - range.start),
        Advice::DontNeed,
    );
}

/// Bytes of `fd` in the page cache: cachestat, else mincore (page counts ×
/// page size, over the ranges [`cached_ranges`] picks); `None` when neither
/// works.
pub(crate) fn cached_bytes(fd: BorrowedFd<'_>, size: u64) -> Option<u64> {
    let page = page_size() as u64;
    if !cachestat_is_blind(fd) {
        if let Ok(cs) = cachestat(fd, 0, 0) {
            return Some(cs.nr_cache * page);
        }
    }
    let mut total = 0;
    let mut vec = Vec::new();
    cached_ranges(fd, size, None, |r, _| {
        mincore_pages(fd, r, &mut vec, |_| total += page)
    })
    .ok()?;
    Some(total)
}

/// The `Drop` policy's destination half: start writeback of each range as
/// it is written, and once more than `limit` bytes are in flight, wait for
/// the oldest and drop its pages, so dirty and cached pages stay bounded a
/// few MiB behind the write head (nbdcopy's technique).
#[derive(Debug)]
pub(crate) struct WriteBehind {
    pending: VecDeque<Range<u64>>,
    bytes: u64,
    limit: u64,
}

impl WriteBehind {
    pub(crate) fn new(limit: u64) -> Self {
        WriteBehind {
            pending: VecDeque::new(),
            bytes: 0,
            limit,
        }
    }

    pub(crate) fn written(
        &mut self,
        fd: BorrowedFd<'_>,
        range: Range<u64>,
    ) -> Result<(), (u64, Errno)> {
        if range.is_empty() {
            return Ok(());
        }
        sync_file_range(
            fd,
            range.start,
            range.end - range.start,
            SyncFileRangeFlags::WRITE,
        )
        .map_err(|e| (range.start, e))?;
        self.bytes += range.end - range.start;
        self.pending.push_back(range);
        while self.bytes > self.limit {
            self.retire_oldest(fd)?;
        }
        Ok(())
    }

    /// Waits for and drops everything still pending.
    pub(crate) fn finish(&mut self, fd: BorrowedFd<'_>) -> Result<(), (u64, Errno)> {
        while !self.pending.is_empty() {
            self.retire_oldest(fd)?;
        }
        Ok(())
    }

    fn retire_oldest(&mut self, fd: BorrowedFd<'_>) -> Result<(), (u64, Errno)> {
        let Some(r) = self.pending.pop_front() else {
            return Ok(());
        };
        self.bytes -= r.end - r.start;
        let all = SyncFileRangeFlags::WAIT_BEFORE
            | SyncFileRangeFlags::WRITE
            | SyncFileRangeFlags::WAIT_AFTER;
        sync_file_range(fd, r.start, r.end - r.start, all).map_err(|e| (r.start, e))?;
        dont_need(fd, r);
        Ok(())
    }
}

/// Drops every cached page of `fd` in `range` (the destination after its
/// final sync: all of it was written by this copy).
pub(crate) fn drop_all(fd: BorrowedFd<'_>, range: Range<u64>) {
    if !range.is_empty() {
        dont_need(fd, range);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsFd;
    use std::io::Write;

    fn resident(f: &std::fs::File, pages: usize) -> Vec<bool> {
        let mut v = vec![0u8; pages];
        mincore_file(f, 0, pages * page_size(), &mut v).unwrap();
        v.iter().map(|b| b & 1 == 1).collect()
    }

    #[test]
    fn drop_copied_keeps_the_pages_cached_before() {
        let page = page_size();
        let mut f = tempfile::tempfile_in("/tmp").unwrap();
        f.write_all(&vec![1u8; 8 * page]).unwrap();
        f.sync_all().unwrap();
        // Pages 2 and 5 cached, the rest not.
        dont_need(f.as_fd(), 0..8 * page as u64);
        let mut b = vec![0u8; page];
        for p in [2u64, 5] {
            pread(&f, &mut b, p * page as u64).unwrap();
        }
        let snap = Residency::snapshot(f.as_fd(), 8 * page as u64, None).unwrap();
        let before = resident(&f, 8);
        if before.iter().all(|&r| r) {
            return; // tmpfs: nothing can be dropped, nothing to check
        }
        assert_eq!(
            snap,
            Residency::Known(vec![
                2 * page as u64..3 * page as u64,
                5 * page as u64..6 * page as u64
            ])
        );
        // The copy reads everything, then drops what it brought in.
        for p in 0..8u64 {
            pread(&f, &mut b, p * page as u64).unwrap();
        }
        snap.drop_copied(f.as_fd(), 100..(8 * page as u64 - 100));
        let after = resident(&f, 8);
        assert_eq!(
            after,
            vec![false, false, true, false, false, true, false, false]
        );
    }

    #[test]
    fn rewarm_reads_back_evicted_hot_pages() {
        let page = page_size();
        let mut f = tempfile::tempfile_in("/tmp").unwrap();
        f.write_all(&vec![1u8; 4 * page]).unwrap();
        f.sync_all().unwrap();
        dont_need(f.as_fd(), 0..4 * page as u64);
        // No readahead: exactly page 1 is hot.
        fadvise(f.as_fd(), 0, None, Advice::Random).unwrap();
        let mut b = vec![0u8; page];
        pread(&f, &mut b, page as u64).unwrap();
        let snap = Residency::snapshot(f.as_fd(), 4 * page as u64, None).unwrap();
        if resident(&f, 4) == vec![true; 4] {
            return; // tmpfs
        }
        dont_need(f.as_fd(), 0..4 * page as u64);
        assert_eq!(resident(&f, 4), vec![false; 4]);
        assert_eq!(snap.rewarm(f.as_fd()), page as u64);
        assert_eq!(resident(&f, 4), vec![false, true, false, false]);
    }

    /// An unnamed file of `i64::MAX` bytes on tmpfs (ext4 refuses the size).
    fn huge_tmpfs_file() -> Option<std::fs::File> {
        let f = tempfile::tempfile_in("/dev/shm").ok()?;
        f.set_len(i64::MAX as u64).ok()?;
        Some(f)
    }

    /// Regression (issue 11): the snapshot made one cachestat call per GiB
    /// of apparent size, 2^33 for this file, and never looked at the
    /// interrupt flag.
    #[test]
    fn the_snapshot_of_the_largest_file_costs_what_its_pages_cost() {
        let Some(f) = huge_tmpfs_file() else {
            eprintln!("skipped: no tmpfs at /dev/shm takes a file of 2^63-1 bytes");
            return;
        };
        let page = page_size() as u64;
        let size = i64::MAX as u64;
        rustix::io::pwrite(&f, b"head", 0).unwrap();
        rustix::io::pwrite(&f, b"tail", size - 4).unwrap();
        let started = std::time::Instant::now();
        let snap = Residency::snapshot(f.as_fd(), size, None).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        // tmpfs pages are always cached: exactly the two written pages.
        assert_eq!(
            snap,
            Residency::Known(vec![0..page, (size + 1 - page)..size + 1])
        );
        assert_eq!(cached_bytes(f.as_fd(), size), Some(2 * page));
    }

    #[test]
    fn an_interrupt_stops_the_snapshot() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[1u8; 8192]).unwrap();
        let stop = Interrupt::new();
        stop.trigger();
        assert_eq!(
            Residency::snapshot(f.as_fd(), 8192, Some(&stop)),
            Err(Stop::Interrupted)
        );
    }

    #[test]
    fn unknown_residency_drops_nothing() {
        let page = page_size();
        let mut f = tempfile::tempfile_in("/tmp").unwrap();
        f.write_all(&vec![1u8; 2 * page]).unwrap();
        Residency::Unknown.drop_copied(f.as_fd(), 0..2 * page as u64);
        assert_eq!(resident(&f, 2), vec![true, true]);
    }

    #[test]
    fn keep_and_drop_resolve_without_probing() {
        let f = tempfile::tempfile().unwrap();
        let mut fb = Vec::new();
        for p in [CachePolicy::Keep, CachePolicy::Drop] {
            let r = resolve(p, Side::Destination, f.as_fd(), Path::new("x"), 0, &mut fb).unwrap();
            assert_eq!(
                r,
                SidePolicy {
                    policy: p,
                    align: 1
                }
            );
        }
        assert!(fb.is_empty());
    }
}
