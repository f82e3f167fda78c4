//! Human names for errno values, so every message says `EOPNOTSUPP` and not
//! `os error 95`.

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
    }
}
