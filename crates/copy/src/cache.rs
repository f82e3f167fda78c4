//! The page-cache side of a copy: choosing each side's policy by probing,
//! remembering which source pages were cached before, dropping what the
//! copy brought in, and measuring what is left.

use crate::buffer::{Buffer, mem_align};
use crate::error::CopyError;
use crate::options::CachePolicy;
use crate::report::Fallback;
use rustix::fd::BorrowedFd;
use rustix::fs::{Advice, AtFlags, FileType, OFlags, StatxFlags, fadvise, fstat, statx};
use rustix::io::{Errno, pread, preadv2, pwrite, pwritev2};
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
}

/// `STATX_DIO_READ_ALIGN` (Linux 6.16): a separate, possibly smaller,
/// alignment for O_DIRECT reads. rustix has no name for it yet.
const STATX_DIO_READ_ALIGN: StatxFlags = StatxFlags::from_bits_retain(0x0002_0000);

/// The probe writes of the destination side go at offset 0: a new file is
/// truncated back to 0 afterwards, an in-place destination has its first MiB
/// invalidated anyway and rewritten last.
pub(crate) fn resolve(
    requested: CachePolicy,
    side: Side,
    fd: BorrowedFd<'_>,
    path: &Path,
    fallbacks: &mut Vec<Fallback>,
    fake_unsupported: &[CachePolicy],
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
        let probe = match policy {
            p if fake_unsupported.contains(&p) => Err(Probe::Unsupported(Errno::OPNOTSUPP)),
            CachePolicy::DontCache => probe_dontcache(side, fd).map(|()| 1),
            CachePolicy::Direct => probe_direct(side, fd),
            // Buffered I/O, fadvise and sync_file_range work on anything
            // that can be read and written.
            _ => Ok(1),
        };
        match probe {
            Ok(align) => return Ok(SidePolicy { policy, align }),
            Err(Probe::Unsupported(errno)) if requested == CachePolicy::Auto => {
                fallbacks.push(Fallback {
                    from: fallback_name(policy, side),
                    errno,
                });
            }
            Err(Probe::Unsupported(errno)) => {
                return Err(CopyError::CacheUnsupported {
                    path: path.to_owned(),
                    policy,
                    errno,
                });
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

/// Turns O_DIRECT on for `fd` and proves it with one aligned I/O at offset
/// 0. On failure O_DIRECT is turned off again. Returns the alignment.
fn probe_direct(side: Side, fd: BorrowedFd<'_>) -> Result<u64, Probe> {
    let align = direct_alignment(side, fd)?;
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

/// Snapshot granularity: cachestat per GiB skips uncached stretches, mincore
/// looks page by page only where cachestat saw something.
const WINDOW: u64 = 1 << 30;

impl Residency {
    pub(crate) fn snapshot(fd: BorrowedFd<'_>, size: u64) -> Residency {
        let mut runs: Vec<Range<u64>> = Vec::new();
        let page = page_size() as u64;
        let mut vec = Vec::new();
        let mut off = 0;
        let blind = cachestat_is_blind(fd);
        while off < size {
            let len = WINDOW.min(size - off);
            match cachestat(fd, off, len) {
                Ok(cs) if cs.nr_cache == 0 && !blind => {
                    off += len;
                    continue;
                }
                // Cached pages here, or no cachestat (ENOSYS, EPERM…): look page by page.
                _ => {}
            }
            let mapped = len.next_multiple_of(page) as usize;
            vec.resize(mapped / page as usize, 0);
            if mincore_file(fd, off, mapped, &mut vec).is_err() {
                return Residency::Unknown;
            }
            for (i, &b) in vec.iter().enumerate() {
                if b & 1 == 1 {
                    let p = off + i as u64 * page;
                    match runs.last_mut() {
                        Some(r) if r.end == p => r.end = p + page,
                        _ => runs.push(p..p + page),
                    }
                }
            }
            off += len;
        }
        Residency::Known(runs)
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
/// page size); `None` when neither works.
pub(crate) fn cached_bytes(fd: BorrowedFd<'_>, size: u64) -> Option<u64> {
    let page = page_size() as u64;
    if !cachestat_is_blind(fd) {
        if let Ok(cs) = cachestat(fd, 0, 0) {
            return Some(cs.nr_cache * page);
        }
    }
    let mut total = 0;
    let mut vec = Vec::new();
    let mut off = 0;
    while off < size {
        let len = WINDOW.min(size - off);
        let mapped = len.next_multiple_of(page) as usize;
        vec.resize(mapped / page as usize, 0);
        mincore_file(fd, off, mapped, &mut vec).ok()?;
        total += vec.iter().filter(|&&b| b & 1 == 1).count() as u64 * page;
        off += len;
    }
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
        let snap = Residency::snapshot(f.as_fd(), 8 * page as u64);
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
        let snap = Residency::snapshot(f.as_fd(), 4 * page as u64);
        if resident(&f, 4) == vec![true; 4] {
            return; // tmpfs
        }
        dont_need(f.as_fd(), 0..4 * page as u64);
        assert_eq!(resident(&f, 4), vec![false; 4]);
        assert_eq!(snap.rewarm(f.as_fd()), page as u64);
        assert_eq!(resident(&f, 4), vec![false, true, false, false]);
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
            let r = resolve(
                p,
                Side::Destination,
                f.as_fd(),
                Path::new("x"),
                &mut fb,
                &[],
            )
            .unwrap();
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
