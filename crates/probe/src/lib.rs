//! Metadata probing that never hangs: `statx(2)` with the fields you need,
//! the cache behaviour you choose, and an optional timeout that survives
//! dead NFS or FUSE mounts.
//!
//! `stat(2)` on a file whose server is gone blocks until the server comes
//! back, and it cannot be cancelled. Tools that scan many files (backup,
//! image management, monitoring) then hang on one dead mount. This crate
//! asks only for the fields you name, can answer from cached attributes
//! (`AT_STATX_DONT_SYNC`), and in timeout mode runs the call on a worker
//! thread it abandons when the time is up, with a cap on how many such
//! stuck threads may pile up.
//!
//! # Brief overview
//! - [`ProbeOptions`]: the builder — [`Fields`], [`SyncMode`],
//!   [`Strategy`], timeout, [`WorkerPool`]; then
//!   [`probe_path`](ProbeOptions::probe_path) or
//!   [`probe_fd`](ProbeOptions::probe_fd) (`AT_EMPTY_PATH`).
//! - [`Metadata`]: the answer. Each field is an `Option` that is `Some`
//!   only if the kernel filled it (`stx_mask`); [`Metadata::strategy`] and
//!   [`Metadata::fallback`] say how the answer was obtained.
//! - [`ProbeError`]: `Io` (with the errno), `TimedOut { path, after, .. }`,
//!   `TooManyStuck` (the pool's cap is reached: fails fast and says which
//!   file is dead), `Spawn`.
//! - [`WorkerPool`]: the threads of timeout mode and the stuck-worker count.
//!
//! # Strategies and fallbacks
//! [`Strategy::Auto`] calls `statx`. If that fails with an errno that may
//! only mean "no statx here" (`ENOSYS`, or the `EPERM`/`EACCES` seccomp
//! filters return), a definitive probe — `statx` on a pipe — decides once
//! per process, as rustix does. If statx really is missing, the probe uses
//! `fstatat(2)`/`fstat(2)`, reports only [`Fields::BASIC`], and records
//! the reason in [`Metadata::fallback`]. Either strategy can be forced.
//!
//! # Example
//! ```
//! use sparsekit_probe::{Fields, ProbeError, ProbeOptions};
//! use std::time::Duration;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let file = tempfile::NamedTempFile::new()?;
//! file.as_file().set_len(1 << 30)?;
//!
//! let probe = ProbeOptions::new()
//!     .fields(Fields::SIZE | Fields::BLOCKS | Fields::BTIME | Fields::DIOALIGN)
//!     .timeout(Duration::from_secs(1));
//! match probe.probe_fd(file.as_file()) {
//!     Ok(meta) => {
//!         assert_eq!(meta.size(), Some(1 << 30));
//!         // Sparse: far fewer bytes allocated than the size.
//!         assert!(meta.allocated_bytes().unwrap() < 1 << 20);
//!         if let Some(dio) = meta.dio_align() {
//!             println!("O_DIRECT offsets align to {}", dio.offset_align);
//!         }
//!         println!("not reported here: {}", meta.missing());
//!     }
//!     Err(e @ ProbeError::TimedOut { .. }) => eprintln!("dead mount? {e}"),
//!     Err(e) => return Err(e.into()),
//! }
//! # Ok(()) }
//! ```
//!
//! # References
//! - [`statx(2)`](https://man7.org/linux/man-pages/man2/statx.2.html)
//!   (Linux 4.11+; field availability per kernel in [`Fields`])
//! - [`fstatat(2)`](https://man7.org/linux/man-pages/man2/fstatat.2.html)

#![warn(missing_docs)]

mod error;
mod exec;
mod fields;
mod metadata;
mod options;
mod pool;
#[cfg(test)]
mod tests;

pub use error::{Fallback, ProbeError, StuckProbe};
pub use fields::Fields;
pub use metadata::{
    AtomicWrite, Attribute, Attributes, DevId, DioAlign, FileType, Metadata, MountId, Timestamp,
};
pub use options::{ProbeOptions, Strategy, SyncMode};
pub use pool::{DEFAULT_MAX_STUCK, WorkerPool};

use std::path::Path;

/// Probes `path` with the default [`ProbeOptions`]: basic fields, as
/// `stat(2)` would, no timeout.
///
/// # Errors
/// [`ProbeError::Io`] with the errno.
pub fn probe(path: impl AsRef<Path>) -> Result<Metadata, ProbeError> {
    ProbeOptions::new().probe_path(path)
}
