//! Cache policies: what `Auto` picks is what the kernel was seen to
//! support, each fallback of the chain can be forced, a forced policy that
//! cannot work fails before anything is written, and pages that were
//! cached before a copy are still cached after it.

mod common;

use common::*;
use sparsekit_copy::fault::{self, Faults};
use sparsekit_copy::{CachePolicy, CopyError, CopyOptions, CopyReport, DataStrategy, Fallback};
use std::path::Path;

const SHM: &str = "/dev/shm";

fn shm_available() -> bool {
    Path::new(SHM).is_dir() && tempfile::tempdir_in(SHM).is_ok()
}

fn data_file(path: &Path, mib: u64) -> u64 {
    make_file(
        path,
        &vec![
            (mib << 20, Seg::Data(5)),
            (4 << 20, Seg::Hole),
            (4096 + 7, Seg::Data(6)),
        ],
    )
}

fn falls_back(fallbacks: &[Fallback], from: &str) -> bool {
    fallbacks
        .iter()
        .any(|f| f.strategy == from && f.errno == rustix::io::Errno::OPNOTSUPP)
}

#[test]
fn auto_picks_what_the_kernel_supports_on_tmp() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (src, dst) = (dir.path().join("s"), dir.path().join("d"));
    data_file(&src, 2);
    let r = CopyOptions::new().copy(&src, &dst).unwrap();
    assert_same_content(&src, &dst);
    auto_source(&r, dontcache_works(dir.path()));
    auto_destination(&r);
}

/// The destination under `Auto` writes with write-behind (`Drop`), which
/// works on anything writable: no step is left, nothing is probed.
fn auto_destination(r: &CopyReport) {
    assert_eq!(r.cache_destination, Some(CachePolicy::Drop), "{r:?}");
    assert!(
        !r.fallbacks
            .iter()
            .any(|f| f.strategy.ends_with("(destination)")),
        "{r:?}"
    );
}

/// The source of an auto resolution: Direct first (O_DIRECT works on ext4,
/// xfs, btrfs and tmpfs), else its fallback is reported and DontCache
/// follows where the kernel has it.
fn auto_source(r: &CopyReport, dontcache: bool) {
    let (got, side) = (r.cache_source, "source");
    if got == Some(CachePolicy::Direct) {
        return;
    }
    let left_direct = format!("cache direct ({side})");
    assert!(
        r.fallbacks.iter().any(|f| f.strategy == left_direct),
        "{side}: {r:?}"
    );
    if dontcache {
        assert_eq!(got, Some(CachePolicy::DontCache), "{side}: {r:?}");
    } else {
        assert!(
            falls_back(&r.fallbacks, &format!("cache dontcache ({side})")),
            "{side}: {r:?}"
        );
        assert!(
            matches!(got, Some(CachePolicy::Drop | CachePolicy::Keep)),
            "{side}: {r:?}"
        );
    }
}

#[test]
fn auto_walks_the_chain_on_tmpfs() {
    if !shm_available() {
        return;
    }
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let shm = tempfile::tempdir_in(SHM).unwrap();
    // The source walks the chain; tmpfs before 6.6 has no O_DIRECT.
    let (src, dst) = (shm.path().join("s"), dir.path().join("d"));
    data_file(&src, 1);
    let r = CopyOptions::new().copy(&src, &dst).unwrap();
    assert_same_content(&src, &dst);
    auto_source(&r, dontcache_works(shm.path()));
    auto_destination(&r);
}

#[test]
fn forcing_an_unsupported_policy_fails_before_writing() {
    if !shm_available() {
        return;
    }
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let shm = tempfile::tempdir_in(SHM).unwrap();
    if dontcache_works(shm.path()) {
        return; // a future tmpfs with RWF_DONTCACHE: nothing to refuse
    }
    let (src, dst) = (dir.path().join("s"), shm.path().join("d"));
    data_file(&src, 1);
    let e = CopyOptions::new()
        .cache(CachePolicy::DontCache)
        .copy(&src, &dst)
        .unwrap_err();
    match &e {
        CopyError::CacheUnsupported {
            policy,
            errno,
            path,
        } => {
            assert_eq!(*policy, CachePolicy::DontCache);
            assert_eq!(*errno, rustix::io::Errno::OPNOTSUPP);
            assert_eq!(path, &dst);
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("EOPNOTSUPP"), "{e}");
    assert!(!dst.exists());
    assert!(others_in(shm.path(), &[]).is_empty());
}

#[test]
fn each_step_of_the_auto_chain_can_be_forced() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let src = dir.path().join("s");
    data_file(&src, 1);
    // (policies failing their probe, the source's policy, the destination's)
    let mut cases = vec![
        (
            vec![CachePolicy::Direct, CachePolicy::DontCache],
            CachePolicy::Drop,
            CachePolicy::Drop,
        ),
        (
            vec![
                CachePolicy::Direct,
                CachePolicy::DontCache,
                CachePolicy::Drop,
            ],
            CachePolicy::Keep,
            CachePolicy::Keep,
        ),
        // The destination's only step.
        (
            vec![CachePolicy::Drop],
            CachePolicy::Direct,
            CachePolicy::Keep,
        ),
    ];
    // The step after Direct is only reachable where RWF_DONTCACHE works.
    if dontcache_works(dir.path()) {
        cases.insert(
            0,
            (
                vec![CachePolicy::Direct],
                CachePolicy::DontCache,
                CachePolicy::Drop,
            ),
        );
    }
    for (i, (unsupported, source, destination)) in cases.into_iter().enumerate() {
        let dst = dir.path().join(format!("d{i}"));
        let mut faults = Faults::new();
        for p in &unsupported {
            faults = faults.unsupported_cache(*p);
        }
        let _faults = fault::inject(faults);
        let r = CopyOptions::new().copy(&src, &dst).unwrap();
        assert_same_content(&src, &dst);
        assert_eq!(r.cache_source, Some(source), "{r:?}");
        assert_eq!(r.cache_destination, Some(destination), "{r:?}");
        // Each side lists every step it left, and only those.
        let left = |side: &str| {
            r.fallbacks
                .iter()
                .filter(|f| f.strategy.starts_with("cache ") && f.strategy.ends_with(side))
                .count()
        };
        // The steps before the one taken.
        let source_chain = [
            CachePolicy::Direct,
            CachePolicy::DontCache,
            CachePolicy::Drop,
            CachePolicy::Keep,
        ];
        let source_steps = source_chain.iter().position(|p| *p == source).unwrap();
        assert_eq!(left("(source)"), source_steps, "{r:?}");
        let destination_steps = usize::from(destination == CachePolicy::Keep);
        assert_eq!(left("(destination)"), destination_steps, "{r:?}");
    }
}

