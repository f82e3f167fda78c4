//! Paths to open files, and the failure-safety scheme: refuse copying a
//! file onto itself, stage a regular destination under no name (or a
//! hidden temporary name) in its directory and rename it into place only
//! after success, write block devices (and `InPlace` files) in place.

use crate::engine::{self, Target};
use crate::error::CopyError;
use crate::modes::Staging;
use crate::options::CopyOptions;
use crate::report::{CopyReport, DestinationKind, Fallback};
use crate::verify;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{
    AtFlags, CWD, FileType, Mode, OFlags, Stat, fstat, linkat, lstat, open, openat, renameat, stat,
    unlinkat,
};
use rustix::io::Errno;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

fn io(path: &Path, op: &'static str, errno: Errno) -> CopyError {
    CopyError::Io {
        path: path.to_owned(),
        op,
        offset: None,
        errno,
    }
}

pub(crate) use sparsekit_sys::file_type_name as kind_name;

/// Opens `path` read-only without ever blocking: a FIFO would block the
/// open until a writer came (the callers refuse it by its type right
/// after), and a tty must not become the controlling terminal. O_NONBLOCK
/// is cleared again, so no read can see EAGAIN. Errors name the call.
pub(crate) fn open_read(path: &Path) -> Result<File, (&'static str, Errno)> {
    let fd = open(
        path,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(|e| ("open", e))?;
    let flags = rustix::fs::fcntl_getfl(&fd).map_err(|e| ("fcntl(F_GETFL)", e))?;
    rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK).map_err(|e| ("fcntl(F_SETFL)", e))?;
    Ok(fd.into())
}

/// Refuses `verify` up front for a source that is streamed (its content is
/// generated when read): reading it again proves nothing.
fn verifiable(opts: &CopyOptions, src: &File, st: &Stat) -> Result<(), CopyError> {
    if opts.verify && crate::stream::needed(src.as_fd(), st).is_some() {
        return Err(CopyError::InvalidOptions(
            "verify reads the source again, and this source's content is generated when read (its size says nothing of it); copy it without verify",
        ));
    }
    Ok(())
}

fn copyable(st: &Stat, path: &Path, is_source: bool) -> Result<FileType, CopyError> {
    match FileType::from_raw_mode(st.st_mode) {
        ft @ (FileType::RegularFile | FileType::BlockDevice) => Ok(ft),
        ft => Err(CopyError::NotCopyable {
            path: path.to_owned(),
            is_source,
            kind: kind_name(ft),
        }),
    }
}

/// Same inode, same device, or a device that holds the source's filesystem.
pub(crate) fn check_distinct(
    src: &Stat,
    src_path: &Path,
    dst: &Stat,
    dst_path: &Path,
) -> Result<(), CopyError> {
    let same = || CopyError::SameFile {
        src: src_path.to_owned(),
        dst: dst_path.to_owned(),
    };
    if src.st_dev == dst.st_dev && src.st_ino == dst.st_ino {
        return Err(same());
    }
    if FileType::from_raw_mode(dst.st_mode) == FileType::BlockDevice {
        if FileType::from_raw_mode(src.st_mode) == FileType::BlockDevice
            && src.st_rdev == dst.st_rdev
        {
            return Err(same());
        }
        if src.st_dev == dst.st_rdev {
            return Err(CopyError::DestinationHoldsSource {
                src: src_path.to_owned(),
                dst: dst_path.to_owned(),
            });
        }
    }
    Ok(())
}

/// With [`CopyOptions::snapshot`]: the nameless reflinked image to copy
/// from instead of `src` (see [`snapshot`](crate::snapshot)).
fn take_snapshot(
    opts: &CopyOptions,
    src: &File,
    src_path: &Path,
) -> Result<Option<File>, CopyError> {
    opts.snapshot
        .then(|| crate::snapshot::take(src, src_path))
        .transpose()
}

