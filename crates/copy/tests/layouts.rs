//! Random sparse layouts through every strategy, cache policy, sparse mode
//! and staging: the copy reads back identical and allocates no more than
//! the source.

mod common;

use common::*;
use proptest::prelude::*;
use sparsekit_copy::{
    CachePolicy, CopyOptions, DataStrategy, ReflinkMode, SparseMode, Staging, Strategy as Used,
};
use std::path::Path;

fn seg() -> impl proptest::strategy::Strategy<Value = (u64, Seg)> {
    // Lengths in 512-byte steps up to 384 KiB plus odd tails, so extents
    // start at and straddle block boundaries.
    let len = prop_oneof![
        (1u64..768).prop_map(|n| n * 512),
        (1u64..100_000),
        Just(4096),
    ];
    let kind = prop_oneof![
        4 => any::<u8>().prop_map(Seg::Data),
        2 => Just(Seg::Hole),
        1 => Just(Seg::Zeros),
        1 => Just(Seg::Unwritten),
    ];
    (len, kind)
}

fn layout() -> impl proptest::strategy::Strategy<Value = Layout> {
    prop::collection::vec(seg(), 0..12)
}

/// Unwritten extents need block-aligned `fallocate` to stay unwritten; the
/// kernel rounds them out, which can swallow a neighbour's bytes. Align
/// them (and keep everything else arbitrary).
fn normalise(layout: Layout) -> Layout {
    let mut out = Vec::new();
    let mut off = 0u64;
    for (len, seg) in layout {
        let (len, seg) = if seg == Seg::Unwritten {
            let start = off.next_multiple_of(4096);
            if start > off {
                out.push((start - off, Seg::Hole));
                off = start;
            }
            (len.next_multiple_of(4096), seg)
        } else {
            (len, seg)
        };
        out.push((len, seg));
        off += len;
    }
    out
}

fn check(
    layout: &Layout,
    opts: &CopyOptions,
    name: &str,
) -> Result<sparsekit_copy::CopyReport, TestCaseError> {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let src = dir.path().join("src.img");
    let dst = dir.path().join(name);
    make_file(&src, layout);
    let before = snapshot(&src);
    // Reading cached the source; cached pages over an unwritten extent would
    // make SEEK_DATA report it as data.
    evict(&src);
    let report = opts
        .copy(&src, &dst)
        .map_err(|e| TestCaseError::fail(format!("{e}")))?;
    assert_same_content(&src, &dst);
    // Allocation is settled only once written back (ext4 counts delayed
    // allocation reservations in st_blocks while writeback runs).
    std::fs::File::open(&dst).unwrap().sync_all().unwrap();
    prop_assert!(
        allocated(&dst) <= allocated(&src),
        "destination allocates {} > source {} ({report:?})",
        allocated(&dst),
        allocated(&src)
    );
    prop_assert_eq!(snapshot(&src), before, "source changed");
    prop_assert_eq!(
        others_in(dir.path(), &[&src, &dst]),
        Vec::<std::path::PathBuf>::new()
    );
    Ok(report)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn auto_copies_are_identical_and_no_larger(layout in layout()) {
        let layout = normalise(layout);
        let r = check(&layout, &CopyOptions::new(), "auto.img")?;
        prop_assert_eq!(r.strategy, Used::ReadWrite);
    }

    #[test]
    fn each_cache_policy_forced(layout in layout(), policy in prop_oneof![
        Just(CachePolicy::Keep), Just(CachePolicy::Drop), Just(CachePolicy::Direct), Just(CachePolicy::DontCache)
    ]) {
        let layout = normalise(layout);
        if policy == CachePolicy::DontCache && !dontcache_works(Path::new("/tmp")) {
            return Ok(()); // no RWF_DONTCACHE on this kernel; tests/policies.rs checks the error
        }
        let opts = CopyOptions::new().cache(policy).sync(false).buffer_size(64 << 10);
        let r = check(&layout, &opts, "policy.img")?;
        prop_assert_eq!(r.cache_destination, Some(policy));
        prop_assert_eq!(r.cache_source, Some(policy));
    }

    #[test]
    fn copy_file_range_forced(layout in layout()) {
        let layout = normalise(layout);
        let opts = CopyOptions::new().data_strategy(DataStrategy::CopyFileRange).cache(CachePolicy::Keep).sync(false);
        let r = check(&layout, &opts, "cfr.img")?;
        prop_assert_eq!(r.strategy, Used::CopyFileRange);
    }

    #[test]
    fn sparse_always_makes_zero_blocks_holes(layout in layout()) {
        let layout = normalise(layout);
        let opts = CopyOptions::new().sparse(SparseMode::Always).reflink(ReflinkMode::Never).sync(false);
        let r = check(&layout, &opts, "always.img")?;
        let zero_blocks: u64 = layout.iter().filter(|s| s.1 == Seg::Zeros).map(|s| s.0).sum();
        // Whole zero blocks inside data are found (edges may stay data).
        if zero_blocks >= 3 * 4096 {
            prop_assert!(r.zero_bytes_detected > 0, "{r:?}");
        }
    }

    #[test]
    fn sparse_never_allocates_everything(layout in layout()) {
        let layout = normalise(layout);
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let (src, dst) = (dir.path().join("s"), dir.path().join("d"));
        let size = make_file(&src, &layout);
        let r = CopyOptions::new().sparse(SparseMode::Never).sync(false).copy(&src, &dst).unwrap();
        assert_same_content(&src, &dst);
        std::fs::File::open(&dst).unwrap().sync_all().unwrap();
        prop_assert!(allocated(&dst) >= size.next_multiple_of(4096).saturating_sub(4096), "{r:?}");
        prop_assert_eq!(r.bytes_copied + r.zero_bytes_written, size);
    }

    #[test]
    fn small_buffers_and_one_reader(layout in layout(), readers in 1usize..4) {
        let layout = normalise(layout);
        let opts = CopyOptions::new().buffer_size(64 << 10).readers(readers).queue_depth(1).sync(false);
        check(&layout, &opts, "small.img")?;
    }

    #[test]
    fn in_place_over_random_old_content(layout in layout(), old in layout()) {
        let (layout, old) = (normalise(layout), normalise(old));
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let (src, dst) = (dir.path().join("s"), dir.path().join("d"));
        make_file(&src, &layout);
        make_file(&dst, &old);
        let r = CopyOptions::new().staging(Staging::InPlace).sync(false).copy(&src, &dst).unwrap();
        assert_same_content(&src, &dst);
        std::fs::File::open(&dst).unwrap().sync_all().unwrap();
        prop_assert_eq!(r.staging, Staging::InPlace);
        prop_assert!(allocated(&dst) <= allocated(&src) + 4096, "{} > {} ({r:?})", allocated(&dst), allocated(&src));
    }
}

