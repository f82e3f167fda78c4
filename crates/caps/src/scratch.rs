//! Scratch files that never outlive the probe: `O_TMPFILE` inodes, or
//! uniquely named files unlinked the moment they are open.

use crate::error::CapsError;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, openat, unlinkat};
use rustix::io::Errno;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How scratch files are made in one directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScratchKind {
    /// `open(dir, O_TMPFILE | O_RDWR)`: an inode with no name at all.
    TmpFile,
    /// `open(dir/.sparsekit-caps-PID-N.tmp, O_CREAT | O_EXCL)` then
    /// `unlinkat` at once: the name exists for two syscalls.
    Named,
}

impl ScratchKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ScratchKind::TmpFile => "o_tmpfile",
            ScratchKind::Named => "named",
        }
    }
}

/// A directory scratch files are made in.
#[derive(Debug)]
pub(crate) struct ScratchDir {
    pub(crate) dir: OwnedFd,
    pub(crate) path: PathBuf,
    pub(crate) kind: ScratchKind,
    /// What the one `O_TMPFILE` attempt gave.
    pub(crate) tmpfile: Result<(), Errno>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl ScratchDir {
    /// Opens `path` and finds out how scratch files can be made there (one
    /// `O_TMPFILE` attempt). `force_named` makes them by name even where
    /// `O_TMPFILE` works, so the fallback can be tested anywhere.
    pub(crate) fn open(path: &Path, force_named: bool) -> Result<Self, CapsError> {
        let dir = openat(
            rustix::fs::CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| match errno {
            Errno::NOTDIR => CapsError::NotADirectory {
                path: path.to_owned(),
            },
            errno => CapsError::Inspect {
                path: path.to_owned(),
                op: "open",
                errno,
            },
        })?;
        let mut scratch = ScratchDir {
            dir,
            path: path.to_owned(),
            kind: ScratchKind::TmpFile,
            tmpfile: Ok(()),
        };
        match scratch.tmpfile() {
            Ok(_) if force_named => scratch.kind = ScratchKind::Named,
            Ok(_) => {}
            // sparsekit's set, plus EISDIR: a kernel that predates O_TMPFILE
            // (3.11) sees O_DIRECTORY only.
            Err(errno) if sparsekit_sys::is_unsupported(errno) || errno == Errno::ISDIR => {
                scratch.kind = ScratchKind::Named;
                scratch.tmpfile = Err(errno);
            }
            Err(errno) => {
                return Err(CapsError::Scratch {
                    path: path.to_owned(),
                    op: "open(O_TMPFILE)",
                    offset: 0,
                    errno,
                });
            }
        }
        Ok(scratch)
    }

    fn tmpfile(&self) -> Result<File, Errno> {
        let fd = openat(
            &self.dir,
            ".",
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        Ok(File::from(fd))
    }

    /// A named scratch file, unlinked before it is returned.
    fn named(&self) -> Result<File, Errno> {
        loop {
            let name = format!(
                ".sparsekit-caps-{}-{}.tmp",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let fd = match openat(
                &self.dir,
                &name,
                OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => fd,
                // Another process of the same pid namespace left one behind.
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(e),
            };
            // Nothing can fail between the two calls but the unlink itself;
            // if it does, the file is closed and the error returned, and the
            // name is as unique as ever.
            unlinkat(&self.dir, &name, AtFlags::empty())?;
            return Ok(File::from(fd));
        }
    }

    /// A fresh, empty scratch file, open for reading and writing.
    pub(crate) fn file(&self) -> Result<Scratch, CapsError> {
        let file = match self.kind {
            ScratchKind::TmpFile => self.tmpfile(),
            ScratchKind::Named => self.named(),
        }
        .map_err(|errno| CapsError::Scratch {
            path: self.path.clone(),
            op: match self.kind {
                ScratchKind::TmpFile => "open(O_TMPFILE)",
                ScratchKind::Named => "open(O_CREAT|O_EXCL)",
            },
            offset: 0,
            errno,
        })?;
        Ok(Scratch {
            file,
            dir: self.path.clone(),
        })
    }
}

/// One scratch file, with the I/O helpers trials need. Errors from these
/// helpers are setup failures ([`CapsError::Scratch`]), not observations.
#[derive(Debug)]
pub(crate) struct Scratch {
    pub(crate) file: File,
    dir: PathBuf,
}

impl AsFd for Scratch {
    fn as_fd(&self) -> rustix::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl Scratch {
    pub(crate) fn fail(&self, op: &'static str, offset: u64, errno: Errno) -> CapsError {
        CapsError::Scratch {
            path: self.dir.clone(),
            op,
            offset,
            errno,
        }
    }

    fn io_fail(&self, op: &'static str, offset: u64, e: &std::io::Error) -> CapsError {
        self.fail(
            op,
            offset,
            Errno::from_raw_os_error(e.raw_os_error().unwrap_or(libc_eio())),
        )
    }

    /// Writes `data` at `offset`.
    pub(crate) fn write_at(&self, data: &[u8], offset: u64) -> Result<(), CapsError> {
        self.file
            .write_all_at(data, offset)
            .map_err(|e| self.io_fail("pwrite", offset, &e))
    }

    /// Reads `len` bytes at `offset` (short at end of file).
    pub(crate) fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>, CapsError> {
        let mut buf = vec![0u8; len as usize];
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_fail("pread", offset + done as u64, &e)),
            }
        }
        buf.truncate(done);
        Ok(buf)
    }

    /// `ftruncate`.
    pub(crate) fn set_len(&self, len: u64) -> Result<(), CapsError> {
        rustix::fs::ftruncate(&self.file, len).map_err(|e| self.fail("ftruncate", len, e))
    }

    /// `fdatasync`: data and the allocation that goes with it are on disk,
    /// so FIEMAP and `st_blocks` show real extents, not delalloc.
    pub(crate) fn sync(&self) -> Result<(), CapsError> {
        rustix::fs::fdatasync(&self.file).map_err(|e| self.fail("fdatasync", 0, e))
    }

    /// `st_size` and `st_blocks * 512`.
    pub(crate) fn size_and_allocated(&self) -> Result<(u64, u64), CapsError> {
        let st = rustix::fs::fstat(&self.file).map_err(|e| self.fail("fstat", 0, e))?;
        Ok((st.st_size as u64, st.st_blocks as u64 * 512))
    }

    /// `st_blocks * 512`.
    pub(crate) fn allocated(&self) -> Result<u64, CapsError> {
        self.size_and_allocated().map(|(_, a)| a)
    }
}

fn libc_eio() -> i32 {
    Errno::IO.raw_os_error()
}

pub(crate) use sparsekit_sys::pattern;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_files_leave_nothing_behind_either_way() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = ScratchDir::open(dir.path(), false).unwrap();
        let f = scratch.file().unwrap();
        f.write_at(b"hello", 0).unwrap();
        assert_eq!(f.read_at(0, 10).unwrap(), b"hello");
        let named = ScratchDir::open(dir.path(), true).unwrap();
        assert_eq!(named.kind, ScratchKind::Named);
        assert_eq!(named.tmpfile, Ok(()));
        let g = named.file().unwrap();
        g.set_len(4096).unwrap();
        assert_eq!(g.size_and_allocated().unwrap().0, 4096);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        drop((f, g));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_file_is_not_a_directory() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = ScratchDir::open(file.path(), false).unwrap_err();
        assert!(matches!(err, CapsError::NotADirectory { .. }), "{err}");
        let err = ScratchDir::open(Path::new("/nonexistent/caps"), false).unwrap_err();
        assert_eq!(err.errno(), Some(Errno::NOENT));
        assert!(err.to_string().contains("/nonexistent/caps"), "{err}");
    }
}
