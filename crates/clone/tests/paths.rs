//! The path-level helpers on /tmp: a failed clone leaves no file behind and
//! an existing destination untouched.

mod common;

use common::{reflink_capable, write_file};
use rustix::io::Errno;
use sparsekit_clone::{
    CloneError, DestinationChange, PathCloneError, clone_file_to_path, clone_range_to_path,
};

const B: usize = 4096;

#[test]
fn failed_clone_to_a_new_path_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
    write_file(&src, 7, 3 * B + 100);
    let r = clone_file_to_path(&src, &dst);
    if reflink_capable(dir.path()) {
        assert_eq!(r.unwrap().destination, DestinationChange::Created);
        assert_eq!(std::fs::read(&dst).unwrap(), std::fs::read(&src).unwrap());
        return;
    }
    let e = r.unwrap_err();
    assert!(e.is_unsupported(), "{e}");
    let PathCloneError::Clone { dst_fs, error, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(
        *error,
        CloneError::Unsupported {
            errno: Errno::OPNOTSUPP
        }
    );
    assert!(dst_fs.name().is_some());
    assert!(e.to_string().contains("dst.img"), "{e}");
    assert!(!dst.exists(), "the created destination must be removed");
    // Range clone into a new path: same.
    let e = clone_range_to_path(&src, 0, &dst, 0, Some(B as u64)).unwrap_err();
    assert!(e.is_unsupported(), "{e}");
    assert!(!dst.exists());
    // Nothing else was left in the directory either (no temporary files).
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec!["src.img"]);
}

#[test]
fn failed_clone_over_an_existing_file_leaves_it_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.img"), dir.path().join("dst.img"));
    write_file(&src, 7, 2 * B);
    write_file(&dst, 9, 5 * B);
    let r = clone_file_to_path(&src, &dst);
    if reflink_capable(dir.path()) {
        assert_eq!(r.unwrap().destination, DestinationChange::Replaced);
        assert_eq!(std::fs::read(&dst).unwrap(), vec![7; 2 * B]);
        return;
    }
    assert!(r.unwrap_err().is_unsupported());
    assert_eq!(std::fs::read(&dst).unwrap(), vec![9; 5 * B]);
    let e = clone_range_to_path(&src, 0, &dst, B as u64, Some(B as u64)).unwrap_err();
    assert!(e.is_unsupported(), "{e}");
    assert_eq!(std::fs::read(&dst).unwrap(), vec![9; 5 * B]);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn path_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.img");
    write_file(&src, 7, B);
    // Missing source.
    let e = clone_file_to_path(dir.path().join("nope"), dir.path().join("x")).unwrap_err();
    assert!(
        matches!(
            &e,
            PathCloneError::Io {
                op: "open",
                errno: Errno::NOENT,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("nope: open: ENOENT"), "{e}");
    assert!(!dir.path().join("x").exists());
    // A directory destination.
    let e = clone_file_to_path(&src, dir.path()).unwrap_err();
    assert!(
        matches!(
            &e,
            PathCloneError::NotRegular {
                kind: "directory",
                ..
            }
        ),
        "{e}"
    );
    // The same file.
    let e = clone_file_to_path(&src, &src).unwrap_err();
    assert_eq!(e.clone_error(), Some(&CloneError::SameFile));
    // A fifo source does not hang the open.
    let fifo = dir.path().join("fifo");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let e = clone_file_to_path(&fifo, dir.path().join("y")).unwrap_err();
    assert!(
        matches!(
            e.clone_error(),
            Some(CloneError::NotRegular { kind: "fifo", .. })
        ),
        "{e}"
    );
    assert!(!dir.path().join("y").exists());
    // A dangling symlink destination is not followed to create a file.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
    let e = clone_file_to_path(&src, &link).unwrap_err();
    assert!(e.to_string().contains("dangling"), "{e}");
    assert!(!dir.path().join("elsewhere").exists());
    // A range past the source's end, into a new file: refused, nothing left.
    let e = clone_range_to_path(&src, 2 * B as u64, dir.path().join("z"), 0, None).unwrap_err();
    assert!(
        matches!(e.clone_error(), Some(CloneError::PastEof { .. })),
        "{e}"
    );
    assert!(!dir.path().join("z").exists());
}
