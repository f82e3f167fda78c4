//! `cachestat`, `fadvise_dontneed`, `o_direct`, `rwf_dontcache_write`,
//! `rwf_dontcache_read`: who keeps pages in the page cache.

use super::{AlignedBuf, Ctx, Meter, count_cached, expect_bytes};
use crate::classify::{FallbackOutcome, Observation, Shortfall, Trial, classify};
use crate::error::CapsError;
use crate::report::Support;
use crate::scratch::{Scratch, pattern};
use rustix::fs::{Advice, OFlags};
use rustix::io::{Errno, ReadWriteFlags};
use sparsekit_sys::pagecache::{
    RWF_DONTCACHE, SyncFileRangeFlags, cachestat, map_populated, mincore_file, sync_file_range,
};
use std::io::{IoSlice, IoSliceMut};
use std::num::NonZeroU64;
use std::time::{Duration, Instant};

/// Pages each trial writes.
const PAGES: u64 = 16;

pub(crate) fn run(ctx: &mut Ctx<'_>) -> Result<(), CapsError> {
    cachestat_trial(ctx)?;
    fadvise(ctx)?;
    o_direct(ctx)?;
    dontcache_write(ctx)?;
    dontcache_read(ctx)?;
    Ok(())
}

/// Waits (up to 100 ms) for the cached page count to fall to zero, since
/// dropping pages at the end of writeback can trail the syscall that waited
/// for it. Returns the last count.
fn settle(ctx: &Ctx<'_>, f: &Scratch, len: u64) -> Result<u64, Errno> {
    let deadline = Instant::now() + Duration::from_millis(100);
    loop {
        let n = ctx.cached_pages(f, 0, len)?;
        if n == 0 || Instant::now() >= deadline {
            return Ok(n);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn write_back(f: &Scratch) -> Result<(), CapsError> {
    let all = SyncFileRangeFlags::WAIT_BEFORE
        | SyncFileRangeFlags::WRITE
        | SyncFileRangeFlags::WAIT_AFTER;
    match sync_file_range(f, 0, 0, all) {
        Ok(()) | Err(Errno::INVAL | Errno::SPIPE | Errno::NOSYS) => f.sync(),
        Err(e) => Err(f.fail("sync_file_range", 0, e)),
    }
}

fn fadvise_dontneed(f: &Scratch, len: u64) -> Result<(), Errno> {
    rustix::fs::fadvise(f, 0, NonZeroU64::new(len), Advice::DontNeed)
}

fn cachestat_trial(ctx: &mut Ctx<'_>) -> Result<(), CapsError> {
    const HOW: &str = "cachestat of a file just written (buffered, not synced) counts its pages";
    let len = PAGES * ctx.page;
    let f = ctx.file()?;
    f.write_at(&pattern(41, len), 0)?;
    let mut detail = None;
    let observation = match cachestat(&f, 0, len) {
        Ok(cs) => {
            detail = Some(format!(
                "{} cached, {} dirty of {PAGES} pages",
                cs.nr_cache, cs.nr_dirty
            ));
            if cs.nr_cache >= PAGES {
                Observation::verified()
            } else {
                Observation::worked(vec![Shortfall::new(format!(
                    "reports {} of {PAGES} just-written pages",
                    cs.nr_cache
                ))])
            }
        }
        Err(errno) => Observation::refused("cachestat", errno),
    };
    let mut trial = Trial::new(observation, HOW);
    if let Observation::Refused { .. } = trial.observation {
        let mut vec = vec![0u8; PAGES as usize];
        let outcome = match mincore_file(&f, 0, len as usize, &mut vec) {
            Ok(()) => {
                let n = vec.iter().filter(|b| *b & 1 == 1).count() as u64;
                if n >= PAGES {
                    FallbackOutcome::Verified {
                        by: "mincore of a PROT_NONE mapping (sparsekit-sys mincore_file)"
                            .to_owned(),
                    }
                } else {
                    FallbackOutcome::Failed {
                        by: "mincore".to_owned(),
                        why: format!("sees {n} of {PAGES} just-written pages"),
                    }
                }
            }
            Err(e) => FallbackOutcome::Failed {
                by: "mincore".to_owned(),
                why: sparsekit_sys::ErrnoName(e).symbolic(),
            },
        };
        trial = trial.fallback(outcome);
    }
    if let Some(d) = detail {
        trial = trial.detail(d);
    }
    let cell = classify(trial);
    ctx.meter = match cell.support {
        Support::Native => Meter::Cachestat,
        Support::Emulated => Meter::Mincore,
        _ => Meter::None,
    };
    ctx.set("cachestat", cell);
    Ok(())
}

/// A shortfall for trials that cannot observe residency at all.
fn no_meter() -> Shortfall {
    Shortfall::new("page-cache residency cannot be observed (no cachestat, no mincore)")
}

fn fadvise(ctx: &mut Ctx<'_>) -> Result<(), CapsError> {
    const HOW: &str = "write, write back, POSIX_FADV_DONTNEED: no page left cached";
    let len = PAGES * ctx.page;
    let f = ctx.file()?;
    f.write_at(&pattern(42, len), 0)?;
    write_back(&f)?;
    let observation = match fadvise_dontneed(&f, len) {
        // DONTNEED drops clean pages synchronously: no need to wait.
        Ok(()) => match ctx.cached_pages(&f, 0, len) {
            Ok(0) => Observation::verified(),
            Ok(n) => Observation::worked(vec![Shortfall::new(format!(
                "{n} of {PAGES} pages stay cached (by {})",
                ctx.meter.as_str()
            ))]),
            Err(_) => Observation::worked(vec![no_meter()]),
        },
        Err(errno) => Observation::refused("posix_fadvise(DONTNEED)", errno),
    };
    ctx.set("fadvise_dontneed", classify(Trial::new(observation, HOW)));
    Ok(())
}

fn dio_alignment(ctx: &Ctx<'_>) -> (u64, String) {
    match ctx.dio_align {
        Some((mem, off)) => {
            let read = ctx
                .dio_read_align
                .map(|r| format!(" dio_read_offset_align={r}"))
                .unwrap_or_default();
            (
                u64::from(mem.max(off)).max(512),
                format!("dio_mem_align={mem} dio_offset_align={off}{read}"),
            )
        }
        None => (
            ctx.page,
            format!(
                "alignment not reported by statx (STATX_DIOALIGN); used {}",
                ctx.page
            ),
        ),
    }
}

/// The range is made cached *and mapped* before the write, and stays mapped
/// until the count: a real direct write unmaps and drops those pages
/// (`invalidate_inode_pages2_range`), while a write that falls back to the
/// page cache cannot hide. btrfs does that fallback for every file with
/// data checksums (commit 968f19c5b1b7, "btrfs: always fallback to buffered
/// write if the inode requires checksum", Linux 6.15, backported to stable
/// 6.12) and then writes back and drops the pages with the best-effort
/// `invalidate_mapping_pages`: on an unmapped range that usually succeeded,
/// so this cell came out native in most guest runs and degraded in a few.
/// Mapped pages are skipped by that invalidation every time.
fn o_direct(ctx: &mut Ctx<'_>) -> Result<(), CapsError> {
    const HOW: &str = "O_DIRECT aligned write over a cached and mapped range, then read: content equal and no page left cached";
    let len = PAGES * ctx.page;
    let (align, mut detail) = dio_alignment(ctx);
    let f = ctx.file()?;
    f.set_len(len)?;
    let flags = rustix::fs::fcntl_getfl(&f).map_err(|e| f.fail("fcntl(F_GETFL)", 0, e))?;
    let observation = match rustix::fs::fcntl_setfl(&f, flags | OFlags::DIRECT) {
        Err(errno) => Observation::refused("open(O_DIRECT)", errno),
        Ok(()) => {
            let mapping = match map_populated(&f, 0, len as usize) {
                Ok(m) => Some(m),
                Err(errno) => {
                    detail.push_str(&format!(
                        "; range not mapped ({}): a buffered fallback may hide",
                        sparsekit_sys::ErrnoName(errno).symbolic()
                    ));
                    None
                }
            };
            let data = pattern(43, len);
            let mut buf = AlignedBuf::new(len as usize, align.max(ctx.page) as usize);
            buf.as_mut_slice().copy_from_slice(&data);
            match rustix::io::pwrite(&f, buf.as_slice(), 0) {
                Err(errno) => Observation::refused("pwrite(O_DIRECT)", errno),
                Ok(n) if (n as u64) < len => Observation::worked(vec![Shortfall::new(format!(
                    "short O_DIRECT write: {n} of {len} bytes"
                ))]),
                Ok(_) => {
                    let mut s = Vec::new();
                    match ctx.cached_pages(&f, 0, len) {
                        Ok(0) => {}
                        Ok(n) => s.push(Shortfall::new(format!(
                            "the O_DIRECT write left {n} of {PAGES} pages in the page cache (it went buffered)"
                        ))),
                        Err(_) => s.push(no_meter()),
                    }
                    drop(mapping);
                    let mut back = AlignedBuf::new(len as usize, align.max(ctx.page) as usize);
                    match rustix::io::pread(&f, back.as_mut_slice(), 0) {
                        Ok(n) => {
                            expect_bytes(&mut s, "O_DIRECT read", &back.as_slice()[..n], &data, 0)
                        }
                        Err(errno) => s.push(Shortfall::with_errno(
                            format!(
                                "O_DIRECT read fails: {}",
                                sparsekit_sys::ErrnoName(errno).symbolic()
                            ),
                            errno,
                        )),
                    }
                    Observation::worked(s)
                }
            }
        }
    };
    ctx.set(
        "o_direct",
        classify(Trial::new(observation, HOW).detail(detail)),
    );
    Ok(())
}

/// What sparsekit-copy's `CachePolicy::Auto` falls back to when
/// `RWF_DONTCACHE` is refused: `Direct` if `o_direct` is native, else
/// `Drop` if `fadvise_dontneed` is; both were verified by their own trials.
fn dontcache_fallback(ctx: &Ctx<'_>) -> FallbackOutcome {
    if ctx.support("o_direct") == Some(Support::Native) {
        FallbackOutcome::Verified {
            by: "O_DIRECT (sparsekit-copy CachePolicy::Direct; see o_direct)".to_owned(),
        }
    } else if ctx.support("fadvise_dontneed") == Some(Support::Native) {
        FallbackOutcome::Verified {
            by: "sync_file_range + POSIX_FADV_DONTNEED (sparsekit-copy CachePolicy::Drop; see fadvise_dontneed)"
                .to_owned(),
        }
    } else {
        FallbackOutcome::Failed {
            by: "sparsekit-copy CachePolicy::Direct or Drop".to_owned(),
            why: "neither o_direct nor fadvise_dontneed keeps the page cache clean here".to_owned(),
        }
    }
}

fn dontcache_write(ctx: &mut Ctx<'_>) -> Result<(), CapsError> {
    const HOW: &str = "pwritev2(RWF_DONTCACHE), fdatasync: no page left cached once written back";
    let len = PAGES * ctx.page;
    let f = ctx.file()?;
    let data = pattern(44, len);
    let observation = match rustix::io::pwritev2(&f, &[IoSlice::new(&data)], 0, RWF_DONTCACHE) {
        Err(errno) => Observation::refused("pwritev2(RWF_DONTCACHE)", errno),
        Ok(n) if (n as u64) < len => Observation::worked(vec![Shortfall::new(format!(
            "short write: {n} of {len} bytes"
        ))]),
        Ok(_) => {
            f.sync()?;
            let mut s = Vec::new();
            match settle(ctx, &f, len) {
                Ok(0) => {}
                Ok(n) => s.push(Shortfall::new(format!(
                    "{n} of {PAGES} pages stay cached after writeback"
                ))),
                Err(_) => s.push(no_meter()),
            }
            // Read back through the cache: the data must be there.
            expect_bytes(&mut s, "dontcache write", &f.read_at(0, len + 1)?, &data, 0);
            Observation::worked(s)
        }
    };
    let mut trial = Trial::new(observation, HOW);
    if let Observation::Refused { .. } = trial.observation {
        trial = trial.fallback(dontcache_fallback(ctx));
    }
    ctx.set("rwf_dontcache_write", classify(trial));
    Ok(())
}

fn dontcache_read(ctx: &mut Ctx<'_>) -> Result<(), CapsError> {
    const HOW: &str =
        "evict a written-back file, preadv2(RWF_DONTCACHE): content equal, no page left cached";
    let len = PAGES * ctx.page;
    let (f, data) = ctx.data_file(45, len)?;
    // Start from an empty cache, or the read proves nothing: only clean
    // pages can be dropped.
    f.sync()?;
    let _ = fadvise_dontneed(&f, len);
    let before = ctx.cached_pages(&f, 0, len).ok();
    let mut buf = vec![0u8; len as usize];
    let observation = match rustix::io::preadv2(
        &f,
        &mut [IoSliceMut::new(&mut buf)],
        0,
        RWF_DONTCACHE | ReadWriteFlags::empty(),
    ) {
        Err(errno) => Observation::refused("preadv2(RWF_DONTCACHE)", errno),
        Ok(n) => {
            let mut s = Vec::new();
            expect_bytes(&mut s, "dontcache read", &buf[..n], &data, 0);
            match (before, count_cached(ctx.meter, &f, 0, len, ctx.page)) {
                (Some(0), Ok(0)) => {}
                (Some(0), Ok(n)) => s.push(Shortfall::new(format!(
                    "the read left {n} of {PAGES} pages cached"
                ))),
                (Some(b), _) => s.push(Shortfall::new(format!(
                    "cannot verify: {b} pages stay cached even before the read"
                ))),
                _ => s.push(no_meter()),
            }
            Observation::worked(s)
        }
    };
    let mut trial = Trial::new(observation, HOW);
    if let Observation::Refused { .. } = trial.observation {
        trial = trial.fallback(dontcache_fallback(ctx));
    }
    ctx.set("rwf_dontcache_read", classify(trial));
    Ok(())
}
