//! Sparse-preserving, page-cache-friendly copies of large files and disk
//! images on Linux.
//!
//! Copying a 100 GiB virtual disk that holds 5 GiB of data should read and
//! write 5 GiB, allocate 5 GiB, leave the host's page cache as it found it,
//! and never leave behind something that looks like a finished copy when it
//! fails. This crate does that, and reports how.
//!
//! # Brief overview
//! - [`CopyOptions`]: choose [`SparseMode`], [`ReflinkMode`],
//!   [`CachePolicy`], [`DataStrategy`], [`HoleMethod`], [`Staging`], sync,
//!   request size and threads; then [`copy`](CopyOptions::copy) two paths
//!   or [`copy_open`](CopyOptions::copy_open) two open files.
//! - [`CopyReport`]: the [`Strategy`] and cache policies used, bytes
//!   copied / skipped as holes / found zero, [`Fallback`]s taken, time, and
//!   the page cache before and after ([`PageCacheUse`]).
//! - [`CopyError`]: what failed, naming the file, offset and errno.
//! - [`compare`]: whether two files or block devices hold the same bytes,
//!   from both extent maps, with the same cache policies; and
//!   [`CopyOptions::verify`], which reads the copy back before it is named.
//! - [`Interrupt`]: stop a copy cleanly (from `SIGINT`/`SIGTERM` with
//!   [`Interrupt::register_signals`]).
//!
//! # How a copy runs
//! 1. **Checks.** The source must be a regular file or block device, the
//!    destination too (or absent). Source and destination must differ by
//!    device and inode, so a hard link, a symlink or the same block device
//!    under another name is refused ([`CopyError::SameFile`]), as is a
//!    block device that holds the source's filesystem. The source is opened
//!    read-only and never written.
//!    A source whose size does not describe its content (a regular file
//!    on proc, sysfs and other pseudo filesystems, or of size 0 but
//!    returning bytes) is read to end of file instead of steps 2–5
//!    ([`Strategy::Stream`]); with [`CopyOptions::snapshot`] the source is
//!    first reflinked into a nameless file that the copy reads.
//! 2. **Reflink.** Unless [`ReflinkMode::Never`], a whole-file `FICLONE`
//!    (via `sparsekit-clone`) is tried first: on xfs and btrfs it copies an
//!    8 GiB image in milliseconds and allocates nothing.
//! 3. **Extent map.** `sparsekit-extents` with `Method::Auto`
//!    (`SEEK_DATA`/`SEEK_HOLE` first): only data extents are read;
//!    unwritten (preallocated) extents are holes.
//! 4. **Data.** [`DataStrategy::ReadWrite`] runs a pipeline: reader threads
//!    (8 by default) take jobs from the planner, each job packing one or
//!    more extents into a 4 MiB page-aligned buffer (small extents are
//!    coalesced into one hand-over), and a bounded queue feeds the writer,
//!    so reading and writing overlap while memory stays bounded.
//!    [`DataStrategy::CopyFileRange`] lets the kernel move each extent.
//!    Threads rather than io_uring: the requests are large and few, so two
//!    blocking threads keep a device busy; io_uring would add a second code
//!    path that seccomp profiles and `kernel.io_uring_disabled` often
//!    forbid, for no measurable gain at MiB request sizes.
//! 5. **Holes.** A new destination is sized with `ftruncate` and its holes
//!    are simply not written. An existing file written in place gets them
//!    punched (`PUNCH_HOLE` → `ZERO_RANGE` → zeros); a block device gets
//!    `fallocate(PUNCH_HOLE)` — WRITE ZEROES with unmapping allowed: it
//!    deallocates where the device guarantees zeros (a loop device punches
//!    its backing file) and fails otherwise — then `BLKZEROOUT` (zeros,
//!    kept allocated), then written zeros. `BLKDISCARD` cannot promise
//!    zeros, so it is not used.
//! 6. **Cache.** The source resolves [`CachePolicy::Auto`] by probing one
//!    small I/O per candidate: `Direct` (`O_DIRECT`, alignment from
//!    `statx`; the fastest in the bench) → `DontCache` (`RWF_DONTCACHE`,
//!    Linux 6.14 on ext4/xfs) → `Drop`
//!    (`sync_file_range` write-behind + `POSIX_FADV_DONTNEED`) → `Keep`;
//!    the first `EOPNOTSUPP` (or O_DIRECT `EINVAL`) moves on, and the
//!    report lists each step. The destination takes `Drop`: writeback
//!    queues many writes where the one writer's O_DIRECT writes wait in
//!    turn (the bench: 2.77 s against 3.45 s for 2 GiB of long runs). Source pages cached *before* the copy stay
//!    cached: `DontCache` and `Direct` never evict them, and `Drop` takes a
//!    residency snapshot first (`cachestat`, Linux 6.5, over the whole
//!    file and then only where something is cached, then `mincore`) and drops only pages outside it.
//!    Readahead past each extent fills pages in the holes after it that
//!    neither policy drops, so after the copy every source page not cached
//!    before is dropped, and any page that *was*
//!    cached but got evicted (observed: O_DIRECT reads of compressed btrfs
//!    files) is read back. After the final sync the destination's pages
//!    are dropped too (this catches btrfs turning O_DIRECT writes into
//!    buffered ones).
//! 7. **Sync and commit.** `fsync` before success (unless
//!    [`sync(false)`](CopyOptions::sync)), then the rename and an fsync of
//!    the directory.
//!
//! # Failure safety
//! A failed or interrupted copy (`ENOSPC`, `EIO`, a signal, the source
//! changing underneath) never leaves a destination that looks complete:
//! - **Regular destinations are staged** ([`Staging::Auto`]): written to an
//!   `O_TMPFILE` inode in the destination's directory (same filesystem, so
//!   reflink and rename work) and linked + renamed over the destination only
//!   after the data is synced. On failure the inode just disappears; even
//!   `SIGKILL` or a power cut leave nothing. Where `O_TMPFILE` is missing, a
//!   hidden `.NAME.sparsekit-PID-N.tmp` is used and removed on failure (only
//!   `SIGKILL`/a crash can leave it, under a name that is plainly not the
//!   destination). An existing destination stays intact until the rename;
//!   its replacement gets its permission bits and (where allowed) owner,
//!   not its extended attributes or hard links (use [`Staging::InPlace`]
//!   to keep the inode).
//! - **Block devices** (and [`Staging::InPlace`] files) are written in
//!   place, but their first MiB — where partition tables, superblocks and
//!   image headers live — is zeroed first and written last, after the body
//!   is synced; a failure zeroes it again (a regular file is truncated to
//!   zero length instead). A block device is opened with `O_EXCL`, so a
//!   mounted one is refused.
//! - **Signals**: [`Interrupt::register_signals`] turns `SIGINT`/`SIGTERM`
//!   into a flag the readers and writer check between requests; the copy
//!   fails with [`CopyError::Interrupted`] and cleans up as above. A second
//!   signal exits at once.
//!
//! # Example
//! ```
//! use sparsekit_copy::{CopyOptions, Strategy};
//! use std::io::{Seek, SeekFrom, Write};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let src = dir.path().join("disk.img");
//! let mut f = std::fs::File::create(&src)?;
//! f.write_all(b"boot sector")?;
//! f.seek(SeekFrom::Start(64 << 20))?;
//! f.write_all(b"data after a 64 MiB hole")?;
//!
//! let report = CopyOptions::new().copy(&src, dir.path().join("copy.img"))?;
//! assert_eq!(std::fs::read(&src)?, std::fs::read(dir.path().join("copy.img"))?);
//! assert!(report.bytes_skipped_as_holes >= 60 << 20);
//! println!("{} via {:?}, cache {:?}", report.strategy, report.cache_destination, report.cache_destination);
//! # let _ = Strategy::Reflink;
//! # Ok(()) }
//! ```
//!
//! # References
//! - [`copy_file_range(2)`](https://man7.org/linux/man-pages/man2/copy_file_range.2.html),
//!   [`ioctl_ficlone(2)`](https://man7.org/linux/man-pages/man2/ioctl_ficlone.2.html),
//!   [`preadv2(2)`](https://man7.org/linux/man-pages/man2/preadv2.2.html) (`RWF_DONTCACHE`, Linux 6.14),
//!   [`cachestat(2)`](https://man7.org/linux/man-pages/man2/cachestat.2.html) (Linux 6.5),
//!   [`sync_file_range(2)`](https://man7.org/linux/man-pages/man2/sync_file_range.2.html),
//!   [`open(2)`](https://man7.org/linux/man-pages/man2/open.2.html) (`O_TMPFILE`, `O_DIRECT`)
//! - nbdcopy's page-cache handling (libnbd `copy/file-ops.c`)

