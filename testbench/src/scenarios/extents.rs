//! sparsekit-extents on a real filesystem: each method forced, checked
//! against what was written.

use crate::proptest_support;
use crate::scenario::{Ctx, Scenario, ScenarioResult, Verdict};
use crate::{require, skip};
use anyhow::{Context, ensure};
use rustix::io::Errno;
use sparsekit_extents::testing::{Strictness, check_map, layout_strategy};
use sparsekit_extents::{Extent, ExtentKind, MapError, MapOptions, Method};
use sparsekit_sys::ErrnoName;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};

/// The scenarios of this module.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new("extents/layouts_seek", layouts_seek),
        Scenario::new("extents/layouts_fiemap", layouts_fiemap),
        Scenario::new("extents/layouts_scan", layouts_scan),
        Scenario::new("extents/auto_choice", auto_choice),
        Scenario::new("extents/unwritten", unwritten),
        Scenario::new("extents/reflink_shared", reflink_shared),
        Scenario::new("extents/fiemap_batches", fiemap_batches),
        Scenario::new("extents/dirty_data_found", dirty_data_found),
        Scenario::new("extents/large_offsets", large_offsets),
        Scenario::new("extents/shrink_while_mapping", shrink_while_mapping),
    ]
}

fn collect(f: &File, opts: MapOptions) -> Result<Vec<Extent>, MapError> {
    opts.map(f)?.collect()
}

/// The filesystem's block size (`f_bsize`).
fn block_size(ctx: &Ctx<'_>) -> anyhow::Result<u64> {
    Ok(rustix::fs::statvfs(ctx.dir())?.f_bsize.max(512))
}

/// Observes whether `method` finds a hole in the middle of a file here: if
/// so, maps must match written blocks exactly; if not, they need only cover.
fn strictness(ctx: &Ctx<'_>, method: Method) -> anyhow::Result<Strictness> {
    let f = ctx.create("hole-probe")?;
    f.write_all_at(b"a", 0)?;
    f.write_all_at(b"b", 8 << 20)?;
    f.sync_all()?;
    let keeps_hole = collect(&f, MapOptions::new().method(method))?
        .iter()
        .any(|e| e.kind == ExtentKind::Hole);
    std::fs::remove_file(ctx.path("hole-probe"))?;
    Ok(if keeps_hole {
        Strictness::ExactBlocks(block_size(ctx)?)
    } else {
        Strictness::Covers
    })
}

fn layouts(ctx: &Ctx<'_>, method: Method) -> ScenarioResult {
    let probe = ctx.create("probe")?;
    match MapOptions::new().method(method).map(&probe) {
        Err(MapError::Unsupported { errno, .. }) => {
            skip!("{method} unsupported: {}", ErrnoName(errno))
        }
        r => drop(r?),
    }
    let strict = strictness(ctx, method)?;
    let n = std::cell::Cell::new(0);
    proptest_support::run(12, layout_strategy(4 << 20, 10), |layout| {
        n.set(n.get() + 1);
        let name = format!("layout-{}", n.get());
        let f = ctx.create(&name).map_err(|e| e.to_string())?;
        layout.write_to(&f).map_err(|e| e.to_string())?;
        let r = check_map(&f, &layout, method, strict).map(drop);
        let _ = std::fs::remove_file(ctx.path(&name));
        r
    })?;
    Ok(Verdict::Pass)
}

fn layouts_seek(ctx: &Ctx<'_>) -> ScenarioResult {
    layouts(ctx, Method::Seek)
}

fn layouts_fiemap(ctx: &Ctx<'_>) -> ScenarioResult {
    layouts(ctx, Method::Fiemap)
}

fn layouts_scan(ctx: &Ctx<'_>) -> ScenarioResult {
    layouts(ctx, Method::Scan)
}

/// Auto must pick a method that sees the holes this filesystem keeps, and
/// report degraded SEEK_HOLE only when it is.
fn auto_choice(ctx: &Ctx<'_>) -> ScenarioResult {
    let f = ctx.create("sparse")?;
    f.write_all_at(&[1u8; 4096], 0)?;
    f.write_all_at(&[1u8; 4096], 16 << 20)?;
    f.sync_all()?;
    let st = rustix::fs::fstat(&f)?;
    let sparse = (st.st_blocks as u64) * 512 < 16 << 20;
    let map = sparsekit_extents::map(&f)?;
    let (method, degraded) = (map.method(), map.degraded());
    let extents: Vec<Extent> = map.collect::<Result<_, _>>()?;
    let holes = extents.iter().any(|e| e.kind == ExtentKind::Hole);
    ensure!(
        !sparse || holes,
        "st_blocks shows a sparse file but Auto ({method}) found no hole"
    );
    let seek_holes = collect(&f, MapOptions::new().method(Method::Seek))?
        .iter()
        .any(|e| e.kind == ExtentKind::Hole);
    if seek_holes {
        ensure!(
            method == Method::Seek,
            "SEEK_HOLE works but Auto chose {method}"
        );
        ensure!(degraded.is_none(), "SEEK_HOLE works but reported degraded");
    } else if sparse {
        ensure!(
            degraded.is_some(),
            "SEEK_HOLE misses holes but no degradation reported"
        );
    }
    Ok(Verdict::Pass)
}

