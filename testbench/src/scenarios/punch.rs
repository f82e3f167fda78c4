//! sparsekit-punch on a real filesystem: the model-based test with each
//! strategy set forced, each strategy of each operation forced on its own
//! and checked for content and allocation, dig with each extent method, and
//! dig's page-cache promise checked with cachestat (or mincore). A strategy the
//! filesystem lacks is a skip naming the errno, never a pass.

use crate::scenario::{Ctx, Scenario, ScenarioResult, Verdict};
use crate::{require, skip};
use anyhow::ensure;
use sparsekit_extents::{ExtentKind, MapOptions, Method};
use sparsekit_punch::model::{self, Config};
use sparsekit_punch::{
    DigOptions, PunchError, PunchStrategy, Report, ShiftStrategy, ZeroStrategy, collapse_range,
    dig_holes, insert_range, punch_hole, zero_range,
};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};

/// Generates one scenario function per forced strategy.
macro_rules! forced {
    ($($name:ident => $body:expr;)+) => {
        $( fn $name(ctx: &Ctx<'_>) -> ScenarioResult { $body(ctx) } )+
    };
}

/// The scenarios of this module.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "punch/model_auto",
            run: model_auto,
        },
        Scenario {
            name: "punch/model_native",
            run: model_native,
        },
        Scenario {
            name: "punch/model_move_data_write_zeros",
            run: model_fallbacks,
        },
        Scenario {
            name: "punch/model_zero_range_punch_and_allocate",
            run: model_middle,
        },
        Scenario {
            name: "punch/auto_agrees_with_observed_support",
            run: auto_agrees,
        },
        Scenario {
            name: "punch/punch_hole",
            run: punch_punch_hole,
        },
        Scenario {
            name: "punch/punch_zero_range",
            run: punch_zero_range,
        },
        Scenario {
            name: "punch/punch_write_zeros",
            run: punch_write_zeros,
        },
        Scenario {
            name: "punch/zero_zero_range",
            run: zero_zero_range,
        },
        Scenario {
            name: "punch/zero_punch_and_allocate",
            run: zero_punch_and_allocate,
        },
        Scenario {
            name: "punch/zero_write_zeros",
            run: zero_write_zeros,
        },
        Scenario {
            name: "punch/collapse_native",
            run: collapse_native,
        },
        Scenario {
            name: "punch/collapse_move_data",
            run: collapse_move_data,
        },
        Scenario {
            name: "punch/insert_native",
            run: insert_native,
        },
        Scenario {
            name: "punch/insert_move_data",
            run: insert_move_data,
        },
        Scenario {
            name: "punch/dig_seek",
            run: dig_seek,
        },
        Scenario {
            name: "punch/dig_fiemap",
            run: dig_fiemap,
        },
        Scenario {
            name: "punch/dig_all_data",
            run: dig_all_data,
        },
        Scenario {
            name: "punch/dig_drops_the_cache",
            run: dig_drops_cache,
        },
    ]
}

