//! Errors, the record of a fallback, and the stuck probes an error names.

use rustix::io::Errno;
use sparsekit_sys::ErrnoName;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why a probe gave no metadata.
///
/// Every variant names the file: the path given, or for a probe on a file
/// descriptor the name `/proc/self/fd/N` links to (`fd N` if even that is
/// unknown).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The kernel answered with an error.
    #[error("{}: {op}: {}", path.display(), ErrnoName(*errno))]
    Io {
        /// The file probed.
        path: PathBuf,
        /// The call: `"statx"`, `"fstatat"` or `"fstat"`.
        op: &'static str,
        /// What the kernel said.
        errno: Errno,
    },
    /// The call did not return within the timeout. The worker thread that
    /// makes it was abandoned and counts as stuck until the kernel returns.
    #[error(
        "{}: no answer after {} (timeout {}): the filesystem is not responding; the call was abandoned",
        path.display(),
        Secs(*after),
        Secs(*timeout)
    )]
    TimedOut {
        /// The file probed.
        path: PathBuf,
        /// How long the caller waited.
        after: Duration,
        /// The timeout that was asked for.
        timeout: Duration,
    },
    /// Not attempted: earlier timed-out probes of this pool are still stuck
    /// in the kernel, as many as its cap allows. This fails at once, so a
    /// dead mount cannot make a caller start thread after thread.
    #[error("{}: not probed: {}", path.display(), TooManyStuckWhy { stuck: *stuck, cap: *cap, oldest })]
    TooManyStuck {
        /// The file that was to be probed.
        path: PathBuf,
        /// Workers still stuck.
        stuck: usize,
        /// The pool's cap ([`WorkerPool::max_stuck`](crate::WorkerPool::max_stuck)).
        cap: usize,
        /// The longest-stuck probe, to say which file is dead.
        oldest: Option<StuckProbe>,
    },
    /// A worker thread for a timed probe could not be started.
    #[error("{}: cannot start a probe worker thread: {source}", path.display())]
    Spawn {
        /// The file that was to be probed.
        path: PathBuf,
        /// The error from `std::thread::Builder::spawn`.
        source: std::io::Error,
    },
}

impl ProbeError {
    /// The file the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            ProbeError::Io { path, .. }
            | ProbeError::TimedOut { path, .. }
            | ProbeError::TooManyStuck { path, .. }
            | ProbeError::Spawn { path, .. } => path,
        }
    }

    /// The errno, for [`ProbeError::Io`].
    pub fn errno(&self) -> Option<Errno> {
        match self {
            ProbeError::Io { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// Whether the error comes from an unresponsive filesystem:
    /// [`TimedOut`](ProbeError::TimedOut) or
    /// [`TooManyStuck`](ProbeError::TooManyStuck).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            ProbeError::TimedOut { .. } | ProbeError::TooManyStuck { .. }
        )
    }
}

struct TooManyStuckWhy<'a> {
    stuck: usize,
    cap: usize,
    oldest: &'a Option<StuckProbe>,
}

impl fmt::Display for TooManyStuckWhy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} earlier timed-out probe{} still stuck in the kernel (cap {})",
            self.stuck,
            if self.stuck == 1 { " is" } else { "s are" },
            self.cap
        )?;
        if let Some(oldest) = self.oldest {
            write!(
                f,
                "; the oldest, on {}, has waited {}",
                oldest.path().display(),
                Secs(oldest.waited())
            )?;
        }
        f.write_str("; the filesystem looks dead, so no new thread was started")
    }
}

/// `1.000 s`
pub(crate) struct Secs(pub(crate) Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3} s", self.0.as_secs_f64())
    }
}

/// Why [`Strategy::Auto`](crate::Strategy::Auto) answered with `fstatat(2)`
/// instead of `statx(2)`.
///
/// `statx` failing with `ENOSYS`, `EPERM`, `EACCES` or `EOPNOTSUPP` is not
/// trusted alone: seccomp filters (old container runtimes) and broken FUSE
/// servers return those too. A definitive probe — `statx` on a pipe, which
/// cannot fail when the system call works — decides, once per process, as
/// rustix does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Fallback {
    /// What `statx` returned on this call; `None` when an earlier call had
    /// already shown statx to be unavailable and it was not tried again.
    /// rustix runs its own definitive probe on its first statx failure and
    /// reports a filtered statx as `ENOSYS`, whatever errno the filter
    /// returns, so an `EPERM` filter shows here as `ENOSYS`.
    pub statx_errno: Option<Errno>,
    /// What the definitive probe returned.
    pub probe_errno: Errno,
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("statx is not available")?;
        if let Some(e) = self.statx_errno {
            write!(f, " (it returned {}", ErrnoName(e))?;
        } else {
            f.write_str(" (known from an earlier call")?;
        }
        write!(
            f,
            ", and statx on a pipe returned {}): used fstatat, basic fields only",
            ErrnoName(self.probe_errno)
        )
    }
}

/// A timed-out probe whose worker is still waiting for the kernel.
#[derive(Clone, Debug)]
pub struct StuckProbe {
    pub(crate) path: PathBuf,
    pub(crate) since: Instant,
}

impl StuckProbe {
    /// The file it probes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// When the probe started.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// How long it has been waiting so far.
    pub fn waited(&self) -> Duration {
        self.since.elapsed()
    }
}

impl fmt::Display for StuckProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (waiting {})",
            self.path.display(),
            Secs(self.waited())
        )
    }
}
