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
//! - [`fstype`]: filesystem names from `fstatfs` `f_type`.
//! - [`errno`]: `EINVAL (Invalid argument)`-style names for messages.

pub mod errno;
pub mod fiemap;
pub mod fstype;
pub mod remap;

pub use errno::ErrnoName;
