use super::*;
use crate::file::faults;
use crate::{CacheOutcome, DigOptions, PunchError, dig_holes};
use rustix::fs::{FallocateFlags, fallocate};
use rustix::io::Errno;

/// 1 MiB + 100 bytes of data with explicit zeros at 64K..192K, at one
/// block 512K..516K, and in the last two blocks and the short tail.
fn with_zeros(f: &File) -> u64 {
    let size = (1 << 20) + 100;
    write_pattern(f, 0..size);
    f.write_all_at(&vec![0; 128 << 10], 64 << 10).unwrap();
    f.write_all_at(&vec![0; B as usize], 512 << 10).unwrap();
    f.write_all_at(&vec![0; (2 * B + 100) as usize], (1 << 20) - 2 * B)
        .unwrap();
    f.sync_all().unwrap();
    size
}

#[test]
fn dig_punches_every_zero_run_and_changes_no_byte() {
    let f = tmp();
    let size = with_zeros(&f);
    let old = contents(&f);
    let dug = dig_holes(&f, &DigOptions::new()).unwrap();
    assert_eq!(dug.method, Method::Seek);
    assert_eq!(dug.size, size);
    assert_eq!(dug.bytes_scanned, size);
    assert_eq!(dug.holes_punched, 3);
    assert_eq!(dug.zero_bytes, (128 << 10) + B + 2 * B + 100);
    assert!(dug.bytes_deallocated() >= (128 << 10) + 4 * B, "{dug:?}");
    assert_eq!(dug.cache, expected_cache());
    assert_eq!(contents(&f), old);
    assert!(is_hole(&f, (64 << 10)..(192 << 10)));
    assert!(is_hole(&f, (512 << 10)..(516 << 10)));
    assert!(is_hole(&f, (1 << 20) - 2 * B..size));

    // A second dig finds nothing left.
    let again = dig_holes(&f, &DigOptions::new()).unwrap();
    assert_eq!(again.holes_punched, 0);
    assert_eq!(again.bytes_scanned, size - dug.zero_bytes);
}

#[test]
fn dry_run_counts_the_same_and_changes_nothing() {
    let f = tmp();
    with_zeros(&f);
    let holes_before = holes(&f);
    let ro = std::fs::File::open(format!("/proc/self/fd/{}", {
        use std::os::fd::AsRawFd;
        f.as_raw_fd()
    }))
    .unwrap();
    let dry = dig_holes(&ro, &DigOptions::new().dry_run(true)).unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.bytes_deallocated(), 0);
    assert_eq!(holes(&f), holes_before);
    let real = dig_holes(&f, &DigOptions::new()).unwrap();
    assert_eq!(
        (dry.holes_punched, dry.zero_bytes, dry.bytes_scanned),
        (real.holes_punched, real.zero_bytes, real.bytes_scanned)
    );
}

#[test]
fn min_hole_skips_short_runs_unless_they_widen_a_hole() {
    let f = tmp();
    write_pattern(&f, 0..64 * B);
    // A lone zero block at 10, a zero block next to a punched hole at 30..40.
    f.write_all_at(&vec![0; B as usize], 10 * B).unwrap();
    f.write_all_at(&vec![0; B as usize], 29 * B).unwrap();
    crate::punch_hole(&f, 30 * B, 10 * B, crate::PunchStrategy::PunchHole).unwrap();
    let dug = dig_holes(&f, &DigOptions::new().min_hole(8 * B)).unwrap();
    assert_eq!(dug.min_hole, 8 * B);
    assert_eq!(dug.holes_punched, 1);
    assert_eq!(dug.zero_bytes, B);
    assert!(is_hole(&f, 29 * B..40 * B));
    assert!(!is_hole(&f, 10 * B..11 * B));
}

#[test]
fn min_hole_is_rounded_up_to_whole_blocks() {
    let f = tmp();
    write_pattern(&f, 0..8 * B);
    let dug = dig_holes(&f, &DigOptions::new().min_hole(B + 1).dry_run(true)).unwrap();
    assert_eq!(dug.min_hole, 2 * B);
}

