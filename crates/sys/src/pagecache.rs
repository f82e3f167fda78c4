//! Page-cache controls rustix does not wrap: `cachestat(2)`, `mincore(2)`
//! over a file mapping, `sync_file_range(2)`, and the `RWF_DONTCACHE` flag
//! for `preadv2`/`pwritev2`.
//!
//! A copy that must not fill or evict the page cache needs to see it:
//! [`cachestat`] counts the cached pages of a file range in one call (Linux
//! 6.5+); [`mincore_file`] tells page by page (any kernel, but only for files
//! the caller owns or may write, since Linux 5.0); [`sync_file_range`]
//! starts and waits for writeback of a window so `POSIX_FADV_DONTNEED` can
//! drop it; [`RWF_DONTCACHE`] asks the kernel to drop the pages an I/O
//! brought in as soon as it is done.
//!
//! # References
//! - [`cachestat(2)`](https://man7.org/linux/man-pages/man2/cachestat.2.html) (since Linux 6.5)
//! - [`mincore(2)`](https://man7.org/linux/man-pages/man2/mincore.2.html)
//! - [`sync_file_range(2)`](https://man7.org/linux/man-pages/man2/sync_file_range.2.html) (since Linux 2.6.17)
//! - [`preadv2(2)`](https://man7.org/linux/man-pages/man2/preadv2.2.html) (`RWF_DONTCACHE` since Linux 6.14)
#![allow(unsafe_code)]

use rustix::fd::{AsFd, AsRawFd};
use rustix::io::{self, ReadWriteFlags};

/// `RWF_DONTCACHE`—Drop the pages this `preadv2`/`pwritev2` brings into the
/// page cache once the I/O (for writes: its writeback) completes.
///
/// Pages that were already cached by someone else stay cached. Returns
/// `EOPNOTSUPP` on kernels before 6.14 and on filesystems that have not
/// opted in (`FOP_DONTCACHE`; on 6.18: ext4 and xfs yes, btrfs and tmpfs no).
///
/// # References
/// - `include/uapi/linux/fs.h`, commit "mm/filemap: add read support for
///   RWF_DONTCACHE" (Linux 6.14)
pub const RWF_DONTCACHE: ReadWriteFlags = ReadWriteFlags::from_bits_retain(0x0000_0080);

/// The system page size, from the auxiliary vector (rustix's
/// [`page_size`](rustix::param::page_size)); re-exported so callers of
/// [`mincore_file`] find it beside it.
pub use rustix::param::page_size;

/// `__NR_cachestat`: 451 on every architecture since the unified syscall
/// table of Linux 5.1 (libc does not export it for all targets).
const SYS_CACHESTAT: libc::c_long = 451;

/// `struct cachestat_range`.
#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

/// `struct cachestat`: page counts for a file range.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStat {
    /// Pages of the range in the page cache.
    pub nr_cache: u64,
    /// Of those, dirty pages.
    pub nr_dirty: u64,
    /// Of those, pages under writeback.
    pub nr_writeback: u64,
    /// Pages evicted from the cache (per the workingset shadow entries).
    pub nr_evicted: u64,
    /// Evicted pages that would have been in the active list.
    pub nr_recently_evicted: u64,
}

/// `cachestat(fd, {off, len}, &cstat, 0)`—Counts the cached, dirty,
/// writeback and evicted pages of `fd` in `offset..offset+len` (`len` 0
/// means up to the end of the file).
///
/// # Errors
/// `ENOSYS` before Linux 6.5 (or when seccomp forbids it), `EOPNOTSUPP` on
/// hugetlbfs, `EBADF`, `EINVAL` for a range that overflows. Some kernels
/// restrict it to files the caller may write or owns (`EPERM`).
///
/// # References
/// - [`cachestat(2)`](https://man7.org/linux/man-pages/man2/cachestat.2.html) (since Linux 6.5)
pub fn cachestat<Fd: AsFd>(fd: Fd, offset: u64, len: u64) -> io::Result<CacheStat> {
    let range = CachestatRange { off: offset, len };
    let mut out = CacheStat::default();
    // SAFETY: cachestat reads one `struct cachestat_range` and writes one
    // `struct cachestat`, which the two `#[repr(C)]` structs mirror (two and
    // five u64s). Both live on this stack frame for the duration of the
    // call; the fd is borrowed, so it stays open.
    let ret = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd.as_fd().as_raw_fd() as libc::c_uint,
            &range as *const CachestatRange,
            &mut out as *mut CacheStat,
            0 as libc::c_uint,
        )
    };
    if ret < 0 {
        return Err(last_errno());
    }
    Ok(out)
}

