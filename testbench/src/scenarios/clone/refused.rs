//! The clone scenarios that hold on every filesystem: the clear
//! `Unsupported` error where sharing is impossible, and refused requests.

use super::{make_source, pattern, read_all};
use crate::scenario::{Ctx, ScenarioResult, Verdict};
use crate::skip;
use anyhow::{Context, bail, ensure};
use rustix::io::Errno;
use sparsekit_clone::{
    CloneError, DedupeStatus, DedupeTarget, Side, clone_file, clone_file_to_path, clone_range,
    clone_range_to_path, dedupe_range,
};
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};

/// Which error a refused request must give.
type Expected = fn(&CloneError) -> bool;

/// Where sharing is impossible: `Unsupported` with the errno, nothing
/// copied, no file left behind, an existing destination untouched.
pub(super) fn unsupported_is_clear(ctx: &Ctx<'_>) -> ScenarioResult {
    let block = super::block_size(ctx)?;
    let (src, _) = make_source(ctx, "src", block)?;
    let (src_path, new_path) = (ctx.path("src"), ctx.path("new"));
    let err = match clone_file_to_path(&src_path, &new_path) {
        Ok(_) => skip!("FICLONE works here; the unsupported path is checked where it does not"),
        Err(e) => e,
    };
    ensure!(err.is_unsupported(), "expected Unsupported, got: {err}");
    let errno = err.clone_error().and_then(CloneError::errno);
    ensure!(errno.is_some(), "Unsupported without an errno: {err}");
    ensure!(!new_path.exists(), "failed clone left {new_path:?} behind");

    let old = ctx.create("old")?;
    let old_content = pattern(5, 4 * block);
    old.write_all_at(&old_content, 0)?;
    let r = clone_file_to_path(&src_path, ctx.path("old"));
    ensure!(
        r.as_ref().is_err_and(|e| e.is_unsupported()),
        "replace: {r:?}"
    );
    ensure!(
        read_all(&old)? == old_content,
        "failed replace changed the destination"
    );
    let r = clone_range_to_path(&src_path, 0, &new_path, 0, Some(block));
    ensure!(
        r.as_ref().is_err_and(|e| e.is_unsupported()),
        "range: {r:?}"
    );
    ensure!(
        !new_path.exists(),
        "failed range clone left {new_path:?} behind"
    );

    // fd level, for each ioctl: Unsupported, and nothing copied.
    let empty = ctx.create("empty")?;
    let e = clone_file(&src, &empty).expect_err("FICLONE failed by path but not by fd");
    ensure!(e.is_unsupported(), "FICLONE: {e}");
    let e = clone_range(&src, 0, &empty, 0, block).expect_err("FICLONERANGE succeeded");
    ensure!(e.is_unsupported(), "FICLONERANGE: {e}");
    ensure!(
        empty.metadata()?.len() == 0,
        "an unsupported clone copied data"
    );
    match dedupe_range(&src, 0, block, &[DedupeTarget::new(&old, 0)]) {
        Err(e) => ensure!(e.is_unsupported(), "FIDEDUPERANGE: {e}"),
        Ok(r) => ensure!(
            matches!(&r[0].status, DedupeStatus::Failed(e) if e.is_unsupported()),
            "FIDEDUPERANGE: {r:?}"
        ),
    }
    let leftovers: Vec<_> = std::fs::read_dir(ctx.dir())?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    let mut leftovers = leftovers;
    leftovers.sort();
    ensure!(
        leftovers == ["empty", "old", "src"],
        "unexpected files: {leftovers:?}"
    );
    Ok(Verdict::Pass)
}

/// A source on another mount (the host's temporary directory): `EXDEV`,
/// reported as `Unsupported`, and no file left behind.
pub(super) fn cross_mount_unsupported(ctx: &Ctx<'_>) -> ScenarioResult {
    let host = tempfile::tempdir().context("host temp dir")?;
    let host_dev = std::fs::metadata(host.path())?.dev();
    if host_dev == std::fs::metadata(ctx.dir())?.dev() {
        skip!("the host's temporary directory is on the filesystem under test");
    }
    let src_path = host.path().join("src");
    std::fs::write(&src_path, pattern(1, 8192))?;
    let dst_path = ctx.path("dst");
    let e = match clone_file_to_path(&src_path, &dst_path) {
        Ok(_) => bail!("a clone across mounts succeeded"),
        Err(e) => e,
    };
    ensure!(
        e.clone_error() == Some(&CloneError::Unsupported { errno: Errno::XDEV }),
        "expected Unsupported(EXDEV), got: {e}"
    );
    ensure!(!dst_path.exists(), "failed clone left {dst_path:?} behind");
    Ok(Verdict::Pass)
}

