//! The few raw Linux interfaces sparsekit needs that [rustix] does not wrap,
//! and one shared way of naming an errno.
//!
//! This is the only crate of the workspace with `unsafe` code. Each module
//! wraps one kernel interface, documents its C shape and man page, and keeps
//! every `unsafe` block next to a `// SAFETY:` line. Everything else in
//! sparsekit calls rustix directly.
//!
//! # Brief overview
//! - [`aligned`]: page-aligned buffers for `O_DIRECT` (safe code).
//! - [`fiemap`]: `ioctl(fd, FS_IOC_FIEMAP, …)` in batches.
//! - [`remap`]: `FICLONERANGE` and `FIDEDUPERANGE`.
//! - [`lease`]: `F_SETLEASE` / `F_GETLEASE` / `F_SETOWN`: write leases.
//! - [`fstype`]: filesystem names from `fstatfs` `f_type`.
//! - [`pagecache`]: `cachestat`, `mincore` of a file, `sync_file_range`, `RWF_DONTCACHE`.
//! - [`blkdev`]: `BLKGETSIZE64`, `BLKZEROOUT`, `BLKDISCARD`.
//! - [`filetype`]: the words errors use for file types.
//! - [`pattern`](mod@pattern): deterministic, incompressible test data.
//! - [`errno`]: the errno vocabulary: `EINVAL (Invalid argument)`-style
//!   names, and [`is_unsupported`], the one "move on to the next strategy"
//!   set every op crate uses.
//! - [`fallback`]: [`Fallback`], the one record of a strategy tried and left.
//! - [`stop_signals`]: the first SIGINT/SIGTERM asks for a clean stop, the
//!   second is fatal even to a process blocked on a dead NFS server.
//! - [`consts`]: kernel constants newer than rustix (`STATX_DIO_READ_ALIGN`,
//!   `FALLOC_FL_WRITE_ZEROES`).
//!
//! # Example
//! Map a file's data with FIEMAP, or learn by its errno that the
//! filesystem cannot (tmpfs answers `EOPNOTSUPP`):
//! ```
//! use sparsekit_sys::ErrnoName;
//! use sparsekit_sys::fiemap::{FIEMAP_FLAG_SYNC, FiemapBuffer, extent_flags, fiemap};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("data");
//! std::fs::write(&path, vec![7u8; 64 * 1024])?;
//! let file = std::fs::File::open(&path)?;
//! let mut buf = FiemapBuffer::default();
//! match fiemap(&file, 0, u64::MAX, FIEMAP_FLAG_SYNC, &mut buf) {
//!     Ok(extents) => {
//!         let mapped: u64 = extents.iter().map(|e| e.length).sum();
//!         assert!(mapped >= 64 * 1024, "all written data is mapped");
//!         let last = extents.last().expect("written data has an extent");
//!         assert_ne!(last.flags & extent_flags::LAST, 0);
//!     }
//!     Err(errno) => {
//!         assert_eq!(ErrnoName(errno).symbol(), Some("EOPNOTSUPP"), "{errno}");
//!         println!("no FIEMAP here: {}", ErrnoName(errno));
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod aligned;
pub mod blkdev;
pub mod consts;
pub mod errno;
pub mod fallback;
pub mod fiemap;
pub mod filetype;
pub mod fstype;
pub mod lease;
pub mod pagecache;
pub mod pattern;
pub mod remap;
pub mod stop_signals;

pub use errno::{ErrnoName, is_unsupported};
pub use fallback::Fallback;
pub use filetype::file_type_name;
pub use pattern::pattern;
