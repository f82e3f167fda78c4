//! The caller's choices: [`SyncMode`] and [`Strategy`]. A leaf module:
//! the options, the syscalls, the metadata and the errors all name them,
//! and it names none of them.

use std::fmt;

/// How much the answer may come from cached attributes: the
/// `AT_STATX_SYNC_TYPE` bits of `statx(2)`.
///
/// It matters on network and FUSE filesystems; local filesystems always
/// answer from memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SyncMode {
    /// `AT_STATX_SYNC_AS_STAT`: whatever `stat(2)` does (NFS and FUSE
    /// revalidate attributes whose cache time has expired).
    #[default]
    AsStat,
    /// `AT_STATX_DONT_SYNC`: answer from cached attributes without asking
    /// the server, even if they are stale. On an open file this answers even
    /// while the server is unreachable; a path lookup may still need it.
    #[doc(alias = "AT_STATX_DONT_SYNC")]
    DontSync,
    /// `AT_STATX_FORCE_SYNC`: ask the server, even if the cache is fresh.
    #[doc(alias = "AT_STATX_FORCE_SYNC")]
    ForceSync,
}

impl SyncMode {
    /// `"as-stat"`, `"dont-sync"` or `"force-sync"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::AsStat => "as-stat",
            SyncMode::DontSync => "dont-sync",
            SyncMode::ForceSync => "force-sync",
        }
    }
}

impl fmt::Display for SyncMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which system call answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Strategy {
    /// `statx`; if the kernel lacks it (confirmed by a definitive probe),
    /// `fstatat` with the basic fields, reported in
    /// [`Metadata::fallback`](crate::Metadata::fallback).
    #[default]
    Auto,
    /// `statx(2)` only (Linux 4.11+): an error if it is missing.
    Statx,
    /// `fstatat(2)` / `fstat(2)` only: the basic fields, no cache control.
    Fstatat,
}

impl Strategy {
    /// `"auto"`, `"statx"` or `"fstatat"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Auto => "auto",
            Strategy::Statx => "statx",
            Strategy::Fstatat => "fstatat",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
