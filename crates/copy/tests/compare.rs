//! The comparison on /tmp: equal files, one byte changed in data, one byte
//! written into a hole, different sizes, a hole against written zeros
//! (equal content, different allocation), random layouts against the
//! byte-by-byte definition, error paths, and `copy --verify`.

use proptest::prelude::*;
use rustix::io::Errno;
use sparsekit_copy::compare::{CompareError, CompareOptions, MERGE_GAP, Which};
use sparsekit_copy::fault::{self, Faults};
use sparsekit_copy::{CachePolicy, CopyError, CopyOptions, Interrupt, Staging, VerifyLeft};
use sparsekit_extents::testing::{Layout, layout_strategy};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const SIZE: u64 = 64 << 20;

/// 64 MiB: 2 MiB of data at 0, 20 and 60 MiB, holes between.
fn image(path: &Path) {
    let f = File::create(path).unwrap();
    for (i, off) in [0u64, 20 << 20, 60 << 20].into_iter().enumerate() {
        let data: Vec<u8> = (0..2 << 20)
            .map(|j: u32| (j as u8).wrapping_mul(31) ^ i as u8 | 1)
            .collect();
        f.write_all_at(&data, off).unwrap();
    }
    f.set_len(SIZE).unwrap();
    f.sync_all().unwrap();
}

fn pair() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
    image(&a);
    image(&b);
    (dir, a, b)
}

fn poke(path: &Path, off: u64, byte: u8) {
    let f = File::options().write(true).open(path).unwrap();
    f.write_all_at(&[byte], off).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn equal_images_are_equal_and_their_holes_are_not_read() {
    let (_d, a, b) = pair();
    let r = CompareOptions::new().compare(&a, &b).unwrap();
    assert!(r.equal(), "{r:?}");
    assert_eq!(r.first_difference, None);
    assert_eq!(r.bytes_compared, SIZE);
    // 6 MiB of data per side; the 58 MiB of holes are skipped.
    assert_eq!(r.a.bytes_read, 6 << 20, "{r:?}");
    assert_eq!(r.b.bytes_read, 6 << 20, "{r:?}");
    assert_eq!(r.bytes_skipped, 58 << 20, "{r:?}");
    assert!(r.differences.is_empty() && !r.differences_truncated);
}

#[test]
fn one_byte_changed_in_data_is_found_at_its_offset() {
    let (_d, a, b) = pair();
    let off = (20 << 20) + 12_345;
    let mut old = [0u8];
    File::open(&b)
        .unwrap()
        .read_exact_at(&mut old, off)
        .unwrap();
    poke(&b, off, old[0] ^ 0x40);
    let r = CompareOptions::new().limit(10).compare(&a, &b).unwrap();
    assert!(!r.equal() && !r.content_equal);
    assert_eq!(r.first_difference, Some(off));
    assert_eq!(r.differences.len(), 1);
    assert_eq!((r.differences[0].offset, r.differences[0].length), (off, 1));
    assert!(!r.differences_truncated);
}

#[test]
fn one_byte_written_into_a_hole_is_found_reading_only_that_side() {
    let (_d, a, b) = pair();
    let off = (40 << 20) + 777;
    poke(&b, off, 9);
    let r = CompareOptions::new().limit(10).compare(&a, &b).unwrap();
    assert_eq!(r.first_difference, Some(off));
    assert_eq!(r.differences.len(), 1);
    // A has a hole there: only B's new block is read on top of the data.
    assert_eq!(r.a.bytes_read, 6 << 20, "{r:?}");
    assert!(r.b.bytes_read > 6 << 20, "{r:?}");
}

#[test]
fn different_sizes_differ_at_the_end_of_the_shorter() {
    let (_d, a, b) = pair();
    File::options()
        .write(true)
        .open(&b)
        .unwrap()
        .set_len(SIZE + 1)
        .unwrap();
    let r = CompareOptions::new().compare(&a, &b).unwrap();
    assert!(!r.equal() && !r.sizes_equal());
    assert!(r.content_equal, "the common part is equal");
    assert_eq!(r.first_difference, Some(SIZE));
    assert_eq!((r.a.size, r.b.size), (SIZE, SIZE + 1));
    // A difference inside the common part comes first.
    poke(&b, 100, 0);
    let r = CompareOptions::new().compare(&a, &b).unwrap();
    assert_eq!(r.first_difference, Some(100));
}

#[test]
fn a_hole_against_written_zeros_is_equal_content_and_different_allocation() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (a, b) = (dir.path().join("hole"), dir.path().join("zeros"));
    let fa = File::create(&a).unwrap();
    fa.set_len(4 << 20).unwrap();
    let fb = File::create(&b).unwrap();
    fb.write_all_at(&vec![0u8; 4 << 20], 0).unwrap();
    fb.sync_all().unwrap();
    let r = CompareOptions::new().compare(&a, &b).unwrap();
    assert!(r.equal(), "{r:?}");
    assert!(r.allocation.is_none());
    let r = CompareOptions::new()
        .allocation(true)
        .limit(5)
        .compare(&a, &b)
        .unwrap();
    assert!(r.content_equal);
    let alloc = r.allocation.as_ref().unwrap();
    if r.b.allocated == 0 {
        // A filesystem that does not store written zeros: nothing to see.
        assert!(r.equal(), "{r:?}");
        return;
    }
    assert!(!r.equal(), "{r:?}");
    assert_eq!(alloc.only_a, 0);
    assert_eq!(alloc.only_b, 4 << 20, "{r:?}");
    assert_eq!(alloc.differences.len(), 1);
    assert_eq!(alloc.differences[0].allocated_in, Which::B);
    assert!(alloc.unobserved.is_empty(), "{r:?}");
}

