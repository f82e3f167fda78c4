//! Where is data, where are holes: lazy extent maps of sparse files.
//!
//! Virtual disk images are gigabytes of logical size with a little data.
//! This crate tells which byte ranges of a file hold data and which are
//! holes (or unwritten preallocation), fast and in constant memory, and says
//! honestly how it found out.
//!
//! # Brief overview
//! - [`map`] / [`MapOptions`]: start a map with a chosen [`Method`] and range.
//! - [`ExtentMap`]: the lazy iterator of [`Extent`]s (offset, length,
//!   [`ExtentKind`], [`ExtentFlags`]); it reports the method used, the
//!   [`Fallback`]s taken and whether the filesystem's answer was
//!   [`Degraded`].
//! - [`is_zero`] / [`zero_runs`]: the zero detector, shared with
//!   `sparsekit-punch` (dig) and `sparsekit-copy` (`--sparse always`).
//!
//! # Methods and fallbacks
//! `Auto` tries `lseek(SEEK_DATA/SEEK_HOLE)` (one syscall per extent
//! boundary), then `FS_IOC_FIEMAP` (one ioctl per 512 extents), then
//! reading and scanning for zero blocks, then "all data". It moves on when a
//! method is unsupported (`EOPNOTSUPP`, `ENOTTY`, `EINVAL`, …) or when
//! SEEK_HOLE reports a file as all data although `st_blocks` shows it is
//! sparse (the kernel's generic fallback on filesystems without hole
//! support).
//!
//! # Example
//! ```
//! use std::io::{Seek, SeekFrom, Write};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut f = tempfile::tempfile()?;
//! f.seek(SeekFrom::Start(1 << 20))?;
//! f.write_all(b"data after a 1 MiB hole")?;
//!
//! let map = sparsekit_extents::map(&f)?;
//! println!("mapped with {}", map.method());
//! let mut data = 0;
//! for extent in map {
//!     let extent = extent?;
//!     if extent.kind.needs_reading() {
//!         data += extent.length;
//!     }
//! }
//! assert!(data >= 23);
//! # Ok(()) }
//! ```
//!
//! # References
//! - `lseek(2)` (`SEEK_DATA`/`SEEK_HOLE` since Linux 3.1)
//! - `Documentation/filesystems/fiemap.rst` (since Linux 2.6.28)

#![warn(missing_docs)]

mod error;
mod extent;
mod fiemap;
mod map;
mod scan;
mod seek;
mod zero;

#[cfg(feature = "testing")]
pub mod testing;

pub use error::MapError;
pub use extent::{Extent, ExtentFlags, ExtentKind};
pub use map::{Degraded, ExtentMap, Fallback, MapOptions, Method};
pub use zero::{ZeroRuns, is_zero, zero_runs};

use rustix::fd::AsFd;

/// Maps the whole of `fd` with [`Method::Auto`].
pub fn map<Fd: AsFd>(fd: &Fd) -> Result<ExtentMap<'_>, MapError> {
    MapOptions::new().map(fd)
}
