//! `ficlone`, `ficlonerange`, `fideduperange`, `fiemap_shared_flag`,
//! `unshare_range`, `copy_file_range`, `copy_file_range_reflinks`,
//! `copy_file_range_cross_fs`: sharing extents and kernel-side copies.

use super::{Ctx, expect_bytes, refused};
use crate::classify::{
    FallbackOutcome, Observation, OffloadObservation, Shortfall, Trial, classify, copy_offload,
    needs,
};
use crate::error::CapsError;
use crate::mountstats::read_op_counts;
use crate::report::{Cell, Support};
use crate::scratch::{Scratch, ScratchDir};
use rustix::fs::FallocateFlags;
use rustix::io::Errno;
use sparsekit_clone::{
    DedupeStatus, DedupeTarget, Sharing, clone_file, clone_range, dedupe_range, sharing,
};
use sparsekit_copy::{CachePolicy, CopyOptions, DataStrategy, ReflinkMode, Staging, Strategy};

pub(crate) fn run(ctx: &mut Ctx<'_>) -> Result<(), CapsError> {
    ficlone(ctx)?;
    ficlonerange(ctx)?;
    fideduperange(ctx)?;
    copy_file_range(ctx)?;
    Ok(())
}

/// Checks that `dst[range]` is shared per FIEMAP: a shortfall when it is
/// not, or when sharing cannot be observed. Over NFS the client has no
/// FIEMAP; there a `CLONE` the client sent for the call
/// (`server_clones`, from [`clones_sent`]) is the server's word that it
/// shared the extents, and is taken instead.
fn check_shared(
    dst: &Scratch,
    range: std::ops::Range<u64>,
    what: &str,
    server_clones: Option<u64>,
) -> (Vec<Shortfall>, Option<Result<Sharing, Errno>>) {
    match sharing(dst, range.clone()) {
        Ok(s) if s.shared >= range.end - range.start => (Vec::new(), Some(Ok(s))),
        Ok(s) => (
            vec![Shortfall::new(format!(
                "{what} worked but FIEMAP shows only {} of {} bytes SHARED",
                s.shared,
                range.end - range.start
            ))],
            Some(Ok(s)),
        ),
        Err(e) => {
            let errno = e.errno().unwrap_or(Errno::IO);
            let shortfall = if server_clones.unwrap_or(0) > 0 {
                Vec::new()
            } else {
                vec![Shortfall::new(format!(
                    "{what} worked but sharing cannot be verified: FIEMAP: {}",
                    sparsekit_sys::ErrnoName(errno).symbolic()
                ))]
            };
            (shortfall, Some(Err(errno)))
        }
    }
}

/// Runs `op` and counts the NFS `CLONE` operations this client sent
/// meanwhile (`/proc/self/mountstats`); `None` off NFS.
fn clones_sent<T>(mount_point: Option<&str>, op: impl FnOnce() -> T) -> (T, Option<u64>) {
    let count = || {
        mount_point
            .and_then(read_op_counts)
            .map(|ops| ops.get("CLONE").copied().unwrap_or(0))
    };
    let before = count();
    let result = op();
    let sent = before.zip(count()).map(|(b, a)| a.saturating_sub(b));
    (result, sent)
}

/// The detail of a clone cell verified by the server's word.
fn server_cloned(sent: Option<u64>) -> Option<String> {
    sent.filter(|&n| n > 0).map(|n| {
        format!("the NFS server cloned: {n} CLONE sent (/proc/self/mountstats); FIEMAP cannot show sharing over NFS")
    })
}

