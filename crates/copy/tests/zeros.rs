//! Zero detection by default (issue #16): `--sparse auto` turns all-zero
//! blocks into holes wherever the data passes through memory, leaves
//! written zeros as data on the copy_file_range path (and says so), and
//! `never` still writes every byte; `destination_is_zero` (issue #16, 4)
//! skips holes on a destination the caller vouches for, and is refused on
//! a new file.

mod common;

use common::*;
use sparsekit_copy::{
    CachePolicy, CopyError, CopyOptions, DataStrategy, DestinationKind, ReflinkMode, SparseMode,
    Staging, Strategy,
};
use std::fs::File;
use std::path::{Path, PathBuf};

const ZEROS: u64 = 256 << 10;

/// 1 MiB data, 256 KiB written zeros, 768 KiB data, 1 MiB hole.
fn layout() -> Layout {
    vec![
        (1 << 20, Seg::Data(1)),
        (ZEROS, Seg::Zeros),
        (768 << 10, Seg::Data(2)),
        (1 << 20, Seg::Hole),
    ]
}

fn pair() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (src, dst) = (dir.path().join("s"), dir.path().join("d"));
    make_file(&src, &layout());
    File::open(&src).unwrap().sync_all().unwrap();
    (dir, src, dst)
}

/// Whether `range` of `path` is a hole (SEEK_DATA lands past it).
fn is_hole(path: &Path, range: std::ops::Range<u64>) -> bool {
    let f = File::open(path).unwrap();
    match rustix::fs::seek(&f, rustix::fs::SeekFrom::Data(range.start)) {
        Ok(at) => at >= range.end,
        Err(_) => true,
    }
}

#[test]
fn auto_turns_zero_blocks_into_holes_on_the_read_write_path() {
    let (_d, src, dst) = pair();
    let opts = CopyOptions::new().reflink(ReflinkMode::Never).sync(false);
    let r = opts.copy(&src, &dst).unwrap();
    assert_eq!(r.strategy, Strategy::ReadWrite);
    assert!(r.zero_detection, "{r:?}");
    assert_eq!(r.zero_bytes_detected, ZEROS, "{r:?}");
    assert_eq!(r.bytes_copied, (1 << 20) + (768 << 10));
    assert_same_content(&src, &dst);
    assert!(is_hole(&dst, (1 << 20)..(1 << 20) + ZEROS));
    File::open(&dst).unwrap().sync_all().unwrap();
    assert!(allocated(&dst) < allocated(&src), "{r:?}");
}

/// A zero tail that is not a whole block, read with O_DIRECT (widened to
/// the alignment past EOF), is a hole too: a 1-byte file of a zero once
/// came out as a 4 KiB block.
#[test]
fn a_partial_zero_block_at_the_end_is_a_hole_with_every_cache_policy() {
    for cache in [CachePolicy::Direct, CachePolicy::Keep] {
        for size in [1u64, 5000, 9000] {
            let dir = tempfile::tempdir_in("/tmp").unwrap();
            let (src, dst) = (dir.path().join("s"), dir.path().join("d"));
            std::fs::write(&src, vec![0u8; size as usize]).unwrap();
            let opts = CopyOptions::new()
                .reflink(ReflinkMode::Never)
                .sparse(SparseMode::Always)
                .cache(cache);
            let r = match opts.copy(&src, &dst) {
                Err(CopyError::CacheUnsupported { .. }) => continue, // no O_DIRECT here
                r => r.unwrap(),
            };
            assert_eq!(r.zero_bytes_detected, size, "{cache:?} {size}: {r:?}");
            assert_eq!(r.bytes_copied, 0, "{cache:?} {size}: {r:?}");
            assert_same_content(&src, &dst);
            assert_eq!(allocated(&dst), 0, "{cache:?} {size}: {r:?}");
        }
    }
}

