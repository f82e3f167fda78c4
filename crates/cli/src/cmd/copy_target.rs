//! Checks on `copy`'s destination before anything is created, and what a
//! `--timeout` stall leaves there.

use crate::exit::UsageError;
use crate::input::{dangling_target, kind_name};
use crate::watchdog::{Cleanup, OnStall};
use sparsekit_copy::Interrupt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// Refuses, before anything is created (exit 1, like cp):
/// - `DST/` that is not an existing directory (it would have been taken as
///   a file name: `copy a.img newdir/` made a file `newdir`);
/// - a dangling symbolic link (cp does not write through one either).
///
/// A destination of a kind a copy cannot write (a fifo, a socket, a
/// character device) is a usage error (exit 2).
pub(crate) fn check_destination(dst: &Path) -> anyhow::Result<()> {
    let shown = dst.display();
    let trailing_slash = dst.as_os_str().as_bytes().ends_with(b"/");
    match std::fs::metadata(dst) {
        Ok(meta) => {
            let t = meta.file_type();
            if trailing_slash && !t.is_dir() {
                return Err(anyhow::anyhow!(
                    "{shown}: ENOTDIR (Not a directory): a destination ending in / must be a directory; nothing created"
                ));
            }
            if !(t.is_dir() || t.is_file() || t.is_block_device()) {
                let kind = rustix::fs::FileType::from_raw_mode(
                    std::os::unix::fs::MetadataExt::mode(&meta),
                );
                return Err(UsageError(format!(
                    "{shown}: copy: not a regular file, block device or directory (it is {})",
                    kind_name(kind)
                ))
                .into());
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(target) = dangling_target(dst) {
                return Err(anyhow::anyhow!(
                    "{shown}: it is a dangling symbolic link (to {}); not writing through it, nothing created",
                    target.display()
                ));
            }
            if trailing_slash {
                return Err(anyhow::anyhow!(
                    "{shown}: ENOENT (No such file or directory): no such directory; nothing created"
                ));
            }
            Ok(())
        }
        // `FILE/`: the kernel's own answer.
        Err(e) if trailing_slash => Err(anyhow::anyhow!(
            "{}: a destination ending in / must be a directory; nothing created",
            crate::exit::io_error(&shown.to_string(), "stat", &e)
        )),
        // Anything else (EACCES, …): the library's own open reports it.
        Err(_) => Ok(()),
    }
}

/// What a stalled copy leaves, and how it is stopped: first through its
/// interrupt flag (the copy removes its staged file as after Ctrl-C); if it
/// is stuck in a system call, by unlinking the hidden staged name it may
/// have made (`.NAME.sparsekit-PID-N.tmp`, see `sparsekit_copy::Staging`).
/// An `O_TMPFILE` staged file has no name and vanishes with the process.
pub(crate) fn on_stall(dst: &Path, in_place: bool, interrupt: &Interrupt) -> OnStall {
    let stop = interrupt.clone();
    let soft_stop: Option<Box<dyn Fn() + Send>> = Some(Box::new(move || stop.trigger()));
    let is_device = std::fs::metadata(dst).is_ok_and(|m| m.file_type().is_block_device());
    if in_place || is_device {
        return OnStall {
            note: format!(
                "{} was being written in place and is incomplete (its first MiB stays zeroed until a copy finishes)",
                dst.display()
            ),
            soft_stop,
            cleanup: None,
        };
    }
    let Some(name) = dst.file_name().map(|n| n.to_owned()) else {
        return OnStall {
            note: "nothing was created".into(),
            soft_stop,
            cleanup: None,
        };
    };
    let dir = match dst.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let pid = std::process::id();
    let pattern = dir.join(format!(".{}.sparsekit-{pid}-*.tmp", name.to_string_lossy()));
    let if_stuck = format!("a staged file {} may be left: remove it", pattern.display());
    let cleanup: Cleanup = Box::new(move || remove_staged(&dir, &name, pid));
    OnStall {
        note: format!("nothing that looks like {} was left", dst.display()),
        soft_stop,
        cleanup: Some((cleanup, if_stuck)),
    }
}

/// What a copy that stopped by itself (interrupted) leaves at `dst`.
pub(crate) fn left_after_stop(dst: &Path, in_place: bool) -> &'static str {
    let is_device = std::fs::metadata(dst).is_ok_and(|m| m.file_type().is_block_device());
    if is_device {
        "the device's first MiB is zeroed, so it does not look complete"
    } else if in_place {
        "the destination was written in place and is truncated to zero length"
    } else {
        "nothing left at the destination"
    }
}

/// How many staged names a copy can have made: one per attempt, and a
/// single copy makes one (more only if a name was taken).
const STAGED_NAMES: u64 = 64;

/// Unlinks `.NAME.sparsekit-PID-N.tmp` for every N a copy of this process
/// may have used; returns what could not be removed. No directory listing:
/// each name is tried directly.
fn remove_staged(dir: &Path, name: &std::ffi::OsStr, pid: u32) -> Option<String> {
    let mut left = Vec::new();
    for n in 0..STAGED_NAMES {
        let path = dir.join(format!(
            ".{}.sparsekit-{pid}-{n}.tmp",
            name.to_string_lossy()
        ));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => left.push(format!(
                "{}: {}",
                path.display(),
                crate::exit::io_error("", "unlink", &e)
                    .to_string()
                    .trim_start_matches(": ")
            )),
        }
    }
    (!left.is_empty()).then(|| format!("could not remove {}", left.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_names_of_this_process_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let pid = std::process::id();
        let ours = dir.path().join(format!(".d.img.sparsekit-{pid}-3.tmp"));
        let other = dir
            .path()
            .join(format!(".d.img.sparsekit-{}-3.tmp", pid + 1));
        std::fs::write(&ours, b"x").unwrap();
        std::fs::write(&other, b"x").unwrap();
        assert_eq!(remove_staged(dir.path(), "d.img".as_ref(), pid), None);
        assert!(!ours.exists());
        assert!(other.exists());
    }

    #[test]
    fn a_trailing_slash_needs_an_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let missing = format!("{}/newdir/", dir.path().display());
        let e = check_destination(Path::new(&missing)).unwrap_err();
        assert!(e.to_string().contains("ENOENT"), "{e}");
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let e = check_destination(Path::new(&format!("{}/", file.display()))).unwrap_err();
        assert!(e.to_string().contains("ENOTDIR"), "{e}");
        assert!(check_destination(Path::new(&format!("{}/", dir.path().display()))).is_ok());
    }
}
