//! The probe builder (its enums are in `modes.rs`).

use crate::exec::{self, Failure, KERNEL, Request, Syscalls, TargetRef};
use crate::modes::{Strategy, SyncMode};
use crate::pool::{Job, OwnedTarget, WorkerPool};
use crate::{Fields, Metadata, ProbeError};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd};
use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Builds a probe: which fields, which cache behaviour, which strategy,
/// and whether to bound the call with a timeout.
///
/// One value can run any number of probes; it is cheap to clone.
///
/// ```
/// use sparsekit_probe::{Fields, ProbeOptions, SyncMode};
/// use std::time::Duration;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("disk.img");
/// std::fs::write(&path, b"x")?;
///
/// let probe = ProbeOptions::new()
///     .fields(Fields::SIZE | Fields::BLOCKS | Fields::DIOALIGN)
///     .sync(SyncMode::DontSync)
///     .timeout(Duration::from_secs(2));
/// let meta = probe.probe_path(&path)?;
/// assert_eq!(meta.size(), Some(1));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ProbeOptions {
    fields: Fields,
    sync: SyncMode,
    strategy: Strategy,
    timeout: Option<Duration>,
    follow_symlinks: bool,
    automount: bool,
    pool: Option<WorkerPool>,
    sys: &'static dyn Syscalls,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions::new()
    }
}

