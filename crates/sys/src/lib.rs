//! The few raw Linux interfaces sparsekit needs that [rustix] does not wrap,
//! and one shared way of naming an errno.
//!
//! This is the only crate of the workspace with `unsafe` code. Each module
//! wraps one kernel interface, documents its C shape and man page, and keeps
//! every `unsafe` block next to a `// SAFETY:` line. Everything else in
//! sparsekit calls rustix directly.
//!
//! # Brief overview
//! - [`fiemap`]: `ioctl(fd, FS_IOC_FIEMAP, …)` in batches.
//! - [`remap`]: `FICLONERANGE` and `FIDEDUPERANGE`.
//! - [`lease`]: `F_SETLEASE` / `F_GETLEASE` / `F_SETOWN`: write leases.
//! - [`fstype`]: filesystem names from `fstatfs` `f_type`.
//! - [`pagecache`]: `cachestat`, `mincore` of a file, `sync_file_range`, `RWF_DONTCACHE`.
//! - [`blkdev`]: `BLKGETSIZE64`, `BLKZEROOUT`, `BLKDISCARD`.
//! - [`filetype`]: the words errors use for file types.
//! - [`errno`]: `EINVAL (Invalid argument)`-style names for messages.

pub mod blkdev;
pub mod errno;
pub mod fiemap;
pub mod filetype;
pub mod fstype;
pub mod lease;
pub mod pagecache;
pub mod remap;

pub use errno::ErrnoName;
pub use filetype::file_type_name;
