//! Extent maps of real files on the temporary directory's filesystem
//! (ext4 on the project's machines; the bench repeats these on every
//! filesystem it mounts).

use proptest::prelude::*;
use sparsekit_extents::testing::{Layout, Segment, Strictness, check_map, layout_strategy};
use sparsekit_extents::{Extent, ExtentKind, MapError, MapOptions, Method};
use std::fs::File;
use std::os::unix::fs::FileExt;

fn collect(f: &File, opts: MapOptions) -> Vec<Extent> {
    opts.map(f).unwrap().collect::<Result<_, _>>().unwrap()
}

fn kinds(v: &[Extent]) -> Vec<(u64, u64, ExtentKind)> {
    v.iter().map(|e| (e.offset, e.end(), e.kind)).collect()
}

const METHODS: [Method; 5] = [
    Method::Auto,
    Method::Seek,
    Method::Fiemap,
    Method::Scan,
    Method::AllData,
];

#[test]
fn empty_file_has_no_extents_with_any_method() {
    let f = tempfile::tempfile().unwrap();
    for m in METHODS {
        let map = MapOptions::new().method(m).map(&f).unwrap();
        assert_eq!(map.size(), 0);
        assert_eq!(map.count(), 0, "{m}");
    }
}

#[test]
fn all_hole_file_is_one_hole_even_past_the_last_data() {
    // SEEK_DATA gives ENXIO at once: the whole file is a hole.
    let f = tempfile::tempfile().unwrap();
    f.set_len(10 << 20).unwrap();
    for m in [Method::Seek, Method::Fiemap, Method::Scan] {
        assert_eq!(
            kinds(&collect(&f, MapOptions::new().method(m))),
            vec![(0, 10 << 20, ExtentKind::Hole)],
            "{m}"
        );
    }
}

#[test]
fn size_not_a_multiple_of_the_block_size() {
    let f = tempfile::tempfile().unwrap();
    f.set_len(1 << 20).unwrap();
    f.write_all_at(b"tail", (1 << 20) + 3).unwrap(); // size 1 MiB + 7
    for m in [Method::Seek, Method::Fiemap, Method::Scan] {
        let v = collect(&f, MapOptions::new().method(m));
        let last = v.last().unwrap();
        assert_eq!(last.end(), (1 << 20) + 7, "{m}");
        assert_eq!(last.kind, ExtentKind::Data, "{m}");
        assert_eq!(v.first().unwrap().kind, ExtentKind::Hole, "{m}");
    }
}

#[test]
fn offsets_beyond_4_gib_and_1_tib() {
    let f = tempfile::tempfile().unwrap();
    for at in [(1u64 << 32) + 4096, (1u64 << 40) + 8192] {
        f.write_all_at(b"x", at).unwrap();
    }
    for m in [Method::Seek, Method::Fiemap] {
        let v = collect(&f, MapOptions::new().method(m));
        let data: Vec<_> = v
            .iter()
            .filter(|e| e.kind == ExtentKind::Data)
            .map(|e| e.offset)
            .collect();
        assert_eq!(data, vec![(1 << 32) + 4096, (1 << 40) + 8192], "{m}");
        assert_eq!(v.last().unwrap().end(), (1 << 40) + 8193);
    }
}

#[test]
fn ranged_queries_are_clipped_to_the_range() {
    let f = tempfile::tempfile().unwrap();
    f.write_all_at(&[1u8; 8192], 4096).unwrap(); // data 4096..12288
    f.set_len(65536).unwrap();
    for m in [Method::Seek, Method::Fiemap, Method::Scan, Method::AllData] {
        let v = collect(&f, MapOptions::new().method(m).range(6000..30000));
        assert_eq!(v.first().unwrap().offset, 6000, "{m}");
        assert_eq!(v.last().unwrap().end(), 30000, "{m}");
        if m != Method::AllData {
            assert_eq!(
                kinds(&v),
                vec![
                    (6000, 12288, ExtentKind::Data),
                    (12288, 30000, ExtentKind::Hole)
                ],
                "{m}"
            );
        }
    }
    // A range past EOF is empty; one reaching past EOF stops at EOF.
    assert_eq!(
        collect(&f, MapOptions::new().range(1 << 20..2 << 20)).len(),
        0
    );
    assert_eq!(
        collect(&f, MapOptions::new().range(0..1 << 30))
            .last()
            .unwrap()
            .end(),
        65536
    );
}

