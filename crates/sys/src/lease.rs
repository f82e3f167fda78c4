//! `fcntl(fd, F_SETLEASE / F_GETLEASE / F_SETOWN, …)`—file leases, which
//! rustix does not wrap.
//!
//! A write lease (`F_WRLCK`) is granted only while no other open file
//! description of the file exists (`EAGAIN` otherwise: the kernel compares
//! the inode's writer count, and its reader count where it keeps one, with
//! the lease holder's own descriptor). Once held, any `open(2)` of the file
//! (by any process, this one included) or `truncate(2)` *breaks* it: the
//! opener blocks in `open` (or gets `EWOULDBLOCK` with `O_NONBLOCK`) until
//! the holder releases the lease or `/proc/sys/fs/lease-break-time` seconds
//! pass, and from the moment the break starts `F_GETLEASE` returns the type
//! the holder must downgrade to (`F_RDLCK` for a reader, `F_UNLCK` for a
//! writer) instead of `F_WRLCK`.
//!
//! The kernel signals a break with `SIGIO` to the descriptor's owner, which
//! `F_SETLEASE` sets to the calling process; `SIGIO`'s default action
//! terminates it. [`clear_owner`] (`F_SETOWN` 0) stops the signal, for
//! callers that poll [`get_lease`] instead.
//!
//! # References
//! - [`fcntl(2)`](https://man7.org/linux/man-pages/man2/fcntl.2.html), "Leases"
//! - `fs/locks.c` (`generic_setlease`, `check_conflicting_open`,
//!   `__break_lease`, `fcntl_getlease`), `fs/fcntl.c` (`f_setown`, `send_sigio`)
#![allow(unsafe_code)]

use rustix::fd::{AsFd, AsRawFd};
use rustix::io;

/// A lease type, as `F_SETLEASE` takes and `F_GETLEASE` returns it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lease {
    /// `F_RDLCK`: a read lease (broken by an open for writing).
    Read,
    /// `F_WRLCK`: a write lease (broken by any open or truncate).
    Write,
    /// `F_UNLCK`: no lease (to release one; or, from `F_GETLEASE`, none
    /// held or a break that asks for it to be released).
    Unlocked,
}

impl Lease {
    fn raw(self) -> libc::c_int {
        match self {
            Lease::Read => libc::F_RDLCK,
            Lease::Write => libc::F_WRLCK,
            Lease::Unlocked => libc::F_UNLCK,
        }
    }

    fn from_raw(raw: libc::c_int) -> Option<Lease> {
        match raw {
            libc::F_RDLCK => Some(Lease::Read),
            libc::F_WRLCK => Some(Lease::Write),
            libc::F_UNLCK => Some(Lease::Unlocked),
            _ => None,
        }
    }

    /// `"F_WRLCK"`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Lease::Read => "F_RDLCK",
            Lease::Write => "F_WRLCK",
            Lease::Unlocked => "F_UNLCK",
        }
    }
}

/// `fcntl(fd, F_SETLEASE, lease)`—Takes, downgrades or releases a lease.
///
/// # Errors
/// `EAGAIN` (a write lease while another open file description of the file
/// exists, including a shared writable mapping; a read lease while the file
/// is open for writing), `EINVAL` (not a regular file, leases disabled by
/// `/proc/sys/fs/leases-enable`, or a filesystem whose `setlease` refuses
/// them), `EACCES` (not the file's owner and no
/// `CAP_LEASE`), `ENOLCK` (out of lock records), `EBADF`.
///
/// # References
/// - [`fcntl(2)`](https://man7.org/linux/man-pages/man2/fcntl.2.html) `F_SETLEASE` (since Linux 2.4)
#[doc(alias = "F_SETLEASE")]
pub fn set_lease<Fd: AsFd>(fd: Fd, lease: Lease) -> io::Result<()> {
    // SAFETY: F_SETLEASE takes an int argument and touches no memory of
    // ours; the borrowed fd stays open for the duration of the call.
    let ret = unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_SETLEASE, lease.raw()) };
    if ret < 0 {
        return Err(last_errno());
    }
    Ok(())
}

/// `fcntl(fd, F_GETLEASE)`—The lease held on `fd`; during a break, the type
/// it must be downgraded to.
///
/// # Errors
/// `EBADF`; `EINVAL` for a value the kernel should never return.
///
/// # References
/// - [`fcntl(2)`](https://man7.org/linux/man-pages/man2/fcntl.2.html) `F_GETLEASE` (since Linux 2.4)
#[doc(alias = "F_GETLEASE")]
pub fn get_lease<Fd: AsFd>(fd: Fd) -> io::Result<Lease> {
    // SAFETY: F_GETLEASE takes no argument and touches no memory of ours;
    // the borrowed fd stays open for the duration of the call.
    let ret = unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_GETLEASE) };
    if ret < 0 {
        return Err(last_errno());
    }
    Lease::from_raw(ret).ok_or(io::Errno::INVAL)
}

/// `fcntl(fd, F_SETOWN, 0)`—Clears the process that signals on `fd` are
/// sent to, so a lease break sends no `SIGIO` (whose default action kills).
///
/// # References
/// - [`fcntl(2)`](https://man7.org/linux/man-pages/man2/fcntl.2.html) `F_SETOWN`
#[doc(alias = "F_SETOWN")]
pub fn clear_owner<Fd: AsFd>(fd: Fd) -> io::Result<()> {
    // SAFETY: F_SETOWN takes an int argument (0: no owner) and touches no
    // memory of ours; the borrowed fd stays open for the duration of the call.
    let ret = unsafe { libc::fcntl(fd.as_fd().as_raw_fd(), libc::F_SETOWN, 0) };
    if ret < 0 {
        return Err(last_errno());
    }
    Ok(())
}

fn last_errno() -> io::Errno {
    io::Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::unix::fs::OpenOptionsExt;

    #[test]
    fn a_write_lease_is_refused_while_another_descriptor_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = File::create(&path).unwrap();
        let other = File::options().write(true).open(&path).unwrap();
        assert_eq!(set_lease(&f, Lease::Write), Err(io::Errno::AGAIN));
        drop(other);
        set_lease(&f, Lease::Write).unwrap();
        assert_eq!(get_lease(&f), Ok(Lease::Write));
        set_lease(&f, Lease::Unlocked).unwrap();
        assert_eq!(get_lease(&f), Ok(Lease::Unlocked));
    }

    #[test]
    fn an_open_breaks_a_write_lease_without_a_signal_once_the_owner_is_cleared() {
        // Without `clear_owner`, the break would SIGIO this test process,
        // and SIGIO's default action would kill it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        set_lease(&f, Lease::Write).unwrap();
        clear_owner(&f).unwrap();
        let opened = File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path);
        assert_eq!(
            opened.unwrap_err().raw_os_error(),
            Some(libc::EWOULDBLOCK),
            "a non-blocking open of a leased file returns EWOULDBLOCK and starts the break"
        );
        // A reader asked for a downgrade to a read lease.
        assert_eq!(get_lease(&f), Ok(Lease::Read));
        std::thread::sleep(std::time::Duration::from_millis(50));
        set_lease(&f, Lease::Unlocked).unwrap();
        File::options()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
    }
}
