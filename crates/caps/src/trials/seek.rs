//! `seek_data_hole`, `seek_unwritten_as_hole`, `seek_sees_dirty_data`,
//! `fiemap`: does the extent map show the holes that are there?

use super::{Ctx, refused};
use crate::classify::{Observation, Shortfall, Trial, classify, needs};
use crate::error::CapsError;
use crate::scratch::pattern;
use rustix::fs::{FallocateFlags, SeekFrom};
use rustix::io::Errno;
use sparsekit_extents::{Extent, ExtentKind, MapOptions, Method};
use std::ops::Range;

/// What a region of a trial file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    Data,
    Hole,
}

/// Checks an extent map against the layout the file was given: every
/// byte of a data region must be mapped as data, and a hole region must
/// be at least half hole (allocation granularity may eat its edges).
pub(crate) fn check_layout(
    extents: &[Extent],
    layout: &[(Range<u64>, Want)],
    method: &str,
) -> Vec<Shortfall> {
    let mut shortfalls = Vec::new();
    for (range, want) in layout {
        let mut data = 0;
        let mut hole = 0;
        for e in extents {
            let lo = e.offset.max(range.start);
            let hi = e.end().min(range.end);
            if lo < hi {
                match e.kind {
                    ExtentKind::Data => data += hi - lo,
                    ExtentKind::Hole | ExtentKind::Unwritten => hole += hi - lo,
                }
            }
        }
        let len = range.end - range.start;
        match want {
            Want::Data if data < len => shortfalls.push(Shortfall::new(format!(
                "{method} maps only {data} of the {len} data bytes at {} as data",
                range.start
            ))),
            Want::Hole if hole * 2 < len => shortfalls.push(Shortfall::new(format!(
                "{method} reports the hole {}..{} as data (generic: whole file is data)",
                range.start, range.end
            ))),
            _ => {}
        }
    }
    shortfalls
}

fn map_all(
    file: &impl rustix::fd::AsFd,
    options: MapOptions,
) -> Result<(Vec<Extent>, Option<String>), sparsekit_extents::MapError> {
    let map = options.map(file)?;
    let degraded = map.degraded().map(|d| d.to_string());
    let extents = map.collect::<Result<Vec<_>, _>>()?;
    Ok((extents, degraded))
}

pub(crate) fn run(ctx: &mut Ctx<'_>) -> Result<(), CapsError> {
    let u = ctx.unit;
    // data | hole | hole | data, written back.
    let f = ctx.file()?;
    f.write_at(&pattern(11, u), 0)?;
    f.write_at(&pattern(12, u), 3 * u)?;
    f.sync()?;
    let layout = [
        (0..u, Want::Data),
        (u..3 * u, Want::Hole),
        (3 * u..4 * u, Want::Data),
    ];

    let observation = match map_all(&f, MapOptions::new().method(Method::Seek)) {
        Ok((extents, degraded)) => {
            let mut shortfalls = check_layout(&extents, &layout, "SEEK_HOLE");
            if let Some(d) = degraded {
                if shortfalls.is_empty() {
                    shortfalls.push(Shortfall::new(d));
                }
            }
            Observation::worked(shortfalls)
        }
        Err(e) => refused("lseek(SEEK_DATA)", e.errno(), &e),
    };
    ctx.set(
        "seek_data_hole",
        classify(Trial::new(
            observation,
            "lseek SEEK_DATA/SEEK_HOLE (sparsekit-extents Method::Seek) on data|hole|data: the hole is found",
        )),
    );

    let observation = match map_all(&f, MapOptions::new().method(Method::Fiemap)) {
        Ok((extents, _)) => Observation::worked(check_layout(&extents, &layout, "FIEMAP")),
        Err(e) => refused("ioctl(FS_IOC_FIEMAP)", e.errno(), &e),
    };
    ctx.set(
        "fiemap",
        classify(Trial::new(
            observation,
            "FS_IOC_FIEMAP (sparsekit-extents Method::Fiemap) on data|hole|data: extents and gap match",
        )),
    );
    drop(f);

    unwritten(ctx)?;
    dirty(ctx)?;
    Ok(())
}