fn ficlone(ctx: &mut Ctx<'_>) -> Result<(), CapsError> {
    const HOW: &str =
        "FICLONE (sparsekit-clone clone_file): content equal, FIEMAP marks the extents SHARED";
    const SHARED_HOW: &str = "FIEMAP of a FICLONE destination: extents carry FIEMAP_EXTENT_SHARED";
    const UNSHARE_HOW: &str =
        "fallocate(UNSHARE_RANGE) on a FICLONE destination: content kept, no SHARED extents left";
    let u = ctx.unit;
    let (src, data) = ctx.data_file(31, 4 * u)?;
    let dst = ctx.file()?;
    let mut shared_seen = None;
    let (cloned, clones) = clones_sent(ctx.mount_point.as_deref(), || clone_file(&src, &dst));
    let observation = match cloned {
        Ok(()) => {
            let mut s = Vec::new();
            expect_bytes(&mut s, "clone", &dst.read_at(0, 4 * u + 1)?, &data, 0);
            let (more, seen) = check_shared(&dst, 0..4 * u, "FICLONE", clones);
            s.extend(more);
            shared_seen = seen;
            Observation::worked(s)
        }
        Err(e) => refused("FICLONE", e.errno(), &e),
    };
    let mut cell = classify(Trial::new(observation, HOW));
    if let Some(detail) =
        server_cloned(clones).filter(|_| cell.is_usable() && matches!(shared_seen, Some(Err(_))))
    {
        cell = cell.with_detail(detail);
    }
    let clone_worked = cell.is_usable();

    // fiemap_shared_flag: only observable after a clone.
    let shared_cell = match shared_seen {
        Some(Ok(s)) if s.shared > 0 => {
            Cell::native(SHARED_HOW).with_detail(format!("{} of {} bytes SHARED", s.shared, 4 * u))
        }
        Some(Ok(_)) => Cell {
            support: Support::Unsupported,
            errno: None,
            reason: Some("FIEMAP reports no SHARED flag on cloned extents".to_owned()),
            detail: None,
            verified_by: SHARED_HOW.to_owned(),
        },
        Some(Err(errno)) => classify(Trial::new(
            Observation::refused("ioctl(FS_IOC_FIEMAP)", errno),
            SHARED_HOW,
        )),
        None => needs("ficlone", &cell, SHARED_HOW),
    };
    ctx.set("fiemap_shared_flag", shared_cell);

    // unshare_range: undo the clone's sharing.
    let unshare = FallocateFlags::UNSHARE_RANGE | FallocateFlags::KEEP_SIZE;
    let unshare_cell = if clone_worked {
        let observation = match rustix::fs::fallocate(&dst, unshare, 0, 4 * u) {
            Ok(()) => {
                let mut s = Vec::new();
                expect_bytes(
                    &mut s,
                    "unshared file",
                    &dst.read_at(0, 4 * u + 1)?,
                    &data,
                    0,
                );
                match sharing(&dst, 0..4 * u) {
                    Ok(sh) if sh.shared > 0 => s.push(Shortfall::new(format!(
                        "{} bytes are still SHARED after UNSHARE_RANGE",
                        sh.shared
                    ))),
                    Ok(_) => {}
                    Err(e) => s.push(Shortfall::new(format!("cannot verify: {e}"))),
                }
                Observation::worked(s)
            }
            Err(errno) => Observation::refused("fallocate(UNSHARE_RANGE)", errno),
        };
        classify(Trial::new(observation, UNSHARE_HOW))
    } else {
        // No clone to undo: the call on an unshared file still tells whether
        // the mode exists; success there is trivially right.
        let (plain, _) = ctx.data_file(32, u)?;
        match rustix::fs::fallocate(&plain, unshare, 0, u) {
            Ok(()) => Cell::native(
                "fallocate(UNSHARE_RANGE) accepted on an unshared file (no reflink here to undo): trivially unshared",
            ),
            Err(errno) => classify(Trial::new(
                Observation::refused("fallocate(UNSHARE_RANGE)", errno),
                "fallocate(UNSHARE_RANGE) on a plain file (no reflink here to undo)",
            )),
        }
    };
    ctx.set("unshare_range", unshare_cell);
    ctx.set("ficlone", cell);
    Ok(())
}

