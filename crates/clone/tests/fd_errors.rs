//! Every error path of the fd-level calls, on /tmp (ext4 here: no reflink).
//! The checks run before any ioctl, so these hold on any filesystem.

mod common;

use common::{open_rw, reflink_capable, write_file};
use rustix::io::Errno;
use sparsekit_clone::{
    CloneError, DedupeStatus, DedupeTarget, Side, clone_file, clone_range, dedupe_range,
};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;

const B: u64 = 4096;

#[test]
fn unsupported_filesystem_gives_unsupported_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_file(&dir.path().join("src"), 0xab, 4 * B as usize);
    let src = File::open(dir.path().join("src")).unwrap();
    let dst = File::create(dir.path().join("dst")).unwrap();
    let result = clone_file(&src, &dst);
    let range = clone_range(&src, 0, &dst, 0, 2 * B);
    if reflink_capable(dir.path()) {
        result.unwrap();
        range.unwrap();
        assert_eq!(dst.metadata().unwrap().len(), 4 * B);
    } else {
        for r in [result, range] {
            let e = r.unwrap_err();
            assert!(e.is_unsupported(), "{e}");
            assert_eq!(e.errno(), Some(Errno::OPNOTSUPP));
            assert!(e.to_string().contains("EOPNOTSUPP"), "{e}");
        }
        assert_eq!(dst.metadata().unwrap().len(), 0, "nothing may be copied");
    }
}

#[test]
fn dedupe_on_unsupported_filesystem_fails_the_call() {
    let dir = tempfile::tempdir().unwrap();
    write_file(&dir.path().join("a"), 1, 2 * B as usize);
    write_file(&dir.path().join("b"), 1, 2 * B as usize);
    let a = File::open(dir.path().join("a")).unwrap();
    let b = File::open(dir.path().join("b")).unwrap();
    let r = dedupe_range(&a, 0, 2 * B, &[DedupeTarget::new(&b, 0)]);
    if reflink_capable(dir.path()) {
        assert!(r.unwrap()[0].is_same());
    } else {
        let e = r.unwrap_err();
        assert_eq!(
            e,
            CloneError::Unsupported {
                errno: Errno::OPNOTSUPP
            }
        );
    }
}

#[test]
fn directories_are_refused_on_either_side() {
    let dir = tempfile::tempdir().unwrap();
    write_file(&dir.path().join("f"), 1, B as usize);
    let f = open_rw(&dir.path().join("f"));
    let d = File::open(dir.path()).unwrap();
    let e = clone_file(&d, &f).unwrap_err();
    assert_eq!(
        e,
        CloneError::NotRegular {
            side: Side::Source,
            kind: "directory"
        }
    );
    let e = clone_range(&f, 0, &d, 0, B).unwrap_err();
    assert_eq!(
        e,
        CloneError::NotRegular {
            side: Side::Destination,
            kind: "directory"
        }
    );
    assert!(
        e.to_string().contains("destination is not a regular file"),
        "{e}"
    );
}

#[test]
fn special_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_file(&dir.path().join("f"), 1, B as usize);
    let f = open_rw(&dir.path().join("f"));
    let null = OpenOptions::new().write(true).open("/dev/null").unwrap();
    let e = clone_file(&f, &null).unwrap_err();
    assert!(
        matches!(
            e,
            CloneError::NotRegular {
                side: Side::Destination,
                kind: "character device"
            }
        ),
        "{e}"
    );
    let fifo = dir.path().join("fifo");
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    let fifo = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(&fifo)
        .unwrap();
    let e = clone_range(&fifo, 0, &f, 0, B).unwrap_err();
    assert!(
        matches!(
            e,
            CloneError::NotRegular {
                side: Side::Source,
                kind: "fifo"
            }
        ),
        "{e}"
    );
    // A special destination in a dedupe fails that destination only.
    let r = dedupe_range(&f, 0, B, &[DedupeTarget::new(&null, 0)]).unwrap();
    assert!(
        matches!(
            &r[0].status,
            DedupeStatus::Failed(CloneError::NotRegular { .. })
        ),
        "{r:?}"
    );
    assert_eq!(r[0].calls, 0);
}