/// `seek_unwritten_as_hole`: data | preallocated | data.
fn unwritten(ctx: &mut Ctx<'_>) -> Result<(), CapsError> {
    const HOW: &str =
        "fallocate a range between two data blocks, then SEEK_DATA from its start must skip it";
    let seek = ctx.cell("seek_data_hole").cloned();
    if let Some(seek) = seek.filter(|c| c.support != crate::Support::Native) {
        ctx.set(
            "seek_unwritten_as_hole",
            needs("seek_data_hole", &seek, HOW),
        );
        return Ok(());
    }
    let u = ctx.unit;
    let f = ctx.file()?;
    f.write_at(&pattern(13, u), 0)?;
    f.write_at(&pattern(14, u), 3 * u)?;
    if let Err(errno) = rustix::fs::fallocate(&f, FallocateFlags::KEEP_SIZE, u, 2 * u) {
        let cell = classify(Trial::new(
            Observation::refused("fallocate(KEEP_SIZE)", errno),
            HOW,
        ))
        .with_reason(format!(
            "cannot preallocate to try it: fallocate: {}",
            sparsekit_sys::ErrnoName(errno).symbolic()
        ));
        ctx.set("seek_unwritten_as_hole", cell);
        return Ok(());
    }
    f.sync()?;
    let observation = match rustix::fs::seek(&f, SeekFrom::Data(u)) {
        Ok(pos) if pos >= 3 * u => Observation::verified(),
        Ok(pos) => Observation::worked(vec![Shortfall::new(format!(
            "SEEK_DATA reports preallocated (unwritten) space at {pos} as data"
        ))]),
        Err(errno) => Observation::refused("lseek(SEEK_DATA)", errno),
    };
    ctx.set(
        "seek_unwritten_as_hole",
        classify(Trial::new(observation, HOW)),
    );
    Ok(())
}

/// `seek_sees_dirty_data`: hole | data only in the page cache | hole.
fn dirty(ctx: &mut Ctx<'_>) -> Result<(), CapsError> {
    const HOW: &str = "write data after a hole, no writeback, SEEK_DATA from 0 must find it";
    let u = ctx.unit;
    let f = ctx.file()?;
    f.set_len(4 * u)?;
    f.write_at(&pattern(15, u), 2 * u)?;
    // Evidence that the data really was only in the page cache.
    let dirty = sparsekit_sys::pagecache::cachestat(&f, 2 * u, u)
        .ok()
        .map(|c| c.nr_dirty);
    let observation = match rustix::fs::seek(&f, SeekFrom::Data(0)) {
        Ok(pos) if pos <= 2 * u => Observation::verified(),
        Ok(pos) => Observation::worked(vec![Shortfall::new(format!(
            "SEEK_DATA skips dirty data: returns {pos}, data at {}; write back first",
            2 * u
        ))]),
        Err(Errno::NXIO) => Observation::worked(vec![Shortfall::with_errno(
            "SEEK_DATA misses data only in the page cache (ENXIO); write back first",
            Errno::NXIO,
        )]),
        Err(errno) => Observation::refused("lseek(SEEK_DATA)", errno),
    };
    let mut trial = Trial::new(observation, HOW);
    if let Some(d) = dirty {
        trial = trial.detail(format!("{d} dirty pages at the time (cachestat)"));
    }
    ctx.set("seek_sees_dirty_data", classify(trial));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(range: Range<u64>, kind: ExtentKind) -> Extent {
        Extent::new(range, kind)
    }

    #[test]
    fn layout_check_accepts_the_layout_and_catches_generic_seek() {
        let layout = [
            (0..10, Want::Data),
            (10..30, Want::Hole),
            (30..40, Want::Data),
        ];
        let good = [
            ext(0..10, ExtentKind::Data),
            ext(10..30, ExtentKind::Hole),
            ext(30..40, ExtentKind::Data),
        ];
        assert!(check_layout(&good, &layout, "SEEK_HOLE").is_empty());
        // Granularity eats the hole's edges: still a hole.
        let coarse = [
            ext(0..14, ExtentKind::Data),
            ext(14..26, ExtentKind::Hole),
            ext(26..40, ExtentKind::Data),
        ];
        assert!(check_layout(&coarse, &layout, "SEEK_HOLE").is_empty());
        let generic = [ext(0..40, ExtentKind::Data)];
        let s = check_layout(&generic, &layout, "SEEK_HOLE");
        assert_eq!(s.len(), 1);
        assert!(
            s[0].why.contains("reports the hole 10..30 as data"),
            "{s:?}"
        );
        let lost = [ext(0..5, ExtentKind::Data), ext(5..40, ExtentKind::Hole)];
        let s = check_layout(&lost, &layout, "FIEMAP");
        assert_eq!(s.len(), 2, "{s:?}");
        assert!(s[0].why.starts_with("FIEMAP maps only 5 of the 10"));
    }
}