fn ficlonerange(ctx: &mut Ctx<'_>) -> Result<(), CapsError> {
    const HOW: &str = "FICLONERANGE of one unit into another file (sparsekit-clone clone_range): that range equal and SHARED, the rest untouched";
    let u = ctx.unit;
    let (src, sdata) = ctx.data_file(33, 4 * u)?;
    let (dst, ddata) = ctx.data_file(34, 4 * u)?;
    let (cloned, clones) = clones_sent(ctx.mount_point.as_deref(), || {
        clone_range(&src, u, &dst, 2 * u, u)
    });
    let mut seen_by_fiemap = true;
    let observation = match cloned {
        Ok(()) => {
            let mut want = ddata.clone();
            want[2 * u as usize..3 * u as usize]
                .copy_from_slice(&sdata[u as usize..2 * u as usize]);
            let mut s = Vec::new();
            expect_bytes(&mut s, "clone", &dst.read_at(0, 4 * u + 1)?, &want, 0);
            let (more, seen) = check_shared(&dst, 2 * u..3 * u, "FICLONERANGE", clones);
            seen_by_fiemap = !matches!(seen, Some(Err(_)));
            s.extend(more);
            Observation::worked(s)
        }
        Err(e) => refused("FICLONERANGE", e.errno(), &e),
    };
    let mut cell = classify(Trial::new(observation, HOW));
    if let (true, false, Some(detail)) = (cell.is_usable(), seen_by_fiemap, server_cloned(clones)) {
        cell = cell.with_detail(detail);
    }
    ctx.set("ficlonerange", cell);
    Ok(())
}

fn fideduperange(ctx: &mut Ctx<'_>) -> Result<(), CapsError> {
    const HOW: &str = "FIDEDUPERANGE of two files written with equal data (sparsekit-clone dedupe_range): status SAME, all bytes deduped and SHARED";
    let u = ctx.unit;
    let (src, data) = ctx.data_file(35, 4 * u)?;
    let (dst, _) = ctx.data_file(35, 4 * u)?;
    let observation = match dedupe_range(&src, 0, 4 * u, &[DedupeTarget::new(&dst, 0)]) {
        Ok(results) => match results.into_iter().next() {
            Some(r) => match r.status {
                DedupeStatus::Same => {
                    let mut s = Vec::new();
                    if r.bytes_deduped < 4 * u {
                        s.push(Shortfall::new(format!(
                            "only {} of {} bytes deduped",
                            r.bytes_deduped,
                            4 * u
                        )));
                    }
                    expect_bytes(
                        &mut s,
                        "deduped file",
                        &dst.read_at(0, 4 * u + 1)?,
                        &data,
                        0,
                    );
                    s.extend(check_shared(&dst, 0..4 * u, "FIDEDUPERANGE", None).0);
                    Observation::worked(s)
                }
                DedupeStatus::Differs { differs_from, .. } => {
                    Observation::worked(vec![Shortfall::new(format!(
                        "equal data reported as differing at {differs_from}"
                    ))])
                }
                DedupeStatus::Failed(e) => refused("FIDEDUPERANGE", e.errno(), &e),
                other => Observation::worked(vec![Shortfall::new(format!(
                    "unexpected status {other:?}"
                ))]),
            },
            None => Observation::worked(vec![Shortfall::new("no result for the destination")]),
        },
        Err(e) => refused("FIDEDUPERANGE", e.errno(), &e),
    };
    ctx.set("fideduperange", classify(Trial::new(observation, HOW)));
    Ok(())
}

/// Copies `len` bytes from `src` to `dst` at offset 0 with
/// `copy_file_range` until done: `Ok(calls)`, `Err((errno, copied))`, or
/// a short copy (`Ok` with fewer bytes, checked by the caller's content
/// check).
fn cfr_loop(src: &Scratch, dst: &Scratch, len: u64) -> Result<(u32, u64), (Errno, u64)> {
    let (mut off_in, mut off_out) = (0u64, 0u64);
    let mut calls = 0;
    while off_in < len {
        calls += 1;
        let want = (len - off_in) as usize;
        match rustix::fs::copy_file_range(src, Some(&mut off_in), dst, Some(&mut off_out), want) {
            Ok(0) => break,
            Ok(_) => {}
            Err(Errno::INTR) => {}
            Err(e) => return Err((e, off_in)),
        }
    }
    Ok((calls, off_in))
}