fn seed() -> Option<u64> {
    std::env::var("SPARSEKIT_BENCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
}

/// Runs the model with `config` (fewer cases than `cargo test`: the bench
/// runs it on every filesystem).
fn run_model(ctx: &Ctx<'_>, config: Config) -> ScenarioResult {
    let config = Config {
        cases: 24,
        seed: seed(),
        ..config
    };
    match model::run(ctx.dir(), &config) {
        Ok(model::Verdict::Passed { ops, used, .. }) => {
            ensure!(ops > 0, "no operation ran");
            println!("    {}: {ops} ops, used {}", ctx.fs_name(), join(&used));
            Ok(Verdict::Pass)
        }
        Ok(model::Verdict::Unsupported {
            op,
            strategy,
            errno,
        }) => {
            skip!("{op}: {strategy}: {}", sparsekit_sys::ErrnoName(errno))
        }
        Err(e) => Err(anyhow::anyhow!("{e}")),
    }
}

fn join(set: &std::collections::BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}

fn model_auto(ctx: &Ctx<'_>) -> ScenarioResult {
    run_model(ctx, Config::default())
}

fn model_native(ctx: &Ctx<'_>) -> ScenarioResult {
    run_model(
        ctx,
        Config::forced(
            PunchStrategy::PunchHole,
            ZeroStrategy::ZeroRange,
            ShiftStrategy::Native,
        ),
    )
}

fn model_fallbacks(ctx: &Ctx<'_>) -> ScenarioResult {
    run_model(
        ctx,
        Config::forced(
            PunchStrategy::WriteZeros,
            ZeroStrategy::WriteZeros,
            ShiftStrategy::MoveData,
        ),
    )
}

fn model_middle(ctx: &Ctx<'_>) -> ScenarioResult {
    run_model(
        ctx,
        Config::forced(
            PunchStrategy::ZeroRange,
            ZeroStrategy::PunchAndAllocate,
            ShiftStrategy::MoveData,
        ),
    )
}

/// The filesystem block size the library uses.
fn block(ctx: &Ctx<'_>) -> anyhow::Result<u64> {
    Ok(rustix::fs::statvfs(ctx.dir())?.f_bsize.max(512))
}

/// Non-zero bytes, different per offset.
fn pattern(range: Range<u64>) -> Vec<u8> {
    range.map(|i| ((i / 5) as u8).wrapping_mul(7) | 1).collect()
}

fn write_pattern(f: &File, range: Range<u64>) -> anyhow::Result<()> {
    f.write_all_at(&pattern(range.clone()), range.start)?;
    Ok(())
}

fn contents(f: &File) -> anyhow::Result<Vec<u8>> {
    let mut buf = vec![0; f.metadata()?.len() as usize];
    f.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

fn allocated(f: &File) -> anyhow::Result<u64> {
    Ok(f.metadata()?.blocks() * 512)
}

/// Whether SEEK_DATA/SEEK_HOLE shows `range` inside a hole.
fn is_hole(f: &File, range: Range<u64>) -> anyhow::Result<bool> {
    for e in MapOptions::new().method(Method::Seek).map(f)? {
        let e = e?;
        if e.kind != ExtentKind::Data && e.offset <= range.start && range.end <= e.end() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The extents overlapping `range` (for failure messages).
fn map_around(f: &File, range: Range<u64>) -> anyhow::Result<Vec<(ExtentKind, Range<u64>)>> {
    let mut v = Vec::new();
    for e in MapOptions::new().method(Method::Seek).map(f)? {
        let e = e?;
        if e.offset < range.end && range.start < e.end() {
            v.push((e.kind, e.range()));
        }
    }
    Ok(v)
}

/// Whether this filesystem's SEEK_HOLE reports a hole in the middle of a
/// file at all (observed): hole checks are made only where it does.
fn seek_finds_holes(ctx: &Ctx<'_>) -> anyhow::Result<bool> {
    let f = ctx.create("seek-probe")?;
    f.write_all_at(b"a", 0)?;
    f.write_all_at(b"b", 8 << 20)?;
    f.sync_all()?;
    let found = is_hole(&f, (1 << 20)..(2 << 20))?;
    std::fs::remove_file(ctx.path("seek-probe"))?;
    Ok(found)
}

/// Skips for an unsupported forced strategy, passes other results through.
fn supported<T>(r: Result<T, PunchError>) -> anyhow::Result<Result<T, String>> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(PunchError::Unsupported {
            strategy, errno, ..
        }) => Ok(Err(format!(
            "{strategy}: {}",
            sparsekit_sys::ErrnoName(errno)
        ))),
        Err(e) => Err(anyhow::anyhow!("{e}")),
    }
}

fn check_forced<S: sparsekit_punch::Strategy>(r: &Report<S>, forced: S) -> anyhow::Result<()> {
    ensure!(
        r.strategy == forced,
        "forced {forced}, report says {}",
        r.strategy
    );
    ensure!(
        r.fallbacks.is_empty(),
        "a forced strategy took fallbacks: {:?}",
        r.fallbacks
    );
    Ok(())
}

fn punch_forced(ctx: &Ctx<'_>, strategy: PunchStrategy) -> ScenarioResult {
    let b = block(ctx)?;
    let f = ctx.create("punch")?;
    write_pattern(&f, 0..64 * b)?;
    f.sync_all()?;
    let old = contents(&f)?;
    let before = allocated(&f)?;
    let (offset, length) = (b + 100, 8 * b);
    let r = match supported(punch_hole(&f, offset, length, strategy))? {
        Ok(r) => r,
        Err(why) => skip!("{why}"),
    };
    check_forced(&r, strategy)?;
    let now = contents(&f)?;
    let (a, z) = (offset as usize, (offset + length) as usize);
    ensure!(now.len() == old.len(), "the size changed");
    ensure!(
        now[a..z].iter().all(|&x| x == 0),
        "the range does not read as zeros"
    );
    ensure!(
        now[..a] == old[..a] && now[z..] == old[z..],
        "bytes outside the range changed"
    );
    match strategy {
        PunchStrategy::PunchHole => {
            let whole = r.whole_blocks();
            ensure!(whole == (2 * b..9 * b), "whole blocks {whole:?}");
            ensure!(
                r.freed() >= whole.end - whole.start,
                "freed {} of {} whole-block bytes",
                r.freed(),
                whole.end - whole.start
            );
            if seek_finds_holes(ctx)? {
                ensure!(is_hole(&f, whole.clone())?, "{whole:?} is not a hole");
            }
        }
        PunchStrategy::ZeroRange | PunchStrategy::WriteZeros => {
            ensure!(
                allocated(&f)? + b >= before,
                "{strategy} freed space: {before} -> {}",
                allocated(&f)?
            );
            if strategy == PunchStrategy::WriteZeros {
                ensure!(
                    r.bytes_written == length,
                    "wrote {} of {length}",
                    r.bytes_written
                );
            }
        }
        _ => {}
    }
    Ok(Verdict::Pass)
}

fn zero_forced(ctx: &Ctx<'_>, strategy: ZeroStrategy) -> ScenarioResult {
    let b = block(ctx)?;
    let f = ctx.create("zero")?;
    // Data, then a hole, then data: the zeroed range covers data and hole.
    write_pattern(&f, 0..16 * b)?;
    write_pattern(&f, 48 * b..64 * b)?;
    f.sync_all()?;
    let old = contents(&f)?;
    let (offset, length) = (8 * b + 10, 32 * b);
    let r = match supported(zero_range(&f, offset, length, strategy))? {
        Ok(r) => r,
        Err(why) => skip!("{why}"),
    };
    check_forced(&r, strategy)?;
    let now = contents(&f)?;
    let (a, z) = (offset as usize, (offset + length) as usize);
    ensure!(
        now[a..z].iter().all(|&x| x == 0),
        "the range does not read as zeros"
    );
    ensure!(
        now[..a] == old[..a] && now[z..] == old[z..],
        "bytes outside the range changed"
    );
    // Kept allocated: the data blocks before, plus the whole range.
    let want = 32 * b + 16 * b;
    ensure!(
        r.allocated_after >= want,
        "{strategy}: {} bytes allocated, want at least {want} (data + zeroed range)",
        r.allocated_after
    );
    ensure!(r.size_after == 64 * b, "the size changed");
    Ok(Verdict::Pass)
}

/// Data, a hole, data up to an unaligned end.
fn layered(ctx: &Ctx<'_>, b: u64) -> anyhow::Result<(File, Vec<u8>)> {
    let f = ctx.create("shift")?;
    write_pattern(&f, 0..96 * b)?;
    write_pattern(&f, 160 * b..300 * b - 77)?;
    f.sync_all()?;
    let old = contents(&f)?;
    Ok((f, old))
}

fn shift_forced(ctx: &Ctx<'_>, strategy: ShiftStrategy, collapse: bool) -> ScenarioResult {
    let b = block(ctx)?;
    let (f, old) = layered(ctx, b)?;
    let before = allocated(&f)?;
    // Whether the hole is a hole to begin with: an NFS server's xfs may
    // report its speculative preallocation there as data.
    let had_hole = seek_finds_holes(ctx)? && is_hole(&f, 96 * b..160 * b)?;
    let (offset, length) = (8 * b, 24 * b);
    let r = if collapse {
        collapse_range(&f, offset, length, strategy)
    } else {
        insert_range(&f, offset, length, strategy)
    };
    let r = match supported(r)? {
        Ok(r) => r,
        Err(why) => skip!("{why}"),
    };
    check_forced(&r, strategy)?;
    let mut want = old.clone();
    let (a, n) = (offset as usize, length as usize);
    if collapse {
        want.drain(a..a + n);
    } else {
        want.splice(a..a, std::iter::repeat_n(0, n));
    }
    ensure!(
        contents(&f)? == want,
        "content differs from the expected shift"
    );
    if had_hole {
        let hole = if collapse {
            96 * b - length..160 * b - length
        } else {
            96 * b + length..160 * b + length
        };
        ensure!(
            is_hole(&f, hole.clone())?,
            "the hole did not move to {hole:?}; the map there: {:?}",
            map_around(&f, hole.clone())?
        );
        if !collapse {
            ensure!(
                is_hole(&f, offset..offset + length)?,
                "the inserted range is not a hole"
            );
        }
    }
    // Holes were not filled: at most one extra block (metadata) allocated.
    let mut after = allocated(&f)?;
    if after > before + b {
        // xfs preallocates past EOF for the extending writes of a moved
        // insert: free that first. Where the client cannot (NFSv3, the
        // server's xfs), the excess says nothing of the shift: no verdict.
        if let Err(e) = model::trim_past_eof(&f, b) {
            println!(
                "    {}: allocation grew from {before} to {after}, and blocks past EOF cannot be freed here ({e}): not judged",
                ctx.fs_name()
            );
            return Ok(Verdict::Pass);
        }
        after = allocated(&f)?;
    }
    ensure!(
        after <= before + b,
        "allocation grew from {before} to {after}"
    );
    Ok(Verdict::Pass)
}

forced! {
    punch_punch_hole => |c| punch_forced(c, PunchStrategy::PunchHole);
    punch_zero_range => |c| punch_forced(c, PunchStrategy::ZeroRange);
    punch_write_zeros => |c| punch_forced(c, PunchStrategy::WriteZeros);
    zero_zero_range => |c| zero_forced(c, ZeroStrategy::ZeroRange);
    zero_punch_and_allocate => |c| zero_forced(c, ZeroStrategy::PunchAndAllocate);
    zero_write_zeros => |c| zero_forced(c, ZeroStrategy::WriteZeros);
    collapse_native => |c| shift_forced(c, ShiftStrategy::Native, true);
    collapse_move_data => |c| shift_forced(c, ShiftStrategy::MoveData, true);
    insert_native => |c| shift_forced(c, ShiftStrategy::Native, false);
    insert_move_data => |c| shift_forced(c, ShiftStrategy::MoveData, false);
    dig_seek => |c| dig_forced(c, Method::Seek);
    dig_fiemap => |c| dig_forced(c, Method::Fiemap);
    dig_all_data => |c| dig_forced(c, Method::AllData);
}

/// `Auto` uses the native strategy exactly where forcing it works, and
/// names the errno where it does not.
fn auto_agrees(ctx: &Ctx<'_>) -> ScenarioResult {
    let b = block(ctx)?;
    let mut notes = Vec::new();
    // zero_range: ZERO_RANGE.
    let probe = ctx.create("probe-zero")?;
    write_pattern(&probe, 0..8 * b)?;
    let native = zero_range(&probe, b, b, ZeroStrategy::ZeroRange);
    let auto =
        zero_range(&probe, 2 * b, b, ZeroStrategy::Auto).map_err(|e| anyhow::anyhow!("{e}"))?;
    match native {
        Ok(_) => ensure!(
            auto.strategy == ZeroStrategy::ZeroRange,
            "auto zero used {}",
            auto.strategy
        ),
        Err(PunchError::Unsupported { errno, .. }) => {
            ensure!(
                auto.fallbacks.first().map(|f| f.errno) == Some(errno),
                "auto zero fallbacks {:?}",
                auto.fallbacks
            );
            notes.push(format!("zero: {}", auto.strategy));
        }
        Err(e) => return Err(anyhow::anyhow!("{e}")),
    }
    // collapse: COLLAPSE_RANGE.
    let probe = ctx.create("probe-collapse")?;
    write_pattern(&probe, 0..8 * b)?;
    let native = collapse_range(&probe, b, b, ShiftStrategy::Native);
    let auto =
        collapse_range(&probe, b, b, ShiftStrategy::Auto).map_err(|e| anyhow::anyhow!("{e}"))?;
    match native {
        Ok(_) => ensure!(
            auto.strategy == ShiftStrategy::Native,
            "auto collapse used {}",
            auto.strategy
        ),
        Err(PunchError::Unsupported { errno, .. }) => {
            ensure!(
                auto.strategy == ShiftStrategy::MoveData,
                "auto collapse used {}",
                auto.strategy
            );
            ensure!(
                auto.fallbacks.first().map(|f| f.errno) == Some(errno),
                "auto collapse fallbacks {:?}",
                auto.fallbacks
            );
            notes.push("collapse: move_data".to_owned());
        }
        Err(e) => return Err(anyhow::anyhow!("{e}")),
    }
    if !notes.is_empty() {
        println!(
            "    {}: auto fell back for {}",
            ctx.fs_name(),
            notes.join(", ")
        );
    }
    Ok(Verdict::Pass)
}

/// A file with explicit zero runs: 256 blocks of data, zeros at 32..96,
/// at 150 (one block) and over the last 3 blocks and the short tail.
fn with_zeros(ctx: &Ctx<'_>, b: u64) -> anyhow::Result<(File, u64, u64)> {
    let f = ctx.create("dig")?;
    let size = 256 * b + 300;
    write_pattern(&f, 0..size)?;
    f.write_all_at(&vec![0; 64 * b as usize], 32 * b)?;
    f.write_all_at(&vec![0; b as usize], 150 * b)?;
    f.write_all_at(&vec![0; (3 * b + 300) as usize], 253 * b)?;
    f.sync_all()?;
    Ok((f, size, 64 * b + b + 3 * b + 300))
}

fn dig_forced(ctx: &Ctx<'_>, method: Method) -> ScenarioResult {
    let b = block(ctx)?;
    let (f, size, zeros) = with_zeros(ctx, b)?;
    let old = contents(&f)?;
    let dug = match dig_holes(&f, &DigOptions::new().method(method)) {
        Ok(d) => d,
        Err(PunchError::Map { source, .. }) if source.errno().is_some() => {
            skip!("{method}: {source}")
        }
        Err(PunchError::Unsupported { errno, .. }) => {
            skip!("punch_hole: {}", sparsekit_sys::ErrnoName(errno))
        }
        Err(e) => return Err(anyhow::anyhow!("{e}")),
    };
    ensure!(dug.method == method, "dug with {}", dug.method);
    ensure!(contents(&f)? == old, "dig changed the content");
    ensure!(
        dug.zero_bytes == zeros,
        "found {} zero bytes, want {zeros}",
        dug.zero_bytes
    );
    ensure!(dug.holes_punched == 3, "{} holes", dug.holes_punched);
    ensure!(
        dug.bytes_scanned >= size,
        "scanned {} of {size}",
        dug.bytes_scanned
    );
    ensure!(
        dug.bytes_deallocated() >= 64 * b + b + 3 * b,
        "deallocated {} bytes",
        dug.bytes_deallocated()
    );
    if seek_finds_holes(ctx)? {
        ensure!(is_hole(&f, 32 * b..96 * b)?, "the zero run is not a hole");
        ensure!(
            is_hole(&f, 150 * b..151 * b)?,
            "the zero block is not a hole"
        );
    }
    Ok(Verdict::Pass)
}

/// Pages of `f` in the page cache (cachestat, or mincore before Linux 6.5).
fn cached_pages(f: &File) -> anyhow::Result<u64> {
    let page = sparsekit_sys::pagecache::page_size() as u64;
    Ok(crate::bench::dig::resident_bytes(f)? / page)
}

fn dig_drops_cache(ctx: &Ctx<'_>) -> ScenarioResult {
    let f = ctx.create("cache")?;
    let mb = 1u64 << 20;
    // 64 MiB: 48 of data in 1 MiB pieces with explicit zeros, 16 of holes.
    for i in 0..64 {
        if i % 4 == 3 {
            continue;
        }
        let piece = if i % 5 == 0 {
            vec![0u8; mb as usize]
        } else {
            pattern(i * mb..(i + 1) * mb)
        };
        f.write_all_at(&piece, i * mb)?;
    }
    f.sync_all()?;
    let len = f.metadata()?.len();
    // Start cold; observe whether this filesystem can drop pages at all.
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed)?;
    let cold = cached_pages(&f)?;
    require!(
        cold == 0,
        "POSIX_FADV_DONTNEED leaves {cold} pages here: the pages are the storage"
    );
    let dug = match dig_holes(&f, &DigOptions::new()) {
        // NFSv3: no way to make a hole, so dig refuses before reading.
        Err(e @ PunchError::Unsupported { .. }) => skip!("dig: {e}"),
        r => r.map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    ensure!(
        dug.bytes_scanned >= 48 * mb,
        "scanned {}",
        dug.bytes_scanned
    );
    let left = cached_pages(&f)?;
    let page = sparsekit_sys::pagecache::page_size() as u64;
    println!(
        "    {}: dig read {} MiB, {left} pages ({} KiB) left in the cache",
        ctx.fs_name(),
        dug.bytes_scanned >> 20,
        (left * page) >> 10
    );
    ensure!(left * page <= len / 1000, "dig left {left} pages cached");
    Ok(Verdict::Pass)
}