#[test]
fn access_modes_are_checked_before_the_call() {
    let dir = tempfile::tempdir().unwrap();
    write_file(&dir.path().join("s"), 1, B as usize);
    write_file(&dir.path().join("d"), 0, 0);
    let src = File::open(dir.path().join("s")).unwrap();
    let ro_dst = File::open(dir.path().join("d")).unwrap();
    let e = clone_file(&src, &ro_dst).unwrap_err();
    assert!(
        matches!(
            e,
            CloneError::AccessMode {
                side: Side::Destination,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("must be open for writing"), "{e}");

    let append = OpenOptions::new()
        .append(true)
        .open(dir.path().join("d"))
        .unwrap();
    let e = clone_file(&src, &append).unwrap_err();
    assert!(e.to_string().contains("append"), "{e}");

    let wo_src = OpenOptions::new()
        .write(true)
        .open(dir.path().join("s"))
        .unwrap();
    let dst = open_rw(&dir.path().join("d"));
    let e = clone_range(&wo_src, 0, &dst, 0, B).unwrap_err();
    assert!(
        matches!(
            e,
            CloneError::AccessMode {
                side: Side::Source,
                ..
            }
        ),
        "{e}"
    );

    let path_fd = rustix::fs::open(
        dir.path().join("d"),
        rustix::fs::OFlags::PATH,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    let e = clone_file(&src, &path_fd).unwrap_err();
    assert!(e.to_string().contains("O_PATH"), "{e}");
}

#[test]
fn a_file_cannot_be_cloned_onto_itself() {
    let dir = tempfile::tempdir().unwrap();
    write_file(&dir.path().join("f"), 1, 4 * B as usize);
    let a = open_rw(&dir.path().join("f"));
    let b = open_rw(&dir.path().join("f"));
    assert_eq!(clone_file(&a, &b).unwrap_err(), CloneError::SameFile);
}

#[test]
fn overlapping_ranges_in_one_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_file(&dir.path().join("f"), 1, 8 * B as usize);
    let f = open_rw(&dir.path().join("f"));
    let e = clone_range(&f, 0, &f, 2 * B, 4 * B).unwrap_err();
    assert_eq!(
        e,
        CloneError::Overlap {
            src_offset: 0,
            dst_offset: 2 * B,
            length: 4 * B
        }
    );
    let r = dedupe_range(&f, 0, 4 * B, &[DedupeTarget::new(&f, B)]).unwrap();
    assert!(
        matches!(
            &r[0].status,
            DedupeStatus::Failed(CloneError::Overlap { .. })
        ),
        "{r:?}"
    );
}

#[test]
fn offsets_past_eof_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_file(&dir.path().join("s"), 1, 4 * B as usize);
    write_file(&dir.path().join("d"), 1, 4 * B as usize);
    let src = File::open(dir.path().join("s")).unwrap();
    let dst = open_rw(&dir.path().join("d"));
    let e = clone_range(&src, 4 * B, &dst, 0, B).unwrap_err();
    assert!(
        matches!(e, CloneError::PastEof { side: Side::Source, size, .. } if size == 4 * B),
        "{e}"
    );
    let e = clone_range(&src, 2 * B, &dst, 0, 3 * B).unwrap_err();
    assert!(
        e.to_string()
            .contains("past the end of the file (size 16384)"),
        "{e}"
    );
    // Dedupe: the source range past EOF fails the call…
    let e = dedupe_range(&src, 8 * B, B, &[DedupeTarget::new(&dst, 0)]).unwrap_err();
    assert!(
        matches!(
            e,
            CloneError::PastEof {
                side: Side::Source,
                ..
            }
        ),
        "{e}"
    );
    // …a destination range past its EOF fails that destination.
    let r = dedupe_range(&src, 0, B, &[DedupeTarget::new(&dst, 4 * B)]).unwrap();
    assert!(
        matches!(
            &r[0].status,
            DedupeStatus::Failed(CloneError::PastEof {
                side: Side::Destination,
                ..
            })
        ),
        "{r:?}"
    );
}

#[test]
fn misaligned_ranges_name_the_alignment() {
    let dir = tempfile::tempdir().unwrap();
    write_file(&dir.path().join("s"), 1, 4 * B as usize);
    let src = File::open(dir.path().join("s")).unwrap();
    let dst = File::create(dir.path().join("d")).unwrap();
    let e = clone_range(&src, 100, &dst, 0, B).unwrap_err();
    let CloneError::Misaligned {
        side,
        what,
        value,
        alignment,
    } = e
    else {
        panic!("{e}")
    };
    assert_eq!((side, what, value), (Side::Source, "offset", 100));
    assert!(alignment >= 512 && alignment.is_power_of_two());
    let e = clone_range(&src, 0, &dst, 0, 1000).unwrap_err();
    assert!(
        matches!(
            e,
            CloneError::Misaligned {
                what: "length",
                value: 1000,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn empty_ranges_do_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_file(&dir.path().join("s"), 1, 4 * B as usize);
    let src = File::open(dir.path().join("s")).unwrap();
    let dst = File::create(dir.path().join("d")).unwrap();
    clone_range(&src, 0, &dst, 0, 0).unwrap();
    assert_eq!(dst.metadata().unwrap().len(), 0);
    let r = dedupe_range(&src, 0, 0, &[DedupeTarget::new(&src, B)]).unwrap();
    assert!(r[0].is_same());
    assert_eq!((r[0].bytes_deduped, r[0].calls), (0, 0));
    assert!(dedupe_range(&src, 0, B, &[]).unwrap().is_empty());
}