#[test]
fn every_method_finds_the_same_zeros() {
    for method in [Method::Seek, Method::Fiemap, Method::AllData] {
        let f = tmp();
        let size = with_zeros(&f);
        // Holes are read too by AllData.
        f.set_len(size + (1 << 20)).unwrap();
        let old = contents(&f);
        let dug = dig_holes(&f, &DigOptions::new().method(method)).unwrap();
        assert_eq!(dug.method, method);
        assert_eq!(contents(&f), old, "{method}");
        assert!(is_hole(&f, (64 << 10)..(192 << 10)), "{method}");
        assert!(is_hole(&f, (512 << 10)..(516 << 10)), "{method}");
        match method {
            Method::AllData => assert_eq!(dug.bytes_scanned, size + (1 << 20)),
            // Extending the file made the last block whole data.
            _ => assert_eq!(dug.bytes_scanned, size.div_ceil(B) * B, "{method}"),
        }
    }
}

#[test]
fn auto_falls_back_from_fiemap_less_tmpfs_to_seek() {
    // tmpfs has SEEK_DATA: Auto uses it without fallbacks.
    let f = memfd();
    write_pattern(&f, 0..16 * B);
    f.write_all_at(&vec![0; 4 * B as usize], 4 * B).unwrap();
    let dug = dig_holes(&f, &DigOptions::new()).unwrap();
    assert_eq!(dug.method, Method::Seek);
    assert_eq!(dug.holes_punched, 1);
    assert_eq!(dug.bytes_deallocated(), 4 * B);
}

#[test]
fn unwritten_extents_are_left_alone() {
    let f = tmp();
    write_pattern(&f, 0..4 * B);
    fallocate(&f, FallocateFlags::KEEP_SIZE, 4 * B, 16 * B).unwrap();
    f.set_len(20 * B).unwrap();
    let before = allocated(&f);
    for method in [Method::Fiemap, Method::Seek] {
        let dug = dig_holes(&f, &DigOptions::new().method(method)).unwrap();
        assert_eq!(dug.holes_punched, 0, "{method}");
        assert_eq!(allocated(&f), before, "{method}");
    }
}

#[test]
fn a_range_limits_the_dig_to_its_whole_blocks() {
    let f = tmp();
    f.write_all_at(&vec![0; 32 * B as usize], 0).unwrap();
    f.sync_all().unwrap();
    let dug = dig_holes(&f, &DigOptions::new().range(B + 1..10 * B + 5)).unwrap();
    assert_eq!(dug.zero_bytes, 8 * B);
    assert!(is_hole(&f, 2 * B..10 * B));
    assert!(!is_hole(&f, B..2 * B));
    assert!(!is_hole(&f, 10 * B..11 * B));
}

/// `Direct` where the temporary directory's filesystem takes `O_DIRECT`
/// (observed on a file of its own), else `Dropped`.
fn expected_cache() -> CacheOutcome {
    let probe = tmp();
    match rustix::fs::fcntl_setfl(&probe, rustix::fs::OFlags::DIRECT) {
        Ok(()) => CacheOutcome::Direct,
        Err(_) => CacheOutcome::Dropped,
    }
}

fn status_flags(f: &File) -> rustix::fs::OFlags {
    rustix::fs::fcntl_getfl(f).unwrap()
}

#[test]
fn direct_reads_leave_the_descriptor_as_it_was() {
    if expected_cache() != CacheOutcome::Direct {
        eprintln!("skipped: no O_DIRECT on the temporary directory");
        return;
    }
    let f = tmp();
    let size = with_zeros(&f);
    let before = status_flags(&f);
    let old = contents(&f);
    let dug = dig_holes(&f, &DigOptions::new().chunk_size(64 << 10)).unwrap();
    assert_eq!(dug.cache, CacheOutcome::Direct);
    assert_eq!(dug.bytes_scanned, size);
    assert_eq!(dug.zero_bytes, (128 << 10) + B + 2 * B + 100);
    assert_eq!(status_flags(&f), before);
    assert_eq!(contents(&f), old);
    assert!(is_hole(&f, (1 << 20) - 2 * B..size));
}

#[test]
fn refused_direct_io_reads_through_the_cache() {
    let _reset = crate::direct::faults::Reset;
    crate::direct::faults::refuse_direct(true);
    let f = tmp();
    let size = with_zeros(&f);
    let before = status_flags(&f);
    let old = contents(&f);
    let dug = dig_holes(&f, &DigOptions::new()).unwrap();
    assert_eq!(dug.cache, CacheOutcome::Dropped);
    assert_eq!(dug.bytes_scanned, size);
    assert_eq!(dug.holes_punched, 3);
    assert_eq!(status_flags(&f), before);
    assert_eq!(contents(&f), old);
}

