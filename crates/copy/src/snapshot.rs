//! [`CopyOptions::snapshot`](crate::CopyOptions::snapshot): copy from a
//! reflinked image of the source taken at the start, so a file that is
//! being written (a running VM's disk) is copied as it was at one instant.
//!
//! The image is an `O_TMPFILE` inode in the source's directory (same
//! filesystem, so `FICLONE` can share every extent: no data is copied and
//! no space is used until the source is written again). It has no name:
//! closing it — after the copy, on failure, on a signal, even on SIGKILL —
//! frees it. Where `O_TMPFILE` is missing, a hidden name is created and
//! unlinked at once, before the clone.

use crate::error::CopyError;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, open, openat, unlinkat};
use rustix::io::Errno;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static SERIAL: AtomicU64 = AtomicU64::new(0);

/// Clones `src` into a new nameless file in `src_path`'s directory and
/// returns it, open for reading. Fails with
/// [`CopyError::SnapshotUnsupported`] (nothing left behind) where the
/// filesystem cannot reflink.
pub(crate) fn take(src: &File, src_path: &Path) -> Result<File, CopyError> {
    let dir_path = match src_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let io = |path: &Path, op, errno| CopyError::Io {
        path: path.to_owned(),
        op,
        offset: None,
        errno,
    };
    let dir = open(
        &dir_path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io(&dir_path, "open", e))?;
    let image = match openat(
        &dir,
        ".",
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::RUSR | Mode::WUSR,
    ) {
        Ok(fd) => fd,
        // sparsekit's set, plus EISDIR: a kernel that predates O_TMPFILE
        // (3.11) sees O_DIRECTORY only.
        Err(e) if sparsekit_sys::is_unsupported(e) || e == Errno::ISDIR => {
            unlinked(&dir, &dir_path, src_path)?
        }
        Err(e) => return Err(io(&dir_path, "open(O_TMPFILE)", e)),
    };
    match sparsekit_clone::clone_file(src.as_fd(), &image) {
        Ok(()) => Ok(File::from(image)),
        Err(e) => Err(CopyError::SnapshotUnsupported {
            path: src_path.to_owned(),
            errno: e.errno().unwrap_or(Errno::INVAL),
        }),
    }
}

/// A hidden file created and unlinked at once: only a crash between the
/// two calls can leave its name.
fn unlinked(dir: &OwnedFd, dir_path: &Path, src_path: &Path) -> Result<OwnedFd, CopyError> {
    let base = src_path
        .file_name()
        .map(|n| n.to_string_lossy().chars().take(200).collect::<String>())
        .unwrap_or_default();
    for _ in 0..1000 {
        let n = SERIAL.fetch_add(1, Ordering::Relaxed);
        let name = format!(".{base}.sparsekit-snapshot-{}-{n}.tmp", std::process::id());
        match openat(
            dir,
            name.as_str(),
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        ) {
            Ok(fd) => {
                unlinkat(dir, name.as_str(), AtFlags::empty()).map_err(|errno| CopyError::Io {
                    path: dir_path.join(&name),
                    op: "unlink",
                    offset: None,
                    errno,
                })?;
                return Ok(fd);
            }
            Err(Errno::EXIST) => continue,
            Err(errno) => {
                return Err(CopyError::Io {
                    path: dir_path.join(&name),
                    op: "create",
                    offset: None,
                    errno,
                });
            }
        }
    }
    Err(CopyError::Io {
        path: dir_path.to_owned(),
        op: "create",
        offset: None,
        errno: Errno::EXIST,
    })
}
