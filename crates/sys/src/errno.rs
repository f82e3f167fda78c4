//! The one errno vocabulary: how an errno is named (every message says
//! `EOPNOTSUPP`, never `os error 95`), and which errnos mean "this call, or
//! this mode of it, does not exist here: try the next strategy".
//!
//! Every op crate asks [`is_unsupported`] before it falls back. A crate that
//! needs more (FIEMAP's `EBADR`, `EXDEV` across filesystems) or less (a probe
//! that must not take `EINVAL` as "absent") says so at its call site, with the
//! reason, next to the call to [`is_unsupported`].

use rustix::io::Errno;
use std::fmt;

/// Displays an [`Errno`] as `NAME (description)`, e.g. `ENXIO (No such device or address)`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ErrnoName(pub Errno);

impl ErrnoName {
    /// The symbolic name (`"EINVAL"`), or `None` for values outside the common set.
    pub fn symbol(self) -> Option<&'static str> {
        symbol(self.0)
    }

    /// The name documents and matrix cells use: the symbol (`"EOPNOTSUPP"`),
    /// or `"errno N"` outside the named set — never null, never "unknown".
    pub fn symbolic(self) -> String {
        match symbol(self.0) {
            Some(name) => name.to_owned(),
            None => format!("errno {}", self.0.raw_os_error()),
        }
    }
}

/// The errnos that mean "unsupported here", for every op crate:
/// - `EOPNOTSUPP`: the filesystem does not implement the call or this mode
///   of it (tmpfs FIEMAP, ext4 FICLONE, an unknown `fallocate` mode, an
///   `RWF_*` flag the kernel does not know);
/// - `ENOSYS`: the kernel has no such system call (or a seccomp filter
///   says so);
/// - `ENOTTY`: no such ioctl on this file;
/// - `EINVAL`: several filesystems answer an unknown mode or flag with it.
///   Callers validate their own arguments first, so that what is left is
///   the kernel refusing the mode.
///
/// Everything else (`EIO`, `ENOSPC`, `EBADF`, …) is a failure that the next
/// strategy would meet too: it stops the operation.
pub const UNSUPPORTED: [Errno; 4] = [Errno::OPNOTSUPP, Errno::NOSYS, Errno::NOTTY, Errno::INVAL];

/// Whether `errno` is one of [`UNSUPPORTED`]: move on to the next strategy
/// and record a [`Fallback`](crate::Fallback).
pub fn is_unsupported(errno: Errno) -> bool {
    UNSUPPORTED.contains(&errno)
}

impl fmt::Display for ErrnoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.0.raw_os_error();
        // std knows the libc strerror text; we add the symbol users grep for.
        let text = std::io::Error::from_raw_os_error(code).to_string();
        let text = text.split(" (os error").next().unwrap_or(&text).to_owned();
        match symbol(self.0) {
            Some(name) => write!(f, "{name} ({text})"),
            None => write!(f, "errno {code} ({text})"),
        }
    }
}

impl fmt::Debug for ErrnoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The symbolic name of an errno value, for the codes file and block I/O can return.
pub fn symbol(errno: Errno) -> Option<&'static str> {
    const NAMES: &[(Errno, &str)] = &[
        (Errno::PERM, "EPERM"),
        (Errno::NOENT, "ENOENT"),
        (Errno::INTR, "EINTR"),
        (Errno::IO, "EIO"),
        (Errno::NXIO, "ENXIO"),
        (Errno::TOOBIG, "E2BIG"),
        (Errno::BADF, "EBADF"),
        (Errno::AGAIN, "EAGAIN"),
        (Errno::NOMEM, "ENOMEM"),
        (Errno::ACCESS, "EACCES"),
        (Errno::FAULT, "EFAULT"),
        (Errno::BUSY, "EBUSY"),
        (Errno::EXIST, "EEXIST"),
        (Errno::XDEV, "EXDEV"),
        (Errno::NODEV, "ENODEV"),
        (Errno::NOTDIR, "ENOTDIR"),
        (Errno::ISDIR, "EISDIR"),
        (Errno::INVAL, "EINVAL"),
        (Errno::MFILE, "EMFILE"),
        (Errno::NOTTY, "ENOTTY"),
        (Errno::TXTBSY, "ETXTBSY"),
        (Errno::FBIG, "EFBIG"),
        (Errno::NOSPC, "ENOSPC"),
        (Errno::SPIPE, "ESPIPE"),
        (Errno::ROFS, "EROFS"),
        (Errno::PIPE, "EPIPE"),
        (Errno::NAMETOOLONG, "ENAMETOOLONG"),
        (Errno::NOLCK, "ENOLCK"),
        (Errno::NOSYS, "ENOSYS"),
        (Errno::NOTEMPTY, "ENOTEMPTY"),
        (Errno::LOOP, "ELOOP"),
        (Errno::NODATA, "ENODATA"),
        (Errno::BADR, "EBADR"),
        (Errno::OVERFLOW, "EOVERFLOW"),
        (Errno::OPNOTSUPP, "EOPNOTSUPP"),
        (Errno::TIMEDOUT, "ETIMEDOUT"),
        (Errno::STALE, "ESTALE"),
        (Errno::DQUOT, "EDQUOT"),
        (Errno::NOTCONN, "ENOTCONN"),
        (Errno::CANCELED, "ECANCELED"),
    ];
    NAMES.iter().find(|(e, _)| *e == errno).map(|(_, n)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_symbol_and_text() {
        assert_eq!(
            ErrnoName(Errno::NXIO).to_string(),
            "ENXIO (No such device or address)"
        );
        assert_eq!(ErrnoName(Errno::OPNOTSUPP).symbol(), Some("EOPNOTSUPP"));
    }

    #[test]
    fn unknown_code_keeps_the_number() {
        let e = Errno::from_raw_os_error(133); // EHWPOISON, not in the table
        assert!(ErrnoName(e).to_string().starts_with("errno 133 ("));
        assert_eq!(ErrnoName(e).symbolic(), "errno 133");
    }

    #[test]
    fn ebadr_has_its_name() {
        // FIEMAP answers EBADR for flags it does not support.
        assert_eq!(Errno::BADR.raw_os_error(), 53);
        assert_eq!(ErrnoName(Errno::BADR).symbolic(), "EBADR");
    }

    #[test]
    fn the_unsupported_set() {
        for e in UNSUPPORTED {
            assert!(is_unsupported(e), "{e:?}");
        }
        // Failures the next strategy would meet too, and errnos that only
        // some crates widen the set with, at their call sites.
        for e in [
            Errno::IO,
            Errno::NOSPC,
            Errno::BADF,
            Errno::INTR,
            Errno::XDEV,
            Errno::NODEV,
            Errno::SPIPE,
            Errno::BADR,
            Errno::PERM,
            Errno::ACCESS,
        ] {
            assert!(!is_unsupported(e), "{e:?}");
        }
    }
}