/// The copy crate's fallback when `copy_file_range` is refused: a forced
/// `DataStrategy::Auto` copy with `CachePolicy::Keep` (which tries
/// `copy_file_range` first and falls back to read/write), checked.
fn copy_fallback(src: &Scratch, dst: &Scratch, data: &[u8]) -> Result<FallbackOutcome, CapsError> {
    let options = CopyOptions::new()
        .reflink(ReflinkMode::Auto)
        .data_strategy(DataStrategy::Auto)
        .cache(CachePolicy::Keep)
        .staging(Staging::InPlace)
        .sync(false);
    Ok(
        match options.copy_open(
            &src.file,
            "scratch source",
            &dst.file,
            "scratch destination",
        ) {
            Ok(report) => {
                let mut s = Vec::new();
                expect_bytes(
                    &mut s,
                    "copy",
                    &dst.read_at(0, data.len() as u64 + 1)?,
                    data,
                    0,
                );
                let by = format!("{} (sparsekit-copy fallback)", report.strategy);
                if s.is_empty() && report.strategy == Strategy::ReadWrite {
                    FallbackOutcome::Verified { by }
                } else if s.is_empty() {
                    FallbackOutcome::Failed {
                        by,
                        why: "the copy did not fall back to read/write".to_owned(),
                    }
                } else {
                    FallbackOutcome::Failed {
                        by,
                        why: s[0].why.clone(),
                    }
                }
            }
            Err(e) => FallbackOutcome::Failed {
                by: "read_write (sparsekit-copy)".to_owned(),
                why: e.to_string(),
            },
        },
    )
}

/// One `copy_file_range` trial from a file in `ctx`'s directory to one in
/// `to`: the cell, and the source and destination (for the reflink check:
/// the source must stay open, or its extents stop being shared).
fn cfr_trial(
    ctx: &Ctx<'_>,
    to: &ScratchDir,
    how: &str,
) -> Result<(Cell, Option<(Scratch, Scratch)>), CapsError> {
    let u = ctx.unit;
    let (src, data) = ctx.data_file(36, 4 * u)?;
    let dst = to.file()?;
    let mut detail = None;
    let observation = match cfr_loop(&src, &dst, 4 * u) {
        Ok((calls, copied)) => {
            detail = Some(format!("{copied} bytes in {calls} call(s)"));
            let mut s = Vec::new();
            if copied < 4 * u {
                s.push(Shortfall::new(format!(
                    "copy_file_range returned 0 after {copied} of {} bytes",
                    4 * u
                )));
            }
            expect_bytes(&mut s, "copy", &dst.read_at(0, 4 * u + 1)?, &data, 0);
            Observation::worked(s)
        }
        Err((errno, 0)) => Observation::refused("copy_file_range", errno),
        Err((errno, copied)) => Observation::worked(vec![Shortfall::with_errno(
            format!("copy_file_range failed after {copied} bytes"),
            errno,
        )]),
    };
    let mut trial = Trial::new(observation, how);
    if let Observation::Refused { .. } = trial.observation {
        let (src, data) = ctx.data_file(37, 4 * u)?;
        let dst2 = to.file()?;
        trial = trial.fallback(copy_fallback(&src, &dst2, &data)?);
    }
    if let Some(d) = detail {
        trial = trial.detail(d);
    }
    let cell = classify(trial);
    let keep = (cell.support == Support::Native).then_some((src, dst));
    Ok((cell, keep))
}