/// Where no inquiry shows holes (NFSv3: the map is a scan), the allocation
/// is unknown: never reported equal, though the content is.
#[test]
fn allocation_mapped_by_scan_is_unknown_not_equal() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for p in [&a, &b] {
        let f = File::create(p).unwrap();
        f.set_len(4 << 20).unwrap();
        f.write_all_at(b"data", 1 << 20).unwrap();
    }
    let r = CompareOptions::new()
        .map_method(sparsekit_extents::Method::Scan)
        .allocation(true)
        .compare(&a, &b)
        .unwrap();
    assert!(r.content_equal, "{r:?}");
    let alloc = r.allocation.as_ref().unwrap();
    assert_eq!(alloc.unobserved, vec![Which::A, Which::B], "{r:?}");
    assert!(!alloc.equal() && !r.equal(), "{r:?}");
    // Without --allocation, the same maps answer equal.
    let r = CompareOptions::new()
        .map_method(sparsekit_extents::Method::Scan)
        .compare(&a, &b)
        .unwrap();
    assert!(r.equal(), "{r:?}");
}

#[test]
fn limit_zero_stops_at_the_first_difference() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::write(&a, vec![1u8; 32 << 20]).unwrap();
    std::fs::write(&b, vec![2u8; 32 << 20]).unwrap();
    let r = CompareOptions::new().readers(1).compare(&a, &b).unwrap();
    assert_eq!(r.first_difference, Some(0));
    assert!(r.differences.is_empty() && r.differences_truncated);
    assert!(r.a.bytes_read < 8 << 20, "read on after the answer: {r:?}");
    let r = CompareOptions::new().limit(3).compare(&a, &b).unwrap();
    assert_eq!(r.differences.len(), 1, "one long run: {r:?}");
    assert_eq!(r.differences[0].length, 32 << 20);
}