/// Directories, special files, overlapping same-file ranges, offsets past
/// EOF, misalignment: each refused with its own error, nothing changed.
pub(super) fn refused_requests(ctx: &Ctx<'_>) -> ScenarioResult {
    use rustix::fs::{Mode, OFlags};
    let block = super::block_size(ctx)?;
    let (src, content) = make_source(ctx, "src", block)?;
    let size = content.len() as u64;
    let dst = ctx.create("dst")?;
    let dst_content = pattern(21, 8 * block);
    dst.write_all_at(&dst_content, 0)?;
    let dir = File::open(ctx.dir())?;
    let fifo_path = ctx.path("fifo");
    rustix::fs::mkfifoat(rustix::fs::CWD, &fifo_path, Mode::from_raw_mode(0o600))?;
    let fifo = rustix::fs::open(&fifo_path, OFlags::RDWR | OFlags::NONBLOCK, Mode::empty())?;
    let rw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(ctx.path("src"))?;

    let cases: Vec<(&str, Result<(), CloneError>, Expected)> = vec![
        ("directory source", clone_file(&dir, &dst), |e| {
            matches!(
                e,
                CloneError::NotRegular {
                    side: Side::Source,
                    kind: "directory"
                }
            )
        }),
        (
            "directory destination",
            clone_range(&src, 0, &dir, 0, block),
            |e| {
                matches!(
                    e,
                    CloneError::NotRegular {
                        side: Side::Destination,
                        kind: "directory"
                    }
                )
            },
        ),
        ("fifo source", clone_file(&fifo, &dst), |e| {
            matches!(e, CloneError::NotRegular { kind: "fifo", .. })
        }),
        (
            "fifo destination",
            clone_range(&src, 0, &fifo, 0, block),
            |e| matches!(e, CloneError::NotRegular { kind: "fifo", .. }),
        ),
        ("same file", clone_file(&src, &rw), |e| {
            matches!(e, CloneError::SameFile)
        }),
        (
            "overlapping ranges",
            clone_range(&src, 0, &rw, 2 * block, 4 * block),
            |e| matches!(e, CloneError::Overlap { .. }),
        ),
        (
            "offset past EOF",
            clone_range(&src, size.next_multiple_of(block), &dst, 0, block),
            |e| {
                matches!(
                    e,
                    CloneError::PastEof {
                        side: Side::Source,
                        ..
                    }
                )
            },
        ),
        (
            "length past EOF",
            clone_range(&src, 0, &dst, 0, size + block),
            |e| {
                matches!(
                    e,
                    CloneError::PastEof {
                        side: Side::Source,
                        ..
                    }
                )
            },
        ),
        (
            "unaligned offset",
            clone_range(&src, 512, &dst, 0, block),
            |e| matches!(e, CloneError::Misaligned { what: "offset", .. }),
        ),
        (
            "unaligned length",
            clone_range(&src, 0, &dst, 0, block + 1),
            |e| matches!(e, CloneError::Misaligned { what: "length", .. }),
        ),
    ];
    for (what, result, expected) in cases {
        match result {
            Err(e) if expected(&e) => {}
            other => bail!("{what}: unexpected {other:?}"),
        }
    }
    // Dedupe: a source past EOF fails the call; an overlapping same-file
    // destination and a fifo fail only themselves.
    match dedupe_range(&src, size + block, block, &[DedupeTarget::new(&dst, 0)]) {
        Err(CloneError::PastEof {
            side: Side::Source, ..
        }) => {}
        other => bail!("dedupe past EOF: {other:?}"),
    }
    let r = dedupe_range(
        &src,
        0,
        4 * block,
        &[
            DedupeTarget::new(&rw, 2 * block),
            DedupeTarget::new(&fifo, 0),
        ],
    )
    .context("dedupe with only bad destinations")?;
    ensure!(
        matches!(
            r[0].status,
            DedupeStatus::Failed(CloneError::Overlap { .. })
        ),
        "overlap: {:?}",
        r[0]
    );
    ensure!(
        matches!(
            r[1].status,
            DedupeStatus::Failed(CloneError::NotRegular { .. })
        ),
        "fifo: {:?}",
        r[1]
    );
    ensure!(
        read_all(&src)? == content,
        "a refused request changed the source"
    );
    ensure!(
        read_all(&dst)? == dst_content,
        "a refused request changed the destination"
    );
    Ok(Verdict::Pass)
}