fn copy_file_range(ctx: &mut Ctx<'_>) -> Result<(), CapsError> {
    const HOW: &str =
        "copy_file_range of 4 units between two files here: all bytes copied, content equal";
    const REFLINK_HOW: &str =
        "FIEMAP of a copy_file_range destination: SHARED extents mean the kernel reflinked";
    let counters = || ctx.mount_point.as_deref().and_then(read_op_counts);
    let before = counters();
    let (cell, dst) = cfr_trial(ctx, ctx.dir, HOW)?;
    // An NFS client counts the operations it sends: a server-side COPY, or
    // the READs and WRITEs of a copy it made itself (written back first, or
    // the WRITEs would still be in its page cache).
    let offload = match (&before, &dst) {
        (Some(before), Some((_, d))) => rustix::fs::fsync(&d.file)
            .ok()
            .and_then(|()| counters())
            .map(|after| {
                let delta = |op: &str| {
                    after
                        .get(op)
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(before.get(op).copied().unwrap_or(0))
                };
                OffloadObservation {
                    copy: delta("COPY"),
                    read: delta("READ"),
                    write: delta("WRITE"),
                }
            }),
        _ => None,
    };
    let cell = copy_offload(cell, offload.as_ref());
    let u = ctx.unit;
    let reflink_cell = match dst {
        Some((_src, dst)) => match sharing(&dst, 0..4 * u) {
            Ok(s) if s.shared > 0 => Cell::native(REFLINK_HOW).with_detail(format!(
                "{} of {} bytes SHARED",
                s.shared,
                4 * u
            )),
            Ok(_) => Cell {
                support: Support::Unsupported,
                errno: None,
                reason: Some(
                    "copy_file_range copies the data: no SHARED extents afterwards".to_owned(),
                ),
                detail: None,
                verified_by: REFLINK_HOW.to_owned(),
            },
            Err(e) => {
                let errno = e.errno().unwrap_or(Errno::IO);
                classify(Trial::new(
                    Observation::refused("ioctl(FS_IOC_FIEMAP)", errno),
                    REFLINK_HOW,
                ))
                .with_reason(format!(
                    "sharing cannot be observed: FIEMAP: {}",
                    sparsekit_sys::ErrnoName(errno).symbolic()
                ))
            }
        },
        None => needs("copy_file_range", &cell, REFLINK_HOW),
    };
    ctx.set("copy_file_range", cell);
    ctx.set("copy_file_range_reflinks", reflink_cell);
    Ok(())
}

/// `copy_file_range_cross_fs`, to a scratch directory on another filesystem.
pub(crate) fn cross_fs(
    ctx: &mut Ctx<'_>,
    peer: &ScratchDir,
    peer_fs: &str,
) -> Result<(), CapsError> {
    let how = format!(
        "copy_file_range of 4 units to a file on {peer_fs}: all bytes copied, content equal"
    );
    let (cell, _) = cfr_trial(ctx, peer, &how)?;
    ctx.set("copy_file_range_cross_fs", cell);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tmpfs has no FIEMAP: the shortfall stands unless the NFS client
    /// sent a CLONE for the call.
    #[test]
    fn unobservable_sharing_is_taken_only_on_the_servers_word() {
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
            return; // no tmpfs here
        };
        let scratch = ScratchDir::open(dir.path(), false).unwrap();
        let file = scratch.file().unwrap();
        file.write_at(&[1; 4096], 0).unwrap();
        if sharing(&file, 0..4096).is_ok() {
            return; // this tmpfs maps extents: nothing to show
        }
        for (clones, shortfalls) in [(None, 1), (Some(0), 1), (Some(1), 0)] {
            let (s, seen) = check_shared(&file, 0..4096, "FICLONE", clones);
            assert_eq!(s.len(), shortfalls, "{clones:?}: {s:?}");
            assert!(matches!(seen, Some(Err(_))));
        }
        assert_eq!(server_cloned(Some(0)), None);
        assert!(server_cloned(Some(2)).unwrap().contains("2 CLONE sent"));
    }
}
