//! [`WriteLease`]: keeps every other writer out of a file while an in-place
//! operation reads it and then rewrites it (dig, emulated collapse/insert).
//!
//! A read-then-write operation loses data when another process writes
//! between the read and the write: dig reads a block as zeros, someone
//! writes it, dig punches it. A write lease (`fcntl(F_SETLEASE, F_WRLCK)`)
//! closes that window:
//! - it is granted only while no other open file description of the file
//!   exists, for reading or writing, shared writable mappings included
//!   (`EAGAIN` otherwise), so no writer is already in;
//! - any later `open(2)` or `truncate(2)` of the file *breaks* it: the
//!   opener blocks in `open` until the holder releases the lease (or
//!   `/proc/sys/fs/lease-break-time` seconds, 45 by default, pass), and
//!   `F_GETLEASE` reports the break at once.
//!
//! So: take the lease before reading anything, call [`WriteLease::check`]
//! before every write, and stop at the first [`Broken`]. Every write made
//! while `check` still said "held" happened before the newcomer could write
//! anything, and dropping the guard lets it in.
//!
//! Limits (the kernel's, documented in `fcntl(2)`): a process that shares
//! *this* open file description (a forked child, a descriptor passed over a
//! socket) is not another opener; `O_PATH` opens do not break a lease; on
//! overlayfs the lease guards the overlay inode only, so writers going to
//! the upper or lower directory directly are not seen; filesystems without
//! leases and `leases-enable = 0` refuse with `EINVAL`; a `lease-break-time` of 0 lets an opener in after one tick,
//! which leaves no margin between a `check` and the write that follows.
//!
//! # References
//! - [`fcntl(2)`](https://man7.org/linux/man-pages/man2/fcntl.2.html), "Leases";
//!   [`proc_sys_fs(5)`](https://man7.org/linux/man-pages/man5/proc_sys_fs.5.html)
//!   (`leases-enable`, `lease-break-time`)
//! - `fs/locks.c` (`check_conflicting_open`, `__break_lease`, `fcntl_getlease`)

use rustix::fd::{AsFd, BorrowedFd};
use rustix::io::Errno;
use sparsekit_sys::ErrnoName;
use sparsekit_sys::lease::{Lease, clear_owner, get_lease, set_lease};
use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// A write lease held on a descriptor; dropping it releases the lease.
///
/// ```
/// use sparsekit_punch::WriteLease;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let f = tempfile::tempfile()?;
/// let lease = WriteLease::acquire(&f)?; // EAGAIN if another process has it open
/// // read …
/// lease.check()?; // before every write: Err(Broken) once someone opened the file
/// // write …
/// drop(lease); // whoever opened it meanwhile gets in now
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct WriteLease<'fd> {
    fd: BorrowedFd<'fd>,
    since: Instant,
}

/// Why a write lease could not be taken; nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no write lease (fcntl F_SETLEASE F_WRLCK): {}: {}", ErrnoName(*errno), lease_refusal(*errno))]
#[non_exhaustive]
pub struct LeaseError {
    /// What `F_SETLEASE` (or `F_SETOWN`) said.
    pub errno: Errno,
}

/// What an errno from `F_SETLEASE(F_WRLCK)` means, for messages.
pub fn lease_refusal(errno: Errno) -> &'static str {
    match errno {
        Errno::AGAIN => {
            "another process (or another descriptor of this one) has the file open or mapped, or (NFSv4) the server granted no write delegation, without which the client takes no lease"
        }
        Errno::INVAL => {
            "this filesystem has no leases, or they are disabled (/proc/sys/fs/leases-enable)"
        }
        Errno::NOLCK => "the kernel is out of lock records, or this filesystem has no leases",
        Errno::ACCESS => "only the file's owner (or CAP_LEASE) may take a lease",
        _ => "the lease call failed",
    }
}

/// A broken lease: another process opened (or truncated) the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Broken {
    /// Who broke it.
    pub by: Breaker,
    /// How long the lease had been held when the break was seen.
    pub held_for: Duration,
}

/// Who broke a lease, as `F_GETLEASE` tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Breaker {
    /// An `open` for reading (`F_GETLEASE` asks for a downgrade to `F_RDLCK`).
    Reader,
    /// An `open` for writing or a `truncate` (`F_GETLEASE` asks for
    /// `F_UNLCK`), or the lease was already revoked after
    /// `lease-break-time`.
    Writer,
    /// `F_GETLEASE` failed with this errno: exclusion cannot be confirmed,
    /// so it counts as broken.
    Unknown(Errno),
}

impl fmt::Display for Broken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = match self.by {
            Breaker::Reader => "another process opened the file for reading".to_owned(),
            Breaker::Writer => {
                "another process opened the file for writing (or truncated it)".to_owned()
            }
            Breaker::Unknown(errno) => {
                format!(
                    "the write lease could not be checked ({})",
                    ErrnoName(errno)
                )
            }
        };
        write!(
            f,
            "{who} {:.1} s after the write lease was taken (lease broken)",
            self.held_for.as_secs_f64()
        )
    }
}