/// Preallocated ranges: FIEMAP says unwritten, SEEK_DATA says hole; dirty
/// pages over them are data to both.
fn unwritten(ctx: &Ctx<'_>) -> ScenarioResult {
    use rustix::fs::{FallocateFlags, fallocate};
    let f = ctx.create("prealloc")?;
    f.set_len(4 << 20)?;
    match fallocate(&f, FallocateFlags::KEEP_SIZE, 1 << 20, 1 << 20) {
        Err(e @ (Errno::OPNOTSUPP | Errno::NOSYS)) => skip!("fallocate: {}", ErrnoName(e)),
        r => r.context("fallocate")?,
    }
    let seek = collect(&f, MapOptions::new().method(Method::Seek))?;
    let seek_data: u64 = seek
        .iter()
        .filter(|e| e.kind == ExtentKind::Data)
        .map(|e| e.length)
        .sum();
    match collect(&f, MapOptions::new().method(Method::Fiemap)) {
        Err(MapError::Unsupported { .. }) => {
            // Without FIEMAP there is no unwritten kind; SEEK_DATA must not
            // call preallocation data where it keeps holes (tmpfs does: its
            // fallocated pages are data).
        }
        r => {
            let fiemap = r?;
            let unwritten: u64 = fiemap
                .iter()
                .filter(|e| e.kind == ExtentKind::Unwritten)
                .map(|e| e.length)
                .sum();
            ensure!(
                unwritten == 1 << 20,
                "FIEMAP shows {unwritten} unwritten bytes, expected 1 MiB: {fiemap:?}"
            );
            ensure!(
                seek_data == 0,
                "SEEK_DATA reports {seek_data} bytes of clean preallocation as data"
            );
        }
    }
    f.write_all_at(&[9u8; 4096], (1 << 20) + 8192)?;
    for m in [Method::Seek, Method::Fiemap] {
        match collect(&f, MapOptions::new().method(m)) {
            Err(MapError::Unsupported { .. }) => continue,
            r => {
                let v = r?;
                let dirty = (1 << 20) + 8192;
                ensure!(
                    v.iter()
                        .any(|e| e.kind == ExtentKind::Data && e.range().contains(&dirty)),
                    "{m}: dirty page over preallocation not reported as data: {v:?}"
                );
            }
        }
    }
    Ok(Verdict::Pass)
}

/// A reflinked copy's extents carry FIEMAP_EXTENT_SHARED.
fn reflink_shared(ctx: &Ctx<'_>) -> ScenarioResult {
    let src = ctx.create("src")?;
    src.write_all_at(&[5u8; 1 << 20], 0)?;
    src.sync_all()?;
    let dst = ctx.create("dst")?;
    match rustix::fs::ioctl_ficlone(&dst, &src) {
        Err(e @ (Errno::OPNOTSUPP | Errno::XDEV | Errno::INVAL | Errno::NOTTY)) => {
            skip!("FICLONE: {}", ErrnoName(e))
        }
        r => r.context("FICLONE")?,
    }
    let v = match collect(&dst, MapOptions::new().method(Method::Fiemap)) {
        Err(MapError::Unsupported { errno, .. }) => skip!("FIEMAP: {}", ErrnoName(errno)),
        r => r?,
    };
    let data: Vec<_> = v.iter().filter(|e| e.kind == ExtentKind::Data).collect();
    ensure!(!data.is_empty(), "clone has no data extents");
    ensure!(
        data.iter().all(|e| e.is_shared()),
        "clone's extents not marked shared: {v:?}"
    );
    Ok(Verdict::Pass)
}