#[test]
fn a_short_direct_read_goes_on_through_the_cache() {
    let _reset = crate::direct::faults::Reset;
    crate::direct::faults::short_direct_reads(true);
    let f = tmp();
    let size = with_zeros(&f);
    let before = status_flags(&f);
    let old = contents(&f);
    let dug = dig_holes(&f, &DigOptions::new().chunk_size(64 << 10)).unwrap();
    // Where O_DIRECT is refused outright the first path is the cache anyway.
    assert_eq!(dug.cache, CacheOutcome::Dropped);
    assert_eq!(dug.bytes_scanned, size);
    assert_eq!(dug.zero_bytes, (128 << 10) + B + 2 * B + 100);
    assert_eq!(status_flags(&f), before);
    assert_eq!(contents(&f), old);
}

#[test]
fn keeping_the_cache_is_reported() {
    let f = tmp();
    write_pattern(&f, 0..4 * B);
    let dug = dig_holes(&f, &DigOptions::new().drop_cache(false)).unwrap();
    assert_eq!(dug.cache, CacheOutcome::Kept);
}

#[test]
fn an_empty_or_all_hole_file_is_fine() {
    let f = tmp();
    let dug = dig_holes(&f, &DigOptions::new()).unwrap();
    assert_eq!((dug.bytes_scanned, dug.holes_punched), (0, 0));
    f.set_len(1 << 30).unwrap();
    let dug = dig_holes(&f, &DigOptions::new()).unwrap();
    assert_eq!((dug.bytes_scanned, dug.holes_punched), (0, 0));
}

#[test]
fn a_dig_stopped_after_punching_is_partial_and_content_safe() {
    let _reset = faults();
    let f = tmp();
    with_zeros(&f);
    let old = contents(&f);
    faults::fail_fallocates_after(Some(1), Errno::IO);
    let err = dig_holes(&f, &DigOptions::new()).unwrap_err();
    let msg = err.to_string();
    assert!(err.changed_file(), "{msg}");
    assert!(
        msg.contains("the content is unchanged; 1 runs of zero blocks (131072 bytes) were punched"),
        "{msg}"
    );
    assert!(
        msg.contains("fallocate(PUNCH_HOLE|KEEP_SIZE) at offset 524288: EIO"),
        "{msg}"
    );
    assert_eq!(contents(&f), old);
}

#[test]
fn a_filesystem_that_cannot_punch_is_unsupported_before_anything_changes() {
    let _reset = faults();
    let f = tmp();
    with_zeros(&f);
    faults::fail_fallocates_after(Some(0), Errno::OPNOTSUPP);
    let err = dig_holes(&f, &DigOptions::new()).unwrap_err();
    assert!(
        matches!(
            err,
            PunchError::Unsupported {
                strategy: "punch_hole",
                errno: Errno::OPNOTSUPP,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn forced_methods_the_filesystem_lacks_fail_to_map() {
    let f = memfd();
    write_pattern(&f, 0..4 * B);
    let err = dig_holes(&f, &DigOptions::new().method(Method::Fiemap)).unwrap_err();
    assert!(matches!(err, PunchError::Map { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("dig: mapping extents: method fiemap is not supported here"),
        "{err}"
    );
}

/// Pages of `f` resident in the page cache (mincore works on every kernel).
fn resident_pages(f: &File) -> usize {
    let len = f.metadata().unwrap().len() as usize;
    let page = sparsekit_sys::pagecache::page_size();
    let mut residency = vec![0u8; len.div_ceil(page)];
    sparsekit_sys::pagecache::mincore_file(f, 0, len, &mut residency).expect("mincore");
    residency.iter().filter(|&&r| r & 1 == 1).count()
}

#[test]
fn the_pages_dig_reads_leave_the_cache() {
    let f = tmp();
    // 8 MiB of data, a quarter of it zeros, then a hole and more data.
    write_pattern(&f, 0..8 << 20);
    f.write_all_at(&vec![0; 2 << 20], 3 << 20).unwrap();
    write_pattern(&f, 16 << 20..20 << 20);
    f.sync_all().unwrap();
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    assert_eq!(
        resident_pages(&f),
        0,
        "DONTNEED after fsync empties the cache"
    );
    let dug = dig_holes(&f, &DigOptions::new()).unwrap();
    assert_eq!(dug.bytes_scanned, 12 << 20);
    assert_eq!(resident_pages(&f), 0, "dig left pages cached");

    // With the cache kept, what was read stays (the control: the check can fail).
    let g = tmp();
    write_pattern(&g, 0..8 << 20);
    g.sync_all().unwrap();
    rustix::fs::fadvise(&g, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    dig_holes(&g, &DigOptions::new().drop_cache(false)).unwrap();
    assert!(resident_pages(&g) > 0);
}
