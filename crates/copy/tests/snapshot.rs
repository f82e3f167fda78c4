//! `CopyOptions::snapshot` (issue 11): copy from a reflinked, nameless
//! image of the source, or refuse clearly where there is no reflink —
//! creating nothing either way. The live-writer case needs xfs or btrfs and
//! is a bench scenario (`copy/snapshot_of_a_live_file`).

mod common;

use common::{make_file, others_in, simple_layout, snapshot as fingerprint};
use sparsekit_copy::{CopyError, CopyOptions, Staging};
use std::fs::File;
use std::path::{Path, PathBuf};

/// What FICLONE says between two new files in `dir`: `Ok` where it works.
fn ficlone_in(dir: &Path) -> Result<(), rustix::io::Errno> {
    let a = tempfile::tempfile_in(dir).unwrap();
    std::io::Write::write_all(&mut &a, &[1u8; 4096]).unwrap();
    let b = tempfile::tempfile_in(dir).unwrap();
    rustix::fs::ioctl_ficlone(&b, &a)
}

/// Copies with `--snapshot` from `src_dir` and checks the outcome against
/// what FICLONE does there: a copy equal to the source, or a refusal that
/// names FICLONE's errno. Either way nothing is left in either directory.
fn snapshot_copy_in(src_dir: &Path, dst_dir: &Path) {
    let src = src_dir.join("disk.img");
    make_file(&src, &simple_layout());
    let before = fingerprint(&src);
    let dst = dst_dir.join("copy.img");
    let result = CopyOptions::new().snapshot(true).copy(&src, &dst);
    match ficlone_in(src_dir) {
        Ok(()) => {
            let report = result.unwrap();
            assert!(report.snapshot);
            common::assert_same_content(&src, &dst);
        }
        Err(errno) => {
            let e = result.unwrap_err();
            match &e {
                CopyError::SnapshotUnsupported { path, errno: got } => {
                    assert_eq!(path, &src);
                    assert_eq!(*got, errno);
                }
                e => panic!("expected a snapshot refusal, got {e:?}"),
            }
            let msg = e.to_string();
            assert!(msg.contains("FICLONE") && msg.contains("disk.img"), "{msg}");
            assert!(!e.is_usage_error());
            assert!(!dst.exists());
        }
    }
    assert_eq!(fingerprint(&src), before, "the source changed");
    let keep: Vec<&Path> = vec![&src, &dst];
    assert_eq!(others_in(src_dir, &keep), Vec::<PathBuf>::new());
    assert_eq!(others_in(dst_dir, &keep), Vec::<PathBuf>::new());
}

#[test]
fn snapshot_on_the_temporary_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    snapshot_copy_in(dir.path(), out.path());
}

/// tmpfs has no reflink: the refusal path, whatever `$TMPDIR` is.
#[test]
fn snapshot_is_refused_on_tmpfs_and_creates_nothing() {
    let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("skipped: no /dev/shm");
        return;
    };
    assert!(ficlone_in(dir.path()).is_err(), "tmpfs learnt to reflink");
    let out = tempfile::tempdir().unwrap();
    snapshot_copy_in(dir.path(), out.path());
}

#[test]
fn a_refused_snapshot_leaves_an_existing_destination_alone() {
    let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("skipped: no /dev/shm");
        return;
    };
    let src = dir.path().join("src");
    make_file(&src, &simple_layout());
    let dst = dir.path().join("dst");
    std::fs::write(&dst, b"old content").unwrap();
    for staging in [Staging::Auto, Staging::InPlace] {
        let e = CopyOptions::new()
            .snapshot(true)
            .staging(staging)
            .copy(&src, &dst)
            .unwrap_err();
        assert!(matches!(e, CopyError::SnapshotUnsupported { .. }), "{e:?}");
        assert_eq!(std::fs::read(&dst).unwrap(), b"old content");
    }
    assert_eq!(others_in(dir.path(), &[&src, &dst]), Vec::<PathBuf>::new());
}

#[test]
fn copy_open_takes_the_snapshot_too() {
    let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
        eprintln!("skipped: no /dev/shm");
        return;
    };
    let src = dir.path().join("src");
    make_file(&src, &simple_layout());
    let dst = tempfile::tempfile().unwrap();
    let e = CopyOptions::new()
        .snapshot(true)
        .copy_open(&File::open(&src).unwrap(), &src, &dst, "dst")
        .unwrap_err();
    assert!(matches!(e, CopyError::SnapshotUnsupported { .. }), "{e:?}");
    assert_eq!(dst.metadata().unwrap().len(), 0);
}
