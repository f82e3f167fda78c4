//! What does this filesystem really do? Capability probing by real trial.
//!
//! Version numbers lie: a kernel can have `RWF_DONTCACHE` while the
//! filesystem has not opted in, a `SEEK_HOLE` can "succeed" by calling the
//! whole file data, a btrfs `O_DIRECT` write can silently go through the
//! page cache. This crate finds out by doing: for a directory, it runs each
//! operation on small scratch files in that directory (through the op
//! crates' own primitives), checks the result (a punched range reads zero
//! *and* frees blocks, a clone's extents are `SHARED`, a dontcache write
//! leaves no page cached), and classifies each capability as
//! [`Support::Native`], [`Support::Degraded`], [`Support::Emulated`] or
//! [`Support::Unsupported`] with the errno or the reason. Nothing is left
//! behind: scratch files are `O_TMPFILE` inodes where the filesystem has
//! them, otherwise uniquely named hidden files removed by a guard (also on
//! error and panic).
//!
//! # Brief overview
//! - [`probe`] / [`CapsOptions`]: run the trials for one directory (and
//!   optionally a second one on another filesystem, for
//!   `copy_file_range_cross_fs`) → [`CapsReport`].
//! - [`Caps::for_path`]: the same, memoized per filesystem (keyed by the
//!   unique mount id on Linux 6.8+; before, by a fingerprint of the mount
//!   dropped when an inotify watch sees it unmounted), for callers that
//!   want to decide in advance.
//! - [`CapsReport`]: [`FsInfo`] (type, block size, mount, device, DIO
//!   alignment, kernel) and one [`Cell`] per capability; serializes to TOML
//!   and JSON (it is the cell format of `matrix.toml`) and displays as a
//!   table with a column saying how each cell was verified.
//! - [`classify`]: the pure decision functions, testable with injected
//!   errnos and observations.
//! - [`CapsError`]: the directory could not be probed at all.
//! - [`probe_block_device`]: the trials of a block device (discard, and
//!   the ways to zero; [`BLOCK_CAPABILITIES`]), on a range it overwrites.
//!
//! # Capabilities
//! The names in [`CAPABILITIES`], each tried on this filesystem:
//!
//! | name | trial and verification |
//! |---|---|
//! | `seek_data_hole` | data, hole, data file; `SEEK_HOLE` must find the hole (else degraded: generic whole-file data) |
//! | `seek_unwritten_as_hole` | preallocated range: `SEEK_DATA` skips it |
//! | `seek_sees_dirty_data` | data written without writeback: `SEEK_DATA` finds it (ext4 without extents: `ENXIO`, degraded) |
//! | `fiemap` | `FS_IOC_FIEMAP` maps the data block and the hole |
//! | `fiemap_shared_flag` | after `FICLONE`, FIEMAP marks the extents `SHARED` |
//! | `punch_hole` | `PUNCH_HOLE`: reads zero and `st_blocks` falls; else the punch fallback |
//! | `zero_range` | `ZERO_RANGE`: reads zero, stays allocated; else the zero fallback |
//! | `collapse_range` / `insert_range` | native shift, content checked; else move-data emulation |
//! | `unshare_range` | `FALLOC_FL_UNSHARE_RANGE` on a clone: no longer `SHARED` |
//! | `write_zeroes` | `FALLOC_FL_WRITE_ZEROES` (Linux 6.17): reads zero, allocated |
//! | `allocate` | `fallocate(KEEP_SIZE)`: `st_blocks` grows, reads zero |
//! | `copy_file_range` | copies a block; content checked; else read/write; on NFS, degraded unless the client sent a server-side `COPY` (`/proc/self/mountstats`) |
//! | `copy_file_range_cross_fs` | to the second directory; else read/write |
//! | `copy_file_range_reflinks` | after `copy_file_range`, are the extents `SHARED`? |
//! | `ficlone` / `ficlonerange` / `fideduperange` | share; FIEMAP `SHARED` (or per-inode `st_blocks`) confirms; over NFS, which has no FIEMAP, a `CLONE` the client sent (`/proc/self/mountstats`) is the server's word |
//! | `o_direct` | aligned `O_DIRECT` write over a cached and mapped range; `cachestat` must show no page cached (a buffered fallback cannot hide) |
//! | `rwf_dontcache_write` / `rwf_dontcache_read` | `pwritev2`/`preadv2(RWF_DONTCACHE)`; `cachestat` shows no page left |
//! | `fadvise_dontneed` | written back, `POSIX_FADV_DONTNEED`: pages gone |
//! | `cachestat` | counts the pages just written |
//! | `statx` | `statx` works; detail lists the optional fields filled |
//! | `statx_dont_sync` | `AT_STATX_DONT_SYNC` answers |
//! | `o_tmpfile` | `open(dir, O_TMPFILE)` |
//! | `write_lease` | `F_SETLEASE(F_WRLCK)`: refused beside another descriptor, granted alone, broken by an open (which waits), released; what keeps other writers out of `dig` |
//!
//! # Schema (JSON and TOML)
//! ```toml
//! [filesystem]
//! fs_type = "ext4"               # statfs f_type name (or "0x…")
//! magic = "0xef53"
//! mount_fs_type = "ext4"         # optional, from mountinfo
//! block_size = 4096
//! directory = "/mnt/test"
//! mount_point = "/mnt/test"      # optional
//! mount_source = "/dev/loop3"    # optional
//! mount_options = "rw,relatime"  # optional
//! super_options = "rw"           # optional
//! device = "7:3"
//! mount_id = 1234                # optional
//! dio_mem_align = 512            # optional
//! dio_offset_align = 512         # optional
//! dio_read_offset_align = 512    # optional
//! kernel_release = "6.18.0"
//! scratch = "o_tmpfile"          # or "named"
//! cross_fs_peer = "/tmp (ext4)"  # optional
//!
//! [capabilities.punch_hole]       # one table per capability, sorted by name
//! support = "native"              # "native" | "degraded" | "emulated" | "unsupported"
//! errno = "EOPNOTSUPP"            # optional: symbolic errno
//! reason = "…"                    # optional: why degraded / which fallback emulates / what failed
//! detail = "…"                    # optional: observed values
//! verified_by = "…"               # always: how the cell was verified
//!
//! [not_tried]                     # optional: capability = why it was not tried
//! copy_file_range_cross_fs = "no second directory on another filesystem"
//! ```
//! JSON is the same document (`{"filesystem": {…}, "capabilities": {"punch_hole":
//! {"support": "native", …}, …}}`). Optional fields are omitted when empty.
//!
//! # Example
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let report = sparsekit_caps::probe(dir.path())?;
//! println!("{report}");
//! let punch = report.get("punch_hole").unwrap();
//! println!("punch_hole: {} ({})", punch.support, punch.verified_by);
//! // The directory is as empty as before.
//! assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
//! # Ok(()) }
//! ```
//!
//! # References
//! - [`fallocate(2)`](https://man7.org/linux/man-pages/man2/fallocate.2.html),
//!   [`lseek(2)`](https://man7.org/linux/man-pages/man2/lseek.2.html),
//!   [`copy_file_range(2)`](https://man7.org/linux/man-pages/man2/copy_file_range.2.html),
//!   [`ioctl_ficlone(2)`](https://man7.org/linux/man-pages/man2/ioctl_ficlone.2.html),
//!   [`statx(2)`](https://man7.org/linux/man-pages/man2/statx.2.html),
//!   [`cachestat(2)`](https://man7.org/linux/man-pages/man2/cachestat.2.html),
//!   [`preadv2(2)`](https://man7.org/linux/man-pages/man2/preadv2.2.html) (`RWF_DONTCACHE`)
//! - `Documentation/filesystems/fiemap.rst`, `proc(5)` (`mountinfo`)