/// Pages 0, 3 and 100 of the source are cached before the copy and must be
/// after it; the copy itself must leave (almost) nothing cached.
fn preserves_hot_pages(policy: CachePolicy) {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (src, dst) = (dir.path().join("s"), dir.path().join("d"));
    data_file(&src, 4);
    evict(&src);
    let hot = [0u64, 3, 100];
    for p in hot {
        touch_page(&src, p);
    }
    let before = resident(&src);
    for p in hot {
        assert!(before[p as usize], "page {p} not cached before the copy");
    }
    let r = CopyOptions::new().cache(policy).copy(&src, &dst).unwrap();
    assert_same_content(&dst, &src); // reads dst first: its pages are cached now, src's not yet
    let after_src = resident(&src);
    for p in hot {
        assert!(
            after_src[p as usize],
            "{policy}: page {p} was evicted by the copy ({r:?})"
        );
    }
    // What the report measured right after the copy: source growth plus
    // destination, at most 1 % of the data (4 MiB + 4 KiB) plus a page
    // for the unaligned tail.
    let left = r
        .bytes_left_in_page_cache()
        .expect("cachestat or mincore works on /tmp");
    assert!(
        left <= (4 << 20) / 100 + page(),
        "{policy}: {left} bytes left in the page cache ({r:?})"
    );
}

#[test]
fn drop_keeps_hot_pages_and_leaves_little() {
    preserves_hot_pages(CachePolicy::Drop);
}

#[test]
fn direct_keeps_hot_pages_and_leaves_little() {
    preserves_hot_pages(CachePolicy::Direct);
}

#[test]
fn dontcache_keeps_hot_pages_and_leaves_little() {
    if dontcache_works(Path::new("/tmp")) {
        preserves_hot_pages(CachePolicy::DontCache);
    }
}

#[test]
fn copy_file_range_with_drop_keeps_hot_pages() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (src, dst) = (dir.path().join("s"), dir.path().join("d"));
    data_file(&src, 4);
    evict(&src);
    touch_page(&src, 7);
    let r = CopyOptions::new()
        .cache(CachePolicy::Drop)
        .data_strategy(DataStrategy::CopyFileRange)
        .copy(&src, &dst)
        .unwrap();
    assert!(resident(&src)[7], "{r:?}");
    let left = r.bytes_left_in_page_cache().unwrap();
    assert!(left <= (4 << 20) / 100 + page(), "{left} ({r:?})");
}

#[test]
fn keep_leaves_the_copy_cached() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (src, dst) = (dir.path().join("s"), dir.path().join("d"));
    data_file(&src, 4);
    evict(&src);
    let r = CopyOptions::new()
        .cache(CachePolicy::Keep)
        .copy(&src, &dst)
        .unwrap();
    // Keep is plain buffered I/O: the data read and written stays cached,
    // and the report says so.
    let left = r.bytes_left_in_page_cache().unwrap();
    assert!(left >= 2 * (4 << 20), "{left} ({r:?})");
    assert_eq!(r.cache_destination, Some(CachePolicy::Keep));
}

#[test]
fn direct_handles_unaligned_sizes_and_extents() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (src, dst) = (dir.path().join("s"), dir.path().join("d"));
    make_file(
        &src,
        &vec![
            (1000, Seg::Data(1)),
            (70_000, Seg::Hole),
            (12_345, Seg::Data(2)),
            (4096, Seg::Hole),
            (777, Seg::Data(3)),
        ],
    );
    evict(&src);
    let r = CopyOptions::new()
        .cache(CachePolicy::Direct)
        .copy(&src, &dst)
        .unwrap();
    assert_same_content(&src, &dst);
    assert_eq!(r.cache_destination, Some(CachePolicy::Direct));
    assert!(allocated(&dst) <= allocated(&src));
}
