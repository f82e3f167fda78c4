//! Which source pages were cached before the copy ([`Residency`]: they
//! stay), dropping the rest, and measuring what is cached.

use crate::interrupt::Interrupt;
use rustix::fd::BorrowedFd;
use rustix::fs::{Advice, fadvise};
use rustix::io::pread;
use sparsekit_extents::{ExtentKind, MapOptions};
use sparsekit_sys::pagecache::{cachestat, mincore_file, page_size};
use std::num::NonZeroU64;
use std::ops::Range;

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
    ///
    /// One mincore per [`WINDOW`] of runs, not per run: a hot fragmented
    /// source (one run per extent, as every file on tmpfs is) cost an
    /// mmap, a mincore and a munmap per extent.
    pub(crate) fn rewarm(&self, fd: BorrowedFd<'_>) -> u64 {
        let Residency::Known(runs) = self else {
            return 0;
        };
        let page = page_size();
        let mut vec = Vec::new();
        let mut buf = vec![0u8; page];
        let mut total = 0;
        let mut rest = runs.as_slice();
        while let Some(first) = rest.first() {
            let start = first.start;
            let n = 1 + rest[1..]
                .iter()
                .take_while(|r| r.end - start <= WINDOW)
                .count();
            let (window, after) = rest.split_at(n);
            rest = after;
            let len = (window[n - 1].end - start) as usize;
            vec.resize(len.div_ceil(page), 0);
            if mincore_file(fd, start, len, &mut vec).is_err() {
                continue;
            }
            for run in window {
                let pages = (run.start - start) as usize / page
                    ..(run.end - start).div_ceil(page as u64) as usize;
                for i in pages.filter(|&i| vec[i] & 1 == 0) {
                    if pread(fd, &mut buf, start + (i * page) as u64).is_ok() {
                        total += page as u64;
                    }
                }
            }
        }
        total
    }
}

pub(super) fn dont_need(fd: BorrowedFd<'_>, range: Range<u64>) {
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
        f.write_all(&vec![1u8; 8 * page]).unwrap();
        f.sync_all().unwrap();
        dont_need(f.as_fd(), 0..8 * page as u64);
        // No readahead: exactly pages 1, 4 and 5 are hot (two runs, one
        // mincore window).
        fadvise(f.as_fd(), 0, None, Advice::Random).unwrap();
        let mut b = vec![0u8; page];
        for p in [1, 4, 5] {
            pread(&f, &mut b, p * page as u64).unwrap();
        }
        let snap = Residency::snapshot(f.as_fd(), 8 * page as u64, None).unwrap();
        if resident(&f, 8) == vec![true; 8] {
            return; // tmpfs
        }
        let hot = |p: usize| [1, 4, 5].contains(&p);
        assert_eq!(resident(&f, 8), (0..8).map(hot).collect::<Vec<_>>());
        // Page 4 stays cached; 1 and 5 are evicted and read back.
        dont_need(f.as_fd(), page as u64..2 * page as u64);
        dont_need(f.as_fd(), 5 * page as u64..6 * page as u64);
        assert_eq!(snap.rewarm(f.as_fd()), 2 * page as u64);
        assert_eq!(resident(&f, 8), (0..8).map(hot).collect::<Vec<_>>());
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
}