#![warn(missing_docs)]

pub mod blockdev;
pub mod classify;
mod display;
mod error;
mod fsinfo;
mod memo;
mod mountstats;
mod options;
mod report;
mod scratch;
mod trials;

pub use blockdev::{BLOCK_CAPABILITIES, probe_block_device};
pub use error::CapsError;
pub use memo::Caps;
pub use options::{CapsOptions, probe};
pub use report::{CapsReport, Cell, FsInfo, Support};

/// Every capability name a [`CapsReport`] classifies, in report order.
pub const CAPABILITIES: &[&str] = &[
    "allocate",
    "cachestat",
    "collapse_range",
    "copy_file_range",
    "copy_file_range_cross_fs",
    "copy_file_range_reflinks",
    "fadvise_dontneed",
    "ficlone",
    "ficlonerange",
    "fideduperange",
    "fiemap",
    "fiemap_shared_flag",
    "insert_range",
    "o_direct",
    "o_tmpfile",
    "punch_hole",
    "rwf_dontcache_read",
    "rwf_dontcache_write",
    "seek_data_hole",
    "seek_sees_dirty_data",
    "seek_unwritten_as_hole",
    "statx",
    "statx_dont_sync",
    "unshare_range",
    "write_lease",
    "write_zeroes",
    "zero_range",
];