/// Residency of each page of `fd` in `offset..offset+len`: `mmap(NULL, len,
/// PROT_NONE, MAP_SHARED, fd, offset)`, `mincore`, `munmap`.
///
/// `offset` must be a multiple of [`page_size`]; `residency` gets one byte
/// per page (bit 0 set when the page is cached) and must hold at least
/// `len.div_ceil(page_size())` bytes. Nothing is faulted in: the mapping is
/// never touched.
///
/// Since Linux 5.0 the kernel answers only for files the caller owns or may
/// write (otherwise every page reads as absent); callers that cannot rule
/// that out should prefer [`cachestat`].
///
/// # Errors
/// `EINVAL` for an unaligned `offset` or `len` 0, `EACCES` when `fd` is not
/// open for reading, `ENODEV` for files that cannot be mapped, `ENOMEM`.
///
/// # Panics
/// If `residency` is too short.
///
/// # References
/// - [`mincore(2)`](https://man7.org/linux/man-pages/man2/mincore.2.html),
///   [`mmap(2)`](https://man7.org/linux/man-pages/man2/mmap.2.html)
#[doc(alias = "mincore")]
pub fn mincore_file<Fd: AsFd>(
    fd: Fd,
    offset: u64,
    len: usize,
    residency: &mut [u8],
) -> io::Result<()> {
    let page = page_size();
    assert!(
        residency.len() >= len.div_ceil(page),
        "mincore_file: residency vector too short"
    );
    if len == 0 || offset % page as u64 != 0 {
        return Err(io::Errno::INVAL);
    }
    let off = libc::off_t::try_from(offset).map_err(|_| io::Errno::OVERFLOW)?;
    // SAFETY: a fresh PROT_NONE shared mapping chosen by the kernel
    // (addr NULL) cannot alias any Rust object, and nothing ever reads or
    // writes through it; it is unmapped below on every path.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_SHARED,
            fd.as_fd().as_raw_fd(),
            off,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(last_errno());
    }
    // SAFETY: `addr..addr+len` is the mapping just made; `residency` holds at
    // least one byte per page of it (asserted above).
    let ret = unsafe { libc::mincore(addr, len, residency.as_mut_ptr()) };
    let err = (ret < 0).then(last_errno);
    // SAFETY: unmapping exactly the mapping made above, which no reference
    // points into.
    unsafe { libc::munmap(addr, len) };
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

bitflags::bitflags! {
    /// `SYNC_FILE_RANGE_*` flags for [`sync_file_range`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SyncFileRangeFlags: u32 {
        /// `SYNC_FILE_RANGE_WAIT_BEFORE`: wait for writeback already under way.
        const WAIT_BEFORE = 1;
        /// `SYNC_FILE_RANGE_WRITE`: start writeback of dirty pages.
        const WRITE = 2;
        /// `SYNC_FILE_RANGE_WAIT_AFTER`: wait for the writeback to finish.
        const WAIT_AFTER = 4;
    }
}

/// `sync_file_range(fd, offset, nbytes, flags)`—Starts and/or waits for
/// writeback of the dirty pages of `offset..offset+nbytes` (`nbytes` 0: to
/// the end of the file), without flushing metadata or the device cache.
///
/// Not a durability guarantee (use `fsync`); it exists so a streaming
/// writer can keep its dirty pages bounded and then drop them with
/// `POSIX_FADV_DONTNEED`, which skips dirty and writeback pages.
///
/// # Errors
/// `EINVAL` (bad flags or range), `ESPIPE` (pipe or socket), `EIO`,
/// `ENOSPC`, `EBADF`.
///
/// # References
/// - [`sync_file_range(2)`](https://man7.org/linux/man-pages/man2/sync_file_range.2.html) (since Linux 2.6.17)
pub fn sync_file_range<Fd: AsFd>(
    fd: Fd,
    offset: u64,
    nbytes: u64,
    flags: SyncFileRangeFlags,
) -> io::Result<()> {
    let off = libc::off64_t::try_from(offset).map_err(|_| io::Errno::INVAL)?;
    let n = libc::off64_t::try_from(nbytes).map_err(|_| io::Errno::INVAL)?;
    // SAFETY: sync_file_range takes only integers; the fd is borrowed, so
    // it is open for the duration of the call.
    let ret = unsafe { libc::sync_file_range(fd.as_fd().as_raw_fd(), off, n, flags.bits()) };
    if ret < 0 {
        return Err(last_errno());
    }
    Ok(())
}

fn last_errno() -> io::Errno {
    io::Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn layouts_match_the_uapi_header() {
        assert_eq!(std::mem::size_of::<CachestatRange>(), 16);
        assert_eq!(std::mem::size_of::<CacheStat>(), 40);
        assert_eq!(RWF_DONTCACHE.bits(), 0x80);
    }

    #[test]
    fn freshly_written_pages_are_seen_as_cached() {
        let mut f = tempfile::tempfile().unwrap();
        let page = page_size();
        f.write_all(&vec![7u8; 4 * page]).unwrap();
        // Dirty pages of a file just written are in the page cache.
        match cachestat(&f, 0, 0) {
            Ok(cs) => assert_eq!(cs.nr_cache, 4),
            // Older kernels: nothing to check here; mincore still is.
            Err(e) => assert!(matches!(e, io::Errno::NOSYS | io::Errno::PERM), "{e:?}"),
        }
        let mut vec = vec![0u8; 4];
        mincore_file(&f, 0, 4 * page, &mut vec).unwrap();
        assert!(vec.iter().all(|b| b & 1 == 1), "{vec:?}");
    }

    #[test]
    fn written_back_pages_can_be_dropped() {
        let mut f = tempfile::tempfile().unwrap();
        let page = page_size();
        f.write_all(&vec![7u8; 4 * page]).unwrap();
        let all = SyncFileRangeFlags::WAIT_BEFORE
            | SyncFileRangeFlags::WRITE
            | SyncFileRangeFlags::WAIT_AFTER;
        sync_file_range(&f, 0, 0, all).unwrap();
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        let mut vec = vec![0u8; 4];
        mincore_file(&f, 0, 4 * page, &mut vec).unwrap();
        // tmpfs keeps them (the cache is the storage); /tmp here is ext4.
        if crate::fstype::FsType::of(&f).unwrap().name() != Some("tmpfs") {
            assert!(vec.iter().all(|b| b & 1 == 0), "{vec:?}");
        }
    }

    #[test]
    fn unaligned_mincore_is_einval() {
        let f = tempfile::tempfile().unwrap();
        let mut vec = vec![0u8; 1];
        assert_eq!(mincore_file(&f, 1, 1, &mut vec), Err(io::Errno::INVAL));
        assert_eq!(mincore_file(&f, 0, 0, &mut vec), Err(io::Errno::INVAL));
    }
}