#[test]
fn a_read_error_names_the_file_the_offset_and_the_errno() {
    let _faults = fault::inject(Faults::new().read_at(20 << 20, Errno::IO));
    let (_d, a, b) = pair();
    let e = CompareOptions::new().compare(&a, &b).unwrap_err();
    match &e {
        CompareError::Io { offset, errno, .. } => {
            assert_eq!(*errno, Errno::IO);
            assert_eq!(*offset, Some(20 << 20));
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("a.img") || e.to_string().contains("b.img"));
    assert!(e.to_string().contains("EIO"), "{e}");
}

#[test]
fn an_interrupt_stops_it() {
    let (_d, a, b) = pair();
    let stop = Interrupt::new();
    stop.trigger();
    let e = CompareOptions::new()
        .interrupt(stop)
        .compare(&a, &b)
        .unwrap_err();
    assert!(matches!(e, CompareError::Interrupted { .. }), "{e:?}");
}

/// A writer rewrites one byte of B in place (with the byte it holds, so
/// the content stays equal) all through the comparison: the answer would
/// describe no single state of B, so it is `Changed` naming B, never
/// "equal". Reads are slowed (two requests per side, 50 ms each), so the
/// comparison spans many of the writer's writes.
#[test]
fn a_file_written_during_the_comparison_is_changed_not_equal() {
    let (_d, a, b) = pair();
    let done = std::sync::atomic::AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            let f = File::options().read(true).write(true).open(&b).unwrap();
            let mut byte = [0u8];
            f.read_exact_at(&mut byte, 100).unwrap();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                f.write_all_at(&byte, 100).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        let _faults = fault::inject(Faults::new().read_delay(std::time::Duration::from_millis(50)));
        let r = CompareOptions::new().readers(1).compare(&a, &b);
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        r
    });
    match result {
        Err(CompareError::Changed { path }) => assert_eq!(path, b),
        other => panic!("{other:?}"),
    }
}

