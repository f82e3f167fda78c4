//! Path-level clones for command-line tools: open, create or replace the
//! destination, and never leave a half-made file behind.

use crate::check;
use crate::error::{CloneError, PathCloneError};
use rustix::fs::OFlags;
use rustix::io::Errno;
use sparsekit_sys::fstype::FsType;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What a path-level clone did to the destination path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DestinationChange {
    /// The destination did not exist and was created.
    Created,
    /// An existing destination was replaced by a new file, atomically
    /// (whole-file clone).
    Replaced,
    /// An existing destination was changed in place (range clone).
    Modified,
}

/// The outcome of [`clone_file_to_path`] or [`clone_range_to_path`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PathClone {
    /// Bytes of the source now shared by the destination.
    pub bytes: u64,
    /// Created, replaced or modified.
    pub destination: DestinationChange,
    /// The filesystem both files are on.
    pub filesystem: FsType,
}

/// Clones the whole file at `src` to the path `dst` with `FICLONE`.
///
/// - A missing `dst` is created with `src`'s permission bits (less the
///   umask). If the clone fails, it is removed again: no empty file is left.
/// - An existing regular `dst` (or the file a symlink `dst` points to) is
///   replaced atomically: the clone goes into a temporary file in the same
///   directory, which then takes the old file's permission bits (and owner,
///   where the caller may set it) and is renamed over it. If the clone
///   fails, `dst` is untouched. Other hard links to the old file keep the
///   old content.
///
/// # Errors
/// [`PathCloneError::Clone`] with [`CloneError::Unsupported`] where the
/// filesystem cannot share extents (e.g. ext4, tmpfs) or the two paths are
/// on different mounts (`EXDEV`), with [`CloneError::SameFile`] when both
/// name the same file; [`PathCloneError::NotRegular`] when `dst` is a
/// directory or special file; [`PathCloneError::Io`] for open, create and
/// rename failures.
#[doc(alias = "FICLONE")]
pub fn clone_file_to_path(
    src: impl AsRef<Path>,
    dst: impl AsRef<Path>,
) -> Result<PathClone, PathCloneError> {
    let (src, dst) = (src.as_ref(), dst.as_ref());
    let src_file = open_source(src)?;
    let src_fs = fs_type(src, &src_file)?;
    let clone_err = |dst_fs, error| PathCloneError::Clone {
        src: src.to_owned(),
        dst: dst.to_owned(),
        src_fs,
        dst_fs,
        error,
    };
    // Checked here, not left to `clone_file`, so a special-file source is
    // reported before anything is created.
    let src_info = check::inspect(
        rustix::fd::AsFd::as_fd(&src_file),
        crate::Side::Source,
        check::Access::Read,
    )
    .map_err(|e| clone_err(src_fs, e))?;

    match existing(dst)? {
        None => {
            let mode = src_file
                .metadata()
                .map_err(|e| PathCloneError::io(src, "fstat", &e))?
                .permissions()
                .mode()
                & 0o7777;
            let created = create_new(dst, mode)?;
            let dst_fs = fs_type(dst, &created.file)?;
            match crate::clone_file(&src_file, &created.file) {
                Ok(()) => Ok(PathClone {
                    bytes: src_info.size,
                    destination: DestinationChange::Created,
                    filesystem: dst_fs,
                }),
                Err(e) => {
                    created.remove();
                    Err(clone_err(dst_fs, e))
                }
            }
        }
        Some(meta) => {
            if meta.dev() == src_info.dev && meta.ino() == src_info.ino {
                return Err(clone_err(src_fs, CloneError::SameFile));
            }
            let target =
                std::fs::canonicalize(dst).map_err(|e| PathCloneError::io(dst, "resolve", &e))?;
            let dir = target.parent().unwrap_or(Path::new("/"));
            let name = target.file_name().map(|n| n.to_string_lossy().into_owned());
            let tmp = tempfile::Builder::new()
                .prefix(&format!(".{}.", name.as_deref().unwrap_or("clone")))
                .suffix(".sparsekit-tmp")
                .tempfile_in(dir)
                .map_err(|e| PathCloneError::io(dir, "create temporary file", &e))?;
            let dst_fs = fs_type(dst, tmp.as_file())?;
            // On failure `tmp` is dropped, which removes it; `dst` is untouched.
            crate::clone_file(&src_file, tmp.as_file()).map_err(|e| clone_err(dst_fs, e))?;
            // Owner first: chown clears set-user-ID bits that chmod then restores.
            keep_owner(tmp.as_file(), &meta);
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(|e| PathCloneError::io(tmp.path(), "chmod", &e))?;
            tmp.persist(&target)
                .map_err(|e| PathCloneError::io(&target, "rename", &e.error))?;
            Ok(PathClone {
                bytes: src_info.size,
                destination: DestinationChange::Replaced,
                filesystem: dst_fs,
            })
        }
    }
}

