//! Reshape sparse files in place: punch holes, zero ranges, collapse and
//! insert ranges, dig holes, each with fallbacks that are reported and can
//! be forced.
//!
//! These are the operations virtual machine managers need to give space
//! back and to edit disk images without copying them. Each one tries the
//! kernel's native `fallocate(2)` mode first and falls back when the
//! filesystem lacks it, and each returns a [`Report`] that says which
//! strategy did the work, which were tried before (with the errno), and
//! how the size and allocation changed. Passing a concrete strategy
//! instead of `Auto` forces it, which is how the test bench checks every
//! fallback on every filesystem.
//!
//! # Brief overview
//! - [`punch_hole`] ([`PunchStrategy`]): the range reads as zeros, whole
//!   blocks are freed, the size stays.
//! - [`zero_range`] ([`ZeroStrategy`]): the range reads as zeros and stays
//!   allocated.
//! - [`collapse_range`] / [`insert_range`] ([`ShiftStrategy`]): remove or
//!   insert block-aligned ranges, shifting the rest of the file; emulated by
//!   moving data (holes stay holes) where the filesystem cannot.
//! - [`dig_holes`] ([`DigOptions`] → [`Dug`]): punch the all-zero blocks
//!   inside data extents, dropping the pages it reads from the page cache.
//! - [`WriteLease`]: keeps other writers out while an in-place operation
//!   works (a write lease; [`WriteLease::check`] before every write).
//! - [`PunchError`]: what went wrong, with the call, offset and errno; only
//!   [`PunchError::Partial`] means the file was changed, and it says how.
//! - `model` (feature `testing`): the in-memory model and model-based test
//!   the test bench runs on every filesystem.
//!
//! # Example
//! ```
//! use sparsekit_punch::{PunchStrategy, ShiftStrategy, punch_hole, collapse_range};
//! use std::io::Write;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut f = tempfile::tempfile()?;
//! f.write_all(&vec![0xab; 1 << 20])?;
//!
//! // Free 256 KiB in the middle; the size stays 1 MiB.
//! let punched = punch_hole(&f, 256 << 10, 256 << 10, PunchStrategy::Auto)?;
//! println!("punched with {} ({} bytes freed)", punched.strategy, punched.freed());
//! assert_eq!(punched.size_after, 1 << 20);
//!
//! // Remove the first 64 KiB: the file shrinks, the rest moves down.
//! let collapsed = collapse_range(&f, 0, 64 << 10, ShiftStrategy::Auto)?;
//! println!("collapsed with {}", collapsed.strategy);
//! assert_eq!(collapsed.size_after, (1 << 20) - (64 << 10));
//! # Ok(()) }
//! ```
//!
//! # References
//! - [`fallocate(2)`](https://man7.org/linux/man-pages/man2/fallocate.2.html)
//! - [`posix_fadvise(2)`](https://man7.org/linux/man-pages/man2/posix_fadvise.2.html)

#![warn(missing_docs)]

mod dig;
mod direct;
mod error;
mod exclusive;
mod file;
mod journal;
mod mover;
mod punch;
mod report;
mod shift;

#[cfg(any(test, feature = "testing"))]
pub mod model;

pub use dig::{CacheOutcome, DigOptions, Dug, dig_holes, dig_holes_excluding};
pub use error::{Operation, PunchError, RangeProblem};
pub use exclusive::{Breaker, Broken, Exclusion, LeaseError, WriteLease, lease_refusal};
pub use journal::{Pending, ShiftJournal};
pub use punch::{punch_hole, zero_range};
pub use report::{Fallback, PunchStrategy, Report, ShiftStrategy, Strategy, ZeroStrategy};
pub use shift::{Resumed, ShiftOptions, collapse_range, insert_range};

#[cfg(test)]
mod tests;