pub(crate) fn copy_paths(
    opts: &CopyOptions,
    src_path: &Path,
    dst_path: &Path,
) -> Result<CopyReport, CopyError> {
    engine::check_options(opts)?;
    let src = open_read(src_path).map_err(|(op, e)| io(src_path, op, e))?;
    let src_st = fstat(&src).map_err(|e| io(src_path, "fstat", e))?;
    copyable(&src_st, src_path, true)?;
    verifiable(opts, &src, &src_st)?;

    // Follow a symlink destination to its target, so the copy replaces the
    // file and not the link.
    let (dst_path, dst_st): (PathBuf, Option<Stat>) = match stat(dst_path) {
        Ok(st) => {
            let is_link = lstat(dst_path)
                .is_ok_and(|l| FileType::from_raw_mode(l.st_mode) == FileType::Symlink);
            let path = if is_link {
                std::fs::canonicalize(dst_path).unwrap_or_else(|_| dst_path.to_owned())
            } else {
                dst_path.to_owned()
            };
            (path, Some(st))
        }
        Err(Errno::NOENT) => (dst_path.to_owned(), None),
        Err(e) => return Err(io(dst_path, "stat", e)),
    };
    let dst_path = dst_path.as_path();
    let dst_type = match &dst_st {
        Some(st) => {
            let ft = copyable(st, dst_path, false)?;
            check_distinct(&src_st, src_path, st, dst_path)?;
            Some(ft)
        }
        None => None,
    };
    // Refused before anything is created: only a block device or an
    // existing file copied in place has old content to skip.
    let kind = match (dst_type, &dst_st) {
        (Some(FileType::BlockDevice), _) => DestinationKind::BlockDevice,
        (Some(_), Some(st)) if opts.staging == Staging::InPlace && st.st_size > 0 => {
            DestinationKind::ExistingFile
        }
        _ => DestinationKind::NewFile,
    };
    engine::check_destination_is_zero(opts, kind)?;
    // The snapshot comes before anything is created, so a refusal leaves
    // nothing; from here on it is the source (the original is closed).
    let src = take_snapshot(opts, &src, src_path)?.unwrap_or(src);

    if dst_type == Some(FileType::BlockDevice) {
        // O_EXCL on a block device: refuse one that is mounted or claimed.
        let dev: File = open(
            dst_path,
            OFlags::RDWR | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io(dst_path, "open", e))?
        .into();
        let target = Target {
            file: &dev,
            path: dst_path,
            kind: DestinationKind::BlockDevice,
            staging: Staging::InPlace,
        };
        return verify::copy(opts, &src, src_path, target, Vec::new(), true);
    }

    let new_mode = Mode::from_raw_mode(src_st.st_mode & 0o777);
    if opts.staging == Staging::InPlace {
        return match dst_st {
            Some(st) => {
                let file: File = open(dst_path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
                    .map_err(|e| io(dst_path, "open", e))?
                    .into();
                let kind = if st.st_size == 0 {
                    DestinationKind::NewFile
                } else {
                    DestinationKind::ExistingFile
                };
                verify::copy(
                    opts,
                    &src,
                    src_path,
                    Target {
                        file: &file,
                        path: dst_path,
                        kind,
                        staging: Staging::InPlace,
                    },
                    Vec::new(),
                    true,
                )
            }
            None => {
                let file: File = open(
                    dst_path,
                    OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                    new_mode,
                )
                .map_err(|e| io(dst_path, "open", e))?
                .into();
                let target = Target {
                    file: &file,
                    path: dst_path,
                    kind: DestinationKind::NewFile,
                    staging: Staging::InPlace,
                };
                let result = verify::copy(opts, &src, src_path, target, Vec::new(), false);
                if result.is_err() {
                    // Remove what this copy created.
                    let _ = std::fs::remove_file(dst_path);
                }
                result
            }
        };
    }

    let mut fallbacks = Vec::new();
    let staged = Staged::create(dst_path, new_mode, opts.staging, &mut fallbacks)?;
    let target = Target {
        file: &staged.file,
        path: dst_path,
        kind: DestinationKind::NewFile,
        staging: staged.staging(),
    };
    let report = verify::copy(opts, &src, src_path, target, fallbacks, dst_st.is_some())?;
    if let Some(old) = &dst_st {
        // Replacing a file keeps its permissions and (where allowed) owner.
        let _ = rustix::fs::fchown(
            &staged.file,
            Some(rustix::fs::Uid::from_raw(old.st_uid)),
            Some(rustix::fs::Gid::from_raw(old.st_gid)),
        );
        rustix::fs::fchmod(&staged.file, Mode::from_raw_mode(old.st_mode & 0o7777))
            .map_err(|e| io(dst_path, "fchmod", e))?;
    }
    staged.commit(opts.sync)?;
    Ok(report)
}

/// A destination being written under no name or a temporary one. Dropping
/// it without [`commit`](Staged::commit) removes the temporary name.
struct Staged {
    file: File,
    dir: OwnedFd,
    dir_path: PathBuf,
    final_name: OsString,
    final_path: PathBuf,
    temp_name: Option<OsString>,
}

static SERIAL: AtomicU64 = AtomicU64::new(0);

/// Finds a free hidden name `.NAME.sparsekit-PID-N.tmp` in `dir` and runs
/// `make` on it.
fn create_named<T>(
    dir: &OwnedFd,
    dir_path: &Path,
    final_name: &OsString,
    mut make: impl FnMut(&OwnedFd, &Path) -> rustix::io::Result<T>,
) -> Result<(OsString, T), CopyError> {
    // Stay within NAME_MAX (255) whatever the destination's name.
    let base = final_name.as_bytes();
    let base = String::from_utf8_lossy(&base[..base.len().min(200)]).into_owned();
    for _ in 0..1000 {
        let n = SERIAL.fetch_add(1, Ordering::Relaxed);
        let name = OsString::from(format!(".{base}.sparsekit-{}-{n}.tmp", std::process::id()));
        match make(dir, Path::new(&name)) {
            Ok(t) => return Ok((name, t)),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(io(&dir_path.join(&name), "create", e)),
        }
    }
    Err(io(dir_path, "create", Errno::EXIST))
}

impl Staged {
    fn create(
        dst_path: &Path,
        mode: Mode,
        staging: Staging,
        fallbacks: &mut Vec<Fallback>,
    ) -> Result<Staged, CopyError> {
        let final_name = dst_path
            .file_name()
            .ok_or_else(|| io(dst_path, "open", Errno::ISDIR))?
            .to_owned();
        let dir_path = match dst_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let dir = open(
            &dir_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io(&dir_path, "open", e))?;
        let mut unnamed = None;
        if matches!(staging, Staging::Auto | Staging::Unnamed) {
            // Linking an O_TMPFILE needs /proc/self/fd or CAP_DAC_READ_SEARCH.
            let res = if Path::new("/proc/self/fd").is_dir() {
                openat(
                    &dir,
                    ".",
                    OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
                    mode,
                )
            } else {
                Err(Errno::NOENT)
            };
            match res {
                Ok(fd) => unnamed = Some(File::from(fd)),
                Err(e) if staging == Staging::Auto => {
                    fallbacks.push(Fallback::new("staging o_tmpfile", e))
                }
                Err(e) => return Err(io(&dir_path, "open(O_TMPFILE)", e)),
            }
        }
        let (file, temp_name) = match unnamed {
            Some(file) => (file, None),
            None => {
                let (name, file) = create_named(&dir, &dir_path, &final_name, |dir, name| {
                    openat(
                        dir,
                        name,
                        OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::CLOEXEC,
                        mode,
                    )
                    .map(File::from)
                })?;
                (file, Some(name))
            }
        };
        Ok(Staged {
            file,
            dir,
            dir_path,
            final_name,
            final_path: dst_path.to_owned(),
            temp_name,
        })
    }

    fn staging(&self) -> Staging {
        if self.temp_name.is_some() {
            Staging::Named
        } else {
            Staging::Unnamed
        }
    }

    /// Gives the staged file the destination's name (atomically replacing
    /// what was there) and, with `sync`, makes the rename durable.
    fn commit(mut self, sync: bool) -> Result<(), CopyError> {
        if self.temp_name.is_none() {
            let fd = self.file.as_fd();
            let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
            let (name, ()) =
                create_named(&self.dir, &self.dir_path, &self.final_name, |dir, name| {
                    // AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; /proc works for anyone.
                    linkat(fd, "", dir, name, AtFlags::EMPTY_PATH).or_else(|_| {
                        linkat(CWD, proc_path.as_str(), dir, name, AtFlags::SYMLINK_FOLLOW)
                    })
                })?;
            self.temp_name = Some(name);
        }
        let temp = self.temp_name.clone().expect("named by now");
        renameat(
            &self.dir,
            Path::new(&temp),
            &self.dir,
            Path::new(&self.final_name),
        )
        .map_err(|e| io(&self.final_path, "rename", e))?;
        self.temp_name = None;
        if sync {
            rustix::fs::fsync(&self.dir).map_err(|e| io(&self.dir_path, "fsync (directory)", e))?;
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(name) = self.temp_name.take() {
            let _ = unlinkat(&self.dir, Path::new(&name), AtFlags::empty());
        }
    }
}

/// The open-file entry point: checks, then an in-place copy.
pub(crate) fn copy_open(
    opts: &CopyOptions,
    src: &File,
    src_path: &Path,
    dst: &File,
    dst_path: &Path,
) -> Result<CopyReport, CopyError> {
    engine::check_options(opts)?;
    let src_st = fstat(src).map_err(|e| io(src_path, "fstat", e))?;
    copyable(&src_st, src_path, true)?;
    verifiable(opts, src, &src_st)?;
    let dst_st = fstat(dst).map_err(|e| io(dst_path, "fstat", e))?;
    let ft = copyable(&dst_st, dst_path, false)?;
    check_distinct(&src_st, src_path, &dst_st, dst_path)?;
    let kind = match ft {
        FileType::BlockDevice => DestinationKind::BlockDevice,
        _ if dst_st.st_size == 0 => DestinationKind::NewFile,
        _ => DestinationKind::ExistingFile,
    };
    let snapshot = take_snapshot(opts, src, src_path)?;
    let src = snapshot.as_ref().unwrap_or(src);
    verify::copy(
        opts,
        src,
        src_path,
        Target {
            file: dst,
            path: dst_path,
            kind,
            staging: Staging::InPlace,
        },
        Vec::new(),
        true,
    )
}