#[test]
fn auto_keeps_written_zeros_on_the_copy_file_range_path_and_says_so() {
    let (_d, src, dst) = pair();
    let opts = CopyOptions::new()
        .data_strategy(DataStrategy::CopyFileRange)
        .cache(CachePolicy::Keep)
        .sync(false);
    let r = opts.copy(&src, &dst).unwrap();
    assert_eq!(r.strategy, Strategy::CopyFileRange);
    assert!(!r.zero_detection, "{r:?}");
    assert_eq!(r.zero_bytes_detected, 0);
    assert_same_content(&src, &dst);
    assert!(!is_hole(&dst, (1 << 20)..(1 << 20) + ZEROS));
}

#[test]
fn never_writes_the_zeros_and_detects_nothing() {
    let (_d, src, dst) = pair();
    let r = CopyOptions::new()
        .sparse(SparseMode::Never)
        .sync(false)
        .copy(&src, &dst)
        .unwrap();
    assert!(!r.zero_detection, "{r:?}");
    assert_eq!(r.zero_bytes_detected, 0);
    assert_same_content(&src, &dst);
    assert!(!is_hole(&dst, (1 << 20)..(1 << 20) + ZEROS));
}

/// A destination of the source's size holding written zeros: it reads as
/// zeros, yet every block is allocated.
fn zeroed_destination(dst: &Path) {
    make_file(dst, &vec![(4 << 20, Seg::Zeros)]);
    File::open(dst).unwrap().sync_all().unwrap();
}

#[test]
fn destination_is_zero_skips_the_holes_of_an_existing_file_in_place() {
    let (_d, src, dst) = pair();
    zeroed_destination(&dst);
    let r = CopyOptions::new()
        .staging(Staging::InPlace)
        .destination_is_zero(true)
        .sync(false)
        .copy(&src, &dst)
        .unwrap();
    assert_eq!(r.destination, DestinationKind::ExistingFile);
    // The source's hole and its zero blocks were not punched or zeroed:
    // the old zeros stay allocated (only the first MiB, cleared before the
    // copy so that a torn copy never looks complete, is punched).
    assert_eq!(r.zero_bytes_written, 0);
    assert_eq!(r.zero_bytes_detected, ZEROS);
    assert_same_content(&src, &dst);
    assert!(!is_hole(&dst, (2 << 20)..(3 << 20)), "{r:?}");
    assert!(!is_hole(&dst, (1 << 20)..(1 << 20) + ZEROS), "{r:?}");

    // Without the flag the same copy punches the source's hole.
    zeroed_destination(&dst);
    let r = CopyOptions::new()
        .staging(Staging::InPlace)
        .sync(false)
        .copy(&src, &dst)
        .unwrap();
    assert_same_content(&src, &dst);
    assert!(is_hole(&dst, (2 << 20)..(3 << 20)), "{r:?}");
    assert!(is_hole(&dst, (1 << 20)..(1 << 20) + ZEROS), "{r:?}");
}

#[test]
fn destination_is_zero_is_refused_for_a_new_file_and_creates_nothing() {
    let (d, src, dst) = pair();
    let e = CopyOptions::new()
        .destination_is_zero(true)
        .copy(&src, &dst)
        .unwrap_err();
    assert!(matches!(e, CopyError::InvalidOptions(_)), "{e}");
    assert!(e.is_usage_error());
    assert!(!dst.exists());
    assert_eq!(others_in(d.path(), &[&src]), Vec::<PathBuf>::new());
}

#[test]
fn destination_is_zero_is_refused_for_a_staged_replacement_and_an_empty_file() {
    let (_d, src, dst) = pair();
    zeroed_destination(&dst);
    let before = std::fs::read(&dst).unwrap();
    // Not in place: the copy would replace DST with a new file.
    let e = CopyOptions::new()
        .destination_is_zero(true)
        .copy(&src, &dst)
        .unwrap_err();
    assert!(matches!(e, CopyError::InvalidOptions(_)), "{e}");
    assert_eq!(std::fs::read(&dst).unwrap(), before);

    // An empty file opened by the caller: nothing to skip.
    let empty = File::create(&dst).unwrap();
    let e = CopyOptions::new()
        .destination_is_zero(true)
        .copy_open(&File::open(&src).unwrap(), &src, &empty, &dst)
        .unwrap_err();
    assert!(matches!(e, CopyError::InvalidOptions(_)), "{e}");
    assert_eq!(std::fs::metadata(&dst).unwrap().len(), 0);
}