#[test]
fn unwritten_extents_without_and_with_dirty_pages() {
    use rustix::fs::{FallocateFlags, fallocate};
    let f = tempfile::tempfile().unwrap();
    f.set_len(4 << 20).unwrap();
    fallocate(&f, FallocateFlags::KEEP_SIZE, 1 << 20, 1 << 20).unwrap();
    // Clean: SEEK_DATA calls it a hole, FIEMAP unwritten.
    let seek = collect(&f, MapOptions::new().method(Method::Seek));
    assert_eq!(kinds(&seek), vec![(0, 4 << 20, ExtentKind::Hole)]);
    let fiemap = collect(&f, MapOptions::new().method(Method::Fiemap));
    assert_eq!(
        kinds(&fiemap),
        vec![
            (0, 1 << 20, ExtentKind::Hole),
            (1 << 20, 2 << 20, ExtentKind::Unwritten),
            (2 << 20, 4 << 20, ExtentKind::Hole)
        ]
    );
    // Dirty pages over part of it: both report that part as data (FIEMAP
    // because FIEMAP_FLAG_SYNC writes it back first).
    f.write_all_at(&[7u8; 4096], (1 << 20) + 8192).unwrap();
    for m in [Method::Seek, Method::Fiemap] {
        let v = collect(&f, MapOptions::new().method(m));
        let data: Vec<_> = v
            .iter()
            .filter(|e| e.kind == ExtentKind::Data)
            .map(|e| e.range())
            .collect();
        assert_eq!(data, vec![(1 << 20) + 8192..(1 << 20) + 12288], "{m}");
    }
}

#[test]
fn a_file_that_shrinks_while_mapped_ends_cleanly_and_says_so() {
    let f = tempfile::tempfile().unwrap();
    for i in 0..64u64 {
        f.write_all_at(b"d", i * 65536).unwrap();
    }
    for m in [Method::Seek, Method::Fiemap, Method::Scan] {
        let mut map = MapOptions::new().method(m).map(&f).unwrap();
        let first = map.next().unwrap().unwrap();
        assert_eq!(first.offset, 0);
        f.set_len(100_000).unwrap();
        let rest: Vec<_> = map.by_ref().collect::<Result<_, _>>().unwrap();
        assert!(rest.len() < 200, "{m}: no endless loop");
        assert_eq!(
            rest.last().unwrap().end(),
            63 * 65536 + 1,
            "{m}: maps what it started with"
        );
        assert_eq!(map.size_changed(), Some(100_000), "{m}");
        // Restore for the next method.
        for i in 0..64u64 {
            f.write_all_at(b"d", i * 65536).unwrap();
        }
    }
}

#[test]
fn a_file_that_grows_while_mapped_maps_the_size_seen_at_the_start() {
    let f = tempfile::tempfile().unwrap();
    f.write_all_at(b"d", 0).unwrap();
    f.set_len(1 << 20).unwrap();
    let mut map = MapOptions::new().method(Method::Seek).map(&f).unwrap();
    assert_eq!(map.next().unwrap().unwrap().kind, ExtentKind::Data);
    f.write_all_at(b"more", 8 << 20).unwrap();
    let rest: Vec<_> = map.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(rest.last().unwrap().end(), 1 << 20);
    assert_eq!(map.size_changed(), Some((8 << 20) + 4));
}

#[test]
fn directories_and_fifos_are_not_mappable() {
    let dir = tempfile::tempdir().unwrap();
    let d = File::open(dir.path()).unwrap();
    assert!(matches!(
        sparsekit_extents::map(&d),
        Err(MapError::NotMappable { kind: "directory" })
    ));
    let (r, _w) = rustix::pipe::pipe().unwrap();
    assert!(matches!(
        sparsekit_extents::map(&r),
        Err(MapError::NotMappable { kind: "fifo" })
    ));
}