/// More extents than one FIEMAP batch: SEEK and FIEMAP agree throughout.
fn fiemap_batches(ctx: &Ctx<'_>) -> ScenarioResult {
    let block = block_size(ctx)?;
    let f = ctx.create("fragmented")?;
    for i in 0..3000u64 {
        f.write_all_at(&[1], i * 2 * block)?;
    }
    f.set_len(6000 * block)?;
    f.sync_all()?;
    let fiemap = match collect(&f, MapOptions::new().method(Method::Fiemap)) {
        Err(MapError::Unsupported { errno, .. }) => skip!("FIEMAP: {}", ErrnoName(errno)),
        r => r?,
    };
    let seek = collect(&f, MapOptions::new().method(Method::Seek))?;
    let data = |v: &[Extent]| -> Vec<(u64, u64)> {
        // Compare merged data ranges: FIEMAP may split where SEEK does not.
        let mut out: Vec<(u64, u64)> = Vec::new();
        for e in v.iter().filter(|e| e.kind == ExtentKind::Data) {
            match out.last_mut() {
                Some(last) if last.1 == e.offset => last.1 = e.end(),
                _ => out.push((e.offset, e.end())),
            }
        }
        out
    };
    let (a, b) = (data(&seek), data(&fiemap));
    require!(
        a.len() > 1,
        "SEEK_HOLE finds no holes here (a degraded filesystem)"
    );
    ensure!(
        a == b,
        "SEEK and FIEMAP disagree: {} vs {} data ranges",
        a.len(),
        b.len()
    );
    ensure!(
        a.len() == 3000,
        "expected 3000 data ranges, got {}",
        a.len()
    );
    Ok(Verdict::Pass)
}

/// Data only in the page cache (not yet written back) is data to every
/// method with the default options. Without writeback first, SEEK_DATA on
/// block-mapped ext4 files misses it (Linux 6.18): the map must not.
fn dirty_data_found(ctx: &Ctx<'_>) -> ScenarioResult {
    for m in [Method::Auto, Method::Seek, Method::Fiemap, Method::Scan] {
        let name = format!("dirty-{m}");
        let f = ctx.create(&name)?;
        f.write_all_at(&[3u8; 4096], 1 << 20)?;
        f.write_all_at(&[4u8; 100], (64 << 20) + 4096)?;
        let v = match collect(&f, MapOptions::new().method(m)) {
            Err(MapError::Unsupported { .. }) => continue,
            r => r?,
        };
        for at in [1 << 20, (64 << 20) + 4096] {
            ensure!(
                v.iter()
                    .any(|e| e.kind == ExtentKind::Data && e.range().contains(&at)),
                "{m}: dirty data at {at} not in a data extent: {v:?}"
            );
        }
    }
    Ok(Verdict::Pass)
}

/// Data past 2^32 and 2^40 bytes is found where the filesystem allows such sizes.
fn large_offsets(ctx: &Ctx<'_>) -> ScenarioResult {
    let f = ctx.create("large")?;
    let offsets = [(1u64 << 32) + 4096, (1u64 << 40) + 8192];
    for at in offsets {
        match f.write_all_at(b"x", at) {
            Err(e) if e.raw_os_error() == Some(Errno::FBIG.raw_os_error()) => {
                skip!("a file past {at} bytes: EFBIG")
            }
            r => r?,
        }
    }
    for m in [Method::Seek, Method::Fiemap] {
        let v = match collect(&f, MapOptions::new().method(m)) {
            Err(MapError::Unsupported { .. }) => continue,
            r => r?,
        };
        let found: Vec<bool> = offsets
            .iter()
            .map(|&at| {
                v.iter()
                    .any(|e| e.kind == ExtentKind::Data && e.range().contains(&at))
            })
            .collect();
        ensure!(
            found == [true, true],
            "{m}: data at {offsets:?} found: {found:?}"
        );
        ensure!(
            v.last().map(|e| e.end()) == Some(offsets[1] + 1),
            "{m}: wrong end"
        );
    }
    Ok(Verdict::Pass)
}

/// Truncating a file mid-map ends the map without error or endless loop,
/// and the map says the size changed.
fn shrink_while_mapping(ctx: &Ctx<'_>) -> ScenarioResult {
    let f = ctx.create("shrinking")?;
    // Bytes two scan blocks apart (`st_blksize`: 1 MiB on NFS), so Scan
    // too sees many extents and is mid-way when the file shrinks.
    let step = 2 * f.metadata()?.blksize().max(65536);
    for m in [Method::Seek, Method::Fiemap, Method::Scan] {
        f.set_len(0)?;
        for i in 0..16u64 {
            f.write_all_at(b"d", i * step)?;
        }
        let mut map = match MapOptions::new().method(m).map(&f) {
            Err(MapError::Unsupported { .. }) => continue,
            r => r?,
        };
        let first = map.next().context("no first extent")??;
        if first.end() >= 15 * step {
            // One extent for the whole file (NFSv3's generic SEEK_HOLE):
            // nothing is left to map when the size changes.
            continue;
        }
        f.set_len(100_000)?;
        let rest = map.by_ref().take(10_000).collect::<Result<Vec<_>, _>>()?;
        ensure!(rest.len() < 10_000, "{m}: map did not end");
        ensure!(
            map.size_changed() == Some(100_000),
            "{m}: size change not reported"
        );
    }
    Ok(Verdict::Pass)
}