#[test]
fn an_empty_source_makes_an_empty_destination() {
    check(&vec![], &CopyOptions::new(), "empty.img").unwrap();
}

#[test]
fn a_source_of_only_a_hole_allocates_nothing() {
    let r = check(&vec![(8 << 20, Seg::Hole)], &CopyOptions::new(), "hole.img").unwrap();
    assert_eq!(r.bytes_copied, 0);
    assert_eq!(r.bytes_skipped_as_holes, 8 << 20);
}

#[test]
fn the_report_counts_data_holes_and_unwritten() {
    let layout = vec![
        (1 << 20, Seg::Data(7)),
        (3 << 20, Seg::Hole),
        (1 << 20, Seg::Unwritten),
        (4096, Seg::Data(9)),
    ];
    let r = check(&layout, &CopyOptions::new(), "count.img").unwrap();
    assert_eq!(r.size, (5 << 20) + 4096);
    assert_eq!(r.bytes_copied, (1 << 20) + 4096);
    assert_eq!(
        r.bytes_skipped_as_holes,
        4 << 20,
        "unwritten extents are holes for copying"
    );
    assert_eq!(r.map_method, sparsekit_extents::Method::Seek);
    assert!(r.synced);
}

/// Progress counts the source's data up front (a walk of its map), unless
/// the caller only wants ticks: then the total is the size, and the copy
/// is the same.
#[test]
fn progress_totals_are_counted_only_when_asked_for() {
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let src = dir.path().join("src");
    let size = make_file(
        &src,
        &vec![
            (64 << 10, Seg::Data(1)),
            (4 << 20, Seg::Hole),
            (64 << 10, Seg::Data(2)),
        ],
    );
    std::fs::File::open(&src).unwrap().sync_all().unwrap();
    for (count, total) in [(true, 128 << 10), (false, size)] {
        let dst = dir.path().join(format!("dst-{count}"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        CopyOptions::new()
            .reflink(ReflinkMode::Never)
            .progress_total(count)
            .progress(move |p| log.lock().unwrap().push((p.data_done, p.data_total)))
            .copy(&src, &dst)
            .unwrap();
        assert_same_content(&src, &dst);
        let seen = seen.lock().unwrap();
        assert!(!seen.is_empty(), "count {count}: no progress reported");
        assert!(
            seen.iter().all(|&(_, t)| t == total),
            "count {count}: {seen:?}"
        );
        assert!(
            seen.iter().all(|&(done, t)| done <= t),
            "count {count}: {seen:?}"
        );
    }
}