/// Clones `length` bytes (`None`: up to the source's end of file) of `src`
/// at `src_offset` into the path `dst` at `dst_offset` with
/// `FICLONERANGE`, in place.
///
/// A missing `dst` is created with `src`'s permission bits (less the umask)
/// and removed again if the clone fails. An existing `dst` keeps its
/// content outside the range; a range past its end extends it (a hole
/// fills any gap).
///
/// # Errors
/// As [`clone_file_to_path`], plus the range checks of
/// [`clone_range`](crate::clone_range): [`CloneError::PastEof`],
/// [`CloneError::Misaligned`], [`CloneError::Overlap`].
#[doc(alias = "FICLONERANGE")]
pub fn clone_range_to_path(
    src: impl AsRef<Path>,
    src_offset: u64,
    dst: impl AsRef<Path>,
    dst_offset: u64,
    length: Option<u64>,
) -> Result<PathClone, PathCloneError> {
    let (src, dst) = (src.as_ref(), dst.as_ref());
    let src_file = open_source(src)?;
    let src_fs = fs_type(src, &src_file)?;
    let clone_err = |dst_fs, error| PathCloneError::Clone {
        src: src.to_owned(),
        dst: dst.to_owned(),
        src_fs,
        dst_fs,
        error,
    };
    let src_info = check::inspect(
        rustix::fd::AsFd::as_fd(&src_file),
        crate::Side::Source,
        check::Access::Read,
    )
    .map_err(|e| clone_err(src_fs, e))?;
    let length = length.unwrap_or_else(|| src_info.size.saturating_sub(src_offset));

    let (dst_file, created) = match existing(dst)? {
        Some(_) => {
            let file = open_nonblocking(OpenOptions::new().write(true), dst)
                .map_err(|e| PathCloneError::io(dst, "open", &e))?;
            (file, None)
        }
        None => {
            let mode = src_file
                .metadata()
                .map_err(|e| PathCloneError::io(src, "fstat", &e))?
                .permissions()
                .mode()
                & 0o7777;
            let created = create_new(dst, mode)?;
            let file = created
                .file
                .try_clone()
                .map_err(|e| PathCloneError::io(dst, "dup", &e))?;
            (file, Some(created))
        }
    };
    let dst_fs = fs_type(dst, &dst_file)?;
    match crate::clone_range(&src_file, src_offset, &dst_file, dst_offset, length) {
        Ok(()) => Ok(PathClone {
            bytes: length,
            destination: if created.is_some() {
                DestinationChange::Created
            } else {
                DestinationChange::Modified
            },
            filesystem: dst_fs,
        }),
        Err(e) => {
            drop(dst_file);
            if let Some(created) = created {
                created.remove();
            }
            Err(clone_err(dst_fs, e))
        }
    }
}

/// Opens without blocking: opening a fifo for reading would otherwise wait
/// for a writer. The fd-level checks then refuse the fifo.
fn open_nonblocking(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    options
        .custom_flags(OFlags::NONBLOCK.bits() as i32)
        .open(path)
}

fn open_source(src: &Path) -> Result<File, PathCloneError> {
    open_nonblocking(OpenOptions::new().read(true), src)
        .map_err(|e| PathCloneError::io(src, "open", &e))
}

/// The destination's metadata (following symlinks), `None` if it does not
/// exist; directories and special files are refused here.
fn existing(dst: &Path) -> Result<Option<std::fs::Metadata>, PathCloneError> {
    match std::fs::metadata(dst) {
        Ok(meta) if meta.is_file() => Ok(Some(meta)),
        Ok(meta) => Err(PathCloneError::NotRegular {
            path: dst.to_owned(),
            kind: check::file_type_name(rustix::fs::FileType::from_raw_mode(meta.mode())),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A dangling symlink: creating through it would put the file
            // somewhere the caller did not name.
            if std::fs::symlink_metadata(dst).is_ok() {
                return Err(PathCloneError::Io {
                    path: dst.to_owned(),
                    op: "create (dangling symbolic link)",
                    errno: Errno::NOENT,
                });
            }
            Ok(None)
        }
        Err(e) => Err(PathCloneError::io(dst, "stat", &e)),
    }
}

/// A destination this call created; [`Created::remove`] undoes it.
struct Created {
    file: File,
    path: PathBuf,
}

impl Created {
    /// Removes the file, but only if the path still names the inode we
    /// created (someone may have replaced it meanwhile).
    fn remove(self) {
        let ours = self.file.metadata().ok();
        let now = std::fs::symlink_metadata(&self.path).ok();
        if let (Some(ours), Some(now)) = (ours, now) {
            if ours.dev() == now.dev() && ours.ino() == now.ino() {
                // Best effort: the clone error is what the caller needs to see.
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

fn create_new(dst: &Path, mode: u32) -> Result<Created, PathCloneError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(dst)
        .map_err(|e| PathCloneError::io(dst, "create", &e))?;
    Ok(Created {
        file,
        path: dst.to_owned(),
    })
}

fn fs_type(path: &Path, file: &File) -> Result<FsType, PathCloneError> {
    FsType::of(file).map_err(|errno| PathCloneError::Io {
        path: path.to_owned(),
        op: "fstatfs",
        errno,
    })
}

/// Gives the replacement the old file's owner where allowed (root, or the
/// same owner already); otherwise it keeps the caller's, as any new file.
fn keep_owner(file: &File, old: &std::fs::Metadata) {
    let Ok(now) = file.metadata() else { return };
    if now.uid() == old.uid() && now.gid() == old.gid() {
        return;
    }
    let uid = rustix::fs::Uid::from_raw(old.uid());
    let gid = rustix::fs::Gid::from_raw(old.gid());
    // EPERM for an unprivileged caller is expected and harmless.
    let _ = rustix::fs::fchown(file, Some(uid), Some(gid));
}
