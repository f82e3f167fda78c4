//! Issue 11's copy cases on every filesystem: files of the largest size
//! (`i64::MAX` bytes) with data only at the very end or only at offset 0
//! (every byte arrives, in seconds, and an interrupt stops the copy), and
//! `--snapshot` of a file written during the copy.

use super::support::*;
use crate::scenario::{Ctx, ScenarioResult, Verdict};
use crate::skip;
use anyhow::{Context, bail, ensure};
use rustix::io::Errno;
use sparsekit_copy::{
    CachePolicy, CopyError, CopyOptions, DataStrategy, Interrupt, ReflinkMode, SparseMode,
};
use sparsekit_extents::{ExtentKind, MapError, MapOptions, Method};
use sparsekit_sys::ErrnoName;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// The largest file size Linux allows (`MAX_LFS_FILESIZE`).
const HUGE: u64 = i64::MAX as u64;

/// A file of [`HUGE`] bytes holding `data`; `Err(errno)` where the
/// filesystem refuses the size (ext4: EFBIG).
fn huge(path: &Path, data: &[(u64, &[u8])]) -> anyhow::Result<Result<(), Errno>> {
    let f = File::create(path)?;
    if let Err(e) = f.set_len(HUGE) {
        return Ok(Err(Errno::from_io_error(&e).context("set_len")?));
    }
    for &(off, bytes) in data {
        f.write_all_at(bytes, off)?;
    }
    Ok(Ok(()))
}

fn read_at(path: &Path, off: u64, len: usize) -> anyhow::Result<Vec<u8>> {
    let mut buf = vec![0xee; len];
    File::open(path)?.read_exact_at(&mut buf, off)?;
    Ok(buf)
}

fn largest(ctx: &Ctx<'_>, data: &[(u64, &[u8])]) -> ScenarioResult {
    let src = ctx.path("huge.img");
    if let Err(errno) = huge(&src, data)? {
        skip!("a file of {HUGE} bytes: {}", ErrnoName(errno));
    }
    let f = File::open(&src)?;
    // Where neither SEEK_HOLE nor FIEMAP sees the holes (NFSv3's generic
    // SEEK_HOLE calls the whole file data, and there is no FIEMAP), finding
    // them means reading 8 EiB: nothing can copy such a file there.
    let seek = MapOptions::new().method(Method::Seek).map(&f)?;
    let seek_data: u64 = seek
        .filter_map(Result::ok)
        .filter(|e| e.kind == ExtentKind::Data)
        .map(|e| e.length)
        .sum();
    let fiemap = MapOptions::new().method(Method::Fiemap).map(&f);
    if seek_data > 1 << 40 && matches!(fiemap, Err(MapError::Unsupported { .. })) {
        skip!(
            "SEEK_HOLE reports {seek_data} bytes of data and there is no FIEMAP: the holes of a {HUGE}-byte file cannot be found here without reading it"
        );
    }
    drop(fiemap);
    // The map sees every byte, with each method that works here (FIEMAP's
    // offset arithmetic near 2^63 included).
    for method in [Method::Auto, Method::Seek, Method::Fiemap] {
        let map = match MapOptions::new().method(method).map(&f) {
            Err(MapError::Unsupported { .. }) => continue,
            r => r?,
        };
        let map: Vec<_> = map.collect::<Result<_, _>>()?;
        ensure!(
            map.last().map(|e| e.end()) == Some(HUGE),
            "{method}: {map:?}"
        );
        for &(off, bytes) in data {
            let end = off + bytes.len() as u64;
            ensure!(
                map.iter()
                    .any(|e| e.kind == ExtentKind::Data && e.offset <= off && e.end() >= end),
                "{method} misses the data at {off}: {map:?}"
            );
        }
    }
    let variants = [
        ("auto", CopyOptions::new()),
        ("read_write", CopyOptions::new().reflink(ReflinkMode::Never)),
        (
            "read_write drop",
            CopyOptions::new()
                .reflink(ReflinkMode::Never)
                .cache(CachePolicy::Drop),
        ),
        (
            "copy_file_range",
            CopyOptions::new()
                .data_strategy(DataStrategy::CopyFileRange)
                .cache(CachePolicy::Drop),
        ),
    ];
    for (name, opts) in variants {
        let dst = ctx.path("huge-copy.img");
        let started = Instant::now();
        let report = match opts.copy(&src, &dst) {
            Err(e) if unsupported_errno(&e).is_some() && name == "copy_file_range" => continue,
            r => r.with_context(|| name.to_owned())?,
        };
        let took = started.elapsed();
        ensure!(took < Duration::from_secs(30), "{name}: took {took:?}");
        ensure!(std::fs::metadata(&dst)?.len() == HUGE, "{name}: size");
        for &(off, bytes) in data {
            ensure!(
                read_at(&dst, off, bytes.len())? == bytes,
                "{name}: bytes at {off}"
            );
        }
        ensure!(
            std::fs::metadata(&dst)?.blocks() * 512 <= 64 << 20,
            "{name}: holes filled ({report:?})"
        );
        std::fs::remove_file(&dst)?;
    }
    // Writing 2^63 bytes of zeros cannot finish: the interrupt must stop it.
    let stop = Interrupt::new();
    let trigger = stop.clone();
    let timer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        trigger.trigger();
    });
    let dst = ctx.path("huge-zeros.img");
    let started = Instant::now();
    let r = CopyOptions::new()
        .reflink(ReflinkMode::Never)
        .sparse(SparseMode::Never)
        .interrupt(stop)
        .copy(&src, &dst);
    let _ = timer.join();
    match r {
        Err(CopyError::Interrupted { .. }) => {}
        // A small filesystem may fill up first; that, too, must end cleanly.
        Err(e) if e.errno() == Some(Errno::NOSPC) => {}
        other => bail!("sparse never of the largest file: {other:?}"),
    }
    ensure!(
        started.elapsed() < Duration::from_secs(30),
        "not interruptible"
    );
    ensure!(!dst.exists(), "an interrupted copy left {}", dst.display());
    Ok(Verdict::Pass)
}