impl fmt::Debug for ProbeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeOptions")
            .field("fields", &self.fields)
            .field("sync", &self.sync)
            .field("strategy", &self.strategy)
            .field("timeout", &self.timeout)
            .field("follow_symlinks", &self.follow_symlinks)
            .field("automount", &self.automount)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl ProbeOptions {
    /// The basic fields of `stat(2)`, [`SyncMode::AsStat`],
    /// [`Strategy::Auto`], no timeout, following symlinks, not triggering
    /// automounts (`AT_NO_AUTOMOUNT`, as `stat(1)` does).
    pub fn new() -> Self {
        ProbeOptions {
            fields: Fields::BASIC,
            sync: SyncMode::AsStat,
            strategy: Strategy::Auto,
            timeout: None,
            follow_symlinks: true,
            automount: false,
            pool: None,
            sys: &KERNEL,
        }
    }

    /// The fields to ask for (the statx `mask`).
    pub fn fields(mut self, fields: Fields) -> Self {
        self.fields = fields;
        self
    }

    /// Whether the answer may come from cached attributes.
    pub fn sync(mut self, sync: SyncMode) -> Self {
        self.sync = sync;
        self
    }

    /// Forces a strategy (the test bench forces each in turn).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Bounds the probe: the call runs on a worker thread and the caller
    /// gets [`ProbeError::TimedOut`] after at most `timeout` plus the
    /// scheduling delay of waking it. `None` (the default) calls the kernel
    /// on the caller's thread.
    pub fn timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.timeout = timeout.into();
        self
    }

    /// Whether a symlink given as path is followed (the default) or
    /// described itself (`AT_SYMLINK_NOFOLLOW`).
    pub fn follow_symlinks(mut self, follow: bool) -> Self {
        self.follow_symlinks = follow;
        self
    }

    /// Whether probing an automount point may mount it. Off by default
    /// (`AT_NO_AUTOMOUNT`): mounting can itself hang.
    pub fn automount(mut self, automount: bool) -> Self {
        self.automount = automount;
        self
    }

    /// The worker pool for timed probes; [`WorkerPool::global`] by default.
    pub fn pool(mut self, pool: WorkerPool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Puts a fake kernel behind the probe (tests only).
    #[cfg(test)]
    pub(crate) fn syscalls(mut self, sys: &'static dyn Syscalls) -> Self {
        self.sys = sys;
        self
    }

    fn request(&self) -> Request {
        Request {
            fields: self.fields,
            sync: self.sync,
            strategy: self.strategy,
            follow_symlinks: self.follow_symlinks,
            automount: self.automount,
        }
    }

    fn pool_ref(&self) -> &WorkerPool {
        self.pool.as_ref().unwrap_or_else(|| WorkerPool::global())
    }

    /// `statx(AT_FDCWD, path, flags, mask, &buf)`—Probes a path.
    ///
    /// The path lookup is part of the call, so with a timeout it is bounded
    /// too. Relative paths are relative to the working directory.
    ///
    /// # Errors
    /// [`ProbeError::Io`] with the errno (`ENOENT`, `EACCES`, …),
    /// [`ProbeError::TimedOut`], [`ProbeError::TooManyStuck`],
    /// [`ProbeError::Spawn`].
    ///
    /// # References
    /// - [`statx(2)`](https://man7.org/linux/man-pages/man2/statx.2.html) (Linux 4.11+)
    /// - [`fstatat(2)`](https://man7.org/linux/man-pages/man2/fstatat.2.html)
    #[doc(alias = "statx")]
    pub fn probe_path(&self, path: impl AsRef<Path>) -> Result<Metadata, ProbeError> {
        let path = path.as_ref();
        let req = self.request();
        let io_err = |Failure { op, errno }| ProbeError::Io {
            path: path.to_path_buf(),
            op,
            errno,
        };
        let Some(timeout) = self.timeout else {
            return rustix::path::Arg::into_with_c_str(path, |c| {
                Ok(exec::execute(self.sys, TargetRef::Path(c), &req))
            })
            .map_err(|errno| io_err(Failure { op: "path", errno }))?
            .map_err(io_err);
        };
        let c = rustix::path::Arg::into_c_str(path)
            .map_err(|errno| io_err(Failure { op: "path", errno }))?
            .into_owned();
        let job = Job {
            target: OwnedTarget::Path(c),
            req,
            sys: self.sys,
        };
        self.pool_ref().run(job, timeout, &|| path.to_path_buf())
    }

    /// `statx(fd, "", AT_EMPTY_PATH | flags, mask, &buf)`—Probes an open
    /// file.
    ///
    /// No path lookup is involved, so with [`SyncMode::DontSync`] an NFS or
    /// FUSE file answers from cached attributes even while its server is
    /// unreachable. With a timeout, the worker gets a duplicate of `fd`
    /// (`F_DUPFD_CLOEXEC`), closed when the probe ends.
    ///
    /// # Errors
    /// As [`probe_path`](ProbeOptions::probe_path); errors name the file by
    /// what `/proc/self/fd/N` links to.
    ///
    /// # References
    /// - [`statx(2)`](https://man7.org/linux/man-pages/man2/statx.2.html)
    ///   (`AT_EMPTY_PATH`, Linux 4.11+)
    /// - [`fstat(2)`](https://man7.org/linux/man-pages/man2/fstat.2.html)
    #[doc(alias = "AT_EMPTY_PATH")]
    pub fn probe_fd<Fd: AsFd>(&self, fd: Fd) -> Result<Metadata, ProbeError> {
        let fd = fd.as_fd();
        let req = self.request();
        let io_err = |Failure { op, errno }| ProbeError::Io {
            path: fd_name(fd),
            op,
            errno,
        };
        let Some(timeout) = self.timeout else {
            return exec::execute(self.sys, TargetRef::Fd(fd), &req).map_err(io_err);
        };
        let dup = rustix::io::fcntl_dupfd_cloexec(fd, 0).map_err(|errno| {
            io_err(Failure {
                op: "fcntl(F_DUPFD_CLOEXEC)",
                errno,
            })
        })?;
        let job = Job {
            target: OwnedTarget::Fd(dup),
            req,
            sys: self.sys,
        };
        self.pool_ref().run(job, timeout, &|| fd_name(fd))
    }
}

/// The name `/proc/self/fd/N` links to (computed from the dentry cache,
/// never by asking the filesystem), or `fd N`.
fn fd_name(fd: BorrowedFd<'_>) -> PathBuf {
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    match rustix::fs::readlink(link.as_str(), Vec::new()) {
        Ok(target) => PathBuf::from(OsString::from_vec(target.into_bytes())),
        Err(_) => PathBuf::from(format!("fd {}", fd.as_raw_fd())),
    }
}

#[cfg(test)]
pub(crate) fn fd_name_for_test<Fd: AsFd>(fd: Fd) -> PathBuf {
    fd_name(fd.as_fd())
}