#[test]
fn auto_uses_seek_on_a_filesystem_with_holes_and_is_not_degraded() {
    let f = tempfile::tempfile().unwrap();
    f.write_all_at(b"x", 5 << 20).unwrap();
    let map = sparsekit_extents::map(&f).unwrap();
    assert_eq!(map.method(), Method::Seek);
    assert!(map.degraded().is_none() && map.fallbacks().is_empty());
    let fiemap_first = MapOptions::new().prefer_fiemap(true).map(&f).unwrap();
    assert_eq!(fiemap_first.method(), Method::Fiemap);
}

#[test]
fn scan_reports_explicit_zeros_as_holes_and_seek_as_data() {
    let layout = Layout {
        size: 1 << 20,
        segments: vec![
            Segment {
                offset: 0,
                len: 65536,
                zeros: true,
            },
            Segment {
                offset: 65536,
                len: 100,
                zeros: false,
            },
        ],
    };
    let f = tempfile::tempfile().unwrap();
    layout.write_to(&f).unwrap();
    let scan = check_map(&f, &layout, Method::Scan, Strictness::ExactBlocks(4096)).unwrap();
    assert_eq!(scan[0].kind, ExtentKind::Hole);
    let seek = check_map(&f, &layout, Method::Seek, Strictness::ExactBlocks(4096)).unwrap();
    assert_eq!(seek[0].kind, ExtentKind::Data);
}

/// Scan reads through the caller's descriptor, which compare and copy put
/// in O_DIRECT mode: every read must be aligned (it was EINVAL at 1 MiB).
#[test]
fn scan_reads_an_o_direct_descriptor_and_its_unaligned_tail() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let path = dir.path().join("f");
    let size = (3 << 20) + 1000;
    let f = File::create(&path).unwrap();
    f.set_len(size).unwrap();
    f.write_all_at(b"data", 1 << 20).unwrap();
    f.write_all_at(b"tail", size - 4).unwrap();
    f.sync_all().unwrap();
    let direct = match rustix::fs::open(
        &path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECT,
        rustix::fs::Mode::empty(),
    ) {
        Ok(fd) => File::from(fd),
        Err(e) => return eprintln!("skipped: no O_DIRECT on /var/tmp: {e}"),
    };
    let block = 4096;
    let opts = MapOptions::new().method(Method::Scan).block_size(block);
    let got = kinds(&collect(&direct, opts));
    assert_eq!(
        got,
        vec![
            (0, 1 << 20, ExtentKind::Hole),
            (1 << 20, (1 << 20) + block, ExtentKind::Data),
            ((1 << 20) + block, size / block * block, ExtentKind::Hole),
            (size / block * block, size, ExtentKind::Data),
        ],
        "{got:?}"
    );
}

#[test]
fn a_200_000_extent_file_maps_in_constant_memory_and_matches_across_methods() {
    // Every other 4 KiB block written: 100,000 data extents, 100,000 holes.
    let f = tempfile::tempfile().unwrap();
    let n = 100_000u64;
    for i in 0..n {
        f.write_all_at(b"z", i * 8192).unwrap();
    }
    f.set_len(n * 8192).unwrap();
    f.sync_all().unwrap();
    let seek = MapOptions::new().method(Method::Seek).map(&f).unwrap();
    let fiemap = MapOptions::new().method(Method::Fiemap).map(&f).unwrap();
    let mut count = 0;
    for (a, b) in seek.zip(fiemap) {
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!((a.offset, a.length, a.kind), (b.offset, b.length, b.kind));
        count += 1;
    }
    assert_eq!(count, 2 * n);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random layouts on a real file: every method's map tiles the file,
    /// covers what was written (exactly, at the 4 KiB block size of ext4)
    /// and reading only its data extents reconstructs the file.
    #[test]
    fn maps_match_random_layouts(layout in layout_strategy(4 << 20, 12)) {
        let f = tempfile::tempfile().unwrap();
        layout.write_to(&f).unwrap();
        for m in [Method::Seek, Method::Fiemap, Method::Scan] {
            if let Err(e) = check_map(&f, &layout, m, Strictness::ExactBlocks(4096)) {
                return Err(TestCaseError::fail(e));
            }
        }
        if let Err(e) = check_map(&f, &layout, Method::AllData, Strictness::Covers) {
            return Err(TestCaseError::fail(e));
        }
    }
}

