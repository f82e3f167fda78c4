//! Opening the files a command works on, safely: no open that can block
//! (a FIFO waits for a writer forever in `open`), no open with side effects
//! (a terminal becoming our controlling tty, a tape rewinding), and clear
//! errors for the wrong kind of file and for dangling symbolic links.
//!
//! Each path is first opened with `O_PATH` (which never blocks and never
//! runs a driver's open), checked with `fstat`, and only then opened for
//! real, `O_NONBLOCK | O_NOCTTY`; the second open must find the same inode.

use crate::exit::{UsageError, io_error};
use rustix::fs::{FileType, Mode, OFlags, fstat, open};
use std::fs::File;
use std::path::Path;

/// What a command accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Accept {
    /// A regular file (punch, dig, clone, dedupe).
    Regular,
    /// A regular file or a block device (map, copy).
    FileOrDevice,
    /// A directory (`caps DIR`).
    Directory,
}

/// The name users know a file type by.
pub(crate) fn kind_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a fifo",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        _ => "of an unknown type",
    }
}

/// Checks what `path` is without opening it for I/O. `op` names the
/// command in the message (`"PATH: map: not a regular file (it is a fifo)"`).
/// Wrong kind: exit 2. Missing (or a dangling symbolic link): exit 1,
/// naming the errno and the link's target.
pub(crate) fn check(path: &Path, op: &str, accept: Accept) -> anyhow::Result<rustix::fs::Stat> {
    let fd = open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| open_error(path, e))?;
    let st = fstat(&fd).map_err(|e| io_error(&path.display().to_string(), "fstat", &e.into()))?;
    let kind = FileType::from_raw_mode(st.st_mode);
    let ok = match accept {
        Accept::Regular => kind == FileType::RegularFile,
        Accept::FileOrDevice => {
            matches!(kind, FileType::RegularFile | FileType::BlockDevice)
        }
        Accept::Directory => kind == FileType::Directory,
    };
    if !ok {
        let wanted = match accept {
            Accept::Regular => "not a regular file",
            Accept::FileOrDevice => "not a regular file or block device",
            Accept::Directory => "not a directory",
        };
        return Err(UsageError(format!(
            "{}: {op}: {wanted} (it is {})",
            path.display(),
            kind_name(kind)
        ))
        .into());
    }
    Ok(st)
}

/// [`check`]s `path`, then opens it read-only (`write`: read-write),
/// never blocking and never taking a controlling terminal.
pub(crate) fn open_checked(
    path: &Path,
    op: &str,
    accept: Accept,
    write: bool,
) -> anyhow::Result<File> {
    let before = check(path, op, accept)?;
    let access = if write { OFlags::RDWR } else { OFlags::RDONLY };
    let fd = open(
        path,
        access | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| open_error(path, e))?;
    let after =
        fstat(&fd).map_err(|e| io_error(&path.display().to_string(), "fstat", &e.into()))?;
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino) {
        return Err(anyhow::anyhow!(
            "{}: {op}: the file was replaced while it was being opened",
            path.display()
        ));
    }
    // Regular files and block devices ignore O_NONBLOCK for I/O; clear it
    // anyway so nothing downstream sees EAGAIN.
    let flags = rustix::fs::fcntl_getfl(&fd)
        .map_err(|e| io_error(&path.display().to_string(), "fcntl", &e.into()))?;
    rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK)
        .map_err(|e| io_error(&path.display().to_string(), "fcntl", &e.into()))?;
    Ok(File::from(fd))
}

/// `PATH: open: ENOENT (…)`, plus the target of a dangling symbolic link.
/// Exit 1: the path names nothing usable, which is not a malformed command.
pub(crate) fn open_error(path: &Path, e: rustix::io::Errno) -> anyhow::Error {
    let shown = path.display().to_string();
    if e == rustix::io::Errno::NOENT {
        if let Some(target) = dangling_target(path) {
            return anyhow::anyhow!(
                "{shown}: open: {}: it is a dangling symbolic link (to {})",
                sparsekit_sys::ErrnoName(e),
                target.display()
            );
        }
    }
    io_error(&shown, "open", &e.into())
}

/// Adds "it is a dangling symbolic link (to T)" to an ENOENT from a call
/// that looked `path` up itself (statx): exit 1 as for every command.
pub(crate) fn note_dangling(
    path: &Path,
    e: rustix::io::Errno,
    err: anyhow::Error,
) -> anyhow::Error {
    // Only ENOENT can mean a dangling link. Looking at the path for any
    // other errno would be one more unbounded call after a bounded one: on
    // a dead NFS mount (EIO from a soft mount) that lstat blocks again, and
    // `stat --timeout 8s` took 13.8 s (the bench's nfs/outage_* scenarios).
    if e != rustix::io::Errno::NOENT {
        return err;
    }
    match dangling_target(path) {
        Some(target) => anyhow::anyhow!(
            "{err:#}: it is a dangling symbolic link (to {})",
            target.display()
        ),
        None => err,
    }
}

/// The target of `path` if it is a symbolic link that leads nowhere.
pub(crate) fn dangling_target(path: &Path) -> Option<std::path::PathBuf> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_symlink() || path.exists() {
        return None;
    }
    std::fs::read_link(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("f");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, Mode::from_raw_mode(0o600)).unwrap();
        for write in [false, true] {
            let e = open_checked(&fifo, "map", Accept::FileOrDevice, write).unwrap_err();
            assert!(e.downcast_ref::<UsageError>().is_some());
            assert!(
                e.to_string()
                    .ends_with("f: map: not a regular file or block device (it is a fifo)"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_dangling_link_names_its_target_and_is_not_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink("nowhere/x", &link).unwrap();
        let e = open_checked(&link, "map", Accept::FileOrDevice, false).unwrap_err();
        assert!(e.downcast_ref::<UsageError>().is_none());
        assert!(
            e.to_string()
                .contains("l: open: ENOENT (No such file or directory): it is a dangling symbolic link (to nowhere/x)"),
            "{e}"
        );
    }

    #[test]
    fn regular_files_open_blocking_and_directories_are_checked() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let file = open_checked(f.path(), "map", Accept::Regular, true).unwrap();
        let flags = rustix::fs::fcntl_getfl(&file).unwrap();
        assert!(!flags.contains(OFlags::NONBLOCK));
        let dir = tempfile::tempdir().unwrap();
        assert!(check(dir.path(), "caps", Accept::Directory).is_ok());
        let e = check(f.path(), "caps", Accept::Directory).unwrap_err();
        assert!(
            e.to_string()
                .contains("not a directory (it is a regular file)"),
            "{e}"
        );
    }
}