#![warn(missing_docs)]

mod buffer;
mod cache;
mod cfr;
pub mod compare;
mod discard;
mod endpoint;
mod engine;
mod error;
#[cfg(any(test, feature = "fault-injection"))]
#[doc(hidden)]
pub mod fault;
mod interrupt;
mod modes;
mod options;
mod pipeline;
mod plan;
mod report;
mod snapshot;
mod staging;
mod stream;
mod threads;
mod verify;

pub use error::{CopyError, VerifyLeft};
pub use interrupt::{Interrupt, SignalRegistration};
pub use modes::{CachePolicy, DataStrategy, HoleMethod, ReflinkMode, SparseMode, Staging};
pub use options::{CopyOptions, DEFAULT_BUFFER_SIZE, ProgressFn};
pub use report::{CopyReport, DestinationKind, Fallback, PageCacheUse, Progress, Strategy};

use std::fs::File;
use std::path::Path;

impl CopyOptions {
    /// Copies the file or block device at `src` to `dst` (a path that may
    /// not exist yet, an existing regular file, or a block device).
    ///
    /// A regular destination is staged and renamed into place after success
    /// (see [`Staging`]); a block device is written in place and must be at
    /// least as large as the source. Fails before touching anything when
    /// the two are the same file.
    pub fn copy(
        &self,
        src: impl AsRef<Path>,
        dst: impl AsRef<Path>,
    ) -> Result<CopyReport, CopyError> {
        staging::copy_paths(self, src.as_ref(), dst.as_ref())
    }

    /// Copies between two open files, writing `dst` in place (the
    /// [`Staging::InPlace`] rules: first MiB invalidated first and written
    /// last; a failure truncates a regular `dst` to zero length or zeroes a
    /// block device's first MiB). `src` must be open for reading, `dst` for
    /// reading and writing. The paths only name the files in errors.
    ///
    /// O_DIRECT, if a policy turns it on, is turned off again before
    /// returning.
    pub fn copy_open(
        &self,
        src: &File,
        src_path: impl AsRef<Path>,
        dst: &File,
        dst_path: impl AsRef<Path>,
    ) -> Result<CopyReport, CopyError> {
        staging::copy_open(self, src, src_path.as_ref(), dst, dst_path.as_ref())
    }
}