/// The largest size a file can have (`MAX_LFS_FILESIZE`).
const HUGE: u64 = i64::MAX as u64;

/// An unnamed file of size [`HUGE`] on `$TMPDIR`, or on tmpfs in /dev/shm
/// when `$TMPDIR`'s filesystem refuses the size (ext4 does, with EFBIG).
/// `None`, with the reason printed, only when both refuse it with EFBIG.
fn huge_file() -> Option<File> {
    for dir in [std::env::temp_dir(), "/dev/shm".into()] {
        let Ok(f) = tempfile::tempfile_in(&dir) else {
            continue;
        };
        match f.set_len(HUGE) {
            Ok(()) => return Some(f),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::FBIG.raw_os_error()) => {}
            Err(e) => panic!("set_len({HUGE}) in {}: {e}", dir.display()),
        }
    }
    eprintln!("skipped: no filesystem here takes a file of {HUGE} bytes (EFBIG)");
    None
}

fn data_bytes(v: &[Extent]) -> u64 {
    v.iter()
        .filter(|e| e.kind == ExtentKind::Data)
        .map(|e| e.length)
        .sum()
}

/// Regression (issue 11): tmpfs's SEEK_DATA misses data in the last page
/// of a file larger than 2^63 − 4096 (its page arithmetic overflows), so
/// the map reported 4 bytes at the very end as a hole and a copy would
/// have dropped them.
#[test]
fn data_in_the_last_bytes_of_a_file_of_the_largest_size_is_data() {
    let Some(f) = huge_file() else { return };
    f.write_all_at(b"tail", HUGE - 4).unwrap();
    for m in [Method::Auto, Method::Seek] {
        let v = collect(&f, MapOptions::new().method(m));
        assert_eq!(v.last().unwrap().end(), HUGE, "{m}");
        assert_eq!(v.first().unwrap().offset, 0, "{m}");
        let last = v.last().unwrap();
        assert_eq!(last.kind, ExtentKind::Data, "{m}: {v:?}");
        assert!(last.offset <= HUGE - 4, "{m}: {v:?}");
        // Only the last page(s) hold data; the rest is one hole.
        assert!(data_bytes(&v) <= 4 << 20, "{m}: {v:?}");
        assert!(v.len() <= 3, "{m}: {v:?}");
    }
    // A range inside the tail, and one that ends just before the data.
    let v = collect(&f, MapOptions::new().range(HUGE - 8..HUGE));
    assert_eq!(kinds(&v).last().unwrap().2, ExtentKind::Data, "{v:?}");
    let v = collect(&f, MapOptions::new().range(HUGE - 4096..HUGE - 4));
    assert_eq!(kinds(&v), vec![(HUGE - 4096, HUGE - 4, ExtentKind::Hole)]);
}

#[test]
fn data_at_offset_0_of_a_file_of_the_largest_size_maps_quickly() {
    let Some(f) = huge_file() else { return };
    f.write_all_at(&[7u8; 4096], 0).unwrap();
    let started = std::time::Instant::now();
    let v = collect(&f, MapOptions::new());
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(
        kinds(&v),
        vec![(0, 4096, ExtentKind::Data), (4096, HUGE, ExtentKind::Hole)]
    );
}

#[test]
fn zero_bytes_written_at_the_end_of_the_largest_file_read_as_a_hole() {
    // The tail is checked by reading: written zeros there are a hole, as
    // Scan reports them, which is what a copy needs.
    let Some(f) = huge_file() else { return };
    f.write_all_at(&[0u8; 4], HUGE - 4).unwrap();
    let v = collect(&f, MapOptions::new());
    assert_eq!(kinds(&v), vec![(0, HUGE, ExtentKind::Hole)]);
}
