//! Existing destinations, larger and smaller than the source: replaced by
//! rename (staged), or rewritten in place with the source's holes punched.

mod common;

use common::*;
use sparsekit_copy::fault::{self, Faults};
use sparsekit_copy::{CopyError, CopyOptions, DestinationKind, HoleMethod, SparseMode, Staging};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

fn source_layout() -> Layout {
    vec![
        (1 << 20, Seg::Data(1)),
        (3 << 20, Seg::Hole),
        (512 << 10, Seg::Data(2)),
        (1 << 20, Seg::Hole),
    ]
}

fn pair(old: &Layout) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (src, dst) = (dir.path().join("s"), dir.path().join("d"));
    make_file(&src, &source_layout());
    make_file(&dst, old);
    (dir, src, dst)
}

fn larger() -> Layout {
    vec![(16 << 20, Seg::Data(7))]
}

fn smaller() -> Layout {
    vec![(100 << 10, Seg::Data(8))]
}

#[test]
fn staged_copies_replace_larger_and_smaller_files_keeping_the_mode() {
    for old in [larger(), smaller()] {
        let (dir, src, dst) = pair(&old);
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o640)).unwrap();
        let old_ino = std::fs::metadata(&dst).unwrap().ino();
        let r = CopyOptions::new().copy(&src, &dst).unwrap();
        assert_same_content(&src, &dst);
        let m = std::fs::metadata(&dst).unwrap();
        assert_ne!(
            m.ino(),
            old_ino,
            "staged copies rename a new inode into place"
        );
        assert_eq!(m.mode() & 0o7777, 0o640);
        assert!(allocated(&dst) <= allocated(&src));
        assert_eq!(r.destination, DestinationKind::NewFile);
        assert_eq!(others_in(dir.path(), &[&src, &dst]), Vec::<PathBuf>::new());
    }
}

#[test]
fn in_place_copies_keep_the_inode_and_punch_the_holes() {
    for old in [larger(), smaller()] {
        let (_dir, src, dst) = pair(&old);
        let old_ino = std::fs::metadata(&dst).unwrap().ino();
        let r = CopyOptions::new()
            .staging(Staging::InPlace)
            .copy(&src, &dst)
            .unwrap();
        assert_same_content(&src, &dst);
        assert_eq!(std::fs::metadata(&dst).unwrap().ino(), old_ino);
        assert!(
            allocated(&dst) <= allocated(&src),
            "{} > {}",
            allocated(&dst),
            allocated(&src)
        );
        assert_eq!(r.staging, Staging::InPlace);
        assert_eq!(r.destination, DestinationKind::ExistingFile);
        assert_eq!(r.holes, Some(HoleMethod::Punch), "{r:?}");
    }
}

#[test]
fn each_hole_method_can_be_forced_in_place() {
    for method in [
        HoleMethod::Punch,
        HoleMethod::ZeroRange,
        HoleMethod::WriteZeros,
    ] {
        let (_dir, src, dst) = pair(&larger());
        let r = CopyOptions::new()
            .staging(Staging::InPlace)
            .hole_method(method)
            .copy(&src, &dst)
            .unwrap();
        assert_same_content(&src, &dst);
        assert_eq!(r.holes, Some(method), "{r:?}");
        if method == HoleMethod::WriteZeros {
            assert!(r.zero_bytes_written > 0, "{r:?}");
        } else {
            assert!(allocated(&dst) <= allocated(&src) + (4 << 20), "{r:?}");
        }
    }
}

#[test]
fn zero_out_is_for_block_devices_only() {
    let (_dir, src, dst) = pair(&larger());
    let e = CopyOptions::new()
        .staging(Staging::InPlace)
        .hole_method(HoleMethod::ZeroOut)
        .copy(&src, &dst)
        .unwrap_err();
    match &e {
        CopyError::HoleMethodUnsupported { method, errno, .. } => {
            assert_eq!(*method, HoleMethod::ZeroOut);
            assert_eq!(*errno, rustix::io::Errno::NOTTY);
        }
        other => panic!("{other:?}"),
    }
    // Refused in the header step, before the body: emptied like any failure.
    assert_eq!(std::fs::metadata(&dst).unwrap().len(), 0);
}

#[test]
fn the_hole_chain_falls_back_step_by_step() {
    let cases = [
        (vec![HoleMethod::Punch], HoleMethod::ZeroRange),
        (
            vec![HoleMethod::Punch, HoleMethod::ZeroRange],
            HoleMethod::WriteZeros,
        ),
    ];
    for (unsupported, expect) in cases {
        let (_dir, src, dst) = pair(&larger());
        let mut faults = Faults::new();
        for m in &unsupported {
            faults = faults.unsupported_holes(*m);
        }
        let _faults = fault::inject(faults);
        let r = CopyOptions::new()
            .staging(Staging::InPlace)
            .copy(&src, &dst)
            .unwrap();
        assert_same_content(&src, &dst);
        assert_eq!(r.holes, Some(expect), "{r:?}");
        let left: Vec<_> = r
            .fallbacks
            .iter()
            .filter(|f| f.strategy.starts_with("holes "))
            .collect();
        assert_eq!(left.len(), unsupported.len(), "{r:?}");
    }
}

#[test]
fn in_place_into_a_new_path_creates_and_on_failure_removes_it() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (src, dst) = (dir.path().join("s"), dir.path().join("new"));
    make_file(&src, &source_layout());
    let faults = fault::inject(Faults::new().write_at(0, rustix::io::Errno::NOSPC));
    let e = CopyOptions::new()
        .staging(Staging::InPlace)
        .copy(&src, &dst)
        .unwrap_err();
    drop(faults);
    assert_eq!(e.errno(), Some(rustix::io::Errno::NOSPC));
    assert!(!dst.exists(), "what the copy created is removed");
    let r = CopyOptions::new()
        .staging(Staging::InPlace)
        .copy(&src, &dst)
        .unwrap();
    assert_same_content(&src, &dst);
    assert_eq!(r.destination, DestinationKind::NewFile);
}

#[test]
fn sparse_never_in_place_writes_zeros_over_old_data() {
    let (_dir, src, dst) = pair(&larger());
    let r = CopyOptions::new()
        .staging(Staging::InPlace)
        .sparse(SparseMode::Never)
        .copy(&src, &dst)
        .unwrap();
    assert_same_content(&src, &dst);
    assert_eq!(
        r.zero_bytes_written + r.bytes_copied,
        std::fs::metadata(&src).unwrap().len()
    );
}

#[test]
fn copy_open_writes_into_open_files() {
    let (_dir, src, dst) = pair(&larger());
    let s = std::fs::File::open(&src).unwrap();
    let d = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&dst)
        .unwrap();
    let r = CopyOptions::new()
        .cache(sparsekit_copy::CachePolicy::Direct)
        .copy_open(&s, &src, &d, &dst)
        .unwrap();
    assert_same_content(&src, &dst);
    assert_eq!(r.staging, Staging::InPlace);
    // O_DIRECT was turned off again on both descriptors.
    for f in [&s, &d] {
        let flags = rustix::fs::fcntl_getfl(f).unwrap();
        assert!(!flags.contains(rustix::fs::OFlags::DIRECT));
    }
    let e = CopyOptions::new()
        .copy_open(&s, &src, &s, &src)
        .unwrap_err();
    assert!(matches!(e, CopyError::SameFile { .. }));
}