/// 4 bytes at the very end of a file of the largest size: tmpfs's
/// SEEK_DATA misses them (issue 11).
pub(super) fn largest_file_data_at_end(ctx: &Ctx<'_>) -> ScenarioResult {
    largest(ctx, &[(HUGE - 4, b"tail")])
}

/// Data only at offset 0 of a file of the largest size.
pub(super) fn largest_file_data_at_start(ctx: &Ctx<'_>) -> ScenarioResult {
    largest(ctx, &[(0, &[0x5a; 4096])])
}

/// `--snapshot` where FICLONE works: a writer changes the source after the
/// snapshot (from the first progress report, so the order is certain);
/// the copy succeeds and equals the source as it was. Without
/// `--snapshot` the same writer makes the copy fail ("source changed").
/// Where FICLONE fails: a refusal naming its errno, nothing created.
pub(super) fn snapshot_of_a_live_file(ctx: &Ctx<'_>) -> ScenarioResult {
    let src = ctx.path("live.img");
    make_file(&src, &standard_layout())?;
    let before = std::fs::read(&src)?;
    let dst = ctx.path("copy.img");
    let writer = |src: std::path::PathBuf| {
        let writes = std::sync::atomic::AtomicU32::new(0);
        move |_: &sparsekit_copy::Progress| {
            if writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                let f = std::fs::OpenOptions::new().write(true).open(&src).unwrap();
                f.write_all_at(&[0xa5; 65536], 0).unwrap();
                f.write_all_at(b"appended", f.metadata().unwrap().len())
                    .unwrap();
            }
        }
    };
    let opts = || {
        CopyOptions::new()
            .reflink(ReflinkMode::Never)
            .buffer_size(256 << 10)
            .progress(writer(src.clone()))
    };
    match opts().snapshot(true).copy(&src, &dst) {
        Ok(report) => {
            ensure!(report.snapshot, "report: {report:?}");
            ensure!(
                std::fs::read(&dst)? == before,
                "the copy is not the snapshot"
            );
            ensure!(std::fs::read(&src)? != before, "the writer did not run");
        }
        Err(CopyError::SnapshotUnsupported { errno, .. }) => {
            ensure!(
                !dst.exists(),
                "a refused snapshot created {}",
                dst.display()
            );
            ensure!(
                std::fs::read(&src)? == before,
                "a refused snapshot changed the source"
            );
            let names: Vec<_> = std::fs::read_dir(ctx.dir())?.collect::<Result<_, _>>()?;
            ensure!(names.len() == 1, "left behind: {names:?}");
            skip!("FICLONE: {} (refused cleanly)", ErrnoName(errno));
        }
        Err(e) => bail!("copy --snapshot: {e}"),
    }
    let names: Vec<_> = std::fs::read_dir(ctx.dir())?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    ensure!(names.len() == 2, "left behind: {names:?}");
    // The same writer without a snapshot is caught.
    std::fs::remove_file(&dst)?;
    make_file(&src, &standard_layout())?;
    match opts().copy(&src, &dst) {
        Err(CopyError::SourceChanged { .. }) => {}
        other => bail!("without --snapshot a live source must fail: {other:?}"),
    }
    ensure!(!dst.exists(), "a failed copy left {}", dst.display());
    Ok(Verdict::Pass)
}