/// A forced map method the file's filesystem lacks: `Map`, naming the
/// file and the errno (tmpfs has no FIEMAP).
#[test]
fn a_map_that_fails_names_the_file_and_the_errno() {
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let a = shm.path().join("a.img");
    std::fs::write(&a, [1u8; 4096]).unwrap();
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let b = dir.path().join("b.img");
    std::fs::write(&b, [0u8; 4096]).unwrap();
    let e = CompareOptions::new()
        .map_method(sparsekit_extents::Method::Fiemap)
        .compare(&a, &b)
        .unwrap_err();
    match &e {
        CompareError::Map { path, source } => {
            assert_eq!(path, &a);
            assert!(source.errno().is_some(), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        e.to_string().starts_with(&format!("{}: ", a.display())),
        "{e}"
    );
    assert!(e.errno().is_some(), "{e:?}");
}

#[test]
fn directories_and_missing_files_are_refused_with_the_path() {
    let (d, a, _b) = pair();
    let e = CompareOptions::new().compare(&a, d.path()).unwrap_err();
    assert!(e.is_usage_error(), "{e:?}");
    assert!(e.to_string().contains("directory"), "{e}");
    let e = CompareOptions::new()
        .compare(&a, d.path().join("nope"))
        .unwrap_err();
    assert_eq!(e.errno(), Some(Errno::NOENT));
    assert!(e.to_string().contains("nope"), "{e}");
}

#[test]
fn a_fifo_is_refused_without_blocking_and_a_procfs_file_without_a_wrong_answer() {
    let (d, a, _b) = pair();
    let fifo = d.path().join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    // No writer ever comes: a blocking open would hang the test.
    let e = CompareOptions::new().compare(&a, &fifo).unwrap_err();
    assert!(e.is_usage_error() && e.to_string().contains("fifo"), "{e}");
    // The copy opens its source the same way.
    let dst = d.path().join("from-fifo");
    let e = CopyOptions::new().copy(&fifo, &dst).unwrap_err();
    assert!(e.is_usage_error() && e.to_string().contains("fifo"), "{e}");
    assert!(!dst.exists());
    // st_size 0, content not: "differ in size" would be a wrong answer.
    let e = CompareOptions::new()
        .compare("/proc/self/status", &a)
        .unwrap_err();
    assert!(
        e.is_usage_error() && e.to_string().contains("/proc/self/status"),
        "{e}"
    );
}

#[test]
fn verify_is_refused_up_front_for_a_source_generated_when_read() {
    let d = tempfile::tempdir().unwrap();
    let dst = d.path().join("copy");
    let e = CopyOptions::new()
        .verify(true)
        .copy("/proc/self/status", &dst)
        .unwrap_err();
    assert!(
        matches!(e, CopyError::InvalidOptions(_)) && e.is_usage_error(),
        "{e:?}"
    );
    assert!(!dst.exists());
}

#[test]
fn cache_auto_falls_back_and_says_so_and_forced_policies_hold() {
    let (_d, a, b) = pair();
    // O_DIRECT absent, as on a filesystem without it, for the whole test.
    let _faults = fault::inject(Faults::new().unsupported_cache(CachePolicy::Direct));
    let r = CompareOptions::new().compare(&a, &b).unwrap();
    assert!(r.equal());
    assert_ne!(r.a.cache, CachePolicy::Direct);
    for side in ["cache direct (a)", "cache direct (b)"] {
        assert!(
            r.fallbacks.iter().any(|f| f.strategy == side),
            "{side}: {r:?}"
        );
    }
    for p in [CachePolicy::Keep, CachePolicy::Drop] {
        let r = CompareOptions::new().cache(p).compare(&a, &b).unwrap();
        assert!(r.equal());
        assert_eq!((r.a.cache, r.b.cache), (p, p));
    }
    let e = CompareOptions::new()
        .cache(CachePolicy::Direct)
        .compare(&a, &b)
        .unwrap_err();
    assert!(matches!(e, CompareError::CacheUnsupported { .. }), "{e:?}");
}

#[test]
fn compare_open_restores_the_descriptors_flags() {
    let (_d, a, b) = pair();
    let (fa, fb) = (File::open(&a).unwrap(), File::open(&b).unwrap());
    let r = CompareOptions::new()
        .compare_open(&fa, &a, &fb, &b)
        .unwrap();
    assert!(r.equal());
    for f in [&fa, &fb] {
        let fl = rustix::fs::fcntl_getfl(f).unwrap();
        assert!(!fl.contains(rustix::fs::OFlags::DIRECT));
    }
}

/// Differing runs by the definition: byte by byte over the common part,
/// merged when fewer than MERGE_GAP equal bytes separate them.
fn naive_runs(x: &[u8], y: &[u8]) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for (i, (p, q)) in x.iter().zip(y).enumerate() {
        if p != q {
            let i = i as u64;
            match out.last_mut() {
                Some(r) if i < r.end + MERGE_GAP => r.end = i + 1,
                _ => out.push(i..i + 1),
            }
        }
    }
    out
}

fn write_layout(path: &Path, layout: &Layout) {
    let f = File::create(path).unwrap();
    layout.write_to(&f).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_layouts_agree_with_the_byte_by_byte_definition(
        la in layout_strategy(3 << 20, 8),
        lb in layout_strategy(3 << 20, 8),
        same in any::<bool>(),
        allocation in any::<bool>(),
        flip in any::<prop::sample::Index>(),
        cache in prop_oneof![Just(CachePolicy::Auto), Just(CachePolicy::Keep), Just(CachePolicy::Drop)],
    ) {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write_layout(&a, &la);
        let mut lb = if same { la.clone() } else { lb };
        let mut yb = lb.expected();
        write_layout(&b, &lb);
        if same && lb.size > 0 {
            // One byte changed, in data or in a hole.
            let at = flip.index(lb.size as usize);
            yb[at] ^= 0x5a;
            File::options().write(true).open(&b).unwrap().write_all_at(&yb[at..=at], at as u64).unwrap();
            lb.segments.clear();
        }
        let xa = la.expected();
        let r = CompareOptions::new()
            .limit(1000)
            .allocation(allocation)
            .cache(cache)
            .buffer_size(128 << 10)
            .compare(&a, &b)
            .unwrap();
        let runs = naive_runs(&xa, &yb);
        let got: Vec<Range<u64>> = r.differences.iter().map(|d| d.offset..d.end()).collect();
        prop_assert_eq!(&got, &runs);
        prop_assert_eq!(r.content_equal, runs.is_empty());
        prop_assert_eq!(r.sizes_equal(), xa.len() == yb.len());
        let first = runs.first().map(|r| r.start).or((xa.len() != yb.len()).then_some(xa.len().min(yb.len()) as u64));
        prop_assert_eq!(r.first_difference, first);
        prop_assert_eq!(r.bytes_compared, xa.len().min(yb.len()) as u64);
        prop_assert!(r.bytes_skipped <= r.bytes_compared);
        if !allocation {
            prop_assert_eq!(r.equal(), xa == yb);
        }
    }
}

#[test]
fn copy_verify_reports_the_read_back() {
    let (d, a, _b) = pair();
    let dst = d.path().join("copy.img");
    let r = CopyOptions::new().verify(true).copy(&a, &dst).unwrap();
    let v = r.verified.as_ref().expect("verified");
    assert!(v.equal());
    assert_eq!(v.b.bytes_read, 6 << 20, "{v:?}");
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&dst).unwrap());
    let r = CopyOptions::new()
        .copy(&a, d.path().join("plain.img"))
        .unwrap();
    assert!(r.verified.is_none());
}