impl std::error::Error for Broken {}

impl<'fd> WriteLease<'fd> {
    /// Takes a write lease on `fd` (`fcntl(F_SETLEASE, F_WRLCK)`), then
    /// clears the descriptor's owner (`F_SETOWN` 0) so a break sends no
    /// `SIGIO`: breaks are seen by [`check`](Self::check) polling
    /// `F_GETLEASE`. The first call in a process also installs a `SIGIO`
    /// handler that only sets a flag (`signal-hook`), so a break landing
    /// between those two calls cannot kill the process (`SIGIO`'s default
    /// action).
    ///
    /// # Errors
    /// [`LeaseError`] with `EAGAIN` (another open file description of the
    /// file exists, for reading or writing, or a shared mapping), `EINVAL`
    /// (no leases on this filesystem, leases disabled, not a regular file),
    /// `EACCES` (not the owner, no `CAP_LEASE`), `ENOLCK`. Nothing is held
    /// after an error.
    #[doc(alias = "F_SETLEASE")]
    pub fn acquire<Fd: AsFd>(fd: &'fd Fd) -> Result<WriteLease<'fd>, LeaseError> {
        let fd = fd.as_fd();
        sigio_is_harmless();
        set_lease(fd, Lease::Write).map_err(|errno| LeaseError { errno })?;
        let lease = WriteLease {
            fd,
            since: Instant::now(),
        };
        // On failure the guard's Drop releases the lease.
        clear_owner(fd).map_err(|errno| LeaseError { errno })?;
        Ok(lease)
    }

    /// [`acquire`](Self::acquire), retrying `EAGAIN` for up to `patience`
    /// (backing off from 1 ms to 50 ms): a file open only for a moment —
    /// by a process that scans it, or held by a child between `fork` and
    /// `exec` — should not make a caller refuse. Other errors return at once.
    ///
    /// # Errors
    /// As [`acquire`](Self::acquire); `EAGAIN` once `patience` is spent.
    pub fn acquire_within<Fd: AsFd>(
        fd: &'fd Fd,
        patience: Duration,
    ) -> Result<WriteLease<'fd>, LeaseError> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match Self::acquire(fd) {
                Err(e) if e.errno == Errno::AGAIN && start.elapsed() + pause <= patience => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                r => return r,
            }
        }
    }

    /// `Ok` while the lease is held and no break has begun (`F_GETLEASE`
    /// still says `F_WRLCK`): nobody else can have written since
    /// [`acquire`](Self::acquire), and nobody can write before the caller
    /// finishes its next write and releases the lease (unless that takes
    /// `lease-break-time`). Call it before every write.
    ///
    /// # Errors
    /// [`Broken`] from the moment another process starts opening or
    /// truncating the file; it stays broken. Release the lease promptly
    /// (drop the guard): the opener waits in `open` until then.
    pub fn check(&self) -> Result<(), Broken> {
        let by = match get_lease(self.fd) {
            Ok(Lease::Write) => return Ok(()),
            Ok(Lease::Read) => Breaker::Reader,
            Ok(Lease::Unlocked) => Breaker::Writer,
            Err(errno) => Breaker::Unknown(errno),
        };
        Err(Broken {
            by,
            held_for: self.since.elapsed(),
        })
    }

    /// Releases the lease now (`F_SETLEASE F_UNLCK`); dropping does the same
    /// and ignores the error.
    ///
    /// # Errors
    /// The errno of `F_SETLEASE` (`EBADF` if the descriptor was closed).
    pub fn release(self) -> Result<(), Errno> {
        let fd = self.fd;
        std::mem::forget(self);
        set_lease(fd, Lease::Unlocked)
    }
}

impl Drop for WriteLease<'_> {
    fn drop(&mut self) {
        // Nothing useful can be done with an error here: the lease goes
        // with the descriptor anyway when it is closed.
        let _ = set_lease(self.fd, Lease::Unlocked);
    }
}

/// Something that must still hold before each write of an in-place
/// operation: a [`WriteLease`], or a test double that breaks on cue.
pub trait Exclusion {
    /// `Ok` while other writers are still excluded.
    ///
    /// # Errors
    /// [`Broken`] once they are not.
    fn check(&self) -> Result<(), Broken>;
}

impl Exclusion for WriteLease<'_> {
    fn check(&self) -> Result<(), Broken> {
        WriteLease::check(self)
    }
}

/// Installs (once per process) a `SIGIO` handler that sets a flag nobody
/// reads: it exists only to replace the default action, which kills.
fn sigio_is_harmless() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        static SEEN: OnceLock<std::sync::Arc<AtomicBool>> = OnceLock::new();
        let flag = SEEN.get_or_init(Default::default).clone();
        // If registration fails (it only can for a forbidden signal), the
        // window it covers stays: two back-to-back fcntl calls.
        let _ = signal_hook::flag::register(signal_hook::consts::SIGIO, flag);
    });
}
