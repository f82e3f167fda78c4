//! Large sparse files on Linux — virtual disk images above all — made cheap
//! to inspect, alter, copy, clone and probe. This facade re-exports the
//! sparsekit family; depend on one member crate alone if that is all you
//! need.
//!
//! # Brief overview
//! - [`extents`]: where is data, where are holes (SEEK_DATA/SEEK_HOLE →
//!   FIEMAP → zero scan), lazily, in constant memory.
//! - [`punch`]: punch holes, zero, collapse and insert ranges, dig holes
//!   where blocks are all zero — each op reporting the strategy it used.
//! - [`copy`]: the one-time copy of a disk image that keeps holes and leaves
//!   the page cache as it found it.
//! - [`compare`]: do two files or block devices hold the same bytes?
//!   Driven by both extent maps (holes in both are never read), with the
//!   copy's cache policies; also where one allocates what the other leaves
//!   sparse. (It lives in `sparsekit-copy`, whose cache machinery it uses.)
//! - [`clone`]: FICLONE / FICLONERANGE / FIDEDUPERANGE, or a clear
//!   "unsupported".
//! - [`probe`]: statx with chosen fields and cache control, bounded by a
//!   timeout so a dead NFS or FUSE mount cannot hang the caller.
//! - [`caps`]: what a given filesystem really supports, found by trial.
//!
//! Every operation falls back reactively when the filesystem lacks the
//! native call and says which path it took; [`caps`] tells in advance.
//!
//! # Example
//! ```
//! use std::io::{Seek, SeekFrom, Write};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut f = tempfile::tempfile()?;
//! f.seek(SeekFrom::Start(8 << 20))?;
//! f.write_all(b"the only data, after an 8 MiB hole")?;
//!
//! let map = sparsekit::extents::map(&f)?;
//! let data: u64 = map
//!     .filter_map(Result::ok)
//!     .filter(|e| e.kind.needs_reading())
//!     .map(|e| e.length)
//!     .sum();
//! assert!(data < 1 << 20);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub use sparsekit_caps as caps;
pub use sparsekit_clone as clone;
pub use sparsekit_copy as copy;
pub use sparsekit_copy::compare;
pub use sparsekit_extents as extents;
pub use sparsekit_probe as probe;
pub use sparsekit_punch as punch;