#[test]
fn copy_verify_mismatch_leaves_no_new_destination() {
    let (d, a, _b) = pair();
    let dst = d.path().join("copy.img");
    let off = (60 << 20) + 5;
    let _faults = fault::inject(Faults::new().corrupt_at(off));
    let e = CopyOptions::new().verify(true).copy(&a, &dst).unwrap_err();
    match &e {
        CopyError::VerifyMismatch { offset, left, .. } => {
            assert_eq!(*offset, off);
            assert_eq!(*left, VerifyLeft::NotCreated);
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains(&format!("offset {off}")), "{e}");
    assert!(!dst.exists());
    let mut names: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["a.img", "b.img"], "leftovers");
}

#[test]
fn copy_verify_mismatch_keeps_an_existing_destination_as_it_was() {
    let (d, a, b) = pair();
    poke(&b, 3, 3);
    let before = std::fs::read(&b).unwrap();
    let _faults = fault::inject(Faults::new().corrupt_at(0));
    let e = CopyOptions::new().verify(true).copy(&a, &b).unwrap_err();
    assert!(
        matches!(
            e,
            CopyError::VerifyMismatch {
                offset: 0,
                left: VerifyLeft::Unchanged,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(std::fs::read(&b).unwrap(), before);
    drop(d);
}

#[test]
fn copy_verify_mismatch_in_place_truncates_and_says_so() {
    let (_d, a, b) = pair();
    let _faults = fault::inject(Faults::new().corrupt_at(4096));
    let e = CopyOptions::new()
        .verify(true)
        .staging(Staging::InPlace)
        .copy(&a, &b)
        .unwrap_err();
    assert!(
        matches!(
            e,
            CopyError::VerifyMismatch {
                offset: 4096,
                left: VerifyLeft::Truncated,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("truncated"), "{e}");
    assert_eq!(std::fs::metadata(&b).unwrap().len(), 0);
}

#[test]
fn copy_verify_read_error_fails_the_copy_and_names_the_errno() {
    let (d, a, _b) = pair();
    let dst = d.path().join("copy.img");
    // Inside a hole of the source: the copy never reads there, the
    // corruption puts data there, so only the verify's read hits the fault.
    let off = 40 << 20;
    let _faults = fault::inject(Faults::new().corrupt_at(off).read_at(off, Errno::IO));
    let e = CopyOptions::new().verify(true).copy(&a, &dst).unwrap_err();
    match &e {
        CopyError::Verify { source, left, .. } => {
            assert_eq!(source.errno(), Some(Errno::IO));
            assert_eq!(*left, VerifyLeft::NotCreated);
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("EIO"), "{e}");
    assert!(!dst.exists());
}

#[test]
fn fragmented_requests_are_read_buffered_under_direct_and_still_compared() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for p in [&a, &b] {
        let f = File::create(p).unwrap();
        for off in (0..8u64 << 20).step_by(16 << 10) {
            f.write_all_at(&[(off >> 14) as u8 | 1; 4096], off).unwrap();
        }
        f.set_len(8 << 20).unwrap();
        f.sync_all().unwrap();
    }
    let r = CompareOptions::new().compare(&a, &b).unwrap();
    assert!(r.equal(), "{r:?}");
    if r.a.cache == CachePolicy::Direct {
        assert!(
            r.a.bytes_read_buffered > 0 && r.b.bytes_read_buffered > 0,
            "{r:?}"
        );
    } else {
        assert_eq!(r.a.bytes_read_buffered, 0, "{r:?}");
    }
    let off = (5 << 20) + (16 << 10) + 100;
    poke(&b, off, 0);
    let r = CompareOptions::new().limit(4).compare(&a, &b).unwrap();
    assert_eq!(r.first_difference, Some(off), "{r:?}");
    assert_eq!(r.differences.len(), 1);
}
